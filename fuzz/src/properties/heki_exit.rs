//! `heki_exit`: Heki exit decoding under every ABI selection and the VMM handler.

use super::common::{assert_error_message, heki_abi_from};
use super::input::Input;
use heki_policy::abi::classify_cap;
use heki_policy::cap::HekiExitReasons;
use heki_policy::exit::{decode_kvm_run, ExitDecodeError, NotHekiCause};
use heki_policy::{
    decode_exit, encode_exit, DenialPolicy, ExitDecode, HekiAbi, HekiExit, HekiExitHandler,
};
use std::time::Duration;

/// `heki_exit`: Heki exit decoding from raw kvm_run bytes under every ABI selection,
/// the VMM's handler on whatever decodes, and the cap arguments.
///
/// Input: handler byte (ABI, denial policy, configure semantics), then exits, each an
/// ABI byte (none or an RFC revision), an exit-reason selector (the ABI's configure /
/// denial numbers, a colliding upstream number, or any u32), a length byte and up to
/// 64 union bytes (the rest zero), a time step; then a cap number and argument.
///
/// Nothing decodes as Heki unless an ABI with exits is selected and the number is that
/// ABI's; a decoded exit re-encodes to the same bytes and number; short data is a typed
/// error; the handler's mirror only grows, its counters add up and a denial's denied
/// bits are the mirrored bits the written value clears.
pub fn heki_exit(data: &[u8]) {
    let mut input = Input::new(data);
    let setup = input.u8();
    let handler_abi = HekiAbi::ALL[usize::from(setup % 3)];
    let policy = match (setup >> 2) % 3 {
        0 => DenialPolicy::Gp,
        1 => DenialPolicy::Shutdown,
        _ => DenialPolicy::AuditOnly,
    };
    let semantics = if setup & 0x10 != 0 {
        heki_policy::handler::ConfigureSemantics::Cumulative
    } else {
        heki_policy::handler::ConfigureSemantics::PerCall
    };
    let mut vmm = HekiExitHandler::new(handler_abi, policy).with_configure_semantics(semantics);
    let mut now = Duration::ZERO;
    let mut handled = 0u64;

    for _ in 0..64 {
        if input.is_empty() {
            break;
        }
        let abi = heki_abi_from(input.u8());
        let selector = input.u8();
        let uapi = abi.and_then(|a| a.uapi());
        let exit_reason = match selector % 5 {
            0 => uapi.map_or(39, |u| u.exit_configure()),
            1 => uapi.map_or(40, |u| u.exit_denial()),
            2 => 39 + u32::from(selector >> 3) % 4,
            _ => input.u32(),
        };
        let len = usize::from(input.u8()) % 72;
        let mut union = [0u8; 256];
        let given = input.bytes(len.min(64));
        union[..given.len()].copy_from_slice(given);
        let bytes = &union[..len];
        now += Duration::from_nanos(u64::from(input.u16()));

        let decoded = check_decode(abi, exit_reason, bytes);

        // The handler on anything that decodes for its ABI.
        if let Ok(ExitDecode::Heki(exit)) = decoded {
            if abi != Some(handler_abi) {
                continue;
            }
            let before = vmm.pins();
            let decision = vmm.handle(&exit, now);
            handled += 1;
            let after = vmm.pins();
            assert!(after.contains(&before), "mirrored pins shrank");
            if let HekiExit::Configure { reserved, .. } | HekiExit::Denial { reserved, .. } = exit {
                if reserved != [0; 6] {
                    assert!(
                        decision.anomaly.is_some(),
                        "non-zero reserved bytes unflagged"
                    );
                }
            }
            if let HekiExit::Denial {
                reason, cr_value, ..
            } = exit
            {
                assert_eq!(after, before, "a denial changed the mirror");
                let expected = reason
                    .cr()
                    .and_then(|cr| before.get(cr))
                    .map_or(0, |p| p & !cr_value);
                assert_eq!(decision.denied_bits, expected, "denied bits");
            }
            let s = vmm.stats();
            assert_eq!(
                s.configure_exits + s.denials_cr0 + s.denials_cr4 + s.denials_unknown,
                handled,
                "every exit counted once: {s:?}"
            );
            assert_eq!(
                s.logs_emitted + s.logs_suppressed + s.logs_filtered,
                handled,
                "every exit logged, suppressed or filtered"
            );
        }
    }

    check_caps(input.u32(), input.u64());
}

