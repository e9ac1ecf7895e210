// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every SDM VM-entry check that involves event injection.
//!
//! * [`check_entry_interruption`]: the checks on the VM-entry control fields
//!   (SDM 26.2.1.3), rules C1..C8 of the reference.
//! * [`check_guest_event_state`]: the guest-state checks that depend on the
//!   injected event or on the event-related state (SDM 26.3.1.4 / 26.3.1.5),
//!   rules G1..G9.
//! * [`check_entry()`] runs both.
//!
//! Every check runs; the result lists *all* violations (an empty list means VM
//! entry accepts the event). The capability bits a check needs come in as
//! plain values ([`EntryCaps`]), so this module needs no MSR access and no
//! dependency on a capability crate.
//!
//! # Readings where sources differ
//!
//! * C5 with IA32_VMX_BASIC bit 56: any *hardware exception* may be delivered
//!   with or without an error code; the deliver-error-code bit is still
//!   reported for other interruption types (conservative; KVM's nested check
//!   skips C5 entirely then).
//! * C5 and #CP (21): an error code only with CET ([`EntryCaps::cet`]).
//! * C7: bits 31:16 of the error code must be 0 (hardware, KVM, Bochs; some
//!   texts say 31:15).
//! * G5: NMI with blocking by STI is reported too ("some processors" reject
//!   it; KVM itself refuses to inject NMIs in an STI shadow).
//! * G8: per activity state: HLT allows external interrupt, NMI, #DB, #MC and
//!   MTF; shutdown allows NMI and #MC; wait-for-SIPI allows nothing.

#![deny(unsafe_code)]

use crate::event::{
    exception_has_error_code, vector::*, ActivityState, Interruptibility, X86_EFLAGS_IF,
    X86_EFLAGS_TF,
};
use crate::interruption::{EntryInterruption, InterruptionType};

/// Processor capabilities the event checks depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EntryCaps {
    /// IA32_VMX_MISC bit 30: software interrupts / exceptions can be injected
    /// with an instruction length of 0.
    pub zero_length_instruction_injection: bool,
    /// IA32_VMX_BASIC bit 56: VM entry does not check the deliver-error-code
    /// bit against the exception vector (any hardware exception may be
    /// delivered with or without an error code).
    pub no_hw_error_code_consistency_check: bool,
    /// The "monitor trap flag" VM-execution control is supported (allows
    /// interruption type 7, pending MTF VM exit).
    pub monitor_trap_flag: bool,
    /// CET is supported: #CP (21) delivers an error code.
    pub cet: bool,
}

impl EntryCaps {
    /// Bit 56 of IA32_VMX_BASIC (MSR 0x480).
    pub const VMX_BASIC_NO_HW_ERRCODE_CC: u64 = 1 << 56;
    /// Bit 30 of IA32_VMX_MISC (MSR 0x485).
    pub const VMX_MISC_ZERO_LEN_INS: u64 = 1 << 30;

    /// Takes the two bits from raw IA32_VMX_BASIC and IA32_VMX_MISC values;
    /// `monitor_trap_flag` and `cet` stay false (set them if known).
    pub fn from_msrs(vmx_basic: u64, vmx_misc: u64) -> Self {
        Self {
            zero_length_instruction_injection: vmx_misc & Self::VMX_MISC_ZERO_LEN_INS != 0,
            no_hw_error_code_consistency_check: vmx_basic & Self::VMX_BASIC_NO_HW_ERRCODE_CC != 0,
            monitor_trap_flag: false,
            cet: false,
        }
    }
}

/// VM-execution / VM-entry controls the event checks depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EntryControls {
    /// Secondary control "unrestricted guest" (bit 7).
    pub unrestricted_guest: bool,
    /// Pin-based control "virtual NMIs" (bit 5).
    pub virtual_nmis: bool,
    /// VM-entry control "entry to SMM" (bit 10).
    pub entry_to_smm: bool,
}

/// The guest state the event checks read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GuestEventState {
    /// Guest RFLAGS.
    pub rflags: u64,
    /// Guest CR0.PE (protected mode).
    pub cr0_pe: bool,
    /// Guest interruptibility state.
    pub interruptibility: Interruptibility,
    /// Guest activity state.
    pub activity: ActivityState,
    /// The logical processor is in SMM (dual-monitor treatment).
    pub in_smm: bool,
    /// Pending debug exceptions bit 14 (BS): a single-step #DB is pending.
    pub pending_debug_bs: bool,
    /// IA32_DEBUGCTL.BTF (bit 1): single-step on branches.
    pub debugctl_btf: bool,
}

