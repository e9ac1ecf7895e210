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
/// Interrupts the demo's irq-flood raises.
pub const DEMO_FLOOD_COUNT: u64 = 20_000;
/// Exits of the demo's generated notify storm.
pub const DEMO_NOTIFY_STORM: u64 = 1_000_000;
/// Denials of the demo's generated Heki denial storms.
pub const DEMO_DENIALS: u64 = 100_000;
/// Seed of the demo's garbage trace.
pub const DEMO_GARBAGE_SEED: u64 = 0x5eed_0008;
/// Lines of the demo's garbage trace (each replayed under 3 Heki ABIs).
pub const DEMO_GARBAGE_LINES: u64 = 5_000;
/// Most a storm scenario may add to the peak RSS, KiB: the storms are
/// streamed, so the VMM's footprint must not grow with the exit count.
pub const STORM_RSS_GROWTH_LIMIT_KIB: u64 = 2048;

fn bounded_memory(r: &Report) -> Result<(), String> {
    match r.memory {
        Some(m) if m.peak_growth_kib > STORM_RSS_GROWTH_LIMIT_KIB => Err(format!(
            "peak RSS grew by {} KiB (limit {STORM_RSS_GROWTH_LIMIT_KIB} KiB)",
            m.peak_growth_kib
        )),
        _ => Ok(()),
    }
}

/// Heki denial storm checks common to the gp and audit policies.
fn heki_storm(r: &Report, audit: bool) -> Result<(), String> {
    let h = &r.heki;
    let handled = h.configure_exits + h.denials;
    // Linux-style rate limit: at most 10 lines per 5 s window.
    let windows = 1 + (r.run_seconds / 5.0) as u64 + 1;
    want(
        h.denials == DEMO_DENIALS
            && h.denials_cr0 == DEMO_DENIALS / 2
            && h.denials_cr4 == DEMO_DENIALS / 2
            && h.audited == if audit { DEMO_DENIALS } else { 0 }
            && h.shutdowns == 0
            && h.logs_emitted + h.logs_suppressed == handled
            && h.logs_emitted <= 10 * windows,
        || format!("{h:?}"),
    )?;
    bounded_memory(r)
}

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
        // Hostile guests (issue 8).
        Scenario {
            name: "self-triple-fault",
            kind: ScenarioKind::Run(run(Guest::SelfTripleFault, 0)),
            expect: Outcome::Shutdown,
            also_accept: None,
            expect_text: "empty IDT + ud2: #UD -> #GP -> #DF -> triple fault; reported shutdown",
            checks: |r| {
                want(
                    r.reason.contains("on its own")
                        && exits(r, "shutdown") == 1
                        && exits(r, "io_out") == 1,
                    || format!("{}; {:?}", r.reason, r.exits),
                )
            },
        },
        Scenario {
            name: "irq-flood",
            kind: ScenarioKind::Run(run(Guest::IrqFlood, DEMO_FLOOD_COUNT)),
            expect: Outcome::Halted,
            also_accept: None,
            expect_text:
                "requested = delivered + coalesced + refused, none while masked, queue <= 32",
            checks: |r| {
                let i = r.interrupts.ok_or("no interrupts section")?;
                want(
                    i.requested == DEMO_FLOOD_COUNT
                        && i.accounted()
                        && i.pending_at_end == 0
                        && i.delivered_while_masked == Some(0)
                        && i.coalesced > 0
                        && i.refused > 0
                        && i.max_queued <= i.queue_capacity
                        && i.delivered_vector_sum == Some(i.injected_vector_sum),
                    || format!("{i:?}"),
                )
            },
        },
        Scenario {
            name: "notify storm x1M (generated)",
            kind: ScenarioKind::Generated {
                trace: "generated notify storm (1000000 exits)",
                make: || crate::hostile::notify_storm(DEMO_NOTIFY_STORM),
                policy: p,
            },
            expect: Outcome::Halted,
            also_accept: None,
            expect_text: "1000000 notify exits resumed, storm detector fires, peak RSS +<2 MiB",
            checks: |r| {
                let n = &r.notify;
                want(
                    n.exits == DEMO_NOTIFY_STORM && n.resumed == DEMO_NOTIFY_STORM && n.storms >= 1,
                    || format!("{n:?}"),
                )?;
                bounded_memory(r)
            },
        },
        Scenario {
            name: "heki denial storm (gp)",
            kind: ScenarioKind::Generated {
                trace: "generated Heki denial storm (100000 denials)",
                make: || crate::hostile::heki_denial_storm(DEMO_DENIALS),
                policy: p,
            },
            expect: Outcome::Halted,
            also_accept: None,
            expect_text: "100000 denials, each resumed (KVM injects #GP); logs rate-limited",
            checks: |r| heki_storm(r, false),
        },
        Scenario {
            name: "heki denial storm (audit)",
            kind: ScenarioKind::Generated {
                trace: "generated Heki denial storm (100000 denials)",
                make: || crate::hostile::heki_denial_storm(DEMO_DENIALS),
                policy: Policy {
                    heki_denial: HekiDenialAction::Audit,
                    ..p
                },
            },
            expect: Outcome::Halted,
            also_accept: None,
            expect_text: "100000 denials audited (counted, logged, resumed); logs rate-limited",
            checks: |r| heki_storm(r, true),
        },
        Scenario {
            name: "heki denial storm (shutdown)",
            kind: ScenarioKind::Generated {
                trace: "generated Heki denial storm (100000 denials)",
                make: || crate::hostile::heki_denial_storm(DEMO_DENIALS),
                policy: Policy {
                    heki_denial: HekiDenialAction::Shutdown,
                    ..p
                },
            },
            expect: Outcome::Shutdown,
            also_accept: None,
            expect_text: "the first of 100000 denials shuts the VM down",
            checks: |r| {
                want(
                    r.heki.denials == 1
                        && r.heki.shutdowns == 1
                        && r.reason.contains("exit #3 was a Heki denial"),
                    || format!("{}; {:?}", r.reason, r.heki),
                )
            },
        },
        Scenario {
            name: "garbage kvm_run bytes (seeded)",
            kind: ScenarioKind::Garbage {
                seed: DEMO_GARBAGE_SEED,
                lines: DEMO_GARBAGE_LINES,
            },
            expect: Outcome::TraceEnd,
            also_accept: None,
            expect_text: "each of 5000 garbage lines x 3 ABIs: a typed error or a defined action",
            checks: |r| {
                let g = r.garbage.as_ref().ok_or("no garbage section")?;
                want(
                    g.panics == 0
                        && g.unclear == 0
                        && g.replays == 3 * g.lines
                        && g.defined_actions() + g.typed_errors() == g.replays
                        && g.outcomes.get("unhandled-exit").is_some_and(|&n| n > 0)
                        && g.errors.get("decode").is_some_and(|&n| n > 0)
                        && g.errors.get("json").is_some_and(|&n| n > 0),
                    || format!("{g:?}"),
                )
            },
        },
    ]
}

