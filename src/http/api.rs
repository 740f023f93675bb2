//! The publish API: `POST /api/publish` and `POST /api/broadcast`, for backends that would
//! rather speak HTTP than Redis. Authorised by API key; every error is a JSON body.

use std::borrow::Cow;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::broker::{BrokerError, HistoryQuery, Lease, PresenceMember};
use crate::channel::Channel;
use crate::protocol::{ErrorCode, HistoryEntry};
use crate::server::Node;
use crate::transport::ws::bearer;

/// Room for the JSON envelope around `data` in a request body.
const ENVELOPE_BYTES: usize = 64 * 1024;
/// Most channels one `POST /api/broadcast` may name.
pub const MAX_BROADCAST_CHANNELS: usize = 1000;

#[derive(Deserialize)]
struct PublishRequest<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct BroadcastRequest<'a> {
    #[serde(borrow)]
    channels: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// `POST /api/publish {"channel":"room:lobby","data":{...}}`
pub async fn publish(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&node, &headers)?;
    let body = read_body(&node, body).await?;
    let req: PublishRequest<'_> = parse(&body)?;
    let channel = channel(&node, &req.channel)?;
    let payload = payload(&node, req.data)?;
    let offset = node
        .publish(&channel, payload, "http")
        .await
        .map_err(unavailable)?;
    Ok(Json(match offset {
        Some(offset) => serde_json::json!({ "ok": true, "offset": offset }),
        None => serde_json::json!({ "ok": true }),
    }))
}

