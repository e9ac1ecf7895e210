// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The handler's logging is rate-limited and clock-driven: a guest hammering the notify
//! window cannot flood the host log, and suppressed messages are reported.
//! One test per binary, since the `log` logger is global.

use std::sync::Mutex;

use notify_exit::handler::LOG_TARGET;
use notify_exit::{
    HandlerOptions, NotifyExit, NotifyFlags, NotifyHandler, NotifyPolicy, NotifyVmexitMode,
    RateLimit, StormConfig,
};
use std::time::Duration;

struct Capture(Mutex<Vec<(log::Level, String)>>);

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target() == LOG_TARGET
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

#[test]
fn logging_is_rate_limited_and_reports_suppressed_messages() {
    log::set_logger(&LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    const MS: u64 = 1_000_000;
    let options = HandlerOptions {
        storm: StormConfig::new(
            std::num::NonZeroU64::new(1000 * MS).unwrap(),
            std::num::NonZeroU64::new(100).unwrap(),
        ),
        exit_log: RateLimit::new(Duration::from_millis(5000), 3),
        ..HandlerOptions::default()
    };
    let mut h =
        NotifyHandler::with_options(7, NotifyPolicy::new(NotifyVmexitMode::Run, true), options);
    let valid = NotifyExit::new(NotifyFlags::empty());
    // 1000 exits within one second: 3 exit messages and one storm-start warning.
    for i in 0..1000 {
        h.handle(valid, Duration::from_nanos(i * MS / 2));
    }
    let logs = std::mem::take(&mut *LOGGER.0.lock().unwrap());
    let debug: Vec<_> = logs
        .iter()
        .filter(|(l, _)| *l == log::Level::Debug)
        .collect();
    let warn: Vec<_> = logs
        .iter()
        .filter(|(l, _)| *l == log::Level::Warn)
        .collect();
    assert_eq!(debug.len(), 3, "{logs:#?}");
    assert!(
        debug[0].1.contains("vCPU 7: KVM_EXIT_NOTIFY"),
        "{}",
        debug[0].1
    );
    assert_eq!(warn.len(), 1, "{logs:#?}");
    assert!(warn[0].1.contains("storm"), "{}", warn[0].1);

    // Still inside the exit-log interval, with its budget spent on debug lines: the
    // exit that stops the VM (here a triple fault) is still logged, at error level.
    h.handle(
        NotifyExit::new(NotifyFlags::CONTEXT_INVALID),
        Duration::from_nanos(600 * MS),
    );
    let logs = std::mem::take(&mut *LOGGER.0.lock().unwrap());
    assert_eq!(logs.len(), 1, "{logs:#?}");
    assert_eq!(logs[0].0, log::Level::Error);
    assert!(logs[0].1.contains("triple fault"), "{}", logs[0].1);
    assert!(!logs[0].1.contains("suppressed"), "{}", logs[0].1);

    // Next interval: one debug line, carrying the count of the 997 dropped ones ...
    h.handle(valid, Duration::from_nanos(6000 * MS));
    h.poll(Duration::from_nanos(6001 * MS));
    let logs = std::mem::take(&mut *LOGGER.0.lock().unwrap());
    assert_eq!(logs.len(), 2, "{logs:#?}");
    assert_eq!(logs[0].0, log::Level::Debug);
    assert!(
        logs[0].1.contains("997 similar messages suppressed"),
        "{}",
        logs[0].1
    );
    // ... and the storm end at info level.
    assert_eq!(logs[1].0, log::Level::Info);
    assert!(logs[1].1.contains("storm over"), "{}", logs[1].1);
    assert_eq!(h.stats().exits, 1002);
}
