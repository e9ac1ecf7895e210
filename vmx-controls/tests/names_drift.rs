// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Drift guard: every VMX control bit has one name wherever it is printed. The typed
//! flags (`x86_kvm_base::control_bits`, re-exported by vmx-controls), the vmxcap text
//! report, the `vmxcap config` report (vmx-controls `ControlField::describe_bits`) all
//! print the same name (the Linux name without the field prefix) and the JSON report
//! prints the Linux name with it; all come from the one table in x86-kvm-base. This test
//! renders each of them for a CPU that allows every control bit and checks every bit.

use vmx_caps::report::{json, text};
use vmx_caps::{ControlWord, RawMsrs, VmxCaps};
use vmx_controls::ControlField;
use x86_kvm_base::control_bits::{self as cb, BitName};

/// A capability set that allows every control bit (legacy MSRs only, so the default1
/// bits are forced and print as such).
fn everything_allowed() -> VmxCaps {
    let mut raw = RawMsrs::new();
    // BASIC: revision 1, VMCS size 0x1000, write-back, INS/OUTS info.
    raw.insert(0x480, 1 | (0x1000 << 32) | (6 << 50) | (1 << 54));
    for msr in [0x481, 0x482, 0x483, 0x484] {
        raw.insert(msr, 0xffff_ffff_0000_0000);
    }
    raw.insert(0x485, 0x7004_01e5);
    raw.insert(0x486, 0x8000_0021);
    raw.insert(0x487, 0xffff_ffff);
    raw.insert(0x488, 0x2000);
    raw.insert(0x489, 0x3f_ffff);
    raw.insert(0x48a, 0x2e);
    raw.insert(0x48b, 0xffff_ffff_0000_0000);
    raw.insert(0x48c, 0xf_0106_f341);
    raw.insert(0x491, 1);
    raw.insert(0x492, u64::MAX);
    raw.insert(0x493, u64::MAX);
    VmxCaps::from_raw(raw).expect("synthetic capability set is valid")
}

const FIELDS: [(ControlWord, ControlField, &[BitName], &str); 7] = [
    (
        ControlWord::PinBased,
        ControlField::PinBased,
        cb::PIN_BASED,
        cb::PinBasedControls::PREFIX,
    ),
    (
        ControlWord::Primary,
        ControlField::Primary,
        cb::PRIMARY,
        cb::PrimaryControls::PREFIX,
    ),
    (
        ControlWord::Secondary,
        ControlField::Secondary,
        cb::SECONDARY,
        cb::SecondaryControls::PREFIX,
    ),
    (
        ControlWord::Tertiary,
        ControlField::Tertiary,
        cb::TERTIARY,
        cb::TertiaryControls::PREFIX,
    ),
    (
        ControlWord::Exit,
        ControlField::Exit,
        cb::EXIT,
        cb::ExitControls::PREFIX,
    ),
    (
        ControlWord::SecondaryExit,
        ControlField::SecondaryExit,
        cb::SECONDARY_EXIT,
        cb::SecondaryExitControls::PREFIX,
    ),
    (
        ControlWord::Entry,
        ControlField::Entry,
        cb::ENTRY,
        cb::EntryControls::PREFIX,
    ),
];

/// The section of the text report for `word`: its title line and the indented lines
/// after it.
fn text_section(report: &str, word: ControlWord) -> String {
    let mut lines = report
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{} (", word.title())));
    let title = lines
        .next()
        .unwrap_or_else(|| panic!("no section for {word:?}"));
    let body: Vec<&str> = lines.take_while(|l| l.starts_with("  ")).collect();
    assert!(!body.is_empty(), "empty section for {word:?}");
    format!("{title}\n{}\n", body.join("\n"))
}

/// The typed flag's name for `bit` of `field`.
fn flag_name(field: ControlField, bit: u32) -> Option<&'static str> {
    match field {
        ControlField::PinBased => cb::PinBasedControls::bit_name(bit),
        ControlField::Primary => cb::PrimaryControls::bit_name(bit),
        ControlField::Secondary => cb::SecondaryControls::bit_name(bit),
        ControlField::Tertiary => cb::TertiaryControls::bit_name(bit),
        ControlField::Exit => cb::ExitControls::bit_name(bit),
        ControlField::SecondaryExit => cb::SecondaryExitControls::bit_name(bit),
        ControlField::Entry => cb::EntryControls::bit_name(bit),
        _ => None,
    }
}

