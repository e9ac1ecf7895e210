// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The timer guest's VM: memory with the xAPIC page mapped (uncached) in the
//! guest's page tables, N vCPUs in 64-bit mode, and with `--irqchip kernel`
//! KVM's in-kernel irqchip (KVM_CREATE_IRQCHIP after the memory slot and before
//! any vCPU, api.rst 4.24).
//! With `--snapshot-every` the VM's event caps are enabled before any vCPU
//! (vcpu-events' `enable_event_caps`), and every restore builds its fresh VM
//! here too.

use kvm_bindings::{kvm_mp_state, KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{Irqchip, TimerConfig};
use crate::guests::{Guest, APIC_BASE, GUEST_LOAD_ADDR};
use crate::vmm::{
    ioctl, map_guest_memory, setup_long_mode, write_boot_structures, VmmError, PDPT_ADDR, STACK_TOP,
};

/// Page directory for guest-physical 3..4 GiB (holds the xAPIC page).
const PD_HIGH_ADDR: u64 = 0xc000;
/// Guest memory: 2 MiB.
const MEM_MIB: u32 = 2;
/// PDE bits: present, writable, 2 MiB page, PWT | PCD (uncached, as MMIO wants).
const PDE_MMIO: u64 = 0x83 | 0x18;

/// The VM. Field order is drop order: vCPUs and the VM before the memory.
pub struct TimerVm {
    /// vCPU i has APIC ID i.
    pub vcpus: Vec<VcpuFd>,
    /// The VM (KVM_SIGNAL_MSI goes here with `--irqchip kernel`).
    pub vm: VmFd,
    /// The event caps vcpu-events enabled (`--snapshot-every` only).
    pub event_caps: Option<vcpu_events::kvm::VmEventCaps>,
    _kvm: Kvm,
    /// Guest memory, private: memslot 0 points into it, so nothing outside may
    /// replace it while the VM lives (read it through [`TimerVm::mem`]).
    mem: GuestMemoryMmap,
}

impl TimerVm {
    /// Guest memory (snapshots copy it), read-only: memslot 0 points into it.
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }
}

fn write(mem: &GuestMemoryMmap, addr: u64, v: u64) -> Result<(), VmmError> {
    mem.write_obj(v, GuestAddress(addr))
        .map_err(|source| VmmError::WriteMemory { addr, source })
}

/// Builds the VM for `cfg` (guest args: rdi = masked iterations, rsi = open).
pub fn build(cfg: &TimerConfig) -> Result<TimerVm, VmmError> {
    let kvm = Kvm::new().map_err(VmmError::OpenKvm)?;
    let vm = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
    // Memory first, then the irqchip (Firecracker's builder does the same; api.rst
    // only needs KVM_CREATE_IRQCHIP before the vCPUs): on this project's `kvm_pvm`
    // host, KVM_SET_USER_MEMORY_REGION took 6-9 ms once the VM had an irqchip and
    // 0.1 ms before it, and every snapshot of `--irqchip kernel` builds a VM.
    let mem = map_guest_memory(&vm, MEM_MIB)?;
    if cfg.irqchip == Irqchip::Kernel {
        vm.create_irq_chip().map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
    }
    let event_caps = match cfg.snapshot_every {
        Some(_) => Some(vcpu_events::kvm::enable_event_caps(&vm).map_err(VmmError::EventCaps)?),
        None => None,
    };
    write_boot_structures(&mem, Guest::Timer.image())?;
    // Map 3..4 GiB too, so the guest reaches the xAPIC page at 0xfee00000.
    write(&mem, PDPT_ADDR + 8 * (APIC_BASE >> 30), PD_HIGH_ADDR | 0x3)?;
    let pde = PD_HIGH_ADDR + 8 * ((APIC_BASE >> 21) & 0x1ff);
    write(&mem, pde, (APIC_BASE & !((1 << 21) - 1)) | PDE_MMIO)?;

    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
    let mut vcpus = Vec::with_capacity(usize::from(cfg.vcpus));
    for id in 0..u64::from(cfg.vcpus) {
        let vcpu = vm.create_vcpu(id).map_err(ioctl("KVM_CREATE_VCPU"))?;
        vcpu.set_cpuid2(&cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
        setup_long_mode(&vcpu)?;
        let mut regs = vcpu.get_regs().map_err(ioctl("KVM_GET_REGS"))?;
        regs.rip = GUEST_LOAD_ADDR;
        regs.rsp = STACK_TOP - id * 0x1000;
        regs.rflags = 2;
        regs.rdi = cfg.masked_iterations.max(1);
        regs.rsi = cfg.open_iterations.max(1);
        vcpu.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))?;
        if cfg.irqchip == Irqchip::Kernel && id > 0 {
            // With an in-kernel LAPIC, APs start waiting for INIT/SIPI
            // (KVM_MP_STATE_UNINITIALIZED, api.rst 4.38): start them directly.
            let runnable = kvm_mp_state {
                mp_state: KVM_MP_STATE_RUNNABLE,
            };
            vcpu.set_mp_state(runnable)
                .map_err(ioctl("KVM_SET_MP_STATE"))?;
        }
        vcpus.push(vcpu);
    }
    Ok(TimerVm {
        vcpus,
        vm,
        event_caps,
        _kvm: kvm,
        mem,
    })
}
