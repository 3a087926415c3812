//! Structured log fields: every WARN and INFO line the crate emits carries
//! `operation`, `error_type`, `error_message`, `error_count`,
//! `circuit_breaker_state` and `endpoint` as `log` key-values, plus
//! `cooldown_ms`, `keys` or `duration_ms` where they apply. One test in
//! this file: it installs the process' logger, which sees every thread
//! (the prober's too).

// Test code: a failed unwrap is a failed test, with the error printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::kv::{Key, Value, VisitSource};
use resilient_redis::{Client, Config, ManualClock};
use support::{ms, RedisServer};

#[derive(Debug, Clone)]
struct Record {
    level: log::Level,
    message: String,
    fields: BTreeMap<String, String>,
}

static RECORDS: Mutex<Vec<Record>> = Mutex::new(Vec::new());

struct Capture;

struct Fields(BTreeMap<String, String>);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0.insert(key.to_string(), value.to_string());
        Ok(())
    }
}

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.target().starts_with("resilient_redis") && m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut fields = Fields(BTreeMap::new());
        r.key_values().visit(&mut fields).unwrap();
        RECORDS.lock().unwrap().push(Record {
            level: r.level(),
            message: r.args().to_string(),
            fields: fields.0,
        });
    }
    fn flush(&self) {}
}

const BASE: [&str; 6] = [
    "operation",
    "error_type",
    "error_message",
    "error_count",
    "circuit_breaker_state",
    "endpoint",
];

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// The first record of `operation` matching `pred`.
fn find(operation: &str, pred: impl Fn(&Record) -> bool) -> Record {
    let records = RECORDS.lock().unwrap();
    records
        .iter()
        .find(|r| r.fields.get("operation").map(String::as_str) == Some(operation) && pred(r))
        .cloned()
        .unwrap_or_else(|| panic!("no {operation} line; lines: {records:#?}"))
}

fn field<'r>(r: &'r Record, name: &str) -> &'r str {
    r.fields
        .get(name)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("{name} missing from {r:#?}"))
}

#[test]
fn warn_and_info_lines_carry_the_fields() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Info);

    let mut primary = RedisServer::new();
    let mut secondary = RedisServer::new();
    let clock = ManualClock::new();
    let config = Config::builder(primary.url())
        .fallback_url(secondary.url())
        .connect_timeout(ms(500))
        .socket_timeout(ms(500))
        .checkout_timeout(ms(500))
        .retry_base_delay(ms(5))
        .retry_max_delay(ms(20))
        .failure_threshold(2)
        .success_threshold(1)
        .failover_cooldown(Duration::from_secs(10))
        .build()
        .unwrap();
    let client = Client::builder(config)
        .clock(clock.shared())
        .build()
        .unwrap();
    client.set("k", "v").unwrap();

    // The primary dies: memory while its breaker counts, then it opens and
    // calls fail over to the secondary.
    primary.stop();
    for i in 0..20 {
        client.set(format!("s{i}"), i).unwrap();
    }
    assert!(client.stats().failover_active);

    // Both down: memory, and after a summary period, a summary line.
    secondary.stop();
    for _ in 0..10 {
        client.set("k", "outage").unwrap();
    }
    clock.advance(Duration::from_secs(61));
    for _ in 0..10 {
        client.set("k", "outage").unwrap();
    }

    // The primary comes back and is restored.
    primary.start();
    clock.advance(Duration::from_secs(61));
    client.probe_primary();
    wait_until("the restore", || client.stats().restores == 1);
    wait_until("the restore's log line", || {
        RECORDS
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.fields.get("operation").map(String::as_str) == Some("failover_restored"))
    });

    let opened = find("breaker_transition", |r| {
        r.fields.get("circuit_breaker_state").map(String::as_str) == Some("open")
            && r.fields.get("endpoint").map(String::as_str) == Some("primary")
    });
    assert_eq!(opened.level, log::Level::Warn);
    assert_eq!(field(&opened, "error_type"), "consecutive_failures");
    assert_eq!(field(&opened, "error_count"), "2");
    assert!(field(&opened, "cooldown_ms").parse::<u64>().unwrap() > 0);

    // With retries, the first outage fails over before memory answers: the
    // fallback engages when the secondary dies too.
    let engaged = find("fallback_engaged", |_| true);
    assert_eq!(engaged.level, log::Level::Warn);
    assert_eq!(field(&engaged, "endpoint"), "secondary");
    assert_ne!(field(&engaged, "circuit_breaker_state"), "none");
    assert_ne!(field(&engaged, "error_type"), "none");
    assert!(!field(&engaged, "error_message").is_empty());
    assert_eq!(field(&engaged, "error_count"), "1");

    let failover = find("failover", |_| true);
    assert_eq!(failover.level, log::Level::Warn);
    assert_eq!(field(&failover, "endpoint"), "primary");
    assert!(
        ["breaker_open", "connect_failure"].contains(&field(&failover, "error_type")),
        "{failover:#?}"
    );
    assert_eq!(field(&failover, "cooldown_ms"), "10000");

    let summary = find("outage_summary", |_| true);
    assert_eq!(summary.level, log::Level::Warn);
    assert!(field(&summary, "error_count").parse::<u64>().unwrap() >= 10);
    assert_eq!(field(&summary, "duration_ms"), "60000");
    assert_ne!(field(&summary, "error_type"), "none");

    let restored = find("failover_restored", |_| true);
    assert_eq!(restored.level, log::Level::Info);
    assert_eq!(field(&restored, "endpoint"), "primary");
    assert_eq!(field(&restored, "circuit_breaker_state"), "closed");
    assert!(field(&restored, "duration_ms").parse::<u64>().unwrap() >= 61_000);

    // Every WARN/INFO line: the six fields, snake_case names, and a message
    // that reads on its own.
    for r in RECORDS.lock().unwrap().iter() {
        for name in BASE {
            assert!(r.fields.contains_key(name), "{name} missing: {r:#?}");
        }
        for name in r.fields.keys() {
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
        }
        assert!(!r.message.contains("operation="), "{r:#?}");
        assert!(r.message.len() > 10, "{r:#?}");
    }
}
