//! The Redis broker: many stateless nodes, one Redis, and publishing with a plain `PUBLISH`.
//!
//! - **Interest routing.** The hub asks for a channel when its first local subscriber
//!   arrives; the broker SUBSCRIBEs `<prefix><channel>` on one of a few pub/sub connections
//!   (chosen by channel hash) and UNSUBSCRIBEs when the last one leaves. A node receives only
//!   the traffic of channels it has subscribers for.
//! - **The read path never blocks** ([`dispatch`]): bounded, per-channel-ordered queues
//!   between Redis and the fan-out; overflow is dropped and counted.
//! - **Outages** ([`subscriber`]): connections reconnect with backoff and resubscribe every
//!   channel they held; subscribing new channels meanwhile fails fast with `unavailable`.
//! - **Silent death**: a probe publishes to each connection's own probe channel every few
//!   seconds and rebuilds a connection whose probe does not come back.
//!
//! A plain publisher's payload is exactly what subscribers receive as `data` (see
//! `docs/publishing.md`). What the nodes themselves publish (client messages with their user,
//! presence events, messages with history) carries an [`envelope`] and travels on a Redis
//! channel of its own that plain publishers cannot reach, so nobody can forge one.

mod calls;
mod cluster;
mod command;
mod dispatch;
mod envelope;
mod library;
mod metrics;
mod presence;
mod relay;
mod subscriber;

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use self::calls::LibraryCalls;
pub use self::cluster::RedisClusterBroker;
use self::command::{Query, publish_raw};
use self::dispatch::{Dispatch, Work};
use self::metrics::RedisMetrics;
use self::presence::{PresenceLeases, lease_loop};
use self::subscriber::{COMMAND_TIMEOUT, Shared, Subscriber};
use super::{
    Broker, BrokerError, ChannelRules, Deliver, Departure, History, HistoryQuery, InboxEntry,
    Joined, Lease, PresenceMember, RelayedFrames,
};
use crate::channel::Channel;
use crate::config::RedisConfig;

/// How long a probe may take to come back before its connection is rebuilt.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub struct RedisBroker {
    prefix: String,
    pool: deadpool_redis::Pool,
    rules: ChannelRules,
    shared: Arc<Shared>,
    presence: Arc<PresenceLeases>,
    subscribers: Arc<[Subscriber]>,
    /// False after a failed command (publish or probe), true after a successful one.
    commands_ok: Arc<AtomicBool>,
    metrics: Arc<RedisMetrics>,
    cancel: CancellationToken,
}

