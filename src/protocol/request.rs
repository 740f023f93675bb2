//! Client frames: the JSON a client sends, parsed into a typed [`Request`].
//!
//! Parsing happens in two steps: first into a flat `RawFrame` (so a frame with a bad field
//! still yields its `id` for the error reply), then into a typed [`Request`]. Everything a
//! later layer sees is validated here: channel names, offsets (integers a Redis stream id and
//! a Lua number can both hold exactly), ids.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::channel::Channel;

/// Largest offset a client may name: offsets are exact integers in Redis' Lua (doubles), so
/// anything above 2^53 - 1 cannot be a real offset and would lose precision on the way.
pub const MAX_OFFSET: u64 = (1 << 53) - 1;

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
        /// A channel token granting this channel (when the connection token does not).
        token: Option<String>,
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
                    let since = serde_json::from_str::<Since>(v.get()).map_err(|e| {
                        fail(format!(
                            "\"since\" must be {{\"offset\":<number>,\"epoch\":\"<string>\"}}: {e}"
                        ))
                    })?;
                    if since.offset > MAX_OFFSET {
                        return Err(fail(format!(
                            "\"since\" offset must be at most {MAX_OFFSET}"
                        )));
                    }
                    Ok(since)
                })
                .transpose()
        };
        let number = |name: &str, v: Option<&RawValue>| -> Result<Option<u64>, FrameError> {
            v.filter(|v| v.get() != "null")
                .map(|v| {
                    serde_json::from_str::<u64>(v.get())
                        .ok()
                        .filter(|n| *n <= MAX_OFFSET)
                        .ok_or_else(|| {
                            fail(format!(
                                "\"{name}\" must be an integer from 0 to {MAX_OFFSET}"
                            ))
                        })
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
                token: match self.token {
                    Some(t) if t.get() != "null" => Some(token(Some(t))?),
                    _ => None,
                },
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

#[cfg(test)]
mod tests {
    use super::*;

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
                token: None,
            }
        );
        let (_, req) =
            parse_client_frame(r#"{"type":"subscribe","channel":"room:a","token":"t.k.n"}"#)
                .unwrap();
        assert!(matches!(req, Request::Subscribe { token: Some(t), .. } if t == "t.k.n"));
        assert!(
            parse_client_frame(r#"{"type":"subscribe","channel":"room:a","token":7}"#).is_err()
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
        assert!(
            parse_client_frame(r#"{"type":"subscribe","channel":"room:a","limit":"x"}"#).is_ok()
        );
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
    fn offsets_beyond_what_lua_holds_exactly_are_refused() {
        let err = parse_client_frame(
            r#"{"type":"history","channel":"user:1","since":18446744073709551615}"#,
        )
        .unwrap_err();
        assert!(err.message.contains("integer from 0 to"), "{}", err.message);
        assert!(
            parse_client_frame(r#"{"type":"history","channel":"user:1","since":9007199254740992}"#)
                .is_err()
        );
        assert!(
            parse_client_frame(r#"{"type":"history","channel":"user:1","since":9007199254740991}"#)
                .is_ok()
        );
        assert!(
            parse_client_frame(r#"{"type":"history","channel":"user:1","since":1.5}"#).is_err()
        );
        let err = parse_client_frame(
            r#"{"type":"subscribe","channel":"dag:1","since":{"offset":123456789012345678,"epoch":"e"}}"#,
        )
        .unwrap_err();
        assert!(err.message.contains("at most"), "{}", err.message);
    }
}
