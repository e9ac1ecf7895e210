// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `demo`: the host section, then every scenario with its expected outcome
//! and PASS/FAIL. Scenarios are either a `run` on /dev/kvm or a `replay` of an
//! embedded trace (for exits this host's KVM cannot produce). PASS/FAIL is
//! decided from the typed stop cause and report fields, never from text.

mod scenarios;
mod text;
pub mod timer;

pub use scenarios::{
    scenarios, DEMO_DENIALS, DEMO_FLOOD_COUNT, DEMO_GARBAGE_LINES, DEMO_GARBAGE_SEED,
    DEMO_IRQ_COUNT, DEMO_NOTIFY_STORM, DEMO_PIO_COUNT, DEMO_SNAPSHOT_EVERY,
    DEMO_SNAPSHOT_IRQ_COUNT, STORM_RSS_GROWTH_LIMIT_KIB,
};

use std::time::Instant;

use serde::Serialize;

use crate::config::{Policy, RunConfig};
use crate::exit::HekiAbi;
use crate::report::Format;
use crate::report::{Report, Source};
use crate::stop::{Outcome, StopCause};
use crate::vmm::KvmRun;

/// Example trace: a storm of valid-context notify exits, then `hlt`.
pub const TRACE_NOTIFY_STORM: &str = include_str!("../../traces/notify-storm.jsonl");
/// Example trace: notify exits, one with `KVM_NOTIFY_CONTEXT_INVALID`.
pub const TRACE_NOTIFY_INVALID: &str = include_str!("../../traces/notify-invalid-context.jsonl");
/// Example trace: Heki (RFC v2) CR pins, then a denial.
pub const TRACE_HEKI_PIN_DENIAL: &str = include_str!("../../traces/heki-pin-denial.jsonl");

/// Report of a KVM run.
pub fn kvm_report(cfg: &RunConfig, run: KvmRun) -> Report {
    let host_notify = run
        .caps
        .iter()
        .find(|c| c.cap == crate::plan::KVM_CAP_X86_NOTIFY_VMEXIT)
        .map(|c| c.supported);
    let mut r = Report::build(
        cfg.guest.name(),
        Source::Kvm,
        &run.state,
        &run.stop,
        Some(run.startup.as_micros() as u64),
        run.run_time.as_secs_f64(),
        host_notify,
        run.caps,
        run.warnings,
    );
    if let Some(s) = &mut r.snapshots {
        s.every = cfg.snapshot_every;
    }
    r
}

/// What a scenario runs.
#[derive(Clone, Debug)]
pub enum ScenarioKind {
    /// A guest on /dev/kvm.
    Run(RunConfig),
    /// A trace generated on the fly (never stored) through the stand-in, with
    /// the scenario's peak RSS measured.
    Generated {
        /// What the trace is (for the report).
        trace: &'static str,
        /// Makes the trace.
        make: fn() -> crate::hostile::Generated,
        /// Policy.
        policy: Policy,
    },
    /// Every line of a seeded garbage trace replayed on its own
    /// ([`crate::hostile::triage`]).
    Garbage {
        /// Generator seed.
        seed: u64,
        /// Lines.
        lines: u64,
    },
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

/// A host quirk a scenario accepts instead of its expected outcome.
#[derive(Clone, Copy, Debug)]
pub struct Quirk {
    /// The outcome accepted.
    pub outcome: Outcome,
    /// Where the quirk shows (for the report line).
    pub what: &'static str,
    /// Whether a stop cause is this quirk.
    pub matches: fn(&StopCause) -> bool,
}

/// One demo scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name.
    pub name: &'static str,
    /// What it runs.
    pub kind: ScenarioKind,
    /// Expected outcome.
    pub expect: Outcome,
    /// A stop also accepted (a host quirk, reported as such).
    pub also_accept: Option<Quirk>,
    /// What else is expected, in words.
    pub expect_text: &'static str,
    /// Further checks.
    pub checks: Check,
}

/// The report of the garbage scenario: the triage summary, outcome
/// `trace-end` (the whole garbage trace was consumed).
pub fn garbage_report(seed: u64, lines: u64) -> Report {
    let t0 = Instant::now();
    let g = crate::hostile::triage(seed, lines);
    let st = crate::handlers::RunState::for_replay(Policy::default());
    // Every garbage line was consumed; the triage figures are in `garbage`.
    let stop = crate::stop::Stop::new(StopCause::TraceEnd { exits: g.exits });
    let mut r = Report::build(
        &format!("garbage trace (seed 0x{seed:x}, {lines} lines)"),
        Source::Replay,
        &st,
        &stop,
        None,
        t0.elapsed().as_secs_f64(),
        None,
        Vec::new(),
        Vec::new(),
    );
    r.exits_total = g.exits;
    r.garbage = Some(g);
    r
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
    /// The host quirk the scenario accepts, if any.
    #[serde(skip)]
    pub also_accept: Option<Quirk>,
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
        ScenarioKind::Generated {
            trace,
            make,
            policy,
        } => {
            let probe = crate::hostile::MemProbe::start();
            let r = crate::replay::replay(trace, make(), *policy, None);
            let mem = probe.finish();
            (
                Source::Replay,
                r.map(|mut r| {
                    r.report.memory = mem;
                    r.report
                })
                .map_err(|e| e.to_string()),
            )
        }
        ScenarioKind::Garbage { seed, lines } => {
            (Source::Replay, Ok(garbage_report(*seed, *lines)))
        }
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
                .is_some_and(|q| r.outcome == q.outcome && (q.matches)(&r.cause));
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

/// `demo` command: runs every scenario and renders the host section and the
/// results as `format`. Returns the text and whether every scenario passed
/// (the binary exits 1 if not).
pub fn render(format: Format) -> (String, bool) {
    render_with_timeout(format, None)
}

/// [`render`], with `timeout` (`demo --timeout`) for every guest run on
/// /dev/kvm instead of each scenario's own.
pub fn render_with_timeout(format: Format, timeout: Option<std::time::Duration>) -> (String, bool) {
    let t0 = Instant::now();
    // The crates log every policy decision; the demo shows them in its own lines.
    if std::env::var_os("RUST_LOG").is_none() {
        log::set_max_level(log::LevelFilter::Off);
    }
    let host = crate::host::host_report();
    let mut list = scenarios();
    if let Some(t) = timeout {
        for s in &mut list {
            if let ScenarioKind::Run(cfg) = &mut s.kind {
                cfg.timeout = Some(t);
            }
        }
    }
    let results: Vec<ScenarioResult> = list.iter().map(run_scenario).collect();
    let timer = timer::run();
    let all = results.iter().all(|r| r.passed) && timer.passed;
    let out = match format {
        Format::Json => {
            let v = serde_json::json!({
                "host": host,
                "scenarios": results,
                "timer": timer,
                "passed": all,
                "seconds": t0.elapsed().as_secs_f64(),
            });
            let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Text => text::render(&host.to_text(), &results, &timer, t0),
    };
    (out, all)
}
