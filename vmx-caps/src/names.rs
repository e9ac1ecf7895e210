// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Names of control bits: the vmxcap label, the Linux (or, where Linux has none, the
//! QEMU/Bochs) name, and whether QEMU's vmxcap prints the bit.

use crate::control::ControlWord;

/// Which version of QEMU's `scripts/kvm/vmxcap` prints a bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Vmxcap {
    /// The script as of QEMU commit 0c49c918 (the golden fixtures' format).
    Original,
    /// Added by the June 2024 FRED patch.
    Fred2024,
    /// Not printed by vmxcap.
    No,
}

/// A named control bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BitName {
    /// Bit position in the control word.
    pub bit: u8,
    /// Human label (vmxcap's wording where vmxcap has the bit).
    pub label: &'static str,
    /// Linux `asm/vmx.h` name. For bits mainline Linux does not name, a Linux-style
    /// name: QEMU's where QEMU has one (`VMX_SECONDARY_EXEC_ENABLE_SPP`,
    /// `VMX_VM_EXIT_LOAD_IA32_PKRS`), otherwise one made from the Bochs/SDM or patch
    /// wording (e.g. `TERTIARY_EXEC_ENABLE_HLAT`); reference vmx.md §2 says where each
    /// meaning comes from.
    pub linux: &'static str,
    /// Whether vmxcap prints it.
    pub vmxcap: Vmxcap,
}

const fn b(bit: u8, label: &'static str, linux: &'static str) -> BitName {
    BitName {
        bit,
        label,
        linux,
        vmxcap: Vmxcap::Original,
    }
}
const fn f(bit: u8, label: &'static str, linux: &'static str) -> BitName {
    BitName {
        bit,
        label,
        linux,
        vmxcap: Vmxcap::Fred2024,
    }
}
const fn n(bit: u8, label: &'static str, linux: &'static str) -> BitName {
    BitName {
        bit,
        label,
        linux,
        vmxcap: Vmxcap::No,
    }
}

/// Pin-based controls.
pub const PIN_BASED: &[BitName] = &[
    b(0, "External interrupt exiting", "PIN_BASED_EXT_INTR_MASK"),
    b(3, "NMI exiting", "PIN_BASED_NMI_EXITING"),
    b(5, "Virtual NMIs", "PIN_BASED_VIRTUAL_NMIS"),
    b(
        6,
        "Activate VMX-preemption timer",
        "PIN_BASED_VMX_PREEMPTION_TIMER",
    ),
    b(7, "Process posted interrupts", "PIN_BASED_POSTED_INTR"),
];

/// Primary processor-based controls.
pub const PRIMARY: &[BitName] = &[
    b(
        2,
        "Interrupt window exiting",
        "CPU_BASED_INTR_WINDOW_EXITING",
    ),
    b(3, "Use TSC offsetting", "CPU_BASED_USE_TSC_OFFSETTING"),
    b(7, "HLT exiting", "CPU_BASED_HLT_EXITING"),
    b(9, "INVLPG exiting", "CPU_BASED_INVLPG_EXITING"),
    b(10, "MWAIT exiting", "CPU_BASED_MWAIT_EXITING"),
    b(11, "RDPMC exiting", "CPU_BASED_RDPMC_EXITING"),
    b(12, "RDTSC exiting", "CPU_BASED_RDTSC_EXITING"),
    b(15, "CR3-load exiting", "CPU_BASED_CR3_LOAD_EXITING"),
    b(16, "CR3-store exiting", "CPU_BASED_CR3_STORE_EXITING"),
    b(
        17,
        "Activate tertiary controls",
        "CPU_BASED_ACTIVATE_TERTIARY_CONTROLS",
    ),
    b(19, "CR8-load exiting", "CPU_BASED_CR8_LOAD_EXITING"),
    b(20, "CR8-store exiting", "CPU_BASED_CR8_STORE_EXITING"),
    b(21, "Use TPR shadow", "CPU_BASED_TPR_SHADOW"),
    b(22, "NMI-window exiting", "CPU_BASED_NMI_WINDOW_EXITING"),
    b(23, "MOV-DR exiting", "CPU_BASED_MOV_DR_EXITING"),
    b(
        24,
        "Unconditional I/O exiting",
        "CPU_BASED_UNCOND_IO_EXITING",
    ),
    b(25, "Use I/O bitmaps", "CPU_BASED_USE_IO_BITMAPS"),
    b(27, "Monitor trap flag", "CPU_BASED_MONITOR_TRAP_FLAG"),
    b(28, "Use MSR bitmaps", "CPU_BASED_USE_MSR_BITMAPS"),
    b(29, "MONITOR exiting", "CPU_BASED_MONITOR_EXITING"),
    b(30, "PAUSE exiting", "CPU_BASED_PAUSE_EXITING"),
    b(
        31,
        "Activate secondary control",
        "CPU_BASED_ACTIVATE_SECONDARY_CONTROLS",
    ),
];

