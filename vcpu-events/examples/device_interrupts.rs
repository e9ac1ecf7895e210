// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Interrupts raised by device threads on a vCPU, on plain kvm-ioctls.
//!
//! ```text
//! cargo run -p vcpu-events --example device_interrupts --features kvm
//! ```
//!
//! * A VM **without** an in-kernel irqchip (userspace irqchip: the VMM
//!   injects with KVM_INTERRUPT) and one vCPU in 64-bit mode. The guest loops:
//!   `cli`, a long stretch with interrupts masked, `sti`, a shorter stretch
//!   with interrupts enabled. Its handler for vectors 0x20..0x2f writes the
//!   vector to port 0x21, or to port 0x22 if it was interrupted inside the
//!   masked stretch (which must never happen).
//! * Device threads each hold a [`RaiseHandle`] and raise vectors in bursts.
//! * The vCPU thread runs [`run_with_kicks`]: the injector decides before
//!   every KVM_RUN (one KVM_INTERRUPT when the guest can take it, else an
//!   interrupt window), and a raise that finds the vCPU inside KVM_RUN
//!   without a window requested kicks it out (signal + `immediate_exit`).
//! * The main thread stops the devices, then stops the vCPU with
//!   [`RaiseHandle::kick`] once everything raised is delivered, and prints the
//!   accounting: requested = delivered + coalesced + refused + pending.

use std::error::Error;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vcpu_events::injector::{Injector, RaiseOutcome};
use vcpu_events::kvm::kick::{run_with_kicks, KickSignal, KickedRun};
use vcpu_events::raise::{Accounting, RaiseHandle, VcpuInterrupts};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

// The 64-bit guest set-up (memory, GDT, page tables, long-mode vCPU), shared with
// the KVM tests.
#[path = "../tests/common/long_mode.rs"]
mod long_mode;
use long_mode::{idt_gate, IDT};

/// The guest's "masked" flag: 1 while it runs with IF = 0.
pub const MASKED_FLAG: u64 = 0x8000;
/// The guest's main loop.
pub const MAIN: u64 = 0x10000;
/// One stub per vector, 16 bytes apart.
pub const STUBS: u64 = 0x11200;
/// Shared interrupt handler.
pub const COMMON: u64 = 0x11400;
/// Stack top.
pub const STACK: u64 = 0x80000;
/// First vector with a handler.
pub const FIRST_VECTOR: u8 = 0x20;
/// Number of vectors with a handler.
pub const VECTORS: u8 = 16;
/// Port the handler writes the vector to.
pub const PORT_DELIVERED: u16 = 0x21;
/// Port the handler writes the vector to when interrupted while masked.
pub const PORT_DELIVERED_MASKED: u16 = 0x22;

/// The shared handler (GNU `as --64`, Intel syntax); the stub pushed RAX
/// and put the vector in AL.
pub const COMMON_CODE: &[u8] = &[
    0x80, 0x3c, 0x25, 0x00, 0x80, 0x00, 0x00, 0x00, // cmp byte ptr [0x8000], 0
    0x75, 0x05, //                                   jne 1f
    0xe6, 0x21, //                                   out 0x21, al
    0x58, //                                         pop rax
    0x48, 0xcf, //                                   iretq
    0xe6, 0x22, //                               1:  out 0x22, al
    0x58, //                                         pop rax
    0x48, 0xcf, //                                   iretq
];

/// The main loop: 20,000 iterations with IF = 0, then 2,000 with IF = 1.
pub const MAIN_CODE: &[u8] = &[
    0xfa, //                                         round: cli
    0xc6, 0x04, 0x25, 0x00, 0x80, 0x00, 0x00, 0x01, //      mov byte ptr [0x8000], 1
    0xb9, 0x20, 0x4e, 0x00, 0x00, //                        mov ecx, 20000
    0xff, 0xc9, //                                   2:     dec ecx
    0x75, 0xfc, //                                          jnz 2b
    0xc6, 0x04, 0x25, 0x00, 0x80, 0x00, 0x00, 0x00, //      mov byte ptr [0x8000], 0
    0xfb, //                                                sti
    0xb9, 0xd0, 0x07, 0x00, 0x00, //                        mov ecx, 2000
    0xff, 0xc9, //                                   3:     dec ecx
    0x75, 0xfc, //                                          jnz 3b
    0xeb, 0xda, //                                          jmp round
];

