//! Subscriptions: `subscribe` (with recovery from `since`), `unsubscribe`, and `history`.
//!
//! A channel with history is subscribed in two steps: the hub buffers live messages for the
//! connection while the history is read and the reply and the replay are queued (the replay
//! at the client's reading pace, by [`replay`](super::replay), while the session reads on),
//! then the newer buffered messages follow and the subscription goes live. That merge is the
//! exactly-once guarantee of recovery.

use super::Session;
use crate::broker::{History, HistoryQuery, StreamPosition};
use crate::channel::Channel;
use crate::hub::Activation;
use crate::protocol::{
    self, ClientError, ErrorCode, Frame, HistoryMark, RequestId, ServerFrame, Since,
};

impl Session {
    /// `subscribe`, with a channel token for a channel the connection token does not grant
    /// (sent again, with a later token, it renews the subscription's right).
    pub(super) async fn subscribe(
        &mut self,
        id: Option<&RequestId>,
        channel: Channel,
        since: Option<Since>,
        token: Option<String>,
    ) {
        if let Some(token) = token {
            match self.channel_grant(&channel, &token).await {
                Ok(grant) => {
                    self.grants.insert(channel.clone(), grant);
                }
                Err(e) => {
                    self.error(id, e);
                    return;
                }
            }
        }
        self.subscribe_as(id, channel, since, false).await;
    }

    /// Subscribes, for the client (`server` false) or because the backend said so.
    pub(super) async fn subscribe_as(
        &mut self,
        id: Option<&RequestId>,
        channel: Channel,
        since: Option<Since>,
        server: bool,
    ) {
        let already = self.subscriptions.contains(&channel);
        if !already {
            if let Err(e) = self.may_subscribe(&channel) {
                self.error(id, e);
                return;
            }
            let max = self.node.config.limits.max_subscriptions;
            if self.subscriptions.len() >= max {
                self.error(
                    id,
                    ClientError::new(
                        ErrorCode::LimitExceeded,
                        format!("at most {max} subscriptions per connection"),
                    ),
                );
                return;
            }
        }
        let has_history = self.node.config.history(&channel).is_some();
        if has_history && (since.is_some() || !already) {
            self.subscribe_with_history(id, channel, since, already, server)
                .await;
            return;
        }
        let reply = ServerFrame::Subscribed {
            id,
            channel: channel.as_str(),
            offset: None,
            epoch: None,
            // Nothing to recover from on a channel without history.
            recovered: since.as_ref().map(|_| false),
            server,
        }
        .encode();
        if already {
            // Idempotent: a client retrying a subscribe gets the same answer.
            let _ = self.outbox.push(reply);
            return;
        }
        match self
            .node
            .hub
            .subscribe(
                self.conn.key,
                &self.outbox,
                std::slice::from_ref(&channel),
                Some(reply),
            )
            .await
        {
            Ok(()) => {
                tracing::debug!(conn = %self.conn.conn_id, %channel, "subscribed");
                self.join_presence(&channel).await;
                self.subscriptions.insert(channel);
            }
            Err(e) => self.error(id, e.into()),
        }
    }

    /// Subscribes to (or recovers, in place, on) a channel with history: live messages are
    /// buffered while the history is read, then the reply, the replay and the newer buffered
    /// messages are queued in that order, without gap or duplicate. The replay is queued by
    /// the connection's replay task, at the client's pace; this returns once it is handed
    /// over.
    pub(super) async fn subscribe_with_history(
        &mut self,
        id: Option<&RequestId>,
        channel: Channel,
        since: Option<Since>,
        already: bool,
        server: bool,
    ) {
        let hub = &self.node.hub;
        if let Err(e) = hub
            .subscribe_pending(self.conn.key, &self.outbox, &channel)
            .await
        {
            self.error(id, e.into());
            return;
        }
        // Whatever was still being replayed of this channel is superseded by this request.
        self.replays.cancel(&channel);
        let limits = &self.node.config.limits;
        let query = match &since {
            Some(s) => HistoryQuery::After {
                offset: s.offset,
                limit: limits.max_recovery_messages,
            },
            None => HistoryQuery::Latest { limit: 0 },
        };
        let history = match hub.broker().history(&channel, query).await {
            Ok(h) => h,
            Err(e) => {
                if already {
                    // Back to live as it was, nothing skipped (or, if messages were let go
                    // meanwhile, told to resync).
                    if !hub.go_live(self.conn.key, &channel) {
                        self.reply(ServerFrame::Resync {
                            channel: channel.as_str(),
                        });
                    }
                } else {
                    hub.unsubscribe(
                        self.conn.key,
                        &self.outbox,
                        std::slice::from_ref(&channel),
                        None,
                    )
                    .await;
                }
                self.error(id, e.into());
                return;
            }
        };
        let replay = since
            .as_ref()
            .and_then(|s| self.replay(&channel, s, &history));
        if let Some(s) = &since {
            let outcome = if replay.is_some() {
                "recovered"
            } else {
                "not_recovered"
            };
            self.node
                .metrics
                .recoveries
                .with_label_values(&[outcome])
                .inc();
            tracing::debug!(
                conn = %self.conn.conn_id,
                %channel,
                since = s.offset,
                top = history.offset,
                replay = replay.as_ref().map_or(0, Vec::len),
                already,
                outcome,
                "recovery"
            );
        } else {
            tracing::debug!(conn = %self.conn.conn_id, %channel, top = history.offset, "subscribed with history");
        }
        let reply = ServerFrame::Subscribed {
            id,
            channel: channel.as_str(),
            offset: Some(history.offset),
            epoch: Some(&history.epoch),
            recovered: since.as_ref().map(|_| replay.is_some()),
            server,
        }
        .encode()
        // Where the client stands once this frame is read: at `since` when the replay
        // follows, at the top otherwise (transports that resume by themselves track it).
        .marked(HistoryMark {
            channel: channel.clone(),
            offset: match (&since, &replay) {
                (Some(s), Some(_)) => s.offset,
                _ => history.offset,
            },
            epoch: history.epoch.clone(),
        });
        let _ = self.outbox.push(reply);
        let top = StreamPosition {
            offset: history.offset,
            epoch: history.epoch.clone(),
        };
        if !already {
            self.subscriptions.insert(channel.clone());
            self.join_presence(&channel).await;
        }
        match replay {
            Some(frames) if !frames.is_empty() => self.replays.start(channel, frames, top),
            _ => {
                let hub = &self.node.hub;
                if hub.activate(self.conn.key, &channel, Some(top.clone()))
                    == Activation::FellBehind
                {
                    // Messages came faster than this node would buffer them while the
                    // history was read: replay them from history first.
                    self.replays.start_behind(channel, top);
                }
            }
        }
    }

