//! The HTTP publish API: keys, validation and JSON errors.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn publish_with_a_valid_key_reaches_subscribers() {
    let gw = Gateway::start(&[]);
    let mut client = gw.connect_as("1", &["room:*"]).await;
    client.subscribe("room:lobby").await;
    let (status, body) = gw
        .post(
            "/api/publish",
            &json!({"channel": "room:lobby", "data": {"type": "chat", "text": "hi"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        client.recv().await,
        json!({"type": "message", "channel": "room:lobby", "data": {"type": "chat", "text": "hi"}})
    );
}

#[tokio::test]
async fn publish_without_or_with_a_wrong_key_is_401() {
    let gw = Gateway::start(&[]);
    let body = json!({"channel": "room:lobby", "data": 1}).to_string();
    for key in [None, Some("wrong-key")] {
        let (status, reply) = gw.post_with_key("/api/publish", key, body.clone()).await;
        assert_eq!(status, 401, "{key:?}");
        assert_eq!(reply["error"]["code"], "unauthorized");
    }
}

#[tokio::test]
async fn several_api_keys_may_be_configured() {
    let gw = Gateway::start_with(
        &["serve", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET],
        &[("FANOUT_API_KEY", "key-one,key-two")],
    );
    let body = json!({"channel": "room:lobby", "data": 1}).to_string();
    for key in ["key-one", "key-two"] {
        let (status, _) = gw
            .post_with_key("/api/publish", Some(key), body.clone())
            .await;
        assert_eq!(status, 200, "{key}");
    }
}

#[tokio::test]
async fn without_configured_keys_the_api_is_disabled() {
    let gw = Gateway::start_with(
        &["serve", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET],
        &[],
    );
    let (status, reply) = gw
        .post_with_key(
            "/api/publish",
            Some("anything"),
            json!({"channel": "room:a", "data": 1}).to_string(),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(reply["error"]["code"], "forbidden");
}

#[tokio::test]
async fn invalid_requests_get_json_errors() {
    let gw = Gateway::start(&["--max-payload-bytes", "1000", "--queue-max-bytes", "65536"]);
    let cases = [
        ("not json".to_owned(), 400, "bad_request"),
        (json!({"data": 1}).to_string(), 400, "bad_request"),
        (json!({"channel": "room:a"}).to_string(), 400, "bad_request"),
        (
            json!({"channel": "nope:a", "data": 1}).to_string(),
            400,
            "bad_request",
        ),
        (
            json!({"channel": "room:a b", "data": 1}).to_string(),
            400,
            "bad_request",
        ),
        (
            json!({"channel": "room:a", "data": "x".repeat(2000)}).to_string(),
            413,
            "too_large",
        ),
        (
            format!(r#"{{"channel":"room:a","data":"{}"}}"#, "x".repeat(200_000)),
            413,
            "too_large",
        ),
    ];
    for (body, status, code) in cases {
        let (got, reply) = gw
            .post_with_key("/api/publish", Some(API_KEY), body.clone())
            .await;
        let shown: String = body.chars().take(60).collect();
        assert_eq!(got, status, "{shown}: {reply}");
        assert_eq!(reply["error"]["code"], code, "{shown}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}

#[tokio::test]
async fn broadcast_publishes_to_several_channels_or_to_none() {
    let gw = Gateway::start(&[]);
    let mut a = gw.connect_as("1", &["room:*"]).await;
    a.subscribe("room:a").await;
    let mut b = gw.connect_as("2", &[]).await;
    let (status, body) = gw
        .post(
            "/api/broadcast",
            &json!({"channels": ["room:a", "user:2"], "data": {"n": 1}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["channels"], 2);
    assert_eq!(a.recv().await["data"], json!({"n": 1}));
    let msg = b.recv().await;
    assert_eq!(msg["channel"], "user:2");

    // One bad channel: nothing is published.
    let (status, _) = gw
        .post(
            "/api/broadcast",
            &json!({"channels": ["room:a", "bad"], "data": 2}),
        )
        .await;
    assert_eq!(status, 400);
    a.expect_silence(std::time::Duration::from_millis(300))
        .await;
    let (status, _) = gw
        .post("/api/broadcast", &json!({"channels": [], "data": 2}))
        .await;
    assert_eq!(status, 400);
}