#[derive(Deserialize)]
pub struct HistoryParams {
    channel: String,
    since: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/history?channel=dag:7&since=41&limit=100`: messages after `since` (or the
/// latest `limit`), with the channel's current offset and epoch.
pub async fn history(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    authorize(&node, &headers)?;
    let Query(params) =
        params.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let channel = channel(&node, &params.channel)?;
    let max = node.config.limits.max_recovery_messages;
    let limit = params.limit.unwrap_or(max).min(max);
    let query = match params.since {
        Some(offset) => HistoryQuery::After { offset, limit },
        None => HistoryQuery::Latest { limit },
    };
    let history = match node.hub.broker().history(&channel, query).await {
        Ok(h) => h,
        Err(BrokerError::NoHistory(c)) => {
            return Err(ApiError::bad_request(format!(
                "channel {c} keeps no history"
            )));
        }
        Err(e) => return Err(unavailable(e)),
    };
    let messages: Vec<HistoryEntry> = history.messages.iter().map(HistoryEntry::new).collect();
    // A struct, not `json!`: the messages' `data` must pass through as published.
    #[derive(serde::Serialize)]
    struct HistoryReply<'a> {
        channel: &'a str,
        epoch: &'a str,
        offset: u64,
        messages: Vec<HistoryEntry>,
    }
    Ok(Json(HistoryReply {
        channel: channel.as_str(),
        epoch: &history.epoch,
        offset: history.offset,
        messages,
    })
    .into_response())
}

/// `POST /api/broadcast {"channels":["room:a","user:7"],"data":{...}}`
pub async fn broadcast(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&node, &headers)?;
    let body = read_body(&node, body).await?;
    let req: BroadcastRequest<'_> = parse(&body)?;
    if req.channels.is_empty() || req.channels.len() > MAX_BROADCAST_CHANNELS {
        return Err(ApiError::bad_request(format!(
            "\"channels\" must name 1 to {MAX_BROADCAST_CHANNELS} channels"
        )));
    }
    // Validate everything before publishing anything.
    let mut channels = Vec::with_capacity(req.channels.len());
    for name in &req.channels {
        channels.push(channel(&node, name)?);
    }
    channels.sort();
    channels.dedup();
    let payload = payload(&node, req.data)?;
    node.publish_many(&channels, payload, "http")
        .await
        .map_err(unavailable)?;
    Ok(Json(
        serde_json::json!({ "ok": true, "channels": channels.len() }),
    ))
}

fn authorize(node: &Node, headers: &HeaderMap) -> Result<(), ApiError> {
    if node.config.api_keys.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "the HTTP API is disabled: no api_key is configured",
        ));
    }
    let Some(given) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "missing `Authorization: Bearer <api key>`",
        ));
    };
    // Compare against every key in constant time, without stopping at the first match.
    let matched = node.config.api_keys.iter().fold(0u8, |acc, key| {
        acc | key.as_bytes().ct_eq(given.as_bytes()).unwrap_u8()
    });
    if matched == 1 {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "invalid API key",
        ))
    }
}

async fn read_body(node: &Node, body: Body) -> Result<Bytes, ApiError> {
    let limit = node.config.limits.max_payload_bytes + ENVELOPE_BYTES;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!(
                "request body too large (payload limit {} bytes)",
                node.config.limits.max_payload_bytes
            ),
        )
    })
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

fn channel(node: &Node, name: &str) -> Result<Channel, ApiError> {
    let channel =
        Channel::parse(name).map_err(|e| ApiError::bad_request(format!("invalid channel: {e}")))?;
    node.check_namespace(&channel)
        .map_err(ApiError::bad_request)?;
    Ok(channel)
}

fn payload(node: &Node, data: &RawValue) -> Result<Bytes, ApiError> {
    let max = node.config.limits.max_payload_bytes;
    if data.get().len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::TooLarge,
            format!("\"data\" is larger than {max} bytes"),
        ));
    }
    Ok(Bytes::copy_from_slice(data.get().as_bytes()))
}

fn unavailable(e: crate::broker::BrokerError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
        e.to_string(),
    )
}

#[derive(Deserialize)]
pub struct PresenceParams {
    channel: String,
}

/// A channel whose namespace keeps presence, or the API error saying why not.
fn presence_channel(node: &Node, name: &str) -> Result<Channel, ApiError> {
    let channel = channel(node, name)?;
    if node
        .config
        .namespace(channel.namespace())
        .is_some_and(|n| n.presence)
    {
        Ok(channel)
    } else {
        Err(ApiError::bad_request(format!(
            "presence is not kept for namespace {:?}",
            channel.namespace()
        )))
    }
}

/// `GET /api/presence?channel=room:lobby`: the members of a channel, cluster-wide.
pub async fn presence(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    params: Result<Query<PresenceParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&node, &headers)?;
    let Query(params) =
        params.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let channel = presence_channel(&node, &params.channel)?;
    let members = node
        .hub
        .broker()
        .presence(&channel)
        .await
        .map_err(unavailable)?;
    let (connections, users) = crate::presence::stats(&members);
    Ok(Json(serde_json::json!({
        "channel": channel.as_str(),
        "connections": connections,
        "users": users,
        "members": members,
    })))
}

/// Longest lease of a member set through the API.
const MAX_STATUS_TTL_S: u64 = 86_400;

#[derive(Deserialize)]
struct StatusRequest<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    user: Cow<'a, str>,
    /// `null` removes the member.
    status: serde_json::Value,
    #[serde(default)]
    info: Option<serde_json::Value>,
    #[serde(default)]
    ttl_s: Option<u64>,
}

/// `POST /api/status {"channel":"room:ops","user":"agent-7","status":{"state":"thinking"},"ttl_s":60}`:
/// a backend sets the status of an agent that is not connected itself. The agent appears in
/// the channel's presence (as conn id `api:<user>`) until `ttl_s` passes without another
/// call, or a call with `"status": null` removes it.
pub async fn status(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&node, &headers)?;
    let body = read_body(&node, body).await?;
    let req: StatusRequest<'_> = parse(&body)?;
    let channel = presence_channel(&node, &req.channel)?;
    if Channel::user(&req.user).is_err() {
        return Err(ApiError::bad_request(
            "\"user\" must be a valid user id (letters, digits, `_ - . : @`)",
        ));
    }
    let ttl_s = req.ttl_s.unwrap_or(60);
    if ttl_s == 0 || ttl_s > MAX_STATUS_TTL_S {
        return Err(ApiError::bad_request(format!(
            "\"ttl_s\" must be 1 to {MAX_STATUS_TTL_S}"
        )));
    }
    let broker = node.hub.broker();
    let mode = node
        .config
        .namespace(channel.namespace())
        .map_or(Default::default(), |n| n.join_leave);
    let conn_id = format!("api:{}", req.user);
    if req.status.is_null() {
        let left = crate::presence::leave(&**broker, mode, &channel, &conn_id)
            .await
            .map_err(unavailable)?;
        return Ok(Json(
            serde_json::json!({ "ok": true, "removed": left.is_some() }),
        ));
    }
    let member = PresenceMember {
        user: req.user.into_owned(),
        conn_id: conn_id.clone(),
        node: node.config.node_id.clone(),
        info: req.info,
        status: None,
    };
    let lease = Lease {
        duration: std::time::Duration::from_secs(ttl_s),
        renewed: false,
    };
    crate::presence::join(&**broker, mode, &channel, &member, lease)
        .await
        .map_err(unavailable)?;
    crate::presence::set_status(&**broker, &channel, &conn_id, &req.status)
        .await
        .map_err(unavailable)?;
    Ok(Json(serde_json::json!({ "ok": true, "conn_id": conn_id })))
}
