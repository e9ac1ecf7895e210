// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`VmxCaps`]: a decoded, validated capability set.

use crate::allowed::{Allowed1Settings, AllowedSettings, BitSetting};
use crate::basic::VmxBasic;
use crate::control::ControlWord;
use crate::ept_vpid::EptVpidCap;
use crate::error::CapsError;
use crate::fixed::{CrFixed, VmFunc, VmcsEnum};
use crate::misc::VmxMisc;
use crate::msr;
use crate::raw::RawMsrs;

/// A decoded capability set: the raw MSRs it came from, with typed views.
///
/// Built by [`VmxCaps::from_raw`], which guarantees every required MSR
/// ([`msr::REQUIRED`]) is present and every index is a VMX capability MSR. The MSRs
/// whose existence depends on other bits (secondary/tertiary/secondary-exit controls,
/// EPT/VPID, VMFUNC, TRUE controls) may be absent; the `check` module reports presence
/// that disagrees with the existence conditions.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VmxCaps {
    raw: RawMsrs,
    // Values by `index - 0x480`, for cheap accessors.
    vals: [Option<u64>; 20],
}

/// What a capability set allows for one control bit, combining legacy and TRUE MSRs
/// the way QEMU's vmxcap does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ControlSetting {
    /// 0 and 1 both allowed (vmxcap "yes").
    Yes,
    /// Only 0 allowed (vmxcap "no").
    No,
    /// Only 1 allowed (vmxcap "forced").
    Forced,
    /// A default1 control the legacy MSR forces to 1 but the TRUE MSR lets be 0
    /// (vmxcap "default").
    Default,
    /// Neither allowed: malformed MSR (vmxcap "?").
    Contradictory,
}

impl ControlSetting {
    /// vmxcap's word for this setting.
    pub const fn vmxcap_word(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::No => "no",
            Self::Forced => "forced",
            Self::Default => "default",
            Self::Contradictory => "?",
        }
    }
}

impl std::fmt::Debug for VmxCaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The raw MSRs in hex; `vals` is only a cache of them.
        let mut m = f.debug_map();
        for (i, v) in self.raw.iter() {
            m.entry(&format_args!("{i:#x}"), &format_args!("{v:#018x}"));
        }
        m.finish()
    }
}

fn slot(index: u32) -> Option<usize> {
    if msr::is_vmx_msr(index) {
        Some((index - msr::FIRST) as usize)
    } else {
        None
    }
}

