// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Raising interrupts from any thread: a cloneable [`RaiseHandle`] per vCPU
//! that queues a vector for that vCPU's [`Injector`] and, when the vCPU is
//! inside KVM_RUN and would not come out by itself, kicks it out.
//!
//! This module is pure (no KVM): the queue, the accounting and the kick
//! *protocol*. The kick itself is a [`Kick`] target registered by the vCPU
//! thread; the KVM glue (`kvm::kick`, feature `kvm`) provides one that sends a
//! signal to the vCPU thread whose handler sets `kvm_run.immediate_exit`, as
//! QEMU's cpu kick does (`qemu_cpu_kick_thread` in QEMU's `cpus.c` sends the
//! signal; its handler `kvm_ipi_signal` -> `kvm_cpu_kick` in
//! `accel/kvm/kvm-all.c` sets `immediate_exit`) and as kvm-ioctls documents
//! for `VcpuFd::set_kvm_immediate_exit`.
//!
//! # The two sides
//!
//! * [`VcpuInterrupts`] is owned by the vCPU thread. It holds the injector
//!   (behind a mutex shared with the handles) and drives one KVM_RUN at a
//!   time: [`VcpuInterrupts::decide`] (before_run, apply, commit under the
//!   lock), [`VcpuInterrupts::enter`] (announce "in KVM_RUN", or skip the run
//!   if something arrived meanwhile), [`VcpuInterrupts::exited`].
//! * [`RaiseHandle`] (`Clone + Send + Sync`) is held by device threads, timer
//!   threads or other vCPUs: [`RaiseHandle::raise`] queues a vector, returns
//!   the injector's outcome at once (queued, coalesced, or refused when the
//!   queue is full) and kicks when needed; [`RaiseHandle::kick`] asks the vCPU
//!   to leave KVM_RUN for another reason (pause, stop).
//!
//! # Why nothing is lost and no vCPU sleeps on a queued vector
//!
//! A raise that queues a vector sets a *new vector* flag and then reads the
//! vCPU's run state; the vCPU stores its run state and then reads the flag
//! (both sequentially consistent). One of them sees the other (Dekker): either
//! the vCPU sees the flag and does not enter KVM_RUN (it decides again), or
//! the raiser sees the vCPU "in KVM_RUN" and kicks it. A kick that lands
//! before the vCPU enters the ioctl is not lost either: the handler sets
//! `immediate_exit` and KVM_RUN returns -EINTR at once (api.rst, `kvm_run`:
//! "immediate_exit ... polled once when KVM_RUN starts"). The flag is cleared
//! only by [`VcpuInterrupts::decide`], i.e. when the vCPU looks at the queue.
//!
//! A run that requested an interrupt window is not kicked for a new vector:
//! KVM leaves it with KVM_EXIT_IRQ_WINDOW_OPEN as soon as the guest can take
//! an interrupt, and the queue is FIFO, so a kick would only add an exit (and
//! under a raise storm while the guest has IF = 0 it would keep the vCPU out
//! of the guest). A run that did not request a window (the queue was empty,
//! or its last vector was just injected) is kicked.
//!
//! # A kick never reaches a thread that has exited
//!
//! The kick target is registered only for the duration of
//! [`VcpuInterrupts::with_kick_target`] (a scope, so it cannot be leaked), and
//! every kick runs under the lock that the end of the scope takes to
//! unregister it: once the scope is left, no kick is in progress and none will
//! be sent. The KVM glue registers the calling thread, which is alive for the
//! whole scope.
//!
//! The protocol is model-checked: every interleaving of raisers, a stop
//! request and the vCPU loop against a model of KVM's interrupt slot, window
//! exits, signals and `immediate_exit` (see the crate README, "Tests").
//!
//! # Accounting
//!
//! [`Accounting`] is read under the injector's lock, so at any moment, per
//! vCPU: `requested = delivered + coalesced + refused + pending`, where
//! `pending = queued + in_flight` (injected, delivery not yet reported).
//! `delivered_while_masked` counts deliveries the VMM reports through
//! [`VcpuInterrupts::on_delivered_while_masked`] (the guest said it was
//! interrupted with interrupts masked); the injector's protocol keeps it 0.

#![forbid(unsafe_code)]

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::injector::{ExitKind, Injector, InjectorError, RaiseError, RaiseOutcome};

