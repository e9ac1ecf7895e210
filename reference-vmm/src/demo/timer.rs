// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The demo's `timer` scenario: the timer guest on 2 vCPUs, once with the
//! userspace irqchip (vcpu-events' raise handle and kick), once with KVM's
//! in-kernel irqchip, and once more with the in-kernel irqchip and a snapshot
//! and restore into a fresh VM every [`SNAPSHOT_EVERY`] exits, side by side.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::timer::{Irqchip, TimerConfig, TimerReport};

/// vCPUs of the demo's timer scenario.
pub const VCPUS: u8 = 2;
/// Rate of the demo's timer scenario.
pub const RATE_HZ: u32 = 1000;
/// How long each mode raises.
pub const DURATION: Duration = Duration::from_millis(500);
/// The third run's `--snapshot-every`.
pub const SNAPSHOT_EVERY: u64 = 31;

/// Both runs and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct TimerScenario {
    /// `--irqchip user`.
    pub user: Result<TimerReport, String>,
    /// `--irqchip kernel`.
    pub kernel: Result<TimerReport, String>,
    /// `--irqchip kernel --snapshot-every SNAPSHOT_EVERY`.
    pub kernel_snapshots: Result<TimerReport, String>,
    /// The user path balanced with 0 lost and 0 delivered while masked, both
    /// kernel runs had 0 delivered while masked, and the snapshot run restored
    /// every snapshot (each LAPIC's IRR and ISR read back) with every vCPU that
    /// took MSIs while paused holding the vector in its saved IRR.
    pub passed: bool,
    /// What failed.
    pub failures: Vec<String>,
}

fn config(irqchip: Irqchip, snapshot_every: Option<u64>) -> TimerConfig {
    let mut c = TimerConfig::new(irqchip);
    c.vcpus = VCPUS;
    c.rate_hz = RATE_HZ;
    c.duration = DURATION;
    c.snapshot_every = snapshot_every;
    c
}

/// Runs the three.
pub fn run() -> TimerScenario {
    let run = |irqchip, every| {
        crate::timer::run(&config(irqchip, every)).map_err(|e| crate::error::chain(&e))
    };
    let user = run(Irqchip::User, None);
    let kernel = run(Irqchip::Kernel, None);
    let kernel_snapshots = run(Irqchip::Kernel, Some(SNAPSHOT_EVERY));
    let mut failures = Vec::new();
    match &user {
        Ok(r) if !r.passed || r.total.lost != 0 || r.total.delivered_while_masked != 0 => failures
            .push(format!(
                "user: requested {} != delivered {} + coalesced {} + refused {} + pending {} \
                 (lost {}), or {} delivered while masked",
                r.total.requested,
                r.total.delivered,
                r.total.coalesced,
                r.total.refused,
                r.total.pending,
                r.total.lost,
                r.total.delivered_while_masked
            )),
        Ok(_) => {}
        Err(e) => failures.push(format!("user: {e}")),
    }
    match &kernel {
        Ok(r) if r.total.delivered_while_masked != 0 => failures.push(format!(
            "kernel: {} delivered while masked",
            r.total.delivered_while_masked
        )),
        Ok(_) => {}
        Err(e) => failures.push(format!("kernel: {e}")),
    }
    match &kernel_snapshots {
        Ok(r) => {
            for v in &r.per_vcpu {
                let held = v.raised_while_paused == 0 || v.held_in_lapic > 0;
                if v.restores == 0 || v.snapshots != v.restores || !held {
                    failures.push(format!(
                        "kernel+snapshots: vCPU {:?}: {} snapshots, {} restores, {} raised \
                         while paused, {} held in the LAPIC's IRR",
                        v.vcpu, v.snapshots, v.restores, v.raised_while_paused, v.held_in_lapic
                    ));
                }
            }
            if r.total.delivered_while_masked != 0 {
                failures.push(format!(
                    "kernel+snapshots: {} delivered while masked",
                    r.total.delivered_while_masked
                ));
            }
        }
        Err(e) => failures.push(format!("kernel+snapshots: {e}")),
    }
    TimerScenario {
        user,
        kernel,
        kernel_snapshots,
        passed: failures.is_empty(),
        failures,
    }
}

/// A snapshot figure, or `-` for a run without snapshots.
fn snapshot_cell(r: &TimerReport, v: u64) -> String {
    match r.snapshot_every {
        Some(_) if r.total.snapshots == r.total.restores => v.to_string(),
        Some(_) => format!("{v} (taken {})", r.total.snapshots),
        None => "-".to_string(),
    }
}

/// The text section: one column per mode.
pub fn text(t: &TimerScenario) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "== timer: {VCPUS} vCPUs, a host timer thread raising on each at {RATE_HZ} Hz for {:.1} s, \
         guest masks interrupts for long stretches",
        DURATION.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "       {:<24} {:>18} {:>18} {:>18}",
        "",
        "user (raise+kick)",
        "kernel (irqchip)",
        format!("kernel+snap /{SNAPSHOT_EVERY}")
    );
    type Row = (&'static str, fn(&TimerReport) -> String);
    let rows: [Row; 16] = [
        ("requested", |r| r.total.requested.to_string()),
        ("delivered", |r| r.total.delivered.to_string()),
        ("coalesced", |r| r.total.coalesced.to_string()),
        ("refused", |r| r.total.refused.to_string()),
        ("pending at end", |r| r.total.pending.to_string()),
        ("lost", |r| r.total.lost.to_string()),
        ("delivered while masked", |r| {
            r.total.delivered_while_masked.to_string()
        }),
        ("kicks sent", |r| r.total.kicks.to_string()),
        ("delivered/s", |r| format!("{:.0}", r.delivered_per_s)),
        ("latency p50 us", |r| {
            format!("{:.1}", r.total.latency.p50_us)
        }),
        ("latency p99 us", |r| {
            format!("{:.1}", r.total.latency.p99_us)
        }),
        ("latency max us", |r| {
            format!("{:.1}", r.total.latency.max_us)
        }),
        ("snapshots = restores", |r| {
            snapshot_cell(r, r.total.restores)
        }),
        ("raised while paused", |r| {
            snapshot_cell(r, r.total.raised_while_paused)
        }),
        ("held in LAPIC IRR", |r| {
            snapshot_cell(r, r.total.held_in_lapic)
        }),
        ("longest pause ms", |r| match r.snapshot_every {
            Some(_) => format!("{:.1}", r.total.longest_pause_ms),
            None => "-".to_string(),
        }),
    ];
    for (name, f) in rows {
        let cell = |r: &Result<TimerReport, String>| r.as_ref().map_or("error".into(), f);
        let _ = writeln!(
            s,
            "       {name:<24} {:>18} {:>18} {:>18}",
            cell(&t.user),
            cell(&t.kernel),
            cell(&t.kernel_snapshots)
        );
    }
    let _ = writeln!(
        s,
        "[{}] {:<31} kvm      {:<14} expected user: requested = delivered + coalesced + \
         refused + pending, 0 lost, 0 delivered while masked; kernel+snap: every snapshot \
         restored, LAPIC IRR/ISR carried",
        if t.passed { "PASS" } else { "FAIL" },
        "timer x2 (user, kernel, +snap)",
        if t.passed { "balanced" } else { "unbalanced" }
    );
    for f in &t.failures {
        let _ = writeln!(s, "       FAILED: {}", crate::error::escape(f));
    }
    s
}
