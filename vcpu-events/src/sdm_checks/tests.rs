// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Unit tests of the parent module.

use super::*;
use crate::event::{Event, HardwareException};
use crate::interruption::InterruptionInfo;

const IF: u64 = X86_EFLAGS_IF | 2;

fn ctl() -> EntryControls {
    EntryControls::default()
}

fn raw(info: u32, error_code: u32, len: u32) -> EntryInterruption {
    EntryInterruption {
        info: InterruptionInfo::from_bits_retain(info),
        error_code,
        instruction_len: len,
    }
}

fn ev(e: Event) -> EntryInterruption {
    EntryInterruption::encode(&e).unwrap()
}

fn c(entry: &EntryInterruption) -> Vec<Violation> {
    check_entry_interruption(entry, &EntryCaps::default(), &ctl(), true)
}

fn g(entry: &EntryInterruption, guest: GuestEventState) -> Vec<Violation> {
    check_guest_event_state(entry, &guest, &ctl())
}

#[test]
fn not_valid_is_never_checked() {
    assert!(c(&raw(0x7fff_ffff, 0xffff_ffff, 99)).is_empty());
}

#[test]
fn c1_reserved_type_and_mtf() {
    assert_eq!(
        c(&raw(0x8000_0100, 0, 0)),
        vec![Violation::Entry(EventViolation::ReservedInterruptionType)]
    );
    assert_eq!(
        c(&raw(0x8000_0700, 0, 0)),
        vec![Violation::Entry(EventViolation::OtherEventUnsupported)]
    );
    let caps = EntryCaps {
        monitor_trap_flag: true,
        ..Default::default()
    };
    assert!(check_entry_interruption(&raw(0x8000_0700, 0, 0), &caps, &ctl(), true).is_empty());
}

#[test]
fn c2_nmi_vector() {
    assert!(c(&ev(Event::Nmi)).is_empty());
    assert_eq!(
        c(&raw(0x8000_0203, 0, 0)),
        vec![Violation::Entry(EventViolation::NmiVector { vector: 3 })]
    );
}

#[test]
fn c3_exception_vector() {
    assert!(c(&raw(0x8000_031f, 0, 0)).is_empty());
    assert_eq!(
        c(&raw(0x8000_0320, 0, 0)),
        vec![Violation::Entry(EventViolation::ExceptionVector {
            vector: 32
        })]
    );
}

#[test]
fn c4_other_event_vector() {
    let caps = EntryCaps {
        monitor_trap_flag: true,
        ..Default::default()
    };
    assert_eq!(
        check_entry_interruption(&raw(0x8000_0701, 0, 0), &caps, &ctl(), true),
        vec![Violation::Entry(EventViolation::OtherEventVector {
            vector: 1
        })]
    );
}

