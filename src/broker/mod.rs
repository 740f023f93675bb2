//! The broker seam: where messages come from and go to beyond this node.
//!
//! The [`Hub`](crate::hub::Hub) owns local subscribers and tells the broker which channels
//! this node is interested in (first local subscriber in, last one out). The broker carries
//! publications between nodes and hands every message for a channel of interest back to the
//! hub through a [`HubSink`]. The in-process [`MemoryBroker`] serves a single node; the
//! [`RedisBroker`] serves a cluster. Both must keep the same contract, documented on [`Broker`].

mod memory;
mod redis;

use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

pub use self::redis::RedisBroker;
use crate::channel::Channel;
pub use crate::hub::HubSink;
pub use memory::MemoryBroker;

/// A message on its way from the broker to local subscribers.
#[derive(Debug, Clone)]
pub struct Publication {
    pub channel: Channel,
    /// The payload exactly as published; see `protocol::message_frame` for how it is framed.
    pub payload: Bytes,
    /// When this node received it from the broker; the start of the dispatch-latency clock.
    pub received_at: Instant,
}

impl Publication {
    pub fn new(channel: Channel, payload: Bytes) -> Publication {
        Publication {
            channel,
            payload,
            received_at: Instant::now(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot be reached or is not ready; the caller may retry later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Moves publications between nodes and tracks which channels this node wants.
///
/// Contract:
/// - `subscribe` returns once messages published to those channels afterwards will reach the
///   hub; the hub never calls it twice for a channel without an `unsubscribe` in between, and
///   never concurrently for the same channel.
/// - `publish` returns once the message is accepted for delivery to every node subscribed
///   to the channel (this one included).
/// - Messages of one channel reach the hub in publish order.
/// - Nothing here may block the caller on a slow subscriber: delivery is the hub's job.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Short name for logs and `/readyz`: `memory` or `redis`.
    fn kind(&self) -> &'static str;

    /// Starts delivering these channels to this node's hub.
    async fn subscribe(&self, channels: &[Channel]) -> Result<(), BrokerError>;

    /// Stops delivering these channels to this node's hub.
    async fn unsubscribe(&self, channels: &[Channel]) -> Result<(), BrokerError>;

    /// Publishes a payload to every subscriber of the channel on every node.
    async fn publish(&self, channel: &Channel, payload: Bytes) -> Result<(), BrokerError>;

    /// Publishes one payload to several channels, all or nothing: on error, none of them
    /// was published.
    async fn publish_many(&self, channels: &[Channel], payload: Bytes) -> Result<(), BrokerError>;

    /// Whether the broker can currently serve subscribes and publishes.
    fn is_ready(&self) -> bool;
}
