//! `fanout check-config --probe`: connect to the configured Redis as a node would (TLS and
//! credentials included) and report what a node needs from it. Not used by a running node.

use super::library;
use super::timing::COMMAND_TIMEOUT;
use super::tls::{install_tls_provider, tls_hint};
use crate::config::RedisConfig;

/// What `fanout check-config --probe` found on the configured Redis.
#[derive(Debug)]
pub struct ProbeReport {
    pub version: String,
    /// Whether the `fanout` function library is loaded (a node loads it when it starts).
    pub library_loaded: bool,
}

/// Connects to Redis as a node would (TLS and credentials included) and checks what a node
/// needs: a reply to PING, Redis 7 or later (functions), and whether the library is there.
/// The error says what failed, without the URL's password.
pub async fn probe(config: &RedisConfig) -> Result<ProbeReport, String> {
    install_tls_provider(config);
    let client = config
        .client()
        .map_err(|e| format!("invalid redis_url ({:?})", e.kind()))?;
    let failed = |step: &str, e: ::redis::RedisError| {
        let e = e.to_string();
        match tls_hint(&e) {
            Some(hint) => format!("{step}: {e} ({hint})"),
            None => format!("{step}: {e}"),
        }
    };
    let connect = client.get_multiplexed_async_connection();
    let conn = tokio::time::timeout(COMMAND_TIMEOUT, connect)
        .await
        .map_err(|_| "connect: timed out".to_owned())?
        .map_err(|e| failed("connect", e))?;
    let run = |cmd: ::redis::Cmd| {
        let mut conn = conn.clone();
        async move {
            tokio::time::timeout(
                COMMAND_TIMEOUT,
                cmd.query_async::<::redis::Value>(&mut conn),
            )
            .await
            .map_err(|_| ::redis::RedisError::from((::redis::ErrorKind::Io, "timed out")))?
        }
    };
    run(::redis::cmd("PING"))
        .await
        .map_err(|e| failed("PING", e))?;
    let info: String = match run({
        let mut c = ::redis::cmd("INFO");
        c.arg("server");
        c
    })
    .await
    .map_err(|e| failed("INFO server", e))?
    {
        ::redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        ::redis::Value::VerbatimString { text, .. } => text,
        other => format!("{other:?}"),
    };
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 7 {
        return Err(format!(
            "Redis {version}: fanout needs Redis 7 or later (functions, FCALL)"
        ));
    }
    let libraries = run({
        let mut c = ::redis::cmd("FUNCTION");
        c.arg("LIST").arg("LIBRARYNAME").arg(library::NAME);
        c
    })
    .await
    .map_err(|e| failed("FUNCTION LIST", e))?;
    let library_loaded = matches!(&libraries, ::redis::Value::Array(l) if !l.is_empty());
    Ok(ProbeReport {
        version,
        library_loaded,
    })
}
