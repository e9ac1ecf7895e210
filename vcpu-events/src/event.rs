// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Typed x86 events and the event-related vCPU state.
//!
//! An [`Event`] is something the processor delivers through the IDT (or, for
//! SMI, triple fault and SIPI, something that changes the vCPU's mode). The
//! same event can be *pending* (recognised, not yet delivered: it may still
//! turn into a #DF or, for a nested guest, into a VM exit) or *injected*
//! (delivery has already started, e.g. re-injection after a VM exit that
//! interrupted it): see [`EventStatus`].
//!
//! [`Interruptibility`] is the VMCS guest interruptibility-state field
//! (SDM 24.4.2): blocking by STI, by MOV SS, by SMI and by NMI. KVM reports the
//! STI / MOV-SS part as `kvm_vcpu_events.interrupt.shadow` (with a *different*
//! bit order, see [`crate::vcpu_events::Shadow`]) and the NMI part as
//! `nmi.masked`.

#![deny(unsafe_code)]

/// Exception vectors, named as in Linux `arch/x86/include/asm/trapnr.h` (moved to
/// [`x86_kvm_base::exception`]; re-exported here).
pub mod vector {
    pub use x86_kvm_base::exception::{
        LAST_EXCEPTION_VECTOR, X86_TRAP_AC, X86_TRAP_BP, X86_TRAP_BR, X86_TRAP_CP, X86_TRAP_DB,
        X86_TRAP_DE, X86_TRAP_DF, X86_TRAP_GP, X86_TRAP_MC, X86_TRAP_MF, X86_TRAP_NM, X86_TRAP_NMI,
        X86_TRAP_NP, X86_TRAP_OF, X86_TRAP_PF, X86_TRAP_SS, X86_TRAP_TS, X86_TRAP_UD, X86_TRAP_VE,
        X86_TRAP_XF,
    };
}

use vector::*;
pub use x86_kvm_base::exception::GuestCet;

/// Whether the processor pushes an error code for hardware exception `vector`
/// in protected mode: [`x86_kvm_base::exception::exception_has_error_code`]
/// (Linux `x86_exception_has_error_code`) with `cet` = the guest has CET, which
/// decides #CP (21).
pub fn exception_has_error_code(vector: u8, cet: bool) -> bool {
    x86_kvm_base::exception::exception_has_error_code(vector, GuestCet::from_bool(cet))
}

/// The exception payload KVM delivers together with a pending #PF or #DB
/// (`kvm_vcpu_events.exception_payload`, needs `KVM_CAP_EXCEPTION_PAYLOAD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum ExceptionPayload {
    /// For #PF: the faulting linear address KVM writes to CR2 at delivery.
    Cr2(u64),
    /// For #DB: the new DR6 bits in the VMX "pending debug exceptions"
    /// encoding (active high; bit 16 set iff the #DB clears DR6.RTM).
    Dr6(u64),
}

impl ExceptionPayload {
    /// The raw 64-bit payload value.
    pub fn raw(&self) -> u64 {
        match *self {
            Self::Cr2(v) | Self::Dr6(v) => v,
        }
    }

    /// The DR6 value the guest sees after KVM delivers a pending #DB with
    /// this `payload`, starting from `old_dr6` (Linux
    /// `kvm_deliver_exception_payload`): B0..B3 of the old value are cleared,
    /// the fixed-1 / active-low bits ([`DR6_ACTIVE_LOW`]) are set, the payload
    /// is ORed in, active-low positions set in the payload (e.g. bit 16, RTM)
    /// are flipped to 0, and bit 12 (defined in the "pending debug
    /// exceptions" encoding, reserved in DR6) is cleared.
    pub const fn dr6_after_delivery(old_dr6: u64, payload: u64) -> u64 {
        let mut dr6 = old_dr6 & !DR6_TRAP_BITS;
        dr6 |= DR6_ACTIVE_LOW;
        dr6 |= payload;
        dr6 ^= payload & DR6_ACTIVE_LOW;
        dr6 & !(1 << 12)
    }

    /// The payload kind KVM uses for `vector`: CR2 for #PF, DR6 for #DB,
    /// `None` for any other vector (KVM ignores the payload then).
    pub fn for_vector(vector: u8, raw: u64) -> Option<Self> {
        match vector {
            X86_TRAP_PF => Some(Self::Cr2(raw)),
            X86_TRAP_DB => Some(Self::Dr6(raw)),
            _ => None,
        }
    }
}

