// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Per-vCPU notify-exit statistics: counters, the exit rate over a sliding window and a
//! storm detector.
//!
//! A guest that keeps hitting the notify window (e.g. an endless chain of #AC or #DB
//! deliveries, the CVE-2015-5307 pattern) costs the host one VM exit per window. That is
//! bounded, but worth seeing: the storm detector reports when the exit rate crosses a
//! threshold and when it falls back, so a VMM can log, throttle or stop the guest.
//!
//! Time is passed in by the caller as a [`Duration`] since an origin the caller picks (e.g.
//! `Instant::elapsed()` since the VMM started, or a replay's synthetic clock): the same
//! time type as [`x86_kvm_base::ratelimit::RateLimit`], so a VMM passes one value to every
//! crate. Nothing here reads a clock, which keeps everything deterministic and testable.
//! Internally the window counts whole nanoseconds; a time past `u64::MAX` ns (584 years)
//! saturates. Reported times ([`StormEvent`]) are nanoseconds since the same origin. Memory is fixed: the window is [`WINDOW_BUCKETS`] counters,
//! whatever the number of exits.
//!
//! Erratic clocks never panic and never wedge the statistics:
//! * a timestamp a little older than the newest one seen (less than one window back,
//!   e.g. two vCPU threads racing for the clock) is counted in the newest bucket;
//! * a timestamp a whole window or more older is taken as a clock reset (a wall clock
//!   stepped back, a restored VMM with a new epoch): the window is re-anchored at the new
//!   time and keeps its counts, so it drains normally as the new clock advances. Without
//!   this, one bogus far-future timestamp would pin the window there and every later
//!   exit would pile into one bucket forever;
//! * a jump forward by a window or more simply empties the window.

#![deny(unsafe_code)]

use core::time::Duration;
use std::num::NonZeroU64;

/// `now` in whole nanoseconds since the caller's origin, saturating at `u64::MAX`.
fn nanos(now: Duration) -> u64 {
    u64::try_from(now.as_nanos()).unwrap_or(u64::MAX)
}

/// Number of buckets the sliding window is split into; the window's resolution is
/// `window / WINDOW_BUCKETS`.
pub const WINDOW_BUCKETS: usize = 16;

/// Counts events over the last `window` nanoseconds with fixed memory.
///
/// The window is rounded up to a multiple of [`WINDOW_BUCKETS`] nanoseconds; an event
/// leaves the count between `window - window/16` and `window` after it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlidingWindow {
    bucket_ns: u64,
    buckets: [u64; WINDOW_BUCKETS],
    /// Slot in `buckets` of the newest bucket. Kept apart from `newest` so that a clock
    /// reset can re-anchor the time without reordering the buckets.
    head: usize,
    /// Absolute index (`now / bucket_ns`) of the newest bucket; `None` before the first use.
    newest: Option<u64>,
    total: u64,
}

impl SlidingWindow {
    /// A window of (about) `window_ns` nanoseconds.
    pub fn new(window_ns: NonZeroU64) -> Self {
        SlidingWindow {
            bucket_ns: window_ns.get().div_ceil(WINDOW_BUCKETS as u64),
            buckets: [0; WINDOW_BUCKETS],
            head: 0,
            newest: None,
            total: 0,
        }
    }

    /// The window length actually used, in nanoseconds.
    pub fn window_ns(&self) -> u64 {
        self.bucket_ns.saturating_mul(WINDOW_BUCKETS as u64)
    }

    /// Moves the window so that it ends at `now_ns`, dropping expired buckets (see the
    /// module docs for clocks that go backwards).
    fn advance(&mut self, now_ns: u64) {
        const SPAN: u64 = WINDOW_BUCKETS as u64;
        let current = now_ns / self.bucket_ns;
        let Some(newest) = self.newest else {
            self.newest = Some(current);
            return;
        };
        if current < newest {
            if newest - current >= SPAN {
                // Clock reset: re-anchor, keep the counts.
                self.newest = Some(current);
            }
            return;
        }
        let gap = current - newest;
        if gap >= SPAN {
            self.buckets = [0; WINDOW_BUCKETS];
            self.total = 0;
        } else {
            for _ in 0..gap {
                self.head = (self.head + 1) % WINDOW_BUCKETS;
                if let Some(b) = self.buckets.get_mut(self.head) {
                    self.total = self.total.saturating_sub(*b);
                    *b = 0;
                }
            }
        }
        self.newest = Some(current);
    }

