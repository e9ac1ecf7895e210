// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every fixture decodes, renders exactly like QEMU's vmxcap, and round-trips.

use std::path::PathBuf;

use vmx_caps::report::{self, Format};
use vmx_caps::Dump;

fn data() -> PathBuf {
    test_support::vmx_fixtures_dir()
}

fn fixtures() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(data())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn there_are_seven_fixtures() {
    assert_eq!(fixtures().len(), 7);
}

#[test]
fn qemu_format_matches_golden_byte_for_byte() {
    for name in fixtures() {
        let dump = Dump::read(&data().join(format!("{name}.json"))).unwrap();
        let caps = dump.caps().unwrap();
        let golden = std::fs::read_to_string(data().join(format!("{name}.vmxcap.txt"))).unwrap();
        let ours = report::render(&caps, Format::Qemu);
        if ours != golden {
            for (i, (a, b)) in ours.lines().zip(golden.lines()).enumerate() {
                assert_eq!(a, b, "{name}: line {}", i + 1);
            }
            assert_eq!(ours.len(), golden.len(), "{name}: length");
        }
    }
}

#[test]
fn dump_text_round_trips_byte_for_byte() {
    for name in fixtures() {
        let text = std::fs::read_to_string(data().join(format!("{name}.json"))).unwrap();
        let dump = Dump::from_json(&text).unwrap();
        assert_eq!(dump.to_json(), text, "{name}");
    }
}

fn caps(name: &str) -> vmx_caps::VmxCaps {
    Dump::read(&data().join(format!("{name}.json")))
        .unwrap()
        .caps()
        .unwrap()
}

#[test]
fn text_names_every_known_bit_and_flags_unknown_ones() {
    let t = report::render(&caps("arrowlake-core-ultra-5-245k"), Format::Text);
    // Bits QEMU's (pre-2024) vmxcap does not print.
    for label in [
        "  BUS_LOCK_DETECTION                       yes",
        "  NOTIFY_VM_EXITING                        yes",
        "  LOAD_CET_STATE                           yes",
        "  ACTIVATE_SECONDARY_CONTROLS              yes",
        "  VMX nested exception support             no",
        "  Supervisor shadow-stack control          yes",
        "secondary VM-Exit controls (IA32_VMX_EXIT_CTLS2 0x493: absent)",
        "  SAVE_IA32_FRED                           no",
        "  Unknown bits set                         0x200000000000000 (bits 57) [unknown]",
    ] {
        assert!(t.contains(label), "missing {label:?} in\n{t}");
    }
    // Every named bit of every word appears exactly once per section.
    for w in vmx_caps::ControlWord::ALL {
        for n in vmx_caps::names::control_bits(w) {
            assert!(t.contains(&format!("  {:<40} ", n.name)), "{}", n.name);
        }
    }
    let icl = report::render(&caps("icelake-u-i7-1065g7"), Format::Text);
    assert!(icl.contains("  Bit 29                                   yes [unknown]"));
    // Penryn: no TRUE MSRs, so default1 controls are forced, and MISC bit 9 is flagged.
    let p = report::render(&caps("penryn-core2-t9600"), Format::Text);
    assert!(p.contains("  CR3_LOAD_EXITING                         forced"));
    assert!(p.contains("  Unknown bits set                         0x200 (bits 9) [unknown]"));
    assert!(p.contains("VPID and EPT capabilities (IA32_VMX_EPT_VPID_CAP 0x48c: absent)"));
}

