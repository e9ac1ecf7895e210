// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! End to end on real /dev/kvm: every built-in guest, asserting report fields.
//! Skipped (with a message) when /dev/kvm cannot be opened, unless
//! VMM_TEST_REQUIRE_KVM=1.

#[allow(dead_code)] // the timer helpers are for the timer tests.
mod common;

use common::{bin, kvm_or_skip, run, run_config};
use reference_vmm::action::Outcome;
use reference_vmm::config::RunConfig;
use reference_vmm::guests::Guest;
use reference_vmm::report::Source;
use reference_vmm::stop::{Instruction, StopCause, TripleFaultReason, VcpuState};

#[test]
fn pio_loop_exits_once_per_out_then_halts() {
    if !kvm_or_skip() {
        return;
    }
    let r = run(Guest::PioLoop, 5000);
    assert_eq!(r.source, Source::Kvm);
    assert_eq!(r.outcome, Outcome::Halted);
    assert_eq!(r.exits.get("io_out"), Some(&5000));
    assert_eq!(r.exits.get("hlt"), Some(&1));
    assert_eq!(r.exits_total, 5001);
    assert!(r.startup_us.is_some() && r.run_seconds > 0.0);
}

#[test]
fn halt_halts_at_once() {
    if !kvm_or_skip() {
        return;
    }
    let r = run(Guest::Halt, 0);
    assert_eq!(r.outcome, Outcome::Halted);
    assert_eq!(r.exits_total, 1);
}

#[test]
fn irq_storm_delivers_every_interrupt_and_none_while_masked() {
    if !kvm_or_skip() {
        return;
    }
    let r = run(Guest::IrqStorm, 10_000);
    assert_eq!(r.outcome, Outcome::Halted, "{}", r.reason);
    let i = r.interrupts.expect("interrupts section");
    assert_eq!(i.requested, 10_000);
    assert_eq!(i.injected, 10_000);
    assert_eq!(i.delivered, Some(10_000));
    assert_eq!(i.delivered_while_masked, Some(0));
    assert_eq!(i.pending_at_end, 0);
}

#[test]
fn exceptions_arrive_as_injected() {
    if !kvm_or_skip() {
        return;
    }
    let r = run(Guest::Exceptions, 0);
    assert_eq!(r.outcome, Outcome::Halted, "{}", r.reason);
    let e = r.exceptions.expect("exceptions section");
    assert_eq!(e.received, Some(e.expected));
    assert_eq!(e.injected_exceptions, 2);
    assert_eq!(e.injected_nmis, 1);
    assert_eq!(e.expected.pf_cr2, 0x7fff_dead_b000);
}

#[test]
fn triple_fault_ends_in_shutdown() {
    if !kvm_or_skip() {
        return;
    }
    let r = run(Guest::TripleFault, 0);
    assert_eq!(r.outcome, Outcome::Shutdown);
    assert_eq!(r.exits.get("shutdown"), Some(&1));
    assert_eq!(
        r.cause,
        StopCause::SynthesizedTripleFault {
            why: TripleFaultReason::GuestRequest
        }
    );
    // The guest's "no triple fault happened" report never came.
    assert_eq!(r.exits.get("io_out"), Some(&1));
}

#[test]
fn heki_probe_shows_the_hosts_answer_or_reports_the_stuck_vmcall() {
    if !kvm_or_skip() {
        return;
    }
    let mut cfg = RunConfig::new(Guest::HekiProbe);
    cfg.timeout = Some(std::time::Duration::from_millis(300));
    let r = run_config(&cfg);
    let h = r.heki_probe.as_ref().expect("heki_probe section");
    match r.outcome {
        // Upstream KVM without Heki: both hypercalls answer -KVM_ENOSYS.
        Outcome::Halted => {
            assert_eq!(h.version_query_rax, Some(-1000));
            assert_eq!(h.lock_cr4_rax, Some(-1000));
        }
        // Nested hosts where the vmcall never completes: the watchdog says so.
        Outcome::Timeout => assert!(
            matches!(
                r.cause,
                StopCause::Timeout {
                    after_ms: 300,
                    vcpu: Some(VcpuState {
                        instruction: Instruction::Vmcall,
                        ..
                    })
                }
            ),
            "{:?}",
            r.cause
        ),
        other => panic!("unexpected outcome {other:?}: {}", r.reason),
    }
}

#[test]
fn run_command_prints_json_report() {
    if !kvm_or_skip() {
        return;
    }
    let out = bin()
        .args([
            "run", "--guest", "pio-loop", "--count", "1000", "--format", "json",
        ])
        .output()
        .expect("run binary");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["guest"], "pio-loop");
    assert_eq!(v["source"], "kvm");
    assert_eq!(v["outcome"], "halted");
    assert_eq!(v["exits_total"], 1001);
    assert_eq!(v["exits"]["io_out"], 1000);
    assert!(v["startup_us"].as_u64().is_some());
    assert!(v["notify"]["host_supported"].is_boolean());
}

#[test]
fn demo_passes_every_scenario() {
    if !kvm_or_skip() {
        return;
    }
    let out = bin()
        .args(["demo", "--format", "json"])
        .output()
        .expect("run binary");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let failed: Vec<_> = v["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .filter(|s| s["passed"] != true)
        .map(|s| format!("{}: {}", s["name"], s["failures"]))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(v["timer"]["passed"], true, "{}", v["timer"]);
    // The third timer run snapshots with the in-kernel irqchip: every snapshot
    // restored.
    let snap = &v["timer"]["kernel_snapshots"]["Ok"];
    assert_eq!(snap["irqchip"], "kernel", "{}", v["timer"]);
    let total = &snap["total"];
    assert!(total["restores"].as_u64() > Some(0), "{total}");
    assert_eq!(total["snapshots"], total["restores"], "{total}");
    assert!(out.status.success());
    assert!(v["seconds"].as_f64().unwrap_or(99.0) < 60.0);
}

#[test]
fn pio_loop_runs_on_several_vcpus_and_stateful_guests_refuse() {
    if !kvm_or_skip() {
        return;
    }
    let mut cfg = RunConfig::new(Guest::PioLoop);
    cfg.count = 2000;
    cfg.vcpus = 3;
    let r = run_config(&cfg);
    assert_eq!(r.outcome, Outcome::Halted);
    // --count is per vCPU: each vCPU runs the whole guest.
    assert_eq!(r.exits.get("io_out"), Some(&6000));
    assert_eq!(r.exits.get("hlt"), Some(&3));

    let out = bin()
        .args(["run", "--guest", "irq-storm", "--vcpus", "2"])
        .output()
        .expect("run binary");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("runs on one vCPU"));
}
