//! The VMM side: handling `KVM_EXIT_HEKI_CONFIGURE` and `KVM_EXIT_HEKI_DENIAL`.
//!
//! [`HekiExitHandler`] keeps a mirror of the VM's pins (from configure exits), applies
//! a [`DenialPolicy`] to denial exits, counts everything ([`HekiStats`]) and logs
//! through `log` at a rate the caller bounds ([`RateLimit`], clock passed in, so it is
//! deterministic). A line counts as written only when the logger's filter shows its
//! level at that moment ([`log::log_enabled!`]); lines the filter hides are counted
//! apart ([`HekiStats::logs_filtered`]) and do not use up the rate limit, so a report
//! built from the stats says exactly how many lines reached the log. It returns a [`HekiDecision`] and never acts: the VMM re-enters the
//! vCPU or shuts the VM down. Its memory is constant whatever the number of exits.
//!
//! What KVM does after each exit (RFC v2 03/19), which the actions rely on:
//! - configure: the pin is already applied; the next `KVM_RUN` writes RAX = 0 and skips
//!   the VMCALL (the guest always sees success);
//! - denial: the next `KVM_RUN` injects `#GP(0)` and re-enters. Userspace cannot cancel
//!   the #GP; it can only not re-run the vCPU.

#![deny(unsafe_code)]

use crate::abi::HekiAbi;
use crate::cr::Cr0;
use crate::exit::{HekiExit, HekiExitReason};
use crate::policy::{PinnedCrs, RebootPolicy};
use core::time::Duration;

/// The `log` target of every message of this crate: configure exits at `info`, denials
/// at `warn` (`error` under [`DenialPolicy::Shutdown`]).
pub const LOG_TARGET: &str = "heki";

/// What to do about a denial exit.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum DenialPolicy {
    /// Resume the vCPU so KVM injects `#GP(0)` (the RFC behaviour); log a warning.
    #[default]
    Gp,
    /// Do not resume: shut the VM down. For fleets where a kernel trying to clear WP or
    /// SMEP means compromise.
    Shutdown,
    /// Record and resume, logging at `warn` like [`DenialPolicy::Gp`]: for monitoring.
    /// With the RFC's KVM uapi the guest still takes the `#GP` (userspace cannot cancel
    /// it); the difference to [`DenialPolicy::Gp`] is in what the VMM reports
    /// ([`Verdict::Audited`]). The denial is a security event, so it is logged at the
    /// level a default `warn` filter shows: a line counted in
    /// [`HekiStats::logs_emitted`] reaches such a logger.
    AuditOnly,
}

/// How the kernel reports `cr_pinned` in configure exits.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum ConfigureSemantics {
    /// The bits of *this* call (RFC v2/v3 as written): the mirror is the OR of all
    /// reports and a report can never shrink it.
    #[default]
    PerCall,
    /// The whole pin set of that CR (a kernel variant that reports the cumulative set):
    /// a report lacking mirrored bits would shrink the pins and is flagged as
    /// [`HekiAnomaly::ShrinkingReport`]; the mirror keeps the bits.
    Cumulative,
}

/// The VMM's next step. Exactly one per exit.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HekiAction {
    /// Re-enter the vCPU (`KVM_RUN`). After a configure exit KVM completes the
    /// hypercall with RAX = 0; after a denial exit it injects `#GP(0)`.
    Resume,
    /// Do not re-enter any vCPU: shut the VM down.
    Shutdown,
}

/// What the handler concluded, for reports.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// A configure exit was mirrored.
    Configured,
    /// A denial, enforced with #GP ([`DenialPolicy::Gp`]).
    Enforced,
    /// A denial, recorded for audit ([`DenialPolicy::AuditOnly`]).
    Audited,
    /// A denial that shuts the VM down ([`DenialPolicy::Shutdown`]).
    ShutDown,
}

