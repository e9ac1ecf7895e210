//! Pin rules: every validation branch, the check matrix, monotonic pins, reboot,
//! intercepts, serde.

mod common;

use common::regs;

use heki_policy::cr::{bits, Cr0, Cr4, CR0_HOST_TYPICAL, CR4_PINNABLE_RFC_V2, CR4_PINNABLE_RFC_V3};
use heki_policy::hypercall::KVM_LOCK_CR_UPDATE_VERSION;
use heki_policy::intercept::{
    apply_intercepts, kvm_may_pass_through, required_intercepts, unenforced_pins,
    KVM_POSSIBLE_CR0_GUEST_BITS, KVM_POSSIBLE_CR4_GUEST_BITS, KVM_POSSIBLE_CR4_GUEST_BITS_WITH_CET,
};
use heki_policy::policy::{LockGrant, PinnableCr, Refusal};
use heki_policy::{
    CallerMode, CrCheck, CrGuestHostMasks, HekiAbi, HostCrs, HypercallRegs, HypercallRet,
    KvmHcError, LockError, PinPolicy, PinnedCrs, RebootPolicy,
};

const WP: u64 = Cr0::WP.bits();
const SMEP: u64 = Cr4::SMEP.bits();
const SMAP: u64 = Cr4::SMAP.bits();
const UMIP: u64 = Cr4::UMIP.bits();

/// A typical Linux host: CR0 = PE MP ET NE WP AM PG, CR4 with SMEP SMAP UMIP FSGSBASE
/// (and PAE, PGE, OSFXSR, ...), no CET/FRED.
const HOST: HostCrs = HostCrs {
    cr0: 0x8005_0033,
    cr4: 0x0037_0ef0,
};
/// A host with every pinnable bit set.
const HOST_ALL: HostCrs = HostCrs {
    cr0: CR0_HOST_TYPICAL.bits(),
    cr4: u64::MAX,
};

#[test]
fn host_constants_are_what_they_claim() {
    assert_eq!(HOST.cr0, CR0_HOST_TYPICAL.bits());
    let cr4 = Cr4::from_bits_retain(HOST.cr4);
    assert!(cr4.contains(Cr4::SMEP | Cr4::SMAP | Cr4::UMIP | Cr4::FSGSBASE));
    assert!(!cr4.intersects(Cr4::CET | Cr4::FRED));
}

#[test]
fn zero_pin_is_rejected_first() {
    let mut p = PinPolicy::new(HekiAbi::RfcV2);
    // Even for an unsupported CR, pin == 0 is the error reported (checked before the CR).
    for cr in [0, 4, 3, 8] {
        assert_eq!(p.lock(cr, 0, HOST), Err(LockError::ZeroPin));
    }
    assert!(p.pins().is_empty());
}

#[test]
fn cr0_pin_must_contain_wp() {
    let mut p = PinPolicy::new(HekiAbi::RfcV2);
    let pe = Cr0::PE.bits();
    assert_eq!(
        p.lock(0, pe, HOST),
        Err(LockError::Cr0WithoutWp { pin: pe })
    );
    // WP check comes before the host check: a pin lacking WP *and* absent on the host.
    let cd = Cr0::CD.bits();
    assert_eq!(
        p.lock(0, cd, HOST),
        Err(LockError::Cr0WithoutWp { pin: cd })
    );
    assert!(p.pins().is_empty());
}

#[test]
fn cr0_pin_must_be_set_on_host() {
    let mut p = PinPolicy::new(HekiAbi::RfcV3);
    let pin = WP | Cr0::CD.bits();
    assert_eq!(
        p.lock(0, pin, HOST),
        Err(LockError::Cr0NotSetOnHost {
            pin,
            missing: Cr0::CD.bits()
        })
    );
    // A host without WP rejects even WP alone.
    let no_wp = HostCrs {
        cr0: HOST.cr0 & !WP,
        ..HOST
    };
    assert_eq!(
        p.lock(0, WP, no_wp),
        Err(LockError::Cr0NotSetOnHost {
            pin: WP,
            missing: WP
        })
    );
    // Unknown high bits are never set on a host.
    let high = WP | (1 << 40);
    assert!(
        matches!(p.lock(0, high, HOST), Err(LockError::Cr0NotSetOnHost { missing, .. }) if missing == 1 << 40)
    );
    assert!(p.pins().is_empty());
}

