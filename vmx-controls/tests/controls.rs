// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Control-bit types: names and positions from the reference, unknown bits kept and
//! listed, field metadata.

use vmx_controls::*;

#[test]
fn bit_positions_match_linux() {
    assert_eq!(PinBasedControls::POSTED_INTR.bits(), 0x80);
    assert_eq!(PrimaryControls::ACTIVATE_TERTIARY_CONTROLS.bits(), 1 << 17);
    assert_eq!(
        PrimaryControls::ACTIVATE_SECONDARY_CONTROLS.bits(),
        0x8000_0000
    );
    assert_eq!(SecondaryControls::ENABLE_EPT.bits(), 0x2);
    assert_eq!(SecondaryControls::NOTIFY_VM_EXITING.bits(), 0x8000_0000);
    assert_eq!(SecondaryControls::BUS_LOCK_DETECTION.bits(), 0x4000_0000);
    assert_eq!(TertiaryControls::IPI_VIRT.bits(), 0x10);
    assert_eq!(ExitControls::LOAD_CET_STATE.bits(), 0x1000_0000);
    assert_eq!(
        ExitControls::ACTIVATE_SECONDARY_CONTROLS.bits(),
        0x8000_0000
    );
    assert_eq!(SecondaryExitControls::LOAD_IA32_FRED.bits(), 0x2);
    assert_eq!(EntryControls::LOAD_CET_STATE.bits(), 0x0010_0000);
    assert_eq!(EntryControls::LOAD_IA32_FRED.bits(), 0x0080_0000);
    // Named bits per field, as counted in the reference tables.
    assert_eq!(PinBasedControls::all().iter().count(), 5);
    assert_eq!(PrimaryControls::all().iter().count(), 22);
    assert_eq!(SecondaryControls::all().iter().count(), 31);
    assert_eq!(TertiaryControls::all().iter().count(), 8);
    assert_eq!(ExitControls::all().iter().count(), 18);
    assert_eq!(SecondaryExitControls::all().iter().count(), 4);
    assert_eq!(EntryControls::all().iter().count(), 16);
}

#[test]
fn default1_masks_match_vmx_caps() {
    use vmx_caps::control::*;
    assert_eq!(
        PinBasedControls::DEFAULT1.bits(),
        PIN_BASED_ALWAYSON_WITHOUT_TRUE_MSR
    );
    assert_eq!(
        PrimaryControls::DEFAULT1.bits(),
        CPU_BASED_ALWAYSON_WITHOUT_TRUE_MSR
    );
    assert_eq!(
        ExitControls::DEFAULT1.bits(),
        VM_EXIT_ALWAYSON_WITHOUT_TRUE_MSR
    );
    assert_eq!(
        EntryControls::DEFAULT1.bits(),
        VM_ENTRY_ALWAYSON_WITHOUT_TRUE_MSR
    );
    // Default1 bits that are also named controls.
    assert!(PrimaryControls::DEFAULT1.contains(PrimaryControls::CR3_LOAD_EXITING));
    assert!(ExitControls::DEFAULT1.contains(ExitControls::SAVE_DEBUG_CONTROLS));
    assert!(EntryControls::DEFAULT1.contains(EntryControls::LOAD_DEBUG_CONTROLS));
}

#[test]
fn unknown_bits_are_kept_and_listed() {
    // Ice Lake-U allows secondary bit 29 (meaning unknown).
    let s = SecondaryControls::from_bits_retain(0x335F_BFFF);
    assert_eq!(s.raw(), 0x335F_BFFF);
    assert_eq!(s.unknown().bits(), 1 << 29);
    assert_eq!(s.unknown_bit_numbers(), vec![29]);
    assert!(s.to_string().ends_with("| 0x20000000"), "{s}");

    // Default1 bits are reserved, not unknown; reserved-0 bits are unknown.
    let p = PrimaryControls::from_bits_retain(0xfff9_fffe | 1 | (1 << 18));
    assert_eq!(p.unknown_bit_numbers(), vec![0, 18]);
    let pin = PinBasedControls::from_bits_retain(0x16 | (1 << 20));
    assert_eq!(pin.unknown_bit_numbers(), vec![20]);
    let t = TertiaryControls::from_bits_retain((1 << 63) | (1 << 5) | 0x10);
    assert_eq!(t.unknown_bit_numbers(), vec![5, 63]);
    assert_eq!(ControlBits::unknown_u64(t), (1 << 63) | (1 << 5));
}

