// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A log rate limiter after Linux `lib/ratelimit.c` `___ratelimit()`: at most `burst`
//! messages per `interval`; the rest are counted, and the count is handed to the next
//! message allowed, so nothing is lost silently. A guest that can trigger an exit at will
//! must not be able to flood the host's logs.
//!
//! # Time
//!
//! Time is a [`Duration`] since an origin the caller picks (e.g. the start of the run),
//! passed to every [`RateLimit::check`]; the limiter never reads a clock, so a replay can
//! drive it from a synthetic one and get the same answers.
//!
//! # Rules (as upstream)
//!
//! - `interval` zero: never limit (`___ratelimit()`: "Zero interval says never limit").
//! - `burst` zero with a non-zero `interval`: always limit ("non-positive burst says
//!   always limit"); every message is counted as suppressed.
//! - Otherwise an interval begins at the first message; once `now` is *past*
//!   `begin + interval` (`time_is_before_jiffies(rs->begin + interval)`) the next message
//!   begins a new interval and the count of the messages suppressed so far is reported
//!   with the first message allowed.
//! - Beyond upstream (jiffies never go back, a caller's clock might): a `now` more than
//!   one `interval` *before* the interval start is taken as a clock reset and begins a new
//!   interval, so one bogus far-future timestamp cannot silence the log.
//!
//! ```
//! use std::time::Duration;
//! use x86_kvm_base::ratelimit::{LogPermit, RateLimit};
//!
//! let mut limit = RateLimit::new(Duration::from_secs(5), 2);
//! let t = Duration::from_secs;
//! assert_eq!(limit.check(t(0)), LogPermit::Allow { suppressed: 0 });
//! assert_eq!(limit.check(t(1)), LogPermit::Allow { suppressed: 0 });
//! assert_eq!(limit.check(t(2)), LogPermit::Suppress);
//! // Past the end of the interval: allowed again, with the count of what was dropped.
//! assert_eq!(limit.check(t(6)), LogPermit::Allow { suppressed: 1 });
//! ```

use core::time::Duration;

/// Whether a message may be logged now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogPermit {
    /// Log it; `suppressed` messages were dropped since the previous allowed one (report
    /// them, as Linux prints "N callbacks suppressed").
    Allow {
        /// Messages suppressed since the previous allowed message.
        suppressed: u64,
    },
    /// Drop it (it is counted).
    Suppress,
}

impl LogPermit {
    /// Whether the message may be logged.
    pub const fn is_allowed(self) -> bool {
        matches!(self, LogPermit::Allow { .. })
    }
}

/// At most `burst` messages per `interval`, time passed in by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    interval: Duration,
    burst: u32,
    begin: Option<Duration>,
    printed: u32,
    missed: u64,
}

impl RateLimit {
    /// Linux's `DEFAULT_RATELIMIT_INTERVAL` (`5 * HZ`): 5 seconds.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
    /// Linux's `DEFAULT_RATELIMIT_BURST`: 10 messages.
    pub const DEFAULT_BURST: u32 = 10;
    /// Linux's default limit: 10 messages per 5 s.
    pub const DEFAULT: RateLimit = RateLimit::new(Self::DEFAULT_INTERVAL, Self::DEFAULT_BURST);

    /// At most `burst` messages per `interval` (see the module docs for what zero means).
    pub const fn new(interval: Duration, burst: u32) -> Self {
        RateLimit {
            interval,
            burst,
            begin: None,
            printed: 0,
            missed: 0,
        }
    }

    /// The interval.
    pub const fn interval(&self) -> Duration {
        self.interval
    }

    /// The burst.
    pub const fn burst(&self) -> u32 {
        self.burst
    }

