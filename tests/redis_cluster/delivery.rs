//! Channels spread over every shard reach clients on every gateway, whoever publishes; each
//! gateway holds sharded subscriptions only where its channels live.

use std::collections::{BTreeSet, HashSet};
use std::process::Command;

use serde_json::json;

use crate::local_cluster::*;
use crate::support::*;

/// Twelve channels; the test checks they cover all three shards.
fn spread_channels() -> Vec<String> {
    (0..12).map(|i| format!("room:c{i}")).collect()
}

/// Reads `count` messages and returns the channels they came on, with their `data`.
async fn read_messages(client: &mut Client, count: usize) -> BTreeSet<(String, String)> {
    let mut got = BTreeSet::new();
    while got.len() < count {
        let frame = client.recv().await;
        if frame["type"] == "message" {
            got.insert((
                frame["channel"].as_str().unwrap_or_default().to_owned(),
                frame["data"].to_string(),
            ));
        }
    }
    got
}

fn php_cluster(cluster: &LocalCluster, channel: &str, payload: &str, mode: &str) -> String {
    let out = Command::new("php")
        .arg(format!(
            "{}/examples/php/publish_cluster.php",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args([channel, payload, &cluster.seed_list(), mode])
        .output()
        .expect("run php (apt-get install php-cli php-redis)");
    assert!(
        out.status.success(),
        "php failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn channels_on_every_shard_reach_clients_on_every_gateway_from_any_publisher() {
    let cluster = LocalCluster::start();
    let channels = spread_channels();
    let shards: HashSet<u16> = channels
        .iter()
        .map(|c| cluster.master_of(&format!("!fanout:{{{c}}}")))
        .collect();
    assert_eq!(shards.len(), 3, "the channels cover every shard");

    let mut gateways = Vec::new();
    for name in ["g1", "g2", "g3"] {
        gateways.push(gateway_on(&cluster, name).await);
    }
    let (_, ready) = gateways[0].get("/readyz").await;
    assert!(ready.contains("redis-cluster"), "{ready}");
    let mut clients = Vec::new();
    for (i, gw) in gateways.iter().enumerate() {
        let mut c = gw.connect_as(&format!("u{i}"), &["room:*", "dag:*"]).await;
        for channel in &channels {
            c.subscribe(channel).await;
        }
        c.subscribe("dag:php").await;
        clients.push(c);
    }

    // FCALL through redis-cli in cluster mode: routed to the channel's slot.
    let mut expected = BTreeSet::new();
    for (i, channel) in channels.iter().enumerate() {
        let data = json!({"n": i}).to_string();
        let offset = cluster.cli(&["FCALL", "fanout_publish", "1", channel, &data]);
        assert_eq!(offset, "0", "no history in room:");
        expected.insert((channel.clone(), data));
    }
    for c in &mut clients {
        assert_eq!(read_messages(c, channels.len()).await, expected);
    }

    // A backend's plain SPUBLISH on the public channel, from redis-cli -c.
    let receivers = cluster.cli(&["SPUBLISH", "fanout:room:c3", r#"{"via":"spublish"}"#]);
    assert_eq!(receivers, "3", "one sharded subscription per gateway");
    for c in &mut clients {
        let m = c.recv().await;
        assert_eq!(
            (m["channel"].as_str(), m["data"]["via"].as_str()),
            (Some("room:c3"), Some("spublish"))
        );
    }

    // phpredis RedisCluster: FCALL with history (the offset comes back), then SPUBLISH.
    assert_eq!(
        php_cluster(&cluster, "dag:php", r#"{"via":"php"}"#, "fcall"),
        "1"
    );
    for c in &mut clients {
        let m = c.recv().await;
        assert_eq!(
            (m["channel"].as_str(), m["offset"].as_u64()),
            (Some("dag:php"), Some(1))
        );
        assert_eq!(m["data"]["via"], "php");
    }
    assert_eq!(
        php_cluster(&cluster, "room:c7", r#"{"via":"php-spublish"}"#, "spublish"),
        "3"
    );
    for c in &mut clients {
        assert_eq!(c.recv().await["data"]["via"], "php-spublish");
    }

    // The HTTP API of any gateway, with and without history.
    gateways[1].publish("room:c9", json!({"via": "http"})).await;
    for c in &mut clients {
        let m = c.recv().await;
        assert_eq!(m["data"]["via"], "http");
        assert!(
            m.get("user").is_none(),
            "a backend's publish has no user: {m}"
        );
    }
    gateways[2].publish("dag:php", json!({"via": "http"})).await;
    for c in &mut clients {
        assert_eq!(c.recv().await["offset"], 2);
    }

    // A plain PUBLISH (classic pub/sub) reaches no gateway on a cluster.
    assert_eq!(cluster.cli(&["PUBLISH", "fanout:room:c0", "1"]), "0");

    // Masters that lost the library get it again, all of them, on the first call missing it.
    for m in cluster.masters() {
        assert_eq!(cli_at(m, &["FUNCTION", "FLUSH"]).as_deref(), Some("OK"));
    }
    gateways[0]
        .publish("dag:php", json!({"after": "flush"}))
        .await;
    for c in &mut clients {
        assert_eq!(c.recv().await["offset"], 3);
    }
    for channel in &channels {
        assert_eq!(
            cluster.cli(&["FCALL", "fanout_publish", "1", channel, "1"]),
            "0",
            "the library is back on the master of {channel}"
        );
    }
}

#[tokio::test]
async fn each_gateway_subscribes_only_on_the_shards_of_its_channels() {
    let cluster = LocalCluster::start();
    let g1 = gateway_on(&cluster, "g1").await;
    let g2 = gateway_on(&cluster, "g2").await;
    let mut a = g1.connect_as("a", &["room:*"]).await;
    let mut b = g2.connect_as("b", &["room:*"]).await;
    a.subscribe("room:only-g1").await;
    a.subscribe("room:both").await;
    b.subscribe("room:both").await;

    let masters = cluster.masters();
    for (channel, holders) in [("room:only-g1", 1), ("room:both", 2)] {
        for name in [
            format!("fanout:{channel}"),
            format!("!fanout:{{{channel}}}"),
        ] {
            let owner = cluster.master_of(&name);
            for &m in &masters {
                let want = if m == owner { holders } else { 0 };
                assert_eq!(
                    cluster.shardnumsub(m, &name),
                    want,
                    "SHARDNUMSUB {name} on {m} (owner {owner})"
                );
            }
        }
    }
    // Every master holds exactly the channel names of its own slots.
    for &m in &masters {
        let held: BTreeSet<String> = cluster
            .shardchannels(m, "*fanout:*room:*")
            .into_iter()
            .collect();
        let owned: BTreeSet<String> = ["room:only-g1", "room:both"]
            .iter()
            .flat_map(|c| [format!("fanout:{c}"), format!("!fanout:{{{c}}}")])
            .filter(|name| cluster.master_of(name) == m)
            .collect();
        assert_eq!(held, owned, "sharded channels on {m}");
    }

    // The last local subscriber leaving releases the shard subscriptions.
    let before = g1.metric("fanout_redis_subscriptions").await;
    a.request(json!({"type": "unsubscribe", "channel": "room:only-g1"}))
        .await;
    let name = "!fanout:{room:only-g1}";
    let owner = cluster.master_of(name);
    eventually("the sharded subscription is released", || {
        cluster.shardnumsub(owner, name) == 0
    })
    .await;
    assert_eq!(g1.metric("fanout_redis_subscriptions").await, before - 1.0);
}

#[tokio::test]
async fn presence_is_cluster_wide_across_gateways() {
    let cfg = crate::cluster_config();
    let cluster = LocalCluster::start();
    let g1 = gateway_on_with(&cluster, "g1", &["--config", &cfg]).await;
    let g2 = gateway_on_with(&cluster, "g2", &["--config", &cfg]).await;
    let mut alice = g1.connect_as("alice", &["room:*"]).await;
    alice.subscribe("room:lobby").await;
    let mut bob = g2.connect_as("bob", &["room:*"]).await;
    bob.subscribe("room:lobby").await;
    // Alice, on the other gateway, hears Bob join.
    loop {
        let f = alice.recv().await;
        if f["type"] == "join" && f["user"] == "bob" {
            break;
        }
    }
    alice
        .send(json!({"type": "presence", "channel": "room:lobby", "id": 1}))
        .await;
    let reply = loop {
        let f = alice.recv().await;
        if f["id"] == 1 {
            break f;
        }
    };
    let mut users: Vec<&str> = reply["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["user"].as_str())
        .collect();
    users.sort_unstable();
    assert_eq!(users, ["alice", "bob"], "{reply}");
    // A client's publish carries its user (in the envelope) to the other gateway.
    bob.send(json!({"type": "publish", "channel": "room:lobby", "data": {"hi": 1}, "id": 2}))
        .await;
    loop {
        let f = bob.recv().await;
        if f["id"] == 2 {
            assert_eq!(f["type"], "published", "{f}");
            break;
        }
    }
    loop {
        let f = alice.recv().await;
        if f["type"] == "message" {
            assert_eq!(
                (f["user"].as_str(), &f["data"]),
                (Some("bob"), &json!({"hi": 1}))
            );
            break;
        }
    }
    drop(bob);
    loop {
        let f = alice.recv().await;
        if f["type"] == "leave" && f["user"] == "bob" {
            break;
        }
    }
}

#[tokio::test]
async fn sse_frames_posted_to_another_gateway_are_relayed_by_sharded_pub_sub() {
    let cluster = LocalCluster::start();
    let g1 = gateway_on(&cluster, "g1").await;
    let g2 = gateway_on(&cluster, "g2").await;
    let tok = token("31", &["room:*"], 3600);
    let mut sse = SseClient::open(&g1.http(""), &tok, "", None).await.unwrap();
    let relay = "!fanout:node:g1";
    let owner = cluster.master_of(relay);
    assert_eq!(
        cluster.shardnumsub(owner, relay),
        1,
        "g1 holds its relay channel"
    );
    let body = [
        json!({"type": "ping", "id": 1}).to_string(),
        json!({"type": "subscribe", "channel": "room:relay", "id": 2}).to_string(),
    ]
    .join("\n");
    let (status, answer) = post_frames(&g2.http(""), &sse.conn_id, &tok, body).await;
    assert_eq!(
        (status, answer),
        (202, json!({"accepted": 2, "relayed": true}))
    );
    assert_eq!(sse.recv().await, json!({"type": "pong", "id": 1}));
    assert_eq!(sse.recv().await["type"], "subscribed");
    let ping = json!({"type": "ping", "id": 9}).to_string();
    let (status, answer) = post_frames(&g2.http(""), "0123456789abcdef.n9", &tok, ping).await;
    assert_eq!(status, 404, "{answer}");
}

/// A managed cluster speaks TLS: `rediss://` seeds and the CA reach every shard, for
/// commands, sharded subscriptions and the function library alike.
#[tokio::test]
async fn over_tls_every_shard_is_reached_with_the_configured_ca() {
    let pki = TestPki::create();
    let cluster = LocalCluster::start_tls(&pki);
    let ca = pki.ca_cert().display().to_string();
    let gw = gateway_on_with(&cluster, "g-tls", &["--redis-tls-ca-file", &ca]).await;
    let mut client = gw.connect_as("u1", &["room:*", "dag:*"]).await;
    let channels = spread_channels();
    for channel in &channels {
        client.subscribe(channel).await;
    }
    let shards: HashSet<u16> = channels
        .iter()
        .map(|c| cluster.master_of(&format!("!fanout:{{{c}}}")))
        .collect();
    assert_eq!(shards.len(), 3, "the channels cover every shard");
    for channel in &channels {
        let owner = cluster.master_of(&format!("!fanout:{{{channel}}}"));
        assert_eq!(
            cluster.shardnumsub(owner, &format!("!fanout:{{{channel}}}")),
            1,
            "{channel} subscribed over TLS on its shard"
        );
    }
    let mut expected = BTreeSet::new();
    for (i, channel) in channels.iter().enumerate() {
        let data = json!({"n": i}).to_string();
        cluster.cli(&["FCALL", "fanout_publish", "1", channel, &data]);
        expected.insert((channel.clone(), data));
    }
    assert_eq!(read_messages(&mut client, channels.len()).await, expected);

    // History over TLS: published through the gateway's own connection, then recovered.
    let reply = client
        .request(json!({"type": "subscribe", "channel": "dag:tls"}))
        .await;
    let start = reply["offset"].as_u64().unwrap();
    gw.publish("dag:tls", json!({"n": "over tls"})).await;
    let msg = client.recv().await;
    assert_eq!(msg["data"], json!({"n": "over tls"}));
    let history = client
        .request(json!({"type": "history", "channel": "dag:tls", "since": start}))
        .await;
    assert_eq!(
        history["messages"][0]["data"],
        json!({"n": "over tls"}),
        "{history}"
    );
}
