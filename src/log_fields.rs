//! The structured fields every WARN and INFO line carries, as `log`
//! key-values (the `kv` feature of `log`, no other logging dependency).
//!
//! | field | meaning |
//! |---|---|
//! | `operation` | what the line is about: `breaker_transition`, `fallback_engaged`, `outage_summary`, `fallback_released`, `failover`, `failover_restored`, `reconcile`, `rate_limited`, `rate_limit_cleared`, `retry_budget`, `start_thread`, `config`, `cluster_topology`, `cluster_distrust`, `read_from_replicas` |
//! | `error_type` | the error kind (`connection`, `timeout`, `rate_limited`, ...) or reason; `none` |
//! | `error_message` | the error's message (never a secret); empty when none |
//! | `error_count` | errors the line accounts for (1 for one error) |
//! | `circuit_breaker_state` | the endpoint's breaker: `closed`, `open`, `half_open`, `forced_open`; `none` |
//! | `endpoint` | `primary`, `secondary`, `memory` (no Redis configured) or `none` |
//! | `cooldown_ms`, `keys`, `duration_ms`, `node`, `slots_moved`, `masters` | where relevant |
//!
//! The message text says the same in words, so a logger that drops the
//! fields loses nothing a reader needs.

/// The fields of one line; see the module docs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub(crate) operation: &'static str,
    pub(crate) error_type: &'a str,
    pub(crate) error_message: &'a str,
    pub(crate) error_count: u64,
    pub(crate) circuit_breaker_state: &'a str,
    pub(crate) endpoint: &'a str,
}

impl<'a> Fields<'a> {
    /// A line about `operation`, with no error, breaker or endpoint yet.
    pub(crate) fn new(operation: &'static str) -> Fields<'a> {
        Fields {
            operation,
            error_type: "none",
            error_message: "",
            error_count: 0,
            circuit_breaker_state: "none",
            endpoint: "none",
        }
    }

    /// The error the line is about (type and message), counted once.
    pub(crate) fn error(self, error_type: &'a str, error_message: &'a str) -> Self {
        Fields {
            error_type,
            error_message,
            error_count: self.error_count.max(1),
            ..self
        }
    }

    /// How many errors the line accounts for.
    pub(crate) fn count(self, error_count: u64) -> Self {
        Fields {
            error_count,
            ..self
        }
    }

    /// The endpoint and its breaker's state.
    pub(crate) fn at(self, endpoint: &'a str, circuit_breaker_state: &'a str) -> Self {
        Fields {
            endpoint,
            circuit_breaker_state,
            ..self
        }
    }
}

/// `u64` milliseconds of a duration, saturating.
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Logs one line at `$level` with the [`Fields`] `$fields`, extra
/// `key = value` fields, then the message:
/// `log_fields!(Level::Warn, fields, cooldown_ms = 5; "text {}", x)`.
macro_rules! log_fields {
    ($level:expr, $fields:expr $(, $key:ident = $value:expr)* ; $($message:tt)+) => {{
        let f: $crate::log_fields::Fields<'_> = $fields;
        log::log!(
            $level,
            operation = f.operation,
            error_type = f.error_type,
            error_message = f.error_message,
            error_count = f.error_count,
            circuit_breaker_state = f.circuit_breaker_state,
            endpoint = f.endpoint
            $(, $key = $value)*;
            $($message)+
        )
    }};
}
pub(crate) use log_fields;
