// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! How a run ended: a typed [`StopCause`], its coarse [`Outcome`], and the
//! [`Stop`] the run loop returns.
//!
//! Every decision about a run (the demo's PASS/FAIL, the tests, the exit
//! status of the binary) is taken from the typed cause; the sentence of
//! [`StopCause`]'s `Display` is for people only.

#![deny(unsafe_code)]

use serde::Serialize;

/// How a run ended, coarsely (the report's `outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Outcome {
    /// The guest executed `hlt` (`KVM_EXIT_HLT`): a normal end.
    Halted,
    /// `KVM_EXIT_SHUTDOWN`: the vCPU triple-faulted.
    Shutdown,
    /// The VM stopped as an internal error (KVM's, or the notify policy's).
    InternalError,
    /// `KVM_EXIT_FAIL_ENTRY`: VM entry failed.
    FailEntry,
    /// The VMM stopped on an exit it has no handler for.
    UnhandledExit,
    /// The exit budget of the run was used up (guest did not finish).
    ExitLimit,
    /// A replayed trace ended without a terminating exit.
    TraceEnd,
    /// The VMM refused (or could not apply) one of its own actions, e.g. an
    /// injection that would fail VM entry.
    Refused,
    /// The watchdog stopped a run that did not end in time.
    Timeout,
    /// A snapshot could not be restored into a fresh VM (`--snapshot-every`).
    RestoreFailed,
}

impl Outcome {
    /// Name as in JSON (`halted`, `shutdown`, `internal-error`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Halted => "halted",
            Outcome::Shutdown => "shutdown",
            Outcome::InternalError => "internal-error",
            Outcome::FailEntry => "fail-entry",
            Outcome::UnhandledExit => "unhandled-exit",
            Outcome::ExitLimit => "exit-limit",
            Outcome::TraceEnd => "trace-end",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
            Outcome::RestoreFailed => "restore-failed",
        }
    }

    /// True if a run ending this way failed (the binary exits with status 1):
    /// every outcome except `halted`, `shutdown` (the guest's own end, or the
    /// one the policy asked for) and `trace-end` (the whole trace replayed).
    pub fn is_failure(self) -> bool {
        !matches!(
            self,
            Outcome::Halted | Outcome::Shutdown | Outcome::TraceEnd
        )
    }
}

/// Why the VMM made a triple fault pending (`KVM_SET_VCPU_EVENTS` with
/// `KVM_VCPUEVENT_VALID_TRIPLE_FAULT`); the `KVM_EXIT_SHUTDOWN` that follows
/// is reported with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum TripleFaultReason {
    /// The guest asked for it through the port channel (triple-fault guest).
    GuestRequest,
    /// A notify exit with `KVM_NOTIFY_CONTEXT_INVALID`.
    NotifyInvalidContext {
        /// 1-based index of the exit in the run.
        nth: u64,
    },
    /// A Heki denial under `--heki-denial shutdown`.
    HekiDenial {
        /// 1-based index of the exit in the run.
        nth: u64,
        /// Raw Heki reason (the CR0/CR4 bit of the ABI).
        cr: u64,
        /// Value the guest tried to write.
        cr_value: u64,
    },
}

/// The instruction a vCPU stopped at, read from guest memory at its RIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "insn", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Instruction {
    /// `vmcall` (0f 01 c1).
    Vmcall,
    /// `hlt` (f4).
    Hlt,
    /// `ud2` (0f 0b).
    Ud2,
    /// `int3` (cc).
    Int3,
    /// Anything else: the first bytes.
    Other {
        /// Bytes at RIP.
        bytes: [u8; 3],
    },
    /// RIP is outside guest memory.
    Unreadable,
}

impl Instruction {
    /// Names the instruction starting with `bytes`.
    pub fn decode(bytes: [u8; 3]) -> Self {
        match bytes {
            [0x0f, 0x01, 0xc1] => Instruction::Vmcall,
            [0xf4, ..] => Instruction::Hlt,
            [0x0f, 0x0b, _] => Instruction::Ud2,
            [0xcc, ..] => Instruction::Int3,
            bytes => Instruction::Other { bytes },
        }
    }
}

