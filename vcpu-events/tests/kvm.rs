// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Tests on a real /dev/kvm with a tiny 64-bit long-mode guest.
//!
//! The guest's layout and #GP/#PF/IRQ handlers are shared with the snapshot tests
//! (`common/handlers.rs`); the rest of its code is written below as bytes with one comment per
//! instruction (GNU `as --64`, Intel syntax, produced the encodings). Memory
//! layout (2 MiB identity-mapped with one 2 MiB page):
//!
//! | GPA      | What |
//! |----------|------|
//! | 0x1000   | GDT: null, 64-bit code (0x08), data (0x10) |
//! | 0x2000   | IDT: 256 interrupt gates |
//! | 0x3000   | PML4 -> 0x4000 PDPT -> 0x5000 PD (2 MiB page at 0) |
//! | 0x8000   | the guest's "masked" flag (1 while it runs with IF = 0) |
//! | 0x10000  | main code |
//! | 0x11000  | #GP handler, 0x11080 #DB handler, 0x11100 #PF handler, 0x11200 IRQ stubs, 0x11400 IRQ common |
//! | 0x80000  | stack top |
//!
//! Ports: 0x10 #GP error code; 0x11/0x12/0x13 #PF CR2 low/high and error
//! code; 0x14 DR6 seen by the #DB handler; 0x21 "vector delivered while unmasked"; 0x22 "vector delivered while
//! masked" (a failure); 0x30 tick while masked; 0x31 tick after STI; 0x3f done.

#![cfg(feature = "kvm")]

use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vcpu_events::event::{DR6_BS, DR6_RTM};
use vcpu_events::injector::{Decision, Injector, RaiseOutcome, WaitReason};
use vcpu_events::kvm::{self as glue, VmEventCaps};
use vcpu_events::validate::{validate, GuestContext, KvmChange, KvmReject};
use vcpu_events::vcpu_events::{KvmBool, Shadow, VcpuEvents, VcpuEventsFlags};
use vcpu_events::{Event, EventStatus, ExceptionPayload, HardwareException};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

// The 64-bit guest set-up shared with raise_kvm.rs and the device_interrupts example.
#[allow(dead_code)]
mod common {
    pub mod asm;
    pub mod handlers;
    pub mod long_mode;
}
use common::handlers::{
    self, irq_stub, run, Seen, FIRST_IRQ, IRQ_COUNT, IRQ_STUBS, MAIN, MAIN_HLT, STACK_TOP,
};
use common::long_mode::{self, idt_gate, IDT};

/// The #DB handler ([`DB_CODE`]).
const DB_HANDLER: u64 = 0x11080;
/// The guest's "masked" flag.
const MASKED_FLAG: u64 = 0x8000;

const DB_CODE: &[u8] = &[
    0x0f, 0x21, 0xf0, // mov rax, dr6
    0xe7, 0x14, //       out 0x14, eax
    0xf4, //             hlt
];

/// Shared IRQ handler: reports the vector in AL on port 0x21, or on 0x22
/// when the guest's "masked" flag says it should not have been interrupted.
const IRQ_COMMON_CODE: &[u8] = &[
    0x80, 0x3c, 0x25, 0x00, 0x80, 0x00, 0x00, 0x00, // cmp byte ptr [0x8000], 0
    0x75, 0x05, //                                   jne bad
    0xe6, 0x21, //                                   out 0x21, al
    0x58, //                                         pop rax
    0x48, 0xcf, //                                   iretq
    0xe6, 0x22, //                             bad:  out 0x22, al
    0x58, //                                         pop rax
    0x48, 0xcf, //                                   iretq
];