    /// The message frames a client recovering from `since` missed, if every one of them is
    /// still in history and they fit the recovery limits; `None` means it must reload.
    pub(super) fn replay(
        &self,
        channel: &Channel,
        since: &Since,
        history: &History,
    ) -> Option<Vec<Frame>> {
        let limits = &self.node.config.limits;
        let missed = history.offset.checked_sub(since.offset)?;
        let complete = since.epoch == *history.epoch
            && history.first <= since.offset + 1
            && missed <= limits.max_recovery_messages as u64
            && history.messages.len() as u64 == missed;
        if !complete {
            return None;
        }
        Some(
            history
                .messages
                .iter()
                .map(|m| {
                    protocol::message_frame_with(
                        channel,
                        &m.payload,
                        protocol::is_json(&m.payload),
                        Some((m.offset, &history.epoch)),
                        m.publisher.as_deref(),
                    )
                })
                .collect(),
        )
    }

    /// `history`: the latest messages of a channel, or those after an offset, for a client
    /// allowed to subscribe to it.
    pub(super) async fn history(
        &mut self,
        id: Option<&RequestId>,
        channel: Channel,
        since: Option<u64>,
        limit: Option<usize>,
    ) {
        if let Err(e) = self.may_subscribe(&channel) {
            self.error(id, e);
            return;
        }
        let limits = &self.node.config.limits;
        let limit = limit
            .unwrap_or(limits.max_recovery_messages)
            .min(limits.max_recovery_messages);
        let query = match since {
            Some(offset) => HistoryQuery::After { offset, limit },
            None => HistoryQuery::Latest { limit },
        };
        if self.node.config.history(&channel).is_none() {
            self.error(
                id,
                ClientError::new(
                    ErrorCode::BadRequest,
                    format!("channel {channel} keeps no history"),
                ),
            );
            return;
        }
        match self.node.broker().history(&channel, query).await {
            Ok(h) => {
                // One reply must fit the outbound queue; the client pages with `since`.
                // At least one message per page, so paging always moves on.
                let budget = limits.queue_max_bytes / 2;
                let mut used = 0;
                let messages = h
                    .messages
                    .iter()
                    .enumerate()
                    .take_while(|(i, m)| {
                        used += m.payload.len() + 32;
                        *i == 0 || used <= budget
                    })
                    .map(|(_, m)| m.entry())
                    .collect();
                self.reply(ServerFrame::History {
                    id,
                    channel: channel.as_str(),
                    offset: h.offset,
                    epoch: &h.epoch,
                    messages,
                });
            }
            Err(e) => self.error(id, e.into()),
        }
    }

    pub(super) async fn unsubscribe(&mut self, id: Option<&RequestId>, channel: Channel) {
        let reply = ServerFrame::Unsubscribed {
            id,
            channel: channel.as_str(),
            reason: None,
            server: false,
        }
        .encode();
        if !self.leave(&channel, reply.clone()).await {
            // Idempotent, like subscribe.
            let _ = self.outbox.push(reply);
        }
    }

    /// Ends a subscription: no message of the channel follows `notice`, and the connection
    /// leaves the channel's presence. False if it was not subscribed.
    pub(super) async fn leave(&mut self, channel: &Channel, notice: Frame) -> bool {
        if !self.subscriptions.remove(channel) {
            return false;
        }
        self.grants.remove(channel);
        // Nothing of its replay may follow the notice.
        self.replays.cancel(channel);
        self.node
            .hub
            .unsubscribe(
                self.conn.key,
                &self.outbox,
                std::slice::from_ref(channel),
                Some(notice),
            )
            .await;
        self.leave_presence(channel).await;
        true
    }
}
