//! One Redis pub/sub connection and the channels it holds.
//!
//! A driver task owns the connection. It answers subscribe/unsubscribe requests in batches
//! (one `SUBSCRIBE a b c …` per batch, at most 512 Redis channels per command; each fanout
//! channel is two Redis channels, its public and its envelope channel, see [`super::envelope`]),
//! remembers the set of channels it should hold, and when the connection is lost (Redis restarted, `CLIENT KILL`,
//! or a failed liveness probe) reconnects with backoff and subscribes that whole set again,
//! without any client noticing. While it is down, subscribing a new channel fails fast with
//! `unavailable` instead of waiting.
//!
//! A reader task per connection turns incoming messages into publications and hands them to
//! the dispatch: a channel without history is fanned out from the reader itself (which never
//! waits: the hub only queues), a history channel goes to its dispatch worker's bounded
//! queue.

use std::collections::HashSet;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::commands::Pooled;
use super::dispatch::{Dispatch, Work};
use super::envelope::{decode_message, envelope_channel, public_channel};
use super::metrics::RedisMetrics;
use super::timing::{Backoff, COMMAND_TIMEOUT, CONNECT_TIMEOUT};
use super::tls::warn_failed;
use crate::broker::{BrokerError, ChannelRules};
use crate::channel::Channel;

/// Redis channels per SUBSCRIBE/UNSUBSCRIBE command.
const CHANNELS_PER_COMMAND: usize = 512;

/// What every connection of a broker shares.
pub struct Shared {
    pub prefix: String,
    pub max_payload: usize,
    pub rules: ChannelRules,
    /// The broker's commands, for (re)loading the function library.
    pub commands: Arc<Pooled>,
    pub dispatch: Dispatch,
    pub metrics: Arc<RedisMetrics>,
    pub cancel: CancellationToken,
}

/// The handle on one pub/sub connection's driver.
pub struct Subscriber {
    requests: mpsc::Sender<Request>,
    state: Arc<ConnectionState>,
    /// The channel the liveness probe publishes to; only this connection subscribes it.
    pub probe_channel: String,
}

/// Observed from outside the driver: readiness and probe receipts.
#[derive(Default)]
pub struct ConnectionState {
    up: AtomicBool,
    /// Highest probe number received on this connection.
    probe_seen: AtomicU64,
    rebuild: Notify,
}

enum Op {
    Subscribe,
    Unsubscribe,
}

struct Request {
    op: Op,
    channels: Vec<Channel>,
    done: oneshot::Sender<Result<(), BrokerError>>,
}

impl Subscriber {
    pub fn start(
        index: usize,
        client: ::redis::Client,
        probe_channel: String,
        shared: Arc<Shared>,
    ) -> Subscriber {
        let (tx, rx) = mpsc::channel(1024);
        let state = Arc::new(ConnectionState::default());
        let driver = Driver {
            index,
            client,
            probe_channel: probe_channel.clone(),
            shared,
            state: state.clone(),
            desired: HashSet::new(),
        };
        tokio::spawn(driver.run(rx));
        Subscriber {
            requests: tx,
            state,
            probe_channel,
        }
    }

    pub fn is_up(&self) -> bool {
        self.state.up.load(Ordering::Acquire)
    }

    pub fn probe_seen(&self) -> u64 {
        self.state.probe_seen.load(Ordering::Acquire)
    }

    /// Drops the connection and builds a new one (after a failed probe).
    pub fn rebuild(&self) {
        self.state.rebuild.notify_one();
    }

    /// Subscribes the Redis channels of `channels`; returns once Redis confirmed them.
    pub async fn subscribe(&self, channels: Vec<Channel>) -> Result<(), BrokerError> {
        self.request(Op::Subscribe, channels).await
    }

    pub async fn unsubscribe(&self, channels: Vec<Channel>) -> Result<(), BrokerError> {
        self.request(Op::Unsubscribe, channels).await
    }

    async fn request(&self, op: Op, channels: Vec<Channel>) -> Result<(), BrokerError> {
        let (done, result) = oneshot::channel();
        let gone = || BrokerError::Unavailable("redis subscriber stopped".into());
        self.requests
            .send(Request { op, channels, done })
            .await
            .map_err(|_| gone())?;
        result.await.map_err(|_| gone())?
    }
}

struct Driver {
    index: usize,
    client: ::redis::Client,
    probe_channel: String,
    shared: Arc<Shared>,
    state: Arc<ConnectionState>,
    /// The channels this connection should hold (probe channel excluded).
    desired: HashSet<Channel>,
}

