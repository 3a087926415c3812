//! A threaded HTTP cache service: the shape of most programs this crate is
//! for. Run it, then break Redis under it.
//!
//! ```text
//! redis-server --port 6379 &
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example http_service     # PORT=8080 by default
//! curl -X PUT --data 'alice' 'http://127.0.0.1:8080/cache/user:1?ttl=60'
//! curl http://127.0.0.1:8080/cache/user:1                               # alice
//! redis-cli shutdown nosave                                             # break Redis ...
//! curl -i http://127.0.0.1:8080/health                                  # 200, "degraded", serving from memory
//! curl http://127.0.0.1:8080/cache/user:1                               # still answers
//! curl http://127.0.0.1:8080/metrics | grep fallback                    # the fallback counters
//! ```
//!
//! Routes:
//!
//! - `GET /cache/{key}`: the value as the body (`application/octet-stream`),
//!   404 when the key is missing.
//! - `PUT /cache/{key}[?ttl=SECONDS]`: stores the body (at most 1 MiB);
//!   204. `DELETE /cache/{key}`: 204, or 404 when the key was missing.
//! - `GET /health`: JSON, 200 when healthy or degraded, 503 when
//!   unavailable. Fields: `status` (`"healthy"`, `"degraded"`,
//!   `"unavailable"`), `active_endpoint` (`"primary"`, `"secondary"` or
//!   `null` when memory-only), `serving_from_memory` (bool),
//!   `failover_reason` (string or `null`), and `endpoints`, one object per
//!   Redis endpoint: `role`, `url` (password redacted), `circuit`
//!   (`"closed"`, `"open"`, `"half_open"`, ...), `pool` (`idle`, `in_use`,
//!   `connecting`, `waiters`, `max`) and `last_error` (string or `null`).
//! - `GET /metrics`: the Prometheus text (`text/plain; version=0.0.4`).
//!
//! Errors: 400 for a bad request (a `ttl` that is not a whole number of
//! seconds above 0), 413 for a body over 1 MiB, 503 when Redis cannot
//! answer and the memory cannot either, 500 for any other error; the body
//! says what went wrong.
//!
//! Listens on `127.0.0.1:${PORT:-8080}` with `HTTP_WORKERS` (8) threads;
//! the client is configured from the environment (`REDIS_URL`, ...; no
//! `REDIS_URL` means memory only). Exit code 2 on a configuration error.
//!
//! The HTTP server is [`tiny_http`] (a dev-dependency): synchronous, a
//! handful of small dependencies, requests taken from a queue by as many
//! threads as you like. That is the threaded, runtime-free shape the
//! client is built for; an async framework would hide it.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use resilient_redis::{Client, Config, ErrorClass, Health, HealthStatus};
use tiny_http::{Header, Method, Request, Response, Server};

