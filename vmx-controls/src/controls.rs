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

/// One of the seven VMCS control fields a VMM configures: moved to
/// [`x86_kvm_base::control_bits::ControlField`] (the one type for the seven words, with
/// their capability MSRs and VMCS encodings), re-exported here.
pub use x86_kvm_base::control_bits::ControlField;

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
        Self::FIELD.describe_bits(self.raw_u64())
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
