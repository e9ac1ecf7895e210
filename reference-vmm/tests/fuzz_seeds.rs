//! Replays the committed fuzz seed corpus under plain `cargo test` (stable Rust).
//!
//! Each cargo-fuzz target in `fuzz/fuzz_targets/<target>.rs` is a one-line call of a
//! property function in `fuzz/src/properties/` (one module per target). This test
//! compiles that same module and runs every file of `fuzz/seeds/<target>/` through the
//! target's function, so a property violation (or a panic) on a seed — including every
//! crash reproducer the fuzzer ever found, which is kept as a seed — fails the normal
//! workspace test run. It lives in the reference-vmm package because that package
//! depends on all five library crates.

#[path = "../../fuzz/src/properties/mod.rs"]
mod properties;

use std::collections::BTreeSet;
use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The seed files of one target, sorted so failures are reported in a stable order.
fn seed_files(target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join("seeds").join(target);
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read seed directory {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every seed of `target` through its property function and fails with the list
/// of seeds that violated it.
fn replay(target: &str) {
    let property = properties::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, property)| *property)
        .unwrap_or_else(|| panic!("{target} is not in properties::TARGETS"));
    let files = seed_files(target);
    assert!(
        !files.is_empty(),
        "fuzz/seeds/{target}/ has no seed: every target needs a non-empty seed corpus"
    );
    let mut failures = Vec::new();
    for path in &files {
        let data = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(payload) = panic::catch_unwind(|| property(&data)) {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".to_string());
            failures.push(format!("{}: {message}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds of {target} violate its property:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

macro_rules! seed_tests {
    ($($target:ident),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                replay(stringify!($target));
            }
        )*

        /// The target list is the same everywhere: this file, `properties::TARGETS`,
        /// the seed directories, the `fuzz_targets/*.rs` files and the `[[bin]]`
        /// entries of `fuzz/Cargo.toml`. A target added in one place only fails here.
        #[test]
        fn every_fuzz_target_has_seeds_and_a_seed_test() {
            let tested: BTreeSet<String> =
                [$(stringify!($target)),*].iter().map(|s| s.to_string()).collect();
            let table: BTreeSet<String> =
                properties::TARGETS.iter().map(|(name, _)| name.to_string()).collect();
            assert_eq!(tested, table, "seed tests vs properties::TARGETS");

            let names_in = |dir: &str, suffix: &str| -> BTreeSet<String> {
                let dir = fuzz_dir().join(dir);
                fs::read_dir(&dir)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
                    .filter_map(|entry| {
                        let name = entry.expect("readable entry").file_name();
                        name.to_str()
                            .and_then(|n| n.strip_suffix(suffix))
                            .map(str::to_string)
                    })
                    .collect()
            };
            assert_eq!(names_in("seeds", ""), table, "fuzz/seeds/* vs properties::TARGETS");
            assert_eq!(
                names_in("fuzz_targets", ".rs"),
                table,
                "fuzz/fuzz_targets/*.rs vs properties::TARGETS"
            );

            let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml"))
                .expect("fuzz/Cargo.toml is readable");
            for name in &table {
                assert!(
                    manifest.contains(&format!("name = \"{name}\"")),
                    "fuzz/Cargo.toml has no [[bin]] for {name}"
                );
            }
        }
    };
}

seed_tests!(
    msr_dump_json,
    vmx_caps_raw,
    sdm_controls,
    notify_options,
    notify_exit,
    heki_hypercall,
    heki_exit,
    vcpu_interruption,
    vcpu_injector,
    vcpu_events,
    vcpu_snapshot,
    trace_replay,
    vmm_exits,
    vmx_nested,
    vmm_snapshot,
);
