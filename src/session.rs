//! One client connection's protocol state: authentication, subscriptions, request handling.
//!
//! The transport hands the session complete text messages; the session answers through its
//! [`Outbox`] and asks the hub to (un)subscribe. It never touches the socket itself, so
//! everything here is testable protocol logic and the order of frames a client sees is the
//! order in which they were pushed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::auth::Identity;
use crate::channel::Channel;
use crate::hub::ConnId;
use crate::limits::{FrameRate, FrameVerdict, NodeSlot, RateBudget, UserSlot};
use crate::outbox::{Ending, Outbox};
use bytes::Bytes;

use crate::broker::{
    BrokerError, History, HistoryQuery, InboxEntry, Lease, PresenceMember, StreamPosition,
};
use crate::presence;
use crate::protocol::{
    self, CloseCode, ErrorCode, Request, RequestId, ServerFrame, Since, parse_client_frame,
};
use crate::server::Node;

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    unix_now_ms() / 1000
}

pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the session and the writer share about a connection.
pub struct ConnState {
    pub id: ConnId,
    /// The id shown to clients and in logs; unique across nodes and restarts.
    pub public_id: String,
    clock: Instant,
    last_seen_ms: AtomicU64,
    /// Token expiry in Unix milliseconds (leeway included); `i64::MAX` before authentication.
    expires_at_ms: AtomicI64,
}

impl ConnState {
    pub fn new(node: &Node) -> ConnState {
        ConnState {
            id: node.next_conn_id(),
            public_id: format!("{:016x}", rand::random::<u64>()),
            clock: node.started,
            last_seen_ms: AtomicU64::new(node.started.elapsed().as_millis() as u64),
            expires_at_ms: AtomicI64::new(i64::MAX),
        }
    }

    /// Milliseconds on the node's monotonic clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Records that the client sent something (any frame, pong included).
    pub fn touch(&self) {
        self.last_seen_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }

    /// When the token expires (Unix ms), once authenticated.
    pub fn expires_at(&self) -> Option<i64> {
        match self.expires_at_ms.load(Ordering::Relaxed) {
            i64::MAX => None,
            at => Some(at),
        }
    }

    pub fn token_expired(&self) -> bool {
        self.expires_at().is_some_and(|at| unix_now_ms() >= at)
    }

    fn set_expiry(&self, exp_s: i64, leeway_s: u64) {
        let at = exp_s
            .saturating_add(leeway_s as i64)
            .saturating_add(1)
            .saturating_mul(1000);
        self.expires_at_ms.store(at, Ordering::Relaxed);
    }
}

/// The protocol state of one connection.
pub struct Session {
    node: Arc<Node>,
    conn: Arc<ConnState>,
    outbox: Arc<Outbox>,
    identity: Option<Identity>,
    subscriptions: BTreeSet<Channel>,
    rate: FrameRate,
    publishes: RateBudget,
    auth_deadline: Instant,
    _node_slot: NodeSlot,
    _user_slot: Option<UserSlot>,
}

