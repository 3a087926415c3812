//! The crate's error type and the classification of Redis failures.
//!
//! [`Error`] is opaque: [`Error::kind`] says *what* failed, [`Error::class`]
//! says *what to do about it* (retry, go elsewhere, give up), and
//! [`Error::counts_against_breaker`] says whether the failure is evidence that
//! the endpoint is unhealthy. Display describes this layer only; the
//! underlying cause is in [`std::error::Error::source`].

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

/// What failed. `#[non_exhaustive]`: match with a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration (builder, URL or environment variable) is invalid.
    Config,
    /// The connection could not be made or was lost (refused, reset, closed,
    /// broken pipe, DNS failure).
    Connection,
    /// A socket read, write or connect did not finish in time.
    Timeout,
    /// No pooled connection became available before the checkout deadline.
    /// Transient (served from memory when the fallback is on) but not
    /// retried: the pool is overloaded by its own callers.
    PoolTimeout,
    /// The circuit breaker is open: the call was rejected without touching
    /// the network. [`Error::retry_after`] says when the next probe is due.
    CircuitOpen,
    /// A hosted Redis refused the command because a quota or rate limit was
    /// reached. [`Error::rate_limit`] has the parsed details.
    RateLimited,
    /// The server answered with an error reply (`WRONGTYPE`, `OOM`, `LOADING`, ...).
    Server,
    /// Authentication failed (`NOAUTH`, `WRONGPASS`, bad credentials).
    Auth,
    /// The TLS handshake or certificate verification failed.
    Tls,
    /// The caller's input was rejected before anything was sent (empty
    /// command, value too large, ...).
    InvalidInput,
    /// The reply could not be parsed or converted to the requested type.
    UnexpectedReply,
    /// A write was refused, not sent: it could only have gone to the
    /// in-memory fallback or the secondary, and the journal that keeps later
    /// reads from returning older values was full. Nothing was written.
    JournalFull,
    /// The command could not be sent where the client would have had to
    /// send it without breaking a guarantee (e.g. a command whose keys the
    /// client cannot tell, during failover). Nothing was sent.
    Unsupported,
}

impl ErrorKind {
    /// A short lowercase name, as used in log lines and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Connection => "connection",
            ErrorKind::Timeout => "timeout",
            ErrorKind::PoolTimeout => "pool_timeout",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Server => "server",
            ErrorKind::Auth => "auth",
            ErrorKind::Tls => "tls",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::UnexpectedReply => "unexpected_reply",
            ErrorKind::JournalFull => "journal_full",
            ErrorKind::Unsupported => "unsupported",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// May succeed if tried again, on a fresh connection or after a pause:
    /// I/O errors, timeouts, `LOADING`, `TRYAGAIN`, `BUSY`, `MASTERDOWN`,
    /// `CLUSTERDOWN`, `READONLY`.
    Transient,
    /// The endpoint refuses work because of a quota. Never retried against
    /// the same endpoint; the failover layer sends it elsewhere.
    RateLimited,
    /// Will fail the same way again: wrong type, bad auth, syntax, `OOM`,
    /// bad configuration, invalid input.
    Permanent,
}

impl ErrorClass {
    /// A short lowercase name, as used in log lines and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// Details parsed from a hosted provider's quota reply, such as Upstash's
/// `ERR max requests limit exceeded. Limit: 10000, Usage: 10000`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RateLimit {
    /// The quota, when the reply states it (`Limit: N`).
    pub limit: Option<u64>,
    /// The usage counted against the quota (`Usage: N`).
    pub usage: Option<u64>,
    /// When the quota resets, when the reply hints at it (`retry after N`,
    /// `reset in N seconds`).
    pub reset_after: Option<Duration>,
}

/// The crate's error: opaque, one pointer wide.
///
/// ```
/// # use resilient_redis::{Error, ErrorKind};
/// assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    class: ErrorClass,
    message: Message,
    counts_against_breaker: bool,
    may_have_executed: bool,
    rate_limit: Option<RateLimit>,
    retry_after: Option<Duration>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
    /// The client answers this failure itself by sending the operation
    /// another way: it never reaches a caller, so it is not counted.
    resent: bool,
}

