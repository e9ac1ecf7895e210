// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `demo`: the host section, then every scenario with its expected outcome
//! and PASS/FAIL. Scenarios are either a `run` on /dev/kvm or a `replay` of an
//! embedded trace (for exits this host's KVM cannot produce).

use std::time::Instant;

use serde::Serialize;

use crate::action::Outcome;
use crate::cli::Format;
use crate::config::{HekiDenialAction, NotifyMode, Policy, RunConfig};
use crate::exit::HekiAbi;
use crate::guests::Guest;
use crate::report::{Report, Source};
use crate::vmm::KvmRun;

/// Example trace: a storm of valid-context notify exits, then `hlt`.
pub const TRACE_NOTIFY_STORM: &str = include_str!("../traces/notify-storm.jsonl");
/// Example trace: notify exits, one with `KVM_NOTIFY_CONTEXT_INVALID`.
pub const TRACE_NOTIFY_INVALID: &str = include_str!("../traces/notify-invalid-context.jsonl");
/// Example trace: Heki (RFC v2) CR pins, then a denial.
pub const TRACE_HEKI_PIN_DENIAL: &str = include_str!("../traces/heki-pin-denial.jsonl");

/// Report of a KVM run.
pub fn kvm_report(cfg: &RunConfig, run: KvmRun) -> Report {
    let host_notify = run
        .caps
        .iter()
        .find(|c| c.cap == crate::plan::KVM_CAP_X86_NOTIFY_VMEXIT)
        .map(|c| c.supported);
    Report::build(
        cfg.guest.name(),
        Source::Kvm,
        &run.state,
        &run.stop,
        Some(run.startup.as_micros() as u64),
        run.run_time.as_secs_f64(),
        host_notify,
        run.caps,
        run.warnings,
    )
}

/// What a scenario runs.
#[derive(Clone, Debug)]
pub enum ScenarioKind {
    /// A guest on /dev/kvm.
    Run(RunConfig),
    /// An embedded trace through the stand-in.
    Replay {
        /// Trace file name (for the report).
        trace: &'static str,
        /// Its text.
        text: &'static str,
        /// Policy.
        policy: Policy,
        /// `--heki-abi`, if given.
        abi: Option<HekiAbi>,
    },
}

/// A check on a report: `Err(what is wrong)`.
pub type Check = fn(&Report) -> Result<(), String>;

/// One demo scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name.
    pub name: &'static str,
    /// What it runs.
    pub kind: ScenarioKind,
    /// Expected outcome.
    pub expect: Outcome,
    /// An outcome also accepted, with why (a host quirk, reported as such).
    pub also_accept: Option<(Outcome, &'static str)>,
    /// What else is expected, in words.
    pub expect_text: &'static str,
    /// Further checks.
    pub checks: Check,
}

fn ok(_: &Report) -> Result<(), String> {
    Ok(())
}

