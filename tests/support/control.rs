//! The backend's control of sessions across three nodes, written once for every deployment
//! (one Redis, a Redis Cluster): each command, sent over HTTP to one node or with FCALL from
//! redis-cli, reaches the user's sessions on every node.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;

/// A connection token for `sub`, issued a minute ago, granting `room:*`.
pub fn token_issued_a_minute_ago(sub: &str) -> String {
    token_with(json!({
        "sub": sub,
        "exp": unix_now() + 3600,
        "iat": unix_now() - 60,
        "channels": ["room:*"],
    }))
}

/// The next frame that is not a message of `room:chatter` (which other scenarios publish).
async fn next_notice(client: &mut Client) -> Seen {
    loop {
        let seen = client.next().await;
        if let Seen::Json(v) = &seen
            && v["type"] == "message"
        {
            continue;
        }
        return seen;
    }
}

async fn expect_json(client: &mut Client) -> Value {
    match next_notice(client).await {
        Seen::Json(v) => v,
        other => panic!("expected a frame, got {other:?}"),
    }
}

async fn expect_close(client: &mut Client) -> u16 {
    loop {
        match next_notice(client).await {
            Seen::Close(code, _) => return code.unwrap_or(1005),
            Seen::Json(v) if v["type"] == "disconnect" => continue,
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

/// Runs every control command against `nodes` (three gateways sharing one broker); `cli`
/// runs a redis-cli command against that broker and returns its output.
pub async fn every_node_applies_the_backends_commands(
    nodes: [&Gateway; 3],
    cli: &dyn Fn(&[&str]) -> String,
) {
    let mut ada = Vec::new();
    for node in nodes {
        let (mut client, _) = node.connect(&token_issued_a_minute_ago("ada")).await;
        client.subscribe("room:ops").await;
        ada.push(client);
    }
    let mut bob = nodes[1].connect_as("bob", &["room:*"]).await;
    bob.subscribe("room:ops").await;

    // The registry knows every node.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, info) = nodes[1].api_get("/api/info").await;
        assert_eq!(status, 200, "{info}");
        if info["nodes"].as_array().map_or(0, Vec::len) == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "every node in /api/info: {info}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Unsubscribe over HTTP on one node: ada's connections on all three lose the channel.
    let (status, body) = nodes[0]
        .post(
            "/api/unsubscribe",
            &json!({"user": "ada", "channel": "room:ops"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for client in &mut ada {
        assert_eq!(
            expect_json(client).await,
            json!({"type": "unsubscribed", "channel": "room:ops", "server": true})
        );
    }

    // Subscribe with FCALL from redis-cli: the same on every node.
    let reply = cli(&[
        "FCALL",
        "fanout_subscribe",
        "1",
        "control",
        "ada",
        "room:dev",
    ]);
    assert_eq!(reply, "1", "FCALL fanout_subscribe: {reply}");
    for client in &mut ada {
        let subscribed = expect_json(client).await;
        assert_eq!(
            (
                &subscribed["type"],
                &subscribed["channel"],
                &subscribed["server"]
            ),
            (&json!("subscribed"), &json!("room:dev"), &json!(true))
        );
    }
    nodes[2].publish("room:dev", json!("to all of ada")).await;
    for client in &mut ada {
        assert_eq!(client.recv().await["data"], "to all of ada");
    }

    // The channels, summed over the nodes.
    let (status, listed) = nodes[2].api_get("/api/channels?pattern=room:*").await;
    assert_eq!(status, 200, "{listed}");
    let count = |name: &str| {
        listed["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == name)
            .map(|c| c["subscribers"].clone())
    };
    assert_eq!(count("room:dev"), Some(json!(3)), "{listed}");
    assert_eq!(count("room:ops"), Some(json!(1)), "{listed}");
    assert_eq!(listed["missing_nodes"], json!([]));

    // Revoke ada's tokens on one node: every session closes, and the token is refused
    // everywhere.
    let (status, body) = nodes[1]
        .post("/api/revoke", &json!({"user": "ada", "before": unix_now()}))
        .await;
    assert_eq!(status, 200, "{body}");
    for client in &mut ada {
        assert_eq!(expect_close(client).await, 4003);
    }
    for node in nodes {
        let refused = node
            .try_connect(Some(&token_issued_a_minute_ago("ada")), &[])
            .await
            .err()
            .expect("a revoked token is refused on every node");
        assert_eq!(refused.status, 401, "{}", refused.body);
    }

    // Disconnect bob for good with FCALL, and the library refuses bad calls.
    let reply = cli(&[
        "FCALL",
        "fanout_disconnect",
        "1",
        "control",
        "bob",
        "",
        "maintenance",
        "0",
    ]);
    assert_eq!(reply, "1", "FCALL fanout_disconnect: {reply}");
    let notice = expect_json(&mut bob).await;
    assert_eq!(
        notice,
        json!({"type": "disconnect", "code": 4005, "reason": "maintenance", "reconnect": false})
    );
    assert_eq!(expect_close(&mut bob).await, 4005);
    for (args, expected) in [
        (
            vec!["FCALL", "fanout_disconnect", "1", "users", "bob"],
            "the key is always `control`",
        ),
        (
            vec!["FCALL", "fanout_disconnect", "1", "control", "not a user"],
            "invalid user id",
        ),
        (
            vec!["FCALL", "fanout_subscribe", "1", "control", "bob", "nope"],
            "invalid fanout channel name",
        ),
        (
            vec!["FCALL", "fanout_revoke_token", "1", "control", "t1"],
            "usage",
        ),
    ] {
        let reply = cli(&args);
        assert!(reply.contains(expected), "{args:?}: {reply}");
    }
}

/// Waits until `/api/info` on `node` lists exactly `ids`.
pub async fn wait_for_nodes(node: &Gateway, ids: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, info) = node.api_get("/api/info").await;
        let mut listed: Vec<String> = info["nodes"]
            .as_array()
            .map(|n| {
                n.iter()
                    .filter_map(|n| n["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        listed.sort();
        if listed == ids {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/api/info lists {listed:?}, expected {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
