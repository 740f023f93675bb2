//! What a backend's control of sessions carries between nodes: commands for every node to
//! apply to its own sessions (disconnect, unsubscribe, subscribe, revocations), a survey and
//! its replies (the channels each node holds), and what each node says of itself in the
//! node registry.
//!
//! Commands travel as JSON, the same text whether a node sent it (the HTTP API) or the
//! function library did (`FCALL fanout_disconnect 1 control …` from redis-cli or PHP), on a
//! control channel plain publishers cannot reach.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A command every node applies to its own sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlCommand {
    /// Ends a user's connections (or just `conn_id`), telling them `code` and `reason`.
    Disconnect {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conn_id: Option<String>,
        code: u16,
        reason: String,
        reconnect: bool,
    },
    /// Ends a user's subscriptions of a channel on every connection.
    Unsubscribe { user: String, channel: String },
    /// Subscribes a user's live connections to a channel.
    Subscribe { user: String, channel: String },
    /// The user's tokens issued before `before` (Unix seconds) are refused from now on; live
    /// sessions holding one are closed.
    RevokeUser { user: String, before: i64 },
    /// The token (connection or channel token) with this `jti` is refused until it expires;
    /// a live session holding it is closed (or its channel ended).
    RevokeToken { jti: String, expires_at: i64 },
    /// Each node replies to `reply_to` with its channels matching `pattern`.
    Survey {
        id: String,
        reply_to: String,
        pattern: String,
    },
}

/// A node's answer to a [`ControlCommand::Survey`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurveyReply {
    pub id: String,
    pub node: String,
    /// Channels matching the survey's pattern, with this node's subscriber count.
    pub channels: Vec<(String, usize)>,
}

/// What reaches a node on its control paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    Command(ControlCommand),
    SurveyReply(SurveyReply),
}

/// A revocation to store: what is refused, and for how long it must be remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Tokens of `user` issued before `before` (Unix seconds), remembered for `keep` (the
    /// longest a token issued before it may live).
    User {
        user: String,
        before: i64,
        keep: Duration,
    },
    /// The token `jti`, remembered until it expires by itself (Unix seconds).
    Token { jti: String, expires_at: i64 },
}

impl Revocation {
    /// The command that tells every node to apply it to its live sessions.
    pub fn command(&self) -> ControlCommand {
        match self {
            Revocation::User { user, before, .. } => ControlCommand::RevokeUser {
                user: user.clone(),
                before: *before,
            },
            Revocation::Token { jti, expires_at } => ControlCommand::RevokeToken {
                jti: jti.clone(),
                expires_at: *expires_at,
            },
        }
    }
}

/// What a node says of itself in the node registry (`GET /api/info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub version: String,
    /// Seconds since the node started.
    pub uptime_s: u64,
    pub connections: u64,
    pub subscriptions: u64,
    pub channels: u64,
}

/// How often a node tells the registry it is alive, and how long an entry lives without it.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(6);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_as_the_function_library_writes_them() {
        // What `fanout.lua` sends (cjson leaves out nil fields).
        let lua =
            r#"{"op":"disconnect","user":"42","code":4004,"reason":"logged out","reconnect":true}"#;
        assert_eq!(
            serde_json::from_str::<ControlCommand>(lua).unwrap(),
            ControlCommand::Disconnect {
                user: "42".into(),
                conn_id: None,
                code: 4004,
                reason: "logged out".into(),
                reconnect: true,
            }
        );
        let revoke = ControlCommand::RevokeUser {
            user: "42".into(),
            before: 1_765_000_000,
        };
        let json = serde_json::to_string(&revoke).unwrap();
        assert_eq!(
            json,
            r#"{"op":"revoke_user","user":"42","before":1765000000}"#
        );
        assert!(serde_json::from_str::<ControlCommand>(r#"{"op":"explode"}"#).is_err());
    }
}
