//! The TLS settings of [`Config`]: builder setters, getters and environment
//! variables. Loading the files and wiring them into the endpoints is
//! [`crate::tls`]'s job, done once when the config is built.

use std::path::{Path, PathBuf};

use super::{Config, ConfigBuilder};

/// TLS options as given (paths only; the files are read by `build`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsOptions {
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) cert_file: Option<PathBuf>,
    pub(crate) key_file: Option<PathBuf>,
    pub(crate) danger_accept_invalid_certs: bool,
    pub(crate) allow_tls_downgrade: bool,
}

impl ConfigBuilder {
    /// A PEM file of CA certificates that `rediss://` servers are verified
    /// against. It **replaces** the platform's trust store (a private CA
    /// should not widen, nor be widened by, the public roots). The file is
    /// read and checked once, by [`ConfigBuilder::build`]. Environment:
    /// `REDIS_TLS_CA_FILE`. Defaults to none: the platform's certificates.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.tls.ca_file = Some(path.into());
        self
    }

    /// A client certificate chain and its private key (both PEM) for
    /// servers that require mutual TLS (`tls-auth-clients yes`). Read and
    /// checked once, by [`ConfigBuilder::build`]. Environment:
    /// `REDIS_TLS_CERT_FILE` and `REDIS_TLS_KEY_FILE`. Defaults to none.
    pub fn tls_client_cert(
        mut self,
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> Self {
        self.config.tls.cert_file = Some(cert_path.into());
        self.config.tls.key_file = Some(key_path.into());
        self
    }

    /// Turns off certificate verification for `rediss://` endpoints: the
    /// connection is encrypted but the server is **not authenticated**, so
    /// anyone on the path can impersonate it. Meant for development against
    /// self-signed certificates. `build` logs one WARN per config when this
    /// is on. A URL's `#insecure` fragment is accepted only when this is
    /// `true`. There is deliberately no environment variable for it.
    /// Defaults to `false`.
    pub fn danger_accept_invalid_certs(mut self, v: bool) -> Self {
        self.config.tls.danger_accept_invalid_certs = v;
        self
    }

    /// Allows a `rediss://` primary with a plain `redis://` secondary, so
    /// that a failover sends traffic unencrypted. Without it that pair is a
    /// configuration error; with it `build` logs one WARN. Defaults to
    /// `false`.
    pub fn allow_tls_downgrade(mut self, v: bool) -> Self {
        self.config.tls.allow_tls_downgrade = v;
        self
    }
}

impl Config {
    /// The CA bundle that replaces the platform's roots, if one was given.
    pub fn tls_ca_file(&self) -> Option<&Path> {
        self.tls.ca_file.as_deref()
    }

    /// The client certificate and key files for mutual TLS, if given.
    pub fn tls_client_cert(&self) -> Option<(&Path, &Path)> {
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(c), Some(k)) => Some((c, k)),
            _ => None,
        }
    }

    /// `true` when certificate verification is off (see
    /// [`ConfigBuilder::danger_accept_invalid_certs`]).
    pub fn danger_accept_invalid_certs(&self) -> bool {
        self.tls.danger_accept_invalid_certs
    }

    /// `true` when a TLS primary may fail over to a plain secondary.
    pub fn allow_tls_downgrade(&self) -> bool {
        self.tls.allow_tls_downgrade
    }
}

/// Reads `REDIS_TLS_CA_FILE`, `REDIS_TLS_CERT_FILE` and `REDIS_TLS_KEY_FILE`
/// (already trimmed, empty = unset) into the builder. A certificate without
/// its key (or the reverse) is reported by `build`, naming the variable.
pub(crate) fn from_env(
    mut b: ConfigBuilder,
    get: impl Fn(&str) -> Option<String>,
) -> ConfigBuilder {
    if let Some(v) = get("REDIS_TLS_CA_FILE") {
        b.config.tls.ca_file = Some(PathBuf::from(v));
    }
    if let Some(v) = get("REDIS_TLS_CERT_FILE") {
        b.config.tls.cert_file = Some(PathBuf::from(v));
    }
    if let Some(v) = get("REDIS_TLS_KEY_FILE") {
        b.config.tls.key_file = Some(PathBuf::from(v));
    }
    b
}