    /// Records one event at `now` (since the caller's origin) and returns the count in the
    /// window.
    pub fn record(&mut self, now: Duration) -> u64 {
        self.advance(nanos(now));
        // Saturating: 2^64 events cannot happen, but the count must never wrap to 0.
        if self.total < u64::MAX {
            if let Some(b) = self.buckets.get_mut(self.head) {
                *b += 1;
                self.total += 1;
            }
        }
        self.total
    }

    /// The count of events in the window ending at `now` (since the caller's origin).
    pub fn count(&mut self, now: Duration) -> u64 {
        self.advance(nanos(now));
        self.total
    }

    /// The count as of the last [`record`](Self::record) or [`count`](Self::count) call.
    pub fn last_count(&self) -> u64 {
        self.total
    }

    /// Events per second corresponding to `count` events in this window.
    pub fn per_second(&self, count: u64) -> u64 {
        let per_sec = u128::from(count) * 1_000_000_000 / u128::from(self.window_ns().max(1));
        u64::try_from(per_sec).unwrap_or(u64::MAX)
    }
}

/// Storm detection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StormConfig {
    /// Length of the sliding window, nanoseconds.
    pub window_ns: NonZeroU64,
    /// A storm starts when the window holds at least this many notify exits. It ends when
    /// the count drops below half of it (at least 1), so a rate hovering at the threshold
    /// does not flap.
    pub threshold: NonZeroU64,
}

impl StormConfig {
    /// Default window: one second.
    pub const DEFAULT_WINDOW_NS: NonZeroU64 = NonZeroU64::new(1_000_000_000).unwrap();
    /// Default threshold: 100 notify exits per window. A well-behaved guest opens event
    /// windows all the time and should see none.
    pub const DEFAULT_THRESHOLD: NonZeroU64 = NonZeroU64::new(100).unwrap();

    /// Settings with this window and threshold.
    pub const fn new(window_ns: NonZeroU64, threshold: NonZeroU64) -> Self {
        StormConfig {
            window_ns,
            threshold,
        }
    }

    /// The count below which a storm ends.
    pub const fn end_level(&self) -> u64 {
        let half = self.threshold.get() / 2;
        if half == 0 {
            1
        } else {
            half
        }
    }
}

impl Default for StormConfig {
    fn default() -> Self {
        StormConfig::new(Self::DEFAULT_WINDOW_NS, Self::DEFAULT_THRESHOLD)
    }
}

/// A storm transition.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum StormEvent {
    /// The window count reached the threshold.
    Started {
        /// Time of the exit that crossed the threshold, nanoseconds since the caller's
        /// origin.
        at_ns: u64,
        /// Exits in the window at that time.
        exits_in_window: u64,
        /// Window length, nanoseconds.
        window_ns: u64,
    },
    /// The window count fell below the end level.
    Ended {
        /// Time it was noticed (at a later exit or [`StormDetector::poll`]), nanoseconds
        /// since the caller's origin.
        at_ns: u64,
        /// How long the storm lasted, nanoseconds.
        duration_ns: u64,
        /// Notify exits recorded from the start of the storm to its end, inclusive of
        /// the one that started it.
        exits: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Storm {
    started_ns: u64,
    exits: u64,
}

/// Detects notify-exit storms with fixed memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StormDetector {
    config: StormConfig,
    window: SlidingWindow,
    storm: Option<Storm>,
    storms: u64,
}

impl StormDetector {
    /// A detector with these settings.
    pub fn new(config: StormConfig) -> Self {
        StormDetector {
            config,
            window: SlidingWindow::new(config.window_ns),
            storm: None,
            storms: 0,
        }
    }

    /// The settings.
    pub fn config(&self) -> StormConfig {
        self.config
    }

    /// Records one notify exit at `now` (since the caller's origin); returns a transition
    /// if one happened.
    ///
    /// During a storm, an exit that finds the window count (itself included) below the end
    /// level reports [`StormEvent::Ended`]; that count is then below the threshold too, so
    /// one call never has two transitions to report.
    pub fn record(&mut self, now: Duration) -> Option<StormEvent> {
        let count = self.window.record(now);
        let now_ns = nanos(now);
        match &mut self.storm {
            Some(storm) if count < self.config.end_level() => {
                let ended = StormEvent::Ended {
                    at_ns: now_ns,
                    duration_ns: now_ns.saturating_sub(storm.started_ns),
                    exits: storm.exits,
                };
                self.storm = None;
                Some(ended)
            }
            Some(storm) => {
                storm.exits = storm.exits.saturating_add(1);
                None
            }
            None if count >= self.config.threshold.get() => {
                self.storm = Some(Storm {
                    started_ns: now_ns,
                    exits: 1,
                });
                self.storms = self.storms.saturating_add(1);
                Some(StormEvent::Started {
                    at_ns: now_ns,
                    exits_in_window: count,
                    window_ns: self.window.window_ns(),
                })
            }
            None => None,
        }
    }

