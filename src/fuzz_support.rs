//! Checks run by the fuzz targets in `fuzz/` and replayed on stable Rust by
//! `tests/regression_fuzz.rs`. Not part of the public API.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{Config, ErrorKind};

/// The password embedded in a URL-looking string, if any: what must never
/// appear in a message.
fn password_in(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let lower = raw.to_ascii_lowercase();
    let (user, pw) = if lower.contains("+sentinel://") || lower.contains("+cluster://") {
        // `url` cannot parse a host list: user info is what comes before
        // the last '@' of the part before the first '/'.
        let (_, rest) = raw.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next()?;
        let (userinfo, _) = authority.rsplit_once('@')?;
        let (user, pw) = userinfo.split_once(':')?;
        (user.to_string(), pw.to_string())
    } else {
        let url = url::Url::parse(raw).ok()?;
        (url.username().to_string(), url.password()?.to_string())
    };
    // The user name is shown: a password inside it cannot be told apart.
    (unmistakable(&pw) && !user.contains(&pw)).then_some(pw)
}

/// Short secrets collide with ordinary text ("1", "a"), and ones made of
/// punctuation with the URL syntax messages echo (`______:` in
/// `host_____:6379`): only these are checked.
fn unmistakable(secret: &str) -> bool {
    secret.len() >= 6 && secret.chars().filter(char::is_ascii_alphanumeric).count() >= 3
}

/// The crate's own fixed wording of configuration errors (the accepted URL
/// forms, the variable names), from inputs that hold no secret: a
/// "password" that is a piece of it (`+cluste`, `sentinel`) shows in a
/// message without having leaked.
fn fixed_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut text = String::new();
        for url in ["x", "redis+sentinel://", "redis+cluster://", "rediss://h#x"] {
            if let Err(e) = Config::builder(url).build() {
                text.push_str(&format!("{e:?}{e}"));
            }
        }
        let env = |name: &str| (name == "REDIS_SENTINEL_PASSWORD").then(|| "x".to_string());
        if let Err(e) = Config::from_env_with(env) {
            text.push_str(&format!("{e:?}{e}"));
        }
        text
    })
}

/// Panics if `text` shows one of `secrets`. A secret that is also part of
/// a value given for a non-URL setting may legitimately be echoed (an
/// out-of-range number, the key prefix), and one that is a piece of the
/// crate's fixed wording shows without a leak: only its own presence
/// counts.
fn assert_clean(text: &str, secrets: &[String], echoed: &[&str]) {
    for s in secrets {
        let explained =
            echoed.iter().any(|v| v.contains(s.as_str())) || fixed_text().contains(s.as_str());
        assert!(
            explained || !text.contains(s.as_str()),
            "secret leaked into: {text}"
        );
    }
}

/// Feeds `url` to the builder and `env` (indexes into `names`, values) to
/// `Config::from_env_with`. Panics if either panics, returns an error of a
/// kind other than `Config`, or shows a password.
pub fn check_config_case(url: &str, env: &[(u8, String)], names: &[&str]) {
    let mut secrets: Vec<String> = password_in(url).into_iter().collect();
    let pairs: Vec<(&str, &str)> = env
        .iter()
        .filter(|_| !names.is_empty())
        .map(|(i, v)| (names[*i as usize % names.len()], v.as_str()))
        .collect();
    secrets.extend(pairs.iter().filter_map(|(_, v)| password_in(v)));
    // The sentinels' password is a secret as a whole.
    secrets.extend(
        pairs
            .iter()
            .filter(|(n, v)| *n == "REDIS_SENTINEL_PASSWORD" && unmistakable(v.trim()))
            .map(|(_, v)| v.to_string()),
    );
    // A URL's other parts (a host, a port) are echoed in its errors, and
    // may happen to contain another setting's secret.
    let urls_without_passwords: Vec<String> = std::iter::once(url)
        .chain(
            pairs
                .iter()
                .filter(|(n, _)| n.ends_with("URL"))
                .map(|(_, v)| *v),
        )
        .map(|u| match password_in(u) {
            // Its first occurrence (the user name does not hold it): the
            // same text in the host or the path is echoed legitimately.
            Some(pw) => u.replacen(&pw, "", 1),
            None => u.to_string(),
        })
        .collect();
    let echoed: Vec<&str> = pairs
        .iter()
        .filter(|(n, _)| !n.ends_with("URL") && *n != "REDIS_SENTINEL_PASSWORD")
        .map(|(_, v)| *v)
        .chain(urls_without_passwords.iter().map(String::as_str))
        // Messages name the variables.
        .chain(names.iter().copied())
        .collect();

    // The builder sees the URL alone: only its password is a secret there.
    let own: Vec<String> = password_in(url).into_iter().collect();
    match Config::builder(url).build() {
        Ok(c) => assert_clean(&format!("{c:?}{c}"), &own, &echoed),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Config);
            assert_clean(&format!("{e:?}{e}"), &own, &echoed);
        }
    }
    let lookup = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    };
    match Config::from_env_with(lookup) {
        Ok(c) => assert_clean(&format!("{c:?}{c}"), &secrets, &echoed),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Config);
            assert_clean(&format!("{e:?}{e}"), &secrets, &echoed);
        }
    }
}

