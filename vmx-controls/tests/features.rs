// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A per-crate test run covers the feature-gated code: Cargo.toml's self
//! dev-dependency turns on `serde` and `json` for every test build, so
//! `cargo test -p vmx-controls` with no flags runs the tests of the JSON paths (the
//! fixture files, `config_from_dump_json`). The test fails if it goes.

test_support::features_on_in_tests!("serde", "json");