/// A hardware exception (VMX interruption type 3): any exception vector except
/// #BP and #OF, which are software exceptions (SDM 24.8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HardwareException {
    /// Exception vector (0..=31 to be valid).
    pub vector: u8,
    /// Error code pushed by delivery, if any (only bits 15:0 are allowed by
    /// VM entry, SDM 26.2.1.3).
    pub error_code: Option<u32>,
    /// CR2 / DR6 payload applied at delivery (KVM only, pending exceptions).
    pub payload: Option<ExceptionPayload>,
}

impl HardwareException {
    /// An exception without error code or payload.
    pub fn new(vector: u8) -> Self {
        Self {
            vector,
            error_code: None,
            payload: None,
        }
    }

    /// #GP with `error_code` (a selector index, or 0).
    pub fn general_protection(error_code: u32) -> Self {
        Self {
            vector: X86_TRAP_GP,
            error_code: Some(error_code),
            payload: None,
        }
    }

    /// #PF with `error_code` (P/W/U/RSVD/I bits) and the faulting address `cr2`
    /// as payload.
    pub fn page_fault(error_code: u32, cr2: u64) -> Self {
        Self {
            vector: X86_TRAP_PF,
            error_code: Some(error_code),
            payload: Some(ExceptionPayload::Cr2(cr2)),
        }
    }

    /// #DB with the new DR6 bits `dr6` as payload.
    pub fn debug(dr6: u64) -> Self {
        Self {
            vector: X86_TRAP_DB,
            error_code: None,
            payload: Some(ExceptionPayload::Dr6(dr6)),
        }
    }

    /// Sets the error code.
    pub fn with_error_code(mut self, error_code: u32) -> Self {
        self.error_code = Some(error_code);
        self
    }
}

/// An event a VMM can inject or that a VM exit can report as interrupted.
///
/// Instruction lengths are kept as the 32-bit VMCS value so a decoded field is
/// never truncated; the checks report lengths above 15.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Event {
    /// Maskable external interrupt (VMX type 0), e.g. from a PIC or IOAPIC.
    ExternalInterrupt {
        /// IDT vector.
        vector: u8,
    },
    /// Non-maskable interrupt (VMX type 2, vector 2).
    Nmi,
    /// Hardware exception (VMX type 3).
    HardwareException(HardwareException),
    /// Software interrupt, `INT n` (VMX type 4); RIP advances by
    /// `instruction_len` before delivery.
    SoftwareInterrupt {
        /// IDT vector `n`.
        vector: u8,
        /// Length of the INT n instruction (VM-entry instruction length).
        instruction_len: u32,
    },
    /// Privileged software exception, `INT1` / ICEBP (VMX type 5, vector 1).
    PrivilegedSoftwareException {
        /// IDT vector (1 for INT1).
        vector: u8,
        /// Length of the instruction.
        instruction_len: u32,
    },
    /// Software exception, `INT3` (#BP) or `INTO` (#OF) (VMX type 6).
    SoftwareException {
        /// IDT vector (3 or 4).
        vector: u8,
        /// Length of the instruction.
        instruction_len: u32,
    },
    /// System-management interrupt (KVM_SMI / `smi.pending`).
    Smi,
    /// Triple fault (`triple_fault.pending`; ends in KVM_EXIT_SHUTDOWN).
    TripleFault,
    /// Startup IPI with its vector (start at `vector << 12`).
    Sipi {
        /// SIPI vector.
        vector: u8,
    },
}

impl Event {
    /// The IDT vector the event is delivered through, if it goes through the IDT.
    pub fn vector(&self) -> Option<u8> {
        match *self {
            Event::ExternalInterrupt { vector }
            | Event::SoftwareInterrupt { vector, .. }
            | Event::PrivilegedSoftwareException { vector, .. }
            | Event::SoftwareException { vector, .. } => Some(vector),
            Event::HardwareException(e) => Some(e.vector),
            Event::Nmi => Some(X86_TRAP_NMI),
            Event::Smi | Event::TripleFault | Event::Sipi { .. } => None,
        }
    }

