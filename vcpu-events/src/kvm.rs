// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! KVM glue (feature `kvm`): every ioctl and every `unsafe` of the crate.
//!
//! * [`interrupt`]: KVM_INTERRUPT, which kvm-ioctls does not wrap
//!   (`_IOW(KVMIO, 0x86, struct kvm_interrupt)`).
//! * [`get_vcpu_events`] / [`set_vcpu_events`] / [`set_vcpu_events_validated`]:
//!   KVM_GET/SET_VCPU_EVENTS through kvm-ioctls, typed.
//! * [`enable_event_caps`]: KVM_CAP_EXCEPTION_PAYLOAD (164) and
//!   KVM_CAP_X86_TRIPLE_FAULT_EVENT (218), with typed outcomes.
//! * [`run_state`] / [`set_request_interrupt_window`]: the `kvm_run` fields the
//!   injector needs (plain fields of the mmap'd `kvm_run`, no unsafe).
//! * [`apply`] / [`before_run`] / [`exit_kind`]: run an
//!   [`Injector`] against a `VcpuFd`.
//! * [`VcpuStateIo`] for `VcpuFd`, so [`crate::restore`] works on a real vCPU.
//! * [`snapshot`]: capture / restore a [`crate::snapshot::VcpuSnapshot`].

use kvm_bindings::{kvm_interrupt, kvm_regs, kvm_sregs, KVMIO};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vmm_sys_util::errno;
use vmm_sys_util::ioctl::ioctl_with_ref;

use crate::event::{Event, EventStatus};
use crate::injector::{Decision, ExitKind, Injector, InjectorError, RunState};
use crate::restore::VcpuStateIo;
use crate::validate::{validate, GuestContext, KvmContext, Report};
use crate::vcpu_events::{BuildError, VcpuEvents};

/// `KVM_CAP_EXCEPTION_PAYLOAD`, `KVM_CAP_X86_TRIPLE_FAULT_EVENT` and `KVM_CAP_X86_SMM`,
/// from kvm-bindings.
pub use kvm_bindings::{
    KVM_CAP_EXCEPTION_PAYLOAD, KVM_CAP_X86_SMM, KVM_CAP_X86_TRIPLE_FAULT_EVENT,
};
/// [`CapOutcome`] moved to [`x86_kvm_base::cap`] (shared with notify-exit); what was
/// `CapOutcome::Unsupported` is [`CapOutcome::NotSupportedByHost`].
pub use x86_kvm_base::cap::CapOutcome;
use x86_kvm_base::cap::{enable_cap_request, is_supported};

mod ioctls {
    use super::*;
    // KVM_INTERRUPT = _IOW(KVMIO, 0x86, struct kvm_interrupt)
    // (include/uapi/linux/kvm.h); kvm-ioctls 0.25 has no wrapper.
    vmm_sys_util::ioctl_iow_nr!(KVM_INTERRUPT, KVMIO, 0x86, kvm_interrupt);
}

/// The KVM_INTERRUPT request number.
pub fn kvm_interrupt_request() -> std::os::raw::c_ulong {
    ioctls::KVM_INTERRUPT()
}

