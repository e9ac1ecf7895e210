// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The userspace-irqchip interrupt injector (no KVM_CREATE_IRQCHIP).
//!
//! Without an in-kernel irqchip KVM has a single interrupt slot: KVM_INTERRUPT
//! fills it unconditionally, a second call before KVM_RUN overwrites the first
//! (a lost interrupt), and an interrupt in the slot is delivered on the next
//! entry even if the guest has IF = 0 (VM entry then fails, SDM 26.3.1.4).
//! The protocol that avoids both (QEMU `kvm_arch_pre_run`; crosvm
//! `ready_for_interrupt`):
//!
//! 1. Before each KVM_RUN, inject **at most one** vector, and only when the
//!    last exit reported `ready_for_interrupt_injection` **and** `if_flag`
//!    (KVM computes the former as IF = 1, no STI/MOV-SS shadow, slot free, no
//!    event awaiting re-injection, no pending exception).
//! 2. Otherwise set `kvm_run.request_interrupt_window = 1`: KVM enables
//!    interrupt-window exiting and returns KVM_EXIT_IRQ_WINDOW_OPEN when the
//!    guest can take an interrupt; the next `before_run` then injects.
//! 3. Clear `request_interrupt_window` when nothing is queued (else KVM_RUN
//!    keeps returning).
//!
//! [`Injector::before_run`] is pure: it looks at the queue and a [`RunState`]
//! and returns a [`Decision`]. The VMM applies it (the `kvm` module does this
//! for a `VcpuFd`) and only then calls [`Injector::commit`], so a failed
//! KVM_INTERRUPT leaves the vector queued: nothing is lost.
//!
//! # Priority
//!
//! An event whose delivery a VM exit interrupted ([`RunState::reinjection`],
//! see [`crate::idt_vectoring`]) goes first, before any queued vector, and
//! needs no interrupt window. With KVM this happens inside the kernel (and
//! `ready_for_interrupt_injection` stays 0 meanwhile), so the KVM glue never
//! sets it; VMMs that own the VMCS do.
//!
//! # Bound and coalescing
//!
//! The queue holds at most `capacity` *distinct* vectors (default
//! [`DEFAULT_CAPACITY`], at most 256), in raise order (FIFO). A vector raised
//! again while it is still queued (not yet injected) is **coalesced** with the
//! queued one, like a bit in the PIC/APIC IRR: the guest sees one interrupt,
//! at the position of the first raise, and [`Injector::raise`] returns
//! [`RaiseOutcome::Coalesced`] so the caller knows. Once a vector has been
//! injected, raising it again queues a new interrupt. A raise that finds the
//! queue full returns [`RaiseError::QueueFull`]; nothing is dropped silently.
//!
//! # Validation
//!
//! Every injection is validated first: the external interrupt is encoded as
//! the VM-entry interruption field and run through
//! [`crate::sdm_checks::check_entry`] with the run state's IF and (when
//! known) interruptibility. A failing check turns the injection into a window
//! request ([`WaitReason::Validation`]).
//!
//! # Counters
//!
//! `requested` (every raise), `coalesced`, `rejected` (queue full),
//! `injected` (KVM_INTERRUPT done), `delivered` (reported by the VMM, e.g.
//! when the guest's handler says so, through [`Injector::on_delivered`]),
//! `reinjected`, `window_requests`, `window_exits`.

#![deny(unsafe_code)]

use std::collections::VecDeque;

use crate::event::{Event, Interruptibility, X86_EFLAGS_IF};
use crate::idt_vectoring::Reinjection;
use crate::interruption::EntryInterruption;
use crate::sdm_checks::{check_entry, EntryCaps, EntryControls, GuestEventState, Violation};

pub mod state;
pub use state::{InjectorState, InjectorStateError};

/// Default bound on distinct queued vectors.
pub const DEFAULT_CAPACITY: usize = 32;
/// Largest useful bound: one entry per vector.
pub const MAX_CAPACITY: usize = 256;

/// What the last VM exit said, as far as injection is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunState {
    /// `kvm_run.ready_for_interrupt_injection`.
    pub ready_for_interrupt_injection: bool,
    /// `kvm_run.if_flag` (guest RFLAGS.IF).
    pub if_flag: bool,
    /// The guest's interruptibility state, if the VMM knows it (KVM folds it
    /// into `ready_for_interrupt_injection`; leave `None` there).
    pub interruptibility: Option<Interruptibility>,
    /// An interrupted event to re-inject first (VMMs owning the VMCS).
    pub reinjection: Option<Reinjection>,
}