impl GuestEventState {
    /// Active state with `rflags`, CR0.PE = 1, no blocking, not in SMM.
    pub fn with_rflags(rflags: u64) -> Self {
        Self {
            rflags,
            cr0_pe: true,
            ..Default::default()
        }
    }
}

/// One failed VM-entry check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Violation {
    /// C1: interruption type 1 is reserved.
    #[error("C1: interruption type 1 is reserved")]
    ReservedInterruptionType,
    /// C1: type 7 (other event) needs the monitor-trap-flag capability.
    #[error("C1: interruption type 7 without monitor-trap-flag support")]
    OtherEventUnsupported,
    /// C2: NMI type with a vector other than 2.
    #[error("C2: NMI injected with vector {vector}, must be 2")]
    NmiVector {
        /// The vector.
        vector: u8,
    },
    /// C3: hardware exception with a vector above 31.
    #[error("C3: hardware exception with vector {vector} > 31")]
    ExceptionVector {
        /// The vector.
        vector: u8,
    },
    /// C4: other event (type 7) with a vector other than 0.
    #[error("C4: other event (MTF) with vector {vector}, must be 0")]
    OtherEventVector {
        /// The vector.
        vector: u8,
    },
    /// C5: the exception delivers an error code architecturally but bit 11 is 0.
    #[error("C5: vector {vector} needs the deliver-error-code bit")]
    ErrorCodeMissing {
        /// The vector.
        vector: u8,
    },
    /// C5: bit 11 is set for an event that has no error code (wrong vector,
    /// real mode with unrestricted guest, or not a hardware exception).
    #[error("C5: deliver-error-code set for type {interruption_type:?} vector {vector} that has no error code")]
    UnexpectedErrorCode {
        /// The type.
        interruption_type: InterruptionType,
        /// The vector.
        vector: u8,
    },
    /// C6: reserved bits 30:12 set.
    #[error("C6: reserved bits {bits:#x} set in the interruption-information field")]
    ReservedBits {
        /// The set reserved bits.
        bits: u32,
    },
    /// C7: error code bits 31:16 set.
    #[error("C7: error code {error_code:#x} has bits 31:16 set")]
    ErrorCodeHighBits {
        /// The error code.
        error_code: u32,
    },
    /// C8: instruction length above 15.
    #[error("C8: instruction length {len} > 15")]
    InstructionLengthTooLong {
        /// The length.
        len: u32,
    },
    /// C8: instruction length 0 without IA32_VMX_MISC bit 30.
    #[error("C8: instruction length 0 needs IA32_VMX_MISC bit 30")]
    ZeroInstructionLength,
    /// G1: external interrupt injected with RFLAGS.IF = 0.
    #[error("G1: external interrupt injected with RFLAGS.IF = 0")]
    ExternalInterruptWithIfClear,
    /// G2: reserved interruptibility-state bits 31:5 set.
    #[error("G2: interruptibility-state reserved bits {bits:#x} set")]
    InterruptibilityReservedBits {
        /// The set reserved bits.
        bits: u32,
    },
    /// G2: blocking by STI and by MOV SS both set.
    #[error("G2: blocking by STI and by MOV SS both set")]
    StiAndMovSsBlocking,
    /// G2: enclave interruption (bit 4) together with blocking by MOV SS
    /// (SDM 26.3.1.5: "If bit 4 (enclave interruption) is 1, bit 1 (blocking
    /// by MOV-SS) must be 0").
    #[error("G2: enclave interruption with blocking by MOV SS")]
    EnclaveInterruptionWithMovSs,
    /// G3: blocking by STI with RFLAGS.IF = 0.
    #[error("G3: blocking by STI with RFLAGS.IF = 0")]
    StiBlockingWithIfClear,
    /// G4: external interrupt injected inside an STI / MOV-SS shadow.
    #[error("G4: external interrupt injected with STI or MOV-SS blocking")]
    ExternalInterruptInShadow,
    /// G5: NMI injected with blocking by MOV SS.
    #[error("G5: NMI injected with blocking by MOV SS")]
    NmiWithMovSsBlocking,
    /// G5: NMI injected with blocking by STI (rejected by some processors,
    /// "other processors may not make this requirement"; reported so that
    /// the result is portable).
    #[error("G5: NMI injected with blocking by STI (rejected by some processors)")]
    NmiWithStiBlocking,
    /// G6: NMI injected with virtual NMIs while blocking by NMI is set.
    #[error("G6: NMI injected while virtual-NMI blocking is set")]
    NmiWhileNmiBlocked,
    /// G7: blocking by SMI outside SMM.
    #[error("G7: blocking by SMI set outside SMM")]
    SmiBlockingOutsideSmm,
    /// G7: "entry to SMM" without blocking by SMI.
    #[error("G7: entry to SMM without blocking by SMI")]
    EntryToSmmWithoutSmiBlocking,
    /// G8: STI / MOV-SS blocking with an activity state other than active.
    #[error("G8: STI/MOV-SS blocking in activity state {activity:?}")]
    ShadowWhenNotActive {
        /// The activity state.
        activity: ActivityState,
    },
    /// G8: the event is blocked in the guest's activity state (HLT: only
    /// external interrupt, NMI, #DB, #MC, MTF; shutdown: only NMI, #MC;
    /// wait-for-SIPI: nothing).
    #[error("G8: {interruption_type:?} vector {vector} cannot be injected in activity state {activity:?}")]
    EventBlockedInActivityState {
        /// The activity state.
        activity: ActivityState,
        /// The type.
        interruption_type: InterruptionType,
        /// The vector.
        vector: u8,
    },
    /// G8: reserved activity-state value.
    #[error("G8: reserved activity state {0}")]
    ReservedActivityState(u32),
    /// G9: TF = 1 (BTF = 0) with an STI/MOV-SS shadow or HLT, but no pending
    /// single-step #DB (pending debug exceptions BS = 0).
    #[error("G9: RFLAGS.TF = 1 in a shadow/HLT but pending-debug BS = 0")]
    SingleStepNotPending,
    /// G9: pending-debug BS = 1 in a shadow/HLT while TF = 0 or BTF = 1.
    #[error("G9: pending-debug BS = 1 in a shadow/HLT while TF = 0 or BTF = 1")]
    SingleStepPendingWithoutTf,
}

