// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Validation of a `kvm_vcpu_events` before KVM_SET_VCPU_EVENTS.
//!
//! [`validate`] answers three questions, each as a list (all findings, not
//! the first one):
//!
//! 1. [`KvmReject`]: would `kvm_vcpu_ioctl_x86_set_vcpu_events` fail with
//!    -EINVAL? (Linux 6.16 / 6.18 `arch/x86/kvm/x86.c`.)
//! 2. [`KvmChange`]: would KVM accept it but silently change, ignore or lose
//!    part of it (pending vs injected merging, dropped payloads, capped NMI
//!    counts, shadow bits, truncated error codes, ignored bytes)?
//! 3. [`EntryFailure`]: would KVM accept it but the next VM entry fail
//!    (KVM_EXIT_FAIL_ENTRY, 0x80000021) because an SDM check on the event or
//!    the guest state fails? KVM does not check these for userspace.
//!    Backends that do not run the VMX entry checks (AMD SVM, or a software
//!    backend such as `kvm_pvm`) do not fail the entry: they deliver the
//!    event in a state the architecture forbids (e.g. an external interrupt
//!    with IF = 0, seen on `kvm_pvm` by `tests/kvm.rs`), which breaks the
//!    guest just as surely; the finding is the same.

#![deny(unsafe_code)]

use crate::event::{
    vector::{
        LAST_EXCEPTION_VECTOR, X86_TRAP_BP, X86_TRAP_DB, X86_TRAP_NMI, X86_TRAP_OF, X86_TRAP_PF,
    },
    ActivityState, Event, HardwareException, Interruptibility,
};
use crate::interruption::EntryInterruption;
use crate::sdm_checks::{check_entry, EntryCaps, EntryControls, GuestEventState, Violation};
use crate::vcpu_events::{
    VcpuEvents, KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_PAYLOAD,
    KVM_VCPUEVENT_VALID_SHADOW, KVM_VCPUEVENT_VALID_SIPI_VECTOR, KVM_VCPUEVENT_VALID_SMM,
    KVM_VCPUEVENT_VALID_TRIPLE_FAULT,
};

/// What the VM / kernel has enabled, as far as KVM_SET_VCPU_EVENTS cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct KvmContext {
    /// KVM_CAP_EXCEPTION_PAYLOAD (164) enabled on the VM.
    pub exception_payload_enabled: bool,
    /// KVM_CAP_X86_TRIPLE_FAULT_EVENT (218) enabled on the VM.
    pub triple_fault_event_enabled: bool,
    /// The kernel has SMM support (CONFIG_KVM_SMM; KVM_CAP_X86_SMM).
    pub smm_supported: bool,
    /// An in-kernel LAPIC exists (KVM_CREATE_IRQCHIP or split irqchip):
    /// without one, `sipi_vector` and `smi.latched_init` are ignored.
    pub in_kernel_lapic: bool,
    /// The vCPU's MP state is INIT_RECEIVED (Linux <= 6.16 rejects SMM state
    /// then; newer kernels fail the next KVM_RUN instead).
    pub mp_state_init_received: bool,
}

impl Default for KvmContext {
    /// Userspace irqchip, SMM built in, no optional caps enabled.
    fn default() -> Self {
        Self {
            exception_payload_enabled: false,
            triple_fault_event_enabled: false,
            smm_supported: true,
            in_kernel_lapic: false,
            mp_state_init_received: false,
        }
    }
}

/// The guest state the events will be entered with (from KVM_GET_REGS /
/// KVM_GET_SREGS of the same snapshot) plus VMX facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GuestContext {
    /// Guest RFLAGS.
    pub rflags: u64,
    /// Guest CR0.PE.
    pub cr0_pe: bool,
    /// KVM runs the guest with "unrestricted guest" (the default on modern
    /// Intel CPUs, `kvm_intel.unrestricted_guest=1`).
    pub unrestricted_guest: bool,
    /// KVM uses virtual NMIs (always, on CPUs with them).
    pub virtual_nmis: bool,
    /// The capability bits the checks need.
    pub caps: EntryCaps,
}

impl Default for GuestContext {
    /// IF = 1, protected mode, unrestricted guest, virtual NMIs, no optional caps.
    fn default() -> Self {
        Self {
            rflags: 0x202,
            cr0_pe: true,
            unrestricted_guest: true,
            virtual_nmis: true,
            caps: EntryCaps::default(),
        }
    }
}

