// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Invariant checks: every fixture is clean, and a malformed dump per invariant is
//! caught with the right MSR and bits.

use std::path::PathBuf;

use vmx_caps::check::{check, Invariant, Severity};
use vmx_caps::{msr, Dump, RawMsrs, VmxCaps};

fn data() -> PathBuf {
    test_support::vmx_fixtures_dir()
}

fn load(name: &str) -> RawMsrs {
    Dump::read(&data().join(format!("{name}.json")))
        .unwrap()
        .msrs
}

const ALL: [&str; 7] = [
    "arrowlake-core-ultra-5-245k",
    "broadwell-core-m-5y70",
    "coffeelake-906ea",
    "icelake-u-i7-1065g7",
    "penryn-core2-t9600",
    "skylake-x-i7-7800x",
    "tigerlake-i5-1135g7",
];

#[test]
fn every_fixture_checks_clean() {
    for name in ALL {
        let caps = VmxCaps::from_raw(load(name)).unwrap();
        let r = check(&caps);
        for f in &r.findings {
            println!("{name}: {f}");
        }
        assert!(!r.is_violated(), "{name}");
        assert_eq!(r.with_severity(Severity::Warning).count(), 0, "{name}");
    }
}

#[test]
fn known_oddities_are_info_only() {
    let arl = check(&VmxCaps::from_raw(load("arrowlake-core-ultra-5-245k")).unwrap());
    assert!(arl.has(Invariant::UnknownBits, msr::IA32_VMX_BASIC, 1 << 57));
    // ARL allows tertiary controls and secondary exit controls but the capture stops at 0x490.
    assert!(arl.has(Invariant::MissingMsr, msr::IA32_VMX_PROCBASED_CTLS3, 0));
    assert!(arl.has(Invariant::MissingMsr, msr::IA32_VMX_EXIT_CTLS2, 0));
    let penryn = check(&VmxCaps::from_raw(load("penryn-core2-t9600")).unwrap());
    assert!(penryn.has(Invariant::UnknownBits, msr::IA32_VMX_MISC, 1 << 9));
    let icl = check(&VmxCaps::from_raw(load("icelake-u-i7-1065g7")).unwrap());
    assert!(icl.has(
        Invariant::UnknownBits,
        msr::IA32_VMX_PROCBASED_CTLS2,
        1 << (32 + 29)
    ));
    for r in [&arl, &penryn, &icl] {
        assert!(r.findings.iter().all(|f| f.severity == Severity::Info));
    }
}

/// Applies `edit` to Skylake-X and expects a finding (invariant, msr, bits, severity).
fn expect(
    edit: impl FnOnce(&mut RawMsrs),
    invariant: Invariant,
    index: u32,
    bits: u64,
    severity: Severity,
) {
    let mut raw = load("skylake-x-i7-7800x");
    edit(&mut raw);
    let r = check(&VmxCaps::from_raw(raw).unwrap());
    let f = r
        .findings
        .iter()
        .find(|f| f.invariant == invariant && f.msr == index)
        .unwrap_or_else(|| panic!("no {invariant:?} on {index:#x}: {:#?}", r.findings));
    assert_eq!(f.bits, bits, "{invariant:?}");
    assert_eq!(f.severity, severity, "{invariant:?}");
    assert_eq!(r.is_violated(), severity == Severity::Violation);
}

fn xor(raw: &mut RawMsrs, index: u32, bits: u64) {
    let v = raw.get(index).unwrap_or(0);
    raw.insert(index, v ^ bits);
}

#[test]
fn low_not_subset_of_high() {
    // Pin bit 8 forced to 1 in both legacy and TRUE but not allowed-1.
    expect(
        |r| {
            xor(r, 0x481, 1 << 8);
            xor(r, 0x48D, 1 << 8);
        },
        Invariant::LowSubsetOfHigh,
        0x481,
        1 << 8,
        Severity::Violation,
    );
    expect(
        |r| xor(r, 0x48B, 1 << 31 | 1 << 33),
        Invariant::LowSubsetOfHigh,
        0x48B,
        1 << 31,
        Severity::Violation,
    );
}

#[test]
fn default1_in_legacy_low() {
    expect(
        |r| {
            xor(r, 0x482, 1 << 26);
            xor(r, 0x48E, 1 << 26);
        },
        Invariant::Default1InLegacyLow,
        0x482,
        1 << 26,
        Severity::Violation,
    );
}

#[test]
fn true_high_equals_legacy_high() {
    expect(
        |r| xor(r, 0x48F, 1 << (32 + 30)),
        Invariant::TrueHighEqualsLegacyHigh,
        0x48F,
        1 << (32 + 30),
        Severity::Violation,
    );
}

#[test]
fn legacy_low_equals_true_low_or_default1() {
    // Legacy entry low loses "load debug controls" default1... TRUE says it is free,
    // legacy must still force it: clear it in legacy -> also a default1 finding.
    expect(
        |r| xor(r, 0x490, 1 << 9),
        Invariant::LegacyLowEqualsTrueLowOrDefault1,
        0x490,
        1 << 9,
        Severity::Violation,
    );
}

