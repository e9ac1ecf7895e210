// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A versioned snapshot of one vCPU's event state: regs, sregs,
//! `kvm_vcpu_events` and (with a userspace irqchip) the [`Injector`]'s queue.
//!
//! [`VcpuSnapshot`] is what a VMM saves between destroying a VM and creating
//! the next one so that no event is lost or duplicated: an interrupt already
//! injected (KVM_INTERRUPT done, not yet delivered), an exception pending
//! with its CR2 / DR6 payload, an NMI pending or masked, an STI / MOV-SS
//! shadow, a pending triple fault, and the vectors the VMM's own injector
//! still holds. It is *not* a whole-VM snapshot: guest memory, MSRs,
//! FPU/XSAVE, debug registers, the LAPIC and clocks are the VMM's.
//!
//! # Checks
//!
//! * [`VcpuSnapshot::check`] needs no KVM: the version, unknown
//!   `KVM_VCPUEVENT_VALID_*` bits, the events against the snapshot's own
//!   RFLAGS / CR0 ([`crate::validate::validate`]: an injected interrupt with
//!   IF = 0, an STI shadow with IF = 0, ...), anything KVM would silently
//!   change or drop even with every cap enabled, the `interrupt_bitmap` of
//!   the sregs against the injected interrupt, and the injector state
//!   ([`Injector::from_state`]).
//! * [`VcpuSnapshot::check_against`] adds what the *target* VM would refuse
//!   or drop: payload state without KVM_CAP_EXCEPTION_PAYLOAD, the
//!   triple-fault event without KVM_CAP_X86_TRIPLE_FAULT_EVENT, SMM state
//!   without SMM support, an injector for a VM with an in-kernel irqchip.
//!
//! # What KVM needs on each side
//!
//! * **Exception payloads.** KVM_CAP_EXCEPTION_PAYLOAD must be enabled on the
//!   *source* VM before the exception is queued: without it KVM delivers the
//!   payload (writes CR2 for #PF, DR6 for #DB) when it queues the exception
//!   and KVM_GET_VCPU_EVENTS reports the exception as injected with no
//!   payload (`kvm_vcpu_ioctl_x86_get_vcpu_events`, Linux
//!   `arch/x86/kvm/x86.c`; api.rst 4.31 and 7.17); the CR2 then travels in
//!   the snapshot's sregs. With the cap, the exception is reported *pending*
//!   with `exception_has_payload` / `exception_payload` and
//!   `KVM_VCPUEVENT_VALID_PAYLOAD` set, and `kvm_vcpu_ioctl_x86_set_vcpu_events`
//!   on the *target* returns -EINVAL for that flag unless the cap is enabled
//!   there too: [`VcpuSnapshot::check_against`] refuses it first
//!   ([`SnapshotError::PayloadWithoutCap`]).
//! * **Triple fault.** `triple_fault.pending` is only reported and accepted
//!   with KVM_CAP_X86_TRIPLE_FAULT_EVENT enabled; without it
//!   KVM_SET_VCPU_EVENTS fails with -EINVAL *after* writing the rest of the
//!   events ([`crate::validate::KvmReject::partially_applied`]), so the
//!   target must have it ([`SnapshotError::TripleFaultWithoutCap`]).
//! * **Order.** Save reads the events first, restore writes regs, sregs,
//!   then events ([`crate::restore`]); the `kvm` feature's
//!   `vcpu_events::kvm::snapshot` does both.
//!
//! # Format
//!
//! With the `serde` feature the type derives `Serialize` / `Deserialize`
//! (unknown fields refused); `kvm_regs` / `kvm_sregs` use kvm-bindings'
//! own serde form (the struct's bytes, x86_64 `repr(C)` layout) but are read
//! back only at their exact size (kvm-bindings pads a short array with
//! zeros). [`VcpuSnapshot::from_json`] / [`VcpuSnapshot::to_json`] are the
//! bounded JSON reader and writer the reference VMM and the fuzz target use.

#![deny(unsafe_code)]

use kvm_bindings::{kvm_regs, kvm_sregs};

use crate::injector::{Injector, InjectorState, InjectorStateError};
use crate::restore::EventsSnapshot;
use crate::validate::{validate, EntryFailure, GuestContext, KvmChange, KvmContext, KvmReject};
use crate::vcpu_events::VcpuEvents;

#[cfg(feature = "serde")]
mod json;
#[cfg(feature = "serde")]
pub use json::{SnapshotReadError, MAX_SNAPSHOT_JSON_BYTES};