/// `push rax; mov al, vector; jmp COMMON` at `at`.
pub fn stub(vector: u8, at: u64) -> [u8; 8] {
    let rel = (COMMON as i64 - (at as i64 + 8)) as i32;
    let r = rel.to_le_bytes();
    [0x50, 0xb0, vector, 0xe9, r[0], r[1], r[2], r[3]]
}

/// A VM with the guest loaded and its vCPU at `MAIN`.
pub struct Guest {
    /// Guest memory (kept alive with the VM).
    pub mem: GuestMemoryMmap,
    /// The VM (no in-kernel irqchip).
    pub vm: VmFd,
    /// vCPU 0.
    pub vcpu: VcpuFd,
}

fn write_guest(mem: &GuestMemoryMmap) -> Result<(), Box<dyn Error>> {
    let w = |bytes: &[u8], at: u64| mem.write_slice(bytes, GuestAddress(at));
    for i in 0..VECTORS {
        let at = STUBS + 16 * u64::from(i);
        w(&stub(FIRST_VECTOR + i, at), at)?;
        w(&idt_gate(at), IDT + 16 * u64::from(FIRST_VECTOR + i))?;
    }
    w(COMMON_CODE, COMMON)?;
    w(MAIN_CODE, MAIN)?;
    Ok(())
}

/// Builds the guest: a VM without an in-kernel irqchip, 64-bit long mode.
pub fn build_guest(kvm: &Kvm) -> Result<Guest, Box<dyn Error>> {
    let vm = kvm.create_vm()?;
    let mem = long_mode::guest_memory()?;
    write_guest(&mem)?;
    // The returned Guest keeps `mem` alive as long as the VM.
    long_mode::map_memory(&vm, &mem)?;
    let vcpu = vm.create_vcpu(0)?;
    long_mode::set_long_mode(kvm, &vcpu, MAIN, STACK)?;
    Ok(Guest { mem, vm, vcpu })
}

/// How hard the devices raise.
#[derive(Debug, Clone)]
pub struct Config {
    /// Device threads.
    pub devices: usize,
    /// How long they raise.
    pub duration: Duration,
    /// Raises per burst (each device cycles through the vectors).
    pub burst: u32,
    /// Pause between bursts.
    pub pause: Duration,
    /// The injector's bound on distinct queued vectors.
    pub capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            devices: 2,
            duration: Duration::from_millis(500),
            burst: 2,
            pause: Duration::from_millis(1),
            capacity: 16,
        }
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub struct Report {
    /// The vCPU's accounting at the end.
    pub accounting: Accounting,
    /// Raises that queued a vector, per vector (from the devices' outcomes).
    pub queued_per_vector: [u64; 256],
    /// Raises coalesced / refused as the devices saw them.
    pub coalesced: u64,
    /// See `coalesced`.
    pub refused: u64,
    /// Deliveries the guest reported, per vector (port 0x21 and 0x22).
    pub delivered_per_vector: [u64; 256],
    /// KVM_RUNs that returned -EINTR (kicks).
    pub interrupted: u64,
    /// KVM_RUNs skipped because a vector or a stop arrived meanwhile.
    pub skipped: u64,
    /// Guest exits handled.
    pub exits: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// A device thread: raises vectors in bursts until `stop`.
fn device(
    id: usize,
    handle: RaiseHandle,
    cfg: Config,
    stop: Arc<AtomicBool>,
) -> ([u64; 256], u64, u64) {
    let mut queued = [0u64; 256];
    let (mut coalesced, mut refused) = (0, 0);
    let mut n = id;
    while !stop.load(SeqCst) {
        for _ in 0..cfg.burst {
            let v = FIRST_VECTOR + (n % usize::from(VECTORS)) as u8;
            n += 3;
            match handle.raise(v) {
                Ok(RaiseOutcome::Queued { .. }) => queued[usize::from(v)] += 1,
                Ok(_) => coalesced += 1,
                Err(_) => refused += 1,
            }
        }
        thread::sleep(cfg.pause);
    }
    (queued, coalesced, refused)
}

/// The vCPU thread: the injector loop with kicks until `stop` is set and
/// nothing raised is pending.
fn vcpu_loop(
    mut vcpu: VcpuFd,
    mut interrupts: VcpuInterrupts,
    signal: KickSignal,
    stop: Arc<AtomicBool>,
) -> Result<([u64; 256], u64, u64, u64), String> {
    let mut delivered = [0u64; 256];
    let (mut interrupted, mut skipped, mut exits) = (0, 0, 0);
    let started = Instant::now();
    let r = run_with_kicks(&mut vcpu, &mut interrupts, signal, |kv| loop {
        let ints = kv.interrupts();
        if stop.load(SeqCst) && ints.accounting().pending() == 0 {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!("not drained after 60 s: {:?}", ints.accounting()));
        }
        match kv.run().map_err(|e| e.to_string())? {
            KickedRun::Exit(VcpuExit::IoOut(port, data)) => {
                exits += 1;
                let v = data[0];
                delivered[usize::from(v)] += 1;
                let r = match port {
                    PORT_DELIVERED => ints.on_delivered(v),
                    PORT_DELIVERED_MASKED => ints.on_delivered_while_masked(v),
                    _ => return Err(format!("unexpected port {port:#x}")),
                };
                r.map_err(|e| e.to_string())?;
            }
            KickedRun::Exit(VcpuExit::IrqWindowOpen) => exits += 1,
            KickedRun::Exit(other) => return Err(format!("unexpected exit {other:?}")),
            KickedRun::Interrupted => interrupted += 1,
            KickedRun::Skipped(_) => skipped += 1,
            _ => {}
        }
    });
    r.map_err(|e| e.to_string())??;
    Ok((delivered, interrupted, skipped, exits))
}

