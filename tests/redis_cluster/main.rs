//! Scenarios with several real `fanout` processes on a real Redis Cluster the test starts
//! (3 masters, 3 replicas): sharded delivery across shards and gateways, interest routing per
//! shard (`PUBSUB SHARDNUMSUB`), publishing with `redis-cli -c`, phpredis `RedisCluster` and
//! the HTTP API, presence across gateways, and a master SIGKILLed under load.

#[path = "../support/mod.rs"]
mod support;

mod control;
mod delivery;
mod failover;
mod local_cluster;
mod migration;

/// A config file: `dag` keeps history and presence, `room` announces joins and lets clients
/// publish.
pub fn cluster_config() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        "fanout-redis-cluster-{}-{n}.toml",
        std::process::id()
    ));
    std::fs::write(
        &path,
        r#"
[namespaces.dag]
history_size = 1000
history_ttl_s = 3600
presence = true

[namespaces.room]
presence = true
join_leave = "connection"
publish = true
"#,
    )
    .unwrap();
    path.display().to_string()
}
