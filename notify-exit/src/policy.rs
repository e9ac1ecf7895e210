// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What to do with a `KVM_EXIT_NOTIFY`: a pure decision, [`decide`], returning a
//! [`NotifyAction`] for the VMM to apply. The decision follows one of two named
//! [`NotifySemantics`], the two QEMU readings of the same modes.
//!
//! [`NotifySemantics::SeedPatch`] (the default), after the seed QEMU series (v4, 2022,
//! "i386: add notify VM exit support": context invalid -> triple fault through
//! `KVM_SET_VCPU_EVENTS`, valid-context exits ignored):
//!
//! | mode | context valid | context invalid |
//! |---|---|---|
//! | `run` | [`Resume`](NotifyAction::Resume) | [`SynthesizeTripleFault`](NotifyAction::SynthesizeTripleFault) if `KVM_CAP_X86_TRIPLE_FAULT_EVENT` is enabled, else [`StopInternalError`](NotifyAction::StopInternalError) ([`StopReason::NoTripleFaultEvent`]) |
//! | `internal-error` | `Resume` | `StopInternalError` ([`StopReason::ContextInvalid`]) |
//! | `disable` | `Resume` | `StopInternalError` ([`StopReason::UnexpectedWhileDisabled`]) |
//!
//! [`NotifySemantics::Qemu72`], after merged QEMU 7.2 (`target/i386/kvm/kvm.c`,
//! `kvm_arch_handle_exit`, case `KVM_EXIT_NOTIFY`: `if (ctx_invalid || notify_vmexit ==
//! NOTIFY_VMEXIT_OPTION_INTERNAL_ERROR)` -> "KVM internal error", return -1; else warn
//! once and resume). It never synthesizes a triple fault:
//!
//! | mode | context valid | context invalid |
//! |---|---|---|
//! | `run` | `Resume` | `StopInternalError` ([`StopReason::ContextInvalidInRunMode`]) |
//! | `internal-error` | `StopInternalError` ([`StopReason::InternalErrorMode`]) | `StopInternalError` ([`StopReason::ContextInvalid`]) |
//! | `disable` | `Resume` | `StopInternalError` ([`StopReason::UnexpectedWhileDisabled`]) |
//!
//! Why:
//! * A valid-context exit has already done its job: leaving the guest opened an event
//!   window, so pending interrupts get delivered. Resuming is safe; QEMU 7.2 still stops
//!   on it in `internal-error` mode, where the operator asked to treat any notify exit as
//!   an error.
//! * An invalid-context exit means the VMCS no longer holds a usable guest state (KVM's
//!   api.rst: resuming gives undefined results). Under the seed semantics, in `run` mode
//!   the vCPU is shut down the way a real CPU would end a hopeless state, a triple fault,
//!   which the VMM requests with `KVM_SET_VCPU_EVENTS` (`KVM_VCPUEVENT_VALID_TRIPLE_FAULT`,
//!   `triple_fault.pending = 1`; the next `KVM_RUN` returns `KVM_EXIT_SHUTDOWN`). KVM
//!   refuses that flag unless the VM enabled `KVM_CAP_X86_TRIPLE_FAULT_EVENT`, so without
//!   it the policy falls back to stopping the VM and says why. QEMU 7.2 stops the VM as
//!   an internal error instead, in every mode.
//! * `disable`: the VMM never enabled the cap, so a notify exit is unexpected (a kernel
//!   default changed, another component enabled it, or a trace from a different
//!   configuration). Both semantics handle it on its merits (QEMU 7.2's code path does
//!   not look at the mode for an invalid context): a valid context is resumed
//!   (harmless), an invalid one stops the VM because it cannot be resumed safely.

#![deny(unsafe_code)]

use std::fmt;

use crate::config::NotifyVmexitMode;
use crate::exit::{NotifyExit, NotifyFlags};

/// Which QEMU reading of the notify-vmexit modes [`decide`] follows (see the module
/// docs for both tables).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum NotifySemantics {
    /// The seed QEMU patch (v4 series, 2022): an invalid context in `run` mode becomes
    /// a synthesized triple fault; a valid context resumes in every mode.
    #[default]
    #[cfg_attr(feature = "serde", serde(rename = "seed"))]
    SeedPatch,
    /// Merged QEMU 7.2 (`kvm_arch_handle_exit`, `KVM_EXIT_NOTIFY`): `ctx_invalid ||
    /// mode == internal-error` stops the VM as an internal error; anything else
    /// resumes. Never a triple fault.
    #[cfg_attr(feature = "serde", serde(rename = "qemu-7.2"))]
    Qemu72,
}

impl NotifySemantics {
    /// Both, the default first.
    pub const ALL: [NotifySemantics; 2] = [NotifySemantics::SeedPatch, NotifySemantics::Qemu72];

