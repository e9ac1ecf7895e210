//! `trace_replay`: reference-vmm trace reading and replay, the outcome and the counts
//! checked against a model of the trace built from the restated decision table of
//! [`super::vmm_table`].

use std::collections::BTreeMap;

use super::common::assert_error_message;
use super::vmm_table::{self, Decision, Setting};
use reference_vmm::action::Outcome;
use reference_vmm::config::{HekiDenialAction, Policy};
use reference_vmm::exit::HekiAbi;
use reference_vmm::replay::{Recorded, StandIn};
use reference_vmm::stop::StopCause;
use reference_vmm::trace::{TraceItem, TraceReader, MAX_LINE_BYTES};

/// What replaying a trace must give, worked out from the trace and the table alone.
#[derive(Debug, Default)]
struct Expected {
    /// `Ok(outcome)`, or `Err(line)`: replay fails at that line (read or decode error).
    end: Option<Result<Outcome, u64>>,
    /// The cause of the stop (none for `trace-end`).
    cause: Option<StopCause>,
    /// The line of the terminating exit (none for `trace-end`).
    stop_line: Option<u64>,
    /// Exits per kind (report names), the synthesized shutdown included.
    exits: BTreeMap<&'static str, u64>,
    /// Notify exits with an invalid context.
    notify_invalid: u64,
    /// Notify exits the VMM resumed.
    notify_resumed: u64,
    /// Heki denials for CR0 and for CR4.
    denials_cr: [u64; 2],
    /// What the vCPU stand-in must be asked (or answer) to do, in order: injections,
    /// triple faults, and the value of every `in`.
    applied: Vec<Recorded>,
}

impl Expected {
    fn total(&self) -> u64 {
        self.exits.values().sum()
    }

    fn count(&self, kind: &str) -> u64 {
        self.exits.get(kind).copied().unwrap_or(0)
    }
}

/// `trace_replay`: a JSON Lines exit trace through the reference VMM's streaming
/// reader, exit decoder and replay (handlers applied to the vCPU stand-in), under four
/// policies (defaults with the trace's own ABI; internal-error notify mode, Heki
/// denial exits that shut down and `--heki-abi rfc-v3` forced; QEMU 7.2's notify
/// semantics in internal-error mode with Heki denials audited, and in run mode).
///
/// Garbage gives errors that name a line that exists, in increasing order, each one
/// clean line; replay fails exactly at the first bad line before the first terminating
/// exit (a line that does not read, or an exit that does not decode), else it ends as
/// the table says for the first terminating exit, with the table's cause (`trace-end`
/// counting every exit without one); the report counts exactly the exits up to that one
/// per kind (plus the `shutdown` a synthesized triple fault causes) and exactly the
/// non-blank lines after it as not replayed, the notify and Heki counters agree with
/// those exits, the stand-in is asked for exactly the injections the table decides and
/// answers every `in` with the device's value, in order; replay is a function of the
/// trace (its synthetic clock): a second replay gives the same report, notify storm
/// counts included; the report says `replay` and serializes to JSON.
pub fn trace_replay(data: &[u8]) {
    use reference_vmm::config::{HekiExits, NotifyMode, NotifySemantics};
    use reference_vmm::replay::{replay, ReplayError};

    let policies = [
        (Policy::default(), None),
        (
            Policy {
                notify_mode: NotifyMode::InternalError,
                notify_semantics: NotifySemantics::SeedPatch,
                notify_window: 128,
                heki_abi: HekiAbi::RfcV3,
                heki_exits: HekiExits::Denial,
                heki_denial: HekiDenialAction::Shutdown,
            },
            Some(HekiAbi::RfcV3),
        ),
        // QEMU 7.2's semantics: internal-error mode stops on a valid context too.
        (
            Policy {
                notify_mode: NotifyMode::InternalError,
                notify_semantics: NotifySemantics::Qemu72,
                heki_denial: HekiDenialAction::Audit,
                ..Policy::default()
            },
            None,
        ),
        (
            Policy {
                notify_semantics: NotifySemantics::Qemu72,
                ..Policy::default()
            },
            None,
        ),
    ];
    // The reader's work depends on the forced ABI only: read once per ABI choice.
    let reads_of = |forced_abi: Option<HekiAbi>| read_trace(data, forced_abi);
    let (as_is, forced_v3) = (reads_of(None), reads_of(Some(HekiAbi::RfcV3)));
    for (policy, forced_abi) in policies {
        let reads = if forced_abi.is_some() {
            &forced_v3
        } else {
            &as_is
        };
        let expected = model(reads, policy);
        let end = expected.end.expect("the model always ends");
        match replay("fuzz", data, policy, forced_abi) {
            Ok(replayed) => {
                let report = &replayed.report;
                assert_eq!(Ok(report.outcome), end, "replay outcome ({})", report.cause);
                let cause = expected.cause.clone().unwrap_or(StopCause::TraceEnd {
                    exits: expected.total(),
                });
                assert_eq!(report.cause, cause, "stop cause");
                assert_eq!(report.outcome, cause.outcome());
                assert_eq!(
                    report.lines_not_replayed,
                    Some(lines_after(data, expected.stop_line)),
                    "lines not replayed"
                );
                check_deterministic(data, policy, forced_abi, report);
                let got: BTreeMap<&str, u64> = report.exits.iter().map(|(k, v)| (*k, *v)).collect();
                assert_eq!(got, expected.exits, "exits per kind");
                assert_eq!(report.exits_total, expected.total(), "exits_total");
                let notify = &report.notify;
                assert_eq!(notify.exits, expected.count("notify"), "notify exits");
                assert_eq!(notify.invalid_contexts, expected.notify_invalid);
                assert_eq!(notify.resumed, expected.notify_resumed, "notify resumed");
                let heki = &report.heki;
                let denials = expected.count("heki_denial");
                assert_eq!(heki.configure_exits, expected.count("heki_configure"));
                assert_eq!(heki.denials, denials, "Heki denials");
                assert_eq!([heki.denials_cr0, heki.denials_cr4], expected.denials_cr);
                let (shutdowns, audited) = match policy.heki_denial {
                    HekiDenialAction::Shutdown => (denials, 0),
                    HekiDenialAction::Audit => (0, denials),
                    _ => (0, 0),
                };
                assert_eq!((heki.shutdowns, heki.audited), (shutdowns, audited));
                let stand_in = &replayed.stand_in;
                assert_eq!(
                    stand_in.applied,
                    expected.applied.len() as u64,
                    "actions applied"
                );
                let kept = expected.applied.len().min(StandIn::KEEP);
                assert_eq!(
                    stand_in.recorded,
                    expected.applied[..kept],
                    "actions recorded"
                );
                assert_eq!(
                    serde_json::to_value(report.source).ok(),
                    Some(serde_json::Value::from("replay"))
                );
                let json = report.to_json();
                serde_json::from_str::<serde::de::IgnoredAny>(&json)
                    .unwrap_or_else(|e| panic!("replay report is not JSON: {e}\n{json}"));
                assert!(!report.to_text().is_empty());
            }
            Err(error) => {
                assert_error_message(&error);
                // (if-let rather than match: ReplayError is #[non_exhaustive].)
                let ReplayError::Trace(trace_error) = &error else {
                    panic!("replay failed with {error:?}");
                };
                assert_eq!(
                    Err(trace_error.line),
                    end,
                    "replay failed ({error}), the trace says otherwise"
                );
            }
        }
    }
}

