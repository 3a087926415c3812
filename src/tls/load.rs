//! Reads and checks the certificate files, and the platform's trust store,
//! once per config.

use crate::log_fields::{log_fields, Fields};
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use crate::config::{Labels, TlsOptions};
use crate::error::Error;

/// Larger files are refused: a CA bundle is a few hundred KiB.
const MAX_PEM_FILE: u64 = 16 << 20;

/// The parsed material, as PEM that redis-rs parses once more (at config
/// time) into its own types.
pub(crate) struct Material {
    root_pem: Option<Vec<u8>>,
    client: Option<redis::ClientTlsConfig>,
    origin: String,
}

impl Material {
    /// Loads the files named in `opts`; with `need_roots` and no CA file,
    /// also the platform's trust store.
    pub(crate) fn load(
        opts: &TlsOptions,
        labels: &Labels,
        need_roots: bool,
    ) -> Result<Material, Error> {
        let mut root_pem = None;
        let mut origin = String::new();
        if let Some(path) = &opts.ca_file {
            let bytes = read(labels.tls_ca_file, path)?;
            let certs = certificates(labels.tls_ca_file, path, &bytes)?;
            let mut store = RootCertStore::empty();
            for cert in certs {
                store.add(cert).map_err(|e| {
                    Error::config(format!(
                        "{}: {} holds a certificate that cannot be a trust anchor ({e})",
                        labels.tls_ca_file,
                        shown(path)
                    ))
                })?;
            }
            origin = format!("{} ({} certificates)", shown(path), store.len());
            root_pem = Some(bytes);
        } else if need_roots && !opts.danger_accept_invalid_certs {
            let (pem, count) = platform_roots();
            origin = if count == 0 {
                log_fields!(
                    log::Level::Warn,
                    Fields::new("config").error("tls", "no platform CA certificates found");
                    "no platform CA certificates found (install ca-certificates or set REDIS_TLS_CA_FILE); verifying rediss:// servers against the Mozilla roots compiled into this build"
                );
                "the compiled-in Mozilla roots".to_string()
            } else {
                format!("the platform trust store ({count} certificates)")
            };
            root_pem = pem;
        }

        let client = match (&opts.cert_file, &opts.key_file) {
            (Some(cert_path), Some(key_path)) => {
                let cert_pem = read(labels.tls_cert_file, cert_path)?;
                let chain = certificates(labels.tls_cert_file, cert_path, &cert_pem)?;
                let key_pem = read(labels.tls_key_file, key_path)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
                    pem::Error::NoItemsFound => Error::config(format!(
                        "{}: no private key found in {}",
                        labels.tls_key_file,
                        shown(key_path)
                    )),
                    other => not_pem(labels.tls_key_file, key_path, &other),
                })?;
                check_key_pair(labels, key_path, chain, key)?;
                Some(redis::ClientTlsConfig {
                    client_cert: cert_pem,
                    client_key: key_pem,
                })
            }
            _ => None,
        };
        Ok(Material {
            root_pem,
            client,
            origin,
        })
    }

    pub(crate) fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self.client.clone(),
            root_cert: self.root_pem.clone(),
        }
    }

    /// Where the roots came from, for a DEBUG line.
    pub(crate) fn roots_origin(&self) -> &str {
        &self.origin
    }
}

/// Makes sure rustls has a process-wide crypto provider, so that redis-rs'
/// `ClientConfig::builder()` cannot panic even when the application also
/// links rustls with another provider. An application that installed its
/// own provider first keeps it.
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only when another thread installed one first: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

fn read(label: &str, path: &Path) -> Result<Vec<u8>, Error> {
    let shown = shown(path);
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::config(format!("{label}: {shown} is missing (no such file)"))
        }
        _ => Error::config(format!("{label}: cannot read {shown} ({e})")).with_source(e),
    })?;
    // Not a FIFO or a device: reading one could block or never end.
    if !meta.is_file() {
        return Err(Error::config(format!(
            "{label}: {shown} is not a regular file; expected a PEM file"
        )));
    }
    if meta.len() > MAX_PEM_FILE {
        return Err(Error::config(format!(
            "{label}: {shown} is larger than {} MiB; expected a PEM file",
            MAX_PEM_FILE >> 20
        )));
    }
    let read_err = |e: std::io::Error| {
        Error::config(format!("{label}: cannot read {shown} ({e})")).with_source(e)
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    // Bounded even if the file grows between the two calls.
    file.take(MAX_PEM_FILE)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    Ok(bytes)
}

