//! The bounded outbound queue of one connection.
//!
//! Everything a session sends (replies, channel messages, the transport's own control frames)
//! goes through its [`Outbox`], so there is exactly one ordered stream per connection. Items
//! are transport-neutral [`Frame`]s, shared with every other connection the same message goes
//! to; the transport writing the queue frames them for its wire (see `transport`). Producers (the hub's fan-out, the session's request handling) never wait: a push
//! either fits within the limits or overflows, and an overflow marks the connection as a slow
//! consumer, frees what was queued and asks the writer to close the socket. That is how one
//! slow client is cut loose without slowing anyone else.
//!
//! A transport may also hand the outbox its socket ([`WriteNow`]). Then a push that finds the
//! queue empty and the writer idle writes the frame at once, from the producer's own task,
//! instead of waking the connection's writer task to do it: for a message that goes to a
//! few connections, that wake-up (a task scheduled, often on the other core, and the core
//! woken for it) cost more than the write itself. Whatever the socket does not take at once
//! is queued for the writer, which alone ever waits on the socket.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::protocol::{CloseCode, Frame};

mod direct;

pub use self::direct::{SocketClaim, WriteNow, Written};

/// One item of the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A protocol frame, written in the transport's framing.
    Frame(Frame),
    /// Bytes the transport itself produced for its wire (a WebSocket pong or close reply),
    /// written as they are.
    Wire(Bytes),
}

impl Outgoing {
    fn len(&self) -> usize {
        match self {
            Outgoing::Frame(f) => f.len(),
            Outgoing::Wire(b) => b.len(),
        }
    }
}

impl From<Frame> for Outgoing {
    fn from(frame: Frame) -> Outgoing {
        Outgoing::Frame(frame)
    }
}

/// How a connection ends, once the frames queued ahead of that decision are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The server closes: send a close frame with this code and reason.
    Close { code: CloseCode, reason: String },
    /// The client closed; its close frame was already answered through the queue.
    ClientClosed,
    /// The transport already queued its close with this code (a WebSocket protocol error it
    /// answers itself); end without a second one.
    CloseQueued(CloseCode),
    /// The connection dropped (EOF, reset) without a close handshake.
    ConnectionLost,
    /// A socket write made no progress within the write timeout.
    WriteTimeout,
    /// The backend ended the connection (`disconnect`): close with `code` (4004, 4005, or an
    /// application code from 4100 to 4499) and `reason`.
    Disconnected {
        code: u16,
        reason: String,
        reconnect: bool,
    },
}

impl Ending {
    pub fn close(code: CloseCode, reason: impl Into<String>) -> Ending {
        Ending::Close {
            code,
            reason: reason.into(),
        }
    }

    /// The label of the `fanout_disconnects_total` metric.
    pub fn label(&self) -> &'static str {
        match self {
            Ending::Close { code, .. } => code.label(),
            Ending::ClientClosed => "client_closed",
            Ending::CloseQueued(code) => code.label(),
            Ending::ConnectionLost => "connection_lost",
            Ending::WriteTimeout => "write_timeout",
            Ending::Disconnected {
                reconnect: true, ..
            } => CloseCode::Disconnected.label(),
            Ending::Disconnected { .. } => CloseCode::DisconnectedForGood.label(),
        }
    }

    /// The close frame (or event) to send: its code and reason, when the server closes.
    pub fn closing(&self) -> Option<(u16, &str)> {
        match self {
            Ending::Close { code, reason } => Some((code.code(), reason)),
            Ending::Disconnected { code, reason, .. } => Some((*code, reason)),
            _ => None,
        }
    }
}

/// A push that did not fit: the connection is now closing as a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    /// Frames that were queued and are now discarded (the pushed one included).
    pub dropped: usize,
}

/// What [`Outbox::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Written to the socket at once (see [`Outbox::attach_socket`]).
    Written,
    /// The connection is already closing; the frame was discarded.
    Discarded,
}

