// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Tests on a real /dev/kvm with a tiny 64-bit long-mode guest.
//!
//! The guest's code is written below as bytes with one comment per
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
//! | 0x11000  | #GP handler, 0x11100 #PF handler, 0x11200 IRQ stubs, 0x11400 IRQ common |
//! | 0x80000  | stack top |
//!
//! Ports: 0x10 #GP error code; 0x11/0x12/0x13 #PF CR2 low/high and error
//! code; 0x21 "vector delivered while unmasked"; 0x22 "vector delivered while
//! masked" (a failure); 0x30 tick while masked; 0x31 tick after STI; 0x3f done.

#![cfg(feature = "kvm")]

use kvm_bindings::{kvm_segment, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vcpu_events::injector::{Decision, ExitKind, Injector, RaiseOutcome};
use vcpu_events::kvm::{self as glue, VmEventCaps};
use vcpu_events::validate::GuestContext;
use vcpu_events::vcpu_events::{KvmBool, Shadow, VcpuEvents};
use vcpu_events::{Event, EventStatus, HardwareException};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const MEM_SIZE: usize = 0x20_0000;
const GDT: u64 = 0x1000;
const IDT: u64 = 0x2000;
const PML4: u64 = 0x3000;
const MAIN: u64 = 0x10000;
const GP_HANDLER: u64 = 0x11000;
const PF_HANDLER: u64 = 0x11100;
const IRQ_STUBS: u64 = 0x11200;
const IRQ_COMMON: u64 = 0x11400;
const STACK_TOP: u64 = 0x80000;
/// Vectors 0x20..0x30 have stubs.
const FIRST_IRQ: u8 = 0x20;
const IRQ_COUNT: u8 = 16;

/// main for the exception tests: just halt.
const MAIN_HLT: &[u8] = &[
    0xf4, //             hlt
    0xeb, 0xfd, //       jmp hlt
];

const GP_CODE: &[u8] = &[
    0x58, //             pop rax            ; the error code
    0xe7, 0x10, //       out 0x10, eax
    0xf4, //             hlt
];

const PF_CODE: &[u8] = &[
    0x0f, 0x20, 0xd0, //       mov rax, cr2
    0xe7, 0x11, //             out 0x11, eax      ; CR2[31:0]
    0x48, 0xc1, 0xe8, 0x20, // shr rax, 32
    0xe7, 0x12, //             out 0x12, eax      ; CR2[63:32]
    0x58, //                   pop rax            ; the error code
    0xe7, 0x13, //             out 0x13, eax
    0xf4, //                   hlt
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

/// One IRQ stub per vector: `push rax; mov al, vector; jmp IRQ_COMMON`.
fn irq_stub(vector: u8, at: u64) -> Vec<u8> {
    let next_ip = at + 8;
    let rel = (IRQ_COMMON as i64 - next_ip as i64) as i32;
    let mut code = vec![
        0x50, //       push rax
        0xb0, vector, // mov al, vector
        0xe9,   //       jmp rel32
    ];
    code.extend_from_slice(&rel.to_le_bytes());
    code
}

/// 64-bit interrupt gate (type 0xE, present, DPL 0) to `handler` via CS 0x08.
fn idt_gate(handler: u64) -> [u8; 16] {
    let low = (handler & 0xffff) | (0x08 << 16) | (0x8e << 40) | (((handler >> 16) & 0xffff) << 48);
    let high = handler >> 32;
    let mut g = [0u8; 16];
    g[..8].copy_from_slice(&low.to_le_bytes());
    g[8..].copy_from_slice(&high.to_le_bytes());
    g
}

fn kvm_or_skip() -> Option<Kvm> {
    match Kvm::new() {
        Ok(k) => Some(k),
        Err(_) if std::env::var("VMM_TEST_REQUIRE_KVM").as_deref() == Ok("1") => {
            panic!("skipping: /dev/kvm not available")
        }
        Err(_) => {
            println!("skipping: /dev/kvm not available");
            None
        }
    }
}

struct Guest {
    _mem: GuestMemoryMmap,
    _vm: VmFd,
    vcpu: VcpuFd,
    caps: VmEventCaps,
}

fn setup(kvm: &Kvm, main: &[u8]) -> Guest {
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    let caps = glue::enable_event_caps(&vm).expect("enable caps");
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let w = |bytes: &[u8], at: u64| mem.write_slice(bytes, GuestAddress(at)).unwrap();
    // GDT: null, 64-bit code, flat data.
    for (i, d) in [0u64, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff]
        .iter()
        .enumerate()
    {
        w(&d.to_le_bytes(), GDT + 8 * i as u64);
    }
    // Page tables: PML4[0] -> PDPT, PDPT[0] -> PD, PD[0] = 2 MiB page at 0.
    w(&((PML4 + 0x1000) | 3).to_le_bytes(), PML4);
    w(&((PML4 + 0x2000) | 3).to_le_bytes(), PML4 + 0x1000);
    w(&0x83u64.to_le_bytes(), PML4 + 0x2000);
    // IDT.
    w(&idt_gate(GP_HANDLER), IDT + 16 * 13);
    w(&idt_gate(PF_HANDLER), IDT + 16 * 14);
    for i in 0..IRQ_COUNT {
        let at = IRQ_STUBS + 16 * u64::from(i);
        w(&irq_stub(FIRST_IRQ + i, at), at);
        w(&idt_gate(at), IDT + 16 * u64::from(FIRST_IRQ + i));
    }
    w(IRQ_COMMON_CODE, IRQ_COMMON);
    w(GP_CODE, GP_HANDLER);
    w(PF_CODE, PF_HANDLER);
    w(main, MAIN);
    // The "masked" flag at 0x8000 starts at 0 (fresh anonymous memory).

    let host = mem.get_host_address(GuestAddress(0)).unwrap();
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE as u64,
        userspace_addr: host as u64,
        flags: 0,
    };
    // SAFETY: `host` is the start of a MEM_SIZE mapping owned by `mem`, which
    // the returned Guest keeps alive as long as the VM.
    unsafe { vm.set_user_memory_region(region) }.expect("KVM_SET_USER_MEMORY_REGION");

    let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    vcpu.set_cpuid2(&cpuid).unwrap();
    let mut sregs = vcpu.get_sregs().unwrap();
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x08,
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        ..Default::default()
    };
    let data = kvm_segment {
        selector: 0x10,
        type_: 0x3,
        db: 1,
        l: 0,
        ..code
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt.base = GDT;
    sregs.gdt.limit = 23;
    sregs.idt.base = IDT;
    sregs.idt.limit = 0xfff;
    sregs.cr3 = PML4;
    sregs.cr4 = 1 << 5; // PAE
    sregs.cr0 = 0x8000_0031; // PG | NE | ET | PE
    sregs.efer = 0x500; // LMA | LME
    vcpu.set_sregs(&sregs).unwrap();
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = MAIN;
    regs.rsp = STACK_TOP;
    regs.rflags = 2;
    vcpu.set_regs(&regs).unwrap();
    Guest {
        _mem: mem,
        _vm: vm,
        vcpu,
        caps,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Out(u16, u32),
    Hlt,
    Shutdown,
    IrqWindowOpen,
    FailEntry(u64),
    Other(String),
}

fn run(vcpu: &mut VcpuFd) -> (Seen, ExitKind) {
    match vcpu.run() {
        Ok(exit) => {
            let kind = glue::exit_kind(&exit);
            let seen = match exit {
                VcpuExit::IoOut(port, data) => {
                    let mut v = [0u8; 4];
                    let n = data.len().min(4);
                    v[..n].copy_from_slice(&data[..n]);
                    Seen::Out(port, u32::from_le_bytes(v))
                }
                VcpuExit::Hlt => Seen::Hlt,
                VcpuExit::Shutdown => Seen::Shutdown,
                VcpuExit::IrqWindowOpen => Seen::IrqWindowOpen,
                VcpuExit::FailEntry(reason, _) => Seen::FailEntry(reason),
                other => Seen::Other(format!("{other:?}")),
            };
            (seen, kind)
        }
        Err(e) => (Seen::Other(format!("KVM_RUN error {e}")), ExitKind::Other),
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
fn interrupt_injected_with_if_clear_fails_entry_as_the_validator_predicts() {
    let Some(kvm) = kvm_or_skip() else { return };
    let mut g = setup(&kvm, MAIN_HLT);
    let mut ev = VcpuEvents::default();
    ev.set_event(
        EventStatus::Injected,
        Event::ExternalInterrupt { vector: 0xd1 },
    )
    .unwrap();
    // RFLAGS = 0x2 (IF = 0): the edk2#91 state.
    let err = glue::set_vcpu_events_validated(&g.vcpu, &ev, &kvm_ctx(&g), &GuestContext::default())
        .unwrap_err();
    assert!(matches!(err, glue::KvmError::Unsafe(_)), "{err}");
    // KVM itself accepts it; VM entry then fails with "invalid guest state"
    // (KVM_EXIT_FAIL_ENTRY 0x80000021 on bare metal; under nested KVM the
    // L0 hypervisor may turn the failed entry into a shutdown). Either way the
    // VM is dead and the interrupt never reaches the guest (if it did, the
    // missing IDT gate 0xd1 would raise #GP and port 0x10 would report it).
    glue::set_vcpu_events(&g.vcpu, &ev).unwrap();
    let (seen, _) = run(&mut g.vcpu);
    assert!(
        matches!(seen, Seen::FailEntry(0x8000_0021) | Seen::Shutdown),
        "{seen:?}"
    );
}

/// The guest bytes above match their assembly comments: if GNU `as` is
/// installed, assemble the same source and compare.
#[test]
fn guest_code_matches_its_assembly() {
    let blocks: &[(&str, &[u8], &str)] = &[
        ("main_hlt", MAIN_HLT, "1: hlt\n jmp 1b\n"),
        ("gp", GP_CODE, "pop rax\n out 0x10, eax\n hlt\n"),
        (
            "pf",
            PF_CODE,
            "mov rax, cr2\n out 0x11, eax\n shr rax, 32\n out 0x12, eax\n pop rax\n out 0x13, eax\n hlt\n",
        ),
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
    ];
    let dir = std::env::temp_dir().join(format!("vcpu-events-asm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes, src) in blocks {
        let s = dir.join(format!("{name}.s"));
        let o = dir.join(format!("{name}.o"));
        let b = dir.join(format!("{name}.bin"));
        std::fs::write(&s, format!(".intel_syntax noprefix\n.code64\n{src}")).unwrap();
        let Ok(st) = std::process::Command::new("as")
            .arg("--64")
            .arg("-o")
            .arg(&o)
            .arg(&s)
            .status()
        else {
            println!("skipping: GNU as not available");
            return;
        };
        assert!(st.success(), "as failed on {name}");
        let st = std::process::Command::new("objcopy")
            .args(["-O", "binary", "-j", ".text"])
            .arg(&o)
            .arg(&b)
            .status();
        let Ok(st) = st else {
            println!("skipping: objcopy not available");
            return;
        };
        assert!(st.success());
        assert_eq!(std::fs::read(&b).unwrap(), *bytes, "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
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
