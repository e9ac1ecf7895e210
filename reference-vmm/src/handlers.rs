// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Exit handlers: pure functions `(Exit, state) -> Actions`, one per concern.
//!
//! [`handle`] counts the exit and dispatches it. No handler touches a file
//! descriptor: the run loop ([`crate::vmm`] on KVM, [`crate::replay`] on a
//! stand-in) applies the returned [`Actions`]. The same functions run for real
//! and replayed exits.

#![deny(unsafe_code)]

use crate::action::{Action, Actions};
use crate::config::{Policy, RunConfig};
use crate::exit::{Exit, ExitKind};
use crate::guests::{self, Guest};
use crate::stop::{StopCause, TripleFaultReason};
use std::time::Duration;

/// Exit counts per [`ExitKind`], allocation-free, with a running total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    per_kind: [u64; ExitKind::COUNT],
    total: u64,
}

impl ExitCounts {
    /// Adds one exit of `kind`.
    #[inline]
    pub fn add(&mut self, kind: ExitKind) {
        if let Some(c) = self.per_kind.get_mut(kind as usize) {
            *c += 1;
        }
        self.total += 1;
    }

    /// Count of `kind`.
    pub fn get(&self, kind: ExitKind) -> u64 {
        self.per_kind.get(kind as usize).copied().unwrap_or(0)
    }

    /// All exits.
    #[inline]
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Counts with `n` exits of each `(kind, n)` (a restored run's counts).
    pub fn from_counts(counts: impl IntoIterator<Item = (ExitKind, u64)>) -> Self {
        let mut c = ExitCounts::default();
        for (kind, n) in counts {
            if let Some(slot) = c.per_kind.get_mut(kind as usize) {
                *slot = slot.saturating_add(n);
                c.total = c.total.saturating_add(n);
            }
        }
        c
    }

    /// Adds another vCPU's counts.
    pub fn merge(&mut self, other: &ExitCounts) {
        for (a, b) in self.per_kind.iter_mut().zip(other.per_kind.iter()) {
            *a += b;
        }
        self.total += other.total;
    }
}

/// What the guests reported through the port channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestChannel {
    /// Report fields `PORT_REPORT + k`.
    pub fields: [Option<u32>; guests::REPORT_FIELDS],
    /// `out` exits on the tick port.
    pub ticks: u64,
    /// Sync requests seen.
    pub syncs: u64,
    /// Exits on ports nobody owns.
    pub unknown_ports: u64,
}

/// How raised interrupts reach vcpu-events' injector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IrqMode {
    /// irq-storm: the VMM keeps a backlog count and hands the injector the
    /// next interrupt only once the previous one left its queue, so no raise
    /// is ever coalesced and every raise is delivered.
    #[default]
    Backlog,
    /// irq-flood: every raise goes straight to `Injector::raise`, which
    /// queues it, coalesces it with the same vector still queued, or refuses
    /// it with `RaiseError::QueueFull` once `capacity` distinct vectors are
    /// queued. The VMM counts each outcome: nothing is lost silently.
    Flood,
}

/// Raises made by the handlers since the last `KVM_RUN`, waiting for the
/// injector (flood mode). Fixed size: at most one exit's worth of actions.
pub const FRESH_RAISES: usize = crate::action::Actions::CAPACITY;

/// Interrupt bookkeeping of a run (irq-storm, irq-flood).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqState {
    /// How raises reach the injector.
    pub mode: IrqMode,
    /// How many interrupts the scenario raises in total (N).
    pub target: u64,
    /// Raised so far (handed to the injector).
    pub requested: u64,
    /// Backlog mode: raised but not handed to the injector yet (a counter,
    /// so it is bounded by construction: at most `target - injected`).
    pub pending: u64,
    /// Flood mode: vectors raised since the last `KVM_RUN`, not yet given to
    /// the injector (`fresh[..fresh_len]`).
    pub fresh: [u8; FRESH_RAISES],
    /// Number of valid entries in `fresh`.
    pub fresh_len: u8,
    /// Raises the injector merged with the same vector still queued.
    pub coalesced: u64,
    /// Raises the injector refused with `QueueFull` (the VMM counts them; a
    /// real device would retry or drop them by its own rule).
    pub refused: u64,
    /// Injected into the vCPU (KVM_INTERRUPT) so far.
    pub injected: u64,
    /// Sum of the vectors injected (the guest reports the sum it received).
    pub injected_vector_sum: u64,
    /// Vectors queued in the injector after the last `before_run`.
    pub queued: u64,
    /// Most vectors ever queued in the injector at once.
    pub max_queued: u64,
    /// The injector's queue bound (distinct vectors).
    pub capacity: u64,
    /// Interrupt windows requested.
    pub windows_requested: u64,
    /// xorshift state choosing the "arbitrary moments".
    pub rng: u64,
}