    /// Checks at `now` (since the caller's origin) without an exit whether a storm has
    /// ended. A VMM calls this
    /// from its timer or on the next exit of any kind; without it the end is reported at
    /// the next notify exit.
    pub fn poll(&mut self, now: Duration) -> Option<StormEvent> {
        let count = self.window.count(now);
        let now_ns = nanos(now);
        let storm = self.storm?;
        if count >= self.config.end_level() {
            return None;
        }
        self.storm = None;
        Some(StormEvent::Ended {
            at_ns: now_ns,
            duration_ns: now_ns.saturating_sub(storm.started_ns),
            exits: storm.exits,
        })
    }

    /// Whether a storm is going on.
    pub fn in_storm(&self) -> bool {
        self.storm.is_some()
    }

    /// Number of storms started so far.
    pub fn storms(&self) -> u64 {
        self.storms
    }

    /// Exits in the window as of the last `record`/`poll`.
    pub fn exits_in_window(&self) -> u64 {
        self.window.last_count()
    }

    /// Exits per second as of the last `record`/`poll`.
    pub fn rate_per_sec(&self) -> u64 {
        self.window.per_second(self.window.last_count())
    }

    /// The window length actually used, nanoseconds.
    pub fn window_ns(&self) -> u64 {
        self.window.window_ns()
    }
}

