//! The reading side of a WebSocket connection: message reassembly with a size cap, and the
//! loop that hands complete messages to the session.

use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use fastwebsockets::{Frame, OpCode, WebSocketError, WebSocketRead};

use super::ReadStream;
use super::framing::encode_frame;
use crate::outbox::{Ending, Outgoing};
use crate::protocol::CloseCode;
use crate::session::Session;

/// Reads messages and hands them to the session until the connection is done.
pub async fn read_loop(
    mut reader: MessageReader<ReadStream>,
    session: &mut Session,
    cancel: &CancellationToken,
) {
    let outbox = session.outbox().clone();
    let conn = session.conn().clone();
    let mut send_obligated = |frame: Frame<'_>| {
        // Pongs to client pings and the reply to a client close. A client ping also counts
        // as a sign of life. A pong goes ahead of any backlog: a client checking the link
        // must not wait for the messages queued before its ping.
        conn.touch();
        let pong = frame.opcode == OpCode::Pong;
        let wire = Outgoing::Wire(encode_frame(frame));
        let pushed = if pong {
            outbox.push_ahead(wire)
        } else {
            outbox.push(wire)
        };
        async move { pushed.map(|_| ()).map_err(|_| "outbound queue full") }
    };
    loop {
        let auth_deadline = session.auth_deadline();
        // Kept across the session's own wake-ups (a command from the node, a channel token
        // that expired): `read_frame` is not cancel-safe, so a frame half read stays half
        // read until this future is polled again.
        let next = reader.next(&mut send_obligated);
        let mut next = std::pin::pin!(next);
        let inbound = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = sleep_until(auth_deadline.unwrap_or_else(Instant::now)), if auth_deadline.is_some() => {
                    session.auth_timed_out();
                    return;
                }
                _ = session.woken() => {
                    if !Box::pin(session.on_wake()).await {
                        return;
                    }
                }
                // Safe to drop on the branches that return: the connection is then finished
                // with.
                m = &mut next => break m,
            }
        };
        session.conn().touch();
        match inbound {
            Ok(Inbound::Text(text)) => {
                // Boxed: handling a request needs a large future (subscribe with history,
                // presence...) that idle connections should not carry around.
                if !Box::pin(session.on_text(&text)).await {
                    return;
                }
            }
            Ok(Inbound::Binary) => {
                if !session.on_binary() {
                    return;
                }
            }
            Ok(Inbound::Pong) => {}
            Ok(Inbound::Close) => {
                session.outbox().end(Ending::ClientClosed);
                return;
            }
            Err(e) => {
                let ending = match e {
                    ReadError::TooBig => Ending::close(
                        CloseCode::MessageTooBig,
                        format!(
                            "message larger than {} bytes",
                            session.node().config.limits.max_message_bytes
                        ),
                    ),
                    ReadError::InvalidUtf8 => {
                        Ending::close(CloseCode::InvalidPayload, "text message is not valid UTF-8")
                    }
                    ReadError::Protocol(what) => Ending::close(CloseCode::ProtocolError, what),
                    ReadError::ProtocolAnswered => Ending::CloseQueued(CloseCode::ProtocolError),
                    ReadError::Lost => Ending::ConnectionLost,
                };
                session.outbox().end(ending);
                return;
            }
        }
    }
}

/// A complete inbound message.
#[derive(Debug)]
pub enum Inbound {
    Text(String),
    Binary,
    Pong,
    Close,
}

#[derive(Debug)]
pub enum ReadError {
    TooBig,
    InvalidUtf8,
    Protocol(String),
    /// A protocol error fastwebsockets already answered with its own close frame.
    ProtocolAnswered,
    /// EOF, reset, or the outbound queue refused an obligated frame.
    Lost,
}

impl From<WebSocketError> for ReadError {
    fn from(e: WebSocketError) -> Self {
        match e {
            WebSocketError::FrameTooLarge => ReadError::TooBig,
            WebSocketError::InvalidUTF8 => ReadError::InvalidUtf8,
            // Answered with close 1002 through the obligated-frame callback.
            WebSocketError::InvalidCloseCode => ReadError::ProtocolAnswered,
            WebSocketError::UnexpectedEOF
            | WebSocketError::IoError(_)
            | WebSocketError::ConnectionClosed
            | WebSocketError::SendError(_) => ReadError::Lost,
            other => ReadError::Protocol(other.to_string()),
        }
    }
}

/// Reassembles fragmented messages with a cap on their total size.
pub struct MessageReader<R> {
    ws: WebSocketRead<R>,
    max: usize,
    partial: Option<(OpCode, Vec<u8>)>,
}

impl<R: tokio::io::AsyncRead + Unpin> MessageReader<R> {
    pub fn new(ws: WebSocketRead<R>, max: usize) -> Self {
        MessageReader {
            ws,
            max,
            partial: None,
        }
    }

    pub async fn next<'f, F, E>(
        &mut self,
        send_obligated: &mut impl FnMut(Frame<'f>) -> F,
    ) -> Result<Inbound, ReadError>
    where
        F: Future<Output = Result<(), E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    {
        loop {
            let frame = self.ws.read_frame(send_obligated).await?;
            let (opcode, bytes) = match frame.opcode {
                OpCode::Close => return Ok(Inbound::Close),
                OpCode::Pong => return Ok(Inbound::Pong),
                OpCode::Ping => continue,
                OpCode::Text | OpCode::Binary => {
                    if self.partial.is_some() {
                        return Err(ReadError::Protocol(
                            "new message before the fragmented one ended".into(),
                        ));
                    }
                    if !frame.fin {
                        self.partial = Some((frame.opcode, frame.payload.to_vec()));
                        continue;
                    }
                    (frame.opcode, frame.payload.to_vec())
                }
                OpCode::Continuation => {
                    let Some((_, buf)) = self.partial.as_mut() else {
                        return Err(ReadError::Protocol(
                            "continuation frame without a message to continue".into(),
                        ));
                    };
                    if buf.len() + frame.payload.len() > self.max {
                        return Err(ReadError::TooBig);
                    }
                    buf.extend_from_slice(&frame.payload);
                    if !frame.fin {
                        continue;
                    }
                    match self.partial.take() {
                        Some(done) => done,
                        None => continue,
                    }
                }
            };
            return match opcode {
                OpCode::Text => String::from_utf8(bytes)
                    .map(Inbound::Text)
                    .map_err(|_| ReadError::InvalidUtf8),
                _ => Ok(Inbound::Binary),
            };
        }
    }
}
