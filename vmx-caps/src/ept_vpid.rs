// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! IA32_VMX_EPT_VPID_CAP (0x48C): SDM A.10, Linux `VMX_EPT_*` / `VMX_VPID_*`.
//!
//! Linux reads the MSR as two dwords (`vmx_cap->ept`, `vmx_cap->vpid`); the constants
//! here are 64-bit positions, [`EptVpidCap::ept_raw`] / [`EptVpidCap::vpid_raw`] give the
//! halves.

/// Bit 0: execute-only EPT translations (`VMX_EPT_EXECUTE_ONLY_BIT`).
pub const VMX_EPT_EXECUTE_ONLY_BIT: u64 = 1 << 0;
/// Bit 6: page-walk length 4 (`VMX_EPT_PAGE_WALK_4_BIT`).
pub const VMX_EPT_PAGE_WALK_4_BIT: u64 = 1 << 6;
/// Bit 7: page-walk length 5 (`VMX_EPT_PAGE_WALK_5_BIT`).
pub const VMX_EPT_PAGE_WALK_5_BIT: u64 = 1 << 7;
/// Bit 8: EPT paging-structure memory type UC (`VMX_EPTP_UC_BIT`).
pub const VMX_EPTP_UC_BIT: u64 = 1 << 8;
/// Bit 14: EPT paging-structure memory type WB (`VMX_EPTP_WB_BIT`).
pub const VMX_EPTP_WB_BIT: u64 = 1 << 14;
/// Bit 16: 2 MiB EPT pages (`VMX_EPT_2MB_PAGE_BIT`).
pub const VMX_EPT_2MB_PAGE_BIT: u64 = 1 << 16;
/// Bit 17: 1 GiB EPT pages (`VMX_EPT_1GB_PAGE_BIT`).
pub const VMX_EPT_1GB_PAGE_BIT: u64 = 1 << 17;
/// Bit 20: INVEPT supported (`VMX_EPT_INVEPT_BIT`).
pub const VMX_EPT_INVEPT_BIT: u64 = 1 << 20;
/// Bit 21: EPT accessed and dirty flags (`VMX_EPT_AD_BIT`).
pub const VMX_EPT_AD_BIT: u64 = 1 << 21;
/// Bit 22: advanced VM-exit information for EPT violations.
pub const VMX_EPT_ADVANCED_EXIT_INFO_BIT: u64 = 1 << 22;
/// Bit 23: supervisor shadow-stack control in EPTP (CET).
pub const VMX_EPT_SUPERVISOR_SHADOW_STACK_BIT: u64 = 1 << 23;
/// Bit 25: single-context INVEPT (`VMX_EPT_EXTENT_CONTEXT_BIT`).
pub const VMX_EPT_EXTENT_CONTEXT_BIT: u64 = 1 << 25;
/// Bit 26: all-context INVEPT (`VMX_EPT_EXTENT_GLOBAL_BIT`).
pub const VMX_EPT_EXTENT_GLOBAL_BIT: u64 = 1 << 26;
/// Bit 32: INVVPID supported (`VMX_VPID_INVVPID_BIT`, bit 0 of the VPID dword).
pub const VMX_VPID_INVVPID_BIT: u64 = 1 << 32;
/// Bit 40: individual-address INVVPID (`VMX_VPID_EXTENT_INDIVIDUAL_ADDR_BIT`).
pub const VMX_VPID_EXTENT_INDIVIDUAL_ADDR_BIT: u64 = 1 << 40;
/// Bit 41: single-context INVVPID (`VMX_VPID_EXTENT_SINGLE_CONTEXT_BIT`).
pub const VMX_VPID_EXTENT_SINGLE_CONTEXT_BIT: u64 = 1 << 41;
/// Bit 42: all-context INVVPID (`VMX_VPID_EXTENT_GLOBAL_CONTEXT_BIT`).
pub const VMX_VPID_EXTENT_GLOBAL_CONTEXT_BIT: u64 = 1 << 42;
/// Bit 43: single-context-retaining-globals INVVPID
/// (`VMX_VPID_EXTENT_SINGLE_NON_GLOBAL_BIT`).
pub const VMX_VPID_EXTENT_SINGLE_NON_GLOBAL_BIT: u64 = 1 << 43;
/// Bits 53:48: maximum HLAT prefix size.
pub const HLAT_PREFIX_SIZE_MASK: u64 = 0x3F << 48;

