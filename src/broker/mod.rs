//! The broker layer: where messages come from and go to beyond this node.
//!
//! The seam is split by job ([`seam`]): a [`Broker`] carries publications between nodes and
//! keeps history; a [`PresenceStore`] keeps who is on each channel; a [`Backchannel`]
//! carries what flows back (the inbox, relayed client frames). Each broker is handed a
//! [`Deliver`] target at start and delivers into it, never naming what is behind it
//! (centrifuge's `BrokerEventHandler` works the same way). [`start`] builds the ones the
//! configuration names: in process ([`MemoryBroker`]) for a single node, on one Redis or on
//! a Redis Cluster for many. [`presence`] is the policy every caller shares on top of a
//! store: when joins and leaves are announced, and their event frames.
//!
//! The values that cross the seam live in [`types`] (and, for the control of sessions, in
//! [`control`]); what can go wrong, in [`error`].

pub mod control;
pub mod error;
mod memory;
pub mod presence;
mod redis;
pub mod seam;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

pub use self::control::{
    ControlCommand, ControlMessage, HEARTBEAT, HEARTBEAT_TTL, NodeInfo, Revocation, SurveyReply,
};
pub use self::error::BrokerError;
pub use self::memory::MemoryBroker;
pub use self::presence::Presence;
pub use self::redis::{ProbeReport, decode_message as decode_redis_message, probe as probe_redis};
pub use self::seam::{Backchannel, Broker, Control, Deliver, PresenceStore};
pub use self::types::{
    ChannelRules, Content, Departure, History, HistoryMessage, HistoryQuery, IdempotencyWindow,
    InboxEntry, Joined, Lease, MAX_IDEMPOTENCY_KEY, PresenceMember, Publication, RelayedFrames,
    StreamPosition, new_epoch,
};
use crate::config::{Config, RedisConfig};
use crate::metrics::Metrics;

/// What every broker is started with, read from the configuration once.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// This node's id: its relay channel and its presence members name it.
    pub node_id: String,
    /// Largest payload a publication may carry; larger ones arriving from Redis are dropped.
    pub max_payload: usize,
    /// How long a presence entry lives without renewal.
    pub presence_lease: Duration,
    /// History, presence and idempotency rules per namespace.
    pub rules: ChannelRules,
    /// Redis or a Redis Cluster; `None` for the in-process broker.
    pub redis: Option<RedisConfig>,
}

impl BrokerOptions {
    pub fn from_config(config: &Config) -> BrokerOptions {
        BrokerOptions {
            node_id: config.node_id.clone(),
            max_payload: config.limits.max_payload_bytes,
            presence_lease: config.presence_lease,
            rules: ChannelRules::from_config(config),
            redis: config.redis.clone(),
        }
    }
}

/// The brokers of one node, one per job (the same object behind all three when one broker
/// does everything, as the in-process one does).
#[derive(Clone)]
pub struct Brokers {
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<dyn PresenceStore>,
    pub backchannel: Arc<dyn Backchannel>,
    pub control: Arc<dyn Control>,
}

/// A broker that could not be started: its configuration is unusable (connecting happens in
/// the background, so an unreachable Redis is not this).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// Starts the brokers `options` name, delivering into `deliver`. Must be called within a
/// Tokio runtime (the brokers' background tasks start here).
pub fn start(
    options: &BrokerOptions,
    deliver: Arc<dyn Deliver>,
    metrics: &Metrics,
) -> Result<Brokers, StartError> {
    match &options.redis {
        None => {
            let memory = Arc::new(MemoryBroker::new(deliver, options.rules.clone()));
            Ok(Brokers {
                broker: memory.clone(),
                presence: memory.clone(),
                backchannel: memory.clone(),
                control: memory,
            })
        }
        Some(redis) => self::redis::start(redis, options, deliver, metrics),
    }
}