impl IrqState {
    fn next_random(&mut self) -> u64 {
        // xorshift64: cheap, deterministic, good enough to scatter the raises.
        let mut x = self.rng.max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Applies a raise decided by a handler: counted in the backlog, or (flood
    /// mode) kept for the injector. The handler only raises in flood mode when
    /// `fresh` has room; should it ever be full, the raise is counted as
    /// refused, never dropped silently.
    #[inline]
    pub fn raise(&mut self, vector: u8) {
        match self.mode {
            IrqMode::Backlog => self.pending += 1,
            IrqMode::Flood => match self.fresh.get_mut(usize::from(self.fresh_len)) {
                Some(slot) => {
                    *slot = vector;
                    self.fresh_len += 1;
                }
                None => self.refused += 1,
            },
        }
    }

    /// Takes the flood-mode raises made since the last `KVM_RUN`, oldest first.
    #[inline]
    pub fn take_fresh(&mut self) -> ([u8; FRESH_RAISES], usize) {
        let n = usize::from(std::mem::take(&mut self.fresh_len));
        (self.fresh, n)
    }

    /// True once every raise of the scenario was made and none is left to
    /// deliver (nothing in the backlog, the fresh list or the injector's queue).
    /// The irq-flood guest reads it through [`crate::guests::PORT_STATUS`].
    pub fn drained(&self) -> bool {
        self.requested >= self.target
            && self.pending == 0
            && self.fresh_len == 0
            && self.queued == 0
    }
}

/// Exceptions the scenario injects (and expects the guest to report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExceptionPlan {
    /// #GP error code.
    pub gp_error_code: u32,
    /// #PF error code.
    pub pf_error_code: u32,
    /// #PF CR2 payload.
    pub pf_cr2: u64,
}

impl Default for ExceptionPlan {
    fn default() -> Self {
        ExceptionPlan {
            // Bits 31:16 of an injected error code must be 0 (SDM 26.2.1.3).
            gp_error_code: 0x1230,
            pf_error_code: 0x2, // write to a not-present page
            pf_cr2: 0x7fff_dead_b000,
        }
    }
}

/// Notify-exit state: notify-exit's per-vCPU handler (policy, stats, storm detector).
#[derive(Clone, Debug)]
pub struct NotifyState {
    /// notify-exit's handler.
    pub handler: notify_exit::NotifyHandler,
    /// Storms the detector reported.
    pub storms_started: u64,
    /// Last action taken, for the report.
    pub last_action: Option<&'static str>,
}

impl NotifyState {
    /// A handler for `policy`'s notify mode and semantics; `triple_fault_event` says
    /// whether the VMM can synthesize one.
    pub fn new(policy: &Policy, triple_fault_event: bool) -> Self {
        use notify_exit::{NotifyHandler, NotifyPolicy, NotifyVmexitMode};
        let mode = match policy.notify_mode {
            crate::config::NotifyMode::Run => NotifyVmexitMode::Run,
            crate::config::NotifyMode::InternalError => NotifyVmexitMode::InternalError,
            crate::config::NotifyMode::Disable => NotifyVmexitMode::Disable,
        };
        NotifyState {
            handler: NotifyHandler::new(
                0,
                NotifyPolicy::new(mode, triple_fault_event).with_semantics(policy.notify_semantics),
            ),
            storms_started: 0,
            last_action: None,
        }
    }
}

/// Heki state: heki-policy's exit handler (mirrored pins, stats), created on
/// the first Heki exit with the ABI in force.
#[derive(Clone, Debug, Default)]
pub struct HekiState {
    /// heki-policy's handler.
    pub handler: Option<heki_policy::HekiExitHandler>,
    /// Anomalies heki-policy flagged (e.g. a denial that clears no mirrored pin).
    pub anomalies: u64,
    /// Last action taken, for the report.
    pub last_action: Option<&'static str>,
}

/// Snapshots of a run (`run --snapshot-every N`, `resume`): the VMM's own
/// counts, kept across every VM the run goes through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotCounts {
    /// Snapshots taken (vCPU, guest memory and the VMM's state).
    pub taken: u64,
    /// Snapshots restored into a fresh VM.
    pub restored: u64,
    /// Restores that failed (the run ends with `StopCause::RestoreFailed`).
    pub restore_failures: u64,
    /// What the snapshots held: how many caught each kind of event in flight.
    pub held: SnapshotHeld,
}