#[cfg(test)]
mod model_tests;

/// The vCPU is not inside KVM_RUN.
const OUT: u8 = 0;
/// Inside KVM_RUN without an interrupt window requested: a new vector needs a kick.
const RUNNING: u8 = 1;
/// Inside KVM_RUN with an interrupt window requested: KVM comes back by itself.
const RUNNING_WINDOW: u8 = 2;

/// Gets a vCPU out of KVM_RUN (e.g. a signal to its thread). Called under the
/// registration lock, from the raising thread; must not block.
pub trait Kick: Send + Sync {
    /// Sends the kick.
    fn kick(&self) -> io::Result<()>;
}

/// Where the vCPU is, as the raisers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunPhase {
    /// Not inside KVM_RUN.
    Out,
    /// Inside KVM_RUN, no interrupt window requested.
    Running,
    /// Inside KVM_RUN with `request_interrupt_window = 1`.
    RunningWithWindow,
}

/// What [`VcpuInterrupts::enter`] says about the next KVM_RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Entry {
    /// Enter KVM_RUN now; call [`VcpuInterrupts::exited`] when it returns.
    Run,
    /// Do not enter: decide again first.
    Skip(SkipReason),
}

/// Why a run was skipped (or a KVM_RUN interrupted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// A vector was queued after the last decision and the run would not
    /// have requested a window.
    NewVector,
    /// [`RaiseHandle::kick`] asked the vCPU to leave KVM_RUN.
    ExitRequested,
}

/// Per-vCPU counters, read atomically with respect to raises and deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Accounting {
    /// Every raise.
    pub requested: u64,
    /// Deliveries reported by the VMM (including those while masked).
    pub delivered: u64,
    /// Raises merged with a vector still queued.
    pub coalesced: u64,
    /// Raises refused because the queue was full.
    pub refused: u64,
    /// Vectors queued, not yet injected.
    pub queued: u64,
    /// Vectors injected, delivery not yet reported.
    pub in_flight: u64,
    /// Deliveries the guest reported while it had interrupts masked.
    pub delivered_while_masked: u64,
    /// Vectors injected (KVM_INTERRUPT done).
    pub injected: u64,
    /// Kicks sent.
    pub kicks: u64,
    /// Kicks that failed to send (the vector stays queued; it is delivered
    /// at the vCPU's next exit).
    pub kick_failures: u64,
}

impl Accounting {
    /// Raises not yet delivered, coalesced or refused: `queued + in_flight`.
    pub fn pending(&self) -> u64 {
        self.queued + self.in_flight
    }

    /// `requested == delivered + coalesced + refused + pending`.
    pub fn is_balanced(&self) -> bool {
        self.requested == self.delivered + self.coalesced + self.refused + self.pending()
    }
}

#[derive(Debug)]
struct Inner {
    injector: Injector,
    delivered_while_masked: u64,
}

#[derive(Default)]
struct KickSlot {
    target: Option<Box<dyn Kick>>,
    kicks: u64,
    failures: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    phase: AtomicU8,
    new_vector: AtomicBool,
    exit_requested: AtomicBool,
    kick: Mutex<KickSlot>,
}

