//! `notify_exit`: notify-exit cap argument, exit decode and handler.

use super::common::assert_error_message;
use super::input::Input;
use notify_exit::exit::{decode_kvm_run_bytes, KVM_RUN_EXIT_UNION_OFFSET};
use notify_exit::{
    decode, CapArgError, DecodeError, HandlerOptions, NotifyAction, NotifyCapArg, NotifyDecision,
    NotifyExit, NotifyHandler, NotifyPolicy, NotifySemantics, NotifyStats, NotifyVmexitMode,
    RateLimit, StormConfig, StormEvent, KVM_EXIT_NOTIFY,
};
use std::num::NonZeroU64;
use std::time::Duration;

/// `notify_exit`: KVM_ENABLE_CAP argument decode, KVM_EXIT_NOTIFY decode and handling.
///
/// Input: u64 cap argument; a policy byte (mode, triple-fault event, QEMU semantics);
/// storm window (u64 ns) and threshold (u16); log burst (u8); then exit records, each a
/// control byte, flags (u32) and a time step (u32 ns): bit 0 of the control byte
/// replaces the exit reason by a u32 from the input, bits 1-2 pick the union length
/// (4, 0..=3 truncated, 256, or a length from the input), bit 3 polls the storm
/// detector instead of handling an exit, bit 4 steps the clock backwards.
///
/// Decoding keeps every flag bit, rejects the wrong exit reason and short data with a
/// typed error and round-trips through the union bytes and a whole kvm_run; the handler
/// takes exactly the pure policy's decision, its counters add up, and storm transitions
/// agree with its state.
pub fn notify_exit(data: &[u8]) {
    let mut input = Input::new(data);

    // KVM_ENABLE_CAP(KVM_CAP_X86_NOTIFY_VMEXIT) argument.
    let raw = input.u64();
    check_cap_arg(raw);

    // Policy and handler.
    let policy_byte = input.u8();
    let mode = match policy_byte % 3 {
        0 => NotifyVmexitMode::Run,
        1 => NotifyVmexitMode::InternalError,
        _ => NotifyVmexitMode::Disable,
    };
    let semantics = if policy_byte & 0x8 == 0 {
        NotifySemantics::SeedPatch
    } else {
        NotifySemantics::Qemu72
    };
    let policy = NotifyPolicy::new(mode, policy_byte & 0x4 != 0).with_semantics(semantics);
    let window_ns = NonZeroU64::new(input.u64()).unwrap_or(StormConfig::DEFAULT_WINDOW_NS);
    let threshold = NonZeroU64::new(u64::from(input.u16())).unwrap_or(NonZeroU64::MIN);
    let burst = u32::from(input.u8());
    let options = HandlerOptions {
        storm: StormConfig::new(window_ns, threshold),
        exit_log: RateLimit::new(RateLimit::DEFAULT_INTERVAL, burst),
        storm_log: RateLimit::new(RateLimit::DEFAULT_INTERVAL, burst),
    };
    let mut handler = NotifyHandler::with_options(0, policy, options);
    // The clock in ns since the origin; the handler takes it as a `Duration`.
    let mut now: u64 = 0;
    let mut in_storm = false;
    let mut storms = 0u64;
    let mut union = [0u8; 300];

    while !input.is_empty() {
        let control = input.u8();
        let exit_reason = if control & 1 != 0 {
            input.u32()
        } else {
            KVM_EXIT_NOTIFY
        };
        let flags = input.u32();
        let step = u64::from(input.u32());
        now = if control & 0x10 != 0 {
            now.saturating_sub(step)
        } else {
            now.saturating_add(step)
        };
        if control & 0x8 != 0 {
            let event = handler.poll(Duration::from_nanos(now));
            if let Some(event) = event {
                assert!(
                    matches!(event, StormEvent::Ended { .. }),
                    "poll started a storm: {event:?}"
                );
                assert!(in_storm, "storm ended while none was going on");
                in_storm = false;
            }
            assert_eq!(handler.stats().in_storm, in_storm, "in_storm after poll");
            continue;
        }
        let len = match (control >> 1) & 3 {
            0 => 4,
            1 => usize::from(input.u8() % 4),
            2 => 256,
            _ => usize::from(input.u16()) % union.len(),
        };
        union.fill(0);
        union[..4].copy_from_slice(&flags.to_le_bytes());
        let bytes = &union[..len];

        let before = handler.stats();
        let decoded = decode(exit_reason, bytes);
        check_decode(exit_reason, flags, bytes, decoded);

        let handled = handler.handle_raw(exit_reason, bytes, Duration::from_nanos(now));
        let after = handler.stats();
        let (exit, decision) = match (decoded, handled) {
            (Ok(exit), Ok(decision)) => (exit, decision),
            (Err(a), Err(b)) => {
                assert_eq!(a, b, "handle_raw and decode disagree");
                assert_eq!(before, after, "a rejected exit changed the statistics");
                continue;
            }
            (a, b) => panic!("decode {a:?} but handle_raw {b:?}"),
        };

        check_decision(exit, &decision, &policy);
        check_counters(&before, &after, exit);

        // Storm transitions agree with the state.
        match decision.storm {
            Some(StormEvent::Started {
                exits_in_window, ..
            }) => {
                assert!(!in_storm, "storm started twice");
                assert!(exits_in_window >= threshold.get(), "storm below threshold");
                in_storm = true;
                storms += 1;
            }
            Some(StormEvent::Ended { .. }) => {
                assert!(in_storm, "storm ended while none was going on");
                in_storm = false;
            }
            None => {}
            Some(other) => panic!("unexpected storm event {other:?}"),
        }
        assert_eq!(after.in_storm, in_storm, "in_storm");
        assert_eq!(after.storms, storms, "storm count");
    }
}