impl VmxCaps {
    /// Validates and wraps raw MSR values: every index must be in 0x480..=0x493
    /// ([`CapsError::UnknownMsr`]) and every required MSR present
    /// ([`CapsError::MissingMsr`]). No value is rejected: unknown bits are kept.
    ///
    /// ```
    /// use vmx_caps::{msr, CapsError, RawMsrs, VmxCaps};
    ///
    /// # // Intel Coffee Lake (CPUID 906EA): IA32_VMX_BASIC..IA32_VMX_VMFUNC of a real CPU.
    /// # let coffee_lake: vmx_caps::RawMsrs = [
    /// #     (0x480, 0x00da_0400_0000_0004), (0x481, 0x0000_007f_0000_0016),
    /// #     (0x482, 0xfff9_fffe_0401_e172), (0x483, 0x01ff_ffff_0003_6dff),
    /// #     (0x484, 0x0003_ffff_0000_11ff), (0x485, 0x0000_0000_7004_c1e7),
    /// #     (0x486, 0x0000_0000_8000_0021), (0x487, 0x0000_0000_ffff_ffff),
    /// #     (0x488, 0x0000_0000_0000_2000), (0x489, 0x0000_0000_0037_27ff),
    /// #     (0x48a, 0x0000_0000_0000_002e), (0x48b, 0x005f_bcff_0000_0000),
    /// #     (0x48c, 0x0000_0f01_0673_4141), (0x48d, 0x0000_007f_0000_0016),
    /// #     (0x48e, 0xfff9_fffe_0400_6172), (0x48f, 0x01ff_ffff_0003_6dfb),
    /// #     (0x490, 0x0003_ffff_0000_11fb), (0x491, 0x0000_0000_0000_0001),
    /// # ].into_iter().collect();
    /// let caps = VmxCaps::from_raw(coffee_lake.clone())?;
    /// assert_eq!(caps.basic().revision_id(), 4);
    /// assert!(caps.has_true_ctls());
    /// // IA32_VMX_BASIC is required: without it there is no capability set.
    /// let mut raw = coffee_lake;
    /// raw.remove(msr::IA32_VMX_BASIC);
    /// assert!(matches!(VmxCaps::from_raw(raw), Err(CapsError::MissingMsr { index: 0x480, .. })));
    /// # Ok::<(), CapsError>(())
    /// ```
    pub fn from_raw(raw: RawMsrs) -> Result<Self, CapsError> {
        let mut vals = [None; 20];
        for (index, value) in raw.iter() {
            let i = slot(index).ok_or(CapsError::UnknownMsr { index })?;
            if let Some(v) = vals.get_mut(i) {
                *v = Some(value);
            }
        }
        for index in msr::REQUIRED {
            if !raw.contains(index) {
                return Err(CapsError::MissingMsr {
                    index,
                    name: msr::name(index).unwrap_or("?"),
                });
            }
        }
        Ok(Self { raw, vals })
    }

    /// The raw MSRs this set was built from.
    pub fn raw(&self) -> &RawMsrs {
        &self.raw
    }

    /// Consumes the set, returning its raw MSRs.
    pub fn into_raw(self) -> RawMsrs {
        self.raw
    }

    /// Value of MSR `index`, `None` if absent or not a VMX capability MSR.
    pub fn get(&self, index: u32) -> Option<u64> {
        slot(index).and_then(|i| self.vals.get(i).copied().flatten())
    }

    // Required MSRs are present by construction; 0 is unreachable.
    fn req(&self, index: u32) -> u64 {
        self.get(index).unwrap_or(0)
    }

    /// IA32_VMX_BASIC.
    pub fn basic(&self) -> VmxBasic {
        VmxBasic(self.req(msr::IA32_VMX_BASIC))
    }

    /// Whether BASIC bit 55 says TRUE control MSRs exist.
    pub fn has_true_ctls(&self) -> bool {
        self.basic().true_ctls()
    }

    /// Legacy IA32_VMX_PINBASED_CTLS (what KVM's `setup_vmcs_config` reads).
    pub fn pin_based_legacy(&self) -> AllowedSettings {
        AllowedSettings::from_raw(self.req(msr::IA32_VMX_PINBASED_CTLS))
    }
    /// Legacy IA32_VMX_PROCBASED_CTLS.
    pub fn primary_legacy(&self) -> AllowedSettings {
        AllowedSettings::from_raw(self.req(msr::IA32_VMX_PROCBASED_CTLS))
    }
    /// Legacy IA32_VMX_EXIT_CTLS.
    pub fn exit_legacy(&self) -> AllowedSettings {
        AllowedSettings::from_raw(self.req(msr::IA32_VMX_EXIT_CTLS))
    }
    /// Legacy IA32_VMX_ENTRY_CTLS.
    pub fn entry_legacy(&self) -> AllowedSettings {
        AllowedSettings::from_raw(self.req(msr::IA32_VMX_ENTRY_CTLS))
    }

    /// The TRUE MSR for a word, if BASIC bit 55 is set and it is present.
    pub fn true_settings(&self, word: ControlWord) -> Option<AllowedSettings> {
        if !self.has_true_ctls() {
            return None;
        }
        word.true_msr()
            .and_then(|m| self.get(m))
            .map(AllowedSettings::from_raw)
    }