/// A poisoned lock only means another thread panicked while holding it; the
/// state behind these locks is updated by non-panicking code, so it is used
/// as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn phase(&self) -> RunPhase {
        match self.phase.load(SeqCst) {
            OUT => RunPhase::Out,
            RUNNING => RunPhase::Running,
            _ => RunPhase::RunningWithWindow,
        }
    }

    /// Raise step 1: queue under the lock; a queued vector sets the flag.
    fn queue(&self, vector: u8) -> Result<RaiseOutcome, RaiseError> {
        let mut inner = lock(&self.inner);
        let outcome = inner.injector.raise(vector);
        if let Ok(RaiseOutcome::Queued { .. }) = outcome {
            self.new_vector.store(true, SeqCst);
        }
        outcome
    }

    /// Raise step 2: does the vCPU need a kick for a queued vector?
    fn needs_kick_for_vector(&self) -> bool {
        self.phase.load(SeqCst) == RUNNING
    }

    /// Raise step 3: kick under the registration lock.
    fn kick_now(&self) {
        let mut slot = lock(&self.kick);
        let Some(target) = slot.target.as_ref() else {
            return;
        };
        match target.kick() {
            Ok(()) => slot.kicks += 1,
            Err(_) => slot.failures += 1,
        }
    }

    /// A copy for the model checker, with `target` as the kick target if
    /// this one has one.
    #[cfg(test)]
    fn deep_clone(&self, target: Box<dyn Kick>) -> Shared {
        let inner = lock(&self.inner);
        let kick = lock(&self.kick);
        Shared {
            inner: Mutex::new(Inner {
                injector: inner.injector.clone(),
                delivered_while_masked: inner.delivered_while_masked,
            }),
            phase: AtomicU8::new(self.phase.load(SeqCst)),
            new_vector: AtomicBool::new(self.new_vector.load(SeqCst)),
            exit_requested: AtomicBool::new(self.exit_requested.load(SeqCst)),
            kick: Mutex::new(KickSlot {
                target: kick.target.as_ref().map(|_| target),
                kicks: kick.kicks,
                failures: kick.failures,
            }),
        }
    }

    fn accounting(&self) -> Accounting {
        let inner = lock(&self.inner);
        let (kicks, kick_failures) = {
            let k = lock(&self.kick);
            (k.kicks, k.failures)
        };
        let s = inner.injector.stats();
        Accounting {
            requested: s.requested,
            delivered: s.delivered,
            coalesced: s.coalesced,
            refused: s.rejected,
            queued: inner.injector.len() as u64,
            in_flight: inner.injector.in_flight(),
            delivered_while_masked: inner.delivered_while_masked,
            injected: s.injected,
            kicks,
            kick_failures,
        }
    }
}

/// The vCPU thread's side: the injector shared with the [`RaiseHandle`]s and
/// the run protocol (module docs). Drive `decide` / `enter` / `exited` from
/// the one thread that runs the vCPU.
///
/// ```
/// use vcpu_events::injector::{ExitKind, Injector, RunState};
/// use vcpu_events::raise::{Entry, VcpuInterrupts};
///
/// let vcpu = VcpuInterrupts::new(Injector::new());
/// let handle = vcpu.handle();
/// std::thread::spawn(move || handle.raise(0x20).unwrap()).join().unwrap();
/// // The vCPU loop, without KVM: the last exit said "ready, IF = 1".
/// let ready = RunState { ready_for_interrupt_injection: true, if_flag: true, ..Default::default() };
/// let d = vcpu.decide(|inj| {
///     let d = inj.before_run(&ready);
///     inj.commit(&d).unwrap(); // after KVM_INTERRUPT succeeded
///     d
/// });
/// assert_eq!(d.vector_to_inject(), Some(0x20));
/// assert_eq!(vcpu.enter(d.request_interrupt_window()), Entry::Run);
/// vcpu.exited(ExitKind::Other);
/// vcpu.on_delivered(0x20).unwrap(); // the guest said so
/// let a = vcpu.accounting();
/// assert!(a.is_balanced() && a.delivered == 1 && a.pending() == 0);
/// ```
pub struct VcpuInterrupts {
    shared: Arc<Shared>,
}

impl fmt::Debug for VcpuInterrupts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VcpuInterrupts")
            .field("phase", &self.shared.phase())
            .field("accounting", &self.shared.accounting())
            .finish()
    }
}

