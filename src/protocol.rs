//! Protocol v1: the JSON frames on the wire, error codes and close codes.
//!
//! `docs/protocol.md` is the specification; this module is its implementation. Client frames
//! are parsed in two steps: first into a flat [`RawFrame`] (so a frame with a bad field still
//! yields its `id` for the error reply), then into a typed [`Request`]. Server frames are
//! serialised once into WebSocket frame bytes ([`Bytes`]) that the writer sends as they are,
//! so a message fanned out to many sockets is encoded once per node.

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::broker::{PresenceMember, StreamPosition};
use crate::channel::Channel;

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
    /// A payload above the configured size (HTTP API; an oversize WebSocket message closes
    /// the connection with 1009 instead).
    TooLarge,
    /// More frames per second than allowed; the frame was not processed.
    RateLimited,
    /// A configured count limit (subscriptions, connections) is reached.
    LimitExceeded,
    /// The broker cannot serve the request right now; retry later.
    Unavailable,
    /// A bug or unexpected failure in the gateway.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::LimitExceeded,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];
}

/// WebSocket close codes the gateway sends. 1xxx are RFC 6455 codes; 4xxx are fanout's.
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
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::HeartbeatTimeout => "heartbeat_timeout",
            CloseCode::ConnectionLimit => "connection_limit",
            CloseCode::RateLimited => "rate_limited",
        }
    }
}

/// A request id chosen by the client: a JSON number or a string, echoed byte for byte in
/// the reply (numbers are not re-encoded, so `1.5e3` or a 30-digit integer come back as sent).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct RequestId(Box<RawValue>);

impl RequestId {
    /// The id as it appeared in the frame (JSON text).
    pub fn as_json(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RequestId {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

/// Longest accepted string request id, in bytes.
const MAX_ID_LEN: usize = 128;

/// A client frame as it arrives. Fields stay raw until the frame's `type` says which ones it
/// uses, so a field that type ignores cannot make the frame invalid.
#[derive(Debug, Deserialize)]
struct RawFrame<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    channel: Option<&'a RawValue>,
    #[serde(borrow, default)]
    token: Option<&'a RawValue>,
    #[serde(borrow, default)]
    since: Option<&'a RawValue>,
    #[serde(borrow, default)]
    limit: Option<&'a RawValue>,
    /// `null` is a value here (clear the status, publish `null`), not an absent field.
    #[serde(borrow, default, deserialize_with = "present")]
    status: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

/// A field that is present, whatever its value (`null` included).
fn present<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<&'a RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Where a recovering client left a channel: the last offset it processed, in an epoch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Since {
    pub offset: u64,
    pub epoch: String,
}

/// A validated client request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Auth {
        token: String,
    },
    Subscribe {
        channel: Channel,
        /// Present when the client recovers: replay what it missed after this position.
        since: Option<Since>,
    },
    Unsubscribe {
        channel: Channel,
    },
    Ping,
    Refresh {
        token: String,
    },
    History {
        channel: Channel,
        /// Messages after this offset; without it, the latest `limit`.
        since: Option<u64>,
        limit: Option<usize>,
    },
    Presence {
        channel: Channel,
    },
    PresenceStats {
        channel: Channel,
    },
    /// Sets this connection's status in the channel's presence.
    Status {
        channel: Channel,
        status: serde_json::Value,
    },
    /// Publishes `data` (JSON text, as sent) to the channel's subscribers.
    Publish {
        channel: Channel,
        data: Bytes,
    },
    /// Appends `data` (JSON text, as sent) to the channel's inbox stream for the backend.
    Send {
        channel: Channel,
        data: Bytes,
    },
}

impl Request {
    /// The `type` of the frame, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Auth { .. } => "auth",
            Request::Subscribe { .. } => "subscribe",
            Request::Unsubscribe { .. } => "unsubscribe",
            Request::Ping => "ping",
            Request::Refresh { .. } => "refresh",
            Request::History { .. } => "history",
            Request::Presence { .. } => "presence",
            Request::PresenceStats { .. } => "presence_stats",
            Request::Status { .. } => "status",
            Request::Publish { .. } => "publish",
            Request::Send { .. } => "send",
        }
    }
}

/// A client frame that could not be turned into a [`Request`]; answered with `bad_request`.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub id: Option<RequestId>,
    pub message: String,
}

