//! Channel messages: the `{"type":"message",...}` frame built around a published payload,
//! and what the gateway reads from a payload (is it JSON, does it carry a `timestamp`).
//!
//! The payload is embedded as it was published; this is the publish contract of
//! `docs/publishing.md`, so the shape of the frame must not change.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;

use super::reply::{Frame, HistoryMark, single_line};
use crate::channel::Channel;

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
/// A payload that is valid JSON is embedded as the `data` value as it is (line breaks, which
/// JSON allows only as whitespace, become spaces); any other payload becomes a JSON string
/// (invalid UTF-8 replaced by U+FFFD). This is the publish contract of `docs/publishing.md`,
/// so it must not change shape.
pub fn message_frame(channel: &Channel, payload: &[u8]) -> Frame {
    message_frame_with(channel, payload, is_json(payload), None, None)
}

/// [`message_frame`] for a payload already inspected ([`PayloadInfo`]), with the message's
/// place in history when it has one: `{"type":"message","channel":…,"offset":…,"epoch":…,"data":…}`.
pub fn message_frame_with(
    channel: &Channel,
    payload: &[u8],
    payload_is_json: bool,
    position: Option<(u64, &Arc<str>)>,
    publisher: Option<&str>,
) -> Frame {
    let mut json = Vec::with_capacity(payload.len() + channel.as_str().len() + 80);
    json.extend_from_slice(br#"{"type":"message","channel":""#);
    // Channel names are restricted to characters that need no JSON escaping.
    json.extend_from_slice(channel.as_str().as_bytes());
    json.push(b'"');
    if let Some((offset, epoch)) = position {
        json.extend_from_slice(br#","offset":"#);
        json.extend_from_slice(offset.to_string().as_bytes());
        json.extend_from_slice(br#","epoch":"#);
        // The epoch comes from Redis: escape it like any string.
        let _ = serde_json::to_writer(&mut json, &**epoch);
    }
    if let Some(user) = publisher {
        json.extend_from_slice(br#","user":"#);
        let _ = serde_json::to_writer(&mut json, user);
    }
    json.extend_from_slice(br#","data":"#);
    push_data(&mut json, payload, payload_is_json);
    json.push(b'}');
    let mark = position.map(|(offset, epoch)| HistoryMark {
        channel: channel.clone(),
        offset,
        epoch: epoch.clone(),
    });
    Frame::message(single_line(Bytes::from(json)), mark)
}

/// Appends the payload as a JSON value: verbatim when it is JSON, as a string otherwise.
pub(crate) fn push_data(out: &mut Vec<u8>, payload: &[u8], payload_is_json: bool) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(frame: &Frame) -> serde_json::Value {
        serde_json::from_slice(frame.json()).unwrap()
    }

    #[test]
    fn json_payloads_are_embedded_and_others_become_strings() {
        let ch = Channel::parse("room:lobby").unwrap();
        let v = parse(&message_frame(&ch, br#"{"type":"chat","text":"hi"}"#));
        assert_eq!(
            v,
            serde_json::json!({"type":"message","channel":"room:lobby","data":{"type":"chat","text":"hi"}})
        );
        let v = parse(&message_frame(&ch, b"plain \"text\""));
        assert_eq!(v["data"], "plain \"text\"");
        let v = parse(&message_frame(&ch, b"42"));
        assert_eq!(v["data"], 42);
        let v = parse(&message_frame(&ch, b"{broken"));
        assert_eq!(v["data"], "{broken");
        let epoch: Arc<str> = "e\"1".into();
        let v = parse(&message_frame_with(
            &ch,
            b"1",
            true,
            Some((42, &epoch)),
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
    fn pretty_printed_payloads_are_carried_on_one_line() {
        let ch = Channel::parse("room:lobby").unwrap();
        let frame = message_frame(&ch, b"{\n  \"a\": \"x\\ny\"\r\n}");
        assert!(!frame.json().contains(&b'\n') && !frame.json().contains(&b'\r'));
        assert_eq!(parse(&frame)["data"]["a"], "x\ny");
    }
}
