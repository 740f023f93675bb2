//! History and recovery across nodes on a real Redis: publishing with FCALL from redis-cli
//! and PHP, Redis restarts, killed pub/sub connections, killed nodes.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::property::recovering_subscriber_ends_gap_free;
use crate::support::*;

fn fcall(redis: &RedisServer, channel: &str, payload: &str) -> u64 {
    let out = redis.cli(&["FCALL", "fanout_publish", "1", channel, payload]);
    out.parse()
        .unwrap_or_else(|_| panic!("FCALL answered {out:?}"))
}

#[tokio::test]
async fn fcall_from_redis_cli_and_php_returns_the_offset_and_reaches_subscribers() {
    let redis = RedisServer::start();
    let node = Gateway::start_on_redis("n1", &redis, &[]).await;
    let mut c = node.connect_as("1", &["dag:*", "room:*"]).await;
    let reply = c
        .request(json!({"type": "subscribe", "channel": "dag:7"}))
        .await;
    let epoch = reply["epoch"].as_str().unwrap().to_owned();
    assert_eq!(
        fcall(&redis, "dag:7", r#"{"type":"node_state","node":"n1"}"#),
        1
    );
    let msg = c.recv().await;
    assert_eq!(
        (msg["offset"].as_u64(), msg["epoch"].as_str()),
        (Some(1), Some(epoch.as_str()))
    );
    assert_eq!(msg["data"]["node"], "n1");

    let php = r#"$r = new Redis(); $r->connect('127.0.0.1', (int) $argv[1]);
        echo $r->rawCommand('FCALL', 'fanout_publish', 1, 'dag:7', json_encode(['type' => 'cost_update', 'usd' => 0.25]));"#;
    let out = Command::new("php")
        .args(["-r", php, &redis.port.to_string()])
        .output()
        .expect("php");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "2",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msg = c.recv().await;
    assert_eq!(
        (msg["offset"].as_u64(), msg["data"]["usd"].as_f64()),
        (Some(2), Some(0.25))
    );

    let (status, body) = node
        .post("/api/publish", &json!({"channel": "dag:7", "data": 3}))
        .await;
    assert_eq!((status, body["offset"].as_u64()), (200, Some(3)));
    assert_eq!(c.recv().await["offset"], 3);
    // The publish latency histogram times this node's publishes only (one so far), not the
    // history read of the subscribe.
    assert_eq!(
        node.metric("fanout_redis_publish_duration_seconds_count")
            .await,
        1.0
    );

    // A channel without history: FCALL is a plain publish and answers 0.
    c.subscribe("room:r").await;
    assert_eq!(fcall(&redis, "room:r", "\"hi\""), 0);
    let msg = c.recv().await;
    assert_eq!(msg["data"], "hi");
    assert!(msg.get("offset").is_none());
    // A plain PUBLISH on a history channel still works, without an offset.
    redis.cli(&["PUBLISH", "fanout:dag:7", "\"fire and forget\""]);
    let msg = c.recv().await;
    assert_eq!(msg["data"], "fire and forget");
    assert!(msg.get("offset").is_none());
}

#[tokio::test]
async fn a_client_back_from_a_disconnect_gets_the_100_it_missed_then_live() {
    let redis = RedisServer::start();
    let n1 = Gateway::start_on_redis("n1", &redis, &[]).await;
    let n2 = Gateway::start_on_redis("n2", &redis, &[]).await;
    let mut tracker = Tracker::default();
    let mut c = n1.connect_as("1", &["dag:*"]).await;
    let reply = c
        .request(json!({"type": "subscribe", "channel": "dag:7"}))
        .await;
    tracker.start_at(&reply);
    drop(c);
    for n in 0..100 {
        if n % 2 == 0 {
            fcall(&redis, "dag:7", &json!({"n": n}).to_string());
        } else {
            n2.publish("dag:7", json!({"n": n})).await;
        }
    }
    // Back, on the other node.
    let mut c = n2.connect_as("1", &["dag:*"]).await;
    let reply = c.recover("dag:7", &tracker).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    c.read_until("dag:7", &mut tracker, 100).await;
    fcall(&redis, "dag:7", &json!({"n": 100}).to_string());
    c.read_until("dag:7", &mut tracker, 101).await;
    assert_eq!(
        tracker.seen,
        (0..101).map(|n| json!({"n": n})).collect::<Vec<_>>()
    );
    assert_eq!(tracker.duplicates, 0);
}

#[tokio::test]
async fn after_redis_restarts_without_persistence_recovery_says_reload_under_a_new_epoch() {
    let mut redis = RedisServer::start();
    let node = Gateway::start_on_redis("n1", &redis, &[]).await;
    let mut tracker = Tracker::default();
    let mut c = node.connect_as("1", &["dag:*"]).await;
    let reply = c
        .request(json!({"type": "subscribe", "channel": "dag:7"}))
        .await;
    tracker.start_at(&reply);
    for n in 0..3 {
        fcall(&redis, "dag:7", &n.to_string());
    }
    c.read_until("dag:7", &mut tracker, 3).await;
    drop(c);

    redis.restart();
    node.wait_ready(true).await;
    // The node reloads the function library by itself; backends can FCALL again.
    let deadline = tokio::time::Instant::now() + WAIT;
    while redis
        .cli(&["FUNCTION", "LIST", "LIBRARYNAME", "fanout"])
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "library not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fcall(&redis, "dag:7", "\"after\""), 1, "offsets restart");

    let mut c = node.connect_as("1", &["dag:*"]).await;
    let reply = c.recover("dag:7", &tracker).await;
    assert_eq!(reply["recovered"], false, "{reply}");
    assert_ne!(reply["epoch"], tracker.epoch.as_str());
    assert_eq!(reply["offset"], 1);
}