mod breaker_model;
mod codec;
pub mod fallback;

/// The consistency state machine (outage and failover journals,
/// reconciliation) driven through interleaved attempt steps, outages,
/// failovers and restores, checked against the no-stale-read contract: the
/// simulation of the model test, for the `consistency` fuzz target.
pub mod consistency {
    pub use crate::consistency::model::{check, Action, Ev, OpSpec, KEYS, THREADS};
    pub use crate::fallback::Reconcile;
}
pub use breaker_model::{check_breaker_case, BreakerOp};
pub use codec::check_codec;

/// Feeds `reply` (raw bytes as a server would send them) to the RESP
/// parser and every error it yields to the classifier. Panics if anything
/// panics, or if a message grows without bound (replies are echoed only
/// truncated).
pub fn check_reply(reply: &[u8]) {
    let value = match redis::parse_redis_value(reply) {
        Ok(value) => value,
        Err(e) => {
            // Malformed, or cut short (the stream ended: a dropped connection).
            let e = crate::Error::from_redis(e);
            assert!(
                matches!(e.kind(), ErrorKind::UnexpectedReply | ErrorKind::Connection),
                "{e:?}"
            );
            return;
        }
    };
    check_cluster_reply(&value);
    if let Err(e) = value.extract_error() {
        let e = crate::Error::from_redis(e);
        let text = e.to_string();
        // The server's text is cut at 200 bytes; the rest is this layer's.
        assert!(text.len() < 400, "{} bytes: {text:?}", text.len());
        if e.is_rate_limited() {
            assert!(!e.counts_against_breaker());
        }
        // What the router reads: the classified error's quota details.
        if let Some(limit) = e.rate_limit() {
            check_cooldown(limit.reset_after);
        }
    }
    if let Ok(text) = std::str::from_utf8(reply) {
        if let Some(limit) = crate::error::parse_rate_limit(text) {
            check_cooldown(limit.reset_after);
        }
    }
}

/// Feeds a parsed reply to the cluster topology parsers (`CLUSTER SHARDS`,
/// `CLUSTER SLOTS`, the slot table) and, when it is an error, to the
/// redirect reader. Panics if any panics, or if a parsed map names a slot
/// or port out of range.
pub fn check_cluster_reply(value: &redis::Value) {
    use crate::topology::cluster::shards::{parse_shards, parse_slots, SlotTable};
    let parsed = [
        parse_shards(value, false, "seed"),
        parse_shards(value, true, "seed"),
        parse_slots(value, "seed"),
    ];
    for shards in parsed.into_iter().flatten() {
        for shard in &shards {
            assert!(shard.master.port != 0);
            assert!(shard.slots.iter().all(|(a, b)| a <= b && *b < 16384));
        }
        if let Ok(table) = SlotTable::from_shards(&shards) {
            assert!(table.assigned() <= 16384);
        }
    }
    if let Err(e) = value.clone().extract_error() {
        let e = crate::Error::from_redis(e);
        let _ = crate::topology::cluster::redirect::redirect_of(&e);
        let _ = crate::topology::cluster::redirect::not_executed(&e);
    }
}

/// The first instant a fuzz run sees, and the last one an `Instant` can
/// represent after it (found once: it takes a bisection).
fn instants() -> (Instant, Instant) {
    static INSTANTS: OnceLock<(Instant, Instant)> = OnceLock::new();
    *INSTANTS.get_or_init(|| {
        let now = Instant::now();
        (now, crate::clock::saturating_add(now, Duration::MAX))
    })
}

/// Feeds a reset `hint` (as parsed from a reply) through the router's
/// cooldown arithmetic from several `now`s, including ones at and just
/// before the end of `Instant`'s range. Panics if it panics, or if a
/// cooldown ends before `now`, later than `MAX_COOLDOWN` after it, or
/// earlier than it could have.
pub fn check_cooldown(hint: Option<Duration>) {
    use crate::router::{cooldown_for, cooldown_until, MAX_COOLDOWN};
    let (now, end) = instants();
    let hint_back = hint.and_then(|h| end.checked_sub(h));
    let starts = [
        Some(now),
        Some(end),
        end.checked_sub(Duration::from_nanos(1)),
        end.checked_sub(MAX_COOLDOWN / 2),
        end.checked_sub(MAX_COOLDOWN),
        hint_back,
    ];
    let defaults = [Duration::ZERO, Duration::from_secs(60), Duration::MAX];
    for start in starts.into_iter().flatten() {
        for default in defaults {
            let wait = cooldown_for(hint, default);
            assert!(wait <= MAX_COOLDOWN, "{hint:?}/{default:?}: {wait:?}");
            let until = cooldown_until(start, hint, default);
            assert!(until >= start, "{hint:?}: a cooldown ends before it starts");
            let len = until.saturating_duration_since(start);
            assert!(len <= MAX_COOLDOWN, "{hint:?}/{default:?}: {len:?}");
            // Exactly `wait` when representable, else the last instant.
            match start.checked_add(wait) {
                Some(exact) => assert_eq!(until, exact, "{hint:?}/{default:?}"),
                None => assert_eq!(until, end, "{hint:?}/{default:?}"),
            }
        }
    }
}
