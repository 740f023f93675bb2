//! One connection's life, whatever carries it: opened (its outbox, its state, listed for
//! drain, counted, logged), its session's reader running in a task of its own (a panic there
//! ends this connection only), its writing side driven by [`driver::drive`], and closed
//! (the reader stopped, the session finished, counted, logged with why it ended).
//!
//! A transport adds only what is its own: how the client's frames are read (the reader it
//! spawns), its [`Wire`], and what it must do between the reader's end and the session's
//! (a WebSocket hands back its socket's write half there).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::admission::Peer;
use super::driver::{self, Wire};
use crate::limits::NodeSlot;
use crate::node::{Node, SessionEntry};
use crate::outbox::{Ending, Outbox};
use crate::protocol::CloseCode;
use crate::session::{ConnState, Session};

/// An open connection.
pub struct Connection {
    pub node: Arc<Node>,
    pub outbox: Arc<Outbox>,
    pub conn: Arc<ConnState>,
    transport: &'static str,
    peer: Peer,
    opened: Instant,
    /// Debug level: at the default log level the span is disabled and costs nothing per
    /// poll; warnings and errors name the connection themselves.
    span: tracing::Span,
    listed: SessionEntry,
}

/// The task reading a connection's client frames into its session.
pub struct Reader {
    task: JoinHandle<Option<Session>>,
    cancel: CancellationToken,
}

impl Connection {
    /// Opens a connection of `transport` (`ws`, `sse`) for `user` (when the request carried
    /// a token).
    pub fn open(
        node: &Arc<Node>,
        transport: &'static str,
        conn: ConnState,
        peer: Peer,
        user: Option<&str>,
    ) -> Connection {
        let limits = &node.config.limits;
        let outbox = Arc::new(
            Outbox::new(limits.queue_max_messages, limits.queue_max_bytes)
                .with_write_delay(node.config.write_delay),
        );
        let conn = Arc::new(conn);
        let listed = node.register_session(conn.key, &conn.conn_id, &outbox);
        node.metrics.connections_open.inc();
        peer.opened(transport, &conn.conn_id, user);
        let span = tracing::debug_span!("conn", id = %conn.conn_id, transport);
        Connection {
            node: node.clone(),
            outbox,
            conn,
            transport,
            peer,
            opened: Instant::now(),
            span,
            listed,
        }
    }

    /// The session of this connection.
    pub fn session(&self, node_slot: NodeSlot) -> Session {
        Session::new(
            self.node.clone(),
            self.conn.clone(),
            self.outbox.clone(),
            self.listed.inbox().clone(),
            node_slot,
        )
    }

    /// Runs `read` (the transport's reading of client frames into `session`) in a task of
    /// its own; it gets a token that is cancelled when the connection is finished with, and
    /// gives the session back when it ends. A panic there is a bug, not the client's doing:
    /// it ends this connection only (the session's `Drop` leaves the hub consistent).
    pub fn spawn_reader<F, Fut>(&self, session: Session, read: F) -> Reader
    where
        F: FnOnce(Session, CancellationToken) -> Fut,
        Fut: Future<Output = Session> + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let reading = std::panic::AssertUnwindSafe(read(session, cancel.clone()));
        let outbox = self.outbox.clone();
        let conn_id = self.conn.conn_id.clone();
        let task = tokio::spawn(
            async move {
                match futures_util::FutureExt::catch_unwind(reading).await {
                    Ok(session) => Some(session),
                    Err(_) => {
                        tracing::error!(conn = %conn_id, "session reader panicked; closing the connection");
                        outbox.end(Ending::close(CloseCode::InternalError, "internal error"));
                        None
                    }
                }
            }
            .instrument(self.span.clone()),
        );
        Reader { task, cancel }
    }

    /// Writes the connection's outbox to `wire` until the connection ends; how it ended.
    pub async fn drive<W: Wire>(&self, wire: &W) -> Ending {
        driver::drive(wire, &self.outbox, &self.conn, &self.node)
            .instrument(self.span.clone())
            .await
    }

    /// Ends the session (leaving its channels and presence), then counts and logs the end.
    pub async fn close(self, session: Option<Session>, ending: Ending) {
        let user = match session {
            Some(mut session) => {
                session.finish().await;
                session.user().map(str::to_owned)
            }
            None => None,
        };
        self.peer.closed(
            self.transport,
            &self.conn.conn_id,
            user.as_deref(),
            self.opened,
            &ending,
        );
        self.node.metrics.connections_open.dec();
        self.node
            .metrics
            .disconnects
            .with_label_values(&[ending.label()])
            .inc();
    }
}

impl Reader {
    /// Waits up to `grace` for the reader to end by itself (a WebSocket client answering
    /// the close), then cancels it; gives back its session, unless it panicked.
    pub async fn stop(self, grace: Duration) -> Option<Session> {
        let mut task = self.task;
        let finished = if grace.is_zero() {
            None
        } else {
            tokio::time::timeout(grace, &mut task).await.ok()
        };
        let finished = match finished {
            Some(done) => done,
            None => {
                self.cancel.cancel();
                task.await
            }
        };
        match finished {
            Ok(session) => session,
            Err(e) => {
                tracing::error!(error = %e, "session reader failed");
                None
            }
        }
    }
}
