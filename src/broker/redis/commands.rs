//! Running commands on Redis: the one thing the single-server and cluster brokers do
//! differently below the function library, behind one trait ([`Commands`]), so that
//! presence, history reads, the inbox and the relay are written once for both.
//!
//! Every command is bounded in time ([`COMMAND_TIMEOUT`]) and reloads the function library
//! when Redis lost it. Errors are sorted once, here ([`classify`]): connection trouble makes
//! the broker unavailable (and the node not ready); an error reply to a request's own
//! arguments is that request's problem only.
//!
//! [`Pooled`] is the single server's way: a pool of connections to one Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use tokio::time::timeout;

use super::library;
use super::metrics::RedisMetrics;
use super::timing::COMMAND_TIMEOUT;
use crate::broker::BrokerError;

/// How a broker's commands reach Redis.
#[async_trait]
pub trait Commands: Send + Sync + 'static {
    /// Runs one command, bounded in time, reloading the function library if Redis lost it.
    /// `what` names it in errors and logs.
    async fn call<T: ::redis::FromRedisValue + Send>(
        &self,
        command: &::redis::Cmd,
        what: &str,
    ) -> Result<T, BrokerError>;

    /// Publishes `body` on the Redis channel `name` (PUBLISH on one server; SPUBLISH on a
    /// cluster, in the name's slot); returns how many subscribers received it.
    async fn publish_to(&self, name: &str, body: &[u8]) -> Result<i64, BrokerError>;

    /// The broker's metrics (publish latency, dropped entries).
    fn metrics(&self) -> &RedisMetrics;

    /// [`Commands::call`] for a publish, timed for the publish-latency histogram.
    async fn publish_call<T: ::redis::FromRedisValue + Send>(
        &self,
        command: &::redis::Cmd,
        what: &str,
    ) -> Result<T, BrokerError> {
        let started = Instant::now();
        let result = self.call(command, what).await;
        if result.is_ok() {
            self.metrics()
                .publish_duration
                .observe(started.elapsed().as_secs_f64());
        }
        result
    }
}

/// A Redis error as a broker error: connection trouble (and a cluster that cannot route)
/// makes the broker unavailable; an error reply to a command that reached Redis is a
/// refusal of that request.
pub fn classify(what: &str, e: &::redis::RedisError) -> BrokerError {
    if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_cluster_error()
    {
        BrokerError::Unavailable(format!("redis {what} failed: {e}"))
    } else {
        BrokerError::Rejected(format!("redis {what} failed: {e}"))
    }
}

/// Logs a refusal (at debug: it is the request's problem, and it is told so).
pub fn note_refusal<T>(result: &Result<T, BrokerError>) {
    if let Err(e @ BrokerError::Rejected(_)) = result {
        tracing::debug!(error = %e, "redis refused a request");
    }
}

/// The commands of a node on one Redis: a pool of connections, and readiness that follows
/// whether the last command could reach Redis.
pub struct Pooled {
    pool: deadpool_redis::Pool,
    /// The function library's source, loaded again when Redis lost it.
    library: String,
    /// False after a command that could not reach Redis, true after one that did.
    reachable: AtomicBool,
    metrics: Arc<RedisMetrics>,
}

/// A command or a pipeline, run alike.
#[derive(Clone, Copy)]
pub enum Query<'a> {
    Cmd(&'a ::redis::Cmd),
    Pipe(&'a ::redis::Pipeline),
}

impl Query<'_> {
    async fn exec<T: ::redis::FromRedisValue>(
        self,
        conn: &mut deadpool_redis::Connection,
    ) -> ::redis::RedisResult<T> {
        match self {
            Query::Cmd(c) => c.query_async(&mut **conn).await,
            Query::Pipe(p) => p.query_async(&mut **conn).await,
        }
    }
}

impl Pooled {
    pub fn new(pool: deadpool_redis::Pool, library: String, metrics: Arc<RedisMetrics>) -> Pooled {
        Pooled {
            pool,
            library,
            reachable: AtomicBool::new(true),
            metrics,
        }
    }

    /// Whether the last command reached Redis (readiness follows reachability only: Redis
    /// refusing one request's arguments says nothing about whether this node can serve
    /// others).
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Acquire)
    }

    /// Records the outcome of a command that did not go through [`Pooled::run`] (a probe).
    pub fn record(&self, reached: bool) {
        self.reachable.store(reached, Ordering::Release);
    }

    /// Loads the function library unless this node's version of it is there.
    pub async fn load_library(&self) -> Result<(), BrokerError> {
        library::load(&self.pool, &self.library).await
    }

    /// Runs a command or a pipeline on a pooled connection, bounded in time; reloads the
    /// function library and retries once when Redis lost it (a restart without
    /// persistence). Tracks reachability for readiness.
    pub async fn run<T: ::redis::FromRedisValue>(
        &self,
        query: Query<'_>,
        what: &str,
    ) -> Result<T, BrokerError> {
        let attempt = async {
            let mut conn = self
                .pool
                .get()
                .await
                .map_err(|e| BrokerError::Unavailable(format!("no Redis connection: {e}")))?;
            match query.exec::<T>(&mut conn).await {
                Err(e) if library::is_missing(&e) => {
                    library::load(&self.pool, &self.library).await?;
                    query.exec::<T>(&mut conn).await
                }
                other => other,
            }
            .map_err(|e| classify(what, &e))
        };
        let result = match timeout(COMMAND_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(BrokerError::Unavailable(format!("redis {what} timed out"))),
        };
        match &result {
            Ok(_) => self.record(true),
            Err(BrokerError::Unavailable(_)) => self.record(false),
            Err(_) => note_refusal(&result),
        }
        result
    }

    /// [`Pooled::run`] for a pipeline of publishes, timed for the publish-latency histogram.
    pub async fn run_publish<T: ::redis::FromRedisValue>(
        &self,
        query: Query<'_>,
        what: &str,
    ) -> Result<T, BrokerError> {
        let started = Instant::now();
        let result = self.run(query, what).await;
        if result.is_ok() {
            self.metrics
                .publish_duration
                .observe(started.elapsed().as_secs_f64());
        }
        result
    }
}

#[async_trait]
impl Commands for Pooled {
    async fn call<T: ::redis::FromRedisValue + Send>(
        &self,
        command: &::redis::Cmd,
        what: &str,
    ) -> Result<T, BrokerError> {
        self.run(Query::Cmd(command), what).await
    }

    async fn publish_to(&self, name: &str, body: &[u8]) -> Result<i64, BrokerError> {
        let mut command = ::redis::cmd("PUBLISH");
        command.arg(name).arg(body);
        self.publish_call(&command, "PUBLISH").await
    }

    fn metrics(&self) -> &RedisMetrics {
        &self.metrics
    }
}
