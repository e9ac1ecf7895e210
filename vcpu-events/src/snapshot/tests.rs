// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

use super::*;
use crate::event::{Event, EventStatus, HardwareException};
use crate::injector::{ExitKind, RunState};
use crate::validate::EventSlot;
use crate::vcpu_events::{
    KvmBool, Shadow, KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_SHADOW,
    KVM_VCPUEVENT_VALID_SMM,
};

const READY: RunState = RunState {
    ready_for_interrupt_injection: true,
    if_flag: true,
    interruptibility: None,
    reinjection: None,
};

/// The flags KVM_GET_VCPU_EVENTS always reports (`kvm_vcpu_ioctl_x86_get_vcpu_events`).
const GET_FLAGS: u32 =
    KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM;

/// An injector mid-storm: 0x30 injected (KVM_INTERRUPT done, slot busy),
/// 0x31 and 0x32 queued.
fn injector() -> Injector {
    let mut inj = Injector::new();
    for v in [0x30, 0x31, 0x32] {
        inj.raise(v).unwrap();
    }
    let d = inj.before_run(&READY);
    inj.commit(&d).unwrap();
    inj
}

/// What `capture` returns for a protected-mode guest with IF = 1 right
/// after KVM_INTERRUPT(0x30): the interrupt injected in the events and in
/// `interrupt_bitmap`.
fn mid_injection() -> VcpuSnapshot {
    let mut saved = EventsSnapshot::default();
    saved.regs.rflags = 0x202;
    saved.sregs.cr0 = 0x11;
    saved.sregs.interrupt_bitmap[0] = 1 << 0x30;
    saved.events.flags = crate::vcpu_events::VcpuEventsFlags::from_bits_retain(GET_FLAGS);
    saved
        .events
        .set_event(
            EventStatus::Injected,
            Event::ExternalInterrupt { vector: 0x30 },
        )
        .unwrap();
    VcpuSnapshot::new(saved, Some(injector().state()))
}

fn with(edit: impl FnOnce(&mut VcpuSnapshot)) -> VcpuSnapshot {
    let mut s = mid_injection();
    edit(&mut s);
    s
}

fn all_caps() -> KvmContext {
    KvmContext {
        exception_payload_enabled: true,
        triple_fault_event_enabled: true,
        ..KvmContext::default()
    }
}

#[test]
fn a_captured_snapshot_passes_every_check() {
    let s = mid_injection();
    assert_eq!(s.version, SNAPSHOT_VERSION);
    s.check().unwrap();
    s.check_against(&KvmContext::default()).unwrap();
    s.check_against(&all_caps()).unwrap();
    assert_eq!(s.events_snapshot().events, s.events);
}

#[test]
fn version_other_than_1_is_refused() {
    assert_eq!(
        with(|s| s.version = 2).check(),
        Err(SnapshotError::UnsupportedVersion {
            found: 2,
            supported: 1
        })
    );
}

#[test]
fn unknown_flag_bit_is_refused() {
    let s = with(|s| s.events.flags.set(0x100, true));
    assert_eq!(s.check(), Err(SnapshotError::UnknownEventFlags(0x100)));
}

#[test]
fn injected_interrupt_with_if_0_is_refused() {
    // SDM 26.3.1.4: an external interrupt needs RFLAGS.IF = 1.
    let err = with(|s| s.regs.rflags = 0x2).check().unwrap_err();
    let SnapshotError::EntryWouldFail(f) = &err else {
        panic!("{err:?}")
    };
    assert!(f.iter().any(|f| matches!(
        f,
        EntryFailure::Sdm {
            slot: EventSlot::Interrupt,
            ..
        }
    )));
    assert!(err
        .to_string()
        .starts_with("the snapshot's events are invalid"));
}

#[test]
fn sti_shadow_with_if_0_is_refused() {
    // SDM 26.3.1.5: blocking by STI requires RFLAGS.IF = 1.
    let s = with(|s| {
        s.regs.rflags = 0x2;
        s.sregs.interrupt_bitmap = [0; 4];
        s.events.interrupt = Default::default();
        s.events.set_shadow(Shadow::STI);
    });
    assert!(matches!(s.check(), Err(SnapshotError::EntryWouldFail(_))));
}

fn pending_page_fault() -> VcpuSnapshot {
    with(|s| {
        s.sregs.interrupt_bitmap = [0; 4];
        s.events.interrupt = Default::default();
        s.events
            .set_exception(
                EventStatus::Pending,
                HardwareException::page_fault(2, 0xdead_b000),
            )
            .unwrap();
    })
}

#[test]
fn payload_without_the_cap_on_the_target_is_refused() {
    let s = pending_page_fault();
    s.check().unwrap();
    s.check_against(&all_caps()).unwrap();
    let err = s.check_against(&KvmContext::default()).unwrap_err();
    assert_eq!(err, SnapshotError::PayloadWithoutCap { pending: true });
    assert!(err.to_string().contains("KVM_CAP_EXCEPTION_PAYLOAD"));
}

