// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`ControlField`]: the seven VMX control words, once, with the capability MSRs that
//! describe them (SDM Vol. 3D appendix A.3-A.5, Linux `msr-index.h` names without the
//! `MSR_` prefix) and their VMCS field encodings (SDM appendix B, Linux `asm/vmx.h`
//! `enum vmcs_field`).

use super::{
    BitName, EntryControls, ExitControls, PinBasedControls, PrimaryControls, SecondaryControls,
    SecondaryExitControls, TertiaryControls, CPU_BASED_ALWAYSON_WITHOUT_TRUE_MSR, ENTRY, EXIT,
    PIN_BASED, PIN_BASED_ALWAYSON_WITHOUT_TRUE_MSR, PRIMARY, SECONDARY, SECONDARY_EXIT, TERTIARY,
    VM_ENTRY_ALWAYSON_WITHOUT_TRUE_MSR, VM_EXIT_ALWAYSON_WITHOUT_TRUE_MSR,
};

/// IA32_VMX_PINBASED_CTLS: allowed settings of the pin-based VM-execution controls.
pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
/// IA32_VMX_PROCBASED_CTLS: allowed settings of the primary processor-based controls.
pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
/// IA32_VMX_EXIT_CTLS: allowed settings of the primary VM-exit controls.
pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
/// IA32_VMX_ENTRY_CTLS: allowed settings of the VM-entry controls.
pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
/// IA32_VMX_PROCBASED_CTLS2: allowed settings of the secondary processor-based controls.
pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
/// IA32_VMX_TRUE_PINBASED_CTLS: pin-based controls including clearable default1 bits.
pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
/// IA32_VMX_TRUE_PROCBASED_CTLS: primary processor-based controls, true view.
pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
/// IA32_VMX_TRUE_EXIT_CTLS: VM-exit controls, true view.
pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
/// IA32_VMX_TRUE_ENTRY_CTLS: VM-entry controls, true view.
pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
/// IA32_VMX_PROCBASED_CTLS3: allowed-1 settings of the 64-bit tertiary controls.
pub const IA32_VMX_PROCBASED_CTLS3: u32 = 0x492;
/// IA32_VMX_EXIT_CTLS2: allowed-1 settings of the 64-bit secondary VM-exit controls.
pub const IA32_VMX_EXIT_CTLS2: u32 = 0x493;

/// One of the seven VMX control words: a VMCS control field and the capability MSR(s)
/// that describe it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ControlField {
    /// Pin-based VM-execution controls (VMCS 0x4000; MSR 0x481 / TRUE 0x48D).
    PinBased,
    /// Primary processor-based VM-execution controls (VMCS 0x4002; MSR 0x482 / TRUE
    /// 0x48E).
    Primary,
    /// Secondary processor-based VM-execution controls (VMCS 0x401E; MSR 0x48B).
    Secondary,
    /// Tertiary processor-based VM-execution controls (VMCS 0x2034, 64-bit; allowed-1
    /// MSR 0x492).
    Tertiary,
    /// Primary VM-exit controls (VMCS 0x400C; MSR 0x483 / TRUE 0x48F).
    Exit,
    /// Secondary VM-exit controls (VMCS 0x2044, 64-bit; allowed-1 MSR 0x493).
    SecondaryExit,
    /// VM-entry controls (VMCS 0x4012; MSR 0x484 / TRUE 0x490).
    Entry,
}

impl ControlField {
    /// All seven words, in VMCS-setup order (also vmxcap's section order and the order
    /// of the JSON reports).
    pub const ALL: [ControlField; 7] = [
        Self::PinBased,
        Self::Primary,
        Self::Secondary,
        Self::Tertiary,
        Self::Exit,
        Self::SecondaryExit,
        Self::Entry,
    ];

