//! WebSocket transport: the `/ws` upgrade, and the two tasks that move bytes for a session.
//!
//! Admission (origin, rates, limits, a token given with the request) happens in
//! [`upgrade`] before the 101, so refused clients get a plain HTTP status and JSON body.
//! After the upgrade, each connection runs:
//! - a **reader** task: reassembles messages (with a total-size cap that fastwebsockets' own
//!   collector lacks), and hands them to the [`Session`];
//! - a **writer** loop: drains the session's [`Outbox`] in batches (one vectored write per
//!   batch), sends heartbeat pings, enforces the pong timeout and token expiry.
//!
//! `read_frame` is not cancel-safe, so the reader is only ever cancelled when the connection
//! is finished with; the writer selects only on cancel-safe futures (notify, timers).

use std::io::IoSlice;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use fastwebsockets::upgrade::{IncomingUpgrade, UpgradeFut};
use fastwebsockets::{Frame, OpCode, Role, WebSocketError, WebSocketRead};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;
use crate::http::ApiError;
use crate::limits::{NodeSlot, Refusal, UserSlot};
use crate::outbox::{Ending, Outbox};
use crate::protocol::{self, CloseCode, ErrorCode};
use crate::server::Node;
use crate::session::{ConnState, Session};

/// What the reader reads: bytes hyper had buffered, then the socket.
type ReadStream = tokio::io::Chain<std::io::Cursor<Bytes>, OwnedReadHalf>;

/// Frames the writer takes from the outbox per write.
const WRITE_BATCH: usize = 256;
/// After the server sends its close frame, how long it waits for the client's.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize)]
pub struct WsParams {
    token: Option<String>,
}

/// What admission granted before the upgrade.
pub struct Admitted {
    pub node_slot: NodeSlot,
    /// Present when the token came with the request; otherwise the session expects an
    /// `auth` frame.
    pub user: Option<(Identity, UserSlot)>,
}

/// `GET /ws`: admission checks, then the upgrade.
pub async fn upgrade(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    params: Result<Query<WsParams>, axum::extract::rejection::QueryRejection>,
    ws: Result<IncomingUpgrade, StatusCode>,
) -> Response {
    let reject = |status: StatusCode, code: ErrorCode, reason: &'static str, msg: &str| {
        node.metrics
            .connections_rejected
            .with_label_values(&[reason])
            .inc();
        ApiError::new(status, code, msg).into_response()
    };
    let Ok(ws) = ws else {
        return reject(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "bad_request",
            "expected a WebSocket upgrade request (Sec-WebSocket-Key, Sec-WebSocket-Version: 13)",
        );
    };
    if node.is_draining() {
        return reject(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "draining",
            "this node is shutting down; connect to another",
        );
    }
    if !node.config.allowed_origins.is_empty()
        && let Some(origin) = headers.get(header::ORIGIN)
    {
        let allowed = origin
            .to_str()
            .is_ok_and(|o| node.config.allowed_origins.iter().any(|r| r.allows(o)));
        if !allowed {
            return reject(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "origin",
                "origin not allowed",
            );
        }
    }
    let node_slot = match node.admission.admit() {
        Ok(slot) => slot,
        Err(refusal) => {
            let msg = match refusal {
                Refusal::RateLimited => "too many new connections; retry shortly",
                _ => "this node is at its connection limit; connect to another",
            };
            let mut resp = reject(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                refusal.label(),
                msg,
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return resp;
        }
    };
    let token = bearer(&headers).or(params.ok().and_then(|q| q.0.token));
    let user = match token {
        None => None,
        Some(token) => {
            let identity = match node.verifier.verify(&token) {
                Ok(i) => i,
                Err(e) => {
                    return reject(
                        StatusCode::UNAUTHORIZED,
                        ErrorCode::Unauthorized,
                        "unauthorized",
                        e.0,
                    );
                }
            };
            match node.admission.admit_user(&identity.user) {
                Ok(slot) => Some((identity, slot)),
                Err(_) => {
                    return reject(
                        StatusCode::TOO_MANY_REQUESTS,
                        ErrorCode::LimitExceeded,
                        "user_full",
                        "this user has too many open connections",
                    );
                }
            }
        }
    };
    let (response, fut) = match ws.upgrade() {
        Ok(pair) => pair,
        Err(_) => {
            return reject(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                "bad_request",
                "WebSocket upgrade failed",
            );
        }
    };
    node.metrics.connections_accepted.inc();
    let admitted = Admitted { node_slot, user };
    let task_node = node.clone();
    node.tasks
        .spawn(async move { run(task_node, fut, admitted).await });
    response.into_response()
}

