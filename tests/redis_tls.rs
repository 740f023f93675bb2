//! Redis over TLS (`rediss://`): the real gateway against a real `redis-server` that accepts
//! TLS only, with a CA and certificates the test makes with `openssl`.
//!
//! Every connection the gateway opens must speak TLS, since the server has no plain port:
//! pub/sub (delivery), the command pool (the HTTP publish, history reads for recovery,
//! presence, the function library it loads), and the relay listener. A handshake that cannot succeed (a CA
//! that did not sign the server's certificate, no client certificate for a server that
//! requires one) keeps the node not ready, says why in its log, and never prints the password.

#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use serde_json::json;

use support::*;

/// The Redis password of these tests: it must never appear in the gateway's log.
const PASSWORD: &str = "tls-test-password-7f3a";

/// How long a node that cannot connect is watched staying not ready (several retries).
const STAYS_NOT_READY: Duration = Duration::from_secs(3);

fn path(p: std::path::PathBuf) -> String {
    p.display().to_string()
}

/// Publishes with plain PUBLISH until the client receives it: messages published while a node
/// is resubscribing are lost (pub/sub is at-most-once without history).
async fn publish_until_received(redis: &RedisServer, client: &mut Client, channel: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        redis.cli(&["PUBLISH", &format!("fanout:{channel}"), "\"ping\""]);
        match client.next_within(Duration::from_millis(200)).await {
            Some(Seen::Json(v)) if v["type"] == "message" && v["channel"] == channel => {
                assert_eq!(v["data"], "ping", "{v}");
                return;
            }
            // History channels are told of the restart (`resync`); that is not delivery.
            Some(Seen::Json(v)) if v["type"] == "resync" => {}
            None => {}
            Some(other) => panic!("unexpected {other:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery over TLS never resumed"
        );
    }
}

/// Waits until the log has a line containing every one of `needles`, and returns that line.
async fn log_line(gateway: &Gateway, needles: &[&str]) -> String {
    let mut found = String::new();
    eventually(&format!("a log line with {needles:?}"), || {
        match gateway
            .logs()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            Some(line) => {
                found = line.to_owned();
                true
            }
            None => false,
        }
    })
    .await;
    found
}

/// Asserts the node is not ready now and still is not after a few reconnect attempts.
async fn stays_not_ready(gateway: &Gateway) {
    gateway.wait_ready(false).await;
    tokio::time::sleep(STAYS_NOT_READY).await;
    let (status, body) = gateway.get("/readyz").await;
    assert_eq!(status, 503, "{body}\n{}", gateway.logs());
}

