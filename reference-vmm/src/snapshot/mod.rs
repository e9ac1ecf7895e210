// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Snapshot and restore under fire: `run --snapshot-every N`, `--snapshot-file`
//! and `resume`.
//!
//! # Where a snapshot is taken
//!
//! After every N-th exit, at the one point where the VMM has applied
//! everything for the next `KVM_RUN`: the exit's actions (an injected #GP
//! with its error code, a pending #PF with its CR2 payload, a pending NMI)
//! and the injector's decision (a vector in KVM's interrupt slot, injected
//! but not delivered; others queued; an interrupt window requested). The
//! [`crate::vmm::KvmSource`] pauses there ([`crate::run_loop::Step::Pause`])
//! with a [`Snapshot`]:
//!
//! * the vCPU, through vcpu-events (`vcpu_events::kvm::snapshot::capture`:
//!   events first, then regs and sregs, and the injector's state);
//! * guest memory, all of it (the guests keep their counters there).
//!
//! # What happens next
//!
//! The driver (`snapshot::run`) destroys the VM (vCPU and VM fds closed, guest memory unmapped),
//! creates a fresh one through the same set-up as a fresh run
//! ([`crate::vmm::Vm`]'s `create`: caps, memory, vCPU with CPUID and long
//! mode), writes guest memory back and restores the vCPU through vcpu-events
//! (`vcpu_events::kvm::snapshot::restore`: checked against the fresh VM's
//! caps, then regs, sregs, events, in that order; see
//! `vcpu_events::restore`). The `kvm_run` side (`request_interrupt_window`)
//! lives in the old vCPU's mmap and goes with it: the next `before_run` of
//! the restored injector writes it again, exactly as after an interrupted
//! `KVM_RUN` (EINTR), and the fresh `kvm_run` says "not ready", so nothing
//! is injected before KVM has run the vCPU once.
//!
//! The VMM's own state ([`crate::handlers::RunState`]: exit counts, the
//! device state of the port channel, the interrupt backlog, the snapshot
//! counts) stays in the process. `--snapshot-file` writes the last snapshot
//! with that state as a [`document::SnapshotFile`]; `resume` reads it in a
//! new process.
//!
//! A restore that fails ends the run with
//! [`crate::stop::StopCause::RestoreFailed`] (exit status 1).

#![deny(unsafe_code)]

pub mod document;

use std::time::Instant;

use kvm_ioctls::VcpuFd;
use vcpu_events::injector::Injector;
use vcpu_events::VcpuSnapshot;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::config::RunConfig;
use crate::handlers::RunState;
use crate::run_loop::WallClock;
use crate::stop::{Stop, StopCause};
use crate::vmm::{first_injector, with_vcpu_state, KvmSource, Vm, VmmError};