/// Parses one client text frame into its request id and request.
pub fn parse_client_frame(text: &str) -> Result<(Option<RequestId>, Request), FrameError> {
    let not_object = |detail: String| FrameError {
        id: None,
        message: format!("frame is not a JSON object: {detail}"),
    };
    // serde would also read a JSON array into the struct, by position.
    if !text.trim_start().starts_with('{') {
        return Err(not_object("expected `{`".into()));
    }
    let raw: RawFrame<'_> = serde_json::from_str(text).map_err(|e| not_object(e.to_string()))?;
    raw.into_request()
}

/// A raw JSON value that must be a string.
fn string_field(value: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(value.get()).ok()
}

impl RawFrame<'_> {
    fn into_request(self) -> Result<(Option<RequestId>, Request), FrameError> {
        let id = match self.id {
            None => None,
            Some(raw) => {
                let text = raw.get();
                match text.as_bytes().first() {
                    _ if text == "null" => None,
                    Some(b'-' | b'0'..=b'9') => Some(RequestId(raw.to_owned())),
                    Some(b'"') => match string_field(raw) {
                        Some(s) if s.len() <= MAX_ID_LEN => Some(RequestId(raw.to_owned())),
                        Some(_) => {
                            return Err(FrameError {
                                id: None,
                                message: format!("\"id\" is longer than {MAX_ID_LEN} bytes"),
                            });
                        }
                        None => None,
                    },
                    _ => {
                        return Err(FrameError {
                            id: None,
                            message: "\"id\" must be a number or a string".into(),
                        });
                    }
                }
            }
        };
        let fail = |message: String| FrameError {
            id: id.clone(),
            message,
        };
        let kind = match self.kind {
            None => return Err(fail("missing field \"type\"".into())),
            Some(raw) => {
                string_field(raw).ok_or_else(|| fail("\"type\" must be a string".into()))?
            }
        };
        let channel = |c: Option<&RawValue>| -> Result<Channel, FrameError> {
            let c = c.ok_or_else(|| fail(format!("\"{kind}\" needs a \"channel\"")))?;
            let c = string_field(c).ok_or_else(|| fail("\"channel\" must be a string".into()))?;
            Channel::parse(&c).map_err(|e| fail(format!("invalid channel: {e}")))
        };
        let token = |t: Option<&RawValue>| -> Result<String, FrameError> {
            let t = t.ok_or_else(|| fail(format!("\"{kind}\" needs a \"token\"")))?;
            string_field(t).ok_or_else(|| fail("\"token\" must be a string".into()))
        };
        let since = |v: Option<&RawValue>| -> Result<Option<Since>, FrameError> {
            v.filter(|v| v.get() != "null")
                .map(|v| {
                    serde_json::from_str::<Since>(v.get()).map_err(|e| {
                        fail(format!(
                            "\"since\" must be {{\"offset\":<number>,\"epoch\":\"<string>\"}}: {e}"
                        ))
                    })
                })
                .transpose()
        };
        let number = |name: &str, v: Option<&RawValue>| -> Result<Option<u64>, FrameError> {
            v.filter(|v| v.get() != "null")
                .map(|v| {
                    serde_json::from_str::<u64>(v.get())
                        .map_err(|_| fail(format!("\"{name}\" must be a non-negative integer")))
                })
                .transpose()
        };
        let request = match kind.as_str() {
            "auth" => Request::Auth {
                token: token(self.token)?,
            },
            "subscribe" => Request::Subscribe {
                channel: channel(self.channel)?,
                since: since(self.since)?,
            },
            "history" => {
                // `since` is an offset, or a position object whose offset is used.
                let after = match self.since {
                    Some(v) if v.get().trim_start().starts_with('{') => {
                        since(Some(v))?.map(|s| s.offset)
                    }
                    other => number("since", other)?,
                };
                Request::History {
                    channel: channel(self.channel)?,
                    since: after,
                    limit: number("limit", self.limit)?.map(|l| l as usize),
                }
            }
            "unsubscribe" => Request::Unsubscribe {
                channel: channel(self.channel)?,
            },
            "ping" => Request::Ping,
            "presence" => Request::Presence {
                channel: channel(self.channel)?,
            },
            "presence_stats" => Request::PresenceStats {
                channel: channel(self.channel)?,
            },
            "status" => Request::Status {
                channel: channel(self.channel)?,
                status: match self.status {
                    Some(v) => serde_json::from_str(v.get())
                        .map_err(|e| fail(format!("invalid \"status\": {e}")))?,
                    None => return Err(fail("\"status\" needs a \"status\" value".into())),
                },
            },
            "publish" | "send" => {
                let data = self
                    .data
                    .ok_or_else(|| fail(format!("\"{kind}\" needs a \"data\" value")))?;
                let data = Bytes::copy_from_slice(data.get().as_bytes());
                let channel = channel(self.channel)?;
                if kind == "publish" {
                    Request::Publish { channel, data }
                } else {
                    Request::Send { channel, data }
                }
            }
            "refresh" => Request::Refresh {
                token: token(self.token)?,
            },
            other => {
                let shown: String = other.chars().take(32).collect();
                return Err(fail(format!("unknown frame type {shown:?}")));
            }
        };
        Ok((id, request))
    }
}

