//! The in-process broker: the default when no Redis is configured.
//!
//! With a single node the local hub is the only subscriber there is, so interest needs no
//! bookkeeping and a publish is a direct hand-over to the hub in the publisher's task.
//! Channels with history keep their recent messages here, with the same semantics as the
//! Redis broker: offsets from 1, an epoch per history (a new one when it expired, and on
//! every process start), exact size, TTL after the last publish. Presence is kept here too
//! (it is this node's [`PresenceStore`]); members set through the HTTP API expire after their
//! lease, with a leave event. As a [`Backchannel`] it has no durable inbox without Redis
//! (`send` answers `unsupported`) and no other node to relay to.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;

mod control;
mod presence;

use super::control::NodeInfo;
use super::error::BrokerError;
use super::seam::{Broker, Deliver};
use super::types::{
    ChannelRules, History, HistoryMessage, HistoryQuery, PresenceMember, Publication,
    StreamPosition, new_epoch,
};
use crate::channel::Channel;
use crate::config::HistoryConfig;

/// A channel and an idempotency key given with a publish to it.
type IdempotencyKey = (Channel, String);
/// A publish's result, and until when a repeat returns it.
type Remembered = (Option<u64>, Instant);

pub struct MemoryBroker {
    sink: Arc<dyn Deliver>,
    rules: ChannelRules,
    histories: Arc<DashMap<Channel, Arc<Mutex<ChannelHistory>>>>,
    presence: Arc<Mutex<HashMap<Channel, HashMap<String, Present>>>>,
    /// Results of publishes with an idempotency key, until their window ends.
    idempotency: Mutex<HashMap<IdempotencyKey, Remembered>>,
    /// Revocations: per user the cut-off (Unix seconds) and until when it is kept; per token
    /// id until when (its expiry).
    revoked_users: Mutex<HashMap<String, (i64, Instant)>>,
    revoked_tokens: Mutex<HashMap<String, i64>>,
    /// This node's last heartbeat, and until when it counts.
    heartbeat: Mutex<Option<(NodeInfo, Instant)>>,
}

struct ChannelHistory {
    epoch: Arc<str>,
    offset: u64,
    messages: VecDeque<HistoryMessage>,
    expires_at: Instant,
}

/// A presence member and, unless its node renews it, when it expires.
struct Present {
    member: PresenceMember,
    expires_at: Option<Instant>,
}

impl ChannelHistory {
    fn new(ttl: Duration) -> ChannelHistory {
        ChannelHistory {
            epoch: new_epoch(),
            offset: 0,
            messages: VecDeque::new(),
            expires_at: Instant::now() + ttl,
        }
    }

    /// Starts a new epoch if this history expired.
    fn renew_if_expired(&mut self, ttl: Duration) {
        if Instant::now() >= self.expires_at {
            *self = ChannelHistory::new(ttl);
        }
    }
}

impl MemoryBroker {
    /// Publishes without looking at idempotency keys.
    fn publish_now(
        &self,
        channel: &Channel,
        payload: Bytes,
        publisher: Option<&str>,
    ) -> Result<Option<u64>, BrokerError> {
        let publisher: Option<Arc<str>> = publisher.map(Arc::from);
        let Some(rule) = self.rules.history(channel) else {
            self.sink
                .deliver(&Publication::new(channel.clone(), payload).by(publisher));
            return Ok(None);
        };
        let history = self.history_of(channel, rule);
        let mut h = history.lock().unwrap_or_else(|e| e.into_inner());
        h.renew_if_expired(rule.ttl);
        h.offset += 1;
        let offset = h.offset;
        h.messages.push_back(HistoryMessage {
            offset,
            publisher: publisher.clone(),
            payload: payload.clone(),
        });
        while h.messages.len() > rule.size {
            h.messages.pop_front();
        }
        h.expires_at = Instant::now() + rule.ttl;
        let position = StreamPosition {
            offset,
            epoch: h.epoch.clone(),
        };
        // Delivered under the channel's lock, so concurrent publishers' messages reach the
        // hub in offset order.
        self.sink
            .deliver(&Publication::at(channel.clone(), payload, position).by(publisher));
        Ok(Some(offset))
    }
    pub fn new(sink: Arc<dyn Deliver>, rules: ChannelRules) -> MemoryBroker {
        let histories = Arc::new(DashMap::new());
        let presence = Arc::new(Mutex::new(HashMap::new()));
        // Expired histories and presence leases are dropped in the background.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep_expired(Arc::downgrade(&histories)));
            runtime.spawn(presence::sweep_presence(
                Arc::downgrade(&presence),
                sink.clone(),
                rules.clone(),
            ));
        }
        MemoryBroker {
            idempotency: Mutex::new(HashMap::new()),
            revoked_users: Mutex::new(HashMap::new()),
            revoked_tokens: Mutex::new(HashMap::new()),
            heartbeat: Mutex::new(None),
            sink,
            rules,
            histories,
            presence,
        }
    }

    fn presence_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Channel, HashMap<String, Present>>> {
        self.presence.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn history_of(&self, channel: &Channel, rule: HistoryConfig) -> Arc<Mutex<ChannelHistory>> {
        self.histories
            .entry(channel.clone())
            .or_insert_with(|| Arc::new(Mutex::new(ChannelHistory::new(rule.ttl))))
            .clone()
    }
}