/// Where a vCPU stood when the run stopped (read after the stop).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct VcpuState {
    /// RIP.
    pub rip: u64,
    /// RAX (a stuck `vmcall` still holds its hypercall number there).
    pub rax: u64,
    /// The instruction at RIP.
    pub instruction: Instruction,
}

/// Why a run stopped. Decisions are taken from this, never from its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum StopCause {
    /// The guest executed `hlt`.
    Halted,
    /// `KVM_EXIT_SHUTDOWN` after a triple fault the VMM synthesized.
    SynthesizedTripleFault {
        /// Why the VMM synthesized it.
        why: TripleFaultReason,
    },
    /// `KVM_EXIT_SHUTDOWN` nobody synthesized: the guest triple-faulted on its own.
    GuestTripleFault {
        /// Where the vCPU stopped (KVM runs only).
        vcpu: Option<VcpuState>,
    },
    /// notify-exit's policy stopped the VM as an internal error
    /// (`--notify-vmexit internal-error`, or no way to shut it down).
    NotifyInternalError {
        /// 1-based index of the exit in the run.
        nth: u64,
        /// Raw notify flags.
        flags: u32,
        /// notify-exit's reason.
        reason: notify_exit::StopReason,
    },
    /// `KVM_EXIT_INTERNAL_ERROR`.
    KvmInternalError {
        /// `KVM_INTERNAL_ERROR_*` sub-error.
        suberror: u32,
    },
    /// `KVM_EXIT_FAIL_ENTRY`: VM entry failed.
    FailEntry {
        /// Hardware entry failure reason (VMX: basic exit reason, bit 31 set).
        hardware_entry_failure_reason: u64,
        /// Host CPU.
        cpu: u32,
    },
    /// An exit this VMM has no handler for.
    UnhandledExit {
        /// The real `kvm_run.exit_reason`.
        exit_reason: u32,
    },
    /// A Heki exit was decoded without a Heki ABI in force (the decoder only
    /// produces Heki exits with one: seen only when handlers are driven by hand).
    HekiExitWithoutAbi,
    /// The run's exit budget was used up before the guest finished.
    ExitBudget {
        /// Exits handled (the budget).
        exits: u64,
    },
    /// The watchdog stopped a run that did not end in time.
    Timeout {
        /// The timeout, milliseconds.
        after_ms: u64,
        /// Where the vCPU was (KVM runs only).
        vcpu: Option<VcpuState>,
    },
    /// A replayed trace ended without a terminating exit.
    TraceEnd {
        /// Exits replayed.
        exits: u64,
    },
    /// The VMM refused one of its own injections: it would fail VM entry or
    /// KVM would reject it (vcpu-events' validation).
    Refused {
        /// The event.
        event: vcpu_events::Event,
        /// The validator's diagnostic.
        diagnostic: String,
    },
    /// An injection passed validation but the ioctl failed.
    InjectionFailed {
        /// The event.
        event: vcpu_events::Event,
        /// The error, with its sources.
        error: String,
    },
    /// A snapshot taken at an exit could not be restored into the fresh VM
    /// (refused by vcpu-events' checks, or an ioctl failed).
    RestoreFailed {
        /// 1-based number of the snapshot in the run.
        snapshot: u64,
        /// Exits handled when it was taken.
        at_exit: u64,
        /// The error, with its sources.
        error: String,
    },
}

impl StopCause {
    /// The coarse outcome of this cause.
    pub fn outcome(&self) -> Outcome {
        match self {
            StopCause::Halted => Outcome::Halted,
            StopCause::SynthesizedTripleFault { .. } | StopCause::GuestTripleFault { .. } => {
                Outcome::Shutdown
            }
            StopCause::NotifyInternalError { .. } | StopCause::KvmInternalError { .. } => {
                Outcome::InternalError
            }
            StopCause::FailEntry { .. } => Outcome::FailEntry,
            StopCause::UnhandledExit { .. } | StopCause::HekiExitWithoutAbi => {
                Outcome::UnhandledExit
            }
            StopCause::ExitBudget { .. } => Outcome::ExitLimit,
            StopCause::Timeout { .. } => Outcome::Timeout,
            StopCause::TraceEnd { .. } => Outcome::TraceEnd,
            StopCause::Refused { .. } | StopCause::InjectionFailed { .. } => Outcome::Refused,
            StopCause::RestoreFailed { .. } => Outcome::RestoreFailed,
        }
    }
}

