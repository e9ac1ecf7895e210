//! `vcpu_events`: `struct kvm_vcpu_events` conversion, validation and the builder.

use super::common::{assert_error_message, event_from};
use super::input::Input;
use vcpu_events::validate::KvmReject;
use vcpu_events::vcpu_events::{BuildError, SizeError};
use vcpu_events::{validate, Event, EventStatus, GuestContext, KvmContext, Report, VcpuEvents};

/// `vcpu_events`: `struct kvm_vcpu_events` conversion and validation.
///
/// Input: the 64 struct bytes (a shorter input checks the size error, then is padded
/// with zeros), a KVM-context byte, guest RFLAGS (u64), a guest byte, then a typed
/// event and a status byte for the builder.
///
/// Bytes → typed → bytes, typed → kvm-bindings' `kvm_vcpu_events` → typed and the
/// serde snapshot are the identity, with the fields where the uapi header puts them;
/// the validator reports exactly KVM's -EINVAL reasons that can be read off the flags
/// and vector; a typed event stored with the builder reads back as itself and is not
/// refused by KVM when its vector is valid.
pub fn vcpu_events(data: &[u8]) {
    let mut input = Input::new(data);
    let head = input.bytes(64);
    let mut bytes = [0u8; 64];
    bytes[..head.len()].copy_from_slice(head);
    if head.len() < 64 {
        assert_eq!(VcpuEvents::from_bytes(head), Err(SizeError(head.len())));
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert_eq!(VcpuEvents::from_bytes(&longer), Err(SizeError(65)));

    let events = VcpuEvents::from_bytes(&bytes).expect("64 bytes always parse");
    assert_eq!(
        events.to_bytes(),
        bytes,
        "bytes -> VcpuEvents -> bytes is not lossless"
    );
    let kvm: kvm_bindings::kvm_vcpu_events = (&events).into();
    assert_eq!(VcpuEvents::from(&kvm), events, "kvm_vcpu_events round trip");
    let u32_at =
        |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let mut payload = [0u8; 8];
    payload.copy_from_slice(&bytes[56..64]);
    assert_eq!(kvm.exception.nr, bytes[1], "exception.nr at offset 1");
    assert_eq!(
        kvm.exception.error_code,
        u32_at(4),
        "exception.error_code at 4"
    );
    assert_eq!(kvm.interrupt.nr, bytes[9], "interrupt.nr at 9");
    assert_eq!(kvm.nmi.pending, bytes[13], "nmi.pending at 13");
    assert_eq!(kvm.sipi_vector, u32_at(16), "sipi_vector at 16");
    assert_eq!(kvm.flags, u32_at(20), "flags at 20");
    assert_eq!(kvm.smi.latched_init, bytes[27], "smi.latched_init at 27");
    assert_eq!(
        kvm.triple_fault.pending, bytes[28],
        "triple_fault.pending at 28"
    );
    assert_eq!(
        kvm.exception_has_payload, bytes[55],
        "exception_has_payload at 55"
    );
    assert_eq!(
        kvm.exception_payload,
        u64::from_le_bytes(payload),
        "payload at 56"
    );
    let json = serde_json::to_string(&events).expect("VcpuEvents serializes");
    let back: VcpuEvents = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("snapshot {json} does not read back: {e}"));
    assert_eq!(back, events, "serde snapshot round trip");

    check_validate(&events, &bytes, &mut input);
    check_builder(&mut input);
}

