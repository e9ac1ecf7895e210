// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The 64-bit guest set-up shared by the KVM tests (`tests/kvm.rs`,
//! `tests/raise_kvm.rs` through the example) and the `device_interrupts` example:
//! 2 MiB of guest memory identity-mapped by one 2 MiB page, a flat GDT, an IDT
//! base, and a vCPU in long mode (SDM Vol. 3A 10.8.5 "Initializing IA-32e Mode").
//! Each user writes its own code, handlers and IDT gates ([`idt_gate`]).
//!
//! | address  | contents |
//! |----------|----------|
//! | 0x1000   | GDT: null, 64-bit code (0x08), data (0x10) |
//! | 0x2000   | IDT: 256 interrupt gates |
//! | 0x3000   | PML4 -> 0x4000 PDPT -> 0x5000 PD (2 MiB page at 0) |

use std::error::Error;

use kvm_bindings::{kvm_segment, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Guest memory: 2 MiB, identity-mapped by one 2 MiB page.
pub const MEM_SIZE: usize = 0x20_0000;
/// GDT: null, 64-bit code (0x08), data (0x10).
pub const GDT: u64 = 0x1000;
/// IDT: 256 interrupt gates.
pub const IDT: u64 = 0x2000;
/// PML4 -> PDPT (0x4000) -> PD (0x5000).
pub const PML4: u64 = 0x3000;

/// A 64-bit interrupt gate (type 0xE, present, DPL 0) to `handler` via CS 0x08
/// (SDM Vol. 3A 7.14.1 "64-Bit Mode IDT").
pub fn idt_gate(handler: u64) -> [u8; 16] {
    let low = (handler & 0xffff) | (0x08 << 16) | (0x8e << 40) | (((handler >> 16) & 0xffff) << 48);
    let mut g = [0u8; 16];
    g[..8].copy_from_slice(&low.to_le_bytes());
    g[8..].copy_from_slice(&(handler >> 32).to_le_bytes());
    g
}

/// [`MEM_SIZE`] bytes of guest memory with the GDT and the page tables written.
pub fn guest_memory() -> Result<GuestMemoryMmap, Box<dyn Error>> {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)])?;
    let w = |bytes: &[u8], at: u64| mem.write_slice(bytes, GuestAddress(at));
    // GDT: null, 64-bit code, flat data.
    for (i, d) in [0u64, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff]
        .iter()
        .enumerate()
    {
        w(&d.to_le_bytes(), GDT + 8 * i as u64)?;
    }
    // Page tables: PML4[0] -> PDPT, PDPT[0] -> PD, PD[0] = 2 MiB page at 0.
    w(&((PML4 + 0x1000) | 3).to_le_bytes(), PML4)?;
    w(&((PML4 + 0x2000) | 3).to_le_bytes(), PML4 + 0x1000)?;
    w(&0x83u64.to_le_bytes(), PML4 + 0x2000)?;
    Ok(mem)
}

/// Maps `mem` as memory slot 0 of `vm`. The caller keeps `mem` alive as long as
/// `vm` (both go into one guest struct).
pub fn map_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), Box<dyn Error>> {
    let host = mem.get_host_address(GuestAddress(0))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE as u64,
        userspace_addr: host as u64,
        flags: 0,
    };
    // SAFETY: `host` is the start of a MEM_SIZE mapping owned by `mem`, which the
    // caller keeps alive as long as the VM.
    unsafe { vm.set_user_memory_region(region) }?;
    Ok(())
}

/// Puts `vcpu` in 64-bit mode with the host's supported CPUID, the flat
/// segments of the GDT, the IDT, paging through [`PML4`], and RIP / RSP as given
/// (RFLAGS = 2: IF = 0).
pub fn set_long_mode(kvm: &Kvm, vcpu: &VcpuFd, rip: u64, rsp: u64) -> Result<(), Box<dyn Error>> {
    vcpu.set_cpuid2(&kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)?)?;
    let mut sregs = vcpu.get_sregs()?;
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x08,
        type_: 0xb,
        present: 1,
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
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.gdt.base = GDT;
    sregs.gdt.limit = 23;
    sregs.idt.base = IDT;
    sregs.idt.limit = 0xfff;
    sregs.cr3 = PML4;
    sregs.cr4 = 1 << 5; // PAE
    sregs.cr0 = 0x8000_0031; // PG | NE | ET | PE
    sregs.efer = 0x500; // LMA | LME
    vcpu.set_sregs(&sregs)?;
    let mut regs = vcpu.get_regs()?;
    regs.rip = rip;
    regs.rsp = rsp;
    regs.rflags = 2;
    vcpu.set_regs(&regs)?;
    Ok(())
}
