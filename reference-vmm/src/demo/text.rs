// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The demo's text output: one line per scenario and a line of detail.

use std::fmt::Write as _;
use std::time::Instant;

use crate::report::{Report, Source};
use crate::stop::{Instruction, Outcome, StopCause};

use super::ScenarioResult;

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

/// The detail line of a scenario.
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
    if let (Some(i), Some(n)) = (&r.interrupts, &r.snapshots) {
        return format!(
            "{} snapshots -> {} fresh VMs ({} with an interrupt injected, {} with a window \
             requested); guest: delivered={}/{} while_masked={}",
            n.taken,
            n.restored,
            n.held.interrupt_injected,
            n.held.window_requested,
            i.delivered.map_or("-".into(), |v| v.to_string()),
            i.requested,
            i.delivered_while_masked
                .map_or("-".into(), |v| v.to_string())
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
    if let StopCause::GuestTripleFault { vcpu } = &r.cause {
        let at = vcpu.map_or(String::new(), |v| {
            let insn = match v.instruction {
                Instruction::Ud2 => " (`ud2`)",
                Instruction::Int3 => " (`int3`)",
                _ => "",
            };
            format!("the vCPU stopped at rip 0x{:x}{insn}; ", v.rip)
        });
        return format!(
            "guest's own triple fault, no VMM injection; {at}{}",
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

/// The demo's text: the host section, then one line per scenario.
pub(super) fn render(
    host: &str,
    results: &[ScenarioResult],
    timer: &super::timer::TimerScenario,
    t0: Instant,
) -> String {
    let mut s = String::new();
    s.push_str("== host\n");
    s.push_str(host);
    s.push_str(
        "== scenarios (kvm = run on /dev/kvm; replayed = this host's KVM cannot produce this exit)\n",
    );
    for r in results {
        let src = match r.source {
            Source::Kvm => "kvm     ",
            Source::Replay => "replayed",
        };
        let outcome = r.report.as_ref().map_or("error", |x| x.outcome.name());
        let accepted = match (r.report.as_ref(), r.also_accept) {
            (Some(rep), Some(q)) if rep.outcome == q.outcome && (q.matches)(&rep.cause) => {
                format!(
                    " (accepted: {} at {}, a host quirk)",
                    q.outcome.name(),
                    q.what
                )
            }
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "[{}] {:<31} {src} {:<14} expected {}{accepted}",
            if r.passed { "PASS" } else { "FAIL" },
            r.name,
            outcome,
            r.expected_outcome.name(),
        );
        if let Some(rep) = &r.report {
            let _ = writeln!(s, "       {}", detail(rep));
        }
        for f in &r.failures {
            let _ = writeln!(s, "       FAILED: {}", crate::error::escape(f));
        }
    }
    s.push_str(&super::timer::text(timer));
    let n = results.iter().filter(|r| r.passed).count() + usize::from(timer.passed);
    let _ = writeln!(
        s,
        "== {n}/{} scenarios passed in {:.2} s",
        results.len() + 1,
        t0.elapsed().as_secs_f64()
    );
    s
}
