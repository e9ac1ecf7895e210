// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Property tests (arbtest): decode -> dump -> decode is the identity, nothing panics on
//! arbitrary values, and baselines are subsets of their inputs.

use arbitrary::Unstructured;
use vmx_caps::baseline::intersect;
use vmx_caps::check::check;
use vmx_caps::report::{self, Format};
use vmx_caps::{msr, ControlWord, Dump, RawMsrs, VmxCaps};

fn arb_raw(u: &mut Unstructured<'_>) -> arbitrary::Result<RawMsrs> {
    let mut raw = RawMsrs::new();
    for index in msr::ALL {
        if msr::is_required(index) || u.arbitrary::<bool>()? {
            raw.insert(index, u.arbitrary()?);
        }
    }
    Ok(raw)
}

fn arb_text(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    let s: String = u.arbitrary()?;
    Ok(s.chars().take(64).collect())
}

#[test]
fn decode_dump_decode_is_identity() {
    arbtest::arbtest(|u| {
        let raw = arb_raw(u)?;
        let caps = VmxCaps::from_raw(raw.clone()).unwrap();
        let dump = Dump::from_caps(&caps, arb_text(u)?, arb_text(u)?);
        let text = dump.to_json();
        let back = Dump::from_json(&text).unwrap();
        assert_eq!(back, dump);
        let caps2 = back.caps().unwrap();
        assert_eq!(caps2, caps);
        assert_eq!(caps2.raw(), &raw);
        // Canonical output is a fixed point.
        assert_eq!(back.to_json(), text);
        Ok(())
    });
}

#[test]
fn arbitrary_values_never_panic() {
    arbtest::arbtest(|u| {
        let caps = VmxCaps::from_raw(arb_raw(u)?).unwrap();
        let _ = check(&caps);
        for f in [Format::Qemu, Format::Qemu2024, Format::Text, Format::Json] {
            let out = report::render(&caps, f);
            assert!(out.ends_with('\n'));
        }
        let bit = u.int_in_range(0..=70)?;
        for w in ControlWord::ALL {
            let _ = caps.control_setting(w, bit);
        }
        Ok(())
    });
}

#[test]
fn arbitrary_json_never_panics() {
    arbtest::arbtest(|u| {
        let s: String = u.arbitrary()?;
        let _ = Dump::from_json(&s);
        let framed = format!("{{\"msrs\":{{\"0x480\":{s:?}}}}}");
        let _ = Dump::from_json(&framed);
        Ok(())
    });
}

#[test]
fn baseline_is_no_more_capable_than_any_input() {
    arbtest::arbtest(|u| {
        let a = VmxCaps::from_raw(arb_raw(u)?).unwrap();
        let b = VmxCaps::from_raw(arb_raw(u)?).unwrap();
        let base = intersect(&[a.clone(), b.clone()]).unwrap().caps;
        for w in ControlWord::ALL {
            for side in [&a, &b] {
                // Compare like with like: the baseline uses TRUE views only when both do.
                if w.true_msr().is_some() && side.has_true_ctls() != base.has_true_ctls() {
                    continue;
                }
                assert_eq!(
                    base.may_be_one(w) & !side.may_be_one(w),
                    0,
                    "{w:?} allows more than an input"
                );
                // An absent MSR means "controls unavailable": nothing is forced.
                if base.get(w.msr()).is_none() {
                    continue;
                }
                assert_eq!(
                    side.must_be_one(w) & !base.must_be_one(w),
                    0,
                    "{w:?} forces less than an input"
                );
            }
        }
        assert_eq!(
            base.cr0_fixed().fixed0 & a.cr0_fixed().fixed0,
            a.cr0_fixed().fixed0
        );
        assert_eq!(base.cr4_fixed().fixed1 & !b.cr4_fixed().fixed1, 0);
        Ok(())
    });
}