/// How many snapshots caught each kind of event in flight (a snapshot may
/// count in several). The report's `snapshots.held` and the snapshot file's
/// `vmm.snapshots.held` are this struct as is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotHeld {
    /// An interrupt injected (KVM_INTERRUPT done) but not yet delivered.
    pub interrupt_injected: u64,
    /// Vectors still queued in the injector.
    pub vectors_queued: u64,
    /// `kvm_run.request_interrupt_window` set for the next `KVM_RUN`.
    pub window_requested: u64,
    /// An exception pending or injected.
    pub exception: u64,
    /// An exception with its payload (CR2 / DR6) not yet delivered.
    pub exception_payload: u64,
    /// An NMI pending or injected.
    pub nmi: u64,
    /// A triple fault pending.
    pub triple_fault: u64,
}

impl SnapshotHeld {
    /// Every count, in field order.
    pub fn counts(&self) -> [u64; 7] {
        [
            self.interrupt_injected,
            self.vectors_queued,
            self.window_requested,
            self.exception,
            self.exception_payload,
            self.nmi,
            self.triple_fault,
        ]
    }
}

/// Everything the handlers read and update during one run.
#[derive(Clone, Debug)]
pub struct RunState {
    /// The guest (for replay: the guest the trace claims, or `None`).
    pub guest: Option<Guest>,
    /// Policy flags.
    pub policy: Policy,
    /// Exit counts.
    pub exits: ExitCounts,
    /// The port channel.
    pub channel: GuestChannel,
    /// Interrupts.
    pub irq: IrqState,
    /// Exceptions to inject.
    pub exceptions: ExceptionPlan,
    /// Exception injections applied (vector, error code, payload) in order.
    pub injected_exceptions: u64,
    /// NMIs injected.
    pub injected_nmis: u64,
    /// Notify.
    pub notify: NotifyState,
    /// Heki.
    pub heki: HekiState,
    /// Why a synthesized triple fault is pending, reported at the shutdown.
    pub pending_shutdown: Option<TripleFaultReason>,
    /// Stop after this many exits.
    pub max_exits: u64,
    /// Time of the current exit since the run started, from the run loop's
    /// clock (wall clock on KVM, the trace's synthetic clock in replay); the
    /// same value feeds notify-exit and heki-policy (storm detection, rate
    /// limits), with no per-crate conversion.
    pub now: Duration,
    /// Snapshots taken and restored (not touched by any handler).
    pub snapshots: SnapshotCounts,
}

impl RunState {
    /// Fresh state for a run of `cfg`.
    pub fn new(cfg: &RunConfig) -> Self {
        let mut st = Self::for_replay(cfg.policy);
        st.guest = Some(cfg.guest);
        st.max_exits = cfg.max_exits;
        match cfg.guest {
            Guest::IrqStorm => st.irq.target = cfg.count,
            Guest::IrqFlood => {
                st.irq.target = cfg.count;
                st.irq.mode = IrqMode::Flood;
            }
            _ => {}
        }
        st
    }

