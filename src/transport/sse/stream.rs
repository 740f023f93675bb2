//! The SSE [`Wire`]: a batch of frames becomes chunks of the response body as
//! `event:`/`id:`/`data:` blocks, heartbeats are comments, and the stream ends with a `close`
//! event carrying the same close code a WebSocket would get.
//!
//! The body is fed through a channel that hyper drains as the socket accepts bytes. What the
//! stream has handed to the body and the socket has not taken yet is counted, every byte of
//! it (events, `id:` lines, framing): it may not exceed `queue_max_bytes`, as a WebSocket's
//! bytes wait in its socket's buffer. A client that stops reading makes the writer wait for
//! room: after `write_timeout` without progress the stream ends, and meanwhile the outbox
//! fills and cuts the client as a slow consumer, as on a WebSocket. So one stream holds at
//! most `queue_max_bytes` of unsent bytes plus its outbox (`queue_max_bytes` of frames,
//! shared with other subscribers), whatever its events carry. Batches are written in
//! pieces of [`PIECE`] bytes, so a batch of events with long `id:` lines is never built
//! whole. Each frame's JSON (shared by every subscriber) is copied into the chunk as is,
//! never re-encoded. An SSE client cannot answer heartbeats, so the write timeout is what
//! finds a dead one.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, timeout, timeout_at};

use super::resume::Positions;
use crate::outbox::{Ending, Outgoing};
use crate::transport::connection::Connection;
use crate::transport::driver::{Progress, Wire};

/// A batch is encoded into body chunks of about this many bytes (one event may be larger).
pub const PIECE: usize = 64 * 1024;

/// Bytes handed to the response body that the socket has not taken yet.
#[derive(Default)]
struct Unsent {
    bytes: AtomicUsize,
    /// Woken as the socket takes chunks.
    taken: Notify,
}

/// A chunk of the body that gives its bytes back to [`Unsent`] when hyper is done with it
/// (written to the socket, or dropped with the stream).
struct Tracked {
    chunk: Bytes,
    unsent: Arc<Unsent>,
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.chunk
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.unsent
            .bytes
            .fetch_sub(self.chunk.len(), Ordering::AcqRel);
        self.unsent.taken.notify_one();
    }
}

/// An SSE response body, as the driver writes to it.
struct SseWire<'a> {
    body: &'a mpsc::Sender<Bytes>,
    /// The stream's positions, for the `id:` of history messages (locked only while a
    /// piece is encoded).
    positions: Mutex<Positions>,
    write_timeout: Duration,
    unsent: Arc<Unsent>,
    /// Most unsent bytes (`queue_max_bytes`).
    limit: usize,
}

impl SseWire<'_> {
    /// Hands a chunk to the response body once the unsent bytes leave room for it (or
    /// there are none): waits at most `write_timeout` for the socket to take anything.
    async fn send(&self, chunk: Bytes) -> Result<(), Ending> {
        let len = chunk.len();
        let mut deadline = Instant::now() + self.write_timeout;
        loop {
            let taken = self.unsent.taken.notified();
            let unsent = self.unsent.bytes.load(Ordering::Acquire);
            if unsent == 0 || unsent + len <= self.limit {
                break;
            }
            match timeout_at(deadline, taken).await {
                // The socket took something: progress, the timeout starts again.
                Ok(()) => deadline = Instant::now() + self.write_timeout,
                Err(_) => return Err(Ending::WriteTimeout),
            }
            if self.body.is_closed() {
                return Err(Ending::ConnectionLost);
            }
        }
        self.unsent.bytes.fetch_add(len, Ordering::AcqRel);
        let tracked = Bytes::from_owner(Tracked {
            chunk,
            unsent: self.unsent.clone(),
        });
        send(self.body, tracked, self.write_timeout).await
    }
}

impl Wire for SseWire<'_> {
    async fn write(&self, batch: &[Outgoing]) -> Result<(), Ending> {
        let mut rest = batch;
        while !rest.is_empty() {
            let (chunk, used) = {
                let mut positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
                encode_batch(rest, &mut positions, PIECE)
            };
            rest = &rest[used..];
            self.send(chunk).await?;
        }
        Ok(())
    }

    async fn heartbeat(&self) -> Result<(), Ending> {
        self.send(Bytes::from_static(b": ping\n\n")).await
    }

    async fn close(&self, code: u16, reason: &str) {
        let _ = self.send(close_event(code, reason)).await;
    }

    fn progress(&self) -> Option<Progress> {
        None
    }

    async fn gone(&self) {
        self.body.closed().await
    }
}