/// Nothing decodes as Heki unless an ABI with exits is selected and the number is that
/// ABI's; a decoded exit re-encodes to the same bytes and number; short data is a typed
/// error; a whole kvm_run decodes the same.
fn check_decode(
    abi: Option<HekiAbi>,
    exit_reason: u32,
    bytes: &[u8],
) -> Result<ExitDecode, ExitDecodeError> {
    let len = bytes.len();
    let uapi = abi.and_then(|a| a.uapi());
    let decoded = decode_exit(abi, exit_reason, bytes);
    let heki_kind = uapi.and_then(|u| u.exit_kind(exit_reason));
    // (if-let rather than match: ExitDecode is #[non_exhaustive].)
    if let Ok(ExitDecode::NotHeki(not)) = &decoded {
        assert!(
            heki_kind.is_none(),
            "a Heki exit number decoded as not Heki"
        );
        assert_eq!(not.exit_reason, exit_reason);
        assert_eq!(
            not.upstream_name,
            heki_policy::abi::upstream_exit_name(exit_reason)
        );
        let expected_cause = match abi {
            None => NotHekiCause::NoAbiSelected,
            Some(a) if a.uapi().is_none() => NotHekiCause::AbiWithoutExits(a),
            Some(a) => NotHekiCause::OtherExit(a),
        };
        assert_eq!(not.cause, expected_cause, "not-Heki cause");
    } else if let Ok(ExitDecode::Heki(exit)) = &decoded {
        let kind = heki_kind.expect("decoded as Heki without an ABI or number");
        assert_eq!(exit.kind(), kind);
        assert!(len >= 64, "decoded a Heki exit from {len} bytes");
        assert_eq!(&exit.to_bytes()[..], &bytes[..64], "exit bytes not kept");
        let mut again = [0u8; 64];
        let abi = abi.expect("Heki exit with an ABI");
        assert_eq!(encode_exit(abi, exit, &mut again), Ok(exit_reason));
        assert_eq!(&again[..], &bytes[..64], "re-encoded bytes differ");
        assert!(
            encode_exit(abi, exit, &mut again[..63]).is_err(),
            "short buffer"
        );
    } else if let Err(error) = &decoded {
        assert_error_message(error);
        assert!(heki_kind.is_some(), "error for a non-Heki exit: {error:?}");
        let ExitDecodeError::Truncated { len: l, need } = *error else {
            panic!("unexpected decode error {error:?}");
        };
        assert_eq!((l, need), (len, 64), "truncation report");
    } else {
        panic!("unexpected decode result {decoded:?}");
    }
    // The same exit read from a whole kvm_run.
    let mut kvm_run = vec![0u8; 32 + len];
    kvm_run[8..12].copy_from_slice(&exit_reason.to_le_bytes());
    kvm_run[32..].copy_from_slice(bytes);
    match (decode_kvm_run(abi, &kvm_run), &decoded) {
        (Ok(a), Ok(b)) => assert_eq!(&a, b, "kvm_run decode"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("kvm_run decode {a:?} vs union decode {b:?}"),
    }
    assert!(
        decode_kvm_run(abi, &kvm_run[..11]).is_err(),
        "kvm_run without a reason"
    );
    decoded
}

/// Cap numbers and arguments: never Heki without an ABI.
fn check_caps(cap: u32, arg: u64) {
    for abi in [
        None,
        Some(HekiAbi::RfcV1),
        Some(HekiAbi::RfcV2),
        Some(HekiAbi::RfcV3),
    ] {
        let class = classify_cap(abi, cap);
        let expected = abi.and_then(|a| a.uapi()).and_then(|u| u.cap_kind(cap));
        assert_eq!(class.ok(), expected, "cap {cap} under {abi:?}");
    }
    match HekiExitReasons::from_enable_arg(arg) {
        Ok(reasons) => {
            assert_eq!(arg & !3, 0);
            assert_eq!(reasons.to_enable_arg(), Ok(arg), "cap argument round trip");
        }
        Err(error) => {
            assert_error_message(&error);
            assert_ne!(arg & !3, 0, "valid argument refused");
        }
    }
}
