// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The injector's state as plain data, for snapshot / restore.
//!
//! [`Injector::state`] copies out everything an [`Injector`] holds that
//! changes its future decisions: the bound, the queue (in FIFO order, so
//! coalescing and order survive), the per-vector count of injections not yet
//! reported delivered, whether KVM's interrupt slot was filled since the last
//! exit, and the counters. [`Injector::from_state`] rebuilds an injector that
//! decides exactly as the original would, and refuses (with an
//! [`InjectorStateError`], never a panic) any state the injector itself can
//! never be in.
//!
//! # The checks, derived from the code
//!
//! Every `Injector` method keeps these, so any state that breaks one was not
//! produced by [`Injector::state`]:
//!
//! * `capacity` in `1..=MAX_CAPACITY` ([`Injector::with_capacity`]);
//! * `queued.len() <= capacity` and the vectors are distinct ([`Injector::raise`]
//!   coalesces a vector already queued and refuses one past the bound);
//! * `in_flight` lists each vector once, ascending, with a non-zero count
//!   (the form [`Injector::state`] writes);
//! * `delivered <= injected` ([`Injector::on_delivered`] only counts a
//!   delivery of an in-flight injection);
//! * `sum(in_flight) == injected - delivered`: a committed `Inject` adds one
//!   to both sides, `on_delivered` removes one from both. A per-vector count
//!   saturates at `u32::MAX` (`commit` uses `saturating_add`), so when one
//!   count sits at `u32::MAX` only `<=` is required;
//! * `requested == coalesced + rejected + injected + queued.len()`: every
//!   raise is coalesced, rejected, or queued, and every queued vector leaves
//!   the queue only by a committed `Inject`;
//! * `slot_busy` implies `injected + reinjected >= 1` (only a committed
//!   `Inject` or `Reinject` sets it).
//!
//! `window_requests` and `window_exits` are free counters. The entry
//! capabilities the injector validates an injection with are always the
//! defaults (no setter exists), so they are not part of the state.

use std::collections::VecDeque;

use super::{Injector, InjectorStats, MAX_CAPACITY};

/// Everything an [`Injector`] holds, as plain data (serde behind the `serde`
/// feature). Build one with [`Injector::state`] or field by field;
/// [`Injector::from_state`] checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct InjectorState {
    /// The bound on distinct queued vectors, `1..=MAX_CAPACITY`.
    pub capacity: usize,
    /// The queued vectors, next first (FIFO order), distinct.
    pub queued: Vec<u8>,
    /// Injections not yet reported delivered: `(vector, count)`, only
    /// non-zero counts, ascending vector.
    pub in_flight: Vec<(u8, u32)>,
    /// An injection or re-injection was committed since the last exit: KVM's
    /// interrupt slot is occupied until the next KVM_RUN returns.
    pub slot_busy: bool,
    /// The counters.
    pub stats: InjectorStats,
}

/// Why [`Injector::from_state`] refused a state: no injector can be in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InjectorStateError {
    /// `capacity` is 0 or above [`MAX_CAPACITY`].
    #[error("injector capacity {0} outside 1..=256")]
    BadCapacity(usize),
    /// More queued vectors than the bound allows.
    #[error("injector queue holds {queued} vectors but its capacity is {capacity}")]
    TooManyQueued {
        /// `queued.len()`.
        queued: usize,
        /// The bound.
        capacity: usize,
    },
    /// A vector is queued twice (a raise of a queued vector coalesces).
    #[error("vector {0:#x} is queued twice")]
    DuplicateVector(u8),
    /// `in_flight` is not strictly ascending by vector.
    #[error("in-flight entry for vector {0:#x} is out of order or repeated")]
    UnsortedOrDuplicateInFlight(u8),
    /// An `in_flight` entry with count 0.
    #[error("in-flight entry for vector {0:#x} has count 0")]
    ZeroInFlight(u8),
    /// More deliveries than injections.
    #[error("injector counters: delivered {delivered} exceeds injected {injected}")]
    DeliveredExceedsInjected {
        /// `stats.delivered`.
        delivered: u64,
        /// `stats.injected`.
        injected: u64,
    },
    /// The in-flight counts do not add up to `injected - delivered`.
    #[error("injector counters: {in_flight} in flight but injected - delivered = {outstanding}")]
    InFlightMismatch {
        /// Sum of the `in_flight` counts.
        in_flight: u64,
        /// `stats.injected - stats.delivered`.
        outstanding: u64,
    },
    /// The raises do not add up: `requested` must equal
    /// `coalesced + rejected + injected + queued.len()`.
    #[error(
        "injector counters: requested {requested} but coalesced + rejected + injected + queued = {accounted}"
    )]
    RaisesMismatch {
        /// `stats.requested`.
        requested: u64,
        /// `coalesced + rejected + injected + queued.len()`.
        accounted: u128,
    },
    /// `slot_busy` without any committed injection or re-injection.
    #[error("injector slot marked busy but nothing was ever injected or re-injected")]
    SlotBusyWithoutInjection,
}