fn fmt_vcpu(f: &mut std::fmt::Formatter<'_>, v: &VcpuState) -> std::fmt::Result {
    write!(f, "the vCPU is at rip 0x{:x}", v.rip)?;
    match v.instruction {
        Instruction::Vmcall => write!(
            f,
            "; it is a `vmcall` (rax = 0x{:x}) that never completes: this host's KVM did not \
             return from the hypercall",
            v.rax
        ),
        Instruction::Hlt => write!(f, "; it is a `hlt`"),
        Instruction::Ud2 => write!(f, " (`ud2`)"),
        Instruction::Int3 => write!(f, " (`int3`)"),
        Instruction::Other { bytes } => write!(f, "; bytes there: {bytes:02x?}"),
        Instruction::Unreadable => write!(f, "; outside guest memory"),
    }
}

impl std::fmt::Display for TripleFaultReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TripleFaultReason::GuestRequest => write!(
                f,
                "the VMM synthesized a triple fault (vcpu-events, KVM_VCPUEVENT_VALID_TRIPLE_FAULT) \
                 as the guest asked; KVM shut the vCPU down"
            ),
            TripleFaultReason::NotifyInvalidContext { nth } => write!(
                f,
                "exit #{nth} was KVM_EXIT_NOTIFY with KVM_NOTIFY_CONTEXT_INVALID: the VM context \
                 is corrupted, so the VMM shut the VM down through a synthesized triple fault"
            ),
            TripleFaultReason::HekiDenial { nth, cr, cr_value } => write!(
                f,
                "exit #{nth} was a Heki denial (reason 0x{cr:x}, value 0x{cr_value:x}) and \
                 --heki-denial is shutdown: the VMM shut the VM down through a synthesized triple fault"
            ),
        }
    }
}

impl std::fmt::Display for StopCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopCause::Halted => write!(f, "the guest executed hlt"),
            StopCause::SynthesizedTripleFault { why } => write!(f, "{why}"),
            StopCause::GuestTripleFault { vcpu } => {
                write!(
                    f,
                    "the guest triple-faulted on its own (KVM_EXIT_SHUTDOWN): an exception it \
                     raised could not be delivered, nor the #DF it escalated to, and the VMM \
                     injected nothing"
                )?;
                if let Some(v) = vcpu {
                    write!(f, "; the vCPU stopped at rip 0x{:x}", v.rip)?;
                    match v.instruction {
                        Instruction::Ud2 => write!(f, " (`ud2`)")?,
                        Instruction::Int3 => write!(f, " (`int3`)")?,
                        Instruction::Other { bytes } => write!(f, " (bytes {bytes:02x?})")?,
                        _ => {}
                    }
                }
                Ok(())
            }
            StopCause::NotifyInternalError { nth, flags, reason } => write!(
                f,
                "exit #{nth} was KVM_EXIT_NOTIFY (flags 0x{flags:x}): stopped as a KVM internal \
                 error ({reason})"
            ),
            StopCause::KvmInternalError { suberror } => {
                write!(f, "KVM_EXIT_INTERNAL_ERROR, suberror {suberror}")
            }
            StopCause::FailEntry {
                hardware_entry_failure_reason,
                cpu,
            } => write!(
                f,
                "VM entry failed, hardware_entry_failure_reason 0x{hardware_entry_failure_reason:x} \
                 (host CPU {cpu})"
            ),
            StopCause::UnhandledExit { exit_reason } => write!(
                f,
                "exit reason {exit_reason} ({}) has no handler",
                crate::exit::exit_display_name(*exit_reason)
            ),
            StopCause::HekiExitWithoutAbi => {
                write!(f, "a Heki exit reached the handlers without a Heki ABI")
            }
            StopCause::ExitBudget { exits } => write!(
                f,
                "the exit budget of {exits} exits is used up and the guest has not finished"
            ),
            StopCause::Timeout { after_ms, vcpu } => {
                if after_ms % 1000 == 0 {
                    write!(f, "no end after {}s", after_ms / 1000)?;
                } else {
                    write!(f, "no end after {after_ms}ms")?;
                }
                if let Some(v) = vcpu {
                    write!(f, ": ")?;
                    fmt_vcpu(f, v)?;
                }
                write!(f, "; the watchdog interrupted KVM_RUN")
            }
            StopCause::TraceEnd { exits } => write!(
                f,
                "the trace ended after {exits} exits without a terminating exit (the guest would resume)"
            ),
            StopCause::Refused { event, diagnostic } => {
                write!(f, "{event:?} refused: {diagnostic}")
            }
            StopCause::InjectionFailed { event, error } => {
                write!(f, "{event:?} passed validation but could not be injected: {error}")
            }
            StopCause::RestoreFailed {
                snapshot,
                at_exit,
                error,
            } => write!(
                f,
                "snapshot {snapshot} (taken after exit {at_exit}) could not be restored into a \
                 fresh VM: {error}"
            ),
        }
    }
}

