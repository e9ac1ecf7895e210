//! `vmm_exits`: raw exits through reference-vmm's decode, handlers and apply step, driven
//! by its one run loop (`run_loop::run`) over a small exit source that reads the fuzz
//! input, each decision checked against the restated table of [`super::vmm_table`].

use super::common::assert_error_message;
use super::input::Input;
use super::vmm_table::{self, Decision, Setting};
use reference_vmm::action::{Action, Actions, Outcome};
use reference_vmm::apply::{ApplyError, Target};
use reference_vmm::exit::Exit;
use reference_vmm::guests::{self, Guest};
use reference_vmm::handlers::RunState;
use reference_vmm::replay::StandIn;
use reference_vmm::run_loop::{self, complete_read, ExitSource, Step, SyntheticClock};
use reference_vmm::stop::{StopCause, TripleFaultReason};
use vcpu_events::Event;

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

/// Most exits read from one input.
const MAX_EXITS: u64 = 512;

/// The fuzz input as a [`run_loop::ExitSource`]: raw exits decoded and decided, each
/// decision checked against the table, actions applied to the vCPU stand-in. After a
/// synthesized triple fault it does what KVM does on the next `KVM_RUN`: the vCPU shuts
/// down (`KVM_EXIT_SHUTDOWN`).
struct FuzzSource<'a> {
    input: Input<'a>,
    setting: Setting,
    budget: Option<u64>,
    stand_in: StandIn,
    /// Why the VMM synthesized a triple fault KVM has not delivered yet.
    pending: Option<TripleFaultReason>,
    /// Exits handed to the decide step.
    handled: u64,
    /// Exits read (decoded or not).
    read: u64,
    /// Trace time of the last exit, ns.
    t_ns: u64,
    /// The stop the last decided actions ask for, if any.
    decided_stop: Option<StopCause>,
}

impl Target for FuzzSource<'_> {
    fn inject(&mut self, event: Event) -> Result<(), ApplyError> {
        self.stand_in.inject(event)
    }

    fn synthesize_triple_fault(&mut self) -> Result<(), ApplyError> {
        self.stand_in.synthesize_triple_fault()
    }
}

impl ExitSource for FuzzSource<'_> {
    type Error = std::convert::Infallible;

    fn next_exit<D>(&mut self, st: &mut RunState, decide: D) -> Result<Step, Self::Error>
    where
        D: FnOnce(&Exit, Option<u64>, &mut RunState) -> Actions,
    {
        if self.stand_in.triple_fault_pending {
            // What KVM does next: the vCPU shuts down, reported with the VMM's cause.
            self.stand_in.triple_fault_pending = false;
            let why = self
                .pending
                .take()
                .expect("a pending triple fault has a reason");
            let actions = self.decided(&Exit::Shutdown, decide, st);
            let expected = vec![Action::Stop {
                cause: StopCause::SynthesizedTripleFault { why },
            }];
            assert_eq!(
                actions.iter().cloned().collect::<Vec<_>>(),
                expected,
                "KVM_EXIT_SHUTDOWN after the synthesized triple fault"
            );
            return Ok(Step::Decided(actions));
        }
        loop {
            if self.input.is_empty() || self.read >= MAX_EXITS {
                return Ok(Step::Stop(StopCause::TraceEnd {
                    exits: st.exits.total(),
                }));
            }
            self.read += 1;
            let raw = next_exit(&mut self.input);
            let reason = raw.reason;
            self.t_ns = self.t_ns.saturating_add(u64::from(self.input.u16()) * 1000);
            let nth = self.handled + 1;
            let expected = vmm_table::decide(
                reason,
                &raw.union,
                raw.io_data,
                nth,
                &self.setting,
                self.pending,
            );
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
            let actions = self.decided(&exit, decide, st);
            assert_eq!(
                st.now,
                std::time::Duration::from_nanos(self.t_ns),
                "the exit's time is the source's"
            );
            check_decision(&exit, expected.clone(), &actions, &before, st, self.budget);
            if let Exit::IoIn { size, .. } = exit {
                // The run loop's read completion: the bytes the guest's `in` reads.
                let mut data = [0xa5u8; 4];
                let n = usize::from(size).min(data.len());
                complete_read(&actions, &mut data[..n]);
                let value = u32::from_le_bytes(data) as u64 & (u64::MAX >> (64 - 8 * n as u32));
                if let Decision::Read { port } = expected {
                    check_read(port, value, &actions, &before);
                }
            }
            if let Some(Action::SynthesizeTripleFault { why }) = actions.iter().next() {
                self.pending = Some(*why);
            }
            return Ok(Step::Decided(actions));
        }
    }
}

impl FuzzSource<'_> {
    /// Hands `exit` to the decide step once, stamped with the source's time, and
    /// notes the stop its actions ask for.
    fn decided<D>(&mut self, exit: &Exit, decide: D, st: &mut RunState) -> Actions
    where
        D: FnOnce(&Exit, Option<u64>, &mut RunState) -> Actions,
    {
        let total = st.exits.total();
        let actions = decide(exit, Some(self.t_ns), st);
        self.handled += 1;
        assert_eq!(st.exits.total(), total + 1, "exit not counted once");
        assert!(actions.len() <= Actions::CAPACITY);
        assert_eq!(actions.iter().count(), actions.len());
        self.decided_stop = actions.iter().find_map(|a| match a {
            Action::Stop { cause } => Some(cause.clone()),
            _ => None,
        });
        actions
    }
}