/// main for the injector test: 4 rounds of (cli; masked = 1; tick; busy
/// loop; tick; masked = 0; sti; tick; busy loop), then report done and halt
/// with interrupts enabled.
const MAIN_MASKED_ROUNDS: &[u8] = &[
    0xb9, 0x04, 0x00, 0x00, 0x00, //                   mov ecx, 4
    0xfa, //                                    round: cli
    0xc6, 0x04, 0x25, 0x00, 0x80, 0x00, 0x00, 0x01, // mov byte ptr [0x8000], 1
    0xe6, 0x30, //                                     out 0x30, al   ; tick (masked)
    0xba, 0x20, 0x4e, 0x00, 0x00, //                   mov edx, 20000
    0xff, 0xca, //                                 1:  dec edx
    0x75, 0xfc, //                                     jnz 1b
    0xe6, 0x30, //                                     out 0x30, al   ; tick (masked)
    0xc6, 0x04, 0x25, 0x00, 0x80, 0x00, 0x00, 0x00, // mov byte ptr [0x8000], 0
    0xfb, //                                           sti
    0xe6, 0x31, //                                     out 0x31, al   ; tick (unmasked)
    0xba, 0x20, 0x4e, 0x00, 0x00, //                   mov edx, 20000
    0xff, 0xca, //                                 2:  dec edx
    0x75, 0xfc, //                                     jnz 2b
    0xff, 0xc9, //                                     dec ecx
    0x75, 0xd2, //                                     jnz round
    0xe6, 0x3f, //                                     out 0x3f, al   ; done
    0xf4, //                                       3:  hlt
    0xeb, 0xfd, //                                     jmp 3b
];

fn kvm_or_skip() -> Option<Kvm> {
    test_support::kvm_or_skip()
}

// Drop order: vCPU, VM, then the memory it maps.
struct Guest {
    vcpu: VcpuFd,
    _vm: VmFd,
    mem: GuestMemoryMmap,
    caps: VmEventCaps,
}

fn setup(kvm: &Kvm, main: &[u8]) -> Guest {
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    let caps = glue::enable_event_caps(&vm).expect("enable caps");
    let mem = long_mode::guest_memory().expect("guest memory");
    handlers::write_guest(&mem, main, IRQ_COMMON_CODE);
    let w = |bytes: &[u8], at: u64| mem.write_slice(bytes, GuestAddress(at)).unwrap();
    w(&idt_gate(DB_HANDLER), IDT + 16);
    w(DB_CODE, DB_HANDLER);
    // The "masked" flag at 0x8000 starts at 0 (fresh anonymous memory).

    // The returned Guest keeps `mem` alive as long as the VM.
    long_mode::map_memory(&vm, &mem).expect("KVM_SET_USER_MEMORY_REGION");
    let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    long_mode::set_long_mode(kvm, &vcpu, MAIN, STACK_TOP).expect("64-bit vCPU set-up");
    Guest {
        vcpu,
        _vm: vm,
        mem,
        caps,
    }
}

fn kvm_ctx(g: &Guest) -> vcpu_events::KvmContext {
    g.caps.kvm_context()
}

#[test]
fn set_get_vcpu_events_round_trips() {
    let Some(kvm) = kvm_or_skip() else { return };
    let g = setup(&kvm, MAIN_HLT);
    // An injected #GP, one pending NMI with NMIs masked, a MOV-SS shadow.
    let mut ev = VcpuEvents::default();
    ev.set_event(
        EventStatus::Injected,
        Event::HardwareException(HardwareException::general_protection(0x18)),
    )
    .unwrap();
    ev.nmi.masked = KvmBool::TRUE;
    ev.set_event(EventStatus::Pending, Event::Nmi).unwrap();
    ev.set_shadow(Shadow::MOV_SS);
    let report =
        glue::set_vcpu_events_validated(&g.vcpu, &ev, &kvm_ctx(&g), &GuestContext::default())
            .unwrap();
    assert!(report.is_clean(), "{report:?}");
    let got = glue::get_vcpu_events(&g.vcpu).unwrap();
    assert_eq!(got.exception(), ev.exception());
    assert_eq!(got.nmi_pending(), Some(1));
    assert!(got.nmi.masked.get());
    assert!(!got.nmi.injected.get());
    assert_eq!(got.shadow(), Some(Shadow::MOV_SS));
    assert_eq!(got.interrupt(), None);
    // GET's flags: always NMI_PENDING | SHADOW | SMM, plus the enabled caps.
    let mut want = 0x01 | 0x04 | 0x08;
    if g.caps.exception_payload.is_enabled() {
        want |= 0x10;
    }
    if g.caps.triple_fault_event.is_enabled() {
        want |= 0x20;
    }
    assert_eq!(got.flags.raw(), want);
    // Writing back what GET returned and reading again is stable.
    glue::set_vcpu_events(&g.vcpu, &got).unwrap();
    assert_eq!(glue::get_vcpu_events(&g.vcpu).unwrap(), got);

    // An injected external interrupt and an injected NMI, no shadow.
    let mut ev = VcpuEvents::default();
    ev.set_event(
        EventStatus::Injected,
        Event::ExternalInterrupt { vector: 0x40 },
    )
    .unwrap();
    ev.set_shadow(Shadow::NONE);
    let mut regs = g.vcpu.get_regs().unwrap();
    regs.rflags = 0x202;
    g.vcpu.set_regs(&regs).unwrap();
    glue::set_vcpu_events(&g.vcpu, &ev).unwrap();
    let got = glue::get_vcpu_events(&g.vcpu).unwrap();
    assert_eq!(
        got.interrupt(),
        Some(Event::ExternalInterrupt { vector: 0x40 })
    );
    assert_eq!(got.shadow(), Some(Shadow::NONE));
}

