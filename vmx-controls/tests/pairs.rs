// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The entry/exit pair table and sanitizer: every pair inconsistent on each side, in
//! both policies, directly and through `setup_vmcs_config`.

mod common;

use common::*;
use vmx_controls::pairs::{find_inconsistent_pairs, ExitSide};
use vmx_controls::*;

#[test]
fn table_matches_linux() {
    let rows: Vec<(PairId, u32, u64)> = ALL_ENTRY_EXIT_PAIRS
        .iter()
        .map(|p| (p.id, p.entry.bits(), p.exit.mask()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (PairId::PerfGlobalCtrl, 1 << 13, 1 << 12),
            (PairId::Pat, 1 << 14, 1 << 19),
            (PairId::Efer, 1 << 15, 1 << 21),
            (PairId::Bndcfgs, 1 << 16, 1 << 23),
            (PairId::RtitCtl, 1 << 18, 1 << 25),
            (PairId::Cet, 1 << 20, 1 << 28),
            (PairId::Fred, 1 << 23, 0x3),
        ]
    );
    assert!(matches!(
        VMCS_ENTRY_EXIT2_PAIRS[0].exit,
        ExitSide::Secondary(_)
    ));
    assert!(VMCS_ENTRY_EXIT_PAIRS
        .iter()
        .all(|p| matches!(p.exit, ExitSide::Primary(_))));
}

fn pair_bits(p: &EntryExitPair) -> (EntryControls, ExitControls, SecondaryExitControls) {
    match p.exit {
        ExitSide::Primary(x) => (p.entry, x, SecondaryExitControls::empty()),
        ExitSide::Secondary(x) => (p.entry, ExitControls::empty(), x),
        _ => unreachable!("only two exit sides exist"),
    }
}

#[test]
fn each_pair_inconsistent_on_each_side_direct() {
    // Start from all pairs set on both sides plus unrelated bits that must survive.
    let base_entry = EntryControls::DEFAULT1 | EntryControls::IA32E_MODE;
    let base_exit = ExitControls::DEFAULT1 | ExitControls::HOST_ADDR_SPACE_SIZE;
    let (mut all_n, mut all_x, mut all_x2) =
        (base_entry, base_exit, SecondaryExitControls::empty());
    for p in &ALL_ENTRY_EXIT_PAIRS {
        let (n, x, x2) = pair_bits(p);
        all_n |= n;
        all_x |= x;
        all_x2 |= x2;
    }
    assert!(find_inconsistent_pairs(&ALL_ENTRY_EXIT_PAIRS, all_n, all_x, all_x2).is_empty());

    for p in &ALL_ENTRY_EXIT_PAIRS {
        let (n, x, x2) = pair_bits(p);
        for entry_side in [true, false] {
            // Drop the other side.
            let (entry, exit, exit2) = if entry_side {
                (all_n, all_x - x, all_x2 - x2)
            } else {
                (all_n - n, all_x, all_x2)
            };
            let err = sanitize_pairs(
                &ALL_ENTRY_EXIT_PAIRS,
                entry,
                exit,
                exit2,
                OnInconsistent::Error,
            )
            .unwrap_err();
            assert_eq!(err.pairs.len(), 1, "{:?}", p.id);
            let bad = err.pairs[0];
            assert_eq!(bad.pair, p.id);
            assert_eq!(bad.entry_side_set(), entry_side);
            assert_eq!(bad.entry, entry.bits());
            assert_eq!(bad.entry_mask, n.bits());
            assert_eq!(bad.exit_mask, p.exit.mask());
            assert_eq!(bad.secondary_exit, p.id == PairId::Fred);
            let expected_exit = if p.id == PairId::Fred {
                exit2.bits()
            } else {
                u64::from(exit.bits())
            };
            assert_eq!(bad.exit, expected_exit);
            let msg = bad.to_string();
            assert!(
                msg.starts_with(&format!(
                    "Inconsistent VM-Entry/VM-Exit pair, entry = {:x} ({:x}), exit = {:x} ({:x})",
                    entry.bits() & n.bits(),
                    n.bits(),
                    expected_exit & p.exit.mask(),
                    p.exit.mask()
                )),
                "{msg}"
            );

            let ok = sanitize_pairs(
                &ALL_ENTRY_EXIT_PAIRS,
                entry,
                exit,
                exit2,
                OnInconsistent::Sanitize,
            )
            .unwrap();
            assert_eq!(ok.inconsistent, err.pairs);
            // Both sides cleared, everything else untouched.
            assert_eq!(ok.entry, entry - n);
            assert_eq!(ok.exit, exit - x);
            assert_eq!(ok.secondary_exit, exit2 - x2);
            assert!(ok.entry.contains(base_entry) && ok.exit.contains(base_exit));
        }
    }
}