    /// Asks to log one message at `now` (time since the caller's origin).
    ///
    /// ```
    /// use std::time::Duration;
    /// use x86_kvm_base::ratelimit::{LogPermit, RateLimit};
    ///
    /// // Linux's default: 10 messages per 5 s.
    /// let mut limit = RateLimit::new(Duration::from_secs(5), 10);
    /// let t = Duration::from_secs(100);
    /// for _ in 0..10 {
    ///     assert!(limit.check(t).is_allowed());
    /// }
    /// assert_eq!(limit.check(t), LogPermit::Suppress);
    /// assert_eq!(limit.check(t + Duration::from_millis(1)), LogPermit::Suppress);
    /// // Once more than the interval has passed, it allows again and reports the drops.
    /// assert_eq!(
    ///     limit.check(t + Duration::from_secs(6)),
    ///     LogPermit::Allow { suppressed: 2 }
    /// );
    /// ```
    pub fn check(&mut self, now: Duration) -> LogPermit {
        if self.interval.is_zero() {
            return LogPermit::Allow {
                suppressed: core::mem::take(&mut self.missed),
            };
        }
        if self.burst == 0 {
            self.missed = self.missed.saturating_add(1);
            return LogPermit::Suppress;
        }
        let new_interval = match self.begin {
            None => true,
            Some(begin) if now >= begin => now - begin > self.interval,
            Some(begin) => begin - now > self.interval,
        };
        if new_interval {
            self.begin = Some(now);
            self.printed = 0;
        }
        if self.printed < self.burst {
            self.printed += 1;
            LogPermit::Allow {
                suppressed: core::mem::take(&mut self.missed),
            }
        } else {
            self.missed = self.missed.saturating_add(1);
            LogPermit::Suppress
        }
    }