/// The snapshot format this crate writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// One vCPU's event state, versioned (see the module docs).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct VcpuSnapshot {
    /// [`SNAPSHOT_VERSION`] when written by this crate.
    pub version: u32,
    /// KVM_GET_REGS (RFLAGS.IF decides whether an injected interrupt is valid).
    #[cfg_attr(feature = "serde", serde(with = "json::exact_bytes"))]
    pub regs: kvm_regs,
    /// KVM_GET_SREGS (CR0.PE, CR2, `interrupt_bitmap`).
    #[cfg_attr(feature = "serde", serde(with = "json::exact_bytes"))]
    pub sregs: kvm_sregs,
    /// KVM_GET_VCPU_EVENTS, lossless.
    pub events: VcpuEvents,
    /// The userspace-irqchip injector; `None` when the VMM uses an in-kernel
    /// irqchip (then KVM's LAPIC state is the VMM's to save).
    pub injector: Option<InjectorState>,
}

/// Why a snapshot is refused: each message names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Written by another format version.
    #[error("snapshot version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The snapshot's version.
        found: u32,
        /// [`SNAPSHOT_VERSION`].
        supported: u32,
    },
    /// `events.flags` has bits outside the known `KVM_VCPUEVENT_VALID_*`.
    #[error("snapshot events have unknown flag bits {0:#x}")]
    UnknownEventFlags(u32),
    /// `KVM_VCPUEVENT_VALID_PAYLOAD` set but the target VM has not enabled
    /// KVM_CAP_EXCEPTION_PAYLOAD: KVM_SET_VCPU_EVENTS would fail.
    #[error(
        "snapshot carries exception payload state (pending exception: {pending}) but KVM_CAP_EXCEPTION_PAYLOAD is not enabled on the target VM"
    )]
    PayloadWithoutCap {
        /// Whether an exception is pending (its payload would be lost).
        pending: bool,
    },
    /// `KVM_VCPUEVENT_VALID_TRIPLE_FAULT` set but the target VM has not
    /// enabled KVM_CAP_X86_TRIPLE_FAULT_EVENT: KVM_SET_VCPU_EVENTS would fail
    /// after writing the other events.
    #[error(
        "snapshot carries the triple-fault event (pending: {pending}) but KVM_CAP_X86_TRIPLE_FAULT_EVENT is not enabled on the target VM"
    )]
    TripleFaultWithoutCap {
        /// Whether a triple fault is pending.
        pending: bool,
    },
    /// SMM state or a pending SMI but the target kernel has no SMM support.
    #[error("snapshot has SMM state or a pending SMI but the target has no SMM support")]
    SmmWithoutSupport,
    /// Other reasons KVM_SET_VCPU_EVENTS would return -EINVAL.
    #[error("KVM would reject the snapshot's events: {0:?}")]
    EventsRejected(Vec<KvmReject>),
    /// The next VM entry would fail (or, on backends without VMX entry
    /// checks, deliver an event the architecture forbids): e.g. an injected
    /// interrupt with RFLAGS.IF = 0 in the snapshot's own regs.
    #[error("the snapshot's events are invalid for its own registers: {0:?}")]
    EntryWouldFail(Vec<EntryFailure>),
    /// KVM would accept the events but silently change or drop part of them.
    #[error("KVM would silently change or drop part of the snapshot's events: {0:?}")]
    EventsChanged(Vec<KvmChange>),
    /// `sregs.interrupt_bitmap` disagrees with the events' injected interrupt
    /// (KVM_GET_SREGS sets exactly the bit of the injected, non-soft
    /// interrupt: `__get_sregs_common`, Linux `arch/x86/kvm/x86.c`).
    #[error(
        "sregs.interrupt_bitmap (first vector {bitmap:?}) disagrees with the injected interrupt {injected:?}"
    )]
    InterruptBitmapMismatch {
        /// The bitmap's lowest vector, if any (`None` if it is empty).
        bitmap: Option<u8>,
        /// The events' injected non-soft interrupt, if any.
        injected: Option<u8>,
    },
    /// An injector state for a VM with an in-kernel irqchip (KVM_INTERRUPT
    /// fails with -ENXIO there).
    #[error(
        "snapshot has a userspace-irqchip injector but the target VM has an in-kernel irqchip"
    )]
    InjectorWithInKernelIrqchip,
    /// The injector state is one no injector can be in.
    #[error("snapshot injector state is inconsistent")]
    Injector(#[source] InjectorStateError),
}