    fn effective(&self, word: ControlWord) -> AllowedSettings {
        self.true_settings(word)
            .unwrap_or_else(|| AllowedSettings::from_raw(self.req(word.msr())))
    }

    /// Effective pin-based settings: TRUE MSR when BASIC bit 55 is set (and present),
    /// legacy otherwise.
    pub fn pin_based(&self) -> AllowedSettings {
        self.effective(ControlWord::PinBased)
    }
    /// Effective primary processor-based settings (TRUE when BASIC bit 55).
    pub fn primary(&self) -> AllowedSettings {
        self.effective(ControlWord::Primary)
    }
    /// Effective VM-exit settings (TRUE when BASIC bit 55).
    pub fn exit(&self) -> AllowedSettings {
        self.effective(ControlWord::Exit)
    }
    /// Effective VM-entry settings (TRUE when BASIC bit 55).
    pub fn entry(&self) -> AllowedSettings {
        self.effective(ControlWord::Entry)
    }
    /// IA32_VMX_PROCBASED_CTLS2 (0x48B), if present.
    pub fn secondary(&self) -> Option<AllowedSettings> {
        self.get(msr::IA32_VMX_PROCBASED_CTLS2)
            .map(AllowedSettings::from_raw)
    }
    /// IA32_VMX_PROCBASED_CTLS3 (0x492), if present.
    pub fn tertiary(&self) -> Option<Allowed1Settings> {
        self.get(msr::IA32_VMX_PROCBASED_CTLS3)
            .map(Allowed1Settings::from_raw)
    }
    /// IA32_VMX_EXIT_CTLS2 (0x493), if present.
    pub fn secondary_exit(&self) -> Option<Allowed1Settings> {
        self.get(msr::IA32_VMX_EXIT_CTLS2)
            .map(Allowed1Settings::from_raw)
    }
    /// IA32_VMX_MISC.
    pub fn misc(&self) -> VmxMisc {
        VmxMisc(self.req(msr::IA32_VMX_MISC))
    }
    /// IA32_VMX_EPT_VPID_CAP, if present.
    pub fn ept_vpid(&self) -> Option<EptVpidCap> {
        self.get(msr::IA32_VMX_EPT_VPID_CAP).map(EptVpidCap)
    }
    /// IA32_VMX_VMFUNC, if present.
    pub fn vmfunc(&self) -> Option<VmFunc> {
        self.get(msr::IA32_VMX_VMFUNC).map(VmFunc)
    }
    /// IA32_VMX_CR0_FIXED0/1.
    pub fn cr0_fixed(&self) -> CrFixed {
        CrFixed {
            fixed0: self.req(msr::IA32_VMX_CR0_FIXED0),
            fixed1: self.req(msr::IA32_VMX_CR0_FIXED1),
        }
    }
    /// IA32_VMX_CR4_FIXED0/1.
    pub fn cr4_fixed(&self) -> CrFixed {
        CrFixed {
            fixed0: self.req(msr::IA32_VMX_CR4_FIXED0),
            fixed1: self.req(msr::IA32_VMX_CR4_FIXED1),
        }
    }
    /// IA32_VMX_VMCS_ENUM.
    pub fn vmcs_enum(&self) -> VmcsEnum {
        VmcsEnum(self.req(msr::IA32_VMX_VMCS_ENUM))
    }

    /// Effective must-be-one mask of any control word, widened to 64 bits (0 for the
    /// allowed-1-only words and for absent MSRs).
    pub fn must_be_one(&self, word: ControlWord) -> u64 {
        match word {
            ControlWord::Tertiary | ControlWord::SecondaryExit => 0,
            ControlWord::Secondary => self.secondary().map_or(0, |s| s.must_be_one() as u64),
            w => self.effective(w).must_be_one() as u64,
        }
    }

