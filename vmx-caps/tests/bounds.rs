// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Bounds a hostile dump can hit, exact at the limit and one past it (issue 13).

use vmx_caps::dump::MAX_DUMP_BYTES;
use vmx_caps::{CapsError, Dump};

/// `Dump::read` takes a file of exactly `MAX_DUMP_BYTES` (1 MiB) and refuses one byte
/// more with `TooLarge`, naming the length seen and the limit.
#[test]
fn dump_file_size_at_the_limit_and_one_past() {
    let json = test_support::read_vmx_fixture("skylake-x-i7-7800x.json");
    let dir = std::env::temp_dir().join(format!("vmx-caps-bounds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let limit = usize::try_from(MAX_DUMP_BYTES).unwrap();
    for len in [limit, limit + 1] {
        let mut bytes = json.clone().into_bytes();
        bytes.resize(len, b' ');
        let path = dir.join(format!("{len}.json"));
        std::fs::write(&path, &bytes).unwrap();
        match Dump::read(&path) {
            Ok(d) if len == limit => assert_eq!(d.cpu, Dump::from_json(&json).unwrap().cpu),
            Err(CapsError::TooLarge {
                len: seen,
                limit: l,
                ..
            }) if len > limit => {
                assert_eq!((seen, l), (MAX_DUMP_BYTES + 1, MAX_DUMP_BYTES));
            }
            other => panic!("{len} bytes: {other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A malformed MSR index or value is shown clipped to 40 characters: 40 are shown whole,
/// the 41st is dropped (so an error line stays short whatever the input).
#[test]
fn bad_hex_text_is_clipped_at_40_characters() {
    for (len, shown) in [(40, 40), (41, 40), (4000, 40)] {
        let key = "z".repeat(len);
        let json = format!(r#"{{"cpu": "x", "source": "y", "msrs": {{"{key}": "0x1"}}}}"#);
        match Dump::from_json(&json) {
            Err(CapsError::BadHex { text, .. }) => assert_eq!(text, "z".repeat(shown), "{len}"),
            other => panic!("{len}: {other:?}"),
        }
    }
}
