//! A log collector for unit tests (compiled only under `cfg(test)`).
//!
//! `log` allows one logger per process and unit tests run on many threads
//! of one process, so every test that counts log lines shares this one:
//! it keeps each thread's records apart, and a test reads only its own.

use std::cell::RefCell;
use std::sync::Once;

/// Called for each record this thread logs, as it is logged.
type Hook = Box<dyn Fn(&log::Record<'_>)>;

thread_local! {
    static LINES: RefCell<Vec<(log::Level, String, String)>> = const { RefCell::new(Vec::new()) };
    static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
}

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        HOOK.with(|h| {
            if let Some(hook) = h.borrow().as_ref() {
                hook(r);
            }
        });
        let line = (r.level(), r.target().to_string(), r.args().to_string());
        LINES.with(|l| l.borrow_mut().push(line));
    }
    fn flush(&self) {}
}

/// Installs the collector (once per process), forgets what this thread
/// logged so far and removes its hook.
pub(crate) fn start() {
    HOOK.with(|h| h.borrow_mut().take());
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Nothing else in the unit tests installs a logger.
        let _ = log::set_logger(&Capture);
        log::set_max_level(log::LevelFilter::Trace);
    });
    LINES.with(|l| l.borrow_mut().clear());
}

/// Takes what this thread logged since [`start`] (or the last `take`)
/// under a target starting with `prefix`: level and message.
pub(crate) fn take(prefix: &str) -> Vec<(log::Level, String)> {
    LINES.with(|l| {
        l.borrow_mut()
            .drain(..)
            .filter(|(_, target, _)| target.starts_with(prefix))
            .map(|(level, _, message)| (level, message))
            .collect()
    })
}

/// Runs `hook` on each record this thread logs from now on, at the moment
/// it is logged (to see what the logging code holds at that moment).
pub(crate) fn on_log(hook: impl Fn(&log::Record<'_>) + 'static) {
    HOOK.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
}
