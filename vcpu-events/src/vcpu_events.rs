// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `struct kvm_vcpu_events` (x86): the byte layout, a lossless typed form and
//! the typed views of the events it carries.
//!
//! [`RawVcpuEvents`] is the 64-byte C struct as a zerocopy type (layout pinned
//! against kvm-bindings' `kvm_vcpu_events` in the tests). [`VcpuEvents`] is the
//! typed form: every byte of the raw struct has a home in it (flags and shadow
//! keep unknown bits, booleans keep their byte value, `reserved` and `nmi.pad`
//! are kept), so `raw -> typed -> raw` is the identity for *any* 64 bytes.
//! Values KVM would reject or silently change are reported by
//! [`crate::validate()`], never dropped here.
//!
//! Layout (uapi `asm/kvm.h`): 0 exception {injected, nr, has_error_code,
//! pending, error_code}; 8 interrupt {injected, nr, soft, shadow}; 12 nmi
//! {injected, pending, masked, pad}; 16 sipi_vector; 20 flags; 24 smi {smm,
//! pending, smm_inside_nmi, latched_init}; 28 triple_fault.pending;
//! 29 reserved\[26\]; 55 exception_has_payload; 56 exception_payload.

#![deny(unsafe_code)]

use kvm_bindings::kvm_vcpu_events;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::event::{Event, EventStatus, ExceptionPayload, HardwareException, Interruptibility};

/// The `KVM_VCPUEVENT_VALID_*` flags of `kvm_vcpu_events.flags`, from kvm-bindings:
/// `NMI_PENDING` (on SET, `nmi.pending` is written), `SIPI_VECTOR` (on SET, `sipi_vector`
/// is written), `SHADOW` (`interrupt.shadow` is valid), `SMM` (the `smi` sub-struct is
/// valid), `PAYLOAD` (`exception.pending`, `exception_has_payload` and
/// `exception_payload` are valid; needs KVM_CAP_EXCEPTION_PAYLOAD) and `TRIPLE_FAULT`
/// (`triple_fault.pending` is valid; needs KVM_CAP_X86_TRIPLE_FAULT_EVENT).
pub use kvm_bindings::{
    KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_PAYLOAD, KVM_VCPUEVENT_VALID_SHADOW,
    KVM_VCPUEVENT_VALID_SIPI_VECTOR, KVM_VCPUEVENT_VALID_SMM, KVM_VCPUEVENT_VALID_TRIPLE_FAULT,
};

/// The 64-byte `struct kvm_vcpu_events`, read and written as bytes.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct RawVcpuEvents {
    /// `exception.injected`.
    pub exception_injected: u8,
    /// `exception.nr`.
    pub exception_nr: u8,
    /// `exception.has_error_code`.
    pub exception_has_error_code: u8,
    /// `exception.pending`.
    pub exception_pending: u8,
    /// `exception.error_code`.
    pub exception_error_code: u32,
    /// `interrupt.injected`.
    pub interrupt_injected: u8,
    /// `interrupt.nr`.
    pub interrupt_nr: u8,
    /// `interrupt.soft`.
    pub interrupt_soft: u8,
    /// `interrupt.shadow`.
    pub interrupt_shadow: u8,
    /// `nmi.injected`.
    pub nmi_injected: u8,
    /// `nmi.pending` (a count).
    pub nmi_pending: u8,
    /// `nmi.masked`.
    pub nmi_masked: u8,
    /// `nmi.pad`.
    pub nmi_pad: u8,
    /// `sipi_vector`.
    pub sipi_vector: u32,
    /// `flags` (`KVM_VCPUEVENT_VALID_*`).
    pub flags: u32,
    /// `smi.smm`.
    pub smi_smm: u8,
    /// `smi.pending`.
    pub smi_pending: u8,
    /// `smi.smm_inside_nmi`.
    pub smi_smm_inside_nmi: u8,
    /// `smi.latched_init`.
    pub smi_latched_init: u8,
    /// `triple_fault.pending`.
    pub triple_fault_pending: u8,
    /// `reserved[26]`.
    pub reserved: [u8; 26],
    /// `exception_has_payload`.
    pub exception_has_payload: u8,
    /// `exception_payload`.
    pub exception_payload: u64,
}

/// Size of `struct kvm_vcpu_events`.
pub const KVM_VCPU_EVENTS_SIZE: usize = core::mem::size_of::<kvm_vcpu_events>();

/// The byte slice given to [`RawVcpuEvents::from_bytes`] is not 64 bytes long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("kvm_vcpu_events needs {KVM_VCPU_EVENTS_SIZE} bytes, got {0}")]
pub struct SizeError(pub usize);

