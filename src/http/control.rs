//! The backend's control of sessions over HTTP (API key): `POST /api/disconnect`,
//! `/api/unsubscribe`, `/api/subscribe`, `/api/revoke`, and the cluster-wide view
//! (`GET /api/info`, `GET /api/channels`). Each command is accepted once the broker has it;
//! every node applies it to its own sessions within a second (`node::control`). The same
//! commands exist as Redis functions for backends without HTTP (docs/publishing.md).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;

use super::auth::authorize;
use super::body::{channel, parse, read_body};
use crate::broker::Revocation;
use crate::channel::{Channel, ChannelPattern};
use crate::node::Node;
use crate::protocol::{ClientError, CloseCode};

/// Longest `reason` of a disconnect (a close frame carries at most 123 bytes).
const MAX_REASON: usize = 100;
/// Longest `conn_id` (a public id is 16 hex digits, a dot and a node id).
const MAX_CONN_ID: usize = 128;
/// Longest token id.
const MAX_JTI: usize = 256;
/// Longest channel pattern of `GET /api/channels`.
const MAX_PATTERN: usize = 130;
/// How long a user's cut-off is kept by default: tokens issued before it must not live
/// longer than this (it can be set per call, up to [`MAX_KEEP`]).
const DEFAULT_KEEP: Duration = Duration::from_secs(30 * 86_400);
const MAX_KEEP: Duration = Duration::from_secs(366 * 86_400);

fn yes() -> bool {
    true
}

fn user(name: &str) -> Result<String, ClientError> {
    Channel::user(name).map_err(|_| {
        ClientError::bad_request(
            "\"user\" must be a valid user id (letters, digits, `_ - . : @`, at most 123 bytes)",
        )
    })?;
    Ok(name.to_owned())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectRequest {
    user: String,
    #[serde(default)]
    conn_id: Option<String>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default = "yes")]
    reconnect: bool,
}

