//! `vcpu_interruption`: the VM-entry interruption-information field and its SDM checks.

use super::common::{assert_error_message, event_from};
use super::input::Input;
use vcpu_events::interruption::DecodeError;
use vcpu_events::sdm_checks::{check_entry_interruption, check_guest_event_state, EventViolation};
use vcpu_events::{
    check_entry, idt_vectoring, ActivityState, EntryCaps, EntryControls, EntryInterruption, Event,
    GuestEventState, IdtVectoring, Interruptibility, InterruptionInfo, InterruptionType, Violation,
};

/// Whether the SDM's VM-entry checks (C1..C8) accept `event` injected into an
/// active, protected-mode guest with IF = 1 and no blocking, on a CPU without the
/// optional capabilities: an independent statement of the rules, used as the oracle.
fn well_formed_for_entry(event: &vcpu_events::Event) -> bool {
    use vcpu_events::event::exception_has_error_code;
    use vcpu_events::Event;
    match *event {
        Event::ExternalInterrupt { .. } | Event::Nmi => true,
        Event::HardwareException(e) => {
            e.vector <= 31
                && e.error_code.is_some() == exception_has_error_code(e.vector, false)
                && e.error_code.unwrap_or(0) <= 0xffff
        }
        Event::SoftwareInterrupt {
            instruction_len, ..
        }
        | Event::PrivilegedSoftwareException {
            instruction_len, ..
        }
        | Event::SoftwareException {
            instruction_len, ..
        } => (1..=15).contains(&instruction_len),
        _ => false,
    }
}

/// `vcpu_interruption`: the VM-entry interruption-information field (decode, encode,
/// every SDM check) and IDT-vectoring re-injection.
///
/// Input: entry info, error code, instruction length (u32 each); IA32_VMX_BASIC and
/// IA32_VMX_MISC (u64); a capability byte (MTF, CET); a control byte (unrestricted
/// guest, virtual NMIs, entry to SMM); guest RFLAGS (u64), interruptibility (u32),
/// activity state (u8), a guest byte (CR0.PE, in SMM, pending BS, BTF); IDT-vectoring
/// info, error code, exit instruction length (u32 each); a typed event.
///
/// Decoding then encoding keeps every architectural bit; the checks report each rule
/// the SDM states for the raw field (C1..C8, G1..G3), are the concatenation of the
/// control-field and guest-state checks, and name their rule in their message; a
/// well-formed typed event encodes to a field every check accepts; re-injection
/// clears bits 30:12 and re-injects exactly the interrupted event, first.
pub fn vcpu_interruption(data: &[u8]) {
    let mut input = Input::new(data);
    let entry = EntryInterruption {
        info: InterruptionInfo::from_bits_retain(input.u32()),
        error_code: input.u32(),
        instruction_len: input.u32(),
    };
    let mut caps = EntryCaps::from_msrs(input.u64(), input.u64());
    let cap_bits = input.u8();
    caps.monitor_trap_flag = cap_bits & 1 != 0;
    caps.cet = cap_bits & 2 != 0;
    let control_bits = input.u8();
    let controls = EntryControls {
        unrestricted_guest: control_bits & 1 != 0,
        virtual_nmis: control_bits & 2 != 0,
        entry_to_smm: control_bits & 4 != 0,
    };
    let rflags = input.u64();
    let interruptibility = Interruptibility::from_bits_retain(input.u32());
    let activity = ActivityState::from_raw(u32::from(input.u8()));
    let guest_bits = input.u8();
    let guest = GuestEventState {
        rflags,
        cr0_pe: guest_bits & 1 != 0,
        interruptibility,
        activity,
        in_smm: guest_bits & 2 != 0,
        pending_debug_bs: guest_bits & 4 != 0,
        debugctl_btf: guest_bits & 8 != 0,
    };

    check_rules(&entry, &guest, &controls, &caps);
    check_decode(&entry);
    // IDT-vectoring information: re-inject exactly the interrupted event, first.
    let vectoring = IdtVectoring {
        info: InterruptionInfo::from_bits_retain(input.u32()),
        error_code: input.u32(),
        exit_instruction_len: input.u32(),
    };
    let new_event = event_from(&mut input);
    check_reinjection(&vectoring, new_event);
    check_typed(new_event);
}