/// Why no vector is injected although some are queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitReason {
    /// `ready_for_interrupt_injection` was 0.
    NotReady,
    /// `if_flag` was 0.
    InterruptsDisabled,
    /// A vector was already injected, or an interrupted event re-injected,
    /// since the last exit (KVM's slot is occupied until the next KVM_RUN).
    SlotBusy,
    /// The VM-entry check failed for the injection.
    Validation(Violation),
}

/// What to do before the next KVM_RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Re-inject the interrupted event; `request_interrupt_window` if vectors
    /// remain queued. Never held back: its validity comes from the state
    /// saved at the exit (see [`crate::idt_vectoring`]), and its fields were
    /// decoded by [`crate::idt_vectoring::IdtVectoring::reinjection`].
    Reinject {
        /// The event and its VM-entry fields.
        reinjection: Reinjection,
        /// Value for `kvm_run.request_interrupt_window`.
        request_interrupt_window: bool,
    },
    /// KVM_INTERRUPT `vector`, then set `request_interrupt_window` to the
    /// given value (true if more vectors remain).
    Inject {
        /// The vector.
        vector: u8,
        /// Value for `kvm_run.request_interrupt_window`.
        request_interrupt_window: bool,
    },
    /// Inject nothing; set `request_interrupt_window = 1`.
    RequestWindow(WaitReason),
    /// Nothing queued; set `request_interrupt_window = 0`.
    Idle,
}

impl Decision {
    /// The value to write to `kvm_run.request_interrupt_window`.
    pub fn request_interrupt_window(&self) -> bool {
        match *self {
            Decision::Reinject {
                request_interrupt_window,
                ..
            }
            | Decision::Inject {
                request_interrupt_window,
                ..
            } => request_interrupt_window,
            Decision::RequestWindow(_) => true,
            Decision::Idle => false,
        }
    }

    /// The vector to pass to KVM_INTERRUPT, if any.
    pub fn vector_to_inject(&self) -> Option<u8> {
        match *self {
            Decision::Inject { vector, .. } => Some(vector),
            _ => None,
        }
    }
}

/// Result of a successful [`Injector::raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RaiseOutcome {
    /// Queued; `depth` vectors are now queued.
    Queued {
        /// Queue length after the raise.
        depth: usize,
    },
    /// The vector was already queued: merged with it (one delivery).
    Coalesced,
}

/// A raise that could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RaiseError {
    /// The queue already holds `capacity` distinct vectors.
    #[error("interrupt queue full ({capacity} vectors): vector {vector:#x} not queued")]
    QueueFull {
        /// The vector that was not queued.
        vector: u8,
        /// The bound.
        capacity: usize,
    },
}

/// Misuse reported by [`Injector::commit`] / [`Injector::on_delivered`] /
/// [`Injector::with_capacity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InjectorError {
    /// `commit` got an `Inject` decision for a vector that is not at the
    /// head of the queue (stale decision): nothing changed.
    #[error("stale decision: vector {0:#x} is not at the head of the queue")]
    StaleDecision(u8),
    /// `on_delivered` for a vector with no injection outstanding.
    #[error("vector {0:#x} reported delivered but was not injected")]
    NotInjected(u8),
    /// Capacity 0 or above 256.
    #[error("capacity {0} outside 1..=256")]
    BadCapacity(usize),
}

/// The injector's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct InjectorStats {
    /// Every call to `raise`.
    pub requested: u64,
    /// Raises merged with a queued vector.
    pub coalesced: u64,
    /// Raises refused (queue full).
    pub rejected: u64,
    /// Vectors handed to KVM_INTERRUPT (committed `Inject` decisions).
    pub injected: u64,
    /// Deliveries reported through `on_delivered`.
    pub delivered: u64,
    /// Committed `Reinject` decisions.
    pub reinjected: u64,
    /// Committed `RequestWindow` decisions.
    pub window_requests: u64,
    /// KVM_EXIT_IRQ_WINDOW_OPEN exits seen by `after_exit`.
    pub window_exits: u64,
}

/// The kind of the last exit, as far as the injector cares.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// KVM_EXIT_IRQ_WINDOW_OPEN.
    IrqWindowOpen,
    /// Any other exit (or an interrupted KVM_RUN).
    Other,
}