impl Injector {
    /// The injector's state as plain data; [`Injector::from_state`] turns it
    /// back into an injector that decides identically.
    pub fn state(&self) -> InjectorState {
        InjectorState {
            capacity: self.capacity,
            queued: self.queue.iter().copied().collect(),
            in_flight: (0..=u8::MAX)
                .filter_map(|v| {
                    let n = self.in_flight[usize::from(v)];
                    (n != 0).then_some((v, n))
                })
                .collect(),
            slot_busy: self.injected_since_exit,
            stats: self.stats,
        }
    }

    /// Rebuilds an injector from `state` after checking every invariant the
    /// injector keeps (listed in [`crate::injector::state`]).
    pub fn from_state(state: &InjectorState) -> Result<Injector, InjectorStateError> {
        check(state)?;
        let mut inj = Injector::new();
        inj.capacity = state.capacity;
        inj.queue = VecDeque::with_capacity(state.capacity);
        for &v in &state.queued {
            inj.queue.push_back(v);
            inj.set_queued(v, true);
        }
        for &(v, n) in &state.in_flight {
            inj.in_flight[usize::from(v)] = n;
        }
        inj.injected_since_exit = state.slot_busy;
        inj.stats = state.stats;
        Ok(inj)
    }
}

fn check(state: &InjectorState) -> Result<(), InjectorStateError> {
    use InjectorStateError as E;
    if state.capacity == 0 || state.capacity > MAX_CAPACITY {
        return Err(E::BadCapacity(state.capacity));
    }
    if state.queued.len() > state.capacity {
        return Err(E::TooManyQueued {
            queued: state.queued.len(),
            capacity: state.capacity,
        });
    }
    let mut seen = [false; 256];
    for &v in &state.queued {
        if std::mem::replace(&mut seen[usize::from(v)], true) {
            return Err(E::DuplicateVector(v));
        }
    }
    let mut prev: Option<u8> = None;
    let mut in_flight: u64 = 0;
    let mut saturated = false;
    for &(v, n) in &state.in_flight {
        if prev.is_some_and(|p| v <= p) {
            return Err(E::UnsortedOrDuplicateInFlight(v));
        }
        if n == 0 {
            return Err(E::ZeroInFlight(v));
        }
        prev = Some(v);
        // At most 256 entries of at most u32::MAX: no u64 overflow.
        in_flight += u64::from(n);
        saturated |= n == u32::MAX;
    }
    check_counters(state, in_flight, saturated)
}