/// The checks: all of them, each naming its rule, and each rule the SDM states for the
/// raw field (C1..C8, G1..G3) fires where it must.
fn check_rules(
    entry: &EntryInterruption,
    guest: &GuestEventState,
    controls: &EntryControls,
    caps: &EntryCaps,
) {
    let (rflags, interruptibility) = (guest.rflags, guest.interruptibility);
    let violations = check_entry(entry, guest, controls, caps);
    let mut parts = check_entry_interruption(entry, caps, controls, guest.cr0_pe);
    parts.extend(check_guest_event_state(entry, guest, controls));
    assert_eq!(
        violations, parts,
        "check_entry is not C checks followed by G checks"
    );
    for v in &violations {
        let rule = v.rule();
        assert!(
            v.to_string().starts_with(&format!("{rule}: ")),
            "message of {v:?} does not start with its rule {rule}"
        );
        assert!(!v.sdm_section().is_empty(), "{v:?} without an SDM section");
        assert_eq!(v.is_guest_state(), rule.starts_with('G'), "{v:?}");
    }
    let has = |pred: &dyn Fn(&Violation) -> bool| violations.iter().any(pred);
    let info = entry.info;
    let ty = info.interruption_type();
    let vector = info.vector();
    if !info.valid() {
        assert!(
            !has(&|v| v.rule().starts_with('C')),
            "a field without the valid bit was checked: {violations:?}"
        );
    } else {
        if ty == InterruptionType::Reserved {
            assert!(
                has(&|v| *v == Violation::Entry(EventViolation::ReservedInterruptionType)),
                "C1 missed"
            );
        }
        if ty == InterruptionType::Nmi && vector != 2 {
            assert!(
                has(&|v| *v == Violation::Entry(EventViolation::NmiVector { vector })),
                "C2 missed"
            );
        }
        if ty == InterruptionType::HardwareException && vector > 31 {
            assert!(
                has(&|v| *v == Violation::Entry(EventViolation::ExceptionVector { vector })),
                "C3 missed"
            );
        }
        if info.raw() & 0x7fff_f000 != 0 {
            let bits = info.raw() & 0x7fff_f000;
            assert!(
                has(&|v| *v == Violation::Entry(EventViolation::ReservedBits { bits })),
                "C6 missed"
            );
        }
        if info.deliver_error_code() && entry.error_code & 0xffff_0000 != 0 {
            let error_code = entry.error_code;
            assert!(
                has(&|v| *v == Violation::Entry(EventViolation::ErrorCodeHighBits { error_code })),
                "C7 missed"
            );
        }
        if ty.uses_instruction_len() && entry.instruction_len > 15 {
            assert!(has(&|v| v.rule() == "C8"), "C8 missed");
        }
        if ty == InterruptionType::ExternalInterrupt && rflags & (1 << 9) == 0 {
            assert!(
                has(&|v| *v == Violation::ExternalInterruptWithIfClear),
                "G1 missed"
            );
        }
    }
    if interruptibility.sti() && interruptibility.mov_ss() {
        assert!(has(&|v| *v == Violation::StiAndMovSsBlocking), "G2 missed");
    }
    if interruptibility.sti() && rflags & (1 << 9) == 0 {
        assert!(
            has(&|v| *v == Violation::StiBlockingWithIfClear),
            "G3 missed"
        );
    }
}

