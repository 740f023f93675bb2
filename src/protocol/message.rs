//! Channel messages: the `{"type":"message",...}` frame built around a published payload.
//!
//! The payload is embedded as it was published; this is the publish contract of
//! `docs/publishing.md`, so the shape of the frame must not change.

use std::sync::Arc;

use bytes::Bytes;

use super::frame::{Frame, HistoryMark, single_line};
use super::payload::push_data;
use crate::channel::Channel;

/// Encodes `{"type":"message","channel":...,"data":...}` into a [`Frame`], for a payload
/// already inspected (`PayloadInfo`, `is_json`), with the message's place in history when it
/// has one (`{"type":"message","channel":…,"offset":…,"epoch":…,"data":…}`) and its
/// publisher's user.
///
/// A payload that is valid JSON is embedded as the `data` value as it is (line breaks, which
/// JSON allows only as whitespace, become spaces); any other payload becomes a JSON string
/// (invalid UTF-8 replaced by U+FFFD). This is the publish contract of `docs/publishing.md`,
/// so it must not change shape.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{PayloadInfo, is_json};

    fn parse(frame: &Frame) -> serde_json::Value {
        serde_json::from_slice(frame.json()).unwrap()
    }

    /// The frame of a live message outside history, as the hub builds it.
    fn message_frame(channel: &Channel, payload: &[u8]) -> Frame {
        message_frame_with(channel, payload, is_json(payload), None, None)
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
