// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The VMX control words as `bitflags` types, one per VMCS control field.
//!
//! Every bit named by Linux (`arch/x86/include/asm/vmx.h`, `vmxfeatures.h`) has a
//! constant with the Linux name minus its prefix (`PIN_BASED_NMI_EXITING` becomes
//! [`PinBasedControls::NMI_EXITING`]). A few bits that mainline Linux does not name
//! carry the QEMU or Bochs name; their rustdoc says so. The reserved-as-1 ("default1")
//! bits of the legacy capability MSRs are not flags but are available as `DEFAULT1`.
//!
//! Values read from hardware or from a dump are built with `from_bits_retain`, so bits
//! a newer CPU sets are kept, and [`unknown`](PinBasedControls::unknown) lists them.

use core::fmt;

use bitflags::bitflags;
use bitflags::Flags;

/// One of the seven VMCS control fields a VMM configures.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ControlField {
    /// Pin-based VM-execution controls (VMCS 0x4000).
    PinBased,
    /// Primary processor-based VM-execution controls (VMCS 0x4002).
    Primary,
    /// Secondary processor-based VM-execution controls (VMCS 0x401E).
    Secondary,
    /// Tertiary processor-based VM-execution controls (VMCS 0x2034, 64-bit).
    Tertiary,
    /// Primary VM-exit controls (VMCS 0x400C).
    Exit,
    /// Secondary VM-exit controls (VMCS 0x2044, 64-bit).
    SecondaryExit,
    /// VM-entry controls (VMCS 0x4012).
    Entry,
}

impl ControlField {
    /// All seven fields, in VMCS-setup order (the order of the JSON report).
    pub const ALL: [ControlField; 7] = [
        ControlField::PinBased,
        ControlField::Primary,
        ControlField::Secondary,
        ControlField::Tertiary,
        ControlField::Exit,
        ControlField::SecondaryExit,
        ControlField::Entry,
    ];

    /// Human name, as QEMU's `vmxcap` titles the section.
    pub const fn name(self) -> &'static str {
        match self {
            ControlField::PinBased => "pin-based controls",
            ControlField::Primary => "primary processor-based controls",
            ControlField::Secondary => "secondary processor-based controls",
            ControlField::Tertiary => "tertiary processor-based controls",
            ControlField::Exit => "VM-Exit controls",
            ControlField::SecondaryExit => "secondary VM-Exit controls",
            ControlField::Entry => "VM-Entry controls",
        }
    }

    /// Key of this field in the JSON report ([`crate::report::VmcsConfigReport`]).
    pub const fn json_key(self) -> &'static str {
        match self {
            ControlField::PinBased => "pin_based",
            ControlField::Primary => "primary",
            ControlField::Secondary => "secondary",
            ControlField::Tertiary => "tertiary",
            ControlField::Exit => "exit",
            ControlField::SecondaryExit => "secondary_exit",
            ControlField::Entry => "entry",
        }
    }

    /// Index of the capability MSR KVM's `setup_vmcs_config` reads for this field (the
    /// legacy, non-TRUE one for the four fields that have both).
    pub const fn capability_msr(self) -> u32 {
        match self {
            ControlField::PinBased => 0x481,
            ControlField::Primary => 0x482,
            ControlField::Secondary => 0x48B,
            ControlField::Tertiary => 0x492,
            ControlField::Exit => 0x483,
            ControlField::SecondaryExit => 0x493,
            ControlField::Entry => 0x484,
        }
    }

    /// Index of the TRUE capability MSR (BASIC\[55\]) for the fields that have one.
    pub const fn true_capability_msr(self) -> Option<u32> {
        match self {
            ControlField::PinBased => Some(0x48D),
            ControlField::Primary => Some(0x48E),
            ControlField::Exit => Some(0x48F),
            ControlField::Entry => Some(0x490),
            _ => None,
        }
    }

    /// VMCS field encoding of the control word.
    pub const fn vmcs_encoding(self) -> u32 {
        match self {
            ControlField::PinBased => 0x4000,
            ControlField::Primary => 0x4002,
            ControlField::Secondary => 0x401E,
            ControlField::Tertiary => 0x2034,
            ControlField::Exit => 0x400C,
            ControlField::SecondaryExit => 0x2044,
            ControlField::Entry => 0x4012,
        }
    }

    /// Whether the field is 64 bits wide (tertiary and secondary VM-exit controls).
    pub const fn is_64bit(self) -> bool {
        matches!(self, ControlField::Tertiary | ControlField::SecondaryExit)
    }

    /// Format `bits` of this field as `NAME | NAME | 0xUNKNOWN` (see [`ControlBits::describe`]).
    pub fn describe_bits(self, bits: u64) -> String {
        match self {
            ControlField::PinBased => PinBasedControls::from_raw_u64(bits).describe(),
            ControlField::Primary => PrimaryControls::from_raw_u64(bits).describe(),
            ControlField::Secondary => SecondaryControls::from_raw_u64(bits).describe(),
            ControlField::Tertiary => TertiaryControls::from_raw_u64(bits).describe(),
            ControlField::Exit => ExitControls::from_raw_u64(bits).describe(),
            ControlField::SecondaryExit => SecondaryExitControls::from_raw_u64(bits).describe(),
            ControlField::Entry => EntryControls::from_raw_u64(bits).describe(),
        }
    }

    /// Format a raw value of this field as a zero-padded hex string: 8 digits for the
    /// 32-bit fields, 16 for the 64-bit ones (`0x000000ff`, `0x0000000000000010`).
    pub fn hex(self, bits: u64) -> String {
        if self.is_64bit() {
            format!("{bits:#018x}")
        } else {
            format!("{:#010x}", bits as u32)
        }
    }
}

