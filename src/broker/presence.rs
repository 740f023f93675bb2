//! Presence: who is on a channel, cluster-wide, and the join, leave and status events.
//!
//! A [`PresenceStore`] keeps the members (in Redis with leases its node renews, so a crashed
//! node's members expire by themselves; in memory on a single node). This module is the
//! policy on top: when a join or leave is announced (per connection or per user, as the
//! namespace says), and the event frames. Sessions, the HTTP API and the stores' expiry
//! sweeps all go through it ([`Presence`], [`announce_departure`]), so every path announces
//! the same way.

use std::sync::Arc;

use bytes::Bytes;

use super::error::BrokerError;
use super::seam::{Broker, PresenceStore};
use super::types::{ChannelRules, Departure, Joined, Lease, PresenceMember};
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

/// Presence as every caller uses it (sessions, the HTTP API): a store of members, with the
/// joins, leaves and status updates announced on the channel as its namespace says.
#[derive(Clone)]
pub struct Presence {
    store: Arc<dyn PresenceStore>,
    events: Arc<dyn Broker>,
    rules: ChannelRules,
}

impl Presence {
    /// Presence kept in `store`, announced through `events`.
    pub fn new(
        store: Arc<dyn PresenceStore>,
        events: Arc<dyn Broker>,
        rules: ChannelRules,
    ) -> Presence {
        Presence {
            store,
            events,
            rules,
        }
    }

    /// Adds a member and announces the join if the namespace wants it.
    pub async fn join(
        &self,
        channel: &Channel,
        member: &PresenceMember,
        lease: Lease,
    ) -> Result<Joined, BrokerError> {
        let joined = self.store.join(channel, member, lease).await?;
        if join_announced(self.rules.join_leave(channel), joined) {
            self.events
                .publish_event(channel, join_frame(channel, member))
                .await?;
        }
        Ok(joined)
    }

    /// Removes a member and announces the leave if the namespace wants it.
    pub async fn leave(
        &self,
        channel: &Channel,
        conn_id: &str,
    ) -> Result<Option<Departure>, BrokerError> {
        let departure = self.store.leave(channel, conn_id).await?;
        if let Some(d) = &departure {
            announce_departure(&*self.events, self.rules.join_leave(channel), channel, d).await?;
        }
        Ok(departure)
    }

    /// Sets a member's status without telling the channel yet; the updated member, or
    /// `None` if it is not present. [`Presence::announce_update`] tells the channel.
    pub async fn status(
        &self,
        channel: &Channel,
        conn_id: &str,
        status: &serde_json::Value,
    ) -> Result<Option<PresenceMember>, BrokerError> {
        self.store.set_status(channel, conn_id, status).await
    }

    /// Tells the channel a member's status changed (`presence_update`).
    pub async fn announce_update(
        &self,
        channel: &Channel,
        member: &PresenceMember,
    ) -> Result<(), BrokerError> {
        self.events
            .publish_event(channel, update_frame(channel, member))
            .await
    }

    /// Sets a member's status and tells the channel. False if the member is not present.
    pub async fn set_status(
        &self,
        channel: &Channel,
        conn_id: &str,
        status: &serde_json::Value,
    ) -> Result<bool, BrokerError> {
        match self.status(channel, conn_id, status).await? {
            Some(member) => {
                self.announce_update(channel, &member).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The members of a channel's presence.
    pub async fn members(&self, channel: &Channel) -> Result<Vec<PresenceMember>, BrokerError> {
        self.store.members(channel).await
    }
}

/// Announces a member that left (or whose lease expired), if `mode` wants it.
pub async fn announce_departure(
    events: &dyn Broker,
    mode: JoinLeave,
    channel: &Channel,
    departure: &Departure,
) -> Result<(), BrokerError> {
    if announced(mode, departure.last_of_user) {
        events
            .publish_event(channel, leave_frame(channel, &departure.member))
            .await?;
    }
    Ok(())
}

/// Connections and distinct users among members.
pub fn stats(members: &[PresenceMember]) -> (usize, usize) {
    let users: std::collections::HashSet<&str> = members.iter().map(|m| m.user.as_str()).collect();
    (members.len(), users.len())
}
