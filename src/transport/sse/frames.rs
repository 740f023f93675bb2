//! `POST /sse/frames?conn_id=<id>`: the client-to-server half of an SSE session.
//!
//! The body is one client frame, or several, one per line. They are checked (token, owner,
//! sizes) and queued for the session as a whole or not at all; the session handles them as it
//! would WebSocket messages, and its replies come back on the stream. A POST that reaches a
//! node other than the stream's (a balancer without stickiness) is relayed to that node
//! through the broker; the connection id names the node.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::cors;
use crate::auth::bearer_token;
use crate::broker::RelayedFrames;
use crate::node::Node;
use crate::protocol::{ClientError, ErrorCode};
use crate::session::ConnState;

/// Most frames one POST may carry.
pub const MAX_FRAMES_PER_POST: usize = 32;

#[derive(Deserialize)]
pub struct FrameParams {
    conn_id: Option<String>,
    token: Option<String>,
}

/// Accepts client frames for an SSE session on this node.
pub async fn post(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    params: Result<Query<FrameParams>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Response {
    let origin = cors::allow(&node, &headers);
    let answer = match accept(&node, &headers, params, body).await {
        Ok(accepted) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "accepted": accepted })),
        )
            .into_response(),
        Err(e) => e.into_response(),
    };
    cors::with(origin, answer)
}

async fn accept(
    node: &Node,
    headers: &HeaderMap,
    params: Result<Query<FrameParams>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<usize, ClientError> {
    let Query(params) = params
        .map_err(|e| ClientError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let conn_id = params.conn_id.ok_or_else(|| {
        ClientError::bad_request("`conn_id` is required: the stream's connection_ack names it")
    })?;
    let token = bearer_token(headers).or(params.token).ok_or_else(|| {
        ClientError::unauthorized(
            "a token is required: Authorization: Bearer <jwt> or ?token=<jwt>",
        )
    })?;
    let identity = node
        .verifier
        .verify(&token)
        .map_err(|e| ClientError::unauthorized(e.0))?;
    let max = node.config.limits.max_message_bytes;
    let limit = max * MAX_FRAMES_PER_POST + MAX_FRAMES_PER_POST;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ClientError::too_large(format!(
            "request body too large: at most {MAX_FRAMES_PER_POST} frames of {max} bytes"
        ))
    })?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ClientError::bad_request("the body is not valid UTF-8"))?;
    let frames: Vec<&str> = text
        .split('\n')
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.trim().is_empty())
        .collect();
    if frames.is_empty() {
        return Err(ClientError::bad_request("no frame in the body"));
    }
    if frames.len() > MAX_FRAMES_PER_POST {
        return Err(ClientError::too_large(format!(
            "at most {MAX_FRAMES_PER_POST} frames per request"
        )));
    }
    if frames.iter().any(|f| f.len() > max) {
        return Err(ClientError::too_large(format!(
            "frame larger than {max} bytes"
        )));
    }
    let frames: Vec<String> = frames.into_iter().map(str::to_owned).collect();
    let Some(session) = node.inbound.get(&conn_id) else {
        return relay(node, &identity.user, &conn_id, frames).await;
    };
    if session.user != identity.user {
        return Err(ClientError::forbidden(
            "this session belongs to another user",
        ));
    }
    if session.frames.capacity() < frames.len() {
        return Err(ClientError::new(
            ErrorCode::RateLimited,
            "too many frames waiting for this session; retry shortly",
        )
        .retry_after(1));
    }
    let count = frames.len();
    for frame in frames {
        if session.frames.try_send(frame).is_err() {
            // Closed (the stream ended meanwhile) or filled by a concurrent POST.
            return Err(gone());
        }
    }
    Ok(count)
}

/// The session lives on another node (a balancer sent the POST here): hand the frames to it
/// through the broker. That node checks the owner again before it takes them.
async fn relay(
    node: &Node,
    user: &str,
    conn_id: &str,
    frames: Vec<String>,
) -> Result<usize, ClientError> {
    let holder = match ConnState::node_of(conn_id) {
        Some(holder) if holder != node.config.node_id => holder,
        _ => return Err(gone()),
    };
    let count = frames.len();
    let relayed = RelayedFrames {
        user: user.to_owned(),
        conn_id: conn_id.to_owned(),
        frames,
    };
    match node.backchannel.relay(holder, &relayed).await {
        Ok(true) => Ok(count),
        Ok(false) => Err(gone()),
        Err(e) => Err(e.into()),
    }
}

fn gone() -> ClientError {
    ClientError::new(
        ErrorCode::NotFound,
        "no such SSE session; it ended, open a new stream",
    )
}