/// A per-vCPU queue of pending external interrupts and the injection policy.
///
/// ```
/// use vcpu_events::injector::{Decision, Injector, RunState, WaitReason};
///
/// let mut inj = Injector::new();
/// inj.raise(0x20).unwrap(); // a device thread's interrupt
/// // The guest has IF = 0: nothing is injected, KVM is asked for an interrupt window.
/// let masked = RunState { ready_for_interrupt_injection: false, if_flag: false, ..Default::default() };
/// assert_eq!(inj.before_run(&masked), Decision::RequestWindow(WaitReason::NotReady));
/// // IF = 1 and KVM ready: inject (KVM_INTERRUPT), then commit.
/// let ready = RunState { ready_for_interrupt_injection: true, if_flag: true, ..Default::default() };
/// let d = inj.before_run(&ready);
/// assert_eq!(d.vector_to_inject(), Some(0x20));
/// inj.commit(&d).unwrap();
/// assert!(inj.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct Injector {
    queue: VecDeque<u8>,
    queued: [u64; 4],
    capacity: usize,
    injected_since_exit: bool,
    in_flight: Box<[u32; 256]>,
    caps: EntryCaps,
    stats: InjectorStats,
}

impl Default for Injector {
    fn default() -> Self {
        Self::new()
    }
}

impl Injector {
    /// An empty injector with [`DEFAULT_CAPACITY`].
    pub fn new() -> Self {
        Self {
            queue: VecDeque::with_capacity(DEFAULT_CAPACITY),
            queued: [0; 4],
            capacity: DEFAULT_CAPACITY,
            injected_since_exit: false,
            in_flight: Box::new([0; 256]),
            caps: EntryCaps::default(),
            stats: InjectorStats::default(),
        }
    }

    /// An empty injector holding at most `capacity` (1..=256) distinct vectors.
    pub fn with_capacity(capacity: usize) -> Result<Self, InjectorError> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(InjectorError::BadCapacity(capacity));
        }
        let mut s = Self::new();
        s.capacity = capacity;
        Ok(s)
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of queued vectors.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The queued vectors, next first.
    pub fn pending(&self) -> impl Iterator<Item = u8> + '_ {
        self.queue.iter().copied()
    }

    /// Whether `vector` is queued.
    pub fn is_queued(&self, vector: u8) -> bool {
        self.queued[usize::from(vector >> 6)] & (1 << (vector & 63)) != 0
    }

    /// Injections not yet reported delivered.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.iter().map(|&n| u64::from(n)).sum()
    }

    /// The counters.
    pub fn stats(&self) -> InjectorStats {
        self.stats
    }

    /// Whether an injection or re-injection was committed since the last
    /// exit (the model checker's view of the hidden state).
    #[cfg(test)]
    pub(crate) fn slot_busy(&self) -> bool {
        self.injected_since_exit
    }

    fn set_queued(&mut self, vector: u8, on: bool) {
        let word = &mut self.queued[usize::from(vector >> 6)];
        if on {
            *word |= 1 << (vector & 63);
        } else {
            *word &= !(1 << (vector & 63));
        }
    }

    /// Queues external interrupt `vector` (coalescing rule in the module docs).
    pub fn raise(&mut self, vector: u8) -> Result<RaiseOutcome, RaiseError> {
        self.stats.requested += 1;
        if self.is_queued(vector) {
            self.stats.coalesced += 1;
            return Ok(RaiseOutcome::Coalesced);
        }
        if self.queue.len() >= self.capacity {
            self.stats.rejected += 1;
            return Err(RaiseError::QueueFull {
                vector,
                capacity: self.capacity,
            });
        }
        self.queue.push_back(vector);
        self.set_queued(vector, true);
        Ok(RaiseOutcome::Queued {
            depth: self.queue.len(),
        })
    }

    /// Decides what to do before the next KVM_RUN. Pure: call
    /// [`Injector::commit`] once the decision has been applied.
    ///
    /// Call it once per KVM_RUN. A committed `Inject` or `Reinject` marks
    /// KVM's slot busy until the next [`Injector::after_exit`]: later calls
    /// return [`WaitReason::SlotBusy`] while vectors are queued, so a second
    /// call before the KVM_RUN can never yield an `Inject` whose
    /// KVM_INTERRUPT overwrites the injected or re-injected event. (Passing
    /// the same `state.reinjection` again returns the same `Reinject`.)
    pub fn before_run(&self, state: &RunState) -> Decision {
        if let Some(reinjection) = state.reinjection {
            return Decision::Reinject {
                reinjection,
                request_interrupt_window: !self.queue.is_empty(),
            };
        }
        let Some(&vector) = self.queue.front() else {
            return Decision::Idle;
        };
        if self.injected_since_exit {
            return Decision::RequestWindow(WaitReason::SlotBusy);
        }
        if !state.ready_for_interrupt_injection {
            return Decision::RequestWindow(WaitReason::NotReady);
        }
        if !state.if_flag {
            return Decision::RequestWindow(WaitReason::InterruptsDisabled);
        }
        // IF = 1 is established above; the shadow is checked when known.
        let guest = GuestEventState {
            interruptibility: state.interruptibility.unwrap_or(Interruptibility::NONE),
            ..GuestEventState::with_rflags(X86_EFLAGS_IF | 2)
        };
        let entry = EntryInterruption::encode(&Event::ExternalInterrupt { vector })
            .unwrap_or(EntryInterruption::NONE);
        if let Some(&v) = check_entry(&entry, &guest, &EntryControls::default(), &self.caps).first()
        {
            return Decision::RequestWindow(WaitReason::Validation(v));
        }
        Decision::Inject {
            vector,
            request_interrupt_window: self.queue.len() > 1,
        }
    }

    /// Records that `decision` was applied (KVM_INTERRUPT succeeded, the
    /// window request was written, ...).
    pub fn commit(&mut self, decision: &Decision) -> Result<(), InjectorError> {
        match *decision {
            Decision::Inject { vector, .. } => {
                if self.queue.front() != Some(&vector) {
                    return Err(InjectorError::StaleDecision(vector));
                }
                self.queue.pop_front();
                self.set_queued(vector, false);
                self.in_flight[usize::from(vector)] =
                    self.in_flight[usize::from(vector)].saturating_add(1);
                self.injected_since_exit = true;
                self.stats.injected += 1;
            }
            Decision::Reinject { .. } => {
                // The re-injected event occupies KVM's slot (or the VMCS
                // entry fields) until the next KVM_RUN, like a new injection.
                self.injected_since_exit = true;
                self.stats.reinjected += 1;
            }
            Decision::RequestWindow(_) => self.stats.window_requests += 1,
            Decision::Idle => {}
        }
        Ok(())
    }

    /// Records a KVM_RUN return: KVM's slot has been consumed (or is
    /// re-injected by KVM), a new injection may follow.
    pub fn after_exit(&mut self, exit: ExitKind) {
        self.injected_since_exit = false;
        if exit == ExitKind::IrqWindowOpen {
            self.stats.window_exits += 1;
        }
    }

    /// The delivery hook: the VMM reports that the guest took `vector` (e.g.
    /// the guest's handler wrote it to a port).
    pub fn on_delivered(&mut self, vector: u8) -> Result<(), InjectorError> {
        let n = &mut self.in_flight[usize::from(vector)];
        if *n == 0 {
            return Err(InjectorError::NotInjected(vector));
        }
        *n -= 1;
        self.stats.delivered += 1;
        Ok(())
    }
}

