//! Any backend publishes into Redis; every subscriber on every node receives it.

use std::process::Command;

use serde_json::json;

use crate::support::*;

async fn three_nodes(redis: &RedisServer) -> Vec<Gateway> {
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        nodes.push(Gateway::start_on_redis(name, redis, &[]).await);
    }
    nodes
}

/// One client per node, each subscribed to `channel`.
async fn one_client_per_node(nodes: &[Gateway], channel: &str) -> Vec<Client> {
    let mut clients = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut c = node.connect_as(&format!("u{i}"), &["room:*"]).await;
        c.subscribe(channel).await;
        clients.push(c);
    }
    clients
}

#[tokio::test]
async fn messages_from_redis_cli_php_and_http_reach_clients_on_every_node() {
    let redis = RedisServer::start();
    let nodes = three_nodes(&redis).await;
    let mut clients = one_client_per_node(&nodes, "room:x").await;

    // redis-cli
    let receivers = redis.cli(&[
        "PUBLISH",
        "fanout:room:x",
        r#"{"type":"chat","text":"from redis-cli"}"#,
    ]);
    assert_eq!(receivers, "3", "one Redis subscription per node");
    for c in &mut clients {
        assert_eq!(
            c.recv().await,
            json!({"type": "message", "channel": "room:x", "data": {"type": "chat", "text": "from redis-cli"}})
        );
    }

    // PHP with phpredis, through the example script of docs/publishing.md
    let out = Command::new("php")
        .arg(format!(
            "{}/examples/php/publish.php",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args([
            "room:x",
            r#"{"type":"chat","text":"from PHP"}"#,
            "127.0.0.1",
            &redis.port.to_string(),
        ])
        .output()
        .expect("run php (apt-get install php-cli php-redis)");
    assert!(
        out.status.success(),
        "php failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    for c in &mut clients {
        assert_eq!(c.recv().await["data"]["text"], "from PHP");
    }

    // The HTTP API of any one node
    nodes[1]
        .publish("room:x", json!({"type": "chat", "text": "from HTTP"}))
        .await;
    for c in &mut clients {
        assert_eq!(c.recv().await["data"]["text"], "from HTTP");
    }
}

#[tokio::test]
async fn a_payload_that_is_not_json_arrives_as_a_string() {
    let redis = RedisServer::start();
    let node = Gateway::start_on_redis("n1", &redis, &[]).await;
    let mut client = node.connect_as("1", &["room:*"]).await;
    client.subscribe("room:text").await;
    redis.cli(&["PUBLISH", "fanout:room:text", "plain words, not JSON"]);
    assert_eq!(client.recv().await["data"], "plain words, not JSON");
    redis.cli(&["PUBLISH", "fanout:room:text", "42"]);
    assert_eq!(client.recv().await["data"], 42);
}

#[tokio::test]
async fn a_burst_of_1000_messages_arrives_in_order_at_every_subscriber() {
    let redis = RedisServer::start();
    let nodes = three_nodes(&redis).await;
    let mut readers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..2 {
            let mut c = node.connect_as(&format!("u{i}-{j}"), &["dag:*"]).await;
            c.subscribe("dag:burst").await;
            readers.push(tokio::spawn(async move {
                for n in 0..1000 {
                    let msg = c.recv().await;
                    assert_eq!(msg["data"]["seq"], n, "gap or reorder");
                }
            }));
        }
    }
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let mut pipe = redis::pipe();
    for n in 0..1000 {
        pipe.cmd("PUBLISH")
            .arg("fanout:dag:burst")
            .arg(json!({"type": "node_state", "seq": n}).to_string())
            .ignore();
    }
    let () = pipe.query(&mut conn).unwrap();
    for r in readers {
        r.await.unwrap();
    }
    for node in &nodes {
        assert_eq!(
            node.metric("fanout_redis_dropped_total{reason=\"dispatch_full\"}")
                .await,
            0.0
        );
    }
}

#[tokio::test]
async fn the_user_channel_reaches_every_device_across_nodes() {
    let redis = RedisServer::start();
    let nodes = three_nodes(&redis).await;
    let mut devices = Vec::new();
    for node in &nodes {
        devices.push(node.connect_as("42", &[]).await);
    }
    redis.cli(&[
        "PUBLISH",
        "fanout:user:42",
        r#"{"type":"notification","title":"Flow completed"}"#,
    ]);
    for d in &mut devices {
        assert_eq!(d.recv().await["data"]["title"], "Flow completed");
    }
}

#[tokio::test]
async fn the_publish_to_delivery_lag_is_measured_when_a_message_carries_a_timestamp() {
    let redis = RedisServer::start();
    let node = Gateway::start_on_redis("n1", &redis, &[]).await;
    let mut client = node.connect_as("1", &["dag:*"]).await;
    client.subscribe("dag:lag").await;
    redis.cli(&["PUBLISH", "fanout:dag:lag", r#"{"type":"node_state"}"#]);
    client.recv().await;
    assert_eq!(node.metric("fanout_publish_lag_seconds_count").await, 0.0);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let payload = format!(r#"{{"type":"node_state","timestamp":{now_ms}}}"#);
    redis.cli(&["PUBLISH", "fanout:dag:lag", &payload]);
    assert_eq!(client.recv().await["data"]["timestamp"], now_ms as u64);
    assert_eq!(node.metric("fanout_publish_lag_seconds_count").await, 1.0);
    let lag = node.metric("fanout_publish_lag_seconds_sum").await;
    assert!((0.0..5.0).contains(&lag), "lag {lag}");
}

#[tokio::test]
async fn http_broadcast_publishes_to_several_channels_across_nodes() {
    let redis = RedisServer::start();
    let nodes = three_nodes(&redis).await;
    let mut room = one_client_per_node(&nodes, "room:b").await;
    let mut user = nodes[2].connect_as("7", &[]).await;
    let (status, body) = nodes[0]
        .post(
            "/api/broadcast",
            &json!({"channels": ["room:b", "user:7"], "data": {"n": 1}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for c in &mut room {
        assert_eq!(c.recv().await["data"], json!({"n": 1}));
    }
    assert_eq!(user.recv().await["channel"], "user:7");
}

/// A backend that publishes text a user typed with a plain `PUBLISH` must not let that user
/// forge an envelope: a publisher identity, or a raw server frame.
#[tokio::test]
async fn a_plain_publish_cannot_forge_a_publisher_or_inject_a_frame() {
    let redis = RedisServer::start();
    let node = Gateway::start_on_redis("n1", &redis, &[]).await;
    let mut client = node.connect_as("u1", &["room:*"]).await;
    client.subscribe("room:x").await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let publish = |conn: &mut redis::Connection, channel: &str, payload: &[u8]| -> i64 {
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query(conn)
            .unwrap()
    };
    let forged_user = b"\x00mvictim\x00{\"type\":\"chat\",\"text\":\"I am victim\"}";
    let forged_frame = b"\x00e{\"type\":\"unsubscribed\",\"channel\":\"room:x\"}";
    assert_eq!(publish(&mut conn, "fanout:room:x", forged_user), 1);
    assert_eq!(publish(&mut conn, "fanout:room:x", forged_frame), 1);
    // Whatever a user makes of a channel name after the prefix, it is not where envelopes go.
    for name in [
        "fanout:!fanout:{room:x}",
        "fanout:{room:x}",
        "fanout:!node:n1",
    ] {
        assert_eq!(publish(&mut conn, name, forged_user), 0, "{name}");
    }
    publish(&mut conn, "fanout:room:x", br#"{"n":1}"#);

    assert_eq!(
        client.recv().await,
        json!({"type": "message", "channel": "room:x", "data": {"n": 1}}),
        "the forged payloads were not delivered"
    );
    assert_eq!(
        node.metric("fanout_redis_dropped_total{reason=\"forged_envelope\"}")
            .await,
        2.0
    );

    // Messages a client publishes still carry its user, through the envelope channel.
    let token = token_with(json!({"sub": "u2", "exp": unix_now() + 3600, "publish": ["room:x"]}));
    let (mut publisher, _) = node.connect(&token).await;
    let reply = publisher
        .request(json!({"type": "publish", "id": 1, "channel": "room:x", "data": {"n": 2}}))
        .await;
    assert_eq!(reply["type"], "published", "{reply}");
    let got = client.recv().await;
    assert_eq!((&got["data"]["n"], &got["user"]), (&json!(2), &json!("u2")));
}
