//! The writing side of every connection, whatever carries it: drains the session's outbox in
//! batches, sends heartbeats between batches, tells a client that reads slowly from one that
//! is gone, ends the connection when its token expires, and writes the close.
//!
//! A transport supplies a [`Wire`]: how a batch, a heartbeat and a close are written, and
//! what it can tell of the peer's progress. Everything about *when* lives here, once.
//!
//! Liveness. A heartbeat goes out when it is due, between two batches, never behind the
//! outbox's backlog. A peer is alive if it sent anything since the heartbeat. If it did not,
//! and bytes were still unacknowledged ahead of the heartbeat, its answer may just be late:
//! the peer is alive for as long as it keeps acknowledging those bytes (it reads, slowly),
//! and the wait is extended until the heartbeat itself has reached it. Only a peer that
//! neither answers nor reads is closed with `heartbeat_timeout`. A write that makes no
//! progress for the write timeout ends the connection too (`write_timeout`), but a write
//! that keeps making progress, however slowly, never does.

use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, sleep_until};

use crate::clock::unix_now_ms;
use crate::node::Node;
use crate::outbox::{Batch, Ending, Outbox, Outgoing};
use crate::protocol::CloseCode;
use crate::session::ConnState;

/// Frames the writer takes from the outbox per write.
const WRITE_BATCH: usize = 256;

/// A batch write that takes this long is logged (at debug level) with the queue's state.
const SLOW_WRITE: Duration = Duration::from_secs(1);

/// A deadline that is never reached in practice (a year).
const FAR: Duration = Duration::from_secs(365 * 86_400);

/// How a transport writes, and what it can tell of the peer. Shared (`&self`) so that the
/// driver can ask for the peer's progress while a write waits.
pub trait Wire: Sync {
    /// Writes the frames of one batch, in order. Waiting for the peer is bounded by the write
    /// timeout per step of progress, not per batch: `Err(Ending::WriteTimeout)` only when
    /// the peer took nothing for that long, `Err(Ending::ConnectionLost)` when it is gone.
    /// The driver may drop it mid-way, only to end the connection.
    fn write(&self, batch: &[Outgoing]) -> impl Future<Output = Result<(), Ending>> + Send;

    /// A heartbeat: a WebSocket ping, an SSE comment.
    fn heartbeat(&self) -> impl Future<Output = Result<(), Ending>> + Send;

    /// The last words: a close frame or a close event (a close code and its reason). Best
    /// effort.
    fn close(&self, code: u16, reason: &str) -> impl Future<Output = ()> + Send;

    /// Bytes written and not yet acknowledged, for a wire whose peer answers heartbeats;
    /// `None` for one whose peer never answers (SSE), which is then only ever ended by the
    /// write timeout.
    fn progress(&self) -> Option<Progress>;

    /// Resolves when the peer is gone although nothing was written (an SSE response body
    /// the server dropped). Never, for a wire that finds out by writing.
    fn gone(&self) -> impl Future<Output = ()> + Send;
}

/// What a wire can tell of the bytes it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes the socket accepted.
    pub written: u64,
    /// Of those, bytes the peer has not acknowledged yet (0 where the system cannot tell).
    pub unacknowledged: u64,
}

impl Progress {
    /// Bytes the peer has taken.
    pub fn delivered(&self) -> u64 {
        self.written.saturating_sub(self.unacknowledged)
    }
}

