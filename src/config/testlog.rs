//! Test support: captures the log records made on the calling thread, so unit tests can check
//! warnings while running in parallel.

use std::cell::RefCell;
use std::sync::Once;

thread_local! {
    static RECORDS: RefCell<Vec<(log::Level, String)>> = const { RefCell::new(Vec::new()) };
}

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        RECORDS.with(|records| {
            records
                .borrow_mut()
                .push((record.level(), record.args().to_string()))
        });
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;
static INSTALL: Once = Once::new();

/// Runs `f` and returns its result with the messages it logged at warn.
pub(super) fn warnings<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    INSTALL.call_once(|| {
        log::set_logger(&CAPTURE).expect("unit tests install no other logger");
        log::set_max_level(log::LevelFilter::Trace);
    });
    RECORDS.with(|records| records.borrow_mut().clear());
    let out = f();
    let records = RECORDS.with(|records| std::mem::take(&mut *records.borrow_mut()));
    let warnings = records
        .into_iter()
        .filter(|(level, _)| *level == log::Level::Warn)
        .map(|(_, message)| message)
        .collect();
    (out, warnings)
}
