//! Client publishing: `publish` (to a channel's subscribers, as the token's user) and `send`
//! (to the backend through the durable inbox), both rate-limited and size-checked.

use bytes::Bytes;

use super::Session;
use crate::broker::InboxEntry;
use crate::channel::Channel;
use crate::clock::unix_now_ms;
use crate::protocol::{ClientError, ErrorCode, RequestId, ServerFrame};

impl Session {
    pub(super) fn rate_limited(&self, id: Option<&RequestId>) {
        self.error(
            id,
            ClientError::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {} publish, send or status frames per second",
                    self.node.config.limits.max_publishes_per_s
                ),
            ),
        );
    }

    /// Checks a client payload's size; answers `too_large` when it is over the limit.
    pub(super) fn payload_fits(&self, id: Option<&RequestId>, data: &[u8]) -> bool {
        let max = self.node.config.limits.max_payload_bytes;
        if data.len() > max {
            self.error(
                id,
                ClientError::new(
                    ErrorCode::TooLarge,
                    format!("\"data\" is larger than {max} bytes"),
                ),
            );
            return false;
        }
        true
    }

    /// `publish`: a client publishes to a channel's subscribers, as its token's user.
    pub(super) async fn publish(&mut self, id: Option<&RequestId>, channel: Channel, data: Bytes) {
        let Some(identity) = &self.identity else {
            return;
        };
        if let Err(e) = self.node.check_namespace(&channel) {
            self.error(id, e);
            return;
        }
        if !super::access::may_publish(&self.node.config, identity, &channel) {
            self.error(
                id,
                ClientError::new(
                    ErrorCode::Forbidden,
                    format!("token does not grant publishing to {channel}"),
                ),
            );
            return;
        }
        if !self.payload_fits(id, &data) {
            return;
        }
        if !self.publishes.take() {
            self.rate_limited(id);
            return;
        }
        let user = identity.user.clone();
        match self
            .node
            .hub
            .broker()
            .publish(&channel, data, Some(&user), None)
            .await
        {
            Ok(offset) => {
                self.node
                    .metrics
                    .messages_published
                    .with_label_values(&["client"])
                    .inc();
                self.reply(ServerFrame::Published {
                    id,
                    channel: channel.as_str(),
                    offset,
                });
            }
            Err(e) => self.error(id, e.into()),
        }
    }

    /// `send`: appends to the channel's durable inbox stream for the backend.
    pub(super) async fn send(&mut self, id: Option<&RequestId>, channel: Channel, data: Bytes) {
        if let Err(e) = self.may_subscribe(&channel) {
            self.error(id, e);
            return;
        }
        if !self.payload_fits(id, &data) {
            return;
        }
        if !self.publishes.take() {
            self.rate_limited(id);
            return;
        }
        let Some(identity) = &self.identity else {
            return;
        };
        let stream = self.node.inbox_stream(&channel);
        let entry = InboxEntry {
            channel: channel.clone(),
            user: identity.user.clone(),
            conn_id: self.conn.conn_id.clone(),
            node: self.node.config.node_id.clone(),
            received_at_ms: unix_now_ms(),
            data,
        };
        match self.node.backchannel.inbox_append(&stream, &entry).await {
            Ok(stream_id) => self.reply(ServerFrame::Sent {
                id,
                channel: channel.as_str(),
                stream_id: &stream_id,
            }),
            Err(e) => self.error(id, e.into()),
        }
    }
}