/// Drains `outbox` to `wire` until the connection ends; returns how it ended.
pub async fn drive<W: Wire>(wire: &W, outbox: &Outbox, conn: &ConnState, node: &Node) -> Ending {
    let mut timers = Timers::new(node.config.heartbeat, node.config.pong_timeout);
    let mut batch: Vec<Outgoing> = Vec::new();
    loop {
        // Between batches too: a connection that always has something to write must still be
        // pinged, found dead, and cut off when its token expires.
        if let Err(ending) = timers.run(wire, outbox, conn).await {
            return ending;
        }
        let Batch { ending, claim } = outbox.take_batch(&mut batch, WRITE_BATCH);
        if !batch.is_empty() {
            let started = Instant::now();
            let written = {
                let mut write = std::pin::pin!(wire.write(&batch));
                loop {
                    tokio::select! {
                        biased;
                        written = &mut write => break written,
                        // A peer that neither answers nor reads is found dead while a write
                        // waits for it too (nothing more is written: the socket may hold
                        // part of a frame).
                        _ = sleep_until(timers.answer_due()) => {
                            if let Some(dead) = timers.judge_answer(wire, outbox, conn) {
                                break Err(dead);
                            }
                        }
                    }
                }
            };
            if let Err(ending) = written {
                // Before the claim goes: the socket may hold part of a frame, and an ending
                // outbox writes nothing more to it.
                outbox.end(ending.clone());
                drop(claim);
                log_ending(outbox, wire, &ending, &timers);
                return ending;
            }
            drop(claim);
            let took = started.elapsed();
            if took >= SLOW_WRITE {
                let (frames, bytes) = outbox.backlog();
                tracing::debug!(
                    took_ms = took.as_millis() as u64,
                    batch = batch.len(),
                    queued_frames = frames,
                    queued_bytes = bytes,
                    unacknowledged = wire.progress().map_or(0, |p| p.unacknowledged),
                    "slow write: the client reads slowly"
                );
            }
            batch.clear();
            if ending.is_none() {
                continue;
            }
        }
        if batch.capacity() > WRITE_BATCH {
            batch = Vec::new();
        }
        if let Some(ending) = ending {
            if let Some((code, reason)) = ending.closing() {
                wire.close(code, reason).await;
            }
            log_ending(outbox, wire, &ending, &timers);
            return ending;
        }
        tokio::select! {
            // Frames first: most wake-ups are messages.
            biased;
            _ = outbox.wait() => {}
            _ = wire.gone() => return Ending::ConnectionLost,
            _ = sleep_until(timers.next()) => {}
        }
    }
}

/// Why a connection ended, with what was still queued, for the debug log.
fn log_ending<W: Wire>(outbox: &Outbox, wire: &W, ending: &Ending, timers: &Timers) {
    let (frames, bytes) = outbox.backlog();
    tracing::debug!(
        close = ending.label(),
        queued_frames = frames,
        queued_bytes = bytes,
        unacknowledged = wire.progress().map_or(0, |p| p.unacknowledged),
        since_progress_ms = timers.since_progress_ms(),
        "connection ending"
    );
}

/// The heartbeat, the wait for its answer, and the token's expiry.
struct Timers {
    heartbeat: Duration,
    pong_timeout: Duration,
    next_ping: Instant,
    awaiting: Option<Awaiting>,
    /// The token expiry the timer is armed for (Unix ms), and when it fires.
    expiry_armed: Option<i64>,
    expiry_at: Option<Instant>,
    /// Bytes the peer had taken at the last heartbeat, and when that last grew (for logs).
    delivered: u64,
    progress_at: Instant,
}

/// A heartbeat waiting for its answer.
#[derive(Debug, Clone)]
struct Awaiting {
    /// When it was sent, on the connection's clock: anything heard since answers it.
    since_ms: u64,
    /// Where it ends in the stream of bytes written.
    ping_end: u64,
    /// Whether bytes were unacknowledged ahead of it: then its answer may come late, for as
    /// long as the peer keeps taking them.
    behind: bool,
    /// Bytes the peer had taken at the last check.
    delivered: u64,
    deadline: Instant,
}

/// What a heartbeat's deadline finds.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The peer sent something since the heartbeat.
    Answered,
    /// No answer yet, but the peer took more of what was ahead of the heartbeat since the
    /// last check: it reads, slowly; wait on.
    Reading { delivered: u64 },
    /// It neither answered nor read.
    Dead,
}

fn judge(awaiting: &Awaiting, heard: bool, now: Option<Progress>) -> Verdict {
    if heard {
        return Verdict::Answered;
    }
    match now {
        Some(p)
            if awaiting.behind
                && awaiting.delivered < awaiting.ping_end
                && p.delivered() > awaiting.delivered =>
        {
            Verdict::Reading {
                delivered: p.delivered(),
            }
        }
        _ => Verdict::Dead,
    }
}