impl VcpuInterrupts {
    /// Shares `injector` with raise handles.
    pub fn new(injector: Injector) -> Self {
        Self {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    injector,
                    delivered_while_masked: 0,
                }),
                phase: AtomicU8::new(OUT),
                new_vector: AtomicBool::new(false),
                exit_requested: AtomicBool::new(false),
                kick: Mutex::new(KickSlot::default()),
            }),
        }
    }

    /// A handle any thread can raise through.
    pub fn handle(&self) -> RaiseHandle {
        RaiseHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs `f` on the injector under the lock, as the vCPU's decision before
    /// a KVM_RUN: `f` calls [`Injector::before_run`], applies the decision
    /// (KVM_INTERRUPT, `request_interrupt_window`) and commits it. Raises that
    /// arrive after this point make the next [`VcpuInterrupts::enter`] skip a
    /// run that would not have requested a window.
    pub fn decide<R>(&self, f: impl FnOnce(&mut Injector) -> R) -> R {
        let mut inner = lock(&self.shared.inner);
        self.shared.new_vector.store(false, SeqCst);
        f(&mut inner.injector)
    }

    /// Announces the KVM_RUN about to start (`request_interrupt_window` is the
    /// value the decision wrote) and says whether to enter it. On
    /// [`Entry::Skip`] the vCPU is back outside; decide again.
    pub fn enter(&self, request_interrupt_window: bool) -> Entry {
        let s = &self.shared;
        s.phase.store(
            if request_interrupt_window {
                RUNNING_WINDOW
            } else {
                RUNNING
            },
            SeqCst,
        );
        let reason = if s.exit_requested.swap(false, SeqCst) {
            Some(SkipReason::ExitRequested)
        } else if !request_interrupt_window && s.new_vector.load(SeqCst) {
            Some(SkipReason::NewVector)
        } else {
            None
        };
        match reason {
            Some(r) => {
                s.phase.store(OUT, SeqCst);
                Entry::Skip(r)
            }
            None => Entry::Run,
        }
    }

    /// KVM_RUN returned (`exit` classifies it): back outside, and the
    /// injector's [`Injector::after_exit`].
    pub fn exited(&self, exit: ExitKind) {
        self.shared.phase.store(OUT, SeqCst);
        lock(&self.shared.inner).injector.after_exit(exit);
    }

    /// The guest took `vector` (e.g. its handler wrote it to a port).
    pub fn on_delivered(&self, vector: u8) -> Result<(), InjectorError> {
        lock(&self.shared.inner).injector.on_delivered(vector)
    }

    /// The guest took `vector` while it says it had interrupts masked: counted
    /// as delivered and in [`Accounting::delivered_while_masked`].
    pub fn on_delivered_while_masked(&self, vector: u8) -> Result<(), InjectorError> {
        let mut inner = lock(&self.shared.inner);
        inner.injector.on_delivered(vector)?;
        inner.delivered_while_masked += 1;
        Ok(())
    }

    /// The counters (module docs).
    pub fn accounting(&self) -> Accounting {
        self.shared.accounting()
    }

    /// Runs `f` on the injector under the lock, read-only: e.g. to capture
    /// its state with the vCPU's (`kvm::snapshot::capture`, feature `kvm`)
    /// while the vCPU thread is between KVM_RUNs. Unlike
    /// [`VcpuInterrupts::decide`] it does not touch the run protocol, and
    /// raises from other threads wait for `f` (they are then queued,
    /// coalesced or refused and counted as usual).
    ///
    /// ```
    /// use vcpu_events::injector::Injector;
    /// use vcpu_events::raise::{Entry, SkipReason, VcpuInterrupts};
    ///
    /// let vcpu = VcpuInterrupts::new(Injector::new());
    /// vcpu.handle().raise(0x20).unwrap();
    /// let state = vcpu.inspect(Injector::state);
    /// assert_eq!(state.queued, vec![0x20]);
    /// assert_eq!(state.stats.requested, 1);
    /// // The protocol is untouched: the vector raised before still skips a
    /// // run that would not request a window.
    /// assert_eq!(vcpu.enter(false), Entry::Skip(SkipReason::NewVector));
    /// ```
    pub fn inspect<R>(&self, f: impl FnOnce(&Injector) -> R) -> R {
        f(&lock(&self.shared.inner).injector)
    }

    /// Where the vCPU is.
    pub fn phase(&self) -> RunPhase {
        self.shared.phase()
    }

    /// Registers `target` as this vCPU's kick for the duration of `f`, then
    /// unregisters it (also if `f` panics). When this returns, no kick is in
    /// progress and none will be sent to `target`.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// use vcpu_events::injector::Injector;
    /// use vcpu_events::raise::{Entry, Kick, VcpuInterrupts};
    ///
    /// struct Count(Arc<AtomicU32>);
    /// impl Kick for Count {
    ///     fn kick(&self) -> std::io::Result<()> {
    ///         self.0.fetch_add(1, Ordering::SeqCst);
    ///         Ok(())
    ///     }
    /// }
    /// let kicks = Arc::new(AtomicU32::new(0));
    /// let mut vcpu = VcpuInterrupts::new(Injector::new());
    /// let handle = vcpu.handle();
    /// vcpu.with_kick_target(Count(kicks.clone()), |vcpu| {
    ///     vcpu.decide(|inj| inj.before_run(&Default::default())); // Idle
    ///     assert_eq!(vcpu.enter(false), Entry::Run); // "inside KVM_RUN", no window
    ///     handle.raise(0x20).unwrap(); // kicks
    /// });
    /// assert_eq!(kicks.load(Ordering::SeqCst), 1);
    /// handle.raise(0x21).unwrap(); // no target any more: no kick
    /// assert_eq!(vcpu.accounting().kicks, 1);
    /// ```
    pub fn with_kick_target<K: Kick + 'static, R>(
        &mut self,
        target: K,
        f: impl FnOnce(&Self) -> R,
    ) -> R {
        struct Unregister<'a>(&'a Shared);
        impl Drop for Unregister<'_> {
            fn drop(&mut self) {
                lock(&self.0.kick).target = None;
            }
        }
        lock(&self.shared.kick).target = Some(Box::new(target));
        let _unregister = Unregister(&self.shared);
        f(self)
    }
}

