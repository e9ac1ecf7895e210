// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`NotifyHandler`]: one per vCPU, it ties the pure [`decide`](crate::policy::decide) to
//! the statistics, the storm detector and rate-limited logging. It owns no file
//! descriptor: it returns a [`NotifyDecision`] and the VMM applies the action.
//!
//! Logging goes through the `log` crate with target `notify_exit`: storm starts at
//! `warn`, storm ends at `info`, valid-context exits at `debug`, stops and triple faults at
//! `error`; each kind is rate-limited per vCPU ([`RateLimit`], after Linux `___ratelimit()`) and the first message
//! after a suppressed stretch says how many were dropped. Resumed exits and stops/triple
//! faults have separate limiters (both with the [`HandlerOptions::exit_log`] settings), so
//! a flood of `debug` lines for valid-context exits can never suppress the `error` line of
//! the exit that stops the VM.
//!
//! Time is a [`Duration`] since an origin the caller picks, the time type of
//! [`RateLimit`] and of every crate of the workspace: a VMM passes the same value here and
//! to heki-policy.

#![deny(unsafe_code)]

use crate::exit::{self, DecodeError, NotifyExit};
use crate::policy::{NotifyAction, NotifyPolicy};

use crate::ratelimit::{LogPermit, RateLimit};
use crate::stats::{NotifyStats, StormConfig, StormDetector, StormEvent};
use core::time::Duration;

/// The `log` target of every message of this crate.
pub const LOG_TARGET: &str = "notify_exit";

/// Settings of a [`NotifyHandler`] besides the policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HandlerOptions {
    /// Storm detection.
    pub storm: StormConfig,
    /// Limiter for per-exit messages. The handler keeps two copies: one for resumed
    /// exits (`debug`) and one for stops and triple faults (`error`).
    pub exit_log: RateLimit,
    /// Limiter for storm start/end messages.
    pub storm_log: RateLimit,
}

/// The outcome of one notify exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyDecision {
    /// What the VMM must do with the vCPU.
    pub action: NotifyAction,
    /// A storm transition this exit caused, for the VMM to act on if it wants to (the
    /// handler already logged it).
    pub storm: Option<StormEvent>,
}

/// Per-vCPU notify-exit handling state: policy, counters, storm detector, log limiters.
/// Memory is fixed whatever the number of exits.
#[derive(Debug, Clone)]
pub struct NotifyHandler {
    vcpu_id: u64,
    policy: NotifyPolicy,
    stats: NotifyStats,
    storm: StormDetector,
    exit_log: RateLimit,
    stop_log: RateLimit,
    storm_log: RateLimit,
}

impl NotifyHandler {
    /// A handler for vCPU `vcpu_id` (used in log messages) with default options.
    pub fn new(vcpu_id: u64, policy: NotifyPolicy) -> Self {
        Self::with_options(vcpu_id, policy, HandlerOptions::default())
    }