    /// Fresh state for replaying a trace under `policy`.
    pub fn for_replay(policy: Policy) -> Self {
        RunState {
            guest: None,
            policy,
            exits: ExitCounts::default(),
            channel: GuestChannel::default(),
            irq: IrqState {
                rng: 0x9e37_79b9_7f4a_7c15,
                ..IrqState::default()
            },
            exceptions: ExceptionPlan::default(),
            injected_exceptions: 0,
            injected_nmis: 0,
            notify: NotifyState::new(&policy, true),
            heki: HekiState::default(),
            pending_shutdown: None,
            max_exits: u64::MAX,
            now: Duration::ZERO,
            snapshots: SnapshotCounts::default(),
        }
    }
}

/// Counts `exit` and dispatches it to its handler.
#[inline]
pub fn handle(exit: &Exit, st: &mut RunState) -> Actions {
    st.exits.add(exit.kind());
    let nth = st.exits.total();
    let actions = match *exit {
        Exit::IoOut { port, data, .. } => pio::out(port, data, st),
        Exit::IoIn { port, .. } => Actions::one(Action::ReadValue {
            value: u64::from(pio::in_value(port, st)),
        }),
        Exit::Hlt => lifecycle::hlt(),
        Exit::Shutdown => lifecycle::shutdown(st),
        Exit::IrqWindowOpen | Exit::Intr => Actions::resume(), // the injector acts before the next run
        Exit::FailEntry {
            hardware_entry_failure_reason,
            cpu,
        } => Actions::one(Action::Stop {
            cause: StopCause::FailEntry {
                hardware_entry_failure_reason,
                cpu,
            },
        }),
        Exit::InternalError { suberror } => Actions::one(Action::Stop {
            cause: StopCause::KvmInternalError { suberror },
        }),
        Exit::Notify(n) => notify::handle(n, nth, st),
        Exit::Heki(h) => heki::handle(&h, nth, st),
        // No device is mapped: an MMIO access (read or write) stops the run.
        Exit::Mmio { .. } => lifecycle::unhandled(crate::exit::KVM_EXIT_MMIO),
        Exit::SystemEvent { .. } => lifecycle::unhandled(crate::exit::KVM_EXIT_SYSTEM_EVENT),
        Exit::MemoryFault { .. } => lifecycle::unhandled(crate::exit::KVM_EXIT_MEMORY_FAULT),
        Exit::Other { reason } => lifecycle::unhandled(reason),
    };
    if nth >= st.max_exits && !actions.iter().any(|a| matches!(a, Action::Stop { .. })) {
        return Actions::one(Action::Stop {
            cause: StopCause::ExitBudget { exits: nth },
        });
    }
    actions
}

/// The guests' port channel (tick, sync, report, status).
pub mod pio {
    use super::*;
    use vcpu_events::{Event, HardwareException};

    /// An `out` to `port` with `data`.
    #[inline]
    pub fn out(port: u16, data: u64, st: &mut RunState) -> Actions {
        if port == guests::PORT_TICK {
            st.channel.ticks += 1;
            return maybe_raise(st);
        }
        if port == guests::PORT_SYNC {
            st.channel.syncs += 1;
            return sync(data as u8, st);
        }
        let k = usize::from(port.wrapping_sub(guests::PORT_REPORT));
        match st.channel.fields.get_mut(k) {
            Some(slot) if port >= guests::PORT_REPORT => *slot = Some(data as u32),
            _ => st.channel.unknown_ports += 1,
        }
        Actions::resume()
    }

    /// irq-storm: raise interrupts at pseudo-random tick exits until N are raised.
    /// irq-flood: raise a burst of 0..=4 interrupts on pseudo-random vectors at
    /// every tick exit, masked or not, until N are raised.
    #[inline]
    fn maybe_raise(st: &mut RunState) -> Actions {
        if st.irq.requested >= st.irq.target {
            return Actions::resume();
        }
        if st.irq.mode == IrqMode::Flood {
            return flood(st);
        }
        if st.irq.next_random() % 3 == 0 {
            st.irq.requested += 1;
            return Actions::one(Action::RaiseInterrupt {
                vector: guests::IRQ_VECTOR,
            });
        }
        Actions::resume()
    }

