//! What a token may do: which channels a connection may subscribe to (and so read history and
//! presence of, and send to) and publish on. Pure functions of the token, the configuration
//! and the channel, so the rules can be tested without a connection.

use std::sync::LazyLock;
use std::time::Duration;

use super::Session;
use crate::auth::Identity;
use crate::channel::{BROADCAST, Channel};
use crate::config::Config;
use crate::limits::RateLimitedLog;
use crate::protocol::{ClientError, ErrorCode};

/// Refused subscriptions are worth an operator's eye (a misconfigured token, a probing
/// client), but a client retrying in a loop must not flood the log: one line a second per
/// node, with the count of those left out.
static FORBIDDEN_LOG: LazyLock<RateLimitedLog> =
    LazyLock::new(|| RateLimitedLog::new(Duration::from_secs(1)));

/// Whether `identity` may subscribe to `channel`: `broadcast`, its own user channel, a public
/// namespace, or a channel its token grants. Unknown namespaces are a bad request.
pub fn may_subscribe(
    config: &Config,
    identity: Option<&Identity>,
    channel: &Channel,
) -> Result<(), ClientError> {
    let ns = channel.namespace();
    if channel.as_str() == BROADCAST {
        return Ok(());
    }
    let Some(rules) = config.namespace(ns) else {
        return Err(ClientError::bad_request(format!(
            "unknown channel namespace {ns:?}"
        )));
    };
    let Some(identity) = identity else {
        return Err(ClientError::unauthorized("not authenticated"));
    };
    let own = Channel::user(&identity.user).is_ok_and(|c| &c == channel);
    if own || rules.public || identity.grants(channel) {
        Ok(())
    } else {
        Err(ClientError::forbidden(format!(
            "token does not grant channel {channel}"
        )))
    }
}

/// Whether `identity` may publish to `channel`: granted by its token's `publish` claim, or by
/// a namespace that allows client publishing to those who may subscribe.
pub fn may_publish(config: &Config, identity: &Identity, channel: &Channel) -> bool {
    let namespace_allows = config
        .namespace(channel.namespace())
        .is_some_and(|n| n.publish)
        && may_subscribe(config, Some(identity), channel).is_ok();
    identity.may_publish(channel) || namespace_allows
}

impl Session {
    /// [`may_subscribe`] for this session's identity, or a grant it holds for the channel (a
    /// channel token, the backend's subscribe); refusals are logged (rate-limited).
    pub(super) fn may_subscribe(&self, channel: &Channel) -> Result<(), ClientError> {
        let mut verdict = may_subscribe(&self.node.config, self.identity.as_ref(), channel);
        if matches!(&verdict, Err(e) if e.code == ErrorCode::Forbidden)
            && self.grants.contains_key(channel)
        {
            verdict = Ok(());
        }
        if let Err(e) = &verdict
            && e.code == ErrorCode::Forbidden
            && let Some(suppressed) = FORBIDDEN_LOG.allow()
        {
            tracing::info!(
                conn = %self.conn.conn_id,
                user = self.identity.as_ref().map(|i| &*i.user),
                %channel,
                suppressed,
                "subscription refused: the token does not grant the channel"
            );
        }
        verdict
    }
}