#[test]
fn injected_gp_with_error_code_reaches_the_handler() {
    let Some(kvm) = kvm_or_skip() else { return };
    let mut g = setup(&kvm, MAIN_HLT);
    let mut ev = VcpuEvents::default();
    ev.set_event(
        EventStatus::Injected,
        Event::HardwareException(HardwareException::general_protection(0x1234)),
    )
    .unwrap();
    glue::set_vcpu_events_validated(&g.vcpu, &ev, &kvm_ctx(&g), &GuestContext::default()).unwrap();
    assert_eq!(run(&mut g.vcpu).0, Seen::Out(0x10, 0x1234));
    assert_eq!(run(&mut g.vcpu).0, Seen::Hlt);
}

#[test]
fn pending_pf_with_cr2_payload_reaches_the_handler() {
    let Some(kvm) = kvm_or_skip() else { return };
    let mut g = setup(&kvm, MAIN_HLT);
    if !g.caps.exception_payload.is_enabled() {
        println!("skipping: KVM_CAP_EXCEPTION_PAYLOAD not supported");
        return;
    }
    const CR2: u64 = 0x0000_7fff_dead_b000;
    let mut ev = VcpuEvents::default();
    ev.set_event(
        EventStatus::Pending,
        Event::HardwareException(HardwareException::page_fault(0x6, CR2)),
    )
    .unwrap();
    // Without the cap this would be an -EINVAL; the validator knows.
    let no_cap = vcpu_events::KvmContext {
        exception_payload_enabled: false,
        ..kvm_ctx(&g)
    };
    assert!(
        glue::set_vcpu_events_validated(&g.vcpu, &ev, &no_cap, &GuestContext::default()).is_err()
    );
    glue::set_vcpu_events_validated(&g.vcpu, &ev, &kvm_ctx(&g), &GuestContext::default()).unwrap();
    assert_eq!(run(&mut g.vcpu).0, Seen::Out(0x11, CR2 as u32));
    assert_eq!(run(&mut g.vcpu).0, Seen::Out(0x12, (CR2 >> 32) as u32));
    assert_eq!(run(&mut g.vcpu).0, Seen::Out(0x13, 0x6));
    assert_eq!(run(&mut g.vcpu).0, Seen::Hlt);
}

#[test]
fn triple_fault_event_ends_in_shutdown() {
    let Some(kvm) = kvm_or_skip() else { return };
    let mut g = setup(&kvm, MAIN_HLT);
    if !g.caps.triple_fault_event.is_enabled() {
        println!("skipping: KVM_CAP_X86_TRIPLE_FAULT_EVENT not supported");
        return;
    }
    // What a notify-exit policy's "synthesize a triple fault" action becomes.
    glue::inject_event(
        &g.vcpu,
        EventStatus::Pending,
        Event::TripleFault,
        &kvm_ctx(&g),
        &GuestContext::default(),
    )
    .unwrap();
    assert_eq!(
        glue::get_vcpu_events(&g.vcpu).unwrap().triple_fault(),
        Some(true)
    );
    assert_eq!(run(&mut g.vcpu).0, Seen::Shutdown);
}