pub struct Outbox {
    state: Mutex<State>,
    wake_writer: Notify,
    /// Wakes a producer waiting in [`Outbox::wait_for_room`] when the writer took frames.
    drained: Notify,
    /// Set while such a producer waits, so the writer only notifies when someone listens.
    room_wanted: AtomicBool,
    max_frames: usize,
    max_bytes: usize,
    /// How long the writer waits for more after a wake-up (`write_delay_ms`); while it is
    /// not zero, pushes never write directly (every write waits in the writer).
    write_delay: Duration,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Outgoing>,
    bytes: usize,
    ending: Option<Ending>,
    /// The socket, when the transport lets producers write to it directly.
    socket: Option<Arc<dyn WriteNow>>,
    /// The writer task owns the socket while it holds a [`SocketClaim`] (from a
    /// [`Outbox::take_batch`] that took something, or [`Outbox::claim_socket`]). No direct
    /// write meanwhile, or it could land inside the writer's bytes.
    writer_busy: bool,
    /// The first queued item is the rest of a frame a direct write started: it must go out
    /// first, whatever is pushed ahead of the queue.
    partial_front: bool,
}

/// What the writer learns from one [`Outbox::take_batch`].
pub struct Batch<'a> {
    /// How to end, once the frames taken are written; set when the queue is ending and empty.
    pub ending: Option<Ending>,
    /// Held while the frames taken are written (when it took any): no direct write gets
    /// between them.
    pub claim: Option<SocketClaim<'a>>,
}

