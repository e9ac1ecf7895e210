// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The VM-entry interruption-information field (VMCS 0x4016) with its two companions,
//! the VM-entry exception error code (0x4018) and instruction length (0x401A) (SDM
//! Vol. 3C 25.8.3), and the one checker of the SDM event-injection rules on them (SDM
//! Vol. 3C 27.2.1.3, "Checks on VM-Entry Control Fields"; 26.2.1.3 in the 2016 edition).
//!
//! The IDT-vectoring information field (0x4408) has the same layout (SDM 25.9.3).
//!
//! | Bits  | Meaning |
//! |-------|---------|
//! | 7:0   | vector |
//! | 10:8  | interruption type ([`InterruptionType`]) |
//! | 11    | deliver error code |
//! | 12    | reserved on entry (13: nested exception with FRED, BASIC\[58\]) |
//! | 30:12 | reserved (0) |
//! | 31    | valid |
//!
//! [`check_entry_interruption`] follows the SDM text and Linux `arch/x86/kvm/vmx/nested.c`
//! `nested_check_vm_entry_controls` (the checks KVM applies to L1's event injection):
//! every rule runs and every violation is returned. The capability bits it needs come
//! in as plain values ([`EventInjectionCaps`]), so it needs no MSR access.

use crate::exception::{exception_has_error_code, GuestCet, LAST_EXCEPTION_VECTOR, X86_TRAP_NMI};

/// Interruption type, bits 10:8 (Linux `INTR_TYPE_*` / `EVENT_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum InterruptionType {
    /// 0: external interrupt (`INTR_TYPE_EXT_INTR`).
    ExternalInterrupt,
    /// 1: reserved.
    Reserved,
    /// 2: NMI (`INTR_TYPE_NMI_INTR`).
    Nmi,
    /// 3: hardware exception (`INTR_TYPE_HARD_EXCEPTION`).
    HardwareException,
    /// 4: software interrupt, INT n (`INTR_TYPE_SOFT_INTR`).
    SoftwareInterrupt,
    /// 5: privileged software exception, INT1 (`INTR_TYPE_PRIV_SW_EXCEPTION`).
    PrivilegedSoftwareException,
    /// 6: software exception, INT3 / INTO (`INTR_TYPE_SOFT_EXCEPTION`).
    SoftwareException,
    /// 7: other event (pending MTF VM exit; with FRED also SYSCALL/SYSENTER).
    OtherEvent,
}

impl InterruptionType {
    /// Decodes the 3-bit type (only bits 2:0 of `raw` are used).
    pub const fn from_raw(raw: u32) -> Self {
        match raw & 7 {
            0 => Self::ExternalInterrupt,
            1 => Self::Reserved,
            2 => Self::Nmi,
            3 => Self::HardwareException,
            4 => Self::SoftwareInterrupt,
            5 => Self::PrivilegedSoftwareException,
            6 => Self::SoftwareException,
            _ => Self::OtherEvent,
        }
    }

    /// The 3-bit raw type.
    pub const fn raw(self) -> u32 {
        match self {
            Self::ExternalInterrupt => 0,
            Self::Reserved => 1,
            Self::Nmi => 2,
            Self::HardwareException => 3,
            Self::SoftwareInterrupt => 4,
            Self::PrivilegedSoftwareException => 5,
            Self::SoftwareException => 6,
            Self::OtherEvent => 7,
        }
    }

    /// Types 4, 5 and 6 use the VM-entry instruction length.
    pub const fn uses_instruction_len(self) -> bool {
        matches!(
            self,
            Self::SoftwareInterrupt | Self::PrivilegedSoftwareException | Self::SoftwareException
        )
    }
}

/// The 32-bit interruption-information field, raw bits kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct InterruptionInfo(u32);

