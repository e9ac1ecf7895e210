//! `trace_replay`: reference-vmm trace reading and replay.

use super::common::assert_error_message;

/// `trace_replay`: a JSON Lines exit trace through the reference VMM's streaming
/// reader, exit decoder and replay (handlers applied to the vCPU stand-in), under two
/// policies (defaults with the trace's own ABI; internal-error notify mode, Heki
/// denial exits that shut down and `--heki-abi rfc-v3` forced).
///
/// Garbage gives errors that name a line that exists, in increasing order; a Heki
/// line without a Heki ABI is refused; replay fails exactly at the first bad line it
/// reaches (or succeeds when every line reads and decodes), its report counts add up,
/// count no more exits than the trace holds, say `replay`, and serialize to JSON.
pub fn trace_replay(data: &[u8]) {
    use reference_vmm::config::{HekiDenialAction, HekiExits, NotifyMode, Policy};
    use reference_vmm::exit::{Exit, HekiAbi};
    use reference_vmm::replay::replay;
    use reference_vmm::trace::{TraceItem, TraceReader};

    let lines = data.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let policies = [
        (Policy::default(), None),
        (
            Policy {
                notify_mode: NotifyMode::InternalError,
                notify_window: 128,
                heki_abi: HekiAbi::RfcV3,
                heki_exits: HekiExits::Denial,
                heki_denial: HekiDenialAction::Shutdown,
            },
            Some(HekiAbi::RfcV3),
        ),
    ];
    for (policy, forced_abi) in policies {
        // The reader alone: which lines are exits, which fail, where.
        let mut reader = TraceReader::new(data, forced_abi);
        let mut exits = 0u64;
        // Line of the first line the replay cannot get past (read or decode error).
        let mut first_bad: Option<u64> = None;
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
                    exits += 1;
                    match Exit::decode(&raw, reader.abi()) {
                        Ok(exit) => {
                            let _ = exit.kind().name();
                        }
                        Err(error) => {
                            assert_error_message(&error);
                            first_bad.get_or_insert(line);
                        }
                    }
                }
                Ok(other) => panic!("unexpected trace item {other:?}"),
                Err(error) => {
                    assert_eq!(error.line, line, "error names another line");
                    let text = error.to_string();
                    assert!(
                        text.starts_with(&format!("line {line}: ")),
                        "error does not name its line: {text}"
                    );
                    first_bad.get_or_insert(line);
                }
            }
        }
        assert!(reader.next().is_none(), "the reader resumed after its end");

        // The replay.
        match replay("fuzz", data, policy, forced_abi) {
            Ok(replayed) => {
                let report = &replayed.report;
                let counted: u64 = report.exits.values().sum();
                assert_eq!(counted, report.exits_total, "exits per kind do not add up");
                assert!(
                    report.exits_total <= exits + 1,
                    "{} exits replayed from {exits} exit lines",
                    report.exits_total
                );
                assert!(report.notify.exits <= report.exits_total);
                assert!(report.notify.invalid_contexts <= report.notify.exits);
                assert!(
                    replayed.stand_in.recorded.len() <= 64,
                    "stand-in kept too much"
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
                let text = error.to_string();
                let bad = first_bad
                    .unwrap_or_else(|| panic!("replay failed ({text}) on a trace that reads"));
                assert!(
                    text.starts_with("line "),
                    "replay error does not name a line: {text}"
                );
                let named: u64 = text
                    .trim_start_matches("line ")
                    .split(':')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("no line number in {text}"));
                assert_eq!(
                    named, bad,
                    "replay failed at another line than the first bad one"
                );
            }
        }
    }
}
