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
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

mod shards;

use self::shards::{Health, probe_loop, slot_of};
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
        // `rediss://` seeds make every connection TLS; the CA and client certificate, when
        // configured, go to every node of the cluster alike.
        super::install_tls_provider(config);
        let mut builder = ::redis::cluster::ClusterClientBuilder::new(config.cluster_seeds.clone())
            .use_protocol(::redis::ProtocolVersion::RESP3);
        if let Some(tls) = &config.tls {
            builder = builder.certs(tls.certificates());
        }
        let client = builder
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
        let dispatch = Dispatch::start(
            workers,
            config.dispatch_buffer,
            sink.clone(),
            Arc::new(conn.clone()),
            rules.clone(),
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
