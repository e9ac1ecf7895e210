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
//! `window_requests` and `window_exits` are free counters.

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