impl fmt::Display for ControlField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What every control-word type offers, so code can handle the seven fields alike.
pub trait ControlBits: Copy + Eq + fmt::Debug + fmt::Display {
    /// Which VMCS field this type describes.
    const FIELD: ControlField;
    /// The raw value, widened to 64 bits.
    fn raw_u64(self) -> u64;
    /// Build from a raw 64-bit value; for the 32-bit fields bits 63:32 are dropped
    /// (they do not exist in the field).
    fn from_raw_u64(raw: u64) -> Self;
    /// Bits that are set but neither named here nor reserved-as-1 (`DEFAULT1`).
    fn unknown_u64(self) -> u64;
    /// The Linux names of the named flags that are set, in bit order.
    fn names(self) -> Vec<&'static str>;
    /// `NAME | NAME | 0xREST`, where `0xREST` holds the set bits without a name
    /// (default1 and unknown ones); `0` when nothing is set.
    fn describe(self) -> String {
        let mut parts: Vec<String> = self.names().into_iter().map(str::to_owned).collect();
        let named: u64 = self.named_bits_u64();
        let rest = self.raw_u64() & !named;
        if rest != 0 {
            parts.push(format!("{rest:#x}"));
        }
        if parts.is_empty() {
            "0".to_owned()
        } else {
            parts.join(" | ")
        }
    }
    /// The set bits that have a name.
    fn named_bits_u64(self) -> u64;
}

macro_rules! control_word {
    ($ty:ident, $raw:ty, $field:expr, $default1:expr) => {
        impl $ty {
            /// Reserved-as-1 ("default1") bits: must be 1 when only the legacy capability
            /// MSR is consulted (Linux `*_ALWAYSON_WITHOUT_TRUE_MSR`); 0 where none exist.
            pub const DEFAULT1: Self = Self::from_bits_retain($default1);

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

            /// Linux name of a single bit number, if this crate names it.
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
        }

        impl ControlBits for $ty {
            const FIELD: ControlField = $field;
            fn raw_u64(self) -> u64 {
                u64::from(self.bits())
            }
            fn from_raw_u64(raw: u64) -> Self {
                // Truncation is the point: a 32-bit field has no bits 63:32.
                Self::from_bits_retain(raw as $raw)
            }
            fn unknown_u64(self) -> u64 {
                u64::from(self.unknown().bits())
            }
            fn names(self) -> Vec<&'static str> {
                self.iter_names().map(|(n, _)| n).collect()
            }
            fn named_bits_u64(self) -> u64 {
                u64::from((self & Self::all()).bits())
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&ControlBits::describe(*self))
            }
        }
    };
}

bitflags! {
    /// Pin-based VM-execution controls (VMCS 0x4000; capability MSRs 0x481 / TRUE 0x48D).
    /// Linux prefix `PIN_BASED_`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
    pub struct PinBasedControls: u32 {
        /// External interrupts cause VM exits.
        const EXT_INTR_MASK = 1 << 0;
        /// NMIs cause VM exits.
        const NMI_EXITING = 1 << 3;
        /// Virtual-NMI blocking is tracked (requires NMI exiting).
        const VIRTUAL_NMIS = 1 << 5;
        /// Activate the VMX-preemption timer.
        const VMX_PREEMPTION_TIMER = 1 << 6;
        /// Process posted interrupts.
        const POSTED_INTR = 1 << 7;
    }
}
control_word!(PinBasedControls, u32, ControlField::PinBased, 0x0000_0016);

