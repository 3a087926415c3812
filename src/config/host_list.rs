//! What sentinel and cluster URLs share:
//! `scheme://[[username]:password@]host1[:port1][,host2[:port2]…][/path][#insecure]`.
//!
//! The `url` crate cannot parse a host list, so these are parsed by hand.
//! This module splits such a URL and checks the parts both kinds treat
//! alike: the scheme, the `#insecure` fragment, no query, the percent-encoded
//! user and password. It also builds the connection settings from the first
//! host, which is only a placeholder until discovery names the real
//! address. Each kind parses its own host list (its default port and its
//! word for a host) and its path. As for every URL, each rejection names
//! what is wrong and never echoes the password.

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use super::sentinel::decode;
use crate::error::Error;

/// One kind of host-list URL.
pub(crate) struct Kind {
    /// The plain scheme, e.g. `redis+cluster`.
    pub(crate) plain: &'static str,
    /// The TLS scheme, e.g. `rediss+cluster`.
    pub(crate) tls: &'static str,
    /// `cluster` or `sentinel`, as in "not a cluster URL".
    pub(crate) name: &'static str,
    /// The accepted forms, appended to the first errors.
    pub(crate) expected: &'static str,
}

/// A host-list URL split into its parts.
pub(crate) struct HostListUrl<'a> {
    /// The scheme, lower-case.
    pub(crate) scheme: String,
    pub(crate) tls: bool,
    /// `#insecure` was given (TLS schemes only).
    pub(crate) insecure: bool,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    /// The host list as written, for the kind to parse.
    pub(crate) hosts: &'a str,
    /// What follows the first `/` after the hosts (empty when none).
    pub(crate) path: &'a str,
}

impl HostListUrl<'_> {
    /// The user and password as the data nodes' settings.
    pub(crate) fn redis_settings(&self) -> RedisConnectionInfo {
        let mut redis = RedisConnectionInfo::default();
        if let Some(user) = &self.username {
            redis = redis.set_username(user);
        }
        if let Some(pass) = &self.password {
            redis = redis.set_password(pass);
        }
        redis
    }

    /// Connection settings with `(host, port)` as the address and `redis`
    /// as the node settings: a template whose address discovery replaces.
    pub(crate) fn info_at(
        &self,
        label: &str,
        (host, port): (String, u16),
        redis: RedisConnectionInfo,
    ) -> Result<ConnectionInfo, Error> {
        let addr = if self.tls {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: self.insecure,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host, port)
        };
        Ok(addr
            .into_connection_info()
            .map_err(|e| Error::config(format!("{label}: {e}")))?
            .set_redis_settings(redis))
    }
}

/// Splits `raw`, a URL of `kind`; `label` (a field or variable name)
/// starts every error message.
pub(crate) fn split<'a>(label: &str, raw: &'a str, kind: &Kind) -> Result<HostListUrl<'a>, Error> {
    let raw = raw.trim();
    let err = |what: &str| Error::config(format!("{label}: {what}; {}", kind.expected));
    if raw.chars().any(|c| c.is_control() || c == ' ') {
        return Err(err("URL contains spaces or control characters"));
    }
    let not_this_kind = || err(&format!("not a {} URL", kind.name));
    let Some((scheme, rest)) = raw.split_once("://") else {
        return Err(not_this_kind());
    };
    let scheme = scheme.to_ascii_lowercase();
    let tls = if scheme == kind.plain {
        false
    } else if scheme == kind.tls {
        true
    } else {
        return Err(not_this_kind());
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    let tls_form = format!("{}://", kind.tls);
    let insecure = super::url::insecure_fragment(label, fragment, tls, &tls_form)?;
    if rest.contains('?') {
        return Err(Error::config(format!(
            "{label}: query parameters are not supported; set options through the builder or environment"
        )));
    }
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, p),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, pass) = match u.split_once(':') {
                Some((user, pass)) => (user, Some(pass)),
                None => (u, None),
            };
            let user = decode(label, "username", user)?;
            let pass = match pass {
                Some(p) => decode(label, "password", p)?,
                None => None,
            };
            (user, pass)
        }
    };
    Ok(HostListUrl {
        scheme,
        tls,
        insecure,
        username,
        password,
        hosts,
        path,
    })
}