impl RedisBroker {
    /// Starts the broker's connections and tasks. Connecting happens in the background: the
    /// broker is not ready until its pub/sub connections are up.
    pub fn start(
        config: &RedisConfig,
        node_id: &str,
        max_payload: usize,
        presence_lease: Duration,
        rules: ChannelRules,
        sink: Arc<dyn Deliver>,
        registry: &crate::metrics::Metrics,
    ) -> Result<Arc<RedisBroker>, String> {
        install_tls_provider(config);
        // One client, with TLS set up for rediss://, for every connection: the command pool
        // (commands, the function library, presence, history), pub/sub and the relay.
        let client = config
            .client()
            .map_err(|e| format!("invalid redis_url ({:?})", e.kind()))?;
        let mut pool_config = deadpool_redis::PoolConfig::new(config.pool_size);
        pool_config.timeouts = deadpool_redis::Timeouts {
            wait: Some(COMMAND_TIMEOUT),
            create: Some(COMMAND_TIMEOUT),
            recycle: Some(COMMAND_TIMEOUT),
        };
        // The pool's manager takes the client's connection info, TLS parameters included
        // (`deadpool_redis::Config` would rebuild it from the URL and lose the certificates).
        let manager = deadpool_redis::Manager::new(client.get_connection_info().clone())
            .map_err(|e| format!("invalid redis_url ({:?})", e.kind()))?;
        let pool = deadpool_redis::Pool::builder(manager)
            .config(pool_config)
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .map_err(|e| format!("cannot create the Redis pool: {e}"))?;

        let metrics = Arc::new(RedisMetrics::new(registry));
        let relay_sink = sink.clone();
        let cancel = CancellationToken::new();
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let shared = Arc::new(Shared {
            prefix: config.prefix.clone(),
            max_payload,
            library: library::source(&config.prefix, &rules, max_payload),
            rules: rules.clone(),
            pool: pool.clone(),
            dispatch: Dispatch::start(
                workers,
                config.dispatch_buffer,
                sink.clone(),
                Arc::new(pool.clone()),
                rules.clone(),
                metrics.clone(),
                cancel.clone(),
            ),
            metrics: metrics.clone(),
            cancel: cancel.clone(),
        });
        // Unique per process, so restarted or same-named nodes never see each other's probes.
        let incarnation: u32 = rand::random();
        let subscribers: Arc<[Subscriber]> = (0..config.pubsub_connections)
            .map(|i| {
                let probe = envelope::internal_channel(
                    &config.prefix,
                    &format!("probe:{node_id}:{incarnation:08x}:{i}"),
                );
                Subscriber::start(i, client.clone(), probe, shared.clone())
            })
            .collect();
        let presence = Arc::new(PresenceLeases::new(presence_lease));
        let broker = Arc::new(RedisBroker {
            prefix: config.prefix.clone(),
            pool,
            rules,
            shared,
            presence,
            subscribers,
            commands_ok: Arc::new(AtomicBool::new(true)),
            metrics,
            cancel,
        });
        tokio::spawn(probe_loop(
            broker.pool.clone(),
            broker.subscribers.clone(),
            config.probe_interval,
            broker.metrics.clone(),
            broker.commands_ok.clone(),
            broker.cancel.clone(),
        ));
        tokio::spawn(lease_loop(Arc::downgrade(&broker), broker.cancel.clone()));
        tokio::spawn(relay::run(
            client.clone(),
            relay::channel(&config.prefix, node_id),
            relay_sink,
            broker.cancel.clone(),
        ));
        tracing::info!(
            redis = %config.display_addr(),
            transport = %config.describe_transport(),
            prefix = %config.prefix,
            pubsub_connections = config.pubsub_connections,
            "redis broker started"
        );
        Ok(broker)
    }

    /// The channels grouped by the pub/sub connection that holds them.
    fn by_connection(&self, channels: &[Channel]) -> Vec<(usize, Vec<Channel>)> {
        let n = self.subscribers.len();
        let mut groups: Vec<Vec<Channel>> = vec![Vec::new(); n];
        for c in channels {
            let i = BuildHasherDefault::<DefaultHasher>::default().hash_one(c) as usize % n;
            groups[i].push(c.clone());
        }
        groups
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .collect()
    }
}

#[async_trait]
impl LibraryCalls for RedisBroker {
    async fn call<T: ::redis::FromRedisValue + Send>(
        &self,
        command: &::redis::Cmd,
        what: &str,
    ) -> Result<T, BrokerError> {
        self.run(Query::Cmd(command), what).await
    }

    fn rules(&self) -> &ChannelRules {
        &self.rules
    }

    fn leases(&self) -> &PresenceLeases {
        &self.presence
    }

    fn dispatch(&self) -> &Dispatch {
        &self.shared.dispatch
    }

    fn metrics(&self) -> &RedisMetrics {
        &self.metrics
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn subscribe(&self, channels: &[Channel]) -> Result<(), BrokerError> {
        self.presence
            .watch(channels.iter().filter(|c| self.rules.presence(c)));
        let groups = self.by_connection(channels);
        let results = futures_util::future::join_all(
            groups
                .iter()
                .map(|(i, names)| self.subscribers[*i].subscribe(names.clone())),
        )
        .await;
        if let Some(err) = results.iter().find_map(|r| r.as_ref().err()).cloned() {
            // All or nothing: release what did succeed, so no subscription is left behind
            // that the hub does not know of.
            let undo = groups
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.is_ok())
                .map(|((i, names), _)| self.subscribers[*i].unsubscribe(names.clone()));
            futures_util::future::join_all(undo).await;
            return Err(err);
        }
        Ok(())
    }

