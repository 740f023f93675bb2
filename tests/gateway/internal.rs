//! The internal listener (`internal_listen`): operations endpoints and the HTTP API there,
//! only the client paths on the public listener, and `api_on_public` putting the API back.

use serde_json::{Value, json};

use crate::support::*;

/// GET on a full URL; status and body.
async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("http get");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// POST /api/publish with the test API key to `base`; status and body.
async fn publish_to(base: &str, channel: &str, data: Value) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/publish"))
        .bearer_auth(API_KEY)
        .json(&json!({"channel": channel, "data": data}))
        .send()
        .await
        .expect("http post");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn the_internal_listener_serves_operations_and_the_api_and_the_public_one_only_clients() {
    let gw = Gateway::start(&["--internal-listen", "127.0.0.1:0"]);
    let internal = gw.internal_http("");
    let public = gw.http("");
    assert_ne!(internal, public);

    // Operations endpoints: on the internal listener only.
    let (status, body) = get(&format!("{internal}/healthz")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&format!("{internal}/readyz")).await;
    assert_eq!(status, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).expect("readyz JSON");
    assert_eq!(ready["ready"], true);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, body) = get(&format!("{public}{path}")).await;
        assert_eq!(status, 404, "{path} on the public listener: {body}");
    }

    // Clients: on the public listener, WebSocket and SSE.
    let mut client = gw.connect_as("7", &["room:*"]).await;
    client.subscribe("room:lobby").await;
    let mut sse = SseClient::open(&public, &token("8", &["room:*"], 60), "", None)
        .await
        .unwrap_or_else(|r| panic!("SSE refused: {} {}", r.status, r.body));
    assert_eq!(
        sse.request(json!({"type": "subscribe", "channel": "room:lobby", "id": 1}))
            .await["type"],
        "subscribed"
    );
    let refused = gw
        .try_connect_url(
            &format!("ws://{}/ws", gw.internal.expect("internal address")),
            Some(&token("9", &[], 60)),
            &[],
        )
        .await
        .err()
        .expect("no WebSocket on the internal listener");
    assert_eq!(refused.status, 404);

    // The API: on the internal listener, not the public one, whatever the key.
    let (status, body) = publish_to(&public, "room:lobby", json!("nope")).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = get(&format!("{public}/api/history?channel=dag:1")).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = publish_to(&internal, "room:lobby", json!({"n": 1})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        client.recv().await,
        json!({"type": "message", "channel": "room:lobby", "data": {"n": 1}})
    );
    assert_eq!(sse.recv().await["data"], json!({"n": 1}));

    // The metrics the internal listener serves count what the public one did.
    let (status, metrics) = get(&format!("{internal}/metrics")).await;
    assert_eq!(status, 200);
    for series in [
        "fanout_connections_open 2",
        "fanout_messages_published_total{source=\"http\"} 1",
    ] {
        assert!(
            metrics.contains(series),
            "missing {series:?} in:\n{metrics}"
        );
    }
    assert!(
        gw.logs().contains(&format!(
            "internal={}",
            gw.internal.expect("internal address")
        )),
        "the start line names the internal listener:\n{}",
        gw.logs()
    );
}

#[tokio::test]
async fn api_on_public_serves_the_api_on_both_listeners_and_operations_only_internally() {
    let gw = Gateway::start(&["--internal-listen", "127.0.0.1:0", "--api-on-public"]);
    let mut client = gw.connect_as("7", &["room:*"]).await;
    client.subscribe("room:lobby").await;
    for (n, base) in [gw.http(""), gw.internal_http("")].iter().enumerate() {
        let (status, body) = publish_to(base, "room:lobby", json!(n)).await;
        assert_eq!(status, 200, "{base}: {body}");
        assert_eq!(client.recv().await["data"], json!(n));
    }
    let (status, _) = get(&gw.http("/metrics")).await;
    assert_eq!(status, 404);
    let (status, _) = get(&gw.internal_http("/metrics")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn during_a_drain_the_internal_listener_answers_not_ready() {
    // Two clients over a 10 s window: the second is closed 5 s in, so the node is still
    // draining (not yet exited) while the readiness endpoint is asked.
    let mut gw = Gateway::start(&["--internal-listen", "127.0.0.1:0", "--drain-s", "10"]);
    let mut first = gw.connect_as("1", &[]).await;
    let mut second = gw.connect_as("2", &[]).await;
    let (status, _) = get(&gw.internal_http("/readyz")).await;
    assert_eq!(status, 200);
    gw.signal("TERM");
    let deadline = tokio::time::Instant::now() + WAIT;
    let body = loop {
        let (status, body) = get(&gw.internal_http("/readyz")).await;
        if status == 503 {
            break body;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz never turned 503"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(body.contains("draining"), "{body}");
    for client in [&mut first, &mut second] {
        let (code, _) = client.expect_close().await;
        assert_eq!(code, 1012);
    }
    assert_eq!(gw.wait_exit(std::time::Duration::from_secs(20)), Some(0));
}
