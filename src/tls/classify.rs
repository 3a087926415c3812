//! Turns a rustls failure inside a `redis::RedisError` into an
//! [`ErrorKind::Tls`] error that says which failure it was.
//!
//! On a sync connect, rustls reports through the stream: an `io::Error` of
//! kind `InvalidData` whose payload is the `rustls::Error`, wrapped by
//! redis-rs in an `Arc<dyn Error>` (kind `Io`). Building a config can also
//! surface a bare `rustls::Error` (redis-rs kind `Client`). Both are found
//! by walking the source chain.
//!
//! Certificate problems are permanent and do not count against the
//! breaker: retrying, or failing fast, will not make a certificate verify.

use std::error::Error as StdError;
use std::io;

use rustls::{AlertDescription as A, CertificateError as C};

use crate::error::{Classified, Error, ErrorClass, ErrorKind};

/// `Some` when a rustls error is in `err`'s source chain.
pub(crate) fn classify(err: &redis::RedisError) -> Option<Classified> {
    find_rustls(err).map(describe)
}

/// Classifies a failed connect to `endpoint`. On a `rediss://` endpoint a
/// reset or close before the connection was set up happened during the
/// TLS handshake (or the setup commands that share its first write):
/// [`ErrorKind::Tls`], transient, counting against the breaker. Everything
/// else is [`Error::from_redis`] marked as not executed.
pub(crate) fn connect_error(err: redis::RedisError, tls: bool) -> Error {
    let reset = tls
        && find_rustls(&err).is_none()
        && matches!(
            io_kind(&err),
            Some(
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::BrokenPipe
            )
        );
    let e = Error::from_redis(err).with_may_have_executed(false);
    if !reset {
        return e;
    }
    Error::new(
        ErrorKind::Tls,
        ErrorClass::Transient,
        "connection reset during the TLS handshake".to_string(),
    )
    .with_counts_against_breaker(true)
    .with_may_have_executed(false)
    .with_source(e)
}

fn describe(e: &rustls::Error) -> Classified {
    use ErrorClass::Permanent;
    let (class, message) = match e {
        rustls::Error::InvalidCertificate(c) => (Permanent, certificate(c)),
        rustls::Error::AlertReceived(alert) => (Permanent, received(*alert)),
        rustls::Error::NoCertificatesPresented => (
            Permanent,
            "TLS handshake failed: the server presented no certificate".to_string(),
        ),
        rustls::Error::PeerIncompatible(p) => (
            Permanent,
            format!("TLS handshake failed: the server is incompatible ({p:?})"),
        ),
        rustls::Error::PeerMisbehaved(p) => (
            Permanent,
            format!("TLS handshake failed: the server misbehaved ({p:?})"),
        ),
        other => (Permanent, format!("TLS failure: {other}")),
    };
    Classified {
        kind: ErrorKind::Tls,
        class,
        counts_against_breaker: false,
        rate_limit: None,
        message,
    }
}

fn certificate(c: &C) -> String {
    let what = match c {
        C::UnknownIssuer => "server certificate signed by unknown CA".to_string(),
        C::NotValidForName => "server certificate not valid for the host name".to_string(),
        C::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "server certificate not valid for name {} (it names {})",
            server_name(expected),
            presented
                .iter()
                .map(|p| presented_name(p))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        C::Expired | C::ExpiredContext { .. } => "server certificate expired".to_string(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "server certificate not valid yet (check the clock)".to_string()
        }
        C::Revoked => "server certificate revoked".to_string(),
        C::BadSignature => "server certificate has a bad signature".to_string(),
        C::BadEncoding => "server certificate is malformed".to_string(),
        other => format!("server certificate rejected ({other:?})"),
    };
    format!("TLS verification failed: {what}")
}

