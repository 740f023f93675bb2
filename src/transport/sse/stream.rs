//! The SSE [`Wire`]: a batch of frames becomes one chunk of the response body as
//! `event:`/`id:`/`data:` blocks, heartbeats are comments, and the stream ends with a `close`
//! event carrying the same close code a WebSocket would get.
//!
//! The body is fed through a small channel that hyper drains as the socket accepts bytes, so
//! a client that stops reading makes `send` wait: after `write_timeout` without progress the
//! stream ends, and meanwhile the outbox fills and cuts the client as a slow consumer, as on
//! a WebSocket. Each frame's JSON (shared by every subscriber) is copied into the chunk as
//! is, never re-encoded. An SSE client cannot answer heartbeats, so the write timeout is what
//! finds a dead one.

use std::sync::Mutex;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::resume::Positions;
use crate::outbox::{Ending, Outgoing};
use crate::transport::connection::Connection;
use crate::transport::driver::{Progress, Wire};

/// An SSE response body, as the driver writes to it.
struct SseWire<'a> {
    body: &'a mpsc::Sender<Bytes>,
    /// The stream's positions, for the `id:` of history messages (locked only while a
    /// batch is encoded).
    positions: Mutex<Positions>,
    write_timeout: Duration,
}

impl Wire for SseWire<'_> {
    async fn write(&self, batch: &[Outgoing]) -> Result<(), Ending> {
        let chunk = {
            let mut positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
            encode_batch(batch, &mut positions)
        };
        send(self.body, chunk, self.write_timeout).await
    }

    async fn heartbeat(&self) -> Result<(), Ending> {
        send(
            self.body,
            Bytes::from_static(b": ping\n\n"),
            self.write_timeout,
        )
        .await
    }

    async fn close(&self, code: u16, reason: &str) {
        let _ = send(self.body, close_event(code, reason), self.write_timeout).await;
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

/// One body chunk for a batch of frames: `event: <type>`, an `id:` with the stream's
/// positions after each history message, and `data: <json>`.
fn encode_batch(batch: &[Outgoing], positions: &mut Positions) -> Bytes {
    let size: usize = batch
        .iter()
        .map(|o| match o {
            Outgoing::Frame(f) => f.len() + 32,
            Outgoing::Wire(b) => b.len(),
        })
        .sum();
    let mut out = BytesMut::with_capacity(size);
    for item in batch {
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
    out.freeze()
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
    use crate::protocol::{ServerFrame, message_frame_with};
    use std::sync::Arc;

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
        let text = String::from_utf8(encode_batch(&batch, &mut positions).to_vec()).unwrap();
        assert_eq!(
            text,
            "event: pong\ndata: {\"type\":\"pong\"}\n\nevent: message\nid: dag:7=5:e1\ndata: {\"type\":\"message\",\"channel\":\"dag:7\",\"offset\":5,\"epoch\":\"e1\",\"data\":{\"a\":1}}\n\n"
        );
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