    /// Whether the event originates in hardware (external interrupt, NMI,
    /// hardware exception, SMI, triple fault, SIPI): such an event is never
    /// regenerated by re-executing an instruction, so it must never be dropped.
    pub fn is_hardware_originated(&self) -> bool {
        !matches!(
            self,
            Event::SoftwareInterrupt { .. }
                | Event::PrivilegedSoftwareException { .. }
                | Event::SoftwareException { .. }
        )
    }
}

/// Whether an event's delivery has started.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum EventStatus {
    /// Recognised, delivery not started: may still morph (#DF, nested VM exit).
    Pending,
    /// Delivery started (side effects such as IRR->ISR already applied): must
    /// be delivered as-is on the next VM entry, before anything new.
    Injected,
}

/// The VMCS guest interruptibility-state field (SDM 24.4.2, Table 24-3).
///
/// Raw bits are kept: reserved bits are reported by the checks, never lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Interruptibility(u32);

impl Interruptibility {
    /// Bit 0: blocking by STI (interrupt shadow after STI).
    pub const BLOCKING_BY_STI: u32 = 1 << 0;
    /// Bit 1: blocking by MOV SS / POP SS.
    pub const BLOCKING_BY_MOV_SS: u32 = 1 << 1;
    /// Bit 2: blocking by SMI (only valid in SMM).
    pub const BLOCKING_BY_SMI: u32 = 1 << 2;
    /// Bit 3: blocking by NMI ("NMI masked").
    pub const BLOCKING_BY_NMI: u32 = 1 << 3;
    /// Bit 4: enclave interruption.
    pub const ENCLAVE_INTERRUPTION: u32 = 1 << 4;
    /// Bits 31:5 are reserved and must be 0 (SDM 26.3.1.5).
    pub const RESERVED: u32 = !0x1f;

    /// No blocking at all.
    pub const NONE: Self = Self(0);

    /// The field with every bit kept, known or not.
    pub const fn from_bits_retain(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw 32-bit value.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Blocking by STI.
    pub const fn sti(self) -> bool {
        self.0 & Self::BLOCKING_BY_STI != 0
    }

    /// Blocking by MOV SS.
    pub const fn mov_ss(self) -> bool {
        self.0 & Self::BLOCKING_BY_MOV_SS != 0
    }

    /// Blocking by SMI.
    pub const fn smi(self) -> bool {
        self.0 & Self::BLOCKING_BY_SMI != 0
    }

    /// Blocking by NMI (NMIs masked).
    pub const fn nmi(self) -> bool {
        self.0 & Self::BLOCKING_BY_NMI != 0
    }

    /// Either interrupt shadow (STI or MOV SS) is active.
    pub const fn shadow(self) -> bool {
        self.0 & (Self::BLOCKING_BY_STI | Self::BLOCKING_BY_MOV_SS) != 0
    }

    /// Reserved bits that are set (bits 31:5).
    pub const fn reserved_bits(self) -> u32 {
        self.0 & Self::RESERVED
    }

    /// Returns the field with `bits` set or cleared.
    pub const fn with(self, bits: u32, on: bool) -> Self {
        if on {
            Self(self.0 | bits)
        } else {
            Self(self.0 & !bits)
        }
    }
}

/// The VMCS guest activity state (SDM 24.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum ActivityState {
    /// 0: executing instructions.
    #[default]
    Active,
    /// 1: halted (HLT).
    Hlt,
    /// 2: shutdown (after a triple fault).
    Shutdown,
    /// 3: waiting for a startup IPI.
    WaitForSipi,
    /// Any other value (reserved), kept raw.
    Other(u32),
}

impl ActivityState {
    /// Decodes the raw field.
    pub fn from_raw(raw: u32) -> Self {
        match raw {
            0 => Self::Active,
            1 => Self::Hlt,
            2 => Self::Shutdown,
            3 => Self::WaitForSipi,
            v => Self::Other(v),
        }
    }

    /// The raw field value.
    pub fn raw(self) -> u32 {
        match self {
            Self::Active => 0,
            Self::Hlt => 1,
            Self::Shutdown => 2,
            Self::WaitForSipi => 3,
            Self::Other(v) => v,
        }
    }
}

