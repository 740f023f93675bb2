//! The in-process broker: the default when no Redis is configured.
//!
//! With a single node the local hub is the only subscriber there is, so interest needs no
//! bookkeeping and a publish is a direct hand-over to the hub in the publisher's task.
//! Channels with history keep their recent messages here, with the same semantics as the
//! Redis broker: offsets from 1, an epoch per history (a new one when it expired, and on
//! every process start), exact size, TTL after the last publish.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;

use super::{
    Broker, BrokerError, History, HistoryQuery, HistoryRules, HubSink, Publication, StreamPosition,
    new_epoch,
};
use crate::channel::Channel;
use crate::config::HistoryConfig;

pub struct MemoryBroker {
    hub: HubSink,
    rules: HistoryRules,
    histories: Arc<DashMap<Channel, Arc<Mutex<ChannelHistory>>>>,
}

struct ChannelHistory {
    epoch: Arc<str>,
    offset: u64,
    messages: VecDeque<(u64, Bytes)>,
    expires_at: Instant,
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
    pub fn new(hub: HubSink, rules: HistoryRules) -> MemoryBroker {
        let histories = Arc::new(DashMap::new());
        // Expired histories are dropped in the background, so idle channels cost nothing.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep_expired(Arc::downgrade(&histories)));
        }
        MemoryBroker {
            hub,
            rules,
            histories,
        }
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

    async fn publish(&self, channel: &Channel, payload: Bytes) -> Result<Option<u64>, BrokerError> {
        let Some(rule) = self.rules.for_channel(channel) else {
            self.hub
                .deliver(&Publication::new(channel.clone(), payload));
            return Ok(None);
        };
        let history = self.history_of(channel, rule);
        let mut h = history.lock().unwrap_or_else(|e| e.into_inner());
        h.renew_if_expired(rule.ttl);
        h.offset += 1;
        let offset = h.offset;
        h.messages.push_back((offset, payload.clone()));
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
        self.hub
            .deliver(&Publication::at(channel.clone(), payload, position));
        Ok(Some(offset))
    }

    async fn publish_many(&self, channels: &[Channel], payload: Bytes) -> Result<(), BrokerError> {
        for channel in channels {
            self.publish(channel, payload.clone()).await?;
        }
        Ok(())
    }

    async fn history(
        &self,
        channel: &Channel,
        query: HistoryQuery,
    ) -> Result<History, BrokerError> {
        let rule = self
            .rules
            .for_channel(channel)
            .ok_or_else(|| BrokerError::NoHistory(channel.clone()))?;
        let history = self.history_of(channel, rule);
        let mut h = history.lock().unwrap_or_else(|e| e.into_inner());
        h.renew_if_expired(rule.ttl);
        let messages = match query {
            HistoryQuery::After { offset, limit } => h
                .messages
                .iter()
                .filter(|(o, _)| *o > offset)
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
            first: h.messages.front().map_or(h.offset + 1, |(o, _)| *o),
            messages,
        })
    }

    fn is_ready(&self) -> bool {
        true
    }
}