#[test]
fn c5_error_code_consistency() {
    // Passing: #GP with, #UD without.
    assert!(c(&ev(Event::HardwareException(
        HardwareException::general_protection(0)
    )))
    .is_empty());
    assert!(c(&ev(Event::HardwareException(HardwareException::new(6)))).is_empty());
    // Missing for #PF.
    assert_eq!(
        c(&raw(0x8000_030e, 0, 0)),
        vec![Violation::Entry(EventViolation::ErrorCodeMissing {
            vector: 14
        })]
    );
    // Unexpected for #UD, and for an external interrupt.
    assert_eq!(
        c(&raw(0x8000_0b06, 0, 0)),
        vec![Violation::Entry(EventViolation::UnexpectedErrorCode {
            interruption_type: InterruptionType::HardwareException,
            vector: 6
        })]
    );
    assert_eq!(
        c(&raw(0x8000_0820, 0, 0)),
        vec![Violation::Entry(EventViolation::UnexpectedErrorCode {
            interruption_type: InterruptionType::ExternalInterrupt,
            vector: 0x20
        })]
    );
    // Real mode with unrestricted guest: #GP has no error code.
    let ug = EntryControls {
        unrestricted_guest: true,
        ..ctl()
    };
    let gp = ev(Event::HardwareException(
        HardwareException::general_protection(0),
    ));
    assert_eq!(
        check_entry_interruption(&gp, &EntryCaps::default(), &ug, false),
        vec![Violation::Entry(EventViolation::UnexpectedErrorCode {
            interruption_type: InterruptionType::HardwareException,
            vector: 13
        })]
    );
    assert!(
        check_entry_interruption(&raw(0x8000_030d, 0, 0), &EntryCaps::default(), &ug, false)
            .is_empty()
    );
    // Without unrestricted guest, CR0.PE does not matter.
    assert!(check_entry_interruption(&gp, &EntryCaps::default(), &ctl(), false).is_empty());
    // #CP only with CET.
    let cet = EntryCaps {
        cet: true,
        ..Default::default()
    };
    assert!(check_entry_interruption(&raw(0x8000_0b15, 0, 0), &cet, &ctl(), true).is_empty());
    assert_eq!(c(&raw(0x8000_0b15, 0, 0)).len(), 1);
    // IA32_VMX_BASIC bit 56 lifts the vector rule for hardware exceptions only.
    let nocc = EntryCaps::from_msrs(1 << 56, 0);
    assert!(nocc.no_hw_error_code_consistency_check);
    assert!(check_entry_interruption(&raw(0x8000_0b06, 0, 0), &nocc, &ctl(), true).is_empty());
    assert!(check_entry_interruption(&raw(0x8000_030e, 0, 0), &nocc, &ctl(), true).is_empty());
    assert_eq!(
        check_entry_interruption(&raw(0x8000_0820, 0, 0), &nocc, &ctl(), true).len(),
        1
    );
}

/// IA32_VMX_BASIC[56] relaxes C5 only in protected mode, as Linux nested.c
/// `nested_check_vm_entry_controls`: an unrestricted real-mode guest
/// (CR0.PE = 0) still may not get an error code. This crate used to skip
/// C5 for every hardware exception with BASIC[56].
#[test]
fn c5_basic56_relaxation_only_in_protected_mode_as_nested_check_vm_entry_controls() {
    let nocc = EntryCaps::from_msrs(1 << 56, 0);
    let urg = EntryControls {
        unrestricted_guest: true,
        ..ctl()
    };
    let gp_with_code = raw(0x8000_0b0d, 0, 0);
    assert!(check_entry_interruption(&gp_with_code, &nocc, &urg, true).is_empty());
    let v = check_entry_interruption(&gp_with_code, &nocc, &urg, false);
    assert_eq!(
        v,
        vec![Violation::Entry(EventViolation::UnexpectedErrorCode {
            interruption_type: InterruptionType::HardwareException,
            vector: 13
        })]
    );
    assert_eq!(v[0].kind(), Rule::Entry(EventRule::ErrorCodeDelivery));
    assert_eq!(v[0].rule(), "C5");
}

/// #CP (21) follows the guest's CET state, as Linux
/// `x86_exception_has_error_code` (the same function vmx-controls uses now).
#[test]
fn c5_cp_error_code_follows_guest_cet_as_x86_exception_has_error_code() {
    let cet = EntryCaps {
        cet: true,
        ..Default::default()
    };
    let cp_without_code = raw(0x8000_0315, 0, 0);
    assert!(c(&cp_without_code).is_empty());
    assert_eq!(
        check_entry_interruption(&cp_without_code, &cet, &ctl(), true),
        vec![Violation::Entry(EventViolation::ErrorCodeMissing {
            vector: 21
        })]
    );
}

#[test]
fn typed_rules_classify_every_violation() {
    let v = check_entry(
        &raw(0x8000_0020, 0, 0),
        &GuestEventState::with_rflags(2),
        &ctl(),
        &EntryCaps::default(),
    );
    assert_eq!(
        v.iter().map(Violation::kind).collect::<Vec<_>>(),
        vec![Rule::Guest(GuestRule::IfForExternalInterrupt)]
    );
    assert!(v[0].is_guest_state());
    assert_eq!(v[0].kind().to_string(), "G1");
}

