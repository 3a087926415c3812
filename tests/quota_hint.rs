//! Issue #11: a server reply must not panic the caller. A hosted Redis'
//! quota reply carries a reset hint (`retry after N`); a huge N used to
//! panic with "overflow when adding duration to instant" in the router's
//! cooldown. The scripted fake answers it (a real Redis cannot).

// Test code: a failed unwrap is a failed test, with the error printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilient_redis::{
    Client, Config, ErrorKind, Event, EventListener, FailoverReason, FallbackMode, ManualClock,
};
use support::{ms, FakeRedis, RedisServer};

/// The longest cooldown the router accepts from a reset hint (24 h).
const MAX_COOLDOWN: Duration = Duration::from_secs(24 * 3600);

/// Reset hints that do not fit an `Instant` once added to now: one that
/// does not even fit a u64, and `u64::MAX` seconds.
const HUGE_HINTS: &[&str] = &["99999999999999999999", "18446744073709551615"];

fn quota_reply(hint: &str) -> Vec<u8> {
    format!("-ERR max requests limit exceeded, retry after {hint}\r\n").into_bytes()
}

fn config(primary: &str) -> resilient_redis::ConfigBuilder {
    Config::builder(primary)
        .connect_timeout(ms(500))
        .socket_timeout(ms(500))
        .checkout_timeout(ms(500))
        .retry_base_delay(ms(5))
        .retry_max_delay(ms(20))
        .failover_cooldown(Duration::from_secs(60))
}

#[test]
fn huge_reset_hint_without_a_secondary_is_served_from_memory() {
    for hint in HUGE_HINTS {
        let fake = FakeRedis::new();
        let clock = ManualClock::new();
        let client = Client::builder(config(&fake.url()).build().unwrap())
            .clock(clock.shared())
            .build()
            .unwrap();
        fake.reply_override(Some(quota_reply(hint)));

        // The refused write is answered from memory; later calls are not sent.
        client.set("k", "v").unwrap();
        let sent = fake.commands_received();
        let got: Option<String> = client.get("k").unwrap();
        assert_eq!(got.as_deref(), Some("v"), "hint {hint}");
        assert!(client.health().serving_from_memory);
        assert_eq!(
            fake.commands_received(),
            sent,
            "hint {hint}: sent during the cooldown"
        );

        // The cooldown is clamped: after 24 h one call probes the primary.
        clock.advance(MAX_COOLDOWN);
        fake.reply_override(None);
        client.set("k2", "v2").unwrap();
        assert!(
            fake.commands_received() > sent,
            "hint {hint}: no probe after 24 h"
        );
        assert!(!client.health().serving_from_memory);
    }
}

#[test]
fn huge_reset_hint_without_fallback_is_a_typed_error() {
    for hint in HUGE_HINTS {
        let fake = FakeRedis::new();
        let client = Client::builder(
            config(&fake.url())
                .fallback_mode(FallbackMode::Disabled)
                .build()
                .unwrap(),
        )
        .clock(ManualClock::new().shared())
        .build()
        .unwrap();
        fake.reply_override(Some(quota_reply(hint)));

        for _ in 0..2 {
            let err = client.set("k", "v").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::RateLimited, "hint {hint}: {err}");
            let wait = err.retry_after().expect("a rate-limit error says when");
            assert!(wait > Duration::ZERO, "hint {hint}: {wait:?}");
        }
        // The second call was refused from the cooldown, with a bounded wait.
        let err = client.set("k", "v").unwrap_err();
        assert!(
            err.retry_after().is_some_and(|w| w <= MAX_COOLDOWN),
            "hint {hint}: {err:?}"
        );
    }
}

#[derive(Default)]
struct Events(Mutex<Vec<Event>>);

impl EventListener for Events {
    fn on_event(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

#[test]
fn huge_reset_hint_fails_over_with_a_clamped_cooldown() {
    let secondary = RedisServer::new();
    for hint in HUGE_HINTS {
        let fake = FakeRedis::new();
        let events = Arc::new(Events::default());
        let client = Client::builder(
            config(&fake.url())
                .fallback_url(secondary.url())
                .build()
                .unwrap(),
        )
        .clock(ManualClock::new().shared())
        .listener(events.clone())
        .build()
        .unwrap();
        fake.reply_override(Some(quota_reply(hint)));

        // Refused by the quota, re-sent to the secondary.
        client.set("k", "v").unwrap();
        let got: Option<String> = client.get("k").unwrap();
        assert_eq!(got.as_deref(), Some("v"));
        assert_eq!(client.health().active_endpoint, Some("secondary"));
        let cooldowns: Vec<(FailoverReason, Duration)> = events
            .0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::FailoverActivated {
                    reason, cooldown, ..
                } => Some((*reason, *cooldown)),
                _ => None,
            })
            .collect();
        assert_eq!(
            cooldowns,
            [(FailoverReason::RateLimited, MAX_COOLDOWN)],
            "hint {hint}"
        );
    }
}
