//! `vmm_exits`: raw exits through reference-vmm's decode, handlers and apply step.

use super::common::assert_error_message;
use super::input::Input;

/// `vmm_exits`: raw `kvm_run` exits, as a hostile guest can shape them, straight into
/// the reference VMM's decoder, handlers and apply step (the vCPU stand-in), for each
/// built-in guest's state (its port report channel included) or a bare replay state.
///
/// Input: a guest byte (a built-in guest or none), a policy byte (notify mode, Heki
/// exits and denial action, Heki ABI), then exits: a reason selector (the exits KVM
/// and Heki produce, or any u32), a length byte and that many union bytes (rest zero),
/// the I/O data (u64) and a time step (u16 µs).
///
/// Nothing panics; a malformed exit is a typed error with a message; every handled
/// exit is counted once; one exit yields at most `Actions::CAPACITY` actions; the
/// stand-in's record stays bounded; the final report adds up and is JSON.
pub fn vmm_exits(data: &[u8]) {
    use reference_vmm::action::Actions;
    use reference_vmm::apply::apply;
    use reference_vmm::config::{HekiDenialAction, HekiExits, NotifyMode, Policy, RunConfig};
    use reference_vmm::exit::{Exit, HekiAbi, RawExit};
    use reference_vmm::guests::{Guest, PORT_REPORT, PORT_STATUS, PORT_SYNC, PORT_TICK};
    use reference_vmm::handlers::{self, RunState};
    use reference_vmm::replay::StandIn;
    use reference_vmm::report::{Report, Source};

    let mut input = Input::new(data);
    let guest = Guest::ALL.get(usize::from(input.u8())).copied();
    let p = input.u8();
    let abi = [HekiAbi::None, HekiAbi::RfcV2, HekiAbi::RfcV3][usize::from(p >> 6) % 3];
    let policy = Policy {
        notify_mode: [
            NotifyMode::Run,
            NotifyMode::InternalError,
            NotifyMode::Disable,
        ][usize::from(p % 3)],
        notify_window: 0,
        heki_abi: abi,
        heki_exits: [
            HekiExits::All,
            HekiExits::None,
            HekiExits::Configure,
            HekiExits::Denial,
        ][usize::from((p >> 2) & 3)],
        heki_denial: [
            HekiDenialAction::Gp,
            HekiDenialAction::Shutdown,
            HekiDenialAction::Audit,
        ][usize::from((p >> 4) & 3) % 3],
    };
    let mut st = match guest {
        Some(g) => {
            let mut cfg = RunConfig::new(g);
            cfg.policy = policy;
            RunState::new(&cfg)
        }
        None => RunState::for_replay(policy),
    };
    let mut stand_in = StandIn::default();
    let ports = [
        PORT_TICK,
        PORT_SYNC,
        PORT_STATUS,
        PORT_REPORT,
        PORT_REPORT + 15,
    ];
    let mut stop = None;
    let mut handled = 0u64;

    for _ in 0..512 {
        if input.is_empty() {
            break;
        }
        let selector = input.u8();
        let reason = match selector % 16 {
            0..=4 => 2,                              // KVM_EXIT_IO: the guests' report channel
            5 => 5,                                  // KVM_EXIT_HLT
            6 => 6,                                  // KVM_EXIT_MMIO
            7 => 7,                                  // KVM_EXIT_IRQ_WINDOW_OPEN
            8 => 8,                                  // KVM_EXIT_SHUTDOWN
            9 => 9,                                  // KVM_EXIT_FAIL_ENTRY
            10 => 17,                                // KVM_EXIT_INTERNAL_ERROR
            11 => 24,                                // KVM_EXIT_SYSTEM_EVENT
            12 => 37,                                // KVM_EXIT_NOTIFY
            13 => 39 + u32::from(selector >> 4) % 3, // Heki / upstream collisions
            _ => input.u32(),
        };
        let mut raw = RawExit::new(reason);
        if reason == 2 && selector & 0x10 == 0 {
            // A well-formed port access on one of the channel ports.
            let port = ports[usize::from(selector >> 5) % ports.len()];
            let size = [1u8, 2, 4][usize::from(input.u8()) % 3];
            raw.union[..8].copy_from_slice(&[1, size, port as u8, (port >> 8) as u8, 1, 0, 0, 0]);
        } else {
            let len = usize::from(input.u8());
            let given = input.bytes(len);
            raw.union[..given.len()].copy_from_slice(given);
        }
        raw.io_data = input.u64();
        st.now_ns = st.now_ns.saturating_add(u64::from(input.u16()) * 1000);

        let exit = match Exit::decode(&raw, st.policy.heki_abi) {
            Ok(exit) => exit,
            Err(error) => {
                assert_error_message(&error);
                continue;
            }
        };
        let before = st.exits.total();
        let actions = handlers::handle(&exit, &mut st);
        handled += 1;
        assert_eq!(st.exits.total(), before + 1, "exit not counted once");
        assert!(actions.len() <= Actions::CAPACITY);
        assert_eq!(actions.iter().count(), actions.len());
        if let Some(s) = apply(&actions, &mut st, &mut stand_in) {
            stop = Some(s);
            break;
        }
        if stand_in.triple_fault_pending {
            // What KVM does next: the vCPU shuts down.
            stand_in.triple_fault_pending = false;
            let actions = handlers::handle(&Exit::Shutdown, &mut st);
            handled += 1;
            if let Some(s) = apply(&actions, &mut st, &mut stand_in) {
                stop = Some(s);
                break;
            }
        }
    }
    assert_eq!(st.exits.total(), handled, "exit count");
    assert!(
        stand_in.recorded.len() <= StandIn::KEEP,
        "stand-in record unbounded"
    );
    let Some(stop) = stop else {
        return;
    };
    assert!(!stop.reason.is_empty(), "a stop without a reason");
    let report = Report::build(
        "fuzz",
        Source::Replay,
        &st,
        &stop,
        None,
        0.0,
        None,
        Vec::new(),
        Vec::new(),
    );
    let counted: u64 = report.exits.values().sum();
    assert_eq!(counted, report.exits_total, "report exits do not add up");
    assert_eq!(report.exits_total, handled, "report total");
    serde_json::from_str::<serde::de::IgnoredAny>(&report.to_json()).expect("report is JSON");
    assert!(!report.to_text().is_empty());
}
