//! Presence in Redis, for one server or a cluster alike ([`RedisPresence`]): members are kept
//! by the function library under leases. This node renews the entries of its own members
//! (a third of the lease at a time, joining again any that expired meanwhile) and sweeps
//! expired entries of the channels where it has members, announcing their departure, so a
//! crashed node's members disappear by themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::commands::Commands;
use super::library;
use crate::broker::presence::{announce_departure, join_announced, join_frame};
use crate::broker::{
    Broker, BrokerError, ChannelRules, Departure, Joined, Lease, PresenceMember, PresenceStore,
};
use crate::channel::Channel;

/// The presence store of a node on Redis.
pub struct RedisPresence<C: Commands> {
    commands: Arc<C>,
    rules: ChannelRules,
    /// Where expiries and re-joins are announced.
    events: Arc<dyn Broker>,
    lease: Duration,
    /// This node's members that it renews: channel -> conn id -> member JSON.
    renewed: Mutex<HashMap<Channel, HashMap<String, String>>>,
}

/// A member as stored in Redis (its status is kept apart, so it can change alone).
fn member_json(member: &PresenceMember) -> String {
    let stored = PresenceMember {
        status: None,
        ..member.clone()
    };
    serde_json::to_string(&stored).unwrap_or_default()
}

impl<C: Commands> RedisPresence<C> {
    /// The store, with its renewal and sweep task (stopped by `cancel`).
    pub fn start(
        commands: Arc<C>,
        rules: ChannelRules,
        events: Arc<dyn Broker>,
        lease: Duration,
        cancel: CancellationToken,
    ) -> Arc<RedisPresence<C>> {
        let presence = Arc::new(RedisPresence {
            commands,
            rules,
            events,
            lease,
            renewed: Mutex::new(HashMap::new()),
        });
        tokio::spawn(lease_loop(Arc::downgrade(&presence), cancel));
        presence
    }

    fn renewed(&self) -> MutexGuard<'_, HashMap<Channel, HashMap<String, String>>> {
        // Updates are single inserts and removes: a poisoned map is still consistent.
        self.renewed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `FCALL fanout_presence_join`.
    async fn join_raw(
        &self,
        channel: &Channel,
        member: &PresenceMember,
        json: &str,
        lease: Duration,
    ) -> Result<Joined, BrokerError> {
        let lease_ms = lease.as_millis().to_string();
        let mut command = ::redis::cmd("FCALL");
        command
            .arg("fanout_presence_join")
            .arg(1)
            .arg(channel.as_str())
            .arg(&member.conn_id)
            .arg(&member.user)
            .arg(json)
            .arg(&lease_ms);
        let code = self.commands.call::<i64>(&command, "presence join").await?;
        Ok(Joined {
            new: code >= 1,
            first_of_user: code == 2,
        })
    }

    /// Renews this node's members, joining again (and announcing) any that were swept while
    /// this node could not renew them (a partition, a failover that lost them).
    async fn renew(&self) {
        let lease_ms = self.lease.as_millis().to_string();
        let snapshot: Vec<(Channel, Vec<(String, String)>)> = self
            .renewed()
            .iter()
            .map(|(c, m)| {
                (
                    c.clone(),
                    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                )
            })
            .collect();
        for (channel, members) in snapshot {
            let mut command = ::redis::cmd("FCALL");
            command
                .arg("fanout_presence_refresh")
                .arg(1)
                .arg(channel.as_str())
                .arg(&lease_ms);
            for (conn_id, _) in &members {
                command.arg(conn_id);
            }
            let missing = match self
                .commands
                .call::<Vec<String>>(&command, "presence refresh")
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(%channel, error = %e, "presence renewal failed");
                    continue;
                }
            };
            for conn_id in missing {
                let Some((_, json)) = members.iter().find(|(c, _)| *c == conn_id) else {
                    continue;
                };
                let Ok(member) = serde_json::from_str::<PresenceMember>(json) else {
                    continue;
                };
                if let Ok(joined) = self.join_raw(&channel, &member, json, self.lease).await
                    && join_announced(self.rules.join_leave(&channel), joined)
                {
                    let _ = self
                        .events
                        .publish_event(&channel, join_frame(&channel, &member))
                        .await;
                }
            }
        }
    }

    /// Sweeps expired members of the channels where this node has members (only their
    /// subscribers care about the departures), announcing each.
    async fn sweep(&self) {
        let channels: Vec<Channel> = self.renewed().keys().cloned().collect();
        for channel in channels {
            let mut command = ::redis::cmd("FCALL");
            command
                .arg("fanout_presence_sweep")
                .arg(1)
                .arg(channel.as_str());
            let Ok(values) = self
                .commands
                .call::<Vec<::redis::Value>>(&command, "presence sweep")
                .await
            else {
                continue;
            };
            for departure in library::parse_departures(&values).unwrap_or_default() {
                tracing::debug!(%channel, conn_id = %departure.member.conn_id, "presence lease expired");
                let _ = announce_departure(
                    &*self.events,
                    self.rules.join_leave(&channel),
                    &channel,
                    &departure,
                )
                .await;
            }
        }
    }
}