#[test]
fn names_and_description() {
    let x = ExitControls::from_bits_retain(0x137f_ffff);
    let names = ControlBits::names(x);
    assert_eq!(names.first(), Some(&"SAVE_DEBUG_CONTROLS"));
    assert_eq!(names.last(), Some(&"LOAD_CET_STATE"));
    assert!(!names.contains(&"CLEAR_BNDCFGS"));
    assert_eq!(PinBasedControls::empty().to_string(), "0");
    assert_eq!(
        PinBasedControls::from_bits_retain(0x9).to_string(),
        "EXT_INTR_MASK | NMI_EXITING"
    );
    assert_eq!(EntryControls::bit_name(20), Some("LOAD_CET_STATE"));
    assert_eq!(EntryControls::bit_name(0), None);
    assert_eq!(EntryControls::bit_name(40), None);
    assert_eq!(TertiaryControls::bit_name(4), Some("IPI_VIRT"));
    assert_eq!(
        ControlField::Secondary.describe_bits(0x3),
        "VIRTUALIZE_APIC_ACCESSES | ENABLE_EPT"
    );
    // 32-bit fields drop bits 63:32 of a wide raw value.
    assert_eq!(
        <PinBasedControls as ControlBits>::from_raw_u64(0x1_0000_0001).raw(),
        1
    );
}

#[test]
fn field_metadata() {
    let keys: Vec<_> = ControlField::ALL.iter().map(|f| f.json_key()).collect();
    assert_eq!(
        keys,
        [
            "pin_based",
            "primary",
            "secondary",
            "tertiary",
            "exit",
            "secondary_exit",
            "entry"
        ]
    );
    assert_eq!(ControlField::Exit.capability_msr(), 0x483);
    assert_eq!(ControlField::Exit.true_capability_msr(), Some(0x48F));
    assert_eq!(ControlField::Secondary.true_capability_msr(), None);
    assert_eq!(ControlField::Tertiary.vmcs_encoding(), 0x2034);
    assert_eq!(ControlField::SecondaryExit.vmcs_encoding(), 0x2044);
    assert_eq!(ControlField::Entry.hex(0x11ff), "0x000011ff");
    assert_eq!(ControlField::Tertiary.hex(0x10), "0x0000000000000010");
    assert_eq!(ControlField::PinBased.to_string(), "pin-based controls");
}

#[test]
fn raw_round_trip_property() {
    arbtest::arbtest(|u| {
        let v: u32 = u.arbitrary()?;
        let s = SecondaryControls::from_bits_retain(v);
        assert_eq!(s.raw(), v);
        // Named | unknown | default1 partition the value.
        let named = s & SecondaryControls::all();
        assert_eq!(named.bits() | s.unknown().bits(), v);
        let e = EntryControls::from_bits_retain(v);
        assert_eq!(
            (e & EntryControls::all()).bits()
                | e.unknown().bits()
                | (v & EntryControls::DEFAULT1.bits()),
            v
        );
        let w: u64 = u.arbitrary()?;
        assert_eq!(TertiaryControls::from_bits_retain(w).raw(), w);
        Ok(())
    });
}

/// Every named bit of reference §2, as (bit, Linux macro name or `None`, this crate's
/// flag name). Where Linux has a name the flag is that name minus the field prefix;
/// where it has none the flag carries the QEMU / Bochs name the reference gives.
type BitTable = &'static [(u32, Option<&'static str>, &'static str)];