impl Driver {
    async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let mut batch = Vec::new();
        let mut connected_before = false;
        let mut backoff = Backoff::new();
        let cancel = self.shared.cancel.clone();
        loop {
            // Connect, answering requests meanwhile as a down connection does.
            let connected = {
                let client = self.client.clone();
                let mut connect = pin!(timeout(CONNECT_TIMEOUT, async move {
                    client.get_async_pubsub().await
                }));
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = &mut connect => break r,
                        n = requests.recv_many(&mut batch, 64) => {
                            if n == 0 { return; }
                            self.answer_while_down(&mut batch);
                        }
                    }
                }
            };
            let pubsub = match connected {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    warn_failed("redis pub/sub connect", Some(self.index), &e.to_string());
                    if !self.pause(&mut requests, &mut batch, &mut backoff).await {
                        return;
                    }
                    continue;
                }
                Err(_) => {
                    tracing::warn!(connection = self.index, "redis pub/sub connect timed out");
                    if !self.pause(&mut requests, &mut batch, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            };
            let (mut sink, stream) = pubsub.split();
            let (lost_tx, mut lost) = oneshot::channel::<()>();
            let reader = tokio::spawn(read(
                stream,
                self.probe_channel.clone(),
                self.shared.clone(),
                self.state.clone(),
                lost_tx,
            ));
            let mut all = self.redis_names(self.desired.iter());
            all.push(self.probe_channel.clone());
            if let Err(e) = subscribe_all(&mut sink, &all).await {
                warn_failed("redis resubscribe", Some(self.index), &e.to_string());
                reader.abort();
                if !self.pause(&mut requests, &mut batch, &mut backoff).await {
                    return;
                }
                continue;
            }
            // A Redis that restarted without persistence lost the functions too. The
            // connection counts as up (and the node as ready) only once they are there:
            // backends call `FCALL fanout_publish` as soon as a node says it is ready.
            if let Err(e) = self.shared.commands.load_library().await {
                tracing::warn!(connection = self.index, error = %e, "could not load the fanout function library; retrying");
                reader.abort();
                if !self.pause(&mut requests, &mut batch, &mut backoff).await {
                    return;
                }
                continue;
            }
            if connected_before {
                self.sync_history_channels();
                self.shared.metrics.reconnects.inc();
                self.shared
                    .metrics
                    .resubscribed
                    .inc_by(self.desired.len() as u64);
                tracing::info!(
                    connection = self.index,
                    channels = self.desired.len(),
                    "redis pub/sub reconnected and resubscribed"
                );
            } else {
                tracing::info!(connection = self.index, "redis pub/sub connected");
            }
            connected_before = true;
            backoff.reset();
            self.state.up.store(true, Ordering::Release);
            self.shared.metrics.connections_up.inc();

            loop {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => {
                        reader.abort();
                        return;
                    }
                    _ = &mut lost => {
                        tracing::warn!(connection = self.index, "redis pub/sub connection lost");
                        break;
                    }
                    _ = self.state.rebuild.notified() => {
                        tracing::warn!(connection = self.index, "redis pub/sub probe failed; rebuilding the connection");
                        break;
                    }
                    n = requests.recv_many(&mut batch, 64) => {
                        if n == 0 {
                            reader.abort();
                            return;
                        }
                        if !self.serve(&mut sink, &mut batch).await {
                            break;
                        }
                    }
                }
            }
            self.state.up.store(false, Ordering::Release);
            self.shared.metrics.connections_up.dec();
            reader.abort();
        }
    }

    /// Asks the dispatch workers to deliver what history channels got while disconnected.
    fn sync_history_channels(&self) {
        let channels: Vec<Channel> = self
            .desired
            .iter()
            .filter(|c| self.shared.rules.history(c).is_some())
            .cloned()
            .collect();
        if channels.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            for channel in channels {
                shared.dispatch.control(Work::Sync(channel)).await;
            }
        });
    }

    /// Applies a batch of requests on a live connection. Returns false if the connection
    /// failed and must be rebuilt.
    async fn serve(
        &mut self,
        sink: &mut ::redis::aio::PubSubSink,
        batch: &mut Vec<Request>,
    ) -> bool {
        let (subs, unsubs): (Vec<Request>, Vec<Request>) =
            batch.drain(..).partition(|r| matches!(r.op, Op::Subscribe));
        let mut healthy = true;
        if !subs.is_empty() {
            let channels: Vec<Channel> = subs
                .iter()
                .flat_map(|r| r.channels.iter().cloned())
                .collect();
            let names = self.redis_names(channels.iter());
            let result = match timeout(COMMAND_TIMEOUT, subscribe_all(sink, &names)).await {
                Ok(Ok(())) => {
                    for c in channels {
                        if self.desired.insert(c) {
                            self.shared.metrics.subscriptions.inc();
                        }
                    }
                    Ok(())
                }
                Ok(Err(e)) => {
                    healthy = false;
                    Err(BrokerError::Unavailable(format!(
                        "redis SUBSCRIBE failed: {e}"
                    )))
                }
                Err(_) => {
                    healthy = false;
                    Err(BrokerError::Unavailable("redis SUBSCRIBE timed out".into()))
                }
            };
            for r in subs {
                let _ = r.done.send(result.clone());
            }
        }
        if !unsubs.is_empty() {
            let mut channels = Vec::new();
            for c in unsubs.iter().flat_map(|r| r.channels.iter()) {
                if self.desired.remove(c) {
                    self.shared.metrics.subscriptions.dec();
                    channels.push(c.clone());
                }
            }
            if healthy && !channels.is_empty() {
                // The channel is forgotten either way; a failure here only means the
                // connection is rebuilt without it.
                let names = self.redis_names(channels.iter());
                healthy = matches!(
                    timeout(COMMAND_TIMEOUT, unsubscribe_all(sink, &names)).await,
                    Ok(Ok(()))
                );
            }
            for r in unsubs {
                let _ = r.done.send(Ok(()));
            }
        }
        healthy
    }

    /// The Redis channels that carry `channels`: each one's public and envelope channel.
    fn redis_names<'a>(&self, channels: impl Iterator<Item = &'a Channel>) -> Vec<String> {
        let prefix = self.shared.prefix.as_str();
        channels
            .flat_map(|c| [public_channel(prefix, c), envelope_channel(prefix, c)])
            .collect()
    }

    /// While down: new subscriptions are refused, unsubscriptions just forget the channel.
    fn answer_while_down(&mut self, batch: &mut Vec<Request>) {
        for r in batch.drain(..) {
            let result = match r.op {
                Op::Subscribe => Err(BrokerError::Unavailable("redis is unavailable".into())),
                Op::Unsubscribe => {
                    for c in &r.channels {
                        if self.desired.remove(c) {
                            self.shared.metrics.subscriptions.dec();
                        }
                    }
                    Ok(())
                }
            };
            let _ = r.done.send(result);
        }
    }

    /// Waits out a backoff (with jitter) while answering requests as down. False on shutdown.
    async fn pause(
        &mut self,
        requests: &mut mpsc::Receiver<Request>,
        batch: &mut Vec<Request>,
        backoff: &mut Backoff,
    ) -> bool {
        let sleep = tokio::time::sleep(backoff.next_delay());
        let mut sleep = pin!(sleep);
        loop {
            tokio::select! {
                _ = self.shared.cancel.cancelled() => return false,
                _ = &mut sleep => return true,
                n = requests.recv_many(batch, 64) => {
                    if n == 0 { return false; }
                    self.answer_while_down(batch);
                }
            }
        }
    }
}

