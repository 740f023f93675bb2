//! The broker seam: where messages come from and go to beyond this node.
//!
//! The hub owns local subscribers and tells the broker which channels this node is
//! interested in (first local subscriber in, last one out). The broker carries publications
//! between nodes and hands every message for a channel of interest to the [`Deliver`] target
//! it was given at construction (the hub, which the broker never names: centrifuge's
//! `BrokerEventHandler` works the same way). The in-process [`MemoryBroker`] serves a single
//! node; the [`RedisBroker`] serves a cluster. Both keep the contract documented on
//! [`Broker`]; a new broker (Redis Cluster, say) is a new submodule implementing it.
//!
//! The types that cross the seam (publications, positions, history, presence members, inbox
//! entries) live here; [`presence`] is the policy every broker and caller shares for
//! announcing joins and leaves.

mod memory;
pub mod presence;
mod redis;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use self::redis::{
    ProbeReport, RedisBroker, RedisClusterBroker, decode_message as decode_redis_message,
    probe as probe_redis,
};
use crate::channel::Channel;
use crate::config::{Config, HistoryConfig, JoinLeave, NamespaceConfig};
use crate::protocol::{ClientError, ErrorCode, HistoryEntry};
pub use memory::MemoryBroker;

/// Where a broker delivers what arrives for this node's channels. The hub implements it.
pub trait Deliver: Send + Sync + 'static {
    /// Fans a publication out to this node's subscribers; returns how many were queued.
    fn deliver(&self, publication: &Publication) -> usize;

    /// Tells the channel's subscribers that messages were lost and they must recover.
    fn resync(&self, channel: &Channel);

    /// Hands client frames that another node received (an SSE POST that reached the wrong
    /// node behind a balancer) to the local session `conn_id`, if it belongs to `user`.
    fn relayed(&self, relay: RelayedFrames);
}

/// Client frames on their way to the node that holds their session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedFrames {
    pub user: String,
    pub conn_id: String,
    pub frames: Vec<String>,
}

impl RelayedFrames {
    /// `user\nconn_id\nframe\nframe...` (none of them contains a line break).
    pub fn encode(&self) -> String {
        let mut out = format!("{}\n{}", self.user, self.conn_id);
        for f in &self.frames {
            out.push('\n');
            out.push_str(f);
        }
        out
    }

    pub fn decode(text: &str) -> Option<RelayedFrames> {
        let mut lines = text.split('\n');
        let user = lines.next()?.to_owned();
        let conn_id = lines.next()?.to_owned();
        let frames: Vec<String> = lines.map(str::to_owned).collect();
        (!frames.is_empty()).then_some(RelayedFrames {
            user,
            conn_id,
            frames,
        })
    }
}

/// A random epoch name: 16 hex digits.
pub fn new_epoch() -> Arc<str> {
    Arc::from(format!("{:016x}", rand::random::<u64>()))
}

/// Where a message sits in its channel's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    /// 1 for the first message of an epoch, then +1 per message.
    pub offset: u64,
    /// Names one unbroken history of the channel; it changes whenever the history was lost
    /// (expired, flushed, Redis restarted without persistence), and offsets restart.
    pub epoch: Arc<str>,
}

/// A message on its way from the broker to local subscribers.
#[derive(Debug, Clone)]
pub struct Publication {
    pub channel: Channel,
    /// The payload exactly as published (see `protocol::message_frame`), or, for an event,
    /// the complete server frame.
    pub payload: Bytes,
    /// Set for messages of channels with history (published through the history path).
    pub position: Option<StreamPosition>,
    /// The user who published it from a WebSocket client (set by the gateway from the
    /// token, never from the client's frame); `None` for backend publishes.
    pub publisher: Option<Arc<str>>,
    /// A gateway event (join, leave, presence update) rather than an application message.
    pub event: bool,
    /// When this node received it from the broker; the start of the dispatch-latency clock.
    pub received_at: Instant,
}

impl Publication {
    pub fn new(channel: Channel, payload: Bytes) -> Publication {
        Publication {
            channel,
            payload,
            position: None,
            publisher: None,
            event: false,
            received_at: Instant::now(),
        }
    }