/// The token from `Authorization: Bearer <token>`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// One connection, from the finished handshake to the last byte.
async fn run(node: Arc<Node>, fut: UpgradeFut, admitted: Admitted) {
    let ws = match fut.await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    // The server hands hyper a plain TcpStream, so the upgraded connection is one again:
    // split it without a lock, keeping any bytes hyper read past the handshake.
    let parts = match ws
        .into_inner()
        .into_inner()
        .downcast::<TokioIo<TcpStream>>()
    {
        Ok(parts) => parts,
        Err(_) => {
            tracing::error!("upgraded connection is not a TCP stream; dropping it");
            return;
        }
    };
    let (read_half, mut write_half) = parts.io.into_inner().into_split();
    // `read_buf` is a view into hyper's read buffer; copying what it holds (usually nothing)
    // lets that buffer go instead of keeping it alive for the whole connection.
    let early = Bytes::copy_from_slice(&parts.read_buf);
    drop(parts.read_buf);
    let read_half = std::io::Cursor::new(early).chain(read_half);
    // The write side of fastwebsockets is not used: frames are pre-encoded bytes.
    let (mut ws_read, _) =
        fastwebsockets::after_handshake_split(read_half, tokio::io::sink(), Role::Server);
    let limits = &node.config.limits;
    // Per frame; the total of a fragmented message is checked by `MessageReader`.
    ws_read.set_max_message_size(limits.max_message_bytes + 1);

    let outbox = Arc::new(Outbox::new(
        limits.queue_max_messages,
        limits.queue_max_bytes,
    ));
    let conn = Arc::new(ConnState::new(&node));
    let _guard = node.register_session(conn.id, &outbox);
    node.metrics.connections_open.inc();
    // Debug level: at the default log level the span is disabled and costs nothing per
    // poll; warnings and errors name the connection themselves.
    let span = tracing::debug_span!("conn", id = %conn.public_id);
    let conn_id = conn.public_id.clone();

    let mut session = Session::new(
        node.clone(),
        conn.clone(),
        outbox.clone(),
        admitted.node_slot,
    );
    let cancel = CancellationToken::new();
    let reader = {
        let cancel = cancel.clone();
        let user = admitted.user;
        let max = limits.max_message_bytes;
        let span = span.clone();
        let outbox = outbox.clone();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let reading = std::panic::AssertUnwindSafe(async move {
                    let started = match user {
                        Some((identity, slot)) => {
                            Box::pin(session.start(identity, slot, None)).await
                        }
                        None => true,
                    };
                    if started {
                        read_loop(MessageReader::new(ws_read, max), &mut session, &cancel).await;
                    }
                    session
                });
                match futures_util::FutureExt::catch_unwind(reading).await {
                    Ok(session) => Some(session),
                    Err(_) => {
                        // A bug, not the client's doing: end this connection only (the
                        // session's Drop leaves the hub consistent).
                        tracing::error!(conn = %conn_id, "session reader panicked; closing the connection");
                        outbox.end(Ending::close(CloseCode::InternalError, "internal error"));
                        None
                    }
                }
            },
            span,
        ))
    };

    let ending = tracing::Instrument::instrument(
        write_loop(&mut write_half, &outbox, &conn, &node),
        span.clone(),
    )
    .await;

    // Give the client a moment to answer our close frame, then stop reading.
    let reader = {
        let mut reader = reader;
        tokio::select! {
            r = &mut reader => r,
            _ = tokio::time::sleep(CLOSE_GRACE) => {
                cancel.cancel();
                reader.await
            }
        }
    };
    let _ = write_half.shutdown().await;
    match reader {
        Ok(Some(mut session)) => session.finish().await,
        Ok(None) => {}
        Err(e) => tracing::error!(conn = %conn.public_id, error = %e, "session reader failed"),
    }
    node.metrics.connections_open.dec();
    node.metrics
        .disconnects
        .with_label_values(&[ending.label()])
        .inc();
    tracing::debug!(parent: &span, reason = ending.label(), "connection closed");
}