/// Silent KVM changes a snapshot taken with KVM_GET_VCPU_EVENTS may carry
/// without any loss from the restore: KVM strips a real-mode error code at
/// injection (`kvm_inject_exception`) in the source VM just the same, and it
/// re-injects several injected events one after the other.
fn change_is_benign(c: &KvmChange) -> bool {
    matches!(
        c,
        KvmChange::ErrorCodeDroppedRealMode | KvmChange::SeveralInjectedEvents
    )
}

impl VcpuSnapshot {
    /// A version-[`SNAPSHOT_VERSION`] snapshot of `saved` (from
    /// [`crate::restore::save`], events read first) and the injector state.
    pub fn new(saved: EventsSnapshot, injector: Option<InjectorState>) -> Self {
        Self {
            version: SNAPSHOT_VERSION,
            regs: saved.regs,
            sregs: saved.sregs,
            events: saved.events,
            injector,
        }
    }

    /// The regs, sregs and events, for [`crate::restore::RestorePlan`].
    pub fn events_snapshot(&self) -> EventsSnapshot {
        EventsSnapshot {
            regs: self.regs,
            sregs: self.sregs,
            events: self.events,
        }
    }

    /// The validator context [`VcpuSnapshot::check`] uses: every cap
    /// enabled, SMM supported, an in-kernel LAPIC exactly when there is no
    /// injector.
    pub fn permissive_context(&self) -> KvmContext {
        KvmContext {
            exception_payload_enabled: true,
            triple_fault_event_enabled: true,
            smm_supported: true,
            in_kernel_lapic: self.injector.is_none(),
            mp_state_init_received: false,
        }
    }

    /// Every check that needs no KVM (see the module docs).
    pub fn check(&self) -> Result<(), SnapshotError> {
        self.check_against(&self.permissive_context())
    }

    /// [`VcpuSnapshot::check`] plus what `target` would refuse or silently
    /// drop. `target.in_kernel_lapic` must describe the target VM.
    pub fn check_against(&self, target: &KvmContext) -> Result<(), SnapshotError> {
        if self.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::UnsupportedVersion {
                found: self.version,
                supported: SNAPSHOT_VERSION,
            });
        }
        let unknown = self.events.flags.unknown_bits();
        if unknown != 0 {
            return Err(SnapshotError::UnknownEventFlags(unknown));
        }
        self.check_events(target)?;
        self.check_interrupt_bitmap()?;
        if let Some(state) = &self.injector {
            if target.in_kernel_lapic {
                return Err(SnapshotError::InjectorWithInKernelIrqchip);
            }
            Injector::from_state(state).map_err(SnapshotError::Injector)?;
        }
        Ok(())
    }

    fn check_events(&self, target: &KvmContext) -> Result<(), SnapshotError> {
        let guest = GuestContext::from_regs(&self.regs, &self.sregs);
        let report = validate(&self.events, target, &guest);
        let mut rejects = Vec::new();
        for r in report.kvm_rejects {
            match r {
                KvmReject::PayloadCapNotEnabled => {
                    return Err(SnapshotError::PayloadWithoutCap {
                        pending: self.events.exception.pending.get(),
                    })
                }
                KvmReject::TripleFaultCapNotEnabled => {
                    return Err(SnapshotError::TripleFaultWithoutCap {
                        pending: self.events.triple_fault_pending.get(),
                    })
                }
                KvmReject::SmmUnsupported => return Err(SnapshotError::SmmWithoutSupport),
                other => rejects.push(other),
            }
        }
        if !rejects.is_empty() {
            return Err(SnapshotError::EventsRejected(rejects));
        }
        if !report.entry_failures.is_empty() {
            return Err(SnapshotError::EntryWouldFail(report.entry_failures));
        }
        let changes: Vec<KvmChange> = report
            .kvm_changes
            .into_iter()
            .filter(|c| !change_is_benign(c))
            .collect();
        if !changes.is_empty() {
            return Err(SnapshotError::EventsChanged(changes));
        }
        Ok(())
    }

    fn check_interrupt_bitmap(&self) -> Result<(), SnapshotError> {
        let bitmap = &self.sregs.interrupt_bitmap;
        let mut set = bitmap.iter().enumerate().flat_map(|(w, &bits)| {
            (0..64)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| w * 64 + b)
        });
        let first = set.next().and_then(|v| u8::try_from(v).ok());
        let more = set.next().is_some();
        let i = &self.events.interrupt;
        let injected = (i.injected.get() && !i.soft.get()).then_some(i.nr);
        if more || first.is_some_and(|v| Some(v) != injected) {
            return Err(SnapshotError::InterruptBitmapMismatch {
                bitmap: first,
                injected,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
