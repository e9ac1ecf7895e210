// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Replay: a trace's exits through the same handlers, applied to a recording
//! vCPU stand-in instead of a real vCPU.
//!
//! The stand-in records what would have been done (bounded: counts plus the
//! first [`StandIn::KEEP`] actions). Where real KVM would react to an action on
//! the next `KVM_RUN`, the replay does the same: after a synthesized triple
//! fault, the next exit is `KVM_EXIT_SHUTDOWN`, fed through the handlers.

#![deny(unsafe_code)]

use std::io::BufRead;
use std::time::Instant;

use crate::action::Outcome;
use crate::apply::{apply, ApplyError, Stop, Target};
use crate::config::Policy;
use crate::exit::{Exit, HekiAbi};
use crate::handlers::{self, RunState};
use crate::report::{Report, Source};
use crate::trace::{TraceError, TraceErrorKind, TraceReader};

/// What the stand-in was asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// An exception injection.
    Exception {
        /// Vector.
        vector: u8,
        /// Error code.
        error_code: Option<u32>,
        /// Payload.
        payload: Option<u64>,
    },
    /// An NMI.
    Nmi,
    /// A triple fault.
    TripleFault,
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
    fn inject_exception(
        &mut self,
        vector: u8,
        error_code: Option<u32>,
        payload: Option<u64>,
    ) -> Result<(), ApplyError> {
        let (status, event) =
            crate::events::exception_event(vector, error_code, payload, &self.kvm);
        crate::events::validate_event(
            Default::default(),
            status,
            event,
            &self.kvm,
            &Default::default(),
        )?;
        self.record(Recorded::Exception {
            vector,
            error_code,
            payload,
        });
        Ok(())
    }

    fn inject_nmi(&mut self) -> Result<(), ApplyError> {
        self.record(Recorded::Nmi);
        Ok(())
    }

    fn synthesize_triple_fault(&mut self) -> Result<(), ApplyError> {
        crate::events::validate_event(
            Default::default(),
            vcpu_events::EventStatus::Pending,
            vcpu_events::Event::TripleFault,
            &self.kvm,
            &Default::default(),
        )?;
        self.record(Recorded::TripleFault);
        self.triple_fault_pending = true;
        Ok(())
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
    let mut reader = TraceReader::new(input, abi);
    let mut st = RunState::for_replay(policy);
    let mut stand_in = StandIn::default();
    let mut warnings = Vec::new();
    let t0 = Instant::now();
    let stop = loop {
        let raw = match reader.next_exit() {
            None => {
                break Stop {
                    outcome: Outcome::TraceEnd,
                    reason: format!(
                        "the trace ended after {} exits without a terminating exit (the guest would resume)",
                        st.exits.total()
                    ),
                }
            }
            Some(r) => r?,
        };
        let line = reader.line();
        st.policy.heki_abi = reader.abi();
        let exit = Exit::decode(&raw, reader.abi()).map_err(|e| TraceError {
            line,
            kind: TraceErrorKind::Decode(e),
        })?;
        if matches!(exit, Exit::Notify(_) | Exit::Heki(_)) {
            st.now_ns = t0.elapsed().as_nanos() as u64;
        }
        let actions = handlers::handle(&exit, &mut st);
        if let Some(stop) = apply(&actions, &mut st, &mut stand_in) {
            break stop;
        }
        if stand_in.triple_fault_pending {
            // What KVM does on the next KVM_RUN with a pending triple fault.
            stand_in.triple_fault_pending = false;
            let actions = handlers::handle(&Exit::Shutdown, &mut st);
            if let Some(stop) = apply(&actions, &mut st, &mut stand_in) {
                break stop;
            }
        }
    };
    st.policy.heki_abi = reader.abi();
    if abi.is_some_and(|a| a != reader.abi()) {
        warnings.push("--heki-abi overrides the trace's abi line".to_string());
    }
    let secs = t0.elapsed().as_secs_f64();
    let report = Report::build(
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
    Ok(Replayed { report, stand_in })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Actions;
    use crate::exit::Exit;
    use crate::guests::{PORT_SYNC, SYNC_INJECT_GP, SYNC_INJECT_PF};

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
                Recorded::Exception {
                    vector: 13,
                    error_code: Some(0x1230),
                    payload: None
                },
                Recorded::Exception {
                    vector: 14,
                    error_code: Some(2),
                    payload: Some(0x7fff_dead_b000)
                },
            ]
        );
        assert_eq!(st.injected_exceptions, 2);
    }

    #[test]
    fn an_injection_that_would_fail_vm_entry_is_refused_with_a_diagnostic() {
        let mut st = RunState::for_replay(Policy::default());
        let mut s = StandIn::default();
        // #GP always pushes an error code: without one, VM entry fails (SDM 26.2.1.3).
        let a = Actions::one(crate::action::Action::InjectException {
            vector: 13,
            error_code: None,
            payload: None,
        });
        let stop = apply(&a, &mut st, &mut s).expect("refused");
        assert_eq!(stop.outcome, Outcome::Refused);
        assert!(stop.reason.contains("refused"), "{}", stop.reason);
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
        assert_eq!(stop.outcome, Outcome::Refused);
    }
}
