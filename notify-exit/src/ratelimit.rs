// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Rate-limited logging: the limiter is [`x86_kvm_base::ratelimit::RateLimit`] (one
//! limiter, one time type, for every crate of the workspace; after Linux
//! `lib/ratelimit.c` `___ratelimit()`).
//!
//! [`LogRateLimiter`] keeps this crate's nanosecond API (`u64` time, non-zero interval)
//! for the notify handler, whose clock is `now_ns`: it converts and delegates, with no
//! rule of its own.

#![forbid(unsafe_code)]

use core::num::NonZeroU64;
use core::time::Duration;

pub use x86_kvm_base::ratelimit::{LogPermit, RateLimit};

/// [`RateLimit`] driven by a nanosecond clock: at most `burst` messages per
/// `interval_ns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRateLimiter(RateLimit);

impl LogRateLimiter {
    /// Linux's `DEFAULT_RATELIMIT_INTERVAL`: 5 seconds.
    pub const DEFAULT_INTERVAL_NS: NonZeroU64 = NonZeroU64::new(5_000_000_000).unwrap();
    /// Linux's `DEFAULT_RATELIMIT_BURST`: 10 messages.
    pub const DEFAULT_BURST: u32 = RateLimit::DEFAULT_BURST;

    /// At most `burst` messages per `interval_ns` (`burst` 0 suppresses all, as in
    /// `___ratelimit()` with a non-zero interval).
    pub const fn new(interval_ns: NonZeroU64, burst: u32) -> Self {
        LogRateLimiter(RateLimit::new(
            Duration::from_nanos(interval_ns.get()),
            burst,
        ))
    }

    /// Asks to log one message at `now_ns` (see [`RateLimit::check`]).
    pub fn check(&mut self, now_ns: u64) -> LogPermit {
        self.0.check(Duration::from_nanos(now_ns))
    }

    /// Messages suppressed and not yet reported.
    pub const fn pending_suppressed(&self) -> u64 {
        self.0.pending_suppressed()
    }

    /// The limiter with its [`Duration`] API.
    pub const fn as_rate_limit(&self) -> &RateLimit {
        &self.0
    }
}

impl Default for LogRateLimiter {
    fn default() -> Self {
        LogRateLimiter::new(Self::DEFAULT_INTERVAL_NS, Self::DEFAULT_BURST)
    }
}

impl From<RateLimit> for LogRateLimiter {
    fn from(limit: RateLimit) -> Self {
        LogRateLimiter(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nanosecond API gives the answers of the shared limiter at the same instants.
    #[test]
    fn nanoseconds_map_onto_the_shared_limiter() {
        arbtest::arbtest(|u| {
            let interval = NonZeroU64::new(u.int_in_range(1..=u64::MAX)?).unwrap();
            let burst = u.int_in_range(0..=4)?;
            let mut ns = LogRateLimiter::new(interval, burst);
            let mut d = RateLimit::new(Duration::from_nanos(interval.get()), burst);
            while !u.is_empty() {
                let t: u64 = u.arbitrary()?;
                assert_eq!(ns.check(t), d.check(Duration::from_nanos(t)));
            }
            assert_eq!(ns.pending_suppressed(), d.pending_suppressed());
            Ok(())
        });
    }
}
