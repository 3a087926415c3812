//! One log line per state change, not one per failed request: a simulated
//! outage at 1000 calls/s produces a handful of lines.
//!
//! Its own test binary: the capturing logger is process-wide.

// Test code: a failed unwrap is a failed test, with the error printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Mutex;
use std::time::Duration;

use log::{Level, LevelFilter, Log, Metadata, Record};
use resilient_redis::{Client, Config, ManualClock};

struct Capture(Mutex<Vec<(Level, String)>>);

impl Log for Capture {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }
    fn log(&self, record: &Record) {
        self.0
            .lock()
            .unwrap()
            .push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

fn lines() -> Vec<(Level, String)> {
    CAPTURE.0.lock().unwrap().clone()
}

#[test]
fn an_outage_logs_state_changes_and_summaries_not_every_failure() {
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(LevelFilter::Info);

    // Nothing listens on this port: every connect is refused at once.
    let url = format!("redis://:hunter22@127.0.0.1:{}", support::free_port());
    let clock = ManualClock::new();
    let config = Config::builder(&url)
        .connect_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let client = Client::builder(config)
        .clock(clock.shared())
        .build()
        .unwrap();

    // 10 s at 1000 calls/s.
    for i in 0..10_000u64 {
        client.set(format!("k{}", i % 100), i).unwrap();
        clock.advance(Duration::from_millis(1));
    }
    let ten_seconds = lines();
    assert!(
        (2..=6).contains(&ten_seconds.len()),
        "expected a handful of lines, got {}: {ten_seconds:#?}",
        ten_seconds.len()
    );
    assert!(ten_seconds
        .iter()
        .any(|(l, m)| *l == Level::Warn && m.contains("serving cache operations from memory")));
    assert!(ten_seconds.iter().any(|(l, _)| *l == Level::Warn));

    // Two more minutes at 100 calls/s: a summary each minute.
    for i in 0..12_000u64 {
        let _: Option<u64> = client.get(format!("k{}", i % 100)).unwrap();
        clock.advance(Duration::from_millis(10));
    }
    let all = lines();
    let summaries: Vec<_> = all
        .iter()
        .filter(|(_, m)| {
            m.contains("operations served from memory") && m.contains("errors suppressed")
        })
        .collect();
    assert!((1..=3).contains(&summaries.len()), "{all:#?}");
    assert!(all.len() < 20, "{} lines: {all:#?}", all.len());
    // No secret at any level.
    assert!(all.iter().all(|(_, m)| !m.contains("hunter22")), "{all:#?}");
}