impl Outbox {
    /// An empty queue holding at most `max_frames` frames and `max_bytes` bytes.
    pub fn new(max_frames: usize, max_bytes: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            wake_writer: Notify::new(),
            drained: Notify::new(),
            room_wanted: AtomicBool::new(false),
            max_frames: max_frames.max(1),
            max_bytes: max_bytes.max(1),
            write_delay: Duration::ZERO,
        }
    }

    /// The writer waits `delay` after each wake-up before taking frames, so that what
    /// arrives meanwhile goes out in one write (see [`Outbox::wait`]).
    pub fn with_write_delay(mut self, delay: Duration) -> Outbox {
        self.write_delay = delay;
        self
    }

    /// Queues a frame without waiting, or writes it at once when the queue is empty, the
    /// writer idle and the socket takes it (see [`Outbox::attach_socket`]). On overflow the
    /// queue is emptied and closed with [`CloseCode::SlowConsumer`].
    pub fn push(&self, frame: impl Into<Outgoing>) -> Result<Pushed, Overflow> {
        self.push_item(frame.into(), true)
    }

    /// Like [`Outbox::push`], but always leaves the write to the writer task. For a fan-out
    /// to many connections: written inline, one task would make every write in turn, where
    /// the writer tasks spread them over the cores (and batch what piles up meanwhile).
    pub fn queue(&self, frame: impl Into<Outgoing>) -> Result<Pushed, Overflow> {
        self.push_item(frame.into(), false)
    }

    /// Like [`Outbox::push`], but ahead of whatever is queued: for replies that carry no
    /// channel data (a pong), so that a client checking the link does not wait for a backlog
    /// to drain. The rest of a partly written frame still goes first.
    pub fn push_ahead(&self, frame: impl Into<Outgoing>) -> Result<Pushed, Overflow> {
        let frame = frame.into();
        {
            let mut state = self.lock();
            if state.ending.is_none()
                && !state.frames.is_empty()
                && state.frames.len() < self.max_frames
                && state.bytes + frame.len() <= self.max_bytes
            {
                // The writer is awake already (the queue is not empty).
                let at = usize::from(state.partial_front);
                state.bytes += frame.len();
                state.frames.insert(at, frame);
                return Ok(Pushed::Queued);
            }
        }
        self.push_item(frame, true)
    }

    fn push_item(&self, frame: Outgoing, write_now: bool) -> Result<Pushed, Overflow> {
        let mut state = self.lock();
        if state.ending.is_some() {
            return Ok(Pushed::Discarded);
        }
        if write_now && self.write_delay.is_zero() && state.frames.is_empty() && !state.writer_busy
        {
            if let Some(socket) = &state.socket {
                // A non-blocking write under the lock: the lock is what keeps it from
                // interleaving with another producer's or the writer's bytes, and the write
                // never waits (the socket takes what it can).
                match socket.write_now(&frame) {
                    Written::All => return Ok(Pushed::Written),
                    Written::Nothing => {}
                    Written::Part(rest) => {
                        // Half a frame is on the wire: the rest must follow whatever the
                        // limits say (it is at most one frame, and the queue is empty).
                        state.bytes += rest.len();
                        state.frames.push_back(Outgoing::Wire(rest));
                        state.partial_front = true;
                        drop(state);
                        self.wake_writer.notify_one();
                        return Ok(Pushed::Queued);
                    }
                }
            }
        }
        if state.frames.len() >= self.max_frames || state.bytes + frame.len() > self.max_bytes {
            let dropped = state.frames.len() + 1;
            state.frames = VecDeque::new();
            state.bytes = 0;
            state.partial_front = false;
            state.ending = Some(Ending::close(
                CloseCode::SlowConsumer,
                "slow consumer: outbound queue full",
            ));
            drop(state);
            self.wake_writer.notify_one();
            self.wake_room_waiter();
            return Err(Overflow { dropped });
        }
        let was_empty = state.frames.is_empty();
        state.bytes += frame.len();
        state.frames.push_back(frame);
        drop(state);
        // The writer drains everything it finds, so it only needs waking on empty -> non-empty.
        if was_empty {
            self.wake_writer.notify_one();
        }
        Ok(Pushed::Queued)
    }

    /// Lets pushes write to `socket` directly while the writer is idle. The transport calls
    /// it once, before the session starts, and [`Outbox::detach_socket`] when it is done.
    pub fn attach_socket(&self, socket: Arc<dyn WriteNow>) {
        self.lock().socket = Some(socket);
    }

    /// Stops direct writes; once this returns, no push is writing to the socket.
    pub fn detach_socket(&self) {
        self.lock().socket = None;
    }

    /// For the writer's own writes outside the queue (a heartbeat ping): keeps direct writes
    /// off the socket while the claim lives.
    pub fn claim_socket(&self) -> SocketClaim<'_> {
        self.lock().writer_busy = true;
        SocketClaim(self)
    }

    /// Frames and bytes queued now (for logs that explain a slow connection).
    pub fn backlog(&self) -> (usize, usize) {
        let state = self.lock();
        (state.frames.len(), state.bytes)
    }

    /// Asks the writer to end the connection after the frames already queued. The first
    /// ending wins; later ones are ignored, and nothing more is queued.
    pub fn end(&self, ending: Ending) {
        let mut state = self.lock();
        if state.ending.is_none() {
            state.ending = Some(ending);
        }
        drop(state);
        self.wake_writer.notify_one();
        self.wake_room_waiter();
    }

    /// A producer waiting in [`Outbox::wait_for_room`] looks again.
    fn wake_room_waiter(&self) {
        if self.room_wanted.load(Ordering::Acquire) {
            self.drained.notify_waiters();
        }
    }

    /// Moves up to `max_frames` frames into `out`. When the queue is closing and nothing is
    /// left, the returned batch carries the close to perform. When it took frames, the
    /// writer owns the socket while it holds the batch's claim.
    pub fn take_batch(&self, out: &mut Vec<Outgoing>, max_frames: usize) -> Batch<'_> {
        let mut state = self.lock();
        let n = state.frames.len().min(max_frames);
        let mut taken = 0;
        for frame in state.frames.drain(..n) {
            taken += frame.len();
            out.push(frame);
        }
        state.bytes -= taken;
        if n > 0 {
            state.writer_busy = true;
            state.partial_front = false;
        }
        if state.frames.is_empty() && state.frames.capacity() > 64 {
            // Give memory back after a burst; idle connections should stay small.
            state.frames = VecDeque::new();
        }
        let ending = if state.frames.is_empty() {
            state.ending.clone()
        } else {
            None
        };
        drop(state);
        if n > 0 {
            self.wake_room_waiter();
        }
        Batch {
            ending,
            claim: (n > 0).then_some(SocketClaim(self)),
        }
    }

    /// For the one producer that may wait, a session queueing a replay larger than the
    /// queue could take at once: resolves once the queue is at most half full (frames and
    /// bytes), leaving the other half for live traffic. False when the connection is ending.
    /// A client that stopped reading is the writer's to close (write timeout, heartbeat),
    /// which ends this wait too.
    pub async fn wait_for_room(&self) -> bool {
        loop {
            let drained = self.drained.notified();
            let mut drained = std::pin::pin!(drained);
            // Registered before the check, so a drain in between is not missed.
            drained.as_mut().enable();
            self.room_wanted.store(true, Ordering::Release);
            {
                let state = self.lock();
                if state.ending.is_some() {
                    return self.stop_waiting(false);
                }
                if state.frames.len() <= self.max_frames / 2 && state.bytes <= self.max_bytes / 2 {
                    return self.stop_waiting(true);
                }
            }
            drained.await;
        }
    }

    fn stop_waiting(&self, room: bool) -> bool {
        self.room_wanted.store(false, Ordering::Release);
        room
    }

    /// Whether the connection is closing (nothing more will be queued).
    pub fn is_ending(&self) -> bool {
        self.lock().ending.is_some()
    }

    /// Makes the writer take a turn, to re-read what it watches besides the queue (the
    /// token's expiry after an auth or refresh). Needed since a push may not wake it: a frame
    /// written directly never reaches the writer.
    pub fn wake_writer(&self) {
        self.wake_writer.notify_one();
    }

    /// Resolves when something was pushed or a close was requested since the last call, after
    /// the write delay if there is one. Dropping it during that delay loses nothing: the
    /// writer takes whatever is queued on its next turn anyway.
    pub async fn wait(&self) {
        self.wake_writer.notified().await;
        if !self.write_delay.is_zero() {
            tokio::time::sleep(self.write_delay).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent (every update is
        // a single push, drain or assignment), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &'static [u8]) -> Outgoing {
        Outgoing::Wire(Bytes::from_static(text))
    }

    #[test]
    fn overflow_by_count_discards_the_queue_and_closes_as_slow() {
        let outbox = Outbox::new(2, 1 << 20);
        assert_eq!(outbox.push(frame(b"a")), Ok(Pushed::Queued));
        assert_eq!(outbox.push(frame(b"b")), Ok(Pushed::Queued));
        assert_eq!(outbox.push(frame(b"c")), Err(Overflow { dropped: 3 }));
        assert_eq!(outbox.push(frame(b"d")), Ok(Pushed::Discarded));
        let mut out = Vec::new();
        let batch = outbox.take_batch(&mut out, 16);
        assert!(out.is_empty());
        assert_eq!(batch.ending.unwrap().label(), "slow_consumer");
    }

    #[tokio::test]
    async fn a_waiting_producer_gets_room_as_the_writer_drains_and_stops_when_it_ends() {
        let outbox = std::sync::Arc::new(Outbox::new(4, 1 << 20));
        for _ in 0..4 {
            outbox.push(frame(b"x")).unwrap();
        }
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.wait_for_room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "the queue is full");
        let mut out = Vec::new();
        drop(outbox.take_batch(&mut out, 2));
        assert!(waiter.await.unwrap(), "half the queue is free again");

        outbox.push(frame(b"x")).unwrap();
        outbox.push(frame(b"x")).unwrap();
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.wait_for_room().await }
        });
        tokio::task::yield_now().await;
        outbox.end(Ending::close(CloseCode::Normal, "bye"));
        assert!(!waiter.await.unwrap(), "the connection ends");
    }

    /// A socket that takes up to `room` bytes in all, recording what it took.
    struct FakeSocket {
        room: Mutex<usize>,
        wire: Mutex<Vec<u8>>,
    }

    impl WriteNow for FakeSocket {
        fn write_now(&self, item: &Outgoing) -> Written {
            let Outgoing::Wire(bytes) = item else {
                unreachable!("these tests push wire bytes")
            };
            let mut room = self.room.lock().unwrap();
            let n = bytes.len().min(*room);
            *room -= n;
            self.wire.lock().unwrap().extend_from_slice(&bytes[..n]);
            match n {
                0 => Written::Nothing,
                n if n == bytes.len() => Written::All,
                n => Written::Part(bytes.slice(n..)),
            }
        }
    }

    #[test]
    fn a_push_writes_at_once_only_while_nothing_is_queued_and_the_writer_is_idle() {
        let outbox = Outbox::new(100, 1 << 20);
        let socket = Arc::new(FakeSocket {
            room: Mutex::new(8),
            wire: Mutex::new(Vec::new()),
        });
        outbox.attach_socket(socket.clone());
        assert_eq!(outbox.push(frame(b"ab")), Ok(Pushed::Written));
        assert_eq!(
            outbox.queue(frame(b"cd")),
            Ok(Pushed::Queued),
            "queue() never writes"
        );
        assert_eq!(
            outbox.push(frame(b"ef")),
            Ok(Pushed::Queued),
            "behind a queued frame"
        );
        let mut out = Vec::new();
        let batch = outbox.take_batch(&mut out, 16);
        assert_eq!(out, [frame(b"cd"), frame(b"ef")]);
        assert_eq!(
            outbox.push(frame(b"gh")),
            Ok(Pushed::Queued),
            "the writer owns the socket until it has written what it took"
        );
        drop(batch);
        out.clear();
        drop(outbox.take_batch(&mut out, 16));
        assert_eq!(out, [frame(b"gh")]);

        // The socket has room for 6 more bytes: a frame of 8 leaves its last 2 queued, first,
        // even ahead of a pong pushed ahead of the queue.
        assert_eq!(outbox.push(frame(b"12345678")), Ok(Pushed::Queued));
        assert_eq!(outbox.push(frame(b"9")), Ok(Pushed::Queued));
        assert_eq!(outbox.push_ahead(frame(b"P")), Ok(Pushed::Queued));
        out.clear();
        let batch = outbox.take_batch(&mut out, 16);
        assert_eq!(out, [frame(b"78"), frame(b"P"), frame(b"9")]);
        assert_eq!(*socket.wire.lock().unwrap(), b"ab123456");

        outbox.detach_socket();
        drop(batch);
        assert_eq!(outbox.push(frame(b"x")), Ok(Pushed::Queued), "detached");
    }

    #[test]
    fn a_pong_goes_ahead_of_a_backlog_and_a_ping_claim_keeps_pushes_off_the_socket() {
        let outbox = Outbox::new(100, 1 << 20);
        let socket = Arc::new(FakeSocket {
            room: Mutex::new(100),
            wire: Mutex::new(Vec::new()),
        });
        outbox.attach_socket(socket.clone());
        let claim = outbox.claim_socket();
        for m in [b"m1", b"m2", b"m3"] {
            assert_eq!(outbox.push(frame(m)), Ok(Pushed::Queued));
        }
        assert_eq!(outbox.push_ahead(frame(b"pong")), Ok(Pushed::Queued));
        assert_eq!(outbox.backlog(), (4, 10));
        drop(claim);
        let mut out = Vec::new();
        drop(outbox.take_batch(&mut out, 16));
        assert_eq!(
            out,
            [frame(b"pong"), frame(b"m1"), frame(b"m2"), frame(b"m3")]
        );
        assert!(socket.wire.lock().unwrap().is_empty());
        // With nothing queued, it is written at once like any push.
        assert_eq!(outbox.push_ahead(frame(b"pong")), Ok(Pushed::Written));
    }

    #[tokio::test]
    async fn with_a_write_delay_every_write_waits_for_the_writer() {
        let outbox = Outbox::new(100, 1 << 20).with_write_delay(Duration::from_millis(30));
        let socket = Arc::new(FakeSocket {
            room: Mutex::new(100),
            wire: Mutex::new(Vec::new()),
        });
        outbox.attach_socket(socket.clone());
        assert_eq!(outbox.push(frame(b"ab")), Ok(Pushed::Queued));
        assert!(socket.wire.lock().unwrap().is_empty());
        // The writer's wait covers the delay (a sleep never ends early), so what arrives
        // meanwhile goes out with the first frame.
        let started = tokio::time::Instant::now();
        outbox.wait().await;
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn overflow_by_bytes() {
        let outbox = Outbox::new(100, 4);
        assert!(outbox.push(frame(b"abc")).is_ok());
        assert!(outbox.push(frame(b"de")).is_err());
    }

    #[test]
    fn close_waits_for_queued_frames_and_bytes_are_released() {
        let outbox = Outbox::new(10, 6);
        outbox.push(frame(b"abc")).unwrap();
        outbox.push(frame(b"def")).unwrap();
        outbox.end(Ending::close(CloseCode::Normal, "bye"));
        let mut out = Vec::new();
        let batch = outbox.take_batch(&mut out, 1);
        assert_eq!(out.len(), 1);
        assert!(batch.ending.is_none(), "one frame still queued");
        out.clear();
        let batch = outbox.take_batch(&mut out, 1);
        assert_eq!(out.len(), 1);
        assert_eq!(batch.ending.unwrap().label(), "normal");
        // After draining, the byte budget is free again (the queue is closing, so it discards).
        assert_eq!(outbox.push(frame(b"xyz")), Ok(Pushed::Discarded));
    }
}
