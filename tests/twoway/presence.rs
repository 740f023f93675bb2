//! Who is here, cluster-wide; joins, leaves and statuses as they happen.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;
use crate::twoway_config;

fn token_info(user: &str, channels: &[&str], info: Value) -> String {
    token_with(json!({"sub": user, "exp": unix_now() + 3600, "channels": channels, "info": info}))
}

/// Reads frames until a `kind` event about `user` arrives (skipping others, such as the
/// reader's own join).
async fn next_of(c: &mut Client, kind: &str, user: &str) -> Value {
    loop {
        let f = c.recv().await;
        if f["type"] == kind && f["user"] == user {
            return f;
        }
    }
}

/// Sends a request and returns its reply (the frame with the same `id`), skipping events.
async fn ask(c: &mut Client, mut request: Value) -> Value {
    request["id"] = json!("req");
    c.send(request).await;
    loop {
        let f = c.recv().await;
        if f["id"] == "req" {
            return f;
        }
    }
}

#[tokio::test]
async fn presence_lists_members_with_info_and_announces_joins_and_leaves() {
    let cfg = twoway_config();
    let gw = Gateway::start(&["--config", &cfg]);
    let (mut alice, _) = gw
        .connect(&token_info("alice", &["room:*"], json!({"name": "Alice"})))
        .await;
    alice.subscribe("room:lobby").await;
    let (mut bob, bob_ack) = gw
        .connect(&token_info("bob", &["room:*"], json!({"name": "Bob"})))
        .await;
    bob.subscribe("room:lobby").await;

    let join = next_of(&mut alice, "join", "bob").await;
    assert_eq!(join["user"], "bob");
    assert_eq!(join["conn_id"], bob_ack["conn_id"]);
    assert_eq!(join["info"], json!({"name": "Bob"}));

    let reply = ask(
        &mut alice,
        json!({"type": "presence", "channel": "room:lobby"}),
    )
    .await;
    let mut users: Vec<&str> = reply["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    users.sort();
    assert_eq!(users, ["alice", "bob"]);
    assert!(
        reply["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["node"] == "test-node")
    );
    let stats = ask(
        &mut alice,
        json!({"type": "presence_stats", "channel": "room:lobby"}),
    )
    .await;
    assert_eq!(
        (stats["connections"].as_u64(), stats["users"].as_u64()),
        (Some(2), Some(2))
    );

    ask(
        &mut bob,
        json!({"type": "unsubscribe", "channel": "room:lobby"}),
    )
    .await;
    let leave = next_of(&mut alice, "leave", "bob").await;
    assert_eq!(
        (leave["user"].as_str(), leave["conn_id"].as_str()),
        (Some("bob"), bob_ack["conn_id"].as_str())
    );
    // A namespace without presence refuses the request.
    let mut c = gw.connect_as("c", &["dag:*", "room:*", "user:*"]).await;
    let reply = ask(&mut c, json!({"type": "presence", "channel": "user:c"})).await;
    assert_eq!(reply["code"], "bad_request");
    let reply = ask(&mut c, json!({"type": "presence", "channel": "room:other"})).await;
    assert_eq!(reply["members"], json!([]));
    let _ = std::fs::remove_file(cfg);
}

#[tokio::test]
async fn per_user_join_leave_counts_a_users_connections_once() {
    let cfg = twoway_config();
    let gw = Gateway::start(&["--config", &cfg]);
    let mut watcher = gw.connect_as("w", &["team:*"]).await;
    watcher.subscribe("team:a").await;
    let mut tab1 = gw.connect_as("u", &["team:*"]).await;
    tab1.subscribe("team:a").await;
    next_of(&mut watcher, "join", "u").await;
    let mut tab2 = gw.connect_as("u", &["team:*"]).await;
    tab2.subscribe("team:a").await;
    drop(tab1);
    // Neither the second tab opening nor the first closing is news.
    watcher.expect_silence(Duration::from_millis(500)).await;
    drop(tab2);
    next_of(&mut watcher, "leave", "u").await;
    let _ = std::fs::remove_file(cfg);
}

#[tokio::test]
async fn a_status_update_reaches_the_other_subscribers() {
    let cfg = twoway_config();
    let gw = Gateway::start(&["--config", &cfg]);
    let mut console = gw.connect_as("operator", &["dag:*"]).await;
    console.subscribe("dag:7").await;
    let (mut agent, agent_ack) = gw.connect(&token("agent-1", &["dag:*"], 3600)).await;
    agent.subscribe("dag:7").await;
    let reply = agent
        .request(json!({"type": "status", "channel": "dag:7", "status": {"state": "thinking", "detail": "flow X"}, "id": 5}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "status_updated", "channel": "dag:7", "id": 5}),
        "the reply comes before the event"
    );
    let update = next_of(&mut console, "presence_update", "agent-1").await;
    assert_eq!(update["conn_id"], agent_ack["conn_id"]);
    assert_eq!(
        update["status"],
        json!({"state": "thinking", "detail": "flow X"})
    );
    let members = ask(
        &mut console,
        json!({"type": "presence", "channel": "dag:7"}),
    )
    .await;
    let agent_entry = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == "agent-1")
        .cloned()
        .unwrap();
    assert_eq!(agent_entry["status"]["state"], "thinking");
    // Not subscribed: no status.
    let reply = ask(
        &mut agent,
        json!({"type": "status", "channel": "dag:8", "status": 1}),
    )
    .await;
    assert_eq!(reply["code"], "bad_request");
    let _ = std::fs::remove_file(cfg);
}

