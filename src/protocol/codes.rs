//! The codes a client is told: error codes (in `error` frames and HTTP error bodies), close
//! codes (WebSocket close frames, SSE `close` events), and [`ClientError`], the one type every
//! layer uses to say "this is what was wrong with your request".
//!
//! Why one type: the session, the upgrade/stream admission and the HTTP API answer the same
//! problems (bad channel, forbidden, unavailable) to the same clients; writing each message
//! once, here or where the problem is found, keeps them identical on every path.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The error codes of `{"type":"error"}` frames and of HTTP API error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON, lacks a field, or names an unknown channel or type.
    BadRequest,
    /// Missing, invalid or expired credentials.
    Unauthorized,
    /// Valid credentials that do not grant this channel or action.
    Forbidden,
    /// The thing asked for does not exist (an SSE session that ended).
    NotFound,
    /// A payload above the configured size (HTTP API; an oversize WebSocket message closes
    /// the connection with 1009 instead).
    TooLarge,
    /// More frames per second than allowed; the frame was not processed.
    RateLimited,
    /// A configured count limit (subscriptions, connections) is reached.
    LimitExceeded,
    /// The broker cannot serve the request right now; retry later.
    Unavailable,
    /// This node cannot do that at all as it is configured (the durable inbox on the
    /// embedded broker); retrying does not help.
    Unsupported,
    /// A bug or unexpected failure in the gateway.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status that goes with the code when it answers an HTTP request.
    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited | ErrorCode::LimitExceeded => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unsupported => StatusCode::NOT_IMPLEMENTED,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::LimitExceeded,
        ErrorCode::Unavailable,
        ErrorCode::Unsupported,
        ErrorCode::Internal,
    ];
}

/// What was wrong with a client's request: a code and a message written for the client.
///
/// Sessions answer it as an `error` frame, HTTP handlers as
/// `{"error":{"code":"...","message":"..."}}` with [`ErrorCode::http_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    /// Seconds, for `Retry-After` on HTTP answers.
    pub retry_after_s: Option<u32>,
}

impl ClientError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> ClientError {
        ClientError {
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> ClientError {
        ClientError::new(ErrorCode::BadRequest, message)
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> ClientError {
        ClientError::new(ErrorCode::Forbidden, message)
    }

    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> ClientError {
        ClientError::new(ErrorCode::Unauthorized, message)
    }

    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> ClientError {
        ClientError::new(ErrorCode::Unavailable, message)
    }

    pub fn too_large(message: impl Into<Cow<'static, str>>) -> ClientError {
        ClientError::new(ErrorCode::TooLarge, message)
    }

    /// Adds `Retry-After` to the HTTP answer.
    pub fn retry_after(mut self, seconds: u32) -> ClientError {
        self.retry_after_s = Some(seconds);
        self
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl IntoResponse for ClientError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message }
        });
        let mut response = (self.code.http_status(), Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

/// Close codes: how the server ends a connection (WebSocket close frames; the `close` event
/// of an SSE stream). 1xxx are RFC 6455 codes; 4xxx are fanout's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum CloseCode {
    /// The client closed, or the session ended normally.
    Normal = 1000,
    /// A frame violated the WebSocket protocol (bad opcode, bad fragmentation, bad close frame).
    ProtocolError = 1002,
    /// A text message was not valid UTF-8.
    InvalidPayload = 1007,
    /// A message exceeded the inbound size limit.
    MessageTooBig = 1009,
    /// An internal error ended the session.
    InternalError = 1011,
    /// The node is shutting down (drain); reconnect, the load balancer picks another node.
    ServiceRestart = 1012,
    /// The broker could not set up the session's channels; reconnect with backoff.
    TryAgainLater = 1013,
    /// No token, an invalid one, an expired one, or no auth frame in time. Get a new token.
    Unauthorized = 4001,
    /// The token was revoked (by the backend: the user logged out, lost a role, was deleted).
    /// Ask the backend for a new token; it decides whether the user gets one.
    Revoked = 4003,
    /// The backend ended the connection (`disconnect`); reconnect with backoff.
    Disconnected = 4004,
    /// The backend ended the connection and asked the client not to reconnect by itself.
    DisconnectedForGood = 4005,
    /// The outbound queue overflowed: the client read too slowly. Reconnect.
    SlowConsumer = 4008,
    /// Nothing arrived from the client (no pong, no frame) within the heartbeat timeout.
    HeartbeatTimeout = 4009,
    /// The per-user connection limit was reached (token given in the auth frame).
    ConnectionLimit = 4010,
    /// The client kept sending after being told it was rate limited.
    RateLimited = 4029,
}

impl CloseCode {
    pub const ALL: [CloseCode; 15] = [
        CloseCode::Normal,
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::ServiceRestart,
        CloseCode::TryAgainLater,
        CloseCode::Unauthorized,
        CloseCode::Revoked,
        CloseCode::Disconnected,
        CloseCode::DisconnectedForGood,
        CloseCode::SlowConsumer,
        CloseCode::HeartbeatTimeout,
        CloseCode::ConnectionLimit,
        CloseCode::RateLimited,
    ];

    pub fn code(self) -> u16 {
        self as u16
    }

    /// The label used for this code in metrics.
    pub fn label(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::ProtocolError => "protocol_error",
            CloseCode::InvalidPayload => "invalid_payload",
            CloseCode::MessageTooBig => "message_too_big",
            CloseCode::InternalError => "internal_error",
            CloseCode::ServiceRestart => "service_restart",
            CloseCode::TryAgainLater => "try_again_later",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::Revoked => "revoked",
            CloseCode::Disconnected => "disconnected",
            CloseCode::DisconnectedForGood => "disconnected_for_good",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::HeartbeatTimeout => "heartbeat_timeout",
            CloseCode::ConnectionLimit => "connection_limit",
            CloseCode::RateLimited => "rate_limited",
        }
    }
}