impl GuestContext {
    /// RFLAGS from `regs` and CR0.PE from `sregs`, defaults for the rest.
    pub fn from_regs(regs: &kvm_bindings::kvm_regs, sregs: &kvm_bindings::kvm_sregs) -> Self {
        Self {
            rflags: regs.rflags,
            cr0_pe: sregs.cr0 & 1 != 0,
            ..Self::default()
        }
    }
}

/// A reason KVM_SET_VCPU_EVENTS returns -EINVAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum KvmReject {
    /// `flags` has bits outside the known `KVM_VCPUEVENT_VALID_*`.
    #[error("unknown flags {0:#x}")]
    UnknownFlags(u32),
    /// `VALID_PAYLOAD` without KVM_CAP_EXCEPTION_PAYLOAD enabled.
    #[error("VALID_PAYLOAD set but KVM_CAP_EXCEPTION_PAYLOAD is not enabled")]
    PayloadCapNotEnabled,
    /// An injected or pending exception with vector > 31 or == 2 (NMI).
    #[error("exception vector {0} is > 31 or NMI")]
    ExceptionVector(u8),
    /// `VALID_TRIPLE_FAULT` without KVM_CAP_X86_TRIPLE_FAULT_EVENT enabled.
    #[error("VALID_TRIPLE_FAULT set but KVM_CAP_X86_TRIPLE_FAULT_EVENT is not enabled")]
    TripleFaultCapNotEnabled,
    /// `VALID_SMM` with SMM state set on a kernel without CONFIG_KVM_SMM.
    #[error("SMM state set but the kernel has no SMM support")]
    SmmUnsupported,
    /// `VALID_SMM` with `smm` or `pending` while MP state is INIT_RECEIVED
    /// (Linux <= 6.16; later kernels fail the next KVM_RUN instead).
    #[error("SMM/SMI set while the vCPU is in INIT_RECEIVED")]
    SmmWithInitReceived,
}

impl KvmReject {
    /// Whether KVM returns this -EINVAL only *after* it has already written
    /// part of the state: in `kvm_vcpu_ioctl_x86_set_vcpu_events` (Linux 6.16
    /// and 6.18) the SMM check without CONFIG_KVM_SMM and the
    /// `VALID_TRIPLE_FAULT` capability check come after the exception,
    /// interrupt, shadow, NMI, SIPI (and SMM) state was stored. A failed
    /// KVM_SET_VCPU_EVENTS with such a reason has changed the vCPU; the
    /// other reasons are checked before anything is written.
    pub fn partially_applied(&self) -> bool {
        matches!(self, Self::SmmUnsupported | Self::TripleFaultCapNotEnabled)
    }
}

/// Something KVM accepts but silently changes, ignores or loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum KvmChange {
    /// `VALID_PAYLOAD`, exception both pending and injected: injected is
    /// cleared (pending wins).
    PendingOverridesInjected,
    /// `VALID_PAYLOAD`, payload on a non-pending exception: dropped.
    PayloadDroppedNotPending,
    /// No `VALID_PAYLOAD`: `exception.pending` / `exception_has_payload` are
    /// cleared (a pending-only exception is lost).
    PendingIgnoredWithoutPayloadFlag,
    /// Payload for a vector other than #PF / #DB: never applied.
    PayloadForVector(u8),
    /// `nmi.pending` non-zero without `VALID_NMI_PENDING`: ignored.
    NmiPendingIgnored(u8),
    /// `nmi.pending` above what KVM keeps (2, or 1 if masked / injecting):
    /// the extra NMIs are lost.
    NmiPendingCapped {
        /// The count in the struct.
        requested: u8,
        /// What KVM keeps.
        kept: u8,
    },
    /// `interrupt.shadow` non-zero without `VALID_SHADOW`: ignored.
    ShadowIgnored,
    /// Both shadow bits: KVM keeps MOV SS only.
    BothShadowBits,
    /// Unknown shadow bits: ignored.
    UnknownShadowBits(u8),
    /// `sipi_vector` with `VALID_SIPI_VECTOR` but no in-kernel LAPIC: ignored.
    SipiIgnored,
    /// `smi.latched_init` without an in-kernel LAPIC: ignored.
    LatchedInitIgnored,
    /// `sipi_vector` non-zero without `VALID_SIPI_VECTOR`: ignored.
    SipiVectorIgnored(u32),
    /// Some `smi` byte non-zero without `VALID_SMM`: the whole sub-struct is
    /// ignored (a pending SMI or SMM state is not restored).
    SmiIgnored,
    /// `smi.smm_inside_nmi` with `VALID_SMM` but `smi.smm` = 0: KVM only
    /// applies it when entering / staying in SMM.
    SmmInsideNmiIgnored,
    /// `triple_fault.pending` non-zero without `VALID_TRIPLE_FAULT`: ignored
    /// (the triple fault is lost).
    TripleFaultIgnored,
    /// Error code bits 31:16 set: KVM drops them (VMX allows only 15:0).
    ErrorCodeTruncated(u32),
    /// Error code on an exception for a real-mode guest: KVM clears it.
    ErrorCodeDroppedRealMode,
    /// A boolean byte other than 0 / 1 (KVM reads it as true).
    NonCanonicalBool(&'static str),
    /// `nmi.pad` non-zero: ignored.
    NmiPadNonZero(u8),
    /// `reserved` has non-zero bytes (count): ignored (a newer ABI may use them).
    ReservedBytesNonZero(usize),
    /// More than one injected event (exception / NMI / interrupt): KVM
    /// re-injects exception, then NMI, then interrupt on successive entries.
    SeveralInjectedEvents,
}

