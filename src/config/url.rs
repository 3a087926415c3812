//! Redis URLs: `redis://[user[:password]@]host[:port][/db]`, `rediss://` for TLS.
//!
//! Parsed here rather than by redis-rs so that every rejection says what was
//! wrong, and so that the password never reaches a message: errors never echo
//! the URL, and [`Endpoint`]'s display form shows the password as `***`.

use std::fmt;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use crate::error::Error;

/// Highest database number accepted in a URL path. Redis' own default is 16
/// databases; servers can be configured with more.
pub(crate) const MAX_DB: i64 = 65_535;

const DEFAULT_PORT: u16 = 6379;

/// One Redis server, as given by a URL.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// What redis-rs connects with (holds the password).
    pub(crate) info: ConnectionInfo,
    /// The URL with the password replaced by `***`.
    pub(crate) redacted: String,
    /// `rediss://` (or `valkeys://`).
    pub(crate) tls: bool,
    /// The URL carried the `#insecure` fragment.
    pub(crate) insecure_fragment: bool,
    /// `redis+sentinel://`: the sentinels to ask for the master; `info`
    /// then holds the data nodes' settings (see `topology`).
    pub(crate) sentinel: Option<super::sentinel::SentinelSpec>,
    /// `redis+cluster://`: the seed nodes; `info` then holds the nodes'
    /// settings (see `topology::cluster`).
    pub(crate) cluster: Option<super::cluster::ClusterSpec>,
}

impl Endpoint {
    /// Parses `raw`; `label` (a field or variable name) starts every error message.
    pub(crate) fn parse(label: &str, raw: &str) -> Result<Endpoint, Error> {
        let raw = raw.trim();
        let expected = "expected redis://[user[:password]@]host[:port][/db], rediss://... redis+sentinel://host[:port][,host[:port]...]/service_name[/db] or redis+cluster://host[:port][,host[:port]...]";
        if raw.is_empty() {
            return Err(Error::config(format!("{label}: empty URL; {expected}")));
        }
        if super::sentinel::is_sentinel_url(raw) {
            return super::sentinel::parse(label, raw);
        }
        if super::cluster::is_cluster_url(raw) {
            return super::cluster::parse(label, raw);
        }
        if raw.chars().any(|c| c.is_control() || c == ' ') {
            return Err(Error::config(format!(
                "{label}: URL contains spaces or control characters; {expected}"
            )));
        }
        // url's messages describe the problem without echoing the input.
        let url = url::Url::parse(raw)
            .map_err(|e| Error::config(format!("{label}: not a valid URL ({e}); {expected}")))?;

        let tls = match url.scheme() {
            "redis" | "valkey" => false,
            "rediss" | "valkeys" => true,
            "unix" | "redis+unix" | "valkey+unix" => {
                return Err(Error::config(format!(
                    "{label}: unix sockets are not supported; {expected}"
                )))
            }
            other => {
                let other: String = other.chars().take(32).collect();
                return Err(Error::config(format!(
                    "{label}: unsupported scheme '{other}'; {expected}"
                )));
            }
        };

        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(Error::config(format!("{label}: missing host; {expected}"))),
        };
        if host == "0.0.0.0" || host == "::" {
            return Err(Error::config(format!(
                "{label}: cannot connect to the wildcard address {host}; name a host"
            )));
        }

        let port = url.port().unwrap_or(DEFAULT_PORT);
        if port == 0 {
            return Err(Error::config(format!(
                "{label}: port must be from 1 to 65535, got 0"
            )));
        }

        let db = match url.path().trim_start_matches('/') {
            "" => 0,
            path => match path.parse::<i64>() {
                Ok(db) if (0..=MAX_DB).contains(&db) => db,
                _ => {
                    let shown: String = path.chars().take(32).collect();
                    return Err(Error::config(format!(
                        "{label}: database must be a number from 0 to {MAX_DB}, got '{shown}'"
                    )));
                }
            },
        };

        if url.query().is_some_and(|q| !q.is_empty()) {
            return Err(Error::config(format!(
                "{label}: query parameters are not supported; set options through the builder or environment"
            )));
        }

        let insecure_fragment = insecure_fragment(label, url.fragment(), tls, "rediss://")?;

        let username = decode(label, "username", url.username())?;
        let password = match url.password() {
            Some(p) => decode(label, "password", p)?,
            None => None,
        };