/// Writes the stream's first event (the reconnect delay a browser should use), then drains
/// the connection's outbox into `body` until the stream ends; returns how it ended.
pub async fn run(body: &mpsc::Sender<Bytes>, connection: &Connection, retry_ms: u64) -> Ending {
    let write_timeout = connection.node.config.write_timeout;
    let start = Bytes::from(format!("retry: {retry_ms}\n\n"));
    if let Err(ending) = send(body, start, write_timeout).await {
        return ending;
    }
    let wire = SseWire {
        body,
        positions: Mutex::new(Positions::default()),
        write_timeout,
        unsent: Arc::new(Unsent::default()),
        limit: connection.node.config.limits.queue_max_bytes,
    };
    connection.drive(&wire).await
}

/// Hands a chunk to the response body, waiting at most `limit` for the client to take it.
async fn send(body: &mpsc::Sender<Bytes>, chunk: Bytes, limit: Duration) -> Result<(), Ending> {
    match body.try_send(chunk) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(Ending::ConnectionLost),
        Err(mpsc::error::TrySendError::Full(chunk)) => match timeout(limit, body.send(chunk)).await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ending::ConnectionLost),
            Err(_) => Err(Ending::WriteTimeout),
        },
    }
}

/// One body chunk for the front of a batch of frames: `event: <type>`, an `id:` with the
/// stream's positions after each history message, and `data: <json>`; as many frames as fit
/// `max` bytes (at least one). Returns the chunk and how many frames it holds.
fn encode_batch(batch: &[Outgoing], positions: &mut Positions, max: usize) -> (Bytes, usize) {
    let mut out = BytesMut::with_capacity(
        max.min(
            batch
                .iter()
                .map(|o| match o {
                    Outgoing::Frame(f) => f.len() + 32,
                    Outgoing::Wire(b) => b.len(),
                })
                .sum(),
        ),
    );
    let mut used = 0;
    for item in batch {
        if used > 0 && out.len() >= max {
            break;
        }
        used += 1;
        match item {
            Outgoing::Frame(frame) => {
                let kind = frame.kind();
                out.put_slice(b"event: ");
                out.put_slice(kind.as_bytes());
                out.put_u8(b'\n');
                if let Some(mark) = frame.mark() {
                    positions.record(mark);
                    if !positions.is_empty() {
                        out.put_slice(b"id: ");
                        positions.write_to(&mut out);
                        out.put_u8(b'\n');
                    }
                } else if kind == "unsubscribed"
                    && let Some(channel) = unsubscribed_channel(frame.json())
                {
                    positions.forget(&channel);
                }
                out.put_slice(b"data: ");
                out.put_slice(frame.json());
                out.put_slice(b"\n\n");
            }
            Outgoing::Wire(bytes) => out.put_slice(bytes),
        }
    }
    (out.freeze(), used)
}

/// The channel an `unsubscribed` frame names (rare: parsing it is fine).
fn unsubscribed_channel(json: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Unsubscribed {
        channel: String,
    }
    serde_json::from_slice::<Unsubscribed>(json)
        .ok()
        .map(|u| u.channel)
}