/// Something in an exit that a correct RFC kernel does not produce, or that the mirror
/// cannot explain.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HekiAnomaly {
    /// `reason` is not exactly CR0 or CR4.
    UnknownReason(u64),
    /// `reserved[1..7]` is not zero.
    ReservedNonZero,
    /// A CR0 configure exit without WP (the RFC rejects such pins).
    Cr0PinWithoutWp {
        /// The reported bits.
        cr_pinned: u64,
    },
    /// A CR4 configure exit with bits outside the revision's pinnable mask.
    Cr4PinOutsidePinnable {
        /// The bits outside the mask.
        outside: u64,
    },
    /// A configure report that would shrink the pins ([`ConfigureSemantics::Cumulative`]).
    /// The mirror keeps the bits: pins never shrink.
    ShrinkingReport {
        /// Control register number.
        cr: u32,
        /// The mirrored bits missing from the report.
        lost: u64,
    },
    /// A denial whose value clears no mirrored pin: the mirror is incomplete (configure
    /// exits not enabled for that CR, or pins made before the VMM listened).
    UnexplainedDenial {
        /// Control register number.
        cr: u32,
        /// The value the guest tried to write.
        cr_value: u64,
    },
}

/// Whether a log line was written for this exit: [`LogPermit`] of
/// [`x86_kvm_base::ratelimit`] (`Allow { suppressed }` / `Suppress`; this name was an
/// enum with variants `Emitted { suppressed_before }` / `Suppressed`).
pub use x86_kvm_base::ratelimit::LogPermit as LogDecision;
/// The rate limiter, moved to [`x86_kvm_base::ratelimit`].
pub use x86_kvm_base::ratelimit::{LogPermit, RateLimit};

/// The handler's answer to one exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HekiDecision {
    /// What the VMM must do next.
    pub action: HekiAction,
    /// What the handler concluded.
    pub verdict: Verdict,
    /// The pinned bits the denied write would clear (0 for configure exits, and for an
    /// unexplained denial).
    pub denied_bits: u64,
    /// The first anomaly found, if any.
    pub anomaly: Option<HekiAnomaly>,
    /// Whether a log line was written: `Suppress` when the rate limit dropped it or
    /// the logger's filter hides its level ([`HekiStats`] tells the two apart).
    pub log: LogPermit,
}

/// Counters (saturating).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HekiStats {
    /// Configure exits handled.
    pub configure_exits: u64,
    /// CR0 denial exits.
    pub denials_cr0: u64,
    /// CR4 denial exits.
    pub denials_cr4: u64,
    /// Denial exits with an unknown reason.
    pub denials_unknown: u64,
    /// Denials answered with Shutdown.
    pub shutdowns: u64,
    /// Denials recorded under AuditOnly.
    pub audited: u64,
    /// Exits with an anomaly.
    pub anomalies: u64,
    /// Log lines written: passed by the logger's filter ([`log::log_enabled!`] at the
    /// time of the exit) and by the rate limit.
    pub logs_emitted: u64,
    /// Log lines the filter let through but the rate limit dropped.
    pub logs_suppressed: u64,
    /// Log lines not written because the logger's filter hides their level (configure
    /// lines are `info`, hidden by a default `warn` filter). They do not use up the
    /// rate limit. `logs_emitted + logs_suppressed + logs_filtered` is one line per exit.
    pub logs_filtered: u64,
}

/// The VMM's handler for both Heki exits of one VM.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HekiExitHandler {
    abi: HekiAbi,
    policy: DenialPolicy,
    semantics: ConfigureSemantics,
    mirror: PinnedCrs,
    stats: HekiStats,
    limit: RateLimit,
}

impl HekiExitHandler {
    /// A handler for revision `abi` with `policy`, an empty mirror and the default
    /// rate limit.
    pub const fn new(abi: HekiAbi, policy: DenialPolicy) -> Self {
        HekiExitHandler {
            abi,
            policy,
            semantics: ConfigureSemantics::PerCall,
            mirror: PinnedCrs::EMPTY,
            stats: HekiStats {
                configure_exits: 0,
                denials_cr0: 0,
                denials_cr4: 0,
                denials_unknown: 0,
                shutdowns: 0,
                audited: 0,
                anomalies: 0,
                logs_emitted: 0,
                logs_suppressed: 0,
                logs_filtered: 0,
            },
            limit: RateLimit::DEFAULT,
        }
    }
    /// Use `limit` for log lines.
    pub const fn with_rate_limit(mut self, limit: RateLimit) -> Self {
        self.limit = limit;
        self
    }
    /// Interpret configure reports with `semantics`.
    pub const fn with_configure_semantics(mut self, semantics: ConfigureSemantics) -> Self {
        self.semantics = semantics;
        self
    }
    /// Start from mirrored pins restored from a snapshot.
    pub const fn with_pins(mut self, pins: PinnedCrs) -> Self {
        self.mirror = pins;
        self
    }
    /// The revision.
    pub const fn abi(&self) -> HekiAbi {
        self.abi
    }
    /// The denial policy.
    pub const fn policy(&self) -> DenialPolicy {
        self.policy
    }
    /// Change the denial policy (e.g. escalate AuditOnly → Shutdown).
    pub fn set_policy(&mut self, policy: DenialPolicy) {
        self.policy = policy;
    }
    /// The mirrored pins (snapshot this with serde for migration).
    pub const fn pins(&self) -> PinnedCrs {
        self.mirror
    }
    /// The counters.
    pub const fn stats(&self) -> HekiStats {
        self.stats
    }
    /// Apply `policy` to the mirror at a guest reboot (it must match what the
    /// hypervisor does to its pins). Returns the pins dropped.
    pub fn on_reboot(&mut self, policy: RebootPolicy) -> PinnedCrs {
        match policy {
            RebootPolicy::ResetPins => core::mem::take(&mut self.mirror),
            _ => PinnedCrs::EMPTY,
        }
    }

