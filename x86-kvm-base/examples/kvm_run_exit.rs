// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Reading what `KVM_RUN` left in `struct kvm_run` with plain kvm-ioctls and
//! [`x86_kvm_base::kvm_run::KvmRunExit`]:
//!
//! a real-mode guest does `mov al, 0x42; out 0x10, al; hlt`. After each `KVM_RUN` the
//! example takes the mmapped `kvm_run` from `VcpuFd::get_kvm_run()`, reads it with
//! `KvmRunExit::from_kvm_run` (no `unsafe` in this file for that), names the exit with
//! `exit_reason::upstream_exit_name`, decodes the `io` member of the exit union with
//! zerocopy and checks it against what kvm-ioctls decoded itself.
//!
//! ```text
//! cargo run -p x86-kvm-base --example kvm_run_exit
//! ```
//!
//! The only `unsafe` is kvm-ioctls' `set_user_memory_region`.

#[cfg(target_arch = "x86_64")]
mod guest {
    use std::error::Error;

    use kvm_bindings::{kvm_userspace_memory_region, KVM_EXIT_HLT, KVM_EXIT_IO, KVM_EXIT_IO_OUT};
    use kvm_ioctls::{Kvm, VcpuExit};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
    use x86_kvm_base::exit_reason::upstream_exit_name;
    use x86_kvm_base::kvm_run::KvmRunExit;
    use zerocopy::{FromBytes, Immutable, KnownLayout};

    const MEM_SIZE: usize = 0x1000;
    /// `mov al, 0x42; out 0x10, al; hlt`, loaded at guest physical 0.
    const GUEST: [u8; 5] = [0xb0, 0x42, 0xe6, 0x10, 0xf4];
    const PORT: u16 = 0x10;

    /// The `io` member of the `kvm_run` exit union (`include/uapi/linux/kvm.h`, struct
    /// kvm_run, `KVM_EXIT_IO`): the data itself is `data_offset` bytes from the start of
    /// `kvm_run`, outside the union (kvm-ioctls hands it over as `IoOut`'s slice).
    #[derive(Debug, FromBytes, KnownLayout, Immutable)]
    #[repr(C)]
    struct KvmRunIo {
        direction: u8,
        size: u8,
        port: u16,
        count: u32,
        data_offset: u64,
    }

    /// What kvm-ioctls decoded, kept past the `run()` borrow.
    enum Reported {
        Out(u16, Vec<u8>),
        Hlt,
    }

    pub fn main() -> Result<(), Box<dyn Error>> {
        let kvm = Kvm::new()?;
        let vm = kvm.create_vm()?;
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

        let mut outs = 0;
        loop {
            let reported = match vcpu.run()? {
                VcpuExit::IoOut(port, data) => Reported::Out(port, data.to_vec()),
                VcpuExit::Hlt => Reported::Hlt,
                other => return Err(format!("unexpected exit {other:?}").into()),
            };
            // The same exit, read from the mmapped kvm_run.
            let exit = KvmRunExit::from_kvm_run(vcpu.get_kvm_run());
            let name = upstream_exit_name(exit.reason()).unwrap_or("unknown");
            match reported {
                Reported::Out(port, data) => {
                    let (io, _) = exit.read_member::<KvmRunIo>()?;
                    println!(
                        "exit {} ({name}): direction {} size {} port {:#x} count {} data_offset {:#x}; kvm-ioctls: out {port:#x} {data:02x?}",
                        exit.reason(),
                        io.direction,
                        io.size,
                        io.port,
                        io.count,
                        io.data_offset,
                    );
                    if exit.reason() != KVM_EXIT_IO
                        || u32::from(io.direction) != KVM_EXIT_IO_OUT
                        || io.port != port
                        || io.port != PORT
                        || usize::from(io.size) * io.count as usize != data.len()
                        || data != [0x42]
                    {
                        return Err("the kvm_run bytes and kvm-ioctls disagree".into());
                    }
                    outs += 1;
                }
                Reported::Hlt => {
                    println!("exit {} ({name})", exit.reason());
                    if exit.reason() != KVM_EXIT_HLT || outs != 1 {
                        return Err(format!("halted after {outs} out(s)").into());
                    }
                    println!("guest halted after one `out {PORT:#x}`");
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    guest::main()
}

/// The guest is x86 machine code.
#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("kvm_run_exit runs an x86 guest: x86_64 only");
}
