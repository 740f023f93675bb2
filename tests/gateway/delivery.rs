//! Messages reaching the right sockets, in order, and slow sockets being cut loose.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn a_user_with_three_connections_receives_on_all_three() {
    let gw = Gateway::start(&[]);
    let mut devices = Vec::new();
    for _ in 0..3 {
        devices.push(gw.connect_as("42", &[]).await);
    }
    let mut other = gw.connect_as("43", &[]).await;
    let note = json!({"type": "notification", "title": "Flow completed"});
    gw.publish("user:42", note.clone()).await;
    let mut epochs = Vec::new();
    for device in &mut devices {
        let msg = device.recv().await;
        assert_eq!(msg["channel"], "user:42");
        assert_eq!(msg["data"], note);
        // `user:` keeps history by default: every device sees the same position.
        assert_eq!(msg["offset"], 1);
        epochs.push(msg["epoch"].clone());
    }
    assert!(epochs.windows(2).all(|w| w[0] == w[1]));
    other.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn broadcast_reaches_everyone() {
    let gw = Gateway::start(&[]);
    let mut clients = Vec::new();
    for user in ["1", "2", "3", "4"] {
        clients.push(gw.connect_as(user, &[]).await);
    }
    gw.publish("broadcast", json!({"type": "system_announcement"}))
        .await;
    for client in &mut clients {
        let msg = client.recv().await;
        assert_eq!(msg["channel"], "broadcast");
        assert_eq!(msg["data"]["type"], "system_announcement");
    }
}

#[tokio::test]
async fn a_burst_arrives_complete_and_in_order() {
    let gw = Gateway::start(&["--max-frames-per-s", "100"]);
    let mut a = gw.connect_as("1", &["room:*"]).await;
    let mut b = gw.connect_as("2", &["room:*"]).await;
    a.subscribe("room:burst").await;
    b.subscribe("room:burst").await;
    for i in 0..500 {
        gw.publish("room:burst", json!(i)).await;
    }
    for client in [&mut a, &mut b] {
        for i in 0..500 {
            assert_eq!(client.recv().await["data"], i);
        }
    }
}

#[tokio::test]
async fn with_a_write_delay_messages_arrive_complete_in_order_and_replies_still_come() {
    // Writes are held 50 ms to go out together; nothing may be lost, reordered or stuck.
    let gw = Gateway::start(&["--write-delay-ms", "50"]);
    let mut a = gw.connect_as("1", &["room:*"]).await;
    let mut b = gw.connect_as("2", &["room:*"]).await;
    a.subscribe("room:batched").await;
    b.subscribe("room:batched").await;
    for i in 0..300 {
        gw.publish("room:batched", json!(i)).await;
    }
    for client in [&mut a, &mut b] {
        for i in 0..300 {
            assert_eq!(client.recv().await["data"], i);
        }
    }
    // A request's reply is held no longer than a message.
    a.subscribe("room:later").await;
    gw.publish("room:later", json!("last")).await;
    assert_eq!(a.recv().await["data"], "last");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_slow_while_others_get_everything() {
    let gw = Gateway::start(&["--queue-max-messages", "64", "--queue-max-bytes", "1048576"]);
    let mut slow = gw.connect_as("slow", &["room:*"]).await;
    let mut fast = gw.connect_as("fast", &["room:*"]).await;
    slow.subscribe("room:firehose").await;
    fast.subscribe("room:firehose").await;

    // Enough data to fill the socket buffers of a client that does not read, then its queue.
    let filler = "x".repeat(16 * 1024);
    let total = 2000;
    let publisher = {
        let url = gw.http("/api/publish");
        let filler = filler.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..total {
                let resp = http
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(&json!({"channel": "room:firehose", "data": {"i": i, "pad": filler}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
            }
        })
    };
    for i in 0..total {
        let msg = fast.recv().await;
        assert_eq!(msg["data"]["i"], i, "the fast client misses nothing");
    }
    publisher.await.unwrap();
    assert_eq!(
        gw.wait_metric("fanout_slow_consumers_total", 1.0).await,
        1.0
    );

    // The slow client finds what fit in the buffers, then the slow-consumer close.
    let (code, reason) = slow.expect_close().await;
    assert_eq!(code, 4008);
    assert!(reason.contains("slow"), "{reason}");
    gw.wait_metric("fanout_disconnects_total{reason=\"slow_consumer\"}", 1.0)
        .await;
    // And the fast client is still served.
    gw.publish("room:firehose", json!("still here")).await;
    assert_eq!(fast.recv().await["data"], "still here");
}