#[test]
fn cr0_accepts_more_than_wp_when_on_host() {
    let mut p = PinPolicy::new(HekiAbi::RfcV2);
    let pin = WP | Cr0::PE.bits() | Cr0::PG.bits();
    let g = p.lock(0, pin, HOST).unwrap();
    assert_eq!(
        g,
        LockGrant {
            cr: PinnableCr::Cr0,
            requested: pin,
            applied: pin,
            dropped_not_on_host: 0,
            newly_pinned: pin
        }
    );
    assert_eq!(p.pins().cr0, pin);
}

#[test]
fn cr4_pin_must_be_within_pinnable_mask() {
    let mut p = PinPolicy::new(HekiAbi::RfcV2);
    let pae = Cr4::PAE.bits();
    let pin = SMEP | pae;
    assert_eq!(
        p.lock(4, pin, HOST),
        Err(LockError::Cr4OutsidePinnable { pin, outside: pae })
    );
    // The mask check comes before host masking: refused even if the host lacks SMEP.
    let host = HostCrs { cr4: 0, ..HOST };
    assert_eq!(
        p.lock(4, pin, host),
        Err(LockError::Cr4OutsidePinnable { pin, outside: pae })
    );
    assert!(p.pins().is_empty());
}

/// The pinnable mask's edge, bit by bit: each of the 64 CR4 bits pinned alone (host
/// CR4 all ones) is granted exactly when it is in the revision's mask, and refused with
/// that bit named otherwise; the whole mask at once is granted, the mask plus any one
/// outside bit is refused (RFC v2 03/19 `heki_lock_cr`: `pin & ~cr4_pinned_mask`).
#[test]
fn cr4_pinnable_mask_bit_by_bit() {
    for abi in [HekiAbi::RfcV2, HekiAbi::RfcV3] {
        let mask = abi.cr4_pinnable().bits();
        for bit in 0..64 {
            let pin = 1u64 << bit;
            let got = PinPolicy::new(abi).lock(4, pin, HOST_ALL);
            if mask & pin != 0 {
                assert!(got.is_ok(), "{abi} bit {bit}: {got:?}");
            } else {
                assert_eq!(
                    got,
                    Err(LockError::Cr4OutsidePinnable { pin, outside: pin }),
                    "{abi} bit {bit}"
                );
                let over = mask | pin;
                assert_eq!(
                    PinPolicy::new(abi).lock(4, over, HOST_ALL),
                    Err(LockError::Cr4OutsidePinnable {
                        pin: over,
                        outside: pin
                    }),
                    "{abi} mask + bit {bit}"
                );
            }
        }
        let mut p = PinPolicy::new(abi);
        assert!(p.lock(4, mask, HOST_ALL).is_ok(), "{abi}");
        assert_eq!(p.pins().cr4, mask);
    }
}

/// CR0's edge, bit by bit: a pin is granted exactly when it contains WP (and the host
/// has the bits); WP alone is the smallest pin granted, any single other bit is refused.
#[test]
fn cr0_pin_needs_wp_bit_by_bit() {
    let host = HostCrs {
        cr0: u64::MAX,
        cr4: 0,
    };
    for bit in 0..64 {
        let pin = 1u64 << bit;
        let got = PinPolicy::new(HekiAbi::RfcV2).lock(0, pin, host);
        if pin == WP {
            assert!(got.is_ok(), "{got:?}");
        } else {
            assert_eq!(got, Err(LockError::Cr0WithoutWp { pin }), "bit {bit}");
            assert!(
                PinPolicy::new(HekiAbi::RfcV2)
                    .lock(0, pin | WP, host)
                    .is_ok(),
                "WP | bit {bit}"
            );
        }
    }
}

