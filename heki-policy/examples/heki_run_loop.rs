// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Wiring the Heki exit handler into a plain kvm-ioctls run loop:
//!
//! 1. probe `/dev/kvm` for a Heki ABI revision ([`heki_policy::kvm::probe`]); only with
//!    the [`heki_policy::HekiSupported`] token are the caps enabled
//!    ([`heki_policy::kvm::enable_cap`]), so the collided cap numbers are never enabled
//!    on a kernel where they mean something else;
//! 2. in the run loop, an exit kvm-ioctls does not know (`VcpuExit::Unsupported(n)`) is
//!    decoded for the selected revision ([`heki_policy::kvm::decode_run`], no `unsafe`):
//!    a Heki exit goes to [`heki_policy::HekiExitHandler`], whose action (resume or shut
//!    down) the loop follows; anything else is the rest of the VMM's business.
//!
//! ```text
//! cargo run -p heki-policy --features kvm --example heki_run_loop
//! ```
//!
//! Upstream kernels have no Heki: the probe says why and the loop runs with no revision
//! selected (exits 39..=41 are then never read as Heki exits). The guest is
//! `out 0x10, al; hlt` in real mode; the only `unsafe` is kvm-ioctls'
//! `set_user_memory_region`.

use std::error::Error;
use std::time::Instant;

use heki_policy::kvm::{decode_run, enable_cap, probe};
use heki_policy::{
    DenialPolicy, ExitDecode, HekiAbi, HekiAction, HekiCap, HekiExitHandler, HekiExitReasons,
    HekiSupport,
};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

const MEM_SIZE: usize = 0x1000;
/// `out 0x10, al; hlt`, loaded at guest physical 0.
const GUEST: [u8; 3] = [0xe6, 0x10, 0xf4];

fn main() -> Result<(), Box<dyn Error>> {
    let kvm = Kvm::new()?;
    let vm = kvm.create_vm()?;

    // 1. Probe, and enable only with the proof.
    let abi = HekiAbi::RfcV3;
    let selected = match probe(&kvm, abi)? {
        HekiSupport::Supported(proof) => {
            for cap in [HekiCap::Configure, HekiCap::Denial] {
                enable_cap(&vm, &proof, cap, HekiExitReasons::VALID)?;
            }
            println!("Heki {abi:?}: enabled");
            Some(abi)
        }
        other => {
            println!("Heki {abi:?}: {other:?}; no revision selected");
            None
        }
    };
    let mut handler = HekiExitHandler::new(abi, DenialPolicy::Gp);

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
    let started = Instant::now();
    loop {
        match vcpu.run()? {
            VcpuExit::IoOut(port, data) => println!("guest: out {port:#x}, {data:?}"),
            VcpuExit::Hlt => {
                println!("guest halted; Heki stats: {:?}", handler.stats());
                return Ok(());
            }
            VcpuExit::Unsupported(reason) => match decode_run(selected, vcpu.get_kvm_run())? {
                ExitDecode::Heki(exit) => {
                    let decision = handler.handle(&exit, started.elapsed());
                    println!("Heki exit: {decision:?}");
                    if decision.action != HekiAction::Resume {
                        println!("shutting the VM down");
                        return Ok(());
                    }
                }
                _ => return Err(format!("unhandled exit {reason}").into()),
            },
            other => return Err(format!("unexpected exit {other:?}").into()),
        }
    }
}