impl RawVcpuEvents {
    /// Reads the struct from exactly 64 bytes (no alignment needed).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SizeError> {
        Self::read_from_bytes(bytes).map_err(|_| SizeError(bytes.len()))
    }

    /// The 64 bytes of the struct.
    pub fn to_bytes(&self) -> [u8; KVM_VCPU_EVENTS_SIZE] {
        let mut out = [0u8; KVM_VCPU_EVENTS_SIZE];
        out.copy_from_slice(self.as_bytes());
        out
    }
}

impl From<&kvm_vcpu_events> for RawVcpuEvents {
    fn from(k: &kvm_vcpu_events) -> Self {
        Self {
            exception_injected: k.exception.injected,
            exception_nr: k.exception.nr,
            exception_has_error_code: k.exception.has_error_code,
            exception_pending: k.exception.pending,
            exception_error_code: k.exception.error_code,
            interrupt_injected: k.interrupt.injected,
            interrupt_nr: k.interrupt.nr,
            interrupt_soft: k.interrupt.soft,
            interrupt_shadow: k.interrupt.shadow,
            nmi_injected: k.nmi.injected,
            nmi_pending: k.nmi.pending,
            nmi_masked: k.nmi.masked,
            nmi_pad: k.nmi.pad,
            sipi_vector: k.sipi_vector,
            flags: k.flags,
            smi_smm: k.smi.smm,
            smi_pending: k.smi.pending,
            smi_smm_inside_nmi: k.smi.smm_inside_nmi,
            smi_latched_init: k.smi.latched_init,
            triple_fault_pending: k.triple_fault.pending,
            reserved: k.reserved,
            exception_has_payload: k.exception_has_payload,
            exception_payload: k.exception_payload,
        }
    }
}

impl From<&RawVcpuEvents> for kvm_vcpu_events {
    fn from(r: &RawVcpuEvents) -> Self {
        let mut k = kvm_vcpu_events::default();
        k.exception.injected = r.exception_injected;
        k.exception.nr = r.exception_nr;
        k.exception.has_error_code = r.exception_has_error_code;
        k.exception.pending = r.exception_pending;
        k.exception.error_code = r.exception_error_code;
        k.interrupt.injected = r.interrupt_injected;
        k.interrupt.nr = r.interrupt_nr;
        k.interrupt.soft = r.interrupt_soft;
        k.interrupt.shadow = r.interrupt_shadow;
        k.nmi.injected = r.nmi_injected;
        k.nmi.pending = r.nmi_pending;
        k.nmi.masked = r.nmi_masked;
        k.nmi.pad = r.nmi_pad;
        k.sipi_vector = r.sipi_vector;
        k.flags = r.flags;
        k.smi.smm = r.smi_smm;
        k.smi.pending = r.smi_pending;
        k.smi.smm_inside_nmi = r.smi_smm_inside_nmi;
        k.smi.latched_init = r.smi_latched_init;
        k.triple_fault.pending = r.triple_fault_pending;
        k.reserved = r.reserved;
        k.exception_has_payload = r.exception_has_payload;
        k.exception_payload = r.exception_payload;
        k
    }
}

/// A `__u8` KVM reads as a C boolean (non-zero is true). The byte is kept so
/// a value other than 0/1 survives a round trip; [`crate::validate()`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct KvmBool(u8);

impl KvmBool {
    /// 0.
    pub const FALSE: Self = Self(0);
    /// 1.
    pub const TRUE: Self = Self(1);

    /// The byte as stored.
    pub const fn from_raw(raw: u8) -> Self {
        Self(raw)
    }
    /// The byte as stored.
    pub const fn raw(self) -> u8 {
        self.0
    }
    /// The boolean KVM reads (non-zero).
    pub const fn get(self) -> bool {
        self.0 != 0
    }
    /// Whether the byte is 0 or 1.
    pub const fn is_canonical(self) -> bool {
        self.0 <= 1
    }
}

impl From<bool> for KvmBool {
    fn from(b: bool) -> Self {
        Self(b as u8)
    }
}

/// `kvm_vcpu_events.flags`, unknown bits kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct VcpuEventsFlags(u32);

impl VcpuEventsFlags {
    /// Every flag KVM (6.16 .. 6.18) accepts.
    pub const KNOWN: u32 = KVM_VCPUEVENT_VALID_NMI_PENDING
        | KVM_VCPUEVENT_VALID_SIPI_VECTOR
        | KVM_VCPUEVENT_VALID_SHADOW
        | KVM_VCPUEVENT_VALID_SMM
        | KVM_VCPUEVENT_VALID_PAYLOAD
        | KVM_VCPUEVENT_VALID_TRIPLE_FAULT;