#[tokio::test]
async fn presence_spans_three_nodes_and_a_killed_nodes_members_leave_within_the_lease() {
    let cfg = twoway_config();
    let redis = RedisServer::start();
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        nodes.push(
            Gateway::start_on_redis(name, &redis, &["--config", &cfg, "--presence-lease-s", "2"])
                .await,
        );
    }
    let mut watcher = nodes[0].connect_as("watcher", &["room:*"]).await;
    watcher.subscribe("room:ops").await;
    let mut others = Vec::new();
    for (i, node) in nodes.iter().enumerate().skip(1) {
        let mut c = node.connect_as(&format!("u{i}"), &["room:*"]).await;
        c.subscribe("room:ops").await;
        others.push(c);
    }
    next_of(&mut watcher, "join", "u1").await;
    next_of(&mut watcher, "join", "u2").await;
    let reply = ask(
        &mut watcher,
        json!({"type": "presence", "channel": "room:ops"}),
    )
    .await;
    let mut seen: Vec<(String, String)> = reply["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap().to_owned(),
                m["node"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("u1".to_owned(), "n2".to_owned()),
            ("u2".to_owned(), "n3".to_owned()),
            ("watcher".to_owned(), "n1".to_owned())
        ]
    );
    // Leases are renewed: members outlive several lease periods.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = ask(
        &mut watcher,
        json!({"type": "presence_stats", "channel": "room:ops"}),
    )
    .await;
    assert_eq!(stats["connections"], 3);

    // n3 dies without a word: its member leaves once its lease runs out (2 s, swept every 2/3 s).
    let killed = Instant::now();
    nodes[2].signal("KILL");
    next_of(&mut watcher, "leave", "u2").await;
    assert!(
        killed.elapsed() < Duration::from_secs(8),
        "left after {:?}",
        killed.elapsed()
    );
    let stats = ask(
        &mut watcher,
        json!({"type": "presence_stats", "channel": "room:ops"}),
    )
    .await;
    assert_eq!(stats["connections"], 2);
    let (status, body) = nodes[1].get("/api/presence?channel=room:ops").await;
    assert_eq!(status, 401, "{body}");
    let _ = std::fs::remove_file(cfg);
}