#[test]
fn fixed0_subset_of_fixed1() {
    expect(
        |r| xor(r, 0x487, 1 << 31),
        Invariant::Fixed0SubsetOfFixed1,
        0x486,
        1 << 31,
        Severity::Violation,
    );
    expect(
        |r| xor(r, 0x489, 1 << 13),
        Invariant::Fixed0SubsetOfFixed1,
        0x488,
        1 << 13,
        Severity::Violation,
    );
}

#[test]
fn cr4_fixed0_has_vmxe() {
    expect(
        |r| xor(r, 0x488, 1 << 13),
        Invariant::Cr4Fixed0HasVmxe,
        0x488,
        1 << 13,
        Severity::Warning,
    );
}

#[test]
fn secondary_low_zero() {
    expect(
        |r| xor(r, 0x48B, 1),
        Invariant::SecondaryLowZero,
        0x48B,
        1,
        Severity::Violation,
    );
}

#[test]
fn vmcs_size() {
    for size in [0u64, 4097, 0x1FFF] {
        expect(
            |r| {
                let v = r.get(0x480).unwrap() & !(0x1FFF << 32) | size << 32;
                r.insert(0x480, v);
            },
            Invariant::VmcsSize,
            0x480,
            0x1FFF << 32,
            Severity::Violation,
        );
    }
}

#[test]
fn memory_type() {
    expect(
        |r| xor(r, 0x480, 6 << 50),
        Invariant::MemoryType,
        0x480,
        0xF << 50,
        Severity::Warning,
    );
    expect(
        |r| xor(r, 0x480, 1 << 50),
        Invariant::MemoryType,
        0x480,
        0xF << 50,
        Severity::Violation,
    );
}

#[test]
fn phys_addr_32bit() {
    expect(
        |r| xor(r, 0x480, 1 << 48),
        Invariant::PhysAddr32Bit,
        0x480,
        1 << 48,
        Severity::Warning,
    );
}

#[test]
fn unknown_bits_are_info() {
    expect(
        |r| xor(r, 0x480, 1 << 63 | 1 << 31),
        Invariant::UnknownBits,
        0x480,
        1 << 63 | 1 << 31,
        Severity::Info,
    );
    expect(
        |r| xor(r, 0x485, 1 << 31),
        Invariant::UnknownBits,
        0x485,
        1 << 31,
        Severity::Info,
    );
    expect(
        |r| xor(r, 0x48C, 1 << 60),
        Invariant::UnknownBits,
        0x48C,
        1 << 60,
        Severity::Info,
    );
    expect(
        |r| xor(r, 0x48A, 1),
        Invariant::UnknownBits,
        0x48A,
        1,
        Severity::Info,
    );
    expect(
        |r| {
            xor(r, 0x482, 1 << (32 + 18));
            xor(r, 0x48E, 1 << (32 + 18));
        },
        Invariant::UnknownBits,
        0x482,
        1 << (32 + 18),
        Severity::Info,
    );
    expect(
        |r| {
            r.insert(0x48B, r.get(0x48B).unwrap() | 1 << 45);
            r.insert(0x491, 0x3);
        },
        Invariant::UnknownBits,
        0x491,
        0x2,
        Severity::Info,
    );
}

#[test]
fn missing_true_msr() {
    expect(
        |r| {
            r.remove(0x48F);
        },
        Invariant::MissingMsr,
        0x48F,
        0,
        Severity::Violation,
    );
}

#[test]
fn unexpected_true_msr() {
    expect(
        |r| xor(r, 0x480, 1 << 55),
        Invariant::UnexpectedMsr,
        0x48D,
        0,
        Severity::Warning,
    );
}

#[test]
fn missing_conditional_msrs() {
    expect(
        |r| {
            r.remove(0x48B);
        },
        Invariant::MissingMsr,
        0x48B,
        0,
        Severity::Violation,
    );
    expect(
        |r| {
            r.remove(0x48C);
        },
        Invariant::MissingMsr,
        0x48C,
        0,
        Severity::Violation,
    );
    expect(
        |r| {
            xor(r, 0x482, 1 << (32 + 17));
            xor(r, 0x48E, 1 << (32 + 17));
        },
        Invariant::MissingMsr,
        0x492,
        0,
        Severity::Info,
    );
}

#[test]
fn unexpected_conditional_msr() {
    expect(
        |r| {
            r.insert(0x493, 0x3);
        },
        Invariant::UnexpectedMsr,
        0x493,
        0,
        Severity::Warning,
    );
}

#[test]
fn ept_vpid_without_control() {
    expect(
        |r| xor(r, 0x48B, 1 << 33),
        Invariant::EptVpidWithoutControl,
        0x48C,
        0x0673_4141,
        Severity::Violation,
    );
    expect(
        |r| xor(r, 0x48B, 1 << 37),
        Invariant::EptVpidWithoutControl,
        0x48C,
        0xF01 << 32,
        Severity::Violation,
    );
}

