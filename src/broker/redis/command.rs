//! Running commands: every Redis command or pipeline of the broker goes through
//! [`RedisBroker::run`], bounded in time, with the function library reloaded when Redis lost
//! it. Errors are sorted here: connection trouble makes the broker unavailable (and the node
//! not ready); an error reply to a request's own arguments is that request's problem only.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::time::timeout;

use super::subscriber::COMMAND_TIMEOUT;
use super::{RedisBroker, library};
use crate::broker::BrokerError;

impl RedisBroker {
    /// Runs a command (or a pipeline) on a pooled connection, bounded in time; reloads the
    /// function library and retries once when Redis lost it (restart without persistence).
    /// Tracks command health for readiness.
    pub(super) async fn run<T: ::redis::FromRedisValue>(
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
                    library::load(&self.pool, &self.shared.library).await?;
                    query.exec::<T>(&mut conn).await
                }
                other => other,
            }
            .map_err(|e| command_error(what, &e))
        };
        let result = match timeout(COMMAND_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(BrokerError::Unavailable(format!("redis {what} timed out"))),
        };
        // Readiness follows reachability only: Redis refusing one request's arguments says
        // nothing about whether this node can serve others.
        match &result {
            Ok(_) => self.commands_ok.store(true, Ordering::Release),
            Err(BrokerError::Unavailable(_)) => self.commands_ok.store(false, Ordering::Release),
            Err(e) => tracing::debug!(error = %e, "redis refused a request"),
        }
        result
    }

    /// [`RedisBroker::run`] for publishes, which the publish-latency histogram times.
    pub(super) async fn run_publish<T: ::redis::FromRedisValue>(
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

/// `PUBLISH name payload` through the command pool, bounded in time.
pub(super) async fn publish_raw(
    pool: &deadpool_redis::Pool,
    name: &str,
    payload: &[u8],
) -> Result<(), BrokerError> {
    let attempt = async {
        let mut conn = pool
            .get()
            .await
            .map_err(|e| BrokerError::Unavailable(format!("no Redis connection: {e}")))?;
        ::redis::cmd("PUBLISH")
            .arg(name)
            .arg(payload)
            .query_async::<i64>(&mut *conn)
            .await
            .map_err(|e| BrokerError::Unavailable(format!("redis PUBLISH failed: {e}")))
    };
    match timeout(COMMAND_TIMEOUT, attempt).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(BrokerError::Unavailable("redis PUBLISH timed out".into())),
    }
}

/// A command or a pipeline, run the same way by [`RedisBroker::run`].
#[derive(Clone, Copy)]
pub(super) enum Query<'a> {
    Cmd(&'a ::redis::Cmd),
    Pipe(&'a ::redis::Pipeline),
}

impl Query<'_> {
    pub(super) async fn exec<T: ::redis::FromRedisValue>(
        self,
        conn: &mut deadpool_redis::Connection,
    ) -> ::redis::RedisResult<T> {
        match self {
            Query::Cmd(c) => c.query_async(&mut **conn).await,
            Query::Pipe(p) => p.query_async(&mut **conn).await,
        }
    }
}

/// A Redis error as a broker error: connection trouble makes the broker unavailable; an error
/// reply to a command that reached Redis is a refusal of that request.
fn command_error(what: &str, e: &::redis::RedisError) -> BrokerError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        BrokerError::Unavailable(format!("redis {what} failed: {e}"))
    } else {
        BrokerError::Rejected(format!("redis {what} failed: {e}"))
    }
}