/// What KVM_SET_VCPU_EVENTS would refuse, read off the raw fields (KVM's -EINVAL
/// reasons), and the report's own consistency.
fn check_validate(events: &VcpuEvents, bytes: &[u8; 64], input: &mut Input<'_>) {
    let u32_at =
        |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let context_bits = input.u8();
    let context = KvmContext {
        exception_payload_enabled: context_bits & 1 != 0,
        triple_fault_event_enabled: context_bits & 2 != 0,
        smm_supported: context_bits & 4 != 0,
        in_kernel_lapic: context_bits & 8 != 0,
        mp_state_init_received: context_bits & 16 != 0,
    };
    let guest_bits = input.u8();
    let guest = GuestContext {
        rflags: input.u64(),
        cr0_pe: guest_bits & 1 != 0,
        unrestricted_guest: guest_bits & 2 != 0,
        virtual_nmis: guest_bits & 4 != 0,
        ..GuestContext::default()
    };
    let report = validate(events, &context, &guest);
    assert_eq!(
        report,
        validate(events, &context, &guest),
        "validate is not deterministic"
    );
    let flags = u32_at(20);
    let rejects = &report.kvm_rejects;
    let unknown = flags & !0x3f;
    assert_eq!(
        rejects.contains(&KvmReject::UnknownFlags(unknown)),
        unknown != 0,
        "unknown flags {unknown:#x}: {rejects:?}"
    );
    assert_eq!(
        rejects.contains(&KvmReject::PayloadCapNotEnabled),
        flags & 0x10 != 0 && !context.exception_payload_enabled,
        "VALID_PAYLOAD without the cap: {rejects:?}"
    );
    assert_eq!(
        rejects.contains(&KvmReject::TripleFaultCapNotEnabled),
        flags & 0x20 != 0 && !context.triple_fault_event_enabled,
        "VALID_TRIPLE_FAULT without the cap: {rejects:?}"
    );
    let live = bytes[0] != 0 || (flags & 0x10 != 0 && bytes[3] != 0);
    let nr = bytes[1];
    assert_eq!(
        rejects.contains(&KvmReject::ExceptionVector(nr)),
        live && (nr > 31 || nr == 2),
        "exception vector {nr}: {rejects:?}"
    );
    assert_eq!(
        report.is_safe(),
        rejects.is_empty() && report.entry_failures.is_empty()
    );
    assert_eq!(
        report.is_clean(),
        report.is_safe() && report.kvm_changes.is_empty()
    );
    serde_json::to_string(&report).expect("the report serializes");
    let listed = events.events();
    assert!(
        listed.len() <= 6 + 255,
        "events() longer than the struct can hold"
    );
    assert_eq!(
        listed
            .iter()
            .filter(|(s, e)| *s == EventStatus::Pending && *e == Event::Nmi)
            .count(),
        usize::from(events.nmi_pending().unwrap_or(0)),
        "pending NMIs listed"
    );
}

/// The builder: a typed event reads back as itself and is not refused by KVM when its
/// vector is valid.
fn check_builder(input: &mut Input<'_>) {
    let event = event_from(input);
    let status = if input.bool() {
        EventStatus::Pending
    } else {
        EventStatus::Injected
    };
    let mut built = VcpuEvents::default();
    match built.set_event(status, event) {
        Ok(()) => {
            let expected = match (event, status) {
                (Event::Smi | Event::TripleFault, _) => (EventStatus::Pending, event),
                (Event::ExternalInterrupt { .. }, _) => (EventStatus::Injected, event),
                _ => (status, event),
            };
            assert!(
                built.events().contains(&expected),
                "{event:?} ({status:?}) stored as {:?}",
                built.events()
            );
            let everything = KvmContext {
                exception_payload_enabled: true,
                triple_fault_event_enabled: true,
                smm_supported: true,
                in_kernel_lapic: false,
                mp_state_init_received: false,
            };
            let report: Report = validate(&built, &everything, &GuestContext::default());
            let bad_vector =
                matches!(event, Event::HardwareException(e) if e.vector > 31 || e.vector == 2);
            assert_eq!(
                report.kvm_rejects.is_empty(),
                !bad_vector,
                "{event:?} built into {built:?}: {:?}",
                report.kvm_rejects
            );
        }
        Err(error) => {
            assert_error_message(&error);
            match error {
                BuildError::PayloadNeedsPending => {
                    assert_eq!(status, EventStatus::Injected);
                    assert!(matches!(event, Event::HardwareException(e) if e.payload.is_some()));
                }
                BuildError::NotExpressible(e) => {
                    assert_eq!(e, event);
                    assert!(matches!(
                        e,
                        Event::SoftwareInterrupt { .. }
                            | Event::PrivilegedSoftwareException { .. }
                            | Event::SoftwareException { .. }
                            | Event::Sipi { .. }
                    ));
                }
                other => panic!("unexpected build error {other:?}"),
            }
        }
    }
}
