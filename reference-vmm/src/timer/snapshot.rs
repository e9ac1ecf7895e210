// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `run --guest timer --snapshot-every N`: snapshot and restore every vCPU into
//! a fresh VM while the host timer keeps raising, with either irqchip.
//!
//! # The pause (`--irqchip user`)
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
//!
//! # `--irqchip kernel`
//!
//! KVM's in-kernel irqchip holds what the injector holds on the user path:
//! the timer's MSIs sit in each local APIC's IRR, the vector being handled in
//! its ISR, and the vCPU's run state in its MP state (api.rst, KVM_GET_MP_STATE). The pause
//! is the same rendezvous with three differences:
//!
//! * **No kick.** Nothing registers a kick target (there is no injector to
//!   decide for): a vCPU pauses at its next exit to userspace once a pause is
//!   requested. The timer guest exits at every acknowledgement and status
//!   poll, so that comes soon; a vCPU whose guest is done leaves instead.
//! * **MSIs go through the rendezvous.** The timer thread sends each
//!   KVM_SIGNAL_MSI to the current VM under the rendezvous' lock
//!   ([`Pauses::signal_msi`]), so none reaches a VM being saved or destroyed,
//!   and an MSI to a vCPU that is paused (it lands in that LAPIC's IRR) is
//!   counted as raised while paused.
//! * **The irqchip is saved and restored by the VMM** (vcpu-events' snapshot
//!   is the vCPU's events only): once every vCPU has arrived, under that lock,
//!   KVM_GET_IRQCHIP of the two PICs and the IOAPIC and per vCPU
//!   KVM_GET_MP_STATE and KVM_GET_LAPIC (api.rst); the fresh VM gets
//!   KVM_SET_IRQCHIP, then each fresh vCPU KVM_SET_MP_STATE and KVM_SET_LAPIC,
//!   before its thread restores regs, sregs and events. Cloud Hypervisor
//!   (`hypervisor` crate, KVM `set_state`) writes the LAPIC after the sregs;
//!   here the APIC base and CR8 in the restored sregs are the values the LAPIC
//!   was saved with, so writing them again changes nothing in it (Linux
//!   `kvm_lapic_set_base` acts on changed bits). Once its restore is complete,
//!   each thread reads its LAPIC back: the ISR must be the saved one and the
//!   IRR must hold every saved bit (MSIs sent since may add bits), or the
//!   pause fails ([`TimerSnapshotError::LapicNotRestored`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use kvm_bindings::{
    kvm_irqchip, kvm_lapic_state, kvm_mp_state, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VcpuFd;
use vcpu_events::injector::{Injector, InjectorState};
use vcpu_events::kvm::kick::KickedRun;
use vcpu_events::kvm::snapshot::{capture, complete_pending_exit, restore, SnapshotRestoreError};
use vcpu_events::kvm::{KvmError, VmEventCaps};
use vcpu_events::lapic::LapicVectors;
use vcpu_events::raise::{RaiseHandle, VcpuInterrupts};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::kernel::{signal_msi, MsiOutcome};
use super::vm::{build, TimerVm};
use super::{Irqchip, TimerConfig, TimerError, VcpuRun};
use crate::guests::TIMER_VECTOR;
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
    /// After the restore a fresh vCPU's LAPIC does not hold the saved ISR, or
    /// lacks a saved IRR bit: an interrupt being handled (or waiting) was lost.
    #[error("checking the restored LAPIC")]
    LapicNotRestored(#[source] vcpu_events::lapic::LapicLoss),
    /// Saving or restoring the in-kernel irqchip (`--irqchip kernel`) failed.
    #[error("in-kernel irqchip: {what} failed")]
    KernelIrqchip {
        /// The ioctl, and for a vCPU's state which vCPU.
        what: String,
        /// errno.
        #[source]
        source: vmm_sys_util::errno::Error,
    },
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
    /// Old vCPU fds handed in for this pause, with their index.
    arrived: Vec<(usize, VcpuFd)>,
    /// Per vCPU (`--irqchip kernel`), not yet taken by its thread: MSIs accepted
    /// while it was paused, and snapshots whose LAPIC held the timer vector in
    /// its IRR (raised, not yet delivered).
    kernel_counts: Vec<KernelCounts>,
    /// Fresh vCPU fds, by index, for the threads to take.
    fresh: Vec<Option<VcpuFd>>,
    /// Pauses completed.
    generation: u64,
    /// The last rebuild failed.
    failed: bool,
    /// Why, for the first thread to ask.
    failure: Option<TimerSnapshotError>,
}

