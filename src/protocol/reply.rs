//! Server frames other than channel messages: the replies and notices the gateway sends,
//! serialised once into a [`Frame`].

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::codes::ErrorCode;
use super::frame::Frame;
use super::payload::push_data;
use super::request::RequestId;

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
        /// Seconds the token has left by this node's clock ([`expires_in`]): what a client
        /// whose clock is wrong schedules its refresh from.
        expires_in: u64,
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
        /// The backend subscribed the connection (`subscribe` of the server API), not the
        /// client.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        server: bool,
    },
    Unsubscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        channel: &'a str,
        /// Set when the server ended the subscription because of the client's credentials (a
        /// refreshed token no longer grants it, its channel token expired or was revoked).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<ErrorCode>,
        /// The backend ended the subscription (`unsubscribe` of the server API).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        server: bool,
    },
    /// The backend is ending the connection (`disconnect` of the server API): the close that
    /// follows has this code and reason; `reconnect` says whether the client should come
    /// back by itself.
    Disconnect {
        code: u16,
        reason: &'a str,
        reconnect: bool,
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
        /// The members, as JSON (the broker's member type, serialised by the caller).
        members: &'a RawValue,
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
        /// As in `connection_ack`: the new token's remaining lifetime, in seconds.
        expires_in: u64,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        code: ErrorCode,
        message: &'a str,
    },
}

/// The seconds left until `expires_at` (Unix seconds) by this node's clock, rounded down;
/// 0 once it has passed. Clients time their token refresh from this rather than from their
/// own clock, which may be minutes off.
pub fn expires_in(expires_at: i64) -> u64 {
    let left_ms = expires_at
        .saturating_mul(1000)
        .saturating_sub(crate::clock::unix_now_ms());
    u64::try_from(left_ms / 1000).unwrap_or(0)
}

impl ServerFrame<'_> {
    /// The frame, encoded once, for any transport. On one line whatever it carries: a
    /// payload embedded as JSON (a `history` reply's messages) may hold line breaks, which
    /// JSON allows only as whitespace.
    pub fn encode(&self) -> Frame {
        Frame::from_json(self.encode_json())
    }

    /// The frame as JSON text (events travel between nodes this way).
    pub fn encode_json(&self) -> Bytes {
        // Serialising these plain structs cannot fail: no maps with non-string keys, no
        // user-provided Serialize impls. serde_json's compact output has no line breaks.
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
    pub user: Option<Arc<str>>,
    pub data: Box<RawValue>,
}

impl HistoryEntry {
    /// A history entry from a stored payload (embedded as JSON, or as a string when it is
    /// not JSON, exactly as live messages are).
    pub fn new(offset: u64, user: Option<Arc<str>>, payload: &[u8]) -> HistoryEntry {
        let mut json = Vec::with_capacity(payload.len() + 2);
        push_data(&mut json, payload, super::payload::is_json(payload));
        // `push_data` always writes one valid JSON value.
        let data = String::from_utf8(json)
            .ok()
            .and_then(|s| RawValue::from_string(s).ok())
            .unwrap_or_else(|| RawValue::from_string("null".into()).expect("valid JSON"));
        HistoryEntry { offset, user, data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_know_their_type_and_stay_on_one_line() {
        let frame = Frame::from_json(Bytes::from_static(b"{\"type\":\"join\",\n\"a\":1}"));
        assert_eq!(frame.kind(), "join");
        assert!(!frame.json().contains(&b'\n'));
        let pong = ServerFrame::Pong { id: None }.encode();
        assert_eq!(pong.kind(), "pong");
        assert_eq!(&pong.json()[..], br#"{"type":"pong"}"#);
    }
}