const PIN: BitTable = &[
    (0, Some("PIN_BASED_EXT_INTR_MASK"), "EXT_INTR_MASK"),
    (3, Some("PIN_BASED_NMI_EXITING"), "NMI_EXITING"),
    (5, Some("PIN_BASED_VIRTUAL_NMIS"), "VIRTUAL_NMIS"),
    (
        6,
        Some("PIN_BASED_VMX_PREEMPTION_TIMER"),
        "VMX_PREEMPTION_TIMER",
    ),
    (7, Some("PIN_BASED_POSTED_INTR"), "POSTED_INTR"),
];

const PRIMARY: BitTable = &[
    (
        2,
        Some("CPU_BASED_INTR_WINDOW_EXITING"),
        "INTR_WINDOW_EXITING",
    ),
    (
        3,
        Some("CPU_BASED_USE_TSC_OFFSETTING"),
        "USE_TSC_OFFSETTING",
    ),
    (7, Some("CPU_BASED_HLT_EXITING"), "HLT_EXITING"),
    (9, Some("CPU_BASED_INVLPG_EXITING"), "INVLPG_EXITING"),
    (10, Some("CPU_BASED_MWAIT_EXITING"), "MWAIT_EXITING"),
    (11, Some("CPU_BASED_RDPMC_EXITING"), "RDPMC_EXITING"),
    (12, Some("CPU_BASED_RDTSC_EXITING"), "RDTSC_EXITING"),
    (15, Some("CPU_BASED_CR3_LOAD_EXITING"), "CR3_LOAD_EXITING"),
    (16, Some("CPU_BASED_CR3_STORE_EXITING"), "CR3_STORE_EXITING"),
    (
        17,
        Some("CPU_BASED_ACTIVATE_TERTIARY_CONTROLS"),
        "ACTIVATE_TERTIARY_CONTROLS",
    ),
    (19, Some("CPU_BASED_CR8_LOAD_EXITING"), "CR8_LOAD_EXITING"),
    (20, Some("CPU_BASED_CR8_STORE_EXITING"), "CR8_STORE_EXITING"),
    (21, Some("CPU_BASED_TPR_SHADOW"), "TPR_SHADOW"),
    (
        22,
        Some("CPU_BASED_NMI_WINDOW_EXITING"),
        "NMI_WINDOW_EXITING",
    ),
    (23, Some("CPU_BASED_MOV_DR_EXITING"), "MOV_DR_EXITING"),
    (24, Some("CPU_BASED_UNCOND_IO_EXITING"), "UNCOND_IO_EXITING"),
    (25, Some("CPU_BASED_USE_IO_BITMAPS"), "USE_IO_BITMAPS"),
    (27, Some("CPU_BASED_MONITOR_TRAP_FLAG"), "MONITOR_TRAP_FLAG"),
    (28, Some("CPU_BASED_USE_MSR_BITMAPS"), "USE_MSR_BITMAPS"),
    (29, Some("CPU_BASED_MONITOR_EXITING"), "MONITOR_EXITING"),
    (30, Some("CPU_BASED_PAUSE_EXITING"), "PAUSE_EXITING"),
    (
        31,
        Some("CPU_BASED_ACTIVATE_SECONDARY_CONTROLS"),
        "ACTIVATE_SECONDARY_CONTROLS",
    ),
];