impl Timers {
    fn new(heartbeat: Duration, pong_timeout: Duration) -> Timers {
        Timers {
            heartbeat,
            pong_timeout,
            next_ping: Instant::now() + heartbeat,
            awaiting: None,
            expiry_armed: None,
            expiry_at: None,
            delivered: 0,
            progress_at: Instant::now(),
        }
    }

    /// How long ago the peer last took anything, as seen at heartbeats (0 for a wire that
    /// cannot tell).
    fn since_progress_ms(&self) -> u64 {
        self.progress_at.elapsed().as_millis() as u64
    }

    /// The next moment something is due.
    fn next(&self) -> Instant {
        let mut next = self.next_ping;
        if let Some(a) = &self.awaiting {
            next = next.min(a.deadline);
        }
        if let Some(at) = self.expiry_at {
            next = next.min(at);
        }
        next
    }

    /// Does what is due. `Err` when the heartbeat could not be written.
    async fn run<W: Wire>(
        &mut self,
        wire: &W,
        outbox: &Outbox,
        conn: &ConnState,
    ) -> Result<(), Ending> {
        // Re-read on every turn (an atomic load): an auth or refresh changes it.
        let expires_at = conn.expires_at();
        if expires_at != self.expiry_armed {
            self.expiry_armed = expires_at;
            self.expiry_at = expires_at.map(instant_of_unix_ms);
        }
        let now = Instant::now();
        if now < self.next() {
            return Ok(());
        }
        if now >= self.next_ping {
            self.ping(wire, outbox, conn, now).await?;
        }
        if let Some(ending) = self.judge_answer(wire, outbox, conn) {
            outbox.end(ending);
        }
        if let Some(at) = self.expiry_at
            && now >= at
        {
            if conn.token_expired() {
                self.expiry_at = None;
                outbox.end(Ending::close(CloseCode::Unauthorized, "token expired"));
            } else {
                // Early (the wall clock moved): wait for the rest.
                self.expiry_at = self.expiry_armed.map(instant_of_unix_ms);
            }
        }
        Ok(())
    }

    /// When the heartbeat's answer is due (far away when none is awaited).
    fn answer_due(&self) -> Instant {
        match &self.awaiting {
            Some(a) => a.deadline,
            None => Instant::now() + FAR,
        }
    }

    /// At the answer's deadline: forgets the heartbeat if answered, waits on if the peer
    /// reads, and returns the close for a peer that neither answered nor read.
    fn judge_answer<W: Wire>(
        &mut self,
        wire: &W,
        outbox: &Outbox,
        conn: &ConnState,
    ) -> Option<Ending> {
        let awaiting = self.awaiting.as_ref()?;
        let now = Instant::now();
        if now < awaiting.deadline {
            return None;
        }
        let heard = conn.last_seen_ms() >= awaiting.since_ms;
        match judge(awaiting, heard, wire.progress()) {
            Verdict::Answered => {
                self.awaiting = None;
                None
            }
            Verdict::Reading { delivered } => {
                let (frames, bytes) = outbox.backlog();
                tracing::debug!(
                    taken_since_last_check = delivered - awaiting.delivered,
                    still_ahead_of_ping = awaiting.ping_end.saturating_sub(delivered),
                    queued_frames = frames,
                    queued_bytes = bytes,
                    "no pong yet, but the client is reading through its backlog: waiting on"
                );
                self.awaiting = Some(Awaiting {
                    delivered,
                    deadline: now + self.pong_timeout,
                    ..awaiting.clone()
                });
                None
            }
            Verdict::Dead => {
                let (frames, bytes) = outbox.backlog();
                tracing::debug!(
                    ping_sent_ms_ago = conn.now_ms().saturating_sub(awaiting.since_ms),
                    unacknowledged = wire.progress().map_or(0, |p| p.unacknowledged),
                    queued_frames = frames,
                    queued_bytes = bytes,
                    "the client neither answered the ping nor read anything"
                );
                self.awaiting = None;
                Some(Ending::close(
                    CloseCode::HeartbeatTimeout,
                    "no pong or frame within the heartbeat timeout",
                ))
            }
        }
    }