fn want(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn exits(r: &Report, kind: &str) -> u64 {
    r.exits.get(kind).copied().unwrap_or(0)
}

/// The count the demo's pio-loop uses.
pub const DEMO_PIO_COUNT: u64 = 100_000;
/// The count the demo's irq-storm uses.
pub const DEMO_IRQ_COUNT: u64 = 10_000;

/// Every demo scenario.
pub fn scenarios() -> Vec<Scenario> {
    let run = |g: Guest, count: u64| {
        let mut c = RunConfig::new(g);
        c.count = count;
        c
    };
    let p = Policy::default();
    let replay = |trace, text, policy, abi| ScenarioKind::Replay {
        trace,
        text,
        policy,
        abi,
    };
    vec![
        Scenario {
            name: "pio-loop",
            kind: ScenarioKind::Run(run(Guest::PioLoop, DEMO_PIO_COUNT)),
            expect: Outcome::Halted,
            also_accept: None,
            expect_text: "100000 io_out exits then hlt",
            checks: |r| {
                want(
                    exits(r, "io_out") == DEMO_PIO_COUNT && exits(r, "hlt") == 1,
                    || format!("exits {:?}", r.exits),
                )
            },
        },
        Scenario {
            name: "halt",
            kind: ScenarioKind::Run(run(Guest::Halt, 0)),
            expect: Outcome::Halted,
            also_accept: None,
            expect_text: "one hlt exit; start-up time reported",
            checks: |r| {
                want(r.exits_total == 1 && r.startup_us.is_some(), || {
                    "not a single hlt".into()
                })
            },
        },
        Scenario {
            name: "irq-storm",
            kind: ScenarioKind::Run(run(Guest::IrqStorm, DEMO_IRQ_COUNT)),
            expect: Outcome::Halted,
            also_accept: None,
            expect_text: "delivered = requested = injected = 10000, delivered_while_masked = 0",
            checks: |r| {
                let i = r.interrupts.ok_or("no interrupts section")?;
                want(
                    i.requested == DEMO_IRQ_COUNT
                        && i.injected == DEMO_IRQ_COUNT
                        && i.delivered == Some(DEMO_IRQ_COUNT)
                        && i.delivered_while_masked == Some(0),
                    || format!("{i:?}"),
                )
            },
        },
        Scenario {
            name: "exceptions",
            kind: ScenarioKind::Run(run(Guest::Exceptions, 0)),
            expect: Outcome::Halted,
            also_accept: None,
            expect_text: "guest received #GP(err), #PF(err, CR2) and one NMI exactly as injected",
            checks: |r| {
                let e = r.exceptions.ok_or("no exceptions section")?;
                want(e.received == Some(e.expected), || {
                    format!("received {:?}", e.received)
                })
            },
        },
        Scenario {
            name: "triple-fault",
            kind: ScenarioKind::Run(run(Guest::TripleFault, 0)),
            expect: Outcome::Shutdown,
            also_accept: None,
            expect_text: "KVM_EXIT_SHUTDOWN after the synthesized triple fault",
            checks: |r| want(exits(r, "shutdown") == 1, || "no shutdown exit".into()),
        },
        Scenario {
            name: "heki-probe",
            kind: ScenarioKind::Run({
                let mut c = run(Guest::HekiProbe, 0);
                c.timeout = Some(std::time::Duration::from_millis(300));
                c
            }),
            expect: Outcome::Halted,
            also_accept: Some((Outcome::Timeout, "vmcall")),
            expect_text: "the host's answer is shown (upstream KVM: -KVM_ENOSYS = -1000 twice; \
                          a nested host may never complete the vmcall: reported as such)",
            checks: |r| {
                if r.outcome == Outcome::Timeout {
                    return Ok(());
                }
                let h = r.heki_probe.as_ref().ok_or("no heki_probe section")?;
                want(
                    h.version_query_rax.is_some() && h.lock_cr4_rax.is_some(),
                    || "the guest did not report both answers".into(),
                )
            },
        },
        Scenario {
            name: "notify-storm",
            kind: replay("traces/notify-storm.jsonl", TRACE_NOTIFY_STORM, p, None),
            expect: Outcome::Halted,
            also_accept: None,
            expect_text: "1000 valid notify exits resumed; notify-exit's storm detector fires",
            checks: |r| {
                let n = &r.notify;
                want(
                    n.exits == 1000 && n.resumed == 1000 && n.storms >= 1,
                    || format!("{n:?}"),
                )
            },
        },
        Scenario {
            name: "notify-invalid (run)",
            kind: replay(
                "traces/notify-invalid-context.jsonl",
                TRACE_NOTIFY_INVALID,
                p,
                None,
            ),
            expect: Outcome::Shutdown,
            also_accept: None,
            expect_text: "invalid context -> triple fault synthesized (vcpu-events) -> shutdown",
            checks: |r| {
                want(
                    r.notify.invalid_contexts == 1 && r.reason.contains("CONTEXT_INVALID"),
                    || r.reason.clone(),
                )
            },
        },
        Scenario {
            name: "notify-invalid (internal-error)",
            kind: replay(
                "traces/notify-invalid-context.jsonl",
                TRACE_NOTIFY_INVALID,
                Policy {
                    notify_mode: NotifyMode::InternalError,
                    ..p
                },
                None,
            ),
            expect: Outcome::InternalError,
            also_accept: None,
            expect_text: "--notify-vmexit internal-error: the first notify exit stops the VM",
            checks: ok,
        },
        Scenario {
            name: "heki pin+denial (gp)",
            kind: replay(
                "traces/heki-pin-denial.jsonl",
                TRACE_HEKI_PIN_DENIAL,
                p,
                None,
            ),
            expect: Outcome::Halted,
            also_accept: None,
            expect_text: "pins mirrored (CR0.WP, CR4.SMEP|SMAP), denial resumed (KVM injects #GP)",
            checks: |r| {
                let h = &r.heki;
                want(
                    h.abi == HekiAbi::RfcV2
                        && h.configure_exits == 2
                        && h.denials == 1
                        && h.pinned_cr0 == "0x10000"
                        && h.pinned_cr4 == "0x300000",
                    || format!("{h:?}"),
                )
            },
        },
        Scenario {
            name: "heki pin+denial (shutdown)",
            kind: replay(
                "traces/heki-pin-denial.jsonl",
                TRACE_HEKI_PIN_DENIAL,
                Policy {
                    heki_denial: HekiDenialAction::Shutdown,
                    ..p
                },
                None,
            ),
            expect: Outcome::Shutdown,
            also_accept: None,
            expect_text: "--heki-denial shutdown: triple fault synthesized on the denial",
            checks: |r| want(r.heki.denials == 1, || format!("{:?}", r.heki)),
        },
        Scenario {
            name: "heki trace, --heki-abi none",
            kind: replay(
                "traces/heki-pin-denial.jsonl",
                TRACE_HEKI_PIN_DENIAL,
                p,
                Some(HekiAbi::None),
            ),
            expect: Outcome::UnhandledExit,
            also_accept: None,
            expect_text: "exit 39 is upstream KVM_EXIT_MEMORY_FAULT without a Heki ABI",
            checks: |r| {
                want(r.reason.contains("KVM_EXIT_MEMORY_FAULT"), || {
                    r.reason.clone()
                })
            },
        },
    ]
}

/// One scenario's result.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    /// Name.
    pub name: &'static str,
    /// `kvm` or `replayed`.
    pub source: Source,
    /// Expected outcome.
    pub expected_outcome: Outcome,
    /// Expected, in words.
    pub expected: &'static str,
    /// Also accepted (outcome, where), if the scenario allows a host quirk.
    #[serde(skip)]
    pub also_accept: Option<(Outcome, &'static str)>,
    /// Passed.
    pub passed: bool,
    /// What failed.
    pub failures: Vec<String>,
    /// The run's report (None if the run could not start).
    pub report: Option<Report>,
}

/// Runs one scenario.
pub fn run_scenario(s: &Scenario) -> ScenarioResult {
    let (source, report) = match &s.kind {
        ScenarioKind::Run(cfg) => (
            Source::Kvm,
            crate::vmm::run(cfg, Instant::now())
                .map(|r| kvm_report(cfg, r))
                .map_err(|e| e.to_string()),
        ),
        ScenarioKind::Replay {
            trace,
            text,
            policy,
            abi,
        } => (
            Source::Replay,
            crate::replay::replay(trace, text.as_bytes(), *policy, *abi)
                .map(|r| r.report)
                .map_err(|e| e.to_string()),
        ),
    };
    let mut failures = Vec::new();
    let report = match report {
        Ok(r) => {
            let accepted = s
                .also_accept
                .is_some_and(|(o, needle)| r.outcome == o && r.reason.contains(needle));
            if r.outcome != s.expect && !accepted {
                failures.push(format!(
                    "outcome {} (expected {}): {}",
                    r.outcome.name(),
                    s.expect.name(),
                    r.reason
                ));
            } else if let Err(e) = (s.checks)(&r) {
                failures.push(e);
            }
            Some(r)
        }
        Err(e) => {
            failures.push(e);
            None
        }
    };
    ScenarioResult {
        name: s.name,
        source,
        expected_outcome: s.expect,
        expected: s.expect_text,
        also_accept: s.also_accept,
        passed: failures.is_empty(),
        failures,
        report,
    }
}

fn detail(r: &Report) -> String {
    if matches!(r.outcome, Outcome::Timeout | Outcome::UnhandledExit) {
        return r.reason.clone();
    }
    if let Some(i) = &r.interrupts {
        return format!(
            "vcpu-events injector: requested={} injected={} windows={}; guest: delivered={} while_masked={}",
            i.requested,
            i.injected,
            i.windows_requested,
            i.delivered.map_or("-".into(), |v| v.to_string()),
            i.delivered_while_masked.map_or("-".into(), |v| v.to_string())
        );
    }
    if let Some(e) = &r.exceptions {
        return match e.received {
            Some(x) => format!(
                "vcpu-events validated+injected {} exceptions, {} NMI; guest got #GP err=0x{:x}, #PF err=0x{:x} cr2=0x{:x}, NMI x{}",
                e.injected_exceptions, e.injected_nmis, x.gp_error_code, x.pf_error_code, x.pf_cr2, x.nmis
            ),
            None => "guest did not report".into(),
        };
    }
    if let Some(h) = &r.heki_probe {
        return format!("heki-policy ABI, host answer: {}", h.summary);
    }
    if r.heki.configure_exits + r.heki.denials > 0 {
        return format!(
            "heki-policy {}: pins cr0={} cr4={}, {} configure, {} denial -> {}",
            r.heki.abi.name(),
            r.heki.pinned_cr0,
            r.heki.pinned_cr4,
            r.heki.configure_exits,
            r.heki.denials,
            r.heki.action.unwrap_or("-")
        );
    }
    if r.notify.exits > 0 {
        return format!(
            "notify-exit ({:?}): {} exits, {} invalid, {} resumed, {} storm(s) -> {}",
            r.notify.mode,
            r.notify.exits,
            r.notify.invalid_contexts,
            r.notify.resumed,
            r.notify.storms,
            r.notify.action.unwrap_or("-")
        );
    }
    if r.outcome == Outcome::Shutdown {
        return format!("vcpu-events: triple_fault.pending = 1 -> {}", exits_list(r));
    }
    let mut s = exits_list(r);
    if r.source == Source::Kvm && r.exits_total > 1000 {
        s.push_str(&format!(", {:.0} exits/s", r.exits_per_second));
    }
    if let Some(us) = r.startup_us {
        s.push_str(&format!(", start-up {us} us"));
    }
    s
}

fn exits_list(r: &Report) -> String {
    let v: Vec<String> = r.exits.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("exits: {}", v.join(" "))
}

/// `demo` command: prints everything; exit status 1 if any scenario fails.
pub fn main(format: Format) -> i32 {
    let t0 = Instant::now();
    // The crates log every policy decision; the demo shows them in its own lines.
    if std::env::var_os("RUST_LOG").is_none() {
        log::set_max_level(log::LevelFilter::Off);
    }
    let host = crate::host::host_report();
    let results: Vec<ScenarioResult> = scenarios().iter().map(run_scenario).collect();
    let all = results.iter().all(|r| r.passed);
    match format {
        Format::Json => {
            let v = serde_json::json!({
                "host": host,
                "scenarios": results,
                "passed": all,
                "seconds": t0.elapsed().as_secs_f64(),
            });
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Format::Text => {
            println!("== host");
            print!("{}", host.to_text());
            println!("== scenarios (kvm = run on /dev/kvm; replayed = this host's KVM cannot produce this exit)");
            for r in &results {
                let src = match r.source {
                    Source::Kvm => "kvm     ",
                    Source::Replay => "replayed",
                };
                let outcome = r.report.as_ref().map_or("error", |x| x.outcome.name());
                let accepted = match (r.report.as_ref(), r.also_accept) {
                    (Some(rep), Some((o, why))) if rep.outcome == o => {
                        format!(" (accepted: {} at {why}, a host quirk)", o.name())
                    }
                    _ => String::new(),
                };
                println!(
                    "[{}] {:<31} {src} {:<14} expected {}{accepted}",
                    if r.passed { "PASS" } else { "FAIL" },
                    r.name,
                    outcome,
                    r.expected_outcome.name(),
                );
                if let Some(rep) = &r.report {
                    println!("       {}", detail(rep));
                }
                for f in &r.failures {
                    println!("       FAILED: {f}");
                }
            }
            let n = results.iter().filter(|r| r.passed).count();
            println!(
                "== {n}/{} scenarios passed in {:.2} s",
                results.len(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    if all {
        0
    } else {
        1
    }
}