/// Raises interrupts on one vCPU from any thread. `Clone + Send + Sync`.
///
/// ```
/// use vcpu_events::injector::{Injector, RaiseOutcome};
/// use vcpu_events::raise::VcpuInterrupts;
///
/// let vcpu = VcpuInterrupts::new(Injector::new());
/// let threads: Vec<_> = (0..4u8)
///     .map(|i| {
///         let h = vcpu.handle();
///         std::thread::spawn(move || {
///             for _ in 0..100 {
///                 let _ = h.raise(0x20 + i);
///             }
///         })
///     })
///     .collect();
/// threads.into_iter().for_each(|t| t.join().unwrap());
/// let a = vcpu.accounting();
/// assert_eq!(a.requested, 400);
/// assert_eq!(a.queued, 4); // one per vector, the rest coalesced
/// assert_eq!(a.coalesced, 396);
/// assert!(a.is_balanced());
/// ```
#[derive(Clone)]
pub struct RaiseHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for RaiseHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaiseHandle")
            .field("phase", &self.shared.phase())
            .finish_non_exhaustive()
    }
}

impl RaiseHandle {
    /// Queues external interrupt `vector` for the vCPU (the injector's
    /// coalescing and bound apply: [`RaiseOutcome::Coalesced`],
    /// [`RaiseError::QueueFull`]) and, if it was queued while the vCPU is
    /// inside a KVM_RUN that requested no interrupt window, kicks it out.
    pub fn raise(&self, vector: u8) -> Result<RaiseOutcome, RaiseError> {
        let outcome = self.shared.queue(vector);
        if matches!(outcome, Ok(RaiseOutcome::Queued { .. })) && self.shared.needs_kick_for_vector()
        {
            self.shared.kick_now();
        }
        outcome
    }

    /// Asks the vCPU to leave KVM_RUN now (to pause or stop it): kicks it if
    /// it is inside, and its next [`VcpuInterrupts::enter`] returns
    /// [`Entry::Skip`]`(`[`SkipReason::ExitRequested`]`)` (so a kicked run
    /// may be followed by one skipped round). Set the VMM's own stop flag
    /// before calling this, and check it after each round.
    ///
    /// ```
    /// use vcpu_events::injector::Injector;
    /// use vcpu_events::raise::{Entry, SkipReason, VcpuInterrupts};
    ///
    /// let vcpu = VcpuInterrupts::new(Injector::new());
    /// let control = vcpu.handle();
    /// control.kick(); // the vCPU is outside KVM_RUN: its next run is skipped
    /// assert_eq!(vcpu.enter(true), Entry::Skip(SkipReason::ExitRequested));
    /// assert_eq!(vcpu.enter(true), Entry::Run);
    /// ```
    pub fn kick(&self) {
        self.shared.exit_requested.store(true, SeqCst);
        if self.shared.phase.load(SeqCst) != OUT {
            self.shared.kick_now();
        }
    }

    /// The vCPU's counters.
    pub fn accounting(&self) -> Accounting {
        self.shared.accounting()
    }

    /// Where the vCPU is (a snapshot).
    pub fn phase(&self) -> RunPhase {
        self.shared.phase()
    }
}
