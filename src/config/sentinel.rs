//! Sentinel URLs:
//! `redis+sentinel://[[username]:password@]host1[:port1][,host2[:port2]…]/service_name[/db]`,
//! `rediss+sentinel://` for TLS to the sentinels and the data nodes.
//!
//! The `url` crate cannot parse a host list, so this is parsed by hand;
//! as for plain URLs every rejection names what is wrong and never echoes
//! the password. The password in the URL is the data nodes'; the
//! sentinels' own password comes from
//! [`ConfigBuilder::sentinel_password`](crate::ConfigBuilder::sentinel_password)
//! or `REDIS_SENTINEL_PASSWORD`.

use std::fmt;

use super::host_list::{self, HostListUrl, Kind};
use super::url::{percent_decode, Endpoint, MAX_DB};
use crate::error::Error;

/// The sentinels' default port.
pub(crate) const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// Most sentinels a URL may list (and the discovered list may grow to).
pub(crate) const MAX_SENTINELS: usize = 32;

/// Longest accepted service (master) name.
const MAX_SERVICE: usize = 256;

const EXPECTED: &str = "expected redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db] or rediss+sentinel://...";

const KIND: Kind = Kind {
    plain: "redis+sentinel",
    tls: "rediss+sentinel",
    name: "sentinel",
    expected: EXPECTED,
};

/// What a sentinel URL names besides the data nodes' settings.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SentinelSpec {
    /// `(host, port)` of each sentinel, in the URL's order.
    pub(crate) sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the master under.
    pub(crate) service: String,
    /// The sentinels' own password (`requirepass` in sentinel.conf), set
    /// by the builder or `REDIS_SENTINEL_PASSWORD`. Never shown.
    pub(crate) password: Option<String>,
}

impl fmt::Debug for SentinelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelSpec")
            .field("sentinels", &self.sentinels)
            .field("service", &self.service)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// `true` when `raw` has a sentinel scheme (the caller then parses it here).
pub(crate) fn is_sentinel_url(raw: &str) -> bool {
    let lower = raw
        .trim()
        .get(..20)
        .unwrap_or(raw.trim())
        .to_ascii_lowercase();
    lower.starts_with("redis+sentinel://") || lower.starts_with("rediss+sentinel://")
}

/// Parses a sentinel URL; `label` (a field or variable name) starts every
/// error message.
pub(crate) fn parse(label: &str, raw: &str) -> Result<Endpoint, Error> {
    let url = host_list::split(label, raw, &KIND)?;
    let sentinels = parse_hosts(label, url.hosts, "sentinel host", DEFAULT_SENTINEL_PORT)?;
    let (service, db) = parse_path(label, url.path)?;
    // The address is the first sentinel's until discovery names the
    // master: the data nodes are never dialled with it (see `topology`).
    let Some(first) = sentinels.first().cloned() else {
        return Err(Error::config(format!(
            "{label}: no sentinel host; {EXPECTED}"
        )));
    };
    let info = url.info_at(label, first, url.redis_settings().set_db(db))?;
    let HostListUrl {
        scheme,
        tls,
        insecure: insecure_fragment,
        username,
        password,
        ..
    } = url;

    let redacted = redact(
        &scheme,
        username.as_deref(),
        password.is_some(),
        &sentinels,
        &service,
        db,
        insecure_fragment,
    );
    Ok(Endpoint {
        info,
        redacted,
        tls,
        insecure_fragment,
        sentinel: Some(SentinelSpec {
            sentinels,
            service,
            password: None,
        }),
        cluster: None,
    })
}

/// Gives the sentinel endpoints among `endpoints` the sentinels' password.
/// A password set for a configuration with no sentinel URL is an error: it
/// would otherwise be silently unused.
pub(crate) fn apply_password<const N: usize>(
    labels: &super::Labels,
    password: Option<&str>,
    endpoints: [Option<&mut Endpoint>; N],
) -> Result<(), Error> {
    let Some(password) = password.filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let mut used = false;
    for spec in endpoints
        .into_iter()
        .flatten()
        .filter_map(|e| e.sentinel.as_mut())
    {
        spec.password = Some(password.to_string());
        used = true;
    }
    if used {
        Ok(())
    } else {
        Err(Error::config(format!(
            "{}: is set but neither {} nor {} is a redis+sentinel:// URL",
            labels.sentinel_password, labels.url, labels.fallback_url
        )))
    }
}

