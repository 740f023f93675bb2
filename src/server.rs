//! The node: shared state, the HTTP router, serving and graceful drain.
//!
//! [`Server::bind`] builds a [`Node`] from a [`Config`] and binds the listener;
//! [`Server::run`] serves until the shutdown future resolves, then drains: `/readyz` turns
//! false, the listener closes, and open connections are closed with 1012 spread over the
//! drain window so clients do not all reconnect elsewhere in the same instant.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use bytes::Bytes;
use dashmap::DashMap;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Verifier;
use crate::broker::{Broker, BrokerError, ChannelRules, HubSink, MemoryBroker, RedisBroker};
use crate::channel::Channel;
use crate::config::Config;
use crate::http::{api, ops};
use crate::hub::{ConnId, Hub};
use crate::limits::Admission;
use crate::metrics::Metrics;
use crate::outbox::{Ending, Outbox};
use crate::protocol::CloseCode;
use crate::transport::ws;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// A node on the broker its configuration names: Redis when `redis_url` is set,
    /// otherwise the in-process broker. Must be called within a Tokio runtime.
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
                    match RedisBroker::start(
                        &redis,
                        &node_id,
                        max_payload,
                        presence_lease,
                        rules.clone(),
                        sink.clone(),
                        metrics,
                    ) {
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
        make_broker: impl FnOnce(HubSink, &Metrics) -> Arc<dyn Broker>,
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
        let offset = self.hub.broker().publish(channel, payload, None).await?;
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
        self.hub.broker().publish_many(channels, payload).await?;
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
    pub fn check_namespace(&self, channel: &Channel) -> Result<(), String> {
        let ns = channel.namespace();
        if self.config.namespace(ns).is_some() {
            Ok(())
        } else {
            Err(format!("unknown channel namespace {ns:?}"))
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Lists a session for drain until the returned guard is dropped.
    pub fn register_session(&self, id: ConnId, outbox: &Arc<Outbox>) -> SessionEntry<'_> {
        self.sessions.insert(id, outbox.clone());
        SessionEntry { node: self, id }
    }

    /// Closes every session with 1012, spread evenly over the drain window, then waits for
    /// the session tasks to finish (bounded).
    async fn drain(&self) {
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

/// The HTTP surface of a node.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/api/publish", post(api::publish))
        .route("/api/broadcast", post(api::broadcast))
        .route("/api/history", get(api::history))
        .route("/api/presence", get(api::presence))
        .route("/api/status", post(api::status))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .with_state(node)
}

/// A bound, not yet serving, gateway node.
pub struct Server {
    node: Arc<Node>,
    listener: TcpListener,
}

impl Server {
    /// Builds a node (on the broker its configuration names) and binds its listener.
    pub async fn bind(config: Config) -> std::io::Result<Server> {
        let node = Node::new(config).map_err(std::io::Error::other)?;
        Server::bind_node(node).await
    }

    /// Binds the listener of an already built node.
    pub async fn bind_node(node: Arc<Node>) -> std::io::Result<Server> {
        let listener = TcpListener::bind(node.config.listen).await?;
        Ok(Server { node, listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Serves until `shutdown` resolves, then drains and returns.
    ///
    /// During the drain the listener stays open so that `/readyz` answers 503 and `/ws`
    /// refuses new sessions with 503 (load balancers see the node go unready); it closes
    /// once every session has ended.
    ///
    /// HTTP/1.1 is served with hyper directly (not `axum::serve`): the upgraded WebSocket
    /// then stays a plain `TcpStream` that the session splits without a lock, and header
    /// reads get a timeout (slow clients cannot hold connections half-open).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let node = self.node.clone();
        let app = router(node.clone());
        let stop_http = CancellationToken::new();
        {
            let drainer = node.clone();
            let stop_http = stop_http.clone();
            tokio::spawn(async move {
                shutdown.await;
                drainer.draining.store(true, Ordering::Release);
                tracing::info!("shutdown requested: not ready, refusing new connections");
                drainer.drain().await;
                stop_http.cancel();
            });
        }
        let connections = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = stop_http.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            let tcp = match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors, typically: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Latency over throughput: the writer batches frames already.
            let _ = tcp.set_nodelay(true);
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            let stop = stop_http.clone();
            connections.spawn(async move {
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .with_upgrades();
                let mut connection = std::pin::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => {}
                    _ = stop.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
            });
        }
        drop(self.listener);
        connections.close();
        if tokio::time::timeout(Duration::from_secs(5), connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("some HTTP requests were still running at exit");
        }
        tracing::info!("drained; exiting");
        Ok(())
    }
}