#[test]
fn injector_delivers_every_interrupt_and_none_while_masked() {
    let Some(kvm) = kvm_or_skip() else { return };
    let mut g = setup(&kvm, MAIN_MASKED_ROUNDS);
    let mut inj = Injector::new();
    let mut next = FIRST_IRQ;
    let mut raised = Vec::new();
    let mut delivered = Vec::new();
    let mut after_masked_tick = false;
    let mut done = false;
    let mut masked_ticks = 0;
    for _ in 0..100_000 {
        let d = glue::before_run(&mut inj, &mut g.vcpu).unwrap();
        if after_masked_tick {
            // The guest runs with IF = 0: nothing may be injected.
            assert!(matches!(d, Decision::RequestWindow(_)), "{d:?}");
        }
        let (seen, kind) = run(&mut g.vcpu);
        inj.after_exit(kind);
        after_masked_tick = false;
        match seen {
            Seen::Out(0x30, _) => {
                masked_ticks += 1;
                for _ in 0..2 {
                    if next < FIRST_IRQ + IRQ_COUNT {
                        assert!(matches!(inj.raise(next), Ok(RaiseOutcome::Queued { .. })));
                        raised.push(next);
                        next += 1;
                    }
                }
                if masked_ticks == 1 {
                    // Raised again while still queued: coalesced, one delivery.
                    assert_eq!(inj.raise(FIRST_IRQ), Ok(RaiseOutcome::Coalesced));
                }
                after_masked_tick = true;
            }
            Seen::Out(0x31, _) | Seen::IrqWindowOpen => {}
            Seen::Out(0x21, v) => {
                let v = v as u8;
                inj.on_delivered(v).unwrap();
                delivered.push(v);
            }
            Seen::Out(0x22, v) => panic!("vector {v:#x} delivered while the guest had IF = 0"),
            Seen::Out(0x3f, _) => done = true,
            Seen::Hlt if done && inj.is_empty() && inj.in_flight() == 0 => break,
            Seen::Hlt => {}
            other => panic!("unexpected exit {other:?}"),
        }
    }
    assert!(done, "guest did not finish");
    assert_eq!(masked_ticks, 8);
    assert_eq!(raised.len(), usize::from(IRQ_COUNT));
    let mut sorted = delivered.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted, raised,
        "every queued interrupt delivered exactly once"
    );
    let s = inj.stats();
    assert_eq!(s.requested, u64::from(IRQ_COUNT) + 1);
    assert_eq!(s.coalesced, 1);
    assert_eq!(s.injected, u64::from(IRQ_COUNT));
    assert_eq!(s.delivered, u64::from(IRQ_COUNT));
    assert!(s.window_requests > 0 && s.window_exits > 0, "{s:?}");
    // FIFO: delivered in raise order.
    assert_eq!(delivered, raised);
}

#[test]
fn interrupt_injected_with_if_clear_is_refused_and_would_harm_the_guest() {
    let Some(kvm) = kvm_or_skip() else { return };
    let mut g = setup(&kvm, MAIN_HLT);
    // A present gate for 0xd1 (so a delivery cannot turn into a triple fault
    // that would look like a failed entry) and the "masked" flag set: if the
    // interrupt is delivered anyway, the handler reports it on port 0x22.
    let at = IRQ_STUBS + 16 * u64::from(IRQ_COUNT);
    g.mem
        .write_slice(&irq_stub(0xd1, at), GuestAddress(at))
        .unwrap();
    g.mem
        .write_slice(&idt_gate(at), GuestAddress(IDT + 16 * 0xd1))
        .unwrap();
    g.mem.write_slice(&[1], GuestAddress(MASKED_FLAG)).unwrap();
    let mut ev = VcpuEvents::default();
    ev.set_event(
        EventStatus::Injected,
        Event::ExternalInterrupt { vector: 0xd1 },
    )
    .unwrap();
    // RFLAGS = 0x2 (IF = 0): the edk2#91 state. The validator refuses it.
    let err = glue::set_vcpu_events_validated(&g.vcpu, &ev, &kvm_ctx(&g), &GuestContext::default())
        .unwrap_err();
    assert!(matches!(err, glue::KvmError::Unsafe(_)), "{err}");
    // KVM itself accepts it.
    glue::set_vcpu_events(&g.vcpu, &ev).unwrap();
    let (seen, _) = run(&mut g.vcpu);
    // On VMX the VM entry fails with "invalid guest state" (SDM 26.3.1.4,
    // KVM_EXIT_FAIL_ENTRY 0x80000021); a nested L0 may report that as a
    // shutdown. Backends that do not run the VMX entry checks (SVM, or a
    // software backend such as kvm_pvm) deliver the interrupt although the
    // guest has IF = 0, breaking its critical section. Either way the guest
    // never continues normally.
    let vmx = std::path::Path::new("/sys/module/kvm_intel").exists();
    println!("vmx backend: {vmx}; outcome: {seen:?}");
    match seen {
        Seen::FailEntry(0x8000_0021) => {}
        Seen::Shutdown if vmx => {}
        Seen::Out(0x22, 0xd1) if !vmx => {}
        other => panic!("unexpected outcome of an injection with IF = 0: {other:?}"),
    }
}

