//! Shards: the cluster's slot map as the probe reads it, each shard's health, and the probe
//! itself (see the module doc of [`super`]).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::Value;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::RedisClusterBroker;
use crate::broker::BrokerError;
use crate::broker::redis::timing::{PROBE_COMMAND_TIMEOUT, PROBE_TIMEOUT};

/// What the last probe round found.
#[derive(Default)]
pub(super) struct Health {
    /// The masters' slot ranges and whether each master's probe came back.
    pub(super) ranges: Vec<ShardRange>,
    /// Every shard answered the last probe round (false before the first).
    pub(super) all_up: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ShardRange {
    pub(super) start: u16,
    pub(super) end: u16,
    /// The master's node id and address.
    pub(super) master: String,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) up: bool,
}

/// The slot of a Redis channel name: sharded pub/sub hashes names like keys (CRC16/XMODEM
/// of the hash tag, or of the whole name, modulo 16384).
pub(super) fn slot_of(name: &str) -> u16 {
    let key = name.as_bytes();
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&len| len > 0)
            .map(|len| &rest[..len])
    });
    let mut crc: u16 = 0;
    for &byte in tagged.unwrap_or(key) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// A hash tag whose slot lies in `start..=end`: the probe channel of that shard.
fn tag_in(start: u16, end: u16) -> Option<String> {
    (0u32..200_000)
        .map(|i| i.to_string())
        .find(|t| (start..=end).contains(&slot_of(t)))
}

/// Parses `CLUSTER SLOTS` into the masters' ranges.
fn parse_slots(reply: &[Value]) -> Vec<ShardRange> {
    let int = |v: &Value| match v {
        Value::Int(i) => u16::try_from(*i).ok(),
        _ => None,
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let mut ranges: Vec<ShardRange> = reply
        .iter()
        .filter_map(|entry| {
            let Value::Array(fields) = entry else {
                return None;
            };
            let Value::Array(master) = fields.get(2)? else {
                return None;
            };
            Some(ShardRange {
                start: int(fields.first()?)?,
                end: int(fields.get(1)?)?,
                host: text(master.first()?)?,
                port: int(master.get(1)?)?,
                master: text(master.get(2)?)?,
                up: false,
            })
        })
        .collect();
    ranges.sort_by_key(|r| r.start);
    ranges
}

impl RedisClusterBroker {
    fn probe_seen(&self, name: &str) -> u64 {
        let seen = self.probes_seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(name).copied().unwrap_or(0)
    }

    /// Makes the cluster connection read the new slot map now (and move its subscriptions
    /// with it): a keyed command sent to a master that does not own the key's slot answers
    /// `MOVED`, on which the connection refreshes its map. Without it, the connection would
    /// keep trying a dead master's address until one of its own commands failed over.
    async fn refresh_slot_map(&self, ranges: &[ShardRange]) {
        let Some(first) = ranges.first() else {
            return;
        };
        let Some(other) = ranges.iter().find(|r| r.master != first.master) else {
            return;
        };
        let Some(tag) = tag_in(first.start, first.end) else {
            return;
        };
        let mut exists = ::redis::cmd("EXISTS");
        exists.arg(format!("{{{tag}}}"));
        let elsewhere = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: other.host.clone(),
            port: other.port,
        });
        if let Ok(Err(e)) = timeout(
            PROBE_COMMAND_TIMEOUT,
            self.commands.route::<Value>(&exists, Some(elsewhere)),
        )
        .await
        {
            tracing::debug!(error = %e, "slot map refresh");
        }
    }

    /// SSUBSCRIBEs every channel again (Redis ignores a repeated one): after a disruption,
    /// each must be held by the shard that owns it now, whatever the connection's own
    /// resubscription managed.
    async fn resubscribe_desired(&self) -> Result<(), BrokerError> {
        let names: Vec<String> = {
            let desired = self.desired.lock().unwrap_or_else(|e| e.into_inner());
            desired.iter().flat_map(|c| self.redis_names(c)).collect()
        };
        self.metrics.resubscribed.inc_by(names.len() as u64 / 2);
        let mut names = names;
        names.push(self.relay_channel.clone());
        names.push(self.control_channel.clone());
        self.ssubscribe(&names).await
    }

    /// One probe round: reads the slot map, (re)loads the library when the masters changed,
    /// publishes a numbered probe into each master's slots and waits for them to come back.
    /// Returns the ranges with their health, or `None` when the slot map could not be read.
    async fn probe_round(
        &self,
        number: u64,
        known: &mut Vec<ShardRange>,
        subscribed: &mut HashSet<String>,
    ) -> Option<Vec<ShardRange>> {
        let mut slots = ::redis::cmd("CLUSTER");
        slots.arg("SLOTS");
        let random = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let reply = match timeout(
            PROBE_COMMAND_TIMEOUT,
            self.commands.route::<Vec<Value>>(&slots, Some(random)),
        )
        .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not read the cluster's slot map");
                return None;
            }
            Err(_) => {
                tracing::warn!("reading the cluster's slot map timed out");
                return None;
            }
        };
        let mut ranges = parse_slots(&reply);
        if ranges.is_empty() {
            return None;
        }
        if ranges != *known {
            // A failover or a new master: the library must be on every master, and the
            // subscriptions have moved (history channels sync once all shards answer).
            if !known.is_empty() {
                tracing::info!(ranges = ranges.len(), "the cluster's slot map changed");
                self.disrupted.store(true, Ordering::Release);
                self.refresh_slot_map(&ranges).await;
            }
            // Until it is loaded everywhere, the next round tries again.
            match self.commands.load_library().await {
                Ok(()) => known.clone_from(&ranges),
                Err(e) => {
                    tracing::warn!(error = %e, "could not load the fanout function library")
                }
            }
        }
        // One probe channel per master, in its first range.
        let mut probes: Vec<(String, String)> = Vec::new();
        for r in &ranges {
            if probes.iter().any(|(m, _)| *m == r.master) {
                continue;
            }
            if let Some(tag) = tag_in(r.start, r.end) {
                probes.push((r.master.clone(), format!("{}{{{tag}}}", self.probe_prefix)));
            }
        }
        let names: Vec<String> = probes.iter().map(|(_, n)| n.clone()).collect();
        let new: Vec<String> = names
            .iter()
            .filter(|n| !subscribed.contains(*n))
            .cloned()
            .collect();
        let stale: Vec<String> = subscribed
            .iter()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect();
        if !stale.is_empty() {
            self.sunsubscribe(&stale).await;
            for n in &stale {
                subscribed.remove(n);
            }
        }
        // Each bounded in time: a shard that does not answer in time is down,
        // and must not hold up the round for the others.
        let subscribes = new.into_iter().map(|name| async move {
            let mut conn = self.conn().clone();
            let done = timeout(PROBE_COMMAND_TIMEOUT, conn.ssubscribe(&name)).await;
            matches!(done, Ok(Ok(()))).then_some(name)
        });
        subscribed.extend(
            futures_util::future::join_all(subscribes)
                .await
                .into_iter()
                .flatten(),
        );
        let publishes = probes.iter().map(|(_, name)| async move {
            let mut command = ::redis::cmd("SPUBLISH");
            command.arg(name).arg(number.to_string());
            matches!(
                timeout(
                    PROBE_COMMAND_TIMEOUT,
                    self.commands.route::<i64>(&command, None)
                )
                .await,
                Ok(Ok(_))
            )
        });
        let sent = futures_util::future::join_all(publishes).await;
        let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT;
        loop {
            let all_back = probes
                .iter()
                .zip(&sent)
                .all(|((_, name), ok)| !ok || self.probe_seen(name) >= number);
            if all_back || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for r in &mut ranges {
            r.up = probes
                .iter()
                .zip(&sent)
                .find(|((m, _), _)| *m == r.master)
                .is_some_and(|((_, name), ok)| *ok && self.probe_seen(name) >= number);
        }
        // A probe that did not come back is subscribed again next round (its subscription
        // may have gone with a slot that moved).
        for ((_, name), ok) in probes.iter().zip(&sent) {
            if !*ok || self.probe_seen(name) < number {
                subscribed.remove(name);
            }
        }
        Some(ranges)
    }
}