#[tokio::test]
async fn a_killed_pubsub_connection_loses_nothing_on_history_channels() {
    let redis = RedisServer::start();
    let node = Gateway::start_on_redis("n1", &redis, &[]).await;
    let mut tracker = Tracker::default();
    let mut c = node.connect_as("1", &["dag:*"]).await;
    let reply = c
        .request(json!({"type": "subscribe", "channel": "dag:k"}))
        .await;
    tracker.start_at(&reply);
    let total = 400;
    let publisher = redis.fcall_in_background("dag:k", total, Duration::from_millis(2));
    let killer = {
        let port = redis.port;
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let _ = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "CLIENT", "KILL", "TYPE", "pubsub"])
                    .output();
            }
        })
    };
    c.read_until("dag:k", &mut tracker, total).await;
    publisher.await.unwrap();
    killer.await.unwrap();
    assert_eq!(
        tracker.seen,
        (0..total).map(|n| json!(n)).collect::<Vec<_>>()
    );
    assert_eq!(tracker.duplicates, 0);
    assert!(node.metric("fanout_redis_reconnects_total").await >= 1.0);
}

#[tokio::test]
async fn a_recovering_subscriber_on_a_cluster_misses_nothing() {
    let redis = RedisServer::start();
    let n1 = Gateway::start_on_redis("n1", &redis, &[]).await;
    let n2 = Gateway::start_on_redis("n2", &redis, &[]).await;
    for seed in 0..3 {
        recovering_subscriber_ends_gap_free(&n1, &[&n1, &n2], 100 + seed).await;
    }
}

#[tokio::test]
async fn clients_of_a_node_killed_mid_stream_recover_every_message_exactly_once() {
    let redis = RedisServer::start();
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        nodes.push(Gateway::start_on_redis(name, &redis, &[]).await);
    }
    let lb = Haproxy::start(&nodes.iter().collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let total = 300usize;
    let lb_port = lb.port;

    // Six clients, spread over the nodes, each following the recovery protocol.
    let mut clients = Vec::new();
    for i in 0..6 {
        let (mut c, _) = lb.connect(&token(&format!("u{i}"), &["dag:*"], 3600)).await;
        let mut tracker = Tracker::default();
        let reply = c
            .request(json!({"type": "subscribe", "channel": "dag:lb"}))
            .await;
        tracker.start_at(&reply);
        clients.push(tokio::spawn(async move {
            let mut reconnects = 0;
            while tracker.seen.len() < total {
                match c.next().await {
                    Seen::Json(m) if m["type"] == "message" => tracker.process(&m),
                    Seen::Json(m) if m["type"] == "resync" => {}
                    Seen::Json(m) => panic!("unexpected {m}"),
                    Seen::Close(..) | Seen::Ended => {
                        reconnects += 1;
                        let user_token = token(&format!("u{i}"), &["dag:*"], 3600);
                        c = connect_via_balancer(lb_port, &user_token).await.0;
                        let reply = c.recover("dag:lb", &tracker).await;
                        assert_eq!(reply["recovered"], true, "{reply}");
                    }
                }
            }
            (tracker, reconnects)
        }));
    }

    let publisher = redis.fcall_in_background("dag:lb", total, Duration::from_millis(3));
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes[1].signal("KILL");
    publisher.await.unwrap();

    let mut reconnected = 0;
    for client in clients {
        let (tracker, reconnects) = client.await.unwrap();
        assert_eq!(
            tracker.seen,
            (0..total).map(|n| json!(n)).collect::<Vec<_>>()
        );
        assert_eq!(tracker.duplicates, 0);
        reconnected += reconnects;
    }
    assert!(
        reconnected >= 1,
        "the killed node's clients had to reconnect"
    );
}
