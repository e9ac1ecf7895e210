// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `baseline::is_subset_of`, rule by rule against KVM's `vmx_set_vmx_msr` /
//! `vmx_restore_*` (reference vmx.md §3.6): each rule accepts a less capable value and
//! rejects a more capable one, naming the MSR and the bits.

use vmx_caps::baseline::{is_subset_of, Note};
use vmx_caps::{Dump, RawMsrs, VmxCaps};

/// The target: what KVM (here: a real Skylake-X) offers.
fn skx() -> RawMsrs {
    let path = test_support::vmx_fixture("skylake-x-i7-7800x.json");
    Dump::read(&path).unwrap().msrs
}

fn caps(raw: RawMsrs) -> VmxCaps {
    VmxCaps::from_raw(raw).unwrap()
}

/// The notes of restoring Skylake-X with `edit` applied into plain Skylake-X.
fn restore(edit: impl FnOnce(&mut RawMsrs)) -> Vec<Note> {
    let mut raw = skx();
    edit(&mut raw);
    is_subset_of(&caps(raw), &caps(skx()))
}

fn set(raw: &mut RawMsrs, index: u32, f: impl FnOnce(u64) -> u64) {
    let v = raw.get(index).unwrap_or(0);
    raw.insert(index, f(v));
}

/// Exactly one note, on `msr`, with `bits`.
fn rejected(notes: &[Note], msr: u32, bits: u64) {
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert_eq!((notes[0].msr, notes[0].bits), (msr, bits), "{notes:#?}");
    assert!(!notes[0].to_string().contains('\n'));
}

fn accepted(notes: &[Note]) {
    assert!(notes.is_empty(), "{notes:#?}");
}

#[test]
fn identical_sets_restore() {
    accepted(&restore(|_| {}));
}

#[test]
fn basic_feature_and_reserved_bits_are_a_subset() {
    // Feature bits: dual-monitor (49), INS/OUTS (54), TRUE ctls (55), bit 56, bit 58.
    for bit in [56, 58] {
        rejected(
            &restore(|r| set(r, 0x480, |v| v | 1 << bit)),
            0x480,
            1 << bit,
        );
    }
    // Reserved bits 31, 47:45, 63:57.
    for bit in [31, 45, 47, 57, 63] {
        rejected(
            &restore(|r| set(r, 0x480, |v| v | 1 << bit)),
            0x480,
            1 << bit,
        );
    }
    // Fewer features: fine (INS/OUTS information dropped).
    accepted(&restore(|r| set(r, 0x480, |v| v & !(1 << 54))));
}

#[test]
fn basic_32bit_addresses_revision_and_size() {
    rejected(&restore(|r| set(r, 0x480, |v| v | 1 << 48)), 0x480, 1 << 48);
    rejected(&restore(|r| set(r, 0x480, |v| v + 1)), 0x480, 0x7FFF_FFFF);
    // Size may grow (a bigger region is fine), not shrink.
    accepted(&restore(|r| set(r, 0x480, |v| v + (1 << 32))));
    rejected(
        &restore(|r| set(r, 0x480, |v| v - (1 << 32))),
        0x480,
        0x1FFF << 32,
    );
    // KVM does not look at the memory type.
    accepted(&restore(|r| set(r, 0x480, |v| v & !(0xF << 50))));
}

#[test]
fn control_msrs_keep_must_be_one_and_must_be_zero() {
    // TRUE primary (BASIC bit 55 set): forcing more is fine, freeing a forced bit is not.
    accepted(&restore(|r| {
        set(r, 0x48E, |v| v | 1 << 7);
        set(r, 0x482, |v| v | 1 << 7);
    }));
    rejected(
        &restore(|r| set(r, 0x48E, |v| v & !(1 << 1))),
        0x48E,
        1 << 1,
    );
    // Allowing less is fine, allowing more is not.
    accepted(&restore(|r| {
        set(r, 0x48F, |v| v & !(1 << (32 + 23)));
        set(r, 0x483, |v| v & !(1 << (32 + 23)));
    }));
    rejected(
        &restore(|r| {
            set(r, 0x490, |v| v | 1 << (32 + 20));
            set(r, 0x484, |v| v | 1 << (32 + 20));
        }),
        0x490,
        1 << (32 + 20),
    );
    // Secondary controls (no TRUE MSR): VMCS shadowing (14) is not offered by SKX.
    rejected(
        &restore(|r| set(r, 0x48B, |v| v | 1 << (32 + 14))),
        0x48B,
        1 << (32 + 14),
    );
    // Tertiary controls where the target has none.
    rejected(
        &restore(|r| {
            r.insert(0x492, 0x10);
        }),
        0x492,
        0x10,
    );
    accepted(&restore(|r| {
        r.insert(0x492, 0);
    }));
}