#[test]
fn every_inconsistent_pair_is_reported_not_only_the_first() {
    let entry = EntryControls::LOAD_IA32_PAT | EntryControls::LOAD_CET_STATE;
    let exit = ExitControls::LOAD_IA32_EFER | ExitControls::LOAD_CET_STATE;
    let err = sanitize_pairs(
        &VMCS_ENTRY_EXIT_PAIRS,
        entry,
        exit,
        SecondaryExitControls::empty(),
        OnInconsistent::Error,
    )
    .unwrap_err();
    let ids: Vec<_> = err.pairs.iter().map(|p| p.pair).collect();
    assert_eq!(ids, vec![PairId::Pat, PairId::Efer]);
    assert!(err.to_string().contains("IA32_PAT, IA32_EFER"), "{err}");
    // KVM prints each side masked: PAT has only its entry bit (14), EFER only its exit
    // bit (21).
    assert_eq!(
        err.pairs[0].to_string(),
        "Inconsistent VM-Entry/VM-Exit pair, entry = 4000 (4000), exit = 0 (80000) \
         [IA32_PAT: only the entry side is set]"
    );
    assert!(
        err.pairs[1].to_string().starts_with(
            "Inconsistent VM-Entry/VM-Exit pair, entry = 0 (8000), exit = 200000 (200000)"
        ),
        "{}",
        err.pairs[1]
    );
    let ok = sanitize_pairs(
        &VMCS_ENTRY_EXIT_PAIRS,
        entry,
        exit,
        SecondaryExitControls::empty(),
        OnInconsistent::Sanitize,
    )
    .unwrap();
    assert_eq!(ok.entry, EntryControls::LOAD_CET_STATE);
    assert_eq!(ok.exit, ExitControls::LOAD_CET_STATE);
}

#[test]
fn fred_exit_side_counts_any_bit_of_the_mask() {
    for exit2 in [
        SecondaryExitControls::SAVE_IA32_FRED,
        SecondaryExitControls::LOAD_IA32_FRED,
    ] {
        assert!(find_inconsistent_pairs(
            &VMCS_ENTRY_EXIT2_PAIRS,
            EntryControls::LOAD_IA32_FRED,
            ExitControls::empty(),
            exit2,
        )
        .is_empty());
        let ok = sanitize_pairs(
            &VMCS_ENTRY_EXIT2_PAIRS,
            EntryControls::empty(),
            ExitControls::empty(),
            exit2 | SecondaryExitControls::LOAD_IA32_SPEC_CTRL,
            OnInconsistent::Sanitize,
        )
        .unwrap();
        assert_eq!(
            ok.secondary_exit,
            SecondaryExitControls::LOAD_IA32_SPEC_CTRL
        );
    }
    // The primary table alone never looks at FRED.
    assert!(find_inconsistent_pairs(
        &VMCS_ENTRY_EXIT_PAIRS,
        EntryControls::LOAD_IA32_FRED,
        ExitControls::empty(),
        SecondaryExitControls::empty(),
    )
    .is_empty());
}

#[test]
fn unpaired_controls_are_not_checked() {
    // SAVE_IA32_PAT / SAVE_IA32_EFER and PT_CONCEAL_PIP have no partner by design.
    assert!(find_inconsistent_pairs(
        &ALL_ENTRY_EXIT_PAIRS,
        EntryControls::PT_CONCEAL_PIP,
        ExitControls::SAVE_IA32_PAT | ExitControls::SAVE_IA32_EFER,
        SecondaryExitControls::empty(),
    )
    .is_empty());
}

/// Tiger Lake plus the MPX pair (and 0x492): every pair of the primary table present on both sides.
fn tgl_all_pairs() -> vmx_caps::RawMsrs {
    let mut r = raw(TGL);
    let exit = r.get(0x483).unwrap() | (1 << (32 + 23));
    let entry = r.get(0x484).unwrap() | (1 << (32 + 16));
    r.insert(0x483, exit);
    r.insert(0x484, entry);
    // And the tertiary MSR the Bochs dump lacks, so no diagnostic besides the pair's.
    r.insert(0x492, 0x10);
    r
}

