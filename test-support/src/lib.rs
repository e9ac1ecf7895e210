// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Test scaffolding shared by the tests of every vmx-toolkit crate (a path-only
//! dev-dependency, never published):
//!
//! - [`kvm_or_skip`]: open `/dev/kvm`, or skip the test with a message; under CI
//!   (`VMM_TEST_REQUIRE_KVM=1`) a missing `/dev/kvm` fails the test instead;
//! - the real-CPU capability dumps and QEMU `vmxcap` golden outputs, one copy in the
//!   repository's `fixtures/vmx/` ([`vmx_fixture`], [`VMX_DUMPS`]);
//! - [`workspace_root`], which the drift guard (`tests/drift.rs`) scans;
//! - [`assert_message_once`]: an error prints its own message and leaves its cause to
//!   `source()` (so anyhow's `{:#}` and `message_chain` print each cause once).
//!
//! ```no_run
//! let Some(kvm) = test_support::kvm_or_skip() else { return };
//! let _vm = kvm.create_vm().expect("KVM_CREATE_VM");
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

use kvm_ioctls::Kvm;

/// The environment variable that turns a skipped KVM test into a failure (set by CI).
pub const REQUIRE_KVM_ENV: &str = "VMM_TEST_REQUIRE_KVM";

/// Whether tests must fail rather than skip when `/dev/kvm` is unusable
/// (`VMM_TEST_REQUIRE_KVM=1`).
pub fn kvm_required() -> bool {
    std::env::var(REQUIRE_KVM_ENV).as_deref() == Ok("1")
}

/// Opens `/dev/kvm`. When it cannot be opened: prints
/// `skipping: /dev/kvm not available (<error>)` and returns `None`, or panics with that
/// message when `VMM_TEST_REQUIRE_KVM=1`.
pub fn kvm_or_skip() -> Option<Kvm> {
    match Kvm::new() {
        Ok(kvm) => Some(kvm),
        Err(e) => {
            skip_or_fail(&format!("/dev/kvm not available ({e})"));
            None
        }
    }
}

/// Skips the current test with `why` (printed as `skipping: <why>`), or panics with the
/// same text when `VMM_TEST_REQUIRE_KVM=1`. For tests that need more than an open
/// `/dev/kvm` (e.g. VMX itself).
pub fn skip_or_fail(why: &str) {
    if kvm_required() {
        panic!("skipping: {why} (and {REQUIRE_KVM_ENV}=1)");
    }
    println!("skipping: {why}");
}

/// The repository root (the workspace's `Cargo.toml` is there).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support is a workspace member, one level below the root")
        .to_path_buf()
}

/// The folder of the real-CPU VMX capability dumps (`*.json`) and of QEMU's `vmxcap`
/// output for each (`*.vmxcap.txt`, the golden files).
pub fn vmx_fixtures_dir() -> PathBuf {
    workspace_root().join("fixtures").join("vmx")
}

/// The path of fixture file `name` (e.g. `skylake-x-i7-7800x.json`).
pub fn vmx_fixture(name: &str) -> PathBuf {
    vmx_fixtures_dir().join(name)
}

/// The contents of fixture file `name`; panics with the path if it cannot be read.
pub fn read_vmx_fixture(name: &str) -> String {
    let path = vmx_fixture(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The stem of every VMX capability dump in [`vmx_fixtures_dir`] (`<stem>.json`, with
/// QEMU's output in `<stem>.vmxcap.txt`), oldest CPU first.
pub const VMX_DUMPS: [&str; 7] = [
    "penryn-core2-t9600",
    "broadwell-core-m-5y70",
    "skylake-x-i7-7800x",
    "coffeelake-906ea",
    "icelake-u-i7-1065g7",
    "tigerlake-i5-1135g7",
    "arrowlake-core-ultra-5-245k",
];

/// A `log` logger that shows `warn` and above (the VMM binary's default filter) and
/// writes nothing.
struct WarnSink;

impl log::Log for WarnSink {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, _: &log::Record<'_>) {}
    fn flush(&self) {}
}

/// Installs (once per process) a logger that shows `warn` and discards every line: a
/// test or bench of code that counts only the lines a logger shows (heki-policy's
/// `logs_emitted`) sees the default filter without noise. Does nothing if another
/// logger is already installed.
pub fn install_warn_logger() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if log::set_logger(&WarnSink).is_ok() {
            log::set_max_level(log::LevelFilter::Warn);
        }
    });
}

/// Defines the test `per_crate_test_runs_have_every_feature_on`, which fails unless each
/// named feature is on in the calling crate's test build. A library's Cargo.toml turns
/// them on with a path-only self dev-dependency (`x = { path = ".", features = [...] }`),
/// so `cargo test -p x` with no flags runs the tests of its feature-gated code (issue
/// 13 found them silently skipped); this test fails if that dev-dependency or a feature
/// in it goes. `cfg!` expands in the caller, so it sees the caller's features.
///
/// ```text
/// test_support::features_on_in_tests!("kvm", "serde");
/// ```
#[macro_export]
macro_rules! features_on_in_tests {
    ($($feature:tt),+ $(,)?) => {
        #[test]
        // The constant is the point: the feature set this test build was compiled with.
        #[allow(clippy::assertions_on_constants)]
        fn per_crate_test_runs_have_every_feature_on() {
            $(
                assert!(
                    cfg!(feature = $feature),
                    "`cargo test -p {}` ran without the `{}` feature: its tests were skipped",
                    env!("CARGO_PKG_NAME"),
                    $feature
                );
            )+
        }
    };
}

/// Walks `e`'s [`source`](std::error::Error::source) chain and fails the test if any
/// error's message contains its source's message (the cause would print twice through
/// anyhow or `vmx_caps::error::message_chain`), or if a message is empty. Returns the
/// messages, outermost first, so a test can also check the chain it expects.
pub fn assert_message_once(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut messages = vec![e.to_string()];
    let mut current = e;
    while let Some(source) = current.source() {
        let outer = current.to_string();
        let inner = source.to_string();
        assert!(!outer.is_empty(), "empty message in the chain of {e:?}");
        assert!(
            inner.is_empty() || !outer.contains(&inner),
            "{outer:?} repeats its source's message {inner:?}"
        );
        messages.push(inner);
        current = source;
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list names exactly the dumps on disk, each with its golden output.
    #[test]
    fn every_dump_is_listed_and_has_a_golden_file() {
        let mut on_disk: Vec<String> = std::fs::read_dir(vmx_fixtures_dir())
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".json").map(str::to_owned)
            })
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = VMX_DUMPS.iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
        for stem in VMX_DUMPS {
            assert!(
                vmx_fixture(&format!("{stem}.vmxcap.txt")).is_file(),
                "{stem}"
            );
            assert!(read_vmx_fixture(&format!("{stem}.json")).contains("0x480"));
        }
    }

    #[test]
    fn root_is_the_workspace() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
        assert!(manifest.contains("\"test-support\""));
    }
}
