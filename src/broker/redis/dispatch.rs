//! From the Redis read loop to the hub, without ever blocking the read loop.
//!
//! A message of a channel without history is delivered by the read loop itself: the hub's
//! fan-out never waits (it queues, or writes what a socket takes at once), and a hop through
//! a worker task cost more than the delivery of a small fan-out.
//!
//! Messages of history channels are spread over a few worker tasks by a hash of the channel,
//! so the messages of one channel always take the same queue and keep their order, while
//! different channels fan out in parallel. Each queue is bounded; a full queue drops the
//! message (counted, logged at most every few seconds) rather than stalling Redis reads for
//! every other channel, because a worker may wait on Redis to fill a gap.
//!
//! For channels with history, each worker keeps a cursor (epoch, last offset delivered) per
//! channel. A message whose offset skips ahead means messages were missed (dropped here, or
//! published while the pub/sub connection was down): the worker reads them from the stream
//! and delivers them first. After a reconnect the subscriber asks for a sync, which does the
//! same for messages published during the outage. Only when history cannot fill the gap (it
//! was trimmed, expired, or Redis lost it: a new epoch) are the subscribers told to resync.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use super::library;
use super::metrics::RedisMetrics;
use super::timing::COMMAND_TIMEOUT;
use crate::broker::{ChannelRules, Deliver, HistoryQuery, Publication, StreamPosition};
use crate::channel::Channel;
use crate::limits::RateLimitedLog;

/// Where the workers read history to fill gaps: the standalone broker's command pool, or
/// the Redis Cluster connection (which routes each read to its channel's slot).
#[async_trait::async_trait]
pub trait HistoryReader: Send + Sync + 'static {
    async fn read(
        &self,
        channel: &Channel,
        query: HistoryQuery,
    ) -> Result<crate::broker::History, String>;
}

#[async_trait::async_trait]
impl HistoryReader for deadpool_redis::Pool {
    async fn read(
        &self,
        channel: &Channel,
        query: HistoryQuery,
    ) -> Result<crate::broker::History, String> {
        let mut conn = self.get().await.map_err(|e| e.to_string())?;
        library::history(&mut *conn, channel, query)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Work for a dispatch worker; all of a channel's work goes to the same worker, in order.
pub enum Work {
    Message(Publication),
    /// This node read the channel's history at this position: start tracking there.
    Observe(Channel, StreamPosition),
    /// The pub/sub connection was re-established: deliver what was published meanwhile.
    Sync(Channel),
    /// The node no longer subscribes to the channel.
    Forget(Channel),
}

impl Work {
    fn channel(&self) -> &Channel {
        match self {
            Work::Message(p) => &p.channel,
            Work::Observe(c, _) | Work::Sync(c) | Work::Forget(c) => c,
        }
    }
}

pub struct Dispatch {
    workers: Vec<mpsc::Sender<Work>>,
    /// Where messages of channels without history go straight from the read loop.
    sink: Arc<dyn Deliver>,
    rules: ChannelRules,
    metrics: Arc<RedisMetrics>,
    drop_log: RateLimitedLog,
}

impl Dispatch {
    /// Starts `workers` dispatch tasks with `capacity` buffered messages each.
    pub fn start(
        workers: usize,
        capacity: usize,
        sink: Arc<dyn Deliver>,
        history: Arc<dyn HistoryReader>,
        rules: ChannelRules,
        metrics: Arc<RedisMetrics>,
        cancel: CancellationToken,
    ) -> Dispatch {
        // A gap is never larger than what history keeps.
        let max_fill = rules.histories().map(|(_, h)| h.size).max().unwrap_or(0);
        let workers = (0..workers.max(1))
            .map(|_| {
                let (tx, mut rx) = mpsc::channel::<Work>(capacity.max(1));
                let mut worker = Worker {
                    sink: sink.clone(),
                    history: history.clone(),
                    max_fill,
                    metrics: metrics.clone(),
                    cursors: HashMap::new(),
                };
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => break,
                            work = rx.recv() => match work {
                                Some(work) => worker.handle(work).await,
                                None => break,
                            },
                        }
                    }
                });
                tx
            })
            .collect();
        Dispatch {
            workers,
            sink,
            rules,
            metrics,
            drop_log: RateLimitedLog::new(Duration::from_secs(10)),
        }
    }

    fn worker_for(&self, channel: &Channel) -> &mpsc::Sender<Work> {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(channel);
        &self.workers[hash as usize % self.workers.len()]
    }

    /// Delivers a publication of a channel without history at once, from the read loop; hands
    /// any other to its channel's worker, or drops it if that worker is full.
    ///
    /// A channel without history has no cursor and no gap to fill, so a worker would add
    /// only a task hop (a wake-up, often of the other core) per message. Its delivery never
    /// waits: the hub only queues, or writes what a socket takes at once. Every message of a
    /// channel takes the same path (history is configured per namespace), so their order
    /// holds either way.
    pub fn send(&self, publication: Publication) {
        if self.rules.history(&publication.channel).is_none() {
            self.sink.deliver(&publication);
            return;
        }
        match self
            .worker_for(&publication.channel)
            .try_send(Work::Message(publication))
        {
            Ok(()) => {}
            Err(TrySendError::Full(w)) => self.drop(w.channel().as_str(), "dispatch_full"),
            Err(TrySendError::Closed(w)) => self.drop(w.channel().as_str(), "shutting_down"),
        }
    }

    /// Queues control work, waiting for room: it is rare and must not be lost.
    pub async fn control(&self, work: Work) {
        let _ = self.worker_for(work.channel()).send(work).await;
    }

    /// Counts and (rate-limited) logs a message that will not be delivered.
    pub fn drop(&self, channel: &str, reason: &'static str) {
        self.metrics.dropped.with_label_values(&[reason]).inc();
        if let Some(suppressed) = self.drop_log.allow() {
            tracing::warn!(channel, reason, suppressed, "dropped a message from Redis");
        }
    }
}