/// An error's message: text, or a breaker's refusal formatted only when
/// shown (every call refused while a circuit is open builds an error, and
/// most are then served from memory without anyone reading it).
enum Message {
    Text(String),
    Rejected(crate::breaker::Rejected),
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::Text(text) => f.write_str(text),
            Message::Rejected(r) => fmt::Display::fmt(r, f),
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

/// Longest server reply text kept in an error message. Redis echoes the
/// first arguments of an unknown command; keep that short.
const MAX_REPLY_TEXT: usize = 200;

impl Error {
    /// A new error. Permanent errors do not count against the breaker and
    /// are assumed not to have executed; adjust with the `with_*` methods.
    pub(crate) fn new(kind: ErrorKind, class: ErrorClass, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                class,
                message: Message::Text(message.into()),
                counts_against_breaker: class == ErrorClass::Transient,
                may_have_executed: false,
                rate_limit: None,
                retry_after: None,
                source: None,
                resent: false,
            }),
        }
    }

    /// A transient [`ErrorKind::CircuitOpen`] error for a call the breaker
    /// refused: it does not count against the breaker, certainly did not
    /// execute, and carries [`Rejected::retry_after`](crate::breaker::Rejected::retry_after).
    /// No allocation but the error's own: the message is formatted when
    /// shown.
    pub(crate) fn rejected(r: crate::breaker::Rejected) -> Self {
        let mut e = Error::new(ErrorKind::CircuitOpen, ErrorClass::Transient, String::new())
            .with_counts_against_breaker(false)
            .with_may_have_executed(false)
            .with_retry_after(r.retry_after);
        e.inner.message = Message::Rejected(r);
        e
    }

    /// A configuration error. `message` must name the field or variable and
    /// say what was expected; it must not contain a secret.
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, ErrorClass::Permanent, message)
    }

    /// The caller's input was rejected before anything was sent.
    pub(crate) fn invalid_input(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, ErrorClass::Permanent, message)
    }

    pub(crate) fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.inner.source = Some(Box::new(source));
        self
    }

    pub(crate) fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.inner.retry_after = Some(retry_after);
        self
    }

    pub(crate) fn with_counts_against_breaker(mut self, counts: bool) -> Self {
        self.inner.counts_against_breaker = counts;
        self
    }

    /// Marks a failure the client answers itself by sending the operation
    /// another way (a multi-slot `mset` part that met a moving slot): not
    /// counted as an error returned to a caller.
    pub(crate) fn resent_by_client(mut self) -> Self {
        self.inner.resent = true;
        self
    }

    /// See [`Error::resent_by_client`].
    pub(crate) fn is_resent_by_client(&self) -> bool {
        self.inner.resent
    }

    /// Marks whether the command may have reached the server before the
    /// failure (see [`Error::may_have_executed`]).
    pub(crate) fn with_may_have_executed(mut self, may: bool) -> Self {
        self.inner.may_have_executed = may;
        self
    }

    /// Prefixes the message with where the failure happened
    /// (`"connecting to redis://h:6379"`). `context` must not contain secrets.
    pub(crate) fn context(mut self, context: impl fmt::Display) -> Self {
        self.inner.message = Message::Text(format!("{context}: {}", self.inner.message));
        self
    }

    /// Classifies a `redis` error. The result is conservative about
    /// delivery: it says the command may have executed unless the caller
    /// knows better (see [`Error::with_may_have_executed`]).
    pub(crate) fn from_redis(err: redis::RedisError) -> Self {
        let c = classify(&err);
        // A quota reply to one command means it was refused, not executed;
        // in a pipeline the replies before it may have executed.
        let refused = c.rate_limit.is_some() && err.detail().is_some();
        let mut e = Error::new(c.kind, c.class, c.message)
            .with_counts_against_breaker(c.counts_against_breaker)
            .with_may_have_executed(!refused);
        if let Some(limit) = c.rate_limit {
            // The caller may add it to an Instant: bounded like the
            // router's cooldown (the raw hint stays in `rate_limit`).
            e.inner.retry_after = limit
                .reset_after
                .map(|d| d.min(crate::router::MAX_COOLDOWN));
            e.inner.rate_limit = Some(limit);
        }
        e.with_source(err)
    }

    /// What failed.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// What to do about it: retry, go elsewhere, or give up.
    pub fn class(&self) -> ErrorClass {
        self.inner.class
    }

    /// `true` when trying again (on a fresh connection, after a pause) may
    /// succeed.
    pub fn is_transient(&self) -> bool {
        self.inner.class == ErrorClass::Transient
    }

    /// `true` for socket timeouts and pool checkout timeouts.
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::Timeout | ErrorKind::PoolTimeout)
    }

    /// `true` when a hosted provider refused the command for quota reasons.
    pub fn is_rate_limited(&self) -> bool {
        self.inner.class == ErrorClass::RateLimited
    }

    /// The parsed quota details of a rate-limit reply.
    pub fn rate_limit(&self) -> Option<&RateLimit> {
        self.inner.rate_limit.as_ref()
    }

    /// For [`ErrorKind::CircuitOpen`], how long until the breaker lets a
    /// probe through; for a rate-limit reply, the reset hint if it had one,
    /// at most 24 hours (the server's own number is in
    /// [`Error::rate_limit`]).
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// `true` when this failure is evidence that the endpoint cannot serve:
    /// I/O errors, timeouts, transient server states (`LOADING`, ...) and
    /// failed authentication. Error replies such as `WRONGTYPE` prove the
    /// server is up and do not count.
    pub fn counts_against_breaker(&self) -> bool {
        self.inner.counts_against_breaker
    }

    /// `false` only when the command certainly never reached the server
    /// (the failure came from the breaker, the pool checkout or the
    /// connect). When `true`, a non-idempotent command such as `INCR` may
    /// have been applied and is not re-sent.
    pub fn may_have_executed(&self) -> bool {
        self.inner.may_have_executed
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner.message, f)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("class", &self.inner.class)
            .field("message", &self.inner.message);
        if let Some(limit) = &self.inner.rate_limit {
            d.field("rate_limit", limit);
        }
        if let Some(after) = &self.inner.retry_after {
            d.field("retry_after", after);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", &source.to_string());
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn StdError + 'static))
    }
}

