// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Indices of the VMX capability MSRs (Linux `msr-index.h` names, without the `MSR_`
//! prefix), and the table of which of them a capability set requires.

// The eleven control-word capability MSRs live with the control words in x86-kvm-base
// (moved there); re-exported here so this module still lists every VMX MSR.
pub use x86_kvm_base::control_bits::{
    IA32_VMX_ENTRY_CTLS, IA32_VMX_EXIT_CTLS, IA32_VMX_EXIT_CTLS2, IA32_VMX_PINBASED_CTLS,
    IA32_VMX_PROCBASED_CTLS, IA32_VMX_PROCBASED_CTLS2, IA32_VMX_PROCBASED_CTLS3,
    IA32_VMX_TRUE_ENTRY_CTLS, IA32_VMX_TRUE_EXIT_CTLS, IA32_VMX_TRUE_PINBASED_CTLS,
    IA32_VMX_TRUE_PROCBASED_CTLS,
};

/// IA32_VMX_BASIC: VMCS revision, region size, memory type, feature flags.
pub const IA32_VMX_BASIC: u32 = 0x480;
/// IA32_VMX_MISC: miscellaneous VMX data (preemption-timer rate, activity states, ...).
pub const IA32_VMX_MISC: u32 = 0x485;
/// IA32_VMX_CR0_FIXED0: CR0 bits fixed to 1 in VMX operation.
pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
/// IA32_VMX_CR0_FIXED1: CR0 bits allowed to be 1 in VMX operation.
pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
/// IA32_VMX_CR4_FIXED0: CR4 bits fixed to 1 in VMX operation.
pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
/// IA32_VMX_CR4_FIXED1: CR4 bits allowed to be 1 in VMX operation.
pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
/// IA32_VMX_VMCS_ENUM: highest index used in VMCS field encodings (bits 9:1).
pub const IA32_VMX_VMCS_ENUM: u32 = 0x48A;
/// IA32_VMX_EPT_VPID_CAP: EPT capabilities (low dword) and VPID capabilities (high dword).
pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
/// IA32_VMX_VMFUNC: allowed-1 settings of the VM-function controls.
pub const IA32_VMX_VMFUNC: u32 = 0x491;

/// First VMX capability MSR index.
pub const FIRST: u32 = IA32_VMX_BASIC;
/// Last VMX capability MSR index known to this crate.
pub const LAST: u32 = IA32_VMX_EXIT_CTLS2;

/// Every known VMX capability MSR index, ascending.
pub const ALL: [u32; 20] = [
    IA32_VMX_BASIC,
    IA32_VMX_PINBASED_CTLS,
    IA32_VMX_PROCBASED_CTLS,
    IA32_VMX_EXIT_CTLS,
    IA32_VMX_ENTRY_CTLS,
    IA32_VMX_MISC,
    IA32_VMX_CR0_FIXED0,
    IA32_VMX_CR0_FIXED1,
    IA32_VMX_CR4_FIXED0,
    IA32_VMX_CR4_FIXED1,
    IA32_VMX_VMCS_ENUM,
    IA32_VMX_PROCBASED_CTLS2,
    IA32_VMX_EPT_VPID_CAP,
    IA32_VMX_TRUE_PINBASED_CTLS,
    IA32_VMX_TRUE_PROCBASED_CTLS,
    IA32_VMX_TRUE_EXIT_CTLS,
    IA32_VMX_TRUE_ENTRY_CTLS,
    IA32_VMX_VMFUNC,
    IA32_VMX_PROCBASED_CTLS3,
    IA32_VMX_EXIT_CTLS2,
];

/// MSRs every VMX-capable CPU implements (SDM Appendix A: "always" with CPUID VMX);
/// a capability set without one of them is rejected.
pub const REQUIRED: [u32; 11] = {
    // They are the contiguous run IA32_VMX_BASIC..=IA32_VMX_VMCS_ENUM, i.e. the first
    // entries of ALL: taken from there so the list is written once.
    let mut r = [0; 11];
    let mut i = 0;
    while i < r.len() {
        r[i] = ALL[i];
        i += 1;
    }
    r
};

