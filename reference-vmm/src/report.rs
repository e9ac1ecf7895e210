// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Run reports: plain data (serde), printed as JSON or as text.

#![deny(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::config::{HekiDenialAction, HekiExits, NotifyMode};
use crate::exit::{ExitKind, HekiAbi};
use crate::guests::Guest;
use crate::handlers::RunState;
use crate::plan::CapStep;
use crate::stop::{Outcome, Stop, StopCause};

/// Output format of reports (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Text,
    /// JSON.
    Json,
}

/// Where the exits came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A real KVM_RUN on /dev/kvm.
    Kvm,
    /// A trace fed through the same handlers with a vCPU stand-in.
    Replay,
}

/// `interrupts` section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct InterruptsReport {
    /// `backlog` (irq-storm: every raise delivered, none coalesced) or
    /// `flood` (irq-flood: raises go straight to the injector).
    pub mode: &'static str,
    /// Interrupts the VMM raised.
    pub requested: u64,
    /// Raises the injector merged with the same vector still queued (one delivery).
    pub coalesced: u64,
    /// Raises the injector refused with `QueueFull` (counted by the VMM).
    pub refused: u64,
    /// Interrupts injected with KVM_INTERRUPT.
    pub injected: u64,
    /// Deliveries the guest counted.
    pub delivered: Option<u64>,
    /// Deliveries the guest counted inside a masked stretch (must be 0).
    pub delivered_while_masked: Option<u64>,
    /// Interrupt windows requested.
    pub windows_requested: u64,
    /// Still queued at the end.
    pub pending_at_end: u64,
    /// The injector's bound on distinct queued vectors.
    pub queue_capacity: u64,
    /// Most vectors queued at once (never above `queue_capacity`).
    pub max_queued: u64,
    /// Sum of the vectors injected (flood mode).
    pub injected_vector_sum: u64,
    /// Sum of the vectors the guest's handlers received (flood mode).
    pub delivered_vector_sum: Option<u64>,
}

impl InterruptsReport {
    /// True if every raise is accounted for: requested = delivered + coalesced
    /// + refused + still pending, and every injection was delivered.
    pub fn accounted(&self) -> bool {
        self.delivered.is_some_and(|d| {
            d == self.injected
                && self.requested == d + self.coalesced + self.refused + self.pending_at_end
        })
    }
}

/// The exception values of the exceptions scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ExceptionValues {
    /// #GP vector.
    pub gp_vector: u64,
    /// #GP error code.
    pub gp_error_code: u64,
    /// #PF vector.
    pub pf_vector: u64,
    /// #PF error code.
    pub pf_error_code: u64,
    /// CR2 seen by the #PF handler.
    pub pf_cr2: u64,
    /// NMIs.
    pub nmis: u64,
}

/// `exceptions` section: expected vs received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ExceptionsReport {
    /// What the VMM injected.
    pub expected: ExceptionValues,
    /// What the guest's handlers reported (`None` if the guest did not report).
    pub received: Option<ExceptionValues>,
    /// Exception injections applied.
    pub injected_exceptions: u64,
    /// NMI injections applied.
    pub injected_nmis: u64,
}

/// `notify` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NotifyReport {
    /// `--notify-vmexit`.
    pub mode: NotifyMode,
    /// `--notify-semantics` (`seed` or `qemu-7.2`).
    pub semantics: crate::config::NotifySemantics,
    /// `--notify-window`.
    pub window: u32,
    /// Host support (`None` for replay).
    pub host_supported: Option<bool>,
    /// Notify exits.
    pub exits: u64,
    /// With invalid context.
    pub invalid_contexts: u64,
    /// Valid-context exits resumed.
    pub resumed: u64,
    /// Notify storms notify-exit's detector reported.
    pub storms: u64,
    /// A storm was still going on at the end of the run.
    pub in_storm_at_end: bool,
    /// Notify exits per second in the detector's window at the last notify exit.
    pub rate_per_sec: u64,
    /// Last action taken.
    pub action: Option<&'static str>,
}