/// The end of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stop {
    /// Outcome (always `cause.outcome()`).
    pub outcome: Outcome,
    /// Why (print it with `Display` for the sentence).
    pub cause: StopCause,
}

impl Stop {
    /// A stop for `cause`.
    pub fn new(cause: StopCause) -> Self {
        Stop {
            outcome: cause.outcome(),
            cause,
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.outcome.name(), self.cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_budget_is_not_an_unhandled_exit() {
        let budget = StopCause::ExitBudget { exits: 50 };
        assert_eq!(budget.outcome(), Outcome::ExitLimit);
        assert!(!budget.to_string().contains("has no handler"));
        let unhandled = StopCause::UnhandledExit { exit_reason: 39 };
        assert_eq!(unhandled.outcome(), Outcome::UnhandledExit);
        assert!(unhandled.to_string().contains("KVM_EXIT_MEMORY_FAULT"));
    }

    #[test]
    fn causes_serialize_with_a_kind_tag() {
        let c = StopCause::SynthesizedTripleFault {
            why: TripleFaultReason::NotifyInvalidContext { nth: 4 },
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["kind"], "synthesized-triple-fault");
        assert_eq!(v["why"]["by"], "notify-invalid-context");
        assert_eq!(v["why"]["nth"], 4);
        let t = StopCause::Timeout {
            after_ms: 300,
            vcpu: Some(VcpuState {
                rip: 0x10013,
                rax: 0xd,
                instruction: Instruction::decode([0x0f, 0x01, 0xc1]),
            }),
        };
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["kind"], "timeout");
        assert_eq!(v["vcpu"]["instruction"]["insn"], "vmcall");
        assert!(t
            .to_string()
            .starts_with("no end after 300ms: the vCPU is at rip 0x10013"));
    }

    #[test]
    fn failure_outcomes_are_the_ones_the_binary_exits_1_for() {
        for o in [Outcome::Halted, Outcome::Shutdown, Outcome::TraceEnd] {
            assert!(!o.is_failure(), "{o:?}");
        }
        for o in [
            Outcome::Timeout,
            Outcome::FailEntry,
            Outcome::UnhandledExit,
            Outcome::ExitLimit,
            Outcome::Refused,
            Outcome::InternalError,
            Outcome::RestoreFailed,
        ] {
            assert!(o.is_failure(), "{o:?}");
        }
    }

    #[test]
    fn a_failed_restore_is_its_own_failing_outcome_with_a_tagged_cause() {
        let c = StopCause::RestoreFailed {
            snapshot: 3,
            at_exit: 291,
            error: "creating the fresh VM: KVM_CREATE_VM failed".into(),
        };
        assert_eq!(c.outcome(), Outcome::RestoreFailed);
        assert_eq!(c.outcome().name(), "restore-failed");
        assert!(c.outcome().is_failure());
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["kind"], "restore-failed");
        assert_eq!(v["at_exit"], 291);
        assert!(c
            .to_string()
            .starts_with("snapshot 3 (taken after exit 291) could not be restored"));
    }
}