#[test]
fn json_model_is_complete_and_stable() {
    let c = caps("coffeelake-906ea");
    let v: serde_json::Value = serde_json::from_str(&report::render(&c, Format::Json)).unwrap();
    assert_eq!(v["schema"], "vmx-caps/1");
    assert_eq!(v["msrs"]["0x491"], "0x0000000000000001");
    assert_eq!(v["basic"]["vmcs_size"], 1024);
    assert_eq!(v["basic"]["true_ctls"], true);
    assert_eq!(v["misc"]["cr3_count"], 4);
    assert_eq!(v["vmfunc"]["eptp_switching"], true);
    assert_eq!(v["vmcs_enum"]["max_index"], 23);
    assert_eq!(v["cr0_fixed"]["fixed0"], "0x0000000080000021");
    let primary = &v["controls"]["primary"];
    assert_eq!(primary["msr"], "0x482");
    assert_eq!(primary["true_msr"], "0x48e");
    assert_eq!(primary["must_be_one"], "0x0000000004006172");
    let cr3 = primary["bits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["bit"] == 15)
        .unwrap();
    assert_eq!(cr3["name"], "CPU_BASED_CR3_LOAD_EXITING");
    assert_eq!(cr3["setting"], "default");
    assert_eq!(v["controls"]["tertiary"]["present"], false);
    // Every top-level key the README documents.
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    let mut documented = [
        "schema",
        "msrs",
        "basic",
        "controls",
        "misc",
        "ept_vpid",
        "vmfunc",
        "cr0_fixed",
        "cr4_fixed",
        "vmcs_enum",
    ];
    documented.sort_unstable();
    assert_eq!(keys, documented);
    assert!(report::render(&c, Format::Json).starts_with("{\n  \"schema\": \"vmx-caps/1\""));
}

#[test]
fn every_fixture_decodes_with_the_reference_values() {
    // (fixture, revision, size, TRUE ctls, timer rate, VMCS_ENUM index) from reference §5.1.
    let expect = [
        ("skylake-x-i7-7800x", 4, 1024, true, 7, 23),
        ("icelake-u-i7-1065g7", 19, 1280, true, 7, 23),
        ("tigerlake-i5-1135g7", 19, 1280, true, 7, 23),
        ("arrowlake-core-ultra-5-245k", 21, 1536, true, 7, 23),
        ("broadwell-core-m-5y70", 18, 1024, true, 5, 21),
        ("penryn-core2-t9600", 13, 2048, false, 0, 22),
        ("coffeelake-906ea", 4, 1024, true, 7, 23),
    ];
    for (name, rev, size, tc, rate, idx) in expect {
        let c = caps(name);
        assert_eq!(c.basic().revision_id(), rev, "{name}");
        assert_eq!(c.basic().vmcs_size(), size, "{name}");
        assert_eq!(c.basic().true_ctls(), tc, "{name}");
        assert_eq!(c.misc().preemption_timer_rate(), rate, "{name}");
        assert_eq!(c.vmcs_enum().max_index(), idx, "{name}");
        assert_eq!(c.misc().cr3_count(), 4, "{name}");
    }
}

#[test]
fn kvm_adjust_matches_reference_for_every_fixture() {
    // Reference §5.4: KVM setup_vmcs_config on the legacy MSRs (x86_64, current sets
    // with LOAD_CET_STATE, before the fix-ups that only clear bits).
    let pin_min = 0x1 | 0x8;
    let pin_opt = 0x20 | 0x80 | 0x40;
    let exit_min = (1 << 2) | (1 << 15) | (1 << 9);
    let exit_opt = (1 << 12)
        | (1 << 18)
        | (1 << 19)
        | (1 << 20)
        | (1 << 22)
        | (1 << 21)
        | (1 << 23)
        | (1 << 24)
        | (1 << 25)
        | (1 << 28);
    let entry_min = (1 << 2) | (1 << 9);
    let entry_opt =
        (1 << 13) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 17) | (1 << 18) | (1 << 20);
    let expect = [
        ("skylake-x-i7-7800x", 0xff, 0x01ffffff, 0x0003f3ff),
        ("icelake-u-i7-1065g7", 0xff, 0x037fffff, 0x0006f3ff),
        ("tigerlake-i5-1135g7", 0xff, 0x137fffff, 0x0016f3ff),
        ("broadwell-core-m-5y70", 0x7f, 0x007fffff, 0x0000f3ff),
        ("coffeelake-906ea", 0x7f, 0x01ffffff, 0x0003f3ff),
        ("penryn-core2-t9600", 0x3f, 0x0003ffff, 0x000033ff),
    ];
    for (name, pin, exit, entry) in expect {
        let c = caps(name);
        assert_eq!(
            c.pin_based_legacy().adjust(pin_min, pin_opt),
            Ok(pin),
            "{name}"
        );
        assert_eq!(
            c.exit_legacy().adjust(exit_min, exit_opt),
            Ok(exit),
            "{name}"
        );
        assert_eq!(
            c.entry_legacy().adjust(entry_min, entry_opt),
            Ok(entry),
            "{name}"
        );
    }
}

/// Every key the JSON model emits (on a set with every optional MSR present) is named
/// in the README's schema, so the documentation cannot silently fall behind.
#[test]
fn json_schema_in_readme_names_every_emitted_key() {
    fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    out.push(k.clone());
                    keys(v, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
            _ => {}
        }
    }
    let mut raw = caps("coffeelake-906ea").into_raw();
    raw.insert(0x492, 0x10);
    raw.insert(0x493, 0x3);
    let c = vmx_caps::VmxCaps::from_raw(raw).unwrap();
    let v: serde_json::Value = serde_json::from_str(&report::render(&c, Format::Json)).unwrap();
    let mut all = Vec::new();
    keys(&v, &mut all);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let schema = readme
        .split("## JSON model")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap();
    for k in all {
        if k.starts_with("0x") {
            continue; // MSR indices under "msrs"
        }
        assert!(
            schema.contains(&k),
            "README JSON schema does not mention {k:?}"
        );
    }
}

#[test]
fn baseline_of_a_host_with_itself_keeps_every_raw_msr() {
    // `intersect(&[a, a]) == intersect(&[a])` (raw MSRs, hence dumps), also with
    // BASIC bit 55 cleared: the TRUE MSRs are then ignored but kept (fuzz finding).
    use vmx_caps::baseline::intersect;
    for name in fixtures() {
        let a = caps(&name);
        let mut r = a.raw().clone();
        let basic = r.get(0x480).unwrap();
        r.insert(0x480, basic & !(1 << 55));
        let no_true = vmx_caps::VmxCaps::from_raw(r).unwrap();
        for c in [a, no_true] {
            let one = intersect(std::slice::from_ref(&c)).unwrap();
            let two = intersect(&[c.clone(), c.clone()]).unwrap();
            assert_eq!(one.caps.raw(), c.raw(), "{name}");
            assert_eq!(two.caps.raw(), one.caps.raw(), "{name}");
            assert_eq!(two.caps, one.caps, "{name}");
        }
    }
}