/// Secondary processor-based controls.
pub const SECONDARY: &[BitName] = &[
    b(
        0,
        "Virtualize APIC accesses",
        "SECONDARY_EXEC_VIRTUALIZE_APIC_ACCESSES",
    ),
    b(1, "Enable EPT", "SECONDARY_EXEC_ENABLE_EPT"),
    b(2, "Descriptor-table exiting", "SECONDARY_EXEC_DESC"),
    b(3, "Enable RDTSCP", "SECONDARY_EXEC_ENABLE_RDTSCP"),
    b(
        4,
        "Virtualize x2APIC mode",
        "SECONDARY_EXEC_VIRTUALIZE_X2APIC_MODE",
    ),
    b(5, "Enable VPID", "SECONDARY_EXEC_ENABLE_VPID"),
    b(6, "WBINVD exiting", "SECONDARY_EXEC_WBINVD_EXITING"),
    b(7, "Unrestricted guest", "SECONDARY_EXEC_UNRESTRICTED_GUEST"),
    b(
        8,
        "APIC register emulation",
        "SECONDARY_EXEC_APIC_REGISTER_VIRT",
    ),
    b(
        9,
        "Virtual interrupt delivery",
        "SECONDARY_EXEC_VIRTUAL_INTR_DELIVERY",
    ),
    b(
        10,
        "PAUSE-loop exiting",
        "SECONDARY_EXEC_PAUSE_LOOP_EXITING",
    ),
    b(11, "RDRAND exiting", "SECONDARY_EXEC_RDRAND_EXITING"),
    b(12, "Enable INVPCID", "SECONDARY_EXEC_ENABLE_INVPCID"),
    b(13, "Enable VM functions", "SECONDARY_EXEC_ENABLE_VMFUNC"),
    b(14, "VMCS shadowing", "SECONDARY_EXEC_SHADOW_VMCS"),
    b(15, "Enable ENCLS exiting", "SECONDARY_EXEC_ENCLS_EXITING"),
    b(16, "RDSEED exiting", "SECONDARY_EXEC_RDSEED_EXITING"),
    b(17, "Enable PML", "SECONDARY_EXEC_ENABLE_PML"),
    b(18, "EPT-violation #VE", "SECONDARY_EXEC_EPT_VIOLATION_VE"),
    b(
        19,
        "Conceal non-root operation from PT",
        "SECONDARY_EXEC_PT_CONCEAL_VMX",
    ),
    b(20, "Enable XSAVES/XRSTORS", "SECONDARY_EXEC_ENABLE_XSAVES"),
    n(
        21,
        "PASID translation",
        "VMX_SECONDARY_EXEC_PASID_TRANSLATION",
    ),
    b(
        22,
        "Mode-based execute control (XS/XU)",
        "SECONDARY_EXEC_MODE_BASED_EPT_EXEC",
    ),
    b(
        23,
        "Sub-page write permissions",
        "VMX_SECONDARY_EXEC_ENABLE_SPP",
    ),
    b(24, "GPA translation for PT", "SECONDARY_EXEC_PT_USE_GPA"),
    b(25, "TSC scaling", "SECONDARY_EXEC_TSC_SCALING"),
    b(
        26,
        "User wait and pause",
        "SECONDARY_EXEC_ENABLE_USR_WAIT_PAUSE",
    ),
    n(27, "Enable PCONFIG", "VMX_SECONDARY_EXEC_PCONFIG"),
    b(28, "ENCLV exiting", "VMX_FEATURE_ENCLV_EXITING"),
    n(
        30,
        "Bus-lock detection",
        "SECONDARY_EXEC_BUS_LOCK_DETECTION",
    ),
    n(31, "Notify VM exiting", "SECONDARY_EXEC_NOTIFY_VM_EXITING"),
];

