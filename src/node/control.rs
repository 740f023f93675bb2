//! The backend's control of sessions, as a node does it: commands sent to every node through
//! the broker's [`Control`](crate::broker::Control), applied by each node to its own sessions
//! ([`Node::on_control`]); revocations checked at connect, refresh and channel-token use; the
//! node registry this node heartbeats into; and the survey that sums every node's channels.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::{Node, SessionCommand};
use crate::auth::Credential;
use crate::broker::{
    BrokerError, ControlCommand, ControlMessage, HEARTBEAT, HEARTBEAT_TTL, NodeInfo, Revocation,
    SurveyReply,
};
use crate::channel::{Channel, ChannelPattern};
use crate::outbox::Ending;
use crate::protocol::ServerFrame;

/// How long a survey waits for the nodes that have not replied yet.
const SURVEY_WAIT: Duration = Duration::from_secs(1);
/// How long a node remembers the revocations it heard of, for the sessions being admitted
/// meanwhile; far longer than admission takes (its broker calls time out within seconds).
const RECENT_REVOCATIONS_KEPT: Duration = Duration::from_secs(60);
/// At most this many are remembered (a flood of revocations must not grow the node).
const RECENT_REVOCATIONS_MAX: usize = 10_000;

/// The revocations this node heard of lately. A session checks the broker's store at
/// admission and is told of revocations once it is listed under its user; one published in
/// between would reach neither, so the session also looks here once listed
/// ([`Node::revoked_lately`]).
#[derive(Default)]
pub(super) struct RecentRevocations(Mutex<VecDeque<(Instant, Revoked)>>);

enum Revoked {
    User { user: String, before: i64 },
    Token { jti: String },
}

