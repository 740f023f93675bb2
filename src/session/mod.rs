//! One client connection's protocol state: authentication, subscriptions, request handling.
//!
//! A transport (WebSocket, SSE) hands the session complete text messages; the session answers
//! through its [`Outbox`] with transport-neutral frames and asks the hub to (un)subscribe. It
//! never touches a socket and never names a transport, so the order of frames a client sees is
//! the order in which they were pushed, whatever carries them.
//!
//! The requests are split by family: `auth` (the `auth` frame, `refresh`,
//! expiry), `subscribe` (subscribe with recovery, unsubscribe, history),
//! `presence` (presence, status), `publish` (publish and
//! send); `access` decides what a token may do.

mod access;
mod auth;
mod control;
mod presence;
mod publish;
mod replay;
mod subscribe;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use tokio::time::Instant;

use self::control::Grant;
use self::replay::Replays;
use crate::auth::Identity;
use crate::channel::Channel;
use crate::clock::unix_now_ms;
use crate::hub::ConnKey;
use crate::limits::{FrameRate, FrameVerdict, NodeSlot, RateBudget, UserSlot};
use crate::node::{Node, SessionInbox};
use crate::outbox::{Ending, Outbox};
use crate::protocol::{
    ClientError, CloseCode, ErrorCode, Request, RequestId, ServerFrame, Since, parse_client_frame,
};

/// What the session and the writer share about a connection.
pub struct ConnState {
    /// Its key in this node's registries (see [`ConnKey`]).
    pub key: ConnKey,
    /// Its public id (`conn_id` on the wire and in logs); unique across nodes and restarts.
    pub conn_id: String,
    clock: Instant,
    last_seen_ms: AtomicU64,
    /// Token expiry in Unix milliseconds (leeway included); `i64::MAX` before authentication.
    expires_at_ms: AtomicI64,
}

impl ConnState {
    pub fn new(node: &Node) -> ConnState {
        ConnState {
            key: node.next_conn_key(),
            conn_id: format!("{:016x}", rand::random::<u64>()),
            clock: node.started,
            last_seen_ms: AtomicU64::new(node.started.elapsed().as_millis() as u64),
            expires_at_ms: AtomicI64::new(i64::MAX),
        }
    }

    /// A connection whose public id also names this node (`<random>.<node id>`), so that
    /// any node can route to it: SSE sessions, whose frames may arrive at another node.
    pub fn routable(node: &Node) -> ConnState {
        let mut conn = ConnState::new(node);
        conn.conn_id = format!("{}.{}", conn.conn_id, node.config.node_id);
        conn
    }

