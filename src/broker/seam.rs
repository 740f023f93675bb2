//! The broker seam, split by job: [`Broker`] moves publications between nodes and keeps
//! history, [`PresenceStore`] keeps who is on a channel, [`Backchannel`] carries what flows
//! back (clients' `send`s to the durable inbox, client frames relayed to the node that holds
//! their session), [`Control`] carries the backend's control of sessions cluster-wide
//! (commands for every node, revocations, the node registry). [`Deliver`] is the other
//! direction: where a broker hands what arrives for this node, implemented above the broker
//! (by the node), so the broker never names the hub.
//!
//! centrifuge keeps `Broker` and `PresenceManager` apart the same way: a deployment can have
//! them in different places, and each stays small enough to implement twice.

use async_trait::async_trait;
use bytes::Bytes;

use std::time::Duration;

use super::control::{ControlCommand, ControlMessage, NodeInfo, Revocation, SurveyReply};
use super::error::BrokerError;
use super::types::{
    Departure, History, HistoryQuery, InboxEntry, Joined, Lease, PresenceMember, Publication,
    RelayedFrames,
};
use crate::channel::Channel;

/// Where a broker delivers what arrives for this node's channels.
pub trait Deliver: Send + Sync + 'static {
    /// Fans a publication out to this node's subscribers; returns how many were queued.
    fn deliver(&self, publication: &Publication) -> usize;

    /// Tells the channel's subscribers that messages were lost and they must recover.
    fn resync(&self, channel: &Channel);

    /// Hands client frames that another node received (an SSE POST that reached the wrong
    /// node behind a balancer) to the local session `conn_id`, if it belongs to `user`.
    fn relayed(&self, relay: RelayedFrames);

    /// A control command for this node's sessions, or a reply to a survey this node sent.
    fn control(&self, message: ControlMessage);
}

/// Moves publications between nodes, tracks which channels this node wants, and keeps the
/// history of channels that have one.
///
/// Contract:
/// - `subscribe` returns once messages published to those channels afterwards will reach the
///   [`Deliver`] target; the hub never calls it twice for a channel without an `unsubscribe`
///   in between, and never concurrently for the same channel.
/// - `publish` returns once the message is accepted for delivery to every node subscribed
///   to the channel (this one included).
/// - Messages of one channel are delivered in publish order; messages of a channel with
///   history carry their `StreamPosition`, and a broker that notices a gap in a channel's
///   offsets fills it from history before going on, or calls [`Deliver::resync`].
/// - Nothing here may block the caller on a slow subscriber: delivery is the hub's job.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Short name for logs and `/readyz`: `memory`, `redis` or `redis-cluster`.
    fn kind(&self) -> &'static str;

    /// Starts delivering these channels to this node.
    async fn subscribe(&self, channels: &[Channel]) -> Result<(), BrokerError>;

    /// Stops delivering these channels to this node.
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

    /// Publishes one payload to several channels, all or nothing where the broker can make
    /// it so (one Redis); see each broker.
    async fn publish_many(&self, channels: &[Channel], payload: Bytes) -> Result<(), BrokerError>;

    /// Reads a channel's history (creating its epoch if it has none yet).
    async fn history(&self, channel: &Channel, query: HistoryQuery)
    -> Result<History, BrokerError>;

    /// Whether the broker can currently serve subscribes and publishes.
    fn is_ready(&self) -> bool;
}

/// Who is on each channel, cluster-wide. Announcing joins and leaves is not its job
/// (`broker::presence::Presence` does that on top, the same way for every store).
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Adds (or replaces) a member of a channel's presence.
    async fn join(
        &self,
        channel: &Channel,
        member: &PresenceMember,
        lease: Lease,
    ) -> Result<Joined, BrokerError>;

    /// Removes a member; `None` if it was not present.
    async fn leave(
        &self,
        channel: &Channel,
        conn_id: &str,
    ) -> Result<Option<Departure>, BrokerError>;

    /// Sets a member's status; the updated member, or `None` if it is not present.
    async fn set_status(
        &self,
        channel: &Channel,
        conn_id: &str,
        status: &serde_json::Value,
    ) -> Result<Option<PresenceMember>, BrokerError>;

    /// The members of a channel's presence.
    async fn members(&self, channel: &Channel) -> Result<Vec<PresenceMember>, BrokerError>;
}

/// What flows back: clients' `send` frames into a durable inbox for the backend, and client
/// frames relayed to the node that holds their session.
#[async_trait]
pub trait Backchannel: Send + Sync + 'static {
    /// Appends a client's `send` to a durable inbox stream; returns the entry id.
    async fn inbox_append(&self, stream: &str, entry: &InboxEntry) -> Result<String, BrokerError>;

    /// Sends client frames to the node `node`, which holds their session. False when that
    /// node is not there (or this broker connects no other node).
    async fn relay(&self, node: &str, frames: &RelayedFrames) -> Result<bool, BrokerError>;
}

/// The backend's control of sessions, cluster-wide: commands every node applies to its own
/// sessions, revocations every node checks, and the registry of live nodes.
#[async_trait]
pub trait Control: Send + Sync + 'static {
    /// Sends a command to every node, this one included.
    async fn broadcast(&self, command: &ControlCommand) -> Result<(), BrokerError>;

    /// Sends a survey's reply to the node that asked.
    async fn reply(&self, node: &str, reply: &SurveyReply) -> Result<(), BrokerError>;

    /// Stores a revocation, so that every node refuses what it names at connect, refresh and
    /// channel-token use, and tells every node (its command), so that live sessions holding
    /// what it names end.
    async fn revoke(&self, revocation: &Revocation) -> Result<(), BrokerError>;

    /// Whether a token of `user`, issued at `issued_at` (Unix seconds) with id `jti`, is
    /// revoked.
    async fn is_revoked(
        &self,
        user: &str,
        issued_at: i64,
        jti: Option<&str>,
    ) -> Result<bool, BrokerError>;

    /// Says this node is alive, as `info` describes it; it drops out of [`Control::nodes`]
    /// after `ttl` without another heartbeat.
    async fn heartbeat(&self, info: &NodeInfo, ttl: Duration) -> Result<(), BrokerError>;

    /// The nodes whose last heartbeat is within its ttl.
    async fn nodes(&self) -> Result<Vec<NodeInfo>, BrokerError>;
}
