//! Test support: the real `fanout` binary on an ephemeral loopback port ([`gateway`]),
//! WebSocket and SSE clients ([`client`], [`sse`]), a `redis-server` of the test's own
//! ([`redis`]), proxies ([`proxy`]) and CPU pressure ([`pressure`]).
#![allow(dead_code, unused_imports)]

mod client;
mod control;
mod gateway;
mod pressure;
mod proxy;
mod redis_server;
mod sse;

pub use client::*;
pub use control::*;
pub use gateway::*;
pub use pressure::*;
pub use proxy::*;
pub use redis_server::*;
pub use sse::*;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An HS256 token for `sub` granting `channels`, expiring in `ttl_s` seconds (negative:
/// already expired).
pub fn token(sub: &str, channels: &[&str], ttl_s: i64) -> String {
    token_with(json!({
        "sub": sub,
        "exp": unix_now() + ttl_s,
        "channels": channels,
    }))
}

/// An HS256 token with exactly these claims, signed with the test secret.
pub fn token_with(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign token")
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `check` until it returns true, or panics with `what` after [`WAIT`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
