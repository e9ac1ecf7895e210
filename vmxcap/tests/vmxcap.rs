// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `vmxcap` binary: output formats, exit statuses and error lines of every
//! subcommand. (Byte-exactness of every format is tested in vmx-caps itself; here the
//! built binary is run on the repository's fixtures, `fixtures/vmx/`.)

mod common;

use common::*;

use std::path::PathBuf;
use std::process::{Command, Output};

/// Exit status 2 and exactly one `vmxcap: error: ...` line on stderr.
fn assert_input_error(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("vmxcap: error: "), "{err}");
    assert!(err.contains(needle), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn qemu_format_equals_golden_for_every_fixture() {
    for name in [
        "arrowlake-core-ultra-5-245k",
        "broadwell-core-m-5y70",
        "coffeelake-906ea",
        "icelake-u-i7-1065g7",
        "penryn-core2-t9600",
        "skylake-x-i7-7800x",
        "tigerlake-i5-1135g7",
    ] {
        let out = vmxcap(&["--dump", p(&fixture(name)), "--format", "qemu"]);
        assert_eq!(out.status.code(), Some(0));
        let golden =
            std::fs::read(test_support::vmx_fixture(&format!("{name}.vmxcap.txt"))).unwrap();
        assert!(out.stdout == golden, "{name}: differs from QEMU's vmxcap");
    }
}

#[test]
fn text_is_default_and_flags_unknown_bits() {
    let out = vmxcap(&["--dump", p(&fixture("icelake-u-i7-1065g7"))]);
    assert_eq!(out.status.code(), Some(0));
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("NOTIFY_VM_EXITING"));
    assert!(
        s.lines()
            .any(|l| l.starts_with("  Bit 29") && l.ends_with("yes [unknown]")),
        "{s}"
    );
    // `show` is the explicit spelling of the default.
    let out2 = vmxcap(&["show", "--dump", p(&fixture("icelake-u-i7-1065g7"))]);
    assert_eq!(String::from_utf8(out2.stdout).unwrap(), s);
}