/// One line of the trace as the reader gave it (most are exits: no box).
#[allow(clippy::large_enum_variant)]
enum Read {
    /// The reader's error for this line.
    Error { line: u64 },
    /// An exit, with the Heki ABI in force at it and whether it decodes.
    Exit {
        line: u64,
        raw: reference_vmm::exit::RawExit,
        abi: HekiAbi,
        decodes: bool,
    },
}

/// Reads the whole trace once, checking the reader's line numbering and errors (each
/// names its line, is one clean line) and that a failed decode's error is clean.
fn read_trace(data: &[u8], forced_abi: Option<HekiAbi>) -> Vec<Read> {
    use reference_vmm::exit::Exit;

    let lines = data.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let mut reads = Vec::new();
    let mut reader = TraceReader::new(data, forced_abi);
    let mut last_line = 0;
    let mut items = 0;
    while let Some(item) = reader.next() {
        items += 1;
        assert!(items <= lines + 1, "more items than lines");
        let line = reader.line();
        assert!(line > last_line, "line numbers do not increase");
        assert!(line <= lines, "line {line} of a {lines}-line trace");
        last_line = line;
        match item {
            Ok(TraceItem::Abi(_)) => {}
            Ok(TraceItem::Exit(raw)) => {
                let abi = reader.abi();
                let decoded = Exit::decode(&raw, abi);
                if let Err(error) = &decoded {
                    assert_error_message(error);
                }
                let decodes = decoded.is_ok();
                reads.push(Read::Exit {
                    line,
                    raw,
                    abi,
                    decodes,
                });
            }
            Ok(other) => panic!("unexpected trace item {other:?}"),
            Err(error) => {
                assert_error_message(&error);
                assert_eq!(error.line, line, "error names another line");
                let text = error.to_string();
                assert!(
                    text.starts_with(&format!("line {line}: ")),
                    "error does not name its line: {text}"
                );
                reads.push(Read::Error { line });
            }
        }
    }
    assert!(reader.next().is_none(), "the reader resumed after its end");
    reads
}