/// Whether `index` is one of the VMX capability MSRs 0x480..=0x493.
pub const fn is_vmx_msr(index: u32) -> bool {
    index >= FIRST && index <= LAST
}

/// Whether `index` is a required MSR (see [`REQUIRED`]).
pub const fn is_required(index: u32) -> bool {
    index >= IA32_VMX_BASIC && index <= IA32_VMX_VMCS_ENUM
}

/// The Linux name of a VMX capability MSR (`"IA32_VMX_BASIC"`, ...), `None` if unknown.
pub const fn name(index: u32) -> Option<&'static str> {
    Some(match index {
        IA32_VMX_BASIC => "IA32_VMX_BASIC",
        IA32_VMX_PINBASED_CTLS => "IA32_VMX_PINBASED_CTLS",
        IA32_VMX_PROCBASED_CTLS => "IA32_VMX_PROCBASED_CTLS",
        IA32_VMX_EXIT_CTLS => "IA32_VMX_EXIT_CTLS",
        IA32_VMX_ENTRY_CTLS => "IA32_VMX_ENTRY_CTLS",
        IA32_VMX_MISC => "IA32_VMX_MISC",
        IA32_VMX_CR0_FIXED0 => "IA32_VMX_CR0_FIXED0",
        IA32_VMX_CR0_FIXED1 => "IA32_VMX_CR0_FIXED1",
        IA32_VMX_CR4_FIXED0 => "IA32_VMX_CR4_FIXED0",
        IA32_VMX_CR4_FIXED1 => "IA32_VMX_CR4_FIXED1",
        IA32_VMX_VMCS_ENUM => "IA32_VMX_VMCS_ENUM",
        IA32_VMX_PROCBASED_CTLS2 => "IA32_VMX_PROCBASED_CTLS2",
        IA32_VMX_EPT_VPID_CAP => "IA32_VMX_EPT_VPID_CAP",
        IA32_VMX_TRUE_PINBASED_CTLS => "IA32_VMX_TRUE_PINBASED_CTLS",
        IA32_VMX_TRUE_PROCBASED_CTLS => "IA32_VMX_TRUE_PROCBASED_CTLS",
        IA32_VMX_TRUE_EXIT_CTLS => "IA32_VMX_TRUE_EXIT_CTLS",
        IA32_VMX_TRUE_ENTRY_CTLS => "IA32_VMX_TRUE_ENTRY_CTLS",
        IA32_VMX_VMFUNC => "IA32_VMX_VMFUNC",
        IA32_VMX_PROCBASED_CTLS3 => "IA32_VMX_PROCBASED_CTLS3",
        IA32_VMX_EXIT_CTLS2 => "IA32_VMX_EXIT_CTLS2",
        _ => return None,
    })
}

/// Writes `NAME (0xIDX)[ bits 0xBITS]: message`, the one-line form shared by
/// [`crate::baseline::Note`] and [`crate::check::Finding`].
pub(crate) fn write_note(
    f: &mut std::fmt::Formatter<'_>,
    index: u32,
    bits: u64,
    message: &str,
) -> std::fmt::Result {
    write!(f, "{} ({index:#x})", name(index).unwrap_or("?"))?;
    if bits != 0 {
        write!(f, " bits {bits:#x}")?;
    }
    write!(f, ": {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_contiguous_and_named() {
        for (i, idx) in ALL.iter().enumerate() {
            assert_eq!(*idx, FIRST + i as u32);
            assert!(name(*idx).is_some());
            assert!(is_vmx_msr(*idx));
        }
        assert!(!is_vmx_msr(0x47f));
        assert!(!is_vmx_msr(0x494));
        assert_eq!(name(0x494), None);
        assert_eq!(name(IA32_VMX_EXIT_CTLS2), Some("IA32_VMX_EXIT_CTLS2"));
    }

    #[test]
    fn required_matches_predicate() {
        for idx in ALL {
            assert_eq!(REQUIRED.contains(&idx), is_required(idx), "{idx:#x}");
        }
    }
}
