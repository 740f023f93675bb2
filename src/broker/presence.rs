//! Presence: who is on a channel, cluster-wide, and the join, leave and status events.
//!
//! The broker keeps the members (in Redis with leases its node renews, so a crashed node's
//! members expire by themselves; in memory on a single node). This module is the policy on
//! top: what a member looks like, when a join or leave is announced (per connection or per
//! user, as the namespace says), and the event frames. Sessions, the HTTP API and the
//! brokers' expiry sweeps all go through it, so every path announces the same way.

use bytes::Bytes;

use super::{Broker, BrokerError, Departure, Joined, Lease, PresenceMember};
use crate::channel::Channel;
use crate::config::JoinLeave;
use crate::protocol::ServerFrame;

/// Whether a leave is announced: per connection always, per user for the user's last member.
pub fn announced(mode: JoinLeave, last_of_user: bool) -> bool {
    match mode {
        JoinLeave::Off => false,
        JoinLeave::Connection => true,
        JoinLeave::User => last_of_user,
    }
}

/// Whether a join is announced: a new member (per connection), or the user's first one (per
/// user). Setting an existing member again is not news.
pub fn join_announced(mode: JoinLeave, joined: Joined) -> bool {
    match mode {
        JoinLeave::Off => false,
        JoinLeave::Connection => joined.new,
        JoinLeave::User => joined.first_of_user,
    }
}

pub fn join_frame(channel: &Channel, member: &PresenceMember) -> Bytes {
    ServerFrame::Join {
        channel: channel.as_str(),
        user: &member.user,
        conn_id: &member.conn_id,
        info: member.info.as_ref(),
    }
    .encode_json()
}

pub fn leave_frame(channel: &Channel, member: &PresenceMember) -> Bytes {
    ServerFrame::Leave {
        channel: channel.as_str(),
        user: &member.user,
        conn_id: &member.conn_id,
        info: member.info.as_ref(),
    }
    .encode_json()
}

pub fn update_frame(channel: &Channel, member: &PresenceMember) -> Bytes {
    ServerFrame::PresenceUpdate {
        channel: channel.as_str(),
        user: &member.user,
        conn_id: &member.conn_id,
        info: member.info.as_ref(),
        status: member.status.as_ref(),
    }
    .encode_json()
}

/// Adds a member and announces the join if the namespace wants it.
pub async fn join(
    broker: &dyn Broker,
    mode: JoinLeave,
    channel: &Channel,
    member: &PresenceMember,
    lease: Lease,
) -> Result<Joined, BrokerError> {
    let joined = broker.presence_join(channel, member, lease).await?;
    if join_announced(mode, joined) {
        broker
            .publish_event(channel, join_frame(channel, member))
            .await?;
    }
    Ok(joined)
}

/// Removes a member and announces the leave if the namespace wants it.
pub async fn leave(
    broker: &dyn Broker,
    mode: JoinLeave,
    channel: &Channel,
    conn_id: &str,
) -> Result<Option<Departure>, BrokerError> {
    let departure = broker.presence_leave(channel, conn_id).await?;
    if let Some(d) = &departure {
        announce_departure(broker, mode, channel, d).await?;
    }
    Ok(departure)
}

/// Announces a member that left (or whose lease expired).
pub async fn announce_departure(
    broker: &dyn Broker,
    mode: JoinLeave,
    channel: &Channel,
    departure: &Departure,
) -> Result<(), BrokerError> {
    if announced(mode, departure.last_of_user) {
        broker
            .publish_event(channel, leave_frame(channel, &departure.member))
            .await?;
    }
    Ok(())
}

/// Sets a member's status and tells the channel (`presence_update`). False if the member is
/// not present.
pub async fn set_status(
    broker: &dyn Broker,
    channel: &Channel,
    conn_id: &str,
    status: &serde_json::Value,
) -> Result<bool, BrokerError> {
    match broker.presence_status(channel, conn_id, status).await? {
        Some(member) => {
            broker
                .publish_event(channel, update_frame(channel, &member))
                .await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Connections and distinct users among members.
pub fn stats(members: &[PresenceMember]) -> (usize, usize) {
    let users: std::collections::HashSet<&str> = members.iter().map(|m| m.user.as_str()).collect();
    (members.len(), users.len())
}
