//! A slot moving to another master (resharding): the channel's subscription follows it,
//! and its history moves with its keys.

use serde_json::json;

use crate::local_cluster::*;
use crate::support::*;

const CHANNEL: &str = "dag:moving";

fn publish(cluster: &LocalCluster, n: usize) {
    let data = json!({"n": n}).to_string();
    let offset = cluster.cli(&["FCALL", "fanout_publish", "1", CHANNEL, &data]);
    assert_eq!(offset, (n + 1).to_string());
}

#[tokio::test]
async fn a_channel_whose_slot_moves_keeps_its_subscribers_and_its_history() {
    let cluster = LocalCluster::start();
    let g1 = gateway_on(&cluster, "g1").await;
    let g2 = gateway_on(&cluster, "g2").await;
    let mut a = g1.connect_as("a", &["dag:*"]).await;
    let mut b = g2.connect_as("b", &["dag:*"]).await;
    let (mut ta, mut tb) = (Tracker::default(), Tracker::default());
    for (c, t) in [(&mut a, &mut ta), (&mut b, &mut tb)] {
        let reply = c.recover(CHANNEL, t).await;
        t.start_at(&reply);
    }
    for n in 0..5 {
        publish(&cluster, n);
    }
    a.read_until(CHANNEL, &mut ta, 5).await;
    b.read_until(CHANNEL, &mut tb, 5).await;

    let envelope = format!("!fanout:{{{CHANNEL}}}");
    let before = cluster.master_of(&envelope);
    let after = cluster.migrate_slot_of(CHANNEL);
    assert_ne!(before, after);
    assert_eq!(cluster.master_of(&envelope), after);

    // redis-cli -c follows the MOVED redirection; the offsets go on from the moved history.
    for n in 5..10 {
        publish(&cluster, n);
    }
    a.read_until(CHANNEL, &mut ta, 10).await;
    b.read_until(CHANNEL, &mut tb, 10).await;
    let expected: Vec<_> = (0..10).map(|n| json!({"n": n})).collect();
    for t in [&ta, &tb] {
        assert_eq!(t.seen, expected);
        assert_eq!(t.duplicates, 0);
    }
    // Both gateways hold the subscription on the new owner now, and none on the old one.
    eventually("the subscriptions moved with the slot", || {
        cluster.shardnumsub(after, &envelope) == 2 && cluster.shardnumsub(before, &envelope) == 0
    })
    .await;
    g1.wait_ready(true).await;
    g2.wait_ready(true).await;
}
