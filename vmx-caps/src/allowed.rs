// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Allowed settings of VMX control words (SDM Appendix A.3-A.5).
//!
//! A 32-bit control word's capability MSR holds the *allowed-0 settings* in bits 31:0
//! (bit X set: control X must be 1) and the *allowed-1 settings* in bits 63:32 (bit 32+X
//! clear: control X must be 0). The 64-bit tertiary (0x492) and secondary VM-exit
//! (0x493) control words have allowed-1 settings only: every control may be 0.

/// Allowed settings of a 32-bit control word: allowed-0 in bits 31:0 ("must be one"),
/// allowed-1 in bits 63:32 ("may be one").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AllowedSettings(u64);

/// `adjust` failed: some required (`min`) control cannot be 1 on this CPU.
///
/// KVM's `adjust_vmx_controls` returns `-EIO` in this case and kvm_intel refuses to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error(
    "required VMX controls {missing:#010x} are not allowed to be 1 (required {required:#010x})"
)]
pub struct AdjustError {
    /// The `min` mask that was asked for.
    pub required: u32,
    /// The bits of `required` that the allowed-1 settings forbid.
    pub missing: u32,
}

/// What a capability MSR allows for one control bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BitSetting {
    /// May be 0 or 1 (vmxcap "yes").
    Flexible,
    /// Must be 1 (allowed-0 bit set; vmxcap "forced").
    MustBeOne,
    /// Must be 0 (allowed-1 bit clear; vmxcap "no").
    MustBeZero,
    /// Must be 1 and must be 0 at once: a malformed MSR (vmxcap "?").
    Contradictory,
}

impl AllowedSettings {
    /// Wraps a raw capability MSR value.
    pub const fn from_raw(msr: u64) -> Self {
        Self(msr)
    }

    /// Builds the MSR value from its two halves.
    pub const fn from_parts(must_be_one: u32, may_be_one: u32) -> Self {
        Self(((may_be_one as u64) << 32) | must_be_one as u64)
    }

    /// The raw MSR value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Allowed-0 settings (bits 31:0): controls that must be 1.
    pub const fn must_be_one(self) -> u32 {
        self.0 as u32
    }

    /// Allowed-1 settings (bits 63:32): controls that may be 1.
    pub const fn may_be_one(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Controls that must be 0 (complement of the allowed-1 settings).
    pub const fn must_be_zero(self) -> u32 {
        !self.may_be_one()
    }

    /// Controls that may be either 0 or 1 (allowed-0 clear and allowed-1 set).
    pub const fn flexible(self) -> u32 {
        self.may_be_one() & !self.must_be_one()
    }

    /// Must-be-1 controls that are not allowed to be 1 (non-zero only for a malformed
    /// MSR; well-formed MSRs have allowed-0 ⊆ allowed-1).
    pub const fn contradictory(self) -> u32 {
        self.must_be_one() & !self.may_be_one()
    }

    /// Whether control `bit` may be 0. Bits ≥ 32 are not controls and are always 0:
    /// `true`.
    pub const fn may_be_zero_bit(self, bit: u32) -> bool {
        bit >= 32 || self.must_be_one() & (1 << bit) == 0
    }

    /// Whether control `bit` may be 1. Bits ≥ 32 are never controls: `false`.
    pub const fn may_be_one_bit(self, bit: u32) -> bool {
        bit < 32 && self.may_be_one() & (1 << bit) != 0
    }

    /// What the MSR allows for control `bit` (bits ≥ 32: [`BitSetting::MustBeZero`]).
    pub const fn setting(self, bit: u32) -> BitSetting {
        match (self.may_be_zero_bit(bit), self.may_be_one_bit(bit)) {
            (true, true) => BitSetting::Flexible,
            (false, true) => BitSetting::MustBeOne,
            (true, false) => BitSetting::MustBeZero,
            (false, false) => BitSetting::Contradictory,
        }
    }

    /// Whether the control word `ctl` satisfies these settings (every must-be-1 bit set,
    /// no must-be-0 bit set) – the VM-entry check of SDM 26.2.1.1.
    pub const fn permits(self, ctl: u32) -> bool {
        ctl & self.must_be_one() == self.must_be_one() && ctl & !self.may_be_one() == 0
    }

    /// KVM `adjust_vmx_controls`: `ctl = (min | opt) & may_be_one | must_be_one`; fails,
    /// naming the bits, if a `min` bit did not survive. Optional bits silently drop out.
    ///
    /// ```
    /// use vmx_caps::AllowedSettings;
    ///
    /// // IA32_VMX_PINBASED_CTLS of a Coffee Lake: bits 1, 2, 4 must be 1; 0-6 may be 1.
    /// let pin = AllowedSettings::from_raw(0x0000_007f_0000_0016);
    /// // KVM: required ext-intr + NMI exiting (0x09), optional virtual NMIs, preemption
    /// // timer, posted interrupts (0xE0): posted interrupts (bit 7) drops out.
    /// assert_eq!(pin.adjust(0x09, 0xE0), Ok(0x7F));
    /// // Requiring posted interrupts fails, naming the bit.
    /// let err = pin.adjust(0x89, 0).unwrap_err();
    /// assert_eq!(err.missing, 0x80);
    /// ```
    pub fn adjust(self, min: u32, opt: u32) -> Result<u32, AdjustError> {
        let ctl = ((min | opt) & self.may_be_one()) | self.must_be_one();
        let missing = min & !ctl;
        if missing != 0 {
            return Err(AdjustError {
                required: min,
                missing,
            });
        }
        Ok(ctl)
    }

    /// The settings allowed on both `self` and `other` (fleet baseline): must-be-1 where
    /// either requires it, may-be-1 only where both allow it. The result may be
    /// contradictory (see [`Self::contradictory`]) when one side forces a bit the other
    /// forbids.
    pub const fn intersect(self, other: Self) -> Self {
        Self::from_parts(
            self.must_be_one() | other.must_be_one(),
            self.may_be_one() & other.may_be_one(),
        )
    }

    /// KVM's nested-restore rule (`vmx_restore_control_msr`): `self` is no more capable
    /// than `other` iff every bit `other` forces to 1 stays forced
    /// (`self.must_be_one ⊇ other.must_be_one`) and every bit `other` forbids stays
    /// forbidden (`self.may_be_one ⊆ other.may_be_one`).
    pub const fn is_subset_of(self, other: Self) -> bool {
        other.must_be_one() & !self.must_be_one() == 0
            && self.may_be_one() & !other.may_be_one() == 0
    }
}

/// Allowed-1-only settings of a 64-bit control word (tertiary controls 0x492, secondary
/// VM-exit controls 0x493): bit X set means control X may be 1; every control may be 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Allowed1Settings(u64);

impl Allowed1Settings {
    /// Wraps a raw capability MSR value.
    pub const fn from_raw(msr: u64) -> Self {
        Self(msr)
    }

