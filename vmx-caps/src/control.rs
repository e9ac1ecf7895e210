// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`ControlWord`]: the seven VMX control words and the MSRs that describe them, plus
//! the default1 ("always on without TRUE MSR") masks of SDM A.2.

// The default1 masks of SDM A.2 live in x86-kvm-base (moved there).
pub use x86_kvm_base::control_bits::{
    CPU_BASED_ALWAYSON_WITHOUT_TRUE_MSR, PIN_BASED_ALWAYSON_WITHOUT_TRUE_MSR,
    VM_ENTRY_ALWAYSON_WITHOUT_TRUE_MSR, VM_EXIT_ALWAYSON_WITHOUT_TRUE_MSR,
};

/// One of the VMX control words a capability MSR describes: moved to
/// [`x86_kvm_base::control_bits::ControlField`] (the one type for the seven words, with
/// their capability MSRs and VMCS encodings), re-exported here under its old name.
/// `msr`, `true_msr`, `is_allowed1_only`, `default1`, `id` and `title` keep working.
pub use x86_kvm_base::control_bits::ControlField as ControlWord;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msr;

    /// The moved type answers with this crate's MSR table (`msr::NAMES` order of
    /// Linux `msr-index.h`) and keeps vmxcap's section titles.
    #[test]
    fn control_word_is_the_shared_control_field() {
        assert_eq!(ControlWord::PinBased.msr(), msr::IA32_VMX_PINBASED_CTLS);
        assert_eq!(
            ControlWord::Entry.true_msr(),
            Some(msr::IA32_VMX_TRUE_ENTRY_CTLS)
        );
        assert_eq!(ControlWord::SecondaryExit.msr(), msr::IA32_VMX_EXIT_CTLS2);
        assert_eq!(
            ControlWord::Exit.default1(),
            VM_EXIT_ALWAYSON_WITHOUT_TRUE_MSR
        );
        assert_eq!(
            ControlWord::Primary.title(),
            "primary processor-based controls"
        );
        assert_eq!(ControlWord::ALL.len(), 7);
    }
}
