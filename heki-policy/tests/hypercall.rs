//! `KVM_HC_LOCK_CR_UPDATE`: numbering per revision, decode branches, return values.

mod common;

use common::regs;

use heki_policy::abi::{classify_cap, upstream_cap_name, HEKI_ABI_VERSION};
use heki_policy::hypercall::{
    decode_request, heki_available, RequestError, UnexpectedReturn, KVM_LOCK_CR_UPDATE_VERSION,
};
use heki_policy::{CallerMode, HekiAbi, HekiCap, HypercallRet, KvmHcError, LockCrRequest};

const K64: CallerMode = CallerMode::KERNEL_64;

#[test]
fn hypercall_number_per_revision() {
    assert_eq!(HekiAbi::RfcV1.lock_cr_update_nr(), 14);
    assert_eq!(HekiAbi::RfcV2.lock_cr_update_nr(), 13);
    assert_eq!(HekiAbi::RfcV3.lock_cr_update_nr(), 13);
    // v1's 13 was another hypercall: not a lock under v1, and v1's 14 is not one under v2.
    assert_eq!(
        decode_request(HekiAbi::RfcV1, regs(13, 0, 1 << 16, 0), K64),
        Ok(None)
    );
    assert_eq!(
        decode_request(HekiAbi::RfcV2, regs(14, 0, 1 << 16, 0), K64),
        Ok(None)
    );
    assert_eq!(
        decode_request(HekiAbi::RfcV1, regs(14, 0, 1 << 16, 0), K64),
        Ok(Some(LockCrRequest::Lock {
            cr: 0,
            pin: 1 << 16
        }))
    );
}

#[test]
fn uapi_numbers_per_revision() {
    assert!(HekiAbi::RfcV1.uapi().is_none());
    let v2 = HekiAbi::RfcV2.uapi().unwrap();
    assert_eq!(
        (
            v2.exit_configure(),
            v2.exit_denial(),
            v2.cap_configure(),
            v2.cap_denial()
        ),
        (39, 40, 235, 236)
    );
    let v3 = HekiAbi::RfcV3.uapi().unwrap();
    assert_eq!(
        (
            v3.exit_configure(),
            v3.exit_denial(),
            v3.cap_configure(),
            v3.cap_denial()
        ),
        (40, 41, 236, 237)
    );
    assert_eq!(v3.abi(), HekiAbi::RfcV3);
}

#[test]
fn cap_collisions_need_a_selected_abi() {
    // Cap 235 without an ABI is upstream's KVM_CAP_VM_TYPES, never Heki.
    assert_eq!(classify_cap(None, 235), Err(Some("KVM_CAP_VM_TYPES")));
    assert_eq!(
        classify_cap(None, 236),
        Err(Some("KVM_CAP_PRE_FAULT_MEMORY"))
    );
    assert_eq!(
        classify_cap(Some(HekiAbi::RfcV1), 235),
        Err(Some("KVM_CAP_VM_TYPES"))
    );
    assert_eq!(
        classify_cap(Some(HekiAbi::RfcV2), 235),
        Ok(HekiCap::Configure)
    );
    assert_eq!(classify_cap(Some(HekiAbi::RfcV2), 236), Ok(HekiCap::Denial));
    // Under v3, 235 is not Heki, 236 is configure, 237 denial.
    assert_eq!(
        classify_cap(Some(HekiAbi::RfcV3), 235),
        Err(Some("KVM_CAP_VM_TYPES"))
    );
    assert_eq!(
        classify_cap(Some(HekiAbi::RfcV3), 236),
        Ok(HekiCap::Configure)
    );
    assert_eq!(classify_cap(Some(HekiAbi::RfcV3), 237), Ok(HekiCap::Denial));
    assert_eq!(
        upstream_cap_name(237),
        Some("KVM_CAP_X86_APIC_BUS_CYCLES_NS")
    );
    assert_eq!(classify_cap(None, 9999), Err(None));
}