/// Tertiary processor-based controls (64-bit).
pub const TERTIARY: &[BitName] = &[
    n(0, "LOADIWKEY exiting", "TERTIARY_EXEC_LOADIWKEY_EXITING"),
    n(1, "Enable HLAT", "TERTIARY_EXEC_ENABLE_HLAT"),
    n(
        2,
        "EPT paging-write control",
        "TERTIARY_EXEC_EPT_PAGING_WRITE",
    ),
    n(
        3,
        "Guest-paging verification",
        "TERTIARY_EXEC_GUEST_PAGING_VERIFY",
    ),
    b(4, "Enable IPI virtualization", "TERTIARY_EXEC_IPI_VIRT"),
    n(
        6,
        "Enable MSRLIST instructions",
        "TERTIARY_EXEC_ENABLE_MSRLIST",
    ),
    n(
        7,
        "Virtualize IA32_SPEC_CTRL",
        "TERTIARY_EXEC_SPEC_CTRL_SHADOW",
    ),
    n(
        8,
        "APIC-timer virtualization",
        "TERTIARY_EXEC_APIC_TIMER_VIRT",
    ),
];

/// Primary VM-exit controls.
pub const EXIT: &[BitName] = &[
    b(2, "Save debug controls", "VM_EXIT_SAVE_DEBUG_CONTROLS"),
    b(9, "Host address-space size", "VM_EXIT_HOST_ADDR_SPACE_SIZE"),
    b(
        12,
        "Load IA32_PERF_GLOBAL_CTRL",
        "VM_EXIT_LOAD_IA32_PERF_GLOBAL_CTRL",
    ),
    b(
        15,
        "Acknowledge interrupt on exit",
        "VM_EXIT_ACK_INTR_ON_EXIT",
    ),
    b(18, "Save IA32_PAT", "VM_EXIT_SAVE_IA32_PAT"),
    b(19, "Load IA32_PAT", "VM_EXIT_LOAD_IA32_PAT"),
    b(20, "Save IA32_EFER", "VM_EXIT_SAVE_IA32_EFER"),
    b(21, "Load IA32_EFER", "VM_EXIT_LOAD_IA32_EFER"),
    b(
        22,
        "Save VMX-preemption timer value",
        "VM_EXIT_SAVE_VMX_PREEMPTION_TIMER",
    ),
    b(23, "Clear IA32_BNDCFGS", "VM_EXIT_CLEAR_BNDCFGS"),
    b(24, "Conceal VM exits from PT", "VM_EXIT_PT_CONCEAL_PIP"),
    b(25, "Clear IA32_RTIT_CTL", "VM_EXIT_CLEAR_IA32_RTIT_CTL"),
    n(26, "Clear IA32_LBR_CTL", "VM_EXIT_CLEAR_IA32_LBR_CTL"),
    n(27, "Clear UINV", "VM_EXIT_CLEAR_UINV"),
    n(28, "Load CET state", "VM_EXIT_LOAD_CET_STATE"),
    n(29, "Load IA32_PKRS", "VMX_VM_EXIT_LOAD_IA32_PKRS"),
    n(
        30,
        "Save IA32_PERF_GLOBAL_CTRL",
        "VM_EXIT_SAVE_IA32_PERF_GLOBAL_CTRL",
    ),
    f(
        31,
        "Activate secondary VM-exit controls",
        "VM_EXIT_ACTIVATE_SECONDARY_CONTROLS",
    ),
];

