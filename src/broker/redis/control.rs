//! The control of sessions on Redis, for one server or a cluster alike ([`RedisControl`]):
//! commands go to every node on the control channel `!<prefix>{control}` (out of plain
//! publishers' reach), survey replies to the asking node's own channel, and revocations and
//! the node registry live in the control slot, kept by the function library
//! (`fanout_revoke_user`, `fanout_revoke_token`, `fanout_revoked`, `fanout_node_beat`,
//! `fanout_nodes`), which backends may call themselves.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::commands::Commands;
use super::envelope::{control_channel, node_channel};
use crate::broker::{
    BrokerError, Control, ControlCommand, ControlMessage, NodeInfo, Revocation, SurveyReply,
};

/// A message of the control channel, or `None` (and a debug line) if it is not one.
pub fn decode_command(payload: &[u8]) -> Option<ControlMessage> {
    match serde_json::from_slice::<ControlCommand>(payload) {
        Ok(command) => Some(ControlMessage::Command(command)),
        Err(e) => {
            tracing::debug!(error = %e, "ignored a malformed control command");
            None
        }
    }
}

/// A survey reply on a node's own channel: JSON, where relayed frames start with a user id
/// (which never starts with `{`).
pub fn decode_reply(payload: &[u8]) -> Option<ControlMessage> {
    if payload.first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<SurveyReply>(payload)
        .ok()
        .map(ControlMessage::SurveyReply)
}

pub struct RedisControl<C: Commands> {
    commands: Arc<C>,
    prefix: String,
}

impl<C: Commands> RedisControl<C> {
    pub fn new(commands: Arc<C>, prefix: &str) -> RedisControl<C> {
        RedisControl {
            commands,
            prefix: prefix.to_owned(),
        }
    }

    fn fcall(function: &str) -> ::redis::Cmd {
        let mut command = ::redis::cmd("FCALL");
        command.arg(function).arg(1).arg("control");
        command
    }
}

#[async_trait]
impl<C: Commands> Control for RedisControl<C> {
    async fn broadcast(&self, command: &ControlCommand) -> Result<(), BrokerError> {
        let json = serde_json::to_vec(command)
            .map_err(|e| BrokerError::Rejected(format!("control command: {e}")))?;
        self.commands
            .publish_to(&control_channel(&self.prefix), &json)
            .await
            .map(|_| ())
    }

    async fn reply(&self, node: &str, reply: &SurveyReply) -> Result<(), BrokerError> {
        let json = serde_json::to_vec(reply)
            .map_err(|e| BrokerError::Rejected(format!("survey reply: {e}")))?;
        self.commands
            .publish_to(&node_channel(&self.prefix, node), &json)
            .await
            .map(|_| ())
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<(), BrokerError> {
        // The library stores it and tells every node, in one call.
        let command = match revocation {
            Revocation::User { user, before, keep } => {
                let mut c = Self::fcall("fanout_revoke_user");
                c.arg(user).arg(before).arg(keep.as_secs().max(1));
                c
            }
            Revocation::Token { jti, expires_at } => {
                let mut c = Self::fcall("fanout_revoke_token");
                c.arg(jti).arg(expires_at);
                c
            }
        };
        self.commands
            .call::<i64>(&command, "revoke")
            .await
            .map(|_| ())
    }

    async fn is_revoked(
        &self,
        user: &str,
        issued_at: i64,
        jti: Option<&str>,
    ) -> Result<bool, BrokerError> {
        let mut command = Self::fcall("fanout_revoked");
        command.arg(user).arg(issued_at).arg(jti.unwrap_or(""));
        Ok(self
            .commands
            .call::<i64>(&command, "revocation check")
            .await?
            == 1)
    }

    async fn heartbeat(&self, info: &NodeInfo, ttl: Duration) -> Result<(), BrokerError> {
        let json = serde_json::to_string(info)
            .map_err(|e| BrokerError::Rejected(format!("node info: {e}")))?;
        let mut command = Self::fcall("fanout_node_beat");
        command.arg(&info.id).arg(json).arg(ttl.as_millis() as u64);
        self.commands
            .call::<i64>(&command, "node heartbeat")
            .await
            .map(|_| ())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, BrokerError> {
        let infos = self
            .commands
            .call::<Vec<String>>(&Self::fcall("fanout_nodes"), "node registry")
            .await?;
        Ok(infos
            .iter()
            .filter_map(|i| serde_json::from_str(i).ok())
            .collect())
    }
}