/// A snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// vcpu-events could not read the vCPU (KVM_GET_VCPU_EVENTS, _REGS, _SREGS).
    #[error("the vCPU")]
    Vcpu(#[source] vcpu_events::kvm::KvmError),
    /// Guest memory could not be read.
    #[error("guest memory")]
    Memory(#[source] vm_memory::GuestMemoryError),
}

/// A snapshot could not be restored into a fresh VM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The snapshot's memory is not the size of the VM's.
    #[error("the snapshot holds {found} bytes of guest memory, the VM has {expected}")]
    MemorySize {
        /// Bytes in the snapshot.
        found: usize,
        /// Bytes of the VM (`mem_mib` MiB).
        expected: usize,
    },
    /// The fresh VM could not be created.
    #[error("creating the fresh VM")]
    NewVm(#[source] Box<VmmError>),
    /// Guest memory could not be written.
    #[error("writing guest memory")]
    WriteMemory(#[source] vm_memory::GuestMemoryError),
    /// vcpu-events refused the vCPU snapshot for this VM, or an ioctl failed.
    #[error("the vCPU")]
    Vcpu(#[source] vcpu_events::kvm::snapshot::SnapshotRestoreError),
}

impl RestoreError {
    /// True if the snapshot itself was refused (bad input, exit status 2),
    /// false if the host failed (an ioctl, memory: exit status 1).
    ///
    /// KVM_SET_REGS, KVM_SET_SREGS or KVM_SET_VCPU_EVENTS returning -EINVAL
    /// on the fresh vCPU is a refusal of the snapshot's values (e.g.
    /// `kvm_is_valid_sregs` / `kvm_valid_cr4` / `kvm_valid_efer` in Linux
    /// `arch/x86/kvm/x86.c` refusing CR0.PG without PE, reserved CR4 bits, or
    /// long mode without EFER.LME); any other errno is the host's.
    pub fn is_refusal(&self) -> bool {
        use vcpu_events::kvm::snapshot::SnapshotRestoreError as E;
        use vcpu_events::kvm::KvmError as K;
        let einval = |e: &vmm_sys_util::errno::Error| e.errno() == libc::EINVAL;
        match self {
            RestoreError::MemorySize { .. } => true,
            RestoreError::NewVm(e) => e.is_usage(),
            RestoreError::WriteMemory(_) => false,
            RestoreError::Vcpu(E::Refused(_)) => true,
            RestoreError::Vcpu(E::Regs(K::SetRegs(e)) | E::Sregs(K::SetRegs(e))) => einval(e),
            RestoreError::Vcpu(E::Events(K::SetVcpuEvents(e))) => einval(e),
            RestoreError::Vcpu(_) => false,
        }
    }
}

/// One vCPU and all of guest memory, taken right before a `KVM_RUN`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The vCPU: regs, sregs, events and the injector's state (vcpu-events).
    pub vcpu: VcpuSnapshot,
    /// Guest memory from guest physical 0, `mem_mib` MiB.
    pub memory: Vec<u8>,
    /// Exits handled when it was taken.
    pub at_exit: u64,
    /// `kvm_run.request_interrupt_window` as the injector left it for the
    /// next `KVM_RUN` (the fresh vCPU's next `before_run` writes it again).
    pub window_requested: bool,
}

impl Snapshot {
    /// Adds what this snapshot holds in flight to `held`.
    pub fn count_held(&self, held: &mut crate::handlers::SnapshotHeld) {
        let e = &self.vcpu.events;
        let add = |n: &mut u64, on: bool| *n += u64::from(on);
        add(&mut held.interrupt_injected, e.interrupt.injected.get());
        add(
            &mut held.vectors_queued,
            self.vcpu
                .injector
                .as_ref()
                .is_some_and(|i| !i.queued.is_empty()),
        );
        add(&mut held.window_requested, self.window_requested);
        add(
            &mut held.exception,
            e.exception.injected.get() || e.exception.pending.get(),
        );
        add(&mut held.exception_payload, e.exception.has_payload.get());
        add(&mut held.nmi, e.nmi.injected.get() || e.nmi.pending != 0);
        add(&mut held.triple_fault, e.triple_fault_pending.get());
    }

    /// Takes a snapshot of `vcpu` (with `injector`'s state) and all of `mem`.
    pub fn capture(
        vcpu: &mut VcpuFd,
        mem: &GuestMemoryMmap,
        injector: Option<&Injector>,
        at_exit: u64,
    ) -> Result<Snapshot, CaptureError> {
        let window_requested = vcpu.get_kvm_run().request_interrupt_window != 0;
        let vcpu =
            vcpu_events::kvm::snapshot::capture(vcpu, injector).map_err(CaptureError::Vcpu)?;
        let mut memory = vec![0u8; mem.last_addr().0 as usize + 1];
        mem.read_slice(&mut memory, GuestAddress(0))
            .map_err(CaptureError::Memory)?;
        Ok(Snapshot {
            vcpu,
            memory,
            at_exit,
            window_requested,
        })
    }
}

/// The last snapshot of a run with the VMM's state at that point (what
/// `--snapshot-file` writes).
#[derive(Debug, Clone)]
pub struct Saved {
    /// The snapshot.
    pub snapshot: Box<Snapshot>,
    /// The VMM's state when it was taken (the snapshot counted as taken,
    /// not yet restored).
    pub state: RunState,
}

impl Vm {
    /// A fresh VM for `cfg` (the same set-up as a fresh run) with `snap`
    /// restored into it: guest memory, then the vCPU through vcpu-events
    /// (checked against this VM's caps first). The injector the snapshot
    /// carried is taken by the next run.
    pub fn from_snapshot(cfg: &RunConfig, snap: &Snapshot) -> Result<Vm, RestoreError> {
        if cfg.vcpus != 1 {
            // A snapshot holds one vCPU: others would start from KVM's reset state.
            let e = crate::vmm::ConfigError::SnapshotVcpus { vcpus: cfg.vcpus };
            return Err(RestoreError::NewVm(Box::new(e.into())));
        }
        let expected = (cfg.mem_mib as usize) << 20;
        if snap.memory.len() != expected {
            return Err(RestoreError::MemorySize {
                found: snap.memory.len(),
                expected,
            });
        }
        let mut vm = Vm::create(cfg).map_err(|e| RestoreError::NewVm(Box::new(e)))?;
        // The fresh mapping is zero: only the pages that are not are written,
        // so a large, mostly empty memory (a file's `mem_mib` 4096) is not
        // touched whole.
        const ZERO: [u8; document::PAGE_SIZE] = [0; document::PAGE_SIZE];
        for (i, page) in snap.memory.chunks(document::PAGE_SIZE).enumerate() {
            if page != &ZERO[..page.len()] {
                let gpa = GuestAddress((i * document::PAGE_SIZE) as u64);
                vm.mem
                    .write_slice(page, gpa)
                    .map_err(RestoreError::WriteMemory)?;
            }
        }
        vm.restored_injector =
            vcpu_events::kvm::snapshot::restore(&mut vm.vcpu, &vm.event_caps, &snap.vcpu)
                .map_err(RestoreError::Vcpu)?;
        Ok(vm)
    }
}

/// Runs the one vCPU of `vm` to its end, pausing after every `every`-th
/// exit to take a snapshot, destroy the VM and restore the snapshot into a
/// fresh one. Returns the stop and the last snapshot with the VMM's state.
pub(crate) fn run(
    vm: Vm,
    st: &mut RunState,
    watchdog: Option<&crate::watchdog::Watchdog>,
    first: Instant,
    every: u64,
) -> Result<(Stop, Option<Saved>), VmmError> {
    let mut vm = vm;
    let cfg = vm.cfg;
    let mut injector = first_injector(vm.restored_injector.take(), st);
    let mut clock = WallClock::new(first);
    let mut last: Option<Saved> = None;
    loop {
        let next = (st.exits.total() / every)
            .saturating_add(1)
            .saturating_mul(every);
        let mut source = KvmSource {
            vcpu: &mut vm.vcpu,
            mem: &vm.mem,
            kvm: vm.kvm_ctx,
            injector: injector.take(),
            watchdog,
            abi: st.policy.heki_abi,
            pause_at: Some(next),
            paused: None,
        };
        let ended = crate::run_loop::run_until_pause(&mut source, st, &mut clock);
        injector = source.injector.take();
        let paused = source.paused.take();
        if let Some(stop) = ended? {
            if let Some(inj) = &injector {
                st.irq.queued = inj.queued();
            }
            return Ok((with_vcpu_state(stop, &vm.vcpu, &vm.mem), last));
        }
        let Some(snapshot) = paused else {
            continue;
        };
        st.snapshots.taken += 1;
        snapshot.count_held(&mut st.snapshots.held);
        let saved = Saved {
            snapshot,
            state: st.clone(),
        };
        // Destroy first: the vCPU and VM fds are closed and guest memory is
        // unmapped before the fresh VM exists.
        drop(vm);
        match Vm::from_snapshot(&cfg, &saved.snapshot) {
            Ok(mut fresh) => {
                injector = first_injector(fresh.restored_injector.take(), st);
                st.snapshots.restored += 1;
                vm = fresh;
                last = Some(saved);
            }
            Err(e) => {
                st.snapshots.restore_failures += 1;
                let cause = StopCause::RestoreFailed {
                    snapshot: st.snapshots.taken,
                    at_exit: saved.snapshot.at_exit,
                    error: crate::error::chain(&e),
                };
                return Ok((Stop::new(cause), Some(saved)));
            }
        }
    }
}

/// `resume`: restores `snap` into a fresh VM for `cfg` and runs it on with
/// the VMM state `st` (from the snapshot file).
pub fn resume(
    cfg: &RunConfig,
    st: RunState,
    snap: &Snapshot,
    t0: Instant,
) -> Result<crate::vmm::KvmRun, VmmError> {
    let vm = Vm::from_snapshot(cfg, snap).map_err(VmmError::Restore)?;
    let mut st = st;
    st.snapshots.restored += 1;
    vm.run(st, t0)
}
