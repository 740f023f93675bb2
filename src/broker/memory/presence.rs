//! Presence on one node: members in memory, those set through the HTTP API expiring after
//! their lease with a leave event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{MemoryBroker, Present};
use crate::broker::error::BrokerError;
use crate::broker::presence::{announced, leave_frame};
use crate::broker::seam::{Deliver, PresenceStore};
use crate::broker::types::{ChannelRules, Departure, Joined, Lease, PresenceMember, Publication};
use crate::channel::Channel;

/// Removes members whose lease ran out, announcing them like any leave.
pub(super) async fn sweep_presence(
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
            if announced(rules.join_leave(&channel), last) {
                sink.deliver(&Publication::event(
                    channel.clone(),
                    leave_frame(&channel, &member),
                ));
            }
        }
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
