// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The timer run's report, per vCPU and in total (text and JSON).

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::latency::Latency;
use super::{Irqchip, Raised, TimerConfig, VcpuRun};

/// One vCPU's figures (or the total's, with `vcpu` = None).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct VcpuTimerReport {
    /// vCPU index (absent in the total).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpu: Option<u32>,
    /// Raises.
    pub requested: u64,
    /// Deliveries (the guest's acknowledgements, including while masked).
    pub delivered: u64,
    /// Raises merged with one still pending (user: by the injector; kernel:
    /// requested - delivered - refused, merged in the LAPIC's IRR).
    pub coalesced: u64,
    /// Raises refused (user: queue full; kernel: KVM_SIGNAL_MSI blocked or failed).
    pub refused: u64,
    /// Raises still pending when the run ended.
    pub pending: u64,
    /// requested - (delivered + coalesced + refused + pending): must be 0.
    pub lost: u64,
    /// Deliveries while the guest had interrupts masked: must be 0.
    pub delivered_while_masked: u64,
    /// Kicks sent (user path).
    pub kicks: u64,
    /// EOI writes the VMM answered (user path).
    pub eois: u64,
    /// Exits that came back to userspace.
    pub exits: u64,
    /// Raise -> acknowledgement latency.
    pub latency: Latency,
    /// Snapshots of the vCPU taken (`--snapshot-every`).
    pub snapshots: u64,
    /// Snapshots restored into a fresh VM.
    pub restores: u64,
    /// Raises made while the vCPU was paused for a snapshot (counted in the
    /// figures above like any other).
    pub raised_while_paused: u64,
    /// Snapshots at which the in-kernel LAPIC held the timer vector raised and
    /// not yet delivered (IRR), carried into the fresh VM (`--irqchip kernel`).
    pub held_in_lapic: u64,
    /// Milliseconds the vCPU spent paused for snapshots (safe point to running
    /// in the fresh VM), all pauses (total: summed over vCPUs).
    pub paused_ms: f64,
    /// The longest single pause, milliseconds (total: the longest of any vCPU).
    pub longest_pause_ms: f64,
}

impl VcpuTimerReport {
    /// requested == delivered + coalesced + refused + pending.
    pub fn is_balanced(&self) -> bool {
        self.lost == 0
            && self.requested == self.delivered + self.coalesced + self.refused + self.pending
    }

    fn add(&mut self, o: &VcpuTimerReport) {
        self.requested += o.requested;
        self.delivered += o.delivered;
        self.coalesced += o.coalesced;
        self.refused += o.refused;
        self.pending += o.pending;
        self.lost += o.lost;
        self.delivered_while_masked += o.delivered_while_masked;
        self.kicks += o.kicks;
        self.eois += o.eois;
        self.exits += o.exits;
        self.snapshots += o.snapshots;
        self.restores += o.restores;
        self.raised_while_paused += o.raised_while_paused;
        self.held_in_lapic += o.held_in_lapic;
        self.paused_ms += o.paused_ms;
        self.longest_pause_ms = self.longest_pause_ms.max(o.longest_pause_ms);
    }
}

/// A timer run's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimerReport {
    /// Always "timer".
    pub guest: &'static str,
    /// Who delivered.
    pub irqchip: Irqchip,
    /// vCPUs.
    pub vcpus: u8,
    /// Raises per second per vCPU.
    pub rate_hz: u32,
    /// How long the timer raised.
    pub seconds: f64,
    /// `--snapshot-every` (absent without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_every: Option<u64>,
    /// Start to the last vCPU done.
    pub elapsed_s: f64,
    /// Deliveries per second, all vCPUs (total delivered / elapsed).
    pub delivered_per_s: f64,
    /// Per vCPU.
    pub per_vcpu: Vec<VcpuTimerReport>,
    /// Sums; the latency is over every sample of every vCPU.
    pub total: VcpuTimerReport,
    /// Every vCPU balanced, nothing lost, nothing delivered while masked,
    /// and (user path) every guest acknowledgement was a delivery the
    /// injector made.
    pub passed: bool,
}