    /// Human name, as QEMU's `scripts/kvm/vmxcap` titles the section.
    pub const fn name(self) -> &'static str {
        match self {
            Self::PinBased => "pin-based controls",
            Self::Primary => "primary processor-based controls",
            Self::Secondary => "secondary processor-based controls",
            Self::Tertiary => "tertiary processor-based controls",
            Self::Exit => "VM-Exit controls",
            Self::SecondaryExit => "secondary VM-Exit controls",
            Self::Entry => "VM-Entry controls",
        }
    }

    /// The same as [`name`](Self::name) (vmx-caps' spelling).
    pub const fn title(self) -> &'static str {
        self.name()
    }

    /// A stable lowercase identifier (`"pin_based"`, `"primary"`, ...): the JSON key
    /// and the command-line spelling.
    pub const fn id(self) -> &'static str {
        match self {
            Self::PinBased => "pin_based",
            Self::Primary => "primary",
            Self::Secondary => "secondary",
            Self::Tertiary => "tertiary",
            Self::Exit => "exit",
            Self::SecondaryExit => "secondary_exit",
            Self::Entry => "entry",
        }
    }

    /// The same as [`id`](Self::id) (vmx-controls' spelling).
    pub const fn json_key(self) -> &'static str {
        self.id()
    }

    /// The (legacy, non-TRUE) capability MSR, the one Linux `setup_vmcs_config` reads.
    pub const fn msr(self) -> u32 {
        match self {
            Self::PinBased => IA32_VMX_PINBASED_CTLS,
            Self::Primary => IA32_VMX_PROCBASED_CTLS,
            Self::Secondary => IA32_VMX_PROCBASED_CTLS2,
            Self::Tertiary => IA32_VMX_PROCBASED_CTLS3,
            Self::Exit => IA32_VMX_EXIT_CTLS,
            Self::SecondaryExit => IA32_VMX_EXIT_CTLS2,
            Self::Entry => IA32_VMX_ENTRY_CTLS,
        }
    }

    /// The same as [`msr`](Self::msr) (vmx-controls' spelling).
    pub const fn capability_msr(self) -> u32 {
        self.msr()
    }

    /// The TRUE capability MSR (IA32_VMX_BASIC\[55\]), for the four words that have one.
    pub const fn true_msr(self) -> Option<u32> {
        match self {
            Self::PinBased => Some(IA32_VMX_TRUE_PINBASED_CTLS),
            Self::Primary => Some(IA32_VMX_TRUE_PROCBASED_CTLS),
            Self::Exit => Some(IA32_VMX_TRUE_EXIT_CTLS),
            Self::Entry => Some(IA32_VMX_TRUE_ENTRY_CTLS),
            _ => None,
        }
    }

    /// The same as [`true_msr`](Self::true_msr) (vmx-controls' spelling).
    pub const fn true_capability_msr(self) -> Option<u32> {
        self.true_msr()
    }

    /// VMCS field encoding of the control word.
    pub const fn vmcs_encoding(self) -> u32 {
        match self {
            Self::PinBased => 0x4000,
            Self::Primary => 0x4002,
            Self::Secondary => 0x401E,
            Self::Tertiary => 0x2034,
            Self::Exit => 0x400C,
            Self::SecondaryExit => 0x2044,
            Self::Entry => 0x4012,
        }
    }

    /// Whether the word is 64 bits wide (tertiary and secondary VM-exit controls).
    pub const fn is_64bit(self) -> bool {
        matches!(self, Self::Tertiary | Self::SecondaryExit)
    }

    /// Whether the word is described by an allowed-1-only MSR: the 64-bit words, the
    /// same as [`is_64bit`](Self::is_64bit).
    pub const fn is_allowed1_only(self) -> bool {
        self.is_64bit()
    }

    /// Default1 bits: reserved-as-1 in the legacy MSR (SDM A.2); 0 for words without.
    pub const fn default1(self) -> u32 {
        match self {
            Self::PinBased => PIN_BASED_ALWAYSON_WITHOUT_TRUE_MSR,
            Self::Primary => CPU_BASED_ALWAYSON_WITHOUT_TRUE_MSR,
            Self::Exit => VM_EXIT_ALWAYSON_WITHOUT_TRUE_MSR,
            Self::Entry => VM_ENTRY_ALWAYSON_WITHOUT_TRUE_MSR,
            _ => 0,
        }
    }

    /// The name table of this word (the `NAMES` of its flag type), ascending by bit.
    pub const fn names(self) -> &'static [BitName] {
        match self {
            Self::PinBased => PIN_BASED,
            Self::Primary => PRIMARY,
            Self::Secondary => SECONDARY,
            Self::Tertiary => TERTIARY,
            Self::Exit => EXIT,
            Self::SecondaryExit => SECONDARY_EXIT,
            Self::Entry => ENTRY,
        }
    }

    /// Format `bits` of this field as `NAME | NAME | 0xREST` with the field's flag
    /// type (`describe()` of [`PinBasedControls`] and the others); bits 63:32 of a
    /// 32-bit field do not exist and are dropped.
    pub fn describe_bits(self, bits: u64) -> String {
        // Truncation is the point for the 32-bit fields.
        let low = bits as u32;
        match self {
            Self::PinBased => PinBasedControls::from_bits_retain(low).describe(),
            Self::Primary => PrimaryControls::from_bits_retain(low).describe(),
            Self::Secondary => SecondaryControls::from_bits_retain(low).describe(),
            Self::Tertiary => TertiaryControls::from_bits_retain(bits).describe(),
            Self::Exit => ExitControls::from_bits_retain(low).describe(),
            Self::SecondaryExit => SecondaryExitControls::from_bits_retain(bits).describe(),
            Self::Entry => EntryControls::from_bits_retain(low).describe(),
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

impl core::fmt::Display for ControlField {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MSR indices per SDM Vol. 3D A.3-A.5 / Linux `msr-index.h`; VMCS encodings per
    /// Linux `asm/vmx.h` (`PIN_BASED_VM_EXEC_CONTROL` 0x4000, `TERTIARY_VM_EXEC_CONTROL`
    /// 0x2034, `SECONDARY_VM_EXIT_CONTROLS` 0x2044, ...).
    #[test]
    fn msrs_encodings_and_masks() {
        assert_eq!(ControlField::PinBased.msr(), 0x481);
        assert_eq!(ControlField::Primary.true_msr(), Some(0x48E));
        assert_eq!(ControlField::Secondary.true_msr(), None);
        assert_eq!(ControlField::Tertiary.capability_msr(), 0x492);
        assert_eq!(ControlField::SecondaryExit.msr(), 0x493);
        assert_eq!(ControlField::Tertiary.vmcs_encoding(), 0x2034);
        assert_eq!(ControlField::Entry.vmcs_encoding(), 0x4012);
        assert!(ControlField::Tertiary.is_allowed1_only());
        assert!(!ControlField::Entry.is_64bit());
        assert_eq!(ControlField::Exit.default1(), 0x36DFF);
        assert_eq!(ControlField::Secondary.default1(), 0);
        let mut ids: Vec<_> = ControlField::ALL.iter().map(|w| w.id()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 7);
        assert_eq!(ControlField::Exit.to_string(), "VM-Exit controls");
    }

    #[test]
    fn describe_and_hex_follow_the_width() {
        assert_eq!(
            ControlField::PinBased.describe_bits(1 << 32 | 0x8),
            "NMI_EXITING"
        );
        assert_eq!(ControlField::PinBased.hex(0xff), "0x000000ff");
        assert_eq!(ControlField::Tertiary.hex(0x10), "0x0000000000000010");
    }
}
