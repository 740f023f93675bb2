//! The benchmark's Server-Sent Events clients: one HTTP/1.1 `GET /sse?token=..&channel=..`
//! per connection, its `text/event-stream` body parsed incrementally.
//!
//! The connection is driven in the client's own task (no task per connection for hyper's
//! I/O), so stopping the client closes its socket. What is counted is what the WebSocket
//! clients count: a delivery is an event whose `data` carries the publisher's `"t":` send
//! time, and a `close` event or the end of the stream is a disconnect.

use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::Incoming;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::header::{ACCEPT, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::clients::Stats;

/// Most bytes one event (or one line still waiting for its end) may take: far above the
/// gateway's frame size limit, so only a broken stream reaches it.
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;
/// How long the handshake, and then `connection_ack` and `subscribed`, may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// One open event stream.
pub struct SseStream {
    /// Kept so that hyper does not start shutting the connection down.
    _sender: SendRequest<Empty<Bytes>>,
    /// hyper's I/O for this connection, polled alongside the body.
    connection: Pin<Box<Connection<TokioIo<TcpStream>, Empty<Bytes>>>>,
    connection_done: bool,
    body: Incoming,
    parser: EventParser,
}

/// Connects from `source`, sends `GET /sse?token=..&channel=..`, and waits for the stream's
/// `connection_ack` and `subscribed` events.
pub async fn open(
    source: Ipv4Addr,
    target: SocketAddr,
    token: &str,
    channel: &str,
) -> Result<SseStream, String> {
    let deadline = Instant::now() + OPEN_TIMEOUT;
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {}", e.kind()))?;
    let _ = socket.set_reuseaddr(true);
    socket
        .bind(SocketAddr::new(source.into(), 0))
        .map_err(|e| format!("bind {source}: {}", e.kind()))?;
    let tcp = tokio::time::timeout_at(deadline, socket.connect(target))
        .await
        .map_err(|_| "connect: timeout".to_owned())?
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("http handshake: {e}"))?;
    let mut connection = Box::pin(connection);
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("token", token)
        .append_pair("channel", channel)
        .finish();
    let request = Request::get(format!("/sse?{query}"))
        .header(HOST, target.to_string())
        .header(ACCEPT, "text/event-stream")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    // The response head needs the connection driven while the request is in flight.
    let response = tokio::time::timeout_at(deadline, async {
        tokio::select! {
            response = sender.send_request(request) => response.map_err(|e| format!("request: {e}")),
            ended = connection.as_mut() => Err(match ended {
                Ok(()) => "request: connection closed".to_owned(),
                Err(e) => format!("request: {e}"),
            }),
        }
    })
    .await
    .map_err(|_| "request: timeout".to_owned())??;
    if response.status() != 200 {
        return Err(format!("response: HTTP {}", response.status().as_u16()));
    }
    let mut stream = SseStream {
        _sender: sender,
        connection,
        connection_done: false,
        body: response.into_body(),
        parser: EventParser::default(),
    };
    stream.expect("connection_ack", deadline).await?;
    stream.expect("subscribed", deadline).await?;
    Ok(stream)
}

impl SseStream {
    /// Reads until an event of `kind`; an `error` or `close` event, or the end of the stream,
    /// is a failure.
    async fn expect(&mut self, kind: &str, deadline: Instant) -> Result<(), String> {
        loop {
            while let Some(event) = self
                .parser
                .next_event()
                .map_err(|e| format!("{kind}: {e}"))?
            {
                match event.kind {
                    k if k == kind.as_bytes() => return Ok(()),
                    b"error" => {
                        return Err(format!("{kind}: {}", String::from_utf8_lossy(event.data)));
                    }
                    b"close" => return Err(format!("{kind}: closed by the gateway")),
                    _ => {}
                }
            }
            match tokio::time::timeout_at(deadline, self.next_chunk()).await {
                Err(_) => return Err(format!("{kind}: timeout")),
                Ok(Err(e)) => return Err(format!("{kind}: {e}")),
                Ok(Ok(None)) => return Err(format!("{kind}: the stream ended")),
                Ok(Ok(Some(chunk))) => self.parser.push(&chunk),
            }
        }
    }

    /// Times every message until the stream ends or the task is stopped; client `i`
    /// records into its latency shard.
    pub async fn read(mut self, i: usize, stats: &Stats) {
        loop {
            loop {
                match self.parser.next_event() {
                    Ok(Some(event)) if event.kind == b"close" => {
                        stats.disconnected();
                        return;
                    }
                    Ok(Some(event)) => stats.delivery(i, event.data),
                    Ok(None) => break,
                    Err(_) => {
                        stats.disconnected();
                        return;
                    }
                }
            }
            match self.next_chunk().await {
                Ok(Some(chunk)) => self.parser.push(&chunk),
                Ok(None) | Err(_) => {
                    stats.disconnected();
                    return;
                }
            }
        }
    }

    /// The next piece of the body (`None` at its end), driving the connection meanwhile.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            tokio::select! {
                biased;
                frame = self.body.frame() => match frame {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(format!("body: {e}")),
                    // Trailers carry no events.
                    Some(Ok(frame)) => if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    },
                },
                ended = self.connection.as_mut(), if !self.connection_done => {
                    // The body may still hold what was read before the end.
                    self.connection_done = true;
                    if let Err(e) = ended {
                        return Err(format!("connection: {e}"));
                    }
                }
            }
        }
    }
}