/// EPT capability bits (low dword) this crate knows.
pub const EPT_KNOWN_BITS: u64 = VMX_EPT_EXECUTE_ONLY_BIT
    | VMX_EPT_PAGE_WALK_4_BIT
    | VMX_EPT_PAGE_WALK_5_BIT
    | VMX_EPTP_UC_BIT
    | VMX_EPTP_WB_BIT
    | VMX_EPT_2MB_PAGE_BIT
    | VMX_EPT_1GB_PAGE_BIT
    | VMX_EPT_INVEPT_BIT
    | VMX_EPT_AD_BIT
    | VMX_EPT_ADVANCED_EXIT_INFO_BIT
    | VMX_EPT_SUPERVISOR_SHADOW_STACK_BIT
    | VMX_EPT_EXTENT_CONTEXT_BIT
    | VMX_EPT_EXTENT_GLOBAL_BIT;

/// VPID capability bits (high dword) and fields this crate knows.
pub const VPID_KNOWN_BITS: u64 = VMX_VPID_INVVPID_BIT
    | VMX_VPID_EXTENT_INDIVIDUAL_ADDR_BIT
    | VMX_VPID_EXTENT_SINGLE_CONTEXT_BIT
    | VMX_VPID_EXTENT_GLOBAL_CONTEXT_BIT
    | VMX_VPID_EXTENT_SINGLE_NON_GLOBAL_BIT
    | HLAT_PREFIX_SIZE_MASK;

/// Every bit this crate knows a meaning for.
pub const KNOWN_BITS: u64 = EPT_KNOWN_BITS | VPID_KNOWN_BITS;

/// IA32_VMX_EPT_VPID_CAP (0x48C), raw value kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EptVpidCap(pub u64);

