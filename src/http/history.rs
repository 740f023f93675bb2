//! `GET /api/history`: a channel's recent messages for backends (the same reads a client's
//! `history` frame makes).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::auth::authorize;
use super::body::channel;
use crate::broker::{BrokerError, HistoryMessage, HistoryQuery};
use crate::node::Node;
use crate::protocol::{ClientError, HistoryEntry};

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
) -> Result<axum::response::Response, ClientError> {
    authorize(&node, &headers)?;
    let Query(params) = params
        .map_err(|e| ClientError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let channel = channel(&node, &params.channel)?;
    let max = node.config.limits.max_recovery_messages;
    let limit = params.limit.unwrap_or(max).min(max);
    let query = match params.since {
        Some(offset) => HistoryQuery::After { offset, limit },
        None => HistoryQuery::Latest { limit },
    };
    let history = match node.broker().history(&channel, query).await {
        Ok(h) => h,
        Err(BrokerError::NoHistory(c)) => {
            return Err(ClientError::bad_request(format!(
                "channel {c} keeps no history"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let messages: Vec<HistoryEntry> = history.messages.iter().map(HistoryMessage::entry).collect();
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