    /// Handle one decoded Heki exit at time `now` (caller's monotonic clock).
    ///
    /// ```
    /// use std::time::Duration;
    /// use heki_policy::exit::{HekiExit, HekiExitReason};
    /// use heki_policy::{DenialPolicy, HekiAbi, HekiAction, HekiExitHandler};
    ///
    /// let mut vmm = HekiExitHandler::new(HekiAbi::RfcV3, DenialPolicy::Shutdown);
    /// // KVM_EXIT_HEKI_CONFIGURE: the guest pinned CR4.SMEP; mirror it and resume.
    /// let pin = HekiExit::configure(HekiExitReason::Cr4, 1 << 20);
    /// assert_eq!(vmm.handle(&pin, Duration::from_secs(1)).action, HekiAction::Resume);
    /// assert_eq!(vmm.pins().cr4, 1 << 20);
    /// // KVM_EXIT_HEKI_DENIAL: a write tried to clear it; this VMM shuts the guest down.
    /// let denial = HekiExit::denial(HekiExitReason::Cr4, 0x0027_0ef0);
    /// assert_eq!(vmm.handle(&denial, Duration::from_secs(2)).action, HekiAction::Shutdown);
    /// assert_eq!(vmm.stats().denials_cr4, 1);
    /// ```
    pub fn handle(&mut self, exit: &HekiExit, now: Duration) -> HekiDecision {
        match *exit {
            HekiExit::Configure {
                reason,
                cr_pinned,
                reserved,
            } => self.configure(reason, cr_pinned, reserved, now),
            HekiExit::Denial {
                reason,
                cr_value,
                reserved,
            } => self.denial(reason, cr_value, reserved, now),
        }
    }

    fn configure(
        &mut self,
        reason: HekiExitReason,
        cr_pinned: u64,
        reserved: [u64; 6],
        now: Duration,
    ) -> HekiDecision {
        self.stats.configure_exits = self.stats.configure_exits.saturating_add(1);
        let mut anomaly = (reserved != [0; 6]).then_some(HekiAnomaly::ReservedNonZero);
        match reason {
            HekiExitReason::Cr0 => {
                if cr_pinned & Cr0::WP.bits() == 0 {
                    anomaly = anomaly.or(Some(HekiAnomaly::Cr0PinWithoutWp { cr_pinned }));
                }
                anomaly = anomaly.or(self.shrink(0, self.mirror.cr0, cr_pinned));
                self.mirror.cr0 |= cr_pinned;
            }
            HekiExitReason::Cr4 => {
                let outside = cr_pinned & !self.abi.cr4_pinnable().bits();
                if outside != 0 {
                    anomaly = anomaly.or(Some(HekiAnomaly::Cr4PinOutsidePinnable { outside }));
                }
                anomaly = anomaly.or(self.shrink(4, self.mirror.cr4, cr_pinned));
                self.mirror.cr4 |= cr_pinned;
            }
            // Cannot tell which register: mirror nothing rather than guess.
            _ => anomaly = Some(HekiAnomaly::UnknownReason(reason.raw())),
        }
        let (abi, mirror) = (self.abi, self.mirror);
        let log = self.log(now, log::Level::Info, |suppressed| {
            format!(
                "heki: {} pinned {:?} bits {cr_pinned:#x}, pins now cr0={:#x} cr4={:#x}{}{}",
                abi,
                reason,
                mirror.cr0,
                mirror.cr4,
                anomaly_text(anomaly),
                suppressed_text(suppressed)
            )
        });
        self.finish(HekiAction::Resume, Verdict::Configured, 0, anomaly, log)
    }

