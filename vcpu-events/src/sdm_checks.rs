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
//! * C1..C8 are the one checker of [`x86_kvm_base::interruption`]; this module
//!   wraps its violations ([`Violation::Entry`]) and adds the guest-state rules.
//! * C5 with IA32_VMX_BASIC bit 56: a *hardware exception in protected mode*
//!   may be delivered with or without an error code; outside protected mode
//!   (unrestricted guest with CR0.PE = 0) and for other types the bit must
//!   still be 0, as Linux nested.c `nested_check_vm_entry_controls`.
//! * C5 and #CP (21): an error code only when the guest has CET
//!   ([`EntryCaps::cet`]), as Linux `x86_exception_has_error_code`.
//! * C7: bits 31:16 of the error code must be 0 (hardware, KVM, Bochs; some
//!   texts say 31:15).
//! * G5: NMI with blocking by STI is reported too ("some processors" reject
//!   it; KVM itself refuses to inject NMIs in an STI shadow).
//! * G8: per activity state: HLT allows external interrupt, NMI, #DB, #MC and
//!   MTF; shutdown allows NMI and #MC; wait-for-SIPI allows nothing.

#![deny(unsafe_code)]

use crate::event::{vector::*, ActivityState, Interruptibility, X86_EFLAGS_IF, X86_EFLAGS_TF};
use crate::interruption::{EntryInterruption, InterruptionType};
use x86_kvm_base::exception::GuestCet;
use x86_kvm_base::interruption::{EventInjectionCaps, EventInjectionContext};
pub use x86_kvm_base::interruption::{EventRule, EventViolation};

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
    /// The guest has CET (its CPUID): #CP (21) delivers an error code
    /// (Linux `x86_exception_has_error_code`).
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

    /// The capability bits of the shared checker
    /// ([`x86_kvm_base::interruption::check_entry_interruption`]); IA32_VMX_BASIC
    /// bit 58 (FRED nested exception) is not modelled here and stays clear.
    pub fn event_injection_caps(&self) -> EventInjectionCaps {
        EventInjectionCaps {
            no_hw_error_code_cc: self.no_hw_error_code_consistency_check,
            nested_exception: false,
            zero_len_ins: self.zero_length_instruction_injection,
            monitor_trap_flag: self.monitor_trap_flag,
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
    /// C1..C8: a check on the VM-entry control fields (SDM 26.2.1.3) failed;
    /// the rule and its message are those of the shared checker
    /// [`x86_kvm_base::interruption::check_entry_interruption`].
    #[error(transparent)]
    Entry(#[from] EventViolation),
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

/// A guest-state rule on events (SDM 26.3.1.4 / 26.3.1.5; 28.3.1.x in current
/// editions), ids G1..G9 of the reference notes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum GuestRule {
    /// G1: RFLAGS.IF = 1 when injecting an external interrupt.
    IfForExternalInterrupt,
    /// G2: interruptibility-state reserved bits 0, not STI and MOV SS both,
    /// no enclave interruption with MOV SS.
    InterruptibilityConsistent,
    /// G3: no STI blocking with RFLAGS.IF = 0.
    StiBlockingNeedsIf,
    /// G4: no STI / MOV-SS blocking when injecting an external interrupt.
    ExternalInterruptOutsideShadow,
    /// G5: no MOV-SS (and, portably, STI) blocking when injecting an NMI.
    NmiOutsideShadow,
    /// G6: with virtual NMIs, no NMI blocking when injecting an NMI.
    NmiNotBlocked,
    /// G7: SMI blocking only in SMM, and with "entry to SMM".
    SmiBlocking,
    /// G8: the activity state allows the shadow and the event.
    ActivityState,
    /// G9: a pending single-step #DB matches RFLAGS.TF in a shadow / HLT.
    PendingSingleStep,
}

impl GuestRule {
    /// The id used in the reference notes (`"G1"`..`"G9"`), for printing only.
    pub const fn id(self) -> &'static str {
        match self {
            Self::IfForExternalInterrupt => "G1",
            Self::InterruptibilityConsistent => "G2",
            Self::StiBlockingNeedsIf => "G3",
            Self::ExternalInterruptOutsideShadow => "G4",
            Self::NmiOutsideShadow => "G5",
            Self::NmiNotBlocked => "G6",
            Self::SmiBlocking => "G7",
            Self::ActivityState => "G8",
            Self::PendingSingleStep => "G9",
        }
    }
}

/// The rule a [`Violation`] breaks: a check on the VM-entry control fields
/// (the shared [`EventRule`]) or on the guest state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Rule {
    /// C1..C8, SDM 26.2.1.3 (VM-instruction error 7 on failure).
    Entry(EventRule),
    /// G1..G9, SDM 26.3.1.4 / 26.3.1.5 (exit reason 33 on failure).
    Guest(GuestRule),
}