    /// All bits kept.
    pub const fn from_bits_retain(raw: u32) -> Self {
        Self(raw)
    }
    /// The raw value.
    pub const fn raw(self) -> u32 {
        self.0
    }
    /// Whether every bit of `bits` is set.
    pub const fn contains(self, bits: u32) -> bool {
        self.0 & bits == bits
    }
    /// Bits KVM does not know (it rejects them with -EINVAL).
    pub const fn unknown_bits(self) -> u32 {
        self.0 & !Self::KNOWN
    }
    /// Sets or clears `bits`.
    pub fn set(&mut self, bits: u32, on: bool) {
        if on {
            self.0 |= bits;
        } else {
            self.0 &= !bits;
        }
    }
}

/// `interrupt.shadow`: KVM's STI / MOV-SS bits, unknown bits kept.
///
/// Note the order differs from the VMCS interruptibility state: KVM has
/// MOV SS = bit 0, STI = bit 1; the VMCS has STI = bit 0, MOV SS = bit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Shadow(u8);

impl Shadow {
    /// No shadow.
    pub const NONE: Self = Self(0);
    /// Blocking by STI (`KVM_X86_SHADOW_INT_STI`, narrowed to the `__u8 shadow` field).
    pub const STI: Self = Self(kvm_bindings::KVM_X86_SHADOW_INT_STI as u8);
    /// Blocking by MOV SS / POP SS (`KVM_X86_SHADOW_INT_MOV_SS`, narrowed likewise).
    pub const MOV_SS: Self = Self(kvm_bindings::KVM_X86_SHADOW_INT_MOV_SS as u8);

    /// All bits kept.
    pub const fn from_bits_retain(raw: u8) -> Self {
        Self(raw)
    }
    /// The raw byte.
    pub const fn raw(self) -> u8 {
        self.0
    }
    /// Blocking by STI.
    pub const fn sti(self) -> bool {
        self.0 & Self::STI.0 != 0
    }
    /// Blocking by MOV SS.
    pub const fn mov_ss(self) -> bool {
        self.0 & Self::MOV_SS.0 != 0
    }
    /// Bits other than STI / MOV SS (KVM ignores them).
    pub const fn unknown_bits(self) -> u8 {
        self.0 & !(Self::STI.0 | Self::MOV_SS.0)
    }
    /// The VMCS interruptibility-state bits for this shadow.
    pub const fn to_interruptibility(self) -> Interruptibility {
        let mut raw = 0;
        if self.sti() {
            raw |= Interruptibility::BLOCKING_BY_STI;
        }
        if self.mov_ss() {
            raw |= Interruptibility::BLOCKING_BY_MOV_SS;
        }
        Interruptibility::from_bits_retain(raw)
    }
    /// The shadow part of a VMCS interruptibility state.
    pub const fn from_interruptibility(i: Interruptibility) -> Self {
        let mut raw = 0;
        if i.sti() {
            raw |= Self::STI.0;
        }
        if i.mov_ss() {
            raw |= Self::MOV_SS.0;
        }
        Self(raw)
    }
}

/// `exception.*` plus `exception_has_payload` / `exception_payload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct ExceptionFields {
    /// Delivery started; re-inject as-is.
    pub injected: KvmBool,
    /// Vector.
    pub nr: u8,
    /// Whether `error_code` is pushed.
    pub has_error_code: KvmBool,
    /// Recognised, not yet delivered (only with `VALID_PAYLOAD`).
    pub pending: KvmBool,
    /// Error code.
    pub error_code: u32,
    /// Whether `payload` is valid (only with `VALID_PAYLOAD`).
    pub has_payload: KvmBool,
    /// CR2 for #PF, new DR6 bits for #DB.
    pub payload: u64,
}

/// `interrupt.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct InterruptFields {
    /// An interrupt occupies KVM's single slot (already acknowledged).
    pub injected: KvmBool,
    /// Its vector.
    pub nr: u8,
    /// Software interrupt (INT n) rather than external.
    pub soft: KvmBool,
    /// STI / MOV-SS shadow (only with `VALID_SHADOW`).
    pub shadow: Shadow,
}

/// `nmi.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct NmiFields {
    /// An NMI whose delivery must be re-injected.
    pub injected: KvmBool,
    /// Number of pending NMIs (a count: KVM keeps up to 2; only written on SET
    /// with `VALID_NMI_PENDING`).
    pub pending: u8,
    /// NMI blocking.
    pub masked: KvmBool,
    /// Padding byte (kept).
    pub pad: u8,
}

/// `smi.*` (only with `VALID_SMM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct SmiFields {
    /// The vCPU is in SMM.
    pub smm: KvmBool,
    /// An SMI is latched.
    pub pending: KvmBool,
    /// SMM was entered with NMIs blocked.
    pub smm_inside_nmi: KvmBool,
    /// An INIT was latched while in SMM.
    pub latched_init: KvmBool,
}

