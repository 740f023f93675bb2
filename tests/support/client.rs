//! WebSocket clients (tokio-tungstenite, an independent implementation of RFC 6455), and
//! the recovery bookkeeping a client following docs/protocol.md keeps.
#![allow(unused_imports)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::*;

/// An upgrade refused with an HTTP status.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body)
    }
}

/// What a client saw when reading.
#[derive(Debug)]
pub enum Seen {
    Json(Value),
    Close(Option<u16>, String),
    /// The connection ended without a close frame.
    Ended,
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// The next frame of interest (JSON text, close, or end), skipping pings and pongs.
    pub async fn next(&mut self) -> Seen {
        self.next_within(WAIT)
            .await
            .expect("nothing received in time")
    }

    pub async fn next_within(&mut self, within: Duration) -> Option<Seen> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(Seen::Ended),
                Ok(Some(Err(_))) => return Some(Seen::Ended),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    return Some(Seen::Json(
                        serde_json::from_str(&t).expect("server sent JSON"),
                    ));
                }
                Message::Close(frame) => {
                    return Some(match frame {
                        Some(CloseFrame { code, reason }) => {
                            Seen::Close(Some(code.into()), reason.to_string())
                        }
                        None => Seen::Close(None, String::new()),
                    });
                }
                Message::Binary(_) => panic!("server sent a binary frame"),
                _ => continue,
            }
        }
    }

    /// The next JSON frame; panics on close.
    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Seen::Json(v) => v,
            other => panic!("expected a JSON frame, got {other:?}"),
        }
    }

    /// Sends a request and returns the reply (the next frame).
    pub async fn request(&mut self, v: Value) -> Value {
        self.send(v).await;
        self.recv().await
    }

    /// Subscribes and asserts success.
    pub async fn subscribe(&mut self, channel: &str) {
        let reply = self
            .request(json!({"type": "subscribe", "channel": channel}))
            .await;
        assert_eq!(reply["type"], "subscribed", "subscribe {channel}: {reply}");
    }

    /// Expects the server to close; returns the close code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.next().await {
                Seen::Json(v) if v["type"] == "message" => continue,
                Seen::Json(v) => panic!("expected close, got {v}"),
                Seen::Close(code, reason) => return (code.unwrap_or(1005), reason),
                Seen::Ended => panic!("connection ended without a close frame"),
            }
        }
    }

    /// Asserts nothing arrives for a while (used after unsubscribe and the like).
    pub async fn expect_silence(&mut self, within: Duration) {
        if let Some(seen) = self.next_within(within).await {
            panic!("expected nothing, got {seen:?}");
        }
    }
}

/// What a client following the recovery protocol keeps per channel: the last position it
/// processed and everything it processed, in order.
#[derive(Debug, Default, Clone)]
pub struct Tracker {
    pub epoch: String,
    pub offset: u64,
    pub seen: Vec<Value>,
    pub duplicates: usize,
}

impl Tracker {
    /// The `since` to send when (re)subscribing.
    pub fn since(&self) -> Value {
        json!({"offset": self.offset, "epoch": self.epoch})
    }

    /// Adopts the position of a `subscribed` reply (after a fresh subscribe or a failed recovery).
    pub fn start_at(&mut self, reply: &Value) {
        self.epoch = reply["epoch"].as_str().unwrap_or_default().to_owned();
        self.offset = reply["offset"].as_u64().unwrap_or(0);
    }

    /// Processes a `message` frame: counts duplicates instead of processing them twice.
    pub fn process(&mut self, msg: &Value) {
        let offset = msg["offset"].as_u64().expect("message with an offset");
        if msg["epoch"] == self.epoch.as_str() && offset <= self.offset {
            self.duplicates += 1;
            return;
        }
        assert_eq!(
            msg["epoch"],
            self.epoch.as_str(),
            "epoch changed mid-stream: {msg}"
        );
        assert_eq!(offset, self.offset + 1, "gap before {msg}");
        self.offset = offset;
        self.seen.push(msg["data"].clone());
    }
}

impl Client {
    /// Subscribes with `since` and returns the `subscribed` reply.
    pub async fn recover(&mut self, channel: &str, tracker: &Tracker) -> Value {
        let reply = self
            .request(json!({"type": "subscribe", "channel": channel, "since": tracker.since()}))
            .await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        reply
    }

    /// Reads messages of `channel` into the tracker until it has processed `count` in total.
    pub async fn read_until(&mut self, channel: &str, tracker: &mut Tracker, count: usize) {
        while tracker.seen.len() < count {
            let msg = self.recv().await;
            if msg["type"] == "message" && msg["channel"] == channel {
                tracker.process(&msg);
            }
        }
    }
}

/// Connects to `/ws` at `node` with a bearer token through a socket whose receive buffer is
/// `recv_buffer` bytes, so that a client that stops or slows reading backs up into the node
/// quickly; returns the client after its `connection_ack`.
pub async fn connect_small(node: SocketAddr, token: &str, recv_buffer: u32) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(recv_buffer).unwrap();
    let stream = socket.connect(node).await.unwrap();
    let mut request = format!("ws://{node}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    let mut client = Client { ws };
    assert_eq!(client.recv().await["type"], "connection_ack");
    client
}

/// Holds a reader to a number of messages per second (a client busy with other work).
pub struct Pace {
    per_second: f64,
    since: tokio::time::Instant,
    count: f64,
}

impl Pace {
    pub fn new(per_second: f64) -> Pace {
        Pace {
            per_second,
            since: tokio::time::Instant::now(),
            count: 0.0,
        }
    }

    /// Changes the rate from now on.
    pub fn set(&mut self, per_second: f64) {
        *self = Pace::new(per_second);
    }

    /// Counts one message, sleeping first if the reader is ahead of its pace.
    pub async fn one(&mut self) {
        self.count += 1.0;
        if !self.per_second.is_finite() {
            return;
        }
        let due = self.since + Duration::from_secs_f64(self.count / self.per_second);
        // Sleep in steps of at least 5 ms: timers are coarse, and so are busy clients.
        if due > tokio::time::Instant::now() + Duration::from_millis(5) {
            tokio::time::sleep_until(due).await;
        }
    }
}
