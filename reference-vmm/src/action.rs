// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What handlers decide: [`Action`]s, collected in a fixed-size [`Actions`]
//! list so the per-exit path never allocates.

#![deny(unsafe_code)]

use serde::Serialize;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Outcome {
    /// The guest executed `hlt` (`KVM_EXIT_HLT`): a normal end.
    Halted,
    /// `KVM_EXIT_SHUTDOWN`: the vCPU triple-faulted.
    Shutdown,
    /// The VMM stopped the VM as a KVM internal error (QEMU's notify policy).
    InternalError,
    /// `KVM_EXIT_FAIL_ENTRY`: VM entry failed.
    FailEntry,
    /// The VMM stopped on an exit it has no handler for.
    UnhandledExit,
    /// The exit budget of the run was used up (guest did not finish).
    ExitLimit,
    /// A replayed trace ended without a terminating exit.
    TraceEnd,
    /// The VMM refused an action (e.g. an injection that would fail VM entry).
    Refused,
    /// The watchdog stopped a run that made no progress in time.
    Timeout,
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
        }
    }
}

/// Why the VM is shut down or stopped; becomes the report's `reason` sentence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cause {
    /// The guest halted.
    GuestHalted,
    /// The guest asked for a triple fault (triple-fault guest).
    GuestRequestedTripleFault,
    /// A notify exit with `KVM_NOTIFY_CONTEXT_INVALID` (exit number `nth`).
    NotifyInvalidContext {
        /// 1-based index of the exit in the run.
        nth: u64,
    },
    /// notify-exit's policy stopped the VM (internal-error mode, or no way to shut down).
    NotifyStop {
        /// 1-based index of the exit in the run.
        nth: u64,
        /// Raw notify flags.
        flags: u32,
        /// notify-exit's reason.
        reason: notify_exit::StopReason,
    },
    /// A Heki denial with `--heki-denial shutdown`.
    HekiDenialShutdown {
        /// 1-based index of the exit in the run.
        nth: u64,
        /// Raw Heki reason (CR0/CR4 bit).
        cr: u64,
        /// Value the guest tried to write.
        cr_value: u64,
    },
    /// A triple fault nobody synthesized: the guest faulted on its own.
    GuestTripleFault,
    /// VM entry failed.
    FailEntry {
        /// Hardware entry failure reason.
        hardware_entry_failure_reason: u64,
    },
    /// KVM reported an internal error.
    KvmInternalError {
        /// Sub-error.
        suberror: u32,
    },
    /// An exit without a handler.
    Unhandled {
        /// Raw exit reason.
        reason: u32,
    },
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::GuestHalted => write!(f, "the guest executed hlt"),
            Cause::GuestRequestedTripleFault => write!(
                f,
                "the VMM synthesized a triple fault (vcpu-events, KVM_VCPUEVENT_VALID_TRIPLE_FAULT) \
                 as the guest asked; KVM shut the vCPU down"
            ),
            Cause::NotifyInvalidContext { nth } => write!(
                f,
                "exit #{nth} was KVM_EXIT_NOTIFY with KVM_NOTIFY_CONTEXT_INVALID: the VM context \
                 is corrupted, so the VMM shut the VM down through a synthesized triple fault"
            ),
            Cause::NotifyStop { nth, flags, reason } => write!(
                f,
                "exit #{nth} was KVM_EXIT_NOTIFY (flags 0x{flags:x}): stopped as a KVM internal \
                 error ({reason})"
            ),
            Cause::HekiDenialShutdown { nth, cr, cr_value } => write!(
                f,
                "exit #{nth} was a Heki denial (reason 0x{cr:x}, value 0x{cr_value:x}) and \
                 --heki-denial is shutdown: the VMM shut the VM down through a synthesized triple fault"
            ),
            Cause::GuestTripleFault => write!(
                f,
                "the guest triple-faulted on its own (KVM_EXIT_SHUTDOWN): an exception it raised \
                 could not be delivered, nor the #DF it escalated to, and the VMM injected nothing"
            ),
            Cause::FailEntry {
                hardware_entry_failure_reason,
            } => write!(
                f,
                "VM entry failed, hardware_entry_failure_reason 0x{hardware_entry_failure_reason:x}"
            ),
            Cause::KvmInternalError { suberror } => {
                write!(f, "KVM_EXIT_INTERNAL_ERROR, suberror {suberror}")
            }
            Cause::Unhandled { reason } => write!(
                f,
                "exit reason {reason} ({}) has no handler",
                crate::exit::exit_display_name(*reason)
            ),
        }
    }
}

/// One decision of a handler, applied by the run loop to a real vCPU or a stand-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Stop the run now.
    Stop {
        /// Outcome.
        outcome: Outcome,
        /// Why.
        cause: Cause,
    },
    /// Raise an external interrupt (queued in the injector; delivered when the guest can take it).
    RaiseInterrupt {
        /// Vector.
        vector: u8,
    },
    /// Inject an exception through `KVM_SET_VCPU_EVENTS` (validated first).
    InjectException {
        /// Vector (0..=31).
        vector: u8,
        /// Error code, for vectors that push one.
        error_code: Option<u32>,
        /// Payload (CR2 for #PF, DR6 for #DB).
        payload: Option<u64>,
    },
    /// Inject an NMI (`KVM_NMI`).
    InjectNmi,
    /// Make a triple fault pending (`KVM_SET_VCPU_EVENTS`, triple_fault.pending = 1).
    SynthesizeTripleFault {
        /// Why (becomes the shutdown's reason).
        cause: Cause,
    },
}

/// Up to [`Actions::CAPACITY`] actions, without allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    items: [Option<Action>; Actions::CAPACITY],
    len: u8,
}

impl Actions {
    /// Most actions one exit can produce.
    pub const CAPACITY: usize = 4;

    /// No action: resume the guest.
    #[inline]
    pub const fn resume() -> Self {
        Actions {
            items: [None; Self::CAPACITY],
            len: 0,
        }
    }

    /// A single action.
    #[inline]
    pub fn one(a: Action) -> Self {
        let mut s = Self::resume();
        s.push(a);
        s
    }

    /// Appends an action; returns false (and drops nothing silently: the caller
    /// gets `false`) when full.
    #[inline]
    pub fn push(&mut self, a: Action) -> bool {
        match self.items.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = Some(a);
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Number of actions.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// True if the guest just resumes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The actions, in order.
    pub fn iter(&self) -> impl Iterator<Item = Action> + '_ {
        self.items.iter().flatten().copied()
    }
}
