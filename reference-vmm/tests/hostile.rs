// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Hostile-guest scenarios that replay generated traces (issue 8): a notify
//! storm of a million exits, Heki denial storms under each `--heki-denial`
//! policy, and garbage `kvm_run` bytes. No /dev/kvm needed. The storms are
//! generated on the fly (never stored), and the bounded-memory checks compare
//! the peak RSS (`VmHWM`) of `reference-vmm replay -` subprocesses fed a small
//! and a huge storm.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use reference_vmm::action::Outcome;
use reference_vmm::config::{HekiDenialAction, Policy};
use reference_vmm::hostile::{
    garbage_trace, heki_denial_storm, notify_storm, triage, Generated, DENIAL_STORM_PREAMBLE,
};
use reference_vmm::replay::{replay, ReplayError};
use reference_vmm::stop::{StopCause, TripleFaultReason};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reference-vmm"))
}

/// Runs `reference-vmm replay - <args> --format json`, streaming `trace` into
/// its stdin from a thread; returns the exit status, the JSON report (if
/// any) and stderr.
fn replay_stdin(
    mut trace: Generated,
    args: &[&str],
) -> (Option<i32>, Option<serde_json::Value>, String) {
    let mut child = bin()
        .args(["replay", "-"])
        .args(args)
        .args(["--format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reference-vmm");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        // The child may stop reading early (e.g. at a shutdown): a broken pipe is fine.
        let _ = std::io::copy(&mut trace, &mut stdin);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer thread");
    let json = serde_json::from_slice(&out.stdout).ok();
    (
        out.status.code(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn peak_kib(v: &serde_json::Value) -> u64 {
    v["memory"]["peak_kib"]
        .as_u64()
        .expect("memory.peak_kib in the replay report")
}

/// Peak RSS allowed to differ between a 1000-exit and a huge storm: the
/// replay streams, so the footprint must not grow with the exit count.
const GROWTH_LIMIT_KIB: u64 = 1024;
/// Absolute ceiling on a storm replay's peak RSS.
const PEAK_LIMIT_KIB: u64 = 32 * 1024;

/// Replays `storm(1000)` and `storm(big)` (`what`: "notify storm", unit:
/// "exits") with `args`; both must exit 0 with a JSON report. Bounded memory:
/// the huge storm's peak RSS stays under [`PEAK_LIMIT_KIB`] and at most
/// [`GROWTH_LIMIT_KIB`] above the small one's. Returns the huge storm's report.
fn replay_in_bounded_memory(
    storm: fn(u64) -> Generated,
    big: u64,
    args: &[&str],
    what: &str,
    unit: &str,
) -> serde_json::Value {
    const SMALL: u64 = 1000;
    let (code, small_report, err) = replay_stdin(storm(SMALL), args);
    assert_eq!(code, Some(0), "{err}");
    let (code, big_report, err) = replay_stdin(storm(big), args);
    assert_eq!(code, Some(0), "{err}");
    let (small_report, big_report) = (small_report.expect("json"), big_report.expect("json"));
    let (s, b) = (peak_kib(&small_report), peak_kib(&big_report));
    println!("{what} peak RSS: {SMALL} {unit} {s} KiB, {big} {unit} {b} KiB");
    assert!(b < PEAK_LIMIT_KIB, "peak RSS {b} KiB");
    assert!(
        b <= s + GROWTH_LIMIT_KIB,
        "peak RSS grew from {s} KiB ({SMALL} {unit}) to {b} KiB ({big} {unit})"
    );
    big_report
}

#[test]
fn a_million_notify_exits_replay_in_bounded_memory_and_fire_the_storm_detector() {
    // Bounded memory: a thousand times more exits, (almost) the same peak RSS.
    let big = replay_in_bounded_memory(notify_storm, 1_000_000, &[], "notify storm", "exits");
    assert_eq!(big["outcome"], "halted");
    assert_eq!(big["notify"]["exits"], 1_000_000);
    assert_eq!(big["notify"]["resumed"], 1_000_000);
    assert_eq!(big["notify"]["invalid_contexts"], 0);
    assert_eq!(big["exits_total"], 1_000_001);
    // The storm detector fired, and the report says so.
    assert!(big["notify"]["storms"].as_u64().unwrap() >= 1, "{big}");
}

#[test]
fn heki_denial_storm_follows_each_policy_with_rate_limited_logs() {
    const N: u64 = 20_000;
    // The VMM binary's default filter: heki-policy counts a line as emitted only when
    // the logger shows it.
    test_support::install_warn_logger();
    let policy = |heki_denial| Policy {
        heki_denial,
        ..Policy::default()
    };

    // gp: every denial resumes (KVM injects #GP(0) on the next entry).
    let gp = replay(
        "gp",
        heki_denial_storm(N),
        policy(HekiDenialAction::Gp),
        None,
    )
    .unwrap()
    .report;
    assert_eq!(gp.outcome, Outcome::Halted, "{}", gp.reason);
    assert_eq!(gp.heki.denials, N);
    assert_eq!((gp.heki.denials_cr0, gp.heki.denials_cr4), (N / 2, N / 2));
    assert_eq!((gp.heki.audited, gp.heki.shutdowns), (0, 0));
    assert_eq!(gp.heki.configure_exits, 2);
    assert_eq!(gp.heki.pinned_cr0, "0x10000");
    assert_eq!(gp.heki.pinned_cr4, "0x300000");
    assert_eq!(gp.exits_total, N + 3);

    // audit: resumes too, and counts every denial as audited.
    let audit = replay(
        "audit",
        heki_denial_storm(N),
        policy(HekiDenialAction::Audit),
        None,
    )
    .unwrap()
    .report;
    assert_eq!(audit.outcome, Outcome::Halted);
    assert_eq!(audit.heki.denials, N);
    assert_eq!(audit.heki.audited, N);
    assert_eq!(audit.heki.shutdowns, 0);

    // Rate-limited logging: every exit is either logged or counted as
    // suppressed, and at most 10 lines are written per 5 s window.
    for r in [&gp, &audit] {
        let h = &r.heki;
        // The two configure lines are `info`: hidden by the warn filter.
        assert_eq!(h.logs_filtered, h.configure_exits);
        assert_eq!(h.logs_emitted + h.logs_suppressed, h.denials);
        let windows = 2 + (r.run_seconds / 5.0) as u64;
        assert!(
            h.logs_emitted <= 10 * windows,
            "{} log lines in {:.1} s",
            h.logs_emitted,
            r.run_seconds
        );
        assert!(h.logs_suppressed >= N - 10 * windows);
    }

    // shutdown: the first denial (exit #3, after the two configure exits)
    // synthesizes a triple fault; nothing after it is read.
    let shut = replay(
        "shutdown",
        heki_denial_storm(N),
        policy(HekiDenialAction::Shutdown),
        None,
    )
    .unwrap();
    let r = &shut.report;
    assert_eq!(r.outcome, Outcome::Shutdown);
    assert!(
        matches!(
            r.cause,
            StopCause::SynthesizedTripleFault {
                why: TripleFaultReason::HekiDenial { nth: 3, .. }
            }
        ),
        "{:?}",
        r.cause
    );
    // Every line after the terminating exit is counted as not replayed.
    // (the other N - 1 denials and the hlt).
    assert_eq!(r.lines_not_replayed, Some(N));
    assert_eq!((r.heki.denials, r.heki.shutdowns), (1, 1));
    assert_eq!(r.exits.get("shutdown"), Some(&1));
    assert_eq!(r.exits_total, DENIAL_STORM_PREAMBLE + 1);
    assert_eq!(
        shut.stand_in.recorded,
        vec![reference_vmm::replay::Recorded::TripleFault]
    );
}

#[test]
fn heki_denial_storm_replays_in_bounded_memory() {
    let big = replay_in_bounded_memory(
        heki_denial_storm,
        300_000,
        &["--heki-denial", "audit"],
        "heki denial storm",
        "denials",
    );
    assert_eq!(big["outcome"], "halted");
    assert_eq!(big["heki"]["denials"], 300_000);
    assert_eq!(big["heki"]["audited"], 300_000);
}

#[test]
fn every_garbage_line_gives_a_typed_error_or_a_defined_action() {
    for seed in [1, 2, 0xdead_beef] {
        let g = triage(seed, 2000);
        assert_eq!(g.panics, 0, "{:?}", g.examples);
        assert_eq!(g.unclear, 0, "{:?}", g.examples);
        assert_eq!(g.replays, 3 * 2000);
        assert_eq!(g.defined_actions() + g.typed_errors(), g.replays);
        // The generator reaches both sides: exits the VMM stops on (naming the
        // reason), exits it handles, and each family of typed errors.
        assert!(
            g.outcomes.get("unhandled-exit").is_some_and(|&n| n > 100),
            "{g:?}"
        );
        assert!(g.outcomes.contains_key("trace-end"), "{g:?}");
        for kind in ["json", "decode", "not-utf8", "bad-data", "too-long"] {
            assert!(g.errors.contains_key(kind), "no {kind} error: {g:?}");
        }
    }
}

#[test]
fn a_whole_garbage_trace_stops_at_its_first_bad_line_or_exit() {
    for seed in 0..30 {
        let mut text = Vec::new();
        garbage_trace(seed, 300).read_to_end(&mut text).unwrap();
        match replay("garbage", &text[..], Policy::default(), None) {
            Ok(r) => {
                let r = r.report;
                // An unhandled exit names its real number (never a sentinel).
                if let StopCause::UnhandledExit { exit_reason } = r.cause {
                    assert_ne!(exit_reason, u32::MAX);
                }
                assert_ne!(r.cause, StopCause::HekiExitWithoutAbi);
                assert!(r.exits_total <= 300);
            }
            Err(ReplayError::Trace(e)) => {
                assert!((1..=300).contains(&e.line), "seed {seed}: {e}");
                assert!(e.to_string().starts_with(&format!("line {}: ", e.line)));
            }
            Err(e) => panic!("seed {seed}: unexpected error {e}"),
        }
    }
}

#[test]
fn malformed_lines_give_a_line_numbered_error_and_exit_status_2() {
    const MALFORMED: [&str; 8] = [
        "{\"exit_reason\": 37, \"data\": \"0000",
        "{not json at all",
        "{\"exit_reason\": \"thirty-seven\"}",
        "{\"exit_reason\": 2, \"data\": \"zz\"}",
        "{\"exit_reason\": 2, \"data\": \"0103000000000000\"}",
        "{\"exit\": \"notify\", \"flags\": 4294967296}",
        "[1, 2, 3]",
        "\u{1}\u{2}garbage",
    ];
    let dir = std::env::temp_dir().join(format!("refvmm-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (k, bad) in MALFORMED.iter().enumerate() {
        // k valid notify exits (which resume), then the bad line, then more.
        let mut t = String::new();
        for _ in 0..k {
            t.push_str("{\"exit\": \"notify\", \"flags\": 0}\n");
        }
        t.push_str(bad);
        t.push_str("\n{\"exit\": \"hlt\"}\n");
        let p = dir.join(format!("bad{k}.jsonl"));
        std::fs::write(&p, &t).unwrap();
        let out = bin().args(["replay"]).arg(&p).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
        assert!(
            err.contains(&format!("line {}: ", k + 1)),
            "{bad}: error does not name line {}: {err}",
            k + 1
        );
        assert!(
            out.stdout.is_empty(),
            "a report was printed for a bad trace"
        );
    }
    // Invalid UTF-8 from stdin, after two good lines.
    let mut child = bin()
        .args(["replay", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"exit\": \"notify\"}\n\n{\"exit\": \xff\xfe}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 3: not UTF-8"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gen_trace_pipes_into_replay() {
    let out = bin()
        .args(["gen-trace", "garbage", "--seed", "7", "--count", "50"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut expected = Vec::new();
    garbage_trace(7, 50).read_to_end(&mut expected).unwrap();
    assert_eq!(
        out.stdout, expected,
        "gen-trace garbage is not the library's trace"
    );

    // The default seed is the demo's.
    let out = bin()
        .args(["gen-trace", "garbage", "--count", "20"])
        .output()
        .unwrap();
    let mut expected = Vec::new();
    garbage_trace(reference_vmm::demo::DEMO_GARBAGE_SEED, 20)
        .read_to_end(&mut expected)
        .unwrap();
    assert_eq!(out.stdout, expected);

    let out = bin()
        .args(["gen-trace", "notify-storm", "--count", "5"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 6);
    assert!(text.ends_with("{\"exit\": \"hlt\"}\n"));
}
