//! `GET /api/presence` and `POST /api/status`: presence for backends, and the status of
//! agents that are not connected themselves.

use std::borrow::Cow;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;

use super::auth::authorize;
use super::body::{channel, parse, read_body};
use crate::broker::{Lease, PresenceMember};
use crate::channel::Channel;
use crate::node::Node;
use crate::protocol::ClientError;

#[derive(Deserialize)]
pub struct PresenceParams {
    channel: String,
}

/// A channel whose namespace keeps presence, or the API error saying why not.
fn presence_channel(node: &Node, name: &str) -> Result<Channel, ClientError> {
    let channel = channel(node, name)?;
    if node
        .config
        .namespace(channel.namespace())
        .is_some_and(|n| n.presence)
    {
        Ok(channel)
    } else {
        Err(ClientError::bad_request(format!(
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
) -> Result<Json<serde_json::Value>, ClientError> {
    authorize(&node, &headers)?;
    let Query(params) = params
        .map_err(|e| ClientError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let channel = presence_channel(&node, &params.channel)?;
    let members = node
        .presence
        .members(&channel)
        .await
        .map_err(ClientError::from)?;
    let (connections, users) = crate::broker::presence::stats(&members);
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
) -> Result<Json<serde_json::Value>, ClientError> {
    authorize(&node, &headers)?;
    let body = read_body(&node, body).await?;
    let req: StatusRequest<'_> = parse(&body)?;
    let channel = presence_channel(&node, &req.channel)?;
    if Channel::user(&req.user).is_err() {
        return Err(ClientError::bad_request(
            "\"user\" must be a valid user id (letters, digits, `_ - . : @`)",
        ));
    }
    let ttl_s = req.ttl_s.unwrap_or(60);
    if ttl_s == 0 || ttl_s > MAX_STATUS_TTL_S {
        return Err(ClientError::bad_request(format!(
            "\"ttl_s\" must be 1 to {MAX_STATUS_TTL_S}"
        )));
    }
    let conn_id = format!("api:{}", req.user);
    if req.status.is_null() {
        let left = node
            .presence
            .leave(&channel, &conn_id)
            .await
            .map_err(ClientError::from)?;
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
    node.presence
        .join(&channel, &member, lease)
        .await
        .map_err(ClientError::from)?;
    node.presence
        .set_status(&channel, &conn_id, &req.status)
        .await
        .map_err(ClientError::from)?;
    Ok(Json(serde_json::json!({ "ok": true, "conn_id": conn_id })))
}
