//! From the Redis read loop to the hub, without ever blocking the read loop.
//!
//! Messages are spread over a few worker tasks by a hash of the channel, so the messages of
//! one channel always take the same queue and keep their order, while different channels fan
//! out in parallel. Each queue is bounded; a full queue drops the message (counted, logged at
//! most every few seconds) rather than stalling Redis reads for every other channel.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use super::metrics::RedisMetrics;
use crate::broker::{HubSink, Publication};

pub struct Dispatch {
    workers: Vec<mpsc::Sender<Publication>>,
    metrics: Arc<RedisMetrics>,
    drop_log: RateLimitedLog,
}

impl Dispatch {
    /// Starts `workers` dispatch tasks with `capacity` buffered messages each.
    pub fn start(
        workers: usize,
        capacity: usize,
        hub: HubSink,
        metrics: Arc<RedisMetrics>,
        cancel: CancellationToken,
    ) -> Dispatch {
        let workers = (0..workers.max(1))
            .map(|_| {
                let (tx, mut rx) = mpsc::channel::<Publication>(capacity.max(1));
                let hub = hub.clone();
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => break,
                            p = rx.recv() => match p {
                                Some(p) => {
                                    hub.deliver(&p);
                                }
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
            metrics,
            drop_log: RateLimitedLog::new(Duration::from_secs(10)),
        }
    }

    /// Hands a publication to its channel's worker; drops it if that worker is full.
    pub fn send(&self, publication: Publication) {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(&publication.channel);
        let worker = &self.workers[hash as usize % self.workers.len()];
        match worker.try_send(publication) {
            Ok(()) => {}
            Err(TrySendError::Full(p)) => self.drop(p.channel.as_str(), "dispatch_full"),
            Err(TrySendError::Closed(p)) => self.drop(p.channel.as_str(), "shutting_down"),
        }
    }

    /// Counts and (rate-limited) logs a message that will not be delivered.
    pub fn drop(&self, channel: &str, reason: &'static str) {
        self.metrics.dropped.with_label_values(&[reason]).inc();
        if let Some(suppressed) = self.drop_log.allow() {
            tracing::warn!(channel, reason, suppressed, "dropped a message from Redis");
        }
    }
}

/// Allows one log line per interval; reports how many were suppressed in between.
pub struct RateLimitedLog {
    interval_ms: u64,
    clock: std::time::Instant,
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimitedLog {
    pub fn new(interval: Duration) -> RateLimitedLog {
        RateLimitedLog {
            interval_ms: interval.as_millis() as u64,
            clock: std::time::Instant::now(),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed count)` when a line may be logged now.
    pub fn allow(&self) -> Option<u64> {
        let now = self.clock.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + self.interval_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}