#[tokio::test]
async fn over_rediss_backends_reach_websockets_history_recovers_and_outages_heal() {
    let pki = TestPki::create();
    let mut redis = RedisServer::start_tls(TlsServer {
        pki: &pki,
        require_client_cert: false,
        password: Some(PASSWORD),
    });
    assert!(redis.url().starts_with("rediss://"));
    // Presence on room: channels, to see its functions run over TLS as well.
    let config = pki.dir().join("fanout.toml");
    std::fs::write(&config, "[namespaces.room]\npresence = true\n").expect("write config");
    let gw = Gateway::start_on_redis(
        "tls-node",
        &redis,
        &[
            "--redis-tls-ca-file",
            &path(pki.ca_cert()),
            "--config",
            &path(config),
        ],
    )
    .await;
    let started = log_line(&gw, &["redis broker started"]).await;
    assert!(
        started.contains("TLS") && started.contains("ca.crt"),
        "the start line says how Redis is reached: {started}"
    );

    // A backend publishes with history through the function library, over TLS.
    let mut a = gw.connect_as("a", &["dag:*", "room:*"]).await;
    let reply = a
        .request(json!({"type": "subscribe", "channel": "dag:tls"}))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let mut tracker = Tracker::default();
    tracker.start_at(&reply);
    assert_eq!(
        redis.cli(&["FCALL", "fanout_publish", "1", "dag:tls", r#"{"n":1}"#]),
        "1"
    );
    a.read_until("dag:tls", &mut tracker, 1).await;
    // The HTTP API publishes through the command pool.
    gw.publish("dag:tls", json!({"n": 2})).await;
    a.read_until("dag:tls", &mut tracker, 2).await;
    assert_eq!(tracker.seen, [json!({"n": 1}), json!({"n": 2})]);
    assert_eq!(tracker.offset, 2);

    // A client that saw offset 1 recovers exactly what it missed, from the stream over TLS.
    let mut b = gw.connect_as("b", &["dag:*"]).await;
    let mut late = Tracker {
        epoch: tracker.epoch.clone(),
        offset: 1,
        ..Tracker::default()
    };
    let reply = b.recover("dag:tls", &late).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    b.read_until("dag:tls", &mut late, 1).await;
    assert_eq!(late.seen, [json!({"n": 2})]);
    assert_eq!(late.duplicates, 0);

    // The relay listener (client frames for this node's SSE sessions) is connected too.
    eventually("the relay channel subscribed over TLS", || {
        redis.numsub("!fanout:node:tls-node") == 1
    })
    .await;

    // Presence (a Redis function through the command pool).
    a.subscribe("room:tls").await;
    let reply = a
        .request(json!({"type": "presence", "channel": "room:tls", "id": "who"}))
        .await;
    assert_eq!(reply["id"], "who", "{reply}");
    assert_eq!(reply["members"][0]["user"], "a", "{reply}");

    // An outage of the TLS Redis is survived like any other.
    redis.stop();
    gw.wait_ready(false).await;
    redis.restart();
    gw.wait_ready(true).await;
    publish_until_received(&redis, &mut a, "room:tls").await;

    let logs = gw.logs();
    assert!(
        !logs.contains(PASSWORD),
        "the Redis password leaked into the log:\n{logs}"
    );
}

#[tokio::test]
async fn a_server_requiring_client_certificates_refuses_a_node_without_one_and_serves_one_with_one()
{
    let pki = TestPki::create();
    let redis = RedisServer::start_tls(TlsServer {
        pki: &pki,
        require_client_cert: true,
        password: Some(PASSWORD),
    });
    let url = redis.url();
    let ca = path(pki.ca_cert());

    let without = Gateway::start_named(
        "no-client-cert",
        &["--redis-url", &url, "--redis-tls-ca-file", &ca],
    );
    stays_not_ready(&without).await;
    let line = log_line(
        &without,
        &["redis pub/sub connect failed in the TLS handshake"],
    )
    .await;
    assert!(
        line.contains("WARN") || line.contains("ERROR"),
        "logged as a warning or an error: {line}"
    );
    assert!(
        line.contains("CertificateRequired") && line.contains("redis_tls_cert_file"),
        "the log says a client certificate is missing and how to give one: {line}"
    );
    assert!(!without.logs().contains(PASSWORD), "{}", without.logs());
    drop(without);

    let tls = pki.gateway_args();
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let with = Gateway::start_on_redis("client-cert", &redis, &tls).await;
    let mut client = with.connect_as("c", &["room:*"]).await;
    client.subscribe("room:mtls").await;
    redis.cli(&["PUBLISH", "fanout:room:mtls", r#"{"mutual":"tls"}"#]);
    let message = client.recv().await;
    assert_eq!(message["data"]["mutual"], "tls", "{message}");
    with.publish("room:mtls", json!("over the pool")).await;
    assert_eq!(client.recv().await["data"], "over the pool");
    assert!(!with.logs().contains(PASSWORD), "{}", with.logs());
}

#[tokio::test]
async fn a_ca_that_did_not_sign_the_server_certificate_keeps_the_node_not_ready() {
    let pki = TestPki::create();
    let other = TestPki::create();
    let redis = RedisServer::start_tls(TlsServer {
        pki: &pki,
        require_client_cert: false,
        password: Some(PASSWORD),
    });
    let gw = Gateway::start_named(
        "wrong-ca",
        &[
            "--redis-url",
            &redis.url(),
            "--redis-tls-ca-file",
            &path(other.ca_cert()),
        ],
    );
    stays_not_ready(&gw).await;
    let line = log_line(&gw, &["redis pub/sub connect failed in the TLS handshake"]).await;
    assert!(
        line.contains("WARN") || line.contains("ERROR"),
        "logged as a warning or an error: {line}"
    );
    assert!(
        line.contains("invalid peer certificate: UnknownIssuer")
            && line.contains("redis_tls_ca_file"),
        "the log says the server's certificate is not trusted, and what to check: {line}"
    );
    // Publishing says the broker is unavailable instead of hanging.
    let (status, body) = gw
        .post("/api/publish", &json!({"channel": "room:x", "data": 1}))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(!gw.logs().contains(PASSWORD), "{}", gw.logs());
}