    pub fn at(channel: Channel, payload: Bytes, position: StreamPosition) -> Publication {
        Publication {
            position: Some(position),
            ..Publication::new(channel, payload)
        }
    }

    pub fn by(mut self, publisher: Option<Arc<str>>) -> Publication {
        self.publisher = publisher;
        self
    }

    /// An event frame (join, leave, presence update) for the channel's subscribers.
    pub fn event(channel: Channel, frame: Bytes) -> Publication {
        Publication {
            event: true,
            ..Publication::new(channel, frame)
        }
    }
}

/// One message kept in a channel's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryMessage {
    pub offset: u64,
    pub publisher: Option<Arc<str>>,
    pub payload: Bytes,
}

impl HistoryMessage {
    /// The message as an entry of a `history` reply.
    pub fn entry(&self) -> HistoryEntry {
        HistoryEntry::new(self.offset, self.publisher.clone(), &self.payload)
    }
}

/// One connection (or agent set by a backend) present on a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceMember {
    pub user: String,
    pub conn_id: String,
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// What a presence join changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// The member was not present before (not a repeated join).
    pub new: bool,
    /// It is the user's first member on the channel.
    pub first_of_user: bool,
}

/// A member that left, and whether it was the user's last connection on the channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Departure {
    pub member: PresenceMember,
    pub last_of_user: bool,
}

/// How long a presence entry lives, and who keeps it alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub duration: Duration,
    /// Renewed by this node until the member leaves (connections); otherwise it expires
    /// after `duration` unless set again (agents set through the HTTP API).
    pub renewed: bool,
}

/// What a `send` frame appends to the inbox stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    pub channel: Channel,
    pub user: String,
    pub conn_id: String,
    pub node: String,
    /// Unix milliseconds when the gateway received it.
    pub received_at_ms: i64,
    /// The client's `data`, as JSON text.
    pub data: Bytes,
}

/// A channel's history as one consistent snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub epoch: Arc<str>,
    /// Offset of the latest message of this epoch (0 before the first one).
    pub offset: u64,
    /// Offset of the oldest message still kept (`offset + 1` when none is).
    pub first: u64,
    /// The messages asked for, oldest first.
    pub messages: Vec<HistoryMessage>,
}

/// Which messages [`Broker::history`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryQuery {
    /// Those after this offset, at most `limit`.
    After { offset: u64, limit: usize },
    /// The latest `limit`.
    Latest { limit: usize },
}

/// What the broker must know of each namespace's rules: history and presence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelRules(BTreeMap<String, NamespaceConfig>, IdempotencyWindow);

/// How long an idempotency key remembers its publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyWindow(pub Duration);

impl Default for IdempotencyWindow {
    fn default() -> Self {
        IdempotencyWindow(Duration::from_secs(300))
    }
}

/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

impl ChannelRules {
    pub fn from_config(config: &Config) -> ChannelRules {
        ChannelRules(
            config.namespaces.clone(),
            IdempotencyWindow(config.idempotency_window),
        )
    }

    pub fn idempotency_window(&self) -> Duration {
        self.1.0
    }

    pub fn history(&self, channel: &Channel) -> Option<HistoryConfig> {
        self.0.get(channel.namespace()).and_then(|n| n.history)
    }

    pub fn presence(&self, channel: &Channel) -> bool {
        self.0.get(channel.namespace()).is_some_and(|n| n.presence)
    }

    pub fn join_leave(&self, channel: &Channel) -> JoinLeave {
        self.0
            .get(channel.namespace())
            .map_or(JoinLeave::Off, |n| n.join_leave)
    }