/// Where an event checked for VM entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum EventSlot {
    /// The exception slot.
    Exception,
    /// `nmi.injected`.
    Nmi,
    /// The interrupt slot.
    Interrupt,
    /// The guest state alone (shadow, NMI mask).
    State,
}

/// A VM-entry failure KVM would let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum EntryFailure {
    /// An SDM check fails for the event in `slot`.
    Sdm {
        /// The slot.
        slot: EventSlot,
        /// The failed check.
        violation: Violation,
    },
    /// #BP / #OF in the exception slot, or `interrupt.soft`: KVM injects a
    /// software event with the length of the *last VM exit's* instruction,
    /// which userspace cannot supply (0 fails C8 on CPUs without
    /// IA32_VMX_MISC bit 30; another length skips the wrong number of bytes).
    StaleInstructionLength(EventSlot),
}

/// The three lists [`validate`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Report {
    /// -EINVAL reasons.
    pub kvm_rejects: Vec<KvmReject>,
    /// Silent changes.
    pub kvm_changes: Vec<KvmChange>,
    /// VM-entry failures after a successful SET.
    pub entry_failures: Vec<EntryFailure>,
}

impl Report {
    /// Nothing rejected, nothing changed, no entry failure.
    pub fn is_clean(&self) -> bool {
        self.kvm_rejects.is_empty() && self.kvm_changes.is_empty() && self.entry_failures.is_empty()
    }

    /// KVM accepts it and VM entry will too (changes may remain).
    pub fn is_safe(&self) -> bool {
        self.kvm_rejects.is_empty() && self.entry_failures.is_empty()
    }
}

/// Validates `events` as KVM_SET_VCPU_EVENTS would see them, followed by a
/// VM entry with `guest`'s state.
///
/// ```
/// use vcpu_events::validate::{validate, EntryFailure, GuestContext, KvmContext};
/// use vcpu_events::vcpu_events::KvmBool;
/// use vcpu_events::{Event, EventStatus, VcpuEvents};
///
/// // A pending triple fault: KVM_SET_VCPU_EVENTS refuses the flag unless the VM enabled
/// // KVM_CAP_X86_TRIPLE_FAULT_EVENT (vcpu_events::kvm::enable_event_caps).
/// let mut events = VcpuEvents::default();
/// events.flags.set(kvm_bindings::KVM_VCPUEVENT_VALID_TRIPLE_FAULT, true);
/// events.triple_fault_pending = KvmBool::TRUE;
/// let without_cap = validate(&events, &KvmContext::default(), &GuestContext::default());
/// assert!(!without_cap.kvm_rejects.is_empty());
/// let with_cap = KvmContext { triple_fault_event_enabled: true, ..KvmContext::default() };
/// assert!(validate(&events, &with_cap, &GuestContext::default()).is_safe());
///
/// // An external interrupt with RFLAGS.IF = 0: KVM takes it, VM entry fails.
/// let mut events = VcpuEvents::default();
/// events.set_event(EventStatus::Injected, Event::ExternalInterrupt { vector: 0x20 }).unwrap();
/// let if_clear = GuestContext { rflags: 0x2, ..GuestContext::default() };
/// let report = validate(&events, &KvmContext::default(), &if_clear);
/// assert!(report.kvm_rejects.is_empty());
/// assert!(matches!(report.entry_failures[..], [EntryFailure::Sdm { .. }]));
/// ```
pub fn validate(events: &VcpuEvents, kvm: &KvmContext, guest: &GuestContext) -> Report {
    Report {
        kvm_rejects: kvm_rejects(events, kvm),
        kvm_changes: kvm_changes(events, kvm, guest),
        entry_failures: entry_failures(events, guest),
    }
}

