//! The writing side of a WebSocket connection: drains the outbox in batches (one vectored
//! write each), frames protocol frames for the wire, and runs the heartbeat, the pong
//! timeout and the token-expiry timer.

use std::io::IoSlice;
use std::pin::pin;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, sleep_until, timeout};

use super::framing::{close_frame, ping_frame, text_header};
use super::socket::Socket;
use crate::clock::unix_now_ms;
use crate::node::Node;
use crate::outbox::{Ending, Outbox, Outgoing};
use crate::protocol::CloseCode;
use crate::session::ConnState;

/// Frames the writer takes from the outbox per write.
const WRITE_BATCH: usize = 256;

/// Drains the outbox to the socket, sends heartbeats, and ends the connection when asked.
/// Returns how the connection ended.
///
/// Producers write to the socket themselves while this loop is idle (see `socket`); the
/// loop owns the socket from each `take_batch` that took frames until it says `written`.
pub async fn write_loop(socket: &Socket, outbox: &Outbox, conn: &ConnState, node: &Node) -> Ending {
    let w = &mut socket.writer();
    let heartbeat = node.config.heartbeat;
    let write_timeout = node.config.write_timeout;
    let mut ping = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Armed after each ping: by then something must have arrived from the client.
    let mut pong_deadline = pin!(sleep_until(Instant::now()));
    let mut awaiting_pong_since: Option<u64> = None;
    let mut expiry = pin!(sleep_until(Instant::now()));
    let mut armed_expiry: Option<i64> = None;
    let mut batch: Vec<Outgoing> = Vec::new();

    loop {
        let taken = outbox.take_batch(&mut batch, WRITE_BATCH);
        if !batch.is_empty() {
            let written = write_within(w, &batch, write_timeout).await;
            batch.clear();
            match written {
                Ok(Ok(())) => outbox.written(),
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
                let frame = Outgoing::Wire(close_frame(*code, reason));
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
                outbox.claim_socket();
                let sent = write_within(w, &[Outgoing::Wire(ping_frame())], write_timeout).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return Ending::ConnectionLost;
                }
                outbox.written();
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
    frames: &[Outgoing],
    limit: Duration,
) -> Result<std::io::Result<()>, tokio::time::error::Elapsed> {
    let mut write = pin!(write_frames(w, frames));
    match futures_util::poll!(write.as_mut()) {
        std::task::Poll::Ready(done) => Ok(done),
        std::task::Poll::Pending => timeout(limit, write).await,
    }
}

/// Writes whole frames, then flushes: each protocol frame as its WebSocket header followed by
/// its shared JSON, all in one vectored write per batch where the socket allows.
async fn write_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &[Outgoing],
) -> std::io::Result<()> {
    // Every header first (the slices below borrow this buffer), then the slices in order.
    let mut headers = Vec::with_capacity(frames.len() * 4);
    let mut ends = Vec::with_capacity(frames.len());
    for frame in frames {
        if let Outgoing::Frame(f) = frame {
            text_header(f.len(), &mut headers);
        }
        ends.push(headers.len());
    }
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(frames.len() * 2);
    let mut start = 0;
    for (frame, end) in frames.iter().zip(ends) {
        match frame {
            Outgoing::Frame(f) => {
                slices.push(IoSlice::new(&headers[start..end]));
                slices.push(IoSlice::new(f.json()));
            }
            Outgoing::Wire(bytes) => slices.push(IoSlice::new(bytes)),
        }
        start = end;
    }
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
    let wait = u64::try_from(at.saturating_sub(unix_now_ms())).unwrap_or(0);
    // Checked again when the timer fires, so an early wake-up is harmless.
    Instant::now() + Duration::from_millis(wait.min(365 * 86_400_000))
}
