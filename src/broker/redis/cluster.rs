//! The Redis Cluster broker: the standalone broker's model (interest routing, the function
//! library, per-channel ordered dispatch with gap filling, presence leases) on a Redis
//! Cluster, with **sharded pub/sub**.
//!
//! - **Commands** go through one redis-rs cluster connection, which routes each command to
//!   the master of its key's slot and follows `MOVED`/`ASK` and slot-map changes. Every key
//!   of a fanout channel carries the channel as hash tag (`fanout:{dag:7}:stream`), so each
//!   library call (`FCALL fanout_publish 1 dag:7 …`) runs in the channel's own slot.
//! - **Messages** travel by SPUBLISH on the channel's Redis channels: the library and the
//!   nodes publish everything (history or not, with a publisher or not) on the envelope
//!   channel `!<prefix>{<channel>}`, in the slot of the channel's keys; backends may also
//!   `SPUBLISH <prefix><channel>` plain payloads, which lands in that name's own slot. A node
//!   holds an SSUBSCRIBE for both, each on the shard that owns its slot, and nothing on the
//!   other shards ([`Broker::subscribe`]). A plain `PUBLISH` (classic pub/sub) reaches no
//!   node (docs/publishing.md).
//! - **Resubscription** is the cluster connection's (RESP3 with a push sender): after a
//!   reconnect or a slot-map change it subscribes every tracked channel again on the node
//!   that owns it now. What was published meanwhile is fetched from history: once every
//!   shard's probe comes back after a disruption, each history channel is synced
//!   ([`Work::Sync`]) exactly as the standalone subscriber does after a reconnect.
//! - **Readiness and liveness** come from a probe per shard ([`probe_loop`]): every interval
//!   the node reads the slot map, SPUBLISHes a number to a probe channel of its own in each
//!   master's slot range and waits for it to come back. The node is ready while every shard
//!   answers; a subscribe of a channel whose shard did not answer fails fast.
//! - **The function library** is loaded on every master at start, again whenever the set of
//!   masters or their slots change (a failover, a new master), and when a call finds it
//!   missing; replicas get it by replication.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, SingleNodeRoutingInfo,
};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::calls::LibraryCalls;
use super::dispatch::{Dispatch, HistoryReader, Work};
use super::envelope::{self, envelope_channel, public_channel};
use super::metrics::RedisMetrics;
use super::presence::{PresenceLeases, lease_loop};
use super::subscriber::COMMAND_TIMEOUT;
use super::{library, relay};
use crate::broker::{
    Broker, BrokerError, ChannelRules, Deliver, Departure, History, HistoryQuery, InboxEntry,
    Joined, Lease, PresenceMember, RelayedFrames,
};
use crate::channel::Channel;
use crate::config::RedisConfig;

/// How long a shard's probe may take to come back before the shard counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the probe's own commands (the slot map, a probe's SPUBLISH or SSUBSCRIBE) may
/// take: a healthy shard answers in milliseconds, and a dead master must be noticed fast.
const PROBE_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

pub struct RedisClusterBroker {
    prefix: String,
    max_payload: usize,
    conn: ClusterConnection,
    rules: ChannelRules,
    library: String,
    dispatch: Dispatch,
    presence: PresenceLeases,
    metrics: Arc<RedisMetrics>,
    sink: Arc<dyn Deliver>,
    /// The channels this node holds sharded subscriptions for.
    desired: Mutex<HashSet<Channel>>,
    /// This node's relay channel (SSUBSCRIBEd by this node only).
    relay_channel: String,
    /// Start of this node's probe channel names; a hash tag per shard follows.
    probe_prefix: String,
    health: Mutex<Health>,
    /// The highest probe number received per probe channel.
    probes_seen: Mutex<HashMap<String, u64>>,
    /// A node connection was lost since the last sync (a `Disconnection` push).
    disrupted: AtomicBool,
    cancel: CancellationToken,
}