bitflags! {
    /// Primary processor-based VM-execution controls (VMCS 0x4002; capability MSRs
    /// 0x482 / TRUE 0x48E). Linux prefix `CPU_BASED_`. Bits 15 and 16 are default1 too.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
    pub struct PrimaryControls: u32 {
        /// Exit at the start of any instruction when RFLAGS.IF=1 and nothing blocks
        /// interrupts (interrupt window).
        const INTR_WINDOW_EXITING = 1 << 2;
        /// Apply the TSC offset (and multiplier with TSC scaling) to RDTSC/RDTSCP/RDMSR.
        const USE_TSC_OFFSETTING = 1 << 3;
        /// HLT exits.
        const HLT_EXITING = 1 << 7;
        /// INVLPG exits.
        const INVLPG_EXITING = 1 << 9;
        /// MWAIT exits.
        const MWAIT_EXITING = 1 << 10;
        /// RDPMC exits.
        const RDPMC_EXITING = 1 << 11;
        /// RDTSC/RDTSCP exit.
        const RDTSC_EXITING = 1 << 12;
        /// MOV to CR3 exits (subject to the CR3-target list); default1.
        const CR3_LOAD_EXITING = 1 << 15;
        /// MOV from CR3 exits; default1.
        const CR3_STORE_EXITING = 1 << 16;
        /// The tertiary processor-based controls field is used.
        const ACTIVATE_TERTIARY_CONTROLS = 1 << 17;
        /// MOV to CR8 exits.
        const CR8_LOAD_EXITING = 1 << 19;
        /// MOV from CR8 exits.
        const CR8_STORE_EXITING = 1 << 20;
        /// Use the TPR shadow / virtual-APIC page.
        const TPR_SHADOW = 1 << 21;
        /// Exit when there is no virtual-NMI blocking (NMI window).
        const NMI_WINDOW_EXITING = 1 << 22;
        /// MOV DR exits.
        const MOV_DR_EXITING = 1 << 23;
        /// Every I/O instruction exits (ignored when I/O bitmaps are used).
        const UNCOND_IO_EXITING = 1 << 24;
        /// Use I/O bitmaps A and B.
        const USE_IO_BITMAPS = 1 << 25;
        /// Monitor trap flag.
        const MONITOR_TRAP_FLAG = 1 << 27;
        /// Use the MSR bitmaps.
        const USE_MSR_BITMAPS = 1 << 28;
        /// MONITOR exits.
        const MONITOR_EXITING = 1 << 29;
        /// PAUSE exits.
        const PAUSE_EXITING = 1 << 30;
        /// The secondary processor-based controls field is used.
        const ACTIVATE_SECONDARY_CONTROLS = 1 << 31;
    }
}
control_word!(PrimaryControls, u32, ControlField::Primary, 0x0401_E172);

