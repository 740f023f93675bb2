//! Replays of history channels: queued at the pace the client reads, one frame of each
//! recovering channel in turn, in a task of their own.
//!
//! A subscribe that recovers queues its `subscribed` reply and hands the missed messages
//! here; the session goes straight back to reading the client's frames (pongs, the other
//! channels' subscribes), so a long replay neither holds up the recovery of the channels
//! after it nor makes a client that reads look dead. Each channel goes live
//! ([`Hub::activate`](crate::hub::Hub::activate)) once its replay is queued; one whose live
//! messages outgrew the hub's buffer meanwhile replays on from history first, so a replay
//! slower than its channel costs a read from Redis, never the connection. A client that
//! stops reading altogether is the driver's to close (write timeout, heartbeat), and its
//! replays end with the connection.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::ConnState;
use crate::broker::{History, HistoryQuery, StreamPosition};
use crate::channel::Channel;
use crate::hub::Activation;
use crate::node::Node;
use crate::outbox::Outbox;
use crate::protocol::{self, Frame, ServerFrame};

/// How often replay progress is logged (debug level) while replays run.
const PROGRESS_LOG: Duration = Duration::from_secs(1);

/// The replays of one connection.
pub(super) struct Replays(Arc<Shared>);

struct Shared {
    node: Arc<Node>,
    conn: Arc<ConnState>,
    outbox: Arc<Outbox>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    replays: VecDeque<Replay>,
    /// Whether the task queueing them runs.
    running: bool,
    /// Tells replays apart across a cancel and a new subscribe of the same channel.
    next_id: u64,
}

struct Replay {
    id: u64,
    channel: Channel,
    frames: VecDeque<Frame>,
    /// Where the client stands once `frames` are read.
    top: StreamPosition,
    /// Frames queued so far, over every round.
    sent: usize,
    /// Reads from history after the first (each after the hub's buffer overflowed).
    rounds: u32,
    history: HistoryRead,
}

/// Where a replay stands with Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HistoryRead {
    /// Its frames are all it needs.
    Done,
    /// The hub let its buffer go: what came after `top` must be read from history first.
    Needed,
    /// That read is under way; nothing to queue until it is back.
    Reading,
}

impl Replays {
    pub(super) fn new(node: Arc<Node>, conn: Arc<ConnState>, outbox: Arc<Outbox>) -> Replays {
        Replays(Arc::new(Shared {
            node,
            conn,
            outbox,
            state: Mutex::new(State::default()),
        }))
    }

    /// Queues `frames` for `channel` (replacing a replay of it still under way), then makes
    /// the channel live at `top`. The `subscribed` reply must be queued already.
    pub(super) fn start(&self, channel: Channel, frames: Vec<Frame>, top: StreamPosition) {
        self.add(channel, frames, top, HistoryRead::Done);
    }

    /// For a channel whose activation found the hub's buffer let go
    /// ([`Activation::FellBehind`]): replays what came after `top` from history, then makes
    /// the channel live.
    pub(super) fn start_behind(&self, channel: Channel, top: StreamPosition) {
        self.add(channel, Vec::new(), top, HistoryRead::Needed);
    }

    fn add(&self, channel: Channel, frames: Vec<Frame>, top: StreamPosition, history: HistoryRead) {
        let mut state = self.0.lock();
        state.replays.retain(|r| r.channel != channel);
        let id = state.next_id;
        state.next_id += 1;
        tracing::debug!(
            conn = %self.0.conn.conn_id,
            %channel,
            frames = frames.len(),
            to = top.offset,
            recovering = state.replays.len() + 1,
            "replay queued"
        );
        state.replays.push_back(Replay {
            id,
            channel,
            frames: frames.into(),
            top,
            sent: 0,
            rounds: 0,
            history,
        });
        if !state.running {
            state.running = true;
            tokio::spawn(run(self.0.clone()));
        }
    }

    /// Stops the replay of `channel`, if one runs: nothing more of it is queued once this
    /// returns.
    pub(super) fn cancel(&self, channel: &Channel) {
        self.0.lock().replays.retain(|r| r.channel != *channel);
    }

