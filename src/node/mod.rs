//! The node: what one gateway process shares between its connections and endpoints.
//!
//! A [`Node`] holds the validated configuration, the token verifier, the hub (and through it
//! the broker), presence, the backchannel, metrics and admission limits, the list of live
//! sessions that a drain closes, and the directory of SSE sessions (`inbound`). Transports
//! and HTTP handlers get an `Arc<Node>`; they publish through [`Node::publish`] (one path,
//! one metric) and reach the broker through [`Node::broker`].
//!
//! Building one starts the brokers first (fallibly: a configuration they cannot use is an
//! error), then the hub on top, then plugs the hub into the brokers' delivery (`inlet`).

mod control;
mod inbound;
mod inlet;
mod sessions;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

pub use self::inbound::{InboundSession, InboundSessions};
pub use self::inlet::Inlet;
use self::sessions::Listed;
pub use self::sessions::{SessionCommand, SessionInbox};
use crate::auth::Verifier;
use crate::broker::{
    self, Backchannel, Broker, BrokerError, BrokerOptions, Brokers, ChannelRules, Control,
    Presence, StartError, SurveyReply,
};
use crate::channel::Channel;
use crate::config::Config;
use crate::hub::{ConnKey, Hub};
use crate::limits::Admission;
use crate::metrics::Metrics;
use crate::outbox::{Ending, Outbox};
use crate::protocol::{ClientError, CloseCode};

/// Everything one gateway node shares between its connections and endpoints.
pub struct Node {
    pub config: Config,
    pub verifier: Verifier,
    pub hub: Arc<Hub>,
    /// Who is on each channel, with joins and leaves announced.
    pub presence: Presence,
    /// The inbox and the relay to other nodes.
    pub backchannel: Arc<dyn Backchannel>,
    /// This node's SSE sessions, for the frames POSTed for them.
    pub inbound: Arc<InboundSessions>,
    /// The backend's control of sessions, cluster-wide.
    pub control: Arc<dyn Control>,
    pub metrics: Arc<Metrics>,
    pub admission: Arc<Admission>,
    /// Origin of the node's monotonic clock (connection liveness is measured against it).
    pub started: Instant,
    /// Session tasks, awaited during drain.
    pub tasks: TaskTracker,
    /// Every session of this node, to drain and to control.
    sessions: DashMap<ConnKey, Listed>,
    /// Surveys this node sent, waiting for the other nodes' replies.
    surveys: DashMap<String, tokio::sync::mpsc::UnboundedSender<SurveyReply>>,
    /// Revocations heard lately, for sessions admitted meanwhile.
    recent_revocations: control::RecentRevocations,
    draining: AtomicBool,
    next_conn: AtomicU64,
}

impl Node {
    /// A node on the brokers its configuration names: Redis when `redis_url` is set, Redis
    /// Cluster when `redis_cluster_url` is, otherwise the in-process broker. Must be called
    /// within a Tokio runtime.
    pub fn new(config: Config) -> Result<Arc<Node>, StartError> {
        let metrics = Arc::new(Metrics::new());
        let inlet = Arc::new(Inlet::default());
        let brokers = broker::start(
            &BrokerOptions::from_config(&config),
            inlet.clone(),
            &metrics,
        )?;
        let node = Node::with_brokers(config, metrics, brokers, &inlet);
        tokio::spawn(control::heartbeat_loop(Arc::downgrade(&node)));
        Ok(node)
    }

    /// A node on brokers of the caller's choosing, which deliver into `inlet`.
    pub fn with_brokers(
        config: Config,
        metrics: Arc<Metrics>,
        brokers: Brokers,
        inlet: &Inlet,
    ) -> Arc<Node> {
        let hub = Hub::new(
            metrics.clone(),
            config.limits.queue_max_messages,
            brokers.broker.clone(),
        );
        let presence = Presence::new(
            brokers.presence,
            brokers.broker,
            ChannelRules::from_config(&config),
        );
        let node = Arc::new(Node {
            verifier: Verifier::new(&config.jwt),
            hub,
            presence,
            backchannel: brokers.backchannel,
            inbound: Arc::new(InboundSessions::default()),
            control: brokers.control,
            surveys: DashMap::new(),
            recent_revocations: Default::default(),
            admission: Admission::new(&config.limits),
            metrics,
            config,
            started: Instant::now(),
            tasks: TaskTracker::new(),
            sessions: DashMap::new(),
            draining: AtomicBool::new(false),
            next_conn: AtomicU64::new(1),
        });
        inlet.connect(&node);
        node
    }

    /// Publishes a payload to a channel on every node; returns its offset when the channel
    /// keeps history. `source` labels the metric.
    pub async fn publish(
        &self,
        channel: &Channel,
        payload: Bytes,
        source: &'static str,
    ) -> Result<Option<u64>, BrokerError> {
        self.publish_once(channel, payload, source, None).await
    }