    /// irq-flood's burst (bounded by the room in the fresh-raise list).
    fn flood(st: &mut RunState) -> Actions {
        let r = st.irq.next_random();
        let room = (FRESH_RAISES - usize::from(st.irq.fresh_len)) as u64;
        let burst = (r % 5).min(room).min(st.irq.target - st.irq.requested);
        let mut a = Actions::resume();
        for i in 0..burst {
            let v = (r >> (8 + 8 * i)) % u64::from(guests::FLOOD_VECTORS);
            if a.push(Action::RaiseInterrupt {
                vector: guests::FLOOD_FIRST + v as u8,
            }) {
                st.irq.requested += 1;
            }
        }
        a
    }

    /// An `in` from `port`: what the guest reads. Only the status port has a
    /// device behind it; every other port reads 0.
    #[inline]
    pub fn in_value(port: u16, st: &RunState) -> u32 {
        if port == guests::PORT_STATUS {
            u32::from(st.irq.drained())
        } else {
            0
        }
    }

    /// The guest asks for the next step of its scenario.
    fn sync(code: u8, st: &mut RunState) -> Actions {
        let plan = st.exceptions;
        match code {
            guests::SYNC_INJECT_GP => Actions::one(Action::Inject {
                event: Event::HardwareException(HardwareException::general_protection(
                    plan.gp_error_code,
                )),
            }),
            guests::SYNC_INJECT_PF => Actions::one(Action::Inject {
                event: Event::HardwareException(HardwareException::page_fault(
                    plan.pf_error_code,
                    plan.pf_cr2,
                )),
            }),
            guests::SYNC_INJECT_NMI => Actions::one(Action::Inject { event: Event::Nmi }),
            guests::SYNC_TRIPLE_FAULT => Actions::one(Action::SynthesizeTripleFault {
                why: TripleFaultReason::GuestRequest,
            }),
            _ => {
                st.channel.unknown_ports += 1;
                Actions::resume()
            }
        }
    }
}

/// Halt, shutdown and exits without a handler.
pub mod lifecycle {
    use super::*;

    /// `KVM_EXIT_HLT`: the guest is done.
    pub fn hlt() -> Actions {
        Actions::one(Action::Stop {
            cause: StopCause::Halted,
        })
    }

    /// `KVM_EXIT_SHUTDOWN`: reported with the cause of the synthesized triple
    /// fault, if the VMM made one, else as the guest's own.
    pub fn shutdown(st: &mut RunState) -> Actions {
        let cause = match st.pending_shutdown.take() {
            Some(why) => StopCause::SynthesizedTripleFault { why },
            // Where the vCPU stopped is added by the KVM source, which can read it.
            None => StopCause::GuestTripleFault { vcpu: None },
        };
        Actions::one(Action::Stop { cause })
    }

    /// Any exit this VMM has no device or policy for.
    pub fn unhandled(reason: u32) -> Actions {
        Actions::one(Action::Stop {
            cause: StopCause::UnhandledExit {
                exit_reason: reason,
            },
        })
    }
}

/// Notify VM exits (`KVM_EXIT_NOTIFY`): decided by notify-exit's policy.
pub mod notify {
    use super::*;
    use notify_exit::{NotifyAction, NotifyExit, StormEvent};

    /// A notify exit, the `nth` exit of the run.
    pub fn handle(exit: NotifyExit, nth: u64, st: &mut RunState) -> Actions {
        let d = st.notify.handler.handle(exit, st.now);
        if let Some(StormEvent::Started { .. }) = d.storm {
            st.notify.storms_started += 1;
        }
        match d.action {
            NotifyAction::Resume => {
                st.notify.last_action = Some("resume");
                Actions::resume()
            }
            NotifyAction::SynthesizeTripleFault => {
                st.notify.last_action = Some("synthesize triple fault (vcpu-events)");
                Actions::one(Action::SynthesizeTripleFault {
                    why: TripleFaultReason::NotifyInvalidContext { nth },
                })
            }
            NotifyAction::StopInternalError { reason, flags } => {
                st.notify.last_action = Some("stop as internal error");
                Actions::one(Action::Stop {
                    cause: StopCause::NotifyInternalError {
                        nth,
                        flags: flags.bits(),
                        reason,
                    },
                })
            }
            _ => {
                st.notify.last_action = Some("stop (unknown notify action)");
                lifecycle::unhandled(crate::exit::KVM_EXIT_NOTIFY)
            }
        }
    }
}

