//! TLS to Redis (`rediss://`): the CA that the server's certificate is checked against, and the
//! optional client certificate, read and checked once when the configuration is.
//!
//! This file exists so that a wrong certificate file is a configuration problem that
//! `fanout check-config` reports (missing, not PEM, a key that does not fit its certificate),
//! instead of a handshake that fails again and again at run time. The files are read into
//! memory here: replacing them takes a restart. Certificate verification is never turned off:
//! a `rediss://…#insecure` URL is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The contents of a PEM file, with the path it came from (for messages; never the contents).
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

/// How a node talks TLS to Redis.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTls {
    /// The CA bundle the server's certificate must chain to; `None`: Mozilla's public roots,
    /// compiled in (webpki-roots), which the certificates of managed Redis services chain to.
    pub ca: Option<PemFile>,
    /// Certificate (chain) and private key presented to servers that require a client
    /// certificate (`tls-auth-clients yes`).
    pub client: Option<(PemFile, PemFile)>,
}

impl RedisTls {
    /// The certificates as the redis crate takes them.
    pub fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.pem.clone(),
                    client_key: key.pem.clone(),
                }),
            root_cert: self.ca.as_ref().map(|ca| ca.pem.clone()),
        }
    }

    /// One line for logs and `check-config`: what the server is checked against, and whether
    /// a client certificate is presented (paths only).
    pub fn describe(&self) -> String {
        let ca = match &self.ca {
            Some(ca) => format!("server certificate checked against {}", ca.path.display()),
            None => "server certificate checked against the built-in public roots (webpki-roots)"
                .to_owned(),
        };
        match &self.client {
            Some((cert, _)) => format!("TLS, {ca}, client certificate {}", cert.path.display()),
            None => format!("TLS, {ca}, no client certificate"),
        }
    }
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Reads a PEM file; `Err` is a problem ready to report.
pub(super) fn read(key: &str, path: &Path) -> Result<PemFile, String> {
    match std::fs::read(path) {
        Ok(pem) => Ok(PemFile {
            path: path.to_owned(),
            pem,
        }),
        Err(e) => Err(format!("{key} {}: cannot read: {e}", path.display())),
    }
}

/// Checks that a CA file holds at least one certificate usable as a trust anchor.
pub(super) fn check_ca(key: &str, ca: &PemFile) -> Result<(), String> {
    let at = || format!("{key} {}", ca.path.display());
    let certs = certificates(&ca.pem).map_err(|e| format!("{}: {e}", at()))?;
    let mut store = RootCertStore::empty();
    for cert in certs {
        store
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", at()))?;
    }
    Ok(())
}

/// Checks that a certificate file and a key file make a client identity rustls accepts: the
/// certificates parse (X.509 v3), the key parses, and the key belongs to the first certificate.
pub(super) fn check_client(cert: &PemFile, key: &PemFile) -> Result<(), String> {
    let chain = certificates(&cert.pem)
        .map_err(|e| format!("redis_tls_cert_file {}: {e}", cert.path.display()))?;
    // The parse error names what is wrong with the file, never its contents.
    let private_key = PrivateKeyDer::from_pem_slice(&key.pem).map_err(|e| {
        format!(
            "redis_tls_key_file {}: not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            key.path.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(RootCertStore::empty())
        .with_client_auth_cert(chain, private_key)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "redis_tls_cert_file {} and redis_tls_key_file {} are not a usable client certificate and key (a key of another certificate, or an X.509 v1 certificate): {e}",
                cert.path.display(),
                key.path.display()
            )
        })
}

/// The certificates of a PEM text; at least one.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}
