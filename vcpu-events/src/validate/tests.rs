// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Unit tests of the parent module.

use super::*;
use crate::event::EventStatus;
use crate::sdm_checks::EventViolation;
use crate::vcpu_events::{KvmBool, Shadow, VcpuEventsFlags};

fn kvm() -> KvmContext {
    KvmContext {
        exception_payload_enabled: true,
        triple_fault_event_enabled: true,
        ..Default::default()
    }
}

fn v(e: &VcpuEvents) -> Report {
    validate(e, &kvm(), &GuestContext::default())
}

/// Events with a pending #PF at CR2 0x1000 (error code 0; a payload).
fn pending_page_fault() -> VcpuEvents {
    let mut e = VcpuEvents::default();
    e.set_exception(
        EventStatus::Pending,
        HardwareException::page_fault(0, 0x1000),
    )
    .unwrap();
    e
}

fn sdm(slot: EventSlot, violation: Violation) -> EntryFailure {
    EntryFailure::Sdm { slot, violation }
}

#[test]
fn empty_is_clean() {
    assert!(v(&VcpuEvents::default()).is_clean());
}

#[test]
fn reject_unknown_flags() {
    let e = VcpuEvents {
        flags: VcpuEventsFlags::from_bits_retain(0x40),
        ..Default::default()
    };
    assert_eq!(v(&e).kvm_rejects, vec![KvmReject::UnknownFlags(0x40)]);
}

#[test]
fn reject_payload_without_cap() {
    let e = pending_page_fault();
    assert!(v(&e).is_clean());
    let r = validate(&e, &KvmContext::default(), &GuestContext::default());
    assert_eq!(r.kvm_rejects, vec![KvmReject::PayloadCapNotEnabled]);
}

#[test]
fn reject_exception_vector() {
    for nr in [2u8, 32, 255] {
        let mut e = VcpuEvents::default();
        e.exception.injected = KvmBool::TRUE;
        e.exception.nr = nr;
        assert_eq!(v(&e).kvm_rejects, vec![KvmReject::ExceptionVector(nr)]);
    }
    // Not live: no check (KVM ignores nr then).
    let mut e = VcpuEvents::default();
    e.exception.nr = 200;
    assert!(v(&e).kvm_rejects.is_empty());
    // Pending without VALID_PAYLOAD is cleared first, so no -EINVAL.
    e.exception.pending = KvmBool::TRUE;
    assert!(v(&e).kvm_rejects.is_empty());
}

#[test]
fn reject_triple_fault_without_cap() {
    let mut e = VcpuEvents::default();
    e.set_event(EventStatus::Pending, Event::TripleFault)
        .unwrap();
    assert!(v(&e).kvm_rejects.is_empty());
    let r = validate(&e, &KvmContext::default(), &GuestContext::default());
    assert_eq!(r.kvm_rejects, vec![KvmReject::TripleFaultCapNotEnabled]);
}

#[test]
fn reject_smm_without_support_and_with_init_received() {
    let mut e = VcpuEvents::default();
    e.set_event(EventStatus::Pending, Event::Smi).unwrap();
    assert!(v(&e).kvm_rejects.is_empty());
    let no_smm = KvmContext {
        smm_supported: false,
        ..kvm()
    };
    assert_eq!(
        validate(&e, &no_smm, &GuestContext::default()).kvm_rejects,
        vec![KvmReject::SmmUnsupported]
    );
    let init = KvmContext {
        mp_state_init_received: true,
        ..kvm()
    };
    assert_eq!(
        validate(&e, &init, &GuestContext::default()).kvm_rejects,
        vec![KvmReject::SmmWithInitReceived]
    );
}

#[test]
fn change_pending_overrides_injected_and_payload_drop() {
    let mut e = pending_page_fault();
    e.exception.injected = KvmBool::TRUE;
    assert_eq!(v(&e).kvm_changes, vec![KvmChange::PendingOverridesInjected]);
    let mut e = VcpuEvents::default();
    e.set_exception(
        EventStatus::Injected,
        HardwareException::new(14).with_error_code(0),
    )
    .unwrap();
    e.flags.set(KVM_VCPUEVENT_VALID_PAYLOAD, true);
    e.exception.has_payload = KvmBool::TRUE;
    assert_eq!(v(&e).kvm_changes, vec![KvmChange::PayloadDroppedNotPending]);
}