#[test]
fn each_pair_inconsistent_on_each_side_through_setup() {
    let base = vmx_caps::VmxCaps::from_raw(tgl_all_pairs()).unwrap();
    let ok = setup_vmcs_config(&base, &VmcsPolicy::linux()).unwrap();
    for p in &VMCS_ENTRY_EXIT_PAIRS {
        assert!(p.entry_set(ok.config.entry), "{:?} present", p.id);
    }
    for p in &VMCS_ENTRY_EXIT_PAIRS {
        let ExitSide::Primary(x) = p.exit else {
            unreachable!()
        };
        for drop_exit in [true, false] {
            let mut r = tgl_all_pairs();
            let (index, bit) = if drop_exit {
                (0x483, x.bits())
            } else {
                (0x484, p.entry.bits())
            };
            let v = r.get(index).unwrap() & !(u64::from(bit) << 32);
            r.insert(index, v);
            let caps = vmx_caps::VmxCaps::from_raw(r).unwrap();

            let err = setup_vmcs_config(&caps, &VmcsPolicy::linux()).unwrap_err();
            let SetupError::InconsistentPairs(pairs) = &err else {
                panic!("{err:?}")
            };
            assert_eq!(pairs.len(), 1);
            assert_eq!(pairs[0].pair, p.id);
            assert_eq!(pairs[0].entry_side_set(), drop_exit);
            assert_eq!(err.kind(), "inconsistent_pairs");

            let sanitized = setup_vmcs_config(
                &caps,
                &VmcsPolicy::linux().with_on_inconsistent(OnInconsistent::Sanitize),
            )
            .unwrap();
            assert_eq!(
                sanitized.diagnostics,
                vec![Diagnostic::InconsistentPair(pairs[0])]
            );
            assert_eq!(sanitized.diagnostics[0].severity(), Severity::Warning);
            assert!(!sanitized.config.entry.intersects(p.entry));
            assert!(!sanitized.config.exit.intersects(x));
            // Only the pair's bits differ from the consistent configuration.
            assert_eq!(sanitized.config.entry, ok.config.entry - p.entry);
            assert_eq!(sanitized.config.exit, ok.config.exit - x);
        }
    }
}

#[test]
fn fred_pair_through_setup() {
    // ARL + entry LOAD_IA32_FRED allowed, 0x493 without FRED bits: entry side only.
    let mut r = raw(ARL);
    r.insert(0x484, r.get(0x484).unwrap() | (1 << (32 + 23)));
    r.insert(0x493, 0x4);
    let caps = vmx_caps::VmxCaps::from_raw(r.clone()).unwrap();
    let err = setup_vmcs_config(&caps, &VmcsPolicy::linux().with_fred()).unwrap_err();
    let SetupError::InconsistentPairs(pairs) = err else {
        panic!()
    };
    assert_eq!(pairs[0].pair, PairId::Fred);
    assert!(pairs[0].entry_side_set());
    let ok = setup_vmcs_config(
        &caps,
        &VmcsPolicy::linux()
            .with_fred()
            .with_on_inconsistent(OnInconsistent::Sanitize),
    )
    .unwrap();
    assert!(!ok.config.entry.contains(EntryControls::LOAD_IA32_FRED));

    // Exit side only: 0x493 allows FRED, entry does not.
    let mut r = raw(ARL);
    r.insert(0x493, 0x3);
    let caps = vmx_caps::VmxCaps::from_raw(r).unwrap();
    let err = setup_vmcs_config(&caps, &VmcsPolicy::linux().with_fred()).unwrap_err();
    let SetupError::InconsistentPairs(pairs) = err else {
        panic!()
    };
    assert_eq!(pairs[0].pair, PairId::Fred);
    assert!(!pairs[0].entry_side_set());
    assert_eq!(pairs[0].exit, 0x3);
    let ok = setup_vmcs_config(
        &caps,
        &VmcsPolicy::linux()
            .with_fred()
            .with_on_inconsistent(OnInconsistent::Sanitize),
    )
    .unwrap();
    assert_eq!(ok.config.secondary_exit.raw(), 0);
}

#[test]
fn sanitizer_property() {
    arbtest::arbtest(|u| {
        let entry = EntryControls::from_bits_retain(u.arbitrary()?);
        let exit = ExitControls::from_bits_retain(u.arbitrary()?);
        let exit2 = SecondaryExitControls::from_bits_retain(u.arbitrary()?);
        let found = find_inconsistent_pairs(&ALL_ENTRY_EXIT_PAIRS, entry, exit, exit2);
        let ok = sanitize_pairs(
            &ALL_ENTRY_EXIT_PAIRS,
            entry,
            exit,
            exit2,
            OnInconsistent::Sanitize,
        )
        .unwrap();
        assert_eq!(ok.inconsistent, found);
        // After sanitizing every pair is consistent, and only pair bits were cleared.
        assert!(find_inconsistent_pairs(
            &ALL_ENTRY_EXIT_PAIRS,
            ok.entry,
            ok.exit,
            ok.secondary_exit
        )
        .is_empty());
        assert!(entry.contains(ok.entry) && exit.contains(ok.exit));
        assert!(exit2.contains(ok.secondary_exit));
        let strict = sanitize_pairs(
            &ALL_ENTRY_EXIT_PAIRS,
            entry,
            exit,
            exit2,
            OnInconsistent::Error,
        );
        assert_eq!(strict.is_ok(), found.is_empty());
        Ok(())
    });
}
