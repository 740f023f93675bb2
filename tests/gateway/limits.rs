//! Floods and crowds: rate limits and connection limits answer with their documented codes.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn a_frame_flood_is_rate_limited_then_closed_with_4029() {
    let gw = Gateway::start(&["--max-frames-per-s", "5"]);
    let mut client = gw.connect_as("1", &[]).await;
    for i in 0..40 {
        client.send(json!({"type": "ping", "id": i})).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    let close = loop {
        match client.next().await {
            Seen::Json(v) if v["type"] == "pong" => pongs += 1,
            Seen::Json(v) if v["code"] == "rate_limited" => {
                assert!(
                    v["id"].is_number(),
                    "the rejected frame's id is echoed: {v}"
                );
                limited += 1;
            }
            Seen::Json(v) => panic!("unexpected {v}"),
            Seen::Close(code, _) => break code,
            Seen::Ended => panic!("ended without close"),
        }
    };
    assert_eq!(close, Some(4029));
    assert!(pongs >= 5, "the allowed frames were served ({pongs})");
    assert!(limited >= 1, "over-limit frames were answered rate_limited");
    assert!(
        gw.metric("fanout_inbound_errors_total{code=\"rate_limited\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_binary_flood_is_rate_limited_too() {
    let gw = Gateway::start(&["--max-frames-per-s", "5"]);
    let mut client = gw.connect_as("1", &[]).await;
    for _ in 0..40 {
        // The node may close the connection before the last ones are sent.
        let frame = tokio_tungstenite::tungstenite::Message::binary(vec![1u8; 10]);
        if futures_util::SinkExt::send(&mut client.ws, frame)
            .await
            .is_err()
        {
            break;
        }
    }
    let mut codes = Vec::new();
    let close = loop {
        match client.next().await {
            Seen::Json(v) => codes.push(v["code"].as_str().unwrap().to_owned()),
            Seen::Close(code, _) => break code,
            Seen::Ended => panic!("ended without close"),
        }
    };
    assert_eq!(close, Some(4029));
    assert!(codes.iter().any(|c| c == "rate_limited"), "{codes:?}");
    assert!(
        codes.len() < 40,
        "not every frame got an answer: {}",
        codes.len()
    );
}

#[tokio::test]
async fn a_well_behaved_neighbour_is_unaffected_by_a_flood() {
    let gw = Gateway::start(&["--max-frames-per-s", "5"]);
    let mut calm = gw.connect_as("calm", &["room:*"]).await;
    calm.subscribe("room:x").await;
    let mut noisy = gw.connect_as("noisy", &[]).await;
    for i in 0..40 {
        noisy.send(json!({"type": "ping", "id": i})).await;
    }
    gw.publish("room:x", json!("hello")).await;
    assert_eq!(calm.recv().await["data"], "hello");
    assert_eq!(calm.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn the_per_user_limit_answers_429_or_4010() {
    let gw = Gateway::start(&["--max-connections-per-user", "2"]);
    let t = token("42", &[], 3600);
    let _a = gw.connect(&t).await;
    let _b = gw.connect(&t).await;
    let refused = gw
        .try_connect(Some(&t), &[])
        .await
        .err()
        .expect("third refused");
    assert_eq!(refused.status, 429);
    assert!(refused.body.contains("limit_exceeded"), "{}", refused.body);
    // Same limit when the token comes in the auth frame.
    let mut c = gw.try_connect(None, &[]).await.unwrap();
    c.send(json!({"type": "auth", "token": t})).await;
    assert_eq!(c.expect_close().await.0, 4010);
    // Other users are not affected.
    gw.connect_as("43", &[]).await;
}

#[tokio::test]
async fn the_per_user_limit_frees_up_when_a_connection_closes() {
    let gw = Gateway::start(&["--max-connections-per-user", "1"]);
    let t = token("42", &[], 3600);
    let (mut first, _) = gw.connect(&t).await;
    assert_eq!(
        gw.try_connect(Some(&t), &[]).await.err().unwrap().status,
        429
    );
    first.ws.close(None).await.unwrap();
    // Give the node a moment to notice, then the slot is free again.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match gw.try_connect(Some(&t), &[]).await {
            Ok(_) => break,
            Err(r) if r.status == 429 && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(r) => panic!("still refused: {r}"),
        }
    }
}

#[tokio::test]
async fn the_node_connection_limit_answers_503() {
    let gw = Gateway::start(&["--max-connections", "2"]);
    let _a = gw.connect_as("1", &[]).await;
    let _b = gw.connect_as("2", &[]).await;
    let refused = gw
        .try_connect(Some(&token("3", &[], 60)), &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 503);
    assert!(refused.body.contains("unavailable"), "{}", refused.body);
    assert_eq!(
        gw.metric("fanout_connections_rejected_total{reason=\"node_full\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn too_many_new_connections_per_second_answer_503() {
    let gw = Gateway::start(&["--max-new-connections-per-s", "2"]);
    let t = token("1", &[], 60);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(match gw.try_connect(Some(&t), &[]).await {
            Ok(_) => 101,
            Err(r) => r.status,
        });
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    assert_eq!(statuses[0], 101);
}
