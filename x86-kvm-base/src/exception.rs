// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The x86 exception vectors (0-31) and which of them push an error code.
//!
//! Vector numbers and names follow Linux `arch/x86/include/asm/trapnr.h` (`X86_TRAP_*`)
//! and the SDM Vol. 3A, 6.3.1 / table 6-1. The error-code rule follows Linux
//! `x86_exception_has_error_code` (`arch/x86/kvm/x86.h`).

/// #DE, divide error.
pub const X86_TRAP_DE: u8 = 0;
/// #DB, debug exception (payload: new DR6 bits).
pub const X86_TRAP_DB: u8 = 1;
/// NMI vector.
pub const X86_TRAP_NMI: u8 = 2;
/// #BP, breakpoint (INT3; a *software* exception).
pub const X86_TRAP_BP: u8 = 3;
/// #OF, overflow (INTO; a *software* exception).
pub const X86_TRAP_OF: u8 = 4;
/// #BR, bound range exceeded.
pub const X86_TRAP_BR: u8 = 5;
/// #UD, invalid opcode.
pub const X86_TRAP_UD: u8 = 6;
/// #NM, device not available.
pub const X86_TRAP_NM: u8 = 7;
/// #DF, double fault (error code, always 0).
pub const X86_TRAP_DF: u8 = 8;
/// Coprocessor segment overrun (reserved since the 486).
pub const X86_TRAP_OLD_MF: u8 = 9;
/// #TS, invalid TSS (error code).
pub const X86_TRAP_TS: u8 = 10;
/// #NP, segment not present (error code).
pub const X86_TRAP_NP: u8 = 11;
/// #SS, stack-segment fault (error code).
pub const X86_TRAP_SS: u8 = 12;
/// #GP, general protection (error code).
pub const X86_TRAP_GP: u8 = 13;
/// #PF, page fault (error code; payload: CR2).
pub const X86_TRAP_PF: u8 = 14;
/// Spurious interrupt vector (Linux `X86_TRAP_SPURIOUS`; reserved by Intel).
pub const X86_TRAP_SPURIOUS: u8 = 15;
/// #MF, x87 floating-point error.
pub const X86_TRAP_MF: u8 = 16;
/// #AC, alignment check (error code).
pub const X86_TRAP_AC: u8 = 17;
/// #MC, machine check.
pub const X86_TRAP_MC: u8 = 18;
/// #XM, SIMD floating-point exception.
pub const X86_TRAP_XF: u8 = 19;
/// #VE, virtualization exception.
pub const X86_TRAP_VE: u8 = 20;
/// #CP, control-protection exception (error code when the guest has CET).
pub const X86_TRAP_CP: u8 = 21;
/// #VC, VMM communication exception (AMD SEV-ES).
pub const X86_TRAP_VC: u8 = 29;
/// Highest architectural exception vector (vectors 0..=31 are exceptions).
pub const LAST_EXCEPTION_VECTOR: u8 = 31;

/// The mnemonic of exception `vector` (`"#PF"`, `"NMI"`), or `None` for a vector above
/// 31 or one the architecture reserves.
///
/// ```
/// use x86_kvm_base::exception::{exception_name, X86_TRAP_NMI, X86_TRAP_PF};
///
/// assert_eq!(exception_name(X86_TRAP_PF), Some("#PF"));
/// assert_eq!(exception_name(X86_TRAP_NMI), Some("NMI"));
/// assert_eq!(exception_name(32), None); // an external interrupt vector
/// ```
pub const fn exception_name(vector: u8) -> Option<&'static str> {
    Some(match vector {
        X86_TRAP_DE => "#DE",
        X86_TRAP_DB => "#DB",
        X86_TRAP_NMI => "NMI",
        X86_TRAP_BP => "#BP",
        X86_TRAP_OF => "#OF",
        X86_TRAP_BR => "#BR",
        X86_TRAP_UD => "#UD",
        X86_TRAP_NM => "#NM",
        X86_TRAP_DF => "#DF",
        X86_TRAP_OLD_MF => "#MF(old)",
        X86_TRAP_TS => "#TS",
        X86_TRAP_NP => "#NP",
        X86_TRAP_SS => "#SS",
        X86_TRAP_GP => "#GP",
        X86_TRAP_PF => "#PF",
        X86_TRAP_MF => "#MF",
        X86_TRAP_AC => "#AC",
        X86_TRAP_MC => "#MC",
        X86_TRAP_XF => "#XM",
        X86_TRAP_VE => "#VE",
        X86_TRAP_CP => "#CP",
        X86_TRAP_VC => "#VC",
        _ => return None,
    })
}

