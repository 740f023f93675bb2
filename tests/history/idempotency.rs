//! Idempotent publishing: a publisher that retries (after a lost reply, a killed connection)
//! with the same idempotency key publishes once, and gets the first publish's offset back.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

/// Publishes over HTTP with a key; the offset the API answers.
async fn publish_with_key(gw: &Gateway, channel: &str, n: u64, key: &str) -> u64 {
    let (status, body) = gw
        .post(
            "/api/publish",
            &json!({"channel": channel, "data": {"n": n}, "idempotency_key": key}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["offset"].as_u64().unwrap()
}

async fn a_retried_http_publish_is_delivered_once(gw: &Gateway) {
    let mut client = gw.connect_as("5", &["dag:*"]).await;
    assert_eq!(
        client
            .request(json!({"type":"subscribe","channel":"dag:idem"}))
            .await["type"],
        "subscribed"
    );
    let first = publish_with_key(gw, "dag:idem", 1, "order-1").await;
    let retried = publish_with_key(gw, "dag:idem", 1, "order-1").await;
    assert_eq!(first, retried, "the retry returns the first offset");
    let next = publish_with_key(gw, "dag:idem", 2, "order-2").await;
    assert_eq!(next, first + 1);
    assert_eq!(client.recv().await["data"]["n"], 1);
    assert_eq!(client.recv().await["data"]["n"], 2);
    client.expect_silence(Duration::from_millis(300)).await;

    let (status, body) = gw
        .post(
            "/api/publish",
            &json!({"channel": "dag:idem", "data": 3, "idempotency_key": "k".repeat(300)}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn on_the_embedded_broker_a_retried_http_publish_is_delivered_once() {
    let gw = Gateway::start(&[]);
    a_retried_http_publish_is_delivered_once(&gw).await;
}

#[tokio::test]
async fn on_redis_a_retried_http_publish_is_delivered_once() {
    let redis = RedisServer::start();
    let gw = Gateway::start_on_redis("n1", &redis, &[]).await;
    a_retried_http_publish_is_delivered_once(&gw).await;
}

#[tokio::test]
async fn an_fcall_retried_after_its_connection_was_killed_publishes_once() {
    let redis = RedisServer::start();
    let gw = Gateway::start_on_redis("n1", &redis, &[]).await;
    let mut client = gw.connect_as("6", &["dag:*"]).await;
    client
        .request(json!({"type":"subscribe","channel":"dag:retry"}))
        .await;

    let redis_client = redis::Client::open(redis.url()).unwrap();
    let mut conn = redis_client.get_connection().unwrap();
    let fcall = |conn: &mut redis::Connection, data: &str, key: &str| -> redis::RedisResult<u64> {
        redis::cmd("FCALL")
            .arg("fanout_publish")
            .arg(1)
            .arg("dag:retry")
            .arg(data)
            .arg("")
            .arg(key)
            .query(conn)
    };
    let first = fcall(&mut conn, r#"{"n":1}"#, "job-7:step-3").unwrap();
    // The publisher's connection dies before it could be sure of the reply; its client
    // library reconnects and sends the same command again.
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    assert!(
        fcall(&mut conn, r#"{"n":1}"#, "job-7:step-3").is_err(),
        "the old connection is gone"
    );
    let mut conn = redis_client.get_connection().unwrap();
    let retried = fcall(&mut conn, r#"{"n":1}"#, "job-7:step-3").unwrap();
    assert_eq!(retried, first);
    let next = fcall(&mut conn, r#"{"n":2}"#, "job-7:step-4").unwrap();
    assert_eq!(next, first + 1);

    assert_eq!(client.recv().await["data"]["n"], 1);
    assert_eq!(client.recv().await["data"]["n"], 2);
    client.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn fcall_refuses_payloads_and_users_that_would_forge_an_envelope() {
    let redis = RedisServer::start();
    let _gw = Gateway::start_on_redis("n1", &redis, &[]).await;
    let redis_client = redis::Client::open(redis.url()).unwrap();
    let mut conn = redis_client.get_connection().unwrap();
    let refused: redis::RedisResult<u64> = redis::cmd("FCALL")
        .arg("fanout_publish")
        .arg(1)
        .arg("room:x")
        .arg(b"\x00mvictim\x00{}".as_slice())
        .query(&mut conn);
    assert!(refused.unwrap_err().to_string().contains("NUL"));
    let refused: redis::RedisResult<u64> = redis::cmd("FCALL")
        .arg("fanout_publish")
        .arg(1)
        .arg("dag:x")
        .arg("{}")
        .arg(b"a\x00b".as_slice())
        .query(&mut conn);
    assert!(refused.unwrap_err().to_string().contains("NUL"));
}
