// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Hostile guests on real /dev/kvm (issue 8): an interrupt flood against long
//! masked stretches, and a guest that triple-faults on its own. Skipped (with
//! a message) when /dev/kvm cannot be opened, unless VMM_TEST_REQUIRE_KVM=1.

#[allow(dead_code)] // the timer helpers are for the timer tests.
mod common;

use common::{bin, kvm_or_skip, run};
use reference_vmm::action::Outcome;
use reference_vmm::guests::{Guest, FLOOD_FIRST, FLOOD_VECTORS};
use reference_vmm::report::Source;
use reference_vmm::stop::{Instruction, StopCause, VcpuState};

#[test]
fn irq_flood_accounts_for_every_raise_and_delivers_nothing_while_masked() {
    if !kvm_or_skip() {
        return;
    }
    for n in [20_000, 60_000] {
        let r = run(Guest::IrqFlood, n);
        assert_eq!(r.source, Source::Kvm);
        assert_eq!(r.outcome, Outcome::Halted, "{}", r.reason);
        let i = r.interrupts.expect("interrupts section");
        println!("irq-flood N={n}: {i:?}");
        assert_eq!(i.mode, "flood");
        assert_eq!(i.requested, n);
        // No loss: every raise was delivered, coalesced with the same vector
        // still queued, or refused with QueueFull, exactly.
        let delivered = i.delivered.expect("the guest reported its count");
        assert_eq!(i.pending_at_end, 0);
        assert_eq!(i.requested, delivered + i.coalesced + i.refused);
        assert_eq!(i.injected, delivered, "an injection was not delivered");
        assert!(i.accounted());
        // The flood really outpaced delivery: all three outcomes happened.
        assert!(i.coalesced > 0 && i.refused > 0 && delivered > 0, "{i:?}");
        // Nothing delivered inside a masked stretch.
        assert_eq!(i.delivered_while_masked, Some(0));
        // The queue stayed within its documented bound (32 distinct vectors),
        // and the flood filled it.
        assert_eq!(i.queue_capacity, 32);
        assert!(i.max_queued <= i.queue_capacity);
        assert_eq!(
            i.max_queued, i.queue_capacity,
            "the flood never filled the queue"
        );
        // The guest got exactly the vectors the VMM injected.
        assert_eq!(i.delivered_vector_sum, Some(i.injected_vector_sum));
        let lo = delivered * u64::from(FLOOD_FIRST);
        let hi = delivered * u64::from(FLOOD_FIRST + FLOOD_VECTORS - 1);
        assert!((lo..=hi).contains(&i.injected_vector_sum));
    }
}

#[test]
fn irq_storm_still_delivers_every_raise_without_coalescing() {
    if !kvm_or_skip() {
        return;
    }
    let i = run(Guest::IrqStorm, 5000).interrupts.expect("interrupts");
    assert_eq!(i.mode, "backlog");
    assert_eq!(
        (i.requested, i.injected, i.delivered),
        (5000, 5000, Some(5000))
    );
    assert_eq!((i.coalesced, i.refused), (0, 0));
    assert!(i.accounted());
    assert!(i.max_queued <= 1);
}

#[test]
fn a_guest_that_triple_faults_on_its_own_is_a_reported_shutdown() {
    if !kvm_or_skip() {
        return;
    }
    let r = run(Guest::SelfTripleFault, 0);
    assert_eq!(r.outcome, Outcome::Shutdown, "{}", r.reason);
    // Nothing synthesized it: the cause is the guest's own fault, with
    // where the vCPU stopped (the `ud2` of guests/self-triple-fault.S).
    assert!(
        matches!(
            r.cause,
            StopCause::GuestTripleFault {
                vcpu: Some(VcpuState {
                    instruction: Instruction::Ud2,
                    ..
                })
            }
        ),
        "{:?}",
        r.cause
    );
    // The guest ran up to the fault (its first report), never past it.
    assert_eq!(r.exits.get("io_out"), Some(&1));
    assert_eq!(r.exits.get("shutdown"), Some(&1));
    assert_eq!(r.exits_total, 2);

    // Through the binary: a normal report and exit status 0, not a crash.
    let out = bin()
        .args(["run", "--guest", "self-triple-fault", "--format", "json"])
        .output()
        .expect("run binary");
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["outcome"], "shutdown");
    assert_eq!(v["cause"]["kind"], "guest-triple-fault");
    assert_eq!(v["cause"]["vcpu"]["instruction"]["insn"], "ud2");
}

#[test]
fn hostile_guests_are_listed() {
    let out = bin().arg("guests").output().expect("run binary");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().any(|l| l.starts_with("irq-flood ")));
    assert!(text.lines().any(|l| l.starts_with("self-triple-fault ")));
}

#[test]
fn the_exit_budget_is_its_own_cause_not_an_unhandled_exit() {
    if !kvm_or_skip() {
        return;
    }
    let mut cfg = reference_vmm::config::RunConfig::new(Guest::PioLoop);
    cfg.count = 1_000_000;
    cfg.max_exits = 1000;
    let r = common::run_config(&cfg);
    assert_eq!(r.outcome, Outcome::ExitLimit);
    assert_eq!(r.cause, StopCause::ExitBudget { exits: 1000 });
    assert_eq!(r.exits_total, 1000);
}
