// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The shipped example traces through `replay` (binary and library), and the
//! command line's error handling. No /dev/kvm needed.

use std::process::Command;

use reference_vmm::action::Outcome;
use reference_vmm::config::{HekiDenialAction, NotifyMode, Policy};
use reference_vmm::exit::HekiAbi;
use reference_vmm::replay::{replay, Recorded};
use reference_vmm::stop::{StopCause, TripleFaultReason};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reference-vmm"))
}

fn trace(name: &str) -> String {
    format!("{}/traces/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `replay ARGS --format json`, expecting exit status 0 (the run succeeded).
fn replay_json(args: &[&str]) -> serde_json::Value {
    replay_json_status(args, 0)
}

/// `replay ARGS --format json`, expecting exit `status`: 0 for a trace that
/// halts, shuts down or ends; 1 for a replayed run that failed (unhandled
/// exit, internal error, ...).
fn replay_json_status(args: &[&str], status: i32) -> serde_json::Value {
    let out = bin()
        .arg("replay")
        .args(args)
        .args(["--format", "json"])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(status),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn notify_storm_resumes_every_exit_and_detects_the_storm() {
    let v = replay_json(&[&trace("notify-storm.jsonl")]);
    assert_eq!(v["source"], "replay");
    assert_eq!(v["outcome"], "halted");
    assert_eq!(v["notify"]["exits"], 1000);
    assert_eq!(v["notify"]["resumed"], 1000);
    assert_eq!(v["notify"]["invalid_contexts"], 0);
    assert!(v["notify"]["storms"].as_u64().unwrap() >= 1);
    assert_eq!(v["exits_total"], 1001);
}

#[test]
fn notify_invalid_context_shuts_down_in_run_mode() {
    let text = std::fs::read_to_string(trace("notify-invalid-context.jsonl")).unwrap();
    let r = replay("t", text.as_bytes(), Policy::default(), None).unwrap();
    assert_eq!(r.report.outcome, Outcome::Shutdown);
    assert_eq!(
        r.report.cause,
        StopCause::SynthesizedTripleFault {
            why: TripleFaultReason::NotifyInvalidContext { nth: 4 }
        }
    );
    assert_eq!(r.report.notify.invalid_contexts, 1);
    assert_eq!(r.report.notify.resumed, 2);
    assert_eq!(r.stand_in.recorded, vec![Recorded::TripleFault]);
    // The stand-in turned the pending triple fault into KVM_EXIT_SHUTDOWN.
    assert_eq!(r.report.exits.get("shutdown"), Some(&1));
}

#[test]
fn notify_invalid_context_is_an_internal_error_in_internal_error_mode() {
    // A run stopped as an internal error failed: exit status 1.
    let v = replay_json_status(
        &[
            &trace("notify-invalid-context.jsonl"),
            "--notify-vmexit",
            "internal-error",
        ],
        1,
    );
    assert_eq!(v["cause"]["kind"], "notify-internal-error");
    assert_eq!(v["outcome"], "internal-error");
    assert_eq!(v["notify"]["mode"], "internal-error");
    assert_eq!(v["notify"]["exits"], 3);
}

#[test]
fn heki_pins_are_mirrored_and_the_denial_follows_the_policy() {
    let text = std::fs::read_to_string(trace("heki-pin-denial.jsonl")).unwrap();
    let r = replay("t", text.as_bytes(), Policy::default(), None)
        .unwrap()
        .report;
    assert_eq!(r.outcome, Outcome::Halted);
    assert_eq!(r.heki.abi, HekiAbi::RfcV2);
    assert_eq!(r.heki.pinned_cr0, "0x10000");
    assert_eq!(r.heki.pinned_cr4, "0x300000");
    assert_eq!(r.heki.configure_exits, 2);
    assert_eq!(r.heki.denials, 1);

    let shut = Policy {
        heki_denial: HekiDenialAction::Shutdown,
        ..Policy::default()
    };
    let r = replay("t", text.as_bytes(), shut, None).unwrap().report;
    assert_eq!(r.outcome, Outcome::Shutdown);
    assert!(
        matches!(
            r.cause,
            StopCause::SynthesizedTripleFault {
                why: TripleFaultReason::HekiDenial { nth: 4, .. }
            }
        ),
        "{:?}",
        r.cause
    );

    // Without a Heki ABI exit 39 is what upstream says: KVM_EXIT_MEMORY_FAULT.
    let v = replay_json_status(&[&trace("heki-pin-denial.jsonl"), "--heki-abi", "none"], 1);
    assert_eq!(v["outcome"], "unhandled-exit");
    assert_eq!(v["cause"]["kind"], "unhandled-exit");
    assert_eq!(v["cause"]["exit_reason"], 39);
    assert_eq!(v["heki"]["configure_exits"], 0);
}

#[test]
fn internal_error_mode_via_library_matches_binary() {
    let text = std::fs::read_to_string(trace("notify-invalid-context.jsonl")).unwrap();
    let p = Policy {
        notify_mode: NotifyMode::InternalError,
        ..Policy::default()
    };
    let r = replay("t", text.as_bytes(), p, None).unwrap().report;
    assert_eq!(r.outcome, Outcome::InternalError);
}

fn usage_error(args: &[&str]) -> String {
    let out = bin().args(args).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "args {args:?}");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    err
}

#[test]
fn invalid_usage_is_one_line_and_exit_status_2() {
    assert!(usage_error(&[
        "run",
        "--guest",
        "pio-loop",
        "--notify-window",
        "4294967296"
    ])
    .contains("notify-window"));
    assert!(
        usage_error(&["run", "--guest", "pio-loop", "--notify-vmexit", "sometimes"])
            .contains("sometimes")
    );
    assert!(usage_error(&["run", "--guest", "nope"]).contains("nope"));
    assert!(usage_error(&["replay", "/nonexistent/trace.jsonl"]).contains("cannot read trace"));
    assert!(usage_error(&["frobnicate"]).contains("frobnicate"));
}

#[test]
fn malformed_trace_names_the_line() {
    let dir = std::env::temp_dir().join(format!("refvmm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.jsonl");
    std::fs::write(
        &p,
        "{\"exit\": \"notify\"}\n{\"exit_reason\": 2, \"data\": \"0103\"}\n",
    )
    .unwrap();
    let err = usage_error(&["replay", p.to_str().unwrap()]);
    assert!(err.contains("line 2"), "{err}");
    std::fs::write(&p, "garbage\n").unwrap();
    assert!(usage_error(&["replay", p.to_str().unwrap()]).contains("line 1"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plan_lists_each_enable_cap_without_a_vm() {
    let out = bin()
        .args([
            "plan",
            "--notify-window",
            "4096",
            "--heki-abi",
            "rfc-v3",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let caps = v["enable_caps"].as_array().unwrap();
    let notify = caps.iter().find(|c| c["cap"] == 219).expect("cap 219");
    assert_eq!(notify["name"], "KVM_CAP_X86_NOTIFY_VMEXIT");
    assert_eq!(notify["arg"], "0x100000000003"); // (4096 << 32) | ENABLED | USER
    assert!(notify["supported"].is_boolean());
    assert!(caps.iter().any(|c| c["cap"] == 218));
    // Heki v3 caps are listed but never enabled on a host without Heki.
    let heki = caps.iter().find(|c| c["cap"] == 237).expect("cap 237");
    assert_eq!(heki["enable"], false);
    assert!(heki["warning"]
        .as_str()
        .unwrap()
        .contains("KVM_CAP_X86_APIC_BUS_CYCLES_NS"));
}

#[test]
fn guests_lists_one_line_each() {
    let out = bin().arg("guests").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().count(),
        reference_vmm::guests::Guest::ALL.len()
    );
    assert!(text.lines().any(|l| l.starts_with("irq-storm")));
    assert!(text.lines().any(|l| l.starts_with("timer")));
}

/// A reader that produces `n` copies of `line` without holding them in memory.
struct Repeat {
    line: &'static [u8],
    left: u64,
    pos: usize,
    tail: &'static [u8],
}

impl std::io::Read for Repeat {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let src = if self.left > 0 { self.line } else { self.tail };
            if self.left == 0 && self.pos >= src.len() {
                break;
            }
            let k = (src.len() - self.pos).min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&src[self.pos..self.pos + k]);
            n += k;
            self.pos += k;
            if self.pos == src.len() && self.left > 0 {
                self.left -= 1;
                self.pos = 0;
            }
        }
        Ok(n)
    }
}

#[test]
fn a_million_notify_exits_replay_in_constant_memory() {
    let input = std::io::BufReader::new(Repeat {
        line: b"{\"exit_reason\": 37, \"data\": \"00000000\"}\n",
        left: 1_000_000,
        pos: 0,
        tail: b"{\"exit\": \"hlt\"}\n",
    });
    let r = replay("storm", input, Policy::default(), None).unwrap();
    assert_eq!(r.report.outcome, Outcome::Halted);
    assert_eq!(r.report.notify.exits, 1_000_000);
    assert_eq!(r.report.notify.resumed, 1_000_000);
    assert!(r.report.notify.storms >= 1);
    assert!(r.report.notify.in_storm_at_end);
    // Nothing per exit is kept: the stand-in only records actions, and valid
    // notify exits produce none. The peak RSS of the same storm is measured in
    // tests/hostile.rs (a subprocess fed a generated million-exit storm).
    assert!(r.stand_in.recorded.is_empty());
    assert_eq!(r.stand_in.applied, 0);
}

#[test]
fn a_guest_triple_faulting_on_its_own_is_a_reported_shutdown() {
    let r = replay(
        "t",
        "{\"exit\": \"shutdown\"}\n".as_bytes(),
        Policy::default(),
        None,
    )
    .unwrap()
    .report;
    assert_eq!(r.outcome, Outcome::Shutdown);
    assert_eq!(r.cause, StopCause::GuestTripleFault { vcpu: None });
    // A sync request for a triple fault goes through the stand-in like on KVM.
    let t = "{\"exit\": \"io_out\", \"port\": 225, \"data\": [4]}\n{\"exit\": \"hlt\"}\n";
    let r = replay("t", t.as_bytes(), Policy::default(), None).unwrap();
    assert_eq!(r.report.outcome, Outcome::Shutdown);
    assert_eq!(r.stand_in.recorded, vec![Recorded::TripleFault]);
}

#[test]
fn a_replayed_in_reads_what_the_decide_step_answers() {
    // irq-flood's status port (0xe2) reads 1 once nothing is left to deliver
    // (a replay raises nothing); any other port reads 0. The value comes from
    // the same handler on KVM and in replay (handlers::pio::in_value).
    let t = "{\"exit\": \"io_in\", \"port\": 226, \"size\": 1}\n\
             {\"exit_reason\": 2, \"data\": \"00046000010000000000000000000000\"}\n\
             {\"exit\": \"hlt\"}\n";
    let r = replay("t", t.as_bytes(), Policy::default(), None).unwrap();
    assert_eq!(r.report.outcome, Outcome::Halted);
    assert_eq!(r.report.exits.get("io_in"), Some(&2));
    assert_eq!(
        r.stand_in.recorded,
        vec![
            Recorded::Read {
                port: 0xe2,
                value: 1
            },
            Recorded::Read {
                port: 0x60,
                value: 0
            },
        ]
    );
}

#[test]
fn a_denial_with_an_unknown_reason_is_shown_and_names_are_escaped() {
    // Heki RFC v2 denial with reason 0x4000 (neither the CR0 nor the CR4 bit).
    let t = "{\"abi\": \"rfc-v2\"}\n\
             {\"exit\": \"heki_denial\", \"reason\": \"0x4000\", \"cr_value\": \"0x0\"}\n\
             {\"exit\": \"hlt\"}\n";
    let r = replay("evil\x1b[2J\nname", t.as_bytes(), Policy::default(), None)
        .unwrap()
        .report;
    assert_eq!(r.heki.denials, 1);
    assert_eq!(r.heki.denials_unknown, 1);
    let text = r.to_text();
    assert!(text.contains("other 1"), "{text}");
    assert!(text.starts_with("evil\\x1b[2J\\nname (replayed)"), "{text}");
    assert!(!text.contains('\x1b'));
}

#[test]
fn an_abi_override_warns() {
    let text = std::fs::read_to_string(trace("heki-pin-denial.jsonl")).unwrap();
    let r = replay(
        "t",
        text.as_bytes(),
        Policy::default(),
        Some(HekiAbi::RfcV3),
    )
    .unwrap()
    .report;
    assert_eq!(r.heki.abi, HekiAbi::RfcV3);
    assert!(
        r.warnings
            .iter()
            .any(|w| w == "--heki-abi rfc-v3 overrides the trace's abi line (rfc-v2)"),
        "{:?}",
        r.warnings
    );
    // The same ABI as the trace's line: nothing to warn about.
    let r = replay(
        "t",
        text.as_bytes(),
        Policy::default(),
        Some(HekiAbi::RfcV2),
    )
    .unwrap()
    .report;
    assert!(r.warnings.iter().all(|w| !w.contains("overrides")));
}

/// Both notify semantics by name, through the binary, on a trace with valid-context
/// exits #2 and #3 and an invalid context at #4 (then hlt):
/// `--notify-semantics seed` (the default) follows the seed QEMU patch, `qemu-7.2`
/// follows QEMU 7.2's `kvm_arch_handle_exit` (target/i386/kvm/kvm.c, case
/// KVM_EXIT_NOTIFY: `ctx_invalid || mode == internal-error` -> internal error).
/// One row of [`notify_semantics_by_name_decide_as_their_tables_say`].
struct SemanticsCase {
    mode: &'static str,
    semantics: &'static str,
    status: i32,
    outcome: &'static str,
    kind: &'static str,
    /// The exit that stops the run (1-based).
    nth: u64,
    /// Notify exits handled.
    exits: u64,
    /// notify-exit's `StopReason` (`None`: a synthesized triple fault).
    reason: Option<&'static str>,
}

#[test]
fn notify_semantics_by_name_decide_as_their_tables_say() {
    let t = trace("notify-invalid-context.jsonl");
    let stop = |mode, semantics, nth, exits, reason| SemanticsCase {
        mode,
        semantics,
        status: 1,
        outcome: "internal-error",
        kind: "notify-internal-error",
        nth,
        exits,
        reason: Some(reason),
    };
    let cases = [
        SemanticsCase {
            mode: "run",
            semantics: "seed",
            status: 0,
            outcome: "shutdown",
            kind: "synthesized-triple-fault",
            nth: 4,
            exits: 3,
            reason: None,
        },
        stop("run", "qemu-7.2", 4, 3, "ContextInvalidInRunMode"),
        stop("internal-error", "seed", 4, 3, "ContextInvalid"),
        stop("internal-error", "qemu-7.2", 2, 1, "InternalErrorMode"),
    ];
    for c in cases {
        let v = replay_json_status(
            &[
                &t,
                "--notify-vmexit",
                c.mode,
                "--notify-semantics",
                c.semantics,
            ],
            c.status,
        );
        let what = format!("{} {}: {v}", c.mode, c.semantics);
        assert_eq!(v["outcome"], c.outcome, "{what}");
        assert_eq!(v["cause"]["kind"], c.kind, "{what}");
        assert_eq!(v["notify"]["semantics"], c.semantics, "{what}");
        assert_eq!(v["notify"]["exits"], c.exits, "{what}");
        match c.reason {
            None => assert_eq!(v["cause"]["why"]["nth"], c.nth, "{what}"),
            Some(reason) => {
                assert_eq!(v["cause"]["nth"], c.nth, "{what}");
                assert_eq!(v["cause"]["reason"], reason, "{what}");
            }
        }
    }
    // The default is seed, and an unknown name is a one-line usage error.
    let v = replay_json_status(&[&t], 0);
    assert_eq!(v["notify"]["semantics"], "seed");
    let err = usage_error(&["replay", &t, "--notify-semantics", "qemu"]);
    assert!(err.contains("seed, qemu-7.2"), "{err}");
}