        let mut redis = RedisConnectionInfo::default().set_db(db);
        if let Some(user) = &username {
            redis = redis.set_username(user);
        }
        if let Some(pass) = &password {
            redis = redis.set_password(pass);
        }
        let addr = if tls {
            ConnectionAddr::TcpTls {
                host: host.clone(),
                port,
                insecure: insecure_fragment,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.clone(), port)
        };
        let info = addr
            .into_connection_info()
            .map_err(|e| Error::config(format!("{label}: {e}")))?
            .set_redis_settings(redis);

        let redacted = redact(
            url.scheme(),
            username.as_deref(),
            password.is_some(),
            &host,
            port,
            db,
            insecure_fragment,
        );
        Ok(Endpoint {
            info,
            redacted,
            tls,
            insecure_fragment,
            sentinel: None,
            cluster: None,
        })
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

fn decode(label: &str, what: &str, raw: &str) -> Result<Option<String>, Error> {
    if raw.is_empty() {
        return Ok(None);
    }
    let bytes: Vec<u8> = percent_decode(raw.as_bytes());
    String::from_utf8(bytes).map(Some).map_err(|_| {
        Error::config(format!(
            "{label}: the {what} is not valid UTF-8 once percent-decoded"
        ))
    })
}

/// `%XX` decoding; a `%` not followed by two hex digits stays as it is.
pub(crate) fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `scheme://` and the user info as every redacted URL shows it: the user
/// name, and `***` for a password.
pub(super) fn redacted_prefix(scheme: &str, username: Option<&str>, has_password: bool) -> String {
    let mut s = format!("{scheme}://");
    match (username, has_password) {
        (Some(u), true) => s.push_str(&format!("{u}:***@")),
        (None, true) => s.push_str(":***@"),
        (Some(u), false) => s.push_str(&format!("{u}@")),
        (None, false) => {}
    }
    s
}

fn redact(
    scheme: &str,
    username: Option<&str>,
    has_password: bool,
    host: &str,
    port: u16,
    db: i64,
    insecure: bool,
) -> String {
    let mut s = redacted_prefix(scheme, username, has_password);
    s.push_str(&super::sentinel::host_port(host, port));
    if db != 0 {
        s.push_str(&format!("/{db}"));
    }
    if insecure {
        s.push_str("#insecure");
    }
    s
}

/// Whether a URL's fragment asks for `#insecure` (TLS verification off),
/// which only a TLS scheme (`tls_scheme`, for the message) accepts; any
/// other fragment is an error naming `label`.
pub(super) fn insecure_fragment(
    label: &str,
    fragment: Option<&str>,
    tls: bool,
    tls_scheme: &str,
) -> Result<bool, Error> {
    match fragment {
        None | Some("") => Ok(false),
        Some("insecure") if tls => Ok(true),
        Some("insecure") => Err(Error::config(format!(
            "{label}: #insecure only applies to {tls_scheme} URLs"
        ))),
        Some(_) => Err(Error::config(format!(
            "{label}: unknown URL fragment; only #insecure (with {tls_scheme}) is accepted"
        ))),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ErrorKind;

    fn host_port(e: &Endpoint) -> (String, u16) {
        match e.info.addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                (host.clone(), *port)
            }
            other => panic!("unexpected address {other:?}"),
        }
    }

    /// `raw` parsed, or a panic naming it.
    pub(in crate::config) fn ok(raw: &str) -> Endpoint {
        match Endpoint::parse("url", raw) {
            Ok(e) => e,
            Err(e) => panic!("{raw}: {e}"),
        }
    }

