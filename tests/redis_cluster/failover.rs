//! A master SIGKILLed under a steady FCALL load, its replica promoted: connected clients get
//! every message of the history channel exactly once, presence survives, and a client that
//! was away recovers with `since`.

use std::time::Duration;

use serde_json::json;

use crate::local_cluster::*;
use crate::support::*;

/// Messages the publisher sends; the kill comes after about a third of them.
const TOTAL: usize = 150;
const CHANNEL: &str = "dag:failover";

/// Publishes `0..TOTAL` with `FCALL fanout_publish`, through a cluster-aware client, each
/// with an idempotency key, retrying a failed publish until it succeeds: what a careful
/// backend does (a retry after a lost reply must not publish twice). Reports progress.
async fn publish_steadily(seeds: Vec<String>, progress: tokio::sync::watch::Sender<usize>) {
    let client = redis::cluster::ClusterClient::new(seeds).expect("cluster client");
    let mut conn = client
        .get_async_connection()
        .await
        .expect("cluster connection");
    for n in 0..TOTAL {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let published: redis::RedisResult<u64> = redis::cmd("FCALL")
                .arg("fanout_publish")
                .arg(1)
                .arg(CHANNEL)
                .arg(json!({"n": n}).to_string())
                .arg("")
                .arg(format!("msg-{n}"))
                .query_async(&mut conn)
                .await;
            if published.is_ok() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "publishing never resumed: {published:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = progress.send(n + 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn expected() -> Vec<serde_json::Value> {
    (0..TOTAL).map(|n| json!({"n": n})).collect()
}

#[tokio::test]
async fn a_killed_master_loses_and_duplicates_nothing_for_history_channels() {
    let cfg = crate::cluster_config();
    let mut cluster = LocalCluster::start();
    let g1 = gateway_on_with(&cluster, "g1", &["--config", &cfg]).await;
    let g2 = gateway_on_with(&cluster, "g2", &["--config", &cfg]).await;

    let mut a = g1.connect_as("a", &["dag:*"]).await;
    let mut b = g2.connect_as("b", &["dag:*"]).await;
    let mut away = g2.connect_as("away", &["dag:*"]).await;
    let (mut ta, mut tb, mut t_away) = (Tracker::default(), Tracker::default(), Tracker::default());
    for (c, t) in [
        (&mut a, &mut ta),
        (&mut b, &mut tb),
        (&mut away, &mut t_away),
    ] {
        let reply = c.recover(CHANNEL, t).await;
        t.start_at(&reply);
    }

    let seed_urls: Vec<String> = cluster
        .seed_flags()
        .into_iter()
        .filter(|s| s.starts_with("redis://"))
        .collect();
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0);
    let publisher = tokio::spawn(publish_steadily(seed_urls, progress_tx));

    // One client leaves early and comes back after the failover.
    away.read_until(CHANNEL, &mut t_away, 20).await;
    drop(away);

    progress
        .wait_for(|n| *n >= TOTAL / 3)
        .await
        .expect("publisher running");
    let victim = cluster.master_of(CHANNEL);
    cluster.kill(victim);
    // Until the replica has taken over, the gateways say so.
    g1.wait_ready(false).await;

    // Connected clients read everything while the replica takes over.
    a.read_until(CHANNEL, &mut ta, TOTAL).await;
    b.read_until(CHANNEL, &mut tb, TOTAL).await;
    publisher.await.expect("publisher");
    for t in [&ta, &tb] {
        assert_eq!(t.seen, expected(), "every message once, in order");
        assert_eq!(t.duplicates, 0);
    }
    assert_ne!(cluster.master_of(CHANNEL), victim, "a replica was promoted");
    cluster.wait_healthy(5);
    g1.wait_ready(true).await;
    g2.wait_ready(true).await;

    // Live delivery works again on the promoted master (not only the catch-up from history).
    for n in TOTAL..TOTAL + 3 {
        let offset = cluster.cli(&[
            "FCALL",
            "fanout_publish",
            "1",
            CHANNEL,
            &json!({"n": n}).to_string(),
        ]);
        assert_eq!(offset, (n + 1).to_string());
    }
    a.read_until(CHANNEL, &mut ta, TOTAL + 3).await;
    b.read_until(CHANNEL, &mut tb, TOTAL + 3).await;
    assert_eq!((ta.duplicates, tb.duplicates), (0, 0));

    // The client that was away recovers the rest from the promoted replica's history.
    let mut back = g1.connect_as("away", &["dag:*"]).await;
    let reply = back.recover(CHANNEL, &t_away).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    back.read_until(CHANNEL, &mut t_away, TOTAL + 3).await;
    assert_eq!(t_away.seen[..TOTAL], expected()[..]);
    assert_eq!(t_away.duplicates, 0);

    // Presence entries of the killed master's slots survived on its replica.
    let mut joined_after = Vec::new();
    for (user, gw) in [("a", &g1), ("b", &g2)] {
        let mut c = gw.connect_as(&format!("{user}-presence"), &["dag:*"]).await;
        c.subscribe(CHANNEL).await;
        joined_after.push(c);
    }
    a.send(json!({"type": "presence", "channel": CHANNEL, "id": "p"}))
        .await;
    let reply = loop {
        let f = a.recv().await;
        if f["id"] == "p" {
            break f;
        }
    };
    let users: std::collections::BTreeSet<&str> = reply["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["user"].as_str())
        .collect();
    for user in ["a", "b", "a-presence", "b-presence"] {
        assert!(users.contains(user), "{user} missing from {reply}");
    }
    assert!(g1.metric("fanout_redis_probe_failures_total").await >= 1.0);
}