impl InterruptionInfo {
    /// Bits 7:0, the vector (`INTR_INFO_VECTOR_MASK`).
    pub const VECTOR_MASK: u32 = 0xff;
    /// Bits 10:8, the type (`INTR_INFO_INTR_TYPE_MASK`).
    pub const TYPE_MASK: u32 = 0x700;
    /// Bit 11, deliver error code (`INTR_INFO_DELIVER_CODE_MASK`).
    pub const DELIVER_CODE_MASK: u32 = 1 << 11;
    /// Bit 12: in IDT-vectoring info undefined; in exit interruption info
    /// "NMI unblocking due to IRET" (`INTR_INFO_UNBLOCK_NMI`).
    pub const UNBLOCK_NMI: u32 = 1 << 12;
    /// Bit 13: nested exception (FRED; defined only with IA32_VMX_BASIC bit 58 and
    /// type 3).
    pub const NESTED_EXCEPTION: u32 = 1 << 13;
    /// Bits 30:12, reserved in the VM-entry field (`INTR_INFO_RESVD_BITS_MASK`).
    pub const RESERVED_MASK: u32 = 0x7fff_f000;
    /// Bit 31, valid (`INTR_INFO_VALID_MASK`).
    pub const VALID_MASK: u32 = 1 << 31;

    /// The field with every bit kept.
    pub const fn from_bits_retain(raw: u32) -> Self {
        Self(raw)
    }

    /// Builds a valid field from its parts.
    ///
    /// ```
    /// use x86_kvm_base::interruption::{InterruptionInfo, InterruptionType};
    ///
    /// // #PF (14), hardware exception (type 3), with an error code, valid (bit 31).
    /// let pf = InterruptionInfo::new(14, InterruptionType::HardwareException, true);
    /// assert_eq!(pf.raw(), 0x8000_0b0e);
    /// assert_eq!(pf.vector(), 14);
    /// assert_eq!(pf.interruption_type(), InterruptionType::HardwareException);
    /// assert!(pf.deliver_error_code() && pf.valid());
    /// ```
    pub const fn new(vector: u8, kind: InterruptionType, deliver_error_code: bool) -> Self {
        let mut raw = Self::VALID_MASK | (kind.raw() << 8) | vector as u32;
        if deliver_error_code {
            raw |= Self::DELIVER_CODE_MASK;
        }
        Self(raw)
    }

    /// The raw 32-bit field.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Bits 7:0.
    pub const fn vector(self) -> u8 {
        (self.0 & Self::VECTOR_MASK) as u8
    }

    /// Bits 10:8.
    pub const fn interruption_type(self) -> InterruptionType {
        InterruptionType::from_raw((self.0 & Self::TYPE_MASK) >> 8)
    }

    /// Bit 11.
    pub const fn deliver_error_code(self) -> bool {
        self.0 & Self::DELIVER_CODE_MASK != 0
    }

    /// Bit 31.
    pub const fn valid(self) -> bool {
        self.0 & Self::VALID_MASK != 0
    }

    /// Set bits among the reserved bits 30:12.
    pub const fn reserved_bits(self) -> u32 {
        self.0 & Self::RESERVED_MASK
    }
}

/// The capability bits the event-injection checks read, as plain values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EventInjectionCaps {
    /// IA32_VMX_BASIC bit 56: VM entry does not check the deliver-error-code bit of a
    /// hardware exception against its vector (in protected mode).
    pub no_hw_error_code_cc: bool,
    /// IA32_VMX_BASIC bit 58: the nested-exception bit (13) may be set for type 3 (FRED).
    pub nested_exception: bool,
    /// IA32_VMX_MISC bit 30: software interrupts / exceptions may be injected with an
    /// instruction length of 0.
    pub zero_len_ins: bool,
    /// The "monitor trap flag" control may be 1 (allowed-1 bit 27 of
    /// IA32_VMX_(TRUE_)PROCBASED_CTLS): allows type 7 (pending MTF VM exit).
    pub monitor_trap_flag: bool,
}