const SECONDARY: BitTable = &[
    (
        0,
        Some("SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES"),
        "VIRTUALIZE_APIC_ACCESSES",
    ),
    (1, Some("SECONDARY_EXEC_ENABLE_EPT"), "ENABLE_EPT"),
    (2, Some("SECONDARY_EXEC_DESC"), "DESC"),
    (3, Some("SECONDARY_EXEC_ENABLE_RDTSCP"), "ENABLE_RDTSCP"),
    (
        4,
        Some("SECONDARY_EXEC_VIRTUALIZE_X2APIC_MODE"),
        "VIRTUALIZE_X2APIC_MODE",
    ),
    (5, Some("SECONDARY_EXEC_ENABLE_VPID"), "ENABLE_VPID"),
    (6, Some("SECONDARY_EXEC_WBINVD_EXITING"), "WBINVD_EXITING"),
    (
        7,
        Some("SECONDARY_EXEC_UNRESTRICTED_GUEST"),
        "UNRESTRICTED_GUEST",
    ),
    (
        8,
        Some("SECONDARY_EXEC_APIC_REGISTER_VIRT"),
        "APIC_REGISTER_VIRT",
    ),
    (
        9,
        Some("SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY"),
        "VIRTUAL_INTR_DELIVERY",
    ),
    (
        10,
        Some("SECONDARY_EXEC_PAUSE_LOOP_EXITING"),
        "PAUSE_LOOP_EXITING",
    ),
    (11, Some("SECONDARY_EXEC_RDRAND_EXITING"), "RDRAND_EXITING"),
    (12, Some("SECONDARY_EXEC_ENABLE_INVPCID"), "ENABLE_INVPCID"),
    (13, Some("SECONDARY_EXEC_ENABLE_VMFUNC"), "ENABLE_VMFUNC"),
    (14, Some("SECONDARY_EXEC_SHADOW_VMCS"), "SHADOW_VMCS"),
    (15, Some("SECONDARY_EXEC_ENCLS_EXITING"), "ENCLS_EXITING"),
    (16, Some("SECONDARY_EXEC_RDSEED_EXITING"), "RDSEED_EXITING"),
    (17, Some("SECONDARY_EXEC_ENABLE_PML"), "ENABLE_PML"),
    (
        18,
        Some("SECONDARY_EXEC_EPT_VIOLATION_VE"),
        "EPT_VIOLATION_VE",
    ),
    (19, Some("SECONDARY_EXEC_PT_CONCEAL_VMX"), "PT_CONCEAL_VMX"),
    (20, Some("SECONDARY_EXEC_ENABLE_XSAVES"), "ENABLE_XSAVES"),
    (21, None, "PASID_TRANSLATION"),
    (
        22,
        Some("SECONDARY_EXEC_MODE_BASED_EPT_EXEC"),
        "MODE_BASED_EPT_EXEC",
    ),
    (23, None, "ENABLE_SPP"),
    (24, Some("SECONDARY_EXEC_PT_USE_GPA"), "PT_USE_GPA"),
    (25, Some("SECONDARY_EXEC_TSC_SCALING"), "TSC_SCALING"),
    (
        26,
        Some("SECONDARY_EXEC_ENABLE_USR_WAIT_PAUSE"),
        "ENABLE_USR_WAIT_PAUSE",
    ),
    (27, None, "ENABLE_PCONFIG"),
    // vmxfeatures.h `VMX_FEATURE_ENCLV_EXITING`; vmx.h has no SECONDARY_EXEC_ macro.
    (28, None, "ENCLV_EXITING"),
    (
        30,
        Some("SECONDARY_EXEC_BUS_LOCK_DETECTION"),
        "BUS_LOCK_DETECTION",
    ),
    (
        31,
        Some("SECONDARY_EXEC_NOTIFY_VM_EXITING"),
        "NOTIFY_VM_EXITING",
    ),
];

const TERTIARY: BitTable = &[
    (0, None, "LOADIWKEY_EXITING"),
    (1, None, "ENABLE_HLAT"),
    (2, None, "EPT_PAGING_WRITE"),
    (3, None, "GUEST_PAGING_VERIFY"),
    (4, Some("TERTIARY_EXEC_IPI_VIRT"), "IPI_VIRT"),
    (6, None, "ENABLE_MSRLIST"),
    (7, None, "SPEC_CTRL_SHADOW"),
    (8, None, "APIC_TIMER_VIRT"),
];