impl From<redis::RedisError> for Error {
    fn from(err: redis::RedisError) -> Self {
        Error::from_redis(err)
    }
}

/// The result of classifying a `redis::RedisError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Classified {
    pub kind: ErrorKind,
    pub class: ErrorClass,
    pub counts_against_breaker: bool,
    pub rate_limit: Option<RateLimit>,
    pub message: String,
}

impl Classified {
    fn new(kind: ErrorKind, class: ErrorClass, message: String) -> Self {
        Classified {
            kind,
            class,
            counts_against_breaker: class == ErrorClass::Transient,
            rate_limit: None,
            message,
        }
    }

    fn breaker(mut self, counts: bool) -> Self {
        self.counts_against_breaker = counts;
        self
    }
}

/// Sorts a `redis::RedisError` into kind and class.
///
/// `redis::ErrorKind` and `redis::ServerErrorKind` are `#[non_exhaustive]`, so
/// a `_` arm is required; every kind known today is nevertheless listed by
/// name, so that reading this match shows every decision. Unknown future
/// kinds are permanent: never retried, never counted against the breaker.
pub(crate) fn classify(err: &redis::RedisError) -> Classified {
    use redis::ErrorKind as K;
    use redis::ServerErrorKind as S;
    use ErrorClass::{Permanent, Transient};

    // A rustls failure arrives as an I/O (or client) error: look for it first.
    #[cfg(feature = "tls")]
    if let Some(c) = crate::tls::classify(err) {
        return c;
    }
    match err.kind() {
        K::Io => classify_io(err),
        K::Server(server_kind) => {
            let text = server_text(err);
            if let Some(limit) = parse_rate_limit(&text) {
                return rate_limited(limit, text);
            }
            let message = format!("server replied {text}");
            match server_kind {
                S::BusyLoading | S::TryAgain | S::ClusterDown | S::MasterDown | S::ReadOnly => {
                    Classified::new(ErrorKind::Server, Transient, message)
                }
                S::ResponseError
                | S::ExecAbort
                | S::NoScript
                | S::Moved
                | S::Ask
                | S::CrossSlot
                | S::NotBusy
                | S::NoSub => Classified::new(ErrorKind::Server, Permanent, message),
                S::NoPerm => Classified::new(ErrorKind::Auth, Permanent, message),
                _ => Classified::new(ErrorKind::Server, Permanent, message),
            }
        }
        K::Extension => {
            let text = server_text(err);
            if let Some(limit) = parse_rate_limit(&text) {
                return rate_limited(limit, text);
            }
            let message = format!("server replied {text}");
            match err.code().unwrap_or("") {
                // A script or function is running: the server cannot serve now.
                "BUSY" => Classified::new(ErrorKind::Server, Transient, message),
                // Credentials are wrong: this endpoint cannot serve us at all,
                // so fail fast (count it) but do not retry.
                "NOAUTH" | "WRONGPASS" => {
                    Classified::new(ErrorKind::Auth, Permanent, message).breaker(true)
                }
                // WRONGTYPE, OOM, MISCONF, NOPROTO, ... prove the server is up.
                _ => Classified::new(ErrorKind::Server, Permanent, message),
            }
        }
        K::AuthenticationFailed => Classified::new(
            ErrorKind::Auth,
            Permanent,
            format!("authentication failed: {}", truncated(&err.to_string())),
        )
        .breaker(true),
        K::Parse => Classified::new(
            ErrorKind::UnexpectedReply,
            Permanent,
            "malformed reply from server".to_string(),
        ),
        K::UnexpectedReturnType => Classified::new(
            ErrorKind::UnexpectedReply,
            Permanent,
            format!(
                "reply does not convert to the requested type: {}",
                truncated(&err.to_string())
            ),
        ),
        K::InvalidClientConfig | K::RESP3NotSupported => Classified::new(
            ErrorKind::Config,
            Permanent,
            format!(
                "invalid connection settings: {}",
                truncated(&err.to_string())
            ),
        ),
        K::Client => Classified::new(
            ErrorKind::InvalidInput,
            Permanent,
            format!("rejected by the client: {}", truncated(&err.to_string())),
        ),
        K::MasterNameNotFoundBySentinel
        | K::NoValidReplicasFoundBySentinel
        | K::EmptySentinelList
        | K::ClusterConnectionNotFound => Classified::new(
            ErrorKind::Connection,
            Transient,
            format!("no usable server: {}", truncated(&err.to_string())),
        ),
        _ => Classified::new(
            ErrorKind::UnexpectedReply,
            Permanent,
            format!("unclassified error: {}", truncated(&err.to_string())),
        ),
    }
}