    /// The name used on command lines, in reports and by serde: `seed` or `qemu-7.2`.
    pub const fn name(self) -> &'static str {
        match self {
            NotifySemantics::SeedPatch => "seed",
            NotifySemantics::Qemu72 => "qemu-7.2",
        }
    }
}

impl fmt::Display for NotifySemantics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The inputs of the decision besides the exit itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NotifyPolicy {
    /// The configured mode.
    pub mode: NotifyVmexitMode,
    /// Whether `KVM_CAP_X86_TRIPLE_FAULT_EVENT` was enabled on the VM, i.e. whether
    /// `KVM_SET_VCPU_EVENTS` will accept a pending triple fault.
    pub triple_fault_event_enabled: bool,
    /// Which reading of the modes to follow (default [`NotifySemantics::SeedPatch`]).
    pub semantics: NotifySemantics,
}

impl NotifyPolicy {
    /// A policy for `mode`, knowing whether the triple-fault event cap is enabled, with
    /// the default [`NotifySemantics::SeedPatch`].
    pub const fn new(mode: NotifyVmexitMode, triple_fault_event_enabled: bool) -> Self {
        NotifyPolicy {
            mode,
            triple_fault_event_enabled,
            semantics: NotifySemantics::SeedPatch,
        }
    }

    /// The same policy following `semantics`.
    pub const fn with_semantics(mut self, semantics: NotifySemantics) -> Self {
        self.semantics = semantics;
        self
    }

    /// [`decide`] with this policy.
    pub fn decide(&self, exit: NotifyExit) -> NotifyAction {
        decide(self, exit)
    }
}

/// What the VMM should do after a `KVM_EXIT_NOTIFY`.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum NotifyAction {
    /// Re-enter the guest with `KVM_RUN`; nothing else to do.
    Resume,
    /// Make a triple fault pending on this vCPU: `KVM_GET_VCPU_EVENTS`, set
    /// `flags |= KVM_VCPUEVENT_VALID_TRIPLE_FAULT` and `triple_fault.pending = 1`,
    /// `KVM_SET_VCPU_EVENTS`, then `KVM_RUN`, which returns `KVM_EXIT_SHUTDOWN`; the VMM
    /// then handles the shutdown as it handles any guest triple fault (reset or stop).
    ///
    /// Exception: if the vCPU was running a nested guest (L2) when the exit happened,
    /// KVM hands the pending triple fault to the nested code, which turns it into a
    /// triple-fault VM exit to the L1 hypervisor instead of `KVM_EXIT_SHUTDOWN`; L1 then
    /// decides what happens to its L2 (`vcpu_enter_guest`, `nested_ops->triple_fault`).
    SynthesizeTripleFault,
    /// Stop the VM and report a KVM internal error; do not re-enter the guest.
    StopInternalError {
        /// Why.
        reason: StopReason,
        /// The exit's flags, raw, for the report.
        flags: NotifyFlags,
    },
}

impl NotifyAction {
    /// Whether the guest may be re-entered right away.
    pub const fn resumes(&self) -> bool {
        matches!(self, NotifyAction::Resume)
    }
}

impl fmt::Display for NotifyAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotifyAction::Resume => f.write_str("resume"),
            NotifyAction::SynthesizeTripleFault => {
                f.write_str("synthesize a triple fault (KVM_SET_VCPU_EVENTS)")
            }
            NotifyAction::StopInternalError { reason, flags } => {
                write!(f, "stop with internal error: {reason} (flags {flags})")
            }
        }
    }
}

/// Why a notify exit stops the VM.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum StopReason {
    /// `internal-error` mode and `KVM_NOTIFY_CONTEXT_INVALID`.
    ContextInvalid,
    /// `run` mode and `KVM_NOTIFY_CONTEXT_INVALID`, but the VM did not enable
    /// `KVM_CAP_X86_TRIPLE_FAULT_EVENT`, so a triple fault cannot be synthesized.
    NoTripleFaultEvent,
    /// `internal-error` mode under [`NotifySemantics::Qemu72`] and a valid context.
    InternalErrorMode,
    /// `run` mode under [`NotifySemantics::Qemu72`] and `KVM_NOTIFY_CONTEXT_INVALID`:
    /// QEMU 7.2 stops instead of synthesizing a triple fault.
    ContextInvalidInRunMode,
    /// `disable` mode (the exit was never enabled) and `KVM_NOTIFY_CONTEXT_INVALID`.
    UnexpectedWhileDisabled,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::ContextInvalid => {
                "KVM_EXIT_NOTIFY with KVM_NOTIFY_CONTEXT_INVALID: the guest context is corrupt \
                 and cannot be resumed (notify-vmexit=internal-error)"
            }
            StopReason::NoTripleFaultEvent => {
                "KVM_EXIT_NOTIFY with KVM_NOTIFY_CONTEXT_INVALID: cannot synthesize a triple \
                 fault because KVM_CAP_X86_TRIPLE_FAULT_EVENT is not enabled on this VM"
            }
            StopReason::InternalErrorMode => {
                "KVM_EXIT_NOTIFY: the guest ran for the notify window without an event window \
                 (notify-vmexit=internal-error)"
            }
            StopReason::ContextInvalidInRunMode => {
                "KVM_EXIT_NOTIFY with KVM_NOTIFY_CONTEXT_INVALID: the guest context is corrupt \
                 and cannot be resumed (notify-vmexit=run, QEMU 7.2 semantics: an internal \
                 error, no triple fault)"
            }
            StopReason::UnexpectedWhileDisabled => {
                "KVM_EXIT_NOTIFY with KVM_NOTIFY_CONTEXT_INVALID although notify-vmexit=disable: \
                 the guest context is corrupt and cannot be resumed"
            }
        })
    }
}

