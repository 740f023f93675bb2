//! A busy machine: another process holds a core while clients with small receive buffers
//! read slowly, stall, resume, are cut and come back, on four channels and three nodes.
//! A client that keeps reading, however slowly, is never taken for dead; one that stops for
//! longer than the pong timeout is cut and recovers; every client ends with every message
//! of every channel once and in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Barrier;
use tokio::time::Instant;

use crate::support::*;

const CHANNELS: [&str; 4] = ["dag:busy-a", "dag:busy-b", "dag:busy-c", "dag:busy-d"];
/// Messages per channel.
const PER_CHANNEL: usize = 1200;
/// Messages per second per channel (160 a second in all, as in the field report).
const RATE: f64 = 40.0;
/// The nodes' pong timeout: stalls shorter than this must never cost a connection.
const PONG_TIMEOUT_S: u64 = 6;

/// One step of a client's behaviour.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Read at most this many messages a second (infinite: as fast as it can) for a while.
    Read(f64, Duration),
    /// Read nothing for a while.
    Stall(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Reads as fast as it can.
    Steady,
    /// Alternates fast reading, stalls shorter than the pong timeout, and reading slower
    /// than messages come (a heartbeat then waits behind a backlog longer than the pong
    /// timeout), keeping up on average: never to be closed.
    Slow,
    /// Stops reading for twice the pong timeout now and then: cut, and recovers.
    Staller,
}

impl Kind {
    fn plan(self) -> Vec<Step> {
        let total = RATE * CHANNELS.len() as f64;
        let s = Duration::from_secs;
        match self {
            Kind::Steady => vec![Step::Read(f64::INFINITY, s(3600))],
            Kind::Slow => vec![
                Step::Read(2.5 * total, s(8)),
                Step::Stall(s(4)),
                Step::Read(0.6 * total, s(8)),
            ],
            Kind::Staller => vec![
                Step::Read(f64::INFINITY, s(4)),
                Step::Stall(s(2 * PONG_TIMEOUT_S)),
            ],
        }
    }
}

/// What one client went through.
struct Outcome {
    trackers: Vec<Tracker>,
    /// Close codes (None: the connection just ended) of every time it was cut.
    cuts: Vec<Option<u16>>,
}

fn connect_token(user: &str) -> String {
    token(user, &["dag:*"], 3600)
}

