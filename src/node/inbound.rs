//! The directory of this node's sessions that take their client frames by HTTP request
//! (SSE): a `POST /sse/frames` finds its session here, on this node or, relayed through the
//! broker, on the node that holds the stream.

use dashmap::DashMap;

/// A session fed by HTTP requests (SSE): whose it is, and where its client frames go.
#[derive(Clone)]
pub struct InboundSession {
    pub user: String,
    pub frames: tokio::sync::mpsc::Sender<String>,
}

/// This node's SSE sessions, by public connection id.
#[derive(Default)]
pub struct InboundSessions {
    sessions: DashMap<String, InboundSession>,
}

impl InboundSessions {
    pub fn attach(&self, conn_id: &str, session: InboundSession) {
        self.sessions.insert(conn_id.to_owned(), session);
    }

    pub fn detach(&self, conn_id: &str) {
        self.sessions.remove(conn_id);
    }

    /// The local session with this public connection id, if it takes frames by HTTP.
    pub fn get(&self, conn_id: &str) -> Option<InboundSession> {
        self.sessions.get(conn_id).map(|e| e.value().clone())
    }

    /// Queues frames relayed from another node for a local session of `user`. Frames for a
    /// session that ended, belongs to someone else, or has no room are dropped: the POST that
    /// carried them was answered already, and a client without its stream reconnects anyway.
    pub fn hand_over(&self, user: &str, conn_id: &str, frames: Vec<String>) {
        let Some(session) = self.get(conn_id).filter(|s| s.user == user) else {
            tracing::debug!(conn = %conn_id, "relayed frames for no local session; dropped");
            return;
        };
        for frame in frames {
            if session.frames.try_send(frame).is_err() {
                tracing::debug!(conn = %conn_id, "relayed frame did not fit the session's queue; dropped");
                return;
            }
        }
    }
}
