//! The local channel registry and fan-out.
//!
//! The hub knows which local connections are subscribed to which channels, tells the broker
//! when this node's interest in a channel starts and ends, and fans every publication out to
//! the local subscribers: encoded once into a transport-neutral [`Frame`], then queued on each
//! subscriber's [`Outbox`] without waiting (for a small channel, written to the socket at once
//! where it takes it; see `WRITE_NOW_MAX_SUBSCRIBERS`). The broker delivers into it through
//! the node's inlet (`node::Inlet`, a `broker::Deliver`), so the broker never names the hub.
//!
//! A subscriber is either *live* or *pending*. A pending subscriber is recovering a history
//! channel: live messages are buffered while its session reads the history and queues the
//! reply and the replay (at the client's reading pace), then [`Hub::activate`] queues the
//! buffered ones that are newer than the replay, under the channel's lock, and makes it
//! live. A live subscriber may skip messages up to an offset (those were replayed already).
//! That merge is what makes recovery gap-free and duplicate-free while messages keep coming.
//! A replay that takes so long that the buffer would outgrow its limit does not cost the
//! client its connection: the buffer is let go, and `activate` answers
//! [`Activation::FellBehind`], so the session replays on from history first.
//!
//! Invariants:
//! - A channel is in `channels` exactly while the broker is subscribed to it for this node.
//!   Joins and leaves of one channel are serialised by an interest lock (striped by channel),
//!   held across the broker call, so a join racing the last leave can never end with a local
//!   subscriber and no broker subscription.
//! - A reply pushed by `subscribe` is queued before any message of the new channels, and a
//!   reply pushed by `unsubscribe` after the last one.
//! - Fan-out takes one channel's subscriber lock at a time and never awaits.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;

use crate::broker::{Broker, BrokerError, StreamPosition};
use crate::channel::{Channel, ChannelPattern};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::protocol::{Frame, HistoryMark};

/// A connection's key in this node's registries (the hub, the drain list). It never leaves
/// the node; clients and other nodes know a connection by its public `conn_id`.
pub type ConnKey = u64;

mod fanout;
mod recovery;

const INTEREST_STRIPES: usize = 64;

/// Channels with at most this many local subscribers are written to inline by the fan-out
/// (each connection idle enough to take it at once; see `Outbox::push`): for a small channel,
/// waking each subscriber's writer task cost more than the writes. A larger fan-out leaves
/// the writes to the writer tasks, which run on every core and batch what piles up, where
/// inline writes would make one task write to every socket in turn. (BENCHMARKS.md:
/// "Small and large fan-outs".)
const WRITE_NOW_MAX_SUBSCRIBERS: usize = 32;

/// Publisher clocks may run this far ahead of ours before their timestamps are ignored.
const MAX_CLOCK_SKEW_MS: f64 = 5_000.0;
/// Publish-to-delivery lags above this come from a payload's stale timestamp, not delivery.
const MAX_PLAUSIBLE_LAG_MS: f64 = 600_000.0;

pub struct Hub {
    channels: DashMap<Channel, Arc<Subscribers>>,
    /// Most messages buffered for one recovering subscriber.
    pending_limit: usize,
    interest: Box<[tokio::sync::Mutex<()>]>,
    stripe_hasher: RandomState,
    broker: Arc<dyn Broker>,
    metrics: Arc<Metrics>,
}

/// The local subscribers of one channel.
#[derive(Default)]
struct Subscribers {
    by_conn: Mutex<HashMap<ConnKey, Subscriber>>,
}

struct Subscriber {
    outbox: Arc<Outbox>,
    state: SubscriberState,
}

enum SubscriberState {
    /// Receives messages as they come, except those at or before `skip` (already replayed).
    Live { skip: Option<StreamPosition> },
    /// Recovering: messages wait here (their frames carry their positions) until `activate`.
    /// `overflowed`: the buffer outgrew its limit and was let go; what it held is read from
    /// history again before the subscriber goes live.
    Pending {
        buffered: Vec<Frame>,
        overflowed: bool,
    },
}

/// What [`Hub::activate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// The subscriber is live; the buffered messages newer than the replay are queued.
    Live,
    /// Messages buffered during the replay were let go (too many): the subscriber is still
    /// pending, buffering anew. Replay from history after the position given, then activate
    /// again.
    FellBehind,
    /// The connection is not subscribed to the channel (any more).
    NotSubscribed,
}

/// Whether a message at `mark` was already sent to a subscriber whose replay ended at
/// `skip`. Positions of another epoch are never skipped.
fn already_sent(mark: Option<&HistoryMark>, skip: Option<&StreamPosition>) -> bool {
    match (mark, skip) {
        (Some(m), Some(s)) => m.epoch == s.epoch && m.offset <= s.offset,
        _ => false,
    }
}

