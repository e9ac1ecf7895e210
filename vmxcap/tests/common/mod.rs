// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What every test of the built `vmxcap` binary needs: the binary, the repository's
//! fixture dumps (through test-support) and a scratch directory.

#![allow(dead_code)] // Each test file uses its own subset.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The built binary, for tests that set up stdio themselves.
pub fn command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmxcap"))
}

/// Runs the binary with `args` and collects its output.
pub fn vmxcap(args: &[&str]) -> Output {
    command().args(args).output().expect("run vmxcap")
}

/// The fixture dump `<name>.json` (`fixtures/vmx/`).
pub fn fixture(name: &str) -> PathBuf {
    test_support::vmx_fixture(&format!("{name}.json"))
}

/// A path as the `&str` argument the binary takes.
pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `name` in a scratch directory of this test process.
pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmxcap-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}