/// A capability set that satisfies every architectural invariant (TRUE and legacy
/// MSRs agree, low ⊆ high, FIXED0 ⊆ FIXED1, ...), built like QEMU's
/// `make_vmx_msr_value` from random feature words. Revision ID and MSEG revision are
/// fixed so that two such sets can differ only in what they offer.
fn arb_well_formed(u: &mut Unstructured<'_>) -> arbitrary::Result<VmxCaps> {
    use vmx_caps::basic;
    let mut raw = RawMsrs::new();
    let true_ctls = u.arbitrary::<bool>()?;
    let features = basic::VMX_BASIC_DUAL_MONITOR_TREATMENT
        | basic::VMX_BASIC_INOUT
        | basic::VMX_BASIC_NO_HW_ERROR_CODE_CC
        | basic::VMX_BASIC_NESTED_EXCEPTION
        | (1 << 57);
    let size = u64::from(u.int_in_range(1u32..=4096)?);
    raw.insert(
        msr::IA32_VMX_BASIC,
        4 | size << 32
            | 6 << 50
            | (u.arbitrary::<u64>()? & features)
            | if true_ctls {
                basic::VMX_BASIC_TRUE_CTLS
            } else {
                0
            },
    );
    for w in [
        ControlWord::PinBased,
        ControlWord::Primary,
        ControlWord::Exit,
        ControlWord::Entry,
    ] {
        let d1 = w.default1();
        let may: u32 = u.arbitrary::<u32>()? | d1;
        let must = u.arbitrary::<u32>()? & may & !d1;
        raw.insert(w.msr(), u64::from(may) << 32 | u64::from(must | d1));
        if true_ctls {
            // Default1 bits the TRUE MSR lets be cleared: a random subset.
            let forced_d1 = u.arbitrary::<u32>()? & d1;
            let true_msr = w.true_msr().unwrap_or(w.msr());
            raw.insert(true_msr, u64::from(may) << 32 | u64::from(must | forced_d1));
        }
    }
    let primary_hi = raw.get(msr::IA32_VMX_PROCBASED_CTLS).unwrap_or(0) >> 32;
    let exit_hi = raw.get(msr::IA32_VMX_EXIT_CTLS).unwrap_or(0) >> 32;
    let mut sec_hi = 0;
    if primary_hi & (1 << 31) != 0 {
        sec_hi = u64::from(u.arbitrary::<u32>()?);
        raw.insert(msr::IA32_VMX_PROCBASED_CTLS2, sec_hi << 32);
    }
    if sec_hi & ((1 << 1) | (1 << 5)) != 0 {
        let mut cap = u.arbitrary::<u64>()?;
        if sec_hi & (1 << 1) == 0 {
            cap &= !0xFFFF_FFFF;
        }
        if sec_hi & (1 << 5) == 0 {
            cap &= 0xFFFF_FFFF;
        }
        raw.insert(msr::IA32_VMX_EPT_VPID_CAP, cap);
    }
    if sec_hi & (1 << 13) != 0 {
        raw.insert(msr::IA32_VMX_VMFUNC, u.arbitrary()?);
    }
    if primary_hi & (1 << 17) != 0 {
        raw.insert(msr::IA32_VMX_PROCBASED_CTLS3, u.arbitrary()?);
    }
    if exit_hi & (1 << 31) != 0 {
        raw.insert(msr::IA32_VMX_EXIT_CTLS2, u.arbitrary()?);
    }
    // MISC: any rate in a small range (so two sets often agree), no MSEG revision.
    // CR3-target count at most 256; unrestricted guest needs "store EFER.LMA".
    let mut misc = u.arbitrary::<u64>()? & 0xFE00_FFE0
        | u64::from(u.int_in_range(0u16..=256)?) << 16
        | u64::from(u.int_in_range(5u8..=7)?);
    if sec_hi & (1 << 7) != 0 {
        misc |= 1 << 5;
    }
    raw.insert(msr::IA32_VMX_MISC, misc);
    for f0 in [msr::IA32_VMX_CR0_FIXED0, msr::IA32_VMX_CR4_FIXED0] {
        let fixed1: u64 = u.arbitrary()?;
        raw.insert(f0, u.arbitrary::<u64>()? & fixed1);
        raw.insert(f0 + 1, fixed1);
    }
    raw.insert(msr::IA32_VMX_VMCS_ENUM, u.arbitrary::<u64>()? & 0x3FE);
    Ok(VmxCaps::from_raw(raw).unwrap())
}

#[test]
fn baseline_of_well_formed_sets_restores_on_every_input() {
    use vmx_caps::baseline::is_subset_of;
    arbtest::arbtest(|u| {
        let n = u.int_in_range(1..=4)?;
        let mut sets = Vec::new();
        for _ in 0..n {
            let c = arb_well_formed(u)?;
            assert!(!check(&c).is_violated(), "generator: {:#?}", check(&c));
            sets.push(c);
        }
        let base = intersect(&sets).unwrap();
        // Differing preemption-timer rates and forced-vs-forbidden controls are noted;
        // nothing else may make the baseline more capable than an input.
        for (i, s) in sets.iter().enumerate() {
            let notes = is_subset_of(&base.caps, s);
            assert!(
                notes.is_empty(),
                "baseline not restorable on input {i}: {notes:#?}\nbaseline notes: {:#?}",
                base.notes
            );
        }
        Ok(())
    });
}

/// KVM's `adjust_vmx_controls` semantics on arbitrary MSRs and requests: the result
/// holds every must-be-1 bit and every required bit, nothing outside
/// `min | opt | must_be_one`, and (for a well-formed MSR) is accepted by VM entry; a
/// failure names exactly the required bits the allowed-1 settings forbid.
#[test]
fn adjust_keeps_kvm_semantics() {
    use vmx_caps::{Allowed1Settings, AllowedSettings};
    arbtest::arbtest(|u| {
        let a = AllowedSettings::from_raw(u.arbitrary()?);
        let (min, opt): (u32, u32) = (u.arbitrary()?, u.arbitrary()?);
        match a.adjust(min, opt) {
            Ok(ctl) => {
                assert_eq!(ctl & min, min);
                assert_eq!(ctl & a.must_be_one(), a.must_be_one());
                assert_eq!(ctl & !(min | opt | a.must_be_one()), 0);
                assert_eq!(ctl & !a.must_be_one() & !a.may_be_one(), 0);
                if a.contradictory() == 0 {
                    assert!(a.permits(ctl));
                }
            }
            Err(e) => {
                assert_eq!(e.required, min);
                assert_eq!(e.missing, min & !a.may_be_one() & !a.must_be_one());
                assert_ne!(e.missing, 0);
            }
        }
        let t = Allowed1Settings::from_raw(u.arbitrary()?);
        let opt64: u64 = u.arbitrary()?;
        assert!(t.permits(t.adjust(opt64)));
        assert_eq!(t.adjust(opt64), opt64 & t.may_be_one());
        Ok(())
    });
}