/// Runs the whole scenario.
pub fn run(cfg: &Config) -> Result<Report, Box<dyn Error>> {
    let kvm = Kvm::new()?;
    let guest = build_guest(&kvm)?;
    let signal = KickSignal::install(0)?;
    let interrupts = VcpuInterrupts::new(Injector::with_capacity(cfg.capacity)?);
    let handle = interrupts.handle();
    let started = Instant::now();
    let vcpu_stop = Arc::new(AtomicBool::new(false));
    let vcpu_thread = thread::spawn({
        let stop = vcpu_stop.clone();
        move || vcpu_loop(guest.vcpu, interrupts, signal, stop)
    });
    let device_stop = Arc::new(AtomicBool::new(false));
    let devices: Vec<_> = (0..cfg.devices)
        .map(|id| {
            let (h, c, s) = (handle.clone(), cfg.clone(), device_stop.clone());
            thread::spawn(move || device(id, h, c, s))
        })
        .collect();
    thread::sleep(cfg.duration);
    device_stop.store(true, SeqCst);
    let mut queued_per_vector = [0u64; 256];
    let (mut coalesced, mut refused) = (0, 0);
    for d in devices {
        let (q, c, r) = d.join().map_err(|_| "device thread panicked")?;
        for (t, n) in queued_per_vector.iter_mut().zip(q) {
            *t += n;
        }
        coalesced += c;
        refused += r;
    }
    // Stop the vCPU: it leaves KVM_RUN and exits once the queue is drained.
    vcpu_stop.store(true, SeqCst);
    handle.kick();
    let (delivered_per_vector, interrupted, skipped, exits) =
        vcpu_thread.join().map_err(|_| "vCPU thread panicked")??;
    drop(guest.mem);
    Ok(Report {
        accounting: handle.accounting(),
        queued_per_vector,
        coalesced,
        refused,
        delivered_per_vector,
        interrupted,
        skipped,
        exits,
        elapsed: started.elapsed(),
    })
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn Error>> {
    let cfg = Config::default();
    let r = run(&cfg)?;
    let a = &r.accounting;
    println!(
        "{} device threads for {:?}, bursts of {} every {:?}, queue bound {}",
        cfg.devices, cfg.duration, cfg.burst, cfg.pause, cfg.capacity
    );
    println!(
        "requested {} = delivered {} + coalesced {} + refused {} + pending {}: {}",
        a.requested,
        a.delivered,
        a.coalesced,
        a.refused,
        a.pending(),
        if a.is_balanced() {
            "balanced"
        } else {
            "NOT BALANCED"
        }
    );
    println!(
        "delivered while masked: {}; kicks sent: {} (failed {}); KVM_RUN interrupted: {}, skipped: {}; exits: {}",
        a.delivered_while_masked, a.kicks, a.kick_failures, r.interrupted, r.skipped, r.exits
    );
    let per_vector_ok = (0..256).all(|v| r.queued_per_vector[v] == r.delivered_per_vector[v]);
    println!(
        "per vector, queued == delivered: {per_vector_ok}; {:.0} deliveries/s over {:?}",
        a.delivered as f64 / r.elapsed.as_secs_f64(),
        r.elapsed
    );
    if !a.is_balanced() || a.delivered_while_masked != 0 || !per_vector_ok {
        return Err("accounting check failed".into());
    }
    Ok(())
}