const EXIT: BitTable = &[
    (
        2,
        Some("VM_EXIT_SAVE_DEBUG_CONTROLS"),
        "SAVE_DEBUG_CONTROLS",
    ),
    (
        9,
        Some("VM_EXIT_HOST_ADDR_SPACE_SIZE"),
        "HOST_ADDR_SPACE_SIZE",
    ),
    (
        12,
        Some("VM_EXIT_LOAD_IA32_PERF_GLOBAL_CTRL"),
        "LOAD_IA32_PERF_GLOBAL_CTRL",
    ),
    (15, Some("VM_EXIT_ACK_INTR_ON_EXIT"), "ACK_INTR_ON_EXIT"),
    (18, Some("VM_EXIT_SAVE_IA32_PAT"), "SAVE_IA32_PAT"),
    (19, Some("VM_EXIT_LOAD_IA32_PAT"), "LOAD_IA32_PAT"),
    (20, Some("VM_EXIT_SAVE_IA32_EFER"), "SAVE_IA32_EFER"),
    (21, Some("VM_EXIT_LOAD_IA32_EFER"), "LOAD_IA32_EFER"),
    (
        22,
        Some("VM_EXIT_SAVE_VMX_PREEMPTION_TIMER"),
        "SAVE_VMX_PREEMPTION_TIMER",
    ),
    (23, Some("VM_EXIT_CLEAR_BNDCFGS"), "CLEAR_BNDCFGS"),
    (24, Some("VM_EXIT_PT_CONCEAL_PIP"), "PT_CONCEAL_PIP"),
    (
        25,
        Some("VM_EXIT_CLEAR_IA32_RTIT_CTL"),
        "CLEAR_IA32_RTIT_CTL",
    ),
    // Arch-LBR patch series.
    (26, Some("VM_EXIT_CLEAR_IA32_LBR_CTL"), "CLEAR_IA32_LBR_CTL"),
    (27, None, "CLEAR_UINV"),
    (28, Some("VM_EXIT_LOAD_CET_STATE"), "LOAD_CET_STATE"),
    (29, None, "LOAD_IA32_PKRS"),
    // Mediated-PMU patch series.
    (
        30,
        Some("VM_EXIT_SAVE_IA32_PERF_GLOBAL_CTRL"),
        "SAVE_IA32_PERF_GLOBAL_CTRL",
    ),
    (
        31,
        Some("VM_EXIT_ACTIVATE_SECONDARY_CONTROLS"),
        "ACTIVATE_SECONDARY_CONTROLS",
    ),
];

const SECONDARY_EXIT: BitTable = &[
    (
        0,
        Some("SECONDARY_VM_EXIT_SAVE_IA32_FRED"),
        "SAVE_IA32_FRED",
    ),
    (
        1,
        Some("SECONDARY_VM_EXIT_LOAD_IA32_FRED"),
        "LOAD_IA32_FRED",
    ),
    (2, None, "LOAD_IA32_SPEC_CTRL"),
    (3, None, "PREMATURELY_BUSY_SHSTK"),
];

const ENTRY: BitTable = &[
    (
        2,
        Some("VM_ENTRY_LOAD_DEBUG_CONTROLS"),
        "LOAD_DEBUG_CONTROLS",
    ),
    (9, Some("VM_ENTRY_IA32E_MODE"), "IA32E_MODE"),
    (10, Some("VM_ENTRY_SMM"), "SMM"),
    (
        11,
        Some("VM_ENTRY_DEACT_DUAL_MONITOR"),
        "DEACT_DUAL_MONITOR",
    ),
    (
        13,
        Some("VM_ENTRY_LOAD_IA32_PERF_GLOBAL_CTRL"),
        "LOAD_IA32_PERF_GLOBAL_CTRL",
    ),
    (14, Some("VM_ENTRY_LOAD_IA32_PAT"), "LOAD_IA32_PAT"),
    (15, Some("VM_ENTRY_LOAD_IA32_EFER"), "LOAD_IA32_EFER"),
    (16, Some("VM_ENTRY_LOAD_BNDCFGS"), "LOAD_BNDCFGS"),
    (17, Some("VM_ENTRY_PT_CONCEAL_PIP"), "PT_CONCEAL_PIP"),
    (
        18,
        Some("VM_ENTRY_LOAD_IA32_RTIT_CTL"),
        "LOAD_IA32_RTIT_CTL",
    ),
    (19, None, "LOAD_UINV"),
    (20, Some("VM_ENTRY_LOAD_CET_STATE"), "LOAD_CET_STATE"),
    // Arch-LBR patch series.
    (21, Some("VM_ENTRY_LOAD_IA32_LBR_CTL"), "LOAD_IA32_LBR_CTL"),
    (22, None, "LOAD_IA32_PKRS"),
    (23, Some("VM_ENTRY_LOAD_IA32_FRED"), "LOAD_IA32_FRED"),
    (24, None, "LOAD_IA32_SPEC_CTRL"),
];

