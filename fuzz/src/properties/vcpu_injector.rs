//! `vcpu_injector`: the userspace-irqchip injector against a model queue.

use super::common::assert_error_message;
use super::input::Input;
use std::collections::VecDeque;
use vcpu_events::injector::{InjectorError, WaitReason};
use vcpu_events::{
    Decision, ExitKind, IdtVectoring, Injector, Interruptibility, InterruptionInfo, RaiseError,
    RaiseOutcome, RunState,
};

/// `vcpu_injector`: the userspace-irqchip injector under a hostile schedule.
///
/// Input: capacity byte, then operations, each an opcode byte and its operands:
/// raise(vector), a KVM_RUN round (ready, IF, optional interruptibility, optional
/// IDT-vectoring info: decide, commit, apply), an exit (window-open or other),
/// a delivery report, a stale commit.
///
/// Checked against a model queue: nothing is injected unless the exit said ready with
/// IF = 1 and no shadow, at most one vector per KVM_RUN, FIFO order with coalescing of
/// queued vectors, the queue never exceeds its capacity, nothing is lost (every raise
/// is queued, coalesced, refused with an error or injected), the window is requested
/// exactly when something waits, an interrupted event goes first.
pub fn vcpu_injector(data: &[u8]) {
    let mut input = Input::new(data);
    let capacity = usize::from(input.u8()) + 1;
    let mut injector = match Injector::with_capacity(capacity) {
        Ok(injector) => injector,
        Err(error) => panic!("capacity {capacity} refused: {error}"),
    };
    assert!(matches!(
        Injector::with_capacity(0),
        Err(InjectorError::BadCapacity(0))
    ));
    assert!(Injector::with_capacity(257).is_err());

    let mut model: VecDeque<u8> = VecDeque::new();
    let mut in_flight = [0u32; 256];
    let mut slot_busy = false;
    let mut ops = 0u32;
    while !input.is_empty() && ops < 10_000 {
        ops += 1;
        match input.u8() % 6 {
            0 | 1 => raise(&mut injector, &mut model, capacity, &mut input),
            2 => run_round(
                &mut injector,
                &mut model,
                &mut in_flight,
                &mut slot_busy,
                &mut input,
            ),
            3 => {
                let kind = if input.bool() {
                    ExitKind::IrqWindowOpen
                } else {
                    ExitKind::Other
                };
                injector.after_exit(kind);
                slot_busy = false;
            }
            4 => {
                let vector = input.u8();
                let result = injector.on_delivered(vector);
                if in_flight[usize::from(vector)] > 0 {
                    assert_eq!(result, Ok(()), "delivery of an injected vector refused");
                    in_flight[usize::from(vector)] -= 1;
                } else {
                    assert_eq!(result, Err(InjectorError::NotInjected(vector)));
                }
            }
            _ => {
                // A decision that is not for the head of the queue changes nothing.
                let vector = input.u8();
                if model.front() != Some(&vector) {
                    let stale = Decision::Inject {
                        vector,
                        request_interrupt_window: false,
                    };
                    assert_eq!(
                        injector.commit(&stale),
                        Err(InjectorError::StaleDecision(vector))
                    );
                }
            }
        }
        check_model(&injector, &model, &in_flight, capacity);
    }
}

/// A raise: queued at the back, coalesced with the same vector still queued, or
/// refused exactly at capacity.
fn raise(
    injector: &mut Injector,
    model: &mut VecDeque<u8>,
    capacity: usize,
    input: &mut Input<'_>,
) {
    let vector = input.u8();
    match injector.raise(vector) {
        Ok(RaiseOutcome::Coalesced) => {
            assert!(model.contains(&vector), "coalesced a vector not queued")
        }
        Ok(RaiseOutcome::Queued { depth }) => {
            assert!(!model.contains(&vector), "queued a vector twice");
            model.push_back(vector);
            assert_eq!(depth, model.len(), "queue depth");
        }
        Ok(other) => panic!("unexpected raise outcome {other:?}"),
        Err(error) => {
            assert_error_message(&error);
            match error {
                RaiseError::QueueFull {
                    vector: v,
                    capacity: c,
                } => {
                    assert_eq!((v, c), (vector, capacity));
                    assert_eq!(model.len(), capacity, "refused below capacity");
                    assert!(!model.contains(&vector));
                }
                other => panic!("unexpected raise error {other:?}"),
            }
        }
    }
}