/// The `close` event that ends a stream: the close code and reason a WebSocket would get.
pub fn close_event(code: u16, reason: &str) -> Bytes {
    #[derive(serde::Serialize)]
    struct Close<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        code: u16,
        reason: &'a str,
    }
    let data = serde_json::to_string(&Close {
        kind: "close",
        code,
        reason,
    })
    .unwrap_or_default();
    Bytes::from(format!("event: close\ndata: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Channel;
    use crate::protocol::{HistoryEntry, ServerFrame, is_json, message_frame_with};
    use std::sync::Arc;

    /// The events of a complete stream, read as the SSE specification says: UTF-8, lines
    /// ending at CRLF, LF or CR, `data` lines joined with LF, dispatched at a blank line.
    fn strict_events(stream: &[u8]) -> Vec<(String, String)> {
        let text = std::str::from_utf8(stream).expect("an SSE stream is UTF-8");
        let mut events = Vec::new();
        let (mut event, mut data) = (String::new(), Vec::<&str>::new());
        let mut rest = text;
        while let Some(end) = rest.find(['\r', '\n']) {
            let line = &rest[..end];
            let skip = if rest[end..].starts_with("\r\n") {
                2
            } else {
                1
            };
            rest = &rest[end + skip..];
            if line.is_empty() {
                if !data.is_empty() {
                    events.push((std::mem::take(&mut event), data.join("\n")));
                }
                data.clear();
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event = value.to_owned(),
                "data" => data.push(value),
                "id" => assert!(!value.contains('\0')),
                "" | "retry" => {}
                other => panic!("not a field of ours: {other:?} in {text:?}"),
            }
        }
        assert!(rest.is_empty(), "the stream ends with a complete event");
        events
    }

    /// Payload bytes: arbitrary, or JSON with line breaks and other traps between tokens.
    fn payload(rng: &mut u64) -> Vec<u8> {
        let mut next = || {
            *rng ^= *rng << 13;
            *rng ^= *rng >> 7;
            *rng ^= *rng << 17;
            *rng
        };
        const ANY: &[&[u8]] = &[
            b"\r",
            b"\n",
            b"\r\n",
            b"\0",
            b"\xff",
            b"\xe2\x80\xa8",
            b"\xc3",
            b"\xa9",
            b"\"",
            b"{",
            b"}",
            b"[",
            b"]",
            b":",
            b",",
            b" ",
            b"a",
            b"1",
            b"\\",
            b"data: x",
        ];
        const JSON: &[&[u8]] = &[
            b"{\"a\":\r\n1}",
            b"[\n1,\r2\r\n]",
            b"\"x\\ny\"",
            b"\"\xe2\x80\xa8\"",
            b"\"\\u0000\"",
            b"\n{\"b\" :\r[ ]\n}\r\n",
            b"\"\xff\"",
            b"{\"c\":\"\r\"}",
        ];
        let n = (next() % 12) as usize;
        let pieces = if next() % 2 == 0 { ANY } else { JSON };
        let mut out = Vec::new();
        for _ in 0..n.max(1) {
            out.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
        }
        if pieces == JSON && next() % 2 == 0 {
            // One whole JSON value, more often than chance makes one.
            out = pieces[(next() % pieces.len() as u64) as usize].to_vec();
        }
        out
    }

    #[test]
    fn any_payload_makes_valid_events_in_every_frame_that_carries_it() {
        let dag = Channel::parse("dag:7").unwrap();
        let room = Channel::parse("room:a").unwrap();
        let epoch: Arc<str> = "e1".into();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut positions = Positions::default();
        for round in 0..3000u64 {
            let p = payload(&mut rng);
            let history = ServerFrame::History {
                id: None,
                channel: "dag:7",
                offset: round,
                epoch: "e1",
                messages: vec![
                    HistoryEntry::new(1, None, &p),
                    HistoryEntry::new(2, Some("u".into()), &p),
                ],
            };
            let batch = vec![
                Outgoing::Frame(message_frame_with(&room, &p, is_json(&p), None, None)),
                Outgoing::Frame(message_frame_with(
                    &dag,
                    &p,
                    is_json(&p),
                    Some((round + 1, &epoch)),
                    Some("u\r\n"),
                )),
                Outgoing::Frame(history.encode()),
                Outgoing::Frame(
                    ServerFrame::Error {
                        id: None,
                        code: crate::protocol::ErrorCode::BadRequest,
                        message: &String::from_utf8_lossy(&p),
                    }
                    .encode(),
                ),
            ];
            let (chunk, used) = encode_batch(&batch, &mut positions, PIECE);
            assert_eq!(used, batch.len());
            let events = strict_events(&chunk);
            assert_eq!(events.len(), 4, "payload {p:?}");
            for ((event, data), kind) in events
                .iter()
                .zip(["message", "message", "history", "error"])
            {
                let value: serde_json::Value = serde_json::from_str(data).unwrap_or_else(|e| {
                    panic!("payload {p:?}: {event} is not JSON ({e}): {data:?}")
                });
                assert_eq!(
                    (event.as_str(), &value["type"]),
                    (kind, &serde_json::json!(kind))
                );
            }
        }
    }

    #[test]
    fn frames_become_events_with_ids_on_history_messages() {
        let channel = Channel::parse("dag:7").unwrap();
        let epoch: Arc<str> = "e1".into();
        let batch = vec![
            Outgoing::Frame(ServerFrame::Pong { id: None }.encode()),
            Outgoing::Frame(message_frame_with(
                &channel,
                b"{\"a\":1}",
                true,
                Some((5, &epoch)),
                None,
            )),
        ];
        let mut positions = Positions::default();
        let (chunk, used) = encode_batch(&batch, &mut positions, PIECE);
        assert_eq!(used, 2);
        let text = String::from_utf8(chunk.to_vec()).unwrap();
        assert_eq!(
            text,
            "event: pong\ndata: {\"type\":\"pong\"}\n\nevent: message\nid: dag:7=5:e1\ndata: {\"type\":\"message\",\"channel\":\"dag:7\",\"offset\":5,\"epoch\":\"e1\",\"data\":{\"a\":1}}\n\n"
        );
        // A small piece holds one frame: the rest goes in the next.
        let (_, used) = encode_batch(&batch, &mut positions, 1);
        assert_eq!(used, 1);
        let close = String::from_utf8(
            close_event(crate::protocol::CloseCode::SlowConsumer.code(), "slow").to_vec(),
        )
        .unwrap();
        assert_eq!(
            close,
            "event: close\ndata: {\"type\":\"close\",\"code\":4008,\"reason\":\"slow\"}\n\n"
        );
    }
}