fn rate_limited(limit: RateLimit, text: String) -> Classified {
    Classified {
        kind: ErrorKind::RateLimited,
        class: ErrorClass::RateLimited,
        // The server is up and answering; the router, not the breaker,
        // decides what to do about a quota.
        counts_against_breaker: false,
        rate_limit: Some(limit),
        message: format!("rate limited by server: {text}"),
    }
}

fn classify_io(err: &redis::RedisError) -> Classified {
    let io_kind = io_error_kind(err);
    let (kind, class, what) = match io_kind {
        Some(io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
            (ErrorKind::Timeout, ErrorClass::Transient, "timed out")
        }
        Some(io::ErrorKind::ConnectionReset) => (
            ErrorKind::Connection,
            ErrorClass::Transient,
            "connection reset by peer",
        ),
        Some(io::ErrorKind::ConnectionRefused) => (
            ErrorKind::Connection,
            ErrorClass::Transient,
            "connection refused",
        ),
        Some(io::ErrorKind::BrokenPipe) => {
            (ErrorKind::Connection, ErrorClass::Transient, "broken pipe")
        }
        Some(io::ErrorKind::ConnectionAborted) => (
            ErrorKind::Connection,
            ErrorClass::Transient,
            "connection aborted",
        ),
        Some(io::ErrorKind::UnexpectedEof) => (
            ErrorKind::Connection,
            ErrorClass::Transient,
            "connection closed by server",
        ),
        Some(io::ErrorKind::NotConnected) => (
            ErrorKind::Connection,
            ErrorClass::Transient,
            "not connected",
        ),
        Some(io::ErrorKind::PermissionDenied | io::ErrorKind::Unsupported) => (
            ErrorKind::Connection,
            ErrorClass::Permanent,
            "connection not permitted",
        ),
        _ => (ErrorKind::Connection, ErrorClass::Transient, "i/o error"),
    };
    // A permanent socket error (not permitted) still means the endpoint
    // cannot serve: count it so the breaker fails fast.
    Classified::new(kind, class, what.to_string()).breaker(true)
}

