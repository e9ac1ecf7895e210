// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Save / restore of the event state, in the only order that works.
//!
//! # Restore: regs, sregs, then events
//!
//! * `KVM_SET_REGS` clears a pending exception (`__set_regs` resets
//!   `exception.pending` and `exception_vmexit.pending`), so it must come
//!   before KVM_SET_VCPU_EVENTS or the restored exception is lost.
//! * `KVM_SET_SREGS` queues the first vector of `interrupt_bitmap` as an
//!   injected interrupt; KVM_SET_VCPU_EVENTS afterwards makes the events'
//!   interrupt slot authoritative.
//! * The events are validated against the *same snapshot's* RFLAGS and CR0
//!   (an injected interrupt needs IF = 1 and no shadow, an STI shadow needs
//!   IF = 1): validation needs regs and sregs first anyway.
//!
//! [`RestorePlan`] enforces this with types: a plan starts in [`NeedRegs`] and
//! each step consumes it and returns the next state, so events cannot be set
//! before regs and sregs. A failed step hands the plan back unchanged.
//!
//! ```
//! use vcpu_events::restore::{NeedRegs, RestorePlan, VcpuStateIo};
//! fn in_order<V: VcpuStateIo>(plan: RestorePlan<NeedRegs>, vcpu: &mut V) {
//!     if let Ok(plan) = plan.set_regs(vcpu) {
//!         if let Ok(plan) = plan.set_sregs(vcpu) {
//!             let _ = plan.set_events(vcpu);
//!         }
//!     }
//! }
//! ```
//!
//! Setting the events first does not compile:
//!
//! ```compile_fail,E0599
//! use vcpu_events::restore::{NeedRegs, RestorePlan, VcpuStateIo};
//! fn events_first<V: VcpuStateIo>(plan: RestorePlan<NeedRegs>, vcpu: &mut V) {
//!     let _ = plan.set_events(vcpu); // no `set_events` on RestorePlan<NeedRegs>
//! }
//! ```
//! Firecracker, Cloud Hypervisor and vmm-reference all restore
//! `vcpu_events` last for the same reasons.
//!
//! # Save: events first
//!
//! With KVM_CAP_EXCEPTION_PAYLOAD off, KVM_GET_VCPU_EVENTS may deliver a
//! pending payload (write CR2 / DR6) before reporting, so [`save`] reads the
//! events before regs and sregs (QEMU's order). Newer kernels (6.18 trees:
//! `kvm_handle_exception_payload_quirk`) deliver such a payload on *any*
//! state read (events, sregs, debugregs) when the cap is off, so the order
//! no longer changes what is read there, but it stays correct everywhere.
//! Do not save or restore while other vCPUs run (NMIs / SMIs / INITs race
//! the overwrite).

#![deny(unsafe_code)]

use std::marker::PhantomData;

use kvm_bindings::{kvm_regs, kvm_sregs};

use crate::validate::{validate, GuestContext, KvmContext, Report};
use crate::vcpu_events::VcpuEvents;

/// The vCPU operations save / restore need; implemented for kvm-ioctls'
/// `VcpuFd` by the `kvm` module, and by test doubles.
pub trait VcpuStateIo {
    /// The error of one operation.
    type Error;
    /// KVM_GET_REGS.
    fn get_regs(&mut self) -> Result<kvm_regs, Self::Error>;
    /// KVM_GET_SREGS.
    fn get_sregs(&mut self) -> Result<kvm_sregs, Self::Error>;
    /// KVM_GET_VCPU_EVENTS.
    fn get_vcpu_events(&mut self) -> Result<VcpuEvents, Self::Error>;
    /// KVM_SET_REGS.
    fn set_regs(&mut self, regs: &kvm_regs) -> Result<(), Self::Error>;
    /// KVM_SET_SREGS.
    fn set_sregs(&mut self, sregs: &kvm_sregs) -> Result<(), Self::Error>;
    /// KVM_SET_VCPU_EVENTS.
    fn set_vcpu_events(&mut self, events: &VcpuEvents) -> Result<(), Self::Error>;
}

/// The register and event state of one vCPU that must be restored together.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EventsSnapshot {
    /// General registers (RFLAGS matters for the events).
    pub regs: kvm_regs,
    /// Special registers (CR0.PE, `interrupt_bitmap`).
    pub sregs: kvm_sregs,
    /// The events.
    pub events: VcpuEvents,
}