    async fn unsubscribe(&self, channels: &[Channel]) -> Result<(), BrokerError> {
        self.presence.unwatch(channels);
        for channel in channels {
            if self.rules.history(channel).is_some() {
                self.shared
                    .dispatch
                    .control(Work::Forget(channel.clone()))
                    .await;
            }
        }
        let groups = self.by_connection(channels);
        let results = futures_util::future::join_all(
            groups
                .into_iter()
                .map(|(i, names)| self.subscribers[i].unsubscribe(names)),
        )
        .await;
        results.into_iter().collect()
    }

    async fn publish(
        &self,
        channel: &Channel,
        payload: Bytes,
        publisher: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<Option<u64>, BrokerError> {
        if self.rules.history(channel).is_none() && idempotency_key.is_none() {
            let (name, body) = match publisher {
                Some(user) => (
                    envelope::envelope_channel(&self.prefix, channel),
                    Bytes::from(envelope::message_envelope(user, &payload)),
                ),
                None => (envelope::public_channel(&self.prefix, channel), payload),
            };
            let command = {
                let mut c = ::redis::cmd("PUBLISH");
                c.arg(&name).arg(&body[..]);
                c
            };
            self.run_publish::<i64>(Query::Cmd(&command), "PUBLISH")
                .await?;
            return Ok(None);
        }
        let command = {
            let mut c = ::redis::cmd("FCALL");
            c.arg("fanout_publish")
                .arg(1)
                .arg(channel.as_str())
                .arg(&payload[..])
                .arg(publisher.unwrap_or(""));
            if let Some(key) = idempotency_key {
                c.arg(key);
            }
            c
        };
        let offset = self
            .run_publish::<u64>(Query::Cmd(&command), "FCALL fanout_publish")
            .await?;
        // The library answers 0 for channels without history.
        Ok(self.rules.history(channel).map(|_| offset))
    }

    async fn publish_many(&self, channels: &[Channel], payload: Bytes) -> Result<(), BrokerError> {
        // MULTI/EXEC: Redis runs every publish or none.
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        for channel in channels {
            if self.rules.history(channel).is_some() {
                pipe.cmd("FCALL")
                    .arg("fanout_publish")
                    .arg(1)
                    .arg(channel.as_str())
                    .arg(&payload[..])
                    .ignore();
            } else {
                pipe.cmd("PUBLISH")
                    .arg(envelope::public_channel(&self.prefix, channel))
                    .arg(&payload[..])
                    .ignore();
            }
        }
        self.run_publish::<()>(Query::Pipe(&pipe), "MULTI/publish")
            .await
    }

    async fn history(
        &self,
        channel: &Channel,
        query: HistoryQuery,
    ) -> Result<History, BrokerError> {
        self.read_history(channel, query).await
    }

    async fn publish_event(&self, channel: &Channel, frame: Bytes) -> Result<(), BrokerError> {
        let name = envelope::envelope_channel(&self.prefix, channel);
        let body = envelope::event_envelope(&frame);
        let command = {
            let mut c = ::redis::cmd("PUBLISH");
            c.arg(&name).arg(&body[..]);
            c
        };
        self.run::<i64>(Query::Cmd(&command), "PUBLISH")
            .await
            .map(|_| ())
    }

    async fn presence_join(
        &self,
        channel: &Channel,
        member: &PresenceMember,
        lease: Lease,
    ) -> Result<Joined, BrokerError> {
        self.join_presence(channel, member, lease).await
    }

    async fn presence_leave(
        &self,
        channel: &Channel,
        conn_id: &str,
    ) -> Result<Option<Departure>, BrokerError> {
        self.leave_presence(channel, conn_id).await
    }

    async fn presence_status(
        &self,
        channel: &Channel,
        conn_id: &str,
        status: &serde_json::Value,
    ) -> Result<Option<PresenceMember>, BrokerError> {
        self.set_presence_status(channel, conn_id, status).await
    }

    async fn presence(&self, channel: &Channel) -> Result<Vec<PresenceMember>, BrokerError> {
        self.presence_members(channel).await
    }

    async fn inbox_append(&self, stream: &str, entry: &InboxEntry) -> Result<String, BrokerError> {
        self.append_to_inbox(stream, entry).await
    }

    async fn relay(&self, node: &str, frames: &RelayedFrames) -> Result<bool, BrokerError> {
        let command = {
            let mut c = ::redis::cmd("PUBLISH");
            c.arg(relay::channel(&self.prefix, node))
                .arg(frames.encode());
            c
        };
        let receivers: i64 = self.run(Query::Cmd(&command), "PUBLISH").await?;
        Ok(receivers > 0)
    }

    fn is_ready(&self) -> bool {
        self.commands_ok.load(Ordering::Acquire) && self.subscribers.iter().all(Subscriber::is_up)
    }
}

/// Turns one pub/sub message (Redis channel name and payload) into a publication: strips the
/// prefix, validates the channel, opens a fanout envelope, checks the size. The per-message
/// work of the Redis read path; `Err` names why a message is dropped (a metric label).
pub fn decode_message(
    prefix: &str,
    redis_channel: &str,
    raw: &[u8],
    max_payload: usize,
) -> Result<super::Publication, &'static str> {
    use super::Publication;
    use envelope::Envelope;
    let (channel, enveloped) = envelope::channel_of(prefix, redis_channel).ok_or("bad_channel")?;
    let publication = match (enveloped, envelope::open_envelope(raw)) {
        (false, None) => Publication::new(channel, Bytes::copy_from_slice(raw)),
        // Only the node and its library write envelopes, and never on a public channel.
        (false, Some(_)) => return Err("forged_envelope"),
        (true, None | Some(Err(()))) => return Err("bad_envelope"),
        (
            true,
            Some(Ok(Envelope::History {
                position,
                publisher,
                payload,
            })),
        ) => Publication::at(channel, payload, position).by(publisher),
        (true, Some(Ok(Envelope::Message { publisher, payload }))) => {
            Publication::new(channel, payload).by(publisher)
        }
        (true, Some(Ok(Envelope::Event { frame }))) => Publication::event(channel, frame),
    };
    if publication.payload.len() > max_payload {
        return Err("too_large");
    }
    Ok(publication)
}

