//! What flows back through Redis, for one server or a cluster alike ([`RedisBackchannel`]):
//! clients' `send` frames appended to the namespace's inbox stream (`XADD`), and client
//! frames relayed to the node that holds their session (published on that node's relay
//! channel; see `relay`).

use std::sync::Arc;

use async_trait::async_trait;

use super::commands::Commands;
use super::envelope::node_channel;
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
}