    /// [`Node::publish`] with an idempotency key: a publish repeated with the same key within
    /// the idempotency window publishes nothing and returns the first one's offset.
    pub async fn publish_once(
        &self,
        channel: &Channel,
        payload: Bytes,
        source: &'static str,
        idempotency_key: Option<&str>,
    ) -> Result<Option<u64>, BrokerError> {
        let offset = self
            .broker()
            .publish(channel, payload, None, idempotency_key)
            .await?;
        self.metrics
            .messages_published
            .with_label_values(&[source])
            .inc();
        Ok(offset)
    }

    /// Publishes a payload to several channels, all or nothing.
    pub async fn publish_many(
        &self,
        channels: &[Channel],
        payload: Bytes,
        source: &'static str,
    ) -> Result<(), BrokerError> {
        self.broker().publish_many(channels, payload).await?;
        self.metrics
            .messages_published
            .with_label_values(&[source])
            .inc_by(channels.len() as u64);
        Ok(())
    }

    /// The Redis stream a channel's `send` frames go to.
    pub fn inbox_stream(&self, channel: &Channel) -> String {
        self.config
            .namespace(channel.namespace())
            .and_then(|n| n.inbox.clone())
            .unwrap_or_else(|| {
                let prefix = self.config.redis.as_ref().map_or("fanout:", |r| &r.prefix);
                format!("{prefix}inbox")
            })
    }

    /// Checks that a channel's namespace is configured.
    pub fn check_namespace(&self, channel: &Channel) -> Result<(), ClientError> {
        let ns = channel.namespace();
        if self.config.namespace(ns).is_some() {
            Ok(())
        } else {
            Err(ClientError::bad_request(format!(
                "unknown channel namespace {ns:?}"
            )))
        }
    }

    /// The broker this node publishes through and subscribes on.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        self.hub.broker()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks the node as shutting down: `/readyz` answers 503 and new sessions are refused.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn next_conn_key(&self) -> ConnKey {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Lists a session (for drain, and for the backend's control commands) until the
    /// returned guard is dropped.
    pub fn register_session(
        self: &Arc<Node>,
        key: ConnKey,
        conn_id: &str,
        outbox: &Arc<Outbox>,
    ) -> SessionEntry {
        let inbox = Arc::new(SessionInbox::default());
        self.sessions.insert(
            key,
            Listed {
                outbox: outbox.clone(),
                conn_id: conn_id.to_owned(),
                user: std::sync::OnceLock::new(),
                inbox: inbox.clone(),
            },
        );
        SessionEntry {
            node: self.clone(),
            key,
            inbox,
        }
    }

    /// Records who a listed session's user is, once authenticated (the control commands find
    /// sessions by user).
    pub fn identify(&self, key: ConnKey, user: &str) {
        if let Some(listed) = self.sessions.get(&key) {
            let _ = listed.user.set(user.to_owned());
        }
    }

    /// Lists a session that takes its client frames by HTTP request (SSE) until the returned
    /// guard is dropped.
    pub fn attach_inbound(&self, conn_id: &str, session: InboundSession) -> InboundEntry<'_> {
        self.inbound.attach(conn_id, session);
        InboundEntry {
            node: self,
            conn_id: conn_id.to_owned(),
        }
    }

    /// Closes every session with 1012, spread evenly over the drain window, then waits for
    /// the session tasks to finish (bounded).
    pub async fn drain(&self) {
        let outboxes: Vec<Arc<Outbox>> = self
            .sessions
            .iter()
            .map(|e| e.value().outbox.clone())
            .collect();
        let window = self.config.drain;
        tracing::info!(
            connections = outboxes.len(),
            window_s = window.as_secs(),
            "draining connections"
        );
        let start = Instant::now();
        let n = outboxes.len().max(1) as u32;
        for (i, outbox) in outboxes.iter().enumerate() {
            tokio::time::sleep_until(start + window * (i as u32) / n).await;
            outbox.end(restart_ending());
        }
        // Sessions that were mid-upgrade when the drain began.
        for entry in self.sessions.iter() {
            entry.value().outbox.end(restart_ending());
        }
        self.tasks.close();
        let grace = Duration::from_secs(5);
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.tasks.len(),
                "some sessions did not finish within the drain grace period"
            );
        }
    }
}

fn restart_ending() -> Ending {
    Ending::close(
        CloseCode::ServiceRestart,
        "node shutting down; reconnect to another",
    )
}

/// Keeps an [`InboundSession`] listed while alive.
pub struct InboundEntry<'a> {
    node: &'a Node,
    conn_id: String,
}

impl Drop for InboundEntry<'_> {
    fn drop(&mut self) {
        self.node.inbound.detach(&self.conn_id);
    }
}

/// Keeps a session listed for drain while alive.
pub struct SessionEntry {
    node: Arc<Node>,
    key: ConnKey,
    inbox: Arc<SessionInbox>,
}

impl SessionEntry {
    /// Where the node sends the session its commands.
    pub fn inbox(&self) -> &Arc<SessionInbox> {
        &self.inbox
    }
}