#[test]
fn c6_reserved_bits() {
    assert_eq!(
        c(&raw(0x8000_1020, 0, 0)),
        vec![Violation::Entry(EventViolation::ReservedBits {
            bits: 0x1000
        })]
    );
    assert_eq!(
        c(&raw(0xc000_0020, 0, 0)),
        vec![Violation::Entry(EventViolation::ReservedBits {
            bits: 0x4000_0000
        })]
    );
}

#[test]
fn c7_error_code_high_bits() {
    assert!(c(&raw(0x8000_0b0d, 0xffff, 0)).is_empty());
    assert_eq!(
        c(&raw(0x8000_0b0d, 0x1_0000, 0)),
        vec![Violation::Entry(EventViolation::ErrorCodeHighBits {
            error_code: 0x1_0000
        })]
    );
    // Not checked without bit 11.
    assert!(c(&raw(0x8000_0306, 0xffff_0000, 0)).is_empty());
}

#[test]
fn c8_instruction_length() {
    for ty in [4u32, 5, 6] {
        let base = 0x8000_0000 | (ty << 8) | 3;
        assert!(c(&raw(base, 0, 1)).is_empty());
        assert!(c(&raw(base, 0, 15)).is_empty());
        assert_eq!(
            c(&raw(base, 0, 16)),
            vec![Violation::Entry(EventViolation::InstructionLengthTooLong {
                len: 16
            })]
        );
        assert_eq!(
            c(&raw(base, 0, 0)),
            vec![Violation::Entry(EventViolation::ZeroInstructionLength)]
        );
        let caps = EntryCaps::from_msrs(0, 1 << 30);
        assert!(check_entry_interruption(&raw(base, 0, 0), &caps, &ctl(), true).is_empty());
    }
    // Not checked for hardware events.
    assert!(c(&raw(0x8000_0020, 0, 99)).is_empty());
}

#[test]
fn g1_external_interrupt_needs_if() {
    let e = ev(Event::ExternalInterrupt { vector: 0x20 });
    assert!(g(&e, GuestEventState::with_rflags(IF)).is_empty());
    assert_eq!(
        g(&e, GuestEventState::with_rflags(2)),
        vec![Violation::ExternalInterruptWithIfClear]
    );
    // The edk2#91 state: RFLAGS=0x2, intr_info=0x800000d1.
    let edk2 = check_entry(
        &raw(0x8000_00d1, 0, 0),
        &GuestEventState::with_rflags(2),
        &ctl(),
        &EntryCaps::default(),
    );
    assert_eq!(edk2, vec![Violation::ExternalInterruptWithIfClear]);
    assert_eq!(
        edk2[0].sdm_section(),
        "SDM 26.3.1.4 (checks on guest RIP, RFLAGS and SSP)"
    );
}

#[test]
fn g2_interruptibility_reserved_and_both_shadows() {
    let mut s = GuestEventState::with_rflags(IF);
    s.interruptibility = Interruptibility::from_bits_retain(1 << 5);
    assert_eq!(
        g(&EntryInterruption::NONE, s),
        vec![Violation::InterruptibilityReservedBits { bits: 0x20 }]
    );
    s.interruptibility = Interruptibility::from_bits_retain(3);
    assert_eq!(
        g(&EntryInterruption::NONE, s),
        vec![Violation::StiAndMovSsBlocking]
    );
    s.interruptibility =
        Interruptibility::from_bits_retain(0x1f & !Interruptibility::BLOCKING_BY_SMI & !3 | 1);
    assert!(g(&EntryInterruption::NONE, s).is_empty());
    // Enclave interruption: fine with STI blocking (above), not with MOV SS.
    s.interruptibility = Interruptibility::from_bits_retain(
        Interruptibility::ENCLAVE_INTERRUPTION | Interruptibility::BLOCKING_BY_MOV_SS,
    );
    assert_eq!(
        g(&EntryInterruption::NONE, s),
        vec![Violation::EnclaveInterruptionWithMovSs]
    );
    assert_eq!(Violation::EnclaveInterruptionWithMovSs.rule(), "G2");
}

