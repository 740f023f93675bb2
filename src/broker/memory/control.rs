//! What flows back and across on one node: no durable inbox without Redis, no other node to
//! relay to; control commands applied here at once, revocations and the node registry in
//! memory.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::MemoryBroker;
use crate::broker::control::{ControlCommand, ControlMessage, NodeInfo, Revocation, SurveyReply};
use crate::broker::error::BrokerError;
use crate::broker::seam::{Backchannel, Control};
use crate::broker::types::{InboxEntry, RelayedFrames};

#[async_trait]
impl Backchannel for MemoryBroker {
    async fn inbox_append(
        &self,
        _stream: &str,
        _entry: &InboxEntry,
    ) -> Result<String, BrokerError> {
        Err(BrokerError::Unsupported(
            "the durable inbox needs Redis: run fanout with --redis-url",
        ))
    }

    async fn relay(&self, _node: &str, _frames: &RelayedFrames) -> Result<bool, BrokerError> {
        // A single node: there is no other node to hold the session.
        Ok(false)
    }
}

/// One node: a command is applied here, and this node is the registry.
#[async_trait]
impl Control for MemoryBroker {
    async fn broadcast(&self, command: &ControlCommand) -> Result<(), BrokerError> {
        self.sink.control(ControlMessage::Command(command.clone()));
        Ok(())
    }

    async fn reply(&self, _node: &str, reply: &SurveyReply) -> Result<(), BrokerError> {
        self.sink
            .control(ControlMessage::SurveyReply(reply.clone()));
        Ok(())
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<(), BrokerError> {
        match revocation {
            Revocation::User { user, before, keep } => {
                let mut users = lock(&self.revoked_users);
                let until = Instant::now() + *keep;
                let entry = users.entry(user.clone()).or_insert((*before, until));
                *entry = (entry.0.max(*before), entry.1.max(until));
                if users.len() > 100_000 {
                    let now = Instant::now();
                    users.retain(|_, (_, until)| *until > now);
                }
            }
            Revocation::Token { jti, expires_at } => {
                let mut tokens = lock(&self.revoked_tokens);
                tokens.insert(jti.clone(), *expires_at);
                if tokens.len() > 100_000 {
                    let now = crate::clock::unix_now_ms() / 1000;
                    tokens.retain(|_, exp| *exp > now);
                }
            }
        }
        self.sink
            .control(ControlMessage::Command(revocation.command()));
        Ok(())
    }

    async fn is_revoked(
        &self,
        user: &str,
        issued_at: i64,
        jti: Option<&str>,
    ) -> Result<bool, BrokerError> {
        let by_user = lock(&self.revoked_users)
            .get(user)
            .is_some_and(|(before, until)| *until > Instant::now() && issued_at < *before);
        let by_token = jti.is_some_and(|jti| {
            lock(&self.revoked_tokens)
                .get(jti)
                .is_some_and(|exp| *exp > crate::clock::unix_now_ms() / 1000)
        });
        Ok(by_user || by_token)
    }

    async fn heartbeat(&self, info: &NodeInfo, ttl: Duration) -> Result<(), BrokerError> {
        *lock(&self.heartbeat) = Some((info.clone(), Instant::now() + ttl));
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, BrokerError> {
        Ok(lock(&self.heartbeat)
            .iter()
            .filter(|(_, until)| *until > Instant::now())
            .map(|(info, _)| info.clone())
            .collect())
    }
}

/// A lock whose holder cannot leave the map half-updated (single inserts and removes).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