async fn run_client(
    nodes: Vec<SocketAddr>,
    user: String,
    kind: Kind,
    subscribed: Arc<Barrier>,
) -> Outcome {
    let total = RATE * CHANNELS.len() as f64;
    let mut trackers = vec![Tracker::default(); CHANNELS.len()];
    let mut node = user.len();
    let mut client =
        connect_small(nodes[node % nodes.len()], &connect_token(&user), 8 * 1024).await;
    for (channel, tracker) in CHANNELS.iter().zip(trackers.iter_mut()) {
        let reply = client
            .request(json!({"type": "subscribe", "channel": channel}))
            .await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        tracker.start_at(&reply);
    }
    subscribed.wait().await;

    let plan = kind.plan();
    let mut step = 0;
    let mut step_ends = Instant::now();
    let mut pace = Pace::new(f64::INFINITY);
    let mut cuts = Vec::new();
    let channel_of = |m: &serde_json::Value| {
        CHANNELS
            .iter()
            .position(|c| m["channel"] == *c)
            .unwrap_or_else(|| panic!("a message of another channel: {m}"))
    };
    while trackers.iter().any(|t| t.seen.len() < PER_CHANNEL) {
        if Instant::now() >= step_ends {
            match plan[step % plan.len()] {
                Step::Read(rate, length) => {
                    pace.set(rate);
                    step_ends = Instant::now() + length;
                }
                Step::Stall(length) => {
                    tokio::time::sleep(length).await;
                    step_ends = Instant::now();
                }
            }
            step += 1;
        }
        let Some(seen) = client.next_within(Duration::from_secs(30)).await else {
            panic!(
                "{user}: nothing for 30 s; at offsets {:?}",
                trackers.iter().map(|t| t.offset).collect::<Vec<_>>()
            );
        };
        match seen {
            Seen::Json(m) if m["type"] == "message" => {
                trackers[channel_of(&m)].process(&m);
                pace.one().await;
            }
            Seen::Json(m) if m["type"] == "subscribed" => {
                assert_eq!(m["recovered"], true, "{user}: {m}");
            }
            Seen::Json(m) if m["type"] == "resync" => {
                let i = channel_of(&m);
                client
                    .send(json!({"type": "subscribe", "channel": CHANNELS[i], "since": trackers[i].since()}))
                    .await;
            }
            Seen::Json(m) => panic!("{user}: unexpected {m}"),
            Seen::Close(..) | Seen::Ended => {
                let code = match &seen {
                    Seen::Close(code, _) => *code,
                    _ => None,
                };
                assert!(
                    kind == Kind::Staller,
                    "{user} ({kind:?}) kept reading and was closed: {seen:?}"
                );
                cuts.push(code);
                node += 1;
                client =
                    connect_small(nodes[node % nodes.len()], &connect_token(&user), 8 * 1024).await;
                // Recover every channel at once; then read slower than messages come for a
                // while, so the four replays and the live messages compete for the queue.
                for (channel, tracker) in CHANNELS.iter().zip(&trackers) {
                    client
                        .send(json!({"type": "subscribe", "channel": channel, "since": tracker.since()}))
                        .await;
                }
                pace.set(0.7 * total);
                step_ends = Instant::now() + Duration::from_secs(8);
            }
        }
    }
    Outcome { trackers, cuts }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_cpu_pressure_slow_readers_stay_stallers_recover_and_everyone_gets_everything() {
    let _hog = CpuHog::start(5);
    let redis = RedisServer::start();
    let pong = PONG_TIMEOUT_S.to_string();
    let flags = ["--heartbeat-s", "1", "--pong-timeout-s", pong.as_str()];
    let n1 = Gateway::start_on_redis("n1", &redis, &flags).await;
    let n2 = Gateway::start_on_redis("n2", &redis, &flags).await;
    let n3 = Gateway::start_on_redis("n3", &redis, &flags).await;
    let nodes = vec![n1.addr, n2.addr, n3.addr];

    let kinds = [Kind::Steady, Kind::Slow, Kind::Staller];
    let mut clients = Vec::new();
    let subscribed = Arc::new(Barrier::new(10));
    for i in 0..9 {
        let kind = kinds[i % kinds.len()];
        clients.push((
            kind,
            tokio::spawn(run_client(
                nodes.clone(),
                format!("client-{i}"),
                kind,
                subscribed.clone(),
            )),
        ));
    }
    subscribed.wait().await;

    // ~1 KB payloads, round robin over the channels, with history (FCALL).
    let url = redis.url();
    let publisher = tokio::task::spawn_blocking(move || {
        let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
        let pad = "x".repeat(1000);
        let started = std::time::Instant::now();
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
            // Keep to the rate, whatever the machine makes of each call.
            let due = started + Duration::from_secs_f64((n + 1) as f64 / RATE);
            if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    });
    publisher.await.unwrap();

    let mut staller_cuts = 0;
    for (i, (kind, client)) in clients.into_iter().enumerate() {
        let outcome = tokio::time::timeout(Duration::from_secs(180), client)
            .await
            .unwrap_or_else(|_| panic!("client-{i} ({kind:?}) never caught up"))
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
                "client-{i} ({kind:?}) on {channel}: every message once, in order"
            );
            assert_eq!(tracker.duplicates, 0, "client-{i} on {channel}");
        }
        for code in &outcome.cuts {
            assert!(
                matches!(code, None | Some(4008) | Some(4009)),
                "client-{i}: cut with {code:?}, not as slow or silent"
            );
        }
        if kind == Kind::Staller {
            staller_cuts += outcome.cuts.len();
        }
    }
    assert!(
        staller_cuts >= 3,
        "every staller stopped reading for twice the pong timeout and was cut ({staller_cuts} cuts)"
    );
    for node in [&n1, &n2, &n3] {
        let logs = node.logs();
        assert!(!logs.contains("panicked"), "a node panicked:\n{logs}");
    }
}