#[test]
fn json_format_is_the_documented_model() {
    let out = vmxcap(&[
        "--dump",
        p(&fixture("tigerlake-i5-1135g7")),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "vmx-caps/1");
    assert_eq!(v["basic"]["revision_id"], 19);
    assert_eq!(v["ept_vpid"]["supervisor_shadow_stack"], true);
    assert_eq!(v["controls"]["exit"]["true_msr"], "0x48f");
}

#[test]
fn check_exit_status() {
    let out = vmxcap(&["check", "--dump", p(&fixture("penryn-core2-t9600"))]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("clean"));

    // FIXED0 ⊆ FIXED1 broken: CR0 bit 31 fixed to 1 but not allowed to be 1.
    let text = std::fs::read_to_string(fixture("skylake-x-i7-7800x"))
        .unwrap()
        .replace(
            "\"0x487\": \"0x00000000ffffffff\"",
            "\"0x487\": \"0x000000007fffffff\"",
        );
    let bad = tmp("violated.json");
    std::fs::write(&bad, text).unwrap();
    let out = vmxcap(&["check", "--dump", p(&bad)]);
    assert_eq!(out.status.code(), Some(1));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("VIOLATION: IA32_VMX_CR0_FIXED0 (0x486) bits 0x80000000"),
        "{s}"
    );

    let out = vmxcap(&["check", "--dump", p(&bad), "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["findings"][0]["invariant"], "fixed0_subset_of_fixed1");
}

#[test]
fn malformed_input_exits_2_with_one_line() {
    let cases: [(&str, &str); 5] = [
        ("not json at all", "malformed dump"),
        (r#"{"msrs":{"0x480":"0xzz"}}"#, "bad hex"),
        (r#"{"msrs":{"0x500":"0x1"}}"#, "unknown MSR index 0x500"),
        (
            r#"{"msrs":{"0x480":"0x00da040000000004"}}"#,
            "IA32_VMX_PINBASED_CTLS (0x481) is missing",
        ),
        ("{\"msrs\": {\n\"0x480\": 1}}", "malformed dump"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let f = tmp(&format!("bad{i}.json"));
        std::fs::write(&f, text).unwrap();
        for sub in [&["--dump"][..], &["check", "--dump"][..]] {
            let mut args = sub.to_vec();
            args.push(p(&f));
            assert_input_error(&vmxcap(&args), needle);
        }
    }
    assert_input_error(
        &vmxcap(&["--dump", "/nonexistent/x.json"]),
        "/nonexistent/x.json",
    );
    assert_input_error(&vmxcap(&[]), "no source");
}

#[test]
fn hostile_dumps_exit_2_and_spellings_are_accepted() {
    let cases: [(String, &str); 5] = [
        (
            r#"{"msrs":{"0x480":"0x1","0x0480":"0x2"}}"#.into(),
            "MSR 0x480 appears more than once",
        ),
        (r#"{"msrs":{"0x480":null}}"#.into(), "malformed dump"),
        (
            r#"{"msrs":{"0x480":"0x10000000000000000"}}"#.into(),
            "bad hex value of MSR 0x480",
        ),
        (r#"{"msrs":{},"msrs":{}}"#.into(), "duplicate field"),
        (
            format!(r#"{{"cpu":"{}","msrs":{{}}}}"#, "x".repeat(2 << 20)),
            "file too large",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let f = tmp(&format!("hostile{i}.json"));
        std::fs::write(&f, text).unwrap();
        assert_input_error(&vmxcap(&["--dump", p(&f)]), needle);
    }
    // Upper-case hex, leading zeros and a byte-order mark read as the same MSRs.
    let text = std::fs::read_to_string(fixture("skylake-x-i7-7800x")).unwrap();
    let spelled = format!("\u{feff}{}", text.replace("\"0x4", "\"0x04").to_uppercase())
        .replace("\"0X", "\"0x")
        .replace("\"CPU\"", "\"cpu\"")
        .replace("\"SOURCE\"", "\"source\"")
        .replace("\"MSRS\"", "\"msrs\"");
    let f = tmp("spelled.json");
    std::fs::write(&f, &spelled).unwrap();
    let out = vmxcap(&["--dump", p(&f), "--format", "qemu"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}\n{spelled}");
    let golden = std::fs::read(test_support::vmx_fixture("skylake-x-i7-7800x.vmxcap.txt")).unwrap();
    assert!(out.stdout == golden);
}

#[test]
fn host_and_kvm_fail_clearly_without_vmx() {
    let vmx = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.split_ascii_whitespace().any(|w| w == "vmx"))
        .unwrap_or(false);
    for args in [
        &["--host"][..],
        &["--host", "--cpu", "0"][..],
        &["--kvm"][..],
    ] {
        let out = vmxcap(args);
        if out.status.code() == Some(0) {
            // A real VMX host with access: a report was printed.
            assert!(String::from_utf8_lossy(&out.stdout).contains("Basic VMX Information"));
            continue;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        if !vmx {
            assert!(err.contains("no VMX"), "{err}");
        }
    }
}

#[test]
fn diff_names_what_differs() {
    let skx = fixture("skylake-x-i7-7800x");
    let same = vmxcap(&["diff", p(&skx), p(&skx)]);
    assert_eq!(same.status.code(), Some(0));
    let out = vmxcap(&["diff", p(&skx), p(&fixture("icelake-u-i7-1065g7"))]);
    assert_eq!(out.status.code(), Some(1));
    let s = String::from_utf8_lossy(&out.stdout);
    // SKX has MPX (clear IA32_BNDCFGS), Ice Lake dropped it.
    assert!(s.contains("only A allows  CLEAR_BNDCFGS [bit 23]"), "{s}");
    assert!(s.contains("IA32_VMX_BASIC.revision_id: A 4 / B 19"), "{s}");
    let out = vmxcap(&["diff", p(&skx), "/nonexistent"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn baseline_round_trips_through_dump() {
    let out_file = tmp("baseline.json");
    let out = vmxcap(&[
        "baseline",
        p(&fixture("skylake-x-i7-7800x")),
        p(&fixture("icelake-u-i7-1065g7")),
        p(&fixture("broadwell-core-m-5y70")),
        "--out",
        p(&out_file),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The baseline reads back, checks clean and lacks what Broadwell lacks.
    let show = vmxcap(&["--dump", p(&out_file), "--format", "qemu"]);
    assert_eq!(show.status.code(), Some(0));
    let s = String::from_utf8_lossy(&show.stdout);
    assert!(
        s.contains("  Process posted interrupts                no\n"),
        "{s}"
    );
    let check = vmxcap(&["check", "--dump", p(&out_file)]);
    assert_eq!(check.status.code(), Some(0), "{check:?}");
    // Without --out the dump goes to stdout.
    let out = vmxcap(&["baseline", p(&fixture("coffeelake-906ea"))]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"0x491\": \"0x0000000000000001\""));
    let bad = vmxcap(&["baseline", "/nonexistent"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// A copy of a fixture with one MSR's value changed by `edit`.
fn edited_fixture(name: &str, msr: &str, edit: impl Fn(u64) -> u64) -> PathBuf {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let slot = &mut json["msrs"][msr];
    let old = u64::from_str_radix(slot.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    *slot = serde_json::Value::String(format!("0x{:016x}", edit(old)));
    let path = tmp(&format!("{name}-{msr}-edited.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    path
}

#[test]
fn config_json_has_every_control_word_of_kvm_setup_vmcs_config() {
    let out = vmxcap(&[
        "config",
        "--dump",
        p(&fixture("skylake-x-i7-7800x")),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let word = |k: &str| {
        let s = v[k].as_str().unwrap_or_else(|| panic!("{k} missing: {v}"));
        u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
    };
    // Reference vmx.md §5.4, Skylake-X row.
    assert_eq!(word("pin_based"), 0xff);
    assert_eq!(word("primary"), 0xfff9_fffe);
    assert_eq!(word("secondary"), 0x0219_3fff);
    assert_eq!(word("exit"), 0x01ff_ffff);
    assert_eq!(word("entry"), 0x0003_f3ff);
    for k in ["tertiary", "secondary_exit"] {
        word(k);
    }
    assert!(v["diagnostics"].is_array());
}

#[test]
fn config_inconsistent_pair_fails_or_is_sanitized() {
    // Entry control 15 (load IA32_EFER) no longer allowed-1 while exit control 21 (load
    // IA32_EFER) still is: an inconsistent pair in the legacy entry MSR KVM reads.
    let dump = edited_fixture("skylake-x-i7-7800x", "0x484", |v| v & !(1u64 << (32 + 15)));
    let strict = vmxcap(&["config", "--dump", p(&dump)]);
    assert_eq!(strict.status.code(), Some(1), "{strict:?}");
    let err = String::from_utf8_lossy(&strict.stderr);
    assert!(err.to_lowercase().contains("inconsistent"), "{err}");

    let sanitized = vmxcap(&[
        "config",
        "--dump",
        p(&dump),
        "--on-inconsistent",
        "sanitize",
        "--format",
        "json",
    ]);
    assert_eq!(sanitized.status.code(), Some(0), "{sanitized:?}");
    let v: serde_json::Value = serde_json::from_slice(&sanitized.stdout).unwrap();
    let exit =
        u64::from_str_radix(v["exit"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(exit & (1 << 21), 0, "both sides of the pair are cleared");
    assert!(!v["diagnostics"].as_array().unwrap().is_empty());
}

#[test]
fn config_unusable_input_exits_2() {
    let bad = tmp("config-bad.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let out = vmxcap(&["config", "--dump", p(&bad)]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = vmxcap(&[
        "config",
        "--dump",
        p(&fixture("penryn-core2-t9600")),
        "--on-inconsistent",
        "maybe",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// Runs vmxcap with stdout and stderr both connected to sockets whose peers are
/// closed (every write fails with EPIPE), as in `vmxcap ... 2>&1 | head -0`.
fn vmxcap_closed_pipes(args: &[&str]) -> Option<i32> {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    let (out, out_peer) = UnixStream::pair().unwrap();
    let (err, err_peer) = UnixStream::pair().unwrap();
    drop((out_peer, err_peer));
    Command::new(env!("CARGO_BIN_EXE_vmxcap"))
        .args(args)
        .stdout(OwnedFd::from(out))
        .stderr(OwnedFd::from(err))
        .status()
        .expect("run vmxcap")
        .code()
}

#[test]
fn closed_output_pipes_never_panic() {
    let skx = fixture("skylake-x-i7-7800x");
    let penryn = fixture("penryn-core2-t9600");
    // Status 101 would be a Rust panic ("failed printing to stderr"); 0 would claim
    // output that was lost: a closed pipe ends quietly with status 1.
    assert_eq!(vmxcap_closed_pipes(&["--dump", p(&skx)]), Some(1));
    assert_eq!(vmxcap_closed_pipes(&["--dump", "/nonexistent"]), Some(2));
    // Baseline notes go to stderr, the dump to stdout.
    assert_eq!(
        vmxcap_closed_pipes(&["baseline", p(&skx), p(&penryn)]),
        Some(1)
    );
    assert_eq!(
        vmxcap_closed_pipes(&["check", "--dump", p(&skx), "--format", "json"]),
        Some(1)
    );
}