struct Worker {
    sink: Arc<dyn Deliver>,
    history: Arc<dyn HistoryReader>,
    /// Most messages one gap fill may read.
    max_fill: usize,
    metrics: Arc<RedisMetrics>,
    /// Per history channel: the last position delivered.
    cursors: HashMap<Channel, StreamPosition>,
}

impl Worker {
    async fn handle(&mut self, work: Work) {
        match work {
            Work::Message(p) => self.on_message(p).await,
            Work::Observe(channel, position) => {
                self.cursors.entry(channel).or_insert(position);
            }
            Work::Sync(channel) => self.sync(channel).await,
            Work::Forget(channel) => {
                self.cursors.remove(&channel);
            }
        }
    }

    async fn on_message(&mut self, p: Publication) {
        let Some(position) = p.position.clone() else {
            self.sink.deliver(&p);
            return;
        };
        let cursor = self.cursors.get(&p.channel).cloned();
        match cursor {
            Some(c) if c.epoch == position.epoch && position.offset <= c.offset => {
                // Already delivered by a gap fill or sync.
            }
            Some(c) if c.epoch == position.epoch && position.offset > c.offset + 1 => {
                if !self.fill(&p.channel, &c, position.offset - 1).await {
                    self.resync(&p.channel);
                }
                self.cursors.insert(p.channel.clone(), position);
                self.sink.deliver(&p);
            }
            Some(c) if c.epoch != position.epoch => {
                // The history was lost and restarted: what came before cannot be recovered.
                self.resync(&p.channel);
                self.cursors.insert(p.channel.clone(), position);
                self.sink.deliver(&p);
            }
            _ => {
                self.cursors.insert(p.channel.clone(), position);
                self.sink.deliver(&p);
            }
        }
    }

    /// Delivers the messages after `from` up to offset `to` from history. False if they are
    /// not all there any more.
    async fn fill(&mut self, channel: &Channel, from: &StreamPosition, to: u64) -> bool {
        let want = to.saturating_sub(from.offset);
        if want == 0 {
            return true;
        }
        if want > self.max_fill as u64 {
            return false;
        }
        let query = HistoryQuery::After {
            offset: from.offset,
            limit: want as usize,
        };
        let Some(history) = self.read(channel, query).await else {
            return false;
        };
        let complete = history.epoch == from.epoch
            && history.first <= from.offset + 1
            && history.messages.len() as u64 >= want;
        if !complete {
            return false;
        }
        for m in history.messages.into_iter().take(want as usize) {
            let position = StreamPosition {
                offset: m.offset,
                epoch: history.epoch.clone(),
            };
            self.sink
                .deliver(&Publication::at(channel.clone(), m.payload, position).by(m.publisher));
        }
        self.metrics.gap_filled.inc_by(want);
        tracing::debug!(%channel, after = from.offset, up_to = to, "gap filled from history");
        true
    }