/// Check one field against its table: every row's bit carries the expected name (the
/// Linux macro minus `prefix` where Linux names it), no other bit is named, and the
/// `Flags` iteration yields the rows in bit order.
fn check_table<T: bitflags::Flags>(
    table: BitTable,
    prefix: &str,
    bit_name: fn(u32) -> Option<&'static str>,
    width: u32,
) where
    T::Bits: Into<u64>,
{
    for &(bit, linux, name) in table {
        assert_eq!(bit_name(bit), Some(name), "{prefix}: bit {bit}");
        if let Some(linux) = linux {
            assert_eq!(
                linux.strip_prefix(prefix),
                Some(name),
                "{prefix}: bit {bit} is not named after {linux}"
            );
        }
    }
    for bit in 0..width {
        if !table.iter().any(|&(b, _, _)| b == bit) {
            assert_eq!(bit_name(bit), None, "{prefix}: bit {bit} should be unnamed");
        }
    }
    let flags: Vec<(u64, &str)> = T::FLAGS
        .iter()
        .map(|f| (f.value().bits().into(), f.name()))
        .collect();
    let rows: Vec<(u64, &str)> = table.iter().map(|&(b, _, n)| (1u64 << b, n)).collect();
    assert_eq!(flags, rows, "{prefix}: flag table");
}

#[test]
fn every_named_bit_of_the_reference_table() {
    check_table::<PinBasedControls>(PIN, "PIN_BASED_", PinBasedControls::bit_name, 32);
    check_table::<PrimaryControls>(PRIMARY, "CPU_BASED_", PrimaryControls::bit_name, 32);
    check_table::<SecondaryControls>(
        SECONDARY,
        "SECONDARY_EXEC_",
        SecondaryControls::bit_name,
        32,
    );
    check_table::<TertiaryControls>(TERTIARY, "TERTIARY_EXEC_", TertiaryControls::bit_name, 64);
    check_table::<ExitControls>(EXIT, "VM_EXIT_", ExitControls::bit_name, 32);
    check_table::<SecondaryExitControls>(
        SECONDARY_EXIT,
        "SECONDARY_VM_EXIT_",
        SecondaryExitControls::bit_name,
        64,
    );
    check_table::<EntryControls>(ENTRY, "VM_ENTRY_", EntryControls::bit_name, 32);
}

#[test]
fn default1_bits_are_reserved_or_named_as_the_reference_says() {
    // §2: primary 15/16, exit 2 and entry 2 are the only default1 bits with a name.
    assert!((PinBasedControls::DEFAULT1 & PinBasedControls::all()).is_empty());
    assert_eq!(
        PrimaryControls::DEFAULT1 & PrimaryControls::all(),
        PrimaryControls::CR3_LOAD_EXITING | PrimaryControls::CR3_STORE_EXITING
    );
    assert_eq!(
        ExitControls::DEFAULT1 & ExitControls::all(),
        ExitControls::SAVE_DEBUG_CONTROLS
    );
    assert_eq!(
        EntryControls::DEFAULT1 & EntryControls::all(),
        EntryControls::LOAD_DEBUG_CONTROLS
    );
}