#[test]
fn lock_request_decodes() {
    for abi in [HekiAbi::RfcV2, HekiAbi::RfcV3] {
        assert_eq!(
            decode_request(abi, regs(13, 4, 1 << 20, 0), K64),
            Ok(Some(LockCrRequest::Lock {
                cr: 4,
                pin: 1 << 20
            }))
        );
        // The CR number is not judged here: the policy refuses CR3 later.
        assert_eq!(
            decode_request(abi, regs(13, 3, 1, 0), K64),
            Ok(Some(LockCrRequest::Lock { cr: 3, pin: 1 }))
        );
    }
}

#[test]
fn version_query_exact_form() {
    let q = regs(13, 0, 0, KVM_LOCK_CR_UPDATE_VERSION);
    assert_eq!(
        decode_request(HekiAbi::RfcV2, q, K64),
        Ok(Some(LockCrRequest::VersionQuery))
    );
    assert_eq!(
        decode_request(HekiAbi::RfcV3, q, K64),
        Ok(Some(LockCrRequest::VersionQuery))
    );
    assert_eq!(HekiAbi::RfcV2.abi_version(), Some(HEKI_ABI_VERSION));
    assert_eq!(HEKI_ABI_VERSION, 1);
    assert_eq!(HekiAbi::RfcV1.abi_version(), None);
}

#[test]
fn version_flag_with_args_is_einval() {
    for (a0, a1) in [(4, 0), (0, 1 << 16), (4, 1 << 20)] {
        let e = decode_request(
            HekiAbi::RfcV2,
            regs(13, a0, a1, KVM_LOCK_CR_UPDATE_VERSION),
            K64,
        )
        .unwrap_err();
        assert_eq!(e, RequestError::VersionQueryWithArgs { a0, a1 });
        assert_eq!(e.error(), KvmHcError::Inval);
    }
}

#[test]
fn unknown_flags_are_einval() {
    for flags in [2, 3, 1 << 63, u64::MAX] {
        let e = decode_request(HekiAbi::RfcV3, regs(13, 0, 0, flags), K64).unwrap_err();
        assert_eq!(e, RequestError::UnknownFlags { flags });
        assert_eq!(e.error(), KvmHcError::Inval);
    }
}

#[test]
fn v1_has_no_flags_and_no_query() {
    // a2 is not part of v1: ignored, so the "version flag" is just a lock.
    assert_eq!(
        decode_request(HekiAbi::RfcV1, regs(14, 0, 0, 1), K64),
        Ok(Some(LockCrRequest::Lock { cr: 0, pin: 0 }))
    );
    assert!(LockCrRequest::VersionQuery.to_regs(HekiAbi::RfcV1).is_err());
}

#[test]
fn cr_number_above_u32_is_einval() {
    let e = decode_request(HekiAbi::RfcV2, regs(13, 1 << 32, 1, 0), K64).unwrap_err();
    assert_eq!(e, RequestError::CrOutOfRange { a0: 1 << 32 });
    assert_eq!(e.error(), KvmHcError::Inval);
}

#[test]
fn cpl_nonzero_is_eperm_only_for_our_number() {
    let user = CallerMode {
        cpl: 3,
        long_mode: true,
    };
    let e = decode_request(HekiAbi::RfcV2, regs(13, 0, 1 << 16, 0), user).unwrap_err();
    assert_eq!(e, RequestError::NotKernelMode { cpl: 3 });
    assert_eq!(e.error(), KvmHcError::Perm);
    // Checked before flags/a0: a garbage call from user mode is still EPERM.
    let e = decode_request(HekiAbi::RfcV2, regs(13, u64::MAX, 0, 77), user).unwrap_err();
    assert_eq!(e.error(), KvmHcError::Perm);
    // Another hypercall number is not ours to answer.
    assert_eq!(
        decode_request(HekiAbi::RfcV2, regs(12, 0, 0, 0), user),
        Ok(None)
    );
}