/// Takes the vCPU out of later pauses when its thread ends (also on error
/// or panic), so the others do not wait for it.
pub struct Leave<'a>(pub Option<&'a Pauses<'a>>);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            p.leave();
        }
    }
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
    /// For `vm` (its `n` vCPUs taken out, one thread each) whose vCPUs'
    /// interrupts are raised through `handles` (`--irqchip user`; none with
    /// `--irqchip kernel`: the timer thread sends through [`Pauses::signal_msi`]);
    /// `every` is `cfg.snapshot_every`.
    pub fn new(
        cfg: &'a TimerConfig,
        every: u64,
        vm: TimerVm,
        n: usize,
        handles: Vec<RaiseHandle>,
    ) -> Self {
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
                kernel_counts: vec![KernelCounts::default(); n],
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

    /// Is a pause requested (`--irqchip kernel`: checked after every exit)?
    pub fn requested(&self) -> bool {
        self.requested.load(SeqCst)
    }

    /// `--irqchip kernel`: KVM_SIGNAL_MSI of `vector` to vCPU `id`'s local APIC
    /// in the current VM, never while the VM is being saved or rebuilt; an MSI
    /// KVM accepts for a paused vCPU is counted as raised while paused.
    pub fn signal_msi(&self, id: usize, vector: u8) -> MsiOutcome {
        let mut g = lock(&self.gate);
        let Some(vm) = g.vm.as_ref() else {
            return MsiOutcome::Failed;
        };
        let Ok(apic_id) = u8::try_from(id) else {
            return MsiOutcome::Failed;
        };
        let outcome = signal_msi(&vm.vm, apic_id, vector);
        if outcome == MsiOutcome::Accepted && g.arrived.iter().any(|(i, _)| *i == id) {
            if let Some(c) = g.kernel_counts.get_mut(id) {
                c.raised_while_paused += 1;
            }
        }
        outcome
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

    /// vCPU `id`'s kernel-path counts since the last call.
    fn take_kernel_counts(&self, id: usize) -> KernelCounts {
        let mut g = lock(&self.gate);
        g.kernel_counts
            .get_mut(id)
            .map(std::mem::take)
            .unwrap_or_default()
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
        let irqchip = match self.cfg.irqchip {
            Irqchip::Kernel => Some(save_irqchip(&old, &g.arrived)?),
            Irqchip::User => None,
        };
        for (id, _, lapic) in irqchip.iter().flat_map(|i| &i.vcpus) {
            if let Some(c) = g.kernel_counts.get_mut(*id) {
                let saved = LapicVectors::from_lapic(lapic);
                c.held_in_irr += u64::from(saved.pending(TIMER_VECTOR));
                c.saved = Some(saved);
            }
        }
        // Destroy first: every vCPU fd, then the VM and its memory.
        g.arrived.clear();
        drop(old);
        let mut fresh = build(self.cfg).map_err(|e| TimerSnapshotError::NewVm(Box::new(e)))?;
        fresh
            .mem()
            .write_slice(&memory, GuestAddress(0))
            .map_err(TimerSnapshotError::Memory)?;
        if let Some(saved) = &irqchip {
            restore_irqchip(&fresh, saved)?;
        }
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
        g.arrived.push((id, old));
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

/// Counts of the kernel path, per vCPU.
#[derive(Debug, Default, Clone, Copy)]
struct KernelCounts {
    raised_while_paused: u64,
    held_in_irr: u64,
    /// The IRR and ISR saved at the last pause, for the thread to check after
    /// its restore.
    saved: Option<LapicVectors>,
}

/// What `--irqchip kernel` saves besides each vCPU's events: the PICs and the
/// IOAPIC, and per paused vCPU its MP state and LAPIC.
struct SavedIrqchip {
    chips: Vec<kvm_irqchip>,
    vcpus: Vec<(usize, kvm_mp_state, kvm_lapic_state)>,
}

fn kernel_err(what: String) -> impl FnOnce(vmm_sys_util::errno::Error) -> TimerSnapshotError {
    move |source| TimerSnapshotError::KernelIrqchip { what, source }
}

/// The in-kernel irqchip of `vm` and the LAPIC and MP state of the paused vCPUs
/// (KVM_GET_IRQCHIP, KVM_GET_MP_STATE, KVM_GET_LAPIC), with no MSI in flight.
fn save_irqchip(
    vm: &TimerVm,
    arrived: &[(usize, VcpuFd)],
) -> Result<SavedIrqchip, TimerSnapshotError> {
    let mut chips = Vec::with_capacity(3);
    for chip_id in [
        KVM_IRQCHIP_PIC_MASTER,
        KVM_IRQCHIP_PIC_SLAVE,
        KVM_IRQCHIP_IOAPIC,
    ] {
        let mut chip = kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        vm.vm
            .get_irqchip(&mut chip)
            .map_err(kernel_err(format!("KVM_GET_IRQCHIP (chip {chip_id})")))?;
        chips.push(chip);
    }
    let mut vcpus = Vec::with_capacity(arrived.len());
    for (id, fd) in arrived {
        let mp = fd
            .get_mp_state()
            .map_err(kernel_err(format!("vCPU {id}: KVM_GET_MP_STATE")))?;
        let lapic = fd
            .get_lapic()
            .map_err(kernel_err(format!("vCPU {id}: KVM_GET_LAPIC")))?;
        vcpus.push((*id, mp, lapic));
    }
    Ok(SavedIrqchip { chips, vcpus })
}

/// Writes `saved` into the fresh VM and its vCPUs (before the threads restore
/// regs, sregs and events).
fn restore_irqchip(fresh: &TimerVm, saved: &SavedIrqchip) -> Result<(), TimerSnapshotError> {
    for chip in &saved.chips {
        fresh.vm.set_irqchip(chip).map_err(kernel_err(format!(
            "KVM_SET_IRQCHIP (chip {})",
            chip.chip_id
        )))?;
    }
    for (id, mp, lapic) in &saved.vcpus {
        let fd = fresh
            .vcpus
            .get(*id)
            .ok_or(TimerSnapshotError::RebuildFailed)?;
        fd.set_mp_state(*mp)
            .map_err(kernel_err(format!("vCPU {id}: KVM_SET_MP_STATE")))?;
        fd.set_lapic(lapic)
            .map_err(kernel_err(format!("vCPU {id}: KVM_SET_LAPIC")))?;
    }
    Ok(())
}

/// After a complete restore (`--irqchip kernel`): what must not be lost is in
/// `vcpu`'s LAPIC (vcpu-events' `LapicVectors::check_restored`). The vector being
/// handled (ISR, EOI to come) is exactly as saved: the vCPU has not run since. Every
/// vector raised and not yet delivered (IRR) is still there; MSIs sent after the
/// rebuild may have added others.
fn check_lapic(vcpu: &VcpuFd, saved: &LapicVectors) -> Result<(), TimerSnapshotError> {
    let read = vcpu
        .get_lapic()
        .map_err(kernel_err("KVM_GET_LAPIC after the restore".to_string()))?;
    saved
        .check_restored(&LapicVectors::from_lapic(&read))
        .map_err(TimerSnapshotError::LapicNotRestored)
}

/// Pauses vCPU `id` at its safe point (`--irqchip user`: its `run_with_kicks`
/// left; `--irqchip kernel`: after an exit, `interrupts` `None`): completes the
/// last exit, captures it (with its injector), hands `vcpu` in and restores the
/// snapshot into the fresh vCPU, which it returns.
pub fn pause(
    id: usize,
    vcpu: VcpuFd,
    interrupts: Option<&VcpuInterrupts>,
    pauses: &Pauses<'_>,
    out: &mut VcpuRun,
) -> Result<VcpuFd, TimerError> {
    let began = std::time::Instant::now();
    let err = |source| TimerError::Snapshot { vcpu: id, source };
    let mut vcpu = vcpu;
    complete_pending_exit(&mut vcpu).map_err(|e| err(TimerSnapshotError::CompleteExit(e)))?;
    let snap = match interrupts {
        Some(ints) => ints.inspect(|inj| capture(&mut vcpu, Some(inj))),
        None => capture(&mut vcpu, None),
    }
    .map_err(|e| err(TimerSnapshotError::Capture(e)))?;
    out.snapshots += 1;
    let (mut fresh, caps) = pauses.swap(id, vcpu).map_err(err)?;
    let carried =
        restore(&mut fresh, &caps, &snap).map_err(|e| err(TimerSnapshotError::Restore(e)))?;
    let Some(interrupts) = interrupts else {
        // The LAPIC (written at the rebuild) holds what arrived meanwhile.
        let counts = pauses.take_kernel_counts(id);
        let saved = counts.saved.ok_or(err(TimerSnapshotError::RebuildFailed))?;
        check_lapic(&fresh, &saved).map_err(err)?;
        out.raised_while_paused += counts.raised_while_paused;
        out.held_in_lapic += counts.held_in_irr;
        out.restored(began.elapsed());
        return Ok(fresh);
    };
    let carried = carried.ok_or(err(TimerSnapshotError::NoInjector))?;
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
    out.restored(began.elapsed());
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
