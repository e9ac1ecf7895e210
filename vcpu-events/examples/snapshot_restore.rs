// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Snapshot a vCPU mid-injection, restore it into a brand-new VM, continue.
//!
//! ```text
//! cargo run -p vcpu-events --features kvm,serde --example snapshot_restore
//! ```
//!
//! A VM with a userspace irqchip and one 64-bit vCPU whose handler for
//! vectors 0x20..0x2f writes the vector to port 0x21. The VMM raises eight
//! vectors and runs the [`Injector`]. Right after the third KVM_INTERRUPT
//! (the vector is in KVM's slot, not yet delivered) it:
//!
//! 1. completes the last exit's I/O (`complete_pending_exit`), captures a
//!    [`VcpuSnapshot`] (events first, then regs and sregs, plus the injector's
//!    queue and counters) and writes it as JSON, as it would to a file;
//! 2. copies guest memory and destroys the VM;
//! 3. creates a new VM, enables the event caps *before* restoring, creates
//!    the vCPU, sets its CPUID, reads the JSON back (bounded, checked) and
//!    restores regs, sregs, events and the injector;
//! 4. keeps running: every vector is delivered exactly once, the one caught
//!    in KVM's slot included.

use std::error::Error;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vcpu_events::injector::Injector;
use vcpu_events::kvm::{self as glue, snapshot, VmEventCaps};
use vcpu_events::VcpuSnapshot;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

// The 64-bit guest set-up (memory, GDT, page tables, long-mode vCPU), shared with
// the KVM tests.
#[path = "../tests/common/long_mode.rs"]
mod long_mode;
use long_mode::{idt_gate, IDT, MEM_SIZE};

const MAIN: u64 = 0x10000;
const STUBS: u64 = 0x11200;
const COMMON: u64 = 0x11400;
const STACK: u64 = 0x80000;
const PORT_DELIVERED: u16 = 0x21;

/// main: halt forever (with IF = 1, set by the VMM).
const MAIN_CODE: &[u8] = &[
    0xf4, //       1: hlt
    0xeb, 0xfd, //    jmp 1b
];
/// The stubs push RAX and put the vector in AL.
const COMMON_CODE: &[u8] = &[
    0xe6, 0x21, // out 0x21, al
    0x58, //       pop rax
    0x48, 0xcf, // iretq
];

/// `push rax; mov al, vector; jmp COMMON`.
fn stub(vector: u8, at: u64) -> Vec<u8> {
    let rel = (COMMON as i64 - (at as i64 + 8)) as i32;
    let mut code = vec![0x50, 0xb0, vector, 0xe9];
    code.extend_from_slice(&rel.to_le_bytes());
    code
}

// Drop order: vCPU, VM, then the memory it maps.
struct Vm {
    vcpu: VcpuFd,
    _vm: VmFd,
    mem: GuestMemoryMmap,
    caps: VmEventCaps,
}

/// A VM with the event caps on (before any vCPU exists) and `mem` mapped.
fn new_vm(kvm: &Kvm, mem: GuestMemoryMmap) -> Result<Vm, Box<dyn Error>> {
    let vm = kvm.create_vm()?;
    let caps = glue::enable_event_caps(&vm)?;
    long_mode::map_memory(&vm, &mem)?;
    let vcpu = vm.create_vcpu(0)?;
    Ok(Vm {
        vcpu,
        _vm: vm,
        mem,
        caps,
    })
}

fn first_vm(kvm: &Kvm) -> Result<Vm, Box<dyn Error>> {
    let mem = long_mode::guest_memory()?;
    for i in 0..16u8 {
        let at = STUBS + 16 * u64::from(i);
        mem.write_slice(&stub(0x20 + i, at), GuestAddress(at))?;
        mem.write_slice(&idt_gate(at), GuestAddress(IDT + 16 * u64::from(0x20 + i)))?;
    }
    mem.write_slice(COMMON_CODE, GuestAddress(COMMON))?;
    mem.write_slice(MAIN_CODE, GuestAddress(MAIN))?;
    let vm = new_vm(kvm, mem)?;
    long_mode::set_long_mode(kvm, &vm.vcpu, MAIN, STACK)?;
    let mut regs = vm.vcpu.get_regs()?;
    regs.rflags = 0x202; // IF = 1
    vm.vcpu.set_regs(&regs)?;
    Ok(vm)
}

