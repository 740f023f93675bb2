//! Serving: the HTTP router, the accept loop, and graceful drain.
//!
//! [`Server::bind`] builds a [`Node`] from a [`Config`] and binds the listener;
//! [`Server::run`] serves until the shutdown future resolves, then drains: `/readyz` turns
//! false, and open connections are closed with 1012 spread over the drain window so clients
//! do not all reconnect elsewhere in the same instant. This is the only module that knows
//! every transport and endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http::{demo, history, ops, presence, publish};
use crate::limits::RemoteAddr;
use crate::node::Node;
use crate::transport::{sse, ws};

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP surface of a node.
pub fn router(node: Arc<Node>) -> Router {
    let mut router = Router::new();
    if node.config.demo {
        router = router
            .route("/demo", get(demo::root))
            .route("/demo/", get(demo::index))
            .route("/demo/token", get(demo::token))
            .route("/demo/client/{file}", get(demo::client_file))
            .route("/demo/{file}", get(demo::page_file));
    }
    router
        .route("/ws", get(ws::upgrade))
        .route("/sse", get(sse::open).options(sse::cors::preflight))
        .route(
            "/sse/frames",
            post(sse::frames::post).options(sse::cors::preflight),
        )
        .route("/api/publish", post(publish::publish))
        .route("/api/broadcast", post(publish::broadcast))
        .route("/api/history", get(history::history))
        .route("/api/presence", get(presence::presence))
        .route("/api/status", post(presence::status))
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
        if node.config.demo && node.config.demo_play {
            tokio::spawn(crate::http::demo_play::run(node.clone()));
        }
        let stop_http = CancellationToken::new();
        {
            let drainer = node.clone();
            let stop_http = stop_http.clone();
            tokio::spawn(async move {
                shutdown.await;
                drainer.start_draining();
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
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, typically: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (tcp, peer) = tcp;
            // Latency over throughput: the writer batches frames already.
            let _ = tcp.set_nodelay(true);
            // Every request knows the peer it came from (logs, and trusted forwarders).
            let app = app.clone();
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(RemoteAddr(peer));
                    tower::ServiceExt::oneshot(app.clone(), request)
                },
            );
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