impl EventInjectionCaps {
    /// Bit 56 of IA32_VMX_BASIC (MSR 0x480), Linux `VMX_BASIC_NO_HW_ERROR_CODE_CC`.
    pub const VMX_BASIC_NO_HW_ERROR_CODE_CC: u64 = 1 << 56;
    /// Bit 58 of IA32_VMX_BASIC: nested-exception support (FRED).
    pub const VMX_BASIC_NESTED_EXCEPTION: u64 = 1 << 58;
    /// Bit 30 of IA32_VMX_MISC (MSR 0x485), Linux `VMX_MISC_ZERO_LEN_INS`.
    pub const VMX_MISC_ZERO_LEN_INS: u64 = 1 << 30;
    /// Bit 27 of the primary processor-based controls (monitor trap flag).
    pub const CPU_BASED_MONITOR_TRAP_FLAG: u32 = 1 << 27;

    /// Takes the bits from raw IA32_VMX_BASIC, IA32_VMX_MISC and the allowed-1 half
    /// (bits 63:32) of IA32_VMX_(TRUE_)PROCBASED_CTLS.
    pub const fn from_msrs(vmx_basic: u64, vmx_misc: u64, procbased_ctls: u64) -> Self {
        Self {
            no_hw_error_code_cc: vmx_basic & Self::VMX_BASIC_NO_HW_ERROR_CODE_CC != 0,
            nested_exception: vmx_basic & Self::VMX_BASIC_NESTED_EXCEPTION != 0,
            zero_len_ins: vmx_misc & Self::VMX_MISC_ZERO_LEN_INS != 0,
            monitor_trap_flag: (procbased_ctls >> 32) as u32 & Self::CPU_BASED_MONITOR_TRAP_FLAG
                != 0,
        }
    }
}

/// The guest and control state the event-injection checks read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EventInjectionContext {
    /// The secondary control "unrestricted guest" is 1 (only then may the guest be in
    /// real mode).
    pub unrestricted_guest: bool,
    /// Guest CR0.PE.
    pub guest_cr0_pe: bool,
    /// Whether the guest has CET, which decides #CP's error code.
    pub guest_cet: GuestCet,
}

impl Default for EventInjectionContext {
    /// Protected mode without unrestricted guest, no CET.
    fn default() -> Self {
        Self {
            unrestricted_guest: false,
            guest_cr0_pe: true,
            guest_cet: GuestCet::Absent,
        }
    }
}

impl EventInjectionContext {
    /// Whether VM entry treats the guest as in protected mode for the error-code rule:
    /// `!unrestricted_guest || CR0.PE` (nested.c `nested_check_vm_entry_controls`,
    /// `prot_mode`).
    pub const fn protected_mode(&self) -> bool {
        !self.unrestricted_guest || self.guest_cr0_pe
    }
}

/// One SDM rule on the injected event (SDM 27.2.1.3; the ids C1..C8 of the crates'
/// reference notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum EventRule {
    /// C1: the type is not 1 (reserved), and 7 only if the monitor trap flag is supported.
    InterruptionType,
    /// C2: an NMI has vector 2.
    NmiVector,
    /// C3: a hardware exception has a vector of at most 31.
    ExceptionVector,
    /// C4: an other event (type 7) has vector 0.
    OtherEventVector,
    /// C5: deliver-error-code is 1 exactly for a hardware exception with an error code
    /// in protected mode (relaxed by IA32_VMX_BASIC bit 56 in protected mode).
    ErrorCodeDelivery,
    /// C6: bits 30:12 are 0 (bit 13 only with IA32_VMX_BASIC bit 58 and type 3).
    ReservedBits,
    /// C7: with deliver-error-code, error-code bits 31:16 are 0.
    ErrorCodeReserved,
    /// C8: types 4, 5, 6 have an instruction length of 1..=15 (0 with IA32_VMX_MISC bit 30).
    InstructionLength,
}

