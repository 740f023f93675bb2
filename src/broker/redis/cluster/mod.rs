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
//! - **The read path is bounded** as on one server: sharded messages go from the
//!   connection's push sender into a bounded queue ([`PUSH_BUFFER`]); what does not fit is
//!   dropped and counted (`fanout_redis_messages_dropped_total{reason="dispatch_full"}`), and
//!   history channels fill the gap from their streams. Connection events (a lost node, a
//!   slot that moved) are few and never dropped.
//!
//! Commands go through [`routed::Routed`], which presence, history reads, the inbox and the
//! relay share with the single-server broker's code (`super::commands`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

pub mod routed;
mod shards;

use self::routed::Routed;
use self::shards::{Health, probe_loop, slot_of};
use super::commands::Commands;
use super::dispatch::{Dispatch, HistoryReader, Work};
use super::envelope::{
    self, control_channel, decode_message, envelope_channel, node_channel, public_channel,
};
use super::metrics::RedisMetrics;
use super::timing::COMMAND_TIMEOUT;
use super::tls::install_tls_provider;
use super::{control, history, library, relay};
use crate::broker::{
    Broker, BrokerError, BrokerOptions, ChannelRules, Deliver, History, HistoryQuery, StartError,
};
use crate::channel::Channel;
use crate::config::RedisConfig;

/// Sharded messages that may wait between the cluster connection and the dispatch; beyond,
/// they are dropped and counted (history channels fill the gap from their streams).
pub const PUSH_BUFFER: usize = 65_536;

pub struct RedisClusterBroker {
    prefix: String,
    max_payload: usize,
    commands: Arc<Routed>,
    rules: ChannelRules,
    dispatch: Dispatch,
    metrics: Arc<RedisMetrics>,
    /// Where relayed client frames go.
    deliver: Arc<dyn Deliver>,
    /// The channels this node holds sharded subscriptions for.
    desired: Mutex<HashSet<Channel>>,
    /// This node's own channel (SSUBSCRIBEd by this node only).
    relay_channel: String,
    /// The control channel (SSUBSCRIBEd by every node).
    control_channel: String,
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

/// What the cluster connection's push sender hands over: sharded messages through a bounded
/// queue, connection events through their own.
struct Pushes {
    messages: mpsc::Sender<PushInfo>,
    events: mpsc::UnboundedSender<PushInfo>,
    metrics: Arc<RedisMetrics>,
    drop_log: crate::limits::RateLimitedLog,
}

impl Pushes {
    /// Called by the connection for every push; never waits.
    fn send(&self, push: PushInfo) -> Result<(), ::redis::aio::SendError> {
        if push.kind != PushKind::SMessage {
            return self.events.send(push).map_err(|_| ::redis::aio::SendError);
        }
        match self.messages.try_send(push) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics
                    .dropped
                    .with_label_values(&["dispatch_full"])
                    .inc();
                if let Some(suppressed) = self.drop_log.allow() {
                    tracing::warn!(
                        reason = "dispatch_full",
                        suppressed,
                        "dropped a message from Redis"
                    );
                }
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(::redis::aio::SendError),
        }
    }
}

