// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `--irqchip kernel`: KVM's in-kernel irqchip delivers. The timer thread
//! sends one KVM_SIGNAL_MSI per vCPU per tick to that vCPU's local APIC
//! (physical destination = APIC ID, fixed delivery, edge; SDM Vol. 3A
//! 11.11.1-11.11.2, api.rst 4.71), and the guest's xAPIC writes never leave
//! the kernel. Each vCPU thread only sees the guest's acknowledgements (and
//! with `--snapshot-every` pauses after an exit: [`super::snapshot`]).

use std::sync::atomic::Ordering::SeqCst;
use std::time::Instant;

use kvm_bindings::kvm_msi;
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use super::snapshot::{pause, Leave};
use super::{TimerError, VcpuRun, VcpuThread};
use crate::guests::{
    APIC_BASE, PORT_STATUS, PORT_TIMER_ACK, PORT_TIMER_ACK_MASKED, PORT_TIMER_DONE,
};

const EINTR: i32 = 4;

/// What one KVM_SIGNAL_MSI did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsiOutcome {
    /// Returned > 0: delivered to the local APIC (possibly merged in its IRR).
    Accepted,
    /// Returned 0: the guest blocked it (api.rst 4.71).
    Blocked,
    /// The ioctl failed.
    Failed,
}

/// Sends `vector` to the local APIC with ID `apic_id` (physical destination,
/// fixed, edge): MSI address 0xfee00000 | ID << 12, data = vector (SDM Vol. 3A
/// 11.11.1, 11.11.2).
pub fn signal_msi(vm: &VmFd, apic_id: u8, vector: u8) -> MsiOutcome {
    let msi = kvm_msi {
        address_lo: APIC_BASE as u32 | (u32::from(apic_id) << 12),
        address_hi: 0,
        data: u32::from(vector),
        ..Default::default()
    };
    match vm.signal_msi(msi) {
        Ok(n) if n > 0 => MsiOutcome::Accepted,
        Ok(_) => MsiOutcome::Blocked,
        Err(_) => MsiOutcome::Failed,
    }
}

/// Runs one vCPU (with its in-kernel LAPIC) until the guest says it is done,
/// pausing after an exit when a snapshot is requested ([`super::snapshot`]).
pub fn run_vcpu(thread: VcpuThread<'_>, mut vcpu: VcpuFd) -> Result<VcpuRun, TimerError> {
    let VcpuThread {
        id,
        stamp,
        stopping,
        start,
        deadline,
        samples,
        pauses,
    } = thread;
    let _leave = Leave(pauses);
    let mut out = VcpuRun::with_capacity(samples);
    loop {
        if Instant::now() > deadline {
            return Err(TimerError::NotDone { vcpu: id });
        }
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == EINTR => continue,
            Err(source) => return Err(TimerError::Run { vcpu: id, source }),
        };
        out.exits += 1;
        match exit {
            VcpuExit::IoOut(port @ (PORT_TIMER_ACK | PORT_TIMER_ACK_MASKED), _) => {
                let now = start.elapsed().as_nanos() as u64;
                out.acked += 1;
                if port == PORT_TIMER_ACK_MASKED {
                    out.acked_masked += 1;
                }
                if let Some(ns) = stamp.take(now) {
                    out.latencies_ns.push(ns);
                }
            }
            VcpuExit::IoIn(PORT_STATUS, data) => {
                data.fill(0);
                if let Some(b) = data.first_mut() {
                    *b = u8::from(stopping.load(SeqCst));
                }
            }
            VcpuExit::IoOut(PORT_TIMER_DONE, _) => return Ok(out),
            other => {
                return Err(TimerError::UnexpectedExit {
                    vcpu: id,
                    exit: format!("{other:?}"),
                })
            }
        }
        if let Some(p) = pauses {
            p.on_exit();
            if p.requested() {
                vcpu = pause(id, vcpu, None, p, &mut out)?;
            }
        }
    }
}