/// The typed, lossless form of `struct kvm_vcpu_events`; with feature `serde`
/// it is also the snapshot form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct VcpuEvents {
    /// `KVM_VCPUEVENT_VALID_*`.
    pub flags: VcpuEventsFlags,
    /// Exception slot.
    pub exception: ExceptionFields,
    /// Interrupt slot and shadow.
    pub interrupt: InterruptFields,
    /// NMI state.
    pub nmi: NmiFields,
    /// SIPI vector (only with `VALID_SIPI_VECTOR` and an in-kernel LAPIC).
    pub sipi_vector: u32,
    /// SMM state.
    pub smi: SmiFields,
    /// `triple_fault.pending` (only with `VALID_TRIPLE_FAULT`).
    pub triple_fault_pending: KvmBool,
    /// `reserved[26]`, kept byte for byte.
    pub reserved: [u8; 26],
}

/// Why a typed event cannot be stored in `kvm_vcpu_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// KVM drops the payload of an *injected* exception
    /// (`exception_has_payload` is forced to 0 unless `exception.pending`):
    /// queue it as pending, or write CR2/DR6 yourself.
    #[error("an injected exception cannot carry a payload in kvm_vcpu_events; make it pending")]
    PayloadNeedsPending,
    /// The event has no slot in `kvm_vcpu_events` that userspace can fill
    /// faithfully (software interrupts/exceptions: KVM has no instruction
    /// length for them; SIPI: use KVM_SET_MP_STATE / the LAPIC).
    #[error("{0:?} cannot be expressed in kvm_vcpu_events")]
    NotExpressible(Event),
}

impl From<&RawVcpuEvents> for VcpuEvents {
    fn from(r: &RawVcpuEvents) -> Self {
        Self {
            flags: VcpuEventsFlags(r.flags),
            exception: ExceptionFields {
                injected: KvmBool(r.exception_injected),
                nr: r.exception_nr,
                has_error_code: KvmBool(r.exception_has_error_code),
                pending: KvmBool(r.exception_pending),
                error_code: r.exception_error_code,
                has_payload: KvmBool(r.exception_has_payload),
                payload: r.exception_payload,
            },
            interrupt: InterruptFields {
                injected: KvmBool(r.interrupt_injected),
                nr: r.interrupt_nr,
                soft: KvmBool(r.interrupt_soft),
                shadow: Shadow(r.interrupt_shadow),
            },
            nmi: NmiFields {
                injected: KvmBool(r.nmi_injected),
                pending: r.nmi_pending,
                masked: KvmBool(r.nmi_masked),
                pad: r.nmi_pad,
            },
            sipi_vector: r.sipi_vector,
            smi: SmiFields {
                smm: KvmBool(r.smi_smm),
                pending: KvmBool(r.smi_pending),
                smm_inside_nmi: KvmBool(r.smi_smm_inside_nmi),
                latched_init: KvmBool(r.smi_latched_init),
            },
            triple_fault_pending: KvmBool(r.triple_fault_pending),
            reserved: r.reserved,
        }
    }
}

impl From<&VcpuEvents> for RawVcpuEvents {
    fn from(e: &VcpuEvents) -> Self {
        Self {
            exception_injected: e.exception.injected.0,
            exception_nr: e.exception.nr,
            exception_has_error_code: e.exception.has_error_code.0,
            exception_pending: e.exception.pending.0,
            exception_error_code: e.exception.error_code,
            interrupt_injected: e.interrupt.injected.0,
            interrupt_nr: e.interrupt.nr,
            interrupt_soft: e.interrupt.soft.0,
            interrupt_shadow: e.interrupt.shadow.0,
            nmi_injected: e.nmi.injected.0,
            nmi_pending: e.nmi.pending,
            nmi_masked: e.nmi.masked.0,
            nmi_pad: e.nmi.pad,
            sipi_vector: e.sipi_vector,
            flags: e.flags.0,
            smi_smm: e.smi.smm.0,
            smi_pending: e.smi.pending.0,
            smi_smm_inside_nmi: e.smi.smm_inside_nmi.0,
            smi_latched_init: e.smi.latched_init.0,
            triple_fault_pending: e.triple_fault_pending.0,
            reserved: e.reserved,
            exception_has_payload: e.exception.has_payload.0,
            exception_payload: e.exception.payload,
        }
    }
}

impl From<&kvm_vcpu_events> for VcpuEvents {
    fn from(k: &kvm_vcpu_events) -> Self {
        Self::from(&RawVcpuEvents::from(k))
    }
}

impl From<kvm_vcpu_events> for VcpuEvents {
    fn from(k: kvm_vcpu_events) -> Self {
        Self::from(&k)
    }
}

