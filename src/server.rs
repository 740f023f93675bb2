//! Serving: the HTTP routers, the accept loops (one per listener), and graceful drain.
//!
//! [`Server::bind`] builds a [`Node`] from a [`Config`] and binds the listener (and the
//! internal listener, with `internal_listen`); [`Server::run`] serves until the shutdown future
//! resolves, then drains: `/readyz` turns false, and open connections are closed with 1012
//! spread over the drain window so clients do not all reconnect elsewhere in the same instant.
//! This is the only module that knows every transport and endpoint, and which listener serves
//! which: the client paths on `listen`; the API and the operations endpoints there too, or on
//! the internal listener when there is one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http::{control, demo, history, ops, presence, publish};
use crate::limits::RemoteAddr;
use crate::node::Node;
use crate::transport::{sse, ws};

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP surface of a node on one listener (everything, without an internal listener).
pub fn router(node: Arc<Node>) -> Router {
    let with_api = node.config.internal_listen.is_none() || node.config.api_on_public;
    let mut router = client_routes(&node);
    if with_api {
        router = api_routes(router);
    }
    if node.config.internal_listen.is_none() {
        router = ops_routes(router);
    }
    router.with_state(node)
}

/// The internal listener's surface: the operations endpoints and the API.
pub fn internal_router(node: Arc<Node>) -> Router {
    ops_routes(api_routes(Router::new())).with_state(node)
}

/// What clients reach: WebSocket, SSE and, with `demo`, the dashboard.
fn client_routes(node: &Node) -> Router<Arc<Node>> {
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
}

/// The HTTP API for backends.
fn api_routes(router: Router<Arc<Node>>) -> Router<Arc<Node>> {
    router
        .route("/api/publish", post(publish::publish))
        .route("/api/broadcast", post(publish::broadcast))
        .route("/api/history", get(history::history))
        .route("/api/presence", get(presence::presence))
        .route("/api/status", post(presence::status))
        .route("/api/disconnect", post(control::disconnect))
        .route("/api/subscribe", post(control::subscribe))
        .route("/api/unsubscribe", post(control::unsubscribe))
        .route("/api/revoke", post(control::revoke))
        .route("/api/info", get(control::info))
        .route("/api/channels", get(control::channels))
}

/// Health, readiness and metrics.
fn ops_routes(router: Router<Arc<Node>>) -> Router<Arc<Node>> {
    router
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
}

/// A bound, not yet serving, gateway node.
pub struct Server {
    node: Arc<Node>,
    listener: TcpListener,
    /// With `internal_listen`: the API's and the operations endpoints' listener.
    internal: Option<TcpListener>,
}

impl Server {
    /// Builds a node (on the broker its configuration names) and binds its listener.
    pub async fn bind(config: Config) -> std::io::Result<Server> {
        let node = Node::new(config).map_err(std::io::Error::other)?;
        Server::bind_node(node).await
    }

    /// Binds the listeners of an already built node.
    pub async fn bind_node(node: Arc<Node>) -> std::io::Result<Server> {
        let listener = TcpListener::bind(node.config.listen).await?;
        let internal = match node.config.internal_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("internal_listen {addr}: {e}"))
            })?),
            None => None,
        };
        Ok(Server {
            node,
            listener,
            internal,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The internal listener's address, when there is one.
    pub fn internal_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.internal.as_ref().map(TcpListener::local_addr)
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Serves until `shutdown` resolves, then drains and returns.
    ///
    /// During the drain the listeners stay open so that `/readyz` answers 503 and `/ws`
    /// refuses new sessions with 503 (load balancers see the node go unready); they close
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
        let public = accept_loop(
            self.listener,
            router(node.clone()),
            stop_http.clone(),
            connections.clone(),
        );
        let internal = async {
            if let Some(listener) = self.internal {
                let app = internal_router(node.clone());
                accept_loop(listener, app, stop_http.clone(), connections.clone()).await;
            }
        };
        tokio::join!(public, internal);
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

/// Accepts connections on `listener` and serves `app` on each until `stop_http` is
/// cancelled; then asks open HTTP connections to finish and closes the listener.
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    stop_http: CancellationToken,
    connections: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop_http.cancelled() => break,
            accepted = listener.accept() => accepted,
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
}
