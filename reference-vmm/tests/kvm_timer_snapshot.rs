// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `run --guest timer --snapshot-every N` on real KVM (`--irqchip user`):
//! every vCPU is paused at its safe point, captured with its injector
//! (vcpu-events `kvm::snapshot::capture`), the VM destroyed and rebuilt
//! through the timer's own set-up, and each vCPU restored
//! (`kvm::snapshot::restore`) while the host timer thread keeps raising.
//! Per vCPU the accounting must balance across every restore (vcpu-events'
//! invariant: requested = delivered + coalesced + refused + pending) with
//! nothing lost and nothing delivered while the guest had interrupts masked
//! (SDM Vol. 3A 6.8.1: IF = 0 masks INTR). No rate or latency is asserted.

#[allow(dead_code)] // the shared helpers this file does not use
mod common;

use common::{assert_timer_balanced, bin, kvm_or_skip, run_timer};
use reference_vmm::timer::{self, Irqchip, TimerConfig, TimerConfigError, TimerReport};

fn run(vcpus: u8, every: u64) -> TimerReport {
    run_timer(Irqchip::User, vcpus, Some(every))
}

fn assert_survives_restores(r: &TimerReport) {
    assert_timer_balanced(r);
    for v in &r.per_vcpu {
        assert_eq!(v.pending, 0, "the guest stops only once drained: {v:?}");
        // Every delivery the injector counted is one the guest acknowledged
        // and EOIed, across the restores.
        assert_eq!(v.eois, v.delivered, "{v:?}");
        // Each vCPU took part in pauses, and every snapshot taken was restored.
        assert!(v.restores > 0, "{v:?}");
        assert_eq!(v.snapshots, v.restores, "{v:?}");
        assert!(v.raised_while_paused <= v.requested, "{v:?}");
    }
}

#[test]
fn one_vcpu_survives_restores_under_a_running_timer() {
    if !kvm_or_skip() {
        return;
    }
    assert_survives_restores(&run(1, 20));
}

#[test]
fn two_vcpus_survive_restores_under_a_running_timer() {
    if !kvm_or_skip() {
        return;
    }
    assert_survives_restores(&run(2, 20));
}

#[test]
fn two_vcpus_survive_a_restore_after_every_exit() {
    if !kvm_or_skip() {
        return;
    }
    assert_survives_restores(&run(2, 1));
}

#[test]
fn snapshots_are_refused_where_the_timer_cannot_honour_them() {
    let mut cfg = TimerConfig::new(Irqchip::Kernel);
    cfg.snapshot_every = Some(5);
    assert_eq!(
        timer::validate(&cfg),
        Err(TimerConfigError::SnapshotKernelIrqchip)
    );
    let mut cfg = TimerConfig::new(Irqchip::User);
    cfg.snapshot_every = Some(0);
    assert_eq!(timer::validate(&cfg), Err(TimerConfigError::SnapshotEvery));
    cfg.snapshot_every = Some(1);
    assert_eq!(timer::validate(&cfg), Ok(()));
    let out = bin()
        .args([
            "run",
            "--guest",
            "timer",
            "--irqchip",
            "kernel",
            "--snapshot-every",
            "5",
        ])
        .output()
        .expect("run binary");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("KVM_GET_LAPIC"), "{err}");
}

#[test]
fn json_report_counts_snapshots_and_restores_per_vcpu() {
    if !kvm_or_skip() {
        return;
    }
    let out = bin()
        .args([
            "run",
            "--guest",
            "timer",
            "--vcpus",
            "2",
            "--seconds",
            "0.2",
            "--snapshot-every",
            "10",
            "--format",
            "json",
        ])
        .output()
        .expect("run binary");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["snapshot_every"], 10);
    assert_eq!(v["passed"], true);
    let per = v["per_vcpu"].as_array().expect("per_vcpu");
    for p in per.iter().chain(std::iter::once(&v["total"])) {
        for k in ["snapshots", "restores", "raised_while_paused"] {
            assert!(p[k].as_u64().is_some(), "{k} in {p}");
        }
        assert!(p["restores"].as_u64() > Some(0), "{p}");
    }
}