/// Replies and notices the server sends, other than channel messages.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    ConnectionAck {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        conn_id: &'a str,
        user: &'a str,
        node: &'a str,
        heartbeat_s: u64,
        channels: Vec<&'a str>,
        /// Token expiry, seconds since the Unix epoch.
        expires_at: i64,
    },
    Subscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        channel: &'a str,
        /// History channels: the offset of the latest message; messages after it follow.
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        /// Present when the client asked to recover (`since`): whether every message it
        /// missed follows, or it must reload its state.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    Unsubscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        channel: &'a str,
        /// Set when the server ended the subscription (e.g. a refreshed token no longer grants it).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<ErrorCode>,
    },
    /// Messages of a history channel were lost on the way to this connection and could not
    /// be filled in: recover by subscribing again with `since`.
    Resync { channel: &'a str },
    Join {
        channel: &'a str,
        user: &'a str,
        conn_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        info: Option<&'a serde_json::Value>,
    },
    Leave {
        channel: &'a str,
        user: &'a str,
        conn_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        info: Option<&'a serde_json::Value>,
    },
    PresenceUpdate {
        channel: &'a str,
        user: &'a str,
        conn_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        info: Option<&'a serde_json::Value>,
        status: Option<&'a serde_json::Value>,
    },
    Presence {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        channel: &'a str,
        members: &'a [PresenceMember],
        /// Set when the list was cut short to fit the outbound queue (`presence_stats`
        /// gives the full counts).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    },
    PresenceStats {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        channel: &'a str,
        connections: usize,
        users: usize,
    },
    StatusUpdated {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        channel: &'a str,
    },
    Published {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        channel: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
    },
    Sent {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        channel: &'a str,
        stream_id: &'a str,
    },
    History {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        channel: &'a str,
        offset: u64,
        epoch: &'a str,
        messages: Vec<HistoryEntry>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
    Refreshed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        expires_at: i64,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        code: ErrorCode,
        message: &'a str,
    },
}

impl ServerFrame<'_> {
    /// The frame as WebSocket frame bytes, ready for the socket.
    pub fn encode(&self) -> Bytes {
        text_frame(&self.encode_json())
    }

    /// The frame as JSON text (events travel between nodes this way).
    pub fn encode_json(&self) -> Bytes {
        // Serialising these plain structs cannot fail: no maps with non-string keys, no
        // user-provided Serialize impls.
        Bytes::from(serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"type":"error","code":"internal","message":"encoding failed"}"#.to_vec()
        }))
    }
}

/// One message of a `history` reply.
#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    pub offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<std::sync::Arc<str>>,
    pub data: Box<RawValue>,
}

impl HistoryEntry {
    pub fn new(message: &crate::broker::HistoryMessage) -> HistoryEntry {
        let payload = &message.payload[..];
        let mut json = Vec::with_capacity(payload.len() + 2);
        push_data(&mut json, payload, is_json(payload));
        // `push_data` always writes one valid JSON value.
        let data = String::from_utf8(json)
            .ok()
            .and_then(|s| RawValue::from_string(s).ok())
            .unwrap_or_else(|| RawValue::from_string("null".into()).expect("valid JSON"));
        HistoryEntry {
            offset: message.offset,
            user: message.publisher.clone(),
            data,
        }
    }
}

/// What the gateway reads from a published payload, in one pass over it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PayloadInfo {
    /// The payload is one complete JSON value.
    pub is_json: bool,
    /// The top-level `timestamp` of a JSON object payload, in Unix milliseconds: a number
    /// (seconds, or milliseconds when above 10^11) or an RFC 3339 string.
    pub timestamp_ms: Option<f64>,
}