/// Reads a snapshot in the safe order: events, regs, sregs.
pub fn save<V: VcpuStateIo>(vcpu: &mut V) -> Result<EventsSnapshot, V::Error> {
    let events = vcpu.get_vcpu_events()?;
    let regs = vcpu.get_regs()?;
    let sregs = vcpu.get_sregs()?;
    Ok(EventsSnapshot {
        regs,
        sregs,
        events,
    })
}

/// Typestate: the plan's next step is KVM_SET_REGS.
#[derive(Debug)]
pub struct NeedRegs;
/// Typestate: the plan's next step is KVM_SET_SREGS.
#[derive(Debug)]
pub struct NeedSregs;
/// Typestate: the plan's next step is KVM_SET_VCPU_EVENTS.
#[derive(Debug)]
pub struct NeedEvents;

/// A restore that can only be applied as regs → sregs → events.
#[derive(Debug)]
pub struct RestorePlan<S> {
    snapshot: Box<EventsSnapshot>,
    report: Report,
    _state: PhantomData<S>,
}

/// A failed step: the error and the plan, unchanged, to retry or inspect.
#[derive(Debug)]
pub struct StepError<P, E> {
    /// The plan in the state it was before the step.
    pub plan: P,
    /// The ioctl error.
    pub error: E,
}

/// Why a snapshot is refused before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// KVM would reject the events, or the next VM entry would fail.
    #[error("snapshot events are unsafe to restore: {0:?}")]
    Unsafe(Report),
}

impl<S> RestorePlan<S> {
    /// The snapshot being restored.
    pub fn snapshot(&self) -> &EventsSnapshot {
        &self.snapshot
    }

    /// The validation report (KVM changes are allowed, listed here).
    pub fn report(&self) -> &Report {
        &self.report
    }

    fn next<T>(self) -> RestorePlan<T> {
        RestorePlan {
            snapshot: self.snapshot,
            report: self.report,
            _state: PhantomData,
        }
    }
}

impl RestorePlan<NeedRegs> {
    /// Validates the snapshot's events against its own RFLAGS / CR0 and
    /// `kvm` ([`crate::validate::validate()`]); refuses it if KVM would reject
    /// it or VM entry would fail. `guest` supplies the VMX facts (its RFLAGS
    /// and CR0.PE are replaced by the snapshot's).
    pub fn new(
        snapshot: EventsSnapshot,
        kvm: &KvmContext,
        guest: &GuestContext,
    ) -> Result<Self, RestoreError> {
        let ctx = GuestContext {
            rflags: snapshot.regs.rflags,
            cr0_pe: snapshot.sregs.cr0 & 1 != 0,
            ..*guest
        };
        let report = validate(&snapshot.events, kvm, &ctx);
        if !report.is_safe() {
            return Err(RestoreError::Unsafe(report));
        }
        Ok(Self {
            snapshot: Box::new(snapshot),
            report,
            _state: PhantomData,
        })
    }

    /// Step 1: KVM_SET_REGS.
    pub fn set_regs<V: VcpuStateIo>(
        self,
        vcpu: &mut V,
    ) -> Result<RestorePlan<NeedSregs>, StepError<Self, V::Error>> {
        match vcpu.set_regs(&self.snapshot.regs) {
            Ok(()) => Ok(self.next()),
            Err(error) => Err(StepError { plan: self, error }),
        }
    }
}

impl RestorePlan<NeedSregs> {
    /// Step 2: KVM_SET_SREGS.
    pub fn set_sregs<V: VcpuStateIo>(
        self,
        vcpu: &mut V,
    ) -> Result<RestorePlan<NeedEvents>, StepError<Self, V::Error>> {
        match vcpu.set_sregs(&self.snapshot.sregs) {
            Ok(()) => Ok(self.next()),
            Err(error) => Err(StepError { plan: self, error }),
        }
    }
}

impl RestorePlan<NeedEvents> {
    /// Step 3: KVM_SET_VCPU_EVENTS. Returns the validation report.
    pub fn set_events<V: VcpuStateIo>(
        self,
        vcpu: &mut V,
    ) -> Result<Report, StepError<Self, V::Error>> {
        match vcpu.set_vcpu_events(&self.snapshot.events) {
            Ok(()) => Ok(self.report),
            Err(error) => Err(StepError { plan: self, error }),
        }
    }
}

