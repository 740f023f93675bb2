//! The backend's control of sessions on three nodes sharing one Redis: every command reaches
//! the user's sessions on every node, over HTTP or with FCALL from redis-cli; a node that dies
//! drops out of `/api/info`.

use crate::support::*;

#[tokio::test]
async fn every_node_applies_the_backends_commands_on_one_redis() {
    let redis = RedisServer::start();
    let n1 = Gateway::start_on_redis("n1", &redis, &[]).await;
    let n2 = Gateway::start_on_redis("n2", &redis, &[]).await;
    let n3 = Gateway::start_on_redis("n3", &redis, &[]).await;
    every_node_applies_the_backends_commands([&n1, &n2, &n3], &|args| redis.cli(args)).await;
}

#[tokio::test]
async fn a_node_killed_drops_out_of_the_registry() {
    let redis = RedisServer::start();
    let n1 = Gateway::start_on_redis("n1", &redis, &[]).await;
    let n2 = Gateway::start_on_redis("n2", &redis, &[]).await;
    let mut n3 = Gateway::start_on_redis("n3", &redis, &[]).await;
    wait_for_nodes(&n1, &["n1", "n2", "n3"]).await;
    n3.signal("KILL");
    n3.wait_exit(std::time::Duration::from_secs(10));
    // Its entry lives six seconds past its last heartbeat.
    wait_for_nodes(&n1, &["n1", "n2"]).await;
    wait_for_nodes(&n2, &["n1", "n2"]).await;
}
