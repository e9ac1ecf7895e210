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
