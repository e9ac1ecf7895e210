// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Raise -> acknowledgement latency: a per-vCPU stamp of the oldest raise
//! not yet acknowledged, and percentiles over the samples.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use serde::Serialize;

/// The time (ns since the run started) of the oldest raise for one vCPU that
/// the guest has not acknowledged yet. The timer thread marks it *before* it
/// raises (so an acknowledgement never finds a raise without its stamp); a
/// raise that coalesces with one still pending keeps the older stamp, so the
/// sample measures the wait of the oldest raise the delivery answers.
#[derive(Debug, Default)]
pub struct Stamp(AtomicU64);

impl Stamp {
    /// Records a raise at `now_ns` unless an older one is still unacknowledged.
    pub fn mark(&self, now_ns: u64) {
        let _ = self
            .0
            .compare_exchange(0, now_ns.saturating_add(1), SeqCst, SeqCst);
    }

    /// The guest acknowledged at `now_ns`: the latency of the oldest
    /// unacknowledged raise, if one was stamped.
    pub fn take(&self, now_ns: u64) -> Option<u64> {
        match self.0.swap(0, SeqCst) {
            0 => None,
            t => Some(now_ns.saturating_sub(t - 1)),
        }
    }
}

/// Latency percentiles in microseconds (nearest rank).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Samples (acknowledgements that found a stamped raise).
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Maximum.
    pub max_us: f64,
}

impl Latency {
    /// Percentiles of `ns` (sorted in place).
    ///
    /// ```
    /// use reference_vmm::timer::latency::Latency;
    /// let mut s: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
    /// let l = Latency::of(&mut s);
    /// assert_eq!((l.samples, l.p50_us, l.p99_us, l.max_us), (100, 50.0, 99.0, 100.0));
    /// ```
    pub fn of(ns: &mut [u64]) -> Self {
        if ns.is_empty() {
            return Latency::default();
        }
        ns.sort_unstable();
        let rank = |p: u64| {
            let n = ns.len() as u64;
            let i = (p * n).div_ceil(100).clamp(1, n) - 1;
            us(ns[i as usize])
        };
        Latency {
            samples: ns.len() as u64,
            p50_us: rank(50),
            p99_us: rank(99),
            max_us: us(ns[ns.len() - 1]),
        }
    }
}

/// ns -> µs rounded to 0.1.
fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_coalesced_raise_keeps_the_older_stamp() {
        let s = Stamp::default();
        assert_eq!(s.take(5), None);
        s.mark(100);
        s.mark(200); // coalesced: the delivery answers the raise at 100
        assert_eq!(s.take(350), Some(250));
        assert_eq!(s.take(400), None);
        s.mark(0); // a raise at t = 0 is still a stamp
        assert_eq!(s.take(7), Some(7));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(Latency::of(&mut []), Latency::default());
        let l = Latency::of(&mut [3000, 1000, 2000]);
        assert_eq!((l.p50_us, l.p99_us, l.max_us), (2.0, 3.0, 3.0));
    }
}
