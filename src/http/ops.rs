//! Operations endpoints: `/healthz` (the process is alive), `/readyz` (it should get
//! traffic) and `/metrics` (Prometheus).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::node::Node;

pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the broker is reachable and the node is not draining.
pub async fn readyz(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let broker = node.broker();
    let (status, reason) = if node.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, Some("draining"))
    } else if !broker.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, Some("broker unavailable"))
    } else {
        (StatusCode::OK, None)
    };
    let body = serde_json::json!({
        "ready": status == StatusCode::OK,
        "reason": reason,
        "broker": broker.kind(),
        "node": node.config.node_id,
        "connections": node.admission.open_connections(),
    });
    (status, Json(body))
}

pub async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let ready = !node.is_draining() && node.broker().is_ready();
    node.metrics.ready.set(i64::from(ready));
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        node.metrics.render(),
    )
}
