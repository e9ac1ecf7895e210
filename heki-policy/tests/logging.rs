//! What the handler counts as logged is what reached the logger: issue 13 found
//! `--heki-denial audit` reporting "logs emitted=10" while no line reached stderr,
//! because audited denials were logged at `info`; after that fix, configure lines (at
//! `info`) were still counted as emitted under the default `warn` filter.
//!
//! The `log` logger is global, so this binary installs one capture logger whose level
//! the tests switch, and the tests take a lock so they run one at a time.

use core::time::Duration;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

use heki_policy::handler::{HekiStats, LOG_TARGET};
use heki_policy::{
    DenialPolicy, HekiAbi, HekiExit, HekiExitHandler, HekiExitReason, PinnedCrs, RateLimit,
};

/// A logger that keeps every record its filter lets through; the filter is
/// `level <= LEVEL` (a `log::Level` as usize; 0 = off).
struct Capture(Mutex<Vec<(log::Level, String)>>);

static LEVEL: AtomicUsize = AtomicUsize::new(0);

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target() == LOG_TARGET
            && (metadata.level() as usize) <= LEVEL.load(Ordering::SeqCst)
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            self.0
                .lock()
                .unwrap()
                .push((record.level(), record.args().to_string()));
        }
    }
    fn flush(&self) {}
}

static LOGGER: Capture = Capture(Mutex::new(Vec::new()));
static SERIAL: Mutex<()> = Mutex::new(());