/// Probes every shard each interval (see the module doc): readiness, fail-fast subscribes,
/// the library on every master, and the history sync after a disruption.
pub(super) async fn probe_loop(
    broker: std::sync::Weak<RedisClusterBroker>,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut number: u64 = 0;
    let mut known: Vec<ShardRange> = Vec::new();
    let mut subscribed: HashSet<String> = HashSet::new();
    // The first round runs at once, so a node becomes ready as soon as the cluster answers.
    let mut pause = Duration::ZERO;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let Some(broker) = broker.upgrade() else {
            return;
        };
        number += 1;
        let ranges = broker
            .probe_round(number, &mut known, &mut subscribed)
            .await;
        let up = ranges
            .as_ref()
            .map_or(0, |r| r.iter().filter(|r| r.up).count());
        let mut all_up = ranges.as_ref().is_some_and(|r| r.iter().all(|r| r.up));
        // Before the node says it is ready again: its subscriptions are where they belong,
        // and what its history channels missed meanwhile is on its way.
        if all_up && broker.disrupted.swap(false, Ordering::AcqRel) {
            match broker.resubscribe_desired().await {
                Ok(()) => broker.sync_history_channels().await,
                Err(e) => {
                    tracing::warn!(error = %e, "could not subscribe again after a disruption");
                    broker.disrupted.store(true, Ordering::Release);
                    all_up = false;
                }
            }
        }
        broker.metrics.connections_up.set(up as i64);
        if !all_up {
            broker.metrics.probe_failures.inc();
            broker.disrupted.store(true, Ordering::Release);
            tracing::warn!(
                shards_up = up,
                "a Redis Cluster shard did not answer its probe"
            );
        }
        {
            let mut health = broker.health.lock().unwrap_or_else(|e| e.into_inner());
            health.all_up = all_up;
            if let Some(r) = ranges {
                health.ranges = r;
            }
        }
        // Probe sooner while something is down, to notice recovery early.
        pause = if all_up {
            interval
        } else {
            interval.min(Duration::from_millis(500))
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::redis::envelope::envelope_channel;
    use crate::channel::Channel;

    #[test]
    fn probe_tags_land_in_their_range_and_channels_keep_their_slot() {
        use redis::cluster_routing::Slot;
        for name in ["fanout:room:x", "!fanout:{dag:7}", "a{}b", "{}", "x{y", ""] {
            assert_eq!(
                Slot::new(slot_of(name)),
                Some(Slot::for_key(name)),
                "{name}"
            );
        }
        for (start, end) in [(0, 5460), (5461, 10922), (10923, 16383), (100, 100)] {
            let tag = tag_in(start, end).unwrap();
            assert!((start..=end).contains(&slot_of(&tag)));
            assert_eq!(
                slot_of(&format!("!fanout:probe:n:1:{{{tag}}}")),
                slot_of(&tag)
            );
        }
        // The envelope channel shares the slot of `FCALL fanout_publish 1 <channel>`'s key.
        let c = Channel::parse("dag:7").unwrap();
        assert_eq!(slot_of(&envelope_channel("fanout:", &c)), slot_of("dag:7"));
        assert_eq!(slot_of("fanout:{dag:7}:stream"), slot_of("dag:7"));
    }
}