#[test]
fn triple_fault_without_the_cap_on_the_target_is_refused() {
    let s = with(|s| {
        s.events
            .set_event(EventStatus::Pending, Event::TripleFault)
            .unwrap()
    });
    s.check().unwrap();
    let err = s.check_against(&KvmContext::default()).unwrap_err();
    assert_eq!(err, SnapshotError::TripleFaultWithoutCap { pending: true });
    assert!(err.to_string().contains("KVM_CAP_X86_TRIPLE_FAULT_EVENT"));
}

#[test]
fn smm_state_without_smm_support_is_refused() {
    let s = with(|s| s.events.smi.smm = KvmBool::TRUE);
    s.check().unwrap();
    let no_smm = KvmContext {
        smm_supported: false,
        ..KvmContext::default()
    };
    assert_eq!(
        s.check_against(&no_smm),
        Err(SnapshotError::SmmWithoutSupport)
    );
}

#[test]
fn exception_vector_kvm_rejects_is_refused() {
    let s = with(|s| {
        s.events.exception.injected = KvmBool::TRUE;
        s.events.exception.nr = 40;
    });
    assert_eq!(
        s.check(),
        Err(SnapshotError::EventsRejected(vec![
            KvmReject::ExceptionVector(40)
        ]))
    );
}

#[test]
fn state_kvm_would_drop_is_refused() {
    // A pending NMI without VALID_NMI_PENDING: KVM ignores the count.
    let s = with(|s| {
        s.events.flags.set(KVM_VCPUEVENT_VALID_NMI_PENDING, false);
        s.events.nmi.pending = 1;
    });
    assert_eq!(
        s.check(),
        Err(SnapshotError::EventsChanged(vec![
            KvmChange::NmiPendingIgnored(1)
        ]))
    );
    // A pending exception without VALID_PAYLOAD: KVM clears it.
    let s = with(|s| {
        s.events.exception.pending = KvmBool::TRUE;
        s.events.exception.nr = 13;
    });
    assert!(matches!(s.check(), Err(SnapshotError::EventsChanged(_))));
}

#[test]
fn real_mode_error_code_is_what_kvm_does_anyway() {
    // `kvm_inject_exception` strips the error code in real mode in the
    // source VM too: not a loss caused by the restore.
    let s = with(|s| {
        s.sregs.cr0 = 0x10;
        s.sregs.interrupt_bitmap = [0; 4];
        s.events.interrupt = Default::default();
        s.events
            .set_exception(
                EventStatus::Injected,
                HardwareException::general_protection(0x18),
            )
            .unwrap();
    });
    s.check().unwrap();
}

#[test]
fn interrupt_bitmap_must_match_the_injected_interrupt() {
    let s = with(|s| s.sregs.interrupt_bitmap[0] = 1 << 0x31);
    assert_eq!(
        s.check(),
        Err(SnapshotError::InterruptBitmapMismatch {
            bitmap: Some(0x31),
            injected: Some(0x30)
        })
    );
    let s = with(|s| s.sregs.interrupt_bitmap[3] = 1);
    assert!(matches!(
        s.check(),
        Err(SnapshotError::InterruptBitmapMismatch { .. })
    ));
    // An empty bitmap is fine: the events are authoritative (set last).
    with(|s| s.sregs.interrupt_bitmap = [0; 4]).check().unwrap();
}

#[test]
fn injector_into_an_in_kernel_irqchip_vm_is_refused() {
    let s = mid_injection();
    let lapic = KvmContext {
        in_kernel_lapic: true,
        ..KvmContext::default()
    };
    assert_eq!(
        s.check_against(&lapic),
        Err(SnapshotError::InjectorWithInKernelIrqchip)
    );
    with(|s| s.injector = None).check_against(&lapic).unwrap();
}

#[test]
fn inconsistent_injector_is_refused_with_its_cause() {
    use std::error::Error;
    let s = with(|s| s.injector.as_mut().unwrap().queued = vec![0x31, 0x31]);
    let err = s.check().unwrap_err();
    assert_eq!(
        err,
        SnapshotError::Injector(InjectorStateError::DuplicateVector(0x31))
    );
    assert_eq!(
        err.source().unwrap().to_string(),
        "vector 0x31 is queued twice"
    );
}

#[test]
fn the_restored_injector_continues_where_it_stopped() {
    let s = mid_injection();
    let mut inj = Injector::from_state(s.injector.as_ref().unwrap()).unwrap();
    // Slot busy until the run; then 0x31, 0x32, each once.
    assert!(inj.before_run(&READY).vector_to_inject().is_none());
    let mut seen = Vec::new();
    for _ in 0..4 {
        inj.after_exit(ExitKind::Other);
        let d = inj.before_run(&READY);
        inj.commit(&d).unwrap();
        seen.extend(d.vector_to_inject());
    }
    assert_eq!(seen, vec![0x31, 0x32]);
    assert_eq!(inj.in_flight(), 3);
}

#[test]
fn every_error_message_is_one_line() {
    let errors = [
        with(|s| s.version = 7).check().unwrap_err(),
        with(|s| s.regs.rflags = 2).check().unwrap_err(),
        pending_page_fault()
            .check_against(&KvmContext::default())
            .unwrap_err(),
    ];
    for e in errors {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}

#[cfg(feature = "serde")]
mod json;
