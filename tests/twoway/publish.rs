//! Clients publishing to channels, as themselves.

use serde_json::json;

use serde_json::Value;

use crate::support::*;
use crate::twoway_config;

/// The next `message` frame (skipping presence events).
async fn next_message(c: &mut Client) -> Value {
    loop {
        let f = c.recv().await;
        if f["type"] == "message" {
            return f;
        }
    }
}

#[tokio::test]
async fn a_client_publishes_with_its_token_and_the_user_cannot_be_spoofed() {
    let cfg = twoway_config();
    let gw = Gateway::start(&["--config", &cfg]);
    let mut reader = gw.connect_as("reader", &["dag:*"]).await;
    reader.subscribe("dag:7").await;
    let t = token_with(
        json!({"sub": "42", "exp": unix_now() + 3600, "channels": ["dag:*"], "publish": ["dag:7"]}),
    );
    let (mut writer, _) = gw.connect(&t).await;
    let reply = writer
        .request(
            json!({"type": "publish", "channel": "dag:7", "id": 1, "user": "admin",
                        "data": {"type": "prompt", "text": "hi", "user": "admin"}}),
        )
        .await;
    assert_eq!(reply["type"], "published", "{reply}");
    assert_eq!(reply["offset"], 1, "dag keeps history");
    let msg = reader.recv().await;
    assert_eq!(msg["user"], "42", "the publisher comes from the token");
    assert_eq!(
        msg["data"],
        json!({"type": "prompt", "text": "hi", "user": "admin"}),
        "data untouched"
    );
    assert_eq!(msg["offset"], 1);
    // Recovery replays the publisher too.
    let h = reader
        .request(json!({"type": "history", "channel": "dag:7"}))
        .await;
    assert_eq!(h["messages"][0]["user"], "42");

    let reply = writer
        .request(json!({"type": "publish", "channel": "dag:8", "data": 1}))
        .await;
    assert_eq!(reply["code"], "forbidden");
    let _ = std::fs::remove_file(cfg);
}

#[tokio::test]
async fn a_namespace_open_for_publishing_lets_any_subscriber_publish() {
    let cfg = twoway_config();
    let gw = Gateway::start(&["--config", &cfg]);
    let mut a = gw.connect_as("a", &["room:*"]).await;
    a.subscribe("room:chat").await;
    let mut b = gw.connect_as("b", &["room:*"]).await;
    let reply = b
        .request(json!({"type": "publish", "channel": "room:chat", "data": {"text": "hello"}}))
        .await;
    assert_eq!(reply["type"], "published");
    assert!(reply.get("offset").is_none(), "rooms keep no history");
    let msg = next_message(&mut a).await;
    assert_eq!(
        (msg["user"].as_str(), msg["data"]["text"].as_str()),
        (Some("b"), Some("hello"))
    );
    // Not granted the channel at all: not even an open namespace helps.
    let mut c = gw.connect_as("c", &[]).await;
    let reply = c
        .request(json!({"type": "publish", "channel": "room:chat", "data": 1}))
        .await;
    assert_eq!(reply["code"], "forbidden");
    let _ = std::fs::remove_file(cfg);
}

#[tokio::test]
async fn client_publishes_cross_nodes_with_the_publisher() {
    let cfg = twoway_config();
    let redis = RedisServer::start();
    let n1 = Gateway::start_on_redis("n1", &redis, &["--config", &cfg]).await;
    let n2 = Gateway::start_on_redis("n2", &redis, &["--config", &cfg]).await;
    let mut a = n1.connect_as("a", &["room:*"]).await;
    a.subscribe("room:x").await;
    let mut b = n2.connect_as("b", &["room:*"]).await;
    b.request(json!({"type": "publish", "channel": "room:x", "data": "from b"}))
        .await;
    let msg = next_message(&mut a).await;
    assert_eq!(
        (msg["user"].as_str(), msg["data"].as_str()),
        (Some("b"), Some("from b"))
    );
    let _ = std::fs::remove_file(cfg);
}

#[tokio::test]
async fn publishing_is_rate_limited_per_connection() {
    let cfg = twoway_config();
    let gw = Gateway::start(&["--config", &cfg, "--max-publishes-per-s", "3"]);
    let mut c = gw.connect_as("a", &["room:*"]).await;
    for i in 0..8 {
        c.send(json!({"type": "publish", "channel": "room:r", "data": i, "id": i}))
            .await;
    }
    let mut published = 0;
    let mut limited = 0;
    while published + limited < 8 {
        match c.recv().await["type"].as_str() {
            Some("published") => published += 1,
            Some("error") => limited += 1,
            _ => {} // its own join and messages
        }
    }
    assert_eq!((published, limited), (3, 5));
    let _ = std::fs::remove_file(cfg);
}