impl EventRule {
    /// Every rule, in SDM order.
    pub const ALL: [EventRule; 8] = [
        Self::InterruptionType,
        Self::NmiVector,
        Self::ExceptionVector,
        Self::OtherEventVector,
        Self::ErrorCodeDelivery,
        Self::ReservedBits,
        Self::ErrorCodeReserved,
        Self::InstructionLength,
    ];

    /// The id used in the reference notes (`"C1"`..`"C8"`), for printing only.
    pub const fn id(self) -> &'static str {
        match self {
            Self::InterruptionType => "C1",
            Self::NmiVector => "C2",
            Self::ExceptionVector => "C3",
            Self::OtherEventVector => "C4",
            Self::ErrorCodeDelivery => "C5",
            Self::ReservedBits => "C6",
            Self::ErrorCodeReserved => "C7",
            Self::InstructionLength => "C8",
        }
    }
}

impl core::fmt::Display for EventRule {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.id())
    }
}

/// One violated event-injection rule, with the values that violate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum EventViolation {
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
    /// C5: bit 11 is set for an event that has no error code (wrong vector, real mode
    /// with unrestricted guest, or not a hardware exception).
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
}

impl EventViolation {
    /// The rule this violates.
    pub const fn rule(&self) -> EventRule {
        match self {
            Self::ReservedInterruptionType | Self::OtherEventUnsupported => {
                EventRule::InterruptionType
            }
            Self::NmiVector { .. } => EventRule::NmiVector,
            Self::ExceptionVector { .. } => EventRule::ExceptionVector,
            Self::OtherEventVector { .. } => EventRule::OtherEventVector,
            Self::ErrorCodeMissing { .. } | Self::UnexpectedErrorCode { .. } => {
                EventRule::ErrorCodeDelivery
            }
            Self::ReservedBits { .. } => EventRule::ReservedBits,
            Self::ErrorCodeHighBits { .. } => EventRule::ErrorCodeReserved,
            Self::InstructionLengthTooLong { .. } | Self::ZeroInstructionLength => {
                EventRule::InstructionLength
            }
        }
    }
}

/// C1..C8: every SDM 27.2.1.3 check on the VM-entry interruption-information field
/// (`info`, VMCS 0x4016), the VM-entry exception error code (`error_code`, 0x4018) and
/// the VM-entry instruction length (`instruction_len`, 0x401A); all violations, none
/// when the valid bit is clear.
///
/// ```
/// use x86_kvm_base::interruption::{
///     check_entry_interruption, EventInjectionCaps, EventInjectionContext, EventRule,
///     InterruptionInfo, InterruptionType,
/// };
///
/// // #GP without its error code in protected mode: VM entry fails (C3).
/// let gp = InterruptionInfo::new(13, InterruptionType::HardwareException, false);
/// let caps = EventInjectionCaps::default();
/// let ctx = EventInjectionContext::default();
/// let violations = check_entry_interruption(gp, 0, 0, &caps, &ctx);
/// assert_eq!(violations.len(), 1);
/// assert_eq!(violations[0].rule(), EventRule::ErrorCodeDelivery);
/// // With the error code it is fine.
/// let gp = InterruptionInfo::new(13, InterruptionType::HardwareException, true);
/// assert!(check_entry_interruption(gp, 0, 0, &caps, &ctx).is_empty());
/// ```
pub fn check_entry_interruption(
    info: InterruptionInfo,
    error_code: u32,
    instruction_len: u32,
    caps: &EventInjectionCaps,
    context: &EventInjectionContext,
) -> Vec<EventViolation> {
    let mut out = Vec::new();
    if !info.valid() {
        return out;
    }
    check_type_and_vector(&mut out, info, caps);
    check_error_code_delivery(&mut out, info, caps, context);
    // C6, with FRED's nested-exception bit (BASIC[58], type 3 only).
    let mut reserved = InterruptionInfo::RESERVED_MASK;
    if caps.nested_exception && info.interruption_type() == InterruptionType::HardwareException {
        reserved &= !InterruptionInfo::NESTED_EXCEPTION;
    }
    if info.raw() & reserved != 0 {
        out.push(EventViolation::ReservedBits {
            bits: info.raw() & reserved,
        });
    }
    // C7 (nested.c: `CC(error_code & GENMASK(31, 16))`).
    if info.deliver_error_code() && error_code & 0xffff_0000 != 0 {
        out.push(EventViolation::ErrorCodeHighBits { error_code });
    }
    // C8 (nested.c: X86_MAX_INSTRUCTION_LENGTH, nested_cpu_has_zero_length_injection).
    if info.interruption_type().uses_instruction_len() {
        if instruction_len > 15 {
            out.push(EventViolation::InstructionLengthTooLong {
                len: instruction_len,
            });
        } else if instruction_len == 0 && !caps.zero_len_ins {
            out.push(EventViolation::ZeroInstructionLength);
        }
    }
    out
}

