//! Clients' decisions reach the backend through a durable Redis stream.

use std::process::Command;

use serde_json::json;

use crate::support::*;
use crate::twoway_config;

fn worker(redis: &RedisServer, max: u32) -> std::process::Output {
    Command::new("php")
        .arg(format!(
            "{}/examples/php/worker.php",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args([
            "--port",
            &redis.port.to_string(),
            "--max",
            &max.to_string(),
            "--timeout",
            "20",
        ])
        .output()
        .expect("php (apt-get install php-cli php-redis)")
}

#[tokio::test]
async fn a_human_decision_waits_in_the_inbox_until_the_worker_handles_it_and_replies() {
    let cfg = twoway_config();
    let redis = RedisServer::start();
    let node = Gateway::start_on_redis("n1", &redis, &["--config", &cfg]).await;
    let (mut dashboard, ack) = node.connect(&token("42", &["dag:*"], 3600)).await;
    dashboard.subscribe("dag:7").await;

    // No backend is running: the decision is kept.
    // Shaped as docs/events.md describes it.
    let decision = json!({"type": "human_decision", "data": {"node_id": "n3", "decision": "approve"}, "timestamp": 1732226400});
    let reply = dashboard
        .request(json!({"type": "send", "channel": "dag:7", "data": decision, "id": "d1"}))
        .await;
    assert_eq!(reply["type"], "sent", "{reply}");
    assert_eq!(reply["id"], "d1");
    let stream_id = reply["stream_id"].as_str().unwrap().to_owned();
    let entry = redis.cli(&["XRANGE", "fanout:inbox", "-", "+"]);
    let fields: Vec<&str> = entry.lines().collect();
    assert_eq!(fields[0], stream_id);
    let field = |name: &str| {
        fields
            .iter()
            .position(|f| *f == name)
            .map(|i| fields[i + 1])
            .unwrap()
    };
    assert_eq!(field("channel"), "dag:7");
    assert_eq!(field("user"), "42", "identity from the token");
    assert_eq!(field("conn_id"), ack["conn_id"].as_str().unwrap());
    assert_eq!(field("node"), "n1");
    assert!(field("received_at").parse::<i64>().unwrap() > 1_700_000_000_000);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(field("data")).unwrap(),
        decision
    );

    // The PHP worker consumes it with a consumer group, acknowledges, and publishes back.
    let out = worker(&redis, 1);
    assert!(
        out.status.success(),
        "worker: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let update = dashboard.recv().await;
    assert_eq!(update["channel"], "dag:7");
    assert_eq!(update["data"]["type"], "node_state");
    assert_eq!(
        update["data"]["data"],
        json!({"node_id": "n3", "state": "running", "decided_by": "42"})
    );
    assert!(update["offset"].is_u64(), "published with history");
    let pending = redis.cli(&["XPENDING", "fanout:inbox", "dag-workers"]);
    assert_eq!(pending.lines().next(), Some("0"), "acknowledged: {pending}");
    let _ = std::fs::remove_file(cfg);
}

#[tokio::test]
async fn send_is_permission_checked_and_rate_limited() {
    let cfg = twoway_config();
    let redis = RedisServer::start();
    let node = Gateway::start_on_redis(
        "n1",
        &redis,
        &["--config", &cfg, "--max-publishes-per-s", "2"],
    )
    .await;
    let mut c = node.connect_as("1", &["dag:7"]).await;
    let reply = c
        .request(json!({"type": "send", "channel": "dag:8", "data": 1}))
        .await;
    assert_eq!(reply["code"], "forbidden");
    for i in 0..5 {
        c.send(json!({"type": "send", "channel": "dag:7", "data": i}))
            .await;
    }
    let mut kinds = Vec::new();
    for _ in 0..5 {
        kinds.push(c.recv().await["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        kinds.iter().filter(|k| *k == "sent").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(redis.cli(&["XLEN", "fanout:inbox"]), "2");
    let _ = std::fs::remove_file(cfg);
}

#[tokio::test]
async fn without_redis_send_says_the_inbox_is_unsupported_so_clients_do_not_retry() {
    let gw = Gateway::start(&[]);
    let mut c = gw.connect_as("1", &["dag:*"]).await;
    let reply = c
        .request(json!({"type": "send", "channel": "dag:7", "data": {}}))
        .await;
    assert_eq!(reply["code"], "unsupported");
    assert!(
        reply["message"].as_str().unwrap().contains("redis"),
        "{reply}"
    );
}