#[test]
fn pending_db_with_dr6_payload_reaches_the_handler() {
    let Some(kvm) = kvm_or_skip() else { return };
    let mut g = setup(&kvm, MAIN_HLT);
    if !g.caps.exception_payload.is_enabled() {
        println!("skipping: KVM_CAP_EXCEPTION_PAYLOAD not supported");
        return;
    }
    let old_dr6 = g.vcpu.get_debug_regs().unwrap().dr6;
    // B0 + BS, RTM (active high in the payload: clears DR6.RTM) and bit 12
    // (meaningful only in the pending-debug-exceptions encoding).
    let payload = 1 | DR6_BS | DR6_RTM | (1 << 12);
    let mut ev = VcpuEvents::default();
    ev.set_event(
        EventStatus::Pending,
        Event::HardwareException(HardwareException::debug(payload)),
    )
    .unwrap();
    glue::set_vcpu_events_validated(&g.vcpu, &ev, &kvm_ctx(&g), &GuestContext::default()).unwrap();
    let want = ExceptionPayload::dr6_after_delivery(old_dr6, payload);
    assert_eq!(want & 0xffff_ffff, 0xfffe_4ff1);
    assert_eq!(run(&mut g.vcpu).0, Seen::Out(0x14, want as u32));
    assert_eq!(run(&mut g.vcpu).0, Seen::Hlt);
}

/// KVM_SET_VCPU_EVENTS; the errno on failure.
fn try_set(vcpu: &VcpuFd, ev: &VcpuEvents) -> Result<(), i32> {
    glue::set_vcpu_events(vcpu, ev).map_err(|e| match e {
        glue::KvmError::SetVcpuEvents(e) => e.errno(),
        other => panic!("{other}"),
    })
}

#[test]
fn validator_rejects_match_kvm_einval() {
    let Some(kvm) = kvm_or_skip() else { return };
    const EINVAL: i32 = 22;
    // A VM with the event caps and one without.
    let vm = kvm.create_vm().unwrap();
    let caps = glue::enable_event_caps(&vm).unwrap();
    let ctx = caps.kvm_context();
    let vcpu = vm.create_vcpu(0).unwrap();
    let plain_vm = kvm.create_vm().unwrap();
    let plain_ctx = vcpu_events::KvmContext {
        smm_supported: caps.smm,
        ..Default::default()
    };
    let plain = plain_vm.create_vcpu(0).unwrap();
    let guest = GuestContext::default();

    let check = |vcpu: &VcpuFd, ctx: &vcpu_events::KvmContext, ev: &VcpuEvents, want: KvmReject| {
        let report = validate(ev, ctx, &guest);
        assert_eq!(report.kvm_rejects, vec![want], "{ev:?}");
        assert_eq!(try_set(vcpu, ev), Err(EINVAL), "{want:?}");
    };
    // Unknown flag (0x40, the unmerged NESTED_FLAG).
    let ev = VcpuEvents {
        flags: VcpuEventsFlags::from_bits_retain(0x40),
        ..Default::default()
    };
    check(&vcpu, &ctx, &ev, KvmReject::UnknownFlags(0x40));
    // Exception vector 2 (NMI) and 32.
    for nr in [2u8, 32] {
        let mut ev = VcpuEvents::default();
        ev.exception.injected = KvmBool::TRUE;
        ev.exception.nr = nr;
        check(&vcpu, &ctx, &ev, KvmReject::ExceptionVector(nr));
    }
    // VALID_PAYLOAD without the cap.
    let mut ev = VcpuEvents::default();
    ev.set_event(
        EventStatus::Pending,
        Event::HardwareException(HardwareException::page_fault(0, 0x1000)),
    )
    .unwrap();
    check(&plain, &plain_ctx, &ev, KvmReject::PayloadCapNotEnabled);
    // VALID_TRIPLE_FAULT without the cap: rejected *after* the rest was
    // written, as `partially_applied` says.
    let mut ev = VcpuEvents::default();
    ev.set_event(
        EventStatus::Injected,
        Event::HardwareException(HardwareException::general_protection(0x28)),
    )
    .unwrap();
    ev.set_event(EventStatus::Pending, Event::TripleFault)
        .unwrap();
    check(&plain, &plain_ctx, &ev, KvmReject::TripleFaultCapNotEnabled);
    assert!(KvmReject::TripleFaultCapNotEnabled.partially_applied());
    assert_eq!(
        glue::get_vcpu_events(&plain).unwrap().exception(),
        Some((
            EventStatus::Injected,
            HardwareException::general_protection(0x28)
        )),
        "the exception was stored although SET failed"
    );
    // The same events are accepted where the caps are on.
    if caps.triple_fault_event.is_enabled() {
        assert!(validate(&ev, &ctx, &guest).kvm_rejects.is_empty());
        assert_eq!(try_set(&vcpu, &ev), Ok(()));
    }
}