// The exception slot as KVM normalises it: (injected, pending).
fn live_exception(events: &VcpuEvents) -> (bool, bool) {
    let with_payload = events.flags.contains(KVM_VCPUEVENT_VALID_PAYLOAD);
    let pending = with_payload && events.exception.pending.get();
    let injected = events.exception.injected.get() && !pending;
    (injected, pending)
}

// -EINVAL reasons, in KVM's order (`kvm_vcpu_ioctl_x86_set_vcpu_events`).
fn kvm_rejects(events: &VcpuEvents, kvm: &KvmContext) -> Vec<KvmReject> {
    let mut r = Vec::new();
    let flags = events.flags;
    let exc = &events.exception;
    if flags.unknown_bits() != 0 {
        r.push(KvmReject::UnknownFlags(flags.unknown_bits()));
    }
    if flags.contains(KVM_VCPUEVENT_VALID_PAYLOAD) && !kvm.exception_payload_enabled {
        r.push(KvmReject::PayloadCapNotEnabled);
    }
    // KVM normalises before the vector check.
    let (injected, pending) = live_exception(events);
    if (injected || pending) && (exc.nr > LAST_EXCEPTION_VECTOR || exc.nr == X86_TRAP_NMI) {
        r.push(KvmReject::ExceptionVector(exc.nr));
    }
    let with_smm = flags.contains(KVM_VCPUEVENT_VALID_SMM);
    let smm_state =
        events.smi.smm.get() || events.smi.pending.get() || events.smi.smm_inside_nmi.get();
    if with_smm && smm_state && !kvm.smm_supported {
        r.push(KvmReject::SmmUnsupported);
    }
    if with_smm && (events.smi.smm.get() || events.smi.pending.get()) && kvm.mp_state_init_received
    {
        r.push(KvmReject::SmmWithInitReceived);
    }
    if flags.contains(KVM_VCPUEVENT_VALID_TRIPLE_FAULT) && !kvm.triple_fault_event_enabled {
        r.push(KvmReject::TripleFaultCapNotEnabled);
    }
    r
}

// Silent changes: everything KVM accepts but changes, ignores or loses.
fn kvm_changes(events: &VcpuEvents, kvm: &KvmContext, guest: &GuestContext) -> Vec<KvmChange> {
    let mut c = Vec::new();
    exception_changes(&mut c, events);
    nmi_and_shadow_changes(&mut c, events);
    smi_sipi_changes(&mut c, events, kvm);
    error_code_changes(&mut c, events, guest);
    encoding_changes(&mut c, events);
    c
}

fn exception_changes(c: &mut Vec<KvmChange>, events: &VcpuEvents) {
    let exc = &events.exception;
    let (_, pending) = live_exception(events);
    if events.flags.contains(KVM_VCPUEVENT_VALID_PAYLOAD) {
        if exc.pending.get() && exc.injected.get() {
            c.push(KvmChange::PendingOverridesInjected);
        }
        if !exc.pending.get() && exc.has_payload.get() {
            c.push(KvmChange::PayloadDroppedNotPending);
        }
        if pending && exc.has_payload.get() && exc.nr != X86_TRAP_PF && exc.nr != X86_TRAP_DB {
            c.push(KvmChange::PayloadForVector(exc.nr));
        }
    } else if exc.pending.get() || exc.has_payload.get() {
        c.push(KvmChange::PendingIgnoredWithoutPayloadFlag);
    }
}

// KVM keeps bits 15:0 of the error code, and none in real mode.
fn error_code_changes(c: &mut Vec<KvmChange>, events: &VcpuEvents, guest: &GuestContext) {
    let exc = &events.exception;
    let (injected, pending) = live_exception(events);
    if (injected || pending) && exc.has_error_code.get() {
        if exc.error_code & 0xffff_0000 != 0 {
            c.push(KvmChange::ErrorCodeTruncated(exc.error_code));
        }
        if !guest.cr0_pe {
            c.push(KvmChange::ErrorCodeDroppedRealMode);
        }
    }
}

