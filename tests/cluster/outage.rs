//! Redis going away (restart, killed connections, silently dead subscriptions) is survived
//! without clients reconnecting.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn clients_stay_connected_through_a_redis_restart_and_receive_afterwards() {
    let mut redis = RedisServer::start();
    let n1 = Gateway::start_on_redis("n1", &redis, &[]).await;
    let n2 = Gateway::start_on_redis("n2", &redis, &[]).await;
    let mut a = n1.connect_as("a", &["room:*"]).await;
    let mut b = n2.connect_as("b", &["room:*"]).await;
    a.subscribe("room:outage").await;
    b.subscribe("room:outage").await;

    let outage = tokio::time::Instant::now();
    redis.stop();
    n1.wait_ready(false).await;
    n2.wait_ready(false).await;
    // New channels cannot be joined while Redis is away, and publishing says so.
    let reply = a
        .request(json!({"type": "subscribe", "channel": "room:new", "id": 1}))
        .await;
    assert_eq!(reply["code"], "unavailable", "{reply}");
    let (status, body) = n1
        .post(
            "/api/publish",
            &json!({"channel": "room:outage", "data": 1}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    // Existing sessions are fine.
    assert_eq!(a.request(json!({"type": "ping"})).await["type"], "pong");

    tokio::time::sleep_until(outage + Duration::from_secs(5)).await;
    redis.restart();
    n1.wait_ready(true).await;
    n2.wait_ready(true).await;

    // Same sockets, no reconnect: the nodes resubscribed by themselves.
    redis.cli(&["PUBLISH", "fanout:room:outage", r#"{"after":"restart"}"#]);
    assert_eq!(a.recv().await["data"]["after"], "restart");
    assert_eq!(b.recv().await["data"]["after"], "restart");
    for node in [&n1, &n2] {
        assert!(node.metric("fanout_redis_reconnects_total").await >= 1.0);
        assert!(
            node.metric("fanout_redis_resubscribed_channels_total")
                .await
                >= 3.0
        );
        assert_eq!(node.metric("fanout_connections_open").await, 1.0);
    }
    a.subscribe("room:new").await;
}

/// Publishes `payload` until the client receives it: messages published while a node is
/// resubscribing are lost (pub/sub is at-most-once without history).
async fn publish_until_received(redis: &RedisServer, client: &mut Client, channel: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        redis.cli(&["PUBLISH", &format!("fanout:{channel}"), "\"ping\""]);
        if let Some(Seen::Json(v)) = client.next_within(Duration::from_millis(200)).await {
            assert_eq!(v["data"], "ping");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery never resumed"
        );
    }
}

#[tokio::test]
async fn a_killed_pubsub_connection_is_rebuilt_and_resubscribed() {
    let redis = RedisServer::start();
    let node = Gateway::start_on_redis("n1", &redis, &[]).await;
    let mut c = node.connect_as("1", &["room:*"]).await;
    c.subscribe("room:kill").await;
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_ne!(killed, "0", "the node's pub/sub connections were killed");
    publish_until_received(&redis, &mut c, "room:kill").await;
    node.wait_metric("fanout_redis_reconnects_total", 1.0).await;
}

#[tokio::test]
async fn a_subscription_that_died_silently_is_caught_by_the_probe() {
    let redis = RedisServer::start();
    let proxy = FreezingProxy::start(redis.port).await;
    let node = Gateway::start_named(
        "n1",
        &["--redis-url", &proxy.url(), "--redis-probe-interval-s", "1"],
    );
    node.wait_ready(true).await;
    let mut c = node.connect_as("1", &["room:*"]).await;
    c.subscribe("room:silent").await;
    redis.cli(&["PUBLISH", "fanout:room:silent", "1"]);
    assert_eq!(c.recv().await["data"], 1);

    // The TCP connections stay open, but nothing flows on them any more.
    assert!(proxy.freeze_subscribers() >= 1);
    node.wait_metric("fanout_redis_probe_failures_total", 1.0)
        .await;
    publish_until_received(&redis, &mut c, "room:silent").await;
    assert!(node.metric("fanout_redis_reconnects_total").await >= 1.0);
}