/// A failed ioctl, named after it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvmError {
    /// KVM_INTERRUPT failed (-EINVAL: vector >= 256; -ENXIO: in-kernel PIC;
    /// -EEXIST: split irqchip slot busy).
    #[error("KVM_INTERRUPT({vector:#x}) failed")]
    Interrupt {
        /// The vector.
        vector: u8,
        /// errno.
        #[source]
        source: errno::Error,
    },
    /// KVM_GET_VCPU_EVENTS failed.
    #[error("KVM_GET_VCPU_EVENTS failed")]
    GetVcpuEvents(#[source] errno::Error),
    /// KVM_SET_VCPU_EVENTS failed.
    #[error("KVM_SET_VCPU_EVENTS failed")]
    SetVcpuEvents(#[source] errno::Error),
    /// KVM_GET_REGS / KVM_GET_SREGS failed.
    #[error("KVM_GET_REGS/KVM_GET_SREGS failed")]
    GetRegs(#[source] errno::Error),
    /// KVM_SET_REGS / KVM_SET_SREGS failed.
    #[error("KVM_SET_REGS/KVM_SET_SREGS failed")]
    SetRegs(#[source] errno::Error),
    /// KVM_ENABLE_CAP failed for a capability KVM reports as supported.
    #[error("KVM_ENABLE_CAP({cap}) failed")]
    EnableCap {
        /// The capability number.
        cap: u32,
        /// errno.
        #[source]
        source: errno::Error,
    },
    /// The events were not written: KVM would reject them or VM entry would fail.
    #[error("vcpu events refused: {0:?}")]
    Unsafe(Report),
    /// A re-injection cannot be expressed through KVM_SET_VCPU_EVENTS.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The injector refused the commit.
    #[error(transparent)]
    Injector(#[from] InjectorError),
    /// KVM_RUN with `immediate_exit` (completing the last exit's I/O, see
    /// [`snapshot::complete_pending_exit`]) failed with something other than -EINTR.
    #[error("KVM_RUN with immediate_exit failed")]
    CompletePendingExit(#[source] errno::Error),
}

/// The event capabilities of a VM after [`enable_event_caps`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmEventCaps {
    /// KVM_CAP_EXCEPTION_PAYLOAD.
    pub exception_payload: CapOutcome,
    /// KVM_CAP_X86_TRIPLE_FAULT_EVENT.
    pub triple_fault_event: CapOutcome,
    /// KVM_CAP_X86_SMM is reported.
    pub smm: bool,
}

impl VmEventCaps {
    /// The validator context for a VM without an in-kernel irqchip.
    pub fn kvm_context(&self) -> KvmContext {
        KvmContext {
            exception_payload_enabled: self.exception_payload.is_enabled(),
            triple_fault_event_enabled: self.triple_fault_event.is_enabled(),
            smm_supported: self.smm,
            ..KvmContext::default()
        }
    }
}

/// Enables `cap` with args\[0\] = 1 if KVM reports it.
pub fn enable_cap(vm: &VmFd, cap: u32) -> Result<CapOutcome, KvmError> {
    if !is_supported(vm.check_extension_raw(u64::from(cap) as _)) {
        return Ok(CapOutcome::NotSupportedByHost);
    }
    vm.enable_cap(&enable_cap_request(cap, 1))
        .map(|()| CapOutcome::Enabled)
        .map_err(|source| KvmError::EnableCap { cap, source })
}

/// Enables KVM_CAP_EXCEPTION_PAYLOAD (so pending and injected exceptions and
/// their CR2/DR6 payloads are kept apart) and KVM_CAP_X86_TRIPLE_FAULT_EVENT
/// (so a synthesised triple fault survives save/restore and can be set).
///
/// This is the workspace's one place that enables KVM_CAP_X86_TRIPLE_FAULT_EVENT:
/// notify-exit, whose `run` policy synthesizes triple faults, takes
/// [`VmEventCaps::triple_fault_event`] as input (`kvm::NotifySetup::policy`). KVM
/// accepts it before or after vCPUs exist.
pub fn enable_event_caps(vm: &VmFd) -> Result<VmEventCaps, KvmError> {
    Ok(VmEventCaps {
        exception_payload: enable_cap(vm, KVM_CAP_EXCEPTION_PAYLOAD)?,
        triple_fault_event: enable_cap(vm, KVM_CAP_X86_TRIPLE_FAULT_EVENT)?,
        smm: is_supported(vm.check_extension_raw(u64::from(KVM_CAP_X86_SMM) as _)),
    })
}

/// KVM_INTERRUPT: puts `vector` into KVM's interrupt slot (userspace
/// irqchip). KVM does not check readiness: use an
/// [`Injector`] to decide when.
pub fn interrupt(vcpu: &VcpuFd, vector: u8) -> Result<(), KvmError> {
    let irq = kvm_interrupt {
        irq: u32::from(vector),
    };
    // SAFETY: `vcpu` is an open vCPU fd (VcpuFd owns it); KVM_INTERRUPT reads
    // exactly one `struct kvm_interrupt` (the size encoded in the request
    // number) from the pointer, which refers to `irq`, alive for the call; the
    // kernel does not keep the pointer. The return value is checked below.
    let ret = unsafe { ioctl_with_ref(vcpu, ioctls::KVM_INTERRUPT(), &irq) };
    if ret == 0 {
        Ok(())
    } else {
        Err(KvmError::Interrupt {
            vector,
            source: errno::Error::last(),
        })
    }
}

/// KVM_GET_VCPU_EVENTS, typed.
pub fn get_vcpu_events(vcpu: &VcpuFd) -> Result<VcpuEvents, KvmError> {
    vcpu.get_vcpu_events()
        .map(VcpuEvents::from)
        .map_err(KvmError::GetVcpuEvents)
}

/// KVM_SET_VCPU_EVENTS, unchecked. Must follow KVM_SET_REGS and KVM_SET_SREGS
/// when restoring (see [`crate::restore`]).
pub fn set_vcpu_events(vcpu: &VcpuFd, events: &VcpuEvents) -> Result<(), KvmError> {
    vcpu.set_vcpu_events(&events.into())
        .map_err(KvmError::SetVcpuEvents)
}

/// Reads the vCPU's RFLAGS and CR0, validates `events` against them and `kvm`,
/// and writes them only if KVM accepts them and VM entry will too.
pub fn set_vcpu_events_validated(
    vcpu: &VcpuFd,
    events: &VcpuEvents,
    kvm: &KvmContext,
    guest: &GuestContext,
) -> Result<Report, KvmError> {
    let regs = vcpu.get_regs().map_err(KvmError::GetRegs)?;
    let sregs = vcpu.get_sregs().map_err(KvmError::GetRegs)?;
    let ctx = GuestContext {
        rflags: regs.rflags,
        cr0_pe: sregs.cr0 & 1 != 0,
        ..*guest
    };
    let report = validate(events, kvm, &ctx);
    if !report.is_safe() {
        return Err(KvmError::Unsafe(report));
    }
    set_vcpu_events(vcpu, events)?;
    Ok(report)
}

/// Adds one event to the vCPU's current events (KVM_GET_VCPU_EVENTS,
/// [`VcpuEvents::set_event`], validated KVM_SET_VCPU_EVENTS): e.g. a pending
/// triple fault a policy asked for, or an injected #GP. Only the flags the
/// event needs are kept on top of what GET returned, so asynchronously
/// changed state (pending NMI count, SIPI, SMM) is not overwritten.
pub fn inject_event(
    vcpu: &VcpuFd,
    status: EventStatus,
    event: Event,
    kvm: &KvmContext,
    guest: &GuestContext,
) -> Result<Report, KvmError> {
    use crate::vcpu_events::{
        KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_SMM, KVM_VCPUEVENT_VALID_TRIPLE_FAULT,
    };
    let mut events = get_vcpu_events(vcpu)?;
    // api.rst 4.32: keep VALID_NMI_PENDING / VALID_SMM clear unless meant.
    events.flags.set(
        KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SMM,
        false,
    );
    if !kvm.triple_fault_event_enabled {
        events.flags.set(KVM_VCPUEVENT_VALID_TRIPLE_FAULT, false);
    }
    events.set_event(status, event)?;
    set_vcpu_events_validated(vcpu, &events, kvm, guest)
}

/// The injector's view of the last exit: `ready_for_interrupt_injection` and
/// `if_flag` from `kvm_run`.
pub fn run_state(vcpu: &mut VcpuFd) -> RunState {
    let run = vcpu.get_kvm_run();
    RunState {
        ready_for_interrupt_injection: run.ready_for_interrupt_injection != 0,
        if_flag: run.if_flag != 0,
        interruptibility: None,
        reinjection: None,
    }
}

/// Writes `kvm_run.request_interrupt_window`.
pub fn set_request_interrupt_window(vcpu: &mut VcpuFd, on: bool) {
    vcpu.get_kvm_run().request_interrupt_window = u8::from(on);
}

/// Applies `decision` to the vCPU: KVM_INTERRUPT for `Inject`, the injected
/// event through KVM_GET/SET_VCPU_EVENTS for `Reinject` (for an NMI also
/// clearing `nmi.masked` as [`crate::idt_vectoring::Reinjection::clear_nmi_blocking`]
/// asks, else VM entry fails G6 with virtual NMIs), and
/// `request_interrupt_window` in every case.
///
/// Software interrupts / exceptions cannot be re-injected through
/// KVM_SET_VCPU_EVENTS (no instruction length): `Reinject` of one returns
/// [`KvmError::Build`] and writes nothing.
pub fn apply(vcpu: &mut VcpuFd, decision: &Decision) -> Result<(), KvmError> {
    match decision {
        Decision::Inject { vector, .. } => interrupt(vcpu, *vector)?,
        Decision::Reinject { reinjection, .. } => {
            let mut ev = get_vcpu_events(vcpu)?;
            ev.set_event(EventStatus::Injected, reinjection.event)?;
            if reinjection.clear_nmi_blocking {
                ev.nmi.masked = crate::vcpu_events::KvmBool::FALSE;
            }
            set_vcpu_events(vcpu, &ev)?;
        }
        Decision::RequestWindow(_) | Decision::Idle => {}
    }
    set_request_interrupt_window(vcpu, decision.request_interrupt_window());
    Ok(())
}

/// Decide, apply, commit: call right before KVM_RUN. On an ioctl error nothing
/// is committed, so the vector stays queued.
pub fn before_run(injector: &mut Injector, vcpu: &mut VcpuFd) -> Result<Decision, KvmError> {
    let decision = injector.before_run(&run_state(vcpu));
    apply(vcpu, &decision)?;
    injector.commit(&decision)?;
    Ok(decision)
}

/// Classifies a KVM_RUN result for [`Injector::after_exit`].
pub fn exit_kind(exit: &VcpuExit<'_>) -> ExitKind {
    match exit {
        VcpuExit::IrqWindowOpen => ExitKind::IrqWindowOpen,
        _ => ExitKind::Other,
    }
}

impl VcpuStateIo for VcpuFd {
    type Error = KvmError;
    fn get_regs(&mut self) -> Result<kvm_regs, KvmError> {
        VcpuFd::get_regs(self).map_err(KvmError::GetRegs)
    }
    fn get_sregs(&mut self) -> Result<kvm_sregs, KvmError> {
        VcpuFd::get_sregs(self).map_err(KvmError::GetRegs)
    }
    fn get_vcpu_events(&mut self) -> Result<VcpuEvents, KvmError> {
        get_vcpu_events(self)
    }
    fn set_regs(&mut self, regs: &kvm_regs) -> Result<(), KvmError> {
        VcpuFd::set_regs(self, regs).map_err(KvmError::SetRegs)
    }
    fn set_sregs(&mut self, sregs: &kvm_sregs) -> Result<(), KvmError> {
        VcpuFd::set_sregs(self, sregs).map_err(KvmError::SetRegs)
    }
    fn set_vcpu_events(&mut self, events: &VcpuEvents) -> Result<(), KvmError> {
        set_vcpu_events(self, events)
    }
}

pub mod kick;
pub mod snapshot;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_interrupt_number_matches_uapi() {
        // _IOW(0xAE, 0x86, 4 bytes) = dir 1 << 30 | size 4 << 16 | 0xAE << 8 | 0x86.
        assert_eq!(kvm_interrupt_request(), 0x4004_ae86);
    }
}