#[test]
fn fred_pinnable_in_v3_only() {
    let fred = Cr4::FRED.bits();
    let mut v2 = PinPolicy::new(HekiAbi::RfcV2);
    assert_eq!(
        v2.lock(4, fred, HOST_ALL),
        Err(LockError::Cr4OutsidePinnable {
            pin: fred,
            outside: fred
        })
    );
    let mut v3 = PinPolicy::new(HekiAbi::RfcV3);
    assert_eq!(v3.lock(4, fred, HOST_ALL).unwrap().applied, fred);
    // A VMM can supply the host kernel's own mask.
    let mut custom = PinPolicy::new(HekiAbi::RfcV2).with_cr4_pinnable(CR4_PINNABLE_RFC_V3);
    assert!(custom.lock(4, fred, HOST_ALL).is_ok());
}

#[test]
fn cr4_bits_absent_on_host_are_dropped() {
    let mut p = PinPolicy::new(HekiAbi::RfcV2);
    let cet = Cr4::CET.bits();
    let g = p.lock(4, SMEP | cet, HOST).unwrap();
    assert_eq!(g.applied, SMEP);
    assert_eq!(g.dropped_not_on_host, cet);
    assert_eq!(p.pins().cr4, SMEP);
    // Everything dropped: still success, nothing pinned.
    let g = p.lock(4, cet, HOST).unwrap();
    assert_eq!(
        (g.applied, g.dropped_not_on_host, g.newly_pinned),
        (0, cet, 0)
    );
    assert_eq!(p.pins().cr4, SMEP);
}

#[test]
fn other_crs_are_rejected() {
    let mut p = PinPolicy::new(HekiAbi::RfcV3);
    for cr in [1, 2, 3, 8, u32::MAX] {
        assert_eq!(p.lock(cr, WP, HOST), Err(LockError::UnsupportedCr { cr }));
    }
    assert!(p.pins().is_empty());
}

#[test]
fn every_lock_error_is_einval() {
    for e in [
        LockError::ZeroPin,
        LockError::Cr0WithoutWp { pin: 1 },
        LockError::Cr0NotSetOnHost { pin: 1, missing: 1 },
        LockError::Cr4OutsidePinnable { pin: 1, outside: 1 },
        LockError::UnsupportedCr { cr: 3 },
    ] {
        assert_eq!(e.error(), KvmHcError::Inval);
    }
}

#[test]
fn newly_pinned_reports_growth_only() {
    let mut p = PinPolicy::new(HekiAbi::RfcV2);
    assert_eq!(
        p.lock(4, SMEP | SMAP, HOST).unwrap().newly_pinned,
        SMEP | SMAP
    );
    assert_eq!(p.lock(4, SMAP | UMIP, HOST).unwrap().newly_pinned, UMIP);
    assert_eq!(p.lock(4, SMEP, HOST).unwrap().newly_pinned, 0);
    assert_eq!(p.pins().cr4, SMEP | SMAP | UMIP);
}

fn call(
    p: &mut PinPolicy,
    nr: u64,
    a0: u64,
    a1: u64,
    a2: u64,
) -> Option<heki_policy::policy::HypercallOutcome> {
    p.handle_hypercall(regs(nr, a0, a1, a2), CallerMode::KERNEL_64, HOST)
}