fn check_counters(
    state: &InjectorState,
    in_flight: u64,
    saturated: bool,
) -> Result<(), InjectorStateError> {
    use InjectorStateError as E;
    let s = &state.stats;
    let outstanding = s
        .injected
        .checked_sub(s.delivered)
        .ok_or(E::DeliveredExceedsInjected {
            delivered: s.delivered,
            injected: s.injected,
        })?;
    if in_flight > outstanding || (!saturated && in_flight != outstanding) {
        return Err(E::InFlightMismatch {
            in_flight,
            outstanding,
        });
    }
    // In u128: four u64 terms cannot overflow it, so no sum wraps into a match.
    let accounted = [
        s.coalesced,
        s.rejected,
        s.injected,
        state.queued.len() as u64,
    ]
    .iter()
    .map(|&n| u128::from(n))
    .sum::<u128>();
    if accounted != u128::from(s.requested) {
        return Err(E::RaisesMismatch {
            requested: s.requested,
            accounted,
        });
    }
    if state.slot_busy && s.injected == 0 && s.reinjected == 0 {
        return Err(E::SlotBusyWithoutInjection);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Interruptibility;
    use crate::idt_vectoring::IdtVectoring;
    use crate::injector::{Decision, ExitKind, RunState};
    use crate::interruption::InterruptionInfo;

    const READY: RunState = crate::injector::TEST_READY;

    /// An injector with something in every part of its state: 0x21 in
    /// flight twice, 0x20 delivered, 0x22 and 0x23 queued, slot busy.
    fn busy() -> Injector {
        let mut inj = Injector::with_capacity(4).unwrap();
        for v in [0x20, 0x21, 0x21] {
            inj.raise(v).unwrap();
            let d = inj.before_run(&READY);
            inj.commit(&d).unwrap();
            inj.after_exit(ExitKind::IrqWindowOpen);
        }
        inj.on_delivered(0x20).unwrap();
        inj.raise(0x22).unwrap();
        inj.raise(0x23).unwrap();
        inj.raise(0x22).unwrap(); // coalesced
        let d = inj.before_run(&READY);
        inj.commit(&d).unwrap(); // 0x22 injected: slot busy
        inj.raise(0x24).unwrap();
        inj
    }

    #[test]
    fn state_lists_queue_in_flight_slot_and_counters() {
        let s = busy().state();
        assert_eq!(s.capacity, 4);
        assert_eq!(s.queued, vec![0x23, 0x24]);
        assert_eq!(s.in_flight, vec![(0x21, 2), (0x22, 1)]);
        assert!(s.slot_busy);
        assert_eq!(
            (
                s.stats.requested,
                s.stats.coalesced,
                s.stats.injected,
                s.stats.delivered
            ),
            (7, 1, 4, 1)
        );
        let back = Injector::from_state(&s).unwrap();
        assert_eq!(back.state(), s);
        // The restored slot is busy: no second KVM_INTERRUPT before the run.
        assert!(back.slot_busy());
        assert!(matches!(
            back.before_run(&READY),
            Decision::RequestWindow(_)
        ));
    }

    fn valid() -> InjectorState {
        busy().state()
    }

    fn refused(edit: impl FnOnce(&mut InjectorState)) -> InjectorStateError {
        let mut s = valid();
        edit(&mut s);
        Injector::from_state(&s).unwrap_err()
    }

    #[test]
    fn every_hostile_state_gets_its_error() {
        use InjectorStateError as E;
        assert_eq!(refused(|s| s.capacity = 0), E::BadCapacity(0));
        assert_eq!(refused(|s| s.capacity = 257), E::BadCapacity(257));
        assert_eq!(
            refused(|s| s.capacity = 1),
            E::TooManyQueued {
                queued: 2,
                capacity: 1
            }
        );
        assert_eq!(
            refused(|s| s.queued = vec![0x23, 0x23]),
            E::DuplicateVector(0x23)
        );
        assert_eq!(
            refused(|s| s.in_flight = vec![(0x22, 1), (0x21, 2)]),
            E::UnsortedOrDuplicateInFlight(0x21)
        );
        assert_eq!(
            refused(|s| s.in_flight = vec![(0x21, 1), (0x21, 2)]),
            E::UnsortedOrDuplicateInFlight(0x21)
        );
        assert_eq!(
            refused(|s| s.in_flight = vec![(0x21, 3), (0x22, 0)]),
            E::ZeroInFlight(0x22)
        );
        assert_eq!(
            refused(|s| s.stats.delivered = 5),
            E::DeliveredExceedsInjected {
                delivered: 5,
                injected: 4
            }
        );
        assert_eq!(
            refused(|s| s.in_flight = vec![(0x21, 2)]),
            E::InFlightMismatch {
                in_flight: 2,
                outstanding: 3
            }
        );
        assert_eq!(
            refused(|s| s.in_flight = vec![(0x21, 2), (0x22, 2)]),
            E::InFlightMismatch {
                in_flight: 4,
                outstanding: 3
            }
        );
        assert_eq!(
            refused(|s| s.stats.requested = 8),
            E::RaisesMismatch {
                requested: 8,
                accounted: 7
            }
        );
        // A sum that would wrap u64 is not mistaken for a match.
        assert_eq!(
            refused(|s| {
                s.stats.coalesced = u64::MAX;
                s.stats.requested = u64::MAX;
            }),
            E::RaisesMismatch {
                requested: u64::MAX,
                accounted: u128::from(u64::MAX) + 6
            }
        );
        let fresh = Injector::new().state();
        let mut s = fresh.clone();
        s.slot_busy = true;
        assert_eq!(
            Injector::from_state(&s).unwrap_err(),
            E::SlotBusyWithoutInjection
        );
        // Each message is one line naming the problem.
        for e in [E::BadCapacity(0), E::SlotBusyWithoutInjection] {
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn capacity_and_queue_bounds_at_the_limit_and_one_past() {
        let mut s = Injector::new().state();
        s.capacity = MAX_CAPACITY;
        s.queued = (0..=255u8).collect();
        s.stats.requested = 256;
        let inj = Injector::from_state(&s).unwrap();
        assert_eq!((inj.capacity(), inj.len()), (256, 256));
        s.capacity = MAX_CAPACITY + 1;
        assert_eq!(
            Injector::from_state(&s).unwrap_err(),
            InjectorStateError::BadCapacity(257)
        );
        let mut s = Injector::with_capacity(2).unwrap().state();
        s.queued = vec![1, 2];
        s.stats.requested = 2;
        assert!(Injector::from_state(&s).is_ok());
        s.queued = vec![1, 2, 3];
        s.stats.requested = 3;
        assert_eq!(
            Injector::from_state(&s).unwrap_err(),
            InjectorStateError::TooManyQueued {
                queued: 3,
                capacity: 2
            }
        );
    }

    #[test]
    fn a_saturated_in_flight_count_needs_only_an_upper_bound() {
        // `commit` saturates a per-vector count at u32::MAX; the injected
        // counter goes on, so then in_flight < injected - delivered.
        let mut s = Injector::new().state();
        let injected = u64::from(u32::MAX) + 10;
        s.in_flight = vec![(0x20, u32::MAX)];
        s.stats.injected = injected;
        s.stats.requested = injected;
        let inj = Injector::from_state(&s).unwrap();
        assert_eq!(inj.in_flight(), u64::from(u32::MAX));
        s.in_flight = vec![(0x20, u32::MAX - 1)];
        assert!(matches!(
            Injector::from_state(&s),
            Err(InjectorStateError::InFlightMismatch { .. })
        ));
    }

    /// One random operation, applied to an injector; returns what a VMM
    /// would observe.
    #[derive(Debug, PartialEq)]
    enum Observed {
        Raise(Result<crate::injector::RaiseOutcome, crate::injector::RaiseError>),
        Run(Decision, Result<(), crate::injector::InjectorError>),
        Exit,
        Delivered(Result<(), crate::injector::InjectorError>),
    }

    fn step(inj: &mut Injector, op: u8, vector: u8, state: &RunState) -> Observed {
        match op {
            0 | 1 => Observed::Raise(inj.raise(vector)),
            2 => {
                let d = inj.before_run(state);
                let r = inj.commit(&d);
                Observed::Run(d, r)
            }
            3 => {
                // A stale decision: refused alike.
                let d = Decision::Inject {
                    vector,
                    request_interrupt_window: false,
                };
                Observed::Run(d, inj.commit(&d))
            }
            4 => {
                inj.after_exit(if vector & 1 == 0 {
                    ExitKind::IrqWindowOpen
                } else {
                    ExitKind::Other
                });
                Observed::Exit
            }
            _ => Observed::Delivered(inj.on_delivered(vector)),
        }
    }

    #[test]
    fn property_save_restore_at_every_step_changes_nothing() {
        let reinjection = IdtVectoring {
            info: InterruptionInfo::from_bits_retain(0x8000_0030),
            ..Default::default()
        }
        .reinjection()
        .unwrap()
        .unwrap();
        arbtest::arbtest(|u| {
            let mut never = Injector::with_capacity(u.int_in_range(1..=8)?).unwrap();
            let mut restored = never.clone();
            for _ in 0..u.int_in_range(0..=300)? {
                let saved = restored.state();
                restored = Injector::from_state(&saved).expect("state() is always accepted");
                assert_eq!(restored.state(), saved, "state -> from_state -> state");
                let op = u.int_in_range(0..=5)?;
                let vector = u.int_in_range(0x20..=0x27)?;
                let state = RunState {
                    ready_for_interrupt_injection: u.arbitrary()?,
                    if_flag: u.arbitrary()?,
                    interruptibility: if u.ratio(1, 8)? {
                        Some(Interruptibility::from_bits_retain(
                            Interruptibility::BLOCKING_BY_STI,
                        ))
                    } else {
                        None
                    },
                    reinjection: u.ratio(1, 16)?.then_some(reinjection),
                };
                let a = step(&mut never, op, vector, &state);
                let b = step(&mut restored, op, vector, &state);
                assert_eq!(a, b, "op {op} vector {vector:#x}");
                assert_eq!(never.state(), restored.state());
                assert_eq!(never.stats(), restored.stats());
            }
            Ok(())
        });
    }
}