    fn shrink(&self, cr: u32, mirrored: u64, reported: u64) -> Option<HekiAnomaly> {
        let lost = mirrored & !reported;
        (self.semantics == ConfigureSemantics::Cumulative && lost != 0)
            .then_some(HekiAnomaly::ShrinkingReport { cr, lost })
    }

    fn denial(
        &mut self,
        reason: HekiExitReason,
        cr_value: u64,
        reserved: [u64; 6],
        now: Duration,
    ) -> HekiDecision {
        let mut anomaly = (reserved != [0; 6]).then_some(HekiAnomaly::ReservedNonZero);
        let denied_bits = match reason.cr() {
            Some(cr) => {
                let counter = if cr == 0 {
                    &mut self.stats.denials_cr0
                } else {
                    &mut self.stats.denials_cr4
                };
                *counter = counter.saturating_add(1);
                let bits = self.mirror.get(cr).unwrap_or(0) & !cr_value;
                if bits == 0 {
                    anomaly = anomaly.or(Some(HekiAnomaly::UnexplainedDenial { cr, cr_value }));
                }
                bits
            }
            None => {
                self.stats.denials_unknown = self.stats.denials_unknown.saturating_add(1);
                anomaly = Some(HekiAnomaly::UnknownReason(reason.raw()));
                0
            }
        };
        let (action, verdict, level) = match self.policy {
            DenialPolicy::Shutdown => {
                self.stats.shutdowns = self.stats.shutdowns.saturating_add(1);
                (HekiAction::Shutdown, Verdict::ShutDown, log::Level::Error)
            }
            DenialPolicy::AuditOnly => {
                self.stats.audited = self.stats.audited.saturating_add(1);
                // Warn, not Info: an audit that a default `warn` filter hides
                // records nothing anyone sees, while the stats count it as logged.
                (HekiAction::Resume, Verdict::Audited, log::Level::Warn)
            }
            // Gp and any future policy: the RFC behaviour.
            _ => (HekiAction::Resume, Verdict::Enforced, log::Level::Warn),
        };
        let log = self.log(now, level, |suppressed| {
            format!(
                "heki: blocked {:?} write {cr_value:#x} clearing pinned {denied_bits:#x} ({verdict:?}){}{}",
                reason,
                anomaly_text(anomaly),
                suppressed_text(suppressed)
            )
        });
        self.finish(action, verdict, denied_bits, anomaly, log)
    }

    fn log(
        &mut self,
        now: Duration,
        level: log::Level,
        line: impl FnOnce(u64) -> String,
    ) -> LogPermit {
        // Ask the logger first: a line its filter hides is neither written nor
        // counted as written, and it does not use up the rate limit (hidden `info`
        // configure lines must not suppress the `warn` denial line that follows).
        if !log::log_enabled!(target: LOG_TARGET, level) {
            self.stats.logs_filtered = self.stats.logs_filtered.saturating_add(1);
            return LogPermit::Suppress;
        }
        let decision = self.limit.check(now);
        match decision {
            LogPermit::Allow {
                suppressed: suppressed_before,
            } => {
                self.stats.logs_emitted = self.stats.logs_emitted.saturating_add(1);
                log::log!(target: LOG_TARGET, level, "{}", line(suppressed_before));
            }
            LogPermit::Suppress => {
                self.stats.logs_suppressed = self.stats.logs_suppressed.saturating_add(1);
            }
        }
        decision
    }

    fn finish(
        &mut self,
        action: HekiAction,
        verdict: Verdict,
        denied_bits: u64,
        anomaly: Option<HekiAnomaly>,
        log: LogPermit,
    ) -> HekiDecision {
        if anomaly.is_some() {
            self.stats.anomalies = self.stats.anomalies.saturating_add(1);
        }
        HekiDecision {
            action,
            verdict,
            denied_bits,
            anomaly,
            log,
        }
    }
}

fn anomaly_text(anomaly: Option<HekiAnomaly>) -> String {
    anomaly
        .map(|a| format!(", anomaly {a:?}"))
        .unwrap_or_default()
}

fn suppressed_text(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} lines suppressed)")
    }
}