    /// The node a routable public id names (`None` for plain ids).
    pub fn node_of(conn_id: &str) -> Option<&str> {
        conn_id.split_once('.').map(|(_, node)| node)
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

    pub(crate) fn set_expiry(&self, exp_s: i64, leeway_s: u64) {
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
    /// Every channel subscribed, recovering ones included.
    subscriptions: BTreeSet<Channel>,
    /// The history replays under way, queued at the client's pace by a task of their own.
    replays: Replays,
    /// Where the node sends this session the backend's commands.
    inbox: Arc<SessionInbox>,
    /// Channels held by a channel token or because the backend subscribed the connection,
    /// beyond what the connection token grants.
    grants: std::collections::BTreeMap<Channel, Grant>,
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
        inbox: Arc<SessionInbox>,
        node_slot: NodeSlot,
    ) -> Session {
        Session {
            rate: FrameRate::new(node.config.limits.max_frames_per_s),
            publishes: RateBudget::new(node.config.limits.max_publishes_per_s),
            auth_deadline: Instant::now() + node.config.auth_timeout,
            replays: Replays::new(node.clone(), conn.clone(), outbox.clone()),
            node,
            conn,
            outbox,
            identity: None,
            subscriptions: BTreeSet::new(),
            inbox,
            grants: std::collections::BTreeMap::new(),
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
        // Listed under its user before anything else, so that the backend's commands from
        // now on reach it (a logout right after a login); a revocation published since
        // admission asked the broker is among those the node heard of lately.
        self.node.identify(self.conn.key, &identity.user);
        if self
            .node
            .revoked_lately(&identity.user, &identity.credential)
        {
            tracing::info!(conn = %self.conn.conn_id, user = %identity.user, "token revoked while the connection was admitted; closing it");
            self.outbox
                .end(Ending::close(CloseCode::Revoked, "token revoked"));
            return false;
        }
        let channels = [Channel::broadcast(), user_channel];
        let ack = ServerFrame::ConnectionAck {
            id,
            conn_id: &self.conn.conn_id,
            user: &identity.user,
            node: &self.node.config.node_id,
            heartbeat_s: self.node.config.heartbeat.as_secs(),
            channels: channels.iter().map(Channel::as_str).collect(),
            expires_at: identity.expires_at,
            expires_in: crate::protocol::expires_in(identity.expires_at),
        }
        .encode();
        if let Err(e) = self
            .node
            .hub
            .subscribe(self.conn.key, &self.outbox, &channels, Some(ack))
            .await
        {
            tracing::warn!(conn = %self.conn.conn_id, error = %e, "could not subscribe the session's own channels");
            self.outbox.end(Ending::close(
                CloseCode::TryAgainLater,
                "broker unavailable; reconnect later",
            ));
            return false;
        }
        self.conn
            .set_expiry(identity.expires_at, self.node.config.jwt.leeway_s);
        // The writer arms its expiry timer from this.
        self.outbox.wake_writer();
        tracing::info!(conn = %self.conn.conn_id, user = %identity.user, "session authenticated");
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
    pub(super) fn over_rate(&self, text: Option<&str>) -> Option<bool> {
        match self.rate.check() {
            FrameVerdict::Process => None,
            FrameVerdict::Reject => {
                let id = text
                    .and_then(|t| parse_client_frame(t).ok())
                    .and_then(|(id, _)| id);
                self.error(
                    id.as_ref(),
                    ClientError::new(
                        ErrorCode::RateLimited,
                        format!(
                            "more than {} frames per second; frame not processed",
                            self.node.config.limits.max_frames_per_s
                        ),
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
                self.error(
                    e.id.as_ref(),
                    ClientError::new(ErrorCode::BadRequest, e.message),
                );
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
                self.error(
                    id,
                    ClientError::new(ErrorCode::BadRequest, "already authenticated"),
                );
            }
            Request::Subscribe {
                channel,
                since,
                token,
            } => self.subscribe(id, channel, since, token).await,
            Request::History {
                channel,
                since,
                limit,
            } => self.history(id, channel, since, limit).await,
            Request::Unsubscribe { channel } => self.unsubscribe(id, channel).await,
            // Ahead of any backlog: a client checking the link gets its answer at once.
            Request::Ping => {
                let _ = self.outbox.push_ahead(ServerFrame::Pong { id }.encode());
            }
            Request::Presence { channel } => self.presence(id, channel, false).await,
            Request::PresenceStats { channel } => self.presence(id, channel, true).await,
            Request::Status { channel, status } => self.status(id, channel, status).await,
            Request::Publish { channel, data } => self.publish(id, channel, data).await,
            Request::Send { channel, data } => self.send(id, channel, data).await,
            Request::Refresh { token } => self.refresh(id, &token).await,
        }
        true
    }

    /// Subscribes a channel the transport was asked for when the session opened (SSE's
    /// `channel=` and `Last-Event-ID`): answered like a `subscribe` frame without an id, but
    /// not counted against the frame rate.
    pub async fn subscribe_at_start(&mut self, channel: Channel, since: Option<Since>) {
        self.subscribe(None, channel, since, None).await;
    }

    /// The user this session is authenticated as.
    pub fn user(&self) -> Option<&str> {
        self.identity.as_ref().map(|i| i.user.as_str())
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
            ClientError::new(
                ErrorCode::BadRequest,
                "binary frames are not supported; send JSON text frames",
            ),
        );
        true
    }

    pub(super) fn reply(&self, frame: ServerFrame<'_>) {
        let _ = self.outbox.push(frame.encode());
    }

    pub(super) fn error(&self, id: Option<&RequestId>, error: ClientError) {
        self.node
            .metrics
            .inbound_errors
            .with_label_values(&[error.code.as_str()])
            .inc();
        self.reply(ServerFrame::Error {
            id,
            code: error.code,
            message: &error.message,
        });
    }

    /// Leaves every channel; called once the connection is over. (If a session is dropped
    /// without it, e.g. by a panic, `Drop` does the same in the background.)
    pub async fn finish(&mut self) {
        self.replays.cancel_all();
        let channels: Vec<Channel> = std::mem::take(&mut self.subscriptions)
            .into_iter()
            .collect();
        if !channels.is_empty() {
            self.node
                .hub
                .unsubscribe(self.conn.key, &self.outbox, &channels, None)
                .await;
            for channel in &channels {
                self.leave_presence(channel).await;
            }
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
        self.replays.cancel_all();
        let channels: Vec<Channel> = std::mem::take(&mut self.subscriptions)
            .into_iter()
            .collect();
        let (hub, conn, outbox) = (self.node.hub.clone(), self.conn.key, self.outbox.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { hub.unsubscribe(conn, &outbox, &channels, None).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use serde_json::{Value, json};

    use super::*;
    use crate::config::SettingsArgs;
    use crate::outbox::Outgoing;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    /// The tests' session listings, kept until the test process ends.
    static LISTED: std::sync::Mutex<Vec<crate::node::SessionEntry>> =
        std::sync::Mutex::new(Vec::new());

    /// A node on the in-process broker, and an authenticated session of `user` on it.
    async fn session(user: &str) -> (Arc<Node>, Session) {
        let config =
            SettingsArgs::from_pairs([("jwt_secret", SECRET), ("queue_max_messages", "8")])
                .resolve()
                .unwrap();
        let node = Node::new(config).unwrap();
        let claims = json!({"sub": user, "exp": unix_now_ms() / 1000 + 3600, "channels": ["dag:*", "room:*"]});
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        let identity = node.verifier.verify(&token).unwrap();
        let node_slot = node.admission.admit().unwrap();
        let user_slot = node.admission.admit_user(user).unwrap();
        let conn = Arc::new(ConnState::new(&node));
        let outbox = Arc::new(Outbox::new(8, 1 << 20));
        // Listed for as long as the node lives, as a transport's connection would be.
        let listed = node.register_session(conn.key, &conn.conn_id, &outbox);
        let inbox = listed.inbox().clone();
        LISTED.lock().unwrap().push(listed);
        let mut session = Session::new(node.clone(), conn, outbox, inbox, node_slot);
        assert!(session.start(identity, user_slot, None).await);
        (node, session)
    }

    /// Reads what the session queued, as the client would: `n` frames, taking them as room
    /// frees up (a replay is queued at the client's pace).
    async fn read(session: &Session, n: usize) -> Vec<Value> {
        let mut got = Vec::new();
        while got.len() < n {
            let mut out = Vec::new();
            drop(session.outbox().take_batch(&mut out, 1));
            match out.pop() {
                Some(Outgoing::Frame(f)) => got.push(serde_json::from_slice(f.json()).unwrap()),
                Some(Outgoing::Wire(_)) => panic!("no wire bytes expected"),
                None => {
                    tokio::time::timeout(Duration::from_secs(5), session.outbox().wait())
                        .await
                        .expect("more frames in time");
                }
            }
        }
        got
    }

    #[tokio::test]
    async fn the_ack_comes_first_then_a_recovery_replays_what_was_missed_then_live() {
        let (node, mut session) = session("ada").await;
        assert_eq!(read(&session, 1).await[0]["type"], "connection_ack");
        let dag = Channel::parse("dag:7").unwrap();
        for n in 1..=20 {
            node.publish(&dag, Bytes::from(n.to_string()), "test")
                .await
                .unwrap();
        }
        let since = node
            .broker()
            .history(&dag, crate::broker::HistoryQuery::Latest { limit: 0 })
            .await
            .unwrap();
        let frame = format!(
            r#"{{"type":"subscribe","channel":"dag:7","since":{{"offset":5,"epoch":"{}"}}}}"#,
            since.epoch
        );
        assert!(session.on_text(&frame).await);
        // 15 frames of replay through a queue of 8: queued as they are read.
        let got = read(&session, 16).await;
        assert_eq!(got[0]["type"], "subscribed");
        assert_eq!(got[0]["recovered"], true);
        let offsets: Vec<u64> = got[1..]
            .iter()
            .map(|m| m["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(offsets, (6..=20).collect::<Vec<_>>());
        node.publish(&dag, Bytes::from_static(b"21"), "test")
            .await
            .unwrap();
        assert_eq!(read(&session, 1).await[0]["offset"], 21);
        session.finish().await;
    }

    #[tokio::test]
    async fn nothing_of_a_replay_follows_an_unsubscribe_sent_during_it() {
        let (node, mut session) = session("ada").await;
        read(&session, 1).await;
        let dag = Channel::parse("dag:8").unwrap();
        for n in 1..=30 {
            node.publish(&dag, Bytes::from(n.to_string()), "test")
                .await
                .unwrap();
        }
        let epoch = node
            .broker()
            .history(&dag, crate::broker::HistoryQuery::Latest { limit: 0 })
            .await
            .unwrap()
            .epoch;
        let subscribe = format!(
            r#"{{"type":"subscribe","channel":"dag:8","since":{{"offset":0,"epoch":"{epoch}"}}}}"#
        );
        assert!(session.on_text(&subscribe).await);
        // The client reads a few, then leaves the channel while the replay is under way.
        let first = read(&session, 3).await;
        assert_eq!(first[0]["type"], "subscribed");
        assert!(
            session
                .on_text(r#"{"type":"unsubscribe","channel":"dag:8"}"#)
                .await
        );
        let mut rest = Vec::new();
        loop {
            let frame = read(&session, 1).await.remove(0);
            let last = frame["type"] == "unsubscribed";
            rest.push(frame);
            if last {
                break;
            }
        }
        node.publish(&dag, Bytes::from_static(b"31"), "test")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut after = Vec::new();
        drop(session.outbox().take_batch(&mut after, 64));
        assert!(after.is_empty(), "nothing after `unsubscribed`: {after:?}");
        assert!(rest.len() < 30, "the replay stopped");
    }
}
