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

use super::error::BrokerError;
use super::seam::{Backchannel, Broker, Deliver, PresenceStore};
use super::types::{
    ChannelRules, Departure, History, HistoryMessage, HistoryQuery, InboxEntry, Joined, Lease,
    PresenceMember, Publication, RelayedFrames, StreamPosition, new_epoch,
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
            runtime.spawn(sweep_presence(
                Arc::downgrade(&presence),
                sink.clone(),
                rules.clone(),
            ));
        }
        MemoryBroker {
            idempotency: Mutex::new(HashMap::new()),
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

/// Removes members whose lease ran out, announcing them like any leave.
async fn sweep_presence(
    presence: Weak<Mutex<HashMap<Channel, HashMap<String, Present>>>>,
    sink: Arc<dyn Deliver>,
    rules: ChannelRules,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(presence) = presence.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut left = Vec::new();
        {
            let mut all = presence.lock().unwrap_or_else(|e| e.into_inner());
            for (channel, members) in all.iter_mut() {
                let expired: Vec<String> = members
                    .iter()
                    .filter(|(_, p)| p.expires_at.is_some_and(|t| t <= now))
                    .map(|(k, _)| k.clone())
                    .collect();
                for conn_id in expired {
                    if let Some(p) = members.remove(&conn_id) {
                        let last = !members.values().any(|o| o.member.user == p.member.user);
                        left.push((channel.clone(), p.member, last));
                    }
                }
            }
            all.retain(|_, members| !members.is_empty());
        }
        for (channel, member, last) in left {
            if super::presence::announced(rules.join_leave(&channel), last) {
                sink.deliver(&Publication::event(
                    channel.clone(),
                    super::presence::leave_frame(&channel, &member),
                ));
            }
        }
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

#[async_trait]
impl PresenceStore for MemoryBroker {
    async fn join(
        &self,
        channel: &Channel,
        member: &PresenceMember,
        lease: Lease,
    ) -> Result<Joined, BrokerError> {
        let mut all = self.presence_lock();
        let members = all.entry(channel.clone()).or_default();
        let new = !members.contains_key(&member.conn_id);
        let first_of_user = new && !members.values().any(|p| p.member.user == member.user);
        let status = members
            .get(&member.conn_id)
            .and_then(|p| p.member.status.clone());
        let mut member = member.clone();
        member.status = member.status.or(status);
        members.insert(
            member.conn_id.clone(),
            Present {
                member,
                expires_at: (!lease.renewed).then(|| Instant::now() + lease.duration),
            },
        );
        Ok(Joined { new, first_of_user })
    }

    async fn leave(
        &self,
        channel: &Channel,
        conn_id: &str,
    ) -> Result<Option<Departure>, BrokerError> {
        let mut all = self.presence_lock();
        let Some(members) = all.get_mut(channel) else {
            return Ok(None);
        };
        let departure = members.remove(conn_id).map(|p| Departure {
            last_of_user: !members.values().any(|o| o.member.user == p.member.user),
            member: p.member,
        });
        if members.is_empty() {
            all.remove(channel);
        }
        Ok(departure)
    }

    async fn set_status(
        &self,
        channel: &Channel,
        conn_id: &str,
        status: &serde_json::Value,
    ) -> Result<Option<PresenceMember>, BrokerError> {
        let mut all = self.presence_lock();
        Ok(all
            .get_mut(channel)
            .and_then(|m| m.get_mut(conn_id))
            .map(|p| {
                p.member.status = Some(status.clone());
                p.member.clone()
            }))
    }

    async fn members(&self, channel: &Channel) -> Result<Vec<PresenceMember>, BrokerError> {
        let now = Instant::now();
        let all = self.presence_lock();
        Ok(all
            .get(channel)
            .map(|m| {
                m.values()
                    .filter(|p| p.expires_at.is_none_or(|t| t > now))
                    .map(|p| p.member.clone())
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[async_trait]
impl Backchannel for MemoryBroker {
    async fn inbox_append(
        &self,
        _stream: &str,
        _entry: &InboxEntry,
    ) -> Result<String, BrokerError> {
        Err(BrokerError::Unsupported(
            "the durable inbox needs Redis: run fanout with --redis-url",
        ))
    }

    async fn relay(&self, _node: &str, _frames: &RelayedFrames) -> Result<bool, BrokerError> {
        // A single node: there is no other node to hold the session.
        Ok(false)
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
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::config::SettingsArgs;

    /// What the broker delivered to its node.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Publication>>);

    impl Deliver for Recorder {
        fn deliver(&self, publication: &Publication) -> usize {
            self.0.lock().unwrap().push(publication.clone());
            1
        }
        fn resync(&self, _: &Channel) {}
        fn relayed(&self, _: RelayedFrames) {}
    }

    /// A broker with the default namespaces (`dag:` keeps 1,000 messages), and what it
    /// delivered.
    fn broker() -> (MemoryBroker, Arc<Recorder>) {
        let config = SettingsArgs::from_pairs([("jwt_secret", "0123456789abcdef0123456789abcdef")])
            .resolve()
            .unwrap();
        let recorder = Arc::new(Recorder::default());
        (
            MemoryBroker::new(recorder.clone(), ChannelRules::from_config(&config)),
            recorder,
        )
    }

    fn channel(name: &str) -> Channel {
        Channel::parse(name).unwrap()
    }

    #[tokio::test]
    async fn history_channels_number_their_messages_and_replay_what_was_asked() {
        let (broker, delivered) = broker();
        let dag = channel("dag:7");
        for n in 1..=5u64 {
            let offset = broker
                .publish(&dag, Bytes::from(n.to_string()), None, None)
                .await
                .unwrap();
            assert_eq!(offset, Some(n));
        }
        let after = broker
            .history(
                &dag,
                HistoryQuery::After {
                    offset: 3,
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert_eq!((after.offset, after.first), (5, 1));
        let offsets: Vec<u64> = after.messages.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, [4, 5]);
        let latest = broker
            .history(&dag, HistoryQuery::Latest { limit: 2 })
            .await
            .unwrap();
        assert_eq!(latest.epoch, after.epoch);
        assert_eq!(latest.messages.len(), 2);
        // Delivered to the node with their positions, in order.
        let positions: Vec<u64> = delivered
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.position.as_ref().unwrap().offset)
            .collect();
        assert_eq!(positions, [1, 2, 3, 4, 5]);
        // A channel without history has none to read.
        let room = channel("room:lobby");
        assert_eq!(
            broker
                .publish(&room, Bytes::new(), None, None)
                .await
                .unwrap(),
            None
        );
        assert!(matches!(
            broker
                .history(&room, HistoryQuery::Latest { limit: 1 })
                .await,
            Err(BrokerError::NoHistory(_))
        ));
    }

    #[tokio::test]
    async fn a_publish_repeated_with_its_idempotency_key_publishes_once() {
        let (broker, delivered) = broker();
        let dag = channel("dag:9");
        let first = broker
            .publish(&dag, Bytes::from_static(b"1"), None, Some("k"))
            .await
            .unwrap();
        let again = broker
            .publish(&dag, Bytes::from_static(b"1"), None, Some("k"))
            .await
            .unwrap();
        assert_eq!(first, again);
        assert_eq!(delivered.0.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn presence_tells_a_users_first_join_and_last_leave() {
        let (broker, _) = broker();
        let room = channel("room:ops");
        let member = |conn: &str| PresenceMember {
            user: "ada".into(),
            conn_id: conn.into(),
            node: "n1".into(),
            info: None,
            status: None,
        };
        let lease = Lease {
            duration: Duration::from_secs(30),
            renewed: true,
        };
        let first = PresenceStore::join(&broker, &room, &member("c1"), lease)
            .await
            .unwrap();
        assert_eq!((first.new, first.first_of_user), (true, true));
        let second = PresenceStore::join(&broker, &room, &member("c2"), lease)
            .await
            .unwrap();
        assert_eq!((second.new, second.first_of_user), (true, false));
        let status = serde_json::json!({"state": "busy"});
        let updated = broker.set_status(&room, "c2", &status).await.unwrap();
        assert_eq!(updated.unwrap().status, Some(status));
        assert_eq!(broker.members(&room).await.unwrap().len(), 2);
        let left = PresenceStore::leave(&broker, &room, "c1").await.unwrap();
        assert!(!left.unwrap().last_of_user);
        let left = PresenceStore::leave(&broker, &room, "c2").await.unwrap();
        assert!(left.unwrap().last_of_user);
        assert_eq!(
            PresenceStore::leave(&broker, &room, "c2").await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn without_redis_there_is_no_inbox_and_no_other_node() {
        let (broker, _) = broker();
        let entry = InboxEntry {
            channel: channel("room:x"),
            user: "u".into(),
            conn_id: "c".into(),
            node: "n".into(),
            received_at_ms: 0,
            data: Bytes::from_static(b"{}"),
        };
        assert!(matches!(
            broker.inbox_append("fanout:inbox", &entry).await,
            Err(BrokerError::Unsupported(_))
        ));
        let frames = RelayedFrames {
            user: "u".into(),
            conn_id: "c.n2".into(),
            frames: vec!["{}".into()],
        };
        assert!(!broker.relay("n2", &frames).await.unwrap());
    }
}