    /// Stops every replay (the connection is over).
    pub(super) fn cancel_all(&self) {
        self.0.lock().replays.clear();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a single push, removal or field store: still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Queues one frame of each replay in turn whenever the outbox is at most half full, and
/// makes each channel live when its replay is queued; ends when none is left.
async fn run(shared: Arc<Shared>) {
    let hub = &shared.node.hub;
    let mut logged = Instant::now();
    loop {
        if !shared.outbox.wait_for_room().await {
            // The connection is closing; whoever closed it said why.
            let mut state = shared.lock();
            state.replays.clear();
            state.running = false;
            return;
        }
        let mut behind = Vec::new();
        {
            let mut state = shared.lock();
            if state.replays.is_empty() {
                state.running = false;
                return;
            }
            for replay in state.replays.iter_mut() {
                if let Some(frame) = replay.frames.pop_front() {
                    // Left to the writer, which writes what piles up in batches.
                    let _ = shared.outbox.queue(frame);
                    replay.sent += 1;
                }
            }
            state.replays.retain_mut(|replay| {
                if !replay.frames.is_empty() || replay.history == HistoryRead::Reading {
                    return true;
                }
                if replay.history == HistoryRead::Needed {
                    replay.history = HistoryRead::Reading;
                    behind.push((replay.id, replay.channel.clone(), replay.top.clone()));
                    return true;
                }
                match hub.activate(shared.conn.key, &replay.channel, Some(replay.top.clone())) {
                    Activation::FellBehind => {
                        // Activation reset the hub's mark: from here on, this replay is the
                        // only one that knows the buffer is incomplete.
                        replay.history = HistoryRead::Reading;
                        behind.push((replay.id, replay.channel.clone(), replay.top.clone()));
                        true
                    }
                    Activation::Live | Activation::NotSubscribed => {
                        tracing::debug!(
                            conn = %shared.conn.conn_id,
                            channel = %replay.channel,
                            frames = replay.sent,
                            rounds = replay.rounds + 1,
                            "replay done; the channel is live"
                        );
                        false
                    }
                }
            });
            if logged.elapsed() >= PROGRESS_LOG && !state.replays.is_empty() {
                logged = Instant::now();
                let (frames, bytes) = shared.outbox.backlog();
                for r in &state.replays {
                    tracing::debug!(
                        conn = %shared.conn.conn_id,
                        channel = %r.channel,
                        sent = r.sent,
                        left = r.frames.len(),
                        rounds = r.rounds + 1,
                        queued_frames = frames,
                        queued_bytes = bytes,
                        "replay progress"
                    );
                }
            }
        }
        for (id, channel, top) in behind {
            shared.replay_on(id, channel, top).await;
        }
    }
}

impl Shared {
    /// Reads what the channel published after `top` (its live messages were let go while
    /// the replay ran), and queues it as the replay's next round. If history no longer
    /// holds all of it, the client is told to `resync` and the channel goes live as it is.
    async fn replay_on(&self, id: u64, channel: Channel, top: StreamPosition) {
        let limit = self.node.config.limits.max_recovery_messages;
        let history = self
            .node
            .hub
            .broker()
            .history(
                &channel,
                HistoryQuery::After {
                    offset: top.offset,
                    limit,
                },
            )
            .await;
        let mut state = self.lock();
        // Cancelled, or replaced by a new subscribe, meanwhile.
        let Some(replay) = state.replays.iter_mut().find(|r| r.id == id) else {
            return;
        };
        replay.history = HistoryRead::Done;
        replay.rounds += 1;
        match history {
            Ok(h) if continues(&h, &top, limit) => {
                tracing::debug!(
                    conn = %self.conn.conn_id,
                    %channel,
                    from = top.offset,
                    frames = h.messages.len(),
                    round = replay.rounds + 1,
                    "replay fell behind its channel; replaying on from history"
                );
                replay.frames = h
                    .messages
                    .iter()
                    .map(|m| {
                        protocol::message_frame_with(
                            &channel,
                            &m.payload,
                            protocol::is_json(&m.payload),
                            Some((m.offset, &h.epoch)),
                            m.publisher.as_deref(),
                        )
                    })
                    .collect();
                replay.top = StreamPosition {
                    offset: h.offset,
                    epoch: h.epoch.clone(),
                };
            }
            outcome => {
                tracing::debug!(
                    conn = %self.conn.conn_id,
                    %channel,
                    from = top.offset,
                    error = outcome.err().map(|e| e.to_string()),
                    "replay fell behind and history no longer covers it; the client is told to resync"
                );
                state.replays.retain(|r| r.id != id);
                drop(state);
                let _ = self.outbox.push(
                    ServerFrame::Resync {
                        channel: channel.as_str(),
                    }
                    .encode(),
                );
                // Incomplete either way: the client was just told.
                let _ = self.node.hub.go_live(self.conn.key, &channel);
            }
        }
    }
}

/// Whether `history` holds everything after `top`, within one read.
fn continues(history: &History, top: &StreamPosition, limit: usize) -> bool {
    let Some(missed) = history.offset.checked_sub(top.offset) else {
        return false;
    };
    history.epoch == top.epoch
        && history.first <= top.offset + 1
        && missed <= limit as u64
        && history.messages.len() as u64 == missed
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::broker::HistoryMessage;

    fn history(epoch: &str, first: u64, offsets: std::ops::RangeInclusive<u64>) -> History {
        History {
            epoch: Arc::from(epoch),
            offset: *offsets.end(),
            first,
            messages: offsets
                .map(|offset| HistoryMessage {
                    offset,
                    publisher: None,
                    payload: Bytes::new(),
                })
                .collect(),
        }
    }

    fn at(epoch: &str, offset: u64) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: Arc::from(epoch),
        }
    }

    #[test]
    fn a_read_continues_a_replay_only_from_right_after_it_in_the_same_epoch() {
        assert!(continues(&history("e", 1, 11..=20), &at("e", 10), 100));
        let nothing_new = History {
            messages: Vec::new(),
            ..history("e", 1, 1..=10)
        };
        assert!(continues(&nothing_new, &at("e", 10), 100), "nothing new");
        assert!(
            !continues(&history("f", 1, 11..=20), &at("e", 10), 100),
            "new epoch"
        );
        assert!(
            !continues(&history("e", 15, 15..=20), &at("e", 10), 100),
            "trimmed"
        );
        assert!(
            !continues(&history("e", 1, 11..=20), &at("e", 10), 5),
            "over the limit"
        );
        assert!(
            !continues(&history("e", 1, 12..=20), &at("e", 10), 100),
            "a hole"
        );
    }
}
