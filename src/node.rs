//! The node: what one gateway process shares between its connections and endpoints.
//!
//! A [`Node`] holds the validated configuration, the token verifier, the hub (and through it
//! the broker), metrics and admission limits, and the list of live sessions that a drain
//! closes. Transports and HTTP handlers get an `Arc<Node>`; they publish through
//! [`Node::publish`] (one path, one metric) and reach the broker through [`Node::broker`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::auth::Verifier;
use crate::broker::{
    Broker, BrokerError, ChannelRules, Deliver, MemoryBroker, RedisBroker, RedisClusterBroker,
};
use crate::channel::Channel;
use crate::config::Config;
pub use crate::hub::InboundSession;
use crate::hub::{ConnId, Hub};
use crate::limits::Admission;
use crate::metrics::Metrics;
use crate::outbox::{Ending, Outbox};
use crate::protocol::{ClientError, CloseCode};

/// Everything one gateway node shares between its connections and endpoints.
pub struct Node {
    pub config: Config,
    pub verifier: Verifier,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub admission: Arc<Admission>,
    /// Origin of the node's monotonic clock (connection liveness is measured against it).
    pub started: Instant,
    /// Session tasks, awaited during drain.
    pub tasks: TaskTracker,
    sessions: DashMap<ConnId, Arc<Outbox>>,
    draining: AtomicBool,
    next_conn: AtomicU64,
}

impl Node {
    /// A node on the broker its configuration names: Redis when `redis_url` is set, Redis
    /// Cluster when `redis_cluster_url` is, otherwise the in-process broker. Must be called
    /// within a Tokio runtime.
    pub fn new(config: Config) -> Result<Arc<Node>, String> {
        match config.redis.clone() {
            None => {
                let rules = ChannelRules::from_config(&config);
                Ok(Node::with_broker(config, |sink, _| {
                    Arc::new(MemoryBroker::new(sink, rules))
                }))
            }
            Some(redis) => {
                let mut failure = None;
                let node_id = config.node_id.clone();
                let max_payload = config.limits.max_payload_bytes;
                let presence_lease = config.presence_lease;
                let rules = ChannelRules::from_config(&config);
                let node = Node::with_broker(config, |sink, metrics| {
                    let started: Result<Arc<dyn Broker>, String> = if redis.cluster_seeds.is_empty()
                    {
                        RedisBroker::start(
                            &redis,
                            &node_id,
                            max_payload,
                            presence_lease,
                            rules.clone(),
                            sink.clone(),
                            metrics,
                        )
                        .map(|b| b as Arc<dyn Broker>)
                    } else {
                        RedisClusterBroker::start(
                            &redis,
                            &node_id,
                            max_payload,
                            presence_lease,
                            rules.clone(),
                            sink.clone(),
                            metrics,
                        )
                        .map(|b| b as Arc<dyn Broker>)
                    };
                    match started {
                        Ok(b) => b,
                        Err(e) => {
                            failure = Some(e);
                            Arc::new(MemoryBroker::new(sink, rules))
                        }
                    }
                });
                match failure {
                    Some(e) => Err(e),
                    None => Ok(node),
                }
            }
        }
    }

    /// A node on a broker of the caller's choosing.
    pub fn with_broker(
        config: Config,
        make_broker: impl FnOnce(Arc<dyn Deliver>, &Metrics) -> Arc<dyn Broker>,
    ) -> Arc<Node> {
        let metrics = Arc::new(Metrics::new());
        Arc::new(Node {
            verifier: Verifier::new(&config.jwt),
            hub: Hub::new(metrics.clone(), config.limits.queue_max_messages, |sink| {
                make_broker(sink, &metrics)
            }),
            admission: Admission::new(&config.limits),
            metrics,
            config,
            started: Instant::now(),
            tasks: TaskTracker::new(),
            sessions: DashMap::new(),
            draining: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
        })
    }

    /// Publishes a payload to a channel on every node; returns its offset when the channel
    /// keeps history. `source` labels the metric.
    pub async fn publish(
        &self,
        channel: &Channel,
        payload: Bytes,
        source: &'static str,
    ) -> Result<Option<u64>, BrokerError> {
        self.publish_once(channel, payload, source, None).await
    }