/// The path for a message. A URL pasted into a file variable by mistake
/// may hold a password: show it as `***`.
pub(crate) fn shown(path: &Path) -> String {
    let text = path.display().to_string();
    match url::Url::parse(&text) {
        Ok(url) => match url.password() {
            Some(pw) if !pw.is_empty() => text.replace(pw, "***"),
            _ => text,
        },
        Err(_) => text,
    }
}

fn certificates(
    label: &str,
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(label, path, &e))?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "{label}: no certificate found in {} (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            shown(path)
        )));
    }
    Ok(certs)
}

fn not_pem(label: &str, path: &Path, e: &pem::Error) -> Error {
    Error::config(format!("{label}: {} is not valid PEM ({e})", shown(path)))
}

/// Builds a client config once with the pair, so that a key of an
/// unsupported type or one that does not match the certificate fails here
/// rather than on every connect.
fn check_key_pair(
    labels: &Labels,
    key_path: &Path,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<(), Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS setup failed: {e}")))?;
    builder
        .with_root_certificates(RootCertStore::empty())
        .with_client_auth_cert(chain, key)
        .map(|_| ())
        .map_err(|e| {
            Error::config(format!(
                "{}: {} cannot be used with the client certificate in {} ({e})",
                labels.tls_key_file,
                shown(key_path),
                labels.tls_cert_file
            ))
        })
}

/// The platform's trust store as one PEM bundle, keeping only certificates
/// rustls accepts as trust anchors (stores often hold a few it does not;
/// redis-rs would otherwise reject the whole bundle). `None` when empty.
///
/// Loaded once per process and shared by every config built after: the
/// load reads the whole store from disk (milliseconds), and the store does
/// not change under a running process often enough to pay that per client.
fn platform_roots() -> (Option<Vec<u8>>, usize) {
    static ROOTS: std::sync::OnceLock<(Option<Vec<u8>>, usize)> = std::sync::OnceLock::new();
    ROOTS.get_or_init(load_platform_roots).clone()
}

fn load_platform_roots() -> (Option<Vec<u8>>, usize) {
    let result = rustls_native_certs::load_native_certs();
    for e in &result.errors {
        log::debug!("platform trust store: {e}");
    }
    let mut out = String::new();
    let mut count = 0;
    for cert in result.certs {
        if RootCertStore::empty().add(cert.clone()).is_ok() {
            pem_encode(&cert, &mut out);
            count += 1;
        }
    }
    if count == 0 {
        (None, 0)
    } else {
        (Some(out.into_bytes()), count)
    }
}

/// One `CERTIFICATE` PEM block (RFC 7468: base64, 64 columns).
pub(crate) fn pem_encode(der: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        let _ = writeln!(out, "{line}");
        rest = tail;
    }
    out.push_str("-----END CERTIFICATE-----\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_are_urls_hide_their_password() {
        assert_eq!(
            shown(Path::new("rediss://u:s3cr3tpw@host:6380")),
            "rediss://u:***@host:6380"
        );
        assert_eq!(shown(Path::new("/etc/ca.pem")), "/etc/ca.pem");
    }

    #[test]
    fn pem_encoding_round_trips() {
        for len in [0usize, 1, 2, 3, 4, 47, 48, 49, 100, 1000] {
            let der: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut text = String::new();
            pem_encode(&der, &mut text);
            assert!(text.lines().all(|l| l.len() <= 64), "{text}");
            let parsed: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(text.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap_or_default();
            if len == 0 {
                continue;
            }
            assert_eq!(parsed.len(), 1, "len {len}");
            assert_eq!(parsed[0].as_ref(), der.as_slice(), "len {len}");
        }
    }

    #[test]
    fn platform_roots_are_loaded_once_as_pem() {
        let (pem, count) = platform_roots();
        assert_eq!(platform_roots(), (pem.clone(), count));
        // The test machines have Debian's ca-certificates; an empty store
        // would mean the fallback path, which is also valid.
        if let Some(pem) = pem {
            let parsed = CertificateDer::pem_slice_iter(&pem).count();
            assert_eq!(parsed, count);
            assert!(count > 10, "{count}");
        }
    }
}