/// What the last probe round found.
#[derive(Default)]
struct Health {
    /// The masters' slot ranges and whether each master's probe came back.
    ranges: Vec<ShardRange>,
    /// Every shard answered the last probe round (false before the first).
    all_up: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ShardRange {
    start: u16,
    end: u16,
    /// The master's node id and address.
    master: String,
    host: String,
    port: u16,
    up: bool,
}

/// The cluster connection reads history for the dispatch workers' gap filling.
#[async_trait]
impl HistoryReader for ClusterConnection {
    async fn read(&self, channel: &Channel, query: HistoryQuery) -> Result<History, String> {
        library::history(&mut self.clone(), channel, query)
            .await
            .map_err(|e| e.to_string())
    }
}

impl RedisClusterBroker {
    /// Starts the broker. Connecting happens in the background: the broker is not ready
    /// until every shard answers its probe.
    pub fn start(
        config: &RedisConfig,
        node_id: &str,
        max_payload: usize,
        presence_lease: Duration,
        rules: ChannelRules,
        sink: Arc<dyn Deliver>,
        registry: &crate::metrics::Metrics,
    ) -> Result<Arc<RedisClusterBroker>, String> {
        let (push_tx, push_rx) = mpsc::unbounded_channel::<PushInfo>();
        let client = ::redis::cluster::ClusterClientBuilder::new(config.cluster_seeds.clone())
            .use_protocol(::redis::ProtocolVersion::RESP3)
            .build()
            .map_err(|e| format!("invalid redis_cluster_url ({:?})", e.kind()))?;
        let conn = client.get_pending_async_connection_with_config(
            ::redis::cluster::ClusterConfig::new()
                .set_connection_timeout(COMMAND_TIMEOUT)
                .set_response_timeout(COMMAND_TIMEOUT)
                .set_push_sender(push_tx),
        );
        let metrics = Arc::new(RedisMetrics::new(registry));
        let cancel = CancellationToken::new();
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        // A gap is never larger than what history keeps.
        let max_fill = rules.histories().map(|(_, h)| h.size).max().unwrap_or(0);
        let dispatch = Dispatch::start(
            workers,
            config.dispatch_buffer,
            sink.clone(),
            Arc::new(conn.clone()),
            max_fill,
            metrics.clone(),
            cancel.clone(),
        );
        // Unique per process, so restarted or same-named nodes never see each other's probes.
        let incarnation: u32 = rand::random();
        let broker = Arc::new(RedisClusterBroker {
            prefix: config.prefix.clone(),
            max_payload,
            library: library::source_for(&config.prefix, &rules, max_payload, true),
            conn,
            rules,
            dispatch,
            presence: PresenceLeases::new(presence_lease),
            metrics,
            sink,
            desired: Mutex::new(HashSet::new()),
            relay_channel: relay::channel(&config.prefix, node_id),
            probe_prefix: envelope::internal_channel(
                &config.prefix,
                &format!("probe:{node_id}:{incarnation:08x}:"),
            ),
            health: Mutex::new(Health::default()),
            probes_seen: Mutex::new(HashMap::new()),
            // Set at start: the first round that finds every shard up subscribes the relay
            // channel (with any channel subscribed meanwhile).
            disrupted: AtomicBool::new(true),
            cancel,
        });
        tokio::spawn(read_pushes(Arc::downgrade(&broker), push_rx));
        tokio::spawn(probe_loop(
            Arc::downgrade(&broker),
            config.probe_interval,
            broker.cancel.clone(),
        ));
        tokio::spawn(lease_loop(Arc::downgrade(&broker), broker.cancel.clone()));
        tracing::info!(
            seeds = config.cluster_seeds.len(),
            prefix = %config.prefix,
            "redis cluster broker started"
        );
        Ok(broker)
    }

    /// Runs a command routed by its key (or as `routing` says), bounded in time.
    async fn route<T: ::redis::FromRedisValue>(
        &self,
        command: &::redis::Cmd,
        routing: Option<RoutingInfo>,
    ) -> ::redis::RedisResult<T> {
        let mut conn = self.conn.clone();
        let attempt = async {
            match routing {
                None => command.query_async::<T>(&mut conn).await,
                Some(r) => {
                    let value = conn.route_command(command.clone(), r).await?;
                    ::redis::FromRedisValue::from_redis_value(value).map_err(Into::into)
                }
            }
        };
        match timeout(COMMAND_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(::redis::RedisError::from((
                ::redis::ErrorKind::Io,
                "timed out",
            ))),
        }
    }

    /// Loads (or replaces) the function library on every master.
    async fn load_library(&self) -> Result<(), BrokerError> {
        let mut command = ::redis::cmd("FUNCTION");
        command.arg("LOAD").arg("REPLACE").arg(&self.library);
        let all_masters = RoutingInfo::MultiNode((
            MultipleNodeRoutingInfo::AllMasters,
            Some(ResponsePolicy::AllSucceeded),
        ));
        self.route::<Value>(&command, Some(all_masters))
            .await
            .map_err(|e| BrokerError::Unavailable(format!("FUNCTION LOAD failed: {e}")))?;
        tracing::info!("loaded the fanout Redis function library on every master");
        Ok(())
    }