impl PayloadInfo {
    pub fn of(payload: &[u8]) -> PayloadInfo {
        #[derive(Deserialize)]
        struct Envelope {
            #[serde(default)]
            timestamp: Option<Timestamp>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Timestamp {
            Number(f64),
            Text(String),
        }
        let is_object = payload
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{');
        if is_object && let Ok(envelope) = serde_json::from_slice::<Envelope>(payload) {
            let timestamp_ms = match envelope.timestamp {
                Some(Timestamp::Number(n)) if n > 1e11 => Some(n),
                Some(Timestamp::Number(n)) => Some(n * 1000.0),
                Some(Timestamp::Text(t)) => humantime::parse_rfc3339_weak(&t)
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs_f64() * 1000.0),
                None => None,
            };
            return PayloadInfo {
                is_json: true,
                timestamp_ms,
            };
        }
        PayloadInfo {
            is_json: is_json(payload),
            timestamp_ms: None,
        }
    }
}

/// Encodes `{"type":"message","channel":...,"data":...}` as WebSocket frame bytes.
///
/// A payload that is valid JSON is embedded as the `data` value as it is; any other payload
/// becomes a JSON string (invalid UTF-8 replaced by U+FFFD). This is the publish contract of
/// `docs/publishing.md`, so it must not change shape.
pub fn message_frame(channel: &Channel, payload: &[u8]) -> Bytes {
    message_frame_with(channel, payload, is_json(payload), None, None)
}

/// [`message_frame`] for a payload already inspected ([`PayloadInfo`]), with the message's
/// place in history when it has one: `{"type":"message","channel":…,"offset":…,"epoch":…,"data":…}`.
pub fn message_frame_with(
    channel: &Channel,
    payload: &[u8],
    payload_is_json: bool,
    position: Option<&StreamPosition>,
    publisher: Option<&str>,
) -> Bytes {
    let mut json = Vec::with_capacity(payload.len() + channel.as_str().len() + 80);
    json.extend_from_slice(br#"{"type":"message","channel":""#);
    // Channel names are restricted to characters that need no JSON escaping.
    json.extend_from_slice(channel.as_str().as_bytes());
    json.push(b'"');
    if let Some(p) = position {
        json.extend_from_slice(br#","offset":"#);
        json.extend_from_slice(p.offset.to_string().as_bytes());
        json.extend_from_slice(br#","epoch":"#);
        // The epoch comes from Redis: escape it like any string.
        let _ = serde_json::to_writer(&mut json, &*p.epoch);
    }
    if let Some(user) = publisher {
        json.extend_from_slice(br#","user":"#);
        let _ = serde_json::to_writer(&mut json, user);
    }
    json.extend_from_slice(br#","data":"#);
    push_data(&mut json, payload, payload_is_json);
    json.push(b'}');
    text_frame(&json)
}

/// Appends the payload as a JSON value: verbatim when it is JSON, as a string otherwise.
fn push_data(out: &mut Vec<u8>, payload: &[u8], payload_is_json: bool) {
    if payload_is_json {
        out.extend_from_slice(payload);
    } else {
        let text = String::from_utf8_lossy(payload);
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &*text);
    }
}

/// True when the bytes are one complete JSON value.
pub fn is_json(payload: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok()
}

/// Wraps a text payload in an unmasked (server) WebSocket frame.
pub fn text_frame(payload: &[u8]) -> Bytes {
    encode_frame(Frame::text(Payload::Borrowed(payload)))
}

/// A close frame with a code and a short reason (truncated to fit the 125-byte control limit).
pub fn close_frame(code: CloseCode, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    encode_frame(Frame::close(code.code(), &reason.as_bytes()[..end]))
}

/// The server's heartbeat ping.
pub fn ping_frame() -> Bytes {
    encode_frame(Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b"")))
}

/// Encodes any frame (header and payload) into one buffer.
pub fn encode_frame(mut frame: Frame<'_>) -> Bytes {
    let mut head = [0u8; 14];
    let head_len = frame.fmt_head(&mut head);
    let mut out = Vec::with_capacity(head_len + frame.payload.len());
    out.extend_from_slice(&head[..head_len]);
    out.extend_from_slice(&frame.payload);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unframe(frame: &[u8]) -> serde_json::Value {
        // Server frames under 126 bytes have a 2-byte header; larger ones here use 4.
        let start = if frame[1] == 126 { 4 } else { 2 };
        serde_json::from_slice(&frame[start..]).unwrap()
    }

    #[test]
    fn json_payloads_are_embedded_and_others_become_strings() {
        let ch = Channel::parse("room:lobby").unwrap();
        let v = unframe(&message_frame(&ch, br#"{"type":"chat","text":"hi"}"#));
        assert_eq!(
            v,
            serde_json::json!({"type":"message","channel":"room:lobby","data":{"type":"chat","text":"hi"}})
        );
        let v = unframe(&message_frame(&ch, b"plain \"text\""));
        assert_eq!(v["data"], "plain \"text\"");
        let v = unframe(&message_frame(&ch, b"42"));
        assert_eq!(v["data"], 42);
        let v = unframe(&message_frame(&ch, b"{broken"));
        assert_eq!(v["data"], "{broken");
        let position = StreamPosition {
            offset: 42,
            epoch: "e\"1".into(),
        };
        let v = unframe(&message_frame_with(
            &ch,
            b"1",
            true,
            Some(&position),
            Some("u\"1"),
        ));
        assert_eq!(
            v,
            serde_json::json!({"type":"message","channel":"room:lobby","offset":42,"epoch":"e\"1","user":"u\"1","data":1})
        );
    }

    #[test]
    fn payload_timestamps_are_read_in_seconds_milliseconds_or_rfc3339() {
        let ms = |p: &str| PayloadInfo::of(p.as_bytes()).timestamp_ms;
        assert_eq!(ms(r#"{"timestamp":1700000000}"#), Some(1_700_000_000_000.0));
        assert_eq!(
            ms(r#"{"timestamp":1700000000123}"#),
            Some(1_700_000_000_123.0)
        );
        assert_eq!(
            ms(r#"{"type":"x","timestamp":"2023-11-14T22:13:20Z"}"#),
            Some(1_700_000_000_000.0)
        );
        assert_eq!(ms(r#"{"timestamp":{"nested":1}}"#), None);
        assert_eq!(ms(r#"["timestamp", 1]"#), None);
        assert!(PayloadInfo::of(br#"{"timestamp":{"nested":1}}"#).is_json);
        assert!(!PayloadInfo::of(b"{nope").is_json);
        assert!(PayloadInfo::of(b" [1,2]").is_json);
    }

    #[test]
    fn frames_parse_into_requests_and_keep_the_id_on_errors() {
        let (id, req) =
            parse_client_frame(r#"{"type":"subscribe","channel":"room:a","id":7}"#).unwrap();
        assert_eq!(id.unwrap().as_json(), "7");
        assert_eq!(
            req,
            Request::Subscribe {
                channel: Channel::parse("room:a").unwrap(),
                since: None,
            }
        );
        let (_, req) = parse_client_frame(
            r#"{"type":"subscribe","channel":"dag:7","since":{"offset":41,"epoch":"e1"}}"#,
        )
        .unwrap();
        assert!(matches!(
            req,
            Request::Subscribe {
                since: Some(Since { offset: 41, .. }),
                ..
            }
        ));
        assert!(
            parse_client_frame(r#"{"type":"subscribe","channel":"dag:7","since":41}"#).is_err()
        );
        let (_, req) =
            parse_client_frame(r#"{"type":"history","channel":"dag:7","since":3,"limit":10}"#)
                .unwrap();
        assert!(matches!(
            req,
            Request::History {
                since: Some(3),
                limit: Some(10),
                ..
            }
        ));
        let err = parse_client_frame(r#"{"type":"subscribe","id":"x"}"#).unwrap_err();
        assert_eq!(err.id.unwrap().as_json(), r#""x""#);
        // Ids are echoed exactly as sent.
        let (id, _) = parse_client_frame(r#"{"type":"ping","id":1.5e3}"#).unwrap();
        assert_eq!(id.unwrap().as_json(), "1.5e3");
        // Fields the type does not use are not looked at.
        assert!(parse_client_frame(r#"{"type":"subscribe","channel":"room:a","token":5}"#).is_ok());
        assert!(parse_client_frame(r#"["ping"]"#).is_err());
        // `null` is a status (cleared) and a payload, not a missing field.
        assert!(
            parse_client_frame(r#"{"type":"status","channel":"room:a","status":null}"#).is_ok()
        );
        assert!(parse_client_frame(r#"{"type":"publish","channel":"room:a","data":null}"#).is_ok());
        assert!(parse_client_frame(r#"{"type":"publish","channel":"room:a"}"#).is_err());
        let err = parse_client_frame(r#"{"type":"warp","id":1}"#).unwrap_err();
        assert!(
            err.message.contains("unknown frame type"),
            "{}",
            err.message
        );
        assert!(parse_client_frame("not json").is_err());
        assert!(parse_client_frame(r#"{"type":"ping","id":{"a":1}}"#).is_err());
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let long = "é".repeat(200);
        let frame = close_frame(CloseCode::Unauthorized, &long);
        assert!(frame.len() <= 2 + 125);
        assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), 4001);
    }
}
