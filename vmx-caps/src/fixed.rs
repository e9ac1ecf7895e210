// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! CR0/CR4 FIXED0/FIXED1 (0x486-0x489), IA32_VMX_VMCS_ENUM (0x48A) and
//! IA32_VMX_VMFUNC (0x491): SDM A.7-A.9, A.11.

/// A pair of CRx FIXED MSRs: bit X of CRx must be 1 in VMX operation if FIXED0 bit X = 1,
/// must be 0 if FIXED1 bit X = 0, and is free otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CrFixed {
    /// IA32_VMX_CRx_FIXED0: bits fixed to 1.
    pub fixed0: u64,
    /// IA32_VMX_CRx_FIXED1: bits allowed to be 1.
    pub fixed1: u64,
}

impl CrFixed {
    /// Bits that must be 1 (FIXED0).
    pub const fn must_be_one(self) -> u64 {
        self.fixed0
    }
    /// Bits that must be 0 (complement of FIXED1).
    pub const fn must_be_zero(self) -> u64 {
        !self.fixed1
    }
    /// Bits that may be either value (FIXED1 and not FIXED0).
    pub const fn flexible(self) -> u64 {
        self.fixed1 & !self.fixed0
    }
    /// Bits fixed to 1 but not allowed to be 1 (non-zero only for malformed MSRs;
    /// FIXED0 ⊆ FIXED1 must hold).
    pub const fn contradictory(self) -> u64 {
        self.fixed0 & !self.fixed1
    }
    /// Whether the control-register value `cr` is valid in VMX operation.
    pub const fn permits(self, cr: u64) -> bool {
        cr & self.fixed0 == self.fixed0 && cr & !self.fixed1 == 0
    }
    /// Forces `cr` into the allowed range: `(cr | fixed0) & fixed1`.
    pub const fn apply(self, cr: u64) -> u64 {
        (cr | self.fixed0) & self.fixed1
    }
}

/// Bits 9:1 of IA32_VMX_VMCS_ENUM: the highest index value used in any VMCS field
/// encoding.
pub const VMCS_FIELD_INDEX_MASK: u64 = 0x3FE;

/// IA32_VMX_VMCS_ENUM (0x48A), raw value kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VmcsEnum(pub u64);

impl VmcsEnum {
    /// The raw MSR value.
    pub const fn raw(self) -> u64 {
        self.0
    }
    /// Bits 9:1: highest VMCS field index (23 on Skylake and later, 21 on Broadwell).
    pub const fn max_index(self) -> u16 {
        ((self.0 & VMCS_FIELD_INDEX_MASK) >> 1) as u16
    }
    /// Set reserved bits (bit 0 and 63:10).
    pub const fn unknown_bits(self) -> u64 {
        self.0 & !VMCS_FIELD_INDEX_MASK
    }
}

/// Bit 0 of IA32_VMX_VMFUNC: EPTP switching (VMFUNC leaf 0).
pub const VMX_VMFUNC_EPTP_SWITCHING: u64 = 1 << 0;

/// IA32_VMX_VMFUNC (0x491): allowed-1 settings of the VM-function controls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VmFunc(pub u64);

impl VmFunc {
    /// The raw MSR value.
    pub const fn raw(self) -> u64 {
        self.0
    }
    /// Bit 0: EPTP switching may be enabled.
    pub const fn eptp_switching(self) -> bool {
        self.0 & VMX_VMFUNC_EPTP_SWITCHING != 0
    }
    /// Set bits with no known meaning (all but bit 0).
    pub const fn unknown_bits(self) -> u64 {
        self.0 & !VMX_VMFUNC_EPTP_SWITCHING
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cr0_fixed_typical() {
        let f = CrFixed {
            fixed0: 0x8000_0021,
            fixed1: 0xFFFF_FFFF,
        };
        assert_eq!(f.must_be_one(), 0x8000_0021);
        assert_eq!(f.must_be_zero(), 0xFFFF_FFFF_0000_0000);
        assert_eq!(f.flexible(), 0x7FFF_FFDE);
        assert_eq!(f.contradictory(), 0);
        assert!(f.permits(0x8000_0031));
        assert!(!f.permits(0x31), "PG clear");
        assert!(!f.permits(1 << 32 | 0x8000_0021), "bit 32 not allowed");
        assert_eq!(f.apply(0x10), 0x8000_0031);
    }

    #[test]
    fn cr_fixed_contradiction() {
        let f = CrFixed {
            fixed0: 0x2001,
            fixed1: 0x2000,
        };
        assert_eq!(f.contradictory(), 1);
    }

    #[test]
    fn vmcs_enum_fields() {
        assert_eq!(VmcsEnum(0x2E).max_index(), 23);
        assert_eq!(VmcsEnum(0x2A).max_index(), 21);
        assert_eq!(VmcsEnum(0x2C).max_index(), 22);
        assert_eq!(VmcsEnum(0x2E).unknown_bits(), 0);
        assert_eq!(VmcsEnum(0x2F).unknown_bits(), 1);
        assert_eq!(VmcsEnum(0x42E).unknown_bits(), 0x400);
        assert_eq!(VmcsEnum(0x3FE).max_index(), 511);
        assert_eq!(VmcsEnum(7).raw(), 7);
    }

    #[test]
    fn vmfunc_fields() {
        assert!(VmFunc(1).eptp_switching());
        assert!(!VmFunc(0).eptp_switching());
        assert_eq!(VmFunc(0x3).unknown_bits(), 0x2);
        assert_eq!(VmFunc(0x3).raw(), 3);
    }
}