/// Decides what to do with one notify exit under `policy.semantics` (the two tables of
/// the module docs). Pure: no state, no I/O; unknown flag bits do not change the
/// decision (only `KVM_NOTIFY_CONTEXT_INVALID` is meaningful).
///
/// ```
/// use notify_exit::{
///     decide, NotifyAction, NotifyExit, NotifyFlags, NotifyPolicy, NotifyVmexitMode, StopReason,
/// };
///
/// let invalid = NotifyExit::new(NotifyFlags::CONTEXT_INVALID);
/// let valid = NotifyExit::new(NotifyFlags::empty());
/// // `run` with KVM_CAP_X86_TRIPLE_FAULT_EVENT enabled (vcpu-events' enable_event_caps).
/// let run = NotifyPolicy::new(NotifyVmexitMode::Run, true);
/// assert_eq!(decide(&run, valid), NotifyAction::Resume);
/// assert_eq!(decide(&run, invalid), NotifyAction::SynthesizeTripleFault);
/// // Without the cap the triple fault cannot be requested: stop, and say why.
/// let run_no_cap = NotifyPolicy::new(NotifyVmexitMode::Run, false);
/// assert!(matches!(
///     decide(&run_no_cap, invalid),
///     NotifyAction::StopInternalError { reason: StopReason::NoTripleFaultEvent, .. }
/// ));
/// ```
pub fn decide(policy: &NotifyPolicy, exit: NotifyExit) -> NotifyAction {
    let flags = exit.flags;
    let stop = |reason| NotifyAction::StopInternalError { reason, flags };
    let qemu72 = policy.semantics == NotifySemantics::Qemu72;
    if !exit.context_invalid() {
        return match policy.mode {
            NotifyVmexitMode::InternalError if qemu72 => stop(StopReason::InternalErrorMode),
            _ => NotifyAction::Resume,
        };
    }
    match policy.mode {
        NotifyVmexitMode::Run if qemu72 => stop(StopReason::ContextInvalidInRunMode),
        NotifyVmexitMode::Run if policy.triple_fault_event_enabled => {
            NotifyAction::SynthesizeTripleFault
        }
        NotifyVmexitMode::Run => stop(StopReason::NoTripleFaultEvent),
        NotifyVmexitMode::InternalError => stop(StopReason::ContextInvalid),
        NotifyVmexitMode::Disable => stop(StopReason::UnexpectedWhileDisabled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NotifyVmexitMode::*;

    fn exit(bits: u32) -> NotifyExit {
        NotifyExit::new(NotifyFlags::from_bits_retain(bits))
    }

    fn stop(reason: StopReason, bits: u32) -> NotifyAction {
        NotifyAction::StopInternalError {
            reason,
            flags: NotifyFlags::from_bits_retain(bits),
        }
    }

    #[test]
    fn valid_context_resumes_in_every_mode() {
        for mode in NotifyVmexitMode::ALL {
            for tf in [false, true] {
                let p = NotifyPolicy::new(mode, tf);
                assert_eq!(p.decide(exit(0)), NotifyAction::Resume, "{mode} {tf}");
                // Unknown bits without CONTEXT_INVALID are still a valid context.
                assert_eq!(p.decide(exit(0x8000_0000)), NotifyAction::Resume);
            }
        }
    }

    #[test]
    fn run_mode_invalid_context_synthesizes_a_triple_fault() {
        let p = NotifyPolicy::new(Run, true);
        assert_eq!(p.decide(exit(1)), NotifyAction::SynthesizeTripleFault);
        assert_eq!(p.decide(exit(0xff)), NotifyAction::SynthesizeTripleFault);
    }

    #[test]
    fn run_mode_falls_back_to_internal_error_without_the_triple_fault_cap() {
        let action = NotifyPolicy::new(Run, false).decide(exit(1));
        assert_eq!(action, stop(StopReason::NoTripleFaultEvent, 1));
        let text = action.to_string();
        assert!(text.contains("KVM_CAP_X86_TRIPLE_FAULT_EVENT"), "{text}");
        assert!(!action.resumes());
    }

    #[test]
    fn internal_error_mode_stops_on_invalid_context_naming_the_exit() {
        for tf in [false, true] {
            let action = NotifyPolicy::new(InternalError, tf).decide(exit(1 | 0x40));
            assert_eq!(action, stop(StopReason::ContextInvalid, 0x41));
            assert!(action.to_string().contains("KVM_EXIT_NOTIFY"));
            assert!(action.to_string().contains("0x40"), "unknown bits reported");
        }
    }

    /// QEMU 7.2, target/i386/kvm/kvm.c `kvm_arch_handle_exit`, case KVM_EXIT_NOTIFY:
    /// `ctx_invalid || notify_vmexit == NOTIFY_VMEXIT_OPTION_INTERNAL_ERROR` -> internal
    /// error (return -1), else resume. Every (mode, context, triple-fault cap) cell.
    #[test]
    fn qemu_7_2_semantics_stop_on_invalid_context_or_internal_error_mode() {
        for tf in [false, true] {
            let p = |mode| NotifyPolicy::new(mode, tf).with_semantics(NotifySemantics::Qemu72);
            assert_eq!(p(Run).decide(exit(0)), NotifyAction::Resume);
            assert_eq!(
                p(Run).decide(exit(1)),
                stop(StopReason::ContextInvalidInRunMode, 1),
                "7.2 never synthesizes a triple fault (tf cap {tf})"
            );
            assert_eq!(
                p(InternalError).decide(exit(0)),
                stop(StopReason::InternalErrorMode, 0)
            );
            assert_eq!(
                p(InternalError).decide(exit(0x41)),
                stop(StopReason::ContextInvalid, 0x41)
            );
            assert_eq!(p(Disable).decide(exit(0)), NotifyAction::Resume);
            assert_eq!(
                p(Disable).decide(exit(1)),
                stop(StopReason::UnexpectedWhileDisabled, 1)
            );
        }
        let text = stop(StopReason::ContextInvalidInRunMode, 1).to_string();
        assert!(text.contains("QEMU 7.2"), "{text}");
    }

    /// The seed QEMU patch: invalid context -> triple fault (run mode, with the cap),
    /// valid context resumes in every mode, internal-error mode included.
    #[test]
    fn seed_patch_semantics_are_the_default_and_resume_valid_contexts() {
        // The names are the same for humans and serde.
        #[cfg(feature = "serde")]
        for s in NotifySemantics::ALL {
            let json = format!("\"{}\"", s.name());
            assert_eq!(serde_json::to_string(&s).unwrap(), json);
            assert_eq!(serde_json::from_str::<NotifySemantics>(&json).unwrap(), s);
        }
        assert_eq!(NotifySemantics::default(), NotifySemantics::SeedPatch);
        assert_eq!(
            NotifyPolicy::new(Run, true).semantics,
            NotifySemantics::SeedPatch
        );
        let p = |mode| NotifyPolicy::new(mode, true).with_semantics(NotifySemantics::SeedPatch);
        assert_eq!(p(InternalError).decide(exit(0)), NotifyAction::Resume);
        assert_eq!(p(Run).decide(exit(1)), NotifyAction::SynthesizeTripleFault);
        assert_eq!(
            NotifySemantics::ALL.map(NotifySemantics::name),
            ["seed", "qemu-7.2"]
        );
    }

    #[test]
    fn disable_mode_stops_on_invalid_context() {
        for tf in [false, true] {
            let p = NotifyPolicy::new(Disable, tf);
            assert_eq!(
                p.decide(exit(1)),
                stop(StopReason::UnexpectedWhileDisabled, 1)
            );
        }
    }

    #[test]
    fn an_invalid_context_is_never_resumed() {
        arbtest::arbtest(|u| {
            let bits: u32 = u.arbitrary()?;
            let p = NotifyPolicy::new(*u.choose(&NotifyVmexitMode::ALL)?, u.arbitrary()?)
                .with_semantics(*u.choose(&NotifySemantics::ALL)?);
            let action = p.decide(exit(bits));
            if bits & 1 == 1 {
                assert!(!action.resumes());
            }
            if action == NotifyAction::SynthesizeTripleFault {
                assert!(p.triple_fault_event_enabled && p.mode == Run);
                assert_eq!(p.semantics, NotifySemantics::SeedPatch);
            }
            Ok(())
        });
    }
}