pub(super) fn install_tls_provider(config: &RedisConfig) {
    if config.tls.is_some() {
        // rustls needs one process-wide crypto provider; another one installed first (by
        // an embedding program) is as good, so "already installed" is not an error.
        let _ = ::rustls::crypto::ring::default_provider().install_default();
    }
}

/// What `fanout check-config --probe` found on the configured Redis.
#[derive(Debug)]
pub struct ProbeReport {
    pub version: String,
    /// Whether the `fanout` function library is loaded (a node loads it when it starts).
    pub library_loaded: bool,
}

/// Connects to Redis as a node would (TLS and credentials included) and checks what a node
/// needs: a reply to PING, Redis 7 or later (functions), and whether the library is there.
/// The error says what failed, without the URL's password.
pub async fn probe(config: &RedisConfig) -> Result<ProbeReport, String> {
    install_tls_provider(config);
    let client = config
        .client()
        .map_err(|e| format!("invalid redis_url ({:?})", e.kind()))?;
    let failed = |step: &str, e: ::redis::RedisError| {
        let e = e.to_string();
        match tls_hint(&e) {
            Some(hint) => format!("{step}: {e} ({hint})"),
            None => format!("{step}: {e}"),
        }
    };
    let connect = client.get_multiplexed_async_connection();
    let conn = tokio::time::timeout(COMMAND_TIMEOUT, connect)
        .await
        .map_err(|_| "connect: timed out".to_owned())?
        .map_err(|e| failed("connect", e))?;
    let run = |cmd: ::redis::Cmd| {
        let mut conn = conn.clone();
        async move {
            tokio::time::timeout(
                COMMAND_TIMEOUT,
                cmd.query_async::<::redis::Value>(&mut conn),
            )
            .await
            .map_err(|_| ::redis::RedisError::from((::redis::ErrorKind::Io, "timed out")))?
        }
    };
    run(::redis::cmd("PING"))
        .await
        .map_err(|e| failed("PING", e))?;
    let info: String = match run({
        let mut c = ::redis::cmd("INFO");
        c.arg("server");
        c
    })
    .await
    .map_err(|e| failed("INFO server", e))?
    {
        ::redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        ::redis::Value::VerbatimString { text, .. } => text,
        other => format!("{other:?}"),
    };
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 7 {
        return Err(format!(
            "Redis {version}: fanout needs Redis 7 or later (functions, FCALL)"
        ));
    }
    let libraries = run({
        let mut c = ::redis::cmd("FUNCTION");
        c.arg("LIST").arg("LIBRARYNAME").arg(library::NAME);
        c
    })
    .await
    .map_err(|e| failed("FUNCTION LIST", e))?;
    let library_loaded = matches!(&libraries, ::redis::Value::Array(l) if !l.is_empty());
    Ok(ProbeReport {
        version,
        library_loaded,
    })
}