#[test]
fn thirty_two_bit_caller_is_truncated() {
    let m32 = CallerMode {
        cpl: 0,
        long_mode: false,
    };
    // Upper halves vanish: nr 13, a0 0, a1 WP, a2 0.
    let r = regs(
        0xdead_0000_0000_000d,
        0xffff_ffff_0000_0000,
        0x1_0001_0000,
        0x8_0000_0000,
    );
    assert_eq!(
        decode_request(HekiAbi::RfcV2, r, m32),
        Ok(Some(LockCrRequest::Lock {
            cr: 0,
            pin: 1 << 16
        }))
    );
    // In 64-bit mode the same registers are another hypercall number.
    assert_eq!(decode_request(HekiAbi::RfcV2, r, K64), Ok(None));
}

#[test]
fn return_values_as_rax() {
    assert_eq!(HypercallRet::Success.to_rax(true), 0);
    assert_eq!(HypercallRet::AbiVersion(1).to_rax(true), 1);
    assert_eq!(
        HypercallRet::Error(KvmHcError::Inval).to_rax(true),
        (-22i64) as u64
    );
    assert_eq!(
        HypercallRet::Error(KvmHcError::Inval).to_rax(true),
        0xffff_ffff_ffff_ffea
    );
    assert_eq!(
        HypercallRet::Error(KvmHcError::Nosys).to_rax(true),
        (-1000i64) as u64
    );
    assert_eq!(HypercallRet::Error(KvmHcError::Perm).to_rax(true), u64::MAX);
    assert_eq!(
        HypercallRet::NOT_SUPPORTED,
        HypercallRet::Error(KvmHcError::Nosys)
    );
    // 32-bit caller: truncated.
    assert_eq!(
        HypercallRet::Error(KvmHcError::Inval).to_rax(false),
        0xffff_ffea
    );
    assert_eq!(
        HypercallRet::Error(KvmHcError::Perm).to_rax(false),
        0xffff_ffff
    );
}

#[test]
fn guest_side_round_trip() {
    for abi in HekiAbi::ALL {
        let req = LockCrRequest::Lock {
            cr: 4,
            pin: (1 << 20) | (1 << 21),
        };
        let r = req.to_regs(abi).unwrap();
        assert_eq!(r.nr, abi.lock_cr_update_nr());
        assert_eq!((r.a0, r.a1, r.a2), (4, (1 << 20) | (1 << 21), 0));
        assert_eq!(decode_request(abi, r, K64), Ok(Some(req)));
    }
    for abi in [HekiAbi::RfcV2, HekiAbi::RfcV3] {
        let r = LockCrRequest::VersionQuery.to_regs(abi).unwrap();
        assert_eq!((r.nr, r.a0, r.a1, r.a2), (13, 0, 0, 1));
        assert_eq!(
            decode_request(abi, r, K64),
            Ok(Some(LockCrRequest::VersionQuery))
        );
    }
}

#[test]
fn guest_interprets_returns() {
    let lock = LockCrRequest::Lock {
        cr: 0,
        pin: 1 << 16,
    };
    for ret in [
        HypercallRet::Success,
        HypercallRet::Error(KvmHcError::Inval),
        HypercallRet::Error(KvmHcError::Nosys),
        HypercallRet::Error(KvmHcError::Perm),
    ] {
        for long in [true, false] {
            assert_eq!(lock.interpret_return(ret.to_rax(long), long), Ok(ret));
        }
    }
    // A lock never returns 1; a query never returns 0.
    assert_eq!(
        lock.interpret_return(1, true),
        Err(UnexpectedReturn { rax: 1 })
    );
    assert!(LockCrRequest::VersionQuery
        .interpret_return(0, true)
        .is_err());
    assert_eq!(
        LockCrRequest::VersionQuery.interpret_return(1, true),
        Ok(HypercallRet::AbiVersion(1))
    );
    // kvm_init_heki(): result < 1 means no Heki (e.g. -KVM_ENOSYS on upstream).
    assert_eq!(heki_available(1, true), Some(1));
    assert_eq!(
        heki_available(HypercallRet::NOT_SUPPORTED.to_rax(true), true),
        None
    );
    assert_eq!(
        heki_available(HypercallRet::NOT_SUPPORTED.to_rax(false), false),
        None
    );
    assert_eq!(heki_available(0, true), None);
}