impl RedisClusterBroker {
    /// Starts the broker; returns it and its commands (which the presence store and the
    /// backchannel share). Connecting happens in the background: the broker is not ready
    /// until every shard answers its probe.
    pub fn start(
        config: &RedisConfig,
        options: &BrokerOptions,
        deliver: Arc<dyn Deliver>,
        metrics: Arc<RedisMetrics>,
        cancel: CancellationToken,
    ) -> Result<(Arc<RedisClusterBroker>, Arc<Routed>), StartError> {
        let (message_tx, message_rx) = mpsc::channel::<PushInfo>(PUSH_BUFFER);
        let (event_tx, event_rx) = mpsc::unbounded_channel::<PushInfo>();
        let pushes = Pushes {
            messages: message_tx,
            events: event_tx,
            metrics: metrics.clone(),
            drop_log: crate::limits::RateLimitedLog::new(std::time::Duration::from_secs(10)),
        };
        // `rediss://` seeds make every connection TLS; the CA and client certificate, when
        // configured, go to every node of the cluster alike.
        install_tls_provider(config);
        let mut builder = ::redis::cluster::ClusterClientBuilder::new(config.cluster_seeds.clone())
            .use_protocol(::redis::ProtocolVersion::RESP3);
        if let Some(tls) = &config.tls {
            builder = builder.certs(tls.certificates());
        }
        let client = builder
            .build()
            .map_err(|e| StartError(format!("invalid redis_cluster_url ({:?})", e.kind())))?;
        let conn = client.get_pending_async_connection_with_config(
            ::redis::cluster::ClusterConfig::new()
                .set_connection_timeout(COMMAND_TIMEOUT)
                .set_response_timeout(COMMAND_TIMEOUT)
                .set_push_sender(move |push: PushInfo| pushes.send(push)),
        );
        let rules = options.rules.clone();
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let dispatch = Dispatch::start(
            workers,
            config.dispatch_buffer,
            deliver.clone(),
            Arc::new(conn.clone()),
            rules.clone(),
            metrics.clone(),
            cancel.clone(),
        );
        let commands = Arc::new(Routed::new(
            conn,
            library::source_for(&config.prefix, &rules, options.max_payload, true),
            metrics.clone(),
        ));
        // Unique per process, so restarted or same-named nodes never see each other's probes.
        let incarnation: u32 = rand::random();
        let broker = Arc::new(RedisClusterBroker {
            prefix: config.prefix.clone(),
            max_payload: options.max_payload,
            commands: commands.clone(),
            rules,
            dispatch,
            metrics,
            deliver,
            desired: Mutex::new(HashSet::new()),
            relay_channel: node_channel(&config.prefix, &options.node_id),
            control_channel: control_channel(&config.prefix),
            probe_prefix: envelope::internal_channel(
                &config.prefix,
                &format!("probe:{}:{incarnation:08x}:", options.node_id),
            ),
            health: Mutex::new(Health::default()),
            probes_seen: Mutex::new(HashMap::new()),
            // Set at start: the first round that finds every shard up subscribes the relay
            // channel (with any channel subscribed meanwhile).
            disrupted: AtomicBool::new(true),
            cancel: cancel.clone(),
        });
        tokio::spawn(read_messages(Arc::downgrade(&broker), message_rx));
        tokio::spawn(read_events(Arc::downgrade(&broker), event_rx));
        tokio::spawn(probe_loop(
            Arc::downgrade(&broker),
            config.probe_interval,
            cancel,
        ));
        tracing::info!(
            seeds = config.cluster_seeds.len(),
            prefix = %config.prefix,
            "redis cluster broker started"
        );
        Ok((broker, commands))
    }

    /// The cluster connection.
    fn conn(&self) -> &ClusterConnection {
        self.commands.connection()
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
            let mut conn = self.conn().clone();
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
            let mut conn = self.conn().clone();
            async move {
                if let Ok(Err(e)) = timeout(COMMAND_TIMEOUT, conn.sunsubscribe(name)).await {
                    tracing::debug!(error = %e, "redis SUNSUBSCRIBE failed");
                }
            }
        });
        futures_util::future::join_all(calls).await;
    }

    /// Whether this node wants the sharded subscription `name` (its channels, its own and
    /// the control channel; the probe loop keeps its probe channels itself).
    fn wants(&self, name: &str) -> bool {
        if name == self.relay_channel || name == self.control_channel {
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
}

/// Reads the sharded messages the connection pushed (to dispatch, relay, probe receipts).
async fn read_messages(
    broker: std::sync::Weak<RedisClusterBroker>,
    mut pushes: mpsc::Receiver<PushInfo>,
) {
    while let Some(push) = pushes.recv().await {
        let Some(broker) = broker.upgrade() else {
            return;
        };
        let (Some(Value::BulkString(name)), Some(Value::BulkString(payload))) =
            (push.data.first(), push.data.get(1))
        else {
            continue;
        };
        let name = String::from_utf8_lossy(name);
        broker.on_message(&name, payload);
    }
}

/// Reads the connection's events: lost node connections, and subscriptions a slot migration
/// took away.
async fn read_events(
    broker: std::sync::Weak<RedisClusterBroker>,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
) {
    while let Some(push) = pushes.recv().await {
        let Some(broker) = broker.upgrade() else {
            return;
        };
        match push.kind {
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
            relay::on_node_message(payload, &*self.deliver);
            return;
        }
        if name == self.control_channel {
            if let Some(command) = control::decode_command(payload) {
                self.deliver.control(command);
            }
            return;
        }
        self.metrics.messages_received.inc();
        match decode_message(&self.prefix, name, payload, self.max_payload) {
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
            self.sunsubscribe(&names).await;
            return Err(e);
        }
        self.metrics.subscriptions.add(channels.len() as i64);
        Ok(())
    }

    async fn unsubscribe(&self, channels: &[Channel]) -> Result<(), BrokerError> {
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
            self.commands
                .publish_to(&envelope_channel(&self.prefix, channel), &body)
                .await?;
            return Ok(None);
        }
        let command = library::publish_command(channel, &payload, publisher, idempotency_key);
        let offset = self
            .commands
            .publish_call::<u64>(&command, "FCALL fanout_publish")
            .await?;
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
        history::read(&*self.commands, &self.dispatch, &self.rules, channel, query).await
    }

    async fn publish_event(&self, channel: &Channel, frame: Bytes) -> Result<(), BrokerError> {
        let body = envelope::event_envelope(&frame);
        self.commands
            .publish_to(&envelope_channel(&self.prefix, channel), &body)
            .await
            .map(|_| ())
    }

    fn is_ready(&self) -> bool {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).all_up
    }
}
