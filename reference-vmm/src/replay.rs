// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Replay: a trace's exits through the same run loop and handlers, applied
//! to a recording vCPU stand-in instead of a real vCPU.
//!
//! [`TraceSource`] is the trace side of [`crate::run_loop::ExitSource`]: it
//! reads one line at a time, decodes it with the ABI in force, and does what
//! KVM would do on the next `KVM_RUN` (after a synthesized triple fault, the
//! next exit is `KVM_EXIT_SHUTDOWN`). The stand-in validates every injection
//! with vcpu-events exactly as the KVM path does and records it (bounded:
//! counts plus the first [`StandIn::KEEP`] records). Time is the trace's
//! ([`crate::run_loop::SyntheticClock`]).

#![deny(unsafe_code)]

use std::io::BufRead;
use std::time::Instant;

use vcpu_events::Event;

use crate::action::Actions;
use crate::apply::{ApplyError, Target};
use crate::config::Policy;
use crate::exit::{Exit, HekiAbi};
use crate::handlers::RunState;
use crate::report::{Report, Source};
use crate::run_loop::{complete_read, ExitSource, Step, SyntheticClock};
use crate::stop::StopCause;
use crate::trace::{TraceError, TraceErrorKind, TraceReader};

/// What the stand-in was asked to do (or answered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recorded {
    /// An injection (hardware exception or NMI), as vcpu-events types it.
    Inject(Event),
    /// A triple fault.
    TripleFault,
    /// The value a guest `in` read, as the decide step answered it.
    Read {
        /// I/O port.
        port: u16,
        /// Value read (little endian, access size).
        value: u64,
    },
}

/// The recording vCPU stand-in: a 64-bit guest with IF = 1 on a VM with
/// exception payloads and triple-fault events enabled; injections are
/// validated by vcpu-events exactly as on KVM.
#[derive(Clone, Debug)]
pub struct StandIn {
    /// What the stand-in VM has enabled.
    pub kvm: vcpu_events::validate::KvmContext,
    /// The first [`StandIn::KEEP`] actions.
    pub recorded: Vec<Recorded>,
    /// All actions applied.
    pub applied: u64,
    /// A triple fault is pending: the next "run" ends in shutdown.
    pub triple_fault_pending: bool,
}

impl Default for StandIn {
    fn default() -> Self {
        StandIn {
            kvm: vcpu_events::validate::KvmContext {
                exception_payload_enabled: true,
                triple_fault_event_enabled: true,
                ..Default::default()
            },
            recorded: Vec::new(),
            applied: 0,
            triple_fault_pending: false,
        }
    }
}

impl StandIn {
    /// Actions kept verbatim (the rest are only counted).
    pub const KEEP: usize = 64;

    fn record(&mut self, r: Recorded) {
        self.applied += 1;
        if self.recorded.len() < Self::KEEP {
            self.recorded.push(r);
        }
    }
}

impl Target for StandIn {
    fn inject(&mut self, event: Event) -> Result<(), ApplyError> {
        crate::events::validate_event(Default::default(), event, &self.kvm, &Default::default())?;
        self.record(Recorded::Inject(event));
        Ok(())
    }

    fn synthesize_triple_fault(&mut self) -> Result<(), ApplyError> {
        crate::events::validate_event(
            Default::default(),
            Event::TripleFault,
            &self.kvm,
            &Default::default(),
        )?;
        self.record(Recorded::TripleFault);
        self.triple_fault_pending = true;
        Ok(())
    }
}

/// A trace as an exit source: lines decoded with the ABI in force, applied
/// to the [`StandIn`].
pub struct TraceSource<R> {
    reader: TraceReader<R>,
    /// The vCPU stand-in the actions are applied to.
    pub stand_in: StandIn,
}

impl<R: BufRead> TraceSource<R> {
    /// A source over `input`; `abi` is `--heki-abi` (wins over the trace's line).
    pub fn new(input: R, abi: Option<HekiAbi>) -> Self {
        TraceSource {
            reader: TraceReader::new(input, abi),
            stand_in: StandIn::default(),
        }
    }

    /// The reader (ABI in force, line number).
    pub fn reader(&self) -> &TraceReader<R> {
        &self.reader
    }
}

