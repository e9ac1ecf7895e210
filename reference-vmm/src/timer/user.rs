// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `--irqchip user`: the timer thread raises through vcpu-events'
//! [`RaiseHandle`](vcpu_events::raise::RaiseHandle) and kick; each vCPU
//! thread runs [`run_with_kicks`], reports deliveries to its
//! [`VcpuInterrupts`], and answers the guest's xAPIC MMIO with [`XApic`].
//! With `--snapshot-every` it leaves `run_with_kicks` at each pause and goes
//! on in the fresh vCPU ([`super::snapshot`]).

use std::sync::atomic::Ordering::SeqCst;
use std::time::Instant;

use kvm_ioctls::{VcpuExit, VcpuFd};
use vcpu_events::kvm::kick::{run_with_kicks, KickSignal, KickedRun};
use vcpu_events::raise::VcpuInterrupts;

use super::snapshot::{pause, Leave};
use super::xapic::XApic;
use super::{TimerError, VcpuRun, VcpuThread};
use crate::guests::{PORT_STATUS, PORT_TIMER_ACK, PORT_TIMER_ACK_MASKED, PORT_TIMER_DONE};

/// Offset of the kick signal from SIGRTMIN (the run watchdog uses +1).
pub const KICK_SIGNAL_OFFSET: i32 = 2;

/// Everything one vCPU thread needs.
pub struct UserVcpu<'a> {
    /// What every vCPU thread is given.
    pub thread: VcpuThread<'a>,
    /// The vCPU.
    pub vcpu: VcpuFd,
    /// Its interrupt side (the timer thread holds its handle).
    pub interrupts: VcpuInterrupts,
}

/// How one stretch inside `run_with_kicks` ended.
enum Leg {
    /// The guest is done.
    Done,
    /// A pause was requested and this vCPU is at its safe point.
    Paused,
}

/// Runs one vCPU until the guest says it is done.
pub fn run_vcpu(u: UserVcpu<'_>, signal: KickSignal) -> Result<VcpuRun, TimerError> {
    let UserVcpu {
        thread,
        mut vcpu,
        mut interrupts,
    } = u;
    let (id, pauses) = (thread.id, thread.pauses);
    let _leave = Leave(pauses);
    let mut out = VcpuRun::with_capacity(thread.samples);
    let mut apic = XApic::new();
    loop {
        let leg = run_with_kicks(&mut vcpu, &mut interrupts, signal, |kv| {
            run_leg(&thread, kv, &mut out, &mut apic)
        })
        .map_err(|source| TimerError::Kick { vcpu: id, source })??;
        match (leg, pauses) {
            (Leg::Done, _) | (Leg::Paused, None) => break,
            (Leg::Paused, Some(p)) => vcpu = pause(id, vcpu, Some(&interrupts), p, &mut out)?,
        }
    }
    out.eois = apic.eois;
    out.accounting = Some(interrupts.accounting());
    Ok(out)
}

/// Runs the vCPU until the guest is done or a pause stops it.
fn run_leg(
    u: &VcpuThread<'_>,
    kv: &mut vcpu_events::kvm::kick::KickedVcpu<'_>,
    out: &mut VcpuRun,
    apic: &mut XApic,
) -> Result<Leg, TimerError> {
    let id = u.id;
    loop {
        let ints = kv.interrupts();
        if Instant::now() > u.deadline {
            return Err(TimerError::NotDone { vcpu: id });
        }
        let exit = match kv
            .run()
            .map_err(|source| TimerError::Kick { vcpu: id, source })?
        {
            KickedRun::Exit(exit) => exit,
            other => {
                if u.pauses.is_some_and(|p| p.should_pause(&other)) {
                    return Ok(Leg::Paused);
                }
                continue;
            }
        };
        out.exits += 1;
        if let Some(p) = u.pauses {
            p.on_exit();
        }
        match exit {
            VcpuExit::IoOut(port @ (PORT_TIMER_ACK | PORT_TIMER_ACK_MASKED), data) => {
                let now = u.start.elapsed().as_nanos() as u64;
                let v = data.first().copied().unwrap_or(0);
                let r = if port == PORT_TIMER_ACK {
                    ints.on_delivered(v)
                } else {
                    out.acked_masked += 1;
                    ints.on_delivered_while_masked(v)
                };
                r.map_err(|source| TimerError::Delivery { vcpu: id, source })?;
                out.acked += 1;
                apic.delivered();
                if let Some(ns) = u.stamp.take(now) {
                    out.latencies_ns.push(ns);
                }
            }
            VcpuExit::IoIn(PORT_STATUS, data) => {
                let done = u.stopping.load(SeqCst) && ints.accounting().pending() == 0;
                data.fill(0);
                if let Some(b) = data.first_mut() {
                    *b = u8::from(done);
                }
            }
            VcpuExit::IoOut(PORT_TIMER_DONE, _) => return Ok(Leg::Done),
            VcpuExit::MmioWrite(addr, data) => {
                apic.write(addr, data)
                    .map_err(|source| TimerError::Apic { vcpu: id, source })?;
            }
            VcpuExit::MmioRead(addr, data) => {
                let v = apic
                    .read(addr, data.len())
                    .map_err(|source| TimerError::Apic { vcpu: id, source })?;
                data.copy_from_slice(&v.to_le_bytes()[..data.len().min(4)]);
            }
            VcpuExit::IrqWindowOpen => {}
            other => {
                return Err(TimerError::UnexpectedExit {
                    vcpu: id,
                    exit: format!("{other:?}"),
                })
            }
        }
    }
}