impl Session {
    pub fn new(
        node: Arc<Node>,
        conn: Arc<ConnState>,
        outbox: Arc<Outbox>,
        node_slot: NodeSlot,
    ) -> Session {
        Session {
            rate: FrameRate::new(node.config.limits.max_frames_per_s),
            publishes: RateBudget::new(node.config.limits.max_publishes_per_s),
            auth_deadline: Instant::now() + node.config.auth_timeout,
            node,
            conn,
            outbox,
            identity: None,
            subscriptions: BTreeSet::new(),
            _node_slot: node_slot,
            _user_slot: None,
        }
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    pub fn conn(&self) -> &Arc<ConnState> {
        &self.conn
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

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

    /// Starts an authenticated session: subscribes `broadcast` and `user:<id>`, then sends
    /// `connection_ack` ahead of any message on them. Returns false if the session ended.
    pub async fn start(
        &mut self,
        identity: Identity,
        user_slot: UserSlot,
        id: Option<&RequestId>,
    ) -> bool {
        let user_channel = match Channel::user(&identity.user) {
            Ok(c) => c,
            Err(_) => {
                // Verified tokens always carry a valid user id; keep the guard anyway.
                self.outbox.end(Ending::close(
                    CloseCode::Unauthorized,
                    "token `sub` is not a valid user id",
                ));
                return false;
            }
        };
        let channels = [Channel::broadcast(), user_channel];
        let ack = ServerFrame::ConnectionAck {
            id,
            conn_id: &self.conn.public_id,
            user: &identity.user,
            node: &self.node.config.node_id,
            heartbeat_s: self.node.config.heartbeat.as_secs(),
            channels: channels.iter().map(Channel::as_str).collect(),
            expires_at: identity.expires_at,
        }
        .encode();
        if let Err(e) = self
            .node
            .hub
            .subscribe(self.conn.id, &self.outbox, &channels, Some(ack))
            .await
        {
            tracing::warn!(conn = %self.conn.public_id, error = %e, "could not subscribe the session's own channels");
            self.outbox.end(Ending::close(
                CloseCode::TryAgainLater,
                "broker unavailable; reconnect later",
            ));
            return false;
        }
        self.conn
            .set_expiry(identity.expires_at, self.node.config.jwt.leeway_s);
        tracing::debug!(user = %identity.user, "session authenticated");
        self.identity = Some(identity);
        self._user_slot = Some(user_slot);
        for channel in channels {
            self.join_presence(&channel).await;
            self.subscriptions.insert(channel);
        }
        true
    }

    /// Applies the inbound frame rate. `Some(keep_reading)` when the frame must not be
    /// processed: it was answered `rate_limited`, or the connection is being closed.
    fn over_rate(&self, text: Option<&str>) -> Option<bool> {
        match self.rate.check() {
            FrameVerdict::Process => None,
            FrameVerdict::Reject => {
                let id = text
                    .and_then(|t| parse_client_frame(t).ok())
                    .and_then(|(id, _)| id);
                self.error(
                    id.as_ref(),
                    ErrorCode::RateLimited,
                    &format!(
                        "more than {} frames per second; frame not processed",
                        self.node.config.limits.max_frames_per_s
                    ),
                );
                Some(true)
            }
            FrameVerdict::Close => {
                self.outbox.end(Ending::close(
                    CloseCode::RateLimited,
                    "kept sending at more than twice the frame rate limit",
                ));
                Some(false)
            }
        }
    }

    /// Handles one text message. Returns false when the connection should stop reading.
    pub async fn on_text(&mut self, text: &str) -> bool {
        if let Some(keep_reading) = self.over_rate(Some(text)) {
            return keep_reading;
        }
        let (id, request) = match parse_client_frame(text) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.error(e.id.as_ref(), ErrorCode::BadRequest, &e.message);
                return true;
            }
        };
        let id = id.as_ref();
        if self.identity.is_none() {
            return match request {
                Request::Auth { token } => self.authenticate(id, &token).await,
                other => {
                    self.outbox.end(Ending::close(
                        CloseCode::Unauthorized,
                        format!(
                            "authenticate first: expected an auth frame, got {:?}",
                            other.kind()
                        ),
                    ));
                    false
                }
            };
        }
        match request {
            Request::Auth { .. } => {
                self.error(id, ErrorCode::BadRequest, "already authenticated");
            }
            Request::Subscribe { channel, since } => self.subscribe(id, channel, since).await,
            Request::History {
                channel,
                since,
                limit,
            } => self.history(id, channel, since, limit).await,
            Request::Unsubscribe { channel } => self.unsubscribe(id, channel).await,
            Request::Ping => self.reply(ServerFrame::Pong { id }),
            Request::Presence { channel } => self.presence(id, channel, false).await,
            Request::PresenceStats { channel } => self.presence(id, channel, true).await,
            Request::Status { channel, status } => self.status(id, channel, status).await,
            Request::Publish { channel, data } => self.publish(id, channel, data).await,
            Request::Send { channel, data } => self.send(id, channel, data).await,
            Request::Refresh { token } => self.refresh(id, &token).await,
        }
        true
    }

    /// Binary messages are not part of protocol v1.
    pub fn on_binary(&mut self) -> bool {
        if let Some(keep_reading) = self.over_rate(None) {
            return keep_reading;
        }
        if self.identity.is_none() {
            self.outbox.end(Ending::close(
                CloseCode::Unauthorized,
                "authenticate first: expected an auth frame",
            ));
            return false;
        }
        self.error(
            None,
            ErrorCode::BadRequest,
            "binary frames are not supported; send JSON text frames",
        );
        true
    }

