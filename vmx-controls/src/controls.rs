// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The VMX control words as `bitflags` types, one per VMCS control field, and
//! [`ControlField`] / [`ControlBits`] to handle the seven alike.
//!
//! The flag types and their names moved to [`x86_kvm_base::control_bits`] (the one
//! name table the reports print from); they are re-exported here. Every bit named by
//! Linux (`arch/x86/include/asm/vmx.h`) has a constant with the Linux name minus its
//! prefix (`PIN_BASED_NMI_EXITING` becomes [`PinBasedControls::NMI_EXITING`]). The
//! reserved-as-1 ("default1") bits are available as `DEFAULT1`.

use core::fmt;

pub use x86_kvm_base::control_bits::{
    EntryControls, ExitControls, PinBasedControls, PrimaryControls, SecondaryControls,
    SecondaryExitControls, TertiaryControls,
};

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

macro_rules! control_bits_impl {
    ($($ty:ident => $field:expr),* $(,)?) => {$(
        impl ControlBits for $ty {
            const FIELD: ControlField = $field;
            fn raw_u64(self) -> u64 {
                u64::from(self.bits())
            }
            fn from_raw_u64(raw: u64) -> Self {
                // Truncation is the point: a 32-bit field has no bits 63:32.
                Self::from_bits_retain(raw as _)
            }
            fn unknown_u64(self) -> u64 {
                u64::from(self.unknown().bits())
            }
            fn names(self) -> Vec<&'static str> {
                self.flag_names()
            }
            fn named_bits_u64(self) -> u64 {
                u64::from((self & Self::all()).bits())
            }
        }
    )*};
}

control_bits_impl! {
    PinBasedControls => ControlField::PinBased,
    PrimaryControls => ControlField::Primary,
    SecondaryControls => ControlField::Secondary,
    TertiaryControls => ControlField::Tertiary,
    ExitControls => ControlField::Exit,
    SecondaryExitControls => ControlField::SecondaryExit,
    EntryControls => ControlField::Entry,
}