/// `heki` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HekiReport {
    /// ABI revision in force.
    pub abi: HekiAbi,
    /// `--heki-exits`.
    pub exits_wanted: HekiExits,
    /// `--heki-denial`.
    pub denial_action: HekiDenialAction,
    /// Mirrored CR0 pins (hex).
    pub pinned_cr0: String,
    /// Mirrored CR4 pins (hex).
    pub pinned_cr4: String,
    /// Configure exits.
    pub configure_exits: u64,
    /// Denial exits.
    pub denials: u64,
    /// Denial exits for CR0.
    pub denials_cr0: u64,
    /// Denial exits for CR4.
    pub denials_cr4: u64,
    /// Denial exits whose reason is neither CR0 nor CR4 (counted, never lost).
    pub denials_unknown: u64,
    /// Denials recorded under `--heki-denial audit`.
    pub audited: u64,
    /// Denials answered with a shutdown.
    pub shutdowns: u64,
    /// heki-policy log lines written: shown by the active log filter (`RUST_LOG`,
    /// default `warn`) and within the rate limit (10 per 5 s, like Linux's
    /// `printk_ratelimit`). Exactly the lines that reached stderr.
    pub logs_emitted: u64,
    /// heki-policy log lines dropped by the rate limit (counted, never lost).
    pub logs_suppressed: u64,
    /// heki-policy log lines the active log filter hides (configure lines are
    /// `info`; the default filter is `warn`).
    pub logs_filtered: u64,
    /// Anomalies heki-policy flagged (e.g. a denial clearing no mirrored pin).
    pub anomalies: u64,
    /// Last action taken.
    pub action: Option<&'static str>,
}

/// `heki_probe` section: the host's real answers to the Heki hypercalls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HekiProbeReport {
    /// rax after the version query.
    pub version_query_rax: Option<i64>,
    /// rax after the CR4 lock.
    pub lock_cr4_rax: Option<i64>,
    /// In words.
    pub summary: String,
}

/// `snapshots` section (`run --snapshot-every`, `resume`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotsReport {
    /// `--snapshot-every N` (none for a `resume` without it).
    pub every: Option<u64>,
    /// Snapshots taken.
    pub taken: u64,
    /// Snapshots restored into a fresh VM.
    pub restored: u64,
    /// Restores that failed.
    pub restore_failures: u64,
    /// How many snapshots caught each kind of event in flight.
    pub held: SnapshotHeldReport,
}

/// `snapshots.held`: how many snapshots caught each kind of event in flight
/// (the run state's own counts, serialized as they are).
pub type SnapshotHeldReport = crate::handlers::SnapshotHeld;

/// A run's report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Guest name (or trace name for replay).
    pub guest: String,
    /// `kvm` or `replay`.
    pub source: Source,
    /// How it ended (coarse; follows from `cause`).
    pub outcome: Outcome,
    /// Why it ended, typed (`{"kind": "halted"}`, `{"kind": "unhandled-exit",
    /// "exit_reason": 39}`, ...): what tests and the demo decide from.
    pub cause: StopCause,
    /// `cause` in words, for people.
    pub reason: String,
    /// Exits per kind (only kinds seen).
    pub exits: BTreeMap<&'static str, u64>,
    /// All exits.
    pub exits_total: u64,
    /// Start to the first KVM_RUN, microseconds (kvm only).
    pub startup_us: Option<u64>,
    /// First KVM_RUN (or first replayed exit) to the end.
    pub run_seconds: f64,
    /// exits_total / run_seconds (`resume`: only the exits taken in this process).
    pub exits_per_second: f64,
    /// Interrupts (irq-storm).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupts: Option<InterruptsReport>,
    /// Exceptions (exceptions guest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exceptions: Option<ExceptionsReport>,
    /// Notify.
    pub notify: NotifyReport,
    /// Heki.
    pub heki: HekiReport,
    /// Heki probe (heki-probe guest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heki_probe: Option<HekiProbeReport>,
    /// Snapshots and restores (runs that took or restored one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<SnapshotsReport>,
    /// Peak RSS (`run` and `replay` commands: the process's `VmHWM`; demo
    /// storm scenarios: the scenario's own peak and growth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryReport>,
    /// Garbage-trace triage (demo scenario `garbage kvm_run bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub garbage: Option<GarbageSummary>,
    /// KVM_ENABLE_CAP steps (kvm only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<CapStep>,
    /// Replay: trace lines after the terminating exit, not replayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines_not_replayed: Option<u64>,
    /// Warnings.
    pub warnings: Vec<String>,
}

fn field64(st: &RunState, lo: usize, hi: Option<usize>) -> Option<u64> {
    let lo = u64::from((*st.channel.fields.get(lo)?)?);
    let hi = match hi {
        Some(h) => u64::from((*st.channel.fields.get(h)?)?),
        None => 0,
    };
    Some(lo | hi << 32)
}