    /// After a reconnect: delivers what was published while the connection was down.
    async fn sync(&mut self, channel: Channel) {
        let Some(cursor) = self.cursors.get(&channel).cloned() else {
            return;
        };
        let query = HistoryQuery::After {
            offset: cursor.offset,
            limit: 0,
        };
        let Some(top) = self.read(&channel, query).await else {
            // The next message will show the gap and try again.
            return;
        };
        let latest = StreamPosition {
            offset: top.offset,
            epoch: top.epoch.clone(),
        };
        tracing::debug!(%channel, at = cursor.offset, top = top.offset, "syncing after a reconnect");
        let epoch_changed = top.epoch != cursor.epoch;
        let missed = !epoch_changed && top.offset > cursor.offset;
        // The history went back within its epoch: writes this node had delivered were lost
        // (a failover to a replica that had not received them, a restore from an older
        // persistence file). Their offsets will be given to new messages, which the
        // subscribers must not take for ones they have: they reload instead.
        let went_back = !epoch_changed && top.offset < cursor.offset;
        if epoch_changed || went_back || (missed && !self.fill(&channel, &cursor, top.offset).await)
        {
            self.resync(&channel);
        }
        if top.epoch != cursor.epoch || top.offset != cursor.offset {
            self.cursors.insert(channel, latest);
        }
    }

    /// Reads history for a gap fill, bounded in time: this worker serves other channels too,
    /// and a slow read must cost this channel a resync, not stall every channel behind it.
    async fn read(&self, channel: &Channel, query: HistoryQuery) -> Option<crate::broker::History> {
        let read = self.history.read(channel, query);
        match tokio::time::timeout(COMMAND_TIMEOUT, read).await {
            Ok(Ok(h)) => Some(h),
            Ok(Err(e)) => {
                tracing::warn!(%channel, error = %e, "could not read history to fill a gap");
                None
            }
            Err(_) => {
                tracing::warn!(%channel, "history read to fill a gap timed out");
                None
            }
        }
    }

    fn resync(&self, channel: &Channel) {
        self.metrics.resyncs.inc();
        self.sink.resync(channel);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::broker::{History, HistoryMessage, RelayedFrames};

    /// A channel's history: epoch `e`, messages 1..=top (payload: the offset).
    struct FakeHistory {
        top: u64,
    }

    #[async_trait::async_trait]
    impl HistoryReader for FakeHistory {
        async fn read(&self, _: &Channel, query: HistoryQuery) -> Result<History, String> {
            let HistoryQuery::After { offset, limit } = query else {
                return Err("unexpected query".into());
            };
            let messages = (offset + 1..=self.top)
                .take(limit)
                .map(|o| HistoryMessage {
                    offset: o,
                    publisher: None,
                    payload: bytes::Bytes::from(o.to_string()),
                })
                .collect();
            Ok(History {
                epoch: Arc::from("e"),
                offset: self.top,
                first: 1,
                messages,
            })
        }
    }

    /// What reached the hub: `<offset>` per delivery, `resync` per resync.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Deliver for Recorder {
        fn deliver(&self, p: &Publication) -> usize {
            let offset = p.position.as_ref().map_or(0, |s| s.offset);
            self.0.lock().unwrap().push(offset.to_string());
            1
        }
        fn resync(&self, _: &Channel) {
            self.0.lock().unwrap().push("resync".into());
        }
        fn control(&self, _: crate::broker::ControlMessage) {}
        fn relayed(&self, _: RelayedFrames) {}
    }

    fn worker(top: u64, sink: Arc<Recorder>) -> Worker {
        Worker {
            sink,
            history: Arc::new(FakeHistory { top }),
            max_fill: 100,
            metrics: Arc::new(RedisMetrics::new(&crate::metrics::Metrics::new())),
            cursors: HashMap::new(),
        }
    }

    fn at(offset: u64) -> StreamPosition {
        StreamPosition {
            offset,
            epoch: Arc::from("e"),
        }
    }

    #[tokio::test]
    async fn a_sync_fills_what_was_missed_and_resyncs_when_history_went_back() {
        let channel = Channel::parse("dag:1").unwrap();
        let sink = Arc::new(Recorder::default());
        let mut ahead = worker(7, sink.clone());
        ahead.handle(Work::Observe(channel.clone(), at(5))).await;
        ahead.handle(Work::Sync(channel.clone())).await;
        assert_eq!(*sink.0.lock().unwrap(), ["6", "7"]);

        // Offsets 4 and 5 were delivered, then lost with a failover: the next publishes get
        // them again, and must reach the subscribers after a resync, not be dropped.
        let sink = Arc::new(Recorder::default());
        let mut behind = worker(3, sink.clone());
        behind.handle(Work::Observe(channel.clone(), at(5))).await;
        behind.handle(Work::Sync(channel.clone())).await;
        let again = Publication::at(channel.clone(), bytes::Bytes::from("4"), at(4));
        behind.handle(Work::Message(again)).await;
        assert_eq!(*sink.0.lock().unwrap(), ["resync", "4"]);
    }
}