impl Rule {
    /// The id used in the reference notes (`"C5"`, `"G1"`), for printing only.
    pub const fn id(self) -> &'static str {
        match self {
            Self::Entry(r) => r.id(),
            Self::Guest(r) => r.id(),
        }
    }
}

impl core::fmt::Display for Rule {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.id())
    }
}

impl Violation {
    /// The typed rule this violation breaks.
    pub fn kind(&self) -> Rule {
        use GuestRule as G;
        use Violation::*;
        match self {
            Entry(v) => Rule::Entry(v.rule()),
            ExternalInterruptWithIfClear => Rule::Guest(G::IfForExternalInterrupt),
            InterruptibilityReservedBits { .. }
            | StiAndMovSsBlocking
            | EnclaveInterruptionWithMovSs => Rule::Guest(G::InterruptibilityConsistent),
            StiBlockingWithIfClear => Rule::Guest(G::StiBlockingNeedsIf),
            ExternalInterruptInShadow => Rule::Guest(G::ExternalInterruptOutsideShadow),
            NmiWithMovSsBlocking | NmiWithStiBlocking => Rule::Guest(G::NmiOutsideShadow),
            NmiWhileNmiBlocked => Rule::Guest(G::NmiNotBlocked),
            SmiBlockingOutsideSmm | EntryToSmmWithoutSmiBlocking => Rule::Guest(G::SmiBlocking),
            ShadowWhenNotActive { .. }
            | EventBlockedInActivityState { .. }
            | ReservedActivityState(_) => Rule::Guest(G::ActivityState),
            SingleStepNotPending | SingleStepPendingWithoutTf => Rule::Guest(G::PendingSingleStep),
        }
    }

    /// The rule id of the reference notes (C1..C8, G1..G9), for printing;
    /// classify with [`Violation::kind`].
    pub fn rule(&self) -> &'static str {
        self.kind().id()
    }

    /// The SDM Vol. 3C section that states the rule.
    pub fn sdm_section(&self) -> &'static str {
        match self.kind() {
            Rule::Guest(GuestRule::IfForExternalInterrupt) => {
                "SDM 26.3.1.4 (checks on guest RIP, RFLAGS and SSP)"
            }
            Rule::Guest(_) => "SDM 26.3.1.5 (checks on guest non-register state)",
            Rule::Entry(_) => "SDM 26.2.1.3 (checks on VM-entry control fields: event injection)",
        }
    }

    /// Whether VM entry fails with "invalid guest state" (exit reason 33,
    /// `hardware_entry_failure_reason` 0x80000021) rather than VM-instruction
    /// error 7 (invalid control field).
    pub fn is_guest_state(&self) -> bool {
        matches!(self.kind(), Rule::Guest(_))
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
    let context = EventInjectionContext {
        unrestricted_guest: controls.unrestricted_guest,
        guest_cr0_pe,
        guest_cet: GuestCet::from_bool(caps.cet),
    };
    let found = x86_kvm_base::interruption::check_entry_interruption(
        entry.info,
        entry.error_code,
        entry.instruction_len,
        &caps.event_injection_caps(),
        &context,
    );
    out.extend(found.into_iter().map(Violation::from));
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
///
/// ```
/// use vcpu_events::sdm_checks::{check_entry, EntryCaps, EntryControls, GuestEventState, Violation};
/// use vcpu_events::{EntryInterruption, Event};
///
/// // An external interrupt needs RFLAGS.IF = 1 at VM entry (SDM 26.3.1.4).
/// let entry = EntryInterruption::encode(&Event::ExternalInterrupt { vector: 0x30 }).unwrap();
/// let (controls, caps) = (EntryControls::default(), EntryCaps::default());
/// let v = check_entry(&entry, &GuestEventState::with_rflags(0x2), &controls, &caps);
/// assert_eq!(v, [Violation::ExternalInterruptWithIfClear]);
/// assert!(check_entry(&entry, &GuestEventState::with_rflags(0x202), &controls, &caps).is_empty());
/// ```
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
mod tests;