impl From<&VcpuEvents> for kvm_vcpu_events {
    fn from(e: &VcpuEvents) -> Self {
        Self::from(&RawVcpuEvents::from(e))
    }
}

impl From<VcpuEvents> for kvm_vcpu_events {
    fn from(e: VcpuEvents) -> Self {
        Self::from(&e)
    }
}

impl VcpuEvents {
    /// Parses 64 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SizeError> {
        RawVcpuEvents::from_bytes(bytes).map(|r| Self::from(&r))
    }

    /// The 64 raw bytes.
    pub fn to_bytes(&self) -> [u8; KVM_VCPU_EVENTS_SIZE] {
        RawVcpuEvents::from(self).to_bytes()
    }

    /// The exception slot as KVM will read it on SET: pending (only with
    /// `VALID_PAYLOAD`; then it wins over injected) or injected, with the
    /// payload when `VALID_PAYLOAD` and `exception_has_payload` are set and the
    /// vector has a payload kind (#PF, #DB). #BP/#OF are reported as
    /// hardware-exception vectors here; [`crate::validate()`] flags them.
    pub fn exception(&self) -> Option<(EventStatus, HardwareException)> {
        let with_payload = self.flags.contains(KVM_VCPUEVENT_VALID_PAYLOAD);
        let status = if with_payload && self.exception.pending.get() {
            EventStatus::Pending
        } else if self.exception.injected.get() {
            EventStatus::Injected
        } else {
            return None;
        };
        let e = &self.exception;
        let payload = (with_payload && status == EventStatus::Pending && e.has_payload.get())
            .then(|| ExceptionPayload::for_vector(e.nr, e.payload))
            .flatten();
        Some((
            status,
            HardwareException {
                vector: e.nr,
                error_code: e.has_error_code.get().then_some(e.error_code),
                payload,
            },
        ))
    }

    /// The interrupt in KVM's slot (always *injected*: already acknowledged).
    /// A `soft` one is a software interrupt whose length KVM takes from the
    /// last VM exit (reported as 0 here).
    pub fn interrupt(&self) -> Option<Event> {
        let i = &self.interrupt;
        if !i.injected.get() {
            return None;
        }
        Some(if i.soft.get() {
            Event::SoftwareInterrupt {
                vector: i.nr,
                instruction_len: 0,
            }
        } else {
            Event::ExternalInterrupt { vector: i.nr }
        })
    }

    /// The interrupt shadow, when `VALID_SHADOW` says it is meaningful.
    pub fn shadow(&self) -> Option<Shadow> {
        self.flags
            .contains(KVM_VCPUEVENT_VALID_SHADOW)
            .then_some(self.interrupt.shadow)
    }

    /// The pending-NMI count, when `VALID_NMI_PENDING` says it is meaningful.
    pub fn nmi_pending(&self) -> Option<u8> {
        self.flags
            .contains(KVM_VCPUEVENT_VALID_NMI_PENDING)
            .then_some(self.nmi.pending)
    }

    /// The SMM state, when `VALID_SMM` says it is meaningful.
    pub fn smm(&self) -> Option<SmiFields> {
        self.flags
            .contains(KVM_VCPUEVENT_VALID_SMM)
            .then_some(self.smi)
    }

    /// `triple_fault.pending`, when `VALID_TRIPLE_FAULT` says it is meaningful.
    pub fn triple_fault(&self) -> Option<bool> {
        self.flags
            .contains(KVM_VCPUEVENT_VALID_TRIPLE_FAULT)
            .then_some(self.triple_fault_pending.get())
    }

    /// The SIPI vector, when `VALID_SIPI_VECTOR` says it is meaningful.
    pub fn sipi(&self) -> Option<u32> {
        self.flags
            .contains(KVM_VCPUEVENT_VALID_SIPI_VECTOR)
            .then_some(self.sipi_vector)
    }

    /// Every event the struct carries, with its status: the exception, an
    /// injected NMI, pending NMIs (one entry per count), the interrupt, a
    /// pending SMI, a pending triple fault.
    pub fn events(&self) -> Vec<(EventStatus, Event)> {
        let mut out = Vec::new();
        if let Some((s, e)) = self.exception() {
            out.push((s, Event::HardwareException(e)));
        }
        if self.nmi.injected.get() {
            out.push((EventStatus::Injected, Event::Nmi));
        }
        for _ in 0..self.nmi_pending().unwrap_or(0) {
            out.push((EventStatus::Pending, Event::Nmi));
        }
        if let Some(e) = self.interrupt() {
            out.push((EventStatus::Injected, e));
        }
        if self.smm().is_some_and(|s| s.pending.get()) {
            out.push((EventStatus::Pending, Event::Smi));
        }
        if self.triple_fault() == Some(true) {
            out.push((EventStatus::Pending, Event::TripleFault));
        }
        out
    }

    /// Puts `exception` in the exception slot. `Pending` sets
    /// `VALID_PAYLOAD` (needs KVM_CAP_EXCEPTION_PAYLOAD) and carries the
    /// payload; `Injected` cannot carry one ([`BuildError::PayloadNeedsPending`]).
    pub fn set_exception(
        &mut self,
        status: EventStatus,
        exception: HardwareException,
    ) -> Result<(), BuildError> {
        if status == EventStatus::Injected && exception.payload.is_some() {
            return Err(BuildError::PayloadNeedsPending);
        }
        let e = &mut self.exception;
        e.nr = exception.vector;
        e.has_error_code = exception.error_code.is_some().into();
        e.error_code = exception.error_code.unwrap_or(0);
        e.injected = (status == EventStatus::Injected).into();
        e.pending = (status == EventStatus::Pending).into();
        e.has_payload = exception.payload.is_some().into();
        e.payload = exception.payload.map_or(0, |p| p.raw());
        if status == EventStatus::Pending {
            self.flags.set(KVM_VCPUEVENT_VALID_PAYLOAD, true);
        }
        Ok(())
    }

    /// Empties the exception slot.
    pub fn clear_exception(&mut self) {
        self.exception = ExceptionFields::default();
    }

    /// Stores `event` the way a VMM sets it through KVM_SET_VCPU_EVENTS:
    /// hardware exceptions into the exception slot, an external interrupt into
    /// the interrupt slot (injected), an NMI as injected or one more pending,
    /// an SMI as pending (`VALID_SMM`), a triple fault as pending
    /// (`VALID_TRIPLE_FAULT`).
    pub fn set_event(&mut self, status: EventStatus, event: Event) -> Result<(), BuildError> {
        match event {
            Event::HardwareException(e) => self.set_exception(status, e),
            Event::ExternalInterrupt { vector } => {
                self.interrupt.injected = KvmBool::TRUE;
                self.interrupt.nr = vector;
                self.interrupt.soft = KvmBool::FALSE;
                Ok(())
            }
            Event::Nmi => {
                match status {
                    EventStatus::Injected => self.nmi.injected = KvmBool::TRUE,
                    EventStatus::Pending => {
                        self.nmi.pending = self.nmi.pending.saturating_add(1);
                        self.flags.set(KVM_VCPUEVENT_VALID_NMI_PENDING, true);
                    }
                }
                Ok(())
            }
            Event::Smi => {
                self.smi.pending = KvmBool::TRUE;
                self.flags.set(KVM_VCPUEVENT_VALID_SMM, true);
                Ok(())
            }
            Event::TripleFault => {
                self.triple_fault_pending = KvmBool::TRUE;
                self.flags.set(KVM_VCPUEVENT_VALID_TRIPLE_FAULT, true);
                Ok(())
            }
            other => Err(BuildError::NotExpressible(other)),
        }
    }

    /// Sets the interrupt shadow and `VALID_SHADOW`.
    pub fn set_shadow(&mut self, shadow: Shadow) {
        self.interrupt.shadow = shadow;
        self.flags.set(KVM_VCPUEVENT_VALID_SHADOW, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn layout_matches_kvm_bindings() {
        assert_eq!(size_of::<RawVcpuEvents>(), size_of::<kvm_vcpu_events>());
        assert_eq!(size_of::<RawVcpuEvents>(), 64);
        assert_eq!(align_of::<RawVcpuEvents>(), align_of::<kvm_vcpu_events>());
        type K = kvm_vcpu_events;
        let exc = offset_of!(K, exception);
        let int = offset_of!(K, interrupt);
        let nmi = offset_of!(K, nmi);
        let smi = offset_of!(K, smi);
        assert_eq!(offset_of!(RawVcpuEvents, exception_injected), exc);
        assert_eq!(offset_of!(RawVcpuEvents, exception_nr), exc + 1);
        assert_eq!(offset_of!(RawVcpuEvents, exception_has_error_code), exc + 2);
        assert_eq!(offset_of!(RawVcpuEvents, exception_pending), exc + 3);
        assert_eq!(offset_of!(RawVcpuEvents, exception_error_code), exc + 4);
        assert_eq!(offset_of!(RawVcpuEvents, interrupt_injected), int);
        assert_eq!(offset_of!(RawVcpuEvents, interrupt_nr), int + 1);
        assert_eq!(offset_of!(RawVcpuEvents, interrupt_soft), int + 2);
        assert_eq!(offset_of!(RawVcpuEvents, interrupt_shadow), int + 3);
        assert_eq!(offset_of!(RawVcpuEvents, nmi_injected), nmi);
        assert_eq!(offset_of!(RawVcpuEvents, nmi_pending), nmi + 1);
        assert_eq!(offset_of!(RawVcpuEvents, nmi_masked), nmi + 2);
        assert_eq!(offset_of!(RawVcpuEvents, nmi_pad), nmi + 3);
        assert_eq!(
            offset_of!(RawVcpuEvents, sipi_vector),
            offset_of!(K, sipi_vector)
        );
        assert_eq!(offset_of!(RawVcpuEvents, flags), offset_of!(K, flags));
        assert_eq!(offset_of!(RawVcpuEvents, smi_smm), smi);
        assert_eq!(offset_of!(RawVcpuEvents, smi_pending), smi + 1);
        assert_eq!(offset_of!(RawVcpuEvents, smi_smm_inside_nmi), smi + 2);
        assert_eq!(offset_of!(RawVcpuEvents, smi_latched_init), smi + 3);
        assert_eq!(
            offset_of!(RawVcpuEvents, triple_fault_pending),
            offset_of!(K, triple_fault)
        );
        assert_eq!(offset_of!(RawVcpuEvents, reserved), offset_of!(K, reserved));
        assert_eq!(
            offset_of!(RawVcpuEvents, exception_has_payload),
            offset_of!(K, exception_has_payload)
        );
        assert_eq!(
            offset_of!(RawVcpuEvents, exception_payload),
            offset_of!(K, exception_payload)
        );
        // Values from the reference table.
        assert_eq!((exc, int, nmi, smi), (0, 8, 12, 24));
        assert_eq!(offset_of!(K, triple_fault), 28);
        assert_eq!(offset_of!(K, exception_has_payload), 55);
        assert_eq!(offset_of!(K, exception_payload), 56);
    }

    /// The `__u8 shadow` narrowing keeps every bit of kvm-bindings' values, and the
    /// size is the 64 bytes of `struct kvm_vcpu_events` in `include/uapi/asm/kvm.h`.
    #[test]
    fn narrowed_constants_keep_their_bits() {
        assert_eq!(
            u32::from(Shadow::MOV_SS.raw()),
            kvm_bindings::KVM_X86_SHADOW_INT_MOV_SS
        );
        assert_eq!(
            u32::from(Shadow::STI.raw()),
            kvm_bindings::KVM_X86_SHADOW_INT_STI
        );
        assert_eq!(KVM_VCPU_EVENTS_SIZE, 64);
    }

    #[test]
    fn byte_offsets_by_hand() {
        let mut e = VcpuEvents::default();
        e.exception.nr = 0xaa;
        e.exception.error_code = 0x1122_3344;
        e.interrupt.shadow = Shadow::STI;
        e.nmi.pending = 2;
        e.sipi_vector = 0x55;
        e.flags = VcpuEventsFlags::from_bits_retain(0x3f);
        e.smi.latched_init = KvmBool::TRUE;
        e.triple_fault_pending = KvmBool::TRUE;
        e.reserved[25] = 0x77;
        e.exception.has_payload = KvmBool::TRUE;
        e.exception.payload = 0x0102_0304_0506_0708;
        let b = e.to_bytes();
        assert_eq!(b[1], 0xaa);
        assert_eq!(&b[4..8], &0x1122_3344u32.to_le_bytes());
        assert_eq!(b[11], 2);
        assert_eq!(b[13], 2);
        assert_eq!(b[16], 0x55);
        assert_eq!(b[20], 0x3f);
        assert_eq!(b[27], 1);
        assert_eq!(b[28], 1);
        assert_eq!(b[54], 0x77);
        assert_eq!(b[55], 1);
        assert_eq!(&b[56..64], &0x0102_0304_0506_0708u64.to_le_bytes());
    }

    #[test]
    fn property_lossless_round_trip_of_arbitrary_bytes() {
        arbtest::arbtest(|u| {
            let bytes: [u8; 64] = u.arbitrary()?;
            // bytes -> C struct (kvm-bindings) -> typed -> C struct -> bytes.
            let raw = RawVcpuEvents::from_bytes(&bytes).unwrap();
            let k: kvm_vcpu_events = (&raw).into();
            let typed = VcpuEvents::from(&k);
            let back: kvm_vcpu_events = (&typed).into();
            assert_eq!(back, k);
            assert_eq!(RawVcpuEvents::from(&back).to_bytes(), bytes);
            assert_eq!(typed.to_bytes(), bytes);
            assert_eq!(VcpuEvents::from_bytes(&bytes).unwrap(), typed);
            Ok(())
        });
    }

    #[test]
    fn wrong_size_is_an_error() {
        assert_eq!(RawVcpuEvents::from_bytes(&[0; 63]), Err(SizeError(63)));
        assert!(VcpuEvents::from_bytes(&[0; 65]).is_err());
    }

    #[test]
    fn kvm_bool_keeps_its_byte() {
        let b = KvmBool::from_raw(7);
        assert!(b.get() && !b.is_canonical());
        assert_eq!(b.raw(), 7);
        assert_eq!(KvmBool::from(true), KvmBool::TRUE);
    }

    #[test]
    fn shadow_bit_orders() {
        assert_eq!(
            Shadow::STI.to_interruptibility().raw(),
            Interruptibility::BLOCKING_BY_STI
        );
        assert_eq!(
            Shadow::MOV_SS.to_interruptibility().raw(),
            Interruptibility::BLOCKING_BY_MOV_SS
        );
        assert_eq!(
            Shadow::from_interruptibility(Interruptibility::from_bits_retain(3)).raw(),
            3
        );
        assert_eq!(Shadow::from_bits_retain(0xf4).unknown_bits(), 0xf4);
    }

    #[test]
    fn flags_unknown_bits() {
        let f = VcpuEventsFlags::from_bits_retain(0x7f);
        assert_eq!(f.unknown_bits(), 0x40);
        assert!(f.contains(KVM_VCPUEVENT_VALID_SMM));
    }

    #[test]
    fn exception_views_pending_vs_injected() {
        let mut e = VcpuEvents::default();
        assert_eq!(e.exception(), None);
        e.set_exception(
            EventStatus::Pending,
            HardwareException::page_fault(2, 0xdead_b000),
        )
        .unwrap();
        assert!(e.flags.contains(KVM_VCPUEVENT_VALID_PAYLOAD));
        assert_eq!(
            e.exception(),
            Some((
                EventStatus::Pending,
                HardwareException::page_fault(2, 0xdead_b000)
            ))
        );
        // Without VALID_PAYLOAD, pending does not count (KVM clears it).
        e.flags.set(KVM_VCPUEVENT_VALID_PAYLOAD, false);
        assert_eq!(e.exception(), None);
        let mut e = VcpuEvents::default();
        e.set_exception(
            EventStatus::Injected,
            HardwareException::general_protection(0x10),
        )
        .unwrap();
        assert_eq!(
            e.exception(),
            Some((
                EventStatus::Injected,
                HardwareException::general_protection(0x10)
            ))
        );
        assert_eq!(
            e.set_exception(EventStatus::Injected, HardwareException::debug(1)),
            Err(BuildError::PayloadNeedsPending)
        );
        e.clear_exception();
        assert_eq!(e.exception(), None);
    }

    #[test]
    fn events_list_every_slot() {
        let mut e = VcpuEvents::default();
        e.set_event(
            EventStatus::Injected,
            Event::ExternalInterrupt { vector: 0x21 },
        )
        .unwrap();
        e.set_event(EventStatus::Injected, Event::Nmi).unwrap();
        e.set_event(EventStatus::Pending, Event::Nmi).unwrap();
        e.set_event(EventStatus::Pending, Event::Nmi).unwrap();
        e.set_event(EventStatus::Pending, Event::Smi).unwrap();
        e.set_event(EventStatus::Pending, Event::TripleFault)
            .unwrap();
        assert_eq!(e.nmi_pending(), Some(2));
        assert_eq!(e.smm().map(|s| s.pending.get()), Some(true));
        assert_eq!(e.triple_fault(), Some(true));
        assert_eq!(
            e.events(),
            vec![
                (EventStatus::Injected, Event::Nmi),
                (EventStatus::Pending, Event::Nmi),
                (EventStatus::Pending, Event::Nmi),
                (
                    EventStatus::Injected,
                    Event::ExternalInterrupt { vector: 0x21 }
                ),
                (EventStatus::Pending, Event::Smi),
                (EventStatus::Pending, Event::TripleFault),
            ]
        );
        assert_eq!(
            e.set_event(EventStatus::Pending, Event::Sipi { vector: 1 }),
            Err(BuildError::NotExpressible(Event::Sipi { vector: 1 }))
        );
        e.interrupt.soft = KvmBool::TRUE;
        assert_eq!(
            e.interrupt(),
            Some(Event::SoftwareInterrupt {
                vector: 0x21,
                instruction_len: 0
            })
        );
        assert_eq!(e.shadow(), None);
        e.set_shadow(Shadow::MOV_SS);
        assert_eq!(e.shadow(), Some(Shadow::MOV_SS));
        assert_eq!(e.sipi(), None);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_snapshot_round_trip() {
        arbtest::arbtest(|u| {
            let bytes: [u8; 64] = u.arbitrary()?;
            let e = VcpuEvents::from_bytes(&bytes).unwrap();
            let json = serde_json::to_string(&e).unwrap();
            let back: VcpuEvents = serde_json::from_str(&json).unwrap();
            assert_eq!(back.to_bytes(), bytes);
            Ok(())
        });
    }
}
