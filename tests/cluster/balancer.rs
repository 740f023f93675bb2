//! Three nodes behind a real HAProxy on loopback: a node killed or drained costs clients a
//! reconnect, not their messages after it.

use std::time::Duration;

use crate::support::*;

/// Connects through the balancer as `user` and joins `room:lb`; returns the client and the
/// node that served it.
async fn connect_through(lb: &Haproxy, user: &str) -> (Client, String) {
    let (mut c, ack) = lb.connect(&token(user, &["room:*"], 3600)).await;
    c.subscribe("room:lb").await;
    (c, ack["node"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn clients_of_a_killed_node_reconnect_to_survivors_and_a_drained_node_says_1012() {
    let redis = RedisServer::start();
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        nodes.push(Gateway::start_on_redis(name, &redis, &[]).await);
    }
    let lb = Haproxy::start(&nodes.iter().collect::<Vec<_>>());
    // Wait until HAProxy sees every node up (rise 2 × 200 ms).
    tokio::time::sleep(Duration::from_millis(800)).await;

    let mut clients = Vec::new();
    for i in 0..6 {
        clients.push(connect_through(&lb, &format!("u{i}")).await);
    }
    let served: std::collections::BTreeSet<&str> =
        clients.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        served.len(),
        3,
        "round robin spreads clients over the nodes: {served:?}"
    );

    redis.cli(&["PUBLISH", "fanout:room:lb", "\"before\""]);
    for (c, _) in &mut clients {
        assert_eq!(c.recv().await["data"], "before");
    }

    // SIGKILL n2: its clients lose the connection and come back through the balancer.
    nodes[1].signal("KILL");
    for (c, node) in &mut clients {
        if node == "n2" {
            assert!(matches!(c.next().await, Seen::Ended | Seen::Close(..)));
            let user = format!("re-{node}");
            let (fresh, served_by) = connect_through(&lb, &user).await;
            assert_ne!(served_by, "n2");
            *c = fresh;
            *node = served_by;
        }
    }
    redis.cli(&["PUBLISH", "fanout:room:lb", "\"after kill\""]);
    for (c, _) in &mut clients {
        assert_eq!(c.recv().await["data"], "after kill");
    }

    // SIGTERM n3: its clients are told to reconnect (1012), and it exits cleanly.
    nodes[2].signal("TERM");
    for (c, node) in &mut clients {
        if node == "n3" {
            assert_eq!(c.expect_close().await.0, 1012);
        }
    }
    assert_eq!(nodes[2].wait_exit(Duration::from_secs(15)), Some(0));
}
