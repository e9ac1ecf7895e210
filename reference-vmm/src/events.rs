// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Event injection through `vcpu-events`: exceptions, NMIs, the synthesized
//! triple fault (all validated by `vcpu_events::validate` before any
//! `KVM_SET_VCPU_EVENTS`), and the userspace-irqchip injector that runs
//! before each `KVM_RUN`.
//!
//! The injector coalesces a vector raised while it is still queued (like a
//! bit in the IRR) and refuses a raise with `QueueFull` once it holds
//! `capacity` (32) distinct vectors. The irq-storm scenario wants every raise
//! delivered, so the VMM keeps its own backlog count ([`IrqState::pending`])
//! and hands the injector the next interrupt only once the previous one left
//! its queue ([`IrqMode::Backlog`]). The irq-flood scenario hands every raise
//! straight to the injector ([`IrqMode::Flood`]) and accounts for each
//! outcome: at the end requested = delivered + coalesced + refused.

use kvm_ioctls::VcpuFd;
use vcpu_events::injector::{ExitKind as InjectorExit, Injector, RaiseError, RaiseOutcome};
use vcpu_events::validate::{validate, GuestContext, KvmContext};
use vcpu_events::{Event, EventStatus, HardwareException, VcpuEvents};

use crate::apply::ApplyError;
use crate::guests::IRQ_VECTOR;
use crate::handlers::{IrqMode, IrqState};

/// The injector glue failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InjectorError {
    /// vcpu-events' injector refused a raise it must take (backlog mode).
    #[error("interrupt injector: raise")]
    Raise(#[source] RaiseError),
    /// vcpu-events' KVM glue failed (KVM_INTERRUPT, interrupt window).
    #[error("interrupt injector")]
    Kvm(#[source] vcpu_events::kvm::KvmError),
}

/// The status the VMM queues `event` with.
///
/// With `KVM_CAP_EXCEPTION_PAYLOAD` a payload-carrying exception is queued
/// *pending* so KVM delivers the payload (CR2/DR6) itself; an NMI is queued
/// pending (`KVM_VCPUEVENT_VALID_NMI_PENDING`); anything else is queued
/// *injected* (and a payload without the cap is refused by validation).
pub fn event_status(event: &Event, kvm: &KvmContext) -> EventStatus {
    match event {
        Event::Nmi | Event::TripleFault => EventStatus::Pending,
        Event::HardwareException(HardwareException {
            payload: Some(_), ..
        }) if kvm.exception_payload_enabled => EventStatus::Pending,
        _ => EventStatus::Injected,
    }
}

/// Formats a validation report as one diagnostic line.
pub fn diagnostic(r: &vcpu_events::validate::Report) -> String {
    let mut parts: Vec<String> = r
        .kvm_rejects
        .iter()
        .map(|x| format!("KVM would reject: {x}"))
        .collect();
    parts.extend(
        r.entry_failures
            .iter()
            .map(|x| format!("VM entry would fail: {x:?}")),
    );
    if parts.is_empty() {
        parts.push("not safe".into());
    }
    parts.join("; ")
}

/// Validates `event` (queued with [`event_status`]) on top of `base`, as
/// `vcpu_events::kvm::inject_event` does before its ioctl (pure; used by the
/// replay stand-in for every injection, NMIs and triple faults included).
pub fn validate_event(
    base: VcpuEvents,
    event: Event,
    kvm: &KvmContext,
    guest: &GuestContext,
) -> Result<(), ApplyError> {
    let mut ev = base;
    ev.set_event(event_status(&event, kvm), event)
        .map_err(|e| ApplyError::Refused {
            event,
            diagnostic: e.to_string(),
        })?;
    let report = validate(&ev, kvm, guest);
    if report.is_safe() {
        Ok(())
    } else {
        Err(ApplyError::Refused {
            event,
            diagnostic: diagnostic(&report),
        })
    }
}

/// Injects `event` on the real vCPU (validated by vcpu-events first).
pub fn inject(vcpu: &VcpuFd, event: Event, kvm: &KvmContext) -> Result<(), ApplyError> {
    vcpu_events::kvm::inject_event(
        vcpu,
        event_status(&event, kvm),
        event,
        kvm,
        &GuestContext::default(),
    )
    .map(|_| ())
    .map_err(|e| match e {
        vcpu_events::kvm::KvmError::Unsafe(r) => ApplyError::Refused {
            event,
            diagnostic: diagnostic(&r),
        },
        source => ApplyError::Kvm { event, source },
    })
}

/// The userspace-irqchip injector plus the VMM's backlog feeding it.
#[derive(Debug)]
pub struct IrqInjector {
    /// vcpu-events' injector.
    pub injector: Injector,
}

impl Default for IrqInjector {
    fn default() -> Self {
        IrqInjector {
            injector: Injector::new(),
        }
    }
}

impl IrqInjector {
    /// Before KVM_RUN: hand the injector what was raised (backlog mode: the
    /// next interrupt once the previous one left the queue; flood mode: every
    /// fresh raise, counting queued / coalesced / refused), let it decide and
    /// apply. No allocation.
    #[inline]
    pub fn before_run(
        &mut self,
        vcpu: &mut VcpuFd,
        irq: &mut IrqState,
    ) -> Result<(), InjectorError> {
        match irq.mode {
            IrqMode::Backlog => {
                if irq.pending > 0 && !self.injector.is_queued(IRQ_VECTOR) {
                    self.injector
                        .raise(IRQ_VECTOR)
                        .map_err(InjectorError::Raise)?;
                    irq.pending -= 1;
                }
            }
            IrqMode::Flood => {
                let (fresh, n) = irq.take_fresh();
                for &v in fresh.iter().take(n) {
                    // Queued, Coalesced or QueueFull: each is counted by the
                    // injector's stats (requested / coalesced / rejected).
                    let _outcome: Result<RaiseOutcome, RaiseError> = self.injector.raise(v);
                }
            }
        }
        irq.max_queued = irq.max_queued.max(self.injector.len() as u64);
        let decision =
            vcpu_events::kvm::before_run(&mut self.injector, vcpu).map_err(InjectorError::Kvm)?;
        if let Some(v) = decision.vector_to_inject() {
            irq.injected_vector_sum += u64::from(v);
        }
        if irq.pending > 0 && !decision.request_interrupt_window() {
            // More behind the one in flight: ask KVM to come back when the guest can take it.
            vcpu_events::kvm::set_request_interrupt_window(vcpu, true);
        }
        let s = self.injector.stats();
        irq.injected = s.injected;
        irq.coalesced = s.coalesced;
        irq.refused = s.rejected;
        irq.windows_requested = s.window_requests;
        irq.queued = self.injector.len() as u64;
        irq.capacity = self.injector.capacity() as u64;
        Ok(())
    }

    /// After KVM_RUN returned.
    #[inline]
    pub fn after_exit(&mut self, window_open: bool) {
        self.injector.after_exit(if window_open {
            InjectorExit::IrqWindowOpen
        } else {
            InjectorExit::Other
        });
    }

    /// Interrupts still queued inside the injector.
    pub fn queued(&self) -> u64 {
        self.injector.len() as u64
    }
}
