//! Redis: many stateless nodes on one Redis server ([`standalone`]) or a Redis Cluster
//! ([`cluster`]), and publishing with a plain `PUBLISH` (or `FCALL fanout_publish`) from
//! anything that speaks Redis.
//!
//! The two deployments differ in how they subscribe and how a command reaches Redis (a pool
//! to one server, [`commands::Pooled`]; a connection that routes by slot,
//! `cluster::routed::Routed`). Everything above that is written once, over the
//! [`commands::Commands`] trait: [`presence`] (the presence store, its leases and sweeps),
//! [`backchannel`] (the inbox and the relay), [`control`] (commands for every node,
//! revocations, the node registry), [`history`] (a client's history read), the
//! function [`library`], the [`dispatch`] of history channels with gap filling, and the
//! [`envelope`] that the nodes' own messages travel in (on Redis channels plain publishers
//! cannot reach, so nobody can forge one). [`timing`] holds every timeout and the backoff,
//! [`tls`] the TLS provider and hints, [`diagnostics`] the `check-config --probe` client.

mod backchannel;
mod cluster;
mod commands;
mod control;
mod diagnostics;
mod dispatch;
mod envelope;
mod history;
mod library;
mod metrics;
mod presence;
mod relay;
mod standalone;
mod subscriber;
mod timing;
mod tls;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use self::backchannel::RedisBackchannel;
use self::cluster::RedisClusterBroker;
use self::control::RedisControl;
pub use self::diagnostics::{ProbeReport, probe};
pub use self::envelope::decode_message;
use self::metrics::RedisMetrics;
use self::presence::RedisPresence;
use self::standalone::RedisBroker;
use self::tls::install_tls_provider;
use crate::broker::{Broker, BrokerOptions, Brokers, Deliver, StartError};
use crate::config::RedisConfig;
use crate::metrics::Metrics;

/// Starts the brokers of a node on Redis: a Redis Cluster when `redis` names seed nodes, one
/// server otherwise. Their background tasks stop when the last of them is dropped.
pub fn start(
    redis: &RedisConfig,
    options: &BrokerOptions,
    deliver: Arc<dyn Deliver>,
    registry: &Metrics,
) -> Result<Brokers, StartError> {
    install_tls_provider(redis);
    let metrics = Arc::new(RedisMetrics::new(registry));
    // One token for every task of these brokers; each broker cancels it when dropped.
    let cancel = CancellationToken::new();
    if redis.cluster_seeds.is_empty() {
        let (broker, commands) =
            RedisBroker::start(redis, options, deliver, metrics, cancel.clone())?;
        let broker: Arc<dyn Broker> = broker;
        Ok(Brokers {
            presence: RedisPresence::start(
                commands.clone(),
                options.rules.clone(),
                broker.clone(),
                options.presence_lease,
                cancel,
            ),
            backchannel: Arc::new(RedisBackchannel::new(commands.clone(), &redis.prefix)),
            control: Arc::new(RedisControl::new(commands, &redis.prefix)),
            broker,
        })
    } else {
        let (broker, commands) =
            RedisClusterBroker::start(redis, options, deliver, metrics, cancel.clone())?;
        let broker: Arc<dyn Broker> = broker;
        Ok(Brokers {
            presence: RedisPresence::start(
                commands.clone(),
                options.rules.clone(),
                broker.clone(),
                options.presence_lease,
                cancel,
            ),
            backchannel: Arc::new(RedisBackchannel::new(commands.clone(), &redis.prefix)),
            control: Arc::new(RedisControl::new(commands, &redis.prefix)),
            broker,
        })
    }
}
