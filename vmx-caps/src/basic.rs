// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! IA32_VMX_BASIC (0x480): SDM A.1, Linux `vmx_basic_*()` helpers in `asm/vmx.h`.

/// Bit 48: VMXON/VMCS/pointer physical addresses limited to 32 bits
/// (Linux `VMX_BASIC_32BIT_PHYS_ADDR_ONLY`).
pub const VMX_BASIC_32BIT_PHYS_ADDR_ONLY: u64 = 1 << 48;
/// Bit 49: dual-monitor treatment of SMI and SMM (Linux `VMX_BASIC_DUAL_MONITOR_TREATMENT`).
pub const VMX_BASIC_DUAL_MONITOR_TREATMENT: u64 = 1 << 49;
/// Bit 54: VM exits due to INS/OUTS report instruction information (Linux `VMX_BASIC_INOUT`).
pub const VMX_BASIC_INOUT: u64 = 1 << 54;
/// Bit 55: the TRUE capability MSRs 0x48D-0x490 exist (Linux `VMX_BASIC_TRUE_CTLS`).
pub const VMX_BASIC_TRUE_CTLS: u64 = 1 << 55;
/// Bit 56: VM entry may deliver a hardware exception with or without an error code
/// regardless of vector (Linux `VMX_BASIC_NO_HW_ERROR_CODE_CC`).
pub const VMX_BASIC_NO_HW_ERROR_CODE_CC: u64 = 1 << 56;
/// Bit 58: VMX nested-exception support (FRED; QEMU `MSR_VMX_BASIC_NESTED_EXCEPTION`).
pub const VMX_BASIC_NESTED_EXCEPTION: u64 = 1 << 58;

/// Bits 30:0: VMCS revision identifier.
pub const REVISION_MASK: u64 = 0x7FFF_FFFF;
/// Bits 44:32: VMXON/VMCS region size in bytes.
pub const VMCS_SIZE_MASK: u64 = 0x1FFF << 32;
/// Bits 53:50: memory type for the VMCS and referenced structures.
pub const MEM_TYPE_MASK: u64 = 0xF << 50;

/// Every bit this crate knows a meaning for.
pub const KNOWN_BITS: u64 = REVISION_MASK
    | VMCS_SIZE_MASK
    | VMX_BASIC_32BIT_PHYS_ADDR_ONLY
    | VMX_BASIC_DUAL_MONITOR_TREATMENT
    | MEM_TYPE_MASK
    | VMX_BASIC_INOUT
    | VMX_BASIC_TRUE_CTLS
    | VMX_BASIC_NO_HW_ERROR_CODE_CC
    | VMX_BASIC_NESTED_EXCEPTION;

/// Memory type of the VMCS region and structures it references (BASIC bits 53:50).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemoryType {
    /// 0: uncacheable.
    Uncacheable,
    /// 6: write-back (the only type KVM accepts).
    WriteBack,
    /// Any other value: reserved by the SDM.
    Reserved(u8),
}

impl MemoryType {
    /// Decodes the 4-bit field.
    pub const fn from_raw(v: u8) -> Self {
        match v {
            0 => Self::Uncacheable,
            6 => Self::WriteBack,
            v => Self::Reserved(v),
        }
    }

    /// The 4-bit field value.
    pub const fn raw(self) -> u8 {
        match self {
            Self::Uncacheable => 0,
            Self::WriteBack => 6,
            Self::Reserved(v) => v,
        }
    }
}

/// IA32_VMX_BASIC (0x480), raw value kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VmxBasic(pub u64);

impl VmxBasic {
    /// The raw MSR value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Bits 30:0: VMCS revision identifier (Linux `vmx_basic_vmcs_revision_id()`).
    pub const fn revision_id(self) -> u32 {
        (self.0 & REVISION_MASK) as u32
    }

    /// Bits 44:32: VMXON/VMCS region size in bytes (Linux `vmx_basic_vmcs_size()`).
    pub const fn vmcs_size(self) -> u32 {
        ((self.0 & VMCS_SIZE_MASK) >> 32) as u32
    }

    /// Bit 48: physical addresses limited to 32 bits (always 0 on Intel 64).
    pub const fn phys_addr_32bit(self) -> bool {
        self.0 & VMX_BASIC_32BIT_PHYS_ADDR_ONLY != 0
    }

    /// Bit 49: dual-monitor treatment of SMI/SMM supported.
    pub const fn dual_monitor(self) -> bool {
        self.0 & VMX_BASIC_DUAL_MONITOR_TREATMENT != 0
    }