impl Subscribers {
    fn lock(&self) -> MutexGuard<'_, HashMap<ConnKey, Subscriber>> {
        // Updates are single inserts/removes; a poisoned map is still consistent.
        self.by_conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Hub {
    /// The hub of a node whose broker is `broker` (which delivers into it through the node).
    pub fn new(metrics: Arc<Metrics>, pending_limit: usize, broker: Arc<dyn Broker>) -> Arc<Hub> {
        Arc::new(Hub {
            channels: DashMap::new(),
            pending_limit: pending_limit.max(1),
            interest: (0..INTEREST_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            stripe_hasher: RandomState::new(),
            broker,
            metrics,
        })
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// The channels this node has local subscribers of that match `pattern`, with how many.
    pub fn channel_counts(&self, pattern: &ChannelPattern) -> Vec<(String, usize)> {
        self.channels
            .iter()
            .filter(|e| pattern.matches(e.key()))
            .map(|e| (e.key().as_str().to_owned(), e.value().lock().len()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Subscribes a connection to `channels` (distinct, not yet subscribed by this connection)
    /// and queues `reply` on its outbox before any message of those channels.
    ///
    /// Nothing is subscribed if the broker refuses a channel this node did not hold yet.
    pub async fn subscribe(
        &self,
        key: ConnKey,
        outbox: &Arc<Outbox>,
        channels: &[Channel],
        reply: Option<Frame>,
    ) -> Result<(), BrokerError> {
        let mut channels: Vec<&Channel> = channels.iter().collect();
        channels.sort();
        channels.dedup();
        let _interest = self.lock_interest(&channels).await;

        let new: Vec<Channel> = channels
            .iter()
            .filter(|c| !self.channels.contains_key(**c))
            .map(|c| (*c).clone())
            .collect();
        if !new.is_empty() {
            self.broker.subscribe(&new).await?;
        }
        let entries: Vec<Arc<Subscribers>> = channels
            .iter()
            .map(|c| self.channels.entry((*c).clone()).or_default().clone())
            .collect();
        // Hold every channel's subscriber lock (in sorted channel order, the only order in
        // which more than one is ever held) while inserting and queueing the reply, so no
        // message of these channels can be queued ahead of the reply.
        let mut guards: Vec<_> = entries.iter().map(|s| s.lock()).collect();
        for guard in &mut guards {
            guard.insert(
                key,
                Subscriber {
                    outbox: outbox.clone(),
                    state: SubscriberState::Live { skip: None },
                },
            );
        }
        if let Some(reply) = reply {
            // A reply that overflows closes the connection as slow; nothing else to do here.
            let _ = outbox.push(reply);
        }
        drop(guards);
        self.metrics.subscriptions.add(channels.len() as i64);
        self.metrics.channels.set(self.channels.len() as i64);
        Ok(())
    }

    /// Removes a connection from `channels`, then queues `reply` after the last message of
    /// those channels. Channels left without local subscribers are released at the broker.
    pub async fn unsubscribe(
        &self,
        key: ConnKey,
        outbox: &Outbox,
        channels: &[Channel],
        reply: Option<Frame>,
    ) {
        let mut channels: Vec<&Channel> = channels.iter().collect();
        channels.sort();
        channels.dedup();
        let _interest = self.lock_interest(&channels).await;

        let mut emptied = Vec::new();
        let mut removed = 0i64;
        for channel in &channels {
            let Some(subs) = self.channels.get(*channel).map(|e| e.clone()) else {
                continue;
            };
            let mut by_conn = subs.lock();
            if by_conn.remove(&key).is_some() {
                removed += 1;
            }
            if by_conn.is_empty() {
                // Safe: joins of this channel wait on the interest lock we hold.
                self.channels.remove(*channel);
                emptied.push((*channel).clone());
            }
        }
        if let Some(reply) = reply {
            let _ = outbox.push(reply);
        }
        self.metrics.subscriptions.sub(removed);
        self.metrics.channels.set(self.channels.len() as i64);
        if !emptied.is_empty()
            && let Err(e) = self.broker.unsubscribe(&emptied).await
        {
            // The channel is gone from the registry either way; a broker that lost the
            // connection drops the subscription with it.
            tracing::warn!(error = %e, channels = emptied.len(), "broker unsubscribe failed");
        }
    }

    /// Locks the interest stripes of `channels` in ascending stripe order (deadlock-free).
    async fn lock_interest(&self, channels: &[&Channel]) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = channels
            .iter()
            .map(|c| self.stripe_hasher.hash_one(c) as usize % INTEREST_STRIPES)
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for s in stripes {
            guards.push(self.interest[s].lock().await);
        }
        guards
    }
}

#[cfg(test)]
mod tests;