fn nmi_and_shadow_changes(c: &mut Vec<KvmChange>, events: &VcpuEvents) {
    let flags = events.flags;
    if flags.contains(KVM_VCPUEVENT_VALID_NMI_PENDING) {
        let limit = if events.nmi.masked.get() || events.nmi.injected.get() {
            1
        } else {
            2
        };
        if events.nmi.pending > limit {
            c.push(KvmChange::NmiPendingCapped {
                requested: events.nmi.pending,
                kept: limit,
            });
        }
    } else if events.nmi.pending != 0 {
        c.push(KvmChange::NmiPendingIgnored(events.nmi.pending));
    }
    let shadow = events.interrupt.shadow;
    let with_shadow = flags.contains(KVM_VCPUEVENT_VALID_SHADOW);
    if !with_shadow && shadow.raw() != 0 {
        c.push(KvmChange::ShadowIgnored);
    }
    if with_shadow && shadow.sti() && shadow.mov_ss() {
        c.push(KvmChange::BothShadowBits);
    }
    if with_shadow && shadow.unknown_bits() != 0 {
        c.push(KvmChange::UnknownShadowBits(shadow.unknown_bits()));
    }
}

fn smi_sipi_changes(c: &mut Vec<KvmChange>, events: &VcpuEvents, kvm: &KvmContext) {
    let flags = events.flags;
    let with_smm = flags.contains(KVM_VCPUEVENT_VALID_SMM);
    if flags.contains(KVM_VCPUEVENT_VALID_SIPI_VECTOR) && !kvm.in_kernel_lapic {
        c.push(KvmChange::SipiIgnored);
    }
    if !flags.contains(KVM_VCPUEVENT_VALID_SIPI_VECTOR) && events.sipi_vector != 0 {
        c.push(KvmChange::SipiVectorIgnored(events.sipi_vector));
    }
    if with_smm && events.smi.latched_init.get() && !kvm.in_kernel_lapic {
        c.push(KvmChange::LatchedInitIgnored);
    }
    let smi = &events.smi;
    let smi_set = [smi.smm, smi.pending, smi.smm_inside_nmi, smi.latched_init]
        .iter()
        .any(|b| b.raw() != 0);
    if !with_smm && smi_set {
        c.push(KvmChange::SmiIgnored);
    }
    if with_smm && kvm.smm_supported && !smi.smm.get() && smi.smm_inside_nmi.get() {
        c.push(KvmChange::SmmInsideNmiIgnored);
    }
    if !flags.contains(KVM_VCPUEVENT_VALID_TRIPLE_FAULT) && events.triple_fault_pending.raw() != 0 {
        c.push(KvmChange::TripleFaultIgnored);
    }
}

// Non-canonical booleans, padding, reserved bytes, several injected events.
fn encoding_changes(c: &mut Vec<KvmChange>, events: &VcpuEvents) {
    let exc = &events.exception;
    let bools = [
        ("exception.injected", exc.injected),
        ("exception.has_error_code", exc.has_error_code),
        ("exception.pending", exc.pending),
        ("exception_has_payload", exc.has_payload),
        ("interrupt.injected", events.interrupt.injected),
        ("interrupt.soft", events.interrupt.soft),
        ("nmi.injected", events.nmi.injected),
        ("nmi.masked", events.nmi.masked),
        ("smi.smm", events.smi.smm),
        ("smi.pending", events.smi.pending),
        ("smi.smm_inside_nmi", events.smi.smm_inside_nmi),
        ("smi.latched_init", events.smi.latched_init),
        ("triple_fault.pending", events.triple_fault_pending),
    ];
    for (name, b) in bools {
        if !b.is_canonical() {
            c.push(KvmChange::NonCanonicalBool(name));
        }
    }
    if events.nmi.pad != 0 {
        c.push(KvmChange::NmiPadNonZero(events.nmi.pad));
    }
    let nonzero = events.reserved.iter().filter(|&&b| b != 0).count();
    if nonzero != 0 {
        c.push(KvmChange::ReservedBytesNonZero(nonzero));
    }
    let (injected, _) = live_exception(events);
    let injected_count = [
        injected,
        events.nmi.injected.get(),
        events.interrupt.injected.get(),
    ]
    .iter()
    .filter(|&&b| b)
    .count();
    if injected_count > 1 {
        c.push(KvmChange::SeveralInjectedEvents);
    }
}

