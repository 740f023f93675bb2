//! The publish API: `POST /api/publish` and `POST /api/broadcast`, for backends that would
//! rather speak HTTP than Redis. Authorised by API key; every error is a JSON body.

use std::borrow::Cow;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::broker::{BrokerError, HistoryQuery};
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
) -> Result<Json<serde_json::Value>, ApiError> {
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
    let messages: Vec<HistoryEntry> = history
        .messages
        .iter()
        .map(|(o, p)| HistoryEntry::new(*o, p))
        .collect();
    Ok(Json(serde_json::json!({
        "channel": channel.as_str(),
        "epoch": &*history.epoch,
        "offset": history.offset,
        "messages": messages,
    })))
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