    /// Namespaces with history and their settings.
    pub fn histories(&self) -> impl Iterator<Item = (&String, HistoryConfig)> {
        self.0
            .iter()
            .filter_map(|(ns, c)| c.history.map(|h| (ns, h)))
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot be reached or is not ready; the caller may retry later. The text is
    /// for logs (it may name Redis internals); clients get a generic message.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused this request's arguments (it is reachable; the request was wrong).
    /// The text is for logs; clients get a generic `bad_request`.
    #[error("broker refused the request: {0}")]
    Rejected(String),
    /// This broker does not offer the feature (the inbox on the embedded broker).
    #[error("{0}")]
    Unsupported(&'static str),
    /// The channel keeps no history.
    #[error("channel {0} keeps no history")]
    NoHistory(Channel),
}

impl From<BrokerError> for ClientError {
    /// What a client is told. Details of the broker's own failures stay in the node's logs.
    fn from(e: BrokerError) -> ClientError {
        match e {
            BrokerError::Unavailable(_) => {
                ClientError::unavailable("the message broker is unavailable; retry shortly")
            }
            BrokerError::Rejected(_) => {
                ClientError::bad_request("the request's arguments were refused by the broker")
            }
            BrokerError::Unsupported(what) => ClientError::new(ErrorCode::Unsupported, what),
            BrokerError::NoHistory(c) => {
                ClientError::bad_request(format!("channel {c} keeps no history"))
            }
        }
    }
}

/// Moves publications between nodes and tracks which channels this node wants.
///
/// Contract:
/// - `subscribe` returns once messages published to those channels afterwards will reach the
///   hub; the hub never calls it twice for a channel without an `unsubscribe` in between, and
///   never concurrently for the same channel.
/// - `publish` returns once the message is accepted for delivery to every node subscribed
///   to the channel (this one included).
/// - Messages of one channel reach the hub in publish order; messages of a channel with
///   history carry their [`StreamPosition`], and a broker that notices a gap in a channel's
///   offsets fills it from history before going on, or calls [`HubSink::resync`].
/// - Nothing here may block the caller on a slow subscriber: delivery is the hub's job.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Short name for logs and `/readyz`: `memory` or `redis`.
    fn kind(&self) -> &'static str;

    /// Starts delivering these channels to this node's hub.
    async fn subscribe(&self, channels: &[Channel]) -> Result<(), BrokerError>;

    /// Stops delivering these channels to this node's hub.
    async fn unsubscribe(&self, channels: &[Channel]) -> Result<(), BrokerError>;

    /// Publishes a payload to every subscriber of the channel on every node. For a channel
    /// with history the message is also appended to it, and its offset returned. With an
    /// idempotency key, a publish repeated within the idempotency window publishes nothing
    /// and returns the first one's result (a publisher's retry after a lost reply).
    async fn publish(
        &self,
        channel: &Channel,
        payload: Bytes,
        publisher: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<Option<u64>, BrokerError>;

    /// Sends an event frame (join, leave, presence update) to the channel's subscribers on
    /// every node; never kept in history.
    async fn publish_event(&self, channel: &Channel, frame: Bytes) -> Result<(), BrokerError>;

    /// Adds (or replaces) a member of a channel's presence.
    async fn presence_join(
        &self,
        channel: &Channel,
        member: &PresenceMember,
        lease: Lease,
    ) -> Result<Joined, BrokerError>;

    /// Removes a member; `None` if it was not present.
    async fn presence_leave(
        &self,
        channel: &Channel,
        conn_id: &str,
    ) -> Result<Option<Departure>, BrokerError>;

    /// Sets a member's status; the updated member, or `None` if it is not present.
    async fn presence_status(
        &self,
        channel: &Channel,
        conn_id: &str,
        status: &serde_json::Value,
    ) -> Result<Option<PresenceMember>, BrokerError>;

    /// The members of a channel's presence, cluster-wide.
    async fn presence(&self, channel: &Channel) -> Result<Vec<PresenceMember>, BrokerError>;

    /// Appends a client's `send` to a durable inbox stream; returns the entry id.
    async fn inbox_append(&self, stream: &str, entry: &InboxEntry) -> Result<String, BrokerError>;

    /// Publishes one payload to several channels, all or nothing: on error, none of them
    /// was published.
    async fn publish_many(&self, channels: &[Channel], payload: Bytes) -> Result<(), BrokerError>;

    /// Reads a channel's history (creating its epoch if it has none yet).
    async fn history(&self, channel: &Channel, query: HistoryQuery)
    -> Result<History, BrokerError>;

    /// Sends client frames to the node `node`, which holds their session. False when that
    /// node is not there (or this broker connects no other node).
    async fn relay(&self, node: &str, frames: &RelayedFrames) -> Result<bool, BrokerError>;

    /// Whether the broker can currently serve subscribes and publishes.
    fn is_ready(&self) -> bool;
}