/// Reads messages and hands them to the session until the connection is done.
async fn read_loop(
    mut reader: MessageReader<ReadStream>,
    session: &mut Session,
    cancel: &CancellationToken,
) {
    let outbox = session.outbox().clone();
    let conn = session.conn().clone();
    let mut send_obligated = |frame: Frame<'_>| {
        // Pongs to client pings and the reply to a client close. A client ping also counts
        // as a sign of life.
        conn.touch();
        let pushed = outbox.push(protocol::encode_frame(frame));
        async move { pushed.map(|_| ()).map_err(|_| "outbound queue full") }
    };
    loop {
        let auth_deadline = session.auth_deadline();
        let inbound = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = sleep_until(auth_deadline.unwrap_or_else(Instant::now)), if auth_deadline.is_some() => {
                session.auth_timed_out();
                return;
            }
            // Safe to drop on the branches above: the connection is then finished with.
            m = reader.next(&mut send_obligated) => m,
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

/// Drains the outbox to the socket, sends heartbeats, and ends the connection when asked.
/// Returns how the connection ended.
async fn write_loop<W: AsyncWrite + Unpin>(
    w: &mut W,
    outbox: &Outbox,
    conn: &ConnState,
    node: &Node,
) -> Ending {
    let heartbeat = node.config.heartbeat;
    let write_timeout = node.config.write_timeout;
    let mut ping = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Armed after each ping: by then something must have arrived from the client.
    let mut pong_deadline = pin!(sleep_until(Instant::now()));
    let mut awaiting_pong_since: Option<u64> = None;
    let mut expiry = pin!(sleep_until(Instant::now()));
    let mut armed_expiry: Option<i64> = None;
    let mut batch: Vec<Bytes> = Vec::new();

    loop {
        let taken = outbox.take_batch(&mut batch, WRITE_BATCH);
        if !batch.is_empty() {
            let written = write_within(w, &batch, write_timeout).await;
            batch.clear();
            match written {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Ending::ConnectionLost,
                Err(_) => return Ending::WriteTimeout,
            }
            if taken.ending.is_none() {
                continue;
            }
        }
        if batch.capacity() > WRITE_BATCH {
            batch = Vec::new();
        }
        if let Some(ending) = taken.ending {
            if let Ending::Close { code, reason } = &ending {
                let frame = protocol::close_frame(*code, reason);
                let _ = write_within(w, &[frame], write_timeout).await;
            }
            return ending;
        }

        let expires_at = conn.expires_at();
        if expires_at != armed_expiry {
            armed_expiry = expires_at;
            if let Some(at) = expires_at {
                expiry.as_mut().reset(instant_of_unix_ms(at));
            }
        }
        tokio::select! {
            // Frames first: most wake-ups are messages, and timers need no polling then.
            biased;
            _ = outbox.wait() => {}
            _ = ping.tick() => {
                if awaiting_pong_since.is_none() {
                    awaiting_pong_since = Some(conn.now_ms());
                    pong_deadline.as_mut().reset(Instant::now() + node.config.pong_timeout);
                }
                let sent = write_within(w, &[protocol::ping_frame()], write_timeout).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return Ending::ConnectionLost;
                }
            }
            _ = &mut pong_deadline, if awaiting_pong_since.is_some() => {
                if awaiting_pong_since.is_some_and(|since| conn.last_seen_ms() < since) {
                    outbox.end(Ending::close(CloseCode::HeartbeatTimeout, "no pong or frame within the heartbeat timeout"));
                }
                awaiting_pong_since = None;
            }
            _ = &mut expiry, if armed_expiry.is_some() => {
                if conn.token_expired() {
                    outbox.end(Ending::close(CloseCode::Unauthorized, "token expired"));
                } else {
                    // Refreshed meanwhile: re-arm from the new expiry on the next turn.
                    armed_expiry = None;
                }
            }
        }
    }
}

/// Writes frames, bounded by `limit` only when the socket makes us wait: arming a timer for
/// every write would cost more than most writes themselves.
async fn write_within<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &[Bytes],
    limit: Duration,
) -> Result<std::io::Result<()>, tokio::time::error::Elapsed> {
    let mut write = pin!(write_frames(w, frames));
    match futures_util::poll!(write.as_mut()) {
        std::task::Poll::Ready(done) => Ok(done),
        std::task::Poll::Pending => timeout(limit, write).await,
    }
}

/// Writes whole frames (one vectored write per batch where the socket allows), then flushes.
async fn write_frames<W: AsyncWrite + Unpin>(w: &mut W, frames: &[Bytes]) -> std::io::Result<()> {
    if let [frame] = frames {
        w.write_all(frame).await?;
        return w.flush().await;
    }
    let mut slices: Vec<IoSlice<'_>> = frames.iter().map(|f| IoSlice::new(f)).collect();
    let mut rest: &mut [IoSlice<'_>] = &mut slices;
    while !rest.is_empty() {
        let n = w.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    w.flush().await
}

/// The monotonic instant at which a Unix time (milliseconds) is reached.
fn instant_of_unix_ms(at: i64) -> Instant {
    let wait = u64::try_from(at.saturating_sub(crate::session::unix_now_ms())).unwrap_or(0);
    // Checked again when the timer fires, so an early wake-up is harmless.
    Instant::now() + Duration::from_millis(wait.min(365 * 86_400_000))
}