#[test]
fn change_pending_without_payload_flag() {
    let mut e = VcpuEvents::default();
    e.exception.pending = KvmBool::TRUE;
    e.exception.nr = 6;
    assert_eq!(
        v(&e).kvm_changes,
        vec![KvmChange::PendingIgnoredWithoutPayloadFlag]
    );
}

#[test]
fn change_payload_for_other_vector() {
    let mut e = VcpuEvents::default();
    e.set_exception(EventStatus::Pending, HardwareException::new(6))
        .unwrap();
    e.exception.has_payload = KvmBool::TRUE;
    assert_eq!(v(&e).kvm_changes, vec![KvmChange::PayloadForVector(6)]);
}

#[test]
fn change_nmi_counts() {
    let mut e = VcpuEvents::default();
    e.nmi.pending = 1;
    assert_eq!(v(&e).kvm_changes, vec![KvmChange::NmiPendingIgnored(1)]);
    e.flags.set(KVM_VCPUEVENT_VALID_NMI_PENDING, true);
    assert!(v(&e).is_clean());
    e.nmi.pending = 2;
    assert!(v(&e).is_clean());
    e.nmi.pending = 3;
    assert_eq!(
        v(&e).kvm_changes,
        vec![KvmChange::NmiPendingCapped {
            requested: 3,
            kept: 2
        }]
    );
    e.nmi.pending = 2;
    e.nmi.masked = KvmBool::TRUE;
    assert_eq!(
        v(&e).kvm_changes,
        vec![KvmChange::NmiPendingCapped {
            requested: 2,
            kept: 1
        }]
    );
}

#[test]
fn change_shadow_bits() {
    let mut e = VcpuEvents::default();
    e.interrupt.shadow = Shadow::MOV_SS;
    assert_eq!(v(&e).kvm_changes, vec![KvmChange::ShadowIgnored]);
    e.set_shadow(Shadow::from_bits_retain(3));
    let r = v(&e);
    assert_eq!(r.kvm_changes, vec![KvmChange::BothShadowBits]);
    // KVM keeps MOV SS, so no G2 failure is reported.
    assert!(r.entry_failures.is_empty());
    e.set_shadow(Shadow::from_bits_retain(0x10));
    assert_eq!(v(&e).kvm_changes, vec![KvmChange::UnknownShadowBits(0x10)]);
}

#[test]
fn change_sipi_and_latched_init_without_lapic() {
    let mut e = VcpuEvents::default();
    e.flags.set(KVM_VCPUEVENT_VALID_SIPI_VECTOR, true);
    assert_eq!(v(&e).kvm_changes, vec![KvmChange::SipiIgnored]);
    let lapic = KvmContext {
        in_kernel_lapic: true,
        ..kvm()
    };
    assert!(validate(&e, &lapic, &GuestContext::default()).is_clean());
    let mut e = VcpuEvents::default();
    e.flags.set(KVM_VCPUEVENT_VALID_SMM, true);
    e.smi.latched_init = KvmBool::TRUE;
    assert_eq!(v(&e).kvm_changes, vec![KvmChange::LatchedInitIgnored]);
}

#[test]
fn change_fields_ignored_without_their_flag() {
    let mut e = VcpuEvents {
        sipi_vector: 0x9a,
        ..Default::default()
    };
    assert_eq!(v(&e).kvm_changes, vec![KvmChange::SipiVectorIgnored(0x9a)]);
    e.flags.set(KVM_VCPUEVENT_VALID_SIPI_VECTOR, true);
    let lapic = KvmContext {
        in_kernel_lapic: true,
        ..kvm()
    };
    assert!(validate(&e, &lapic, &GuestContext::default()).is_clean());

    let mut e = VcpuEvents::default();
    e.smi.pending = KvmBool::TRUE;
    assert_eq!(v(&e).kvm_changes, vec![KvmChange::SmiIgnored]);
    e.flags.set(KVM_VCPUEVENT_VALID_SMM, true);
    assert!(v(&e).is_clean());

    let mut e = VcpuEvents {
        triple_fault_pending: KvmBool::TRUE,
        ..Default::default()
    };
    assert_eq!(v(&e).kvm_changes, vec![KvmChange::TripleFaultIgnored]);
    e.flags.set(KVM_VCPUEVENT_VALID_TRIPLE_FAULT, true);
    assert!(v(&e).is_clean());
}

