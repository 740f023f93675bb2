//! The same protocol over Server-Sent Events: a stream per session, frames POSTed beside it,
//! ids that let a reconnecting browser recover exactly what it missed.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

async fn open(gw: &Gateway, user: &str, query: &str) -> SseClient {
    SseClient::open(
        &gw.http(""),
        &token(user, &["room:*", "dag:*"], 3600),
        query,
        None,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_stream_subscribes_its_channels_and_carries_messages_as_events() {
    let gw = Gateway::start(&["--heartbeat-s", "1"]);
    let mut sse = open(&gw, "42", "channel=room:lobby&channel=dag:7").await;
    assert_eq!(sse.ack["user"], "42");
    assert!(sse.retry_ms.is_some_and(|ms| (1000..=3000).contains(&ms)));
    let first = sse.next().await.unwrap();
    assert_eq!(first.event, "subscribed");
    assert_eq!(first.data["channel"], "room:lobby");
    let second = sse.next().await.unwrap();
    assert_eq!(second.data["channel"], "dag:7");
    assert_eq!(second.data["offset"], 0);

    gw.publish("room:lobby", json!({"type": "chat", "text": "hi"}))
        .await;
    let chat = sse.next().await.unwrap();
    assert_eq!(chat.event, "message");
    assert_eq!(chat.data["data"]["text"], "hi");
    assert!(chat.id.is_none(), "room: keeps no history, so no id");

    gw.publish("dag:7", json!({"type": "node_state", "n": 1}))
        .await;
    let step = sse.next().await.unwrap();
    assert_eq!(step.data["offset"], 1);
    let epoch = step.data["epoch"].as_str().unwrap();
    assert_eq!(
        step.id.as_deref(),
        Some(format!("dag:7=1:{epoch}").as_str())
    );

    // Heartbeats are comments, one per heartbeat interval.
    assert!(sse.next_within(Duration::from_millis(2500)).await.is_err());
    assert!(sse.comments >= 1, "heartbeat comments: {}", sse.comments);
}

#[tokio::test]
async fn frames_posted_for_a_session_are_answered_on_its_stream_in_order() {
    let gw = Gateway::start(&[]);
    let mut sse = open(&gw, "7", "").await;
    let (status, body) = sse
        .post(&[
            json!({"type": "ping", "id": 1}),
            json!({"type": "subscribe", "channel": "room:a", "id": 2}),
            json!({"type": "subscribe", "channel": "secret:x", "id": 3}),
            json!({"type": "publish", "channel": "room:a", "data": 1, "id": 4}),
        ])
        .await;
    assert_eq!((status, body), (202, json!({"accepted": 4})));
    assert_eq!(sse.recv().await, json!({"type": "pong", "id": 1}));
    assert_eq!(sse.recv().await["type"], "subscribed");
    let refused = sse.recv().await;
    assert_eq!(
        (refused["type"].as_str(), refused["id"].as_i64()),
        (Some("error"), Some(3))
    );
    assert_eq!(refused["code"], "bad_request");
    // Not granted by the token: the same answer a WebSocket gets.
    let answer = sse.recv().await;
    assert_eq!(answer["code"], "forbidden", "{answer}");

    // A malformed frame is answered on the stream, like on a WebSocket.
    let (status, _) = post_frames(
        &gw.http(""),
        &sse.conn_id,
        &token("7", &[], 60),
        "{nope".into(),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(sse.recv().await["code"], "bad_request");
}

#[tokio::test]
async fn bad_tokens_origins_and_sessions_get_clear_http_errors() {
    let gw = Gateway::start(&["--allowed-origins", "https://app.example.com"]);
    let base = gw.http("");
    let expired = token("1", &[], -3600);
    let refused = SseClient::open(&base, &expired, "", None)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("expired"), "{refused}");
    let refused = SseClient::open(&base, "", "", None).await.err().unwrap();
    assert_eq!(refused.status, 401, "{refused}");

    let response = reqwest::Client::new()
        .get(format!("{base}/sse?token={}", token("1", &[], 60)))
        .header("origin", "https://evil.example.net")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    let sse = open(&gw, "1", "").await;
    let (status, body) = post_frames(
        &base,
        "no-such-session",
        &token("1", &[], 60),
        "{\"type\":\"ping\"}".into(),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = post_frames(
        &base,
        &sse.conn_id,
        &token("2", &[], 60),
        "{\"type\":\"ping\"}".into(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) =
        post_frames(&base, &sse.conn_id, &expired, "{\"type\":\"ping\"}".into()).await;
    assert_eq!(status, 401);
    drop(sse);
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_recovers_exactly_the_missed_messages() {
    let gw = Gateway::start(&[]);
    let tok = token("9", &["dag:*"], 3600);
    let mut sse = SseClient::open(&gw.http(""), &tok, "channel=dag:1&channel=dag:2", None)
        .await
        .unwrap();
    sse.recv().await;
    sse.recv().await;
    for n in 0..3 {
        gw.publish("dag:1", json!(n)).await;
        gw.publish("dag:2", json!(n)).await;
    }
    for _ in 0..6 {
        sse.recv().await;
    }
    let last_id = sse.last_id.clone().unwrap();
    assert!(
        last_id.contains("dag:1=3:") && last_id.contains("dag:2=3:"),
        "{last_id}"
    );
    drop(sse);
    // Missed while away.
    for n in 3..6 {
        gw.publish("dag:1", json!(n)).await;
    }
    gw.publish("dag:2", json!(3)).await;

    // The browser reconnects to the same URL, sending the last id back.
    let mut sse = SseClient::open(
        &gw.http(""),
        &tok,
        "channel=dag:1&channel=dag:2",
        Some(&last_id),
    )
    .await
    .unwrap();
    let mut seen = std::collections::BTreeMap::<String, Vec<i64>>::new();
    let mut recovered = 0;
    while seen.values().map(Vec::len).sum::<usize>() < 4 || recovered < 2 {
        let frame = sse.recv().await;
        match frame["type"].as_str() {
            Some("subscribed") => {
                assert_eq!(frame["recovered"], true, "{frame}");
                recovered += 1;
            }
            Some("message") => seen
                .entry(frame["channel"].as_str().unwrap().into())
                .or_default()
                .push(frame["data"].as_i64().unwrap()),
            _ => panic!("unexpected {frame}"),
        }
    }
    assert_eq!(seen["dag:1"], vec![3, 4, 5]);
    assert_eq!(seen["dag:2"], vec![3]);
    assert!(
        sse.next_within(Duration::from_millis(300)).await.is_err(),
        "nothing twice"
    );
}

#[tokio::test]
async fn a_stalled_sse_reader_is_cut_without_slowing_others() {
    let gw = Gateway::start(&["--queue-max-messages", "64", "--queue-max-bytes", "1048576"]);
    let stalled = open(&gw, "slow", "channel=room:firehose").await;
    let mut reader = open(&gw, "fast", "channel=room:firehose").await;
    reader.recv().await;
    let filler = "x".repeat(16 * 1024);
    let total = 1000;
    let publisher = {
        let url = gw.http("/api/publish");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..total {
                let response = http
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(&json!({"channel": "room:firehose", "data": {"i": i, "pad": filler}}))
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success());
            }
        })
    };
    for i in 0..total {
        assert_eq!(reader.recv().await["data"]["i"], i);
    }
    publisher.await.unwrap();
    // Cut as slow when its queue overflowed, or, on a machine so busy that the publisher
    // took longer than the write timeout to fill it, when its stream made no progress.
    gw.wait_metrics(
        &[
            "fanout_slow_consumers_total",
            "fanout_disconnects_total{reason=\"write_timeout\"}",
        ],
        1.0,
        WAIT,
    )
    .await;
    drop(stalled);
}

#[tokio::test]
async fn a_draining_node_ends_streams_with_a_close_event() {
    let mut gw = Gateway::start(&["--drain-s", "1"]);
    let mut sse = open(&gw, "3", "").await;
    gw.signal("TERM");
    let close = sse.next().await.unwrap();
    assert_eq!(close.event, "close");
    assert_eq!(close.data["code"], 1012);
    assert!(
        sse.next().await.is_none(),
        "the stream ends after the close event"
    );
    assert_eq!(gw.wait_exit(Duration::from_secs(15)), Some(0));
}

#[tokio::test]
async fn with_a_write_delay_a_stream_still_carries_every_message_in_order() {
    // The stream's writer holds its chunks 50 ms to send them together.
    let gw = Gateway::start(&["--write-delay-ms", "50"]);
    let mut sse = open(&gw, "7", "channel=room:batched").await;
    assert_eq!(sse.next().await.unwrap().event, "subscribed");
    for i in 0..200 {
        gw.publish("room:batched", json!(i)).await;
    }
    for i in 0..200 {
        let event = sse.next().await.unwrap();
        assert_eq!(
            (event.event.as_str(), &event.data["data"]),
            ("message", &json!(i))
        );
    }
}