/// Tests' vCPU: ready for an interrupt, IF = 1, no shadow, nothing to re-inject.
#[cfg(test)]
pub(crate) const TEST_READY: RunState = RunState {
    ready_for_interrupt_injection: true,
    if_flag: true,
    interruptibility: None,
    reinjection: None,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idt_vectoring::IdtVectoring;
    use crate::interruption::InterruptionInfo;

    const READY: RunState = TEST_READY;

    fn run(inj: &mut Injector, state: &RunState) -> Decision {
        let d = inj.before_run(state);
        inj.commit(&d).unwrap();
        d
    }

    #[test]
    fn idle_when_empty_clears_window() {
        let inj = Injector::new();
        assert_eq!(inj.before_run(&READY), Decision::Idle);
        assert!(!Decision::Idle.request_interrupt_window());
    }

    #[test]
    fn injects_only_when_ready_and_if() {
        let mut inj = Injector::new();
        inj.raise(0x20).unwrap();
        let not_ready = RunState {
            ready_for_interrupt_injection: false,
            ..READY
        };
        assert_eq!(
            inj.before_run(&not_ready),
            Decision::RequestWindow(WaitReason::NotReady)
        );
        let if0 = RunState {
            if_flag: false,
            ..READY
        };
        assert_eq!(
            inj.before_run(&if0),
            Decision::RequestWindow(WaitReason::InterruptsDisabled)
        );
        assert!(inj.before_run(&if0).request_interrupt_window());
        assert_eq!(
            inj.before_run(&READY),
            Decision::Inject {
                vector: 0x20,
                request_interrupt_window: false
            }
        );
    }

    #[test]
    fn at_most_one_per_run_and_window_for_the_rest() {
        let mut inj = Injector::new();
        for v in [0x20, 0x21, 0x22] {
            inj.raise(v).unwrap();
        }
        let d = run(&mut inj, &READY);
        assert_eq!(
            d,
            Decision::Inject {
                vector: 0x20,
                request_interrupt_window: true
            }
        );
        assert_eq!(d.vector_to_inject(), Some(0x20));
        // Same exit, second attempt: KVM's slot is busy.
        assert_eq!(
            run(&mut inj, &READY),
            Decision::RequestWindow(WaitReason::SlotBusy)
        );
        inj.after_exit(ExitKind::IrqWindowOpen);
        assert_eq!(
            run(&mut inj, &READY),
            Decision::Inject {
                vector: 0x21,
                request_interrupt_window: true
            }
        );
        inj.after_exit(ExitKind::Other);
        assert_eq!(
            run(&mut inj, &READY),
            Decision::Inject {
                vector: 0x22,
                request_interrupt_window: false
            }
        );
        inj.after_exit(ExitKind::Other);
        assert_eq!(run(&mut inj, &READY), Decision::Idle);
        let s = inj.stats();
        assert_eq!(
            (s.requested, s.injected, s.window_requests, s.window_exits),
            (3, 3, 1, 1)
        );
    }

    #[test]
    fn coalescing_rule() {
        let mut inj = Injector::new();
        assert_eq!(inj.raise(0x30), Ok(RaiseOutcome::Queued { depth: 1 }));
        assert_eq!(inj.raise(0x31), Ok(RaiseOutcome::Queued { depth: 2 }));
        // Raised again while queued: one delivery, at the first position.
        assert_eq!(inj.raise(0x30), Ok(RaiseOutcome::Coalesced));
        assert_eq!(inj.pending().collect::<Vec<_>>(), vec![0x30, 0x31]);
        // Once injected, a new raise queues a new interrupt.
        run(&mut inj, &READY);
        assert!(!inj.is_queued(0x30));
        assert_eq!(inj.raise(0x30), Ok(RaiseOutcome::Queued { depth: 2 }));
        assert_eq!(inj.pending().collect::<Vec<_>>(), vec![0x31, 0x30]);
        let s = inj.stats();
        assert_eq!((s.requested, s.coalesced), (4, 1));
    }

    #[test]
    fn bound_returns_an_error_never_a_silent_drop() {
        let mut inj = Injector::with_capacity(2).unwrap();
        inj.raise(1).unwrap();
        inj.raise(2).unwrap();
        assert_eq!(
            inj.raise(3),
            Err(RaiseError::QueueFull {
                vector: 3,
                capacity: 2
            })
        );
        // Coalescing still works when full.
        assert_eq!(inj.raise(2), Ok(RaiseOutcome::Coalesced));
        assert_eq!(inj.stats().rejected, 1);
        assert_eq!(inj.len(), 2);
        assert_eq!(
            Injector::with_capacity(0).unwrap_err(),
            InjectorError::BadCapacity(0)
        );
        assert_eq!(
            Injector::with_capacity(257).unwrap_err(),
            InjectorError::BadCapacity(257)
        );
        // 256 distinct vectors always fit at the maximum bound.
        let mut all = Injector::with_capacity(MAX_CAPACITY).unwrap();
        for v in 0..=255u8 {
            all.raise(v).unwrap();
        }
        assert_eq!(all.len(), 256);
        assert_eq!(all.capacity(), 256);
    }

    #[test]
    fn failed_apply_loses_nothing() {
        let mut inj = Injector::new();
        inj.raise(0x40).unwrap();
        let d = inj.before_run(&READY);
        // KVM_INTERRUPT failed: the VMM does not commit.
        assert_eq!(inj.len(), 1);
        assert_eq!(inj.before_run(&READY), d);
        // A stale decision is refused.
        assert_eq!(
            inj.commit(&Decision::Inject {
                vector: 0x41,
                request_interrupt_window: false
            }),
            Err(InjectorError::StaleDecision(0x41))
        );
        assert_eq!(inj.len(), 1);
    }

    /// An injector with vector 0x50 queued, and the re-injection of external
    /// interrupt 0x30 whose delivery an exit cut short (IDT-vectoring info).
    fn queued_0x50_and_reinjection_0x30() -> (Injector, Reinjection) {
        let mut inj = Injector::new();
        inj.raise(0x50).unwrap();
        let r = IdtVectoring {
            info: InterruptionInfo::from_bits_retain(0x8000_0030),
            ..Default::default()
        }
        .reinjection()
        .unwrap()
        .unwrap();
        (inj, r)
    }

    #[test]
    fn reinjection_has_priority_and_needs_no_window() {
        let (mut inj, r) = queued_0x50_and_reinjection_0x30();
        // Even with IF = 0 and not ready (the state after the handler ran is
        // irrelevant to an event whose delivery already started).
        let state = RunState {
            ready_for_interrupt_injection: false,
            if_flag: false,
            interruptibility: None,
            reinjection: Some(r),
        };
        let d = run(&mut inj, &state);
        assert_eq!(
            d,
            Decision::Reinject {
                reinjection: r,
                request_interrupt_window: true
            }
        );
        assert_eq!(inj.pending().collect::<Vec<_>>(), vec![0x50]);
        assert_eq!(inj.stats().reinjected, 1);
        let empty = Injector::new();
        assert!(!empty.before_run(&state).request_interrupt_window());
    }

    #[test]
    fn committed_reinjection_marks_the_slot_busy() {
        let (mut inj, r) = queued_0x50_and_reinjection_0x30();
        let with_reinjection = RunState {
            reinjection: Some(r),
            ..READY
        };
        assert!(matches!(
            run(&mut inj, &with_reinjection),
            Decision::Reinject { .. }
        ));
        // Second call before KVM_RUN: a KVM_INTERRUPT now would overwrite the
        // re-injected vector 0x30, so the queued 0x50 must wait.
        assert_eq!(
            run(&mut inj, &READY),
            Decision::RequestWindow(WaitReason::SlotBusy)
        );
        assert_eq!(inj.pending().collect::<Vec<_>>(), vec![0x50]);
        // After the KVM_RUN the slot is free again.
        inj.after_exit(ExitKind::Other);
        assert_eq!(
            run(&mut inj, &READY),
            Decision::Inject {
                vector: 0x50,
                request_interrupt_window: false
            }
        );
        let s = inj.stats();
        assert_eq!((s.reinjected, s.injected), (1, 1));
    }

    #[test]
    fn injection_is_validated_against_known_shadow() {
        let mut inj = Injector::new();
        inj.raise(0x20).unwrap();
        let shadow = RunState {
            interruptibility: Some(Interruptibility::from_bits_retain(
                Interruptibility::BLOCKING_BY_STI,
            )),
            ..READY
        };
        assert_eq!(
            inj.before_run(&shadow),
            Decision::RequestWindow(WaitReason::Validation(Violation::ExternalInterruptInShadow))
        );
    }

    #[test]
    fn delivery_hook_counts_and_checks() {
        let mut inj = Injector::new();
        inj.raise(0x20).unwrap();
        run(&mut inj, &READY);
        assert_eq!(inj.in_flight(), 1);
        assert_eq!(
            inj.on_delivered(0x21),
            Err(InjectorError::NotInjected(0x21))
        );
        inj.on_delivered(0x20).unwrap();
        assert_eq!(
            inj.on_delivered(0x20),
            Err(InjectorError::NotInjected(0x20))
        );
        assert_eq!(inj.stats().delivered, 1);
        assert_eq!(inj.in_flight(), 0);
    }

    #[test]
    fn property_every_raise_is_accounted_for() {
        arbtest::arbtest(|u| {
            let mut inj = Injector::with_capacity(u.int_in_range(1..=16)?).unwrap();
            let mut ok_raises = 0u64;
            for _ in 0..u.int_in_range(0..=200)? {
                match u.int_in_range(0..=3)? {
                    0 | 1 => {
                        if inj.raise(u.int_in_range(0x20..=0x2f)?).is_ok() {
                            ok_raises += 1;
                        }
                    }
                    2 => {
                        let st = RunState {
                            ready_for_interrupt_injection: u.arbitrary()?,
                            if_flag: u.arbitrary()?,
                            ..Default::default()
                        };
                        let d = inj.before_run(&st);
                        if d.vector_to_inject().is_some() {
                            assert!(st.ready_for_interrupt_injection && st.if_flag);
                        }
                        inj.commit(&d).unwrap();
                    }
                    _ => inj.after_exit(ExitKind::Other),
                }
                let s = inj.stats();
                // Every accepted raise is queued, coalesced or injected.
                assert_eq!(ok_raises, s.coalesced + s.injected + inj.len() as u64);
                assert_eq!(s.requested, ok_raises + s.rejected);
            }
            Ok(())
        });
    }
}