#[test]
fn validator_changes_match_what_kvm_keeps() {
    let Some(kvm) = kvm_or_skip() else { return };
    let guest = GuestContext::default();
    // Each case on a fresh vCPU: the events, the change the validator must
    // report, and a check on what KVM_GET_VCPU_EVENTS returns afterwards.
    type Check = fn(&VcpuEvents);
    let mut cases: Vec<(&str, VcpuEvents, KvmChange, Check)> = Vec::new();

    let mut ev = VcpuEvents::default();
    ev.exception.pending = KvmBool::TRUE;
    ev.exception.nr = 6;
    cases.push((
        "pending without VALID_PAYLOAD",
        ev,
        KvmChange::PendingIgnoredWithoutPayloadFlag,
        |got| assert_eq!(got.exception(), None),
    ));

    let mut ev = VcpuEvents::default();
    ev.set_exception(
        EventStatus::Pending,
        HardwareException::general_protection(0x10),
    )
    .unwrap();
    ev.exception.injected = KvmBool::TRUE;
    cases.push((
        "pending and injected",
        ev,
        KvmChange::PendingOverridesInjected,
        |got| {
            assert!(got.exception.pending.get() && !got.exception.injected.get());
        },
    ));

    let mut ev = VcpuEvents::default();
    ev.set_exception(
        EventStatus::Injected,
        HardwareException::new(14).with_error_code(2),
    )
    .unwrap();
    ev.flags.set(0x10, true);
    ev.exception.has_payload = KvmBool::TRUE;
    ev.exception.payload = 0xdead_0000;
    cases.push((
        "payload on an injected exception",
        ev,
        KvmChange::PayloadDroppedNotPending,
        |got| {
            assert!(got.exception.injected.get());
            assert!(!got.exception.has_payload.get());
        },
    ));

    let mut ev = VcpuEvents::default();
    ev.nmi.pending = 1;
    cases.push((
        "nmi.pending without VALID_NMI_PENDING",
        ev,
        KvmChange::NmiPendingIgnored(1),
        |got| assert_eq!(got.nmi_pending(), Some(0)),
    ));

    let mut ev = VcpuEvents::default();
    ev.flags.set(0x01, true);
    ev.nmi.pending = 3;
    cases.push((
        "three pending NMIs",
        ev,
        KvmChange::NmiPendingCapped {
            requested: 3,
            kept: 2,
        },
        |got| assert_eq!(got.nmi_pending(), Some(2)),
    ));

    let mut ev = VcpuEvents::default();
    ev.flags.set(0x01, true);
    ev.nmi.pending = 2;
    ev.nmi.masked = KvmBool::TRUE;
    cases.push((
        "two pending NMIs while masked",
        ev,
        KvmChange::NmiPendingCapped {
            requested: 2,
            kept: 1,
        },
        |got| assert_eq!(got.nmi_pending(), Some(1)),
    ));

    let mut ev = VcpuEvents::default();
    ev.interrupt.shadow = Shadow::MOV_SS;
    cases.push((
        "shadow without VALID_SHADOW",
        ev,
        KvmChange::ShadowIgnored,
        |got| assert_eq!(got.shadow(), Some(Shadow::NONE)),
    ));

    let ev = VcpuEvents {
        triple_fault_pending: KvmBool::TRUE,
        ..Default::default()
    };
    cases.push((
        "triple fault without VALID_TRIPLE_FAULT",
        ev,
        KvmChange::TripleFaultIgnored,
        |got| assert_ne!(got.triple_fault(), Some(true)),
    ));

    let mut ev = VcpuEvents::default();
    ev.smi.pending = KvmBool::TRUE;
    cases.push((
        "smi.pending without VALID_SMM",
        ev,
        KvmChange::SmiIgnored,
        |got| assert!(!got.smi.pending.get()),
    ));

    for (name, ev, change, check) in cases {
        let vm = kvm.create_vm().unwrap();
        let caps = glue::enable_event_caps(&vm).unwrap();
        if !caps.exception_payload.is_enabled() && ev.flags.contains(0x10) {
            println!("skipping {name}: KVM_CAP_EXCEPTION_PAYLOAD not supported");
            continue;
        }
        let vcpu = vm.create_vcpu(0).unwrap();
        let report = validate(&ev, &caps.kvm_context(), &guest);
        assert!(report.kvm_rejects.is_empty(), "{name}: {report:?}");
        assert!(
            report.kvm_changes.contains(&change),
            "{name}: {change:?} not in {:?}",
            report.kvm_changes
        );
        try_set(&vcpu, &ev).unwrap_or_else(|e| panic!("{name}: errno {e}"));
        check(&glue::get_vcpu_events(&vcpu).unwrap());
    }
}

