//! SSE on a cluster: a plain `curl -N` stream receives what `redis-cli` publishes, and a
//! stream cut by a node kill behind HAProxy resumes with `Last-Event-ID`, losing nothing and
//! repeating nothing.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn curl_receives_what_redis_cli_publishes() {
    let redis = RedisServer::start();
    let gw = Gateway::start_on_redis("n1", &redis, &[]).await;
    let url = gw.http(&format!(
        "/sse?token={}&channel=room:news",
        token("5", &["room:*"], 3600)
    ));
    let mut curl = Command::new("curl")
        .args(["-sN", &url])
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let stdout = curl.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| loop {
        let line = rx.recv_timeout(WAIT).expect("a line from curl");
        if line.contains(needle) {
            return line;
        }
    };
    wait_for("\"type\":\"subscribed\"");
    eventually("the node subscribed in Redis", || {
        redis.numsub("fanout:room:news") == 1
    })
    .await;
    redis.cli(&[
        "PUBLISH",
        "fanout:room:news",
        r#"{"type":"notification","title":"hello"}"#,
    ]);
    let event = wait_for("\"title\":\"hello\"");
    assert!(
        event.starts_with("data: {\"type\":\"message\",\"channel\":\"room:news\""),
        "{event}"
    );
    let _ = curl.kill();
    let _ = curl.wait();
}

/// Opens a stream through the balancer, retrying while it still routes to a dead node.
async fn open_via(lb: &Haproxy, token: &str, query: &str, last_id: Option<&str>) -> SseClient {
    let base = format!("http://127.0.0.1:{}", lb.port);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match SseClient::open(&base, token, query, last_id).await {
            Ok(c) => return c,
            Err(refused) => {
                assert!(tokio::time::Instant::now() < deadline, "{refused}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_stream_cut_by_a_node_kill_resumes_with_last_event_id_exactly_once() {
    let redis = RedisServer::start();
    let nodes = [
        Gateway::start_on_redis("n1", &redis, &[]).await,
        Gateway::start_on_redis("n2", &redis, &[]).await,
    ];
    let lb = Haproxy::start(&nodes.iter().collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let tok = token("77", &["dag:*"], 3600);
    let mut sse = open_via(&lb, &tok, "channel=dag:run", None).await;
    let serving = sse.ack["node"].as_str().unwrap().to_owned();
    assert_eq!(sse.recv().await["type"], "subscribed");

    let total = 300;
    let publisher = redis.fcall_in_background("dag:run", total, Duration::from_millis(5));
    let mut seen: Vec<u64> = Vec::new();
    let mut killed = false;
    while seen.len() < total {
        match sse.next_within(WAIT).await {
            Ok(Some(event)) => match event.event.as_str() {
                "message" => seen.push(event.data["data"].as_u64().unwrap()),
                "subscribed" => assert_eq!(event.data["recovered"], true, "{:?}", event.data),
                other => panic!("unexpected event {other}: {:?}", event.data),
            },
            // Ended or silent: the node is gone; come back like a browser does.
            _ => {
                let last = sse.last_id.clone();
                sse = open_via(&lb, &tok, "channel=dag:run", last.as_deref()).await;
                assert_ne!(sse.ack["node"], serving.as_str());
            }
        }
        if !killed && seen.len() == 60 {
            let victim = if serving == "n1" {
                &nodes[0]
            } else {
                &nodes[1]
            };
            victim.signal("KILL");
            killed = true;
        }
    }
    publisher.await.unwrap();
    let expected: Vec<u64> = (0..total as u64).collect();
    assert_eq!(seen, expected, "every message exactly once, in order");
}

#[tokio::test]
async fn frames_posted_to_another_node_reach_the_stream_through_redis() {
    let redis = RedisServer::start();
    let n1 = Gateway::start_on_redis("n1", &redis, &[]).await;
    let n2 = Gateway::start_on_redis("n2", &redis, &[]).await;
    let tok = token("31", &["room:*"], 3600);
    let mut sse = SseClient::open(&n1.http(""), &tok, "", None).await.unwrap();
    assert!(sse.conn_id.ends_with(".n1"), "{}", sse.conn_id);
    eventually("n1 listens on its relay channel", || {
        redis.numsub("!fanout:node:n1") == 1
    })
    .await;
    // The balancer sent the POST to n2: it is relayed to n1, and answered on the stream.
    let body = [
        json!({"type": "ping", "id": 1}).to_string(),
        json!({"type": "subscribe", "channel": "room:relay", "id": 2}).to_string(),
    ]
    .join("\n");
    let (status, answer) = post_frames(&n2.http(""), &sse.conn_id, &tok, body).await;
    assert_eq!(
        (status, answer),
        (202, json!({"accepted": 2, "relayed": true}))
    );
    assert_eq!(sse.recv().await, json!({"type": "pong", "id": 1}));
    assert_eq!(sse.recv().await["type"], "subscribed");

    // Another user's frames are not taken, whichever node they reach.
    let other = token("32", &["room:*"], 3600);
    let ping = json!({"type": "ping", "id": 9}).to_string();
    let (status, _) = post_frames(&n1.http(""), &sse.conn_id, &other, ping.clone()).await;
    assert_eq!(status, 403);
    post_frames(&n2.http(""), &sse.conn_id, &other, ping.clone()).await;
    assert!(
        sse.next_within(Duration::from_millis(500)).await.is_err(),
        "nothing for user 32"
    );

    // A session on a node that is not there is plainly gone.
    let (status, answer) = post_frames(&n2.http(""), "0123456789abcdef.n9", &tok, ping).await;
    assert_eq!(status, 404, "{answer}");
}
