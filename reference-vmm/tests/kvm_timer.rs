// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The timer guest on real KVM, both irqchips, 1 and 2 vCPUs: a host timer
//! thread raises while the vCPUs run (the raise races KVM_RUN), and the
//! accounting must balance per vCPU (vcpu-events' invariant: requested =
//! delivered + coalesced + refused + pending) with nothing delivered while
//! the guest had interrupts masked (SDM Vol. 3A 6.8.1: IF = 0 masks INTR).

#[allow(dead_code)] // the shared helpers this file does not use
mod common;

use common::{assert_timer_balanced, bin, kvm_or_skip, run_timer, timer_json};
use reference_vmm::timer::{Irqchip, TimerReport};

fn run(irqchip: Irqchip, vcpus: u8) -> TimerReport {
    run_timer(irqchip, vcpus, None)
}

fn assert_balanced(r: &TimerReport) {
    assert_timer_balanced(r);
    for v in &r.per_vcpu {
        // 300 ms at 1000 Hz: the timer thread raised for every tick it saw.
        assert!((100..=301).contains(&v.requested), "{v:?}");
        assert!(v.latency.samples > 0 && v.latency.p50_us <= v.latency.max_us);
    }
}

fn user(vcpus: u8) {
    if !kvm_or_skip() {
        return;
    }
    let r = run(Irqchip::User, vcpus);
    assert_balanced(&r);
    for v in &r.per_vcpu {
        // Every delivery was EOIed through the VMM's xAPIC answer, and the
        // timer had to kick the vCPU out of KVM_RUN to deliver on time.
        assert_eq!(v.eois, v.delivered, "{v:?}");
        assert!(v.kicks > 0, "{v:?}");
        assert_eq!(v.pending, 0, "the guest stops only once drained: {v:?}");
    }
}

fn kernel(vcpus: u8) {
    if !kvm_or_skip() {
        return;
    }
    let r = run(Irqchip::Kernel, vcpus);
    assert_balanced(&r);
    for v in &r.per_vcpu {
        // KVM delivers: no kicks, no EOI exits, nothing left pending.
        assert_eq!((v.kicks, v.eois, v.pending), (0, 0, 0), "{v:?}");
    }
}

#[test]
fn user_irqchip_one_vcpu_balances() {
    user(1);
}

#[test]
fn user_irqchip_two_vcpus_balance() {
    user(2);
}

#[test]
fn kernel_irqchip_one_vcpu_balances() {
    kernel(1);
}

#[test]
fn kernel_irqchip_two_vcpus_balance() {
    kernel(2);
}

#[test]
fn json_report_has_every_field_per_vcpu_and_in_total() {
    if !kvm_or_skip() {
        return;
    }
    let v = timer_json(&[
        "--vcpus",
        "2",
        "--rate",
        "500",
        "--seconds",
        "0.2",
        "--irqchip",
        "user",
    ]);
    assert_eq!(v["guest"], "timer");
    assert_eq!(v["irqchip"], "user");
    assert_eq!(v["vcpus"], 2);
    assert_eq!(v["rate_hz"], 500);
    assert_eq!(v["passed"], true);
    assert!(v["delivered_per_s"].as_f64().is_some());
    let per = v["per_vcpu"].as_array().expect("per_vcpu");
    assert_eq!(per.len(), 2);
    for (i, p) in per.iter().chain(std::iter::once(&v["total"])).enumerate() {
        for k in [
            "requested",
            "delivered",
            "coalesced",
            "refused",
            "pending",
            "lost",
            "delivered_while_masked",
            "kicks",
        ] {
            assert!(p[k].as_u64().is_some(), "{i}: {k} in {p}");
        }
        for k in ["p50_us", "p99_us", "max_us"] {
            assert!(p["latency"][k].as_f64().is_some(), "{i}: {k} in {p}");
        }
    }
    assert_eq!(per[1]["vcpu"], 1);
    assert!(v["total"].get("vcpu").is_none());
}

#[test]
fn timer_flags_are_refused_for_other_guests_and_bad_values() {
    let out = bin()
        .args(["run", "--guest", "halt", "--rate", "100"])
        .output()
        .expect("run binary");
    assert_eq!(out.status.code(), Some(2));
    let out = bin()
        .args(["run", "--guest", "timer", "--irqchip", "split"])
        .output()
        .expect("run binary");
    assert_eq!(out.status.code(), Some(2));
    let out = bin()
        .args(["run", "--guest", "timer", "--rate", "0"])
        .output()
        .expect("run binary");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_generic_run_loop_refuses_the_timer_guest_as_usage() {
    // Vm::new checks before opening /dev/kvm: no KVM needed.
    let cfg = reference_vmm::config::RunConfig::new(reference_vmm::guests::Guest::Timer);
    let Err(e) = reference_vmm::vmm::run(&cfg, std::time::Instant::now()) else {
        panic!("the timer guest ran through the generic run loop");
    };
    assert!(e.is_usage(), "{e}");
    assert!(matches!(
        e,
        reference_vmm::vmm::VmmError::Config(reference_vmm::vmm::ConfigError::TimerGuest)
    ));
}