// Whether a violation is about the injected event (reported per slot) rather than the
// guest state alone (reported once, as `EventSlot::State`).
fn is_event_specific(v: &Violation) -> bool {
    use crate::sdm_checks::{GuestRule as G, Rule};
    match v.kind() {
        Rule::Entry(_) => true,
        Rule::Guest(
            G::IfForExternalInterrupt
            | G::ExternalInterruptOutsideShadow
            | G::NmiOutsideShadow
            | G::NmiNotBlocked,
        ) => true,
        _ => matches!(v, Violation::EventBlockedInActivityState { .. }),
    }
}

// The guest state KVM will program for the VM entry after the SET.
fn entry_guest_state(events: &VcpuEvents, guest: &GuestContext) -> GuestEventState {
    // The interruptibility state KVM will program (both bits: MOV SS wins).
    let shadow = events.interrupt.shadow;
    let eff_shadow = if !events.flags.contains(KVM_VCPUEVENT_VALID_SHADOW) {
        0
    } else if shadow.mov_ss() {
        Interruptibility::BLOCKING_BY_MOV_SS
    } else if shadow.sti() {
        Interruptibility::BLOCKING_BY_STI
    } else {
        0
    };
    let nmi_blocked = if events.nmi.masked.get() {
        Interruptibility::BLOCKING_BY_NMI
    } else {
        0
    };
    GuestEventState {
        rflags: guest.rflags,
        cr0_pe: guest.cr0_pe,
        interruptibility: Interruptibility::from_bits_retain(eff_shadow | nmi_blocked),
        activity: ActivityState::Active,
        in_smm: false,
        pending_debug_bs: false,
        debugctl_btf: false,
    }
}

// VM-entry failures after a successful SET.
fn entry_failures(events: &VcpuEvents, guest: &GuestContext) -> Vec<EntryFailure> {
    let gstate = entry_guest_state(events, guest);
    let controls = EntryControls {
        unrestricted_guest: guest.unrestricted_guest,
        virtual_nmis: guest.virtual_nmis,
        entry_to_smm: false,
    };
    let mut f = Vec::new();
    let mut state_reported = false;
    let mut check = |slot: EventSlot, event: Option<Event>, f: &mut Vec<EntryFailure>| {
        let entry = match event.map(|e| EntryInterruption::encode(&e)) {
            Some(Ok(e)) => e,
            _ => EntryInterruption::NONE,
        };
        for v in check_entry(&entry, &gstate, &controls, &guest.caps) {
            // State-only violations (G2/G3/...) are reported once, as State.
            if is_event_specific(&v) {
                f.push(EntryFailure::Sdm { slot, violation: v });
            } else if !state_reported {
                f.push(EntryFailure::Sdm {
                    slot: EventSlot::State,
                    violation: v,
                });
            }
        }
        state_reported = true;
    };
    check(EventSlot::State, None, &mut f);
    let exc = &events.exception;
    let (injected, pending) = live_exception(events);
    if injected || pending {
        if exc.nr == X86_TRAP_BP || exc.nr == X86_TRAP_OF {
            f.push(EntryFailure::StaleInstructionLength(EventSlot::Exception));
        } else if exc.nr <= LAST_EXCEPTION_VECTOR && exc.nr != X86_TRAP_NMI {
            // KVM drops bits 31:16 and, in real mode, the error code itself.
            let has = exc.has_error_code.get() && guest.cr0_pe;
            let mut e = HardwareException::new(exc.nr);
            if has {
                e.error_code = Some(exc.error_code & 0xffff);
            }
            check(
                EventSlot::Exception,
                Some(Event::HardwareException(e)),
                &mut f,
            );
        }
    }
    if events.nmi.injected.get() {
        check(EventSlot::Nmi, Some(Event::Nmi), &mut f);
    }
    if events.interrupt.injected.get() {
        if events.interrupt.soft.get() {
            f.push(EntryFailure::StaleInstructionLength(EventSlot::Interrupt));
        } else {
            let vector = events.interrupt.nr;
            check(
                EventSlot::Interrupt,
                Some(Event::ExternalInterrupt { vector }),
                &mut f,
            );
        }
    }
    f
}

#[cfg(test)]
mod tests;