    /// The config error for `raw` given as `REDIS_URL`, checked to name it.
    pub(in crate::config) fn err(raw: &str) -> String {
        match Endpoint::parse("REDIS_URL", raw) {
            Ok(e) => panic!("{raw} parsed as {e}"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Config);
                let msg = e.to_string();
                assert!(msg.starts_with("REDIS_URL: "), "{msg}");
                msg
            }
        }
    }

    #[test]
    fn plain_forms() {
        let e = ok("redis://localhost");
        assert_eq!(host_port(&e), ("localhost".to_string(), 6379));
        assert!(!e.tls);
        assert_eq!(e.info.redis_settings().db(), 0);
        assert_eq!(e.redacted, "redis://localhost:6379");

        let e = ok("redis://127.0.0.1:6380/3");
        assert_eq!(host_port(&e).1, 6380);
        assert_eq!(e.info.redis_settings().db(), 3);
        assert_eq!(e.redacted, "redis://127.0.0.1:6380/3");

        let e = ok("redis://[::1]:7000/");
        assert_eq!(host_port(&e).0, "::1");
        assert_eq!(e.redacted, "redis://[::1]:7000");

        let e = ok("valkey://cache.internal:6379");
        assert!(!e.tls);
    }

    #[test]
    fn credentials_are_decoded_and_redacted() {
        let e = ok("redis://alice:s%40cret%2F1@db.example.com:6379/2");
        let settings = e.info.redis_settings();
        assert_eq!(settings.username(), Some("alice"));
        assert_eq!(settings.password(), Some("s@cret/1"));
        assert_eq!(e.redacted, "redis://alice:***@db.example.com:6379/2");
        assert!(!format!("{e:?}").contains("cret"));

        let e = ok("redis://:hunter2@host");
        assert_eq!(e.info.redis_settings().username(), None);
        assert_eq!(e.info.redis_settings().password(), Some("hunter2"));
        assert_eq!(e.redacted, "redis://:***@host:6379");

        let e = ok("redis://bob@host");
        assert_eq!(e.info.redis_settings().password(), None);
        assert_eq!(e.redacted, "redis://bob@host:6379");
    }

    #[test]
    fn tls_forms() {
        let e = ok("rediss://default:pw@eu1-fine-cat.upstash.io:6379");
        assert!(e.tls);
        assert!(!e.insecure_fragment);
        assert!(matches!(
            e.info.addr(),
            ConnectionAddr::TcpTls {
                insecure: false,
                ..
            }
        ));
        let e = ok("rediss://host:6380#insecure");
        assert!(e.insecure_fragment);
        assert_eq!(e.redacted, "rediss://host:6380#insecure");
    }

    #[test]
    fn rejections_say_what_was_wrong() {
        assert!(err("").contains("empty URL"));
        assert!(err("localhost:6379").contains("unsupported scheme 'localhost'"));
        assert!(err("http://localhost").contains("unsupported scheme 'http'"));
        assert!(err("unix:///tmp/redis.sock").contains("unix sockets"));
        assert!(err("redis://").contains("missing host"));
        assert!(err("redis://host:0").contains("port must be from 1 to 65535"));
        assert!(err("redis://host:70000").contains("not a valid URL"));
        assert!(err("redis://host:abc").contains("not a valid URL"));
        assert!(err("redis://host/99999").contains("database must be a number"));
        assert!(err("redis://host/-1").contains("database must be a number"));
        assert!(err("redis://host/db").contains("got 'db'"));
        assert!(err("redis://host?protocol=resp3").contains("query parameters"));
        assert!(err("redis://host#insecure").contains("only applies to rediss"));
        assert!(err("rediss://host#nope").contains("unknown URL fragment"));
        assert!(err("redis://0.0.0.0:6379").contains("wildcard"));
        assert!(err("redis://ho st").contains("spaces"));
        assert!(err("redis://u:%FF%FE@host").contains("password is not valid UTF-8"));
    }

    #[test]
    fn errors_never_echo_the_password() {
        for raw in [
            "redis://user:topsecret@host:99999",
            "redis://user:topsecret@host/notadb",
            "redis://user:topsecret@host?x=1",
            "ftp://user:topsecret@host",
            "redis://user:topsecret@0.0.0.0",
            "redis://user:topsecret@host#frag",
            "redis://user:top secret@host",
        ] {
            let msg = match Endpoint::parse("REDIS_URL", raw) {
                Ok(_) => panic!("{raw} should be rejected"),
                Err(e) => format!("{e} {e:?}"),
            };
            assert!(
                !msg.contains("topsecret") && !msg.contains("top secret"),
                "{msg}"
            );
        }
    }

    #[test]
    fn percent_decode_edges() {
        assert_eq!(percent_decode(b"%41%4a%"), b"AJ%");
        assert_eq!(percent_decode(b"%4"), b"%4");
        assert_eq!(percent_decode(b"%zz"), b"%zz");
        assert_eq!(percent_decode(b""), b"");
    }
}
