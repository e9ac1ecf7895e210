//! Exit ABI: layout against kvm-bindings, round trips for RFC v2 and v3, collisions,
//! caps.

use core::mem::{offset_of, size_of};
use heki_policy::abi::upstream_exit_name;
use heki_policy::cap::{CapError, HekiCapState, CHECK_EXTENSION_VALUE};
use heki_policy::exit::{
    decode_kvm_run, ExitDecodeError, ExitEncodeError, KvmHekiConfigure, KvmHekiDenial,
    NotHekiCause, HEKI_EXIT_SIZE, KVM_RUN_EXIT_REASON_OFFSET, KVM_RUN_EXIT_UNION_OFFSET,
    KVM_RUN_EXIT_UNION_SIZE,
};
use heki_policy::{
    decode_exit, encode_exit, ExitDecode, HekiAbi, HekiCap, HekiExit, HekiExitKind, HekiExitReason,
    HekiExitReasons,
};
use kvm_bindings::kvm_run;

#[test]
fn layout_matches_kvm_run() {
    assert_eq!(
        offset_of!(kvm_run, __bindgen_anon_1),
        KVM_RUN_EXIT_UNION_OFFSET
    );
    assert_eq!(offset_of!(kvm_run, exit_reason), KVM_RUN_EXIT_REASON_OFFSET);
    assert_eq!(
        size_of::<kvm_bindings::kvm_run__bindgen_ty_1>(),
        KVM_RUN_EXIT_UNION_SIZE
    );
    assert_eq!(size_of::<KvmHekiConfigure>(), HEKI_EXIT_SIZE);
    assert_eq!(size_of::<KvmHekiDenial>(), HEKI_EXIT_SIZE);
    assert_eq!(offset_of!(KvmHekiConfigure, reason), 0);
    assert_eq!(offset_of!(KvmHekiConfigure, cr_pinned), 8);
    assert_eq!(offset_of!(KvmHekiConfigure, reserved), 16);
    assert_eq!(offset_of!(KvmHekiDenial, cr_value), 8);
    const { assert!(HEKI_EXIT_SIZE <= KVM_RUN_EXIT_UNION_SIZE) };
}

