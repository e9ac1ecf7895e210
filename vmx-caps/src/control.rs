// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`ControlWord`]: the seven VMX control words and the MSRs that describe them, plus
//! the default1 ("always on without TRUE MSR") masks of SDM A.2.

use crate::msr;

// The default1 masks of SDM A.2 live in x86-kvm-base (moved there).
pub use x86_kvm_base::control_bits::{
    CPU_BASED_ALWAYSON_WITHOUT_TRUE_MSR, PIN_BASED_ALWAYSON_WITHOUT_TRUE_MSR,
    VM_ENTRY_ALWAYSON_WITHOUT_TRUE_MSR, VM_EXIT_ALWAYSON_WITHOUT_TRUE_MSR,
};

/// One of the VMX control words a capability MSR describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ControlWord {
    /// Pin-based VM-execution controls (0x481 / TRUE 0x48D).
    PinBased,
    /// Primary processor-based VM-execution controls (0x482 / TRUE 0x48E).
    Primary,
    /// Secondary processor-based VM-execution controls (0x48B).
    Secondary,
    /// Tertiary processor-based VM-execution controls, 64-bit allowed-1 (0x492).
    Tertiary,
    /// Primary VM-exit controls (0x483 / TRUE 0x48F).
    Exit,
    /// Secondary VM-exit controls, 64-bit allowed-1 (0x493).
    SecondaryExit,
    /// VM-entry controls (0x484 / TRUE 0x490).
    Entry,
}

impl ControlWord {
    /// All control words in vmxcap's section order.
    pub const ALL: [ControlWord; 7] = [
        Self::PinBased,
        Self::Primary,
        Self::Secondary,
        Self::Tertiary,
        Self::Exit,
        Self::SecondaryExit,
        Self::Entry,
    ];

    /// The (legacy) capability MSR.
    pub const fn msr(self) -> u32 {
        match self {
            Self::PinBased => msr::IA32_VMX_PINBASED_CTLS,
            Self::Primary => msr::IA32_VMX_PROCBASED_CTLS,
            Self::Secondary => msr::IA32_VMX_PROCBASED_CTLS2,
            Self::Tertiary => msr::IA32_VMX_PROCBASED_CTLS3,
            Self::Exit => msr::IA32_VMX_EXIT_CTLS,
            Self::SecondaryExit => msr::IA32_VMX_EXIT_CTLS2,
            Self::Entry => msr::IA32_VMX_ENTRY_CTLS,
        }
    }

    /// The TRUE capability MSR, for the four words that have one.
    pub const fn true_msr(self) -> Option<u32> {
        match self {
            Self::PinBased => Some(msr::IA32_VMX_TRUE_PINBASED_CTLS),
            Self::Primary => Some(msr::IA32_VMX_TRUE_PROCBASED_CTLS),
            Self::Exit => Some(msr::IA32_VMX_TRUE_EXIT_CTLS),
            Self::Entry => Some(msr::IA32_VMX_TRUE_ENTRY_CTLS),
            _ => None,
        }
    }

    /// Whether the word is 64-bit and described by an allowed-1-only MSR.
    pub const fn is_allowed1_only(self) -> bool {
        matches!(self, Self::Tertiary | Self::SecondaryExit)
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

    /// A stable lowercase identifier (`"pin_based"`, `"primary"`, ...), used as the JSON
    /// key and on the command line.
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

    /// vmxcap's section title for this word.
    pub const fn title(self) -> &'static str {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msrs_and_masks() {
        assert_eq!(ControlWord::PinBased.msr(), 0x481);
        assert_eq!(ControlWord::Primary.true_msr(), Some(0x48E));
        assert_eq!(ControlWord::Secondary.true_msr(), None);
        assert_eq!(ControlWord::Tertiary.msr(), 0x492);
        assert_eq!(ControlWord::SecondaryExit.msr(), 0x493);
        assert!(ControlWord::Tertiary.is_allowed1_only());
        assert!(!ControlWord::Entry.is_allowed1_only());
        assert_eq!(ControlWord::Exit.default1(), 0x36DFF);
        assert_eq!(ControlWord::Secondary.default1(), 0);
        let mut ids: Vec<_> = ControlWord::ALL.iter().map(|w| w.id()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 7);
    }
}