/// The error of [`restore`]: which step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreStepError<E> {
    /// Refused before writing anything.
    #[error(transparent)]
    Refused(RestoreError),
    /// KVM_SET_REGS failed (nothing written).
    #[error("KVM_SET_REGS failed")]
    Regs(#[source] E),
    /// KVM_SET_SREGS failed (regs written).
    #[error("KVM_SET_SREGS failed")]
    Sregs(#[source] E),
    /// KVM_SET_VCPU_EVENTS failed (regs and sregs written).
    #[error("KVM_SET_VCPU_EVENTS failed")]
    Events(#[source] E),
}

/// Validates and applies `snapshot` in order: regs, sregs, events.
///
/// ```
/// use kvm_bindings::{kvm_regs, kvm_sregs};
/// use vcpu_events::restore::{restore, save, RestoreStepError, VcpuStateIo};
/// use vcpu_events::validate::{GuestContext, KvmContext};
/// use vcpu_events::{Event, EventStatus, VcpuEvents};
///
/// /// A vCPU in memory; a VMM passes kvm-ioctls' `VcpuFd` (feature `kvm`).
/// #[derive(Default)]
/// struct Vcpu {
///     regs: kvm_regs,
///     sregs: kvm_sregs,
///     events: VcpuEvents,
/// }
/// impl VcpuStateIo for Vcpu {
///     type Error = std::io::Error;
///     fn get_regs(&mut self) -> std::io::Result<kvm_regs> { Ok(self.regs) }
///     fn get_sregs(&mut self) -> std::io::Result<kvm_sregs> { Ok(self.sregs) }
///     fn get_vcpu_events(&mut self) -> std::io::Result<VcpuEvents> { Ok(self.events) }
///     fn set_regs(&mut self, r: &kvm_regs) -> std::io::Result<()> { self.regs = *r; Ok(()) }
///     fn set_sregs(&mut self, s: &kvm_sregs) -> std::io::Result<()> { self.sregs = *s; Ok(()) }
///     fn set_vcpu_events(&mut self, e: &VcpuEvents) -> std::io::Result<()> { self.events = *e; Ok(()) }
/// }
///
/// // A source vCPU with an injected external interrupt and IF = 1.
/// let mut src = Vcpu::default();
/// src.regs.rflags = 0x202;
/// src.events.set_event(EventStatus::Injected, Event::ExternalInterrupt { vector: 0x20 })?;
/// let snapshot = save(&mut src)?;
///
/// let mut dst = Vcpu::default();
/// let report = restore(&mut dst, snapshot, &KvmContext::default(), &GuestContext::default())?;
/// assert!(report.is_safe());
/// assert_eq!(dst.events, src.events);
/// // The same events with RFLAGS.IF = 0 (RFLAGS and CR0.PE come from the snapshot)
/// // would fail VM entry: refused, nothing written.
/// let mut if_clear = snapshot;
/// if_clear.regs.rflags = 0x2;
/// let mut other = Vcpu::default();
/// assert!(matches!(
///     restore(&mut other, if_clear, &KvmContext::default(), &GuestContext::default()),
///     Err(RestoreStepError::Refused(_))
/// ));
/// assert_eq!(other.events, VcpuEvents::default());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn restore<V: VcpuStateIo>(
    vcpu: &mut V,
    snapshot: EventsSnapshot,
    kvm: &KvmContext,
    guest: &GuestContext,
) -> Result<Report, RestoreStepError<V::Error>>
where
    V::Error: std::error::Error + 'static,
{
    let plan = RestorePlan::new(snapshot, kvm, guest).map_err(RestoreStepError::Refused)?;
    let plan = plan
        .set_regs(vcpu)
        .map_err(|e| RestoreStepError::Regs(e.error))?;
    let plan = plan
        .set_sregs(vcpu)
        .map_err(|e| RestoreStepError::Sregs(e.error))?;
    plan.set_events(vcpu)
        .map_err(|e| RestoreStepError::Events(e.error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventStatus};

    #[derive(Debug, thiserror::Error)]
    #[error("fake ioctl failure")]
    struct FakeError;

    #[derive(Default)]
    struct Recorder {
        calls: Vec<&'static str>,
        fail_on: Option<&'static str>,
        state: EventsSnapshot,
    }

    impl Recorder {
        fn op(&mut self, name: &'static str) -> Result<(), FakeError> {
            self.calls.push(name);
            if self.fail_on == Some(name) {
                Err(FakeError)
            } else {
                Ok(())
            }
        }
    }

    impl VcpuStateIo for Recorder {
        type Error = FakeError;
        fn get_regs(&mut self) -> Result<kvm_regs, FakeError> {
            self.op("get_regs").map(|_| self.state.regs)
        }
        fn get_sregs(&mut self) -> Result<kvm_sregs, FakeError> {
            self.op("get_sregs").map(|_| self.state.sregs)
        }
        fn get_vcpu_events(&mut self) -> Result<VcpuEvents, FakeError> {
            self.op("get_vcpu_events").map(|_| self.state.events)
        }
        fn set_regs(&mut self, r: &kvm_regs) -> Result<(), FakeError> {
            self.op("set_regs")?;
            self.state.regs = *r;
            // Like __set_regs: a pending exception is cleared.
            self.state.events.exception.pending = Default::default();
            Ok(())
        }
        fn set_sregs(&mut self, s: &kvm_sregs) -> Result<(), FakeError> {
            self.op("set_sregs")?;
            self.state.sregs = *s;
            Ok(())
        }
        fn set_vcpu_events(&mut self, e: &VcpuEvents) -> Result<(), FakeError> {
            self.op("set_vcpu_events")?;
            self.state.events = *e;
            Ok(())
        }
    }

    fn snap(rflags: u64) -> EventsSnapshot {
        let mut events = VcpuEvents::default();
        events
            .set_event(
                EventStatus::Injected,
                Event::ExternalInterrupt { vector: 0x30 },
            )
            .unwrap();
        EventsSnapshot {
            regs: kvm_regs {
                rflags,
                ..Default::default()
            },
            sregs: kvm_sregs {
                cr0: 0x11,
                ..Default::default()
            },
            events,
        }
    }

    #[test]
    fn save_reads_events_first() {
        let mut r = Recorder::default();
        save(&mut r).unwrap();
        assert_eq!(r.calls, vec!["get_vcpu_events", "get_regs", "get_sregs"]);
    }

    #[test]
    fn restore_applies_in_order() {
        let mut r = Recorder::default();
        let report = restore(
            &mut r,
            snap(0x202),
            &KvmContext::default(),
            &GuestContext::default(),
        )
        .unwrap();
        assert!(report.is_clean());
        assert_eq!(r.calls, vec!["set_regs", "set_sregs", "set_vcpu_events"]);
        assert_eq!(r.state.events.interrupt.nr, 0x30);
    }

    #[test]
    fn unsafe_snapshot_is_refused_before_any_write() {
        let mut r = Recorder::default();
        let err = restore(
            &mut r,
            snap(0x2),
            &KvmContext::default(),
            &GuestContext::default(),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            RestoreStepError::Refused(RestoreError::Unsafe(_))
        ));
        assert!(r.calls.is_empty());
    }

    #[test]
    fn failed_step_returns_the_plan() {
        let mut r = Recorder {
            fail_on: Some("set_sregs"),
            ..Default::default()
        };
        let plan = RestorePlan::new(
            snap(0x202),
            &KvmContext::default(),
            &GuestContext::default(),
        )
        .unwrap();
        let plan = plan.set_regs(&mut r).unwrap();
        let failed = plan.set_sregs(&mut r).unwrap_err();
        assert_eq!(failed.plan.snapshot().events.interrupt.nr, 0x30);
        r.fail_on = None;
        let plan = failed.plan.set_sregs(&mut r).unwrap();
        plan.set_events(&mut r).unwrap();
        assert_eq!(
            r.calls,
            vec!["set_regs", "set_sregs", "set_sregs", "set_vcpu_events"]
        );
    }

    #[test]
    fn restore_reports_which_step_failed() {
        for (step, want) in [
            ("set_regs", "KVM_SET_REGS"),
            ("set_sregs", "KVM_SET_SREGS"),
            ("set_vcpu_events", "KVM_SET_VCPU_EVENTS"),
        ] {
            let mut r = Recorder {
                fail_on: Some(step),
                ..Default::default()
            };
            let err = restore(
                &mut r,
                snap(0x202),
                &KvmContext::default(),
                &GuestContext::default(),
            )
            .unwrap_err();
            assert!(err.to_string().starts_with(want), "{err}");
        }
    }

    #[test]
    fn pending_exception_survives_because_events_come_last() {
        let mut s = snap(0x202);
        s.events = VcpuEvents::default();
        s.events
            .set_exception(
                EventStatus::Pending,
                crate::event::HardwareException::page_fault(2, 0x1000),
            )
            .unwrap();
        let kvm = KvmContext {
            exception_payload_enabled: true,
            ..Default::default()
        };
        let mut r = Recorder::default();
        restore(&mut r, s, &kvm, &GuestContext::default()).unwrap();
        assert!(r.state.events.exception.pending.get());
    }
}