impl Violation {
    /// The rule id used in this crate's reference (C1..C8, G1..G9).
    pub fn rule(&self) -> &'static str {
        use Violation::*;
        match self {
            ReservedInterruptionType | OtherEventUnsupported => "C1",
            NmiVector { .. } => "C2",
            ExceptionVector { .. } => "C3",
            OtherEventVector { .. } => "C4",
            ErrorCodeMissing { .. } | UnexpectedErrorCode { .. } => "C5",
            ReservedBits { .. } => "C6",
            ErrorCodeHighBits { .. } => "C7",
            InstructionLengthTooLong { .. } | ZeroInstructionLength => "C8",
            ExternalInterruptWithIfClear => "G1",
            InterruptibilityReservedBits { .. }
            | StiAndMovSsBlocking
            | EnclaveInterruptionWithMovSs => "G2",
            StiBlockingWithIfClear => "G3",
            ExternalInterruptInShadow => "G4",
            NmiWithMovSsBlocking | NmiWithStiBlocking => "G5",
            NmiWhileNmiBlocked => "G6",
            SmiBlockingOutsideSmm | EntryToSmmWithoutSmiBlocking => "G7",
            ShadowWhenNotActive { .. }
            | EventBlockedInActivityState { .. }
            | ReservedActivityState(_) => "G8",
            SingleStepNotPending | SingleStepPendingWithoutTf => "G9",
        }
    }

    /// The SDM Vol. 3C section that states the rule.
    pub fn sdm_section(&self) -> &'static str {
        match self.rule() {
            "G1" => "SDM 26.3.1.4 (checks on guest RIP, RFLAGS and SSP)",
            r if r.starts_with('G') => "SDM 26.3.1.5 (checks on guest non-register state)",
            _ => "SDM 26.2.1.3 (checks on VM-entry control fields: event injection)",
        }
    }

    /// Whether VM entry fails with "invalid guest state" (exit reason 33,
    /// `hardware_entry_failure_reason` 0x80000021) rather than VM-instruction
    /// error 7 (invalid control field).
    pub fn is_guest_state(&self) -> bool {
        self.rule().starts_with('G')
    }
}

/// C1..C8: checks on the VM-entry interruption-information field, error code
/// and instruction length (SDM 26.2.1.3). `guest_cr0_pe` and
/// `unrestricted_guest` decide C5 (real-mode guests deliver no error code).
pub fn check_entry_interruption(
    entry: &EntryInterruption,
    caps: &EntryCaps,
    controls: &EntryControls,
    guest_cr0_pe: bool,
) -> Vec<Violation> {
    let mut out = Vec::new();
    push_entry_interruption(&mut out, entry, caps, controls, guest_cr0_pe);
    out
}