/// Logs that `what` failed (a connection's index when there are several), naming the cause
/// and its fix when the TLS handshake is what failed.
pub(crate) fn warn_failed(what: &str, connection: Option<usize>, error: &str) {
    match tls_hint(error) {
        Some(hint) => {
            tracing::warn!(
                connection,
                error,
                hint,
                "{what} failed in the TLS handshake"
            )
        }
        None => tracing::warn!(connection, error, "{what} failed"),
    }
}

/// What to check when connecting to Redis failed in the TLS handshake, for the log line that
/// reports it; `None` for other failures. rustls names the cause (`invalid peer certificate:
/// UnknownIssuer`, `received fatal alert: CertificateRequired`) but not what to change.
pub(crate) fn tls_hint(error: &str) -> Option<&'static str> {
    if error.contains("invalid peer certificate") {
        Some(
            "the server's certificate is not signed by redis_tls_ca_file (or, without one, by a public root), has expired, or does not name the host of redis_url",
        )
    } else if error.contains("CertificateRequired") {
        Some(
            "the server requires a client certificate: set redis_tls_cert_file and redis_tls_key_file",
        )
    } else if error.contains("received fatal alert") {
        Some(
            "the server refused the TLS handshake: check the client certificate (redis_tls_cert_file) is signed by a CA the server trusts, and the TLS versions it accepts",
        )
    } else if error.contains("corrupt message") || error.contains("InvalidContentType") {
        Some("the server does not speak TLS on this port: use redis:// or the server's TLS port")
    } else {
        None
    }
}

/// Publishes a numbered probe to each live connection's probe channel and rebuilds the
/// connections whose probe did not come back: a subscription can die without the TCP
/// connection noticing, and only an end-to-end check catches that.
async fn probe_loop(
    pool: deadpool_redis::Pool,
    subscribers: Arc<[Subscriber]>,
    interval: Duration,
    metrics: Arc<RedisMetrics>,
    commands_ok: Arc<AtomicBool>,
    cancel: CancellationToken,
) {
    let mut number: u64 = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let mut sent = Vec::new();
        for (i, sub) in subscribers.iter().enumerate() {
            if !sub.is_up() {
                continue;
            }
            number += 1;
            match publish_raw(&pool, &sub.probe_channel, number.to_string().as_bytes()).await {
                Ok(()) => {
                    commands_ok.store(true, Ordering::Release);
                    sent.push((i, number));
                }
                Err(e) => {
                    commands_ok.store(false, Ordering::Release);
                    metrics.probe_failures.inc();
                    tracing::warn!(error = %e, "redis probe could not be published");
                }
            }
        }
        if sent.is_empty() {
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(PROBE_TIMEOUT) => {}
        }
        for (i, n) in sent {
            let sub = &subscribers[i];
            if sub.is_up() && sub.probe_seen() < n {
                metrics.probe_failures.inc();
                sub.rebuild();
            }
        }
    }
}
