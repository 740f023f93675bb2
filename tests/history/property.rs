//! Randomised: publishers and a subscriber that keeps dropping and recovering, concurrently.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::support::*;

/// Runs rounds of concurrent publishing while one subscriber disconnects and recovers at
/// random moments; its final sequence must be exactly what was published, in order.
pub async fn recovering_subscriber_ends_gap_free(
    gw: &Gateway,
    publish_via: &[&Gateway],
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let channel = "dag:prop";
    let total = 300;
    // Subscribed before anything is published: everything published is this client's.
    let mut tracker = Tracker::default();
    let mut c = gw.connect_as("p", &["dag:*"]).await;
    let reply = c
        .request(json!({"type": "subscribe", "channel": channel}))
        .await;
    tracker.start_at(&reply);
    let publishers: Vec<_> = (0..2)
        .map(|p| {
            let urls: Vec<String> = publish_via.iter().map(|g| g.http("/api/publish")).collect();
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed + 1 + p);
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for n in (p as usize..total).step_by(2) {
                    let url = &urls[n % urls.len()];
                    let resp = http
                        .post(url)
                        .bearer_auth(API_KEY)
                        .json(&json!({"channel": channel, "data": n}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                    if rng.random_bool(0.3) {
                        tokio::time::sleep(Duration::from_millis(rng.random_range(0..4))).await;
                    }
                }
            })
        })
        .collect();

    let mut rounds = 0;
    loop {
        // Read for a random while, then drop the connection and recover on a new one.
        let until = tokio::time::Instant::now() + Duration::from_millis(rng.random_range(5..60));
        while let Some(seen) = c
            .next_within(until.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            match seen {
                Seen::Json(m) if m["type"] == "message" => tracker.process(&m),
                Seen::Json(m) => panic!("unexpected {m}"),
                other => panic!("unexpected {other:?}"),
            }
        }
        if publishers.iter().all(|p| p.is_finished()) && tracker.seen.len() == total {
            break;
        }
        drop(c);
        rounds += 1;
        c = gw.connect_as("p", &["dag:*"]).await;
        let reply = c.recover(channel, &tracker).await;
        assert_eq!(reply["recovered"], true, "round {rounds}: {reply}");

        assert!(
            rounds < 500,
            "never caught up: seen {} of {total}, finished {}",
            tracker.seen.len(),
            publishers.iter().all(|p| p.is_finished())
        );
    }
    for p in publishers {
        p.await.unwrap();
    }
    // Publishers interleave, so compare as sets of values plus the per-offset order above.
    let mut seen: Vec<u64> = tracker.seen.iter().map(|v| v.as_u64().unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..total as u64).collect::<Vec<_>>(),
        "every message exactly once"
    );
    assert_eq!(
        tracker.duplicates, 0,
        "the server never sends a message twice"
    );
    assert!(
        rounds >= 3,
        "the subscriber dropped and recovered several times ({rounds})"
    );
}

#[tokio::test]
async fn on_the_embedded_broker_a_recovering_subscriber_misses_nothing() {
    let gw = Gateway::start(&["--max-frames-per-s", "1000"]);
    for seed in 0..3 {
        recovering_subscriber_ends_gap_free(&gw, &[&gw], seed).await;
    }
}