macro_rules! flag {
    ($(#[$m:meta])* $name:ident, $bit:expr) => {
        $(#[$m])*
        pub const fn $name(self) -> bool {
            self.0 & $bit != 0
        }
    };
}

impl EptVpidCap {
    /// The raw MSR value.
    pub const fn raw(self) -> u64 {
        self.0
    }
    /// Low dword: EPT capabilities (Linux `vmx_cap->ept`).
    pub const fn ept_raw(self) -> u32 {
        self.0 as u32
    }
    /// High dword: VPID capabilities (Linux `vmx_cap->vpid`).
    pub const fn vpid_raw(self) -> u32 {
        (self.0 >> 32) as u32
    }
    /// Whether any EPT capability is reported.
    pub const fn has_ept(self) -> bool {
        self.ept_raw() != 0
    }
    /// Whether any VPID capability is reported.
    pub const fn has_vpid(self) -> bool {
        self.vpid_raw() != 0
    }
    flag!(/// Bit 0: execute-only EPT translations.
        execute_only, VMX_EPT_EXECUTE_ONLY_BIT);
    flag!(/// Bit 6: page-walk length 4.
        page_walk_4, VMX_EPT_PAGE_WALK_4_BIT);
    flag!(/// Bit 7: page-walk length 5.
        page_walk_5, VMX_EPT_PAGE_WALK_5_BIT);
    flag!(/// Bit 8: EPT paging-structure memory type UC.
        eptp_uc, VMX_EPTP_UC_BIT);
    flag!(/// Bit 14: EPT paging-structure memory type WB.
        eptp_wb, VMX_EPTP_WB_BIT);
    flag!(/// Bit 16: 2 MiB EPT pages.
        ept_2mb_page, VMX_EPT_2MB_PAGE_BIT);
    flag!(/// Bit 17: 1 GiB EPT pages.
        ept_1gb_page, VMX_EPT_1GB_PAGE_BIT);
    flag!(/// Bit 20: INVEPT supported.
        invept, VMX_EPT_INVEPT_BIT);
    flag!(/// Bit 21: EPT accessed and dirty flags.
        ept_ad, VMX_EPT_AD_BIT);
    flag!(/// Bit 22: advanced VM-exit information for EPT violations.
        advanced_exit_info, VMX_EPT_ADVANCED_EXIT_INFO_BIT);
    flag!(/// Bit 23: supervisor shadow-stack control (CET).
        supervisor_shadow_stack, VMX_EPT_SUPERVISOR_SHADOW_STACK_BIT);
    flag!(/// Bit 25: single-context INVEPT.
        invept_single_context, VMX_EPT_EXTENT_CONTEXT_BIT);
    flag!(/// Bit 26: all-context INVEPT.
        invept_all_context, VMX_EPT_EXTENT_GLOBAL_BIT);
    flag!(/// Bit 32: INVVPID supported.
        invvpid, VMX_VPID_INVVPID_BIT);
    flag!(/// Bit 40: individual-address INVVPID.
        invvpid_individual_addr, VMX_VPID_EXTENT_INDIVIDUAL_ADDR_BIT);
    flag!(/// Bit 41: single-context INVVPID.
        invvpid_single_context, VMX_VPID_EXTENT_SINGLE_CONTEXT_BIT);
    flag!(/// Bit 42: all-context INVVPID.
        invvpid_all_context, VMX_VPID_EXTENT_GLOBAL_CONTEXT_BIT);
    flag!(/// Bit 43: single-context-retaining-globals INVVPID.
        invvpid_single_non_global, VMX_VPID_EXTENT_SINGLE_NON_GLOBAL_BIT);

    /// Bits 53:48: maximum HLAT prefix size.
    pub const fn hlat_prefix_size(self) -> u8 {
        ((self.0 & HLAT_PREFIX_SIZE_MASK) >> 48) as u8
    }

    /// Set bits with no known meaning.
    pub const fn unknown_bits(self) -> u64 {
        self.0 & !KNOWN_BITS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_tiger_lake() {
        let c = EptVpidCap(0x0000_0F01_06F3_4141);
        assert_eq!(c.raw(), 0x0000_0F01_06F3_4141);
        assert_eq!(c.ept_raw(), 0x06F3_4141);
        assert_eq!(c.vpid_raw(), 0x0F01);
        assert!(c.has_ept() && c.has_vpid());
        assert!(c.execute_only());
        assert!(c.page_walk_4());
        assert!(!c.page_walk_5());
        assert!(c.eptp_uc());
        assert!(c.eptp_wb());
        assert!(c.ept_2mb_page());
        assert!(c.ept_1gb_page());
        assert!(c.invept());
        assert!(c.ept_ad());
        assert!(c.advanced_exit_info());
        assert!(c.supervisor_shadow_stack());
        assert!(c.invept_single_context());
        assert!(c.invept_all_context());
        assert!(c.invvpid());
        assert!(c.invvpid_individual_addr());
        assert!(c.invvpid_single_context());
        assert!(c.invvpid_all_context());
        assert!(c.invvpid_single_non_global());
        assert_eq!(c.hlat_prefix_size(), 0);
        assert_eq!(c.unknown_bits(), 0);
    }

    #[test]
    fn broadwell_lacks_advanced_exit_info() {
        let c = EptVpidCap(0x0000_0F01_0633_4141);
        assert!(!c.advanced_exit_info());
        assert!(!c.supervisor_shadow_stack());
    }

    #[test]
    fn each_field_in_isolation() {
        assert_eq!(EptVpidCap(0x3F << 48).hlat_prefix_size(), 63);
        assert_eq!(EptVpidCap(1 << 1).unknown_bits(), 1 << 1);
        assert_eq!(EptVpidCap(1 << 63).unknown_bits(), 1 << 63);
        assert_eq!(EptVpidCap(1 << 24).unknown_bits(), 1 << 24);
        let all = EptVpidCap(!0);
        assert_eq!(all.unknown_bits(), !KNOWN_BITS);
        assert!(!EptVpidCap(0).has_ept());
        assert!(EptVpidCap(1 << 32).invvpid());
        assert!(!EptVpidCap(1 << 32).has_ept());
    }
}