#[test]
fn failed_kvm_interrupt_loses_nothing() {
    let Some(kvm) = kvm_or_skip() else { return };
    // With an in-kernel PIC, KVM_INTERRUPT fails with -ENXIO.
    let vm = kvm.create_vm().unwrap();
    vm.create_irq_chip().unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    let mut inj = Injector::new();
    inj.raise(0x20).unwrap();
    // Pretend the last exit said "ready, IF = 1".
    let run = vcpu.get_kvm_run();
    run.ready_for_interrupt_injection = 1;
    run.if_flag = 1;
    let err = glue::before_run(&mut inj, &mut vcpu).unwrap_err();
    match err {
        glue::KvmError::Interrupt { vector, source } => {
            assert_eq!(vector, 0x20);
            assert_eq!(source.errno(), 6, "ENXIO");
        }
        other => panic!("{other}"),
    }
    // Not committed: still queued, not counted as injected.
    assert_eq!(inj.pending().collect::<Vec<_>>(), vec![0x20]);
    assert_eq!(inj.stats().injected, 0);
    assert_eq!(inj.in_flight(), 0);
}

#[test]
fn a_second_kvm_interrupt_before_run_overwrites_the_first() {
    let Some(kvm) = kvm_or_skip() else { return };
    let mut g = setup(&kvm, MAIN_HLT);
    // Why the injector allows one KVM_INTERRUPT per KVM_RUN: KVM has one slot.
    glue::interrupt(&g.vcpu, 0x20).unwrap();
    glue::interrupt(&g.vcpu, 0x21).unwrap();
    assert_eq!(
        glue::get_vcpu_events(&g.vcpu).unwrap().interrupt(),
        Some(Event::ExternalInterrupt { vector: 0x21 }),
        "0x20 was lost"
    );
    // The injector never issues the second one.
    let mut inj = Injector::new();
    inj.raise(0x22).unwrap();
    inj.raise(0x23).unwrap();
    let run = g.vcpu.get_kvm_run();
    run.ready_for_interrupt_injection = 1;
    run.if_flag = 1;
    let d = glue::before_run(&mut inj, &mut g.vcpu).unwrap();
    assert_eq!(d.vector_to_inject(), Some(0x22));
    let d = glue::before_run(&mut inj, &mut g.vcpu).unwrap();
    assert_eq!(d, Decision::RequestWindow(WaitReason::SlotBusy));
    assert_eq!(
        glue::get_vcpu_events(&g.vcpu).unwrap().interrupt(),
        Some(Event::ExternalInterrupt { vector: 0x22 })
    );
}

