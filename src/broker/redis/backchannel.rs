//! What flows back through Redis, for one server or a cluster alike ([`RedisBackchannel`]):
//! clients' `send` frames appended to the namespace's inbox stream (`XADD`), client frames
//! relayed to the node that holds their session (published on that node's relay channel;
//! see `relay`), and the single-use secrets of SSE connect tickets (`SET ... EX`, `GETDEL`, on
//! `!<prefix>once:<key>`, out of reach of names built from the prefix).

use std::sync::Arc;

use async_trait::async_trait;

use super::commands::Commands;
use super::envelope::{internal_channel, node_channel};
use crate::broker::{Backchannel, BrokerError, InboxEntry, RelayedFrames};

pub struct RedisBackchannel<C: Commands> {
    commands: Arc<C>,
    prefix: String,
}

impl<C: Commands> RedisBackchannel<C> {
    pub fn new(commands: Arc<C>, prefix: &str) -> RedisBackchannel<C> {
        RedisBackchannel {
            commands,
            prefix: prefix.to_owned(),
        }
    }
}

#[async_trait]
impl<C: Commands> Backchannel for RedisBackchannel<C> {
    async fn inbox_append(&self, stream: &str, entry: &InboxEntry) -> Result<String, BrokerError> {
        let received_at = entry.received_at_ms.to_string();
        let mut command = ::redis::cmd("XADD");
        command
            .arg(stream)
            .arg("*")
            .arg("channel")
            .arg(entry.channel.as_str())
            .arg("user")
            .arg(&entry.user)
            .arg("conn_id")
            .arg(&entry.conn_id)
            .arg("node")
            .arg(&entry.node)
            .arg("received_at")
            .arg(&received_at)
            .arg("data")
            .arg(&entry.data[..]);
        self.commands.call::<String>(&command, "XADD").await
    }

    async fn relay(&self, node: &str, frames: &RelayedFrames) -> Result<bool, BrokerError> {
        let receivers = self
            .commands
            .publish_to(
                &node_channel(&self.prefix, node),
                frames.encode().as_bytes(),
            )
            .await?;
        Ok(receivers > 0)
    }

    async fn put_once(
        &self,
        key: &str,
        value: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, BrokerError> {
        let mut command = ::redis::cmd("SET");
        command
            .arg(internal_channel(&self.prefix, &format!("once:{key}")))
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        self.commands.call::<()>(&command, "SET").await?;
        Ok(true)
    }

    async fn take_once(&self, key: &str) -> Result<Option<String>, BrokerError> {
        let mut command = ::redis::cmd("GETDEL");
        command.arg(internal_channel(&self.prefix, &format!("once:{key}")));
        self.commands
            .call::<Option<String>>(&command, "GETDEL")
            .await
    }
}