#[test]
fn every_control_bit_has_one_name_in_every_report() {
    let caps = everything_allowed();
    let text_report = text::render(&caps);
    let json_report: serde_json::Value = serde_json::from_str(&json::render(&caps)).unwrap();
    for (word, field, table, prefix) in FIELDS {
        let width = if field.is_64bit() { 64 } else { 32 };
        let section = text_section(&text_report, word);
        // Every bit the CPU allows is printed: named ones by label, the rest as `Bit N`.
        assert_eq!(
            section.lines().count() - 1,
            width as usize,
            "{word:?}: {section}"
        );
        let json_bits = json_report["controls"][word.id()]["bits"]
            .as_array()
            .unwrap_or_else(|| panic!("JSON has no bits for {word:?}: {json_report}"));
        for bit in 0..width {
            let one = cb::lookup(table, bit);
            // vmx-caps' lookup is the same row.
            assert_eq!(
                vmx_caps::names::lookup(word, bit),
                one,
                "{word:?} bit {bit}"
            );
            let described = field.describe_bits(1 << bit);
            let json_bit = json_bits.iter().find(|b| b["bit"] == bit);
            match one {
                Some(n) => {
                    // The name is the Linux name without the field prefix.
                    assert_eq!(n.linux.strip_prefix(prefix), Some(n.name));
                    // `vmxcap config` and the typed flags print it...
                    assert_eq!(described, n.name, "{word:?} bit {bit}: config report");
                    assert_eq!(flag_name(field, bit), Some(n.name), "{word:?} bit {bit}");
                    // ...and so does the vmxcap text report, on the bit's own line.
                    assert!(
                        section.contains(&format!("  {:<40} ", n.name)),
                        "{word:?} bit {bit}: text report lacks {:?}",
                        n.name
                    );
                    // vmxcap JSON: the Linux name and label of the same row.
                    let j = json_bit.unwrap_or_else(|| panic!("{word:?} bit {bit} not in JSON"));
                    assert_eq!(j["name"], n.linux, "{word:?} bit {bit}: JSON name");
                    assert_eq!(j["label"], n.label, "{word:?} bit {bit}: JSON label");
                }
                None => {
                    assert!(
                        described.starts_with("0x"),
                        "{word:?} bit {bit}: {described}"
                    );
                    if let Some(j) = json_bit {
                        assert!(j["name"].is_null(), "{word:?} bit {bit}: {j}");
                    }
                }
            }
        }
        // Each Linux name and each label is used by one bit only within the field.
        let mut names: Vec<_> = table.iter().map(|n| n.linux).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), table.len(), "{word:?}: duplicate names");
    }
}

/// The two names the crates used to print differently now come out the same in every
/// report: tertiary bit 7 and secondary VM-exit bit 3.
#[test]
fn formerly_disagreeing_names_are_one() {
    assert_eq!(
        ControlField::Tertiary.describe_bits(1 << 7),
        "SPEC_CTRL_SHADOW"
    );
    assert_eq!(
        vmx_caps::names::lookup(ControlWord::Tertiary, 7)
            .unwrap()
            .linux,
        "TERTIARY_EXEC_SPEC_CTRL_SHADOW"
    );
    assert_eq!(
        ControlField::SecondaryExit.describe_bits(1 << 3),
        "PREMATURELY_BUSY_SHSTK"
    );
    assert_eq!(
        vmx_caps::names::lookup(ControlWord::SecondaryExit, 3)
            .unwrap()
            .linux,
        "SECONDARY_VM_EXIT_PREMATURELY_BUSY_SHSTK"
    );
}