#[test]
fn change_smm_inside_nmi_outside_smm() {
    let mut e = VcpuEvents::default();
    e.flags.set(KVM_VCPUEVENT_VALID_SMM, true);
    e.smi.smm_inside_nmi = KvmBool::TRUE;
    assert_eq!(v(&e).kvm_changes, vec![KvmChange::SmmInsideNmiIgnored]);
    e.smi.smm = KvmBool::TRUE;
    assert!(v(&e).is_clean());
    // Without SMM support it is an -EINVAL instead.
    e.smi.smm = KvmBool::FALSE;
    let no_smm = KvmContext {
        smm_supported: false,
        ..kvm()
    };
    let r = validate(&e, &no_smm, &GuestContext::default());
    assert_eq!(r.kvm_rejects, vec![KvmReject::SmmUnsupported]);
    assert!(r.kvm_changes.is_empty());
}

#[test]
fn late_rejects_are_marked_partially_applied() {
    assert!(KvmReject::SmmUnsupported.partially_applied());
    assert!(KvmReject::TripleFaultCapNotEnabled.partially_applied());
    for early in [
        KvmReject::UnknownFlags(0x40),
        KvmReject::PayloadCapNotEnabled,
        KvmReject::ExceptionVector(2),
        KvmReject::SmmWithInitReceived,
    ] {
        assert!(!early.partially_applied(), "{early:?}");
    }
}

#[test]
fn change_error_code_truncated_and_real_mode() {
    let mut e = VcpuEvents::default();
    e.set_exception(
        EventStatus::Injected,
        HardwareException::general_protection(0x1_0008),
    )
    .unwrap();
    let r = v(&e);
    assert_eq!(r.kvm_changes, vec![KvmChange::ErrorCodeTruncated(0x1_0008)]);
    assert!(
        r.entry_failures.is_empty(),
        "KVM truncates, so C7 cannot fail"
    );
    let mut e = VcpuEvents::default();
    e.set_exception(
        EventStatus::Injected,
        HardwareException::general_protection(8),
    )
    .unwrap();
    let real = GuestContext {
        cr0_pe: false,
        ..GuestContext::default()
    };
    let r = validate(&e, &kvm(), &real);
    assert_eq!(r.kvm_changes, vec![KvmChange::ErrorCodeDroppedRealMode]);
    assert!(r.entry_failures.is_empty());
}

#[test]
fn change_odd_bytes() {
    let mut e = VcpuEvents::default();
    e.nmi.masked = KvmBool::from_raw(2);
    e.nmi.pad = 9;
    e.reserved[3] = 1;
    e.reserved[4] = 1;
    assert_eq!(
        v(&e).kvm_changes,
        vec![
            KvmChange::NonCanonicalBool("nmi.masked"),
            KvmChange::NmiPadNonZero(9),
            KvmChange::ReservedBytesNonZero(2)
        ]
    );
}

#[test]
fn change_several_injected() {
    let mut e = VcpuEvents::default();
    e.set_event(EventStatus::Injected, Event::Nmi).unwrap();
    e.set_event(
        EventStatus::Injected,
        Event::ExternalInterrupt { vector: 0x20 },
    )
    .unwrap();
    assert_eq!(v(&e).kvm_changes, vec![KvmChange::SeveralInjectedEvents]);
}

#[test]
fn entry_interrupt_with_if_clear_or_shadow() {
    let mut e = VcpuEvents::default();
    e.set_event(
        EventStatus::Injected,
        Event::ExternalInterrupt { vector: 0xd1 },
    )
    .unwrap();
    assert!(v(&e).is_clean());
    let if0 = GuestContext {
        rflags: 2,
        ..GuestContext::default()
    };
    assert_eq!(
        validate(&e, &kvm(), &if0).entry_failures,
        vec![sdm(
            EventSlot::Interrupt,
            Violation::ExternalInterruptWithIfClear
        )]
    );
    e.set_shadow(Shadow::MOV_SS);
    assert_eq!(
        v(&e).entry_failures,
        vec![sdm(
            EventSlot::Interrupt,
            Violation::ExternalInterruptInShadow
        )]
    );
}