impl Report {
    /// True unless the guest's own counters contradict what the VMM did: an
    /// interrupt not accounted for ([`InterruptsReport::accounted`]), one
    /// delivered while masked, delivered vectors that do not sum to the
    /// injected ones, or exception values other than those injected. A
    /// halted run where they do not hold lost or changed an event (exit
    /// status 1): e.g. a resumed snapshot with an edited CR2 payload.
    pub fn guest_counters_hold(&self) -> bool {
        let irq = self.interrupts.is_none_or(|i| {
            i.accounted()
                && i.delivered_while_masked == Some(0)
                && i.delivered_vector_sum
                    .is_none_or(|d| d == i.injected_vector_sum)
        });
        let exceptions = self
            .exceptions
            .is_none_or(|e| e.received == Some(e.expected));
        irq && exceptions
    }

    /// Builds a report from the final state of a run.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        name: &str,
        source: Source,
        st: &RunState,
        stop: &Stop,
        startup_us: Option<u64>,
        run_seconds: f64,
        host_notify: Option<bool>,
        caps: Vec<CapStep>,
        warnings: Vec<String>,
    ) -> Report {
        let exits = ExitKind::ALL
            .iter()
            .filter(|k| st.exits.get(**k) > 0)
            .map(|k| (k.name(), st.exits.get(*k)))
            .collect();
        let exits_total = st.exits.total();
        let flood = st.guest == Some(Guest::IrqFlood);
        let interrupts = (st.guest == Some(Guest::IrqStorm) || flood).then(|| InterruptsReport {
            mode: if flood { "flood" } else { "backlog" },
            requested: st.irq.requested,
            coalesced: st.irq.coalesced,
            refused: st.irq.refused,
            injected: st.irq.injected,
            delivered: field64(st, 0, None),
            delivered_while_masked: field64(st, 1, None),
            windows_requested: st.irq.windows_requested,
            pending_at_end: st.irq.pending + st.irq.queued + u64::from(st.irq.fresh_len),
            queue_capacity: st.irq.capacity,
            max_queued: st.irq.max_queued,
            injected_vector_sum: st.irq.injected_vector_sum,
            delivered_vector_sum: if flood { field64(st, 3, Some(4)) } else { None },
        });
        let exceptions = (st.guest == Some(Guest::Exceptions)).then(|| {
            let p = st.exceptions;
            let received = (|| {
                Some(ExceptionValues {
                    gp_vector: field64(st, 0, None)?,
                    gp_error_code: field64(st, 1, None)?,
                    pf_vector: field64(st, 2, None)?,
                    pf_error_code: field64(st, 3, None)?,
                    pf_cr2: field64(st, 4, Some(5))?,
                    nmis: field64(st, 6, None)?,
                })
            })();
            ExceptionsReport {
                expected: ExceptionValues {
                    gp_vector: 13,
                    gp_error_code: u64::from(p.gp_error_code),
                    pf_vector: 14,
                    pf_error_code: u64::from(p.pf_error_code),
                    pf_cr2: p.pf_cr2,
                    nmis: 1,
                },
                received,
                injected_exceptions: st.injected_exceptions,
                injected_nmis: st.injected_nmis,
            }
        });
        let heki_probe = (st.guest == Some(Guest::HekiProbe)).then(|| {
            let v = field64(st, 0, Some(1));
            let l = field64(st, 2, Some(3));
            use crate::heki_probe::{describe_answer, LOCK_CR4, VERSION_QUERY};
            let d =
                |r, x: Option<u64>| x.map_or("no answer".to_string(), |x| describe_answer(r, x));
            HekiProbeReport {
                version_query_rax: v.map(|x| x as i64),
                lock_cr4_rax: l.map(|x| x as i64),
                summary: format!(
                    "version query -> {}; lock CR4.SMEP -> {}",
                    d(VERSION_QUERY, v),
                    d(LOCK_CR4, l)
                ),
            }
        });
        Report {
            guest: name.to_string(),
            source,
            outcome: stop.cause.outcome(),
            cause: stop.cause.clone(),
            reason: stop.cause.to_string(),
            exits,
            exits_total,
            startup_us,
            run_seconds,
            exits_per_second: if run_seconds > 0.0 {
                exits_total as f64 / run_seconds
            } else {
                0.0
            },
            interrupts,
            exceptions,
            notify: {
                let n = st.notify.handler.stats();
                NotifyReport {
                    mode: st.policy.notify_mode,
                    semantics: st.policy.notify_semantics,
                    window: st.policy.notify_window,
                    host_supported: host_notify,
                    exits: n.exits,
                    invalid_contexts: n.context_invalid,
                    resumed: n.resumed,
                    storms: n.storms.max(st.notify.storms_started),
                    in_storm_at_end: n.in_storm,
                    rate_per_sec: n.rate_per_sec,
                    action: st.notify.last_action,
                }
            },
            heki: {
                let (pins, stats) = match &st.heki.handler {
                    Some(h) => (h.pins(), h.stats()),
                    None => Default::default(),
                };
                HekiReport {
                    abi: st.policy.heki_abi,
                    exits_wanted: st.policy.heki_exits,
                    denial_action: st.policy.heki_denial,
                    pinned_cr0: format!("0x{:x}", pins.cr0),
                    pinned_cr4: format!("0x{:x}", pins.cr4),
                    configure_exits: stats.configure_exits,
                    denials: stats.denials_cr0 + stats.denials_cr4 + stats.denials_unknown,
                    denials_cr0: stats.denials_cr0,
                    denials_cr4: stats.denials_cr4,
                    denials_unknown: stats.denials_unknown,
                    audited: stats.audited,
                    shutdowns: stats.shutdowns,
                    logs_emitted: stats.logs_emitted,
                    logs_suppressed: stats.logs_suppressed,
                    logs_filtered: stats.logs_filtered,
                    anomalies: stats.anomalies.max(st.heki.anomalies),
                    action: st.heki.last_action,
                }
            },
            heki_probe,
            snapshots: (st.snapshots != crate::handlers::SnapshotCounts::default()).then_some({
                SnapshotsReport {
                    every: None,
                    taken: st.snapshots.taken,
                    restored: st.snapshots.restored,
                    restore_failures: st.snapshots.restore_failures,
                    held: st.snapshots.held,
                }
            }),
            memory: None,
            garbage: None,
            caps,
            lines_not_replayed: None,
            warnings,
        }
    }

    /// JSON (one object).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Human-readable text.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let src = match self.source {
            Source::Kvm => "kvm",
            Source::Replay => "replayed",
        };
        let _ = writeln!(
            s,
            "{} ({src}): {} - {}",
            crate::error::escape(&self.guest),
            self.outcome.name(),
            self.reason
        );
        let exits: Vec<String> = self.exits.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = write!(
            s,
            "  exits: {} total ({})",
            self.exits_total,
            exits.join(", ")
        );
        if self.run_seconds > 0.0 {
            let _ = write!(
                s,
                ", {:.3} s, {:.0} exits/s",
                self.run_seconds, self.exits_per_second
            );
        }
        if let Some(us) = self.startup_us {
            let _ = write!(s, ", start-up {us} us");
        }
        s.push('\n');
        if let Some(i) = &self.interrupts {
            let _ = writeln!(
                s,
                "  interrupts ({}): requested={} coalesced={} refused={} injected={} delivered={} \
                 delivered_while_masked={} pending_at_end={} windows={} max_queued={}/{}",
                i.mode,
                i.requested,
                i.coalesced,
                i.refused,
                i.injected,
                opt(i.delivered),
                opt(i.delivered_while_masked),
                i.pending_at_end,
                i.windows_requested,
                i.max_queued,
                i.queue_capacity
            );
        }
        if let Some(e) = &self.exceptions {
            let x = e.expected;
            let _ = writeln!(
                s,
                "  exceptions expected: #GP({}) err=0x{:x}, #PF({}) err=0x{:x} cr2=0x{:x}, NMI x{}",
                x.gp_vector, x.gp_error_code, x.pf_vector, x.pf_error_code, x.pf_cr2, x.nmis
            );
            match e.received {
                Some(r) => {
                    let _ = writeln!(
                        s,
                        "  exceptions received: #GP({}) err=0x{:x}, #PF({}) err=0x{:x} cr2=0x{:x}, NMI x{}",
                        r.gp_vector, r.gp_error_code, r.pf_vector, r.pf_error_code, r.pf_cr2, r.nmis
                    );
                }
                None => s.push_str("  exceptions received: (guest did not report)\n"),
            }
        }
        if let Some(h) = &self.heki_probe {
            let _ = writeln!(s, "  heki probe: {}", h.summary);
        }
        if let Some(n) = &self.snapshots {
            let every = n
                .every
                .map_or(String::new(), |e| format!("every {e} exits, "));
            let _ = writeln!(
                s,
                "  snapshots: {every}taken={} restored={} restore_failures={}; held in flight: \
                 injected interrupt={} queued vectors={} window request={} exception={} \
                 (payload {}) nmi={} triple fault={}",
                n.taken,
                n.restored,
                n.restore_failures,
                n.held.interrupt_injected,
                n.held.vectors_queued,
                n.held.window_requested,
                n.held.exception,
                n.held.exception_payload,
                n.held.nmi,
                n.held.triple_fault
            );
        }
        if self.notify.exits > 0 {
            let n = &self.notify;
            let _ = writeln!(
                s,
                "  notify: mode={:?} semantics={} window={} exits={} invalid_contexts={} resumed={} storms={} \
                 (in a storm at the end: {}, {} exits/s) action={}",
                n.mode,
                n.semantics,
                n.window,
                n.exits,
                n.invalid_contexts,
                n.resumed,
                n.storms,
                n.in_storm_at_end,
                n.rate_per_sec,
                n.action.unwrap_or("-")
            );
        }
        let h = &self.heki;
        if h.configure_exits + h.denials > 0 || h.abi != HekiAbi::None {
            let _ = writeln!(
                s,
                "  heki: abi={} pins cr0={} cr4={} configure_exits={} denials={} (cr0 {}, cr4 {}, other {}) \
                 audited={} shutdowns={} logs emitted={} suppressed={} filtered={} action={}",
                h.abi.name(),
                h.pinned_cr0,
                h.pinned_cr4,
                h.configure_exits,
                h.denials,
                h.denials_cr0,
                h.denials_cr4,
                h.denials_unknown,
                h.audited,
                h.shutdowns,
                h.logs_emitted,
                h.logs_suppressed,
                h.logs_filtered,
                h.action.unwrap_or("-")
            );
        }
        if let Some(g) = &self.garbage {
            let _ = writeln!(
                s,
                "  garbage: seed 0x{:x} lines={} replays={} defined actions={} {:?} typed errors={} {:?} panics={} unclear={}",
                g.seed,
                g.lines,
                g.replays,
                g.defined_actions(),
                g.outcomes,
                g.typed_errors(),
                g.errors,
                g.panics,
                g.unclear
            );
        }
        if let Some(m) = &self.memory {
            let _ = writeln!(
                s,
                "  memory: peak RSS {} KiB ({} peak, {} KiB above the {} KiB at the start)",
                m.peak_kib,
                if m.scenario_peak {
                    "this run's"
                } else {
                    "process"
                },
                m.peak_growth_kib,
                m.rss_before_kib
            );
        }
        for w in &self.warnings {
            let _ = writeln!(s, "  warning: {}", crate::error::escape(w));
        }
        s
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// Peak and growth of the resident set size during a scenario (Linux
/// `/proc/self/status`: `VmRSS`, `VmHWM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryReport {
    /// Resident set size when the scenario started, KiB.
    pub rss_before_kib: u64,
    /// Peak resident set size (`VmHWM`), KiB.
    pub peak_kib: u64,
    /// `peak_kib - rss_before_kib`: how much the scenario added at its worst.
    pub peak_growth_kib: u64,
    /// True if the peak was reset at the start (writing `5` to
    /// `/proc/self/clear_refs`), so `peak_kib` is this scenario's own peak;
    /// false if it is the process's lifetime peak (then the growth is an
    /// upper bound).
    pub scenario_peak: bool,
}

/// What replaying each garbage line on its own gave.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GarbageSummary {
    /// Seed of the generator.
    pub seed: u64,
    /// Lines generated.
    pub lines: u64,
    /// Replays run (each line under each Heki ABI: none, rfc-v2, rfc-v3).
    pub replays: u64,
    /// Replays that ended with an outcome, by outcome (`unhandled-exit`, ...).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Replays that ended with a typed, line-numbered error, by kind (`json`, `decode`, ...).
    pub errors: BTreeMap<&'static str, u64>,
    /// Exits decoded and handled, in all replays.
    pub exits: u64,
    /// Replays that panicked (must be 0).
    pub panics: u64,
    /// Replays whose answer was not clear: an error not naming line 1, an
    /// unhandled exit whose reason does not name the exit number, an empty
    /// reason (must be 0).
    pub unclear: u64,
    /// The first few unclear or panicking lines, for diagnosis.
    pub examples: Vec<String>,
}

impl GarbageSummary {
    /// Replays that ended with an outcome.
    pub fn defined_actions(&self) -> u64 {
        self.outcomes.values().sum()
    }

    /// Replays that ended with a typed error.
    pub fn typed_errors(&self) -> u64 {
        self.errors.values().sum()
    }
}
