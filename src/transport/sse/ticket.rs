//! SSE connect tickets: how a browser opens `/sse` without its token in the URL.
//!
//! `EventSource` cannot set headers, so before tickets the token went in the query string,
//! where proxies, CDNs and APM tools log it. Instead, `POST /sse/ticket` with the token in
//! `Authorization: Bearer` answers a ticket: a random name for that token, valid for
//! [`TICKET_TTL`] and good for one `GET /sse?ticket=...`. A ticket that ends up in a log is
//! useless: it was used, or expires within seconds. A token past a ticket is verified again
//! when the stream opens, exactly as if it had come with the request.
//!
//! Any node may redeem a ticket another issued (no stickiness): with Redis the token is kept
//! there (`Backchannel::put_once`, taken with `GETDEL`, so exactly one redemption succeeds
//! cluster-wide); on the embedded broker, one node, in this process.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::cors;
use crate::auth::bearer_token;
use crate::node::Node;
use crate::protocol::{ClientError, ErrorCode};

/// How long a ticket may wait for its `GET /sse`.
pub const TICKET_TTL: Duration = Duration::from_secs(30);

/// Most tickets this process keeps at once without Redis (each lives [`TICKET_TTL`]).
const LOCAL_MAX: usize = 100_000;

/// Tickets kept in this process, when the broker shares nothing between nodes: the token
/// and when the ticket expires.
static LOCAL: LazyLock<Mutex<HashMap<String, (String, Instant)>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// `POST /sse/ticket` with `Authorization: Bearer <token>`: a ticket for one stream.
pub async fn issue(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    let origin = cors::allow(&node, &headers);
    let answer = match ticket_for(&node, &headers).await {
        Ok(ticket) => (
            StatusCode::OK,
            Json(serde_json::json!({
                "ticket": ticket,
                "expires_in_s": TICKET_TTL.as_secs(),
            })),
        )
            .into_response(),
        Err(e) => e.into_response(),
    };
    cors::with(origin, answer)
}

async fn ticket_for(node: &Node, headers: &HeaderMap) -> Result<String, ClientError> {
    // Header only: the point of a ticket is a token that never travels in a URL.
    let token = bearer_token(headers).ok_or_else(|| {
        ClientError::unauthorized("a ticket is issued for `Authorization: Bearer <token>`")
    })?;
    node.verifier
        .verify(&token)
        .map_err(|e| ClientError::unauthorized(e.0))?;
    let ticket = format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let shared = node
        .backchannel
        .put_once(&key(&ticket), &token, TICKET_TTL)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "could not store an SSE ticket");
            ClientError::unavailable("the broker is unavailable; retry shortly")
        })?;
    if !shared {
        let mut local = LOCAL.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        local.retain(|_, (_, expires)| *expires > now);
        if local.len() >= LOCAL_MAX {
            return Err(
                ClientError::unavailable("too many tickets waiting; retry shortly").retry_after(1),
            );
        }
        local.insert(ticket.clone(), (token, now + TICKET_TTL));
    }
    Ok(ticket)
}

/// The token a ticket stands for, once: `Err` when the ticket is unknown, expired or used.
pub async fn redeem(node: &Node, ticket: &str) -> Result<String, ClientError> {
    let refused = || {
        ClientError::unauthorized(
            "ticket unknown, expired or already used: get a new one with POST /sse/ticket",
        )
    };
    // Tickets are 32 hex digits: anything else is not one, and is not looked up.
    if ticket.len() != 32 || !ticket.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refused());
    }
    let local = LOCAL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(ticket);
    if let Some((token, expires)) = local {
        return if expires > Instant::now() {
            Ok(token)
        } else {
            Err(refused())
        };
    }
    match node.backchannel.take_once(&key(ticket)).await {
        Ok(Some(token)) => Ok(token),
        Ok(None) => Err(refused()),
        Err(e) => {
            tracing::warn!(error = %e, "could not read an SSE ticket");
            Err(ClientError::new(
                ErrorCode::Unavailable,
                "the broker is unavailable; retry shortly",
            ))
        }
    }
}

fn key(ticket: &str) -> String {
    format!("sse-ticket:{ticket}")
}