bitflags! {
    /// Secondary processor-based VM-execution controls (VMCS 0x401E; capability MSR
    /// 0x48B). Linux prefix `SECONDARY_EXEC_`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
    pub struct SecondaryControls: u32 {
        /// APIC-access page virtualization.
        const VIRTUALIZE_APIC_ACCESSES = 1 << 0;
        /// Enable EPT.
        const ENABLE_EPT = 1 << 1;
        /// Descriptor-table exiting (LGDT, LIDT, LLDT, LTR, SGDT, SIDT, SLDT, STR).
        const DESC = 1 << 2;
        /// RDTSCP allowed (otherwise #UD).
        const ENABLE_RDTSCP = 1 << 3;
        /// Virtualize x2APIC MSR accesses.
        const VIRTUALIZE_X2APIC_MODE = 1 << 4;
        /// Tag TLB entries with a VPID.
        const ENABLE_VPID = 1 << 5;
        /// WBINVD/WBNOINVD exit.
        const WBINVD_EXITING = 1 << 6;
        /// Unrestricted guest (real and unpaged modes run natively; needs EPT).
        const UNRESTRICTED_GUEST = 1 << 7;
        /// APIC-register virtualization.
        const APIC_REGISTER_VIRT = 1 << 8;
        /// Virtual-interrupt delivery.
        const VIRTUAL_INTR_DELIVERY = 1 << 9;
        /// PAUSE-loop exiting (PLE_GAP / PLE_WINDOW).
        const PAUSE_LOOP_EXITING = 1 << 10;
        /// RDRAND exits.
        const RDRAND_EXITING = 1 << 11;
        /// INVPCID allowed.
        const ENABLE_INVPCID = 1 << 12;
        /// VM functions (VMFUNC) enabled.
        const ENABLE_VMFUNC = 1 << 13;
        /// VMCS shadowing.
        const SHADOW_VMCS = 1 << 14;
        /// ENCLS exiting (per the ENCLS-exiting bitmap).
        const ENCLS_EXITING = 1 << 15;
        /// RDSEED exits.
        const RDSEED_EXITING = 1 << 16;
        /// Page-modification logging.
        const ENABLE_PML = 1 << 17;
        /// EPT violations may be delivered as #VE.
        const EPT_VIOLATION_VE = 1 << 18;
        /// Conceal VMX non-root operation from Intel PT.
        const PT_CONCEAL_VMX = 1 << 19;
        /// XSAVES/XRSTORS allowed.
        const ENABLE_XSAVES = 1 << 20;
        /// PASID translation (VirtualBox/SDM name; no Linux name, meaning unverified).
        const PASID_TRANSLATION = 1 << 21;
        /// Mode-based execute control for EPT (XS/XU).
        const MODE_BASED_EPT_EXEC = 1 << 22;
        /// Sub-page write permissions for EPT (QEMU/vmxcap; not in mainline Linux).
        const ENABLE_SPP = 1 << 23;
        /// Intel PT uses guest-physical addresses.
        const PT_USE_GPA = 1 << 24;
        /// Use the TSC multiplier.
        const TSC_SCALING = 1 << 25;
        /// UMWAIT/TPAUSE/UMONITOR allowed.
        const ENABLE_USR_WAIT_PAUSE = 1 << 26;
        /// Enable PCONFIG (Bochs/VirtualBox name; not in Linux).
        const ENABLE_PCONFIG = 1 << 27;
        /// ENCLV exiting (Linux `VMX_FEATURE_ENCLV_EXITING`).
        const ENCLV_EXITING = 1 << 28;
        /// VM exit after a bus lock.
        const BUS_LOCK_DETECTION = 1 << 30;
        /// Notify VM exit: exit when no event window opens for a configured time.
        const NOTIFY_VM_EXITING = 1 << 31;
    }
}
control_word!(SecondaryControls, u32, ControlField::Secondary, 0);

bitflags! {
    /// Tertiary processor-based VM-execution controls (VMCS 0x2034, 64-bit; capability
    /// MSR 0x492, allowed-1 only). Linux prefix `TERTIARY_EXEC_`; Linux names only
    /// bit 4, the other names are Bochs'.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
    pub struct TertiaryControls: u64 {
        /// LOADIWKEY exiting (Key Locker; Bochs name).
        const LOADIWKEY_EXITING = 1 << 0;
        /// Enable hypervisor-managed linear-address translation (HLAT; Bochs name).
        const ENABLE_HLAT = 1 << 1;
        /// EPT paging-write control (Bochs name).
        const EPT_PAGING_WRITE = 1 << 2;
        /// Guest-paging verification (Bochs name).
        const GUEST_PAGING_VERIFY = 1 << 3;
        /// IPI virtualization, the only tertiary control mainline KVM uses.
        const IPI_VIRT = 1 << 4;
        /// Enable the MSRLIST instructions (Bochs name).
        const ENABLE_MSRLIST = 1 << 6;
        /// Virtualize IA32_SPEC_CTRL (Bochs; Linux patch series only).
        const SPEC_CTRL_VIRT = 1 << 7;
        /// APIC-timer virtualization (Bochs; Linux patch series only).
        const APIC_TIMER_VIRT = 1 << 8;
    }
}
control_word!(TertiaryControls, u64, ControlField::Tertiary, 0);

