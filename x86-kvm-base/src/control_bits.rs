// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every VMX control bit, once: the `bitflags` type of each VMCS control field and the
//! one name table the reports print from.
//!
//! Each field is written as a single list of `(bit, NAME, label, vmxcap)` rows. From that
//! list a macro generates both the flag constant (`NAME`) and the table row whose name is
//! `NAME` and whose Linux name is the field prefix followed by `NAME` (`PIN_BASED_` +
//! `NMI_EXITING`), so the typed flags and the printed names cannot drift apart. The
//! vmxcap text and config reports print `NAME`, the JSON report the Linux name, and only
//! the QEMU-format report QEMU's own labels.
//!
//! Names follow Linux `arch/x86/include/asm/vmx.h` (and `vmxfeatures.h`). For bits that
//! mainline Linux does not name, the name is the one a posted Linux patch series uses
//! (e.g. `TERTIARY_EXEC_SPEC_CTRL_SHADOW` from "KVM: VMX: Virtualize Intel
//! IA32_SPEC_CTRL", RFC v3, 2024), otherwise a Linux-style name made from the QEMU,
//! Bochs or SDM wording; the rustdoc of each flag says which. The `label` is the human
//! wording: QEMU's `scripts/kvm/vmxcap` label where vmxcap prints the bit (the QEMU-format
//! report prints exactly these), a label in the same style otherwise.
//!
//! Values read from hardware or from a dump are built with `from_bits_retain`, so bits a
//! newer CPU sets are kept, and `unknown()` lists them.

use bitflags::bitflags;
use bitflags::Flags;

mod field;
pub use field::{
    ControlField, IA32_VMX_ENTRY_CTLS, IA32_VMX_EXIT_CTLS, IA32_VMX_EXIT_CTLS2,
    IA32_VMX_PINBASED_CTLS, IA32_VMX_PROCBASED_CTLS, IA32_VMX_PROCBASED_CTLS2,
    IA32_VMX_PROCBASED_CTLS3, IA32_VMX_TRUE_ENTRY_CTLS, IA32_VMX_TRUE_EXIT_CTLS,
    IA32_VMX_TRUE_PINBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS,
};

/// Pin-based default1 bits 1, 2, 4 (Linux `PIN_BASED_ALWAYSON_WITHOUT_TRUE_MSR`).
pub const PIN_BASED_ALWAYSON_WITHOUT_TRUE_MSR: u32 = 0x0000_0016;
/// Primary processor-based default1 bits (Linux `CPU_BASED_ALWAYSON_WITHOUT_TRUE_MSR`).
pub const CPU_BASED_ALWAYSON_WITHOUT_TRUE_MSR: u32 = 0x0401_E172;
/// VM-exit default1 bits (Linux `VM_EXIT_ALWAYSON_WITHOUT_TRUE_MSR`).
pub const VM_EXIT_ALWAYSON_WITHOUT_TRUE_MSR: u32 = 0x0003_6DFF;
/// VM-entry default1 bits (Linux `VM_ENTRY_ALWAYSON_WITHOUT_TRUE_MSR`).
pub const VM_ENTRY_ALWAYSON_WITHOUT_TRUE_MSR: u32 = 0x0000_11FF;

/// Which version of QEMU's `scripts/kvm/vmxcap` prints a bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Vmxcap {
    /// The script as of QEMU commit 0c49c918.
    Original,
    /// Added by the June 2024 FRED patch to the script.
    Fred2024,
    /// Not printed by vmxcap.
    No,
}

/// One named control bit: the row of the name table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BitName {
    /// Bit position in the control word.
    pub bit: u8,
    /// The name: the flag constant of the typed field (`NMI_EXITING`), which is the
    /// Linux name without the field prefix. The vmxcap text and config reports print it.
    pub name: &'static str,
    /// Human label (QEMU vmxcap's wording where vmxcap prints the bit); only the
    /// QEMU-format report prints it.
    pub label: &'static str,
    /// The Linux name (`asm/vmx.h` style, field prefix included); the JSON report
    /// prints it.
    pub linux: &'static str,
    /// Whether, and since which version, QEMU's vmxcap prints it.
    pub vmxcap: Vmxcap,
}

