// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `run --guest timer --snapshot-every N` (`--irqchip user`): snapshot and
//! restore every vCPU into a fresh VM while the host timer keeps raising.
//!
//! # The pause
//!
//! Exits are counted over all vCPUs; the vCPU thread whose exit is the N-th
//! (2N-th, ...) requests a pause and kicks every vCPU through its
//! [`RaiseHandle::kick`]. A kicked vCPU leaves KVM_RUN (or does not enter
//! it) and its next round stops at [`KickedRun::Skipped`]`(ExitRequested)`:
//! the injector's decision for the next KVM_RUN is applied (a vector in KVM's
//! interrupt slot, injected but not delivered; `request_interrupt_window`
//! written), exactly the point where the run-loop guests snapshot
//! ([`crate::snapshot`]). The thread then leaves `run_with_kicks` (its kick
//! target is unregistered: no signal reaches it while paused), completes the
//! last exit's I/O (`vcpu_events::kvm::snapshot::complete_pending_exit`),
//! captures the vCPU with its injector's state
//! (`vcpu_events::kvm::snapshot::capture`, under the injector's lock through
//! [`VcpuInterrupts::inspect`]) and hands its vCPU fd in.
//!
//! # Under fire
//!
//! The timer thread never stops. While a vCPU is paused its
//! [`VcpuInterrupts`] stays in this process and keeps taking raises: the
//! injector queues, coalesces or refuses them and counts them, as at any
//! other time (no kick target is registered, so none is kicked). The
//! report counts them per vCPU (`raised_while_paused`).
//!
//! # Destroy, rebuild, restore
//!
//! The last vCPU to arrive (vCPUs whose guest is done no longer take part)
//! copies guest memory, closes every vCPU fd, the VM and the memory, builds
//! a fresh VM through the timer's own set-up ([`super::vm::build`]: event
//! caps, memory, vCPUs) and writes guest memory back. Every thread then
//! restores its snapshot into its fresh vCPU
//! (`vcpu_events::kvm::snapshot::restore`: checked against the fresh VM's
//! caps, then regs, sregs, events) and checks that the injector the
//! snapshot carried and the live one agree on everything the vCPU side
//! owns (in flight, KVM's slot, injected, delivered): only raises may have
//! changed it meanwhile. The live injector then goes on: its first
//! `before_run` on the fresh `kvm_run` ("not ready") requests a window for
//! what is queued, and the vector in flight is in the restored events.
//!
//! The VMM's xAPIC emulation ([`super::xapic::XApic`]) and latency stamps
//! are process state and stay as they were.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use kvm_ioctls::VcpuFd;
use vcpu_events::injector::{Injector, InjectorState};
use vcpu_events::kvm::kick::KickedRun;
use vcpu_events::kvm::snapshot::{capture, complete_pending_exit, restore, SnapshotRestoreError};
use vcpu_events::kvm::{KvmError, VmEventCaps};
use vcpu_events::raise::{RaiseHandle, VcpuInterrupts};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::vm::{build, TimerVm};
use super::{TimerConfig, TimerError, VcpuRun};
use crate::vmm::VmmError;