fn push_entry_interruption(
    out: &mut Vec<Violation>,
    entry: &EntryInterruption,
    caps: &EntryCaps,
    controls: &EntryControls,
    guest_cr0_pe: bool,
) {
    let info = entry.info;
    if !info.valid() {
        return;
    }
    let vector = info.vector();
    let ty = info.interruption_type();
    match ty {
        InterruptionType::Reserved => out.push(Violation::ReservedInterruptionType),
        InterruptionType::OtherEvent => {
            if !caps.monitor_trap_flag {
                out.push(Violation::OtherEventUnsupported);
            }
            if vector != 0 {
                out.push(Violation::OtherEventVector { vector });
            }
        }
        InterruptionType::Nmi if vector != X86_TRAP_NMI => {
            out.push(Violation::NmiVector { vector })
        }
        InterruptionType::HardwareException if vector > LAST_EXCEPTION_VECTOR => {
            out.push(Violation::ExceptionVector { vector })
        }
        _ => {}
    }

    // C5. With IA32_VMX_BASIC bit 56 any hardware exception may go with or
    // without an error code; the bit must still be 0 for other types
    // (conservative reading, see the crate docs).
    let is_hw = ty == InterruptionType::HardwareException;
    let should = (!controls.unrestricted_guest || guest_cr0_pe)
        && is_hw
        && exception_has_error_code(vector, caps.cet);
    let has = info.deliver_error_code();
    if !(is_hw && caps.no_hw_error_code_consistency_check) {
        if should && !has {
            out.push(Violation::ErrorCodeMissing { vector });
        } else if has && !should {
            out.push(Violation::UnexpectedErrorCode {
                interruption_type: ty,
                vector,
            });
        }
    }

    // C6.
    if info.reserved_bits() != 0 {
        out.push(Violation::ReservedBits {
            bits: info.reserved_bits(),
        });
    }
    // C7.
    if has && entry.error_code & 0xffff_0000 != 0 {
        out.push(Violation::ErrorCodeHighBits {
            error_code: entry.error_code,
        });
    }
    // C8.
    if ty.uses_instruction_len() {
        if entry.instruction_len > 15 {
            out.push(Violation::InstructionLengthTooLong {
                len: entry.instruction_len,
            });
        } else if entry.instruction_len == 0 && !caps.zero_length_instruction_injection {
            out.push(Violation::ZeroInstructionLength);
        }
    }
}

/// G1..G9: guest-state checks that involve events (SDM 26.3.1.4, 26.3.1.5).
/// Pass [`EntryInterruption::NONE`] to check the state alone (e.g. a restored
/// interrupt shadow).
pub fn check_guest_event_state(
    entry: &EntryInterruption,
    guest: &GuestEventState,
    controls: &EntryControls,
) -> Vec<Violation> {
    let mut out = Vec::new();
    push_guest_event_state(&mut out, entry, guest, controls);
    out
}

fn push_guest_event_state(
    out: &mut Vec<Violation>,
    entry: &EntryInterruption,
    guest: &GuestEventState,
    controls: &EntryControls,
) {
    let intr = guest.interruptibility;
    let if_set = guest.rflags & X86_EFLAGS_IF != 0;
    let injecting = entry.info.valid();
    let ty = entry.info.interruption_type();
    let vector = entry.info.vector();

    // G1.
    if injecting && ty == InterruptionType::ExternalInterrupt && !if_set {
        out.push(Violation::ExternalInterruptWithIfClear);
    }
    // G2.
    if intr.reserved_bits() != 0 {
        out.push(Violation::InterruptibilityReservedBits {
            bits: intr.reserved_bits(),
        });
    }
    if intr.sti() && intr.mov_ss() {
        out.push(Violation::StiAndMovSsBlocking);
    }
    if intr.raw() & Interruptibility::ENCLAVE_INTERRUPTION != 0 && intr.mov_ss() {
        out.push(Violation::EnclaveInterruptionWithMovSs);
    }
    // G3.
    if intr.sti() && !if_set {
        out.push(Violation::StiBlockingWithIfClear);
    }
    if injecting {
        // G4.
        if ty == InterruptionType::ExternalInterrupt && intr.shadow() {
            out.push(Violation::ExternalInterruptInShadow);
        }
        if ty == InterruptionType::Nmi {
            // G5.
            if intr.mov_ss() {
                out.push(Violation::NmiWithMovSsBlocking);
            }
            if intr.sti() {
                out.push(Violation::NmiWithStiBlocking);
            }
            // G6.
            if controls.virtual_nmis && intr.nmi() {
                out.push(Violation::NmiWhileNmiBlocked);
            }
        }
    }
    // G7.
    if intr.smi() && !guest.in_smm {
        out.push(Violation::SmiBlockingOutsideSmm);
    }
    if controls.entry_to_smm && !intr.smi() {
        out.push(Violation::EntryToSmmWithoutSmiBlocking);
    }
    // G8.
    let activity = guest.activity;
    if let ActivityState::Other(raw) = activity {
        out.push(Violation::ReservedActivityState(raw));
    }
    if intr.shadow() && activity != ActivityState::Active {
        out.push(Violation::ShadowWhenNotActive { activity });
    }
    if injecting {
        let allowed = match activity {
            ActivityState::Active | ActivityState::Other(_) => true,
            ActivityState::Hlt => match ty {
                InterruptionType::ExternalInterrupt | InterruptionType::Nmi => true,
                InterruptionType::HardwareException => {
                    vector == X86_TRAP_DB || vector == X86_TRAP_MC
                }
                InterruptionType::OtherEvent => vector == 0,
                _ => false,
            },
            ActivityState::Shutdown => {
                ty == InterruptionType::Nmi
                    || (ty == InterruptionType::HardwareException && vector == X86_TRAP_MC)
            }
            ActivityState::WaitForSipi => false,
        };
        if !allowed {
            out.push(Violation::EventBlockedInActivityState {
                activity,
                interruption_type: ty,
                vector,
            });
        }
    }
    // G9.
    if intr.shadow() || activity == ActivityState::Hlt {
        let single_step = guest.rflags & X86_EFLAGS_TF != 0 && !guest.debugctl_btf;
        if single_step && !guest.pending_debug_bs {
            out.push(Violation::SingleStepNotPending);
        } else if !single_step && guest.pending_debug_bs {
            out.push(Violation::SingleStepPendingWithoutTf);
        }
    }
}