/// One KVM_RUN round: the decision obeys the exit's state (ready, IF, shadow,
/// re-injection first, one vector per KVM_RUN, FIFO), then is committed.
fn run_round(
    injector: &mut Injector,
    model: &mut VecDeque<u8>,
    in_flight: &mut [u32; 256],
    slot_busy: &mut bool,
    input: &mut Input<'_>,
) {
    let bits = input.u8();
    let interruptibility =
        (bits & 4 != 0).then(|| Interruptibility::from_bits_retain(u32::from(input.u8() & 0x1f)));
    let reinjection = if bits & 8 != 0 {
        let vectoring = IdtVectoring {
            info: InterruptionInfo::from_bits_retain(input.u32()),
            error_code: input.u32(),
            exit_instruction_len: input.u32(),
        };
        vectoring.reinjection().ok().flatten()
    } else {
        None
    };
    let state = RunState {
        ready_for_interrupt_injection: bits & 1 != 0,
        if_flag: bits & 2 != 0,
        interruptibility,
        reinjection,
    };
    let decision = injector.before_run(&state);
    assert_eq!(
        decision,
        injector.before_run(&state),
        "before_run is not pure"
    );
    match decision {
        Decision::Reinject {
            reinjection: r,
            request_interrupt_window,
        } => {
            assert_eq!(Some(r), state.reinjection, "re-injected another event");
            assert_eq!(request_interrupt_window, !model.is_empty());
        }
        Decision::Inject {
            vector,
            request_interrupt_window,
        } => {
            assert!(
                state.reinjection.is_none(),
                "new vector before re-injection"
            );
            assert!(
                state.ready_for_interrupt_injection,
                "injected while not ready"
            );
            assert!(state.if_flag, "injected with IF = 0");
            assert!(
                !state.interruptibility.is_some_and(|i| i.shadow()),
                "injected in an interrupt shadow"
            );
            assert!(!*slot_busy, "two injections in one KVM_RUN");
            assert_eq!(Some(&vector), model.front(), "not FIFO");
            assert_eq!(request_interrupt_window, model.len() > 1);
        }
        Decision::RequestWindow(reason) => {
            assert!(!model.is_empty(), "window requested with nothing queued");
            assert!(state.reinjection.is_none());
            let ok = match reason {
                WaitReason::SlotBusy => *slot_busy,
                WaitReason::NotReady => !state.ready_for_interrupt_injection,
                WaitReason::InterruptsDisabled => !state.if_flag,
                // Any failing VM-entry check on the injection (a shadow, or
                // a guest state that fails entry anyway) holds it back.
                WaitReason::Validation(_) => state.interruptibility.is_some(),
                _ => false,
            };
            assert!(ok, "window requested for {reason:?} in {state:?}");
        }
        Decision::Idle => {
            assert!(model.is_empty(), "idle with vectors queued");
            assert!(state.reinjection.is_none());
        }
        other => panic!("unexpected decision {other:?}"),
    }
    match decision {
        Decision::Idle => assert!(!decision.request_interrupt_window()),
        Decision::RequestWindow(_) => assert!(decision.request_interrupt_window()),
        _ => {}
    }
    injector
        .commit(&decision)
        .expect("a fresh decision commits");
    if let Some(vector) = decision.vector_to_inject() {
        model.pop_front();
        in_flight[usize::from(vector)] += 1;
        *slot_busy = true;
    }
    if matches!(decision, Decision::Reinject { .. }) {
        // A committed re-injection occupies KVM's slot until the next
        // KVM_RUN, exactly like a committed injection.
        *slot_busy = true;
    }
}

/// The queue is the model's, bounded, and nothing is lost.
fn check_model(injector: &Injector, model: &VecDeque<u8>, in_flight: &[u32; 256], capacity: usize) {
    assert!(
        injector.pending().eq(model.iter().copied()),
        "queue differs from the model"
    );
    assert_eq!(injector.len(), model.len());
    assert!(injector.len() <= capacity, "queue above capacity");
    for v in [0u8, 0x20, 0xff] {
        assert_eq!(injector.is_queued(v), model.contains(&v));
    }
    let stats = injector.stats();
    assert_eq!(
        stats.requested,
        model.len() as u64 + stats.coalesced + stats.rejected + stats.injected,
        "a raised interrupt was lost: {stats:?}"
    );
    let outstanding: u64 = in_flight.iter().map(|&n| u64::from(n)).sum();
    assert_eq!(injector.in_flight(), outstanding, "in-flight count");
    assert_eq!(
        stats.injected,
        stats.delivered + outstanding,
        "delivered + in flight"
    );
}