/// Whether the guest has CET (shadow stacks or indirect-branch tracking) exposed, the
/// one input besides the vector that decides whether #CP pushes an error code.
///
/// KVM decides it from the guest's CPUID: #CP has an error code iff CR4.CET is not a
/// reserved bit for the guest (`!(vcpu->arch.cr4_guest_rsvd_bits & X86_CR4_CET)` in the
/// vCPU-aware `x86_exception_has_error_code` of the KVM CET series). Without CET in the
/// guest, vector 21 is a reserved vector, which pushes no error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum GuestCet {
    /// CET is not exposed to the guest (CR4.CET reserved): #CP has no error code.
    #[default]
    Absent,
    /// CET is exposed to the guest: #CP pushes an error code.
    Present,
}

impl GuestCet {
    /// `Present` for `true`.
    pub const fn from_bool(cet: bool) -> Self {
        if cet {
            Self::Present
        } else {
            Self::Absent
        }
    }
}

/// Whether delivering hardware exception `vector` in protected mode pushes an error
/// code (Linux `x86_exception_has_error_code`, `arch/x86/kvm/x86.h`; SDM Vol. 3A 6.13
/// and table 6-1): #DF, #TS, #NP, #SS, #GP, #PF, #AC always, and #CP (21) only when
/// the guest has CET ([`GuestCet`]). Vectors above 31 never do.
///
/// Real mode never pushes one; that part of the rule is the caller's (VM entry checks
/// it through CR0.PE, see [`crate::interruption::check_entry_interruption`]).
///
/// ```
/// use x86_kvm_base::exception::{
///     exception_has_error_code, GuestCet, X86_TRAP_CP, X86_TRAP_GP, X86_TRAP_UD,
/// };
///
/// assert!(exception_has_error_code(X86_TRAP_GP, GuestCet::Absent));
/// assert!(!exception_has_error_code(X86_TRAP_UD, GuestCet::Absent));
/// // #CP pushes an error code only for a guest with CET.
/// assert!(exception_has_error_code(X86_TRAP_CP, GuestCet::Present));
/// assert!(!exception_has_error_code(X86_TRAP_CP, GuestCet::Absent));
/// ```
pub const fn exception_has_error_code(vector: u8, guest_cet: GuestCet) -> bool {
    match vector {
        X86_TRAP_DF | X86_TRAP_TS | X86_TRAP_NP | X86_TRAP_SS | X86_TRAP_GP | X86_TRAP_PF
        | X86_TRAP_AC => true,
        X86_TRAP_CP => matches!(guest_cet, GuestCet::Present),
        _ => false,
    }
}

/// Whether `vector` is delivered as a *software* exception (VMX interruption type 6)
/// rather than a hardware one: #BP (INT3) and #OF (INTO) (Linux `kvm_exception_is_soft`,
/// `arch/x86/kvm/x86.h`; SDM Vol. 3C 25.8.3).
pub const fn exception_is_soft(vector: u8) -> bool {
    matches!(vector, X86_TRAP_BP | X86_TRAP_OF)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux `x86_exception_has_error_code` (arch/x86/kvm/x86.h), vector by vector,
    /// with the CET-dependent #CP of the KVM CET series.
    #[test]
    fn error_code_vectors_follow_x86_exception_has_error_code() {
        let with: Vec<u8> = (0..=255)
            .filter(|&v| exception_has_error_code(v, GuestCet::Absent))
            .collect();
        assert_eq!(with, [8, 10, 11, 12, 13, 14, 17]);
        let with_cet: Vec<u8> = (0..=255)
            .filter(|&v| exception_has_error_code(v, GuestCet::Present))
            .collect();
        assert_eq!(with_cet, [8, 10, 11, 12, 13, 14, 17, 21]);
    }

    #[test]
    fn names_and_soft_exceptions() {
        assert_eq!(exception_name(14), Some("#PF"));
        assert_eq!(exception_name(21), Some("#CP"));
        assert_eq!(exception_name(22), None);
        assert_eq!(exception_name(200), None);
        assert!(exception_is_soft(3) && exception_is_soft(4) && !exception_is_soft(1));
        assert_eq!(GuestCet::from_bool(true), GuestCet::Present);
    }
}