async fn subscribe_all(
    sink: &mut ::redis::aio::PubSubSink,
    channels: &[String],
) -> ::redis::RedisResult<()> {
    for chunk in channels.chunks(CHANNELS_PER_COMMAND) {
        sink.subscribe(chunk).await?;
    }
    Ok(())
}

async fn unsubscribe_all(
    sink: &mut ::redis::aio::PubSubSink,
    channels: &[String],
) -> ::redis::RedisResult<()> {
    for chunk in channels.chunks(CHANNELS_PER_COMMAND) {
        sink.unsubscribe(chunk).await?;
    }
    Ok(())
}

/// Reads one connection's messages until it ends, then reports the loss.
async fn read(
    mut stream: ::redis::aio::PubSubStream,
    probe_channel: String,
    shared: Arc<Shared>,
    state: Arc<ConnectionState>,
    lost: oneshot::Sender<()>,
) {
    while let Some(msg) = stream.next().await {
        let name = msg.get_channel_name();
        if name == probe_channel {
            if let Some(n) = std::str::from_utf8(msg.get_payload_bytes())
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            {
                state.probe_seen.fetch_max(n, Ordering::AcqRel);
            }
            continue;
        }
        shared.metrics.messages_received.inc();
        let publication = match decode_message(
            &shared.prefix,
            name,
            msg.get_payload_bytes(),
            shared.max_payload,
        ) {
            Ok(p) => p,
            Err(reason) => {
                shared.dispatch.drop(name, reason);
                continue;
            }
        };
        shared.dispatch.send(publication);
    }
    let _ = lost.send(());
}
