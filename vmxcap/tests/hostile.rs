// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Hostile edges of the `vmxcap` binary (issue 13): output that cannot be written,
//! baselines of many dumps with huge names, control characters in input, exit statuses
//! and byte-order marks. Every test runs the built binary.

mod common;

use common::*;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Output, Stdio};

fn full() -> Stdio {
    Stdio::from(File::options().write(true).open("/dev/full").unwrap())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A copy of the Skylake-X fixture with its `cpu` text replaced.
fn dump_named(file: &str, cpu: &str) -> PathBuf {
    let mut v: serde_json::Value =
        serde_json::from_str(&test_support::read_vmx_fixture("skylake-x-i7-7800x.json")).unwrap();
    v["cpu"] = serde_json::Value::String(cpu.to_owned());
    let path = tmp(file);
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    path
}

/// No byte of `out` is a control character other than the line feeds ending lines.
fn assert_no_raw_controls(s: &str) {
    assert!(
        !s.chars().any(|c| c.is_control() && c != '\n'),
        "raw control character in {s:?}"
    );
}

#[test]
fn a_full_stdout_exits_1_with_one_line_on_stderr() {
    let skx = fixture("skylake-x-i7-7800x");
    let penryn = fixture("penryn-core2-t9600");
    for args in [
        vec!["--dump", p(&skx)],
        vec!["check", "--dump", p(&skx)],
        vec!["diff", p(&skx), p(&penryn)],
        vec!["config", "--dump", p(&skx)],
        vec!["nested", "--dump", p(&skx)],
        vec!["--help"],
    ] {
        let out = command().args(&args).stdout(full()).output().unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("vmxcap: error: writing to stdout: "),
            "{args:?}: {err}"
        );
    }
    // baseline's notes reach stderr; the dump itself could not be written: status 1
    // and the error as the last line (before this fix: status 0, nothing written).
    let out = command()
        .args(["baseline", p(&skx), p(&penryn)])
        .stdout(full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.lines()
            .last()
            .unwrap()
            .starts_with("vmxcap: error: writing to stdout: "),
        "{err}"
    );
}

