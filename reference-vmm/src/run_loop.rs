// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The one run loop, generic over where exits come from.
//!
//! ```text
//! source.next_exit( clock -> handlers::handle (decide) -> complete_read )  ->  apply
//! ```
//!
//! An [`ExitSource`] is a real vCPU ([`crate::vmm::KvmSource`]: injector,
//! `KVM_RUN`, decode) or a trace ([`crate::replay::TraceSource`]: read a line,
//! decode, and behave as KVM would on the next run, e.g. a pending triple
//! fault ends in `KVM_EXIT_SHUTDOWN`). Both hand the loop the same decoded
//! [`Exit`], so the decide step, the answer to a device read, the
//! triple-fault path and the apply step are the same code for both.
//!
//! Time comes from one injectable [`Clock`]: [`WallClock`] on KVM,
//! [`SyntheticClock`] in replay, where the time of an exit is the trace's
//! (a line's `"t_ns"`, or [`SYNTHETIC_STEP_NS`] after the previous line), so
//! a replay is a function of the trace and the flags only.

#![deny(unsafe_code)]

use std::time::{Duration, Instant};

use crate::action::Actions;
pub use crate::apply::complete_read;
use crate::apply::{apply, Target};
use crate::exit::Exit;
use crate::handlers::{self, RunState};
use crate::stop::{Stop, StopCause};

/// Nanoseconds a trace line without `"t_ns"` comes after the previous line
/// (1 µs: about one exit round trip on bare metal). 1000 notify exits in a
/// row thus take 1 ms of trace time, a notify storm by notify-exit's default
/// detector (100 exits per second).
pub const SYNTHETIC_STEP_NS: u64 = 1_000;

/// Where the run loop's time comes from.
pub trait Clock {
    /// The time of the exit just taken, since the run started: the one
    /// `Duration` the run loop passes to notify-exit and heki-policy alike.
    /// `stamp` is the time the exit source recorded for it in ns since the
    /// run started, if any (a trace line's `"t_ns"`).
    fn exit_time(&mut self, stamp: Option<u64>) -> Duration;
}

/// Real time since the run started (KVM runs). Stamps are ignored.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    start: Instant,
}

impl WallClock {
    /// A clock counting from `start`.
    pub fn new(start: Instant) -> Self {
        WallClock { start }
    }
}

impl Clock for WallClock {
    #[inline]
    fn exit_time(&mut self, _stamp: Option<u64>) -> Duration {
        self.start.elapsed()
    }
}

/// Trace time (replay): the stamp of an exit when it has one, else the
/// previous exit's time plus `step`. Never goes backwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticClock {
    now: u64,
    step: u64,
}

impl SyntheticClock {
    /// A clock at 0 advancing `step` ns per unstamped exit.
    pub fn new(step: u64) -> Self {
        SyntheticClock { now: 0, step }
    }

    /// The time of the last exit, since the run started.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.now)
    }
}

impl Default for SyntheticClock {
    fn default() -> Self {
        Self::new(SYNTHETIC_STEP_NS)
    }
}

impl Clock for SyntheticClock {
    #[inline]
    fn exit_time(&mut self, stamp: Option<u64>) -> Duration {
        let t = stamp.unwrap_or_else(|| self.now.saturating_add(self.step));
        self.now = self.now.max(t);
        Duration::from_nanos(self.now)
    }
}

/// What a source did with one exit.
#[derive(Debug)]
pub enum Step {
    /// An exit was taken and decided; these are the actions to apply.
    Decided(Actions),
    /// The source ended the run itself (the watchdog fired; the trace ended).
    Stop(StopCause),
    /// The source paused before entering the guest (a KVM source taking a
    /// snapshot: [`crate::snapshot`]); no exit was taken. The driver of
    /// [`run_until_pause`] decides how to go on.
    Pause,
}

/// Where exits come from; also the target the loop applies actions to.
pub trait ExitSource: Target {
    /// Errors of the source (ioctl failures; unreadable trace lines).
    type Error;

    /// Runs until the next exit (KVM: inject if due, `KVM_RUN`, decode;
    /// replay: what KVM would do next, else the next trace line), hands it
    /// to `decide` exactly once with the source's time for it (a trace
    /// line's), and, for an `in` or MMIO read, writes the decided value
    /// where the guest reads it with [`complete_read`] while the exit's data
    /// is still borrowed. Returns the decided actions.
    fn next_exit<D>(&mut self, st: &mut RunState, decide: D) -> Result<Step, Self::Error>
    where
        D: FnOnce(&Exit, Option<u64>, &mut RunState) -> Actions;
}

/// Runs `source` to its stop: take an exit, time it, decide, answer a read,
/// apply. The per-exit path does not allocate. A source that pauses
/// ([`Step::Pause`]) is asked for its next exit again: sources that pause
/// for a reason of their own are driven with [`run_until_pause`].
pub fn run<S: ExitSource, C: Clock>(
    source: &mut S,
    st: &mut RunState,
    clock: &mut C,
) -> Result<Stop, S::Error> {
    loop {
        if let Some(stop) = run_until_pause(source, st, clock)? {
            return Ok(stop);
        }
    }
}

/// [`run`] until the source stops (`Some(stop)`) or pauses (`None`, after
/// the source returned [`Step::Pause`]; every exit taken so far was applied).
pub fn run_until_pause<S: ExitSource, C: Clock>(
    source: &mut S,
    st: &mut RunState,
    clock: &mut C,
) -> Result<Option<Stop>, S::Error> {
    loop {
        let step = source.next_exit(st, |exit, t_ns, st| {
            st.now = clock.exit_time(t_ns);
            handlers::handle(exit, st)
        })?;
        let actions = match step {
            Step::Stop(cause) => return Ok(Some(Stop::new(cause))),
            Step::Pause => return Ok(None),
            Step::Decided(actions) => actions,
        };
        if actions.is_empty() {
            continue;
        }
        if let Some(stop) = apply(&actions, st, source) {
            return Ok(Some(stop));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_clock_takes_stamps_and_steps_between_them() {
        let ns = Duration::from_nanos;
        let mut c = SyntheticClock::default();
        assert_eq!(c.exit_time(None), ns(SYNTHETIC_STEP_NS));
        assert_eq!(c.exit_time(Some(5_000_000)), ns(5_000_000));
        assert_eq!(c.exit_time(None), ns(5_000_000 + SYNTHETIC_STEP_NS));
        // Never backwards.
        assert_eq!(c.exit_time(Some(7)), ns(5_000_000 + SYNTHETIC_STEP_NS));
        assert_eq!(c.now(), ns(5_000_000 + SYNTHETIC_STEP_NS));
    }
}