#[test]
fn unrestricted_guest_needs_save_efer_lma() {
    expect(
        |r| xor(r, 0x485, 1 << 5),
        Invariant::UnrestrictedGuestNeedsSaveEferLma,
        0x485,
        1 << 5,
        Severity::Violation,
    );
}

#[test]
fn cr3_target_count() {
    expect(
        |r| xor(r, 0x485, 0x104 << 16 ^ 0x4 << 16),
        Invariant::Cr3TargetCount,
        0x485,
        0x1FF << 16,
        Severity::Violation,
    );
}

/// SDM Vol. 3D A.6: IA32_VMX_MISC bits 24:16 give the number of CR3-target values, "a
/// value between 0 and 256, inclusive": 256 is accepted, 257 is the first violation
/// (the field can say up to 511). Exact at the limit and one past it.
#[test]
fn cr3_target_count_at_the_limit_and_one_past() {
    for (count, violated) in [
        (0u64, false),
        (4, false),
        (256, false),
        (257, true),
        (511, true),
    ] {
        let mut raw = load("skylake-x-i7-7800x");
        let misc = raw.get(msr::IA32_VMX_MISC).unwrap();
        raw.insert(msr::IA32_VMX_MISC, misc & !(0x1FF << 16) | count << 16);
        let caps = VmxCaps::from_raw(raw).unwrap();
        assert_eq!(u64::from(caps.misc().cr3_count()), count);
        let r = check(&caps);
        assert_eq!(
            r.has(Invariant::Cr3TargetCount, msr::IA32_VMX_MISC, 0x1FF << 16),
            violated,
            "count {count}: {:#?}",
            r.findings
        );
        assert_eq!(r.is_violated(), violated, "count {count}");
    }
}

#[test]
fn invalidation_types_without_instruction() {
    expect(
        |r| xor(r, 0x48C, 1 << 20),
        Invariant::InvalidationTypesWithoutInstruction,
        0x48C,
        (1 << 25) | (1 << 26),
        Severity::Warning,
    );
}

#[test]
fn ept_unusable() {
    expect(
        |r| xor(r, 0x48C, 1 << 6),
        Invariant::EptUnusable,
        0x48C,
        (1 << 6) | (1 << 7) | (1 << 8) | (1 << 14),
        Severity::Warning,
    );
}

#[test]
fn entry_exit_pair() {
    // Drop exit "load IA32_EFER" (21) from both exit MSRs: entry 15 now unpaired.
    expect(
        |r| {
            xor(r, 0x483, 1 << (32 + 21));
            xor(r, 0x48F, 1 << (32 + 21));
        },
        Invariant::EntryExitPair,
        0x484,
        1 << (32 + 15),
        Severity::Warning,
    );
}

#[test]
fn findings_display_on_one_line() {
    let mut raw = load("skylake-x-i7-7800x");
    xor(&mut raw, 0x487, 1 << 31);
    let r = check(&VmxCaps::from_raw(raw).unwrap());
    let s = r.findings[0].to_string();
    assert!(
        s.starts_with("VIOLATION: IA32_VMX_CR0_FIXED0 (0x486) bits 0x80000000"),
        "{s}"
    );
    assert!(!s.contains('\n'));
}

#[test]
fn invvpid_types_without_invvpid() {
    expect(
        |r| xor(r, 0x48C, 1 << 32),
        Invariant::InvalidationTypesWithoutInstruction,
        0x48C,
        0xF << 40,
        Severity::Warning,
    );
}

#[test]
fn fred_entry_exit_pair() {
    // Entry "load IA32 FRED MSRs" (23) allowed, no secondary VM-exit controls at all.
    expect(
        |r| {
            xor(r, 0x484, 1 << (32 + 23));
            xor(r, 0x490, 1 << (32 + 23));
        },
        Invariant::EntryExitPair,
        0x484,
        1 << (32 + 23),
        Severity::Warning,
    );
    // Secondary VM-exit FRED save/load allowed, entry side missing.
    expect(
        |r| {
            xor(r, 0x483, 1 << (32 + 31));
            xor(r, 0x48F, 1 << (32 + 31));
            r.insert(0x493, 0b11);
        },
        Invariant::EntryExitPair,
        0x493,
        0b11,
        Severity::Warning,
    );
    // Both sides: consistent, nothing to report.
    let mut raw = load("skylake-x-i7-7800x");
    xor(&mut raw, 0x484, 1 << (32 + 23));
    xor(&mut raw, 0x490, 1 << (32 + 23));
    xor(&mut raw, 0x483, 1 << (32 + 31));
    xor(&mut raw, 0x48F, 1 << (32 + 31));
    raw.insert(0x493, 0b10);
    let r = check(&VmxCaps::from_raw(raw).unwrap());
    assert!(
        r.findings
            .iter()
            .all(|f| f.invariant != Invariant::EntryExitPair && f.severity == Severity::Info),
        "{:#?}",
        r.findings
    );
}
