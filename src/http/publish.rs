//! `POST /api/publish` and `POST /api/broadcast`: publishing for backends that would rather
//! speak HTTP than Redis.

use std::borrow::Cow;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::auth::authorize;
use super::body::{channel, parse, payload, read_body};
use crate::broker::MAX_IDEMPOTENCY_KEY;
use crate::node::Node;
use crate::protocol::ClientError;

/// Most channels one `POST /api/broadcast` may name.
pub const MAX_BROADCAST_CHANNELS: usize = 1000;

#[derive(Deserialize)]
struct PublishRequest<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
    /// A retried publish with the same key returns the first result instead of publishing again.
    #[serde(borrow, default)]
    idempotency_key: Option<Cow<'a, str>>,
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
) -> Result<Json<serde_json::Value>, ClientError> {
    authorize(&node, &headers)?;
    let body = read_body(&node, body).await?;
    let req: PublishRequest<'_> = parse(&body)?;
    let channel = channel(&node, &req.channel)?;
    let payload = payload(&node, req.data)?;
    let idempotency_key = req.idempotency_key;
    if let Some(key) = &idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY)
    {
        return Err(ClientError::bad_request(format!(
            "\"idempotency_key\" must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"
        )));
    }
    let offset = node
        .publish_once(&channel, payload, "http", idempotency_key.as_deref())
        .await
        .map_err(ClientError::from)?;
    Ok(Json(match offset {
        Some(offset) => serde_json::json!({ "ok": true, "offset": offset }),
        None => serde_json::json!({ "ok": true }),
    }))
}

/// `POST /api/broadcast {"channels":["room:a","user:7"],"data":{...}}`
pub async fn broadcast(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ClientError> {
    authorize(&node, &headers)?;
    let body = read_body(&node, body).await?;
    let req: BroadcastRequest<'_> = parse(&body)?;
    if req.channels.is_empty() || req.channels.len() > MAX_BROADCAST_CHANNELS {
        return Err(ClientError::bad_request(format!(
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
        .map_err(ClientError::from)?;
    Ok(Json(
        serde_json::json!({ "ok": true, "channels": channels.len() }),
    ))
}
