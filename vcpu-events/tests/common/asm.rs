// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Checks hand-assembled guest bytes against their assembly comments with GNU
//! `as --64` (Intel syntax) and `ld -Ttext=0 --oformat=binary`, when installed.

/// Assembles each `(name, bytes, source)` block (64-bit, Intel syntax, linked at
/// 0) and asserts the result equals `bytes`; a block whose source starts with
/// `.org N` is compared from offset N. Returns `false` (and prints why) when the
/// tools are not installed, so the caller's test is a skip rather than a pass.
pub fn check_blocks(tag: &str, blocks: &[(&str, &[u8], &str)]) -> bool {
    let dir = std::env::temp_dir().join(format!("vcpu-events-{tag}-asm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes, src) in blocks {
        let s = dir.join(format!("{name}.s"));
        let o = dir.join(format!("{name}.o"));
        let b = dir.join(format!("{name}.bin"));
        std::fs::write(&s, format!(".intel_syntax noprefix\n.code64\n{src}")).unwrap();
        let Ok(st) = std::process::Command::new("as")
            .arg("--64")
            .arg("-o")
            .arg(&o)
            .arg(&s)
            .status()
        else {
            println!("skipping: GNU as not available");
            return false;
        };
        assert!(st.success(), "as failed on {name}");
        let Ok(st) = std::process::Command::new("ld")
            .args(["-Ttext=0", "--oformat=binary", "-o"])
            .arg(&b)
            .arg(&o)
            .status()
        else {
            println!("skipping: ld not available");
            return false;
        };
        assert!(st.success(), "ld failed on {name}");
        let out = std::fs::read(&b).unwrap();
        let org = src
            .trim_start()
            .strip_prefix(".org ")
            .and_then(|rest| rest.split_whitespace().next())
            .map(|n| usize::from_str_radix(n.trim_start_matches("0x"), 16).unwrap())
            .unwrap_or(0);
        assert_eq!(&out[org..], *bytes, "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    true
}
