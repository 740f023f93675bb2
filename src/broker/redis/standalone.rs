//! The [`Broker`] of nodes on one Redis server: classic pub/sub on a few dedicated
//! connections, commands through a pool.
//!
//! - **Interest routing.** The hub asks for a channel when its first local subscriber
//!   arrives; the broker SUBSCRIBEs the channel's Redis channels on one of a few pub/sub
//!   connections (chosen by channel hash) and UNSUBSCRIBEs when the last one leaves. A node
//!   receives only the traffic of channels it has subscribers for.
//! - **The read path never blocks** (`dispatch`): channels without history are fanned out by
//!   the read loop itself; history channels go through bounded, per-channel-ordered queues
//!   where gaps are filled; overflow is dropped and counted.
//! - **Outages** (`subscriber`): connections reconnect with backoff and resubscribe every
//!   channel they held; subscribing new channels meanwhile fails fast with `unavailable`.
//! - **Silent death**: [`probe_loop`] publishes to each connection's own probe channel every
//!   few seconds and rebuilds a connection whose probe does not come back.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::commands::{Commands, Pooled, Query};
use super::dispatch::{Dispatch, Work};
use super::envelope::{self, envelope_channel, public_channel};
use super::history;
use super::library;
use super::metrics::RedisMetrics;
use super::subscriber::{Shared, Subscriber};
use super::timing::{COMMAND_TIMEOUT, PROBE_TIMEOUT};
use crate::broker::{
    Broker, BrokerError, BrokerOptions, ChannelRules, Deliver, History, HistoryQuery, StartError,
};
use crate::channel::Channel;
use crate::config::RedisConfig;

pub struct RedisBroker {
    prefix: String,
    rules: ChannelRules,
    commands: Arc<Pooled>,
    shared: Arc<Shared>,
    subscribers: Arc<[Subscriber]>,
    cancel: CancellationToken,
}

impl RedisBroker {
    /// Starts the broker's connections and tasks; returns it and its commands (which the
    /// presence store and the backchannel share). Connecting happens in the background: the
    /// broker is not ready until its pub/sub connections are up.
    pub fn start(
        config: &RedisConfig,
        options: &BrokerOptions,
        deliver: Arc<dyn Deliver>,
        metrics: Arc<RedisMetrics>,
        cancel: CancellationToken,
    ) -> Result<(Arc<RedisBroker>, Arc<Pooled>), StartError> {
        // One client, with TLS set up for rediss://, for every connection: the command pool
        // (commands, the function library, presence, history), pub/sub and the relay.
        let client = config
            .client()
            .map_err(|e| StartError(format!("invalid redis_url ({:?})", e.kind())))?;
        let mut pool_config = deadpool_redis::PoolConfig::new(config.pool_size);
        pool_config.timeouts = deadpool_redis::Timeouts {
            wait: Some(COMMAND_TIMEOUT),
            create: Some(COMMAND_TIMEOUT),
            recycle: Some(COMMAND_TIMEOUT),
        };
        // The pool's manager takes the client's connection info, TLS parameters included
        // (`deadpool_redis::Config` would rebuild it from the URL and lose the certificates).
        let manager = deadpool_redis::Manager::new(client.get_connection_info().clone())
            .map_err(|e| StartError(format!("invalid redis_url ({:?})", e.kind())))?;
        let pool = deadpool_redis::Pool::builder(manager)
            .config(pool_config)
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .map_err(|e| StartError(format!("cannot create the Redis pool: {e}")))?;

        let rules = options.rules.clone();
        let commands = Arc::new(Pooled::new(
            pool.clone(),
            library::source(&config.prefix, &rules, options.max_payload),
            metrics.clone(),
        ));
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let shared = Arc::new(Shared {
            prefix: config.prefix.clone(),
            max_payload: options.max_payload,
            rules: rules.clone(),
            commands: commands.clone(),
            dispatch: Dispatch::start(
                workers,
                config.dispatch_buffer,
                deliver.clone(),
                Arc::new(pool),
                rules.clone(),
                metrics.clone(),
                cancel.clone(),
            ),
            metrics,
            cancel: cancel.clone(),
        });
        // Unique per process, so restarted or same-named nodes never see each other's probes.
        let incarnation: u32 = rand::random();
        let subscribers: Arc<[Subscriber]> = (0..config.pubsub_connections)
            .map(|i| {
                let probe = envelope::internal_channel(
                    &config.prefix,
                    &format!("probe:{}:{incarnation:08x}:{i}", options.node_id),
                );
                Subscriber::start(i, client.clone(), probe, shared.clone())
            })
            .collect();
        let broker = Arc::new(RedisBroker {
            prefix: config.prefix.clone(),
            rules,
            commands: commands.clone(),
            shared,
            subscribers,
            cancel: cancel.clone(),
        });
        tokio::spawn(probe_loop(
            commands.clone(),
            broker.subscribers.clone(),
            config.probe_interval,
            cancel.clone(),
        ));
        tokio::spawn(super::relay::run(
            client,
            envelope::node_channel(&config.prefix, &options.node_id),
            envelope::control_channel(&config.prefix),
            deliver,
            cancel,
        ));
        tracing::info!(
            redis = %config.display_addr(),
            transport = %config.describe_transport(),
            prefix = %config.prefix,
            pubsub_connections = config.pubsub_connections,
            "redis broker started"
        );
        Ok((broker, commands))
    }

