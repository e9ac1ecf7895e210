//! `vmm_exits`: raw exits through reference-vmm's decode, handlers and apply step, each
//! decision checked against the restated table of [`super::vmm_table`].

use super::common::assert_error_message;
use super::input::Input;
use super::vmm_table::{self, Decision, Setting};
use reference_vmm::action::{Action, Actions, Cause, Outcome};
use reference_vmm::guests::{self, Guest};
use reference_vmm::handlers::RunState;

/// Exit budgets (`RunConfig::max_exits`) selected by bits 4..=6 of the guest byte
/// (`None`: the default, never reached here).
const BUDGETS: [Option<u64>; 8] = [
    None,
    Some(1),
    Some(2),
    Some(3),
    Some(5),
    Some(8),
    Some(13),
    None,
];

/// `vmm_exits`: raw `kvm_run` exits, as a hostile guest can shape them, straight into
/// the reference VMM's decoder, handlers and apply step (the vCPU stand-in), for each
/// built-in guest's state (its port report channel included) or a bare replay state.
///
/// Input: a guest byte (low nibble: a built-in guest or none; bits 4..=6: an exit
/// budget), a policy byte (notify mode, Heki exits and denial action, Heki ABI), then
/// exits: a reason selector (the exits KVM and Heki produce, or any u32), a length byte
/// and that many union bytes (rest zero), the I/O data (u64, cut to the access size as
/// KVM writes it) and a time step (u16 µs).
///
/// Every exit gets exactly the decision of the restated table (`vmm_table`): hlt halts,
/// a notify exit with an invalid context follows the notify policy, an unknown reason
/// stops as unhandled naming that number, a Heki denial under `shutdown` synthesizes a
/// triple fault and the following `KVM_EXIT_SHUTDOWN` ends the run with that cause, the
/// exit budget ends the run as `exit-limit`; a malformed exit is a typed error with a
/// one-line message; the apply step stops exactly on a stop decision, with its outcome;
/// every handled exit is counted once; the report adds up and is JSON.
pub fn vmm_exits(data: &[u8]) {
    use reference_vmm::apply::apply;
    use reference_vmm::exit::Exit;
    use reference_vmm::handlers;
    use reference_vmm::replay::StandIn;
    use reference_vmm::report::{Report, Source};

    let mut input = Input::new(data);
    let (mut st, setting, budget) = setup(&mut input);
    let mut stand_in = StandIn::default();
    let mut stop = None;
    let mut handled = 0u64;
    // The cause of a triple fault the VMM synthesized and KVM has not delivered yet.
    let mut pending: Option<Cause> = None;

    for _ in 0..512 {
        if input.is_empty() {
            break;
        }
        let raw = next_exit(&mut input);
        let reason = raw.reason;
        st.now_ns = st.now_ns.saturating_add(u64::from(input.u16()) * 1000);

        let nth = handled + 1;
        let expected = vmm_table::decide(reason, &raw.union, raw.io_data, nth, &setting, pending);
        let exit = match Exit::decode(&raw, st.policy.heki_abi) {
            Ok(exit) => exit,
            Err(error) => {
                assert_error_message(&error);
                assert_eq!(
                    expected,
                    Decision::Malformed,
                    "exit {reason} refused by the decoder ({error})"
                );
                continue;
            }
        };
        assert_ne!(expected, Decision::Malformed, "{exit:?} decoded");
        let before = st.clone();
        let actions = handlers::handle(&exit, &mut st);
        handled += 1;
        assert_eq!(
            st.exits.total(),
            before.exits.total() + 1,
            "exit not counted once"
        );
        check_decision(&exit, expected, &actions, &before, &st, budget);
        let applied = apply(&actions, &mut st, &mut stand_in);
        check_applied(&exit, &actions, applied.as_ref().map(|s| s.outcome));
        if let Some(s) = applied {
            stop = Some(s);
            break;
        }
        if let Some(Action::SynthesizeTripleFault { cause }) = actions.iter().next() {
            assert!(
                stand_in.triple_fault_pending,
                "triple fault not made pending"
            );
            pending = Some(cause);
        }
        if stand_in.triple_fault_pending {
            // What KVM does next: the vCPU shuts down, reported with the VMM's cause.
            stand_in.triple_fault_pending = false;
            let actions = handlers::handle(&Exit::Shutdown, &mut st);
            handled += 1;
            let cause = pending.take().expect("a pending triple fault has a cause");
            assert_eq!(
                actions.iter().collect::<Vec<_>>(),
                vec![Action::Stop {
                    outcome: Outcome::Shutdown,
                    cause
                }],
                "KVM_EXIT_SHUTDOWN after the synthesized triple fault"
            );
            let s = apply(&actions, &mut st, &mut stand_in).expect("shutdown stops");
            assert_eq!(s.outcome, Outcome::Shutdown);
            stop = Some(s);
            break;
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
    assert_eq!(report.outcome, stop.outcome, "report outcome");
    let counted: u64 = report.exits.values().sum();
    assert_eq!(counted, report.exits_total, "report exits do not add up");
    assert_eq!(report.exits_total, handled, "report total");
    serde_json::from_str::<serde::de::IgnoredAny>(&report.to_json()).expect("report is JSON");
    assert!(!report.to_text().is_empty());
}

/// The handler's actions for `exit` are the table's `expected` decision (with the exit
/// budget applied); `before` and `after` are the run state around the handler.
fn check_decision(
    exit: &reference_vmm::exit::Exit,
    expected: Decision,
    actions: &Actions,
    before: &RunState,
    after: &RunState,
    budget: Option<u64>,
) {
    let got: Vec<Action> = actions.iter().collect();
    assert!(actions.len() <= Actions::CAPACITY);
    assert_eq!(got.len(), actions.len());
    let nth = after.exits.total();
    // The budget never swallows a decision with effects (a stop, an injection, raises).
    if expected.resumes() && budget.is_some_and(|b| nth >= b) && got.is_empty() {
        panic!("{exit:?}: exit {nth} of a budget of {budget:?} resumed");
    }
    if expected.resumes() && budget.is_some_and(|b| nth >= b) {
        if let [Action::Stop { outcome, cause }] = got[..] {
            assert_eq!(
                outcome,
                Outcome::ExitLimit,
                "{exit:?} at the budget: {cause:?}"
            );
            assert!(
                !matches!(cause, Cause::Unhandled { .. }),
                "the exit-budget stop of exit {nth} reads as an unhandled exit: {cause:?} \
                 (\"{cause}\")"
            );
            return;
        }
    }
    let unknown_ports = after.channel.unknown_ports - before.channel.unknown_ports;
    match expected {
        Decision::Tick => {
            let target = after.irq.target;
            for action in &got {
                let Action::RaiseInterrupt { vector } = *action else {
                    panic!("{exit:?}: a tick decided {action:?}");
                };
                let ok = match after.guest {
                    Some(Guest::IrqStorm) => vector == guests::IRQ_VECTOR,
                    Some(Guest::IrqFlood) => (guests::FLOOD_FIRST
                        ..guests::FLOOD_FIRST + guests::FLOOD_VECTORS)
                        .contains(&vector),
                    _ => false,
                };
                assert!(ok, "{exit:?}: {:?} raised vector {vector:#x}", after.guest);
            }
            assert!(after.irq.requested <= target, "raised more than the target");
            assert_eq!(unknown_ports, 0);
        }
        Decision::Report { field, value } => {
            assert!(got.is_empty(), "{exit:?}: {got:?}");
            assert_eq!(
                after.channel.fields[field],
                Some(value),
                "report field {field}"
            );
            assert_eq!(unknown_ports, 0);
        }
        Decision::UnknownPort => {
            assert!(got.is_empty(), "{exit:?}: {got:?}");
            assert_eq!(unknown_ports, 1, "{exit:?} not counted as unknown");
        }
        Decision::Resume | Decision::Read { .. } => {
            // (A read's value is written by today's decoder; see the module docs.)
            assert!(got.is_empty(), "{exit:?} should resume: {got:?}");
            assert_eq!(unknown_ports, 0);
        }
        Decision::Inject {
            vector,
            error_code,
            payload,
        } => assert_eq!(
            got,
            vec![Action::InjectException {
                vector,
                error_code,
                payload
            }],
            "{exit:?}"
        ),
        Decision::Nmi => assert_eq!(got, vec![Action::InjectNmi], "{exit:?}"),
        Decision::TripleFault(cause) => assert_eq!(
            got,
            vec![Action::SynthesizeTripleFault { cause }],
            "{exit:?}"
        ),
        Decision::Stop(outcome, cause) => {
            let [Action::Stop {
                outcome: o,
                cause: c,
            }] = got[..]
            else {
                panic!("{exit:?} should stop as {outcome:?} ({cause:?}): {got:?}");
            };
            assert_eq!((o, c), (outcome, cause), "{exit:?}");
        }
        Decision::Malformed => unreachable!("malformed exits are not handled"),
    }
}

/// The apply step stops exactly on a stop action, with its outcome (the stand-in
/// accepts every injection the handlers decide).
fn check_applied(exit: &reference_vmm::exit::Exit, actions: &Actions, stopped: Option<Outcome>) {
    let stop = actions.iter().find_map(|a| match a {
        Action::Stop { outcome, .. } => Some(outcome),
        _ => None,
    });
    assert_eq!(stopped, stop, "{exit:?}: apply of {actions:?}");
}

/// The run state, the table's setting and the exit budget from the guest and policy
/// bytes.
fn setup(input: &mut Input<'_>) -> (RunState, Setting, Option<u64>) {
    use reference_vmm::config::{HekiDenialAction, HekiExits, NotifyMode, Policy, RunConfig};
    use reference_vmm::exit::HekiAbi;

    let guest_byte = input.u8();
    let guest = Guest::ALL.get(usize::from(guest_byte & 0x0f)).copied();
    let budget = BUDGETS[usize::from(guest_byte >> 4) & 7];
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
    if let Some(budget) = budget {
        st.max_exits = budget;
    }
    let setting = Setting {
        notify: policy.notify_mode,
        heki_abi: abi,
        heki_denial: policy.heki_denial,
        plan: (
            st.exceptions.gp_error_code,
            st.exceptions.pf_error_code,
            st.exceptions.pf_cr2,
        ),
    };
    (st, setting, budget)
}

/// The next raw exit: a reason selector (the exits KVM and Heki produce, or any u32),
/// a well-formed access to a channel port or a length byte and that many union bytes
/// (rest zero), then the I/O data, cut to the access size as KVM writes it.
fn next_exit(input: &mut Input<'_>) -> reference_vmm::exit::RawExit {
    use reference_vmm::exit::RawExit;

    let ports = [
        guests::PORT_TICK,
        guests::PORT_SYNC,
        guests::PORT_STATUS,
        guests::PORT_REPORT,
        guests::PORT_REPORT + 15,
    ];
    let selector = input.u8();
    let reason = match selector % 16 {
        0..=4 => 2, // KVM_EXIT_IO: the guests' report channel
        5 => 5,     // KVM_EXIT_HLT
        6 => 6,     // KVM_EXIT_MMIO
        7 => 7,     // KVM_EXIT_IRQ_WINDOW_OPEN
        8 => 8,     // KVM_EXIT_SHUTDOWN
        9 => 9,     // KVM_EXIT_FAIL_ENTRY
        10 => 17,   // KVM_EXIT_INTERNAL_ERROR
        11 => 24,   // KVM_EXIT_SYSTEM_EVENT
        12 => 37,   // KVM_EXIT_NOTIFY
        // Heki configure / denial and upstream collisions, KVM_EXIT_INTR.
        13 => [39, 40, 41, 10][usize::from(selector >> 4) % 4],
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
    // KVM writes `size` bytes of an `out`; RawExit keeps them zero-extended.
    raw.io_data = match raw.union[1] {
        1 => input.u64() & 0xff,
        2 => input.u64() & 0xffff,
        4 => input.u64() & 0xffff_ffff,
        _ => input.u64(),
    };
    raw
}