    /// Bits 53:50: VMCS memory type, raw (Linux `vmx_basic_vmcs_mem_type()`).
    pub const fn memory_type(self) -> u8 {
        ((self.0 & MEM_TYPE_MASK) >> 50) as u8
    }

    /// Bits 53:50 as a typed view.
    pub const fn memory_type_kind(self) -> MemoryType {
        MemoryType::from_raw(self.memory_type())
    }

    /// Bit 54: INS/OUTS exits report instruction information.
    pub const fn ins_outs_info(self) -> bool {
        self.0 & VMX_BASIC_INOUT != 0
    }

    /// Bit 55: TRUE capability MSRs exist; default1 controls may be 0.
    pub const fn true_ctls(self) -> bool {
        self.0 & VMX_BASIC_TRUE_CTLS != 0
    }

    /// Bit 56: no consistency check on the error code of injected HW exceptions.
    pub const fn no_hw_error_code_cc(self) -> bool {
        self.0 & VMX_BASIC_NO_HW_ERROR_CODE_CC != 0
    }

    /// Bit 58: VMX nested-exception support (FRED).
    pub const fn nested_exception(self) -> bool {
        self.0 & VMX_BASIC_NESTED_EXCEPTION != 0
    }

    /// Set bits with no known meaning (31, 47:45, 57, 63:59). Bit 57 is set on real
    /// Arrow Lake parts: reported, never rejected.
    pub const fn unknown_bits(self) -> u64 {
        self.0 & !KNOWN_BITS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_arrow_lake() {
        let b = VmxBasic(0x03DA_0600_0000_0015);
        assert_eq!(b.raw(), 0x03DA_0600_0000_0015);
        assert_eq!(b.revision_id(), 21);
        assert_eq!(b.vmcs_size(), 1536);
        assert!(!b.phys_addr_32bit());
        assert!(b.dual_monitor());
        assert_eq!(b.memory_type(), 6);
        assert_eq!(b.memory_type_kind(), MemoryType::WriteBack);
        assert!(b.ins_outs_info());
        assert!(b.true_ctls());
        assert!(b.no_hw_error_code_cc());
        assert!(!b.nested_exception());
        assert_eq!(b.unknown_bits(), 1 << 57);
    }

    #[test]
    fn decode_penryn_no_true_ctls() {
        let b = VmxBasic(0x005A_0800_0000_000D);
        assert_eq!(b.revision_id(), 13);
        assert_eq!(b.vmcs_size(), 2048);
        assert!(b.dual_monitor());
        assert!(b.ins_outs_info());
        assert!(!b.true_ctls());
        assert!(!b.no_hw_error_code_cc());
        assert_eq!(b.unknown_bits(), 0);
    }

    #[test]
    fn each_field_in_isolation() {
        assert_eq!(
            VmxBasic(0x8000_0000).revision_id(),
            0,
            "bit 31 is not revision"
        );
        assert_eq!(VmxBasic(0x8000_0000).unknown_bits(), 0x8000_0000);
        assert_eq!(VmxBasic(0x7FFF_FFFF).revision_id(), 0x7FFF_FFFF);
        assert_eq!(VmxBasic(1 << 44).vmcs_size(), 4096);
        assert_eq!(VmxBasic(0x1FFF << 32).vmcs_size(), 0x1FFF);
        assert_eq!(VmxBasic(0x7 << 45).unknown_bits(), 0x7 << 45);
        assert!(VmxBasic(1 << 48).phys_addr_32bit());
        assert!(VmxBasic(1 << 49).dual_monitor());
        assert_eq!(VmxBasic(0xF << 50).memory_type(), 15);
        assert_eq!(VmxBasic(0).memory_type_kind(), MemoryType::Uncacheable);
        assert_eq!(
            VmxBasic(5 << 50).memory_type_kind(),
            MemoryType::Reserved(5)
        );
        assert!(VmxBasic(1 << 54).ins_outs_info());
        assert!(VmxBasic(1 << 55).true_ctls());
        assert!(VmxBasic(1 << 56).no_hw_error_code_cc());
        assert!(VmxBasic(1 << 58).nested_exception());
        assert_eq!(VmxBasic(!0).unknown_bits(), 0xFA00_E000_8000_0000);
        for v in [0u8, 6, 3, 15] {
            assert_eq!(MemoryType::from_raw(v).raw(), v);
        }
    }
}