impl<R: BufRead> Target for TraceSource<R> {
    fn inject(&mut self, event: Event) -> Result<(), ApplyError> {
        self.stand_in.inject(event)
    }

    fn synthesize_triple_fault(&mut self) -> Result<(), ApplyError> {
        self.stand_in.synthesize_triple_fault()
    }
}

impl<R: BufRead> ExitSource for TraceSource<R> {
    type Error = TraceError;

    fn next_exit<D>(&mut self, st: &mut RunState, decide: D) -> Result<Step, TraceError>
    where
        D: FnOnce(&Exit, Option<u64>, &mut RunState) -> Actions,
    {
        if self.stand_in.triple_fault_pending {
            // What KVM does on the next KVM_RUN with a pending triple fault.
            self.stand_in.triple_fault_pending = false;
            return Ok(Step::Decided(decide(&Exit::Shutdown, None, st)));
        }
        let raw = match self.reader.next_exit() {
            None => {
                return Ok(Step::Stop(StopCause::TraceEnd {
                    exits: st.exits.total(),
                }))
            }
            Some(r) => r?,
        };
        let line = self.reader.line();
        st.policy.heki_abi = self.reader.abi();
        let exit = Exit::decode(&raw, self.reader.abi()).map_err(|e| TraceError {
            line,
            kind: TraceErrorKind::Decode(e),
        })?;
        let actions = decide(&exit, Some(self.reader.t_ns()), st);
        if let Exit::IoIn { port, size, .. } = exit {
            // The stand-in's data area: what the guest's `in` would read.
            let mut data = [0u8; 8];
            let n = usize::from(size).min(data.len());
            complete_read(&actions, &mut data[..n]);
            self.stand_in.record(Recorded::Read {
                port,
                value: u64::from_le_bytes(data),
            });
        }
        Ok(Step::Decided(actions))
    }
}

/// Errors replaying a trace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// A line could not be parsed or decoded.
    #[error("{0}")]
    Trace(#[from] TraceError),
}

/// Result of a replay.
#[derive(Debug)]
pub struct Replayed {
    /// The report.
    pub report: Report,
    /// The stand-in (what was applied).
    pub stand_in: StandIn,
}

