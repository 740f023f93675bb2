//! The values that cross the broker seam: publications and their place in history, history
//! snapshots, presence members, inbox entries, relayed frames, and the per-namespace rules a
//! broker needs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::config::{Config, HistoryConfig, JoinLeave, NamespaceConfig};
use crate::protocol::HistoryEntry;

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
    pub content: Content,
    /// Set for messages of channels with history (published through the history path).
    pub position: Option<StreamPosition>,
    /// When this node received it from the broker; the start of the dispatch-latency clock.
    pub received_at: Instant,
}

/// What a publication carries: a payload to wrap in a message frame, or a frame made whole
/// by a gateway.
#[derive(Debug, Clone)]
pub enum Content {
    /// The payload exactly as published (see `protocol::message_frame_with`).
    Message {
        payload: Bytes,
        /// The user who published it from a client (set by the gateway from the token,
        /// never from the client's frame); `None` for backend publishes.
        publisher: Option<Arc<str>>,
    },
    /// A complete server frame (join, leave, presence update), delivered as it is.
    Event { frame: Bytes },
}

impl Publication {
    /// A message without a place in history.
    pub fn new(channel: Channel, payload: Bytes) -> Publication {
        Publication {
            channel,
            content: Content::Message {
                payload,
                publisher: None,
            },
            position: None,
            received_at: Instant::now(),
        }
    }

    /// A message at its place in the channel's history.
    pub fn at(channel: Channel, payload: Bytes, position: StreamPosition) -> Publication {
        Publication {
            position: Some(position),
            ..Publication::new(channel, payload)
        }
    }

    /// The message, published by a client's user.
    pub fn by(mut self, user: Option<Arc<str>>) -> Publication {
        if let Content::Message { publisher, .. } = &mut self.content {
            *publisher = user;
        }
        self
    }

    /// An event frame (join, leave, presence update) for the channel's subscribers.
    pub fn event(channel: Channel, frame: Bytes) -> Publication {
        Publication {
            channel,
            content: Content::Event { frame },
            position: None,
            received_at: Instant::now(),
        }
    }

    /// The size of what it carries (a payload or a frame), for the size limit.
    pub fn len(&self) -> usize {
        match &self.content {
            Content::Message { payload, .. } => payload.len(),
            Content::Event { frame } => frame.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

/// Which messages `Broker::history` returns.
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
