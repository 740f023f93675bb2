//! Replays at the client's pace: several channels recover together, none waiting for the
//! others, and a replay slower than its channel goes on from history instead of costing the
//! client its connection.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

/// Payload padding: replays must outgrow the megabytes a loopback socket buffers before the
/// node's own queue paces them.
const PAD: usize = 8000;

/// Publishes `from..to` (about 8 KB each) to each of `channels` with `FCALL fanout_publish`,
/// round robin, pausing `pause` after each round.
fn publish_numbered(url: &str, channels: &[&str], from: usize, to: usize, pause: Duration) {
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    let pad = "x".repeat(PAD);
    for n in from..to {
        for channel in channels {
            let _: u64 = redis::cmd("FCALL")
                .arg("fanout_publish")
                .arg(1)
                .arg(*channel)
                .arg(json!({"n": n, "pad": pad}).to_string())
                .query(&mut conn)
                .unwrap();
        }
        std::thread::sleep(pause);
    }
}

/// The numbers of the messages a tracker processed.
fn numbers(tracker: &Tracker) -> Vec<u64> {
    tracker
        .seen
        .iter()
        .map(|d| d["n"].as_u64().unwrap())
        .collect()
}

/// Subscribes to `channels` and returns the trackers at their current positions.
async fn subscribed(client: &mut Client, channels: &[&str]) -> Vec<Tracker> {
    let mut trackers = Vec::new();
    for channel in channels {
        let reply = client
            .request(json!({"type": "subscribe", "channel": channel}))
            .await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        let mut tracker = Tracker::default();
        tracker.start_at(&reply);
        trackers.push(tracker);
    }
    trackers
}

#[tokio::test]
async fn a_client_recovering_four_channels_gets_all_of_them_moving_at_once() {
    let redis = RedisServer::start();
    let node = Gateway::start_on_redis("n1", &redis, &["--queue-max-messages", "64"]).await;
    let channels = ["dag:r-a", "dag:r-b", "dag:r-c", "dag:r-d"];
    let token = token("1", &["dag:*"], 3600);
    let mut client = connect_small(node.addr, &token, 8 * 1024).await;
    let mut trackers = subscribed(&mut client, &channels).await;
    drop(client);
    // 400 of ~8 KB per channel: 13 MB of replay in all.
    publish_numbered(&redis.url(), &channels, 0, 400, Duration::ZERO);

    let mut client = connect_small(node.addr, &token, 8 * 1024).await;
    for (channel, tracker) in channels.iter().zip(&trackers) {
        client
            .send(json!({"type": "subscribe", "channel": channel, "since": tracker.since()}))
            .await;
    }
    // Arrival order of the messages, by channel.
    let mut order: Vec<usize> = Vec::new();
    let mut pace = Pace::new(500.0);
    while trackers.iter().any(|t| t.seen.len() < 400) {
        let m = client.recv().await;
        match m["type"].as_str() {
            Some("subscribed") => assert_eq!(m["recovered"], true, "{m}"),
            Some("message") => {
                let i = channels.iter().position(|c| m["channel"] == *c).unwrap();
                trackers[i].process(&m);
                order.push(i);
                pace.one().await;
            }
            _ => panic!("unexpected {m}"),
        }
    }
    // What the socket buffers goes first, whole; past it, the replays share the queue: the
    // last channel's replay starts before the second channel's ends.
    let first_of_last = order.iter().position(|&i| i == 3).unwrap();
    let last_of_second = order.iter().rposition(|&i| i == 1).unwrap();
    assert!(
        first_of_last < last_of_second,
        "replays of several channels advance together (the fourth channel started at \
         message {first_of_last}, the second ended at {last_of_second})"
    );
    for (channel, tracker) in channels.iter().zip(&trackers) {
        assert_eq!(numbers(tracker), (0..400).collect::<Vec<_>>(), "{channel}");
        assert_eq!(tracker.duplicates, 0, "{channel}");
    }
}

#[tokio::test]
async fn a_replay_slower_than_its_channel_goes_on_from_history_without_a_reconnect() {
    let redis = RedisServer::start();
    // Room for 32 messages per recovering channel at the node: far fewer than arrive while
    // this client reads its replay.
    let node = Gateway::start_on_redis("n1", &redis, &["--queue-max-messages", "32"]).await;
    let token = token("1", &["dag:*"], 3600);
    let mut client = connect_small(node.addr, &token, 8 * 1024).await;
    let mut tracker = subscribed(&mut client, &["dag:slow"]).await.remove(0);
    drop(client);
    // 900 of ~8 KB: more than the socket buffers.
    publish_numbered(&redis.url(), &["dag:slow"], 0, 900, Duration::ZERO);

    let mut client = connect_small(node.addr, &token, 8 * 1024).await;
    let reply = client.recover("dag:slow", &tracker).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    // 300 more, 50 a second, while the client reads 150 a second.
    let url = redis.url();
    let live = tokio::task::spawn_blocking(move || {
        publish_numbered(&url, &["dag:slow"], 900, 1200, Duration::from_millis(20))
    });
    let mut pace = Pace::new(150.0);
    while tracker.seen.len() < 1200 {
        match client.next().await {
            Seen::Json(m) if m["type"] == "message" => {
                tracker.process(&m);
                pace.one().await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    live.await.unwrap();
    assert_eq!(numbers(&tracker), (0..1200).collect::<Vec<_>>());
    assert_eq!(tracker.duplicates, 0);
    assert!(
        node.logs().contains("replaying on from history"),
        "the node let its buffer go and read on from history"
    );
    assert_eq!(
        node.metric("fanout_slow_consumers_total").await,
        0.0,
        "nobody was cut"
    );
}