#[test]
fn g3_sti_blocking_needs_if() {
    let mut s = GuestEventState::with_rflags(2);
    s.interruptibility = Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_STI);
    assert_eq!(
        g(&EntryInterruption::NONE, s),
        vec![Violation::StiBlockingWithIfClear]
    );
    s.rflags = IF;
    assert!(g(&EntryInterruption::NONE, s).is_empty());
    // MOV-SS blocking with IF = 0 is fine.
    s.rflags = 2;
    s.interruptibility = Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_MOV_SS);
    assert!(g(&EntryInterruption::NONE, s).is_empty());
}

#[test]
fn g4_external_interrupt_in_shadow() {
    let e = ev(Event::ExternalInterrupt { vector: 0x20 });
    for bit in [
        Interruptibility::BLOCKING_BY_STI,
        Interruptibility::BLOCKING_BY_MOV_SS,
    ] {
        let mut s = GuestEventState::with_rflags(IF);
        s.interruptibility = Interruptibility::from_bits_retain(bit);
        assert_eq!(g(&e, s), vec![Violation::ExternalInterruptInShadow]);
    }
    // NMI blocking does not block external interrupts.
    let mut s = GuestEventState::with_rflags(IF);
    s.interruptibility = Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_NMI);
    assert!(g(&e, s).is_empty());
}

#[test]
fn g5_nmi_shadow_rules() {
    let e = ev(Event::Nmi);
    let mut s = GuestEventState::with_rflags(2);
    assert!(g(&e, s).is_empty(), "NMI does not need IF");
    s.interruptibility = Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_MOV_SS);
    assert_eq!(g(&e, s), vec![Violation::NmiWithMovSsBlocking]);
    s.rflags = IF;
    s.interruptibility = Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_STI);
    assert_eq!(g(&e, s), vec![Violation::NmiWithStiBlocking]);
}

#[test]
fn g6_virtual_nmi_blocking() {
    let e = ev(Event::Nmi);
    let mut s = GuestEventState::with_rflags(IF);
    s.interruptibility = Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_NMI);
    assert!(
        g(&e, s).is_empty(),
        "without virtual NMIs the check does not apply"
    );
    let vnmi = EntryControls {
        virtual_nmis: true,
        ..ctl()
    };
    assert_eq!(
        check_guest_event_state(&e, &s, &vnmi),
        vec![Violation::NmiWhileNmiBlocked]
    );
    s.interruptibility = Interruptibility::NONE;
    assert!(check_guest_event_state(&e, &s, &vnmi).is_empty());
}

#[test]
fn g7_smi_blocking() {
    let mut s = GuestEventState::with_rflags(IF);
    s.interruptibility = Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_SMI);
    assert_eq!(
        g(&EntryInterruption::NONE, s),
        vec![Violation::SmiBlockingOutsideSmm]
    );
    s.in_smm = true;
    assert!(g(&EntryInterruption::NONE, s).is_empty());
    let smm = EntryControls {
        entry_to_smm: true,
        ..ctl()
    };
    assert!(check_guest_event_state(&EntryInterruption::NONE, &s, &smm).is_empty());
    s.interruptibility = Interruptibility::NONE;
    assert_eq!(
        check_guest_event_state(&EntryInterruption::NONE, &s, &smm),
        vec![Violation::EntryToSmmWithoutSmiBlocking]
    );
}

