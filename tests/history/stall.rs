//! Clients that stop reading: cut as slow consumers (4008), they come back and recover every
//! message of every channel exactly once, again and again, while the others are not slowed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::support::*;

const CHANNELS: [&str; 3] = ["dag:stall-a", "dag:stall-b", "dag:stall-c"];
/// Messages per channel.
const PER_CHANNEL: usize = 600;

/// Connects through a socket whose receive buffer is small, so that a client that stops
/// reading backs up into the node quickly.
async fn connect_small_as(node: SocketAddr, user: &str) -> Client {
    connect_small(node, &token(user, &["dag:*"], 3600), 8 * 1024).await
}

fn recovery(channel: &str, tracker: &Tracker) -> Value {
    json!({"type": "subscribe", "channel": channel, "since": tracker.since()})
}

/// What one client went through.
struct Outcome {
    trackers: Vec<Tracker>,
    cuts: usize,
}

/// A client following docs/protocol.md that, if `stalls`, stops reading for `stall` after
/// every `read_for` of reading, and right after every other reconnect too.
async fn run_client(
    nodes: Vec<SocketAddr>,
    user: String,
    stalls: bool,
    read_for: Duration,
    stall: Duration,
    subscribed: Arc<Barrier>,
) -> Outcome {
    let mut trackers = vec![Tracker::default(); CHANNELS.len()];
    let mut node = user.len();
    let mut client = connect_small_as(nodes[node % nodes.len()], &user).await;
    for (channel, tracker) in CHANNELS.iter().zip(trackers.iter_mut()) {
        let reply = client
            .request(json!({"type": "subscribe", "channel": channel}))
            .await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        tracker.start_at(&reply);
    }
    subscribed.wait().await;
    let mut cuts = 0;
    let mut reading_since = tokio::time::Instant::now();
    while trackers.iter().any(|t| t.seen.len() < PER_CHANNEL) {
        if stalls && reading_since.elapsed() >= read_for {
            tokio::time::sleep(stall).await;
            reading_since = tokio::time::Instant::now();
        }
        let Some(seen) = client.next_within(Duration::from_secs(20)).await else {
            panic!(
                "{user}: nothing for 20 s; at offsets {:?}",
                trackers.iter().map(|t| t.offset).collect::<Vec<_>>()
            );
        };
        let channel_of = |m: &Value| CHANNELS.iter().position(|c| m["channel"] == *c).unwrap();
        match seen {
            Seen::Json(m) if m["type"] == "message" => trackers[channel_of(&m)].process(&m),
            Seen::Json(m) if m["type"] == "subscribed" => {
                assert_eq!(m["recovered"], true, "{user}: {m}");
            }
            Seen::Json(m) if m["type"] == "resync" => {
                let i = channel_of(&m);
                client.send(recovery(CHANNELS[i], &trackers[i])).await;
            }
            Seen::Json(m) => panic!("{user}: unexpected {m}"),
            // Cut as a slow consumer; or, when even the close frame could not be written
            // within the write timeout, the connection just ends.
            Seen::Close(..) | Seen::Ended => {
                if let Seen::Close(code, reason) = &seen {
                    assert_eq!(*code, Some(4008), "{user}: {reason}");
                }
                cuts += 1;
                node += 1;
                client = connect_small_as(nodes[node % nodes.len()], &user).await;
                for (channel, tracker) in CHANNELS.iter().zip(&trackers) {
                    client.send(recovery(channel, tracker)).await;
                }
                // Every other time, stop reading right away: the replay itself backs up, and
                // the recovering client is cut again.
                if stalls && cuts % 2 == 1 {
                    reading_since = tokio::time::Instant::now() - read_for;
                }
            }
        }
    }
    Outcome { trackers, cuts }
}

#[tokio::test]
async fn stalled_clients_are_cut_and_recover_every_channel_exactly_once_again_and_again() {
    let redis = RedisServer::start();
    // Small queues and a short write timeout, so a stall of a few seconds is cut.
    let small = ["--queue-max-messages", "64", "--write-timeout-s", "2"];
    let n1 = Gateway::start_on_redis("n1", &redis, &small).await;
    let n2 = Gateway::start_on_redis("n2", &redis, &small).await;
    let nodes = vec![n1.addr, n2.addr];

    let mut clients = Vec::new();
    let subscribed = Arc::new(Barrier::new(9));
    for i in 0..8 {
        let stalls = i % 2 == 0;
        clients.push(tokio::spawn(run_client(
            nodes.clone(),
            format!("client-{i}"),
            stalls,
            Duration::from_millis(300 + 100 * i as u64),
            Duration::from_millis(3_000),
            subscribed.clone(),
        )));
    }
    subscribed.wait().await;

    // ~8 KB payloads (a stall must outgrow the 4 MB a loopback socket buffers), round robin over the channels, about 300 a second.
    let url = redis.url();
    let publisher = tokio::task::spawn_blocking(move || {
        let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
        let pad = "x".repeat(8_000);
        for n in 0..PER_CHANNEL {
            for channel in CHANNELS {
                let _: u64 = redis::cmd("FCALL")
                    .arg("fanout_publish")
                    .arg(1)
                    .arg(channel)
                    .arg(json!({"n": n, "pad": pad}).to_string())
                    .query(&mut conn)
                    .unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    publisher.await.unwrap();

    let mut cuts = 0;
    for (i, client) in clients.into_iter().enumerate() {
        let outcome = tokio::time::timeout(Duration::from_secs(120), client)
            .await
            .unwrap_or_else(|_| panic!("client-{i} never caught up"))
            .unwrap();
        for (channel, tracker) in CHANNELS.iter().zip(&outcome.trackers) {
            let ns: Vec<u64> = tracker
                .seen
                .iter()
                .map(|d| d["n"].as_u64().unwrap())
                .collect();
            assert_eq!(
                ns,
                (0..PER_CHANNEL as u64).collect::<Vec<_>>(),
                "client-{i} on {channel}: every message once, in order"
            );
            assert_eq!(tracker.duplicates, 0, "client-{i} on {channel}");
        }
        if i % 2 == 1 {
            assert_eq!(outcome.cuts, 0, "client-{i} kept reading and was never cut");
        }
        cuts += outcome.cuts;
    }
    assert!(
        cuts >= 4,
        "the stalls made the nodes cut clients ({cuts} cuts)"
    );
}
