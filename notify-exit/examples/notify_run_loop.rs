// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A VMM's notify-exit wiring with plain kvm-ioctls:
//!
//! 1. before any vCPU exists, enable `KVM_CAP_X86_NOTIFY_VMEXIT` (QEMU's
//!    `notify-vmexit=run,notify-window=0`) through [`notify_exit::kvm::PreVcpuVm`]; the
//!    triple-fault event the `run` policy needs is enabled by its owner, vcpu-events
//!    (`vcpu_events::kvm::enable_event_caps`), and its outcome handed to the policy;
//! 2. in the run loop, turn kvm-ioctls' `VcpuExit::Unsupported(37)` (`KVM_EXIT_NOTIFY`,
//!    which kvm-ioctls 0.25 does not decode) into a decision with
//!    [`notify_exit::exit::from_kvm_run`] and a [`notify_exit::NotifyHandler`]: no
//!    `unsafe` is needed to read the `kvm_run` union.
//!
//! ```text
//! cargo run -p notify-exit --features kvm --example notify_run_loop
//! ```
//!
//! The guest is two real-mode instructions (`out 0x10, al; hlt`). A CPU without the
//! Notify VM exit (before Sapphire Rapids, or nested) reports the cap as unsupported and
//! the loop simply never sees exit 37. The only `unsafe` is kvm-ioctls'
//! `set_user_memory_region`.

use std::error::Error;

use kvm_bindings::{kvm_userspace_memory_region, KVM_EXIT_NOTIFY};
use kvm_ioctls::{Kvm, VcpuExit};
use notify_exit::kvm::{CapOutcome, PreVcpuVm, Requirement};
use notify_exit::{NotifyAction, NotifyConfig, NotifyHandler, NotifyVmexitMode};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const MEM_SIZE: usize = 0x1000;
/// `out 0x10, al; hlt`, loaded at guest physical 0.
const GUEST: [u8; 3] = [0xe6, 0x10, 0xf4];

fn main() -> Result<(), Box<dyn Error>> {
    let kvm = Kvm::new()?;

    // 1. The cap goes on before any vCPU (KVM refuses it afterwards).
    let mut pre = PreVcpuVm::create(&kvm)?;
    let config = NotifyConfig::new(NotifyVmexitMode::Run, 0);
    let notify = pre.enable_notify_vmexit(&config, Requirement::Optional)?;
    let (vm, setup) = pre.finish();
    // The triple fault `run` mode synthesizes for an invalid context needs
    // KVM_CAP_X86_TRIPLE_FAULT_EVENT, which vcpu-events owns (it is about
    // KVM_SET_VCPU_EVENTS); without it the policy stops the VM instead.
    let triple = if setup.needs_triple_fault_event() {
        vcpu_events::kvm::enable_event_caps(&vm)?.triple_fault_event
    } else {
        CapOutcome::NotRequested
    };
    println!("KVM_CAP_X86_NOTIFY_VMEXIT: {notify:?}; KVM_CAP_X86_TRIPLE_FAULT_EVENT: {triple:?}");
    let mut handler = NotifyHandler::new(0, setup.policy(triple));

    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)])?;
    mem.write_slice(&GUEST, GuestAddress(0))?;
    let host = mem.get_host_address(GuestAddress(0))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE as u64,
        userspace_addr: host as u64,
        flags: 0,
    };
    // SAFETY: `host` is the start of a MEM_SIZE mapping owned by `mem`, which lives
    // until the end of `main`, after the VM and vCPU are dropped.
    unsafe { vm.set_user_memory_region(region) }?;

    let mut vcpu = vm.create_vcpu(0)?;
    let mut sregs = vcpu.get_sregs()?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)?;
    let mut regs = vcpu.get_regs()?;
    regs.rip = 0;
    regs.rflags = 2;
    vcpu.set_regs(&regs)?;

    // 2. The run loop.
    let started = std::time::Instant::now();
    loop {
        match vcpu.run()? {
            VcpuExit::IoOut(port, data) => println!("guest: out {port:#x}, {data:?}"),
            VcpuExit::Hlt => {
                println!("guest halted; notify exits: {:?}", handler.stats());
                return Ok(());
            }
            VcpuExit::Unsupported(reason) if reason == KVM_EXIT_NOTIFY => {
                let notify = notify_exit::exit::from_kvm_run(vcpu.get_kvm_run())?;
                // The time since the VMM's origin: the same value goes to every crate.
                let decision = handler.handle(notify, started.elapsed());
                match decision.action {
                    NotifyAction::Resume => continue,
                    NotifyAction::SynthesizeTripleFault => {
                        // A VMM sets `triple_fault.pending` with KVM_SET_VCPU_EVENTS
                        // (vcpu-events' `Event::TripleFault`); the next run shuts down.
                        println!("notify: the VM context is invalid, synthesize a triple fault");
                        return Ok(());
                    }
                    other => {
                        println!("notify: stop the VM ({other:?})");
                        return Ok(());
                    }
                }
            }
            other => return Err(format!("unexpected exit {other:?}").into()),
        }
    }
}