#[test]
fn g8_activity_state() {
    let mut s = GuestEventState::with_rflags(IF);
    s.activity = ActivityState::Hlt;
    s.interruptibility = Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_MOV_SS);
    assert_eq!(
        g(&EntryInterruption::NONE, s),
        vec![Violation::ShadowWhenNotActive {
            activity: ActivityState::Hlt
        }]
    );
    s.interruptibility = Interruptibility::NONE;
    // HLT: external interrupt, NMI, #DB, #MC allowed; #GP not.
    for ok in [
        Event::ExternalInterrupt { vector: 0x20 },
        Event::Nmi,
        Event::HardwareException(HardwareException::new(1)),
        Event::HardwareException(HardwareException::new(18)),
    ] {
        assert!(g(&ev(ok), s).is_empty(), "{ok:?}");
    }
    let gp = ev(Event::HardwareException(
        HardwareException::general_protection(0),
    ));
    assert_eq!(
        g(&gp, s),
        vec![Violation::EventBlockedInActivityState {
            activity: ActivityState::Hlt,
            interruption_type: InterruptionType::HardwareException,
            vector: 13
        }]
    );
    // Shutdown: NMI and #MC only.
    s.activity = ActivityState::Shutdown;
    assert!(g(&ev(Event::Nmi), s).is_empty());
    assert!(g(&ev(Event::HardwareException(HardwareException::new(18))), s).is_empty());
    assert_eq!(
        g(&ev(Event::ExternalInterrupt { vector: 0x20 }), s).len(),
        1
    );
    // Wait-for-SIPI: nothing.
    s.activity = ActivityState::WaitForSipi;
    assert_eq!(g(&ev(Event::Nmi), s).len(), 1);
    assert!(g(&EntryInterruption::NONE, s).is_empty());
    s.activity = ActivityState::Other(7);
    assert_eq!(
        g(&EntryInterruption::NONE, s),
        vec![Violation::ReservedActivityState(7)]
    );
}

#[test]
fn g9_single_step_in_shadow() {
    let mut s = GuestEventState::with_rflags(IF | X86_EFLAGS_TF);
    s.interruptibility = Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_STI);
    assert_eq!(
        g(&EntryInterruption::NONE, s),
        vec![Violation::SingleStepNotPending]
    );
    s.pending_debug_bs = true;
    assert!(g(&EntryInterruption::NONE, s).is_empty());
    s.rflags = IF;
    assert_eq!(
        g(&EntryInterruption::NONE, s),
        vec![Violation::SingleStepPendingWithoutTf]
    );
    s.interruptibility = Interruptibility::NONE;
    assert!(
        g(&EntryInterruption::NONE, s).is_empty(),
        "no shadow, no rule"
    );
}

#[test]
fn all_violations_are_reported_with_sections() {
    // External interrupt with error code, reserved bits, IF = 0, MOV-SS shadow.
    let mut s = GuestEventState::with_rflags(2);
    s.interruptibility = Interruptibility::from_bits_retain(Interruptibility::BLOCKING_BY_MOV_SS);
    let v = check_entry(
        &raw(0x8000_1820, 0x1_0000, 0),
        &s,
        &ctl(),
        &EntryCaps::default(),
    );
    let rules: Vec<_> = v.iter().map(|v| v.rule()).collect();
    assert_eq!(rules, vec!["C5", "C6", "C7", "G1", "G4"]);
    assert!(v.iter().all(|v| v.sdm_section().starts_with("SDM 26.")));
    assert!(!v[0].is_guest_state() && v[3].is_guest_state());
    assert!(v[3].to_string().contains("RFLAGS.IF = 0"));
}

/// C1..C8 are the shared checker's violations, wrapped: the message and the rule
/// are those of `x86_kvm_base::interruption::EventViolation` (one home for the
/// SDM 26.2.1.3 rules), and the section is the control-field one.
#[test]
fn entry_violations_are_the_shared_checker_s() {
    let shared = [
        EventViolation::ReservedInterruptionType,
        EventViolation::NmiVector { vector: 3 },
        EventViolation::ErrorCodeMissing { vector: 14 },
        EventViolation::ErrorCodeHighBits {
            error_code: 0x1_0000,
        },
        EventViolation::ZeroInstructionLength,
    ];
    for e in shared {
        let v = Violation::from(e);
        assert_eq!(v, Violation::Entry(e));
        assert_eq!(v.to_string(), e.to_string());
        assert_eq!(v.kind(), Rule::Entry(e.rule()));
        assert_eq!(v.rule(), e.rule().id());
        assert!(!v.is_guest_state());
        assert!(v.sdm_section().starts_with("SDM 26.2.1.3"));
    }
}