#[test]
fn a_full_stderr_moves_the_error_line_to_stdout() {
    // An input error (status 2) whose line cannot go to stderr: one line on stdout,
    // status unchanged, no panic (status 101).
    let out = command()
        .args(["--dump", "/nonexistent"])
        .stderr(full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let s = text(&out.stdout);
    assert_eq!(s.lines().count(), 1, "{s}");
    assert!(s.starts_with("vmxcap: error: writing to stderr: "), "{s}");
    assert!(s.contains("/nonexistent"), "{s}");
    // A usage error likewise.
    let out = command().arg("--bogus").stderr(full()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(text(&out.stdout).lines().count(), 1);
    // Baseline notes (stderr) that cannot be written: status 1.
    let out = command()
        .args([
            "baseline",
            p(&fixture("skylake-x-i7-7800x")),
            p(&fixture("penryn-core2-t9600")),
        ])
        .stderr(full())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[test]
fn an_unwritable_out_file_exits_1() {
    let out = command()
        .args([
            "baseline",
            p(&fixture("skylake-x-i7-7800x")),
            "--out",
            "/dev/full",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("vmxcap: error: writing /dev/full: "),
        "{err}"
    );
}

#[test]
fn a_baseline_of_30000_dumps_reads_back() {
    // vmx-caps' Dump::read refuses files over MAX_DUMP_BYTES (1 MiB); before this fix
    // every input's name was joined into the baseline's `cpu` text, so 30,000 dumps
    // wrote a file vmxcap then refused as "file too large".
    let name = "n".repeat(1000);
    let dump = dump_named("named.json", &name);
    let dir = dump.parent().unwrap();
    let args = vec!["named.json"; 30_000];
    let out_file = tmp("baseline-30000.json");
    let out = command()
        .current_dir(dir)
        .arg("baseline")
        .args(&args)
        .args(["--out", p(&out_file)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let len = std::fs::metadata(&out_file).unwrap().len();
    assert!(len < 16 * 1024, "baseline dump is {len} bytes");
    let back = command().args(["--dump", p(&out_file)]).output().unwrap();
    assert_eq!(back.status.code(), Some(0), "{back:?}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    let cpu = written["cpu"].as_str().unwrap();
    // The first 16 names, each clipped to 120 characters, then the count of the rest.
    assert!(cpu.ends_with("; and 29984 more"), "{cpu}");
    assert_eq!(cpu.matches(&format!("{}...", "n".repeat(120))).count(), 16);
    assert!(!cpu.contains(&"n".repeat(121)));
}

#[test]
fn baseline_names_are_clipped_whatever_their_size() {
    // Names close to the 1 MiB dump limit: the written dump stays small.
    let dump = dump_named("huge-name.json", &"h".repeat(1_000_000 - 8192));
    let args = vec![p(&dump); 20];
    let out = command().arg("baseline").args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.len() < 16 * 1024, "{} bytes", out.stdout.len());
    let s = text(&out.stdout);
    assert!(s.contains("; and 4 more"), "{s}");
    // A short name is kept whole (fixture-sized names are unchanged).
    let out = command()
        .args(["baseline", p(&fixture("skylake-x-i7-7800x"))])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!v["cpu"].as_str().unwrap().contains("..."), "{v}");
}

#[test]
fn control_characters_from_input_are_escaped() {
    // A cpu name that would erase the line and print "clean" over a VIOLATED verdict.
    let evil = "evil\u{1b}[2K\rclean\nnext";
    let dump = dump_named("evil.json", evil);
    let skx = fixture("skylake-x-i7-7800x");
    for args in [
        vec!["check", "--dump", p(&dump)],
        vec!["diff", p(&dump), p(&fixture("penryn-core2-t9600"))],
        vec!["nested", "--dump", p(&dump)],
        vec!["nested", "--dump", p(&dump), "--l1"],
    ] {
        let out = command().args(&args).output().unwrap();
        let (o, e) = (text(&out.stdout), text(&out.stderr));
        assert_no_raw_controls(&o);
        assert_no_raw_controls(&e);
        assert!(o.contains("evil\\x1b[2K\\rclean\\nnext"), "{args:?}: {o}");
    }
    // A file name with a newline and an escape: one escaped error line.
    let out = command()
        .args(["--dump", "/nonexistent\n\u{1b}[31mfake"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = text(&out.stderr);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert_no_raw_controls(&e);
    assert!(e.contains("/nonexistent\\n\\x1b[31mfake"), "{e}");
    // An MSR key with control characters, and a baseline --out path with them.
    let bad = tmp("bad-key.json");
    std::fs::write(&bad, "{\"msrs\": {\"0x48\\u001b[2K\\n\": \"0x1\"}}").unwrap();
    for args in [vec!["--dump", p(&bad)], vec!["config", "--dump", p(&bad)]] {
        let out = command().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let e = text(&out.stderr);
        assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
        assert_no_raw_controls(&e);
        // vmx-caps quotes the key with Rust's escape_debug (`\u{1b}`); either escape
        // keeps it on one line and off the terminal's control path.
        assert!(e.contains("0x48\\u{1b}[2K\\n"), "{args:?}: {e}");
    }
    let out_path = tmp("out\u{1b}[2K\nname.json");
    let out = command()
        .args(["baseline", p(&skx), "--out", p(&out_path)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let o = text(&out.stdout);
    assert_eq!(o.lines().count(), 1, "{o}");
    assert_no_raw_controls(&o);
}

#[test]
fn usage_errors_are_one_line_naming_the_problem() {
    // clap's "required arguments were not provided" names the argument on its next line.
    let out = command().arg("diff").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = text(&out.stderr);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.starts_with("vmxcap: error: "), "{e}");
    assert!(e.contains("<A>"), "{e}");
    let out = command().arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stderr).lines().count(), 1);
    // --help lists the statuses and exits 0.
    let out = command().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let h = text(&out.stdout);
    assert!(h.contains("Exit status:"), "{h}");
    assert!(h.contains("  2  bad usage or input"), "{h}");
}

#[test]
fn a_bom_is_skipped_at_the_start_only() {
    // Like reference-vmm's trace reader: a BOM starting the input is skipped, one
    // anywhere else is malformed input (status 2).
    let skx = fixture("skylake-x-i7-7800x");
    let body = test_support::read_vmx_fixture("skylake-x-i7-7800x.json");
    let with_bom = tmp("bom.json");
    std::fs::write(&with_bom, format!("\u{feff}{body}")).unwrap();
    let plain: Output = command().args(["--dump", p(&skx)]).output().unwrap();
    let bom: Output = command().args(["--dump", p(&with_bom)]).output().unwrap();
    assert_eq!(bom.status.code(), Some(0), "{bom:?}");
    assert_eq!(bom.stdout, plain.stdout);
    let inner = tmp("bom-inside.json");
    std::fs::write(&inner, body.replacen('{', "{\u{feff}", 1)).unwrap();
    let out = command().args(["--dump", p(&inner)]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(text(&out.stderr).lines().count(), 1);
}

/// The baseline's name bounds, exact at the limit and one past it: a name of 120
/// characters is kept whole, 121 is clipped to 120 and `...`; 16 inputs are all named,
/// the 17th is counted ("; and 1 more").
#[test]
fn baseline_name_bounds_at_the_limit_and_one_past() {
    let at = dump_named("name-120.json", &"a".repeat(120));
    let past = dump_named("name-121.json", &"b".repeat(121));
    let out = command()
        .args(["baseline", p(&at), p(&past)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cpu = v["cpu"].as_str().unwrap();
    let names: Vec<&str> = cpu
        .strip_prefix("baseline of: ")
        .unwrap_or_else(|| panic!("{cpu}"))
        .split("; ")
        .collect();
    assert_eq!(
        names,
        ["a".repeat(120), format!("{}...", "b".repeat(120))],
        "{cpu}"
    );
    for (inputs, tail) in [(16, None), (17, Some("; and 1 more"))] {
        let args = vec![p(&at); inputs];
        let out = command().arg("baseline").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let cpu = v["cpu"].as_str().unwrap();
        assert_eq!(cpu.matches(&"a".repeat(120)).count(), 16, "{inputs}: {cpu}");
        match tail {
            Some(t) => assert!(cpu.ends_with(t), "{inputs}: {cpu}"),
            None => assert!(!cpu.contains("more"), "{inputs}: {cpu}"),
        }
    }
}

/// vmx-caps' `MAX_DUMP_BYTES` (1 MiB) through the binary: a dump of exactly 1 MiB (the
/// fixture padded with spaces) is read, one byte more is refused with status 2 and
/// "file too large".
#[test]
fn dump_size_limit_at_the_limit_and_one_past() {
    const LIMIT: usize = 1 << 20;
    let json = test_support::read_vmx_fixture("skylake-x-i7-7800x.json");
    for (len, status) in [(LIMIT, 0), (LIMIT + 1, 2)] {
        let mut padded = json.clone().into_bytes();
        padded.resize(len, b' ');
        let path = tmp(&format!("padded-{len}.json"));
        std::fs::write(&path, &padded).unwrap();
        let out = command().args(["--dump", p(&path)]).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(status),
            "{len}: {}",
            text(&out.stderr)
        );
        if status != 0 {
            let err = text(&out.stderr);
            assert!(err.contains("file too large"), "{err}");
            assert!(err.contains(&format!("more than {LIMIT} bytes")), "{err}");
        }
    }
}