/// Decoding then encoding keeps every architectural bit; a refusal names its reason.
fn check_decode(entry: &EntryInterruption) {
    let info = entry.info;
    let ty = info.interruption_type();
    let vector = info.vector();
    match entry.decode() {
        Ok(event) => {
            assert!(info.valid(), "decoded an invalid field");
            let again = EntryInterruption::encode(&event)
                .unwrap_or_else(|e| panic!("decoded {event:?} does not encode: {e}"));
            assert_eq!(
                again.info.raw(),
                info.raw() & !0x7fff_f000,
                "info bits changed"
            );
            let error_code = if info.deliver_error_code() {
                entry.error_code
            } else {
                0
            };
            assert_eq!(again.error_code, error_code, "error code changed");
            let len = if ty.uses_instruction_len() {
                entry.instruction_len
            } else {
                0
            };
            assert_eq!(again.instruction_len, len, "instruction length changed");
            assert_eq!(again.decode(), Ok(event), "decode(encode(event)) != event");
        }
        Err(error) => {
            assert_error_message(&error);
            match error {
                DecodeError::NotValid => assert!(!info.valid()),
                DecodeError::ReservedType => assert_eq!(ty, InterruptionType::Reserved),
                DecodeError::NmiVector { vector: v } => {
                    assert_eq!((ty, v), (InterruptionType::Nmi, vector));
                    assert_ne!(v, 2);
                }
                DecodeError::ErrorCodeOnNonException(t) => {
                    assert_eq!(t, ty);
                    assert!(info.deliver_error_code());
                }
                DecodeError::OtherEvent { vector: v } => {
                    assert_eq!((ty, v), (InterruptionType::OtherEvent, vector))
                }
                other => panic!("unexpected decode error {other:?}"),
            }
        }
    }
}

/// IDT-vectoring information: re-inject exactly the interrupted event, first.
fn check_reinjection(vectoring: &IdtVectoring, new_event: Event) {
    match vectoring.reinjection() {
        Ok(None) => {
            assert!(
                !vectoring.info.valid(),
                "valid IDT-vectoring info not re-injected"
            );
            assert_eq!(
                idt_vectoring::next_event(None, Some(new_event)),
                (Some(new_event), false)
            );
        }
        Ok(Some(r)) => {
            assert!(vectoring.info.valid());
            assert_eq!(r.entry.info.raw(), vectoring.info.raw() & !0x7fff_f000);
            assert_eq!(r.entry.info.reserved_bits(), 0, "bits 30:12 not cleared");
            assert_eq!(r.entry.decode(), Ok(r.event), "re-injected event");
            assert_eq!(r.clear_nmi_blocking, r.event == Event::Nmi, "NMI blocking");
            assert_eq!(
                idt_vectoring::next_event(Some(&r), Some(new_event)),
                (Some(r.event), true),
                "the interrupted event must go first and the new one stay queued"
            );
        }
        Err(error) => {
            assert!(vectoring.info.valid());
            let masked = EntryInterruption {
                info: InterruptionInfo::from_bits_retain(vectoring.info.raw() & !0x7fff_f000),
                error_code: vectoring.error_code,
                instruction_len: vectoring.exit_instruction_len,
            };
            assert_eq!(masked.decode(), Err(error), "re-injection error");
        }
    }
}

/// A typed event round-trips through the field and, when well formed, passes every
/// check in a guest that can take it.
fn check_typed(new_event: Event) {
    match EntryInterruption::encode(&new_event) {
        Ok(encoded) => {
            let expected = vcpu_events::interruption::without_payload(new_event);
            assert_eq!(
                encoded.decode(),
                Ok(expected),
                "encode/decode of {new_event:?}"
            );
            let nominal = GuestEventState::with_rflags(0x202);
            let found = check_entry(
                &encoded,
                &nominal,
                &EntryControls::default(),
                &EntryCaps::default(),
            );
            assert_eq!(
                found.is_empty(),
                well_formed_for_entry(&new_event),
                "checks on {new_event:?} ({encoded:?}) in a nominal guest: {found:?}"
            );
        }
        Err(error) => {
            assert_error_message(&error);
            assert!(
                matches!(
                    new_event,
                    Event::Smi | Event::TripleFault | Event::Sipi { .. }
                ),
                "{new_event:?} refused by encode: {error}"
            );
        }
    }
}