/// Why a snapshot or restore of the timer guest failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TimerSnapshotError {
    /// Completing the last exit's I/O before the snapshot failed.
    #[error("completing the last exit")]
    CompleteExit(#[source] KvmError),
    /// vcpu-events could not read the vCPU.
    #[error("capturing the vCPU")]
    Capture(#[source] KvmError),
    /// Guest memory could not be copied or written back.
    #[error("guest memory")]
    Memory(#[source] vm_memory::GuestMemoryError),
    /// The fresh VM could not be built.
    #[error("building the fresh VM")]
    NewVm(#[source] Box<VmmError>),
    /// The fresh VM was not built (another vCPU's thread reports why).
    #[error("the fresh VM was not built")]
    RebuildFailed,
    /// vcpu-events refused the snapshot for the fresh vCPU, or an ioctl failed.
    #[error("restoring the vCPU")]
    Restore(#[source] SnapshotRestoreError),
    /// The snapshot carried no injector (cannot happen on the user path).
    #[error("the snapshot carries no injector state")]
    NoInjector,
    /// The injector the snapshot carried and the live one disagree on what
    /// only the paused vCPU changes: something moved during the pause.
    #[error("the injector moved during the pause: snapshot {snapshot:?}, live {live:?}")]
    InjectorMoved {
        /// In the snapshot.
        snapshot: Box<VcpuSide>,
        /// Live, after the restore.
        live: Box<VcpuSide>,
    },
}

/// What of an injector's state only the vCPU thread changes (raises from
/// other threads change the queue and the raise counters only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuSide {
    /// Injections not yet reported delivered: `(vector, count)`.
    pub in_flight: Vec<(u8, u32)>,
    /// KVM's interrupt slot holds an injection.
    pub slot_busy: bool,
    /// Vectors injected.
    pub injected: u64,
    /// Deliveries reported.
    pub delivered: u64,
}

impl VcpuSide {
    /// The vCPU side of `s`.
    pub fn of(s: &InjectorState) -> Self {
        VcpuSide {
            in_flight: s.in_flight.clone(),
            slot_busy: s.slot_busy,
            injected: s.stats.injected,
            delivered: s.stats.delivered,
        }
    }
}

struct Gate {
    /// The VM without its vCPUs (`None` while rebuilding or after a failure).
    vm: Option<TimerVm>,
    /// vCPU threads still running their guest.
    active: usize,
    /// Old vCPU fds handed in for this pause.
    arrived: Vec<VcpuFd>,
    /// Fresh vCPU fds, by index, for the threads to take.
    fresh: Vec<Option<VcpuFd>>,
    /// Pauses completed.
    generation: u64,
    /// The last rebuild failed.
    failed: bool,
    /// Why, for the first thread to ask.
    failure: Option<TimerSnapshotError>,
}

/// The pause-and-rebuild rendezvous of one timer run.
pub struct Pauses<'a> {
    cfg: &'a TimerConfig,
    every: u64,
    exits: AtomicU64,
    requested: AtomicBool,
    handles: Vec<RaiseHandle>,
    gate: Mutex<Gate>,
    done: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<'a> Pauses<'a> {
    /// For `vm` (its vCPUs taken out, one thread each) whose vCPUs'
    /// interrupts are raised through `handles`; `every` is
    /// `cfg.snapshot_every`.
    pub fn new(cfg: &'a TimerConfig, every: u64, vm: TimerVm, handles: Vec<RaiseHandle>) -> Self {
        let n = handles.len();
        Pauses {
            cfg,
            every,
            exits: AtomicU64::new(0),
            requested: AtomicBool::new(false),
            handles,
            gate: Mutex::new(Gate {
                vm: Some(vm),
                active: n,
                arrived: Vec::with_capacity(n),
                fresh: (0..n).map(|_| None).collect(),
                generation: 0,
                failed: false,
                failure: None,
            }),
            done: Condvar::new(),
        }
    }

    /// Counts one exit; on every `every`-th, requests a pause and kicks every
    /// vCPU (a request while one is pending is merged with it).
    pub fn on_exit(&self) {
        let n = self.exits.fetch_add(1, SeqCst) + 1;
        if n % self.every == 0 && !self.requested.swap(true, SeqCst) {
            for h in &self.handles {
                h.kick();
            }
        }
    }

    /// Should a vCPU whose round was just skipped for an exit request pause?
    pub fn should_pause(&self, run: &KickedRun<'_>) -> bool {
        matches!(
            run,
            KickedRun::Skipped(vcpu_events::raise::SkipReason::ExitRequested)
        ) && self.requested.load(SeqCst)
    }

    /// A vCPU thread is done (or failed): it takes no part in later pauses.
    /// If every other one is waiting, the pause goes ahead.
    pub fn leave(&self) {
        let mut g = lock(&self.gate);
        g.active = g.active.saturating_sub(1);
        if g.active > 0 && g.arrived.len() == g.active {
            g.failure = self.rebuild(&mut g);
        }
    }

    /// Builds the fresh VM once every active vCPU has arrived (gate held).
    fn rebuild(&self, g: &mut Gate) -> Option<TimerSnapshotError> {
        let result = self.rebuild_vm(g);
        g.failed = result.is_err();
        self.requested.store(false, SeqCst);
        g.generation += 1;
        self.done.notify_all();
        result.err()
    }

    fn rebuild_vm(&self, g: &mut Gate) -> Result<(), TimerSnapshotError> {
        let old = g.vm.take().ok_or(TimerSnapshotError::RebuildFailed)?;
        let mut memory = vec![0u8; old.mem().last_addr().0 as usize + 1];
        old.mem()
            .read_slice(&mut memory, GuestAddress(0))
            .map_err(TimerSnapshotError::Memory)?;
        // Destroy first: every vCPU fd, then the VM and its memory.
        g.arrived.clear();
        drop(old);
        let mut fresh = build(self.cfg).map_err(|e| TimerSnapshotError::NewVm(Box::new(e)))?;
        fresh
            .mem()
            .write_slice(&memory, GuestAddress(0))
            .map_err(TimerSnapshotError::Memory)?;
        for (slot, vcpu) in g.fresh.iter_mut().zip(std::mem::take(&mut fresh.vcpus)) {
            *slot = Some(vcpu);
        }
        g.vm = Some(fresh);
        Ok(())
    }

    /// Hands `old` in and waits for the fresh VM; returns vCPU `id`'s fresh
    /// fd and the fresh VM's event caps.
    fn swap(&self, id: usize, old: VcpuFd) -> Result<(VcpuFd, VmEventCaps), TimerSnapshotError> {
        let mut g = lock(&self.gate);
        let generation = g.generation;
        g.arrived.push(old);
        if g.arrived.len() == g.active {
            if let Some(e) = self.rebuild(&mut g) {
                return Err(e);
            }
        } else {
            while g.generation == generation {
                g = self.done.wait(g).unwrap_or_else(PoisonError::into_inner);
            }
        }
        if g.failed {
            return Err(g
                .failure
                .take()
                .unwrap_or(TimerSnapshotError::RebuildFailed));
        }
        let caps = g.vm.as_ref().and_then(|v| v.event_caps);
        match (g.fresh.get_mut(id).and_then(Option::take), caps) {
            (Some(vcpu), Some(caps)) => Ok((vcpu, caps)),
            _ => Err(TimerSnapshotError::RebuildFailed),
        }
    }
}

/// Pauses vCPU `id` (its `run_with_kicks` left at the safe point):
/// completes the last exit, captures it with its injector, hands `vcpu` in
/// and restores the snapshot into the fresh vCPU, which it returns.
pub fn pause(
    id: usize,
    vcpu: VcpuFd,
    interrupts: &VcpuInterrupts,
    pauses: &Pauses<'_>,
    out: &mut VcpuRun,
) -> Result<VcpuFd, TimerError> {
    let err = |source| TimerError::Snapshot { vcpu: id, source };
    let mut vcpu = vcpu;
    complete_pending_exit(&mut vcpu).map_err(|e| err(TimerSnapshotError::CompleteExit(e)))?;
    let snap = interrupts
        .inspect(|inj| capture(&mut vcpu, Some(inj)))
        .map_err(|e| err(TimerSnapshotError::Capture(e)))?;
    out.snapshots += 1;
    let (mut fresh, caps) = pauses.swap(id, vcpu).map_err(err)?;
    let carried = restore(&mut fresh, &caps, &snap)
        .map_err(|e| err(TimerSnapshotError::Restore(e)))?
        .ok_or(err(TimerSnapshotError::NoInjector))?;
    let live = interrupts.inspect(Injector::state);
    let (then, now) = (carried.state(), live);
    let (side_then, side_now) = (VcpuSide::of(&then), VcpuSide::of(&now));
    if side_then != side_now {
        return Err(err(TimerSnapshotError::InjectorMoved {
            snapshot: Box::new(side_then),
            live: Box::new(side_now),
        }));
    }
    out.raised_while_paused += now.stats.requested - then.stats.requested;
    out.restores += 1;
    Ok(fresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check `pause` makes after a restore: raises (queue, requested,
    /// coalesced, refused) may change while a vCPU is paused, nothing the
    /// vCPU side owns may (Injector::state, vcpu-events' injector/state.rs).
    #[test]
    fn only_raises_may_change_the_injector_during_a_pause() {
        let mut inj = Injector::new();
        inj.raise(0x20).unwrap();
        let then = inj.state();
        inj.raise(0x21).unwrap();
        inj.raise(0x21).unwrap();
        assert_eq!(VcpuSide::of(&then), VcpuSide::of(&inj.state()));
        let ready = vcpu_events::injector::RunState {
            ready_for_interrupt_injection: true,
            if_flag: true,
            ..Default::default()
        };
        let d = inj.before_run(&ready);
        inj.commit(&d).unwrap();
        assert_ne!(VcpuSide::of(&then), VcpuSide::of(&inj.state()));
    }
}