/// A snapshot of one vCPU's notify-exit statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NotifyStats {
    /// `KVM_EXIT_NOTIFY` exits handled (userspace's view of KVM's `notify_window_exits`
    /// stat, which also counts the exits KVM resumed itself when `USER` is not set).
    pub exits: u64,
    /// Exits with `KVM_NOTIFY_CONTEXT_INVALID`.
    pub context_invalid: u64,
    /// Exits carrying flag bits this crate does not know.
    pub unknown_flags: u64,
    /// Exits that arrived while the mode was `disable`.
    pub unexpected_while_disabled: u64,
    /// Decisions to resume the guest.
    pub resumed: u64,
    /// Decisions to synthesize a triple fault.
    pub triple_faults: u64,
    /// Decisions to stop with an internal error.
    pub stops: u64,
    /// Exits in the sliding window as of the last exit or poll.
    pub exits_in_window: u64,
    /// The same as exits per second.
    pub rate_per_sec: u64,
    /// Sliding window length, nanoseconds.
    pub window_ns: u64,
    /// Whether a storm is going on.
    pub in_storm: bool,
    /// Storms started so far.
    pub storms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// `ns` nanoseconds after the origin.
    fn ns(ns: u64) -> Duration {
        Duration::from_nanos(ns)
    }

    fn nz(v: u64) -> NonZeroU64 {
        NonZeroU64::new(v).unwrap()
    }

    #[test]
    fn sliding_window_counts_and_expires() {
        let mut w = SlidingWindow::new(nz(1600 * MS));
        assert_eq!(w.window_ns(), 1600 * MS);
        for i in 0..10 {
            assert_eq!(w.record(ns(i * MS)), i + 1);
        }
        // Still inside the window.
        assert_eq!(w.count(ns(1500 * MS)), 10);
        // The bucket [0, 100ms) expires once the window has moved a full length on.
        assert_eq!(w.count(ns(1600 * MS)), 0);
        assert_eq!(w.per_second(16), 10);
        // A long gap clears everything.
        w.record(ns(2000 * MS));
        assert_eq!(w.count(ns(10_000 * MS)), 0);
    }

    #[test]
    fn sliding_window_partially_expires() {
        let mut w = SlidingWindow::new(nz(1600 * MS));
        w.record(ns(0));
        w.record(ns(50 * MS));
        w.record(ns(800 * MS));
        assert_eq!(w.count(ns(1599 * MS)), 3);
        assert_eq!(w.count(ns(1600 * MS)), 1);
        assert_eq!(w.count(ns(2400 * MS)), 0);
    }

    #[test]
    fn sliding_window_tolerates_clock_going_back_and_tiny_windows() {
        let mut w = SlidingWindow::new(nz(1));
        assert_eq!(w.window_ns(), 16);
        w.record(ns(100));
        assert_eq!(
            w.record(ns(5)),
            2,
            "older timestamp counts in the newest bucket"
        );
        assert_eq!(w.count(ns(116)), 0);
        let mut w = SlidingWindow::new(nz(u64::MAX));
        assert_eq!(w.record(ns(u64::MAX)), 1);
        assert!(w.per_second(1) <= 1);
    }

    #[test]
    fn small_clock_steps_back_count_in_the_newest_bucket() {
        let mut w = SlidingWindow::new(nz(1600 * MS));
        w.record(ns(1000 * MS));
        // 50 ms back (less than a window): same window, no re-anchoring.
        assert_eq!(w.record(ns(950 * MS)), 2);
        assert_eq!(w.count(ns(2500 * MS)), 2);
        // The window still ends where the newest timestamp put it.
        assert_eq!(w.count(ns(2600 * MS)), 0);
    }

    #[test]
    fn clock_reset_reanchors_and_the_window_drains() {
        let mut w = SlidingWindow::new(nz(1600 * MS));
        // A bogus far-future timestamp, then the real clock again.
        assert_eq!(w.record(ns(u64::MAX - 1)), 1);
        assert_eq!(w.record(ns(MS)), 2);
        assert_eq!(w.record(ns(2 * MS)), 3);
        assert_eq!(w.count(ns(1500 * MS)), 3);
        // Had the window stayed anchored at u64::MAX, this would never drain.
        assert_eq!(w.count(ns(1700 * MS)), 0);
        assert_eq!(w.record(ns(1800 * MS)), 1);

        let mut d = StormDetector::new(StormConfig::new(nz(1600 * MS), nz(3)));
        d.record(ns(u64::MAX));
        d.record(ns(0));
        assert!(matches!(d.record(ns(1)), Some(StormEvent::Started { .. })));
        // Storm ends once the re-anchored window has moved on; duration saturates at 0
        // because the storm "started" after the reset clock's origin.
        assert!(matches!(
            d.poll(ns(2000 * MS)),
            Some(StormEvent::Ended { .. })
        ));
        assert!(!d.in_storm());
    }

    #[test]
    fn erratic_clocks_never_panic_and_never_wedge_the_window() {
        arbtest::arbtest(|u| {
            let window = u.int_in_range(1..=u64::MAX)?;
            let threshold = u.int_in_range(1..=u64::MAX)?;
            let mut d = StormDetector::new(StormConfig::new(nz(window), nz(threshold)));
            let (mut records, mut last) = (0u64, 0u64);
            while !u.is_empty() {
                // Any value: backwards, forwards, huge jumps, u64::MAX.
                last = match u.choose_index(3)? {
                    0 => u.arbitrary()?,
                    1 => last.saturating_add(u.int_in_range(0..=window)?),
                    _ => last.saturating_sub(u.int_in_range(0..=window)?),
                };
                if u.arbitrary()? {
                    records += 1;
                    d.record(ns(last));
                } else {
                    d.poll(ns(last));
                }
                assert!(d.exits_in_window() <= records);
                let _ = d.rate_per_sec();
            }
            // However the clock behaved, two windows after the last timestamp the window
            // is empty and any storm is over (when that instant fits in a u64; a window
            // near u64::MAX ns, 584 years, never fully drains).
            let window_ns = d.window_ns();
            let later = window_ns
                .checked_mul(2)
                .filter(|_| window_ns < u64::MAX)
                .and_then(|w| last.checked_add(w));
            if let Some(later) = later {
                d.poll(ns(later));
                assert_eq!(d.exits_in_window(), 0);
                assert!(!d.in_storm());
            }
            Ok(())
        });
    }

    #[test]
    fn million_exits_with_a_jumping_clock_stay_bounded() {
        let mut d = StormDetector::new(StormConfig::new(nz(1_000 * MS), nz(1000)));
        let size = std::mem::size_of_val(&d);
        let mut now = 0u64;
        for i in 0..1_000_000u64 {
            // Mostly forward by 100 ns, with periodic steps back and jumps ahead.
            now = match i % 100_000 {
                50_000 => now.saturating_sub(10_000 * MS),
                99_999 => now.saturating_add(5_000 * MS),
                _ => now + 100,
            };
            d.record(ns(now));
            assert!(d.exits_in_window() <= i + 1);
        }
        assert_eq!(std::mem::size_of_val(&d), size);
        assert!(d.storms() >= 1);
        assert!(d.exits_in_window() <= 1_000_000);
    }

    #[test]
    fn million_exits_in_one_window_use_fixed_memory() {
        let mut d = StormDetector::new(StormConfig::new(nz(1_000 * MS), nz(1000)));
        let size = std::mem::size_of_val(&d);
        let mut started = 0;
        for i in 0..1_000_000u64 {
            if let Some(StormEvent::Started { .. }) = d.record(ns(i * 100)) {
                started += 1;
            }
        }
        assert_eq!(started, 1);
        assert_eq!(d.exits_in_window(), 1_000_000);
        assert_eq!(std::mem::size_of_val(&d), size);
        assert!(d.rate_per_sec() >= 999_999);
    }

    #[test]
    fn storm_starts_at_threshold_and_ends_below_half() {
        let mut d = StormDetector::new(StormConfig::new(nz(1600 * MS), nz(10)));
        for i in 0..9 {
            assert_eq!(d.record(ns(i * MS)), None);
        }
        assert_eq!(
            d.record(ns(9 * MS)),
            Some(StormEvent::Started {
                at_ns: 9 * MS,
                exits_in_window: 10,
                window_ns: 1600 * MS
            })
        );
        assert!(d.in_storm());
        // More exits during the storm produce no new event.
        for i in 10..20 {
            assert_eq!(d.record(ns(i * MS)), None);
        }
        // Exits spread over time keep the count >= 5: no end yet.
        assert_eq!(d.poll(ns(1000 * MS)), None);
        // After the window has passed, the count is 0 < 5: the storm ends.
        assert_eq!(
            d.poll(ns(2000 * MS)),
            Some(StormEvent::Ended {
                at_ns: 2000 * MS,
                duration_ns: 1991 * MS,
                exits: 11
            })
        );
        assert!(!d.in_storm());
        assert_eq!(d.poll(ns(3000 * MS)), None);
        assert_eq!(d.storms(), 1);
    }

    #[test]
    fn hysteresis_prevents_flapping_at_the_threshold() {
        // Threshold 10 per 1.6 s; a steady 8 exits per window (between 5 and 10) after a
        // burst keeps the storm going, without new start events.
        let mut d = StormDetector::new(StormConfig::new(nz(1600 * MS), nz(10)));
        let mut events = Vec::new();
        for i in 0..10 {
            events.extend(d.record(ns(i)));
        }
        for i in 1..100u64 {
            events.extend(d.record(ns(i * 200 * MS)));
            assert!((5..10).contains(&d.exits_in_window()) || i < 8);
        }
        assert_eq!(events.len(), 1);
        assert!(d.in_storm());
    }

    #[test]
    fn storm_end_is_noticed_at_the_next_exit() {
        let mut d = StormDetector::new(StormConfig::new(nz(1600 * MS), nz(4)));
        for i in 0..4 {
            d.record(ns(i));
        }
        assert!(d.in_storm());
        // Long quiet, then one exit: count 1 < 2, the storm is over; no new one starts.
        assert_eq!(
            d.record(ns(5000 * MS)),
            Some(StormEvent::Ended {
                at_ns: 5000 * MS,
                duration_ns: 5000 * MS - 3,
                exits: 1
            })
        );
        assert!(!d.in_storm());
        assert_eq!(d.exits_in_window(), 1);
    }

    #[test]
    fn threshold_one_ends_when_the_window_is_empty() {
        let cfg = StormConfig::new(nz(16), nz(1));
        assert_eq!(cfg.end_level(), 1);
        let mut d = StormDetector::new(cfg);
        assert!(matches!(d.record(ns(0)), Some(StormEvent::Started { .. })));
        assert_eq!(d.poll(ns(15)), None);
        assert!(matches!(
            d.poll(ns(16)),
            Some(StormEvent::Ended { exits: 1, .. })
        ));
        assert!(matches!(d.record(ns(17)), Some(StormEvent::Started { .. })));
        assert_eq!(d.storms(), 2);
    }

    #[test]
    fn detector_invariants_hold_for_any_timeline() {
        arbtest::arbtest(|u| {
            let threshold = u.int_in_range(1..=50u64)?;
            let window = u.int_in_range(1..=10_000u64)?;
            let mut d = StormDetector::new(StormConfig::new(nz(window), nz(threshold)));
            let mut now = 0u64;
            let mut in_storm = false;
            let mut records = 0u64;
            for _ in 0..u.int_in_range(0..=500)? {
                now = now.saturating_add(u.int_in_range(0..=window)?);
                let ev = if u.arbitrary()? {
                    records += 1;
                    d.record(ns(now))
                } else {
                    d.poll(ns(now))
                };
                match ev {
                    Some(StormEvent::Started { .. }) => {
                        assert!(!in_storm);
                        in_storm = true;
                    }
                    Some(StormEvent::Ended { .. }) => {
                        assert!(in_storm);
                        in_storm = false;
                    }
                    None => {}
                }
                assert_eq!(d.in_storm(), in_storm);
                assert!(d.exits_in_window() <= records);
                if let Some(StormEvent::Started {
                    exits_in_window, ..
                }) = ev
                {
                    assert!(exits_in_window >= threshold);
                }
            }
            Ok(())
        });
    }
}