impl RecentRevocations {
    fn remember(&self, revoked: Revoked) {
        let now = Instant::now();
        let mut recent = self.lock();
        while recent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RECENT_REVOCATIONS_KEPT)
            || recent.len() >= RECENT_REVOCATIONS_MAX
        {
            recent.pop_front();
        }
        recent.push_back((now, revoked));
    }

    fn covers(&self, user: &str, credential: &Credential) -> bool {
        self.lock().iter().any(|(_, revoked)| match revoked {
            Revoked::User { user: u, before } => u == user && credential.issued_at < *before,
            Revoked::Token { jti } => credential.jti.as_deref() == Some(jti.as_str()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, Revoked)>> {
        // One push or scan at a time: a poisoned list is still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Node {
    /// A control command or a survey reply that arrived for this node.
    pub fn on_control(self: &Arc<Node>, message: ControlMessage) {
        let command = match message {
            ControlMessage::SurveyReply(reply) => {
                if let Some(waiting) = self.surveys.get(&reply.id) {
                    let _ = waiting.send(reply);
                }
                return;
            }
            ControlMessage::Command(command) => command,
        };
        tracing::debug!(?command, "control command");
        match command {
            ControlCommand::Disconnect {
                user,
                conn_id,
                code,
                reason,
                reconnect,
            } => {
                let notice = ServerFrame::Disconnect {
                    code,
                    reason: &reason,
                    reconnect,
                }
                .encode();
                let mut closed = 0;
                for listed in self.sessions.iter() {
                    if listed.is(&user, conn_id.as_deref()) {
                        let _ = listed.outbox.push(notice.clone());
                        listed.outbox.end(Ending::Disconnected {
                            code,
                            reason: reason.clone(),
                            reconnect,
                        });
                        closed += 1;
                    }
                }
                if closed > 0 {
                    tracing::info!(%user, conn_id = conn_id.as_deref().unwrap_or("-"), closed, code, "connections ended by the backend");
                }
            }
            ControlCommand::Subscribe { user, channel } => {
                if let Ok(channel) = Channel::parse(&channel) {
                    self.tell(&user, SessionCommand::Subscribe(channel));
                }
            }
            ControlCommand::Unsubscribe { user, channel } => {
                if let Ok(channel) = Channel::parse(&channel) {
                    self.tell(&user, SessionCommand::Unsubscribe(channel));
                }
            }
            ControlCommand::RevokeUser { user, before } => {
                // Remembered before the sessions are told: see RecentRevocations.
                self.recent_revocations.remember(Revoked::User {
                    user: user.clone(),
                    before,
                });
                self.tell(&user, SessionCommand::RevokeUser { before });
            }
            ControlCommand::RevokeToken { jti, .. } => {
                self.recent_revocations
                    .remember(Revoked::Token { jti: jti.clone() });
                // Any session may hold it (as its connection token or a channel token).
                for listed in self.sessions.iter() {
                    if listed.user.get().is_some() {
                        listed
                            .inbox
                            .send(SessionCommand::RevokeToken { jti: jti.clone() });
                    }
                }
            }
            ControlCommand::Survey {
                id,
                reply_to,
                pattern,
            } => {
                let reply = SurveyReply {
                    id,
                    node: self.config.node_id.clone(),
                    channels: self.hub.channel_counts(&ChannelPattern::parse(&pattern)),
                };
                let node = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = node.control.reply(&reply_to, &reply).await {
                        tracing::warn!(error = %e, "could not answer a channel survey");
                    }
                });
            }
        }
    }

    /// Sends a command to every session of `user` on this node.
    fn tell(&self, user: &str, command: SessionCommand) {
        for listed in self.sessions.iter() {
            if listed.is(user, None) {
                listed.inbox.send(command.clone());
            }
        }
    }

    /// Ends `user`'s connections on every node (or only `conn_id`): they get a `disconnect`
    /// frame, then a close with `code` (4004 to come back, 4005 not to, or an application
    /// code from 4100 to 4499).
    pub async fn disconnect(
        &self,
        user: &str,
        conn_id: Option<&str>,
        code: u16,
        reason: &str,
        reconnect: bool,
    ) -> Result<(), BrokerError> {
        self.control
            .broadcast(&ControlCommand::Disconnect {
                user: user.to_owned(),
                conn_id: conn_id.map(str::to_owned),
                code,
                reason: reason.to_owned(),
                reconnect,
            })
            .await
    }

    /// Subscribes (or, with `subscribe` false, unsubscribes) `user`'s live connections on
    /// every node to `channel`.
    pub async fn set_membership(
        &self,
        user: &str,
        channel: &Channel,
        subscribe: bool,
    ) -> Result<(), BrokerError> {
        let (user, channel) = (user.to_owned(), channel.as_str().to_owned());
        let command = if subscribe {
            ControlCommand::Subscribe { user, channel }
        } else {
            ControlCommand::Unsubscribe { user, channel }
        };
        self.control.broadcast(&command).await
    }

    /// Revokes tokens on every node: refused from now on, and live sessions holding one end.
    pub async fn revoke(&self, revocation: &Revocation) -> Result<(), BrokerError> {
        self.control.revoke(revocation).await
    }

    /// Whether this node heard lately that a token of `user` with this credential was
    /// revoked: checked by a session once it is listed under its user, after admission
    /// asked the broker ([`RecentRevocations`]).
    pub fn revoked_lately(&self, user: &str, credential: &Credential) -> bool {
        self.recent_revocations.covers(user, credential)
    }

    /// Whether a token of `user` with this credential was revoked.
    pub async fn is_revoked(
        &self,
        user: &str,
        credential: &Credential,
    ) -> Result<bool, BrokerError> {
        self.control
            .is_revoked(user, credential.issued_at, credential.jti.as_deref())
            .await
    }

    /// What this node says of itself in the registry.
    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.config.node_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_s: self.started.elapsed().as_secs(),
            connections: self.metrics.connections_open.get().max(0) as u64,
            subscriptions: self.metrics.subscriptions.get().max(0) as u64,
            channels: self.metrics.channels.get().max(0) as u64,
        }
    }

    /// The active channels matching `pattern`, with their subscribers summed over the nodes
    /// (those that answered within a second; the second element lists the nodes that did
    /// not).
    pub async fn channels(
        &self,
        pattern: &ChannelPattern,
    ) -> Result<(Vec<(String, usize)>, Vec<String>), BrokerError> {
        let expected: Vec<String> = self
            .control
            .nodes()
            .await?
            .into_iter()
            .map(|n| n.id)
            .collect();
        let id = format!("{:016x}", rand::random::<u64>());
        let (tx, mut replies) = tokio::sync::mpsc::unbounded_channel();
        self.surveys.insert(id.clone(), tx);
        let sent = self
            .control
            .broadcast(&ControlCommand::Survey {
                id: id.clone(),
                reply_to: self.config.node_id.clone(),
                pattern: pattern.as_str().to_owned(),
            })
            .await;
        let mut totals: BTreeMap<String, usize> = BTreeMap::new();
        let mut answered: Vec<String> = Vec::new();
        if sent.is_ok() {
            let deadline = tokio::time::Instant::now() + SURVEY_WAIT;
            // Every node this node knows of, itself included (a node that has not
            // heartbeated yet still answers).
            while expected.iter().any(|n| !answered.contains(n))
                || !answered.contains(&self.config.node_id)
            {
                match tokio::time::timeout_at(deadline, replies.recv()).await {
                    Ok(Some(reply)) => {
                        if answered.contains(&reply.node) {
                            continue;
                        }
                        for (channel, count) in reply.channels {
                            *totals.entry(channel).or_default() += count;
                        }
                        answered.push(reply.node);
                    }
                    _ => break,
                }
            }
        }
        self.surveys.remove(&id);
        sent?;
        let missing = expected
            .into_iter()
            .filter(|n| !answered.contains(n))
            .collect();
        Ok((totals.into_iter().collect(), missing))
    }
}

/// Every [`HEARTBEAT`]: tells the registry this node is alive, until the node is gone.
pub(super) async fn heartbeat_loop(node: Weak<Node>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else {
            return;
        };
        match node.control.heartbeat(&node.info(), HEARTBEAT_TTL).await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "node heartbeat failed; this node is missing from /api/info until it works again");
            }
            Err(_) => {}
        }
    }
}
