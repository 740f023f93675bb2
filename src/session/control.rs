//! What the backend asks of a session (through the node's control commands: subscribe,
//! unsubscribe, revocations), and channel tokens: a channel held because a token for that one
//! channel said so, until that token expires or is revoked, or because the backend
//! subscribed the connection. Both are [`Grant`]s beyond the connection token.

use tokio::time::{Instant, sleep_until};

use super::Session;
use crate::auth::Credential;
use crate::channel::Channel;
use crate::clock::unix_now_ms;
use crate::node::SessionCommand;
use crate::outbox::Ending;
use crate::protocol::{ClientError, CloseCode, ErrorCode, ServerFrame};

/// Why a session holds a channel its connection token does not grant.
#[derive(Debug, Clone)]
pub(super) struct Grant {
    /// A channel token's expiry (Unix seconds); `None` for a channel the backend subscribed
    /// the connection to.
    pub expires_at: Option<i64>,
    /// The channel token's revocation names.
    pub credential: Option<Credential>,
    /// The channel token's `info`, shown in the channel's presence.
    pub info: Option<serde_json::Value>,
}

impl Session {
    /// Resolves when the session has work of its own: a command from the node, or a channel
    /// token that expired. The transport then calls [`Session::on_wake`].
    pub async fn woken(&self) {
        let expiry = self.next_grant_expiry();
        tokio::select! {
            _ = self.inbox.wait() => {}
            _ = sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => {}
        }
    }

    /// Does what woke the session. False when the connection is closing.
    pub async fn on_wake(&mut self) -> bool {
        for command in self.inbox.take() {
            Box::pin(self.on_command(command)).await;
        }
        self.end_expired_grants().await;
        !self.outbox.is_ending()
    }

    async fn on_command(&mut self, command: SessionCommand) {
        let Some(identity) = &self.identity else {
            return;
        };
        match command {
            SessionCommand::Subscribe(channel) => {
                if self.subscriptions.contains(&channel) {
                    return;
                }
                if self.node.check_namespace(&channel).is_err() {
                    tracing::info!(conn = %self.conn.conn_id, %channel, "the backend subscribed a connection to a channel of an unknown namespace; ignored");
                    return;
                }
                self.grants.insert(
                    channel.clone(),
                    Grant {
                        expires_at: None,
                        credential: None,
                        info: None,
                    },
                );
                tracing::debug!(conn = %self.conn.conn_id, %channel, "subscribed by the backend");
                self.subscribe_as(None, channel, None, true).await;
            }
            SessionCommand::Unsubscribe(channel) => {
                self.grants.remove(&channel);
                let notice = ServerFrame::Unsubscribed {
                    id: None,
                    channel: channel.as_str(),
                    reason: None,
                    server: true,
                }
                .encode();
                if self.leave(&channel, notice).await {
                    tracing::debug!(conn = %self.conn.conn_id, %channel, "unsubscribed by the backend");
                }
            }
            SessionCommand::RevokeUser { before } => {
                if identity.credential.issued_at < before {
                    self.revoked();
                    return;
                }
                self.end_grants(|g| g.credential.as_ref().is_some_and(|c| c.issued_at < before))
                    .await;
            }
            SessionCommand::RevokeToken { jti } => {
                if identity.credential.jti.as_deref() == Some(&jti) {
                    self.revoked();
                    return;
                }
                self.end_grants(|g| {
                    g.credential
                        .as_ref()
                        .is_some_and(|c| c.jti.as_deref() == Some(&jti))
                })
                .await;
            }
        }
    }

    /// Closes the connection: its token was revoked.
    fn revoked(&self) {
        tracing::info!(conn = %self.conn.conn_id, user = self.user().unwrap_or("-"), "token revoked; closing the connection");
        self.outbox
            .end(Ending::close(CloseCode::Revoked, "token revoked"));
    }

    /// Verifies a channel token sent with a `subscribe` of `channel`; the grant it gives.
    pub(super) async fn channel_grant(
        &self,
        channel: &Channel,
        token: &str,
    ) -> Result<Grant, ClientError> {
        let Some(identity) = &self.identity else {
            return Err(ClientError::unauthorized("not authenticated"));
        };
        let grant = self
            .node
            .verifier
            .verify_channel(token)
            .map_err(|e| ClientError::new(ErrorCode::Unauthorized, e.0))?;
        if grant.user != identity.user {
            return Err(ClientError::forbidden("channel token is for another user"));
        }
        if grant.channel != *channel {
            return Err(ClientError::forbidden(format!(
                "channel token is for channel {}, not {channel}",
                grant.channel
            )));
        }
        match self.node.is_revoked(&grant.user, &grant.credential).await {
            Ok(false) => {}
            Ok(true) => {
                return Err(ClientError::new(
                    ErrorCode::Unauthorized,
                    "channel token revoked",
                ));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Grant {
            expires_at: Some(grant.expires_at),
            credential: Some(grant.credential),
            info: grant.info,
        })
    }

    /// When the next channel token runs out.
    fn next_grant_expiry(&self) -> Option<Instant> {
        let at = self.grants.values().filter_map(|g| g.expires_at).min()?;
        let due_ms = at.saturating_add(1).saturating_mul(1000);
        let wait = u64::try_from(due_ms.saturating_sub(unix_now_ms())).unwrap_or(0);
        Some(Instant::now() + std::time::Duration::from_millis(wait.min(365 * 86_400_000)))
    }

    /// Ends the subscriptions whose channel token expired.
    async fn end_expired_grants(&mut self) {
        let now_s = unix_now_ms() / 1000;
        self.end_grants(|g| g.expires_at.is_some_and(|at| at <= now_s))
            .await;
    }

    /// Ends the subscriptions held by the grants `which` picks (unless the connection token
    /// grants the channel itself), telling the client why.
    async fn end_grants(&mut self, which: impl Fn(&Grant) -> bool) {
        let ended: Vec<Channel> = self
            .grants
            .iter()
            .filter(|(_, g)| which(g))
            .map(|(c, _)| c.clone())
            .collect();
        for channel in ended {
            self.grants.remove(&channel);
            if self.may_subscribe(&channel).is_ok() {
                continue;
            }
            let notice = ServerFrame::Unsubscribed {
                id: None,
                channel: channel.as_str(),
                reason: Some(ErrorCode::Unauthorized),
                server: false,
            }
            .encode();
            if self.leave(&channel, notice).await {
                tracing::debug!(conn = %self.conn.conn_id, %channel, "channel token expired or revoked; subscription ended");
            }
        }
    }
}