/// The `io::ErrorKind` behind a redis error, if there is one.
fn io_error_kind(err: &redis::RedisError) -> Option<io::ErrorKind> {
    let mut source = StdError::source(err);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        // redis-rs keeps its cause as `Arc<dyn Error>`; look inside.
        if let Some(io) = s
            .downcast_ref::<std::sync::Arc<dyn StdError + Send + Sync>>()
            .and_then(|inner| inner.downcast_ref::<io::Error>())
        {
            return Some(io.kind());
        }
        source = s.source();
    }
    // redis-rs also reports a closed connection as a general Io error
    // without an io::Error inside ("connection closed").
    if err.is_connection_dropped() {
        return Some(io::ErrorKind::UnexpectedEof);
    }
    None
}

/// `CODE detail` of a server error reply, truncated.
fn server_text(err: &redis::RedisError) -> String {
    // A pipeline's (or transaction's) error has no detail of its own: its
    // first failed reply speaks for it, so that a quota reply to a pipeline
    // is recognised as one.
    if err.detail().is_none() {
        let first = err.clone().into_server_errors().and_then(|items| {
            items.first().map(|(_, e)| match e.details() {
                Some(detail) => format!("{} {detail}", e.code()),
                None => e.code().to_string(),
            })
        });
        if let Some(text) = first {
            return truncated(&text);
        }
    }
    let code = err.code().unwrap_or("ERR");
    let text = match err.detail() {
        Some(detail) => format!("{code} {detail}"),
        None => code.to_string(),
    };
    truncated(&text)
}

fn truncated(text: &str) -> String {
    if text.len() <= MAX_REPLY_TEXT {
        return text.to_string();
    }
    let mut end = MAX_REPLY_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Phrases hosted providers use for quota replies (compared lowercase).
/// `max request size exceeded` is deliberately absent: that one is about
/// the value, and permanent.
const RATE_LIMIT_PHRASES: &[&str] = &[
    "max requests limit exceeded",
    "max daily request limit exceeded",
    "max monthly request limit exceeded",
    "max concurrent connections exceeded",
    "rate limit exceeded",
    "ratelimit exceeded",
    "too many requests",
];

/// Recognises a quota reply and parses `Limit: N`, `Usage: N` and a reset
/// hint (`retry after N`, `reset in N seconds`) from it.
pub(crate) fn parse_rate_limit(text: &str) -> Option<RateLimit> {
    let lower = text.to_ascii_lowercase();
    if !RATE_LIMIT_PHRASES.iter().any(|p| lower.contains(p)) {
        return None;
    }
    // A hint too long for a u64 still means "not soon": it saturates (and
    // the router clamps every cooldown anyway).
    let reset_secs = digits_after(&lower, "retry after")
        .or_else(|| digits_after(&lower, "reset in"))
        .map(|d| d.parse().unwrap_or(u64::MAX));
    Some(RateLimit {
        limit: number_after(&lower, "limit:"),
        usage: number_after(&lower, "usage:"),
        reset_after: reset_secs.map(Duration::from_secs),
    })
}

/// The integer that follows `label` (after optional spaces), if any and
/// if it fits a `u64`.
fn number_after(text: &str, label: &str) -> Option<u64> {
    digits_after(text, label)?.parse().ok()
}

/// The (non-empty) run of ASCII digits that follows `label` after
/// optional spaces, if any.
fn digits_after<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let start = text.find(label)? + label.len();
    let rest = text[start..].trim_start();
    let digits: &str = &rest[..rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len())];
    (!digits.is_empty()).then_some(digits)
}

#[cfg(test)]
pub(crate) mod tests;