#[test]
fn entry_sti_shadow_with_if_clear() {
    let mut e = VcpuEvents::default();
    e.set_shadow(Shadow::STI);
    assert!(v(&e).is_clean());
    let if0 = GuestContext {
        rflags: 2,
        ..GuestContext::default()
    };
    assert_eq!(
        validate(&e, &kvm(), &if0).entry_failures,
        vec![sdm(EventSlot::State, Violation::StiBlockingWithIfClear)]
    );
}

#[test]
fn entry_nmi_rules() {
    let mut e = VcpuEvents::default();
    e.set_event(EventStatus::Injected, Event::Nmi).unwrap();
    assert!(v(&e).is_clean());
    e.nmi.masked = KvmBool::TRUE;
    assert_eq!(
        v(&e).entry_failures,
        vec![sdm(EventSlot::Nmi, Violation::NmiWhileNmiBlocked)]
    );
    e.nmi.masked = KvmBool::FALSE;
    e.set_shadow(Shadow::MOV_SS);
    assert_eq!(
        v(&e).entry_failures,
        vec![sdm(EventSlot::Nmi, Violation::NmiWithMovSsBlocking)]
    );
    e.set_shadow(Shadow::STI);
    assert_eq!(
        v(&e).entry_failures,
        vec![sdm(EventSlot::Nmi, Violation::NmiWithStiBlocking)]
    );
}

#[test]
fn entry_exception_error_code_consistency() {
    let mut e = VcpuEvents::default();
    e.set_exception(EventStatus::Injected, HardwareException::new(13))
        .unwrap();
    assert_eq!(
        v(&e).entry_failures,
        vec![sdm(
            EventSlot::Exception,
            Violation::Entry(EventViolation::ErrorCodeMissing { vector: 13 })
        )]
    );
    let mut caps = GuestContext::default();
    caps.caps.no_hw_error_code_consistency_check = true;
    assert!(validate(&e, &kvm(), &caps).entry_failures.is_empty());
    e.set_exception(
        EventStatus::Injected,
        HardwareException::new(6).with_error_code(0),
    )
    .unwrap();
    assert_eq!(v(&e).entry_failures.len(), 1);
}

#[test]
fn entry_soft_events_have_stale_length() {
    let mut e = VcpuEvents::default();
    e.set_exception(EventStatus::Injected, HardwareException::new(3))
        .unwrap();
    assert_eq!(
        v(&e).entry_failures,
        vec![EntryFailure::StaleInstructionLength(EventSlot::Exception)]
    );
    let mut e = VcpuEvents::default();
    e.set_event(
        EventStatus::Injected,
        Event::ExternalInterrupt { vector: 0x80 },
    )
    .unwrap();
    e.interrupt.soft = KvmBool::TRUE;
    assert_eq!(
        v(&e).entry_failures,
        vec![EntryFailure::StaleInstructionLength(EventSlot::Interrupt)]
    );
}

#[test]
fn report_helpers() {
    let mut r = Report::default();
    assert!(r.is_clean() && r.is_safe());
    r.kvm_changes.push(KvmChange::ShadowIgnored);
    assert!(!r.is_clean() && r.is_safe());
    r.kvm_rejects.push(KvmReject::PayloadCapNotEnabled);
    assert!(!r.is_safe());
    assert!(KvmReject::ExceptionVector(2)
        .to_string()
        .contains("vector 2"));
}

#[test]
fn guest_context_from_regs() {
    let regs = kvm_bindings::kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    let sregs = kvm_bindings::kvm_sregs {
        cr0: 0x11,
        ..Default::default()
    };
    let g = GuestContext::from_regs(&regs, &sregs);
    assert_eq!(g.rflags, 2);
    assert!(g.cr0_pe);
}