/// Secondary VM-exit controls (64-bit).
pub const SECONDARY_EXIT: &[BitName] = &[
    f(0, "Save IA32 FRED MSRs", "SECONDARY_VM_EXIT_SAVE_IA32_FRED"),
    f(1, "Load IA32 FRED MSRs", "SECONDARY_VM_EXIT_LOAD_IA32_FRED"),
    n(
        2,
        "Load IA32_SPEC_CTRL",
        "SECONDARY_VM_EXIT_LOAD_IA32_SPEC_CTRL",
    ),
    n(
        3,
        "Prematurely busy shadow stack",
        "SECONDARY_VM_EXIT_PREMATURELY_BUSY_SHSTK",
    ),
];

/// VM-entry controls.
pub const ENTRY: &[BitName] = &[
    b(2, "Load debug controls", "VM_ENTRY_LOAD_DEBUG_CONTROLS"),
    b(9, "IA-32e mode guest", "VM_ENTRY_IA32E_MODE"),
    b(10, "Entry to SMM", "VM_ENTRY_SMM"),
    b(
        11,
        "Deactivate dual-monitor treatment",
        "VM_ENTRY_DEACT_DUAL_MONITOR",
    ),
    b(
        13,
        "Load IA32_PERF_GLOBAL_CTRL",
        "VM_ENTRY_LOAD_IA32_PERF_GLOBAL_CTRL",
    ),
    b(14, "Load IA32_PAT", "VM_ENTRY_LOAD_IA32_PAT"),
    b(15, "Load IA32_EFER", "VM_ENTRY_LOAD_IA32_EFER"),
    b(16, "Load IA32_BNDCFGS", "VM_ENTRY_LOAD_BNDCFGS"),
    b(17, "Conceal VM entries from PT", "VM_ENTRY_PT_CONCEAL_PIP"),
    b(18, "Load IA32_RTIT_CTL", "VM_ENTRY_LOAD_IA32_RTIT_CTL"),
    n(19, "Load UINV", "VM_ENTRY_LOAD_UINV"),
    n(20, "Load CET state", "VM_ENTRY_LOAD_CET_STATE"),
    n(21, "Load IA32_LBR_CTL", "VM_ENTRY_LOAD_IA32_LBR_CTL"),
    n(22, "Load IA32_PKRS", "VMX_VM_ENTRY_LOAD_IA32_PKRS"),
    f(23, "Load IA32 FRED MSRs", "VM_ENTRY_LOAD_IA32_FRED"),
    n(24, "Load IA32_SPEC_CTRL", "VM_ENTRY_LOAD_IA32_SPEC_CTRL"),
];

/// The named bits of a control word, ascending.
pub const fn control_bits(word: ControlWord) -> &'static [BitName] {
    match word {
        ControlWord::PinBased => PIN_BASED,
        ControlWord::Primary => PRIMARY,
        ControlWord::Secondary => SECONDARY,
        ControlWord::Tertiary => TERTIARY,
        ControlWord::Exit => EXIT,
        ControlWord::SecondaryExit => SECONDARY_EXIT,
        ControlWord::Entry => ENTRY,
    }
}

/// Mask of the named bits of a control word.
pub fn known_mask(word: ControlWord) -> u64 {
    control_bits(word).iter().fold(0, |m, n| m | 1u64 << n.bit)
}

