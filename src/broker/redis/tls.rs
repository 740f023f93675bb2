//! TLS to Redis (`rediss://`): the process-wide crypto provider, and what to tell an
//! operator when a handshake fails.

use crate::config::RedisConfig;

pub fn install_tls_provider(config: &RedisConfig) {
    if config.tls.is_some() {
        // rustls needs one process-wide crypto provider; another one installed first (by
        // an embedding program) is as good, so "already installed" is not an error.
        let _ = ::rustls::crypto::ring::default_provider().install_default();
    }
}

/// Logs that `what` failed (a connection's index when there are several), naming the cause
/// and its fix when the TLS handshake is what failed.
pub fn warn_failed(what: &str, connection: Option<usize>, error: &str) {
    match tls_hint(error) {
        Some(hint) => {
            tracing::warn!(
                connection,
                error,
                hint,
                "{what} failed in the TLS handshake"
            )
        }
        None => tracing::warn!(connection, error, "{what} failed"),
    }
}

/// What to check when connecting to Redis failed in the TLS handshake, for the log line that
/// reports it; `None` for other failures. rustls names the cause (`invalid peer certificate:
/// UnknownIssuer`, `received fatal alert: CertificateRequired`) but not what to change.
pub fn tls_hint(error: &str) -> Option<&'static str> {
    if error.contains("invalid peer certificate") {
        Some(
            "the server's certificate is not signed by redis_tls_ca_file (or, without one, by a public root), has expired, or does not name the host of redis_url",
        )
    } else if error.contains("CertificateRequired") {
        Some(
            "the server requires a client certificate: set redis_tls_cert_file and redis_tls_key_file",
        )
    } else if error.contains("received fatal alert") {
        Some(
            "the server refused the TLS handshake: check the client certificate (redis_tls_cert_file) is signed by a CA the server trusts, and the TLS versions it accepts",
        )
    } else if error.contains("corrupt message") || error.contains("InvalidContentType") {
        Some("the server does not speak TLS on this port: use redis:// or the server's TLS port")
    } else {
        None
    }
}
