// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest layout and exception / IRQ handlers shared by `tests/kvm.rs` and
//! `tests/snapshot_kvm.rs`, over the set-up of [`super::long_mode`]. Each test file
//! adds its own main code, IRQ common handler and extra handlers (#DB, NMI).
//!
//! | GPA      | What |
//! |----------|------|
//! | 0x10000  | main code |
//! | 0x11000  | #GP handler, 0x11100 #PF handler |
//! | 0x11200  | IRQ stubs for 0x20..0x2f (16 bytes apart), 0x11400 IRQ common handler |
//! | 0x80000  | stack top |
//!
//! Ports: 0x10 #GP error code; 0x11/0x12/0x13 #PF CR2 low/high and error code.
//! [`run`] runs the vCPU once and says what the test saw ([`Seen`]).

use kvm_ioctls::{VcpuExit, VcpuFd};
use vcpu_events::injector::ExitKind;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::long_mode::{idt_gate, IDT};

/// Main code.
pub const MAIN: u64 = 0x10000;
/// #GP handler ([`GP_CODE`]).
pub const GP_HANDLER: u64 = 0x11000;
/// #PF handler ([`PF_CODE`]).
pub const PF_HANDLER: u64 = 0x11100;
/// One [`irq_stub`] per vector, 16 bytes apart.
pub const IRQ_STUBS: u64 = 0x11200;
/// The IRQ common handler the stubs jump to (each test file writes its own).
pub const IRQ_COMMON: u64 = 0x11400;
/// Stack top.
pub const STACK_TOP: u64 = 0x80000;
/// Vectors `FIRST_IRQ..FIRST_IRQ + IRQ_COUNT` have stubs.
pub const FIRST_IRQ: u8 = 0x20;
/// How many vectors have stubs.
pub const IRQ_COUNT: u8 = 16;

/// main: halt forever.
pub const MAIN_HLT: &[u8] = &[
    0xf4, //             1: hlt
    0xeb, 0xfd, //          jmp 1b
];

/// #GP: report the error code on port 0x10, halt forever.
pub const GP_CODE: &[u8] = &[
    0x58, //             pop rax            ; the error code
    0xe7, 0x10, //       out 0x10, eax
    0xf4, //          1: hlt
    0xeb, 0xfd, //       jmp 1b
];

/// #PF: report CR2 on ports 0x11 (low) / 0x12 (high) and the error code on 0x13,
/// halt forever.
pub const PF_CODE: &[u8] = &[
    0x0f, 0x20, 0xd0, //       mov rax, cr2
    0xe7, 0x11, //             out 0x11, eax      ; CR2[31:0]
    0x48, 0xc1, 0xe8, 0x20, // shr rax, 32
    0xe7, 0x12, //             out 0x12, eax      ; CR2[63:32]
    0x58, //                   pop rax            ; the error code
    0xe7, 0x13, //             out 0x13, eax
    0xf4, //                1: hlt
    0xeb, 0xfd, //             jmp 1b
];

/// One IRQ stub: `push rax; mov al, vector; jmp IRQ_COMMON` (the common handler
/// finds the vector in AL and pops RAX before its IRETQ).
pub fn irq_stub(vector: u8, at: u64) -> Vec<u8> {
    let next_ip = at + 8;
    let rel = (IRQ_COMMON as i64 - next_ip as i64) as i32;
    let mut code = vec![
        0x50, //         push rax
        0xb0, vector, // mov al, vector
        0xe9,   //         jmp rel32
    ];
    code.extend_from_slice(&rel.to_le_bytes());
    code
}

/// Writes `main` at [`MAIN`], the #GP and #PF handlers and their IDT gates, the
/// IRQ stubs and their gates, and `irq_common` at [`IRQ_COMMON`].
pub fn write_guest(mem: &GuestMemoryMmap, main: &[u8], irq_common: &[u8]) {
    let w = |bytes: &[u8], at: u64| mem.write_slice(bytes, GuestAddress(at)).unwrap();
    w(&idt_gate(GP_HANDLER), IDT + 16 * 13);
    w(&idt_gate(PF_HANDLER), IDT + 16 * 14);
    for i in 0..IRQ_COUNT {
        let at = IRQ_STUBS + 16 * u64::from(i);
        w(&irq_stub(FIRST_IRQ + i, at), at);
        w(&idt_gate(at), IDT + 16 * u64::from(FIRST_IRQ + i));
    }
    w(irq_common, IRQ_COMMON);
    w(GP_CODE, GP_HANDLER);
    w(PF_CODE, PF_HANDLER);
    w(main, MAIN);
}

/// The blocks above with their assembly, for `asm::check_blocks`.
pub fn asm_blocks() -> Vec<(&'static str, &'static [u8], &'static str)> {
    vec![
        ("main_hlt", MAIN_HLT, "1: hlt\njmp 1b\n"),
        ("gp", GP_CODE, "pop rax\nout 0x10, eax\n1: hlt\njmp 1b\n"),
        (
            "pf",
            PF_CODE,
            "mov rax, cr2\nout 0x11, eax\nshr rax, 32\nout 0x12, eax\npop rax\n\
             out 0x13, eax\n1: hlt\njmp 1b\n",
        ),
    ]
}

/// What one KVM_RUN showed the test.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// `out port, eax` (data zero-extended to 32 bits).
    Out(u16, u32),
    /// `hlt`.
    Hlt,
    /// KVM_EXIT_SHUTDOWN (a triple fault).
    Shutdown,
    /// KVM_EXIT_IRQ_WINDOW_OPEN.
    IrqWindowOpen,
    /// KVM_EXIT_FAIL_ENTRY with its hardware entry failure reason.
    FailEntry(u64),
    /// Anything else, or a KVM_RUN error.
    Other(String),
}

/// One KVM_RUN: what the test sees, and the exit kind the injector is told.
pub fn run(vcpu: &mut VcpuFd) -> (Seen, ExitKind) {
    match vcpu.run() {
        Ok(exit) => {
            let kind = vcpu_events::kvm::exit_kind(&exit);
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