/// The name of bit `bit` of `word`, if known.
pub fn lookup(word: ControlWord, bit: u32) -> Option<&'static BitName> {
    control_bits(word).iter().find(|n| u32::from(n.bit) == bit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_unique_and_in_range() {
        for w in ControlWord::ALL {
            let t = control_bits(w);
            for pair in t.windows(2) {
                assert!(pair[0].bit < pair[1].bit, "{w:?}");
            }
            let width = if w.is_allowed1_only() { 64 } else { 32 };
            assert!(t.iter().all(|n| u32::from(n.bit) < width));
            // No named bit is a default1 (reserved-1) bit, except the named default1
            // controls the reference lists (primary 15/16, exit 2, entry 2).
            let named_default1 = known_mask(w) & u64::from(w.default1());
            let allowed = match w {
                ControlWord::Primary => (1 << 15) | (1 << 16),
                ControlWord::Exit | ControlWord::Entry => 1 << 2,
                _ => 0,
            };
            assert_eq!(named_default1, allowed, "{w:?}");
        }
    }

    /// The named bits are exactly those of reference vmx.md §2.1-2.7 (the bits whose
    /// meaning is UNVERIFIED there - secondary 29, tertiary 5 - stay unnamed, so the
    /// text report flags them `[unknown]`).
    #[test]
    fn names_cover_reference_section_2() {
        let bits = |list: &[u32]| list.iter().fold(0u64, |m, b| m | 1 << b);
        let range = |lo: u32, hi: u32| (lo..=hi).fold(0u64, |m, b| m | 1 << b);
        let expect = [
            (ControlWord::PinBased, bits(&[0, 3, 5, 6, 7])),
            (
                ControlWord::Primary,
                bits(&[
                    2, 3, 7, 9, 10, 11, 12, 15, 16, 17, 19, 20, 21, 22, 23, 24, 25,
                ]) | range(27, 31),
            ),
            (ControlWord::Secondary, range(0, 31) & !(1 << 29)),
            (ControlWord::Tertiary, range(0, 8) & !(1 << 5)),
            (ControlWord::Exit, bits(&[2, 9, 12, 15]) | range(18, 31)),
            (ControlWord::SecondaryExit, range(0, 3)),
            (ControlWord::Entry, bits(&[2, 9, 10, 11]) | range(13, 24)),
        ];
        for (w, mask) in expect {
            assert_eq!(known_mask(w), mask, "{w:?}");
            for n in control_bits(w) {
                assert!(
                    !n.label.is_empty() && !n.linux.is_empty(),
                    "{w:?} {}",
                    n.bit
                );
            }
        }
        // What QEMU's vmxcap prints (reference §4.2): the original script and the 2024
        // FRED additions.
        let printed = |w: ControlWord, v: Vmxcap| {
            control_bits(w)
                .iter()
                .filter(|n| n.vmxcap == v)
                .fold(0u64, |m, n| m | 1 << n.bit)
        };
        assert_eq!(
            printed(ControlWord::Secondary, Vmxcap::Original),
            range(0, 28) & !(1 << 21) & !(1 << 27)
        );
        assert_eq!(printed(ControlWord::Tertiary, Vmxcap::Original), 1 << 4);
        assert_eq!(
            printed(ControlWord::Exit, Vmxcap::Original),
            bits(&[2, 9, 12, 15]) | range(18, 25)
        );
        assert_eq!(printed(ControlWord::Exit, Vmxcap::Fred2024), 1 << 31);
        assert_eq!(printed(ControlWord::SecondaryExit, Vmxcap::Fred2024), 0b11);
        assert_eq!(
            printed(ControlWord::Entry, Vmxcap::Original),
            bits(&[2, 9, 10, 11]) | range(13, 18)
        );
        assert_eq!(printed(ControlWord::Entry, Vmxcap::Fred2024), 1 << 23);
    }

    #[test]
    fn lookups() {
        assert_eq!(
            lookup(ControlWord::Secondary, 31).unwrap().label,
            "Notify VM exiting"
        );
        assert_eq!(lookup(ControlWord::Secondary, 29), None);
        assert_eq!(
            lookup(ControlWord::Tertiary, 4).unwrap().linux,
            "TERTIARY_EXEC_IPI_VIRT"
        );
        assert_eq!(known_mask(ControlWord::PinBased), 0xE9);
    }
}
