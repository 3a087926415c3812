//! TLS for `rediss://`, as a config-time transformation of the endpoints.
//!
//! When a [`Config`](crate::Config) is built, the CA bundle and the client
//! certificate and key are read and parsed **once** (the platform's trust
//! store, used without a bundle, once per process), and attached to each TLS endpoint's
//! `redis::ConnectionInfo`. The pool then connects with redis-rs' plain
//! sync `connect` and needs no TLS code of its own.
//!
//! What a connect costs: redis-rs builds a fresh `rustls::ClientConfig` per
//! connect from the attached roots (an in-memory copy of the parsed
//! certificates; no disk reads, because the crate enables
//! `redis/tls-rustls-webpki-roots`, which replaces redis-rs' per-connect
//! `load_native_certs()`), then one full TLS handshake.
//!
//! Rules kept here:
//! - verification is on unless `danger_accept_invalid_certs(true)`; the
//!   `#insecure` URL fragment is refused without it; one WARN per config;
//! - a `rediss://` endpoint stays TLS; a TLS primary with a plain secondary
//!   needs `allow_tls_downgrade(true)` (one WARN per config);
//! - without the `tls` feature, `rediss://` and every TLS option are a
//!   `Config` error at build time.

use crate::config::{Endpoint, Labels, TlsOptions};
use crate::error::Error;
use crate::log_fields::{log_fields, Fields};

#[cfg(feature = "tls")]
mod classify;
#[cfg(feature = "tls")]
mod load;
#[cfg(all(test, feature = "tls"))]
pub(crate) mod test_certs;

#[cfg(feature = "tls")]
pub(crate) use classify::classify;

/// Classifies a failed connect to `endpoint` (nothing was sent, so
/// `may_have_executed` is false). On a `rediss://` endpoint a reset or close
/// during the handshake is [`ErrorKind::Tls`](crate::ErrorKind::Tls),
/// transient and counting against the breaker. The pool's connect path
/// calls this instead of `Error::from_redis`.
pub(crate) fn connect_error(err: redis::RedisError, tls: bool) -> Error {
    #[cfg(feature = "tls")]
    return classify::connect_error(err, tls);
    #[cfg(not(feature = "tls"))]
    {
        let _ = tls;
        Error::from_redis(err).with_may_have_executed(false)
    }
}

/// Checks the TLS options against the endpoints and, with the `tls`
/// feature, loads the certificates once and attaches them to every
/// `rediss://` endpoint.
pub(crate) fn apply(
    opts: &TlsOptions,
    labels: &Labels,
    primary: Option<&mut Endpoint>,
    secondary: Option<&mut Endpoint>,
) -> Result<(), Error> {
    match (&opts.cert_file, &opts.key_file) {
        (Some(_), None) => {
            return Err(Error::config(format!(
                "{}: a client certificate needs its private key; set {} as well",
                labels.tls_cert_file, labels.tls_key_file
            )))
        }
        (None, Some(_)) => {
            return Err(Error::config(format!(
                "{}: a private key needs its client certificate; set {} as well",
                labels.tls_key_file, labels.tls_cert_file
            )))
        }
        _ => {}
    }
    let endpoints: Vec<(&str, &mut Endpoint)> =
        [(labels.url, primary), (labels.fallback_url, secondary)]
            .into_iter()
            .filter_map(|(label, e)| e.map(|e| (label, e)))
            .collect();

    for (label, e) in &endpoints {
        if e.insecure_fragment && !opts.danger_accept_invalid_certs {
            return Err(Error::config(format!(
                "{label}: #insecure turns off certificate verification and is accepted only with danger_accept_invalid_certs(true)"
            )));
        }
    }
    if let [(_, p), (label, s)] = endpoints.as_slice() {
        if p.tls && !s.tls {
            if !opts.allow_tls_downgrade {
                return Err(Error::config(format!(
                    "{label}: the primary uses rediss:// but the secondary is plain redis://, so a failover would send traffic unencrypted; use rediss:// or allow_tls_downgrade(true)"
                )));
            }
            log_fields!(
                log::Level::Warn,
                Fields::new("config").at("secondary", "none");
                "TLS downgrade allowed: a failover from {} goes to {} without TLS",
                p.redacted,
                s.redacted
            );
        }
    }
    attach(opts, labels, endpoints)
}

#[cfg(not(feature = "tls"))]
fn attach(
    opts: &TlsOptions,
    labels: &Labels,
    endpoints: Vec<(&str, &mut Endpoint)>,
) -> Result<(), Error> {
    const OFF: &str = "this build has the `tls` feature off; enable it to use TLS";
    for (label, e) in &endpoints {
        if e.tls {
            return Err(Error::config(format!(
                "{label}: rediss:// is not available: {OFF}"
            )));
        }
    }
    let given = [
        (labels.tls_ca_file, opts.ca_file.is_some()),
        (labels.tls_cert_file, opts.cert_file.is_some()),
        (
            "danger_accept_invalid_certs",
            opts.danger_accept_invalid_certs,
        ),
    ];
    match given.iter().find(|(_, set)| *set) {
        Some((label, _)) => Err(Error::config(format!("{label}: is set but {OFF}"))),
        None => Ok(()),
    }
}

#[cfg(feature = "tls")]
fn attach(
    opts: &TlsOptions,
    labels: &Labels,
    endpoints: Vec<(&str, &mut Endpoint)>,
) -> Result<(), Error> {
    let any_tls = endpoints.iter().any(|(_, e)| e.tls);
    // Files are checked even when no endpoint uses TLS: a wrong value is an
    // error while unused, as everywhere else in the config.
    let material = load::Material::load(opts, labels, any_tls)?;
    if !any_tls {
        return Ok(());
    }
    load::ensure_crypto_provider();
    let mut unverified = Vec::new();
    for (label, e) in endpoints {
        if !e.tls {
            continue;
        }
        let insecure = opts.danger_accept_invalid_certs;
        if let redis::ConnectionAddr::TcpTls { host, port, .. } = e.info.addr().clone() {
            e.info = e.info.clone().set_addr(redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                tls_params: None,
            });
        }
        let client = redis::Client::build_with_tls(e.info.clone(), material.certificates())
            .map_err(|err| {
                Error::config(format!(
                    "{label}: cannot set up TLS for {}: {err}",
                    e.redacted
                ))
            })?;
        e.info = client.get_connection_info().clone();
        if insecure {
            unverified.push(e.redacted.clone());
        } else {
            log::debug!(
                "TLS for {}: roots from {}",
                e.redacted,
                material.roots_origin()
            );
        }
    }
    if !unverified.is_empty() {
        // One line per config, however many endpoints it covers.
        log_fields!(
            log::Level::Warn,
            Fields::new("config");
            "TLS certificate verification is OFF for {} (danger_accept_invalid_certs): connections are encrypted but the server is not authenticated",
            unverified.join(" and ")
        );
    }
    Ok(())
}

#[cfg(all(test, not(feature = "tls")))]
mod tests {
    use crate::{Config, ErrorKind};

    #[test]
    fn without_the_feature_tls_is_a_config_error() {
        for b in [
            Config::builder("rediss://h:6380"),
            Config::builder("redis://h").fallback_url("rediss://s:6380"),
            Config::builder("redis://h").tls_ca_file("/ca.pem"),
            Config::builder("redis://h").danger_accept_invalid_certs(true),
        ] {
            match b.build() {
                Ok(c) => panic!("built {c:?}"),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Config);
                    assert!(e.to_string().contains("`tls` feature"), "{e}");
                }
            }
        }
    }
}
