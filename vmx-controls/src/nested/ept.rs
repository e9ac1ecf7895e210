// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! IA32_VMX_EPT_VPID_CAP bits the nested model uses (64-bit positions; Linux
//! `VMX_EPT_*` in `asm/vmx.h`, `VMX_VPID_*` shifted by 32) and their names.

/// Bit 0: execute-only translations (`VMX_EPT_EXECUTE_ONLY_BIT`).
pub const EPT_EXECUTE_ONLY: u64 = 1 << 0;
/// Bit 6: page-walk length 4 (`VMX_EPT_PAGE_WALK_4_BIT`).
pub const EPT_PAGE_WALK_4: u64 = 1 << 6;
/// Bit 7: page-walk length 5 (`VMX_EPT_PAGE_WALK_5_BIT`).
pub const EPT_PAGE_WALK_5: u64 = 1 << 7;
/// Bit 14: write-back paging structures (`VMX_EPTP_WB_BIT`).
pub const EPTP_WB: u64 = 1 << 14;
/// Bit 16: 2 MiB pages (`VMX_EPT_2MB_PAGE_BIT`).
pub const EPT_2MB_PAGE: u64 = 1 << 16;
/// Bit 17: 1 GiB pages (`VMX_EPT_1GB_PAGE_BIT`).
pub const EPT_1GB_PAGE: u64 = 1 << 17;
/// Bit 20: INVEPT (`VMX_EPT_INVEPT_BIT`).
pub const EPT_INVEPT: u64 = 1 << 20;
/// Bit 21: accessed/dirty flags (`VMX_EPT_AD_BIT`).
pub const EPT_AD: u64 = 1 << 21;
/// Bit 25: single-context INVEPT (`VMX_EPT_EXTENT_CONTEXT_BIT`).
pub const EPT_EXTENT_CONTEXT: u64 = 1 << 25;
/// Bit 26: all-context INVEPT (`VMX_EPT_EXTENT_GLOBAL_BIT`).
pub const EPT_EXTENT_GLOBAL: u64 = 1 << 26;
/// Bit 32: INVVPID (`VMX_VPID_INVVPID_BIT`).
pub const VPID_INVVPID: u64 = 1 << 32;
/// Bit 40: individual-address INVVPID.
pub const VPID_EXTENT_INDIVIDUAL_ADDR: u64 = 1 << 40;
/// Bit 41: single-context INVVPID.
pub const VPID_EXTENT_SINGLE: u64 = 1 << 41;
/// Bit 42: all-context INVVPID.
pub const VPID_EXTENT_GLOBAL: u64 = 1 << 42;
/// Bit 43: single-context-retaining-globals INVVPID.
pub const VPID_EXTENT_SINGLE_NON_GLOBAL: u64 = 1 << 43;
/// Linux `VMX_VPID_EXTENT_SUPPORTED_MASK` (nested.c: "Hyper-V requires all of these").
pub const VPID_EXTENT_SUPPORTED_MASK: u64 = VPID_EXTENT_INDIVIDUAL_ADDR
    | VPID_EXTENT_SINGLE
    | VPID_EXTENT_GLOBAL
    | VPID_EXTENT_SINGLE_NON_GLOBAL;

/// Name of an EPT/VPID capability bit, as QEMU's vmxcap labels it.
pub fn cap_name(bit: u32) -> Option<&'static str> {
    Some(match bit {
        0 => "Execute-only EPT translations",
        6 => "Page-walk length 4",
        7 => "Page-walk length 5",
        8 => "Paging-structure memory type UC",
        14 => "Paging-structure memory type WB",
        16 => "2MB EPT pages",
        17 => "1GB EPT pages",
        20 => "INVEPT supported",
        21 => "EPT accessed and dirty flags",
        22 => "Advanced VM-exit information for EPT violations",
        23 => "Supervisor shadow-stack control",
        25 => "Single-context INVEPT",
        26 => "All-context INVEPT",
        32 => "INVVPID supported",
        40 => "Individual-address INVVPID",
        41 => "Single-context INVVPID",
        42 => "All-context INVVPID",
        43 => "Single-context-retaining-globals INVVPID",
        _ => return None,
    })
}
