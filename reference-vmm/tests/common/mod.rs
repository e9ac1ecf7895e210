// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Helpers shared by the tests that run guests on real /dev/kvm
//! (`kvm_e2e.rs`, `kvm_hostile.rs`, `kvm_snapshot.rs`, `kvm_timer.rs`,
//! `kvm_timer_snapshot.rs`).

use std::process::Command;
use std::time::{Duration, Instant};

use reference_vmm::config::RunConfig;
use reference_vmm::demo::kvm_report;
use reference_vmm::guests::Guest;
use reference_vmm::report::Report;
use reference_vmm::timer::{self, Irqchip, TimerConfig, TimerReport};

/// Whether /dev/kvm is usable. If not: prints "skipping: /dev/kvm not
/// available" and returns false, or panics with that message when
/// VMM_TEST_REQUIRE_KVM=1 (CI).
pub fn kvm_or_skip() -> bool {
    test_support::kvm_or_skip().is_some() && reference_vmm::vmm::kvm_available()
}

/// Runs `guest` (with its `--count`) on /dev/kvm through the library and
/// returns the report the binary would print.
pub fn run(guest: Guest, count: u64) -> Report {
    let mut cfg = RunConfig::new(guest);
    cfg.count = count;
    run_config(&cfg)
}

/// Runs `cfg` on /dev/kvm through the library and returns the report the
/// binary would print.
pub fn run_config(cfg: &RunConfig) -> Report {
    let r = reference_vmm::vmm::run(cfg, Instant::now()).expect("run");
    kvm_report(cfg, r)
}

/// The `reference-vmm` binary built for these tests.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reference-vmm"))
}

/// Runs the timer guest on /dev/kvm: `vcpus` vCPUs, 1000 Hz for 300 ms, a snapshot
/// (and restore into a fresh VM) every `snapshot_every` exits if given.
pub fn run_timer(irqchip: Irqchip, vcpus: u8, snapshot_every: Option<u64>) -> TimerReport {
    let mut cfg = TimerConfig::new(irqchip);
    cfg.vcpus = vcpus;
    cfg.rate_hz = 1000;
    cfg.duration = Duration::from_millis(300);
    cfg.snapshot_every = snapshot_every;
    timer::run(&cfg).expect("timer run")
}

/// A timer run's accounting balances per vCPU (vcpu-events' invariant: requested =
/// delivered + coalesced + refused + pending), with nothing lost and nothing
/// delivered while the guest had interrupts masked (SDM Vol. 3A 6.8.1: IF = 0 masks
/// INTR); each vCPU took interrupts, the totals are the sums, and the run passed.
pub fn assert_timer_balanced(r: &TimerReport) {
    assert_eq!(r.per_vcpu.len(), usize::from(r.vcpus));
    for v in &r.per_vcpu {
        assert_eq!(
            v.requested,
            v.delivered + v.coalesced + v.refused + v.pending,
            "{v:?}"
        );
        assert_eq!(v.lost, 0, "{v:?}");
        assert_eq!(v.delivered_while_masked, 0, "{v:?}");
        assert!(v.delivered > 0, "{v:?}");
    }
    assert_eq!(
        r.total.requested,
        r.per_vcpu.iter().map(|v| v.requested).sum::<u64>()
    );
    assert_eq!(
        r.total.restores,
        r.per_vcpu.iter().map(|v| v.restores).sum::<u64>()
    );
    assert!(r.passed, "{}", r.text());
}

/// `reference-vmm run --guest timer ARGS --format json` through the binary: exits 0,
/// and its report parses.
pub fn timer_json(args: &[&str]) -> serde_json::Value {
    let out = bin()
        .args(["run", "--guest", "timer"])
        .args(args)
        .args(["--format", "json"])
        .output()
        .expect("run binary");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}
