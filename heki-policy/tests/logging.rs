//! What the handler counts as logged reaches a logger with the usual default filter
//! (`warn`): issue 13 found `--heki-denial audit` reporting "logs emitted=10" while no
//! line reached stderr, because audited denials were logged at `info`.
//! One test per binary, since the `log` logger is global.

use core::time::Duration;
use std::sync::Mutex;

use heki_policy::{
    DenialPolicy, HekiAbi, HekiExit, HekiExitHandler, HekiExitReason, PinnedCrs, RateLimit,
};

/// A logger that keeps every record it is given, behind a `warn` filter.
struct Capture(Mutex<Vec<(log::Level, String)>>);

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target() == "heki" && metadata.level() <= log::Level::Warn
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

fn take() -> Vec<(log::Level, String)> {
    std::mem::take(&mut *LOGGER.0.lock().unwrap())
}

/// Under a `warn` filter, every denial line the handler counts in `logs_emitted` is
/// written, for each denial policy (audited denials at `warn` like enforced ones, the
/// shutdown at `error`); lines over the rate limit are counted as suppressed and not
/// written.
#[test]
fn denial_lines_counted_as_emitted_reach_a_warn_filter() {
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    for (policy, level) in [
        (DenialPolicy::AuditOnly, log::Level::Warn),
        (DenialPolicy::Gp, log::Level::Warn),
        (DenialPolicy::Shutdown, log::Level::Error),
    ] {
        let mut h = HekiExitHandler::new(HekiAbi::RfcV2, policy)
            .with_pins(PinnedCrs {
                cr0: 1 << 16,
                cr4: 0,
            })
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
