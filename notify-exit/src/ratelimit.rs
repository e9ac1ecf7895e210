// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A clock-driven log rate limiter, after Linux's `___ratelimit()`: at most `burst`
//! messages per `interval`; the rest are counted, and the count is handed to the next
//! message allowed, so nothing is silently lost. A guest that triggers an exit per
//! notify window must not be able to flood the host's logs.

#![deny(unsafe_code)]

use std::num::NonZeroU64;

/// Whether a message may be logged now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogPermit {
    /// Log it; `suppressed` messages were dropped since the last allowed one.
    Allow {
        /// Messages suppressed since the previous allowed message.
        suppressed: u64,
    },
    /// Drop it (it is counted).
    Suppress,
}

/// At most `burst` messages per `interval_ns`, time given by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRateLimiter {
    interval_ns: NonZeroU64,
    burst: u32,
    interval_start: Option<u64>,
    used: u32,
    suppressed: u64,
}

impl LogRateLimiter {
    /// Linux's `DEFAULT_RATELIMIT_INTERVAL`: 5 seconds.
    pub const DEFAULT_INTERVAL_NS: NonZeroU64 = NonZeroU64::new(5_000_000_000).unwrap();
    /// Linux's `DEFAULT_RATELIMIT_BURST`: 10 messages.
    pub const DEFAULT_BURST: u32 = 10;

    /// A limiter allowing `burst` messages per `interval_ns` (`burst` 0 suppresses all).
    pub const fn new(interval_ns: NonZeroU64, burst: u32) -> Self {
        LogRateLimiter {
            interval_ns,
            burst,
            interval_start: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// Asks to log one message at `now_ns`. An interval starts at the first message after
    /// the previous interval ended. A timestamp older than the interval start by less than
    /// one interval counts in the current interval; one older by a whole interval or more
    /// is taken as a clock reset and starts a new interval, so a single bogus far-future
    /// timestamp cannot silence the log until the clock catches up with it.
    pub fn check(&mut self, now_ns: u64) -> LogPermit {
        let expired = match self.interval_start {
            None => true,
            Some(start) => now_ns.abs_diff(start) >= self.interval_ns.get(),
        };
        if expired {
            self.interval_start = Some(now_ns);
            self.used = 0;
        }
        if self.used < self.burst {
            self.used += 1;
            LogPermit::Allow {
                suppressed: std::mem::take(&mut self.suppressed),
            }
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            LogPermit::Suppress
        }
    }

    /// Messages suppressed and not yet reported.
    pub fn pending_suppressed(&self) -> u64 {
        self.suppressed
    }
}

impl Default for LogRateLimiter {
    fn default() -> Self {
        LogRateLimiter::new(Self::DEFAULT_INTERVAL_NS, Self::DEFAULT_BURST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn allows_burst_then_suppresses_then_reports_the_count() {
        let mut l = LogRateLimiter::default();
        for _ in 0..10 {
            assert_eq!(l.check(S), LogPermit::Allow { suppressed: 0 });
        }
        for i in 0..990 {
            assert_eq!(l.check(S + i), LogPermit::Suppress);
        }
        assert_eq!(l.pending_suppressed(), 990);
        // Still inside the interval.
        assert_eq!(l.check(6 * S - 1), LogPermit::Suppress);
        // Next interval: the first message carries the count, the next ones do not.
        assert_eq!(l.check(6 * S), LogPermit::Allow { suppressed: 991 });
        assert_eq!(l.check(6 * S), LogPermit::Allow { suppressed: 0 });
        assert_eq!(l.pending_suppressed(), 0);
    }

    #[test]
    fn zero_burst_suppresses_everything() {
        let mut l = LogRateLimiter::new(NonZeroU64::new(1).unwrap(), 0);
        for t in 0..100 {
            assert_eq!(l.check(t), LogPermit::Suppress);
        }
        assert_eq!(l.pending_suppressed(), 100);
    }

    #[test]
    fn clock_going_back_stays_in_the_interval() {
        let mut l = LogRateLimiter::new(NonZeroU64::new(10).unwrap(), 1);
        assert_eq!(l.check(100), LogPermit::Allow { suppressed: 0 });
        assert_eq!(l.check(95), LogPermit::Suppress);
        assert_eq!(l.check(91), LogPermit::Suppress);
        assert_eq!(l.check(110), LogPermit::Allow { suppressed: 2 });
    }

    #[test]
    fn clock_reset_does_not_silence_the_log() {
        let mut l = LogRateLimiter::new(NonZeroU64::new(10).unwrap(), 1);
        // One bogus far-future timestamp, then the real clock again.
        assert_eq!(l.check(u64::MAX), LogPermit::Allow { suppressed: 0 });
        assert_eq!(l.check(5), LogPermit::Allow { suppressed: 0 });
        assert_eq!(l.check(6), LogPermit::Suppress);
        assert_eq!(l.check(15), LogPermit::Allow { suppressed: 1 });
    }

    #[test]
    fn erratic_clocks_never_panic_and_lose_nothing() {
        arbtest::arbtest(|u| {
            let interval = u.int_in_range(1..=u64::MAX)?;
            let mut l = LogRateLimiter::new(NonZeroU64::new(interval).unwrap(), u.arbitrary()?);
            let (mut total, mut reported) = (0u64, 0u64);
            while !u.is_empty() {
                total += 1;
                match l.check(u.arbitrary()?) {
                    LogPermit::Allow { suppressed } => reported += 1 + suppressed,
                    LogPermit::Suppress => {}
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
            let burst = u.int_in_range(0..=5u32)?;
            let mut l = LogRateLimiter::new(NonZeroU64::new(interval).unwrap(), burst);
            let mut now = 0u64;
            let (mut allowed, mut suppressed_reported, mut total) = (0u64, 0u64, 0u64);
            let mut allowed_at: Vec<u64> = Vec::new();
            for _ in 0..u.int_in_range(0..=300)? {
                now += u.int_in_range(0..=interval)?;
                total += 1;
                if let LogPermit::Allow { suppressed } = l.check(now) {
                    allowed += 1;
                    suppressed_reported += suppressed;
                    allowed_at.push(now);
                }
            }
            // Nothing lost: every message is either logged, reported as suppressed, or
            // still pending.
            assert_eq!(
                allowed + suppressed_reported + l.pending_suppressed(),
                total
            );
            // Fixed intervals: any time span of one interval holds at most 2 * burst
            // allowed messages (the end of one interval and the start of the next).
            let n = 2 * burst as usize;
            for w in allowed_at.windows(n + 1) {
                assert!(w[n] - w[0] >= interval, "{w:?}");
            }
            if burst == 0 {
                assert_eq!(allowed, 0);
            }
            Ok(())
        });
    }
}
