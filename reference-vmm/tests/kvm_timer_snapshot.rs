// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `run --guest timer --snapshot-every N` on real KVM, both irqchips: every
//! vCPU is paused at its safe point, captured (vcpu-events
//! `kvm::snapshot::capture`, with its injector on the user path), the VM
//! destroyed and rebuilt through the timer's own set-up, and each vCPU
//! restored (`kvm::snapshot::restore`; with `--irqchip kernel` the PICs,
//! IOAPIC, MP states and LAPICs too) while the host timer thread keeps
//! raising. Per vCPU the accounting must balance across every restore
//! (requested = delivered + coalesced + refused + pending) with nothing lost
//! and nothing delivered while the guest had interrupts masked (SDM Vol. 3A
//! 6.8.1: IF = 0 masks INTR). No rate or latency is asserted.

#[allow(dead_code)] // the shared helpers this file does not use
mod common;

use common::{assert_timer_balanced, bin, kvm_or_skip, run_timer, timer_json};
use reference_vmm::timer::{self, Irqchip, TimerConfig, TimerConfigError};

/// Runs the timer on `vcpus` vCPUs with a snapshot every `every` exits and
/// checks what must hold across the restores with `irqchip`.
fn survives_restores(irqchip: Irqchip, vcpus: u8, every: u64) {
    if !kvm_or_skip() {
        return;
    }
    let r = run_timer(irqchip, vcpus, Some(every));
    assert_timer_balanced(&r);
    for v in &r.per_vcpu {
        assert_eq!(v.pending, 0, "the guest stops only once drained: {v:?}");
        // Each vCPU took part in pauses, and every snapshot taken was restored.
        assert!(v.restores > 0, "{v:?}");
        assert_eq!(v.snapshots, v.restores, "{v:?}");
        assert!(v.raised_while_paused <= v.requested, "{v:?}");
        assert!(v.held_in_lapic <= v.snapshots, "{v:?}");
        match irqchip {
            Irqchip::User => {
                // Every delivery the injector counted is one the guest
                // acknowledged and EOIed, across the restores.
                assert_eq!(v.eois, v.delivered, "{v:?}");
                // The LAPIC is KVM's only with --irqchip kernel.
                assert_eq!(v.held_in_lapic, 0, "{v:?}");
            }
            Irqchip::Kernel => {
                // KVM delivers: no kicks, no EOI exits. Each restore checked its
                // LAPIC (ISR as saved, every saved IRR bit kept) or the run failed.
                assert_eq!((v.kicks, v.eois), (0, 0), "{v:?}");
                // A paused vCPU cannot take an interrupt: an MSI accepted for it
                // is in its IRR at the save, so that snapshot counts as held.
                if v.raised_while_paused > 0 {
                    assert!(v.held_in_lapic > 0, "{v:?}");
                }
            }
        }
    }
    assert_eq!(
        r.total.held_in_lapic,
        r.per_vcpu.iter().map(|v| v.held_in_lapic).sum::<u64>()
    );
}

#[test]
fn one_vcpu_survives_restores_under_a_running_timer() {
    survives_restores(Irqchip::User, 1, 20);
}

#[test]
fn two_vcpus_survive_restores_under_a_running_timer() {
    survives_restores(Irqchip::User, 2, 20);
}

#[test]
fn two_vcpus_survive_a_restore_after_every_exit() {
    survives_restores(Irqchip::User, 2, 1);
}

#[test]
fn kernel_irqchip_one_vcpu_survives_restores_under_a_running_timer() {
    survives_restores(Irqchip::Kernel, 1, 20);
}

#[test]
fn kernel_irqchip_two_vcpus_survive_restores_under_a_running_timer() {
    survives_restores(Irqchip::Kernel, 2, 20);
}

#[test]
fn kernel_irqchip_two_vcpus_survive_a_restore_after_every_exit() {
    survives_restores(Irqchip::Kernel, 2, 1);
}

#[test]
fn snapshot_every_0_is_refused_with_either_irqchip() {
    for irqchip in [Irqchip::User, Irqchip::Kernel] {
        let mut cfg = TimerConfig::new(irqchip);
        cfg.snapshot_every = Some(0);
        assert_eq!(timer::validate(&cfg), Err(TimerConfigError::SnapshotEvery));
        cfg.snapshot_every = Some(1);
        assert_eq!(timer::validate(&cfg), Ok(()));
        let out = bin()
            .args(["run", "--guest", "timer", "--irqchip", irqchip.name()])
            .args(["--snapshot-every", "0"])
            .output()
            .expect("run binary");
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("--snapshot-every"), "{err}");
    }
}

#[test]
fn json_report_counts_snapshots_and_restores_per_vcpu() {
    if !kvm_or_skip() {
        return;
    }
    for irqchip in ["user", "kernel"] {
        let v = timer_json(&[
            "--vcpus",
            "2",
            "--seconds",
            "0.2",
            "--irqchip",
            irqchip,
            "--snapshot-every",
            "10",
        ]);
        assert_eq!(v["irqchip"], irqchip);
        assert_eq!(v["snapshot_every"], 10);
        assert_eq!(v["passed"], true);
        let per = v["per_vcpu"].as_array().expect("per_vcpu");
        for p in per.iter().chain(std::iter::once(&v["total"])) {
            for k in [
                "snapshots",
                "restores",
                "raised_while_paused",
                "held_in_lapic",
            ] {
                assert!(p[k].as_u64().is_some(), "{irqchip}: {k} in {p}");
            }
            assert!(p["restores"].as_u64() > Some(0), "{irqchip}: {p}");
            // Every restore followed a pause of some time; the longest is one of them.
            let (paused, longest) = (p["paused_ms"].as_f64(), p["longest_pause_ms"].as_f64());
            assert!(longest > Some(0.0) && paused >= longest, "{irqchip}: {p}");
        }
    }
}

#[test]
fn text_report_shows_what_the_lapic_held_with_the_kernel_irqchip() {
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
        ])
        .args(["--irqchip", "kernel", "--snapshot-every", "10"])
        .output()
        .expect("run binary");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" taken, ") && l.contains(" restored, "))
        .collect();
    // vCPU 0, vCPU 1, total.
    assert_eq!(lines.len(), 3, "{text}");
    for l in lines {
        assert!(l.contains("held in the LAPIC's IRR"), "{l}");
        assert!(
            l.contains("; paused ") && l.contains(" ms, longest "),
            "{l}"
        );
    }
}
