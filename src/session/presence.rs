//! Presence and status: entering and leaving a channel's presence with the connection's
//! subscriptions, `presence`/`presence_stats` requests, and `status` updates.

use super::Session;
use crate::broker::{Lease, PresenceMember, presence};
use crate::channel::Channel;
use crate::protocol::{ClientError, ErrorCode, RequestId, ServerFrame};

impl Session {
    /// This connection as a presence member of `channel` (with the `info` of its channel
    /// token there, if it holds the channel by one that has some).
    pub(super) fn member(&self, channel: &Channel) -> Option<PresenceMember> {
        let identity = self.identity.as_ref()?;
        let info = self
            .grants
            .get(channel)
            .and_then(|g| g.info.clone())
            .or_else(|| identity.info.clone());
        Some(PresenceMember {
            user: identity.user.clone(),
            conn_id: self.conn.conn_id.clone(),
            node: self.node.config.node_id.clone(),
            info,
            status: None,
        })
    }

    /// Enters the channel's presence, if its namespace keeps presence.
    pub(super) async fn join_presence(&self, channel: &Channel) {
        let Some(rules) = self.node.config.namespace(channel.namespace()) else {
            return;
        };
        let Some(member) = self.member(channel).filter(|_| rules.presence) else {
            return;
        };
        let lease = Lease {
            duration: self.node.config.presence_lease,
            renewed: true,
        };
        // Counted whether or not Redis took it: a failed entry is retried by lease renewal
        // or expires; `leave_presence` mirrors this.
        self.node.metrics.presence_members.inc();
        if let Err(e) = self.node.presence.join(channel, &member, lease).await {
            tracing::warn!(conn = %self.conn.conn_id, %channel, error = %e, "could not enter presence");
        }
    }

    pub(super) async fn leave_presence(&self, channel: &Channel) {
        let Some(rules) = self.node.config.namespace(channel.namespace()) else {
            return;
        };
        if !rules.presence || self.identity.is_none() {
            return;
        }
        self.node.metrics.presence_members.dec();
        if let Err(e) = self.node.presence.leave(channel, &self.conn.conn_id).await {
            // Its lease expires by itself.
            tracing::warn!(conn = %self.conn.conn_id, %channel, error = %e, "could not leave presence");
        }
    }

    /// `presence` / `presence_stats`.
    pub(super) async fn presence(
        &mut self,
        id: Option<&RequestId>,
        channel: Channel,
        stats_only: bool,
    ) {
        if let Err(e) = self.may_subscribe(&channel) {
            self.error(id, e);
            return;
        }
        if !self
            .node
            .config
            .namespace(channel.namespace())
            .is_some_and(|n| n.presence)
        {
            self.error(
                id,
                ClientError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "presence is not kept for namespace {:?}",
                        channel.namespace()
                    ),
                ),
            );
            return;
        }
        let members = match self.node.presence.members(&channel).await {
            Ok(m) => m,
            Err(e) => {
                self.error(id, e.into());
                return;
            }
        };
        let (connections, users) = presence::stats(&members);
        if stats_only {
            self.reply(ServerFrame::PresenceStats {
                id,
                channel: channel.as_str(),
                connections,
                users,
            });
            return;
        }
        // One reply must fit the outbound queue: a very large presence is cut short here;
        // `presence_stats` gives the counts.
        let budget = self.node.config.limits.queue_max_bytes / 2;
        let mut used = 0;
        let total = members.len();
        let shown: Vec<PresenceMember> = members
            .into_iter()
            .take_while(|m| {
                used += 128
                    + m.info.as_ref().map_or(0, |i| i.to_string().len())
                    + m.status.as_ref().map_or(0, |s| s.to_string().len());
                used <= budget
            })
            .collect();
        let members_json = match serde_json::value::to_raw_value(&shown) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!(error = %e, "could not encode presence members");
                self.error(
                    id,
                    ClientError::new(ErrorCode::Internal, "could not encode presence"),
                );
                return;
            }
        };
        self.reply(ServerFrame::Presence {
            id,
            channel: channel.as_str(),
            truncated: shown.len() < total,
            members: &members_json,
        });
    }

    /// `status`: sets this connection's status in a channel's presence.
    pub(super) async fn status(
        &mut self,
        id: Option<&RequestId>,
        channel: Channel,
        status: serde_json::Value,
    ) {
        const MAX_STATUS_BYTES: usize = 4096;
        if !self.subscriptions.contains(&channel) {
            self.error(
                id,
                ClientError::new(
                    ErrorCode::BadRequest,
                    "subscribe to the channel before setting a status on it",
                ),
            );
            return;
        }
        if status.to_string().len() > MAX_STATUS_BYTES {
            self.error(
                id,
                ClientError::new(
                    ErrorCode::TooLarge,
                    format!("status is larger than {MAX_STATUS_BYTES} bytes"),
                ),
            );
            return;
        }
        if !self.publishes.take() {
            self.rate_limited(id);
            return;
        }
        // Reply first, then tell the channel: the client sees its answer before the event.
        let presence = &self.node.presence;
        match presence.status(&channel, &self.conn.conn_id, &status).await {
            Ok(Some(member)) => {
                self.reply(ServerFrame::StatusUpdated {
                    id,
                    channel: channel.as_str(),
                });
                if let Err(e) = presence.announce_update(&channel, &member).await {
                    tracing::warn!(conn = %self.conn.conn_id, %channel, error = %e, "could not announce a status update");
                }
            }
            Ok(None) => self.error(
                id,
                ClientError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "presence is not kept for namespace {:?}",
                        channel.namespace()
                    ),
                ),
            ),
            Err(e) => self.error(id, e.into()),
        }
    }
}
