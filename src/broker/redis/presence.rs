//! Presence leases: this node renews the presence entries of its connections (a third of the
//! lease at a time) and sweeps expired entries of channels it watches, announcing their
//! leaves, so a crashed node's members disappear by themselves.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::calls::LibraryCalls;
use crate::broker::PresenceMember;
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

    pub(super) fn lease(&self) -> Duration {
        self.lease
    }

    /// A snapshot of the members to renew, by channel.
    pub(super) fn renewed(&self) -> Vec<(Channel, Vec<(String, String)>)> {
        let renewed = self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        renewed
            .iter()
            .map(|(c, m)| {
                (
                    c.clone(),
                    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                )
            })
            .collect()
    }

    /// A snapshot of the channels to sweep.
    pub(super) fn swept(&self) -> Vec<Channel> {
        let swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        swept.iter().cloned().collect()
    }

    pub(super) fn unwatch(&self, channels: &[Channel]) {
        let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        for c in channels {
            swept.remove(c);
        }
    }
}

/// Every third of a lease: renews this node's members and sweeps expired members of watched
/// channels (see [`LibraryCalls::renew_leases`] and [`LibraryCalls::sweep_presence`]).
pub(super) async fn lease_loop<B: LibraryCalls>(
    broker: std::sync::Weak<B>,
    cancel: CancellationToken,
) {
    let period = match broker.upgrade() {
        Some(b) => (b.leases().lease() / 3).max(Duration::from_millis(200)),
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