/// DR6 bits B0..B3 (`DR_TRAP_BITS`): breakpoint conditions 0..3.
pub const DR6_TRAP_BITS: u64 = 0xf;
/// DR6 fixed-1 and active-low bits, also DR6's reset value (Linux
/// `DR6_ACTIVE_LOW`); XOR mask between the #DB payload encoding and DR6.
pub const DR6_ACTIVE_LOW: u64 = 0xffff_0ff0;
/// DR6.BS (bit 14): single-step.
pub const DR6_BS: u64 = 1 << 14;
/// DR6.RTM (bit 16, active low in DR6, active high in the payload).
pub const DR6_RTM: u64 = 1 << 16;

/// RFLAGS.IF, the maskable-interrupt enable flag (bit 9).
pub const X86_EFLAGS_IF: u64 = 1 << 9;
/// RFLAGS.TF, the single-step trap flag (bit 8).
pub const X86_EFLAGS_TF: u64 = 1 << 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_vectors_match_linux() {
        let with: Vec<u8> = (0..32)
            .filter(|&v| exception_has_error_code(v, false))
            .collect();
        assert_eq!(with, vec![8, 10, 11, 12, 13, 14, 17]);
        assert!(exception_has_error_code(21, true));
        assert!(!exception_has_error_code(21, false));
    }

    #[test]
    fn payload_kind_follows_vector() {
        assert_eq!(
            ExceptionPayload::for_vector(14, 5),
            Some(ExceptionPayload::Cr2(5))
        );
        assert_eq!(
            ExceptionPayload::for_vector(1, 5),
            Some(ExceptionPayload::Dr6(5))
        );
        assert_eq!(ExceptionPayload::for_vector(13, 5), None);
        assert_eq!(ExceptionPayload::Dr6(7).raw(), 7);
    }

    #[test]
    fn dr6_payload_encoding() {
        // B0 + BS: active-high bits are ORed in, fixed-1 bits set, old B1 cleared.
        assert_eq!(
            ExceptionPayload::dr6_after_delivery(DR6_ACTIVE_LOW | 2, DR6_BS | 1),
            0xffff_4ff1
        );
        // RTM (bit 16) is active high in the payload, so it clears DR6.RTM;
        // bit 12 never reaches DR6.
        assert_eq!(
            ExceptionPayload::dr6_after_delivery(DR6_ACTIVE_LOW, DR6_RTM | (1 << 12) | DR6_BS | 1),
            0xfffe_4ff1
        );
        // An empty payload leaves the reset value.
        assert_eq!(ExceptionPayload::dr6_after_delivery(0, 0), DR6_ACTIVE_LOW);
    }

    #[test]
    fn interruptibility_bits() {
        let i = Interruptibility::from_bits_retain(0xffff_ffff);
        assert!(i.sti() && i.mov_ss() && i.smi() && i.nmi() && i.shadow());
        assert_eq!(i.reserved_bits(), 0xffff_ffe0);
        assert_eq!(i.raw(), 0xffff_ffff);
        let n = Interruptibility::NONE.with(Interruptibility::BLOCKING_BY_NMI, true);
        assert!(n.nmi() && !n.shadow());
        assert_eq!(
            n.with(Interruptibility::BLOCKING_BY_NMI, false),
            Interruptibility::NONE
        );
    }

    #[test]
    fn activity_state_roundtrip() {
        for raw in [0, 1, 2, 3, 4, 0xffff_ffff] {
            assert_eq!(ActivityState::from_raw(raw).raw(), raw);
        }
        assert_eq!(ActivityState::from_raw(3), ActivityState::WaitForSipi);
    }

    #[test]
    fn event_vectors_and_origin() {
        assert_eq!(Event::Nmi.vector(), Some(2));
        assert_eq!(Event::TripleFault.vector(), None);
        assert_eq!(
            Event::HardwareException(HardwareException::page_fault(2, 0x1000)).vector(),
            Some(14)
        );
        assert!(Event::ExternalInterrupt { vector: 0x20 }.is_hardware_originated());
        assert!(!Event::SoftwareException {
            vector: 3,
            instruction_len: 1
        }
        .is_hardware_originated());
        assert_eq!(
            HardwareException::new(6).with_error_code(1).error_code,
            Some(1)
        );
        assert_eq!(
            HardwareException::debug(0x4000).payload,
            Some(ExceptionPayload::Dr6(0x4000))
        );
    }
}