/// What replaying the trace read as `reads` under `policy` must give (up to the first
/// terminating exit or bad line).
fn model(reads: &[Read], policy: Policy) -> Expected {
    use reference_vmm::handlers::ExceptionPlan;

    let plan = ExceptionPlan::default();
    let mut expected = Expected::default();
    for read in reads {
        let (line, raw, abi, decodes) = match read {
            Read::Error { line } => {
                expected.end = Some(Err(*line));
                break;
            }
            Read::Exit {
                line,
                raw,
                abi,
                decodes,
            } => (*line, raw, *abi, *decodes),
        };
        let setting = Setting {
            notify: policy.notify_mode,
            semantics: policy.notify_semantics,
            heki_abi: abi,
            heki_denial: policy.heki_denial,
            plan: (plan.gp_error_code, plan.pf_error_code, plan.pf_cr2),
        };
        let nth = expected.total() + 1;
        let decision = vmm_table::decide(raw.reason, &raw.union, raw.io_data, nth, &setting, None);
        assert_eq!(
            !decodes,
            decision == Decision::Malformed,
            "line {line}: decodes: {decodes}, the table says {decision:?}"
        );
        let Ok(kind) = vmm_table::kind(raw.reason, &raw.union, abi) else {
            expected.end = Some(Err(line));
            break;
        };
        *expected.exits.entry(kind).or_default() += 1;
        let word =
            |at: usize| u64::from_le_bytes(raw.union[at..at + 8].try_into().unwrap_or([0; 8]));
        match kind {
            "notify" if raw.union[0] & 1 != 0 => expected.notify_invalid += 1,
            "notify" if decision.resumes() => expected.notify_resumed += 1,
            "heki_denial" => {
                let reason = word(0);
                if reason == heki_policy::cap::HekiExitReasons::CR0.bits() {
                    expected.denials_cr[0] += 1;
                } else if reason == heki_policy::cap::HekiExitReasons::CR4.bits() {
                    expected.denials_cr[1] += 1;
                }
            }
            _ => {}
        }
        match decision {
            Decision::Inject(event) => expected.applied.push(Recorded::Inject(event)),
            Decision::Read { port } => expected.applied.push(Recorded::Read {
                port,
                // A replay raises nothing, so the status port reads "all delivered";
                // no other port has a device behind it.
                value: u64::from(port == reference_vmm::guests::PORT_STATUS),
            }),
            Decision::Stop(outcome, cause) => {
                expected.end = Some(Ok(outcome));
                expected.cause = Some(cause);
                expected.stop_line = Some(line);
            }
            Decision::TripleFault(why) => {
                // KVM delivers the pending triple fault: KVM_EXIT_SHUTDOWN ends the run.
                expected.applied.push(Recorded::TripleFault);
                *expected.exits.entry("shutdown").or_default() += 1;
                expected.end = Some(Ok(Outcome::Shutdown));
                expected.cause = Some(StopCause::SynthesizedTripleFault { why });
                expected.stop_line = Some(line);
            }
            _ => {}
        }
        if expected.end.is_some() {
            break;
        }
    }
    expected.end.get_or_insert(Ok(Outcome::TraceEnd));
    expected
}

/// The lines the reader counts after line `stop` (none without a stop): the non-blank
/// ones, and every line longer than [`MAX_LINE_BYTES`] (skipped unread).
fn lines_after(data: &[u8], stop: Option<u64>) -> u64 {
    let Some(stop) = stop else {
        return 0;
    };
    data.split(|&b| b == b'\n')
        .skip(usize::try_from(stop).unwrap_or(usize::MAX))
        .filter(|l| l.len() > MAX_LINE_BYTES || !l.trim_ascii().is_empty())
        .count() as u64
}

/// A second replay of the same trace gives the same report (replay runs on the trace's
/// synthetic clock, not the wall clock): the same stop, counts and notify storms.
fn check_deterministic(
    data: &[u8],
    policy: Policy,
    forced_abi: Option<HekiAbi>,
    first: &reference_vmm::report::Report,
) {
    let again = reference_vmm::replay::replay("fuzz", data, policy, forced_abi)
        .expect("a trace that replayed once replays again");
    let report = &again.report;
    assert_eq!(report.cause, first.cause, "second replay's cause");
    assert_eq!(report.exits, first.exits, "second replay's exits");
    assert_eq!(
        (report.notify.storms, report.notify.in_storm_at_end),
        (first.notify.storms, first.notify.in_storm_at_end),
        "notify storms differ between two replays of the same trace"
    );
    assert_eq!(report.lines_not_replayed, first.lines_not_replayed);
}