/// Largest value accepted by `PUT`.
const MAX_BODY: usize = 1 << 20;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".to_string());
    let Ok(port) = port.trim().parse::<u16>() else {
        eprintln!("PORT: expected a port number, got {port:?}");
        std::process::exit(2);
    };
    let workers = match std::env::var("HTTP_WORKERS").map(|w| w.trim().parse::<usize>()) {
        Err(_) => 8,
        Ok(Ok(n)) if n > 0 => n,
        Ok(_) => {
            eprintln!("HTTP_WORKERS: expected a number above 0");
            std::process::exit(2);
        }
    };
    let client = match Config::from_env().and_then(Client::new) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("configuration error: {e}");
            std::process::exit(2);
        }
    };
    let server = match Server::http(("127.0.0.1", port)) {
        Ok(server) => Arc::new(server),
        Err(e) => {
            eprintln!("cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "listening on http://127.0.0.1:{port} ({workers} threads), redis: {}",
        client.config().url().unwrap_or("none (memory only)")
    );
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let (server, client) = (server.clone(), client.clone());
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    handle(&client, request);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// Answers one request; a client that hung up is not an error worth more
/// than a debug line.
fn handle(client: &Client, mut request: Request) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let response = match (request.method(), path) {
        (Method::Get, "/health") => health(client),
        (Method::Get, "/metrics") => typed(
            Response::from_data(client.stats().to_prometheus()),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        (method, p) if p.starts_with("/cache/") => match percent_decode(&p["/cache/".len()..]) {
            Some(key) if !key.is_empty() => match method {
                Method::Get => get(client, &key),
                Method::Put => put(client, &key, query, &mut request),
                Method::Delete => delete(client, &key),
                _ => text(405, "use GET, PUT or DELETE\n"),
            },
            _ => text(
                400,
                "the key must be a non-empty, well-formed path segment\n",
            ),
        },
        _ => text(404, "routes: /cache/{key}, /health, /metrics\n"),
    };
    if let Err(e) = request.respond(response) {
        log::debug!("could not answer {url}: {e}");
    }
}

type Reply = Response<std::io::Cursor<Vec<u8>>>;

fn get(client: &Client, key: &[u8]) -> Reply {
    match client.get::<_, Vec<u8>>(key) {
        Ok(Some(value)) => typed(Response::from_data(value), "application/octet-stream"),
        Ok(None) => text(404, "no such key\n"),
        Err(e) => error(&e),
    }
}

fn put(client: &Client, key: &[u8], query: &str, request: &mut Request) -> Reply {
    let ttl = match query
        .split('&')
        .find_map(|kv| kv.strip_prefix("ttl="))
        .map(|s| s.parse::<u64>())
    {
        None => None,
        Some(Ok(secs)) if secs > 0 => Some(Duration::from_secs(secs)),
        Some(_) => return text(400, "ttl: expected a whole number of seconds above 0\n"),
    };
    let mut body = Vec::new();
    let limit = u64::try_from(MAX_BODY).unwrap_or(u64::MAX) + 1;
    if let Err(e) = request.as_reader().take(limit).read_to_end(&mut body) {
        return text(400, format!("cannot read the body: {e}\n"));
    }
    if body.len() > MAX_BODY {
        return text(413, format!("the value is larger than {MAX_BODY} bytes\n"));
    }
    let result = match ttl {
        Some(ttl) => client.set_ex(key, body, ttl),
        None => client.set(key, body),
    };
    match result {
        Ok(()) => text(204, ""),
        Err(e) => error(&e),
    }
}

fn delete(client: &Client, key: &[u8]) -> Reply {
    match client.delete(key) {
        Ok(true) => text(204, ""),
        Ok(false) => text(404, "no such key\n"),
        Err(e) => error(&e),
    }
}

/// 503 when Redis (and the memory) could not answer, 500 otherwise.
fn error(e: &resilient_redis::Error) -> Reply {
    let status = match e.class() {
        ErrorClass::Transient | ErrorClass::RateLimited => 503,
        _ => 500,
    };
    text(status, format!("{e}\n"))
}

fn health(client: &Client) -> Reply {
    let h = client.health();
    let status = match h.status {
        HealthStatus::Unavailable => 503,
        _ => 200,
    };
    typed(
        Response::from_data(health_json(&h)).with_status_code(status),
        "application/json",
    )
}

/// [`Health`] as JSON (written by hand: a handful of fields do not need a
/// serializer).
fn health_json(h: &Health) -> String {
    let endpoints: Vec<String> = h
        .endpoints
        .iter()
        .map(|e| {
            format!(
                r#"{{"role":{},"url":{},"circuit":{},"pool":{{"idle":{},"in_use":{},"connecting":{},"waiters":{},"max":{}}},"last_error":{}}}"#,
                json(e.role),
                json(&e.url),
                json(e.circuit.as_str()),
                e.pool.idle,
                e.pool.in_use,
                e.pool.connecting,
                e.pool.waiters,
                e.pool.max,
                e.last_error.as_deref().map_or("null".to_string(), json),
            )
        })
        .collect();
    format!(
        r#"{{"status":{},"active_endpoint":{},"serving_from_memory":{},"failover_reason":{},"endpoints":[{}]}}"#,
        json(h.status.as_str()),
        h.active_endpoint.map_or("null".to_string(), json),
        h.serving_from_memory,
        h.failover_reason
            .map_or("null".to_string(), |r| json(r.as_str())),
        endpoints.join(",")
    ) + "\n"
}

/// A JSON string literal.
fn json(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `%XX` escapes decoded; `None` for a malformed escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

fn text(status: u16, body: impl Into<String>) -> Reply {
    typed(
        Response::from_data(body.into()).with_status_code(status),
        "text/plain; charset=utf-8",
    )
}

/// `response` with a `Content-Type` (an ASCII constant of this file, so
/// the header always builds).
fn typed(mut response: Reply, content_type: &str) -> Reply {
    if let Ok(h) = Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()) {
        response.add_header(h);
    }
    response
}
