//! The cluster's way of running commands ([`Routed`]): one redis-rs cluster connection that
//! routes each command to the master of its key's slot, following `MOVED`/`ASK` and
//! slot-map changes; the function library is loaded on every master when a call finds it
//! missing (a failover to a replica that never had it, a flushed master).

use std::sync::Arc;

use async_trait::async_trait;
use redis::Value;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use tokio::time::timeout;

use super::super::commands::{Commands, classify, note_refusal};
use super::super::library;
use super::super::metrics::RedisMetrics;
use super::super::timing::COMMAND_TIMEOUT;
use crate::broker::BrokerError;

pub struct Routed {
    conn: ClusterConnection,
    /// The library's source (its `SPUBLISH` variant).
    library: String,
    metrics: Arc<RedisMetrics>,
}

impl Routed {
    pub fn new(conn: ClusterConnection, library: String, metrics: Arc<RedisMetrics>) -> Routed {
        Routed {
            conn,
            library,
            metrics,
        }
    }

    /// The cluster connection (subscriptions, the dispatch workers' history reads).
    pub fn connection(&self) -> &ClusterConnection {
        &self.conn
    }

    /// Runs a command routed by its key (or as `routing` says), bounded in time.
    pub async fn route<T: ::redis::FromRedisValue>(
        &self,
        command: &::redis::Cmd,
        routing: Option<RoutingInfo>,
    ) -> ::redis::RedisResult<T> {
        let mut conn = self.conn.clone();
        let attempt = async {
            match routing {
                None => command.query_async::<T>(&mut conn).await,
                Some(r) => {
                    let value = conn.route_command(command.clone(), r).await?;
                    ::redis::FromRedisValue::from_redis_value(value).map_err(Into::into)
                }
            }
        };
        match timeout(COMMAND_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(::redis::RedisError::from((
                ::redis::ErrorKind::Io,
                "timed out",
            ))),
        }
    }

    /// Loads (or replaces) the function library on every master.
    pub async fn load_library(&self) -> Result<(), BrokerError> {
        let mut command = ::redis::cmd("FUNCTION");
        command.arg("LOAD").arg("REPLACE").arg(&self.library);
        let all_masters = RoutingInfo::MultiNode((
            MultipleNodeRoutingInfo::AllMasters,
            Some(ResponsePolicy::AllSucceeded),
        ));
        self.route::<Value>(&command, Some(all_masters))
            .await
            .map_err(|e| BrokerError::Unavailable(format!("FUNCTION LOAD failed: {e}")))?;
        tracing::info!("loaded the fanout Redis function library on every master");
        Ok(())
    }
}

#[async_trait]
impl Commands for Routed {
    async fn call<T: ::redis::FromRedisValue + Send>(
        &self,
        command: &::redis::Cmd,
        what: &str,
    ) -> Result<T, BrokerError> {
        let result = match self.route::<T>(command, None).await {
            Err(e) if library::is_missing(&e) => {
                self.load_library().await?;
                self.route::<T>(command, None).await
            }
            other => other,
        }
        .map_err(|e| classify(what, &e));
        note_refusal(&result);
        result
    }

    async fn publish_to(&self, name: &str, body: &[u8]) -> Result<i64, BrokerError> {
        let mut command = ::redis::cmd("SPUBLISH");
        command.arg(name).arg(body);
        self.publish_call(&command, "SPUBLISH").await
    }

    fn metrics(&self) -> &RedisMetrics {
        &self.metrics
    }
}