    async fn authenticate(&mut self, id: Option<&RequestId>, token: &str) -> bool {
        let identity = match self.node.verifier.verify(token) {
            Ok(i) => i,
            Err(e) => {
                self.outbox.end(Ending::close(CloseCode::Unauthorized, e.0));
                return false;
            }
        };
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

    async fn subscribe(&mut self, id: Option<&RequestId>, channel: Channel, since: Option<Since>) {
        let already = self.subscriptions.contains(&channel);
        if !already {
            if let Err((code, message)) = self.may_subscribe(&channel) {
                self.error(id, code, &message);
                return;
            }
            let max = self.node.config.limits.max_subscriptions;
            if self.subscriptions.len() >= max {
                self.error(
                    id,
                    ErrorCode::LimitExceeded,
                    &format!("at most {max} subscriptions per connection"),
                );
                return;
            }
        }
        let has_history = self.node.config.history(&channel).is_some();
        if has_history && (since.is_some() || !already) {
            self.subscribe_with_history(id, channel, since, already)
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
                self.conn.id,
                &self.outbox,
                std::slice::from_ref(&channel),
                Some(reply),
            )
            .await
        {
            Ok(()) => {
                self.join_presence(&channel).await;
                self.subscriptions.insert(channel);
            }
            Err(e) => self.error(id, ErrorCode::Unavailable, &e.to_string()),
        }
    }

    /// Subscribes to (or recovers, in place, on) a channel with history: live messages are
    /// buffered while the history is read, then the reply, the replay and the newer buffered
    /// messages are queued in that order, without gap or duplicate.
    async fn subscribe_with_history(
        &mut self,
        id: Option<&RequestId>,
        channel: Channel,
        since: Option<Since>,
        already: bool,
    ) {
        let hub = &self.node.hub;
        if let Err(e) = hub
            .subscribe_pending(self.conn.id, &self.outbox, &channel)
            .await
        {
            self.error(id, ErrorCode::Unavailable, &e.to_string());
            return;
        }
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
                    // Back to live as it was, nothing skipped.
                    hub.activate(self.conn.id, &channel, Vec::new(), None);
                } else {
                    hub.unsubscribe(
                        self.conn.id,
                        &self.outbox,
                        std::slice::from_ref(&channel),
                        None,
                    )
                    .await;
                }
                self.error(id, ErrorCode::Unavailable, &e.to_string());
                return;
            }
        };
        let replay = since
            .as_ref()
            .and_then(|s| self.replay(&channel, s, &history));
        let mut frames = Vec::with_capacity(1 + replay.as_ref().map_or(0, Vec::len));
        frames.push(
            ServerFrame::Subscribed {
                id,
                channel: channel.as_str(),
                offset: Some(history.offset),
                epoch: Some(&history.epoch),
                recovered: since.as_ref().map(|_| replay.is_some()),
            }
            .encode(),
        );
        frames.extend(replay.unwrap_or_default());
        let top = StreamPosition {
            offset: history.offset,
            epoch: history.epoch.clone(),
        };
        if hub.activate(self.conn.id, &channel, frames, Some(top)) && !already {
            self.join_presence(&channel).await;
            self.subscriptions.insert(channel);
        }
    }

    /// The message frames a client recovering from `since` missed, if every one of them is
    /// still in history and they fit the recovery limits; `None` means it must reload.
    fn replay(&self, channel: &Channel, since: &Since, history: &History) -> Option<Vec<Bytes>> {
        let limits = &self.node.config.limits;
        let missed = history.offset.checked_sub(since.offset)?;
        let complete = since.epoch == *history.epoch
            && history.first <= since.offset + 1
            && missed <= limits.max_recovery_messages as u64
            && history.messages.len() as u64 == missed;
        if !complete {
            return None;
        }
        // The replay goes through the outbound queue: it must leave room for live traffic.
        let bytes: usize = history.messages.iter().map(|m| m.payload.len() + 128).sum();
        if history.messages.len() > limits.queue_max_messages / 2
            || bytes > limits.queue_max_bytes / 2
        {
            return None;
        }
        Some(
            history
                .messages
                .iter()
                .map(|m| {
                    let position = StreamPosition {
                        offset: m.offset,
                        epoch: history.epoch.clone(),
                    };
                    protocol::message_frame_with(
                        channel,
                        &m.payload,
                        protocol::is_json(&m.payload),
                        Some(&position),
                        m.publisher.as_deref(),
                    )
                })
                .collect(),
        )
    }

    /// `history`: the latest messages of a channel, or those after an offset, for a client
    /// allowed to subscribe to it.
    async fn history(
        &mut self,
        id: Option<&RequestId>,
        channel: Channel,
        since: Option<u64>,
        limit: Option<usize>,
    ) {
        if let Err((code, message)) = self.may_subscribe(&channel) {
            self.error(id, code, &message);
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
                ErrorCode::BadRequest,
                &format!("channel {channel} keeps no history"),
            );
            return;
        }
        match self.node.hub.broker().history(&channel, query).await {
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
                    .map(|(_, m)| protocol::HistoryEntry::new(m))
                    .collect();
                self.reply(ServerFrame::History {
                    id,
                    channel: channel.as_str(),
                    offset: h.offset,
                    epoch: &h.epoch,
                    messages,
                });
            }
            Err(e) => self.error(id, ErrorCode::Unavailable, &e.to_string()),
        }
    }

    /// Whether this session may subscribe to a channel, and if not, the error to answer.
    fn may_subscribe(&self, channel: &Channel) -> Result<(), (ErrorCode, String)> {
        let ns = channel.namespace();
        if channel.as_str() == crate::channel::BROADCAST {
            return Ok(());
        }
        let Some(rules) = self.node.config.namespace(ns) else {
            return Err((
                ErrorCode::BadRequest,
                format!("unknown channel namespace {ns:?}"),
            ));
        };
        let Some(identity) = &self.identity else {
            return Err((ErrorCode::Unauthorized, "not authenticated".into()));
        };
        let own = Channel::user(&identity.user).is_ok_and(|c| &c == channel);
        if own || rules.public || identity.grants(channel) {
            Ok(())
        } else {
            Err((
                ErrorCode::Forbidden,
                format!("token does not grant channel {channel}"),
            ))
        }
    }

    async fn unsubscribe(&mut self, id: Option<&RequestId>, channel: Channel) {
        let reply = ServerFrame::Unsubscribed {
            id,
            channel: channel.as_str(),
            reason: None,
        }
        .encode();
        if !self.leave(&channel, reply.clone()).await {
            // Idempotent, like subscribe.
            let _ = self.outbox.push(reply);
        }
    }

    /// Ends a subscription: no message of the channel follows `notice`, and the connection
    /// leaves the channel's presence. False if it was not subscribed.
    async fn leave(&mut self, channel: &Channel, notice: Bytes) -> bool {
        if !self.subscriptions.remove(channel) {
            return false;
        }
        self.node
            .hub
            .unsubscribe(
                self.conn.id,
                &self.outbox,
                std::slice::from_ref(channel),
                Some(notice),
            )
            .await;
        self.leave_presence(channel).await;
        true
    }

    async fn refresh(&mut self, id: Option<&RequestId>, token: &str) {
        let identity = match self.node.verifier.verify(token) {
            Ok(i) => i,
            Err(e) => {
                self.error(id, ErrorCode::Unauthorized, e.0);
                return;
            }
        };
        let Some(current) = &self.identity else {
            return;
        };
        if identity.user != current.user {
            self.error(
                id,
                ErrorCode::Forbidden,
                "refresh token is for a different user",
            );
            return;
        }
        self.conn
            .set_expiry(identity.expires_at, self.node.config.jwt.leeway_s);
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
            }
            .encode();
            self.leave(&channel, notice).await;
        }
        self.reply(ServerFrame::Refreshed { id, expires_at });
    }

    fn reply(&self, frame: ServerFrame<'_>) {
        let _ = self.outbox.push(frame.encode());
    }

    fn error(&self, id: Option<&RequestId>, code: ErrorCode, message: &str) {
        self.node
            .metrics
            .inbound_errors
            .with_label_values(&[code.as_str()])
            .inc();
        self.reply(ServerFrame::Error { id, code, message });
    }

    /// Leaves every channel; called once the connection is over. (If a session is dropped
    /// without it, e.g. by a panic, `Drop` does the same in the background.)
    pub async fn finish(&mut self) {
        let channels: Vec<Channel> = std::mem::take(&mut self.subscriptions)
            .into_iter()
            .collect();
        if !channels.is_empty() {
            self.node
                .hub
                .unsubscribe(self.conn.id, &self.outbox, &channels, None)
                .await;
            for channel in &channels {
                self.leave_presence(channel).await;
            }
        }
    }

    /// This connection as a presence member.
    fn member(&self) -> Option<PresenceMember> {
        let identity = self.identity.as_ref()?;
        Some(PresenceMember {
            user: identity.user.clone(),
            conn_id: self.conn.public_id.clone(),
            node: self.node.config.node_id.clone(),
            info: identity.info.clone(),
            status: None,
        })
    }

    /// Enters the channel's presence, if its namespace keeps presence.
    async fn join_presence(&self, channel: &Channel) {
        let Some(rules) = self.node.config.namespace(channel.namespace()) else {
            return;
        };
        let Some(member) = self.member().filter(|_| rules.presence) else {
            return;
        };
        let lease = Lease {
            duration: self.node.config.presence_lease,
            renewed: true,
        };
        let broker = self.node.hub.broker();
        if let Err(e) = presence::join(&**broker, rules.join_leave, channel, &member, lease).await {
            tracing::warn!(conn = %self.conn.public_id, %channel, error = %e, "could not enter presence");
        }
    }

    async fn leave_presence(&self, channel: &Channel) {
        let Some(rules) = self.node.config.namespace(channel.namespace()) else {
            return;
        };
        if !rules.presence {
            return;
        }
        let broker = self.node.hub.broker();
        if let Err(e) =
            presence::leave(&**broker, rules.join_leave, channel, &self.conn.public_id).await
        {
            // Its lease expires by itself.
            tracing::warn!(conn = %self.conn.public_id, %channel, error = %e, "could not leave presence");
        }
    }

    /// `presence` / `presence_stats`.
    async fn presence(&mut self, id: Option<&RequestId>, channel: Channel, stats_only: bool) {
        if let Err((code, message)) = self.may_subscribe(&channel) {
            self.error(id, code, &message);
            return;
        }
        if !self
            .node
            .config
            .namespace(channel.namespace())
            .is_some_and(|n| n.presence)
        {
            self.error(
                id,
                ErrorCode::BadRequest,
                &format!(
                    "presence is not kept for namespace {:?}",
                    channel.namespace()
                ),
            );
            return;
        }
        let members = match self.node.hub.broker().presence(&channel).await {
            Ok(m) => m,
            Err(e) => {
                self.error(id, ErrorCode::Unavailable, &e.to_string());
                return;
            }
        };
        let (connections, users) = presence::stats(&members);
        if stats_only {
            self.reply(ServerFrame::PresenceStats {
                id,
                channel: channel.as_str(),
                connections,
                users,
            });
            return;
        }
        // One reply must fit the outbound queue: a very large presence is cut short here;
        // `presence_stats` gives the counts.
        let budget = self.node.config.limits.queue_max_bytes / 2;
        let mut used = 0;
        let total = members.len();
        let shown: Vec<PresenceMember> = members
            .into_iter()
            .take_while(|m| {
                used += 128
                    + m.info.as_ref().map_or(0, |i| i.to_string().len())
                    + m.status.as_ref().map_or(0, |s| s.to_string().len());
                used <= budget
            })
            .collect();
        self.reply(ServerFrame::Presence {
            id,
            channel: channel.as_str(),
            truncated: shown.len() < total,
            members: &shown,
        });
    }

    /// `status`: sets this connection's status in a channel's presence.
    async fn status(
        &mut self,
        id: Option<&RequestId>,
        channel: Channel,
        status: serde_json::Value,
    ) {
        const MAX_STATUS_BYTES: usize = 4096;
        if !self.subscriptions.contains(&channel) {
            self.error(
                id,
                ErrorCode::BadRequest,
                "subscribe to the channel before setting a status on it",
            );
            return;
        }
        if status.to_string().len() > MAX_STATUS_BYTES {
            self.error(
                id,
                ErrorCode::TooLarge,
                &format!("status is larger than {MAX_STATUS_BYTES} bytes"),
            );
            return;
        }
        if !self.publishes.take() {
            self.rate_limited(id);
            return;
        }
        // Reply first, then tell the channel: the client sees its answer before the event.
        let broker = self.node.hub.broker();
        match broker
            .presence_status(&channel, &self.conn.public_id, &status)
            .await
        {
            Ok(Some(member)) => {
                self.reply(ServerFrame::StatusUpdated {
                    id,
                    channel: channel.as_str(),
                });
                if let Err(e) = broker
                    .publish_event(&channel, presence::update_frame(&channel, &member))
                    .await
                {
                    tracing::warn!(conn = %self.conn.public_id, %channel, error = %e, "could not announce a status update");
                }
            }
            Ok(None) => self.error(
                id,
                ErrorCode::BadRequest,
                &format!(
                    "presence is not kept for namespace {:?}",
                    channel.namespace()
                ),
            ),
            Err(e) => self.error(id, ErrorCode::Unavailable, &e.to_string()),
        }
    }

    fn rate_limited(&self, id: Option<&RequestId>) {
        self.error(
            id,
            ErrorCode::RateLimited,
            &format!(
                "more than {} publish, send or status frames per second",
                self.node.config.limits.max_publishes_per_s
            ),
        );
    }

    /// Checks a client payload's size; answers `too_large` when it is over the limit.
    fn payload_fits(&self, id: Option<&RequestId>, data: &[u8]) -> bool {
        let max = self.node.config.limits.max_payload_bytes;
        if data.len() > max {
            self.error(
                id,
                ErrorCode::TooLarge,
                &format!("\"data\" is larger than {max} bytes"),
            );
            return false;
        }
        true
    }

    /// `publish`: a client publishes to a channel's subscribers, as its token's user.
    async fn publish(&mut self, id: Option<&RequestId>, channel: Channel, data: Bytes) {
        let Some(identity) = &self.identity else {
            return;
        };
        let namespace_allows = self
            .node
            .config
            .namespace(channel.namespace())
            .is_some_and(|n| n.publish)
            && self.may_subscribe(&channel).is_ok();
        if let Err(message) = self.node.check_namespace(&channel) {
            self.error(id, ErrorCode::BadRequest, &message);
            return;
        }
        if !(identity.may_publish(&channel) || namespace_allows) {
            self.error(
                id,
                ErrorCode::Forbidden,
                &format!("token does not grant publishing to {channel}"),
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
            .publish(&channel, data, Some(&user))
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
            Err(e) => self.error(id, ErrorCode::Unavailable, &e.to_string()),
        }
    }

    /// `send`: appends to the channel's durable inbox stream for the backend.
    async fn send(&mut self, id: Option<&RequestId>, channel: Channel, data: Bytes) {
        if let Err((code, message)) = self.may_subscribe(&channel) {
            self.error(id, code, &message);
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
            conn_id: self.conn.public_id.clone(),
            node: self.node.config.node_id.clone(),
            received_at_ms: unix_now_ms(),
            data,
        };
        match self.node.hub.broker().inbox_append(&stream, &entry).await {
            Ok(stream_id) => self.reply(ServerFrame::Sent {
                id,
                channel: channel.as_str(),
                stream_id: &stream_id,
            }),
            Err(BrokerError::Unavailable(message)) => {
                self.error(id, ErrorCode::Unavailable, &message)
            }
            Err(e) => self.error(id, ErrorCode::Internal, &e.to_string()),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.subscriptions.is_empty() {
            return;
        }
        // Only reached when `finish` did not run (a panic unwinding the reader): leave the
        // hub consistent anyway.
        let channels: Vec<Channel> = std::mem::take(&mut self.subscriptions)
            .into_iter()
            .collect();
        let (hub, conn, outbox) = (self.node.hub.clone(), self.conn.id, self.outbox.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { hub.unsubscribe(conn, &outbox, &channels, None).await });
        }
    }
}
