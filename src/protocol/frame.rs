//! The encoded server frame: what every transport writes.
//!
//! Every server frame becomes a [`Frame`]: one line of JSON starting with `{"type":"<type>"`,
//! encoded once and shared (reference-counted) by every connection it goes to. Transports
//! turn a `Frame` into their wire format without touching the JSON: a WebSocket text frame
//! header in front of it, or `event:`/`id:`/`data:` lines around it for SSE. That is what
//! keeps fan-out at one encoding per message per node, whatever the transports.

use std::sync::Arc;

use bytes::Bytes;

use crate::channel::Channel;

/// Where a message of a history channel sits: transports that resume by themselves (SSE's
/// `Last-Event-ID`) track the last one they wrote per channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryMark {
    pub channel: Channel,
    pub offset: u64,
    pub epoch: Arc<str>,
}

/// One encoded server frame, ready for any transport. Cheap to clone.
///
/// Invariant: `json` is one complete JSON object on one line (no `\n` or `\r` bytes) that
/// starts with `{"type":"`. Frames built here keep it by construction; frames that arrive
/// from other nodes go through [`Frame::from_json`], which enforces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    json: Bytes,
    mark: Option<Arc<HistoryMark>>,
}

impl Frame {
    /// A frame from JSON text produced by a gateway (this node or another one, for events).
    /// Line breaks, which JSON only allows as whitespace, become spaces so that line-based
    /// transports (SSE) can carry any frame on one `data:` line.
    pub fn from_json(json: Bytes) -> Frame {
        Frame {
            json: single_line(json),
            mark: None,
        }
    }

    /// A channel message frame with its place in history.
    pub(crate) fn message(json: Bytes, mark: Option<HistoryMark>) -> Frame {
        Frame {
            json,
            mark: mark.map(Arc::new),
        }
    }

    /// The frame with a place in history: a reply that tells where the client now stands
    /// in a channel (`subscribed`).
    pub fn marked(mut self, mark: HistoryMark) -> Frame {
        self.mark = Some(Arc::new(mark));
        self
    }

    /// The JSON text of the frame.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    /// Set on messages of channels with history.
    pub fn mark(&self) -> Option<&HistoryMark> {
        self.mark.as_deref()
    }

    /// The frame's `type`, read from the front of its JSON.
    pub fn kind(&self) -> &str {
        const PREFIX: &[u8] = br#"{"type":""#;
        self.json
            .strip_prefix(PREFIX)
            .and_then(|rest| {
                let end = rest.iter().position(|b| *b == b'"')?;
                std::str::from_utf8(&rest[..end]).ok()
            })
            .unwrap_or("message")
    }

    pub fn len(&self) -> usize {
        self.json.len()
    }

    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }
}

/// JSON text with its line breaks (whitespace, in valid JSON) turned into spaces.
pub(crate) fn single_line(json: Bytes) -> Bytes {
    if !json.iter().any(|b| *b == b'\n' || *b == b'\r') {
        return json;
    }
    let flat: Vec<u8> = json
        .iter()
        .map(|b| if *b == b'\n' || *b == b'\r' { b' ' } else { *b })
        .collect();
    Bytes::from(flat)
}