pub(super) fn decode(label: &str, what: &str, raw: &str) -> Result<Option<String>, Error> {
    if raw.is_empty() {
        return Ok(None);
    }
    String::from_utf8(percent_decode(raw.as_bytes()))
        .map(Some)
        .map_err(|_| {
            Error::config(format!(
                "{label}: the {what} is not valid UTF-8 once percent-decoded"
            ))
        })
}

/// A comma-separated `host[:port]` list (`[v6]:port` accepted), each item
/// called `noun` (`"sentinel host"`, `"cluster seed"`) in the messages;
/// duplicates dropped. Shared with `redis+cluster://` URLs.
pub(super) fn parse_hosts(
    label: &str,
    hosts: &str,
    noun: &str,
    default_port: u16,
) -> Result<Vec<(String, u16)>, Error> {
    if hosts.is_empty() {
        return Err(Error::config(format!("{label}: no {noun}; {EXPECTED}")));
    }
    let mut out: Vec<(String, u16)> = Vec::new();
    for (i, item) in hosts.split(',').enumerate() {
        let n = i.saturating_add(1);
        if n > MAX_SENTINELS {
            return Err(Error::config(format!(
                "{label}: more than {MAX_SENTINELS} {noun}s"
            )));
        }
        if item.is_empty() {
            return Err(Error::config(format!(
                "{label}: {noun} #{n} is empty (two commas, or a trailing one)"
            )));
        }
        let (host, port) = if let Some(v6) = item.strip_prefix('[') {
            let Some((host, after)) = v6.split_once(']') else {
                return Err(Error::config(format!(
                    "{label}: {noun} #{n}: '[' without a closing ']'"
                )));
            };
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(Error::config(format!(
                    "{label}: {noun} #{n}: not an IPv6 address inside [...]"
                )));
            }
            let port = match after {
                "" => None,
                p => match p.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => {
                        return Err(Error::config(format!(
                            "{label}: {noun} #{n}: expected ':port' after ']'"
                        )))
                    }
                },
            };
            (host.to_string(), port)
        } else {
            match item.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (item.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(Error::config(format!(
                "{label}: {noun} #{n} is missing its host name"
            )));
        }
        if !host.contains(':')
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(Error::config(format!(
                "{label}: {noun} #{n}: a host name has letters, digits, '.', '-' and '_' only"
            )));
        }
        if host == "0.0.0.0" || host == "::" {
            return Err(Error::config(format!(
                "{label}: {noun} #{n}: cannot connect to the wildcard address {host}; name a host"
            )));
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => {
                    let shown: String = p.chars().take(16).collect();
                    return Err(Error::config(format!(
                        "{label}: {noun} #{n}: port must be from 1 to 65535, got '{shown}'"
                    )));
                }
            },
        };
        if !out.iter().any(|(h, p)| *h == host && *p == port) {
            out.push((host, port));
        }
    }
    Ok(out)
}

fn parse_path(label: &str, path: &str) -> Result<(String, i64), Error> {
    let mut parts = path.split('/');
    let service = parts.next().unwrap_or("");
    if service.is_empty() {
        return Err(Error::config(format!(
            "{label}: missing the service name (the master's name in sentinel.conf) after the hosts; {EXPECTED}"
        )));
    }
    if service.len() > MAX_SERVICE {
        return Err(Error::config(format!(
            "{label}: the service name is longer than {MAX_SERVICE} bytes"
        )));
    }
    let service = decode(label, "service name", service)?.unwrap_or_default();
    let db = match parts.next() {
        None | Some("") => 0,
        Some(db) => match db.parse::<i64>() {
            Ok(db) if (0..=MAX_DB).contains(&db) => db,
            _ => {
                let shown: String = db.chars().take(32).collect();
                return Err(Error::config(format!(
                    "{label}: database must be a number from 0 to {MAX_DB}, got '{shown}'"
                )));
            }
        },
    };
    match parts.next() {
        None | Some("") if parts.next().is_none() => Ok((service, db)),
        _ => Err(Error::config(format!(
            "{label}: too many path segments: only /service_name[/db] follows the hosts"
        ))),
    }
}

