//! Cross-origin access to `/sse` and `/sse/frames`: a page on another origin reads the stream
//! (EventSource and fetch follow CORS) and POSTs its frames. Origins are those the node
//! admits (`allowed_origins`; any when it is empty, as for WebSockets, since a token is
//! needed either way). Credentials are tokens, never cookies, so none are allowed.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use crate::node::Node;

/// The `Access-Control-Allow-Origin` value for this request, when it comes from a browser on
/// an origin the node admits.
pub fn allow(node: &Node, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    let rules = &node.config.allowed_origins;
    (rules.is_empty() || rules.iter().any(|r| r.allows(text))).then(|| origin.clone())
}

/// Adds the CORS headers to a response.
pub fn with(origin: Option<HeaderValue>, mut response: Response) -> Response {
    if let Some(origin) = origin {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::VARY, HeaderValue::from_static("origin"));
    }
    response
}

/// `OPTIONS /sse` and `OPTIONS /sse/frames`: the preflight of a request with an
/// `Authorization` header or a JSON body.
pub async fn preflight(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    let Some(origin) = allow(&node, &headers) else {
        return StatusCode::FORBIDDEN.into_response();
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_str(&format!("{}, {}", Method::GET, Method::POST))
            .unwrap_or(HeaderValue::from_static("GET, POST")),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, last-event-id"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    with(Some(origin), response)
}
