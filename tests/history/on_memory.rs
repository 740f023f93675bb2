//! History and recovery on one node with the embedded broker.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

fn config_file(name: &str, text: &str) -> String {
    let path =
        std::env::temp_dir().join(format!("fanout-history-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn history_channels_carry_offsets_and_rooms_do_not() {
    let gw = Gateway::start(&[]);
    let mut c = gw.connect_as("1", &["dag:*", "room:*"]).await;
    let reply = c
        .request(json!({"type": "subscribe", "channel": "dag:7"}))
        .await;
    assert_eq!(reply["offset"], 0);
    let epoch = reply["epoch"].as_str().unwrap().to_owned();
    let reply = c
        .request(json!({"type": "subscribe", "channel": "room:a"}))
        .await;
    assert!(
        reply.get("offset").is_none() && reply.get("epoch").is_none(),
        "{reply}"
    );

    let (status, body) = gw
        .post(
            "/api/publish",
            &json!({"channel": "dag:7", "data": {"n": 1}}),
        )
        .await;
    assert_eq!((status, body["offset"].as_u64()), (200, Some(1)));
    let msg = c.recv().await;
    assert_eq!(
        (msg["offset"].as_u64(), msg["epoch"].as_str()),
        (Some(1), Some(epoch.as_str()))
    );
    let (_, body) = gw
        .post("/api/publish", &json!({"channel": "room:a", "data": 1}))
        .await;
    assert!(body.get("offset").is_none(), "{body}");
    let msg = c.recv().await;
    assert!(msg.get("offset").is_none(), "{msg}");
}

#[tokio::test]
async fn a_client_that_reconnects_gets_exactly_what_it_missed_then_live() {
    let gw = Gateway::start(&[]);
    let mut tracker = Tracker::default();
    let mut c = gw.connect_as("1", &["dag:*"]).await;
    let reply = c
        .request(json!({"type": "subscribe", "channel": "dag:7"}))
        .await;
    tracker.start_at(&reply);
    for n in 0..5 {
        gw.publish("dag:7", json!({"n": n})).await;
    }
    c.read_until("dag:7", &mut tracker, 5).await;
    drop(c);

    for n in 5..105 {
        gw.publish("dag:7", json!({"n": n})).await;
    }
    let mut c = gw.connect_as("1", &["dag:*"]).await;
    let reply = c.recover("dag:7", &tracker).await;
    assert_eq!(reply["recovered"], true);
    assert_eq!(reply["offset"], 105);
    c.read_until("dag:7", &mut tracker, 105).await;
    gw.publish("dag:7", json!({"n": 105})).await;
    c.read_until("dag:7", &mut tracker, 106).await;
    let expected: Vec<_> = (0..106).map(|n| json!({"n": n})).collect();
    assert_eq!(tracker.seen, expected);
    assert_eq!(tracker.duplicates, 0);
}

#[tokio::test]
async fn a_wrong_epoch_or_a_gap_beyond_history_answers_recovered_false() {
    let file = config_file(
        "small",
        "[namespaces.dag]\nhistory_size = 10\nhistory_ttl_s = 60\n",
    );
    let gw = Gateway::start(&["--config", &file]);
    let mut c = gw.connect_as("1", &["dag:*"]).await;
    let first = c
        .request(json!({"type": "subscribe", "channel": "dag:1"}))
        .await;
    for n in 0..30 {
        gw.publish("dag:1", json!(n)).await;
    }
    for _ in 0..30 {
        c.recv().await;
    }
    let epoch = first["epoch"].as_str().unwrap();
    let cases = [
        (json!({"offset": 25, "epoch": epoch}), true),
        (json!({"offset": 5, "epoch": epoch}), false),
        (json!({"offset": 25, "epoch": "another-epoch"}), false),
        (json!({"offset": 99, "epoch": epoch}), false),
    ];
    for (since, recovered) in cases {
        let mut r = gw.connect_as("2", &["dag:*"]).await;
        let reply = r
            .request(json!({"type": "subscribe", "channel": "dag:1", "since": since}))
            .await;
        assert_eq!(reply["recovered"], recovered, "{since}: {reply}");
        assert_eq!(reply["offset"], 30);
        assert_eq!(reply["epoch"], epoch);
        if recovered {
            for n in 25..30 {
                assert_eq!(r.recv().await["data"], n);
            }
        }
        // Nothing partial: after a failed recovery, only live messages follow.
        r.expect_silence(Duration::from_millis(200)).await;
    }
    let _ = std::fs::remove_file(file);
}

#[tokio::test]
async fn the_replay_is_capped_by_max_recovery_messages() {
    let gw = Gateway::start(&["--max-recovery-messages", "20"]);
    let mut c = gw.connect_as("1", &["dag:*"]).await;
    let reply = c
        .request(json!({"type": "subscribe", "channel": "dag:2"}))
        .await;
    let since = json!({"offset": 0, "epoch": reply["epoch"]});
    for n in 0..21 {
        gw.publish("dag:2", json!(n)).await;
    }
    let mut r = gw.connect_as("1", &["dag:*"]).await;
    let reply = r
        .request(json!({"type": "subscribe", "channel": "dag:2", "since": since}))
        .await;
    assert_eq!(reply["recovered"], false, "21 missed > cap of 20: {reply}");
}

#[tokio::test]
async fn the_users_own_channel_recovers_in_place() {
    let gw = Gateway::start(&[]);
    let mut tracker = Tracker::default();
    let mut c = gw.connect_as("42", &[]).await;
    // Subscribed at connect; a subscribe with `since` recovers without leaving the channel.
    let reply = c
        .request(
            json!({"type": "subscribe", "channel": "user:42", "since": {"offset": 0, "epoch": ""}}),
        )
        .await;
    assert_eq!(reply["recovered"], false, "no position yet: {reply}");
    tracker.start_at(&reply);
    gw.publish("user:42", json!("a")).await;
    c.read_until("user:42", &mut tracker, 1).await;
    drop(c);
    gw.publish("user:42", json!("b")).await;
    gw.publish("user:42", json!("c")).await;
    let mut c = gw.connect_as("42", &[]).await;
    let reply = c.recover("user:42", &tracker).await;
    assert_eq!(reply["recovered"], true);
    c.read_until("user:42", &mut tracker, 3).await;
    assert_eq!(tracker.seen, [json!("a"), json!("b"), json!("c")]);
}

#[tokio::test]
async fn recovery_on_a_channel_without_history_is_refused_plainly() {
    let gw = Gateway::start(&[]);
    let mut c = gw.connect_as("1", &["room:*"]).await;
    let reply = c
        .request(
            json!({"type": "subscribe", "channel": "room:x", "since": {"offset": 3, "epoch": "e"}}),
        )
        .await;
    assert_eq!(reply["type"], "subscribed");
    assert_eq!(reply["recovered"], false);
}

#[tokio::test]
async fn clients_and_backends_read_history() {
    let gw = Gateway::start(&[]);
    for n in 1..=12 {
        gw.publish("dag:9", json!({"n": n})).await;
    }
    let mut c = gw.connect_as("1", &["dag:9"]).await;
    let reply = c
        .request(json!({"type": "history", "channel": "dag:9", "limit": 3, "id": 1}))
        .await;
    assert_eq!(reply["type"], "history");
    assert_eq!(reply["id"], 1);
    assert_eq!(reply["offset"], 12);
    let offsets: Vec<_> = reply["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].clone())
        .collect();
    assert_eq!(
        offsets,
        [json!(10), json!(11), json!(12)],
        "the latest 3, oldest first"
    );
    let reply = c
        .request(json!({"type": "history", "channel": "dag:9", "since": 8, "limit": 2}))
        .await;
    let data: Vec<_> = reply["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data, [json!({"n": 9}), json!({"n": 10})]);
    // Permission and history checks.
    let reply = c
        .request(json!({"type": "history", "channel": "dag:10"}))
        .await;
    assert_eq!(reply["code"], "forbidden");
    let mut r = gw.connect_as("1", &["room:*"]).await;
    let reply = r
        .request(json!({"type": "history", "channel": "room:x"}))
        .await;
    assert_eq!(reply["code"], "bad_request");

    let (status, body) = gw.get("/api/history?channel=dag:9&since=10").await;
    assert_eq!(status, 401, "the API key is required: {body}");
    let resp = reqwest::Client::new()
        .get(gw.http("/api/history?channel=dag:9&since=10"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["offset"], 12);
    assert_eq!(
        body["messages"],
        json!([{"offset": 11, "data": {"n": 11}}, {"offset": 12, "data": {"n": 12}}])
    );
}

#[tokio::test]
async fn history_expires_with_its_ttl_and_comes_back_under_a_new_epoch() {
    let file = config_file(
        "ttl",
        "[namespaces.dag]\nhistory_size = 10\nhistory_ttl_s = 1\n",
    );
    let gw = Gateway::start(&["--config", &file]);
    gw.publish("dag:3", json!(1)).await;
    let mut c = gw.connect_as("1", &["dag:*"]).await;
    let before = c
        .request(json!({"type": "history", "channel": "dag:3"}))
        .await;
    assert_eq!(before["offset"], 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = c
        .request(json!({"type": "history", "channel": "dag:3"}))
        .await;
    assert_eq!(after["offset"], 0);
    assert_ne!(after["epoch"], before["epoch"]);
    let _ = std::fs::remove_file(file);
}
