//! Presence leases: this node renews the presence entries of its connections (a third of the
//! lease at a time) and sweeps expired entries of channels it watches, announcing their
//! leaves, so a crashed node's members disappear by themselves.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::command::Query;
use super::{RedisBroker, library};
use crate::broker::{Broker, PresenceMember};
use crate::channel::Channel;

/// A member as stored in Redis (its status is kept apart, so it can change alone).
pub(super) fn member_json(member: &PresenceMember) -> String {
    let stored = PresenceMember {
        status: None,
        ..member.clone()
    };
    serde_json::to_string(&stored).unwrap_or_default()
}

/// The presence entries this node keeps alive, and the channels whose expired entries it
/// sweeps (those it has subscribers for: only they care about leave events).
pub(super) struct PresenceLeases {
    lease: Duration,
    /// Channel -> conn id -> member JSON.
    renewed: std::sync::Mutex<HashMap<Channel, HashMap<String, String>>>,
    swept: std::sync::Mutex<HashSet<Channel>>,
}

impl PresenceLeases {
    pub(super) fn new(lease: Duration) -> PresenceLeases {
        PresenceLeases {
            lease,
            renewed: std::sync::Mutex::new(HashMap::new()),
            swept: std::sync::Mutex::new(HashSet::new()),
        }
    }

    pub(super) fn renew(&self, channel: &Channel, conn_id: &str, json: String) {
        let mut renewed = self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        renewed
            .entry(channel.clone())
            .or_default()
            .insert(conn_id.to_owned(), json);
    }

    pub(super) fn forget(&self, channel: &Channel, conn_id: &str) {
        let mut renewed = self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(members) = renewed.get_mut(channel) {
            members.remove(conn_id);
            if members.is_empty() {
                renewed.remove(channel);
            }
        }
    }

    pub(super) fn watch<'a>(&self, channels: impl Iterator<Item = &'a Channel>) {
        let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        swept.extend(channels.cloned());
    }

    pub(super) fn unwatch(&self, channels: &[Channel]) {
        let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        for c in channels {
            swept.remove(c);
        }
    }
}

/// Every third of a lease: renews this node's members (joining again any that expired
/// meanwhile, e.g. during a partition), and sweeps expired members of watched channels,
/// announcing their departure: that is how a crashed node's members leave.
pub(super) async fn lease_loop(broker: std::sync::Weak<RedisBroker>, cancel: CancellationToken) {
    let period = match broker.upgrade() {
        Some(b) => (b.presence.lease / 3).max(Duration::from_millis(200)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(broker) = broker.upgrade() else {
            return;
        };
        broker.renew_leases().await;
        broker.sweep_presence().await;
    }
}

impl RedisBroker {
    async fn renew_leases(&self) {
        let renewed: Vec<(Channel, Vec<(String, String)>)> = {
            let renewed = self
                .presence
                .renewed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            renewed
                .iter()
                .map(|(c, m)| {
                    (
                        c.clone(),
                        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    )
                })
                .collect()
        };
        let lease_ms = self.presence.lease.as_millis().to_string();
        for (channel, members) in renewed {
            let command = {
                let mut c = ::redis::cmd("FCALL");
                c.arg("fanout_presence_refresh")
                    .arg(1)
                    .arg(channel.as_str())
                    .arg(&lease_ms);
                for (conn_id, _) in &members {
                    c.arg(conn_id);
                }
                c
            };
            let missing = match self
                .run::<Vec<String>>(Query::Cmd(&command), "presence refresh")
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
                // Swept while this node could not renew it: it is here, so it joins again.
                if let Ok(joined) = self
                    .join_raw(&channel, &member, json, self.presence.lease)
                    .await
                    && crate::broker::presence::join_announced(
                        self.rules.join_leave(&channel),
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

    async fn sweep_presence(&self) {
        let channels: Vec<Channel> = {
            let swept = self
                .presence
                .swept
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            swept.iter().cloned().collect()
        };
        for channel in channels {
            let command = {
                let mut c = ::redis::cmd("FCALL");
                c.arg("fanout_presence_sweep").arg(1).arg(channel.as_str());
                c
            };
            let Ok(values) = self
                .run::<Vec<::redis::Value>>(Query::Cmd(&command), "presence sweep")
                .await
            else {
                continue;
            };
            for departure in library::parse_departures(&values).unwrap_or_default() {
                tracing::debug!(%channel, conn_id = %departure.member.conn_id, "presence lease expired");
                let _ = crate::broker::presence::announce_departure(
                    self,
                    self.rules.join_leave(&channel),
                    &channel,
                    &departure,
                )
                .await;
            }
        }
    }
}