async fn sweep_expired(histories: Weak<DashMap<Channel, Arc<Mutex<ChannelHistory>>>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        let Some(histories) = histories.upgrade() else {
            return;
        };
        let now = Instant::now();
        histories.retain(|_, h| h.lock().map(|h| h.expires_at > now).unwrap_or(false));
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn subscribe(&self, _channels: &[Channel]) -> Result<(), BrokerError> {
        // Every publication is offered to the hub, which knows its own subscribers.
        Ok(())
    }

    async fn unsubscribe(&self, _channels: &[Channel]) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn publish(
        &self,
        channel: &Channel,
        payload: Bytes,
        publisher: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<Option<u64>, BrokerError> {
        let Some(key) = idempotency_key else {
            return self.publish_now(channel, payload, publisher);
        };
        // Held across the publish, so that two concurrent publishes of one key publish once.
        let mut seen = self.idempotency.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let entry = (channel.clone(), key.to_owned());
        if let Some((result, until)) = seen.get(&entry)
            && *until > now
        {
            return Ok(*result);
        }
        if seen.len() > 100_000 {
            seen.retain(|_, (_, until)| *until > now);
        }
        let result = self.publish_now(channel, payload, publisher)?;
        seen.insert(entry, (result, now + self.rules.idempotency_window()));
        Ok(result)
    }

    async fn publish_many(&self, channels: &[Channel], payload: Bytes) -> Result<(), BrokerError> {
        for channel in channels {
            self.publish_now(channel, payload.clone(), None)?;
        }
        Ok(())
    }

    async fn publish_event(&self, channel: &Channel, frame: Bytes) -> Result<(), BrokerError> {
        self.sink
            .deliver(&Publication::event(channel.clone(), frame));
        Ok(())
    }

    async fn history(
        &self,
        channel: &Channel,
        query: HistoryQuery,
    ) -> Result<History, BrokerError> {
        self.read_history(channel, query)
    }

    fn is_ready(&self) -> bool {
        true
    }
}

impl MemoryBroker {
    fn read_history(&self, channel: &Channel, query: HistoryQuery) -> Result<History, BrokerError> {
        let rule = self
            .rules
            .history(channel)
            .ok_or_else(|| BrokerError::NoHistory(channel.clone()))?;
        let history = self.history_of(channel, rule);
        let mut h = history.lock().unwrap_or_else(|e| e.into_inner());
        h.renew_if_expired(rule.ttl);
        let messages = match query {
            HistoryQuery::After { offset, limit } => h
                .messages
                .iter()
                .filter(|m| m.offset > offset)
                .take(limit)
                .cloned()
                .collect(),
            HistoryQuery::Latest { limit } => {
                let skip = h.messages.len().saturating_sub(limit);
                h.messages.iter().skip(skip).cloned().collect()
            }
        };
        Ok(History {
            epoch: h.epoch.clone(),
            offset: h.offset,
            first: h.messages.front().map_or(h.offset + 1, |m| m.offset),
            messages,
        })
    }
}

#[cfg(test)]
mod tests;