/// One event of the stream, borrowed from the parser until the next call.
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field, `message` when the event has none.
    pub kind: &'a [u8],
    /// The `data:` lines, joined by `\n`.
    pub data: &'a [u8],
}

/// An incremental `text/event-stream` parser (the WHATWG rules the gateway relies on):
/// lines end with LF or CRLF and may be split anywhere across reads; `field: value` with
/// one optional space after the colon; lines starting with `:` are comments (the gateway's
/// `: ping`); a blank line ends an event, which is dispatched only if it had `data`;
/// `id` and `retry` are read past (this client neither reconnects nor resumes). A lone CR
/// as a line end, which the gateway never writes, is not supported.
#[derive(Debug, Default)]
pub struct EventParser {
    /// Bytes received and not parsed yet, from `cursor` on.
    pending: Vec<u8>,
    cursor: usize,
    kind: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The last call returned an event: its fields are cleared on the next call.
    dispatched: bool,
}

impl EventParser {
    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.cursor > 0 {
            self.pending.drain(..self.cursor);
            self.cursor = 0;
        }
        self.pending.extend_from_slice(bytes);
    }

    /// The next complete event in what was pushed, if there is one.
    pub fn next_event(&mut self) -> Result<Option<Event<'_>>, String> {
        if self.dispatched {
            self.dispatched = false;
            self.kind.clear();
            self.data.clear();
            self.has_data = false;
        }
        while let Some(n) = self.pending[self.cursor..].iter().position(|b| *b == b'\n') {
            let start = self.cursor;
            self.cursor += n + 1;
            let line = &self.pending[start..start + n];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if self.has_data {
                    self.dispatched = true;
                    let kind: &[u8] = if self.kind.is_empty() {
                        b"message"
                    } else {
                        &self.kind
                    };
                    return Ok(Some(Event {
                        kind,
                        data: &self.data,
                    }));
                }
                self.kind.clear();
                continue;
            }
            if line[0] == b':' {
                continue;
            }
            let (field, value) = match line.iter().position(|b| *b == b':') {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &line[line.len()..]),
            };
            match field {
                b"event" => {
                    self.kind.clear();
                    self.kind.extend_from_slice(value);
                }
                b"data" => {
                    if self.has_data {
                        self.data.push(b'\n');
                    }
                    self.data.extend_from_slice(value);
                    self.has_data = true;
                    if self.data.len() > MAX_EVENT_BYTES {
                        return Err(format!("an event above {MAX_EVENT_BYTES} bytes"));
                    }
                }
                _ => {}
            }
        }
        if self.pending.len() - self.cursor > MAX_EVENT_BYTES {
            return Err(format!("a line above {MAX_EVENT_BYTES} bytes"));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event `input` holds, as (kind, data) strings, fed in pieces of `piece` bytes.
    fn events(input: &str, piece: usize) -> Vec<(String, String)> {
        let mut parser = EventParser::default();
        let mut out = Vec::new();
        for part in input.as_bytes().chunks(piece) {
            parser.push(part);
            while let Some(e) = parser.next_event().unwrap() {
                out.push((
                    String::from_utf8(e.kind.to_vec()).unwrap(),
                    String::from_utf8(e.data.to_vec()).unwrap(),
                ));
            }
        }
        out
    }

    #[test]
    fn gateway_stream_parses_the_same_however_it_is_split() {
        let stream = "retry: 1500\n\n\
                      event: connection_ack\ndata: {\"type\":\"connection_ack\"}\n\n\
                      : ping\n\n\
                      event: message\nid: dag:7=5:e1\ndata: {\"type\":\"message\",\"t\":1}\n\n\
                      event: close\ndata: {\"type\":\"close\",\"code\":1012}\n\n";
        let expected = vec![
            (
                "connection_ack".to_owned(),
                "{\"type\":\"connection_ack\"}".to_owned(),
            ),
            (
                "message".to_owned(),
                "{\"type\":\"message\",\"t\":1}".to_owned(),
            ),
            (
                "close".to_owned(),
                "{\"type\":\"close\",\"code\":1012}".to_owned(),
            ),
        ];
        for piece in 1..=stream.len() {
            assert_eq!(events(stream, piece), expected, "pieces of {piece} bytes");
        }
    }

    #[test]
    fn crlf_multi_line_data_default_kind_and_no_space_after_colon() {
        let stream = "data:a\r\ndata: b\r\n\r\nevent:x\r\n\r\nevent: y\ndata\n\n";
        for piece in 1..=stream.len() {
            assert_eq!(
                events(stream, piece),
                vec![
                    ("message".to_owned(), "a\nb".to_owned()),
                    // `event: x` without data is not dispatched, and does not leak into
                    // the next event.
                    ("y".to_owned(), String::new()),
                ],
                "pieces of {piece} bytes"
            );
        }
    }

    #[test]
    fn an_endless_line_is_an_error_not_unbounded_memory() {
        let mut parser = EventParser::default();
        parser.push(&vec![b'x'; MAX_EVENT_BYTES + 1]);
        assert!(parser.next_event().is_err());
    }
}