// C1..C4.
fn check_type_and_vector(
    out: &mut Vec<EventViolation>,
    info: InterruptionInfo,
    caps: &EventInjectionCaps,
) {
    let vector = info.vector();
    match info.interruption_type() {
        InterruptionType::Reserved => out.push(EventViolation::ReservedInterruptionType),
        InterruptionType::OtherEvent => {
            if !caps.monitor_trap_flag {
                out.push(EventViolation::OtherEventUnsupported);
            }
            if vector != 0 {
                out.push(EventViolation::OtherEventVector { vector });
            }
        }
        InterruptionType::Nmi if vector != X86_TRAP_NMI => {
            out.push(EventViolation::NmiVector { vector })
        }
        InterruptionType::HardwareException if vector > LAST_EXCEPTION_VECTOR => {
            out.push(EventViolation::ExceptionVector { vector })
        }
        _ => {}
    }
}

// C5, as nested.c `nested_check_vm_entry_controls` (since "KVM: nVMX: Virtualize
// NO_HW_ERROR_CODE_CC for L1 event injection to L2"): outside protected mode or for a
// type other than hardware exception the bit must be 0; for a hardware exception in
// protected mode it must match `x86_exception_has_error_code` unless BASIC[56].
fn check_error_code_delivery(
    out: &mut Vec<EventViolation>,
    info: InterruptionInfo,
    caps: &EventInjectionCaps,
    context: &EventInjectionContext,
) {
    let vector = info.vector();
    let ty = info.interruption_type();
    let has = info.deliver_error_code();
    if !context.protected_mode() || ty != InterruptionType::HardwareException {
        if has {
            out.push(EventViolation::UnexpectedErrorCode {
                interruption_type: ty,
                vector,
            });
        }
        return;
    }
    if caps.no_hw_error_code_cc {
        return;
    }
    let should = exception_has_error_code(vector, context.guest_cet);
    if should && !has {
        out.push(EventViolation::ErrorCodeMissing { vector });
    } else if has && !should {
        out.push(EventViolation::UnexpectedErrorCode {
            interruption_type: ty,
            vector,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        raw: u32,
        error_code: u32,
        len: u32,
        caps: &EventInjectionCaps,
        ctx: &EventInjectionContext,
    ) -> Vec<EventViolation> {
        check_entry_interruption(
            InterruptionInfo::from_bits_retain(raw),
            error_code,
            len,
            caps,
            ctx,
        )
    }

    fn real_mode() -> EventInjectionContext {
        EventInjectionContext {
            unrestricted_guest: true,
            guest_cr0_pe: false,
            guest_cet: GuestCet::Absent,
        }
    }

    #[test]
    fn field_layout() {
        let i = InterruptionInfo::new(14, InterruptionType::HardwareException, true);
        assert_eq!(i.raw(), 0x8000_0b0e);
        assert_eq!(i.vector(), 14);
        assert_eq!(i.interruption_type(), InterruptionType::HardwareException);
        assert!(i.deliver_error_code() && i.valid());
        assert_eq!(
            InterruptionInfo::from_bits_retain(0x8000_1000).reserved_bits(),
            0x1000
        );
        assert!(check(0, 0, 0, &Default::default(), &Default::default()).is_empty());
    }

    /// #CP (21) follows the guest's CET state (Linux `x86_exception_has_error_code`).
    #[test]
    fn cp_error_code_follows_guest_cet_as_x86_exception_has_error_code() {
        let caps = EventInjectionCaps::default();
        let no_cet = EventInjectionContext::default();
        let cet = EventInjectionContext {
            guest_cet: GuestCet::Present,
            ..no_cet
        };
        assert!(check(0x8000_0b15, 0, 0, &caps, &cet).is_empty());
        assert!(check(0x8000_0315, 0, 0, &caps, &no_cet).is_empty());
        assert_eq!(
            check(0x8000_0315, 0, 0, &caps, &cet),
            [EventViolation::ErrorCodeMissing { vector: 21 }]
        );
        assert_eq!(
            check(0x8000_0b15, 0, 0, &caps, &no_cet)[0].rule(),
            EventRule::ErrorCodeDelivery
        );
    }

    /// IA32_VMX_BASIC[56] relaxes the error-code check only in protected mode, as in
    /// Linux nested.c `nested_check_vm_entry_controls`.
    #[test]
    fn basic56_relaxation_only_in_protected_mode_as_nested_check_vm_entry_controls() {
        let caps = EventInjectionCaps {
            no_hw_error_code_cc: true,
            ..Default::default()
        };
        // #GP without an error code, #UD with one: fine in protected mode.
        for raw in [0x8000_030d, 0x8000_0b06] {
            assert!(check(raw, 0, 0, &caps, &Default::default()).is_empty());
        }
        // Real mode (unrestricted guest, CR0.PE=0): an error code is still refused.
        assert_eq!(
            check(0x8000_0b0d, 0, 0, &caps, &real_mode()),
            [EventViolation::UnexpectedErrorCode {
                interruption_type: InterruptionType::HardwareException,
                vector: 13
            }]
        );
        // Without unrestricted guest, CR0.PE=0 still counts as protected mode.
        let no_urg = EventInjectionContext {
            guest_cr0_pe: false,
            ..Default::default()
        };
        assert!(check(0x8000_0b0d, 0, 0, &caps, &no_urg).is_empty());
    }

    #[test]
    fn every_rule_has_a_violation() {
        let caps = EventInjectionCaps::default();
        let ctx = EventInjectionContext::default();
        let cases: [(u32, u32, u32, EventRule); 8] = [
            (0x8000_0100, 0, 0, EventRule::InterruptionType),
            (0x8000_0203, 0, 0, EventRule::NmiVector),
            (0x8000_0320, 0, 0, EventRule::ExceptionVector),
            (0x8000_0701, 0, 0, EventRule::OtherEventVector),
            (0x8000_030e, 0, 0, EventRule::ErrorCodeDelivery),
            (0x8000_1000, 0, 0, EventRule::ReservedBits),
            (0x8000_0b0d, 0x1_0000, 0, EventRule::ErrorCodeReserved),
            (0x8000_0480, 0, 0, EventRule::InstructionLength),
        ];
        for (raw, code, len, rule) in cases {
            let v = check(raw, code, len, &caps, &ctx);
            assert!(v.iter().any(|v| v.rule() == rule), "{raw:#x}: {v:?}");
        }
        // BASIC[58] allows bit 13 for type 3 only.
        let fred = EventInjectionCaps {
            nested_exception: true,
            ..caps
        };
        assert!(check(0x8000_2b0d, 0, 0, &fred, &ctx).is_empty());
        assert!(!check(0x8000_2402, 0, 1, &fred, &ctx).is_empty());
        let caps = EventInjectionCaps::from_msrs(1 << 56, 1 << 30, 1 << 59);
        assert!(caps.no_hw_error_code_cc && caps.zero_len_ins && caps.monitor_trap_flag);
    }
}
