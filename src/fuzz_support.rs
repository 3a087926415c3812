//! Checks run by the fuzz targets in `fuzz/` and replayed on stable Rust by
//! `tests/regression_fuzz.rs`. Not part of the public API.

use crate::{Config, ErrorKind};

/// The password embedded in a URL-looking string, if any: what must never
/// appear in a message.
fn password_in(raw: &str) -> Option<String> {
    let url = url::Url::parse(raw.trim()).ok()?;
    let pw = url.password()?.to_string();
    // Short passwords collide with ordinary text ("1", "a"): only check
    // ones that are unmistakable.
    (pw.len() >= 6).then_some(pw)
}

/// Panics if `text` shows one of `secrets`. A secret that is also part of
/// a value given for a non-URL setting may legitimately be echoed (an
/// out-of-range number, the key prefix): only its own presence counts.
fn assert_clean(text: &str, secrets: &[String], echoed: &[&str]) {
    for s in secrets {
        let explained = echoed.iter().any(|v| v.contains(s.as_str()));
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
    let echoed: Vec<&str> = pairs
        .iter()
        .filter(|(n, _)| !n.ends_with("URL"))
        .map(|(_, v)| *v)
        .collect();

    match Config::builder(url).build() {
        Ok(c) => assert_clean(&format!("{c:?}{c}"), &secrets, &echoed),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Config);
            assert_clean(&format!("{e:?}{e}"), &secrets, &echoed);
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
pub mod fallback;
pub use breaker_model::{check_breaker_case, BreakerOp};

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
    if let Err(e) = value.extract_error() {
        let e = crate::Error::from_redis(e);
        let text = e.to_string();
        // The server's text is cut at 200 bytes; the rest is this layer's.
        assert!(text.len() < 400, "{} bytes: {text:?}", text.len());
        if e.is_rate_limited() {
            assert!(!e.counts_against_breaker());
        }
    }
    if let Ok(text) = std::str::from_utf8(reply) {
        let _ = crate::error::parse_rate_limit(text);
    }
}