    /// The raw MSR value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// Controls that may be 1 (the whole MSR).
    pub const fn may_be_one(self) -> u64 {
        self.0
    }

    /// Whether control `bit` may be 1 (bits ≥ 64: `false`).
    pub const fn may_be_one_bit(self, bit: u32) -> bool {
        bit < 64 && self.0 & (1 << bit) != 0
    }

    /// What the MSR allows for `bit`: [`BitSetting::Flexible`] or [`BitSetting::MustBeZero`].
    pub const fn setting(self, bit: u32) -> BitSetting {
        if self.may_be_one_bit(bit) {
            BitSetting::Flexible
        } else {
            BitSetting::MustBeZero
        }
    }

    /// Whether the control word `ctl` sets only allowed bits.
    pub const fn permits(self, ctl: u64) -> bool {
        ctl & !self.0 == 0
    }

    /// KVM `adjust_vmx_controls64`: `opt & msr` (no minimum, cannot fail).
    pub const fn adjust(self, opt: u64) -> u64 {
        opt & self.0
    }

    /// Controls allowed on both (fleet baseline).
    pub const fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// Whether `self` allows no control that `other` forbids (bitwise subset).
    pub const fn is_subset_of(self, other: Self) -> bool {
        self.0 & !other.0 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // SKX legacy primary controls (reference §6.6).
    const SKX_PRIMARY: u64 = 0xFFF9_FFFE_0401_E172;
    const SKX_TRUE_PRIMARY: u64 = 0xFFF9_FFFE_0400_6172;

    #[test]
    fn halves_and_bit_queries() {
        let a = AllowedSettings::from_raw(SKX_PRIMARY);
        assert_eq!(a.raw(), SKX_PRIMARY);
        assert_eq!(a.must_be_one(), 0x0401_E172);
        assert_eq!(a.may_be_one(), 0xFFF9_FFFE);
        assert_eq!(AllowedSettings::from_parts(0x0401_E172, 0xFFF9_FFFE), a);
        // CR3-load exiting (15) forced in the legacy MSR, flexible in the TRUE one.
        assert_eq!(a.setting(15), BitSetting::MustBeOne);
        assert!(!a.may_be_zero_bit(15));
        let t = AllowedSettings::from_raw(SKX_TRUE_PRIMARY);
        assert_eq!(t.setting(15), BitSetting::Flexible);
        // Activate tertiary controls (17) must be 0 on SKX.
        assert_eq!(a.setting(17), BitSetting::MustBeZero);
        assert!(!a.may_be_one_bit(17));
        // Activate secondary controls (31) flexible.
        assert_eq!(a.setting(31), BitSetting::Flexible);
        assert_eq!(a.flexible() & (1 << 31), 1 << 31);
        assert_eq!(a.must_be_zero(), !0xFFF9_FFFE);
        // Out-of-range bits are never allowed and never panic.
        assert!(!a.may_be_one_bit(32));
        assert!(a.may_be_zero_bit(99));
        assert_eq!(a.setting(200), BitSetting::MustBeZero);
        assert_eq!(a.contradictory(), 0);
    }

    #[test]
    fn contradictory_bits() {
        let a = AllowedSettings::from_parts(0b11, 0b01);
        assert_eq!(a.contradictory(), 0b10);
        assert_eq!(a.setting(1), BitSetting::Contradictory);
    }

    #[test]
    fn permits_checks_both_halves() {
        let a = AllowedSettings::from_parts(0x16, 0xFF);
        assert!(a.permits(0x16));
        assert!(a.permits(0xFF));
        assert!(!a.permits(0x14), "cleared a must-be-1 bit");
        assert!(!a.permits(0x116), "set a must-be-0 bit");
    }

    #[test]
    fn adjust_kvm_semantics() {
        let a = AllowedSettings::from_raw(SKX_PRIMARY);
        // KVM's required primary set on x86_64 and optional set (reference §3.2).
        let min = (1 << 7)
            | (1 << 15)
            | (1 << 16)
            | (1 << 24)
            | (1 << 23)
            | (1 << 3)
            | (1 << 10)
            | (1 << 29)
            | (1 << 9)
            | (1 << 11)
            | (1 << 2)
            | (1 << 19)
            | (1 << 20);
        let opt = (1 << 12)
            | (1 << 21)
            | (1 << 25)
            | (1 << 27)
            | (1 << 28)
            | (1 << 22)
            | (1 << 30)
            | (1 << 31)
            | (1 << 17);
        // Reference §5.4: SKX primary = 0xfff9fffe (tertiary bit 17 dropped).
        assert_eq!(a.adjust(min, opt), Ok(0xfff9_fffe));
    }

    #[test]
    fn adjust_corner_cases() {
        let a = AllowedSettings::from_parts(0x16, 0x7F);
        // Must-be-1 bits always appear even when not asked for.
        assert_eq!(a.adjust(0, 0), Ok(0x16));
        // Optional bits that are not allowed drop out silently.
        assert_eq!(a.adjust(0, 0xFFFF_FFFF), Ok(0x7F));
        // A required bit that is not allowed fails, naming it.
        assert_eq!(
            a.adjust(0x81, 0),
            Err(AdjustError {
                required: 0x81,
                missing: 0x80
            })
        );
        // Several missing bits are all named.
        assert_eq!(a.adjust(0xF00, 1).unwrap_err().missing, 0xF00);
        // A required bit that is must-be-1 anyway is fine.
        assert_eq!(a.adjust(0x10, 0), Ok(0x16));
        // Malformed MSR (must-be-1 not allowed-1): low is ORed after masking, like KVM.
        let bad = AllowedSettings::from_parts(0x100, 0x0);
        assert_eq!(bad.adjust(0x100, 0), Ok(0x100));
        // All zeros: nothing allowed, nothing forced.
        assert_eq!(AllowedSettings::from_raw(0).adjust(0, !0), Ok(0));
        assert!(AllowedSettings::from_raw(0).adjust(1, 0).is_err());
        let e = a.adjust(0x80, 0).unwrap_err();
        assert!(e.to_string().contains("0x00000080"));
    }

    #[test]
    fn intersect_and_subset() {
        let a = AllowedSettings::from_parts(0x16, 0xFF);
        let b = AllowedSettings::from_parts(0x06, 0x7F);
        let i = a.intersect(b);
        assert_eq!(i, AllowedSettings::from_parts(0x16, 0x7F));
        assert!(i.is_subset_of(a));
        assert!(i.is_subset_of(b));
        assert!(!a.is_subset_of(b), "a allows bit 7, b does not");
        assert!(!b.is_subset_of(a), "b may clear bit 4, a forces it");
        assert!(a.is_subset_of(a));
    }

    #[test]
    fn allowed1_only() {
        let t = Allowed1Settings::from_raw(0x10);
        assert_eq!(t.raw(), 0x10);
        assert_eq!(t.may_be_one(), 0x10);
        assert!(t.may_be_one_bit(4));
        assert!(!t.may_be_one_bit(5));
        assert!(!t.may_be_one_bit(64));
        assert_eq!(t.setting(4), BitSetting::Flexible);
        assert_eq!(t.setting(0), BitSetting::MustBeZero);
        assert_eq!(t.adjust(0xFFFF_FFFF_FFFF_FFFF), 0x10);
        assert_eq!(t.adjust(0x1), 0);
        assert!(t.permits(0x10));
        assert!(!t.permits(0x11));
        let u = Allowed1Settings::from_raw(0x1 << 63 | 0x10);
        assert!(u.may_be_one_bit(63));
        assert_eq!(t.intersect(u), t);
        assert!(t.is_subset_of(u));
        assert!(!u.is_subset_of(t));
    }
}
