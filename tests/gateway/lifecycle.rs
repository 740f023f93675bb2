//! Liveness, operations endpoints and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test]
async fn the_server_pings_every_heartbeat() {
    let gw = Gateway::start(&["--heartbeat-s", "1"]);
    let (mut client, ack) = gw.connect(&token("1", &[], 60)).await;
    assert_eq!(ack["heartbeat_s"], 1);
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pings < 2 {
        match tokio::time::timeout_at(deadline, client.ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(other))) => panic!("unexpected {other:?}"),
            other => panic!("no ping in time: {other:?}"),
        }
    }
    // Answering pings (tungstenite does so while reading) keeps the connection open.
    assert_eq!(
        client.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_heartbeat_timeout() {
    let gw = Gateway::start(&["--heartbeat-s", "1", "--pong-timeout-s", "1"]);
    let (mut silent, _) = gw.connect(&token("1", &[], 60)).await;
    // Not reading means not answering pings.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (code, reason) = silent.expect_close().await;
    assert_eq!(code, 4009);
    assert!(reason.contains("heartbeat"), "{reason}");
    gw.wait_metric(
        "fanout_disconnects_total{reason=\"heartbeat_timeout\"}",
        1.0,
    )
    .await;
}

/// Queues `count` numbered messages of about `size` bytes for user 1 (through the HTTP API,
/// so that they pile up while the client does not read).
async fn pile_up(gw: &Gateway, count: usize, size: usize) {
    let client = reqwest::Client::new();
    let pad = "x".repeat(size);
    for n in 0..count {
        let resp = client
            .post(gw.http("/api/publish"))
            .bearer_auth(API_KEY)
            .json(&json!({"channel": "user:1", "data": {"n": n, "pad": pad}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
}

/// A node whose heartbeat is much shorter than the time a slow client needs to read through
/// its backlog, with room for that backlog.
fn backlog_node() -> Gateway {
    Gateway::start(&[
        "--heartbeat-s",
        "1",
        "--pong-timeout-s",
        "2",
        "--queue-max-messages",
        "4096",
        "--queue-max-bytes",
        "16777216",
    ])
}

#[tokio::test]
async fn a_client_reading_slowly_through_a_backlog_is_pinged_between_messages_and_stays() {
    let gw = Arc::new(backlog_node());
    let mut client = connect_small(gw.addr, &token("1", &[], 3600), 8 * 1024).await;
    // 6 MB, published faster than the client reads: more than the kernel buffers, so part of
    // it waits in the node's queue. (The client reads all along: one that stops reading for
    // longer than the pong timeout is dead, as the next test shows.)
    let count = 1500;
    let publisher = tokio::spawn({
        let gw = gw.clone();
        async move { pile_up(&gw, count, 4000).await }
    });

    // Read at ~100 messages (400 KB) a second: 15 s for the backlog, seven times the pong
    // timeout. After 300 messages, ask for a protocol pong.
    let mut pace = Pace::new(100.0);
    let mut next = 0u64;
    let mut pings = 0;
    let mut pong_at = None;
    while next < count as u64 {
        let msg = tokio::time::timeout(WAIT, client.ws.next())
            .await
            .expect("the backlog keeps coming")
            .expect("the connection stays open")
            .expect("no error");
        match msg {
            Message::Ping(_) => pings += 1,
            Message::Text(text) => {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                match v["type"].as_str() {
                    Some("message") => {
                        assert_eq!(v["data"]["n"], next, "in order, none lost");
                        next += 1;
                        if next == 300 {
                            client.send(json!({"type": "ping", "id": "link"})).await;
                        }
                        pace.one().await;
                    }
                    Some("pong") => pong_at = Some(next),
                    _ => panic!("unexpected {v}"),
                }
            }
            Message::Close(close) => panic!("closed while reading: {close:?}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    publisher.await.unwrap();
    assert!(
        pings >= 2,
        "heartbeats go out between batches, not after the backlog ({pings} seen)"
    );
    let pong_at = pong_at.expect("the protocol ping was answered");
    assert!(
        pong_at < count as u64 - 100,
        "the pong went ahead of the queued messages (after message {pong_at} of {count})"
    );
    assert_eq!(
        client.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
    assert_eq!(
        gw.metric("fanout_disconnects_total{reason=\"heartbeat_timeout\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_behind_a_backlog_is_closed_as_dead() {
    let gw = backlog_node();
    let _stalled = connect_small(gw.addr, &token("1", &[], 3600), 8 * 1024).await;
    pile_up(&gw, 1500, 4000).await;
    // It never reads again: nothing it was sent is acknowledged, so no answer is excused.
    // Closed for the heartbeat, or, when the node was still waiting to write to it (no ping
    // can go out in the middle of a frame), for the write timeout (10 s): whichever ran out.
    gw.wait_metrics(
        &[
            "fanout_disconnects_total{reason=\"heartbeat_timeout\"}",
            "fanout_disconnects_total{reason=\"write_timeout\"}",
        ],
        1.0,
        Duration::from_secs(30),
    )
    .await;
}

#[tokio::test]
async fn json_ping_gets_json_pong() {
    let gw = Gateway::start(&[]);
    let mut client = gw.connect_as("1", &[]).await;
    assert_eq!(
        client.request(json!({"type": "ping", "id": 12})).await,
        json!({"type": "pong", "id": 12})
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let gw = Gateway::start(&[]);
    let (status, body) = gw.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = gw.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["broker"], "memory");

    let mut client = gw.connect_as("1", &[]).await;
    gw.publish("user:1", json!("hi")).await;
    client.recv().await;
    let (status, text) = gw.get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "fanout_connections_open 1",
        "fanout_connections_accepted_total 1",
        "fanout_subscriptions 2",
        "fanout_channels 2",
        "fanout_messages_published_total{source=\"http\"} 1",
        "fanout_messages_delivered_total 1",
        "fanout_dispatch_latency_seconds_count 1",
        "process_resident_memory_bytes",
        &format!(
            "fanout_build_info{{protocol=\"1\",target=\"{}\",version=\"{}\"}} 1",
            std::env::consts::ARCH,
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(text.contains(name), "missing {name:?} in:\n{text}");
    }
}

#[tokio::test]
async fn sigterm_drains_clients_with_1012_and_exits_0() {
    let mut gw = Gateway::start(&["--drain-s", "2"]);
    let mut clients = Vec::new();
    for user in ["1", "2", "3", "4"] {
        clients.push(gw.connect_as(user, &[]).await);
    }
    gw.signal("TERM");
    // During the drain the node says it is not ready and refuses new sessions.
    let (status, body) = gw.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("draining"));
    let refused = gw
        .try_connect(Some(&token("9", &[], 60)), &[])
        .await
        .err()
        .expect("refused while draining");
    assert_eq!(refused.status, 503);
    for client in &mut clients {
        let (code, _) = client.expect_close().await;
        assert_eq!(code, 1012);
    }
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test]
async fn sigint_on_an_idle_node_exits_0_promptly() {
    let mut gw = Gateway::start(&[]);
    gw.signal("INT");
    assert_eq!(gw.wait_exit(Duration::from_secs(5)), Some(0));
}

/// `fanout serve ... 2>&1 | head -2`: the gateway's log pipe is closed once it says it listens.
/// Returns the running process and its port.
fn start_with_a_closed_log_pipe(extra: &[&str]) -> (std::process::Child, u16) {
    use std::io::{BufRead, BufReader};
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "serve",
        "--listen",
        &listen,
        "--jwt-secret",
        SECRET,
        "--log-level",
        "debug",
    ];
    args.extend_from_slice(extra);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn fanout");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.is_ok_and(|l| l.contains("listening")) {
            break;
        }
    }
    drop(lines);
    (child, port)
}

fn exit_code_within(child: &mut std::process::Child, within: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("fanout did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_closed_log_pipe_never_blocks_the_drain() {
    let (mut child, port) = start_with_a_closed_log_pipe(&["--drain-s", "1"]);
    let url = format!("http://127.0.0.1:{port}/readyz");
    eventually_async(|| async { reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) }).await;
    // Traffic that logs at debug level, into the closed pipe.
    for user in 0..20 {
        let tok = token(&user.to_string(), &[], 60);
        let _ =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws?token={tok}")).await;
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(
        exit_code_within(&mut child, Duration::from_secs(15)),
        Some(0)
    );
}

#[tokio::test]
async fn a_second_sigterm_exits_at_once_during_a_long_drain() {
    let mut gw = Gateway::start(&["--drain-s", "60"]);
    let mut clients = Vec::new();
    for user in ["1", "2", "3"] {
        clients.push(gw.connect_as(user, &[]).await);
    }
    gw.signal("TERM");
    gw.wait_ready(false).await;
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(5)), Some(1));
}

/// Polls an async check until it holds, or panics after [`WAIT`].
async fn eventually_async<F, Fut>(check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_default_log_level_tells_an_operator_who_came_and_went_and_who_was_refused() {
    let gw = Gateway::start_with(
        &["serve", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET],
        &[],
    );
    let tok = token("42", &[], 60);
    let (mut client, ack) = gw.connect(&tok).await;
    let conn = ack["conn_id"].as_str().unwrap().to_owned();
    client.ws.close(None).await.unwrap();
    let expired = token("43", &[], -60);
    assert!(gw.try_connect(Some(&expired), &[]).await.is_err());
    let logs = || gw.logs();
    eventually("the close and the refusal are logged", || {
        let text = logs();
        text.contains("connection closed") && text.contains("connection refused")
    })
    .await;
    let text = logs();
    let opened = text
        .lines()
        .find(|l| l.contains("connection opened"))
        .unwrap();
    assert!(
        opened.contains(&conn)
            && opened.contains("user=\"42\"")
            && opened.contains("remote=127.0.0.1:"),
        "{opened}"
    );
    let closed = text
        .lines()
        .find(|l| l.contains("connection closed"))
        .unwrap();
    assert!(
        closed.contains(&conn)
            && closed.contains("duration_ms=")
            && closed.contains("close=\"client_closed\""),
        "{closed}"
    );
    let refused = text
        .lines()
        .find(|l| l.contains("connection refused"))
        .unwrap_or_else(|| panic!("no refusal logged in:\n{text}"));
    assert!(
        refused.contains("token expired") && refused.contains("remote=127.0.0.1:"),
        "{refused}"
    );
    assert!(
        !text.contains(&tok) && !text.contains(&expired),
        "tokens never reach the logs"
    );
}

#[tokio::test]
async fn forbidden_subscribes_are_logged_but_a_retry_loop_does_not_flood_the_log() {
    let gw = Gateway::start_with(
        &["serve", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET],
        &[],
    );
    let (mut client, ack) = gw.connect(&token("45", &["room:mine"], 60)).await;
    let conn = ack["conn_id"].as_str().unwrap().to_owned();
    // 100 frames a second are allowed per connection: stay under it.
    for i in 0..60 {
        let reply = client
            .request(json!({"type": "subscribe", "channel": "room:theirs", "id": i}))
            .await;
        assert_eq!(reply["code"], "forbidden");
    }
    eventually("the refusal is logged", || {
        gw.logs().contains("subscription refused")
    })
    .await;
    let logs = gw.logs();
    let refusals: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("subscription refused"))
        .collect();
    assert!(
        refusals[0].contains(&conn)
            && refusals[0].contains("user=\"45\"")
            && refusals[0].contains("channel=room:theirs"),
        "{}",
        refusals[0]
    );
    // One line a second at most: 60 refusals within a second or two are a handful of lines.
    assert!(refusals.len() < 10, "{} lines", refusals.len());
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_logs_show_the_forwarded_client_address() {
    let gw = Gateway::start_with(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
            "--trusted-proxies",
            "127.0.0.1",
        ],
        &[],
    );
    let tok = token("44", &[], 60);
    let forwarded = [("x-forwarded-for", "6.6.6.6, 203.0.113.9")];
    let client = gw.try_connect(Some(&tok), &forwarded).await.unwrap();
    drop(client);
    eventually("the connection is logged", || {
        gw.logs().contains("connection opened")
    })
    .await;
    let logs = gw.logs();
    let opened = logs
        .lines()
        .find(|l| l.contains("connection opened"))
        .unwrap();
    assert!(
        opened.contains("remote=203.0.113.9"),
        "the last forwarded hop: {opened}"
    );

    // An untrusted peer's header is ignored.
    let direct = Gateway::start_with(
        &["serve", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET],
        &[],
    );
    let client = direct.try_connect(Some(&tok), &forwarded).await.unwrap();
    drop(client);
    eventually("the connection is logged", || {
        direct.logs().contains("connection opened")
    })
    .await;
    let logs = direct.logs();
    let opened = logs
        .lines()
        .find(|l| l.contains("connection opened"))
        .unwrap();
    assert!(opened.contains("remote=127.0.0.1:"), "{opened}");
}