#[tokio::test]
async fn a_backend_sets_the_status_of_an_agent_that_is_not_connected() {
    let cfg = twoway_config();
    let redis = RedisServer::start();
    // Expired members are swept every third of the lease: keep it short for the test.
    let node =
        Gateway::start_on_redis("n1", &redis, &["--config", &cfg, "--presence-lease-s", "3"]).await;
    let mut console = node.connect_as("operator", &["room:*"]).await;
    console.subscribe("room:agents").await;
    let (status, body) = node
        .post(
            "/api/status",
            &json!({"channel": "room:agents", "user": "summarizer", "status": {"state": "running flow X"}, "info": {"kind": "agent"}, "ttl_s": 2}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let join = next_of(&mut console, "join", "summarizer").await;
    assert_eq!(join["conn_id"], "api:summarizer");
    let update = next_of(&mut console, "presence_update", "summarizer").await;
    assert_eq!(update["status"]["state"], "running flow X");

    let resp = reqwest::Client::new()
        .get(node.http("/api/presence?channel=room:agents"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["connections"].as_u64(), body["users"].as_u64()),
        (Some(2), Some(2))
    );
    let agent = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == "summarizer")
        .cloned()
        .unwrap();
    assert_eq!(agent["status"]["state"], "running flow X");
    assert_eq!(agent["info"]["kind"], "agent");

    // Not renewed: it leaves when its ttl runs out.
    next_of(&mut console, "leave", "summarizer").await;
    let _ = std::fs::remove_file(cfg);
}

#[tokio::test]
async fn setting_an_agents_status_again_is_an_update_not_another_join() {
    let cfg = twoway_config();
    let gw = Gateway::start(&["--config", &cfg]);
    let mut console = gw.connect_as("operator", &["room:*"]).await;
    console.subscribe("room:agents").await;
    for status in [
        json!({"state": "thinking"}),
        json!({"state": "idle"}),
        json!(null),
    ] {
        let (code, body) = gw
            .post(
                "/api/status",
                &json!({"channel": "room:agents", "user": "bot", "status": status}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }
    // Everything the console hears about bot, until it leaves.
    let mut joins = 0;
    let mut states = Vec::new();
    loop {
        let f = console.recv().await;
        if f["user"] != "bot" {
            continue;
        }
        match f["type"].as_str() {
            Some("join") => joins += 1,
            Some("presence_update") => states.push(f["status"]["state"].clone()),
            Some("leave") => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(states, [json!("thinking"), json!("idle")]);
    assert_eq!(joins, 1);
    let _ = std::fs::remove_file(cfg);
}

#[tokio::test]
async fn a_client_clears_its_status_with_null() {
    let cfg = twoway_config();
    let gw = Gateway::start(&["--config", &cfg]);
    let mut watcher = gw.connect_as("w", &["dag:*"]).await;
    watcher.subscribe("dag:1").await;
    let mut agent = gw.connect_as("agent", &["dag:*"]).await;
    agent.subscribe("dag:1").await;
    let reply = ask(
        &mut agent,
        json!({"type": "status", "channel": "dag:1", "status": {"state": "busy"}}),
    )
    .await;
    assert_eq!(reply["type"], "status_updated");
    next_of(&mut watcher, "presence_update", "agent").await;
    let reply = ask(
        &mut agent,
        json!({"type": "status", "channel": "dag:1", "status": null}),
    )
    .await;
    assert_eq!(reply["type"], "status_updated", "{reply}");
    let update = next_of(&mut watcher, "presence_update", "agent").await;
    assert!(update["status"].is_null(), "{update}");
    let _ = std::fs::remove_file(cfg);
}

#[tokio::test]
async fn a_damaged_presence_entry_in_redis_is_skipped_not_fatal() {
    let cfg = twoway_config();
    let redis = RedisServer::start();
    let gw = Gateway::start_on_redis("n1", &redis, &["--config", &cfg]).await;
    let mut alice = gw.connect_as("alice", &["room:*"]).await;
    alice.subscribe("room:ops").await;
    // Someone writes garbage into the channel's presence, with a lease far in the future.
    redis.cli(&["HSET", "fanout:{room:ops}:presence", "garbage", "not json"]);
    redis.cli(&[
        "ZADD",
        "fanout:{room:ops}:presence:exp",
        "99999999999999",
        "garbage",
    ]);
    let reply = ask(
        &mut alice,
        json!({"type": "presence", "channel": "room:ops"}),
    )
    .await;
    assert_eq!(reply["type"], "presence", "{reply}");
    let users: Vec<&str> = reply["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, vec!["alice"]);
    assert!(
        gw.metric("fanout_redis_dropped_total{reason=\"bad_presence_entry\"}")
            .await
            >= 1.0
    );
}