/// `POST /api/disconnect {"user":"42","conn_id"?,"code"?,"reason"?,"reconnect"?}`: ends the
/// user's connections on every node (or one `conn_id`). They get a `disconnect` frame, then
/// a close: 4004 (reconnect), 4005 (`"reconnect": false`), or an application `code` from
/// 4100 to 4499.
pub async fn disconnect(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ClientError> {
    authorize(&node, &headers)?;
    let body = read_body(&node, body).await?;
    let req: DisconnectRequest = parse(&body)?;
    let user = user(&req.user)?;
    if req
        .conn_id
        .as_ref()
        .is_some_and(|c| c.is_empty() || c.len() > MAX_CONN_ID)
    {
        return Err(ClientError::bad_request(format!(
            "\"conn_id\" must be 1 to {MAX_CONN_ID} bytes"
        )));
    }
    let code = match req.code {
        None if req.reconnect => CloseCode::Disconnected.code(),
        None => CloseCode::DisconnectedForGood.code(),
        Some(code @ 4100..=4499) => code,
        Some(_) => {
            return Err(ClientError::bad_request(
                "\"code\" must be an application close code from 4100 to 4499 (or left out: 4004, or 4005 with \"reconnect\": false)",
            ));
        }
    };
    let reason = req
        .reason
        .unwrap_or_else(|| "disconnected by the server".to_owned());
    if reason.len() > MAX_REASON {
        return Err(ClientError::bad_request(format!(
            "\"reason\" must be at most {MAX_REASON} bytes"
        )));
    }
    node.disconnect(&user, req.conn_id.as_deref(), code, &reason, req.reconnect)
        .await?;
    Ok(Json(serde_json::json!({ "ok": true, "code": code })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MembershipRequest {
    user: String,
    channel: String,
}

/// `POST /api/subscribe {"user":"42","channel":"room:ops"}`: subscribes the user's live
/// connections on every node (a `subscribed` frame with `"server": true`).
pub async fn subscribe(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ClientError> {
    membership(node, headers, body, true).await
}

/// `POST /api/unsubscribe {"user":"42","channel":"room:ops"}`: ends the user's subscriptions
/// of the channel on every node (an `unsubscribed` frame with `"server": true`).
pub async fn unsubscribe(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ClientError> {
    membership(node, headers, body, false).await
}

async fn membership(
    node: Arc<Node>,
    headers: HeaderMap,
    body: Body,
    subscribe: bool,
) -> Result<Json<serde_json::Value>, ClientError> {
    authorize(&node, &headers)?;
    let body = read_body(&node, body).await?;
    let req: MembershipRequest = parse(&body)?;
    let user = user(&req.user)?;
    let channel = channel(&node, &req.channel)?;
    node.set_membership(&user, &channel, subscribe).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    keep_s: Option<u64>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    expires_at: Option<i64>,
}

/// `POST /api/revoke {"user":"42","before":1765000000}` (the user's tokens issued before
/// that time, `iat`; `before` defaults to now) or `{"jti":"…","expires_at":1765003600}` (one
/// token, remembered until it expires): refused from now on at connect, refresh and
/// channel-token use, and live sessions holding one are closed with 4003 (or, for a channel
/// token, lose that channel).
pub async fn revoke(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ClientError> {
    authorize(&node, &headers)?;
    let body = read_body(&node, body).await?;
    let req: RevokeRequest = parse(&body)?;
    let revocation = match (req.user, req.jti) {
        (Some(name), None) if req.expires_at.is_none() => {
            let keep = match req.keep_s {
                None => DEFAULT_KEEP,
                Some(s) if s >= 1 && Duration::from_secs(s) <= MAX_KEEP => Duration::from_secs(s),
                Some(_) => {
                    return Err(ClientError::bad_request(format!(
                        "\"keep_s\" must be 1 to {}",
                        MAX_KEEP.as_secs()
                    )));
                }
            };
            let before = req
                .before
                .unwrap_or_else(|| crate::clock::unix_now_ms() / 1000 + 1);
            if before <= 0 {
                return Err(ClientError::bad_request(
                    "\"before\" must be a time in Unix seconds",
                ));
            }
            Revocation::User {
                user: user(&name)?,
                before,
                keep,
            }
        }
        (None, Some(jti)) if req.before.is_none() && req.keep_s.is_none() => {
            if jti.is_empty() || jti.len() > MAX_JTI {
                return Err(ClientError::bad_request(format!(
                    "\"jti\" must be 1 to {MAX_JTI} bytes"
                )));
            }
            let Some(expires_at) = req.expires_at.filter(|t| *t > 0) else {
                return Err(ClientError::bad_request(
                    "\"expires_at\" (the token's `exp`, Unix seconds) is required with \"jti\"",
                ));
            };
            Revocation::Token { jti, expires_at }
        }
        _ => {
            return Err(ClientError::bad_request(
                "give either {\"user\", \"before\"?, \"keep_s\"?} or {\"jti\", \"expires_at\"}",
            ));
        }
    };
    node.revoke(&revocation).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

/// `GET /api/info`: every live node (those whose heartbeat is at most six seconds old): id,
/// version, uptime, connections, subscriptions, channels.
pub async fn info(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ClientError> {
    authorize(&node, &headers)?;
    let mut nodes = node.control.nodes().await?;
    // This node is alive, whether or not its first heartbeat is in yet.
    let here = node.info();
    nodes.retain(|n| n.id != here.id);
    nodes.push(here);
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(serde_json::json!({ "nodes": nodes })))
}

#[derive(Deserialize)]
pub struct ChannelsParams {
    #[serde(default)]
    pattern: Option<String>,
}

/// `GET /api/channels?pattern=room:*`: the channels with subscribers, and how many, summed
/// over the nodes (asked through the broker; `missing_nodes` lists those that did not answer
/// within a second). The pattern is a channel name or a prefix ending in `*`; all when left
/// out.
pub async fn channels(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    params: Result<Query<ChannelsParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ClientError> {
    authorize(&node, &headers)?;
    let Query(params) = params
        .map_err(|e| ClientError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let pattern = params.pattern.unwrap_or_else(|| "*".to_owned());
    if pattern.len() > MAX_PATTERN {
        return Err(ClientError::bad_request(format!(
            "\"pattern\" must be at most {MAX_PATTERN} bytes"
        )));
    }
    let name = pattern.strip_suffix('*').unwrap_or(&pattern);
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-.:@".contains(c);
    if !name.chars().all(allowed) {
        return Err(ClientError::bad_request(
            "\"pattern\" must be a channel name, or a prefix of one followed by `*`",
        ));
    }
    let (channels, missing) = node.channels(&ChannelPattern::parse(&pattern)).await?;
    let channels: Vec<serde_json::Value> = channels
        .into_iter()
        .map(|(channel, subscribers)| {
            serde_json::json!({ "channel": channel, "subscribers": subscribers })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "pattern": pattern,
        "channels": channels,
        "missing_nodes": missing,
    })))
}