    /// A handler with explicit options.
    pub fn with_options(vcpu_id: u64, policy: NotifyPolicy, options: HandlerOptions) -> Self {
        let storm = StormDetector::new(options.storm);
        let stats = NotifyStats {
            window_ns: storm.window_ns(),
            ..NotifyStats::default()
        };
        NotifyHandler {
            vcpu_id,
            policy,
            stats,
            storm,
            stop_log: options.exit_log,
            exit_log: options.exit_log,
            storm_log: options.storm_log,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &NotifyPolicy {
        &self.policy
    }

    /// Handles one decoded notify exit seen at `now`, the time since the caller's origin
    /// (a monotonic clock or a replay's synthetic one).
    pub fn handle(&mut self, exit: NotifyExit, now: Duration) -> NotifyDecision {
        let action = self.policy.decide(exit);
        let s = &mut self.stats;
        s.exits = s.exits.saturating_add(1);
        if exit.context_invalid() {
            s.context_invalid = s.context_invalid.saturating_add(1);
        }
        if exit.flags.unknown_bits() != 0 {
            s.unknown_flags = s.unknown_flags.saturating_add(1);
        }
        if !self.policy.mode.is_enabled() {
            s.unexpected_while_disabled = s.unexpected_while_disabled.saturating_add(1);
        }
        match action {
            NotifyAction::Resume => s.resumed = s.resumed.saturating_add(1),
            NotifyAction::SynthesizeTripleFault => {
                s.triple_faults = s.triple_faults.saturating_add(1)
            }
            NotifyAction::StopInternalError { .. } => s.stops = s.stops.saturating_add(1),
        }
        let storm = self.storm.record(now);
        self.refresh_window_stats();
        self.log_exit(exit, action, now);
        if let Some(event) = storm {
            self.log_storm(event, now);
        }
        NotifyDecision { action, storm }
    }

    /// Decodes `(exit_reason, exit-union bytes)` and handles the exit: the entry point for
    /// a VMM on kvm-ioctls (`VcpuExit::Unsupported(37)`) or a trace replayer.
    ///
    /// ```
    /// use std::time::Duration;
    /// use notify_exit::{NotifyAction, NotifyHandler, NotifyPolicy, NotifyVmexitMode, KVM_EXIT_NOTIFY};
    ///
    /// let mut vcpu0 = NotifyHandler::new(0, NotifyPolicy::new(NotifyVmexitMode::Run, true));
    /// // Two exits as kvm-ioctls hands them over (VcpuExit::Unsupported(37) + the union bytes).
    /// let d = vcpu0.handle_raw(KVM_EXIT_NOTIFY, &[0, 0, 0, 0], Duration::from_millis(1))?;
    /// assert_eq!(d.action, NotifyAction::Resume);
    /// let d = vcpu0.handle_raw(KVM_EXIT_NOTIFY, &[1, 0, 0, 0], Duration::from_millis(2))?;
    /// assert_eq!(d.action, NotifyAction::SynthesizeTripleFault);
    /// let stats = vcpu0.stats();
    /// assert_eq!((stats.exits, stats.context_invalid, stats.resumed), (2, 1, 1));
    /// # Ok::<(), notify_exit::DecodeError>(())
    /// ```
    pub fn handle_raw(
        &mut self,
        exit_reason: u32,
        union_bytes: &[u8],
        now: Duration,
    ) -> Result<NotifyDecision, DecodeError> {
        let exit = exit::decode(exit_reason, union_bytes)?;
        Ok(self.handle(exit, now))
    }

    /// Lets the storm detector notice at `now` (since the caller's origin) that a storm has ended without waiting
    /// for another notify exit (call it from a timer or on other exits).
    pub fn poll(&mut self, now: Duration) -> Option<StormEvent> {
        let event = self.storm.poll(now);
        self.refresh_window_stats();
        if let Some(event) = event {
            self.log_storm(event, now);
        }
        event
    }

    /// The statistics; the window figures are as of the last exit or [`poll`](Self::poll).
    pub fn stats(&self) -> NotifyStats {
        self.stats
    }

    fn refresh_window_stats(&mut self) {
        self.stats.exits_in_window = self.storm.exits_in_window();
        self.stats.rate_per_sec = self.storm.rate_per_sec();
        self.stats.in_storm = self.storm.in_storm();
        self.stats.storms = self.storm.storms();
    }

    fn log_exit(&mut self, exit: NotifyExit, action: NotifyAction, now: Duration) {
        let (level, limiter) = if action.resumes() {
            (log::Level::Debug, &mut self.exit_log)
        } else {
            (log::Level::Error, &mut self.stop_log)
        };
        if !log::log_enabled!(target: LOG_TARGET, level) {
            return;
        }
        if let LogPermit::Allow { suppressed } = limiter.check(now) {
            log::log!(
                target: LOG_TARGET,
                level,
                "vCPU {}: KVM_EXIT_NOTIFY (flags {}), exit #{}: {}{}",
                self.vcpu_id,
                exit.flags,
                self.stats.exits,
                action,
                Suppressed(suppressed)
            );
        }
    }

    fn log_storm(&mut self, event: StormEvent, now: Duration) {
        let LogPermit::Allow { suppressed } = self.storm_log.check(now) else {
            return;
        };
        match event {
            StormEvent::Started {
                exits_in_window,
                window_ns,
                ..
            } => log::warn!(
                target: LOG_TARGET,
                "vCPU {}: notify VM exit storm: {} exits in {} ms (threshold {}); the guest \
                 keeps running without event windows{}",
                self.vcpu_id,
                exits_in_window,
                window_ns / 1_000_000,
                self.storm.config().threshold,
                Suppressed(suppressed)
            ),
            StormEvent::Ended {
                duration_ns, exits, ..
            } => log::info!(
                target: LOG_TARGET,
                "vCPU {}: notify VM exit storm over after {} ms, {} exits{}",
                self.vcpu_id,
                duration_ns / 1_000_000,
                exits,
                Suppressed(suppressed)
            ),
        }
    }
}

/// Formats " (N similar messages suppressed)" when N > 0.
struct Suppressed(u64);

impl std::fmt::Display for Suppressed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 > 0 {
            write!(f, " ({} similar messages suppressed)", self.0)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NotifyVmexitMode;
    use crate::exit::{NotifyFlags, KVM_EXIT_NOTIFY};
    use crate::policy::StopReason;
    use std::num::NonZeroU64;

    fn exit(bits: u32) -> NotifyExit {
        NotifyExit::new(NotifyFlags::from_bits_retain(bits))
    }

    fn nz(v: u64) -> NonZeroU64 {
        NonZeroU64::new(v).unwrap()
    }

    /// `ns` nanoseconds after the origin.
    fn ns(ns: u64) -> Duration {
        Duration::from_nanos(ns)
    }

    #[test]
    fn counts_every_kind_of_exit() {
        let mut h = NotifyHandler::new(0, NotifyPolicy::new(NotifyVmexitMode::Run, false));
        assert_eq!(h.handle(exit(0), ns(0)).action, NotifyAction::Resume);
        assert_eq!(h.handle(exit(4), ns(1)).action, NotifyAction::Resume);
        assert!(matches!(
            h.handle(exit(1), ns(2)).action,
            NotifyAction::StopInternalError {
                reason: StopReason::NoTripleFaultEvent,
                ..
            }
        ));
        let s = h.stats();
        assert_eq!(s.exits, 3);
        assert_eq!(s.resumed, 2);
        assert_eq!(s.context_invalid, 1);
        assert_eq!(s.unknown_flags, 1);
        assert_eq!(s.stops, 1);
        assert_eq!(s.triple_faults, 0);
        assert_eq!(s.unexpected_while_disabled, 0);
        assert_eq!(s.exits_in_window, 3);
        assert_eq!(s.window_ns, 1_000_000_000);
    }

    #[test]
    fn counts_triple_faults_and_disabled_mode_exits() {
        let mut h = NotifyHandler::new(1, NotifyPolicy::new(NotifyVmexitMode::Run, true));
        assert_eq!(
            h.handle(exit(1), ns(0)).action,
            NotifyAction::SynthesizeTripleFault
        );
        assert_eq!(h.stats().triple_faults, 1);
        let mut h = NotifyHandler::new(1, NotifyPolicy::new(NotifyVmexitMode::Disable, true));
        h.handle(exit(0), ns(0));
        h.handle(exit(1), ns(0));
        assert_eq!(h.stats().unexpected_while_disabled, 2);
        assert_eq!(h.stats().stops, 1);
        assert_eq!(h.stats().resumed, 1);
    }

    #[test]
    fn handle_raw_decodes_then_handles() {
        let mut h = NotifyHandler::new(0, NotifyPolicy::new(NotifyVmexitMode::Run, true));
        let d = h
            .handle_raw(KVM_EXIT_NOTIFY, &exit(1).to_union_bytes(), ns(0))
            .unwrap();
        assert_eq!(d.action, NotifyAction::SynthesizeTripleFault);
        assert_eq!(
            h.handle_raw(5, &[0; 4], ns(0)),
            Err(DecodeError::NotNotifyExit { exit_reason: 5 })
        );
        assert_eq!(h.stats().exits, 1, "undecodable exits are not counted");
    }

    #[test]
    fn reports_storm_start_and_end() {
        let options = HandlerOptions {
            storm: StormConfig::new(nz(1_600_000), nz(5)),
            ..HandlerOptions::default()
        };
        let mut h =
            NotifyHandler::with_options(0, NotifyPolicy::new(NotifyVmexitMode::Run, true), options);
        let storms: Vec<_> = (0..20)
            .filter_map(|i| h.handle(exit(0), ns(i * 1000)).storm)
            .collect();
        assert_eq!(storms.len(), 1);
        assert!(matches!(
            storms[0],
            StormEvent::Started {
                at_ns: 4000,
                exits_in_window: 5,
                ..
            }
        ));
        assert!(h.stats().in_storm);
        assert_eq!(h.stats().rate_per_sec, 20 * 1_000_000_000 / 1_600_000);
        assert!(matches!(
            h.poll(ns(10_000_000)),
            Some(StormEvent::Ended { exits: 16, .. })
        ));
        let s = h.stats();
        assert!(!s.in_storm);
        assert_eq!(s.storms, 1);
        assert_eq!(s.exits_in_window, 0);
    }
}
