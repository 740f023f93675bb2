//! The function-library calls both Redis brokers make alike: presence, history reads, the
//! inbox, lease renewal and sweeping. Only how a command reaches Redis differs (a pooled
//! connection to one Redis, or a cluster connection that routes by the key's slot), so each
//! broker implements [`LibraryCalls::call`] and gets the rest from here.

use std::time::Duration;

use async_trait::async_trait;

use super::dispatch::{Dispatch, Work};
use super::library;
use super::metrics::RedisMetrics;
use super::presence::{PresenceLeases, member_json};
use super::subscriber::COMMAND_TIMEOUT;
use crate::broker::{
    Broker, BrokerError, ChannelRules, Departure, History, HistoryQuery, InboxEntry, Joined, Lease,
    PresenceMember, StreamPosition,
};
use crate::channel::Channel;

#[async_trait]
pub(super) trait LibraryCalls: Broker + Sized {
    /// Runs one command, bounded in time, reloading the library if Redis lost it; tracks
    /// readiness like every command of the broker.
    async fn call<T: ::redis::FromRedisValue + Send>(
        &self,
        command: &::redis::Cmd,
        what: &str,
    ) -> Result<T, BrokerError>;

    fn rules(&self) -> &ChannelRules;
    fn leases(&self) -> &PresenceLeases;
    fn dispatch(&self) -> &Dispatch;
    fn metrics(&self) -> &RedisMetrics;

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
        let code = self.call::<i64>(&command, "presence join").await?;
        Ok(Joined {
            new: code >= 1,
            first_of_user: code == 2,
        })
    }

    /// [`Broker::presence_join`].
    async fn join_presence(
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
            self.leases().renew(channel, &member.conn_id, json);
        }
        Ok(joined)
    }

    /// [`Broker::presence_leave`].
    async fn leave_presence(
        &self,
        channel: &Channel,
        conn_id: &str,
    ) -> Result<Option<Departure>, BrokerError> {
        self.leases().forget(channel, conn_id);
        let mut command = ::redis::cmd("FCALL");
        command
            .arg("fanout_presence_leave")
            .arg(1)
            .arg(channel.as_str())
            .arg(conn_id);
        let reply = self
            .call::<Option<Vec<::redis::Value>>>(&command, "presence leave")
            .await?;
        match reply {
            None => Ok(None),
            Some(values) => library::parse_departures(&values)
                .map(|mut d| d.pop())
                .ok_or_else(|| BrokerError::Unavailable("unexpected presence reply".into())),
        }
    }

    /// [`Broker::presence_status`].
    async fn set_presence_status(
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
            .call::<Option<Vec<u8>>>(&command, "presence status")
            .await?;
        Ok(member
            .and_then(|m| serde_json::from_slice::<PresenceMember>(&m).ok())
            .map(|mut m| {
                m.status = Some(status.clone());
                m
            }))
    }

    /// [`Broker::presence`].
    async fn presence_members(
        &self,
        channel: &Channel,
    ) -> Result<Vec<PresenceMember>, BrokerError> {
        let mut command = ::redis::cmd("FCALL");
        command
            .arg("fanout_presence_members")
            .arg(1)
            .arg(channel.as_str());
        let values = self
            .call::<Vec<::redis::Value>>(&command, "presence read")
            .await?;
        let members = library::parse_members(&values, 2)
            .ok_or_else(|| BrokerError::Unavailable("unexpected presence reply".into()))?;
        let skipped = values.len() / 2 - members.len();
        if skipped > 0 {
            self.metrics()
                .dropped
                .with_label_values(&["bad_presence_entry"])
                .inc_by(skipped as u64);
        }
        Ok(members.into_iter().map(|(m, _)| m).collect())
    }

    /// [`Broker::inbox_append`].
    async fn append_to_inbox(
        &self,
        stream: &str,
        entry: &InboxEntry,
    ) -> Result<String, BrokerError> {
        let received_at = entry.received_at_ms.to_string();
        let mut command = ::redis::cmd("XADD");
        command
            .arg(stream)
            .arg("*")
            .arg("channel")
            .arg(entry.channel.as_str())
            .arg("user")
            .arg(&entry.user)
            .arg("conn_id")
            .arg(&entry.conn_id)
            .arg("node")
            .arg(&entry.node)
            .arg("received_at")
            .arg(&received_at)
            .arg("data")
            .arg(&entry.data[..]);
        self.call::<String>(&command, "XADD").await
    }

    /// [`Broker::history`]: reads it, and starts gap detection for the channel there.
    async fn read_history(
        &self,
        channel: &Channel,
        query: HistoryQuery,
    ) -> Result<History, BrokerError> {
        if self.rules().history(channel).is_none() {
            return Err(BrokerError::NoHistory(channel.clone()));
        }
        let command = library::history_command(channel, query);
        let reply = self
            .call::<Vec<::redis::Value>>(&command, "history read")
            .await?;
        let history = library::parse_history(&reply)
            .ok_or_else(|| BrokerError::Unavailable("unexpected fanout_history reply".into()))?;
        // Start gap detection for this channel at what this node has now seen. The request
        // that reads history waits for room in the dispatch queue, but not forever: its
        // session reads nothing else from its client meanwhile.
        let position = StreamPosition {
            offset: history.offset,
            epoch: history.epoch.clone(),
        };
        let observe = self
            .dispatch()
            .control(Work::Observe(channel.clone(), position));
        if tokio::time::timeout(COMMAND_TIMEOUT, observe)
            .await
            .is_err()
        {
            return Err(BrokerError::Unavailable(
                "the dispatch queue stayed full".into(),
            ));
        }
        Ok(history)
    }

    /// Renews this node's presence members (joining again any that expired meanwhile, e.g.
    /// during a partition or a failover that lost them).
    async fn renew_leases(&self) {
        let lease = self.leases().lease();
        let lease_ms = lease.as_millis().to_string();
        for (channel, members) in self.leases().renewed() {
            let mut command = ::redis::cmd("FCALL");
            command
                .arg("fanout_presence_refresh")
                .arg(1)
                .arg(channel.as_str())
                .arg(&lease_ms);
            for (conn_id, _) in &members {
                command.arg(conn_id);
            }
            let missing = match self.call::<Vec<String>>(&command, "presence refresh").await {
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
                // Swept while this node could not renew it: it is here, so it joins again.
                if let Ok(joined) = self.join_raw(&channel, &member, json, lease).await
                    && crate::broker::presence::join_announced(
                        self.rules().join_leave(&channel),
                        joined,
                    )
                {
                    let _ = self
                        .publish_event(
                            &channel,
                            crate::broker::presence::join_frame(&channel, &member),
                        )
                        .await;
                }
            }
        }
    }

    /// Sweeps expired members of the watched channels, announcing their departure: that is
    /// how a crashed node's members leave.
    async fn sweep_presence(&self) {
        for channel in self.leases().swept() {
            let mut command = ::redis::cmd("FCALL");
            command
                .arg("fanout_presence_sweep")
                .arg(1)
                .arg(channel.as_str());
            let Ok(values) = self
                .call::<Vec<::redis::Value>>(&command, "presence sweep")
                .await
            else {
                continue;
            };
            for departure in library::parse_departures(&values).unwrap_or_default() {
                tracing::debug!(%channel, conn_id = %departure.member.conn_id, "presence lease expired");
                let _ = crate::broker::presence::announce_departure(
                    self,
                    self.rules().join_leave(&channel),
                    &channel,
                    &departure,
                )
                .await;
            }
        }
    }
}
