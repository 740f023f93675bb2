//! The WebSocket [`Wire`]: each protocol frame goes out as its WebSocket header followed by
//! its shared JSON, a whole batch in one vectored write where the socket allows; heartbeats
//! are pings, the close a close frame. What the kernel says of the socket's send queue tells
//! the driver whether a silent client still reads (see `socket`).

use std::future::Future;
use std::io::IoSlice;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use super::framing::{close_frame, ping_frame, text_header};
use super::socket::Socket;
use crate::outbox::{Ending, Outgoing};
use crate::transport::driver::{Progress, Wire};

/// A WebSocket connection's socket, as the driver writes to it.
pub struct WsWire<'a> {
    socket: &'a Socket,
    write_timeout: Duration,
}

impl WsWire<'_> {
    pub fn new(socket: &Socket, write_timeout: Duration) -> WsWire<'_> {
        WsWire {
            socket,
            write_timeout,
        }
    }
}

impl Wire for WsWire<'_> {
    async fn write(&self, batch: &[Outgoing]) -> Result<(), Ending> {
        write_frames(&mut self.socket.writer(), batch, self.write_timeout).await
    }

    async fn heartbeat(&self) -> Result<(), Ending> {
        let ping = [Outgoing::Wire(ping_frame())];
        write_frames(&mut self.socket.writer(), &ping, self.write_timeout).await
    }

    async fn close(&self, code: u16, reason: &str) {
        let close = [Outgoing::Wire(close_frame(code, reason))];
        let _ = write_frames(&mut self.socket.writer(), &close, self.write_timeout).await;
    }

    fn progress(&self) -> Option<Progress> {
        Some(self.socket.progress())
    }

    async fn gone(&self) {
        // A WebSocket finds out by writing (or by its reader).
        std::future::pending::<()>().await
    }
}

/// Writes whole frames: each protocol frame as its WebSocket header followed by its shared
/// JSON, all in one vectored write per batch where the socket allows. Fails with
/// `WriteTimeout` when the socket takes nothing for `limit`, however long the whole takes.
async fn write_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &[Outgoing],
    limit: Duration,
) -> Result<(), Ending> {
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
        let n = within(limit, w.write_vectored(rest)).await?;
        if n == 0 {
            return Err(Ending::ConnectionLost);
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    within(limit, w.flush()).await
}

/// One step of a write, bounded by `limit` only when the socket makes us wait: arming a
/// timer for every write would cost more than most writes themselves.
async fn within<T>(
    limit: Duration,
    step: impl Future<Output = std::io::Result<T>>,
) -> Result<T, Ending> {
    let mut step = pin!(step);
    let done = match futures_util::poll!(step.as_mut()) {
        Poll::Ready(done) => done,
        Poll::Pending => timeout(limit, step)
            .await
            .map_err(|_| Ending::WriteTimeout)?,
    };
    done.map_err(|_| Ending::ConnectionLost)
}