#[cfg(all(test, feature = "tls"))]
// Test code: a failed setup should stop the test loudly.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::HashMap;

    use redis::ConnectionAddr;

    use crate::tls::test_certs::TestCerts;
    use crate::{Config, Error, ErrorKind};

    fn config_err(r: Result<Config, Error>) -> String {
        match r {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Config);
                e.to_string()
            }
        }
    }

    fn tls_params_attached(c: &Config) -> (bool, bool) {
        match c.primary.as_ref().map(|e| e.info.addr()) {
            Some(ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            }) => (*insecure, tls_params.is_some()),
            other => panic!("not a TLS address: {other:?}"),
        }
    }

    #[test]
    fn ca_file_and_client_cert_are_loaded_at_build_time() {
        let certs = TestCerts::new("cfg-ok").unwrap();
        let c = Config::builder("rediss://localhost:6380")
            .tls_ca_file(certs.path("ca.pem"))
            .tls_client_cert(certs.path("client.pem"), certs.path("client.key"))
            .build()
            .unwrap();
        assert_eq!(tls_params_attached(&c), (false, true));
        assert_eq!(c.tls_ca_file(), Some(certs.path("ca.pem").as_path()));
        assert!(c.tls_client_cert().is_some());
        // Paths only: no certificate or key material in Debug or Display.
        for text in [format!("{c:?}"), format!("{c}")] {
            assert!(!text.contains("BEGIN"), "{text}");
        }
        let key = std::fs::read_to_string(certs.path("client.key")).unwrap();
        let body = key.lines().nth(1).unwrap();
        assert!(!format!("{c:?}").contains(body));
    }

    #[test]
    fn platform_roots_are_the_default() {
        let c = Config::builder("rediss://localhost:6380").build().unwrap();
        let (insecure, _) = tls_params_attached(&c);
        assert!(!insecure);
        assert_eq!(c.tls_ca_file(), None);
    }

    #[test]
    fn bad_files_are_config_errors_naming_the_file() {
        let certs = TestCerts::new("cfg-bad").unwrap();
        let b = || Config::builder("rediss://localhost:6380");
        let missing = certs.path("nope.pem");
        let msg = config_err(b().tls_ca_file(&missing).build());
        assert!(msg.starts_with("tls_ca_file: "), "{msg}");
        assert!(msg.contains("nope.pem") && msg.contains("missing"), "{msg}");

        let garbage = certs
            .write("garbage.pem", "hello, not a certificate\n")
            .unwrap();
        let msg = config_err(b().tls_ca_file(&garbage).build());
        assert!(msg.contains("no certificate found in"), "{msg}");
        assert!(msg.contains("garbage.pem"), "{msg}");

        let broken = certs
            .write("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n")
            .unwrap();
        let msg = config_err(b().tls_ca_file(&broken).build());
        assert!(msg.contains("is not valid PEM"), "{msg}");

        // A directory (or FIFO, device) is refused before any read.
        let msg = config_err(b().tls_ca_file(&certs.dir).build());
        assert!(msg.contains("not a regular file"), "{msg}");

        // A key file that holds only a certificate.
        let msg = config_err(
            b().tls_client_cert(certs.path("client.pem"), certs.path("ca.pem"))
                .build(),
        );
        assert!(msg.starts_with("tls_client_key: "), "{msg}");
        assert!(msg.contains("no private key found in"), "{msg}");

        // A key that does not belong to the certificate.
        let msg = config_err(
            b().tls_client_cert(certs.path("client.pem"), certs.path("other.key"))
                .build(),
        );
        assert!(msg.starts_with("tls_client_key: "), "{msg}");

        // Checked even when no endpoint uses TLS.
        let msg = config_err(Config::builder("redis://h").tls_ca_file(&missing).build());
        assert!(msg.starts_with("tls_ca_file: "), "{msg}");
    }

    #[test]
    fn insecure_needs_the_explicit_builder_call() {
        let msg = config_err(Config::builder("rediss://h:6380#insecure").build());
        assert!(msg.contains("danger_accept_invalid_certs(true)"), "{msg}");
        let c = Config::builder("rediss://h:6380#insecure")
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        assert!(tls_params_attached(&c).0);
        let c = Config::builder("rediss://h:6380")
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        assert!(c.danger_accept_invalid_certs());
        assert!(tls_params_attached(&c).0);
    }

    #[test]
    fn a_tls_primary_is_not_downgraded_on_failover_unless_allowed() {
        let b = || Config::builder("rediss://primary:6380").fallback_url("redis://secondary:6379");
        let msg = config_err(b().build());
        assert!(msg.starts_with("fallback_url: "), "{msg}");
        assert!(msg.contains("allow_tls_downgrade(true)"), "{msg}");
        let c = b().allow_tls_downgrade(true).build().unwrap();
        assert!(c.allow_tls_downgrade());
        assert_eq!(c.fallback_url(), Some("redis://secondary:6379"));
        // TLS on both sides, or plain to TLS, needs nothing.
        Config::builder("rediss://p:6380")
            .fallback_url("rediss://s:6380")
            .build()
            .unwrap();
        Config::builder("redis://p")
            .fallback_url("rediss://s:6380")
            .build()
            .unwrap();
        // The secondary keeps its own TLS settings.
        let c = Config::builder("rediss://p:6380")
            .fallback_url("rediss://s:6380")
            .build()
            .unwrap();
        assert!(matches!(
            c.secondary.as_ref().map(|e| e.info.addr()),
            Some(ConnectionAddr::TcpTls {
                tls_params: Some(_),
                ..
            })
        ));
    }

    fn load(pairs: &[(&str, String)]) -> Result<Config, Error> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Config::from_env_with(|name| env.get(name).cloned())
    }

    #[test]
    fn environment_variables_set_unset_and_malformed() {
        let certs = TestCerts::new("cfg-env").unwrap();
        let p = |n: &str| certs.path(n).display().to_string();
        let url = ("REDIS_URL", "rediss://localhost:6380".to_string());

        // Unset: platform roots, no client certificate.
        let c = load(std::slice::from_ref(&url)).unwrap();
        assert_eq!(c.tls_ca_file(), None);
        assert_eq!(c.tls_client_cert(), None);

        // Set.
        let c = load(&[
            url.clone(),
            ("REDIS_TLS_CA_FILE", format!("  {}  ", p("ca.pem"))),
            ("REDIS_TLS_CERT_FILE", p("client.pem")),
            ("REDIS_TLS_KEY_FILE", p("client.key")),
        ])
        .unwrap();
        assert_eq!(c.tls_ca_file(), Some(certs.path("ca.pem").as_path()));
        assert_eq!(
            c.tls_client_cert(),
            Some((
                certs.path("client.pem").as_path(),
                certs.path("client.key").as_path()
            ))
        );

        // Malformed: errors name the variable.
        let msg = config_err(load(&[
            url.clone(),
            ("REDIS_TLS_CA_FILE", p("missing.pem")),
        ]));
        assert!(msg.starts_with("REDIS_TLS_CA_FILE: "), "{msg}");
        let msg = config_err(load(&[
            url.clone(),
            ("REDIS_TLS_CERT_FILE", p("client.pem")),
        ]));
        assert!(msg.starts_with("REDIS_TLS_CERT_FILE: "), "{msg}");
        assert!(msg.contains("REDIS_TLS_KEY_FILE"), "{msg}");
        let msg = config_err(load(&[
            url.clone(),
            ("REDIS_TLS_KEY_FILE", p("client.key")),
        ]));
        assert!(msg.starts_with("REDIS_TLS_KEY_FILE: "), "{msg}");
        let msg = config_err(load(&[
            url,
            ("REDIS_TLS_CERT_FILE", p("client.pem")),
            ("REDIS_TLS_KEY_FILE", p("ca.pem")),
        ]));
        assert!(msg.starts_with("REDIS_TLS_KEY_FILE: "), "{msg}");
    }
}