impl BitName {
    /// The mask of this bit.
    pub const fn mask(&self) -> u64 {
        1u64 << self.bit
    }
}

/// Name of `bit` in `table`, if any.
pub fn lookup(table: &'static [BitName], bit: u32) -> Option<&'static BitName> {
    table.iter().find(|n| u32::from(n.bit) == bit)
}

/// Mask of the bits `table` names.
pub fn known_mask(table: &[BitName]) -> u64 {
    table.iter().fold(0, |m, n| m | n.mask())
}

macro_rules! control_word {
    (
        $(#[$meta:meta])*
        $ty:ident: $raw:ty, prefix $prefix:literal, default1 $default1:expr, table $table:ident;
        $( $(#[doc = $doc:literal])* $bit:literal $name:ident $label:literal $vmxcap:ident; )*
    ) => {
        bitflags! {
            $(#[$meta])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
            pub struct $ty: $raw {
                $( $(#[doc = $doc])* const $name = 1 << $bit; )*
            }
        }

        #[doc = concat!("The name table of [`", stringify!($ty), "`], ascending by bit.")]
        pub const $table: &[BitName] = &[
            $( BitName {
                bit: $bit,
                name: stringify!($name),
                label: $label,
                linux: concat!($prefix, stringify!($name)),
                vmxcap: Vmxcap::$vmxcap,
            }, )*
        ];

        impl $ty {
            /// Reserved-as-1 ("default1") bits: must be 1 when only the legacy capability
            /// MSR is consulted (Linux `*_ALWAYSON_WITHOUT_TRUE_MSR`); 0 where none exist.
            pub const DEFAULT1: Self = Self::from_bits_retain($default1);

            /// The Linux prefix of this field's names.
            pub const PREFIX: &'static str = $prefix;

            /// The name table of this field.
            pub const NAMES: &'static [BitName] = $table;

            /// The raw field value, unknown bits included.
            pub const fn raw(self) -> $raw {
                self.bits()
            }

            /// The set bits that are neither named flags nor default1 bits, e.g. a
            /// control a newer CPU reports. Never dropped, only reported.
            pub const fn unknown(self) -> Self {
                Self::from_bits_retain(self.bits() & !(Self::all().bits() | $default1))
            }

            /// Bit numbers of [`unknown`](Self::unknown), ascending.
            pub fn unknown_bit_numbers(self) -> Vec<u32> {
                let u = self.unknown().bits();
                (0..<$raw>::BITS).filter(|b| u & (1 << b) != 0).collect()
            }

            /// Name of the flag for bit `bit` (the Linux name without the field
            /// prefix), if the bit is named.
            pub fn bit_name(bit: u32) -> Option<&'static str> {
                if bit >= <$raw>::BITS {
                    return None;
                }
                let mask: $raw = 1 << bit;
                <Self as Flags>::FLAGS
                    .iter()
                    .find(|f| f.value().bits() == mask)
                    .map(|f| f.name())
            }

            /// The full Linux name of bit `bit` (prefix included), if the bit is named.
            pub fn linux_name(bit: u32) -> Option<&'static str> {
                lookup($table, bit).map(|n| n.linux)
            }

            /// The names of the set named flags, in bit order.
            pub fn flag_names(self) -> Vec<&'static str> {
                self.iter_names().map(|(n, _)| n).collect()
            }

            /// `NAME | NAME | 0xREST`, where `0xREST` holds the set bits without a name
            /// (default1 and unknown ones); `0` when nothing is set.
            pub fn describe(self) -> String {
                let mut parts: Vec<String> =
                    self.flag_names().into_iter().map(str::to_owned).collect();
                let rest = self.bits() & !Self::all().bits();
                if rest != 0 {
                    parts.push(format!("{rest:#x}"));
                }
                if parts.is_empty() {
                    "0".to_owned()
                } else {
                    parts.join(" | ")
                }
            }
        }

        impl core::fmt::Display for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(&self.describe())
            }
        }
    };
}

control_word! {
    /// Pin-based VM-execution controls (VMCS 0x4000; capability MSRs 0x481 / TRUE 0x48D).
    /// Linux prefix `PIN_BASED_`.
    PinBasedControls: u32, prefix "PIN_BASED_", default1 PIN_BASED_ALWAYSON_WITHOUT_TRUE_MSR,
    table PIN_BASED;
    /// External interrupts cause VM exits.
    0 EXT_INTR_MASK "External interrupt exiting" Original;
    /// NMIs cause VM exits.
    3 NMI_EXITING "NMI exiting" Original;
    /// Virtual-NMI blocking is tracked (requires NMI exiting).
    5 VIRTUAL_NMIS "Virtual NMIs" Original;
    /// Activate the VMX-preemption timer.
    6 VMX_PREEMPTION_TIMER "Activate VMX-preemption timer" Original;
    /// Process posted interrupts.
    7 POSTED_INTR "Process posted interrupts" Original;
}

control_word! {
    /// Primary processor-based VM-execution controls (VMCS 0x4002; capability MSRs
    /// 0x482 / TRUE 0x48E). Linux prefix `CPU_BASED_`. Bits 15 and 16 are default1 too.
    PrimaryControls: u32, prefix "CPU_BASED_", default1 CPU_BASED_ALWAYSON_WITHOUT_TRUE_MSR,
    table PRIMARY;
    /// Exit at the start of any instruction when RFLAGS.IF=1 and nothing blocks
    /// interrupts (interrupt window).
    2 INTR_WINDOW_EXITING "Interrupt window exiting" Original;
    /// Apply the TSC offset (and multiplier with TSC scaling) to RDTSC/RDTSCP/RDMSR.
    3 USE_TSC_OFFSETTING "Use TSC offsetting" Original;
    /// HLT exits.
    7 HLT_EXITING "HLT exiting" Original;
    /// INVLPG exits.
    9 INVLPG_EXITING "INVLPG exiting" Original;
    /// MWAIT exits.
    10 MWAIT_EXITING "MWAIT exiting" Original;
    /// RDPMC exits.
    11 RDPMC_EXITING "RDPMC exiting" Original;
    /// RDTSC/RDTSCP exit.
    12 RDTSC_EXITING "RDTSC exiting" Original;
    /// MOV to CR3 exits (subject to the CR3-target list); default1.
    15 CR3_LOAD_EXITING "CR3-load exiting" Original;
    /// MOV from CR3 exits; default1.
    16 CR3_STORE_EXITING "CR3-store exiting" Original;
    /// The tertiary processor-based controls field is used.
    17 ACTIVATE_TERTIARY_CONTROLS "Activate tertiary controls" Original;
    /// MOV to CR8 exits.
    19 CR8_LOAD_EXITING "CR8-load exiting" Original;
    /// MOV from CR8 exits.
    20 CR8_STORE_EXITING "CR8-store exiting" Original;
    /// Use the TPR shadow / virtual-APIC page.
    21 TPR_SHADOW "Use TPR shadow" Original;
    /// Exit when there is no virtual-NMI blocking (NMI window).
    22 NMI_WINDOW_EXITING "NMI-window exiting" Original;
    /// MOV DR exits.
    23 MOV_DR_EXITING "MOV-DR exiting" Original;
    /// Every I/O instruction exits (ignored when I/O bitmaps are used).
    24 UNCOND_IO_EXITING "Unconditional I/O exiting" Original;
    /// Use I/O bitmaps A and B.
    25 USE_IO_BITMAPS "Use I/O bitmaps" Original;
    /// Monitor trap flag.
    27 MONITOR_TRAP_FLAG "Monitor trap flag" Original;
    /// Use the MSR bitmaps.
    28 USE_MSR_BITMAPS "Use MSR bitmaps" Original;
    /// MONITOR exits.
    29 MONITOR_EXITING "MONITOR exiting" Original;
    /// PAUSE exits.
    30 PAUSE_EXITING "PAUSE exiting" Original;
    /// The secondary processor-based controls field is used.
    31 ACTIVATE_SECONDARY_CONTROLS "Activate secondary control" Original;
}

control_word! {
    /// Secondary processor-based VM-execution controls (VMCS 0x401E; capability MSR
    /// 0x48B). Linux prefix `SECONDARY_EXEC_`.
    SecondaryControls: u32, prefix "SECONDARY_EXEC_", default1 0, table SECONDARY;
    /// APIC-access page virtualization.
    0 VIRTUALIZE_APIC_ACCESSES "Virtualize APIC accesses" Original;
    /// Enable EPT.
    1 ENABLE_EPT "Enable EPT" Original;
    /// Descriptor-table exiting (LGDT, LIDT, LLDT, LTR, SGDT, SIDT, SLDT, STR).
    2 DESC "Descriptor-table exiting" Original;
    /// RDTSCP allowed (otherwise #UD).
    3 ENABLE_RDTSCP "Enable RDTSCP" Original;
    /// Virtualize x2APIC MSR accesses.
    4 VIRTUALIZE_X2APIC_MODE "Virtualize x2APIC mode" Original;
    /// Tag TLB entries with a VPID.
    5 ENABLE_VPID "Enable VPID" Original;
    /// WBINVD/WBNOINVD exit.
    6 WBINVD_EXITING "WBINVD exiting" Original;
    /// Unrestricted guest (real and unpaged modes run natively; needs EPT).
    7 UNRESTRICTED_GUEST "Unrestricted guest" Original;
    /// APIC-register virtualization.
    8 APIC_REGISTER_VIRT "APIC register emulation" Original;
    /// Virtual-interrupt delivery.
    9 VIRTUAL_INTR_DELIVERY "Virtual interrupt delivery" Original;
    /// PAUSE-loop exiting (PLE_GAP / PLE_WINDOW).
    10 PAUSE_LOOP_EXITING "PAUSE-loop exiting" Original;
    /// RDRAND exits.
    11 RDRAND_EXITING "RDRAND exiting" Original;
    /// INVPCID allowed.
    12 ENABLE_INVPCID "Enable INVPCID" Original;
    /// VM functions (VMFUNC) enabled.
    13 ENABLE_VMFUNC "Enable VM functions" Original;
    /// VMCS shadowing.
    14 SHADOW_VMCS "VMCS shadowing" Original;
    /// ENCLS exiting (per the ENCLS-exiting bitmap).
    15 ENCLS_EXITING "Enable ENCLS exiting" Original;
    /// RDSEED exits.
    16 RDSEED_EXITING "RDSEED exiting" Original;
    /// Page-modification logging.
    17 ENABLE_PML "Enable PML" Original;
    /// EPT violations may be delivered as #VE.
    18 EPT_VIOLATION_VE "EPT-violation #VE" Original;
    /// Conceal VMX non-root operation from Intel PT.
    19 PT_CONCEAL_VMX "Conceal non-root operation from PT" Original;
    /// XSAVES/XRSTORS allowed.
    20 ENABLE_XSAVES "Enable XSAVES/XRSTORS" Original;
    /// PASID translation (VirtualBox/SDM wording; no Linux name, meaning unverified).
    21 PASID_TRANSLATION "PASID translation" No;
    /// Mode-based execute control for EPT (XS/XU).
    22 MODE_BASED_EPT_EXEC "Mode-based execute control (XS/XU)" Original;
    /// Sub-page write permissions for EPT (QEMU `VMX_SECONDARY_EXEC_ENABLE_SPP`; not
    /// in mainline Linux).
    23 ENABLE_SPP "Sub-page write permissions" Original;
    /// Intel PT uses guest-physical addresses.
    24 PT_USE_GPA "GPA translation for PT" Original;
    /// Use the TSC multiplier.
    25 TSC_SCALING "TSC scaling" Original;
    /// UMWAIT/TPAUSE/UMONITOR allowed.
    26 ENABLE_USR_WAIT_PAUSE "User wait and pause" Original;
    /// Enable PCONFIG (Bochs/VirtualBox wording; not in Linux).
    27 ENABLE_PCONFIG "Enable PCONFIG" No;
    /// ENCLV exiting (Linux `vmxfeatures.h` `VMX_FEATURE_ENCLV_EXITING`; `vmx.h` has
    /// no `SECONDARY_EXEC_` macro for it).
    28 ENCLV_EXITING "ENCLV exiting" Original;
    /// VM exit after a bus lock.
    30 BUS_LOCK_DETECTION "Bus-lock detection" No;
    /// Notify VM exit: exit when no event window opens for a configured time.
    31 NOTIFY_VM_EXITING "Notify VM exiting" No;
}

control_word! {
    /// Tertiary processor-based VM-execution controls (VMCS 0x2034, 64-bit; capability
    /// MSR 0x492, allowed-1 only). Linux prefix `TERTIARY_EXEC_`; mainline Linux names
    /// only bit 4, bit 7 is named by a Linux patch series, the others after Bochs.
    TertiaryControls: u64, prefix "TERTIARY_EXEC_", default1 0, table TERTIARY;
    /// LOADIWKEY exiting (Key Locker; Bochs wording).
    0 LOADIWKEY_EXITING "LOADIWKEY exiting" No;
    /// Enable hypervisor-managed linear-address translation (HLAT; Bochs wording).
    1 ENABLE_HLAT "Enable HLAT" No;
    /// EPT paging-write control (Bochs wording).
    2 EPT_PAGING_WRITE "EPT paging-write control" No;
    /// Guest-paging verification (Bochs wording).
    3 GUEST_PAGING_VERIFY "Guest-paging verification" No;
    /// IPI virtualization, the only tertiary control mainline KVM uses.
    4 IPI_VIRT "Enable IPI virtualization" Original;
    /// Enable the MSRLIST instructions (Bochs wording).
    6 ENABLE_MSRLIST "Enable MSRLIST instructions" No;
    /// Virtualize IA32_SPEC_CTRL (Linux patch "KVM: VMX: Virtualize Intel
    /// IA32_SPEC_CTRL", RFC v3 2024: `TERTIARY_EXEC_SPEC_CTRL_SHADOW`; not in mainline).
    7 SPEC_CTRL_SHADOW "Virtualize IA32_SPEC_CTRL" No;
    /// APIC-timer virtualization (Bochs; Linux patch series only).
    8 APIC_TIMER_VIRT "APIC-timer virtualization" No;
}

control_word! {
    /// Primary VM-exit controls (VMCS 0x400C; capability MSRs 0x483 / TRUE 0x48F).
    /// Linux prefix `VM_EXIT_`. Bit 2 is default1 too.
    ExitControls: u32, prefix "VM_EXIT_", default1 VM_EXIT_ALWAYSON_WITHOUT_TRUE_MSR,
    table EXIT;
    /// Save guest DR7 and IA32_DEBUGCTL; default1.
    2 SAVE_DEBUG_CONTROLS "Save debug controls" Original;
    /// The host is in 64-bit mode after the exit.
    9 HOST_ADDR_SPACE_SIZE "Host address-space size" Original;
    /// Load host IA32_PERF_GLOBAL_CTRL.
    12 LOAD_IA32_PERF_GLOBAL_CTRL "Load IA32_PERF_GLOBAL_CTRL" Original;
    /// Acknowledge the interrupt on exit and store its vector.
    15 ACK_INTR_ON_EXIT "Acknowledge interrupt on exit" Original;
    /// Save guest IA32_PAT.
    18 SAVE_IA32_PAT "Save IA32_PAT" Original;
    /// Load host IA32_PAT.
    19 LOAD_IA32_PAT "Load IA32_PAT" Original;
    /// Save guest IA32_EFER.
    20 SAVE_IA32_EFER "Save IA32_EFER" Original;
    /// Load host IA32_EFER.
    21 LOAD_IA32_EFER "Load IA32_EFER" Original;
    /// Save the VMX-preemption timer value.
    22 SAVE_VMX_PREEMPTION_TIMER "Save VMX-preemption timer value" Original;
    /// Clear IA32_BNDCFGS (MPX).
    23 CLEAR_BNDCFGS "Clear IA32_BNDCFGS" Original;
    /// Conceal VM exits from Intel PT.
    24 PT_CONCEAL_PIP "Conceal VM exits from PT" Original;
    /// Clear IA32_RTIT_CTL.
    25 CLEAR_IA32_RTIT_CTL "Clear IA32_RTIT_CTL" Original;
    /// Clear IA32_LBR_CTL (arch-LBR patch series only).
    26 CLEAR_IA32_LBR_CTL "Clear IA32_LBR_CTL" No;
    /// Clear the user-interrupt notification vector (Bochs wording).
    27 CLEAR_UINV "Clear UINV" No;
    /// Load host CET state (S_CET, SSP, SSP table address).
    28 LOAD_CET_STATE "Load CET state" No;
    /// Load host IA32_PKRS (QEMU `VMX_VM_EXIT_LOAD_IA32_PKRS`).
    29 LOAD_IA32_PKRS "Load IA32_PKRS" No;
    /// Save guest IA32_PERF_GLOBAL_CTRL (mediated-PMU patch series, posted after
    /// Linux 6.18; not in 6.18's `KVM_OPTIONAL_VMX_VM_EXIT_CONTROLS`).
    30 SAVE_IA32_PERF_GLOBAL_CTRL "Save IA32_PERF_GLOBAL_CTRL" No;
    /// The secondary VM-exit controls field is used.
    31 ACTIVATE_SECONDARY_CONTROLS "Activate secondary VM-exit controls" Fred2024;
}

control_word! {
    /// Secondary VM-exit controls (VMCS 0x2044, 64-bit; capability MSR 0x493,
    /// allowed-1 only). Linux prefix `SECONDARY_VM_EXIT_` (FRED series).
    SecondaryExitControls: u64, prefix "SECONDARY_VM_EXIT_", default1 0,
    table SECONDARY_EXIT;
    /// Save the guest FRED MSRs.
    0 SAVE_IA32_FRED "Save IA32 FRED MSRs" Fred2024;
    /// Load the host FRED MSRs.
    1 LOAD_IA32_FRED "Load IA32 FRED MSRs" Fred2024;
    /// Load host IA32_SPEC_CTRL (Bochs wording; no Linux name).
    2 LOAD_IA32_SPEC_CTRL "Load IA32_SPEC_CTRL" No;
    /// Shadow-stack prematurely-busy handling (Bochs/SDM wording; no Linux name,
    /// semantics unverified).
    3 PREMATURELY_BUSY_SHSTK "Prematurely busy shadow stack" No;
}

control_word! {
    /// VM-entry controls (VMCS 0x4012; capability MSRs 0x484 / TRUE 0x490).
    /// Linux prefix `VM_ENTRY_`. Bit 2 is default1 too.
    EntryControls: u32, prefix "VM_ENTRY_", default1 VM_ENTRY_ALWAYSON_WITHOUT_TRUE_MSR,
    table ENTRY;
    /// Load guest DR7 and IA32_DEBUGCTL; default1.
    2 LOAD_DEBUG_CONTROLS "Load debug controls" Original;
    /// The guest is in IA-32e mode after entry.
    9 IA32E_MODE "IA-32e mode guest" Original;
    /// Entry to SMM (dual-monitor treatment).
    10 SMM "Entry to SMM" Original;
    /// Deactivate dual-monitor treatment.
    11 DEACT_DUAL_MONITOR "Deactivate dual-monitor treatment" Original;
    /// Load guest IA32_PERF_GLOBAL_CTRL.
    13 LOAD_IA32_PERF_GLOBAL_CTRL "Load IA32_PERF_GLOBAL_CTRL" Original;
    /// Load guest IA32_PAT.
    14 LOAD_IA32_PAT "Load IA32_PAT" Original;
    /// Load guest IA32_EFER.
    15 LOAD_IA32_EFER "Load IA32_EFER" Original;
    /// Load guest IA32_BNDCFGS (MPX).
    16 LOAD_BNDCFGS "Load IA32_BNDCFGS" Original;
    /// Conceal VM entries from Intel PT.
    17 PT_CONCEAL_PIP "Conceal VM entries from PT" Original;
    /// Load guest IA32_RTIT_CTL.
    18 LOAD_IA32_RTIT_CTL "Load IA32_RTIT_CTL" Original;
    /// Load the user-interrupt notification vector (Bochs wording).
    19 LOAD_UINV "Load UINV" No;
    /// Load guest CET state.
    20 LOAD_CET_STATE "Load CET state" No;
    /// Load guest IA32_LBR_CTL (arch-LBR patch series only).
    21 LOAD_IA32_LBR_CTL "Load IA32_LBR_CTL" No;
    /// Load guest IA32_PKRS (QEMU `VMX_VM_ENTRY_LOAD_IA32_PKRS`).
    22 LOAD_IA32_PKRS "Load IA32_PKRS" No;
    /// Load the guest FRED MSRs (FRED series).
    23 LOAD_IA32_FRED "Load IA32 FRED MSRs" Fred2024;
    /// Load guest IA32_SPEC_CTRL (Bochs wording).
    24 LOAD_IA32_SPEC_CTRL "Load IA32_SPEC_CTRL" No;
}

/// The seven name tables, in vmxcap's section order (pin-based, primary, secondary,
/// tertiary, exit, secondary exit, entry), each with its Linux prefix.
pub const ALL_TABLES: [(&str, &[BitName]); 7] = [
    (PinBasedControls::PREFIX, PIN_BASED),
    (PrimaryControls::PREFIX, PRIMARY),
    (SecondaryControls::PREFIX, SECONDARY),
    (TertiaryControls::PREFIX, TERTIARY),
    (ExitControls::PREFIX, EXIT),
    (SecondaryExitControls::PREFIX, SECONDARY_EXIT),
    (EntryControls::PREFIX, ENTRY),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_and_named_from_the_flags() {
        for (prefix, table) in ALL_TABLES {
            for pair in table.windows(2) {
                assert!(pair[0].bit < pair[1].bit, "{prefix}");
            }
            for n in table {
                assert_eq!(n.linux.strip_prefix(prefix), Some(n.name), "{}", n.linux);
                assert!(!n.label.is_empty());
            }
        }
        assert_eq!(
            PinBasedControls::linux_name(3),
            Some("PIN_BASED_NMI_EXITING")
        );
        assert_eq!(PinBasedControls::bit_name(3), Some("NMI_EXITING"));
        assert_eq!(known_mask(PIN_BASED), 0xE9);
    }

    /// The two names that used to differ between the crates follow Linux: tertiary
    /// bit 7 as in the posted Linux patch "KVM: VMX: Virtualize Intel IA32_SPEC_CTRL"
    /// (`TERTIARY_EXEC_SPEC_CTRL_SHADOW`, RFC v3 2024, the latest posting; RFC v2 2023
    /// called it `SPEC_CTRL_VIRT`); secondary-exit bit 3 has no Linux name, so the one
    /// Linux-style name is used everywhere.
    #[test]
    fn formerly_disagreeing_names() {
        assert_eq!(
            TertiaryControls::linux_name(7),
            Some("TERTIARY_EXEC_SPEC_CTRL_SHADOW")
        );
        assert_eq!(TertiaryControls::SPEC_CTRL_SHADOW.bits(), 1 << 7);
        assert_eq!(
            SecondaryExitControls::linux_name(3),
            Some("SECONDARY_VM_EXIT_PREMATURELY_BUSY_SHSTK")
        );
    }

    #[test]
    fn describe_and_unknown_bits() {
        let p = PinBasedControls::from_bits_retain(0x9 | 0x16 | 1 << 20);
        assert_eq!(p.describe(), "EXT_INTR_MASK | NMI_EXITING | 0x100016");
        assert_eq!(p.unknown_bit_numbers(), vec![20]);
        assert_eq!(PinBasedControls::empty().to_string(), "0");
    }
}