fn redact(
    scheme: &str,
    username: Option<&str>,
    has_password: bool,
    sentinels: &[(String, u16)],
    service: &str,
    db: i64,
    insecure: bool,
) -> String {
    let mut s = super::url::redacted_prefix(scheme, username, has_password);
    let hosts: Vec<String> = sentinels.iter().map(|(h, p)| host_port(h, *p)).collect();
    s.push_str(&hosts.join(","));
    s.push('/');
    s.push_str(service);
    if db != 0 {
        s.push_str(&format!("/{db}"));
    }
    if insecure {
        s.push_str("#insecure");
    }
    s
}

/// `host:port`, or `[v6]:port`.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, ErrorKind};

    use crate::config::url::tests::{err, ok};

    fn spec(e: &Endpoint) -> &SentinelSpec {
        match &e.sentinel {
            Some(s) => s,
            None => panic!("{e} is not a sentinel endpoint"),
        }
    }

    #[test]
    fn forms() {
        let e = ok("redis+sentinel://h1,h2:26380,[::1]:5000/mymaster");
        let s = spec(&e);
        assert_eq!(
            s.sentinels,
            vec![
                ("h1".to_string(), 26379),
                ("h2".to_string(), 26380),
                ("::1".to_string(), 5000)
            ]
        );
        assert_eq!(s.service, "mymaster");
        assert!(!e.tls);
        assert_eq!(e.info.redis_settings().db(), 0);
        assert_eq!(
            e.redacted,
            "redis+sentinel://h1:26379,h2:26380,[::1]:5000/mymaster"
        );

        let e = ok("redis+sentinel://alice:s%40cret@127.0.0.1/svc/3");
        assert_eq!(e.info.redis_settings().username(), Some("alice"));
        assert_eq!(e.info.redis_settings().password(), Some("s@cret"));
        assert_eq!(e.info.redis_settings().db(), 3);
        assert_eq!(
            e.redacted,
            "redis+sentinel://alice:***@127.0.0.1:26379/svc/3"
        );
        assert!(!format!("{e:?}").contains("cret"));

        let e = ok("redis+sentinel://:pw@h/svc/");
        assert_eq!(e.info.redis_settings().password(), Some("pw"));
        assert_eq!(e.redacted, "redis+sentinel://:***@h:26379/svc");

        let e = ok("REDISS+SENTINEL://h:1/svc#insecure");
        assert!(e.tls && e.insecure_fragment);
        // Duplicates collapse.
        assert_eq!(spec(&ok("redis+sentinel://h,h:26379/s")).sentinels.len(), 1);
    }

    #[test]
    fn rejections_say_what_was_wrong() {
        assert!(err("redis+sentinel://").contains("no sentinel host"));
        assert!(err("redis+sentinel:///svc").contains("no sentinel host"));
        assert!(err("redis+sentinel://h").contains("missing the service name"));
        assert!(err("redis+sentinel://h/").contains("missing the service name"));
        assert!(err("redis+sentinel://h,,i/s").contains("host #2 is empty"));
        assert!(err("redis+sentinel://h,/s").contains("host #2 is empty"));
        assert!(err("redis+sentinel://h:0/s").contains("port must be from 1 to 65535"));
        assert!(err("redis+sentinel://h:99999/s").contains("got '99999'"));
        assert!(err("redis+sentinel://h:x/s").contains("got 'x'"));
        assert!(err("redis+sentinel://:1/s").contains("missing its host name"));
        assert!(err("redis+sentinel://[::1/s").contains("closing ']'"));
        assert!(err("redis+sentinel://[nope]:1/s").contains("not an IPv6"));
        assert!(err("redis+sentinel://[::1]x/s").contains("':port' after ']'"));
        assert!(err("redis+sentinel://h%20/s").contains("letters, digits"));
        assert!(err("redis+sentinel://0.0.0.0/s").contains("wildcard"));
        assert!(err("redis+sentinel://h/s/99999").contains("database must be a number"));
        assert!(err("redis+sentinel://h/s/x").contains("got 'x'"));
        assert!(err("redis+sentinel://h/s/0/extra").contains("too many path segments"));
        assert!(err("redis+sentinel://h/s?x=1").contains("query parameters"));
        assert!(err("redis+sentinel://h/s#insecure").contains("only applies to rediss"));
        assert!(err("rediss+sentinel://h/s#x").contains("unknown URL fragment"));
        assert!(err("redis+sentinel://h /s").contains("spaces"));
        assert!(err("redis+sentinel://u:%FF@h/s").contains("password is not valid UTF-8"));
        let many: Vec<String> = (0..=MAX_SENTINELS).map(|i| format!("h{i}")).collect();
        assert!(err(&format!("redis+sentinel://{}/s", many.join(","))).contains("more than"));
    }

    #[test]
    fn errors_never_echo_the_password() {
        for raw in [
            "redis+sentinel://u:topsecret@h:0/s",
            "redis+sentinel://u:topsecret@h/s/x",
            "redis+sentinel://u:topsecret@/s",
            "redis+sentinel://u:topsecret@h",
            "redis+sentinel://u:topsecret@h/s#x",
            "redis+sentinel://u:topsecret@h,,/s",
        ] {
            let msg = match Endpoint::parse("REDIS_URL", raw) {
                Ok(_) => panic!("{raw} should be rejected"),
                Err(e) => format!("{e} {e:?}"),
            };
            assert!(!msg.contains("topsecret"), "{msg}");
        }
    }

    proptest::proptest! {
        /// Whatever follows the scheme: a sentinel endpoint or a config
        /// error naming the label, never a panic, never the password.
        #[test]
        fn any_input_parses_or_is_a_config_error(rest in ".{0,80}", pw in "[a-z]{8}") {
            for raw in [
                format!("redis+sentinel://{rest}"),
                format!("rediss+sentinel://u:{pw}@{rest}"),
                format!("redis+sentinel://:{pw}@h1,{rest}"),
            ] {
                match Endpoint::parse("REDIS_URL", &raw) {
                    Ok(e) => {
                        proptest::prop_assert!(e.sentinel.is_some());
                        proptest::prop_assert!(!e.redacted.contains(&pw));
                    }
                    Err(e) => {
                        proptest::prop_assert_eq!(e.kind(), ErrorKind::Config);
                        let msg = e.to_string();
                        proptest::prop_assert!(msg.starts_with("REDIS_URL: "));
                        proptest::prop_assert!(!msg.contains(&pw));
                    }
                }
            }
        }
    }

    #[test]
    fn call_bound_counts_discovery_and_the_switch_invalidation() {
        let ms = std::time::Duration::from_millis;
        let build = |url: &str| match Config::builder(url)
            .connect_timeout(ms(100))
            .socket_timeout(ms(200))
            .checkout_timeout(ms(300))
            .max_retries(0)
            .build()
        {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let plain = build("redis://h:6379").call_bound();
        let sentinel = build("redis+sentinel://h/m").call_bound();
        assert_eq!(sentinel, plain + ms(100) + ms(200));
    }

    #[test]
    fn builder_and_env_accept_it_and_the_sentinel_password_stays_secret() {
        let c = match Config::builder("redis+sentinel://:datapw@h1,h2/mymaster")
            .sentinel_password("sentinelpw")
            .build()
        {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            c.url(),
            Some("redis+sentinel://:***@h1:26379,h2:26379/mymaster")
        );
        let shown = format!("{c:?} {c}");
        assert!(
            !shown.contains("datapw") && !shown.contains("sentinelpw"),
            "{shown}"
        );
        let s = c.primary.as_ref().and_then(|e| e.sentinel.as_ref());
        assert_eq!(s.and_then(|s| s.password.as_deref()), Some("sentinelpw"));

        let env = |name: &str| match name {
            "REDIS_URL" => Some("redis+sentinel://h/a".to_string()),
            "REDIS_FALLBACK_URL" => Some("redis+sentinel://g/b".to_string()),
            "REDIS_SENTINEL_PASSWORD" => Some("envsentinelpw".to_string()),
            _ => None,
        };
        let c = match Config::from_env_with(env) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        for e in [&c.primary, &c.secondary] {
            let s = e.as_ref().and_then(|e| e.sentinel.as_ref());
            assert_eq!(s.and_then(|s| s.password.as_deref()), Some("envsentinelpw"));
        }
        assert!(!format!("{c:?} {c}").contains("envsentinelpw"));

        let env = |name: &str| (name == "REDIS_URL").then(|| "redis+sentinel://h".to_string());
        match Config::from_env_with(env) {
            Ok(c) => panic!("built {c:?}"),
            Err(e) => assert!(
                e.to_string().starts_with("REDIS_URL: missing the service"),
                "{e}"
            ),
        }
    }
}