#[test]
fn hypercall_path_returns_what_the_guest_sees() {
    let mut p = PinPolicy::new(HekiAbi::RfcV2);
    let q = call(&mut p, 13, 0, 0, KVM_LOCK_CR_UPDATE_VERSION).unwrap();
    assert_eq!(q.ret, HypercallRet::AbiVersion(1));
    assert_eq!(q.ret.to_rax(true), 1);
    let ok = call(&mut p, 13, 0, WP, 0).unwrap();
    assert_eq!(ok.ret.to_rax(true), 0);
    assert_eq!(ok.grant.unwrap().applied, WP);
    let bad = call(&mut p, 13, 0, Cr0::PE.bits(), 0).unwrap();
    assert_eq!(bad.ret.to_rax(true), (-22i64) as u64);
    assert_eq!(
        bad.refusal,
        Some(Refusal::Lock(LockError::Cr0WithoutWp {
            pin: Cr0::PE.bits()
        }))
    );
    let flags = call(&mut p, 13, 0, 0, 6).unwrap();
    assert_eq!(flags.ret, HypercallRet::Error(KvmHcError::Inval));
    assert!(matches!(flags.refusal, Some(Refusal::Request(_))));
    let user = p
        .handle_hypercall(
            HypercallRegs {
                nr: 13,
                a1: WP,
                ..Default::default()
            },
            CallerMode {
                cpl: 3,
                long_mode: true,
            },
            HOST,
        )
        .unwrap();
    assert_eq!(user.ret.to_rax(true), u64::MAX); // -KVM_EPERM
    assert!(call(&mut p, 12, 0, 0, 0).is_none());
    assert_eq!(p.pins(), PinnedCrs { cr0: WP, cr4: 0 });
}

/// Every pinnable bit, pinned alone (CR0: with WP), against writes that keep, set or
/// clear it; other CRs are never checked.
#[test]
fn check_matrix_every_pinnable_bit() {
    let cr0_bits: Vec<u64> = bits(CR0_HOST_TYPICAL.bits()).collect();
    let cr4_bits: Vec<u64> = bits(CR4_PINNABLE_RFC_V3.bits()).collect();
    assert_eq!(cr0_bits.len(), 7);
    assert_eq!(cr4_bits.len(), 6);
    for &bit in &cr0_bits {
        let mut p = PinPolicy::new(HekiAbi::RfcV3);
        let pin = WP | bit;
        p.lock(0, pin, HOST_ALL).unwrap();
        assert_eq!(p.check_cr(0, pin), CrCheck::Allow);
        assert_eq!(
            p.check_cr(0, u64::MAX),
            CrCheck::Allow,
            "setting extra bits is allowed"
        );
        assert_eq!(p.check_cr(0, pin & !bit), CrCheck::Deny { cleared: bit });
        assert_eq!(p.check_cr(0, 0), CrCheck::Deny { cleared: pin });
        for other in cr0_bits.iter().filter(|&&o| o & pin == 0) {
            assert_eq!(
                p.check_cr(0, pin & !*other),
                CrCheck::Allow,
                "unpinned bit {other:#x}"
            );
        }
        // CR4 with nothing pinned, and CRs Heki never checks.
        for cr in [2, 3, 4, 8] {
            assert_eq!(p.check_cr(cr, 0), CrCheck::Allow);
        }
    }
    for &bit in &cr4_bits {
        let mut p = PinPolicy::new(HekiAbi::RfcV3);
        p.lock(4, bit, HOST_ALL).unwrap();
        assert_eq!(p.check_cr(4, bit), CrCheck::Allow);
        assert_eq!(p.check_cr(4, u64::MAX), CrCheck::Allow);
        assert_eq!(p.check_cr(4, !bit), CrCheck::Deny { cleared: bit });
        assert_eq!(p.check_cr(4, 0), CrCheck::Deny { cleared: bit });
        for other in cr4_bits.iter().filter(|&&o| o != bit) {
            assert_eq!(p.check_cr(4, bit | !*other), CrCheck::Allow);
        }
        for cr in [0, 2, 3, 8] {
            assert_eq!(p.check_cr(cr, 0), CrCheck::Allow);
        }
    }
    // All pinned together: every cleared subset is reported exactly.
    let mut p = PinPolicy::new(HekiAbi::RfcV3);
    p.lock(4, CR4_PINNABLE_RFC_V3.bits(), HOST_ALL).unwrap();
    p.lock(0, CR0_HOST_TYPICAL.bits(), HOST_ALL).unwrap();
    for &a in &cr4_bits {
        for &b in &cr4_bits {
            assert_eq!(
                p.check_cr(4, CR4_PINNABLE_RFC_V3.bits() & !(a | b)),
                CrCheck::Deny { cleared: a | b }
            );
        }
    }
    for &a in &cr0_bits {
        assert_eq!(
            p.check_cr(0, CR0_HOST_TYPICAL.bits() & !a),
            CrCheck::Deny { cleared: a }
        );
    }
}