/// The report of the garbage scenario: the triage summary, outcome
/// `trace-end` (the whole garbage trace was consumed).
pub fn garbage_report(seed: u64, lines: u64) -> Report {
    let t0 = Instant::now();
    let g = crate::hostile::triage(seed, lines);
    let st = crate::handlers::RunState::for_replay(Policy::default());
    let stop = crate::apply::Stop {
        outcome: Outcome::TraceEnd,
        reason: format!(
            "{} garbage lines (seed 0x{seed:x}) each replayed alone under {} Heki ABIs: {} defined \
             actions, {} typed line-numbered errors, {} panics, {} unclear answers",
            g.lines,
            crate::hostile::TRIAGE_ABIS.len(),
            g.defined_actions(),
            g.typed_errors(),
            g.panics,
            g.unclear
        ),
    };
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

fn mem_suffix(r: &Report) -> String {
    r.memory.map_or(String::new(), |m| {
        format!(
            "; peak RSS {:.1} MiB (+{:.1})",
            m.peak_kib as f64 / 1024.0,
            m.peak_growth_kib as f64 / 1024.0
        )
    })
}

fn top(m: &std::collections::BTreeMap<&'static str, u64>) -> String {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1));
    let v: Vec<String> = v.iter().take(2).map(|(k, n)| format!("{k} {n}")).collect();
    v.join(", ")
}

fn detail(r: &Report) -> String {
    if matches!(r.outcome, Outcome::Timeout | Outcome::UnhandledExit) {
        return r.reason.clone();
    }
    if let Some(g) = &r.garbage {
        return format!(
            "{} lines x3: {} actions ({}..), {} typed errors ({}..); {} panics, {} unclear",
            g.lines,
            g.defined_actions(),
            top(&g.outcomes),
            g.typed_errors(),
            top(&g.errors),
            g.panics,
            g.unclear
        );
    }
    if let Some(i) = r.interrupts.filter(|i| i.mode == "flood") {
        return format!(
            "injector (queue {}): requested {} = delivered {} + coalesced {} + refused {}; max queued {}; while_masked={}",
            i.queue_capacity,
            i.requested,
            i.delivered.map_or("-".into(), |v| v.to_string()),
            i.coalesced,
            i.refused,
            i.max_queued,
            i.delivered_while_masked.map_or("-".into(), |v| v.to_string())
        );
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
    if r.heki.denials > 10 {
        return format!(
            "heki-policy: {} denials -> {}; logs: {} written, {} suppressed{}",
            r.heki.denials,
            r.heki.action.unwrap_or("-"),
            r.heki.logs_emitted,
            r.heki.logs_suppressed,
            mem_suffix(r)
        );
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
            "notify-exit ({:?}): {} exits, {} invalid, {} resumed, {} storm(s) -> {}{}",
            r.notify.mode,
            r.notify.exits,
            r.notify.invalid_contexts,
            r.notify.resumed,
            r.notify.storms,
            r.notify.action.unwrap_or("-"),
            mem_suffix(r)
        );
    }
    if r.outcome == Outcome::Shutdown && r.guest == Guest::SelfTripleFault.name() {
        let at = r.reason.split("; ").nth(1).unwrap_or("");
        return format!(
            "guest's own triple fault, no VMM injection; {at}; {}",
            exits_list(r)
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