    async fn ping<W: Wire>(
        &mut self,
        wire: &W,
        outbox: &Outbox,
        conn: &ConnState,
        now: Instant,
    ) -> Result<(), Ending> {
        self.next_ping = now + self.heartbeat;
        let before = wire.progress();
        match before {
            Some(p) if p.delivered() > self.delivered => {
                self.delivered = p.delivered();
                self.progress_at = now;
            }
            Some(_) => {}
            None => self.progress_at = now,
        }
        let (frames, bytes) = outbox.backlog();
        if frames > 0 || before.is_some_and(|p| p.unacknowledged > 0) {
            tracing::debug!(
                queued_frames = frames,
                queued_bytes = bytes,
                unacknowledged = before.map_or(0, |p| p.unacknowledged),
                since_progress_ms =
                    now.saturating_duration_since(self.progress_at).as_millis() as u64,
                "heartbeat with a backlog"
            );
        }
        let claim = outbox.claim_socket();
        if let Err(ending) = wire.heartbeat().await {
            outbox.end(ending.clone());
            drop(claim);
            return Err(ending);
        }
        drop(claim);
        if self.awaiting.is_none()
            && let (Some(before), Some(after)) = (before, wire.progress())
        {
            self.awaiting = Some(Awaiting {
                since_ms: conn.now_ms(),
                ping_end: after.written,
                behind: before.unacknowledged > 0,
                delivered: after.delivered(),
                deadline: Instant::now() + self.pong_timeout,
            });
        }
        Ok(())
    }
}

/// The monotonic instant at which a Unix time (milliseconds) is reached.
fn instant_of_unix_ms(at: i64) -> Instant {
    let wait = u64::try_from(at.saturating_sub(unix_now_ms())).unwrap_or(0);
    // Checked again when the timer fires, so an early wake-up is harmless.
    Instant::now() + Duration::from_millis(wait.min(365 * 86_400_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn awaiting(behind: bool, delivered: u64, ping_end: u64) -> Awaiting {
        Awaiting {
            since_ms: 100,
            ping_end,
            behind,
            delivered,
            deadline: Instant::now(),
        }
    }

    fn progress(written: u64, unacknowledged: u64) -> Option<Progress> {
        Some(Progress {
            written,
            unacknowledged,
        })
    }

    #[test]
    fn a_peer_that_answered_is_alive_whatever_its_socket_says() {
        assert_eq!(
            judge(&awaiting(false, 10, 12), true, progress(12, 12)),
            Verdict::Answered
        );
    }

    #[test]
    fn a_peer_taking_the_backlog_ahead_of_the_ping_is_reading() {
        // 1 MB was unacknowledged ahead of the ping; 300 KB more were taken since.
        let a = awaiting(true, 2_000_000, 3_000_002);
        assert_eq!(
            judge(&a, false, progress(3_500_000, 1_200_000)),
            Verdict::Reading {
                delivered: 2_300_000
            }
        );
    }

    #[test]
    fn a_peer_that_took_nothing_since_the_last_check_is_dead() {
        let a = awaiting(true, 2_000_000, 3_000_002);
        assert_eq!(
            judge(&a, false, progress(3_000_002, 1_000_002)),
            Verdict::Dead
        );
    }

    #[test]
    fn once_the_ping_was_taken_a_missing_answer_is_not_excused_again() {
        // The last check found everything up to the ping taken: no more waiting.
        let a = awaiting(true, 3_000_002, 3_000_002);
        assert_eq!(judge(&a, false, progress(3_100_000, 0)), Verdict::Dead);
    }

    #[test]
    fn a_ping_with_nothing_ahead_of_it_must_be_answered_in_time() {
        // An idle connection whose peer's kernel acknowledges the ping but whose application
        // never answers (a hung process): dead, after one timeout.
        let a = awaiting(false, 1000, 1002);
        assert_eq!(judge(&a, false, progress(1002, 0)), Verdict::Dead);
    }

    #[test]
    fn without_progress_information_silence_is_death() {
        let a = awaiting(true, 0, 2);
        assert_eq!(judge(&a, false, None), Verdict::Dead);
    }
}