#[test]
fn pins_never_shrink_under_any_request_sequence() {
    arbtest::arbtest(|u| {
        let abi = *u.choose(&HekiAbi::ALL)?;
        let mut p = PinPolicy::new(abi);
        let mut granted = PinnedCrs::EMPTY;
        let steps: u8 = u.arbitrary()?;
        for _ in 0..steps {
            let before = p.pins();
            // Bias towards plausible values so that locks succeed often.
            let nr = if u.ratio(9, 10)? {
                abi.lock_cr_update_nr()
            } else {
                u.arbitrary()?
            };
            let a0 = *u.choose(&[0u64, 4, 0, 4, 3, 1 << 32, u64::MAX])?;
            let r: u64 = u.arbitrary()?;
            let a1 = match u.choose_index(4)? {
                0 => WP | (r & CR0_HOST_TYPICAL.bits()),
                1 => r & CR4_PINNABLE_RFC_V3.bits(),
                2 => r & (WP | CR4_PINNABLE_RFC_V3.bits() | CR0_HOST_TYPICAL.bits()),
                _ => r,
            };
            let any: u64 = u.arbitrary()?;
            let a2 = *u.choose(&[0u64, 0, 0, 1, 2, any])?;
            let mode = CallerMode {
                cpl: *u.choose(&[0u8, 0, 0, 3])?,
                long_mode: u.arbitrary()?,
            };
            let host = if u.ratio(1, 2)? {
                HOST
            } else {
                HostCrs {
                    cr0: u.arbitrary()?,
                    cr4: u.arbitrary()?,
                }
            };
            let out = p.handle_hypercall(
                HypercallRegs {
                    nr,
                    a0,
                    a1,
                    a2,
                    a3: u.arbitrary()?,
                },
                mode,
                host,
            );
            let after = p.pins();
            assert!(
                after.contains(&before),
                "pins shrank: {before:?} -> {after:?}"
            );
            if let Some(g) = out.and_then(|o| o.grant) {
                match g.cr {
                    PinnableCr::Cr0 => granted.cr0 |= g.applied,
                    PinnableCr::Cr4 => granted.cr4 |= g.applied,
                    other => panic!("grant for a register this test does not model: {other:?}"),
                }
            } else {
                assert_eq!(before, after, "a refused or foreign call changed the pins");
            }
            assert_eq!(after, granted, "pins are exactly the OR of grants");
            if after.cr0 != 0 {
                assert!(after.cr0 & WP != 0);
            }
            assert_eq!(after.cr4 & !abi.cr4_pinnable().bits(), 0);
        }
        Ok(())
    });
}

#[test]
fn reboot_keeps_pins_unless_reset() {
    let mut p = PinPolicy::new(HekiAbi::RfcV2);
    p.lock(0, WP, HOST).unwrap();
    p.lock(4, SMEP, HOST).unwrap();
    let pins = p.pins();
    assert_eq!(RebootPolicy::default(), RebootPolicy::KeepPins);
    assert_eq!(p.on_reboot(RebootPolicy::KeepPins), PinnedCrs::EMPTY);
    assert_eq!(p.pins(), pins);
    assert_eq!(p.on_reboot(RebootPolicy::ResetPins), pins);
    assert!(p.pins().is_empty());
    p.lock(4, SMAP, HOST).unwrap();
    assert_eq!(p.reset(), PinnedCrs { cr0: 0, cr4: SMAP });
    assert_eq!(p.check_cr(4, 0), CrCheck::Allow);
}