    /// [`Node::publish`] with an idempotency key: a publish repeated with the same key within
    /// the idempotency window publishes nothing and returns the first one's offset.
    pub async fn publish_once(
        &self,
        channel: &Channel,
        payload: Bytes,
        source: &'static str,
        idempotency_key: Option<&str>,
    ) -> Result<Option<u64>, BrokerError> {
        let offset = self
            .broker()
            .publish(channel, payload, None, idempotency_key)
            .await?;
        self.metrics
            .messages_published
            .with_label_values(&[source])
            .inc();
        Ok(offset)
    }

    /// Publishes a payload to several channels, all or nothing.
    pub async fn publish_many(
        &self,
        channels: &[Channel],
        payload: Bytes,
        source: &'static str,
    ) -> Result<(), BrokerError> {
        self.broker().publish_many(channels, payload).await?;
        self.metrics
            .messages_published
            .with_label_values(&[source])
            .inc_by(channels.len() as u64);
        Ok(())
    }

    /// The Redis stream a channel's `send` frames go to.
    pub fn inbox_stream(&self, channel: &Channel) -> String {
        self.config
            .namespace(channel.namespace())
            .and_then(|n| n.inbox.clone())
            .unwrap_or_else(|| {
                let prefix = self.config.redis.as_ref().map_or("fanout:", |r| &r.prefix);
                format!("{prefix}inbox")
            })
    }

    /// Checks that a channel's namespace is configured.
    pub fn check_namespace(&self, channel: &Channel) -> Result<(), ClientError> {
        let ns = channel.namespace();
        if self.config.namespace(ns).is_some() {
            Ok(())
        } else {
            Err(ClientError::bad_request(format!(
                "unknown channel namespace {ns:?}"
            )))
        }
    }

    /// The broker this node publishes through and subscribes on.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        self.hub.broker()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks the node as shutting down: `/readyz` answers 503 and new sessions are refused.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Lists a session for drain until the returned guard is dropped.
    pub fn register_session(&self, id: ConnId, outbox: &Arc<Outbox>) -> SessionEntry<'_> {
        self.sessions.insert(id, outbox.clone());
        SessionEntry { node: self, id }
    }

    /// Lists a session that takes its client frames by HTTP request (SSE) until the returned
    /// guard is dropped.
    pub fn attach_inbound(&self, conn_id: &str, session: InboundSession) -> InboundEntry<'_> {
        self.hub.attach_inbound(conn_id, session);
        InboundEntry {
            node: self,
            conn_id: conn_id.to_owned(),
        }
    }

    /// The session with this public connection id, if it takes frames by HTTP on this node.
    pub fn inbound(&self, conn_id: &str) -> Option<InboundSession> {
        self.hub.inbound(conn_id)
    }

    /// Closes every session with 1012, spread evenly over the drain window, then waits for
    /// the session tasks to finish (bounded).
    pub async fn drain(&self) {
        let outboxes: Vec<Arc<Outbox>> = self.sessions.iter().map(|e| e.value().clone()).collect();
        let window = self.config.drain;
        tracing::info!(
            connections = outboxes.len(),
            window_s = window.as_secs(),
            "draining connections"
        );
        let start = Instant::now();
        let n = outboxes.len().max(1) as u32;
        for (i, outbox) in outboxes.iter().enumerate() {
            tokio::time::sleep_until(start + window * (i as u32) / n).await;
            outbox.end(restart_ending());
        }
        // Sessions that were mid-upgrade when the drain began.
        for entry in self.sessions.iter() {
            entry.value().end(restart_ending());
        }
        self.tasks.close();
        let grace = Duration::from_secs(5);
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.tasks.len(),
                "some sessions did not finish within the drain grace period"
            );
        }
    }
}

fn restart_ending() -> Ending {
    Ending::close(
        CloseCode::ServiceRestart,
        "node shutting down; reconnect to another",
    )
}

/// Keeps an [`InboundSession`] listed while alive.
pub struct InboundEntry<'a> {
    node: &'a Node,
    conn_id: String,
}

impl Drop for InboundEntry<'_> {
    fn drop(&mut self) {
        self.node.hub.detach_inbound(&self.conn_id);
    }
}

/// Keeps a session listed for drain while alive.
pub struct SessionEntry<'a> {
    node: &'a Node,
    id: ConnId,
}

impl Drop for SessionEntry<'_> {
    fn drop(&mut self) {
        self.node.sessions.remove(&self.id);
    }
}