    /// The channels grouped by the pub/sub connection that holds them.
    fn by_connection(&self, channels: &[Channel]) -> Vec<(usize, Vec<Channel>)> {
        let n = self.subscribers.len();
        let mut groups: Vec<Vec<Channel>> = vec![Vec::new(); n];
        for c in channels {
            let i = BuildHasherDefault::<DefaultHasher>::default().hash_one(c) as usize % n;
            groups[i].push(c.clone());
        }
        groups
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .collect()
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn subscribe(&self, channels: &[Channel]) -> Result<(), BrokerError> {
        let groups = self.by_connection(channels);
        let results = futures_util::future::join_all(
            groups
                .iter()
                .map(|(i, names)| self.subscribers[*i].subscribe(names.clone())),
        )
        .await;
        if let Some(err) = results.iter().find_map(|r| r.as_ref().err()).cloned() {
            // All or nothing: release what did succeed, so no subscription is left behind
            // that the hub does not know of.
            let undo = groups
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.is_ok())
                .map(|((i, names), _)| self.subscribers[*i].unsubscribe(names.clone()));
            futures_util::future::join_all(undo).await;
            return Err(err);
        }
        Ok(())
    }

    async fn unsubscribe(&self, channels: &[Channel]) -> Result<(), BrokerError> {
        for channel in channels {
            if self.rules.history(channel).is_some() {
                self.shared
                    .dispatch
                    .control(Work::Forget(channel.clone()))
                    .await;
            }
        }
        let groups = self.by_connection(channels);
        let results = futures_util::future::join_all(
            groups
                .into_iter()
                .map(|(i, names)| self.subscribers[i].unsubscribe(names)),
        )
        .await;
        results.into_iter().collect()
    }

    async fn publish(
        &self,
        channel: &Channel,
        payload: Bytes,
        publisher: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<Option<u64>, BrokerError> {
        if self.rules.history(channel).is_none() && idempotency_key.is_none() {
            match publisher {
                Some(user) => {
                    let body = envelope::message_envelope(user, &payload);
                    self.commands
                        .publish_to(&envelope_channel(&self.prefix, channel), &body)
                        .await?
                }
                None => {
                    self.commands
                        .publish_to(&public_channel(&self.prefix, channel), &payload)
                        .await?
                }
            };
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

    /// MULTI/EXEC: Redis runs every publish or none.
    async fn publish_many(&self, channels: &[Channel], payload: Bytes) -> Result<(), BrokerError> {
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        for channel in channels {
            if self.rules.history(channel).is_some() {
                pipe.add_command(library::publish_command(channel, &payload, None, None))
                    .ignore();
            } else {
                pipe.cmd("PUBLISH")
                    .arg(public_channel(&self.prefix, channel))
                    .arg(&payload[..])
                    .ignore();
            }
        }
        self.commands
            .run_publish::<()>(Query::Pipe(&pipe), "MULTI/publish")
            .await
    }

    async fn history(
        &self,
        channel: &Channel,
        query: HistoryQuery,
    ) -> Result<History, BrokerError> {
        history::read(
            &*self.commands,
            &self.shared.dispatch,
            &self.rules,
            channel,
            query,
        )
        .await
    }

    async fn publish_event(&self, channel: &Channel, frame: Bytes) -> Result<(), BrokerError> {
        let body = envelope::event_envelope(&frame);
        self.commands
            .publish_to(&envelope_channel(&self.prefix, channel), &body)
            .await
            .map(|_| ())
    }

    fn is_ready(&self) -> bool {
        self.commands.reachable() && self.subscribers.iter().all(Subscriber::is_up)
    }
}

/// Publishes a numbered probe to each live connection's probe channel and rebuilds the
/// connections whose probe did not come back: a subscription can die without the TCP
/// connection noticing, and only an end-to-end check catches that.
async fn probe_loop(
    commands: Arc<Pooled>,
    subscribers: Arc<[Subscriber]>,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut number: u64 = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let mut sent = Vec::new();
        for (i, sub) in subscribers.iter().enumerate() {
            if !sub.is_up() {
                continue;
            }
            number += 1;
            let mut probe = ::redis::cmd("PUBLISH");
            probe.arg(&sub.probe_channel).arg(number.to_string());
            // Through `run`, which records whether Redis answered (readiness).
            match commands.run::<i64>(Query::Cmd(&probe), "probe").await {
                Ok(_) => sent.push((i, number)),
                Err(e) => {
                    commands.metrics().probe_failures.inc();
                    tracing::warn!(error = %e, "redis probe could not be published");
                }
            }
        }
        if sent.is_empty() {
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(PROBE_TIMEOUT) => {}
        }
        for (i, n) in sent {
            let sub = &subscribers[i];
            if sub.is_up() && sub.probe_seen() < n {
                commands.metrics().probe_failures.inc();
                sub.rebuild();
            }
        }
    }
}
