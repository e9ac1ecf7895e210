// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Replays the seeds of the `vmx_nested` fuzz target (fuzz/seeds/vmx_nested/) through
//! its property function (fuzz/src/properties/vmx_nested.rs, the model of Linux v6.18
//! `nested_vmx_setup_ctls_msrs`) under plain `cargo test`, and checks that the seeds
//! reach both outcomes: a nested view and a refusal.

#[path = "../../fuzz/src/properties/vmx_nested.rs"]
mod vmx_nested;

use std::path::PathBuf;

fn seeds() -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/vmx_nested");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).expect("seed");
            (p, data)
        })
        .collect()
}

#[test]
fn every_seed_satisfies_the_property() {
    let seeds = seeds();
    assert!(
        seeds.len() >= 10,
        "one seed per fixture plus the special cases"
    );
    for (path, data) in &seeds {
        let r = std::panic::catch_unwind(|| vmx_nested::vmx_nested(data));
        assert!(
            r.is_ok(),
            "{} violates the vmx_nested property",
            path.display()
        );
    }
}

#[test]
fn seeds_cover_views_and_refusals() {
    use vmx_controls::nested::{nested_view, NestedAssumptions, NestedError};
    let decode = |name: &str| {
        let data = seeds()
            .into_iter()
            .find(|(p, _)| p.file_name().is_some_and(|n| n == name))
            .map(|(_, d)| d)
            .expect("seed present");
        let present = u32::from_le_bytes([data[0], data[1], data[2], 0]);
        let raw: vmx_caps::RawMsrs = (0..20usize)
            .filter(|i| present & (1 << i) != 0)
            .map(|i| {
                let at = 5 + 8 * i;
                let v = u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
                (0x480 + i as u32, v)
            })
            .collect();
        vmx_caps::VmxCaps::from_raw(raw).expect("seed decodes")
    };
    let a = NestedAssumptions::default();
    assert!(nested_view(&decode("tigerlake-i5-1135g7.bin"), &a).is_ok());
    assert!(matches!(
        nested_view(&decode("penryn-uc-refused.bin"), &a),
        Err(NestedError::L0Refuses(_))
    ));
}