/// Replays `input` under `policy`. `abi` is `--heki-abi` (wins over the trace's line).
pub fn replay<R: BufRead>(
    name: &str,
    input: R,
    policy: Policy,
    abi: Option<HekiAbi>,
) -> Result<Replayed, ReplayError> {
    let mut source = TraceSource::new(input, abi);
    let mut st = RunState::for_replay(policy);
    let mut clock = SyntheticClock::default();
    let t0 = Instant::now();
    let stop = crate::run_loop::run(&mut source, &mut st, &mut clock)?;
    let not_replayed = match stop.cause {
        StopCause::TraceEnd { .. } => 0,
        _ => source.reader.count_rest()?,
    };
    st.policy.heki_abi = source.reader.abi();
    let mut warnings = Vec::new();
    if let (Some(forced), Some(traced)) = (abi, source.reader.trace_abi()) {
        if forced != traced {
            warnings.push(format!(
                "--heki-abi {} overrides the trace's abi line ({})",
                forced.name(),
                traced.name()
            ));
        }
    }
    if not_replayed > 0 {
        warnings.push(format!(
            "{not_replayed} trace line(s) after the terminating exit were not replayed"
        ));
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut report = Report::build(
        name,
        Source::Replay,
        &st,
        &stop,
        None,
        secs,
        None,
        Vec::new(),
        warnings,
    );
    report.lines_not_replayed = Some(not_replayed);
    Ok(Replayed {
        report,
        stand_in: source.stand_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::{Action, Actions, Outcome};
    use crate::apply::apply;
    use crate::exit::Exit;
    use crate::guests::{PORT_SYNC, SYNC_INJECT_GP, SYNC_INJECT_PF};
    use crate::handlers;
    use vcpu_events::HardwareException;

    fn sync(code: u8) -> Exit {
        Exit::IoOut {
            port: PORT_SYNC,
            size: 1,
            count: 1,
            data: u64::from(code),
        }
    }

    #[test]
    fn valid_injections_are_recorded() {
        let mut st = RunState::for_replay(Policy::default());
        let mut s = StandIn::default();
        for code in [SYNC_INJECT_GP, SYNC_INJECT_PF] {
            let a = handlers::handle(&sync(code), &mut st);
            assert_eq!(apply(&a, &mut st, &mut s), None);
        }
        assert_eq!(
            s.recorded,
            vec![
                Recorded::Inject(Event::HardwareException(
                    HardwareException::general_protection(0x1230)
                )),
                Recorded::Inject(Event::HardwareException(HardwareException::page_fault(
                    2,
                    0x7fff_dead_b000
                ))),
            ]
        );
        assert_eq!(st.injected_exceptions, 2);
    }

    #[test]
    fn an_injection_that_would_fail_vm_entry_is_refused_with_a_diagnostic() {
        let mut st = RunState::for_replay(Policy::default());
        let mut s = StandIn::default();
        // #GP always pushes an error code: without one, VM entry fails (SDM 26.2.1.3).
        let event = Event::HardwareException(HardwareException::new(13));
        let a = Actions::one(Action::Inject { event });
        let stop = apply(&a, &mut st, &mut s).expect("refused");
        assert_eq!(stop.outcome, Outcome::Refused);
        assert!(
            matches!(&stop.cause, StopCause::Refused { event: e, .. } if *e == event),
            "{stop}"
        );
        assert!(s.recorded.is_empty());
        assert_eq!(st.injected_exceptions, 0);
    }

    #[test]
    fn triple_fault_without_the_cap_is_refused() {
        let mut st = RunState::for_replay(Policy::default());
        let mut s = StandIn::default();
        s.kvm.triple_fault_event_enabled = false;
        let a = handlers::handle(
            &Exit::Notify(notify_exit::NotifyExit {
                flags: notify_exit::NotifyFlags::from_bits_retain(1),
            }),
            &mut st,
        );
        let stop = apply(&a, &mut st, &mut s).expect("refused");
        assert!(matches!(
            stop.cause,
            StopCause::Refused {
                event: Event::TripleFault,
                ..
            }
        ));
    }

    #[test]
    fn an_nmi_is_validated_like_on_kvm() {
        // The stand-in runs vcpu-events' validation for every injection,
        // NMIs included, as `vcpu_events::kvm::inject_event` does on KVM.
        let mut s = StandIn::default();
        assert!(s.inject(Event::Nmi).is_ok());
        assert_eq!(s.recorded, vec![Recorded::Inject(Event::Nmi)]);
        let bad = Event::HardwareException(HardwareException::new(13));
        assert!(matches!(
            s.inject(bad),
            Err(ApplyError::Refused { event, .. }) if event == bad
        ));
        assert_eq!(s.recorded.len(), 1);
    }

    fn replay_text(t: &str) -> Replayed {
        replay("t", t.as_bytes(), Policy::default(), None).unwrap()
    }

    #[test]
    fn lines_after_the_stop_are_counted_not_replayed() {
        let r = replay_text("{\"exit\": \"hlt\"}\n{\"exit\": \"hlt\"}\n\nnot even json\n");
        assert_eq!(r.report.exits_total, 1);
        assert_eq!(r.report.lines_not_replayed, Some(2));
        assert!(r
            .report
            .warnings
            .iter()
            .any(|w| w.contains("2 trace line(s)")));
    }

    #[test]
    fn trace_time_drives_the_storm_detector_not_the_wall_clock() {
        // 150 notify exits 1 µs apart: a storm (100 per second); the same
        // exits 20 ms apart (t_ns): none. Same answer however fast the
        // lines arrive.
        let fast: String = (0..150).map(|_| "{\"exit\": \"notify\"}\n").collect();
        let slow: String = (0..150u64)
            .map(|i| format!("{{\"exit\": \"notify\", \"t_ns\": {}}}\n", i * 20_000_000))
            .collect();
        assert!(replay_text(&fast).report.notify.storms >= 1);
        assert_eq!(replay_text(&slow).report.notify.storms, 0);
        let back = "{\"exit\": \"notify\", \"t_ns\": 50}\n{\"exit\": \"notify\", \"t_ns\": 10}\n";
        let e = replay("t", back.as_bytes(), Policy::default(), None).unwrap_err();
        assert!(
            e.to_string().starts_with("line 2: t_ns 10 is earlier"),
            "{e}"
        );
    }
}
