// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The demo's scenarios, each with its expected outcome and checks. Every
//! check decides from typed report fields (the stop's [`StopCause`], counts),
//! never from the report's text.

use crate::config::{HekiDenialAction, NotifyMode, Policy, RunConfig};
use crate::exit::HekiAbi;
use crate::guests::Guest;
use crate::report::Report;
use crate::stop::{Instruction, Outcome, StopCause, TripleFaultReason, VcpuState};

use super::{
    Quirk, Scenario, ScenarioKind, TRACE_HEKI_PIN_DENIAL, TRACE_NOTIFY_INVALID, TRACE_NOTIFY_STORM,
};

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
/// Interrupts the demo's "snapshot under fire" irq-storm raises.
pub const DEMO_SNAPSHOT_IRQ_COUNT: u64 = 1_000;
/// The demo's `--snapshot-every` (mid-storm: not a multiple of the guest's
/// stretch length, so snapshots fall at every phase of the storm).
pub const DEMO_SNAPSHOT_EVERY: u64 = 97;
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
            && h.logs_emitted + h.logs_suppressed + h.logs_filtered == handled
            && h.logs_emitted <= 10 * windows,
        || format!("{h:?}"),
    )?;
    bounded_memory(r)
}

/// Every demo scenario, in the order the demo prints them.
pub fn scenarios() -> Vec<Scenario> {
    let mut v = kvm_guests();
    v.extend(replayed_traces());
    v.extend(hostile_guests());
    v.extend(hostile_traces());
    v
}

/// The built-in guests on /dev/kvm.
fn kvm_guests() -> Vec<Scenario> {
    let run = |g: Guest, count: u64| {
        let mut c = RunConfig::new(g);
        c.count = count;
        c
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
            also_accept: Some(Quirk {
                outcome: Outcome::Timeout,
                what: "vmcall",
                matches: |c| {
                    matches!(
                        c,
                        StopCause::Timeout {
                            vcpu: Some(VcpuState {
                                instruction: Instruction::Vmcall,
                                ..
                            }),
                            ..
                        }
                    )
                },
            }),
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
    ]
}

/// The shipped traces, replayed (exits this host's KVM cannot produce).
fn replayed_traces() -> Vec<Scenario> {
    let p = Policy::default();
    let replay = |trace, text, policy, abi| ScenarioKind::Replay {
        trace,
        text,
        policy,
        abi,
    };
    vec![
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
                    r.notify.invalid_contexts == 1
                        && matches!(
                            r.cause,
                            StopCause::SynthesizedTripleFault {
                                why: TripleFaultReason::NotifyInvalidContext { nth: 4 }
                            }
                        ),
                    || format!("{:?}", r.cause),
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
            expect_text: "--notify-vmexit internal-error: valid-context exits resume, the \
                          invalid-context one (exit #4) stops the VM as an internal error",
            checks: |r| {
                want(
                    r.notify.resumed == 2
                        && matches!(
                            r.cause,
                            StopCause::NotifyInternalError {
                                nth: 4,
                                reason: notify_exit::StopReason::ContextInvalid,
                                ..
                            }
                        ),
                    || format!("{:?}; {:?}", r.cause, r.notify),
                )
            },
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
                want(
                    r.cause
                        == StopCause::UnhandledExit {
                            exit_reason: crate::exit::KVM_EXIT_MEMORY_FAULT,
                        },
                    || format!("{:?}", r.cause),
                )
            },
        },
    ]
}

/// Hostile guests on /dev/kvm (issue 8).
fn hostile_guests() -> Vec<Scenario> {
    let run = |g: Guest, count: u64| {
        let mut c = RunConfig::new(g);
        c.count = count;
        c
    };
    vec![
        Scenario {
            name: "self-triple-fault",
            kind: ScenarioKind::Run(run(Guest::SelfTripleFault, 0)),
            expect: Outcome::Shutdown,
            also_accept: None,
            expect_text: "empty IDT + ud2: #UD -> #GP -> #DF -> triple fault; reported shutdown",
            checks: |r| {
                want(
                    matches!(
                        r.cause,
                        StopCause::GuestTripleFault {
                            vcpu: Some(VcpuState {
                                instruction: Instruction::Ud2,
                                ..
                            })
                        }
                    ) && exits(r, "shutdown") == 1
                        && exits(r, "io_out") == 1,
                    || format!("{:?}; {:?}", r.cause, r.exits),
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
            name: "snapshot under fire",
            kind: ScenarioKind::Run({
                let mut c = run(Guest::IrqStorm, DEMO_SNAPSHOT_IRQ_COUNT);
                c.snapshot_every = Some(DEMO_SNAPSHOT_EVERY);
                c
            }),
            expect: Outcome::Halted,
            also_accept: None,
            expect_text: "irq-storm, every 97 exits: snapshot, destroy the VM, restore into a \
                 fresh one; all 1000 delivered exactly once, none while masked, every snapshot \
                 restored, some taken with an interrupt injected but not delivered",
            checks: |r| {
                let i = r.interrupts.ok_or("no interrupts section")?;
                let s = r.snapshots.ok_or("no snapshots section")?;
                want(
                    i.requested == DEMO_SNAPSHOT_IRQ_COUNT
                        && i.injected == DEMO_SNAPSHOT_IRQ_COUNT
                        && i.delivered == Some(DEMO_SNAPSHOT_IRQ_COUNT)
                        && i.delivered_while_masked == Some(0)
                        && s.taken == (r.exits_total - 1) / DEMO_SNAPSHOT_EVERY
                        && s.taken > 0
                        && s.restored == s.taken
                        && s.restore_failures == 0
                        && s.held.interrupt_injected > 0,
                    || format!("{i:?}; {s:?}"),
                )
            },
        },
    ]
}

/// Hostile generated traces (issue 8).
fn hostile_traces() -> Vec<Scenario> {
    let p = Policy::default();
    vec![
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
                        && matches!(
                            r.cause,
                            StopCause::SynthesizedTripleFault {
                                why: TripleFaultReason::HekiDenial { nth: 3, .. }
                            }
                        ),
                    || format!("{:?}; {:?}", r.cause, r.heki),
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
