// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Helpers shared by the tests that run guests on real /dev/kvm
//! (`kvm_e2e.rs`, `kvm_hostile.rs`).

use std::process::Command;
use std::time::Instant;

use reference_vmm::config::RunConfig;
use reference_vmm::demo::kvm_report;
use reference_vmm::guests::Guest;
use reference_vmm::report::Report;

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
