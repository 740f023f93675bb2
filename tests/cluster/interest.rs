//! A node holds a Redis subscription for a channel exactly while it has local subscribers.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn a_node_subscribes_in_redis_only_while_it_has_subscribers() {
    let redis = RedisServer::start();
    let n1 = Gateway::start_on_redis("n1", &redis, &[]).await;
    let n2 = Gateway::start_on_redis("n2", &redis, &[]).await;
    let channel = "fanout:room:interest";
    assert_eq!(redis.numsub(channel), 0, "no subscriber anywhere yet");

    let mut a = n1.connect_as("a", &["room:*"]).await;
    a.subscribe("room:interest").await;
    assert_eq!(redis.numsub(channel), 1);
    let mut b = n1.connect_as("b", &["room:*"]).await;
    b.subscribe("room:interest").await;
    assert_eq!(
        redis.numsub(channel),
        1,
        "one subscription per node, not per client"
    );
    let mut c = n2.connect_as("c", &["room:*"]).await;
    c.subscribe("room:interest").await;
    assert_eq!(redis.numsub(channel), 2);

    // The last local subscriber leaving (by unsubscribe or by disconnect) releases it.
    a.request(json!({"type": "unsubscribe", "channel": "room:interest"}))
        .await;
    assert_eq!(redis.numsub(channel), 2, "b still listens on n1");
    b.ws.close(None).await.unwrap();
    eventually("n1 releases the channel", || redis.numsub(channel) == 1).await;
    drop(c);
    eventually("n2 releases the channel", || redis.numsub(channel) == 0).await;
    assert_eq!(
        n1.metric("fanout_redis_subscriptions").await,
        2.0,
        "broadcast and user:a remain"
    );
}

#[tokio::test]
async fn a_node_without_subscribers_receives_none_of_the_traffic() {
    let redis = RedisServer::start();
    let busy = Gateway::start_on_redis("busy", &redis, &[]).await;
    let idle = Gateway::start_on_redis("idle", &redis, &[]).await;
    let mut c = busy.connect_as("1", &["room:*"]).await;
    c.subscribe("room:only-busy").await;
    for i in 0..20 {
        redis.cli(&["PUBLISH", "fanout:room:only-busy", &i.to_string()]);
    }
    for i in 0..20 {
        assert_eq!(c.recv().await["data"], i);
    }
    assert_eq!(
        busy.metric("fanout_redis_messages_received_total").await,
        20.0
    );
    assert_eq!(
        idle.metric("fanout_redis_messages_received_total").await,
        0.0
    );
}

#[tokio::test]
async fn subscribes_racing_unsubscribes_never_lose_the_redis_subscription() {
    let redis = RedisServer::start();
    let node = Gateway::start_on_redis("n1", &redis, &[]).await;
    let mut steady = node.connect_as("steady", &["room:*"]).await;
    // Clients join and leave the same channel concurrently, over and over.
    let mut churn = Vec::new();
    for i in 0..4 {
        let mut c = node.connect_as(&format!("churn{i}"), &["room:*"]).await;
        churn.push(tokio::spawn(async move {
            for _ in 0..25 {
                c.subscribe("room:race").await;
                c.request(json!({"type": "unsubscribe", "channel": "room:race"}))
                    .await;
            }
        }));
    }
    steady.subscribe("room:race").await;
    for t in churn {
        t.await.unwrap();
    }
    // Whatever the interleaving, the steady subscriber is still served through Redis.
    assert_eq!(redis.numsub("fanout:room:race"), 1);
    redis.cli(&["PUBLISH", "fanout:room:race", "\"still here\""]);
    assert_eq!(steady.recv().await["data"], "still here");
}
