//! The live demo dashboard (`--demo`, off by default): the page from `demo/`, the JS client
//! from `clients/js/src/` (which the page imports as `./client/index.js`), and
//! `/demo/token`, which mints a development token for whoever asks. `demo_play` (its own
//! module) plays sample runs for the page when no backend does.
//!
//! The files are embedded in the binary at build time, so a release binary serves the demo
//! with nothing else installed. `/demo/token` hands a token to anyone: it exists only so that
//! the demo runs without a backend, and is why the demo is off unless asked for.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use rust_embed::RustEmbed;
use serde::Deserialize;

use crate::auth::{TokenRequest, mint};
use crate::channel::Channel;
use crate::node::Node;
use crate::protocol::{ClientError, ErrorCode};

#[derive(RustEmbed)]
#[folder = "demo/"]
struct Page;

#[derive(RustEmbed)]
#[folder = "clients/js/src/"]
struct Client;

/// How long a demo token is valid.
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// `GET /demo`: to the page, so that its relative imports resolve under `/demo/`.
pub async fn root() -> Redirect {
    Redirect::permanent("/demo/")
}

/// `GET /demo/`: the dashboard.
pub async fn index() -> Response {
    file::<Page>("index.html")
}

/// `GET /demo/{file}`: the page's own files.
pub async fn page_file(Path(name): Path<String>) -> Response {
    file::<Page>(&name)
}

/// `GET /demo/client/{file}`: the JS client's modules.
pub async fn client_file(Path(name): Path<String>) -> Response {
    file::<Client>(&name)
}

fn file<E: RustEmbed>(name: &str) -> Response {
    let Some(content) = E::get(name) else {
        return ClientError::new(ErrorCode::NotFound, "no such demo file").into_response();
    };
    let mime = match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("ts") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        content.data.into_owned(),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct TokenParams {
    user: Option<String>,
    name: Option<String>,
}

/// `GET /demo/token?user=alice&name=Alice`: a development token for the demo's channels.
pub async fn token(
    State(node): State<Arc<Node>>,
    Query(params): Query<TokenParams>,
) -> Result<Json<serde_json::Value>, ClientError> {
    let user = params
        .user
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("guest-{:04x}", rand::random::<u16>()));
    if Channel::user(&user).is_err() {
        return Err(ClientError::bad_request(
            "\"user\" must be a valid user id (letters, digits, `_ - . : @`)",
        ));
    }
    let Some(key) = &node.config.jwt.encoding_key else {
        return Err(ClientError::unavailable(
            "the demo mints tokens with a shared secret (jwt_secret); this node verifies with a public key",
        ));
    };
    let name = params.name.unwrap_or_else(|| user.clone());
    let request = TokenRequest {
        sub: user.clone(),
        channels: vec!["room:*".into(), "dag:*".into()],
        // `dag:*`: the page answers the runs of the demo player by publishing on their
        // channel (the player has no inbox to read on the embedded broker).
        publish: vec!["room:*".into(), "dag:*".into()],
        ttl: DEMO_TOKEN_TTL,
        info: Some(serde_json::json!({ "name": name })),
        audience: None,
        issuer: None,
        channel: None,
        jti: None,
    };
    let token = mint(&node.config.jwt, key, &request)
        .map_err(|_| ClientError::new(ErrorCode::Internal, "could not sign the demo token"))?;
    Ok(Json(serde_json::json!({ "token": token, "user": user })))
}