/// Installs the logger (once), sets its filter to `level`, clears the captured lines
/// and returns the lock that keeps the other tests out.
fn logger_at(level: log::LevelFilter) -> MutexGuard<'static, ()> {
    static INIT: Once = Once::new();
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    INIT.call_once(|| {
        log::set_logger(&LOGGER).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
    LEVEL.store(level as usize, Ordering::SeqCst);
    take();
    guard
}

fn take() -> Vec<(log::Level, String)> {
    std::mem::take(&mut *LOGGER.0.lock().unwrap())
}

const WP: u64 = 1 << 16;

fn configure_cr0() -> HekiExit {
    HekiExit::configure(HekiExitReason::Cr0, WP)
}

/// Under a `warn` filter, every denial line the handler counts in `logs_emitted` is
/// written, for each denial policy (audited denials at `warn` like enforced ones, the
/// shutdown at `error`); lines over the rate limit are counted as suppressed and not
/// written.
#[test]
fn denial_lines_counted_as_emitted_reach_a_warn_filter() {
    let _g = logger_at(log::LevelFilter::Warn);
    for (policy, level) in [
        (DenialPolicy::AuditOnly, log::Level::Warn),
        (DenialPolicy::Gp, log::Level::Warn),
        (DenialPolicy::Shutdown, log::Level::Error),
    ] {
        let mut h = HekiExitHandler::new(HekiAbi::RfcV2, policy)
            .with_pins(PinnedCrs { cr0: WP, cr4: 0 })
            .with_rate_limit(RateLimit::new(Duration::from_secs(5), 3));
        take();
        for i in 0..10 {
            h.handle(
                &HekiExit::denial(HekiExitReason::Cr0, 0),
                Duration::from_millis(i),
            );
        }
        let lines = take();
        let s = h.stats();
        assert_eq!(s.logs_emitted, 3, "{policy:?}");
        assert_eq!(s.logs_suppressed, 7, "{policy:?}");
        assert_eq!(s.logs_filtered, 0, "{policy:?}");
        assert_eq!(
            lines.len() as u64,
            s.logs_emitted,
            "{policy:?}: lines written under a warn filter: {lines:?}"
        );
        assert!(
            lines
                .iter()
                .all(|(l, text)| *l == level && text.contains("blocked")),
            "{policy:?}: {lines:?}"
        );
    }
}

/// An audit handler with a rate limit of `burst` lines per 5 s, given `configures` CR0
/// configure exits then `denials` CR0 denials, 1 ms apart; its stats.
fn audit_configures_then_denials(burst: u32, configures: u64, denials: u64) -> HekiStats {
    let mut h = HekiExitHandler::new(HekiAbi::RfcV2, DenialPolicy::AuditOnly)
        .with_rate_limit(RateLimit::new(Duration::from_secs(5), burst));
    for i in 0..configures + denials {
        let exit = if i < configures {
            configure_cr0()
        } else {
            HekiExit::denial(HekiExitReason::Cr0, 0)
        };
        h.handle(&exit, Duration::from_millis(i));
    }
    h.stats()
}

/// Configure lines are `info`: under the default `warn` filter they are not written,
/// so they are counted as filtered, not emitted; and they do not use up the rate
/// limit, so the denial lines after them are still written.
#[test]
fn configure_lines_hidden_by_a_warn_filter_are_not_counted_as_emitted() {
    let _g = logger_at(log::LevelFilter::Warn);
    let s = audit_configures_then_denials(3, 5, 3);
    let lines = take();
    assert_eq!(s.logs_filtered, 5, "{s:?}");
    // Burst 3: had the hidden configure lines used up the budget, no denial line
    // would be written.
    assert_eq!(s.logs_emitted, 3, "{s:?}");
    assert_eq!(s.logs_suppressed, 0, "{s:?}");
    assert_eq!(lines.len() as u64, s.logs_emitted, "{lines:?}");
    assert!(
        lines.iter().all(|(l, _)| *l == log::Level::Warn),
        "{lines:?}"
    );
}

/// Under an `info` filter the configure lines are written and counted as emitted, and
/// the rate limit covers them with the denials.
#[test]
fn configure_lines_shown_by_an_info_filter_are_counted_as_emitted() {
    let _g = logger_at(log::LevelFilter::Info);
    let s = audit_configures_then_denials(4, 3, 3);
    let lines = take();
    assert_eq!(
        (s.logs_emitted, s.logs_suppressed, s.logs_filtered),
        (4, 2, 0)
    );
    assert_eq!(lines.len() as u64, s.logs_emitted, "{lines:?}");
    let levels: Vec<_> = lines.iter().map(|(l, _)| *l).collect();
    assert_eq!(
        levels,
        [
            log::Level::Info,
            log::Level::Info,
            log::Level::Info,
            log::Level::Warn
        ]
    );
}

/// With the logger off nothing is written and nothing is counted as written.
#[test]
fn a_logger_that_is_off_gets_nothing_counted() {
    let _g = logger_at(log::LevelFilter::Off);
    let mut h = HekiExitHandler::new(HekiAbi::RfcV2, DenialPolicy::Shutdown);
    h.handle(&configure_cr0(), Duration::ZERO);
    h.handle(&HekiExit::denial(HekiExitReason::Cr0, 0), Duration::ZERO);
    assert!(take().is_empty());
    let s = h.stats();
    assert_eq!(
        (s.logs_emitted, s.logs_suppressed, s.logs_filtered),
        (0, 0, 2)
    );
}

/// 200,000 denials at 1000 per simulated second under a `warn` filter: 10 lines per
/// 5 s window are written, every other one is counted as suppressed (the limiter is
/// x86_kvm_base::ratelimit, after Linux lib/ratelimit.c `___ratelimit()`).
#[test]
fn many_exits_bounded_logging_and_counts() {
    let _g = logger_at(log::LevelFilter::Warn);
    let mut h = HekiExitHandler::new(HekiAbi::RfcV2, DenialPolicy::Gp)
        .with_pins(PinnedCrs { cr0: WP, cr4: 0 })
        .with_rate_limit(RateLimit::new(Duration::from_secs(5), 10));
    let n: u64 = 200_000;
    for i in 0..n {
        h.handle(
            &HekiExit::denial(HekiExitReason::Cr0, 0),
            Duration::from_millis(i),
        );
    }
    let s = h.stats();
    assert_eq!(s.denials_cr0, n);
    assert_eq!(s.logs_emitted + s.logs_suppressed, n);
    // 200 s of exits, 40 windows of 5 s, 10 lines each.
    assert_eq!(s.logs_emitted, 400);
    assert_eq!(take().len(), 400);
}
