//! Prometheus text exposition (format 0.0.4) of a [`Stats`] snapshot.

use std::fmt::Write as _;

use super::{DurationHistogram, EndpointStats, Stats};

/// Writes metric families: `# HELP`, `# TYPE`, then the samples.
struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP resilient_redis_{name} {help}");
        let _ = writeln!(self.out, "# TYPE resilient_redis_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.out, "resilient_redis_{name}");
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(super) fn render(s: &Stats) -> String {
    let mut w = Writer { out: String::new() };
    let c = "counter";
    let g = "gauge";
    w.single(
        "requests_total",
        c,
        "Cache operations and commands requested.",
        s.requests as f64,
    );
    w.single("hits_total", c, "Reads that found a value.", s.hits as f64);
    w.single(
        "misses_total",
        c,
        "Reads that found no value.",
        s.misses as f64,
    );
    w.family("errors_total", c, "Errors returned to callers, by class.");
    for (class, n) in [
        ("transient", s.errors_transient),
        ("rate_limited", s.errors_rate_limited),
        ("permanent", s.errors_permanent),
    ] {
        w.sample("errors_total", &[("class", class)], n as f64);
    }
    w.single(
        "timeouts_total",
        c,
        "Attempts that hit a socket timeout.",
        s.timeouts as f64,
    );
    w.single(
        "retries_total",
        c,
        "Attempts retried after a transient failure.",
        s.retries as f64,
    );
    w.single(
        "retry_budget_denials_total",
        c,
        "Retries refused because the client-wide retry budget was spent.",
        s.retry_budget_denials as f64,
    );
    w.single(
        "fallback_reads_total",
        c,
        "Reads served by the in-memory fallback store.",
        s.fallback_reads as f64,
    );
    w.single(
        "fallback_writes_total",
        c,
        "Writes served by the in-memory fallback store.",
        s.fallback_writes as f64,
    );
    w.single(
        "fallback_active",
        g,
        "1 while operations are served from memory because Redis is unavailable.",
        f64::from(u8::from(s.fallback_active)),
    );
    w.single(
        "fallback_entries",
        g,
        "Entries in the in-memory fallback store.",
        s.fallback_entries as f64,
    );
    w.single(
        "outage_journal_keys",
        g,
        "Keys written during an outage, waiting for reconciliation.",
        s.journal_len as f64,
    );
    w.single(
        "outage_journal_overflows_total",
        c,
        "Writes refused because the journal was full.",
        s.journal_overflows as f64,
    );
    w.single(
        "reconciled_keys_total",
        c,
        "Journaled keys reconciled with Redis after an outage.",
        s.reconciled_keys as f64,
    );
    w.single(
        "failover_active",
        g,
        "1 while calls go to the secondary Redis.",
        f64::from(u8::from(s.failover_active)),
    );
    w.single(
        "failovers_total",
        c,
        "Switches from the primary to the secondary Redis.",
        s.failovers as f64,
    );
    render_more(&mut w, s);

    if !s.endpoints.is_empty() {
        w.family(
            "circuit_state",
            g,
            "Circuit breaker state per endpoint: 0 closed, 1 half-open, 2 open.",
        );
        for e in &s.endpoints {
            w.sample(
                "circuit_state",
                &[("endpoint", e.label())],
                e.circuit_state_value(),
            );
        }
        w.family(
            "pool_connections",
            g,
            "Pooled connections per endpoint and state.",
        );
        for e in &s.endpoints {
            for (state, n) in [
                ("idle", e.pool_idle),
                ("in_use", e.pool_in_use),
                ("connecting", e.pool_connecting),
            ] {
                w.sample(
                    "pool_connections",
                    &[("endpoint", e.label()), ("state", state)],
                    n as f64,
                );
            }
        }
        type Field = fn(&EndpointStats) -> u64;
        let per_endpoint: [(&str, &str, &str, Field); 13] = [
            (
                "circuit_opens_total",
                c,
                "Times the circuit breaker opened.",
                |e| e.breaker_opens,
            ),
            (
                "circuit_rejections_total",
                c,
                "Calls rejected at once because the circuit was open.",
                |e| e.breaker_rejections,
            ),
            (
                "pool_waiters",
                g,
                "Callers waiting for a pooled connection.",
                |e| e.pool_waiters,
            ),
            (
                "connections_created_total",
                c,
                "Connections opened per endpoint.",
                |e| e.connections_created,
            ),
            (
                "connections_closed_total",
                c,
                "Connections closed per endpoint.",
                |e| e.connections_closed,
            ),
            (
                "endpoint_requests_total",
                c,
                "Attempts sent to each endpoint.",
                |e| e.requests,
            ),
            (
                "connect_failures_total",
                c,
                "Connects that failed, per endpoint.",
                |e| e.connect_failures,
            ),
            (
                "commands_succeeded_total",
                c,
                "Attempts that succeeded, per endpoint.",
                |e| e.commands_succeeded,
            ),
            (
                "commands_failed_total",
                c,
                "Attempts the breaker let through that failed, per endpoint.",
                |e| e.commands_failed,
            ),
            (
                "rate_limit_replies_total",
                c,
                "Rate-limit or quota replies, per endpoint.",
                |e| e.rate_limit_replies,
            ),
            (
                "master_switches_total",
                c,
                "Times the sentinels named a new master (redis+sentinel:// endpoints).",
                |e| e.master_switches,
            ),
            (
                "shared_requests_total",
                c,
                "Requests written on a shared connection (automatic pipelining), per endpoint.",
                |e| e.shared_requests,
            ),
            (
                "shared_waits_total",
                c,
                "Shared requests whose caller waited for another caller to write or read them, per endpoint.",
                |e| e.shared_waits,
            ),
        ];
        for (name, kind, help, field) in per_endpoint {
            w.family(name, kind, help);
            for e in &s.endpoints {
                w.sample(name, &[("endpoint", e.label())], field(e) as f64);
            }
        }
    }
    duration_histogram(&mut w, &s.request_duration);
    w.out
}

/// The families added with compression, `get_or_load` and restores.
/// `resilient_redis_request_duration_seconds`: the family is declared even
/// before any call, so that alert rules find it.
fn duration_histogram(w: &mut Writer, series: &[DurationHistogram]) {
    let name = "request_duration_seconds";
    w.family(
        name,
        "histogram",
        "Duration of client calls per endpoint and outcome (ok, error, fallback = served from memory).",
    );
    let bounds: Vec<String> = DurationHistogram::bounds()
        .map(|b| b.to_string())
        .chain(std::iter::once("+Inf".to_string()))
        .collect();
    for h in series {
        let labels = [("endpoint", h.endpoint), ("outcome", h.outcome)];
        for (le, n) in bounds.iter().zip(&h.cumulative) {
            let [e, o] = labels;
            w.sample(&format!("{name}_bucket"), &[e, o, ("le", le)], *n as f64);
        }
        w.sample(&format!("{name}_sum"), &labels, h.sum_seconds);
        w.sample(&format!("{name}_count"), &labels, h.count as f64);
    }
}

fn render_more(w: &mut Writer, s: &Stats) {
    let c = "counter";
    for (name, help, value) in [
        (
            "restores_total",
            "Switches back from the secondary to the primary Redis.",
            s.restores,
        ),
        (
            "compression_input_bytes_total",
            "Bytes of the values stored compressed, before compression.",
            s.compression_input_bytes,
        ),
        (
            "compression_output_bytes_total",
            "Bytes of the values stored compressed, as stored.",
            s.compression_output_bytes,
        ),
        (
            "values_compressed_total",
            "Values stored compressed.",
            s.values_compressed,
        ),
        (
            "values_decompressed_total",
            "Values read back and decompressed.",
            s.values_decompressed,
        ),
        (
            "values_undecodable_total",
            "Values with the compression header that did not decode (returned as stored).",
            s.values_undecodable,
        ),
        ("loads_total", "Loaders run by get_or_load.", s.loads),
        (
            "loads_coalesced_total",
            "get_or_load calls that waited for another thread's load of the same key.",
            s.loads_coalesced,
        ),
        (
            "load_errors_total",
            "get_or_load loaders that failed or panicked.",
            s.load_errors,
        ),
        (
            "load_wait_timeouts_total",
            "get_or_load waits for another thread's load that ran out.",
            s.load_wait_timeouts,
        ),
        (
            "load_store_failures_total",
            "Loaded values that could not be stored (still returned).",
            s.load_store_failures,
        ),
        (
            "cluster_refreshes_total",
            "Slot maps read from the Redis Cluster.",
            s.cluster_refreshes,
        ),
        (
            "cluster_refresh_failures_total",
            "Slot map refreshes no cluster node answered.",
            s.cluster_refresh_failures,
        ),
        (
            "cluster_topology_changes_total",
            "Slot map refreshes that changed the map.",
            s.cluster_topology_changes,
        ),
        (
            "cluster_slot_moves_total",
            "Hash slots seen moving to another master.",
            s.cluster_slot_moves,
        ),
        (
            "cluster_moved_total",
            "MOVED redirects followed.",
            s.cluster_moved,
        ),
        (
            "cluster_asks_total",
            "ASK redirects followed.",
            s.cluster_asks,
        ),
    ] {
        w.single(name, c, help, value as f64);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{HashMap, HashSet};

    use super::super::{EndpointStats, Stats};
    use crate::breaker::BreakerState;

    /// A strict reader of the text exposition format: every sample belongs
    /// to a family declared by `# HELP` and `# TYPE` before it, names and
    /// labels are well formed, values parse, counters end in `_total`, no
    /// series repeats. Returns the samples by series.
    pub(crate) fn parse_strict(text: &str) -> Result<HashMap<String, f64>, String> {
        fn valid_name(n: &str) -> bool {
            let mut chars = n.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        }
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helped: HashSet<String> = HashSet::new();
        let mut samples = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let at = |m: &str| format!("line {}: {m}: {line:?}", i + 1);
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or("");
                if !valid_name(name) || !helped.insert(name.to_string()) {
                    return Err(at("bad or repeated HELP"));
                }
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                if !helped.contains(name) || !["counter", "gauge", "histogram"].contains(&kind) {
                    return Err(at("TYPE without HELP or unknown type"));
                }
                if kind == "counter" && !name.ends_with("_total") {
                    return Err(at("counter not ending in _total"));
                }
                if types.insert(name.to_string(), kind.to_string()).is_some() {
                    return Err(at("repeated TYPE"));
                }
            } else if line.starts_with('#') || line.is_empty() {
                return Err(at("unexpected comment or blank line"));
            } else {
                let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("no value"))?;
                let value: f64 = value.parse().map_err(|_| at("value does not parse"))?;
                let name = series.split('{').next().unwrap_or("");
                let histogram = ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                    name.strip_suffix(suffix)
                        .is_some_and(|family| types.get(family).is_some_and(|t| t == "histogram"))
                });
                if !types.contains_key(name) && !histogram {
                    return Err(at("sample before its TYPE"));
                }
                if name.ends_with("_bucket") && histogram && !series.contains("le=\"") {
                    return Err(at("histogram bucket without le"));
                }
                if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
                    let inner = labels
                        .strip_prefix('{')
                        .and_then(|l| l.strip_suffix('}'))
                        .ok_or_else(|| at("bad label braces"))?;
                    for pair in inner.split(',') {
                        let (k, v) = pair.split_once('=').ok_or_else(|| at("bad label"))?;
                        if !(valid_name(k)
                            && v.starts_with('"')
                            && v.ends_with('"')
                            && v.len() >= 2)
                        {
                            return Err(at("bad label name or value"));
                        }
                    }
                }
                if samples.insert(series.to_string(), value).is_some() {
                    return Err(at("repeated series"));
                }
            }
        }
        Ok(samples)
    }

    fn endpoint(role: &'static str, circuit: BreakerState) -> EndpointStats {
        EndpointStats {
            role,
            url: "redis://:***@127.0.0.1:6379".to_string(),
            circuit,
            breaker_opens: 3,
            breaker_rejections: 40,
            pool_idle: 2,
            pool_in_use: 1,
            pool_connecting: 0,
            pool_waiters: 0,
            connections_created: 5,
            connections_closed: 2,
            requests: 100,
            connect_failures: 4,
            commands_succeeded: 90,
            commands_failed: 10,
            rate_limit_replies: 7,
            master: None,
            sentinel: None,
            master_switches: 0,
            node: None,
            connections_retired: 0,
            shared_requests: 0,
            shared_waits: 0,
        }
    }

    #[test]
    fn exposition_is_valid_and_complete() -> Result<(), String> {
        let stats = Stats {
            requests: 10,
            hits: 4,
            misses: 6,
            errors_transient: 1,
            fallback_active: true,
            failover_active: true,
            failovers: 1,
            restores: 2,
            compression_output_bytes: 300,
            endpoints: vec![
                endpoint("primary", BreakerState::Open),
                endpoint("secondary", BreakerState::Closed),
            ],
            ..Stats::default()
        };
        let text = stats.to_prometheus();
        let samples = parse_strict(&text)?;
        assert_eq!(samples.get("resilient_redis_requests_total"), Some(&10.0));
        assert_eq!(
            samples.get("resilient_redis_errors_total{class=\"transient\"}"),
            Some(&1.0)
        );
        assert_eq!(samples.get("resilient_redis_failover_active"), Some(&1.0));
        assert_eq!(samples.get("resilient_redis_failovers_total"), Some(&1.0));
        assert_eq!(
            samples.get("resilient_redis_circuit_state{endpoint=\"primary\"}"),
            Some(&2.0)
        );
        assert_eq!(
            samples.get("resilient_redis_circuit_state{endpoint=\"secondary\"}"),
            Some(&0.0)
        );
        assert_eq!(
            samples.get("resilient_redis_pool_connections{endpoint=\"primary\",state=\"idle\"}"),
            Some(&2.0)
        );
        assert_eq!(
            samples.get("resilient_redis_rate_limit_replies_total{endpoint=\"primary\"}"),
            Some(&7.0)
        );
        assert_eq!(
            samples.get("resilient_redis_connect_failures_total{endpoint=\"secondary\"}"),
            Some(&4.0)
        );
        assert_eq!(
            samples.get("resilient_redis_commands_failed_total{endpoint=\"primary\"}"),
            Some(&10.0)
        );
        assert_eq!(samples.get("resilient_redis_restores_total"), Some(&2.0));
        assert_eq!(
            samples.get("resilient_redis_compression_output_bytes_total"),
            Some(&300.0)
        );
        assert!(!text.contains("***"), "URLs are not labels");
        assert!(text.contains("# TYPE resilient_redis_request_duration_seconds histogram"));
        Ok(())
    }

    #[test]
    fn duration_histogram_exposition() -> Result<(), String> {
        use crate::stats::{CallEndpoint, CallOutcome, Histogram};
        let h = Histogram::default();
        h.record(
            CallEndpoint::Primary,
            CallOutcome::Fallback,
            std::time::Duration::from_micros(70),
        );
        let stats = Stats {
            request_duration: h.snapshot(),
            ..Stats::default()
        };
        let samples = parse_strict(&stats.to_prometheus())?;
        let series = |suffix: &str, le: Option<&str>| {
            let le = le.map_or(String::new(), |le| format!(",le=\"{le}\""));
            format!("resilient_redis_request_duration_seconds_{suffix}{{endpoint=\"primary\",outcome=\"fallback\"{le}}}")
        };
        assert_eq!(samples.get(&series("bucket", Some("0.00005"))), Some(&0.0));
        assert_eq!(samples.get(&series("bucket", Some("0.0001"))), Some(&1.0));
        assert_eq!(samples.get(&series("bucket", Some("10"))), Some(&1.0));
        assert_eq!(samples.get(&series("bucket", Some("+Inf"))), Some(&1.0));
        assert_eq!(samples.get(&series("count", None)), Some(&1.0));
        assert_eq!(samples.get(&series("sum", None)), Some(&0.00007));
        Ok(())
    }

    #[test]
    fn the_checker_rejects_malformed_text() {
        for bad in [
            "resilient_redis_x 1\n",
            "# HELP a_total h\n# TYPE a_total counter\na_total{x=1} 1\n",
            "# HELP a h\n# TYPE a counter\na 1\n",
            "# HELP a_total h\n# TYPE a_total counter\na_total one\n",
            "# HELP a_total h\n# TYPE a_total counter\na_total 1\na_total 2\n",
        ] {
            assert!(parse_strict(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