/// The guest bytes above match their assembly comments: if GNU `as` is
/// installed, assemble the same source and compare.
#[test]
fn guest_code_matches_its_assembly() {
    let mut blocks = handlers::asm_blocks();
    blocks.extend_from_slice(&[
        ("db", DB_CODE, "mov rax, dr6\n out 0x14, eax\n hlt\n"),
        (
            "irq_common",
            IRQ_COMMON_CODE,
            "cmp byte ptr [0x8000], 0\n jne 1f\n out 0x21, al\n pop rax\n iretq\n\
             1: out 0x22, al\n pop rax\n iretq\n",
        ),
        (
            "main_masked_rounds",
            MAIN_MASKED_ROUNDS,
            "mov ecx, 4\n round: cli\n mov byte ptr [0x8000], 1\n out 0x30, al\n mov edx, 20000\n\
             1: dec edx\n jnz 1b\n out 0x30, al\n mov byte ptr [0x8000], 0\n sti\n out 0x31, al\n\
             mov edx, 20000\n 2: dec edx\n jnz 2b\n dec ecx\n jnz round\n out 0x3f, al\n\
             3: hlt\n jmp 3b\n",
        ),
    ]);
    common::asm::check_blocks("kvm", &blocks);
}

#[test]
fn reinject_decision_is_applied_through_vcpu_events() {
    let Some(kvm) = kvm_or_skip() else { return };
    let mut g = setup(&kvm, MAIN_HLT);
    let mut regs = g.vcpu.get_regs().unwrap();
    regs.rflags = 0x202;
    g.vcpu.set_regs(&regs).unwrap();
    // An external interrupt whose delivery a VM exit interrupted (IDT-vectoring
    // info 0x80000025, bit 12 set as hardware may leave it).
    let r = vcpu_events::IdtVectoring {
        info: vcpu_events::InterruptionInfo::from_bits_retain(0x8000_1025),
        ..Default::default()
    }
    .reinjection()
    .unwrap()
    .unwrap();
    let mut inj = Injector::new();
    inj.raise(0x26).unwrap();
    let state = vcpu_events::RunState {
        reinjection: Some(r),
        ..glue::run_state(&mut g.vcpu)
    };
    let d = inj.before_run(&state);
    assert!(
        matches!(
            d,
            Decision::Reinject {
                request_interrupt_window: true,
                ..
            }
        ),
        "{d:?}"
    );
    glue::apply(&mut g.vcpu, &d).unwrap();
    inj.commit(&d).unwrap();
    assert_eq!(g.vcpu.get_kvm_run().request_interrupt_window, 1);
    // The interrupted vector is delivered first; the queued one stays queued.
    assert_eq!(run(&mut g.vcpu).0, Seen::Out(0x21, 0x25));
    assert_eq!(inj.pending().collect::<Vec<_>>(), vec![0x26]);
}

#[test]
fn nmi_reinjection_clears_nmi_blocking() {
    let Some(kvm) = kvm_or_skip() else { return };
    let mut g = setup(&kvm, MAIN_HLT);
    // After an exit that interrupted an NMI's delivery, NMIs may read as
    // masked; re-injecting with the mask still set fails VM entry (G6).
    let mut ev = glue::get_vcpu_events(&g.vcpu).unwrap();
    ev.nmi.masked = KvmBool::TRUE;
    glue::set_vcpu_events(&g.vcpu, &ev).unwrap();
    let r = vcpu_events::IdtVectoring {
        info: vcpu_events::InterruptionInfo::from_bits_retain(0x8000_0202),
        ..Default::default()
    }
    .reinjection()
    .unwrap()
    .unwrap();
    assert!(r.clear_nmi_blocking);
    let inj = Injector::new();
    let d = inj.before_run(&vcpu_events::RunState {
        reinjection: Some(r),
        ..Default::default()
    });
    glue::apply(&mut g.vcpu, &d).unwrap();
    let got = glue::get_vcpu_events(&g.vcpu).unwrap();
    assert!(got.nmi.injected.get(), "{got:?}");
    assert!(!got.nmi.masked.get(), "{got:?}");
    assert_eq!(g.vcpu.get_kvm_run().request_interrupt_window, 0);
}
