//! Liveness, operations endpoints and graceful shutdown.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test]
async fn the_server_pings_every_heartbeat() {
    let gw = Gateway::start(&["--heartbeat-s", "1"]);
    let (mut client, ack) = gw.connect(&token("1", &[], 60)).await;
    assert_eq!(ack["heartbeat_s"], 1);
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pings < 2 {
        match tokio::time::timeout_at(deadline, client.ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(other))) => panic!("unexpected {other:?}"),
            other => panic!("no ping in time: {other:?}"),
        }
    }
    // Answering pings (tungstenite does so while reading) keeps the connection open.
    assert_eq!(
        client.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_heartbeat_timeout() {
    let gw = Gateway::start(&["--heartbeat-s", "1", "--pong-timeout-s", "1"]);
    let (mut silent, _) = gw.connect(&token("1", &[], 60)).await;
    // Not reading means not answering pings.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (code, reason) = silent.expect_close().await;
    assert_eq!(code, 4009);
    assert!(reason.contains("heartbeat"), "{reason}");
    gw.wait_metric(
        "fanout_disconnects_total{reason=\"heartbeat_timeout\"}",
        1.0,
    )
    .await;
}

#[tokio::test]
async fn json_ping_gets_json_pong() {
    let gw = Gateway::start(&[]);
    let mut client = gw.connect_as("1", &[]).await;
    assert_eq!(
        client.request(json!({"type": "ping", "id": 12})).await,
        json!({"type": "pong", "id": 12})
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let gw = Gateway::start(&[]);
    let (status, body) = gw.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = gw.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["broker"], "memory");

    let mut client = gw.connect_as("1", &[]).await;
    gw.publish("user:1", json!("hi")).await;
    client.recv().await;
    let (status, text) = gw.get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "fanout_connections_open 1",
        "fanout_connections_accepted_total 1",
        "fanout_subscriptions 2",
        "fanout_channels 2",
        "fanout_messages_published_total{source=\"http\"} 1",
        "fanout_messages_delivered_total 1",
        "fanout_dispatch_latency_seconds_count 1",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "missing {name:?} in:\n{text}");
    }
}

#[tokio::test]
async fn sigterm_drains_clients_with_1012_and_exits_0() {
    let mut gw = Gateway::start(&["--drain-s", "2"]);
    let mut clients = Vec::new();
    for user in ["1", "2", "3", "4"] {
        clients.push(gw.connect_as(user, &[]).await);
    }
    gw.signal("TERM");
    // During the drain the node says it is not ready and refuses new sessions.
    let (status, body) = gw.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("draining"));
    let refused = gw
        .try_connect(Some(&token("9", &[], 60)), &[])
        .await
        .err()
        .expect("refused while draining");
    assert_eq!(refused.status, 503);
    for client in &mut clients {
        let (code, _) = client.expect_close().await;
        assert_eq!(code, 1012);
    }
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test]
async fn sigint_on_an_idle_node_exits_0_promptly() {
    let mut gw = Gateway::start(&[]);
    gw.signal("INT");
    assert_eq!(gw.wait_exit(Duration::from_secs(5)), Some(0));
}
