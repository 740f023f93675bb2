//! Which channels a client may join, and what joining and leaving do.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn subscribe_is_allowed_by_exact_and_wildcard_claims() {
    let gw = Gateway::start(&[]);
    let mut client = gw.connect_as("1", &["dag:7", "room:*"]).await;
    for channel in ["dag:7", "room:lobby", "room:org-1:general"] {
        let reply = client
            .request(json!({"type": "subscribe", "channel": channel, "id": channel}))
            .await;
        assert_eq!(reply["type"], "subscribed");
        assert_eq!(reply["channel"], channel);
        assert_eq!(reply["id"], channel);
        // `dag:` keeps history by default: its reply carries the position.
        assert_eq!(
            reply["offset"].is_u64(),
            channel.starts_with("dag:"),
            "{reply}"
        );
    }
}

#[tokio::test]
async fn subscribe_without_a_grant_is_forbidden_and_subscribes_nothing() {
    let gw = Gateway::start(&[]);
    let mut client = gw.connect_as("1", &["dag:7"]).await;
    for channel in ["dag:70", "room:lobby", "user:2"] {
        let reply = client
            .request(json!({"type": "subscribe", "channel": channel, "id": 3}))
            .await;
        assert_eq!(reply["type"], "error", "{channel}");
        assert_eq!(reply["code"], "forbidden", "{channel}");
        assert_eq!(reply["id"], 3);
    }
    gw.publish("room:lobby", json!("nope")).await;
    gw.publish("user:2", json!("nope")).await;
    client.expect_silence(QUIET).await;
    assert_eq!(
        gw.metric("fanout_inbound_errors_total{code=\"forbidden\"}")
            .await,
        3.0
    );
}

#[tokio::test]
async fn a_public_namespace_needs_no_grant() {
    let gw = Gateway::start(&["--namespaces", "agent", "--public-namespaces", "room,agent"]);
    let mut client = gw.connect_as("1", &[]).await;
    client.subscribe("room:lobby").await;
    client.subscribe("agent:build-bot").await;
    let reply = client
        .request(json!({"type": "subscribe", "channel": "dag:1"}))
        .await;
    assert_eq!(reply["code"], "forbidden");
}

#[tokio::test]
async fn unknown_namespaces_and_malformed_names_are_bad_requests() {
    let gw = Gateway::start(&[]);
    let mut client = gw.connect_as("1", &["*"]).await;
    for (channel, needle) in [
        ("chat:1", "unknown channel namespace"),
        ("lobby", "namespace"),
        ("room:has space", "contains"),
        ("room:", "empty"),
    ] {
        let reply = client
            .request(json!({"type": "subscribe", "channel": channel}))
            .await;
        assert_eq!(reply["code"], "bad_request", "{channel}: {reply}");
        let msg = reply["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{channel}: {msg}");
    }
    let long = format!("room:{}", "x".repeat(200));
    let reply = client
        .request(json!({"type": "subscribe", "channel": long}))
        .await;
    assert_eq!(reply["code"], "bad_request");
}

#[tokio::test]
async fn subscribing_twice_is_harmless_and_delivers_once() {
    let gw = Gateway::start(&[]);
    let mut client = gw.connect_as("1", &["room:*"]).await;
    client.subscribe("room:a").await;
    client.subscribe("room:a").await;
    gw.publish("room:a", json!({"n": 1})).await;
    assert_eq!(client.recv().await["data"], json!({"n": 1}));
    client.expect_silence(QUIET).await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let gw = Gateway::start(&[]);
    let mut client = gw.connect_as("1", &["room:*"]).await;
    client.subscribe("room:a").await;
    gw.publish("room:a", json!("before")).await;
    assert_eq!(client.recv().await["data"], "before");
    let reply = client
        .request(json!({"type": "unsubscribe", "channel": "room:a", "id": 9}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "unsubscribed", "channel": "room:a", "id": 9})
    );
    gw.publish("room:a", json!("after")).await;
    client.expect_silence(QUIET).await;
    // The node let go of the channel.
    assert_eq!(
        gw.metric("fanout_channels").await,
        2.0,
        "broadcast and user:1 remain"
    );
}

#[tokio::test]
async fn the_subscription_limit_counts_the_automatic_channels() {
    let gw = Gateway::start(&["--max-subscriptions", "3"]);
    let mut client = gw.connect_as("1", &["room:*"]).await;
    client.subscribe("room:a").await;
    let reply = client
        .request(json!({"type": "subscribe", "channel": "room:b"}))
        .await;
    assert_eq!(reply["code"], "limit_exceeded");
    // Leaving one makes room again.
    client
        .request(json!({"type": "unsubscribe", "channel": "room:a"}))
        .await;
    client.subscribe("room:b").await;
}