impl Drop for SessionEntry {
    fn drop(&mut self) {
        self.node.sessions.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::broker::{ControlCommand, ControlMessage};
    use crate::config::SettingsArgs;
    use crate::outbox::Outgoing;

    /// A node on the in-process broker.
    fn node(extra: &[(&str, &str)]) -> Arc<Node> {
        let mut pairs = vec![("jwt_secret", "0123456789abcdef0123456789abcdef")];
        pairs.extend_from_slice(extra);
        Node::new(SettingsArgs::from_pairs(pairs).resolve().unwrap()).unwrap()
    }

    fn taken(outbox: &Outbox) -> Vec<Outgoing> {
        let mut out = Vec::new();
        drop(outbox.take_batch(&mut out, usize::MAX));
        out
    }

    #[tokio::test]
    async fn a_publish_reaches_the_nodes_subscribers_through_its_broker_and_is_counted() {
        let node = node(&[]);
        let lobby = Channel::parse("room:lobby").unwrap();
        let outbox = Arc::new(Outbox::new(16, 1 << 20));
        node.hub
            .subscribe(
                node.next_conn_key(),
                &outbox,
                std::slice::from_ref(&lobby),
                None,
            )
            .await
            .unwrap();
        let offset = node
            .publish(&lobby, Bytes::from_static(b"{\"hi\":1}"), "http")
            .await
            .unwrap();
        assert_eq!(offset, None, "room: keeps no history");
        assert_eq!(taken(&outbox).len(), 1);
        assert_eq!(
            node.metrics
                .messages_published
                .with_label_values(&["http"])
                .get(),
            1
        );
        assert_eq!(node.broker().kind(), "memory");
    }

    #[tokio::test]
    async fn frames_relayed_from_another_node_reach_the_users_own_sse_session_only() {
        let node = node(&[]);
        let inlet = Inlet::default();
        // A second inlet plugged into the same node, as the brokers' is.
        inlet.connect(&node);
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let listed = node.attach_inbound(
            "abc.n1",
            InboundSession {
                user: "ada".into(),
                frames: tx,
            },
        );
        let relay = |user: &str| crate::broker::RelayedFrames {
            user: user.into(),
            conn_id: "abc.n1".into(),
            frames: vec![format!("{{\"from\":\"{user}\"}}")],
        };
        crate::broker::Deliver::relayed(&inlet, relay("mallory"));
        crate::broker::Deliver::relayed(&inlet, relay("ada"));
        assert_eq!(rx.recv().await.unwrap(), "{\"from\":\"ada\"}");
        assert!(rx.try_recv().is_err(), "another user's frames were dropped");
        drop(listed);
        assert!(node.inbound.get("abc.n1").is_none());
    }

    #[tokio::test]
    async fn a_drain_closes_every_listed_session_with_service_restart() {
        let node = node(&[("drain_s", "1")]);
        let (a, b) = (
            Arc::new(Outbox::new(16, 1 << 20)),
            Arc::new(Outbox::new(16, 1 << 20)),
        );
        let _a = node.register_session(node.next_conn_key(), "a", &a);
        let _b = node.register_session(node.next_conn_key(), "b", &b);
        node.start_draining();
        assert!(node.is_draining());
        node.drain().await;
        for outbox in [&a, &b] {
            let mut out = Vec::new();
            let ending = outbox.take_batch(&mut out, 16).ending.unwrap();
            assert_eq!(ending.label(), "service_restart");
        }
    }

    #[tokio::test]
    async fn a_revocation_heard_before_a_session_is_listed_is_remembered_for_it() {
        let node = node(&[]);
        let credential = |issued_at: i64, jti: Option<&str>| crate::auth::Credential {
            issued_at,
            jti: jti.map(str::to_owned),
        };
        node.on_control(ControlMessage::Command(ControlCommand::RevokeUser {
            user: "ada".into(),
            before: 1_000,
        }));
        node.on_control(ControlMessage::Command(ControlCommand::RevokeToken {
            jti: "stolen".into(),
            expires_at: i64::MAX,
        }));
        assert!(node.revoked_lately("ada", &credential(999, None)));
        assert!(
            !node.revoked_lately("ada", &credential(1_000, None)),
            "issued at the cut-off"
        );
        assert!(
            !node.revoked_lately("bob", &credential(999, None)),
            "another user"
        );
        assert!(node.revoked_lately("bob", &credential(5_000, Some("stolen"))));
        assert!(!node.revoked_lately("bob", &credential(5_000, Some("other"))));
    }

    #[tokio::test]
    async fn inbox_streams_follow_the_namespace_or_the_prefix() {
        let node = node(&[]);
        let room = Channel::parse("room:x").unwrap();
        assert_eq!(node.inbox_stream(&room), "fanout:inbox");
        assert!(node.check_namespace(&room).is_ok());
        assert!(
            node.check_namespace(&Channel::parse("nope:x").unwrap())
                .is_err()
        );
    }
}
