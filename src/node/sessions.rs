//! This node's sessions as the node reaches them: listed to be drained, found by user or
//! connection id to apply the backend's control commands. What a command asks of a session's
//! protocol state (a subscription to end or start, a credential revoked) goes to the session
//! itself, through its inbox ([`SessionInbox`]); ending a connection needs only its outbox.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;

use crate::channel::Channel;
use crate::outbox::Outbox;

/// What the node asks of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    /// Subscribe the connection to this channel (the backend grants it).
    Subscribe(Channel),
    /// End the connection's subscription of this channel.
    Unsubscribe(Channel),
    /// Tokens of the session's user issued before this time (Unix seconds) are revoked.
    RevokeUser { before: i64 },
    /// The token with this id is revoked (the connection token, or a channel token).
    RevokeToken { jti: String },
}

/// A session's queue of commands from the node. Cheap while empty (most sessions never get
/// one): no allocation until a command arrives.
#[derive(Default)]
pub struct SessionInbox {
    queue: Mutex<VecDeque<SessionCommand>>,
    notify: Notify,
}

impl SessionInbox {
    pub fn send(&self, command: SessionCommand) {
        self.lock().push_back(command);
        self.notify.notify_one();
    }

    /// The commands queued so far, oldest first.
    pub fn take(&self) -> Vec<SessionCommand> {
        self.lock().drain(..).collect()
    }

    /// Resolves when a command was sent since the last wait.
    pub async fn wait(&self) {
        self.notify.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<SessionCommand>> {
        // A single push or drain at a time: a poisoned queue is still consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A listed session.
pub(super) struct Listed {
    pub outbox: Arc<Outbox>,
    /// Its public id (`conn_id`).
    pub conn_id: String,
    /// Its user, once authenticated.
    pub user: OnceLock<String>,
    pub inbox: Arc<SessionInbox>,
}

impl Listed {
    pub fn is(&self, user: &str, conn_id: Option<&str>) -> bool {
        self.user.get().is_some_and(|u| u == user) && conn_id.is_none_or(|c| c == self.conn_id)
    }
}
