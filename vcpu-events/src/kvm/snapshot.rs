// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Capture a [`VcpuSnapshot`] from a vCPU and restore it into another one,
//! possibly in a new VM (see [`crate::snapshot`] for what KVM needs on each
//! side).
//!
//! ```no_run
//! # fn demo(
//! #     old_vcpu: &mut kvm_ioctls::VcpuFd,
//! #     new_vm: &kvm_ioctls::VmFd,
//! #     new_vcpu: &mut kvm_ioctls::VcpuFd,
//! #     injector: &vcpu_events::Injector,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use vcpu_events::kvm::{enable_event_caps, snapshot};
//! // The source VM had `enable_event_caps` called before its vCPU ran.
//! snapshot::complete_pending_exit(old_vcpu)?;
//! let snap = snapshot::capture(old_vcpu, Some(injector))?;
//! // ... copy guest memory, create the new VM and vCPU ...
//! let caps = enable_event_caps(new_vm)?; // before KVM_SET_VCPU_EVENTS
//! let injector = snapshot::restore(new_vcpu, &caps, &snap)?;
//! # let _ = injector;
//! # Ok(())
//! # }
//! ```

use kvm_ioctls::VcpuFd;

use super::{KvmError, VmEventCaps};
use crate::injector::Injector;
use crate::restore::{save, RestorePlan};
use crate::snapshot::{SnapshotError, VcpuSnapshot};
use crate::validate::GuestContext;

/// Why [`restore`] did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotRestoreError {
    /// [`VcpuSnapshot::check_against`] refused it: nothing was written.
    #[error("snapshot refused before restoring")]
    Refused(#[source] SnapshotError),
    /// KVM_SET_REGS failed: nothing was written.
    #[error("restoring the snapshot: KVM_SET_REGS failed")]
    Regs(#[source] KvmError),
    /// KVM_SET_SREGS failed: regs were written.
    #[error("restoring the snapshot: KVM_SET_SREGS failed (regs written)")]
    Sregs(#[source] KvmError),
    /// KVM_SET_VCPU_EVENTS failed: regs and sregs were written.
    #[error("restoring the snapshot: KVM_SET_VCPU_EVENTS failed (regs and sregs written)")]
    Events(#[source] KvmError),
}

/// Completes what the last exit left pending in KVM without running the
/// guest: KVM_RUN with `kvm_run.immediate_exit = 1`, which returns -EINTR
/// after finishing the exit's operation (then `immediate_exit` is cleared).
///
/// After KVM_EXIT_IO, KVM_EXIT_MMIO, KVM_EXIT_X86_RDMSR / WRMSR and a few
/// others, "the corresponding operations are complete (and guest state is
/// consistent) only after userspace has re-entered the kernel with KVM_RUN
/// ... The pending state of the operation is not preserved in state which is
/// visible to userspace" (api.rst, 4.10 KVM_RUN, `kvm_run` exit reasons):
/// a snapshot taken right after an `in` exit lacks the value read (RAX), and
/// after an `out` the guest's RIP is advanced past it only then (Linux
/// `kvm_fast_pio_out` / `complete_fast_pio_out`), so a restored guest would
/// repeat the `out`. Call this after handling such an exit (the
/// value for an `in` written into the exit's data) and before [`capture`].
/// No guest instruction runs and no event is delivered; an interrupt already
/// put in KVM's slot stays there.
pub fn complete_pending_exit(vcpu: &mut VcpuFd) -> Result<(), KvmError> {
    vcpu.set_kvm_immediate_exit(1);
    let result = vcpu.run().map(|_| ());
    vcpu.set_kvm_immediate_exit(0);
    match result {
        Err(e) if e.errno() == libc::EINTR => Ok(()),
        // KVM returns -EINTR whenever immediate_exit is set; an exit here means
        // nothing was pending and nothing ran either.
        Ok(()) => Ok(()),
        Err(e) => Err(KvmError::CompletePendingExit(e)),
    }
}

/// Reads the vCPU's regs, sregs and events ([`crate::restore::save`]:
/// events first) and the injector's state.
///
/// Call it between KVM_RUNs, once the last exit is handled and its I/O
/// completed ([`complete_pending_exit`]) and the injector told about it
/// ([`Injector::after_exit`], any [`Injector::on_delivered`]): before or
/// after the next `before_run`. Right after a `before_run` that did
/// KVM_INTERRUPT, the vector is in KVM's slot (injected, not delivered):
/// the snapshot keeps it there and counts it in flight, so the restored
/// guest gets it exactly once.
pub fn capture(vcpu: &mut VcpuFd, injector: Option<&Injector>) -> Result<VcpuSnapshot, KvmError> {
    let saved = save(vcpu)?;
    Ok(VcpuSnapshot::new(saved, injector.map(Injector::state)))
}

/// Restores `snapshot` into `vcpu`, whose VM has the event caps `target`
/// ([`super::enable_event_caps`], called before this): first
/// [`VcpuSnapshot::check_against`] (nothing is written when it refuses), then
/// KVM_SET_REGS, KVM_SET_SREGS and KVM_SET_VCPU_EVENTS in that order
/// ([`RestorePlan`]). Returns the rebuilt injector (`None` if the snapshot
/// has none: the target then uses an in-kernel irqchip).
///
/// The injector continues exactly where it stopped: a vector injected but
/// not yet delivered is in the restored events (KVM delivers it on the next
/// entry) and counted in flight, so it is neither queued again nor lost; the
/// fresh `kvm_run` reads "not ready", so the first `before_run` requests an
/// interrupt window for the queued vectors.
pub fn restore(
    vcpu: &mut VcpuFd,
    target: &VmEventCaps,
    snapshot: &VcpuSnapshot,
) -> Result<Option<Injector>, SnapshotRestoreError> {
    let mut ctx = target.kvm_context();
    ctx.in_kernel_lapic = snapshot.injector.is_none();
    snapshot
        .check_against(&ctx)
        .map_err(SnapshotRestoreError::Refused)?;
    let injector = match &snapshot.injector {
        Some(state) => Some(
            Injector::from_state(state)
                .map_err(|e| SnapshotRestoreError::Refused(SnapshotError::Injector(e)))?,
        ),
        None => None,
    };
    let guest = GuestContext::from_regs(&snapshot.regs, &snapshot.sregs);
    let plan = RestorePlan::new(snapshot.events_snapshot(), &ctx, &guest).map_err(|e| {
        // check_against ran the same validation first; kept for a typed answer.
        let crate::restore::RestoreError::Unsafe(report) = e;
        SnapshotRestoreError::Refused(if report.kvm_rejects.is_empty() {
            SnapshotError::EntryWouldFail(report.entry_failures)
        } else {
            SnapshotError::EventsRejected(report.kvm_rejects)
        })
    })?;
    let plan = plan
        .set_regs(vcpu)
        .map_err(|e| SnapshotRestoreError::Regs(e.error))?;
    let plan = plan
        .set_sregs(vcpu)
        .map_err(|e| SnapshotRestoreError::Sregs(e.error))?;
    plan.set_events(vcpu)
        .map_err(|e| SnapshotRestoreError::Events(e.error))?;
    Ok(injector)
}