fn server_name(name: &rustls::pki_types::ServerName<'_>) -> String {
    use rustls::pki_types::ServerName as N;
    match name {
        N::DnsName(d) => d.as_ref().to_string(),
        N::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// rustls renders the certificate's names as `DnsName("x")` /
/// `IpAddress(x)`; show just `x`.
fn presented_name(p: &str) -> &str {
    let p = p
        .strip_prefix("DnsName(")
        .or_else(|| p.strip_prefix("IpAddress("))
        .and_then(|p| p.strip_suffix(')'))
        .unwrap_or(p);
    p.trim_matches('"')
}

fn received(alert: A) -> String {
    match alert {
        A::CertificateRequired => {
            "TLS handshake failed: the server requires a client certificate (set tls_client_cert / REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE)".to_string()
        }
        A::BadCertificate
        | A::UnknownCA
        | A::CertificateUnknown
        | A::CertificateExpired
        | A::CertificateRevoked
        | A::UnsupportedCertificate
        | A::AccessDenied => format!(
            "TLS handshake failed: the server rejected the client certificate (alert {alert:?})"
        ),
        A::HandshakeFailure => "TLS handshake failed: the server aborted the handshake (alert HandshakeFailure; a missing client certificate or no common cipher)".to_string(),
        other => format!("TLS handshake failed: the server sent alert {other:?}"),
    }
}

/// The `rustls::Error` in `err`'s source chain, directly or as the
/// payload of an `io::Error`.
fn find_rustls(err: &redis::RedisError) -> Option<&rustls::Error> {
    let mut source: Option<&(dyn StdError + 'static)> = err.source();
    while let Some(s) = source {
        let s = match s.downcast_ref::<std::sync::Arc<dyn StdError + Send + Sync>>() {
            Some(inner) => inner.as_ref() as &(dyn StdError + 'static),
            None => s,
        };
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(r) = s
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(r);
        }
        source = s.source();
    }
    None
}

fn io_kind(err: &redis::RedisError) -> Option<io::ErrorKind> {
    let mut source: Option<&(dyn StdError + 'static)> = err.source();
    while let Some(s) = source {
        let s = match s.downcast_ref::<std::sync::Arc<dyn StdError + Send + Sync>>() {
            Some(inner) => inner.as_ref() as &(dyn StdError + 'static),
            None => s,
        };
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        source = s.source();
    }
    err.is_connection_dropped()
        .then_some(io::ErrorKind::UnexpectedEof)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(e: rustls::Error) -> redis::RedisError {
        io::Error::new(io::ErrorKind::InvalidData, e).into()
    }

    #[test]
    fn certificate_failures_are_permanent_tls_errors_that_do_not_count() {
        for (e, text) in [
            (
                rustls::Error::InvalidCertificate(C::UnknownIssuer),
                "signed by unknown CA",
            ),
            (
                rustls::Error::InvalidCertificate(C::NotValidForName),
                "not valid for the host name",
            ),
            (rustls::Error::InvalidCertificate(C::Expired), "expired"),
            (
                rustls::Error::AlertReceived(A::CertificateRequired),
                "requires a client certificate",
            ),
            (
                rustls::Error::AlertReceived(A::UnknownCA),
                "rejected the client certificate",
            ),
        ] {
            let err = Error::from_redis(wrapped(e));
            assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
            assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
            assert!(!err.counts_against_breaker(), "{err}");
            assert!(err.to_string().contains(text), "{err}");
        }
        // A bare rustls::Error (redis-rs kind Client) is found too.
        let err = Error::from_redis(rustls::Error::InvalidCertificate(C::UnknownIssuer).into());
        assert_eq!(err.kind(), ErrorKind::Tls);
    }

    #[test]
    fn plain_io_errors_are_untouched() {
        let err = Error::from_redis(io::Error::from(io::ErrorKind::InvalidData).into());
        assert_eq!(err.kind(), ErrorKind::Connection);
        let err = Error::from_redis(io::Error::other("not tls").into());
        assert_eq!(err.kind(), ErrorKind::Connection);
    }

    #[test]
    fn a_reset_while_connecting_to_a_tls_endpoint_is_a_transient_tls_error() {
        for kind in [io::ErrorKind::ConnectionReset, io::ErrorKind::UnexpectedEof] {
            let e = connect_error(io::Error::from(kind).into(), true);
            assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
            assert!(e.is_transient());
            assert!(e.counts_against_breaker());
            assert!(!e.may_have_executed());
            assert!(e.to_string().contains("during the TLS handshake"), "{e}");

            let e = connect_error(io::Error::from(kind).into(), false);
            assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
        }
        // A certificate failure on connect stays permanent.
        let e = connect_error(
            wrapped(rustls::Error::InvalidCertificate(C::UnknownIssuer)),
            true,
        );
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert!(!e.counts_against_breaker());
    }
}
