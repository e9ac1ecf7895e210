// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A per-crate test run covers the feature-gated code: Cargo.toml's self
//! dev-dependency (`notify-exit = { path = ".", features = [...] }`) turns on `kvm` and `serde` for
//! every test build, so `cargo test -p notify-exit` with no flags runs the tests of that code
//! (issue 13 found them silently skipped). This test fails if the dev-dependency or a
//! feature in it goes.

#[test]
// The constant is the point: it is the feature set this test build was compiled with.
#[allow(clippy::assertions_on_constants)]
fn per_crate_test_runs_have_every_feature_on() {
    assert!(
        cfg!(feature = "kvm"),
        "`cargo test -p notify-exit` ran without the `kvm` feature: its tests were skipped"
    );
    assert!(
        cfg!(feature = "serde"),
        "`cargo test -p notify-exit` ran without the `serde` feature: its tests were skipped"
    );
}