/// The KVM_ENABLE_CAP(KVM_CAP_X86_NOTIFY_VMEXIT) argument: decoded exactly when
/// ENABLED is set and no unknown flag, round trip, typed errors naming the bits.
fn check_cap_arg(raw: u64) {
    match NotifyCapArg::decode(raw) {
        Ok(arg) => {
            assert_eq!(arg.raw(), raw, "cap argument round trip");
            assert_eq!(arg.window(), (raw >> 32) as u32);
            assert_eq!(arg.flags().unknown_bits(), 0, "decoded unknown flags");
            assert_eq!(raw & 1, 1, "decoded without ENABLED");
        }
        Err(error) => {
            assert_error_message(&error);
            // (if-let chains rather than match: robust to #[non_exhaustive].)
            if let CapArgError::UnknownFlags { raw: r, unknown } = error {
                assert_eq!(r, raw);
                assert_eq!(unknown, raw as u32 & !3, "wrong unknown flag bits");
                assert_ne!(unknown, 0);
            } else if let CapArgError::NotEnabled { raw: r } = error {
                assert_eq!(r, raw);
                assert_eq!(raw as u32 & !2, 0, "NotEnabled with other flag bits");
            } else {
                panic!("unexpected cap argument error {error:?}");
            }
        }
    }
}

/// A notify exit decodes exactly when the reason is KVM_EXIT_NOTIFY and four bytes are
/// there, keeping every flag bit, and round-trips through the union and a whole kvm_run.
fn check_decode(
    exit_reason: u32,
    flags: u32,
    bytes: &[u8],
    decoded: Result<NotifyExit, DecodeError>,
) {
    let len = bytes.len();
    match decoded {
        Ok(exit) => {
            assert_eq!(exit_reason, KVM_EXIT_NOTIFY, "decoded another exit reason");
            assert_eq!(exit.flags.bits(), flags, "flag bits lost");
            assert_eq!(exit.context_invalid(), flags & 1 != 0);
            assert_eq!(decode(KVM_EXIT_NOTIFY, &exit.to_union_bytes()), Ok(exit));
            let mut kvm_run = vec![0u8; KVM_RUN_EXIT_UNION_OFFSET + 256];
            kvm_run[8..12].copy_from_slice(&KVM_EXIT_NOTIFY.to_le_bytes());
            kvm_run[KVM_RUN_EXIT_UNION_OFFSET..].copy_from_slice(&exit.to_union_bytes());
            assert_eq!(decode_kvm_run_bytes(&kvm_run), Ok(exit), "kvm_run decode");
        }
        Err(error) => {
            assert_error_message(&error);
            if let DecodeError::NotNotifyExit { exit_reason: r } = error {
                assert_eq!(r, exit_reason);
                assert_ne!(r, KVM_EXIT_NOTIFY);
            } else if let DecodeError::Truncated { needed, got } = error {
                assert_eq!(exit_reason, KVM_EXIT_NOTIFY);
                assert_eq!((needed, got), (4, len), "truncation report");
            } else {
                panic!("unexpected notify decode error {error:?}");
            }
        }
    }
}

/// The handler applies exactly the pure policy, and the policy follows the decision
/// table restated here (notify-exit's documented table).
fn check_decision(exit: NotifyExit, decision: &NotifyDecision, policy: &NotifyPolicy) {
    let mode = policy.mode;
    assert_eq!(decision.action, policy.decide(exit), "handler vs policy");
    // Seed QEMU patch: a valid context resumes; an invalid one in run mode is a triple
    // fault (when KVM can take one). QEMU 7.2 (kvm_arch_handle_exit):
    // `ctx_invalid || mode == internal-error` stops, anything else resumes.
    let qemu_7_2 = policy.semantics == NotifySemantics::Qemu72;
    let expected = match (exit.context_invalid(), mode) {
        (false, NotifyVmexitMode::InternalError) if qemu_7_2 => "stop",
        (false, _) => "resume",
        (true, NotifyVmexitMode::Run) if !qemu_7_2 && policy.triple_fault_event_enabled => "triple",
        (true, _) => "stop",
    };
    let got = match decision.action {
        NotifyAction::Resume => "resume",
        NotifyAction::SynthesizeTripleFault => "triple",
        NotifyAction::StopInternalError { flags: f, .. } => {
            assert_eq!(f, exit.flags, "stop reports other flags");
            "stop"
        }
        other => panic!("unexpected action {other:?}"),
    };
    assert_eq!(
        got, expected,
        "decision table for {exit:?} under {policy:?}"
    );
}

/// The statistics count the exit once, and every exit ends in exactly one action.
fn check_counters(before: &NotifyStats, after: &NotifyStats, exit: NotifyExit) {
    assert_eq!(after.exits, before.exits + 1, "exits counter");
    assert_eq!(
        after.context_invalid - before.context_invalid,
        u64::from(exit.context_invalid())
    );
    assert_eq!(
        after.resumed + after.triple_faults + after.stops,
        after.exits,
        "every exit ends in exactly one action"
    );
    assert!(after.context_invalid <= after.exits);
    assert!(after.unknown_flags <= after.exits);
    assert!(
        after.exits_in_window <= after.exits,
        "window holds more than all exits"
    );
    assert!(
        after.exits_in_window >= 1,
        "the exit just handled is not in the window"
    );
}
