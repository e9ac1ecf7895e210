// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `reference-vmm` binary's contract, driven through the real binary:
//! exit statuses (0 success, 1 a run/check/write that failed, 2 bad usage or
//! input), one-line errors, failed writes to stdout/stderr, `--timeout`,
//! replay refusing flags it cannot honour, and replay's trace clock.

#[allow(dead_code)] // cli_contract uses only part of the shared helpers.
mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::{bin, kvm_or_skip};

fn dev_full() -> Stdio {
    Stdio::from(std::fs::File::create("/dev/full").expect("/dev/full"))
}

fn one_line(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes).into_owned();
    assert_eq!(s.trim_end().lines().count(), 1, "not one line: {s:?}");
    assert!(!s.contains("panicked"), "{s}");
    s
}

fn trace(name: &str) -> String {
    format!("{}/traces/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn help_documents_the_exit_statuses() {
    let out = bin().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Exit status:"), "{text}");
    for line in [
        "  0  success",
        "  1  a run, check or write failed",
        "  2  bad usage or input",
    ] {
        assert!(text.contains(line), "missing {line:?} in {text}");
    }
}

#[test]
fn a_failed_write_to_stdout_is_status_1_and_one_line_on_stderr() {
    // `caps`, `guests`, `plan` and `replay` all write their answer to stdout.
    let cmds: [&[&str]; 4] = [
        &["caps"],
        &["guests", "--source"],
        &["plan"],
        &["replay", &trace("notify-storm.jsonl")],
    ];
    for args in cmds {
        // RUST_LOG=off: the crates' own log lines (e.g. the storm warning)
        // are not what this checks.
        let out = bin()
            .args(args)
            .env("RUST_LOG", "off")
            .stdout(dev_full())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = one_line(&out.stderr);
        assert!(
            err.starts_with("error: writing to stdout: "),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_failed_write_to_stderr_puts_the_error_on_stdout() {
    let out = bin()
        .args(["replay", "/nonexistent/trace.jsonl"])
        .stderr(dev_full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let line = one_line(&out.stdout);
    assert!(line.starts_with("error: writing to stderr: "), "{line}");
    assert!(
        line.contains("cannot read trace /nonexistent/trace.jsonl"),
        "{line}"
    );
}

#[test]
fn a_closed_stdout_pipe_stays_quiet() {
    let mut child = bin()
        .args(["gen-trace", "notify-storm", "--count", "1000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn a_missing_argument_is_named_on_the_one_line() {
    let out = bin().args(["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = one_line(&out.stderr);
    assert!(err.contains("--guest"), "{err}");
}

#[test]
fn replay_refuses_flags_it_cannot_honour() {
    for (flag, value) in [("--heki-exits", "denial"), ("--notify-vmexit", "disable")] {
        let out = bin()
            .args(["replay", &trace("notify-storm.jsonl"), flag, value])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = one_line(&out.stderr);
        assert!(err.contains(&format!("cannot honour {flag}")), "{err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn timeout_takes_a_plain_positive_number_of_seconds() {
    for bad in ["+1", "-1", "0", "1e3", "ten", "100000"] {
        for cmd in [&["run", "--guest", "halt"][..], &["demo"][..]] {
            let out = bin().args(cmd).args(["--timeout", bad]).output().unwrap();
            assert_eq!(out.status.code(), Some(2), "{cmd:?} --timeout {bad}");
            assert!(out.stdout.is_empty());
            one_line(&out.stderr);
        }
    }
}

fn replay_piped(text: &str, delay: std::time::Duration) -> Output {
    let mut child = bin()
        .args(["replay", "-", "--format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in text.lines() {
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(delay);
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn a_replay_is_the_same_from_a_file_and_from_a_slow_pipe() {
    // 150 notify exits without "t_ns": 1 µs of trace time apart, a storm by
    // notify-exit's detector (100 per second). Fed 12 ms a line the wall
    // clock would see 83 per second: no storm. Replay uses trace time.
    let mut text: String = (0..150).map(|_| "{\"exit\": \"notify\"}\n").collect();
    text.push_str("{\"exit\": \"hlt\"}\n");
    let dir = std::env::temp_dir().join(format!("rvmm-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("storm.jsonl");
    std::fs::write(&file, &text).unwrap();
    let from_file = bin()
        .args(["replay", file.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    let from_pipe = replay_piped(&text, std::time::Duration::from_millis(12));
    let _ = std::fs::remove_dir_all(&dir);
    let a: serde_json::Value = serde_json::from_slice(&from_file.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&from_pipe.stdout).unwrap();
    assert_eq!(a["notify"]["storms"], 1);
    for key in ["notify", "heki", "exits", "cause", "outcome"] {
        assert_eq!(a[key], b[key], "{key}");
    }
}

#[test]
fn replay_reports_the_lines_after_the_stop_as_not_replayed() {
    let mut child = bin()
        .args(["replay", "-", "--format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"{\"exit\": \"hlt\"}\n{\"exit\": \"hlt\"}\n{\"exit\": \"notify\"}\n")
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["exits_total"], 1);
    assert_eq!(v["lines_not_replayed"], 2);
}

#[test]
fn a_run_that_times_out_is_status_1_with_the_vcpu_state() {
    if !kvm_or_skip() {
        return;
    }
    // Without the timeout this would run for hours (issue 13).
    let out = bin()
        .args([
            "run",
            "--guest",
            "pio-loop",
            "--count",
            "18446744073709551615",
            "--timeout",
            "0.5",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "timeout");
    assert_eq!(v["cause"]["kind"], "timeout");
    assert_eq!(v["cause"]["after_ms"], 500);
    // The vCPU is somewhere in the pio-loop guest, loaded at 0x10000.
    let rip = v["cause"]["vcpu"]["rip"].as_u64().unwrap();
    assert!((0x10000..0x11000).contains(&rip), "rip 0x{rip:x}");
}

#[test]
fn a_bad_vcpu_count_is_usage_not_a_failed_run() {
    if !kvm_or_skip() {
        return;
    }
    let out = bin()
        .args(["run", "--guest", "irq-storm", "--vcpus", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    one_line(&out.stderr);
}

#[test]
fn a_guest_run_whose_report_cannot_be_written_is_status_1() {
    if !kvm_or_skip() {
        return;
    }
    let out = bin()
        .args(["run", "--guest", "halt"])
        .env("RUST_LOG", "off")
        .stdout(dev_full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = one_line(&out.stderr);
    assert!(err.starts_with("error: writing to stdout: "), "{err}");
}

#[test]
fn numbers_take_no_sign() {
    // clap's ranged parsers (`value_parser!(u64).range(..)`) take `+5`: the
    // ranged flags are parsed as strictly as the others.
    let cases: [&[&str]; 10] = [
        &["gen-trace", "garbage", "--count", "+1"],
        &["gen-trace", "garbage", "--seed", "+7"],
        &["plan", "--notify-window", "+5"],
        &["plan", "--notify-window", "4294967296"],
        &["plan", "--vcpus", "+1"],
        &["plan", "--mem-mib", "+2"],
        &["run", "--guest", "irq-storm", "--snapshot-every", "+5"],
        &["run", "--guest", "timer", "--rate", "+5"],
        &["resume", "x.json", "--snapshot-every", "+5"],
        &[
            "run",
            "--guest",
            "irq-storm",
            "--snapshot-every",
            "18446744073709551616",
        ],
    ];
    for args in cases {
        let out = bin().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        one_line(&out.stderr);
    }
}

#[test]
fn a_trace_field_of_another_kind_is_a_line_numbered_usage_error() {
    let mut child = bin()
        .args(["replay", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Line 1 starts with a BOM (skipped, as vmxcap does); line 2 gives `hlt` a port.
    stdin
        .write_all(b"\xef\xbb\xbf{\"exit\": \"notify\"}\n{\"exit\": \"hlt\", \"port\": 96}\n")
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = one_line(&out.stderr);
    assert!(
        err.contains("line 2: \"port\" does not belong to a hlt line"),
        "{err}"
    );
}

/// "logs emitted" in the report is the number of heki-policy lines that reached
/// stderr, at the active log level: with the default filter (`warn`) the two Heki
/// configure lines (`info`) are hidden and counted as filtered; with `RUST_LOG=info`
/// they are written and counted as emitted; with `RUST_LOG=off` nothing is.
#[test]
fn heki_logs_emitted_are_the_lines_on_stderr_at_the_active_level() {
    let gen = bin()
        .args(["gen-trace", "heki-denial-storm", "--count", "4"])
        .output()
        .unwrap();
    assert_eq!(gen.status.code(), Some(0));
    let dir = std::env::temp_dir().join(format!("rvmm-heki-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("heki.jsonl");
    std::fs::write(&path, &gen.stdout).unwrap();
    // (RUST_LOG, lines expected on stderr, filtered): 2 configure + 4 denials.
    for (rust_log, lines, filtered) in [(None, 4, 2), (Some("info"), 6, 0), (Some("off"), 0, 6)] {
        let mut cmd = bin();
        cmd.args(["replay", "--format", "json", "--heki-denial", "audit"])
            .arg(&path)
            .env_remove("RUST_LOG");
        if let Some(level) = rust_log {
            cmd.env("RUST_LOG", level);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{rust_log:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let written = stderr.lines().filter(|l| l.contains(" heki] ")).count() as u64;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let heki = &report["heki"];
        assert_eq!(heki["audited"], 4, "{report}");
        assert_eq!(written, lines, "{rust_log:?}: {stderr}");
        assert_eq!(heki["logs_emitted"], written, "{rust_log:?}: {heki}");
        assert_eq!(heki["logs_suppressed"], 0, "{rust_log:?}: {heki}");
        assert_eq!(heki["logs_filtered"], filtered, "{rust_log:?}: {heki}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