/// All event-related VM-entry checks: control fields (C1..C8) then guest
/// state (G1..G9).
pub fn check_entry(
    entry: &EntryInterruption,
    guest: &GuestEventState,
    controls: &EntryControls,
    caps: &EntryCaps,
) -> Vec<Violation> {
    let mut out = Vec::new();
    push_entry_interruption(&mut out, entry, caps, controls, guest.cr0_pe);
    push_guest_event_state(&mut out, entry, guest, controls);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, HardwareException};
    use crate::interruption::InterruptionInfo;

    const IF: u64 = X86_EFLAGS_IF | 2;

    fn ctl() -> EntryControls {
        EntryControls::default()
    }

    fn raw(info: u32, error_code: u32, len: u32) -> EntryInterruption {
        EntryInterruption {
            info: InterruptionInfo::from_bits_retain(info),
            error_code,
            instruction_len: len,
        }
    }

    fn ev(e: Event) -> EntryInterruption {
        EntryInterruption::encode(&e).unwrap()
    }

    fn c(entry: &EntryInterruption) -> Vec<Violation> {
        check_entry_interruption(entry, &EntryCaps::default(), &ctl(), true)
    }

    fn g(entry: &EntryInterruption, guest: GuestEventState) -> Vec<Violation> {
        check_guest_event_state(entry, &guest, &ctl())
    }

    #[test]
    fn not_valid_is_never_checked() {
        assert!(c(&raw(0x7fff_ffff, 0xffff_ffff, 99)).is_empty());
    }

    #[test]
    fn c1_reserved_type_and_mtf() {
        assert_eq!(
            c(&raw(0x8000_0100, 0, 0)),
            vec![Violation::ReservedInterruptionType]
        );
        assert_eq!(
            c(&raw(0x8000_0700, 0, 0)),
            vec![Violation::OtherEventUnsupported]
        );
        let caps = EntryCaps {
            monitor_trap_flag: true,
            ..Default::default()
        };
        assert!(check_entry_interruption(&raw(0x8000_0700, 0, 0), &caps, &ctl(), true).is_empty());
    }

    #[test]
    fn c2_nmi_vector() {
        assert!(c(&ev(Event::Nmi)).is_empty());
        assert_eq!(
            c(&raw(0x8000_0203, 0, 0)),
            vec![Violation::NmiVector { vector: 3 }]
        );
    }

    #[test]
    fn c3_exception_vector() {
        assert!(c(&raw(0x8000_031f, 0, 0)).is_empty());
        assert_eq!(
            c(&raw(0x8000_0320, 0, 0)),
            vec![Violation::ExceptionVector { vector: 32 }]
        );
    }

    #[test]
    fn c4_other_event_vector() {
        let caps = EntryCaps {
            monitor_trap_flag: true,
            ..Default::default()
        };
        assert_eq!(
            check_entry_interruption(&raw(0x8000_0701, 0, 0), &caps, &ctl(), true),
            vec![Violation::OtherEventVector { vector: 1 }]
        );
    }

    #[test]
    fn c5_error_code_consistency() {
        // Passing: #GP with, #UD without.
        assert!(c(&ev(Event::HardwareException(
            HardwareException::general_protection(0)
        )))
        .is_empty());
        assert!(c(&ev(Event::HardwareException(HardwareException::new(6)))).is_empty());
        // Missing for #PF.
        assert_eq!(
            c(&raw(0x8000_030e, 0, 0)),
            vec![Violation::ErrorCodeMissing { vector: 14 }]
        );
        // Unexpected for #UD, and for an external interrupt.
        assert_eq!(
            c(&raw(0x8000_0b06, 0, 0)),
            vec![Violation::UnexpectedErrorCode {
                interruption_type: InterruptionType::HardwareException,
                vector: 6
            }]
        );
        assert_eq!(
            c(&raw(0x8000_0820, 0, 0)),
            vec![Violation::UnexpectedErrorCode {
                interruption_type: InterruptionType::ExternalInterrupt,
                vector: 0x20
            }]
        );
        // Real mode with unrestricted guest: #GP has no error code.
        let ug = EntryControls {
            unrestricted_guest: true,
            ..ctl()
        };
        let gp = ev(Event::HardwareException(
            HardwareException::general_protection(0),
        ));
        assert_eq!(
            check_entry_interruption(&gp, &EntryCaps::default(), &ug, false),
            vec![Violation::UnexpectedErrorCode {
                interruption_type: InterruptionType::HardwareException,
                vector: 13
            }]
        );
        assert!(check_entry_interruption(
            &raw(0x8000_030d, 0, 0),
            &EntryCaps::default(),
            &ug,
            false
        )
        .is_empty());
        // Without unrestricted guest, CR0.PE does not matter.
        assert!(check_entry_interruption(&gp, &EntryCaps::default(), &ctl(), false).is_empty());
        // #CP only with CET.
        let cet = EntryCaps {
            cet: true,
            ..Default::default()
        };
        assert!(check_entry_interruption(&raw(0x8000_0b15, 0, 0), &cet, &ctl(), true).is_empty());
        assert_eq!(c(&raw(0x8000_0b15, 0, 0)).len(), 1);
        // IA32_VMX_BASIC bit 56 lifts the vector rule for hardware exceptions only.
        let nocc = EntryCaps::from_msrs(1 << 56, 0);
        assert!(nocc.no_hw_error_code_consistency_check);
        assert!(check_entry_interruption(&raw(0x8000_0b06, 0, 0), &nocc, &ctl(), true).is_empty());
        assert!(check_entry_interruption(&raw(0x8000_030e, 0, 0), &nocc, &ctl(), true).is_empty());
        assert_eq!(
            check_entry_interruption(&raw(0x8000_0820, 0, 0), &nocc, &ctl(), true).len(),
            1
        );
    }

    #[test]
    fn c6_reserved_bits() {
        assert_eq!(
            c(&raw(0x8000_1020, 0, 0)),
            vec![Violation::ReservedBits { bits: 0x1000 }]
        );
        assert_eq!(
            c(&raw(0xc000_0020, 0, 0)),
            vec![Violation::ReservedBits { bits: 0x4000_0000 }]
        );
    }

    #[test]
    fn c7_error_code_high_bits() {
        assert!(c(&raw(0x8000_0b0d, 0xffff, 0)).is_empty());
        assert_eq!(
            c(&raw(0x8000_0b0d, 0x1_0000, 0)),
            vec![Violation::ErrorCodeHighBits {
                error_code: 0x1_0000
            }]
        );
        // Not checked without bit 11.
        assert!(c(&raw(0x8000_0306, 0xffff_0000, 0)).is_empty());
    }

    #[test]
    fn c8_instruction_length() {
        for ty in [4u32, 5, 6] {
            let base = 0x8000_0000 | (ty << 8) | 3;
            assert!(c(&raw(base, 0, 1)).is_empty());
            assert!(c(&raw(base, 0, 15)).is_empty());
            assert_eq!(
                c(&raw(base, 0, 16)),
                vec![Violation::InstructionLengthTooLong { len: 16 }]
            );
            assert_eq!(c(&raw(base, 0, 0)), vec![Violation::ZeroInstructionLength]);
            let caps = EntryCaps::from_msrs(0, 1 << 30);
            assert!(check_entry_interruption(&raw(base, 0, 0), &caps, &ctl(), true).is_empty());
        }
        // Not checked for hardware events.
        assert!(c(&raw(0x8000_0020, 0, 99)).is_empty());
    }

    #[test]
    fn g1_external_interrupt_needs_if() {
        let e = ev(Event::ExternalInterrupt { vector: 0x20 });
        assert!(g(&e, GuestEventState::with_rflags(IF)).is_empty());
        assert_eq!(
            g(&e, GuestEventState::with_rflags(2)),
            vec![Violation::ExternalInterruptWithIfClear]
        );
        // The edk2#91 state: RFLAGS=0x2, intr_info=0x800000d1.
        let edk2 = check_entry(
            &raw(0x8000_00d1, 0, 0),
            &GuestEventState::with_rflags(2),
            &ctl(),
            &EntryCaps::default(),
        );
        assert_eq!(edk2, vec![Violation::ExternalInterruptWithIfClear]);
        assert_eq!(
            edk2[0].sdm_section(),
            "SDM 26.3.1.4 (checks on guest RIP, RFLAGS and SSP)"
        );
    }

    #[test]
    fn g2_interruptibility_reserved_and_both_shadows() {
        let mut s = GuestEventState::with_rflags(IF);
        s.interruptibility = Interruptibility::from_bits_retain(1 << 5);
        assert_eq!(
            g(&EntryInterruption::NONE, s),
            vec![Violation::InterruptibilityReservedBits { bits: 0x20 }]
        );
        s.interruptibility = Interruptibility::from_bits_retain(3);
        assert_eq!(
            g(&EntryInterruption::NONE, s),
            vec![Violation::StiAndMovSsBlocking]
        );
        s.interruptibility =
            Interruptibility::from_bits_retain(0x1f & !Interruptibility::BLOCKING_BY_SMI & !3 | 1);
        assert!(g(&EntryInterruption::NONE, s).is_empty());
        // Enclave interruption: fine with STI blocking (above), not with MOV SS.
        s.interruptibility = Interruptibility::from_bits_retain(
            Interruptibility::ENCLAVE_INTERRUPTION | Interruptibility::BLOCKING_BY_MOV_SS,
        );
        assert_eq!(
            g(&EntryInterruption::NONE, s),
            vec![Violation::EnclaveInterruptionWithMovSs]
        );
        assert_eq!(Violation::EnclaveInterruptionWithMovSs.rule(), "G2");
    }

    #[test]
    fn g3_sti_blocking_needs_if() {
        let mut s = GuestEventState::with_rflags(2);
        s.interruptibility = Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_STI);
        assert_eq!(
            g(&EntryInterruption::NONE, s),
            vec![Violation::StiBlockingWithIfClear]
        );
        s.rflags = IF;
        assert!(g(&EntryInterruption::NONE, s).is_empty());
        // MOV-SS blocking with IF = 0 is fine.
        s.rflags = 2;
        s.interruptibility =
            Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_MOV_SS);
        assert!(g(&EntryInterruption::NONE, s).is_empty());
    }

    #[test]
    fn g4_external_interrupt_in_shadow() {
        let e = ev(Event::ExternalInterrupt { vector: 0x20 });
        for bit in [
            Interruptibility::BLOCKING_BY_STI,
            Interruptibility::BLOCKING_BY_MOV_SS,
        ] {
            let mut s = GuestEventState::with_rflags(IF);
            s.interruptibility = Interruptibility::from_bits_retain(bit);
            assert_eq!(g(&e, s), vec![Violation::ExternalInterruptInShadow]);
        }
        // NMI blocking does not block external interrupts.
        let mut s = GuestEventState::with_rflags(IF);
        s.interruptibility = Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_NMI);
        assert!(g(&e, s).is_empty());
    }

    #[test]
    fn g5_nmi_shadow_rules() {
        let e = ev(Event::Nmi);
        let mut s = GuestEventState::with_rflags(2);
        assert!(g(&e, s).is_empty(), "NMI does not need IF");
        s.interruptibility =
            Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_MOV_SS);
        assert_eq!(g(&e, s), vec![Violation::NmiWithMovSsBlocking]);
        s.rflags = IF;
        s.interruptibility = Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_STI);
        assert_eq!(g(&e, s), vec![Violation::NmiWithStiBlocking]);
    }

    #[test]
    fn g6_virtual_nmi_blocking() {
        let e = ev(Event::Nmi);
        let mut s = GuestEventState::with_rflags(IF);
        s.interruptibility = Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_NMI);
        assert!(
            g(&e, s).is_empty(),
            "without virtual NMIs the check does not apply"
        );
        let vnmi = EntryControls {
            virtual_nmis: true,
            ..ctl()
        };
        assert_eq!(
            check_guest_event_state(&e, &s, &vnmi),
            vec![Violation::NmiWhileNmiBlocked]
        );
        s.interruptibility = Interruptibility::NONE;
        assert!(check_guest_event_state(&e, &s, &vnmi).is_empty());
    }

    #[test]
    fn g7_smi_blocking() {
        let mut s = GuestEventState::with_rflags(IF);
        s.interruptibility = Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_SMI);
        assert_eq!(
            g(&EntryInterruption::NONE, s),
            vec![Violation::SmiBlockingOutsideSmm]
        );
        s.in_smm = true;
        assert!(g(&EntryInterruption::NONE, s).is_empty());
        let smm = EntryControls {
            entry_to_smm: true,
            ..ctl()
        };
        assert!(check_guest_event_state(&EntryInterruption::NONE, &s, &smm).is_empty());
        s.interruptibility = Interruptibility::NONE;
        assert_eq!(
            check_guest_event_state(&EntryInterruption::NONE, &s, &smm),
            vec![Violation::EntryToSmmWithoutSmiBlocking]
        );
    }

    #[test]
    fn g8_activity_state() {
        let mut s = GuestEventState::with_rflags(IF);
        s.activity = ActivityState::Hlt;
        s.interruptibility =
            Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_MOV_SS);
        assert_eq!(
            g(&EntryInterruption::NONE, s),
            vec![Violation::ShadowWhenNotActive {
                activity: ActivityState::Hlt
            }]
        );
        s.interruptibility = Interruptibility::NONE;
        // HLT: external interrupt, NMI, #DB, #MC allowed; #GP not.
        for ok in [
            Event::ExternalInterrupt { vector: 0x20 },
            Event::Nmi,
            Event::HardwareException(HardwareException::new(1)),
            Event::HardwareException(HardwareException::new(18)),
        ] {
            assert!(g(&ev(ok), s).is_empty(), "{ok:?}");
        }
        let gp = ev(Event::HardwareException(
            HardwareException::general_protection(0),
        ));
        assert_eq!(
            g(&gp, s),
            vec![Violation::EventBlockedInActivityState {
                activity: ActivityState::Hlt,
                interruption_type: InterruptionType::HardwareException,
                vector: 13
            }]
        );
        // Shutdown: NMI and #MC only.
        s.activity = ActivityState::Shutdown;
        assert!(g(&ev(Event::Nmi), s).is_empty());
        assert!(g(&ev(Event::HardwareException(HardwareException::new(18))), s).is_empty());
        assert_eq!(
            g(&ev(Event::ExternalInterrupt { vector: 0x20 }), s).len(),
            1
        );
        // Wait-for-SIPI: nothing.
        s.activity = ActivityState::WaitForSipi;
        assert_eq!(g(&ev(Event::Nmi), s).len(), 1);
        assert!(g(&EntryInterruption::NONE, s).is_empty());
        s.activity = ActivityState::Other(7);
        assert_eq!(
            g(&EntryInterruption::NONE, s),
            vec![Violation::ReservedActivityState(7)]
        );
    }

    #[test]
    fn g9_single_step_in_shadow() {
        let mut s = GuestEventState::with_rflags(IF | X86_EFLAGS_TF);
        s.interruptibility = Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_STI);
        assert_eq!(
            g(&EntryInterruption::NONE, s),
            vec![Violation::SingleStepNotPending]
        );
        s.pending_debug_bs = true;
        assert!(g(&EntryInterruption::NONE, s).is_empty());
        s.rflags = IF;
        assert_eq!(
            g(&EntryInterruption::NONE, s),
            vec![Violation::SingleStepPendingWithoutTf]
        );
        s.interruptibility = Interruptibility::NONE;
        assert!(
            g(&EntryInterruption::NONE, s).is_empty(),
            "no shadow, no rule"
        );
    }

    #[test]
    fn all_violations_are_reported_with_sections() {
        // External interrupt with error code, reserved bits, IF = 0, MOV-SS shadow.
        let mut s = GuestEventState::with_rflags(2);
        s.interruptibility =
            Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_MOV_SS);
        let v = check_entry(
            &raw(0x8000_1820, 0x1_0000, 0),
            &s,
            &ctl(),
            &EntryCaps::default(),
        );
        let rules: Vec<_> = v.iter().map(|v| v.rule()).collect();
        assert_eq!(rules, vec!["C5", "C6", "C7", "G1", "G4"]);
        assert!(v.iter().all(|v| v.sdm_section().starts_with("SDM 26.")));
        assert!(!v[0].is_guest_state() && v[3].is_guest_state());
        assert!(v[3].to_string().contains("RFLAGS.IF = 0"));
    }
}