bitflags! {
    /// Primary VM-exit controls (VMCS 0x400C; capability MSRs 0x483 / TRUE 0x48F).
    /// Linux prefix `VM_EXIT_`. Bit 2 is default1 too.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
    pub struct ExitControls: u32 {
        /// Save guest DR7 and IA32_DEBUGCTL; default1.
        const SAVE_DEBUG_CONTROLS = 1 << 2;
        /// The host is in 64-bit mode after the exit.
        const HOST_ADDR_SPACE_SIZE = 1 << 9;
        /// Load host IA32_PERF_GLOBAL_CTRL.
        const LOAD_IA32_PERF_GLOBAL_CTRL = 1 << 12;
        /// Acknowledge the interrupt on exit and store its vector.
        const ACK_INTR_ON_EXIT = 1 << 15;
        /// Save guest IA32_PAT.
        const SAVE_IA32_PAT = 1 << 18;
        /// Load host IA32_PAT.
        const LOAD_IA32_PAT = 1 << 19;
        /// Save guest IA32_EFER.
        const SAVE_IA32_EFER = 1 << 20;
        /// Load host IA32_EFER.
        const LOAD_IA32_EFER = 1 << 21;
        /// Save the VMX-preemption timer value.
        const SAVE_VMX_PREEMPTION_TIMER = 1 << 22;
        /// Clear IA32_BNDCFGS (MPX).
        const CLEAR_BNDCFGS = 1 << 23;
        /// Conceal VM exits from Intel PT.
        const PT_CONCEAL_PIP = 1 << 24;
        /// Clear IA32_RTIT_CTL.
        const CLEAR_IA32_RTIT_CTL = 1 << 25;
        /// Clear IA32_LBR_CTL (arch-LBR patch series only).
        const CLEAR_IA32_LBR_CTL = 1 << 26;
        /// Clear the user-interrupt notification vector (Bochs name).
        const CLEAR_UINV = 1 << 27;
        /// Load host CET state (S_CET, SSP, SSP table address).
        const LOAD_CET_STATE = 1 << 28;
        /// Load host IA32_PKRS (QEMU name).
        const LOAD_IA32_PKRS = 1 << 29;
        /// Save guest IA32_PERF_GLOBAL_CTRL (mediated-PMU patch series).
        const SAVE_IA32_PERF_GLOBAL_CTRL = 1 << 30;
        /// The secondary VM-exit controls field is used.
        const ACTIVATE_SECONDARY_CONTROLS = 1 << 31;
    }
}
control_word!(ExitControls, u32, ControlField::Exit, 0x0003_6DFF);

bitflags! {
    /// Secondary VM-exit controls (VMCS 0x2044, 64-bit; capability MSR 0x493,
    /// allowed-1 only). Linux prefix `SECONDARY_VM_EXIT_` (FRED series).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
    pub struct SecondaryExitControls: u64 {
        /// Save the guest FRED MSRs.
        const SAVE_IA32_FRED = 1 << 0;
        /// Load the host FRED MSRs.
        const LOAD_IA32_FRED = 1 << 1;
        /// Load host IA32_SPEC_CTRL (Bochs name).
        const LOAD_IA32_SPEC_CTRL = 1 << 2;
        /// Shadow-stack prematurely-busy handling (Bochs name; semantics unverified).
        const PREMATURE_BUSY_SHADOW_STACK = 1 << 3;
    }
}
control_word!(SecondaryExitControls, u64, ControlField::SecondaryExit, 0);

bitflags! {
    /// VM-entry controls (VMCS 0x4012; capability MSRs 0x484 / TRUE 0x490).
    /// Linux prefix `VM_ENTRY_`. Bit 2 is default1 too.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
    pub struct EntryControls: u32 {
        /// Load guest DR7 and IA32_DEBUGCTL; default1.
        const LOAD_DEBUG_CONTROLS = 1 << 2;
        /// The guest is in IA-32e mode after entry.
        const IA32E_MODE = 1 << 9;
        /// Entry to SMM (dual-monitor treatment).
        const SMM = 1 << 10;
        /// Deactivate dual-monitor treatment.
        const DEACT_DUAL_MONITOR = 1 << 11;
        /// Load guest IA32_PERF_GLOBAL_CTRL.
        const LOAD_IA32_PERF_GLOBAL_CTRL = 1 << 13;
        /// Load guest IA32_PAT.
        const LOAD_IA32_PAT = 1 << 14;
        /// Load guest IA32_EFER.
        const LOAD_IA32_EFER = 1 << 15;
        /// Load guest IA32_BNDCFGS (MPX).
        const LOAD_BNDCFGS = 1 << 16;
        /// Conceal VM entries from Intel PT.
        const PT_CONCEAL_PIP = 1 << 17;
        /// Load guest IA32_RTIT_CTL.
        const LOAD_IA32_RTIT_CTL = 1 << 18;
        /// Load the user-interrupt notification vector (Bochs name).
        const LOAD_UINV = 1 << 19;
        /// Load guest CET state.
        const LOAD_CET_STATE = 1 << 20;
        /// Load guest IA32_LBR_CTL (arch-LBR patch series only).
        const LOAD_IA32_LBR_CTL = 1 << 21;
        /// Load guest IA32_PKRS (QEMU name).
        const LOAD_IA32_PKRS = 1 << 22;
        /// Load the guest FRED MSRs (FRED series).
        const LOAD_IA32_FRED = 1 << 23;
        /// Load guest IA32_SPEC_CTRL (Bochs name).
        const LOAD_IA32_SPEC_CTRL = 1 << 24;
    }
}
control_word!(EntryControls, u32, ControlField::Entry, 0x0000_11FF);
