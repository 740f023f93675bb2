//! Authentication: the `auth` frame (token after the upgrade), its deadline, and `refresh`
//! (a new token for the same user, which may narrow what the connection may subscribe to).

use tokio::time::Instant;

use super::Session;
use crate::channel::Channel;
use crate::outbox::Ending;
use crate::protocol::{ClientError, CloseCode, ErrorCode, RequestId, ServerFrame, expires_in};

impl Session {
    /// While unauthenticated: when the `auth` frame must have arrived.
    pub fn auth_deadline(&self) -> Option<Instant> {
        self.identity.is_none().then_some(self.auth_deadline)
    }

    pub fn auth_timed_out(&self) {
        self.outbox.end(Ending::close(
            CloseCode::Unauthorized,
            format!(
                "no auth frame within {} s",
                self.node.config.auth_timeout.as_secs()
            ),
        ));
    }

    pub(super) async fn authenticate(&mut self, id: Option<&RequestId>, token: &str) -> bool {
        let identity = match self.node.verifier.verify(token) {
            Ok(i) => i,
            Err(e) => {
                self.outbox.end(Ending::close(CloseCode::Unauthorized, e.0));
                return false;
            }
        };
        match self
            .node
            .is_revoked(&identity.user, &identity.credential)
            .await
        {
            Ok(false) => {}
            Ok(true) => {
                self.outbox
                    .end(Ending::close(CloseCode::Revoked, "token revoked"));
                return false;
            }
            Err(e) => {
                tracing::warn!(conn = %self.conn.conn_id, error = %e, "could not check the token against revocations");
                self.outbox.end(Ending::close(
                    CloseCode::TryAgainLater,
                    "broker unavailable; reconnect later",
                ));
                return false;
            }
        }
        let slot = match self.node.admission.admit_user(&identity.user) {
            Ok(s) => s,
            Err(_) => {
                self.outbox.end(Ending::close(
                    CloseCode::ConnectionLimit,
                    "this user has too many open connections",
                ));
                return false;
            }
        };
        self.start(identity, slot, id).await
    }

    pub(super) async fn refresh(&mut self, id: Option<&RequestId>, token: &str) {
        let identity = match self.node.verifier.verify(token) {
            Ok(i) => i,
            Err(e) => {
                self.error(id, ClientError::new(ErrorCode::Unauthorized, e.0));
                return;
            }
        };
        match self
            .node
            .is_revoked(&identity.user, &identity.credential)
            .await
        {
            Ok(false) => {}
            Ok(true) => {
                self.error(
                    id,
                    ClientError::new(ErrorCode::Unauthorized, "token revoked"),
                );
                return;
            }
            Err(e) => {
                self.error(id, e.into());
                return;
            }
        }
        let Some(current) = &self.identity else {
            return;
        };
        if identity.user != current.user {
            self.error(
                id,
                ClientError::new(
                    ErrorCode::Forbidden,
                    "refresh token is for a different user",
                ),
            );
            return;
        }
        self.conn
            .set_expiry(identity.expires_at, self.node.config.jwt.leeway_s);
        // The writer arms its expiry timer from this.
        self.outbox.wake_writer();
        let expires_at = identity.expires_at;
        self.identity = Some(identity);
        // A narrower token ends the subscriptions it no longer grants.
        let revoked: Vec<Channel> = self
            .subscriptions
            .iter()
            .filter(|c| self.may_subscribe(c).is_err())
            .cloned()
            .collect();
        for channel in revoked {
            let notice = ServerFrame::Unsubscribed {
                id: None,
                channel: channel.as_str(),
                reason: Some(ErrorCode::Forbidden),
                server: false,
            }
            .encode();
            self.leave(&channel, notice).await;
        }
        self.reply(ServerFrame::Refreshed {
            id,
            expires_at,
            expires_in: expires_in(expires_at),
        });
    }
}