#[async_trait]
impl<C: Commands> PresenceStore for RedisPresence<C> {
    async fn join(
        &self,
        channel: &Channel,
        member: &PresenceMember,
        lease: Lease,
    ) -> Result<Joined, BrokerError> {
        let json = member_json(member);
        let joined = self
            .join_raw(channel, member, &json, lease.duration)
            .await?;
        if lease.renewed {
            self.renewed()
                .entry(channel.clone())
                .or_default()
                .insert(member.conn_id.clone(), json);
        }
        Ok(joined)
    }

    async fn leave(
        &self,
        channel: &Channel,
        conn_id: &str,
    ) -> Result<Option<Departure>, BrokerError> {
        {
            let mut renewed = self.renewed();
            if let Some(members) = renewed.get_mut(channel) {
                members.remove(conn_id);
                if members.is_empty() {
                    renewed.remove(channel);
                }
            }
        }
        let mut command = ::redis::cmd("FCALL");
        command
            .arg("fanout_presence_leave")
            .arg(1)
            .arg(channel.as_str())
            .arg(conn_id);
        let reply = self
            .commands
            .call::<Option<Vec<::redis::Value>>>(&command, "presence leave")
            .await?;
        match reply {
            None => Ok(None),
            Some(values) => library::parse_departures(&values)
                .map(|mut d| d.pop())
                .ok_or_else(|| BrokerError::Unavailable("unexpected presence reply".into())),
        }
    }

    async fn set_status(
        &self,
        channel: &Channel,
        conn_id: &str,
        status: &serde_json::Value,
    ) -> Result<Option<PresenceMember>, BrokerError> {
        let status_json = status.to_string();
        let mut command = ::redis::cmd("FCALL");
        command
            .arg("fanout_presence_status")
            .arg(1)
            .arg(channel.as_str())
            .arg(conn_id)
            .arg(&status_json);
        let member = self
            .commands
            .call::<Option<Vec<u8>>>(&command, "presence status")
            .await?;
        Ok(member
            .and_then(|m| serde_json::from_slice::<PresenceMember>(&m).ok())
            .map(|mut m| {
                m.status = Some(status.clone());
                m
            }))
    }

    async fn members(&self, channel: &Channel) -> Result<Vec<PresenceMember>, BrokerError> {
        let mut command = ::redis::cmd("FCALL");
        command
            .arg("fanout_presence_members")
            .arg(1)
            .arg(channel.as_str());
        let values = self
            .commands
            .call::<Vec<::redis::Value>>(&command, "presence read")
            .await?;
        let members = library::parse_members(&values, 2)
            .ok_or_else(|| BrokerError::Unavailable("unexpected presence reply".into()))?;
        let skipped = values.len() / 2 - members.len();
        if skipped > 0 {
            self.commands
                .metrics()
                .dropped
                .with_label_values(&["bad_presence_entry"])
                .inc_by(skipped as u64);
        }
        Ok(members.into_iter().map(|(m, _)| m).collect())
    }
}

/// Every third of a lease: renews this node's members and sweeps expired ones.
async fn lease_loop<C: Commands>(presence: Weak<RedisPresence<C>>, cancel: CancellationToken) {
    let period = match presence.upgrade() {
        Some(p) => (p.lease / 3).max(Duration::from_millis(200)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(presence) = presence.upgrade() else {
            return;
        };
        presence.renew().await;
        presence.sweep().await;
    }
}