/// Heki (RFC) configure and denial exits: decided by heki-policy's handler.
pub mod heki {
    use super::*;
    use crate::config::HekiDenialAction;
    use heki_policy::{DenialPolicy, HekiAction, HekiExit, HekiExitHandler};

    /// heki-policy's denial policy for `--heki-denial`.
    pub fn denial_policy(a: HekiDenialAction) -> DenialPolicy {
        match a {
            HekiDenialAction::Gp => DenialPolicy::Gp,
            HekiDenialAction::Shutdown => DenialPolicy::Shutdown,
            HekiDenialAction::Audit => DenialPolicy::AuditOnly,
        }
    }

    /// A Heki exit, the `nth` exit of the run.
    pub fn handle(exit: &HekiExit, nth: u64, st: &mut RunState) -> Actions {
        let Some(abi) = st.policy.heki_abi.policy_abi() else {
            // Decoding only yields Heki exits with an ABI selected.
            return Actions::one(Action::Stop {
                cause: StopCause::HekiExitWithoutAbi,
            });
        };
        let denial = denial_policy(st.policy.heki_denial);
        let h = st
            .heki
            .handler
            .get_or_insert_with(|| HekiExitHandler::new(abi, denial));
        let d = h.handle(exit, st.now);
        if d.anomaly.is_some() {
            st.heki.anomalies += 1;
        }
        match (d.action, exit) {
            (
                HekiAction::Shutdown,
                HekiExit::Denial {
                    reason, cr_value, ..
                },
            ) => {
                st.heki.last_action = Some("synthesize triple fault (vcpu-events)");
                Actions::one(Action::SynthesizeTripleFault {
                    why: TripleFaultReason::HekiDenial {
                        nth,
                        cr: reason.raw(),
                        cr_value: *cr_value,
                    },
                })
            }
            (HekiAction::Shutdown, _) => {
                st.heki.last_action = Some("synthesize triple fault (vcpu-events)");
                Actions::one(Action::SynthesizeTripleFault {
                    why: TripleFaultReason::HekiDenial {
                        nth,
                        cr: 0,
                        cr_value: 0,
                    },
                })
            }
            (_, HekiExit::Configure { .. }) => {
                st.heki.last_action = Some("mirror pins");
                Actions::resume()
            }
            _ => {
                st.heki.last_action = Some(match st.policy.heki_denial {
                    HekiDenialAction::Audit => "audit (logged); KVM injects #GP(0)",
                    _ => "resume; KVM injects #GP(0)",
                });
                Actions::resume()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NotifyMode;

    fn notify(flags: u32) -> notify_exit::NotifyExit {
        notify_exit::NotifyExit {
            flags: notify_exit::NotifyFlags::from_bits_retain(flags),
        }
    }

    #[test]
    fn invalid_notify_context_shuts_down_in_run_mode_and_stops_in_internal_error_mode() {
        let mut st = RunState::for_replay(Policy::default());
        assert!(handle(&Exit::Notify(notify(0)), &mut st).is_empty());
        let a: Vec<_> = handle(&Exit::Notify(notify(1)), &mut st)
            .iter()
            .cloned()
            .collect();
        assert_eq!(
            a,
            vec![Action::SynthesizeTripleFault {
                why: TripleFaultReason::NotifyInvalidContext { nth: 2 }
            }]
        );
        let mut st = RunState::for_replay(Policy {
            notify_mode: NotifyMode::InternalError,
            ..Policy::default()
        });
        let a: Vec<_> = handle(&Exit::Notify(notify(1)), &mut st)
            .iter()
            .cloned()
            .collect();
        assert!(matches!(
            a[..],
            [Action::Stop {
                cause: StopCause::NotifyInternalError {
                    nth: 1,
                    flags: 1,
                    ..
                },
            }]
        ));
    }

    #[test]
    fn report_channel_records_fields() {
        let mut st = RunState::for_replay(Policy::default());
        handle(
            &Exit::IoOut {
                port: guests::PORT_REPORT + 2,
                size: 4,
                count: 1,
                data: 77,
            },
            &mut st,
        );
        handle(
            &Exit::IoOut {
                port: 0x3f8,
                size: 1,
                count: 1,
                data: 0,
            },
            &mut st,
        );
        assert_eq!(st.channel.fields[2], Some(77));
        assert_eq!(st.channel.unknown_ports, 1);
        assert_eq!(st.exits.get(ExitKind::IoOut), 2);
    }

    #[test]
    fn irq_storm_raises_exactly_target_interrupts() {
        let mut cfg = RunConfig::new(Guest::IrqStorm);
        cfg.count = 100;
        let mut st = RunState::new(&cfg);
        let mut raised = 0;
        for _ in 0..10_000 {
            let a = handle(
                &Exit::IoOut {
                    port: guests::PORT_TICK,
                    size: 1,
                    count: 1,
                    data: 0,
                },
                &mut st,
            );
            raised += a
                .iter()
                .filter(|a| matches!(a, Action::RaiseInterrupt { .. }))
                .count();
        }
        assert_eq!(raised, 100);
        assert_eq!(st.irq.requested, 100);
    }

    #[test]
    fn irq_flood_raises_bursts_of_flood_vectors_and_keeps_every_raise() {
        let mut cfg = RunConfig::new(Guest::IrqFlood);
        cfg.count = 1000;
        let mut st = RunState::new(&cfg);
        let tick = Exit::IoOut {
            port: guests::PORT_TICK,
            size: 1,
            count: 1,
            data: 0,
        };
        let mut kept = 0u64;
        let mut max_burst = 0;
        for _ in 0..10_000 {
            let a = handle(&tick, &mut st);
            max_burst = max_burst.max(a.len());
            for act in a.iter() {
                let &Action::RaiseInterrupt { vector } = act else {
                    panic!("{act:?}");
                };
                assert!(
                    (guests::FLOOD_FIRST..guests::FLOOD_FIRST + guests::FLOOD_VECTORS)
                        .contains(&vector)
                );
            }
            assert_eq!(apply_raises(&a, &mut st), None);
            // What the run loop does before the next KVM_RUN.
            let (fresh, n) = st.irq.take_fresh();
            assert_eq!(n, a.len());
            assert_eq!(
                &fresh[..n],
                &a.iter()
                    .map(|x| match x {
                        Action::RaiseInterrupt { vector } => *vector,
                        _ => 0,
                    })
                    .collect::<Vec<_>>()[..]
            );
            kept += n as u64;
            assert!(!st.irq.drained() || st.irq.requested == 1000);
        }
        assert_eq!(st.irq.requested, 1000);
        assert_eq!(kept, 1000);
        assert!(max_burst > 1 && max_burst <= FRESH_RAISES);
        assert_eq!(st.irq.refused, 0);
        assert!(st.irq.drained());
        assert_eq!(pio::in_value(guests::PORT_STATUS, &st), 1);
        assert_eq!(pio::in_value(0x60, &st), 0);
    }

    fn apply_raises(a: &Actions, st: &mut RunState) -> Option<crate::apply::Stop> {
        struct NoTarget;
        impl crate::apply::Target for NoTarget {
            fn inject(&mut self, _: vcpu_events::Event) -> Result<(), crate::apply::ApplyError> {
                unreachable!()
            }
            fn synthesize_triple_fault(&mut self) -> Result<(), crate::apply::ApplyError> {
                unreachable!()
            }
        }
        crate::apply::apply(a, st, &mut NoTarget)
    }

    #[test]
    fn a_full_fresh_list_counts_the_raise_as_refused() {
        let mut st = RunState::for_replay(Policy::default());
        st.irq.mode = IrqMode::Flood;
        for v in 0..FRESH_RAISES as u8 + 2 {
            st.irq.raise(0x20 + v);
        }
        assert_eq!(usize::from(st.irq.fresh_len), FRESH_RAISES);
        assert_eq!(st.irq.refused, 2);
    }
}