#[test]
fn misc_rules() {
    // Feature bit 14 (PT in VMX) and reserved bit 9 may not be added.
    let skx_misc = skx().get(0x485).unwrap();
    assert_ne!(skx_misc & 1 << 14, 0);
    accepted(&restore(|r| set(r, 0x485, |v| v & !(1 << 14))));
    rejected(&restore(|r| set(r, 0x485, |v| v | 1 << 9)), 0x485, 1 << 9);
    // Preemption-timer rate: must match while the timer is offered...
    rejected(&restore(|r| set(r, 0x485, |v| v & !0x1F | 5)), 0x485, 0x1F);
    // ...and is free when it is not (pin control 6 not allowed-1).
    accepted(&restore(|r| {
        set(r, 0x485, |v| v & !0x1F | 5);
        set(r, 0x481, |v| v & !(1 << (32 + 6)));
        set(r, 0x48D, |v| v & !(1 << (32 + 6)));
    }));
    // CR3-target count and MSR-list size: not larger.
    accepted(&restore(|r| {
        set(r, 0x485, |v| v & !(0x1FF << 16) | 2 << 16)
    }));
    rejected(
        &restore(|r| set(r, 0x485, |v| v & !(0x1FF << 16) | 5 << 16)),
        0x485,
        0x1FF << 16,
    );
    rejected(&restore(|r| set(r, 0x485, |v| v | 1 << 25)), 0x485, 7 << 25);
    // MSEG revision: equal.
    rejected(
        &restore(|r| set(r, 0x485, |v| v | 1 << 32)),
        0x485,
        0xFFFF_FFFF << 32,
    );
}

#[test]
fn ept_vpid_and_vmfunc_are_a_subset() {
    // Page-walk length 5 is not offered by SKX.
    rejected(&restore(|r| set(r, 0x48C, |v| v | 1 << 7)), 0x48C, 1 << 7);
    accepted(&restore(|r| set(r, 0x48C, |v| v & !(1 << 21))));
    // VMFUNC where the target has none.
    rejected(
        &restore(|r| {
            r.insert(0x491, 1);
        }),
        0x491,
        1,
    );
}

#[test]
fn hlat_prefix_size_is_a_maximum() {
    let with_hlat = |size: u64| {
        let mut r = skx();
        set(&mut r, 0x48C, |v| v | size << 48);
        caps(r)
    };
    // 1 (0b01) is less than 2 (0b10) although not a bitwise subset of it.
    accepted(&is_subset_of(&with_hlat(1), &with_hlat(2)));
    let notes = is_subset_of(&with_hlat(2), &with_hlat(1));
    rejected(&notes, 0x48C, 0x3F << 48);
    // The fleet baseline takes the minimum and restores on both.
    let base = vmx_caps::baseline::intersect(&[with_hlat(1), with_hlat(2)]).unwrap();
    assert_eq!(base.caps.ept_vpid().unwrap().hlat_prefix_size(), 1);
    accepted(&is_subset_of(&base.caps, &with_hlat(1)));
    accepted(&is_subset_of(&base.caps, &with_hlat(2)));
}

#[test]
fn cr_fixed_rules() {
    // FIXED0: forcing more CR bits on is fine, forcing fewer is not.
    accepted(&restore(|r| set(r, 0x486, |v| v | 1 << 1)));
    rejected(
        &restore(|r| set(r, 0x488, |v| v & !(1 << 13))),
        0x488,
        1 << 13,
    );
    // FIXED1: allowing more CR4 bits than the target is not.
    rejected(&restore(|r| set(r, 0x489, |v| v | 1 << 30)), 0x489, 1 << 30);
    accepted(&restore(|r| set(r, 0x489, |v| v & !(1 << 0))));
}

#[test]
fn vmcs_enum_is_not_checked() {
    accepted(&restore(|r| set(r, 0x48A, |_| 0x3FE)));
}

#[test]
fn preemption_timer_rates_dropped_once_and_restorable() {
    let with_rate = |rate: u64| {
        let mut r = skx();
        set(&mut r, 0x485, |v| v & !0x1F | rate);
        caps(r)
    };
    let hosts = [with_rate(7), with_rate(5), with_rate(3)];
    let base = vmx_caps::baseline::intersect(&hosts).unwrap();
    // One note (7 vs 5); after that the baseline has no timer and the rate is moot.
    let timer_notes: Vec<_> = base.notes.iter().filter(|n| n.bits == 0x1F).collect();
    assert_eq!(timer_notes.len(), 1, "{:#?}", base.notes);
    assert!(!base.caps.pin_based().may_be_one_bit(6));
    assert!(!base.caps.exit().may_be_one_bit(22));
    for h in &hosts {
        accepted(&is_subset_of(&base.caps, h));
    }
    // Same rate everywhere: the timer stays.
    let same = vmx_caps::baseline::intersect(&[with_rate(5), with_rate(5)]).unwrap();
    assert!(same.notes.is_empty(), "{:#?}", same.notes);
    assert!(same.caps.pin_based().may_be_one_bit(6));
}