/// `vmm_exits`: raw `kvm_run` exits, as a hostile guest can shape them, through the
/// reference VMM's run loop: decoder, handlers (the decide step), read completion and
/// apply step (the vCPU stand-in), for each built-in guest's state (its port report
/// channel included) or a bare replay state.
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
/// triple fault and the following `KVM_EXIT_SHUTDOWN` ends the run with that cause, a
/// device read returns the device's value cut to the access size, the exit budget ends
/// the run as `exit-limit` with the budget as its cause; a malformed exit is a typed
/// error with a one-line message; the run ends exactly on a stop decision, with its
/// cause (else when the input ends); every handled exit is counted once; the report
/// adds up and is JSON.
pub fn vmm_exits(data: &[u8]) {
    use reference_vmm::report::{Report, Source};

    let mut input = Input::new(data);
    let (mut st, setting, budget) = setup(&mut input);
    let mut source = FuzzSource {
        input,
        setting,
        budget,
        stand_in: StandIn::default(),
        pending: None,
        handled: 0,
        read: 0,
        t_ns: 0,
        decided_stop: None,
    };
    let mut clock = SyntheticClock::default();
    let Ok(stop) = run_loop::run(&mut source, &mut st, &mut clock);
    // The stand-in accepts every injection the handlers decide, so the run ends
    // exactly on the stop the last decision asked for, else at the input's end.
    match source.decided_stop.take() {
        Some(cause) => assert_eq!(stop.cause, cause, "the run's stop"),
        None => assert!(
            matches!(stop.cause, StopCause::TraceEnd { exits } if exits == source.handled),
            "the run stopped without a stop decision: {stop}"
        ),
    }
    assert_eq!(stop.outcome, stop.cause.outcome());
    assert!(
        !stop.cause.to_string().is_empty(),
        "a stop without a sentence"
    );
    assert_eq!(st.exits.total(), source.handled, "exit count");
    assert!(
        source.stand_in.recorded.len() <= StandIn::KEEP,
        "stand-in record unbounded"
    );
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
    assert_eq!(report.cause, stop.cause, "report cause");
    let counted: u64 = report.exits.values().sum();
    assert_eq!(counted, report.exits_total, "report exits do not add up");
    assert_eq!(report.exits_total, source.handled, "report total");
    serde_json::from_str::<serde::de::IgnoredAny>(&report.to_json()).expect("report is JSON");
    assert!(!report.to_text().is_empty());
}

/// The value an `in` from `port` read: the status port (the irq-flood guest's
/// "everything delivered" flag) reads 0 or 1 as the run state says, any other port 0
/// (no device behind it); the decide step answered with exactly one value.
fn check_read(port: u16, value: u64, actions: &Actions, before: &RunState) {
    let answers = actions
        .iter()
        .filter(|a| matches!(a, Action::ReadValue { .. }))
        .count();
    let stopped = actions.iter().any(|a| matches!(a, Action::Stop { .. }));
    if stopped {
        // The budget ended the run on this exit: nothing answered the read.
        assert_eq!((answers, value), (0, 0), "in from {port:#x} at a stop");
        return;
    }
    assert_eq!(answers, 1, "in from {port:#x}: {actions:?}");
    let expected = if port == guests::PORT_STATUS {
        u64::from(before.irq.drained())
    } else {
        0
    };
    assert_eq!(value, expected, "in from {port:#x}");
}

/// The handler's actions for `exit` are the table's `expected` decision (with the exit
/// budget applied); `before` and `after` are the run state around the handler.
fn check_decision(
    exit: &Exit,
    expected: Decision,
    actions: &Actions,
    before: &RunState,
    after: &RunState,
    budget: Option<u64>,
) {
    let got: Vec<Action> = actions.iter().cloned().collect();
    let nth = after.exits.total();
    // At or past the budget, every decision that does not stop the run stops it as
    // `exit-limit`, caused by the budget (the run is over: raises, injections, a
    // triple fault or a read answer are not applied).
    let stops = matches!(expected, Decision::Stop(..));
    if !stops && budget.is_some_and(|b| nth >= b) {
        assert_eq!(
            got,
            vec![Action::Stop {
                cause: StopCause::ExitBudget { exits: nth }
            }],
            "{exit:?}: exit {nth} of a budget of {budget:?}"
        );
        assert_eq!(
            StopCause::ExitBudget { exits: nth }.outcome(),
            Outcome::ExitLimit
        );
        return;
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
        Decision::Resume => {
            assert!(got.is_empty(), "{exit:?} should resume: {got:?}");
            assert_eq!(unknown_ports, 0);
        }
        Decision::Read { .. } => {
            // The value itself is checked after the read completion (`check_read`).
            assert!(
                matches!(got[..], [Action::ReadValue { .. }]),
                "{exit:?} should answer the read and resume: {got:?}"
            );
            assert_eq!(unknown_ports, 0);
        }
        Decision::Inject(event) => assert_eq!(got, vec![Action::Inject { event }], "{exit:?}"),
        Decision::TripleFault(why) => {
            assert_eq!(got, vec![Action::SynthesizeTripleFault { why }], "{exit:?}")
        }
        Decision::Stop(outcome, cause) => {
            assert_eq!(cause.outcome(), outcome, "{cause:?}: the table's outcome");
            assert_eq!(got, vec![Action::Stop { cause }], "{exit:?}");
        }
        Decision::Malformed => unreachable!("malformed exits are not handled"),
    }
}

/// The run state, the table's setting and the exit budget from the guest and policy
/// bytes.
fn setup(input: &mut Input<'_>) -> (RunState, Setting, Option<u64>) {
    use reference_vmm::config::{
        HekiDenialAction, HekiExits, NotifyMode, NotifySemantics, Policy, RunConfig,
    };
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
        // The guest byte's spare top bit.
        notify_semantics: if guest_byte & 0x80 == 0 {
            NotifySemantics::SeedPatch
        } else {
            NotifySemantics::Qemu72
        },
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
        semantics: policy.notify_semantics,
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