    /// Effective may-be-one mask of any control word, widened to 64 bits (0 for absent
    /// MSRs: the controls cannot be used).
    pub fn may_be_one(&self, word: ControlWord) -> u64 {
        match word {
            ControlWord::Tertiary => self.tertiary().map_or(0, |t| t.may_be_one()),
            ControlWord::SecondaryExit => self.secondary_exit().map_or(0, |t| t.may_be_one()),
            ControlWord::Secondary => self.secondary().map_or(0, |s| s.may_be_one() as u64),
            w => self.effective(w).may_be_one() as u64,
        }
    }

    /// Whether control `bit` of `word` is default1 in the legacy MSR but may be
    /// cleared according to the TRUE MSR.
    pub fn is_default1_clearable(&self, word: ControlWord, bit: u32) -> bool {
        self.control_setting(word, bit) == ControlSetting::Default
    }

    /// What the set allows for control `bit` of `word`, vmxcap-style: legacy MSR for
    /// the verdict, TRUE MSR (when BASIC bit 55) to spot clearable default1 bits. An
    /// absent MSR reads as 0 (every control "no"), as in vmxcap.
    ///
    /// ```
    /// use vmx_caps::{ControlSetting, ControlWord, VmxCaps};
    ///
    /// # // Intel Coffee Lake (CPUID 906EA): IA32_VMX_BASIC..IA32_VMX_VMFUNC of a real CPU.
    /// # let coffee_lake: vmx_caps::RawMsrs = [
    /// #     (0x480, 0x00da_0400_0000_0004), (0x481, 0x0000_007f_0000_0016),
    /// #     (0x482, 0xfff9_fffe_0401_e172), (0x483, 0x01ff_ffff_0003_6dff),
    /// #     (0x484, 0x0003_ffff_0000_11ff), (0x485, 0x0000_0000_7004_c1e7),
    /// #     (0x486, 0x0000_0000_8000_0021), (0x487, 0x0000_0000_ffff_ffff),
    /// #     (0x488, 0x0000_0000_0000_2000), (0x489, 0x0000_0000_0037_27ff),
    /// #     (0x48a, 0x0000_0000_0000_002e), (0x48b, 0x005f_bcff_0000_0000),
    /// #     (0x48c, 0x0000_0f01_0673_4141), (0x48d, 0x0000_007f_0000_0016),
    /// #     (0x48e, 0xfff9_fffe_0400_6172), (0x48f, 0x01ff_ffff_0003_6dfb),
    /// #     (0x490, 0x0003_ffff_0000_11fb), (0x491, 0x0000_0000_0000_0001),
    /// # ].into_iter().collect();
    /// let caps = VmxCaps::from_raw(coffee_lake)?;
    /// // Primary bit 7, HLT exiting: may be 0 or 1.
    /// assert_eq!(caps.control_setting(ControlWord::Primary, 7), ControlSetting::Yes);
    /// // Bit 15, CR3-load exiting: default1 in the legacy MSR, clearable with the TRUE MSR.
    /// assert_eq!(caps.control_setting(ControlWord::Primary, 15), ControlSetting::Default);
    /// // Pin-based bit 7, posted interrupts: not on this client part.
    /// assert_eq!(caps.control_setting(ControlWord::PinBased, 7), ControlSetting::No);
    /// # Ok::<(), vmx_caps::CapsError>(())
    /// ```
    pub fn control_setting(&self, word: ControlWord, bit: u32) -> ControlSetting {
        if word.is_allowed1_only() {
            let a = Allowed1Settings::from_raw(self.get(word.msr()).unwrap_or(0));
            return match a.setting(bit) {
                BitSetting::Flexible => ControlSetting::Yes,
                _ => ControlSetting::No,
            };
        }
        let legacy = AllowedSettings::from_raw(self.get(word.msr()).unwrap_or(0));
        let setting = legacy.setting(bit);
        if setting == BitSetting::MustBeOne {
            if let Some(t) = self.true_settings(word) {
                if t.setting(bit) == BitSetting::Flexible {
                    return ControlSetting::Default;
                }
            }
        }
        match setting {
            BitSetting::Flexible => ControlSetting::Yes,
            BitSetting::MustBeOne => ControlSetting::Forced,
            BitSetting::MustBeZero => ControlSetting::No,
            _ => ControlSetting::Contradictory,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Skylake-X VMX MSRs (with TRUE controls and secondary controls): the
    /// crate's shared unit-test fixture.
    pub(crate) fn skx() -> RawMsrs {
        [
            (0x480, 0x00DA_0400_0000_0004),
            (0x481, 0x0000_00FF_0000_0016),
            (0x482, 0xFFF9_FFFE_0401_E172),
            (0x483, 0x01FF_FFFF_0003_6DFF),
            (0x484, 0x0003_FFFF_0000_11FF),
            (0x485, 0x7004_C1E7),
            (0x486, 0x8000_0021),
            (0x487, 0xFFFF_FFFF),
            (0x488, 0x2000),
            (0x489, 0x0037_27FF),
            (0x48A, 0x2E),
            (0x48B, 0x025D_3FFF_0000_0000),
            (0x48C, 0x0000_0F01_0673_4141),
            (0x48D, 0x0000_00FF_0000_0016),
            (0x48E, 0xFFF9_FFFE_0400_6172),
            (0x48F, 0x01FF_FFFF_0003_6DFB),
            (0x490, 0x0003_FFFF_0000_11FB),
        ]
        .into_iter()
        .collect()
    }

    /// Penryn VMX MSRs (no TRUE MSRs; secondary controls without EPT/VPID):
    /// shared unit-test fixture.
    pub(crate) fn penryn() -> RawMsrs {
        [
            (0x480, 0x005A_0800_0000_000D),
            (0x481, 0x0000_003F_0000_0016),
            (0x482, 0xF7F9_FFFE_0401_E172),
            (0x483, 0x0003_FFFF_0003_6DFF),
            (0x484, 0x0000_3FFF_0000_11FF),
            (0x485, 0x0004_03C0),
            (0x486, 0x8000_0021),
            (0x487, 0xFFFF_FFFF),
            (0x488, 0x2000),
            (0x489, 0x0004_67FF),
            (0x48A, 0x2C),
            (0x48B, 0x0000_0041_0000_0000),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn views_of_skylake_x() {
        let c = VmxCaps::from_raw(skx()).unwrap();
        assert_eq!(c.basic().revision_id(), 4);
        assert!(c.has_true_ctls());
        assert_eq!(c.primary_legacy().must_be_one(), 0x0401_E172);
        assert_eq!(c.primary().must_be_one(), 0x0400_6172, "TRUE view");
        assert_eq!(c.exit().must_be_one(), 0x36DFB);
        assert_eq!(c.entry_legacy().must_be_one(), 0x11FF);
        assert_eq!(c.entry().must_be_one(), 0x11FB);
        assert_eq!(c.pin_based(), c.pin_based_legacy());
        assert_eq!(c.secondary().unwrap().may_be_one(), 0x025D_3FFF);
        assert_eq!(c.tertiary(), None);
        assert_eq!(c.secondary_exit(), None);
        assert_eq!(c.vmfunc(), None);
        assert!(c.ept_vpid().unwrap().invept());
        assert_eq!(c.cr0_fixed().fixed0, 0x8000_0021);
        assert_eq!(c.cr4_fixed().fixed1, 0x0037_27FF);
        assert_eq!(c.vmcs_enum().max_index(), 23);
        assert_eq!(c.misc().cr3_count(), 4);
        assert_eq!(c.get(0x500), None);
        assert_eq!(c.raw().len(), 17);
        assert_eq!(c.must_be_one(ControlWord::Tertiary), 0);
        assert_eq!(c.may_be_one(ControlWord::Tertiary), 0);
        assert_eq!(c.may_be_one(ControlWord::Secondary), 0x025D_3FFF);
        assert_eq!(c.must_be_one(ControlWord::Primary), 0x0400_6172);
    }

    #[test]
    fn control_settings_like_vmxcap() {
        let c = VmxCaps::from_raw(skx()).unwrap();
        assert_eq!(
            c.control_setting(ControlWord::Primary, 15),
            ControlSetting::Default
        );
        assert!(c.is_default1_clearable(ControlWord::Primary, 16));
        assert_eq!(
            c.control_setting(ControlWord::Primary, 17),
            ControlSetting::No
        );
        assert_eq!(
            c.control_setting(ControlWord::Primary, 31),
            ControlSetting::Yes
        );
        assert_eq!(
            c.control_setting(ControlWord::PinBased, 1),
            ControlSetting::Forced
        );
        assert_eq!(
            c.control_setting(ControlWord::Tertiary, 4),
            ControlSetting::No
        );
        // Without BASIC[55] the TRUE MSRs are ignored: default1 bits are "forced".
        let mut raw = skx();
        raw.insert(0x480, 0x00DA_0400_0000_0004 & !(1 << 55));
        let c = VmxCaps::from_raw(raw).unwrap();
        assert_eq!(
            c.control_setting(ControlWord::Primary, 15),
            ControlSetting::Forced
        );
        assert_eq!(c.primary(), c.primary_legacy());
        assert_eq!(ControlSetting::Default.vmxcap_word(), "default");
    }

    #[test]
    fn contradictory_and_absent_words() {
        // External-interrupt exiting must be 1 (low) but may not be 1 (high): vmxcap "?".
        let mut raw = skx();
        raw.insert(0x481, 0x0000_00FE_0000_0017);
        raw.insert(0x48D, 0x0000_00FE_0000_0017);
        let c = VmxCaps::from_raw(raw).unwrap();
        let s = c.control_setting(ControlWord::PinBased, 0);
        assert_eq!(s, ControlSetting::Contradictory);
        assert_eq!(s.vmxcap_word(), "?");
        let q = crate::report::qemu::render(&c);
        assert!(
            q.contains("  External interrupt exiting               ?\n"),
            "{q}"
        );
        // An absent allowed-1-only word, and an absent secondary word, read as "no".
        let mut raw = skx();
        raw.remove(0x48B);
        let c = VmxCaps::from_raw(raw).unwrap();
        assert_eq!(
            c.control_setting(ControlWord::Secondary, 1),
            ControlSetting::No
        );
        assert_eq!(c.may_be_one(ControlWord::Secondary), 0);
        assert_eq!(
            c.control_setting(ControlWord::SecondaryExit, 0),
            ControlSetting::No
        );
        // Out-of-range bits never panic and are never allowed.
        for w in ControlWord::ALL {
            assert_eq!(c.control_setting(w, 64), ControlSetting::No);
            assert_eq!(c.control_setting(w, u32::MAX), ControlSetting::No);
        }
    }

    #[test]
    fn true_bit_without_true_msr_falls_back_to_legacy() {
        let mut raw = skx();
        raw.remove(0x48E);
        let c = VmxCaps::from_raw(raw).unwrap();
        assert_eq!(c.primary(), c.primary_legacy());
    }

    #[test]
    fn missing_required_msr_is_named() {
        for index in msr::REQUIRED {
            let mut raw = skx();
            raw.remove(index);
            match VmxCaps::from_raw(raw) {
                Err(CapsError::MissingMsr { index: i, name }) => {
                    assert_eq!(i, index);
                    assert_eq!(Some(name), msr::name(index));
                }
                other => panic!("{index:#x}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_index_rejected() {
        let mut raw = skx();
        raw.insert(0x494, 0);
        assert!(matches!(
            VmxCaps::from_raw(raw),
            Err(CapsError::UnknownMsr { index: 0x494 })
        ));
    }
}