/// Snapshot, copy memory, destroy, re-create, restore.
fn move_to_new_vm(
    kvm: &Kvm,
    mut old: Vm,
    inj: &Injector,
) -> Result<(Vm, Injector), Box<dyn Error>> {
    // Finish the last exit's I/O first (KVM completes it on the next KVM_RUN).
    snapshot::complete_pending_exit(&mut old.vcpu)?;
    let json = snapshot::capture(&mut old.vcpu, Some(inj))?.to_json();
    let mut image = vec![0u8; MEM_SIZE];
    old.mem.read_slice(&mut image, GuestAddress(0))?;
    drop(old);
    println!("snapshot: {} bytes of JSON; old VM destroyed", json.len());

    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)])?;
    mem.write_slice(&image, GuestAddress(0))?;
    let mut vm = new_vm(kvm, mem)?;
    // KVM_SET_SREGS checks EFER.LME against the vCPU's CPUID: set it first.
    vm.vcpu
        .set_cpuid2(&kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)?)?;
    let snap = VcpuSnapshot::from_json(&json)?;
    let inj =
        snapshot::restore(&mut vm.vcpu, &vm.caps, &snap)?.ok_or("the snapshot has no injector")?;
    println!(
        "restored into a new VM: {:x?} in KVM's slot, {:x?} queued",
        snap.events.interrupt(),
        inj.pending().collect::<Vec<_>>()
    );
    Ok((vm, inj))
}

/// One KVM_RUN with the injector; returns the vector the guest reported, if any.
fn step(vm: &mut Vm, inj: &mut Injector) -> Result<Option<u8>, Box<dyn Error>> {
    let exit = vm.vcpu.run()?;
    let kind = glue::exit_kind(&exit);
    let delivered = match exit {
        VcpuExit::IoOut(PORT_DELIVERED, data) => Some(data[0]),
        VcpuExit::IoOut(..) | VcpuExit::Hlt | VcpuExit::IrqWindowOpen => None,
        other => return Err(format!("unexpected exit {other:?}").into()),
    };
    inj.after_exit(kind);
    if let Some(v) = delivered {
        inj.on_delivered(v)?;
    }
    Ok(delivered)
}

fn main() -> Result<(), Box<dyn Error>> {
    let kvm = match Kvm::new() {
        Ok(kvm) => kvm,
        Err(e) => {
            println!("skipping: /dev/kvm not available ({e})");
            return Ok(());
        }
    };
    let mut vm = first_vm(&kvm)?;
    let mut inj = Injector::new();
    let raised: Vec<u8> = (0x20..0x28).collect();
    for &v in &raised {
        inj.raise(v)?;
    }
    let mut delivered = Vec::new();
    let mut injections = 0;
    let mut moved = false;
    for _ in 0..200 {
        let decision = glue::before_run(&mut inj, &mut vm.vcpu)?;
        if decision.vector_to_inject().is_some() {
            injections += 1;
        }
        if injections == 3 && !moved {
            // Mid-injection: KVM_INTERRUPT done, KVM_RUN not yet.
            (vm, inj) = move_to_new_vm(&kvm, vm, &inj)?;
            moved = true;
            glue::before_run(&mut inj, &mut vm.vcpu)?;
        }
        delivered.extend(step(&mut vm, &mut inj)?);
        if delivered.len() == raised.len() && inj.is_empty() {
            break;
        }
    }
    let s = inj.stats();
    println!("delivered {delivered:x?}");
    println!(
        "requested {} injected {} delivered {} in flight {}",
        s.requested,
        s.injected,
        s.delivered,
        inj.in_flight()
    );
    if delivered != raised || inj.in_flight() != 0 || !moved {
        return Err("an interrupt was lost or delivered twice across the restore".into());
    }
    println!("every interrupt delivered exactly once across a VM boundary");
    Ok(())
}