#[test]
fn intercept_masks_cover_every_pin() {
    let pins = PinnedCrs {
        cr0: WP | Cr0::PE.bits(),
        cr4: SMEP | Cr4::FSGSBASE.bits(),
    };
    let req = required_intercepts(&pins);
    assert_eq!(
        req,
        CrGuestHostMasks {
            cr0: pins.cr0,
            cr4: pins.cr4
        }
    );
    assert!(required_intercepts(&PinnedCrs::EMPTY).is_empty());
    // KVM with EPT: guest owns TS|WP in CR0 and KVM_POSSIBLE_CR4_GUEST_BITS in CR4.
    let kvm_ept = CrGuestHostMasks {
        cr0: !KVM_POSSIBLE_CR0_GUEST_BITS.bits(),
        cr4: !KVM_POSSIBLE_CR4_GUEST_BITS.bits(),
    };
    assert_eq!(
        unenforced_pins(&pins, kvm_ept),
        CrGuestHostMasks {
            cr0: WP,
            cr4: Cr4::FSGSBASE.bits()
        }
    );
    assert_eq!(kvm_may_pass_through(&pins), unenforced_pins(&pins, kvm_ept));
    let fixed = apply_intercepts(&pins, kvm_ept);
    assert!(unenforced_pins(&pins, fixed).is_empty());
    // Never drops an intercept the hypervisor had.
    assert_eq!(fixed.cr0 & kvm_ept.cr0, kvm_ept.cr0);
    assert_eq!(fixed.cr4 & kvm_ept.cr4, kvm_ept.cr4);
    // SMEP/SMAP/UMIP are never guest-owned under KVM.
    assert_eq!(
        kvm_may_pass_through(&PinnedCrs {
            cr0: 0,
            cr4: SMEP | SMAP | UMIP
        })
        .cr4,
        0
    );
    assert_eq!(
        CR4_PINNABLE_RFC_V2.bits() & KVM_POSSIBLE_CR4_GUEST_BITS.bits(),
        Cr4::FSGSBASE.bits()
    );
}

/// Newer KVM (CET virtualization) makes CR4.CET guest-owned: a CET pin must be reported
/// as needing an explicit intercept, and the required intercepts cover it.
#[test]
fn cet_pin_is_reported_as_passable_through() {
    assert_eq!(
        KVM_POSSIBLE_CR4_GUEST_BITS_WITH_CET,
        KVM_POSSIBLE_CR4_GUEST_BITS | Cr4::CET
    );
    // Linux 6.16's value is kept as is.
    assert!(!KVM_POSSIBLE_CR4_GUEST_BITS.contains(Cr4::CET));
    for abi in HekiAbi::ALL {
        let pins = PinnedCrs {
            cr0: WP,
            cr4: abi.cr4_pinnable().bits(),
        };
        let pass = kvm_may_pass_through(&pins);
        assert_eq!(pass.cr0, WP);
        assert_eq!(pass.cr4, (Cr4::FSGSBASE | Cr4::CET).bits(), "{abi}");
        // A KVM with CET guest-owned leaves exactly those pins unenforced until the
        // intercepts are applied.
        let kvm_cet = CrGuestHostMasks {
            cr0: !KVM_POSSIBLE_CR0_GUEST_BITS.bits(),
            cr4: !KVM_POSSIBLE_CR4_GUEST_BITS_WITH_CET.bits(),
        };
        assert_eq!(unenforced_pins(&pins, kvm_cet), pass);
        assert!(unenforced_pins(&pins, apply_intercepts(&pins, kvm_cet)).is_empty());
    }
}

#[cfg(feature = "serde")]
#[test]
fn pin_state_survives_serde() {
    let mut p = PinPolicy::new(HekiAbi::RfcV3);
    p.lock(0, WP, HOST).unwrap();
    p.lock(4, SMEP | SMAP, HOST).unwrap();
    let json = serde_json::to_string(&p.pins()).unwrap();
    let back: PinnedCrs = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p.pins());
    let restored = PinPolicy::new(HekiAbi::RfcV3).with_pins(back);
    assert_eq!(restored.check_cr(4, SMEP), CrCheck::Deny { cleared: SMAP });
    // The whole policy (revision, mask, pins) round-trips too.
    let json = serde_json::to_string(&p).unwrap();
    let back: PinPolicy = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);
}