    /// Messages suppressed and not reported yet (`ratelimit_state_get_miss()`).
    pub const fn pending_suppressed(&self) -> u64 {
        self.missed
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    fn ns(n: u64) -> Duration {
        Duration::from_nanos(n)
    }

    /// `___ratelimit()` with the defaults: 10 allowed, the rest counted; the interval
    /// ends only once `now` is past `begin + interval`.
    #[test]
    fn allows_burst_then_suppresses_then_reports_the_count() {
        let mut l = RateLimit::default();
        for _ in 0..10 {
            assert_eq!(l.check(S), LogPermit::Allow { suppressed: 0 });
        }
        for i in 0..990 {
            assert_eq!(l.check(S + ns(i)), LogPermit::Suppress);
        }
        assert_eq!(l.pending_suppressed(), 990);
        // begin + interval exactly is still inside (time_is_before_jiffies is strict).
        assert_eq!(l.check(6 * S), LogPermit::Suppress);
        assert_eq!(l.check(6 * S + ns(1)), LogPermit::Allow { suppressed: 991 });
        assert_eq!(l.check(6 * S + ns(1)), LogPermit::Allow { suppressed: 0 });
        assert_eq!(l.pending_suppressed(), 0);
    }

    /// "Zero interval says never limit, otherwise, non-positive burst says always limit."
    #[test]
    fn zero_interval_never_limits_zero_burst_always_limits() {
        let mut off = RateLimit::new(Duration::ZERO, 0);
        for t in 0..100 {
            assert_eq!(off.check(ns(t)), LogPermit::Allow { suppressed: 0 });
        }
        let mut none = RateLimit::new(ns(1), 0);
        for t in 0..100 {
            assert_eq!(none.check(ns(t)), LogPermit::Suppress);
        }
        assert_eq!(none.pending_suppressed(), 100);
    }

    #[test]
    fn clock_going_back_stays_in_the_interval() {
        let mut l = RateLimit::new(ns(10), 1);
        assert_eq!(l.check(ns(100)), LogPermit::Allow { suppressed: 0 });
        assert_eq!(l.check(ns(95)), LogPermit::Suppress);
        assert_eq!(l.check(ns(90)), LogPermit::Suppress);
        assert_eq!(l.check(ns(111)), LogPermit::Allow { suppressed: 2 });
    }

    /// The clock-reset rule, exact: a `now` exactly one `interval` before the interval
    /// start stays in the interval; one nanosecond earlier begins a new one.
    #[test]
    fn clock_reset_at_the_limit_and_one_past() {
        let mut l = RateLimit::new(ns(10), 1);
        assert_eq!(l.check(ns(100)), LogPermit::Allow { suppressed: 0 });
        assert_eq!(l.check(ns(90)), LogPermit::Suppress);
        assert_eq!(l.check(ns(89)), LogPermit::Allow { suppressed: 1 });
        // The new interval began at 89: 99 is inside, 100 is past.
        assert_eq!(l.check(ns(99)), LogPermit::Suppress);
        assert_eq!(l.check(ns(100)), LogPermit::Allow { suppressed: 1 });
    }

    /// Burst edges: exactly `burst` messages pass in one interval and the next is
    /// suppressed; the largest burst and interval (`u32::MAX`, `Duration::MAX`) neither
    /// overflow nor end the interval early.
    #[test]
    fn burst_at_the_limit_and_one_past() {
        for burst in [1u32, 2, 10] {
            let mut l = RateLimit::new(S, burst);
            for i in 0..burst {
                assert!(l.check(ns(u64::from(i))).is_allowed(), "{burst}: {i}");
            }
            assert_eq!(
                l.check(ns(u64::from(burst))),
                LogPermit::Suppress,
                "{burst}"
            );
        }
        let mut l = RateLimit::new(Duration::MAX, u32::MAX);
        for i in 0..1000 {
            assert!(l.check(ns(i)).is_allowed());
        }
        // The largest interval: Duration::MAX after the start is still inside.
        let mut one = RateLimit::new(Duration::MAX, 1);
        assert!(one.check(Duration::ZERO).is_allowed());
        assert_eq!(one.check(Duration::MAX), LogPermit::Suppress);
    }

    #[test]
    fn clock_reset_does_not_silence_the_log() {
        let mut l = RateLimit::new(ns(10), 1);
        // One bogus far-future timestamp, then the real clock again.
        assert_eq!(l.check(Duration::MAX), LogPermit::Allow { suppressed: 0 });
        assert_eq!(l.check(ns(5)), LogPermit::Allow { suppressed: 0 });
        assert_eq!(l.check(ns(6)), LogPermit::Suppress);
        assert_eq!(l.check(ns(16)), LogPermit::Allow { suppressed: 1 });
    }

    #[test]
    fn erratic_clocks_never_panic_and_lose_nothing() {
        arbtest::arbtest(|u| {
            let mut l = RateLimit::new(ns(u.arbitrary()?), u.arbitrary()?);
            let (mut total, mut reported) = (0u64, 0u64);
            while !u.is_empty() {
                total += 1;
                let now = Duration::new(u.arbitrary()?, u.int_in_range(0..=999_999_999)?);
                if let LogPermit::Allow { suppressed } = l.check(now) {
                    reported += 1 + suppressed;
                }
            }
            assert_eq!(reported + l.pending_suppressed(), total);
            Ok(())
        });
    }

    #[test]
    fn never_more_than_burst_per_interval() {
        arbtest::arbtest(|u| {
            let interval = u.int_in_range(1..=1000u64)?;
            let burst = u.int_in_range(1..=5u32)?;
            let mut l = RateLimit::new(ns(interval), burst);
            let mut now = 0u64;
            let mut allowed_at: Vec<u64> = Vec::new();
            for _ in 0..u.int_in_range(0..=300)? {
                now += u.int_in_range(0..=interval)?;
                if l.check(ns(now)).is_allowed() {
                    allowed_at.push(now);
                }
            }
            // Fixed intervals: any span of one interval holds at most 2 * burst allowed
            // messages (the end of one interval and the start of the next).
            let n = 2 * burst as usize;
            for w in allowed_at.windows(n + 1) {
                assert!(w[n] - w[0] >= interval, "{w:?}");
            }
            Ok(())
        });
    }
}