    /// The Redis channels that carry `channel`: its public and its envelope channel.
    fn redis_names(&self, channel: &Channel) -> [String; 2] {
        [
            public_channel(&self.prefix, channel),
            envelope_channel(&self.prefix, channel),
        ]
    }

    /// Whether the last probe round found the shard of this Redis channel down.
    fn shard_down(&self, name: &str) -> bool {
        let slot = slot_of(name);
        let health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        health
            .ranges
            .iter()
            .any(|r| (r.start..=r.end).contains(&slot) && !r.up)
    }

    /// SSUBSCRIBEs each name (one call each: the names lie in different slots), concurrently.
    async fn ssubscribe(&self, names: &[String]) -> Result<(), BrokerError> {
        let calls = names.iter().map(|name| {
            let mut conn = self.conn.clone();
            async move { timeout(COMMAND_TIMEOUT, conn.ssubscribe(name)).await }
        });
        for result in futures_util::future::join_all(calls).await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(BrokerError::Unavailable(format!(
                        "redis SSUBSCRIBE failed: {e}"
                    )));
                }
                Err(_) => {
                    return Err(BrokerError::Unavailable(
                        "redis SSUBSCRIBE timed out".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// SUNSUBSCRIBEs each name; a failure only leaves a subscription whose messages the hub
    /// ignores, and the connection forgets it anyway.
    async fn sunsubscribe(&self, names: &[String]) {
        let calls = names.iter().map(|name| {
            let mut conn = self.conn.clone();
            async move {
                if let Ok(Err(e)) = timeout(COMMAND_TIMEOUT, conn.sunsubscribe(name)).await {
                    tracing::debug!(error = %e, "redis SUNSUBSCRIBE failed");
                }
            }
        });
        futures_util::future::join_all(calls).await;
    }

    /// Whether this node wants the sharded subscription `name` (its channels, its relay
    /// channel; the probe loop keeps its probe channels itself).
    fn wants(&self, name: &str) -> bool {
        if name == self.relay_channel {
            return true;
        }
        let desired = self.desired.lock().unwrap_or_else(|e| e.into_inner());
        envelope::channel_of(&self.prefix, name).is_some_and(|(c, _)| desired.contains(&c))
    }

    /// Asks the dispatch workers to deliver what history channels got while subscriptions
    /// were moving or down.
    async fn sync_history_channels(&self) {
        let channels: Vec<Channel> = {
            let desired = self.desired.lock().unwrap_or_else(|e| e.into_inner());
            desired
                .iter()
                .filter(|c| self.rules.history(c).is_some())
                .cloned()
                .collect()
        };
        if !channels.is_empty() {
            tracing::info!(
                channels = channels.len(),
                "syncing history channels after a cluster disruption"
            );
        }
        for channel in channels {
            self.dispatch.control(Work::Sync(channel)).await;
        }
    }

    /// SPUBLISH, timed for the publish-latency histogram.
    async fn spublish(&self, name: &str, body: &[u8], what: &str) -> Result<i64, BrokerError> {
        let mut command = ::redis::cmd("SPUBLISH");
        command.arg(name).arg(body);
        let started = std::time::Instant::now();
        let receivers = self.call::<i64>(&command, what).await?;
        self.metrics
            .publish_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(receivers)
    }
}

/// The slot of a Redis channel name: sharded pub/sub hashes names like keys (CRC16/XMODEM
/// of the hash tag, or of the whole name, modulo 16384).
fn slot_of(name: &str) -> u16 {
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

/// Reads what the cluster connection pushes: sharded messages (to dispatch, relay, probe
/// receipts), lost node connections, and subscriptions a slot migration took away.
async fn read_pushes(
    broker: std::sync::Weak<RedisClusterBroker>,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
) {
    while let Some(push) = pushes.recv().await {
        let Some(broker) = broker.upgrade() else {
            return;
        };
        match push.kind {
            PushKind::SMessage => {
                let (Some(Value::BulkString(name)), Some(Value::BulkString(payload))) =
                    (push.data.first(), push.data.get(1))
                else {
                    continue;
                };
                let name = String::from_utf8_lossy(name);
                broker.on_message(&name, payload);
            }
            PushKind::Disconnection => {
                broker.disrupted.store(true, Ordering::Release);
                broker.metrics.reconnects.inc();
            }
            PushKind::SUnsubscribe => {
                // Redis drops the sharded subscriptions of a slot that migrates away; the
                // node subscribes again, which the connection routes to the new owner.
                let Some(Value::BulkString(name)) = push.data.first() else {
                    continue;
                };
                let name = String::from_utf8_lossy(name).into_owned();
                if broker.wants(&name) {
                    broker.disrupted.store(true, Ordering::Release);
                    tokio::spawn(async move {
                        if let Err(e) = broker.ssubscribe(std::slice::from_ref(&name)).await {
                            tracing::warn!(error = %e, "could not subscribe again after a slot moved");
                        }
                    });
                }
            }
            _ => {}
        }
    }
}

impl RedisClusterBroker {
    /// One sharded message: a probe receipt, relayed frames, or a publication to dispatch.
    fn on_message(&self, name: &str, payload: &[u8]) {
        if name.starts_with(&self.probe_prefix) {
            if let Some(n) = std::str::from_utf8(payload)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            {
                let mut seen = self.probes_seen.lock().unwrap_or_else(|e| e.into_inner());
                let entry = seen.entry(name.to_owned()).or_default();
                *entry = (*entry).max(n);
            }
            return;
        }
        if name == self.relay_channel {
            match std::str::from_utf8(payload)
                .ok()
                .and_then(RelayedFrames::decode)
            {
                Some(relayed) => self.sink.relayed(relayed),
                None => tracing::debug!("ignored a malformed relay message"),
            }
            return;
        }
        self.metrics.messages_received.inc();
        match super::decode_message(&self.prefix, name, payload, self.max_payload) {
            Ok(publication) => self.dispatch.send(publication),
            Err(reason) => self.dispatch.drop(name, reason),
        }
    }

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
            self.route::<Value>(&exists, Some(elsewhere)),
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
            self.route::<Vec<Value>>(&slots, Some(random)),
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
            match self.load_library().await {
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
            let mut conn = self.conn.clone();
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
                timeout(PROBE_COMMAND_TIMEOUT, self.route::<i64>(&command, None)).await,
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
async fn probe_loop(
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

impl Drop for RedisClusterBroker {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[async_trait]
impl LibraryCalls for RedisClusterBroker {
    async fn call<T: ::redis::FromRedisValue + Send>(
        &self,
        command: &::redis::Cmd,
        what: &str,
    ) -> Result<T, BrokerError> {
        let result = match self.route::<T>(command, None).await {
            Err(e) if library::is_missing(&e) => {
                self.load_library().await?;
                self.route::<T>(command, None).await
            }
            other => other,
        }
        .map_err(|e| {
            if e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout()
                || e.is_cluster_error()
            {
                BrokerError::Unavailable(format!("redis {what} failed: {e}"))
            } else {
                BrokerError::Rejected(format!("redis {what} failed: {e}"))
            }
        });
        if let Err(e @ BrokerError::Rejected(_)) = &result {
            tracing::debug!(error = %e, "redis refused a request");
        }
        result
    }

    fn rules(&self) -> &ChannelRules {
        &self.rules
    }

    fn leases(&self) -> &PresenceLeases {
        &self.presence
    }

    fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    fn metrics(&self) -> &RedisMetrics {
        &self.metrics
    }
}

#[async_trait]
impl Broker for RedisClusterBroker {
    fn kind(&self) -> &'static str {
        "redis-cluster"
    }

    async fn subscribe(&self, channels: &[Channel]) -> Result<(), BrokerError> {
        let names: Vec<String> = channels.iter().flat_map(|c| self.redis_names(c)).collect();
        if names.iter().any(|n| self.shard_down(n)) {
            return Err(BrokerError::Unavailable(
                "the Redis Cluster shard of this channel is down".into(),
            ));
        }
        self.presence
            .watch(channels.iter().filter(|c| self.rules.presence(c)));
        {
            // Before SSUBSCRIBE: a slot moving meanwhile must find the channel wanted.
            let mut desired = self.desired.lock().unwrap_or_else(|e| e.into_inner());
            desired.extend(channels.iter().cloned());
        }
        if let Err(e) = self.ssubscribe(&names).await {
            // All or nothing: no subscription is left behind that the hub does not know of.
            {
                let mut desired = self.desired.lock().unwrap_or_else(|e| e.into_inner());
                for c in channels {
                    desired.remove(c);
                }
            }
            self.presence.unwatch(channels);
            self.sunsubscribe(&names).await;
            return Err(e);
        }
        self.metrics.subscriptions.add(channels.len() as i64);
        Ok(())
    }

    async fn unsubscribe(&self, channels: &[Channel]) -> Result<(), BrokerError> {
        self.presence.unwatch(channels);
        let mut names = Vec::new();
        {
            let mut desired = self.desired.lock().unwrap_or_else(|e| e.into_inner());
            for c in channels {
                if desired.remove(c) {
                    self.metrics.subscriptions.dec();
                    names.extend(self.redis_names(c));
                }
            }
        }
        for channel in channels {
            if self.rules.history(channel).is_some() {
                self.dispatch.control(Work::Forget(channel.clone())).await;
            }
        }
        self.sunsubscribe(&names).await;
        Ok(())
    }

    async fn publish(
        &self,
        channel: &Channel,
        payload: Bytes,
        publisher: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<Option<u64>, BrokerError> {
        if self.rules.history(channel).is_none() && idempotency_key.is_none() {
            // Every message of the nodes travels on the envelope channel, an empty user
            // meaning a backend's publish.
            let body = envelope::message_envelope(publisher.unwrap_or(""), &payload);
            self.spublish(&envelope_channel(&self.prefix, channel), &body, "SPUBLISH")
                .await?;
            return Ok(None);
        }
        let mut command = ::redis::cmd("FCALL");
        command
            .arg("fanout_publish")
            .arg(1)
            .arg(channel.as_str())
            .arg(&payload[..])
            .arg(publisher.unwrap_or(""));
        if let Some(key) = idempotency_key {
            command.arg(key);
        }
        let started = std::time::Instant::now();
        let offset = self.call::<u64>(&command, "FCALL fanout_publish").await?;
        self.metrics
            .publish_duration
            .observe(started.elapsed().as_secs_f64());
        // The library answers 0 for channels without history.
        Ok(self.rules.history(channel).map(|_| offset))
    }

    /// On Redis Cluster the channels lie in different slots, where no transaction reaches:
    /// each is published on its own, concurrently. An error means at least one was not
    /// published; others may have been (the broadcast API documents this).
    async fn publish_many(&self, channels: &[Channel], payload: Bytes) -> Result<(), BrokerError> {
        let publishes = channels
            .iter()
            .map(|c| self.publish(c, payload.clone(), None, None));
        futures_util::future::join_all(publishes)
            .await
            .into_iter()
            .find(Result::is_err)
            .unwrap_or(Ok(None))
            .map(|_| ())
    }

    async fn history(
        &self,
        channel: &Channel,
        query: HistoryQuery,
    ) -> Result<History, BrokerError> {
        self.read_history(channel, query).await
    }

    async fn publish_event(&self, channel: &Channel, frame: Bytes) -> Result<(), BrokerError> {
        let body = envelope::event_envelope(&frame);
        self.spublish(&envelope_channel(&self.prefix, channel), &body, "SPUBLISH")
            .await
            .map(|_| ())
    }

    async fn presence_join(
        &self,
        channel: &Channel,
        member: &PresenceMember,
        lease: Lease,
    ) -> Result<Joined, BrokerError> {
        self.join_presence(channel, member, lease).await
    }

    async fn presence_leave(
        &self,
        channel: &Channel,
        conn_id: &str,
    ) -> Result<Option<Departure>, BrokerError> {
        self.leave_presence(channel, conn_id).await
    }

    async fn presence_status(
        &self,
        channel: &Channel,
        conn_id: &str,
        status: &serde_json::Value,
    ) -> Result<Option<PresenceMember>, BrokerError> {
        self.set_presence_status(channel, conn_id, status).await
    }

    async fn presence(&self, channel: &Channel) -> Result<Vec<PresenceMember>, BrokerError> {
        self.presence_members(channel).await
    }

    async fn inbox_append(&self, stream: &str, entry: &InboxEntry) -> Result<String, BrokerError> {
        self.append_to_inbox(stream, entry).await
    }

    async fn relay(&self, node: &str, frames: &RelayedFrames) -> Result<bool, BrokerError> {
        let mut command = ::redis::cmd("SPUBLISH");
        command
            .arg(relay::channel(&self.prefix, node))
            .arg(frames.encode());
        let receivers = self.call::<i64>(&command, "SPUBLISH").await?;
        Ok(receivers > 0)
    }

    fn is_ready(&self) -> bool {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).all_up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