/// Builds the report from what the threads saw.
pub(super) fn build(
    cfg: &TimerConfig,
    runs: Vec<VcpuRun>,
    raised: &[Raised],
    elapsed: Duration,
) -> TimerReport {
    let mut total = VcpuTimerReport::default();
    let mut all = Vec::new();
    let mut per_vcpu = Vec::with_capacity(runs.len());
    let mut acks_match = true;
    for (i, (mut run, raised)) in runs.into_iter().zip(raised).enumerate() {
        let mut r = VcpuTimerReport {
            vcpu: Some(i as u32),
            eois: run.eois,
            exits: run.exits,
            snapshots: run.snapshots,
            restores: run.restores,
            raised_while_paused: run.raised_while_paused,
            held_in_lapic: run.held_in_lapic,
            paused_ms: run.paused.as_secs_f64() * 1e3,
            longest_pause_ms: run.longest_pause.as_secs_f64() * 1e3,
            latency: Latency::of(&mut run.latencies_ns),
            ..Default::default()
        };
        match run.accounting {
            Some(a) => {
                // User path: vcpu-events' accounting.
                acks_match &= a.delivered == run.acked;
                r.requested = a.requested;
                r.delivered = a.delivered;
                r.coalesced = a.coalesced;
                r.refused = a.refused;
                r.pending = a.pending();
                r.delivered_while_masked = a.delivered_while_masked;
                r.kicks = a.kicks;
                r.lost = a
                    .requested
                    .saturating_sub(a.delivered + a.coalesced + a.refused + a.pending());
            }
            None => {
                // Kernel path: raised vs acknowledged.
                r.requested = raised.requested;
                r.delivered = run.acked;
                r.refused = raised.refused;
                r.delivered_while_masked = run.acked_masked;
                r.coalesced = raised.requested.saturating_sub(run.acked + raised.refused);
            }
        }
        total.add(&r);
        all.extend_from_slice(&run.latencies_ns);
        per_vcpu.push(r);
    }
    total.latency = Latency::of(&mut all);
    let passed = acks_match
        && per_vcpu.iter().all(VcpuTimerReport::is_balanced)
        && total.delivered_while_masked == 0;
    TimerReport {
        guest: "timer",
        irqchip: cfg.irqchip,
        vcpus: cfg.vcpus,
        rate_hz: cfg.rate_hz,
        seconds: cfg.duration.as_secs_f64(),
        snapshot_every: cfg.snapshot_every,
        elapsed_s: elapsed.as_secs_f64(),
        delivered_per_s: total.delivered as f64 / elapsed.as_secs_f64().max(1e-9),
        per_vcpu,
        total,
        passed,
    }
}

impl TimerReport {
    /// The report as JSON (one object).
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// The report as text: one line per vCPU and the total.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "timer: {} vCPU(s), {} Hz for {:.3} s, irqchip {} ({:.3} s, {:.0} delivered/s)",
            self.vcpus,
            self.rate_hz,
            self.seconds,
            self.irqchip.name(),
            self.elapsed_s,
            self.delivered_per_s
        );
        let _ = writeln!(
            s,
            "  {:<6} {:>9} {:>9} {:>9} {:>7} {:>7} {:>5} {:>7} {:>7} {:>9} {:>9} {:>9}",
            "vcpu",
            "requested",
            "delivered",
            "coalesced",
            "refused",
            "pending",
            "lost",
            "masked",
            "kicks",
            "p50 us",
            "p99 us",
            "max us"
        );
        for r in self.per_vcpu.iter().chain(std::iter::once(&self.total)) {
            let name = r.vcpu.map_or("total".to_string(), |v| v.to_string());
            let _ = writeln!(
                s,
                "  {:<6} {:>9} {:>9} {:>9} {:>7} {:>7} {:>5} {:>7} {:>7} {:>9.1} {:>9.1} {:>9.1}",
                name,
                r.requested,
                r.delivered,
                r.coalesced,
                r.refused,
                r.pending,
                r.lost,
                r.delivered_while_masked,
                r.kicks,
                r.latency.p50_us,
                r.latency.p99_us,
                r.latency.max_us
            );
        }
        if let Some(every) = self.snapshot_every {
            let _ = writeln!(s, "  snapshot every {every} exits:");
            for r in self.per_vcpu.iter().chain(std::iter::once(&self.total)) {
                let name = r.vcpu.map_or("total".to_string(), |v| v.to_string());
                let _ = write!(
                    s,
                    "  {:<6} {} taken, {} restored, {} raised while paused",
                    name, r.snapshots, r.restores, r.raised_while_paused
                );
                if self.irqchip == Irqchip::Kernel {
                    let _ = write!(s, ", {} held in the LAPIC's IRR", r.held_in_lapic);
                }
                let _ = write!(
                    s,
                    "; paused {:.1} ms, longest {:.1} ms",
                    r.paused_ms, r.longest_pause_ms
                );
                s.push('\n');
            }
        }
        let _ = writeln!(
            s,
            "  requested = delivered + coalesced + refused + pending, delivered while masked = 0: {}",
            if self.passed { "PASS" } else { "FAIL" }
        );
        s
    }
}