#[test]
fn bytes_are_little_endian_c_layout() {
    let e = HekiExit::denial(HekiExitReason::Cr4, 0x0011_2233_4455_6677);
    let b = e.to_bytes();
    assert_eq!(&b[0..8], &[2, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&b[8..16], &0x0011_2233_4455_6677u64.to_le_bytes());
    assert!(b[16..].iter().all(|&x| x == 0));
}

fn round_trip(abi: HekiAbi, exit: HekiExit, expect_nr: u32) {
    let mut union = [0xa5u8; KVM_RUN_EXIT_UNION_SIZE];
    let nr = encode_exit(abi, &exit, &mut union).unwrap();
    assert_eq!(nr, expect_nr);
    // Bytes past the member are not touched.
    assert!(union[HEKI_EXIT_SIZE..].iter().all(|&x| x == 0xa5));
    assert_eq!(
        decode_exit(Some(abi), nr, &union),
        Ok(ExitDecode::Heki(exit))
    );
    // Also from a whole kvm_run image.
    let mut run = vec![0u8; size_of::<kvm_run>()];
    run[KVM_RUN_EXIT_REASON_OFFSET..KVM_RUN_EXIT_REASON_OFFSET + 4]
        .copy_from_slice(&nr.to_le_bytes());
    run[KVM_RUN_EXIT_UNION_OFFSET..KVM_RUN_EXIT_UNION_OFFSET + KVM_RUN_EXIT_UNION_SIZE]
        .copy_from_slice(&union);
    assert_eq!(decode_kvm_run(Some(abi), &run), Ok(ExitDecode::Heki(exit)));
}

#[test]
fn round_trips_rfc_v2_and_v3() {
    let smep_smap = (1 << 20) | (1 << 21);
    for (abi, conf, den) in [(HekiAbi::RfcV2, 39, 40), (HekiAbi::RfcV3, 40, 41)] {
        round_trip(abi, HekiExit::configure(HekiExitReason::Cr0, 1 << 16), conf);
        round_trip(
            abi,
            HekiExit::configure(HekiExitReason::Cr4, smep_smap),
            conf,
        );
        round_trip(abi, HekiExit::denial(HekiExitReason::Cr0, 0x8000_0033), den);
        round_trip(abi, HekiExit::denial(HekiExitReason::Cr4, 0x6f0), den);
        // Raw oddities survive: unknown reason, non-zero reserved.
        round_trip(
            abi,
            HekiExit::Denial {
                reason: HekiExitReason::Unknown(0x80),
                cr_value: u64::MAX,
                reserved: [1, 2, 3, 4, 5, 6],
            },
            den,
        );
    }
}

#[test]
fn round_trip_property() {
    arbtest::arbtest(|u| {
        let abi = *u.choose(&[HekiAbi::RfcV2, HekiAbi::RfcV3])?;
        let reason = HekiExitReason::from_raw(u.arbitrary()?);
        let value: u64 = u.arbitrary()?;
        let reserved: [u64; 6] = u.arbitrary()?;
        let exit = if u.arbitrary()? {
            HekiExit::Configure {
                reason,
                cr_pinned: value,
                reserved,
            }
        } else {
            HekiExit::Denial {
                reason,
                cr_value: value,
                reserved,
            }
        };
        let mut union = [0u8; HEKI_EXIT_SIZE];
        let nr = encode_exit(abi, &exit, &mut union).unwrap();
        assert_eq!(
            decode_exit(Some(abi), nr, &union),
            Ok(ExitDecode::Heki(exit))
        );
        Ok(())
    });
}

#[test]
fn same_number_different_meaning_per_revision() {
    let mut union = [0u8; HEKI_EXIT_SIZE];
    let denial_v2 = HekiExit::denial(HekiExitReason::Cr0, 0);
    let nr = encode_exit(HekiAbi::RfcV2, &denial_v2, &mut union).unwrap();
    assert_eq!(nr, 40);
    // 40 is v3's *configure* exit.
    match decode_exit(Some(HekiAbi::RfcV3), 40, &union).unwrap() {
        ExitDecode::Heki(e) => assert_eq!(e.kind(), HekiExitKind::Configure),
        other => panic!("{other:?}"),
    }
}

#[test]
fn collided_exits_are_not_heki_without_an_abi() {
    // Garbage that would decode fine as a Heki exit.
    let union = [0u8; KVM_RUN_EXIT_UNION_SIZE];
    for (nr, name) in [
        (39, "KVM_EXIT_MEMORY_FAULT"),
        (40, "KVM_EXIT_TDX"),
        (41, "KVM_EXIT_ARM_SEA"),
    ] {
        match decode_exit(None, nr, &union).unwrap() {
            ExitDecode::NotHeki(n) => {
                assert_eq!(n.exit_reason, nr);
                assert_eq!(n.cause, NotHekiCause::NoAbiSelected);
                assert_eq!(n.upstream_name, Some(name));
            }
            other => panic!("{other:?}"),
        }
        // RFC v1 has no exits at all.
        assert!(matches!(
            decode_exit(Some(HekiAbi::RfcV1), nr, &union),
            Ok(ExitDecode::NotHeki(n)) if n.cause == NotHekiCause::AbiWithoutExits(HekiAbi::RfcV1)
        ));
    }
    // 39 under v3 is upstream's MEMORY_FAULT, 41 under v2 is ARM_SEA.
    assert!(matches!(
        decode_exit(Some(HekiAbi::RfcV3), 39, &union),
        Ok(ExitDecode::NotHeki(n)) if n.cause == NotHekiCause::OtherExit(HekiAbi::RfcV3)
            && n.upstream_name == Some("KVM_EXIT_MEMORY_FAULT")
    ));
    assert!(matches!(
        decode_exit(Some(HekiAbi::RfcV2), 41, &union),
        Ok(ExitDecode::NotHeki(_))
    ));
    // Not-Heki exits are never read: even an empty buffer is fine.
    assert!(matches!(
        decode_exit(None, 39, &[]),
        Ok(ExitDecode::NotHeki(_))
    ));
    assert_eq!(upstream_exit_name(37), Some("KVM_EXIT_NOTIFY"));
    assert_eq!(upstream_exit_name(1000), None);
}

#[test]
fn short_buffers_are_typed_errors() {
    for len in [0, 8, 63] {
        let b = vec![0u8; len];
        assert_eq!(
            decode_exit(Some(HekiAbi::RfcV2), 40, &b),
            Err(ExitDecodeError::Truncated { len, need: 64 })
        );
        let mut out = vec![0u8; len];
        assert_eq!(
            encode_exit(
                HekiAbi::RfcV2,
                &HekiExit::denial(HekiExitReason::Cr0, 0),
                &mut out
            ),
            Err(ExitEncodeError::Truncated { len, need: 64 })
        );
    }
    assert!(decode_kvm_run(Some(HekiAbi::RfcV2), &[0u8; 10]).is_err());
    assert_eq!(
        encode_exit(
            HekiAbi::RfcV1,
            &HekiExit::denial(HekiExitReason::Cr0, 0),
            &mut [0u8; 64]
        ),
        Err(ExitEncodeError::AbiWithoutExits(HekiAbi::RfcV1))
    );
}

#[test]
fn decode_never_panics_on_garbage() {
    arbtest::arbtest(|u| {
        let abi: Option<HekiAbi> = if u.arbitrary()? {
            Some(*u.choose(&HekiAbi::ALL)?)
        } else {
            None
        };
        let nr: u32 = *u.choose(&[39, 40, 41, 0, u32::MAX])?;
        let bytes: Vec<u8> = u.arbitrary()?;
        let _ = decode_exit(abi, nr, &bytes);
        let _ = decode_kvm_run(abi, &bytes);
        Ok(())
    });
}

#[test]
fn cap_enable_argument_and_state() {
    assert_eq!(CHECK_EXTENSION_VALUE, 3);
    assert_eq!(HekiExitReasons::VALID.bits(), 3);
    assert_eq!(
        HekiExitReasons::from_enable_arg(0),
        Ok(HekiExitReasons::empty())
    );
    assert_eq!(
        HekiExitReasons::from_enable_arg(3),
        Ok(HekiExitReasons::VALID)
    );
    for arg in [4, 7, 1 << 63] {
        assert_eq!(
            HekiExitReasons::from_enable_arg(arg),
            Err(CapError::UnknownReasons {
                arg,
                unknown: arg & !3
            })
        );
    }
    assert!(HekiExitReasons::from_bits_retain(5)
        .to_enable_arg()
        .is_err());
    let mut s = HekiCapState::new();
    s.enable(HekiCap::Denial, 3).unwrap();
    assert!(s.exits_for(HekiCap::Denial, 0) && s.exits_for(HekiCap::Denial, 4));
    assert!(!s.exits_for(HekiCap::Denial, 3));
    // Last call wins: narrowing is allowed.
    s.enable(HekiCap::Denial, HekiExitReasons::CR4.bits())
        .unwrap();
    assert!(!s.exits_for(HekiCap::Denial, 0));
    // A rejected call leaves the state alone.
    assert!(s.enable(HekiCap::Denial, 8).is_err());
    assert_eq!(s.enabled(HekiCap::Denial), HekiExitReasons::CR4);
    assert!(!s.exits_for(HekiCap::Configure, 4));
}

/// The collision tables are upstream's numbers. Exit names come from the one table
/// (`x86_kvm_base::exit_reason`, checked there against every kvm-bindings
/// `KVM_EXIT_*`); here only the numbers the Heki series reuse (39..=41, Heki RFC v2/v3)
/// and the first free one are checked, as this crate's diagnostics print them. Cap
/// names are checked against kvm-bindings 0.14.2 (232..=239).
#[test]
fn upstream_names_match_kvm_bindings() {
    use heki_policy::abi::upstream_cap_name;
    use kvm_bindings as kb;
    assert_eq!(
        upstream_exit_name(kb::KVM_EXIT_MEMORY_FAULT),
        Some("KVM_EXIT_MEMORY_FAULT")
    );
    // Newer than kvm-bindings 0.14.2 (Linux 6.16 / 6.19 headers).
    assert_eq!(upstream_exit_name(40), Some("KVM_EXIT_TDX"));
    assert_eq!(upstream_exit_name(41), Some("KVM_EXIT_ARM_SEA"));
    assert_eq!(upstream_exit_name(42), None);

    let caps = [
        (kb::KVM_CAP_MEMORY_FAULT_INFO, "KVM_CAP_MEMORY_FAULT_INFO"),
        (kb::KVM_CAP_MEMORY_ATTRIBUTES, "KVM_CAP_MEMORY_ATTRIBUTES"),
        (kb::KVM_CAP_GUEST_MEMFD, "KVM_CAP_GUEST_MEMFD"),
        (kb::KVM_CAP_VM_TYPES, "KVM_CAP_VM_TYPES"),
        (kb::KVM_CAP_PRE_FAULT_MEMORY, "KVM_CAP_PRE_FAULT_MEMORY"),
        (
            kb::KVM_CAP_X86_APIC_BUS_CYCLES_NS,
            "KVM_CAP_X86_APIC_BUS_CYCLES_NS",
        ),
        (kb::KVM_CAP_X86_GUEST_MODE, "KVM_CAP_X86_GUEST_MODE"),
        (
            kb::KVM_CAP_ARM_WRITABLE_IMP_ID_REGS,
            "KVM_CAP_ARM_WRITABLE_IMP_ID_REGS",
        ),
    ];
    for (nr, name) in caps {
        assert_eq!(upstream_cap_name(nr), Some(name));
    }
    assert_eq!(caps.first().map(|c| c.0), Some(232));
    assert_eq!(caps.last().map(|c| c.0), Some(239));
    // Every Heki cap number of every revision has an upstream owner: the collision.
    for abi in HekiAbi::ALL {
        if let Some(u) = abi.uapi() {
            for cap in [u.cap_configure(), u.cap_denial()] {
                assert!(upstream_cap_name(cap).is_some(), "{abi} cap {cap}");
            }
            for exit in [u.exit_configure(), u.exit_denial()] {
                assert!(upstream_exit_name(exit).is_some(), "{abi} exit {exit}");
            }
        }
    }
}

/// One spelling (`rfc-v2`), the old one (`heki-rfc-v2`) accepted as an alias.
#[test]
fn abi_has_one_spelling_and_accepts_the_old_one() {
    use heki_policy::abi::UnknownHekiAbi;
    for abi in HekiAbi::ALL {
        assert_eq!(abi.slug().parse::<HekiAbi>(), Ok(abi));
        assert_eq!(abi.alias().parse::<HekiAbi>(), Ok(abi));
        assert_eq!(abi.alias(), format!("heki-{}", abi.slug()));
    }
    assert_eq!(HekiAbi::RfcV2.slug(), "rfc-v2");
    assert_eq!(
        "rfc-v9".parse::<HekiAbi>(),
        Err(UnknownHekiAbi("rfc-v9".to_owned()))
    );
}

/// serde uses the same spelling and accepts the alias.
#[cfg(feature = "serde")]
#[test]
fn abi_serde_spelling() {
    assert_eq!(
        serde_json::to_string(&HekiAbi::RfcV3).unwrap(),
        "\"rfc-v3\""
    );
    let old: HekiAbi = serde_json::from_str("\"heki-rfc-v2\"").unwrap();
    assert_eq!(old, HekiAbi::RfcV2);
}
