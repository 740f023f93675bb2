//! The backend in control, on one node: it ends a user's connections, takes a channel away
//! or gives one, revokes tokens (live sessions close, the token is refused from then on),
//! grants one channel by a channel token, and sees what is connected.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// A connection token for `sub` with an `iat` (and a `jti`), granting `channels`.
fn issued_token(sub: &str, channels: &[&str], iat: i64, jti: &str) -> String {
    token_with(json!({
        "sub": sub,
        "exp": unix_now() + 3600,
        "iat": iat,
        "jti": jti,
        "channels": channels,
    }))
}

/// A channel token: `sub` may subscribe to `channel` for `ttl_s` seconds.
fn channel_token(sub: &str, channel: &str, ttl_s: i64) -> String {
    token_with(json!({
        "sub": sub,
        "channel": channel,
        "exp": unix_now() + ttl_s,
        "iat": unix_now(),
        "info": {"role": "guest"},
    }))
}

/// Reads frames until a close; returns what came before it and the close code.
async fn until_close(client: &mut Client) -> (Vec<Value>, u16, String) {
    let mut before = Vec::new();
    loop {
        match client.next().await {
            Seen::Json(v) => before.push(v),
            Seen::Close(code, reason) => return (before, code.unwrap_or(1005), reason),
            Seen::Ended => panic!("ended without a close frame after {before:?}"),
        }
    }
}

#[tokio::test]
async fn a_disconnect_ends_the_users_connections_with_the_code_it_asked_for() {
    let gw = Gateway::start(&[]);
    let mut a1 = gw.connect_as("ada", &[]).await;
    let mut a2 = gw.connect_as("ada", &[]).await;
    let mut other = gw.connect_as("bob", &[]).await;

    let (status, body) = gw
        .post(
            "/api/disconnect",
            &json!({"user": "ada", "reason": "logged out"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for client in [&mut a1, &mut a2] {
        let (before, code, reason) = until_close(client).await;
        assert_eq!(
            before,
            [
                json!({"type": "disconnect", "code": 4004, "reason": "logged out", "reconnect": true})
            ]
        );
        assert_eq!((code, reason.as_str()), (4004, "logged out"));
    }
    assert_eq!(other.request(json!({"type": "ping"})).await["type"], "pong");

    // One connection by its id, for good.
    let (mut b2, ack) = gw.connect(&token("bob", &[], 3600)).await;
    let (status, _) = gw
        .post(
            "/api/disconnect",
            &json!({"user": "bob", "conn_id": ack["conn_id"], "reconnect": false}),
        )
        .await;
    assert_eq!(status, 200);
    let (before, code, _) = until_close(&mut b2).await;
    assert_eq!(before[0]["reconnect"], false);
    assert_eq!(code, 4005);
    assert_eq!(other.request(json!({"type": "ping"})).await["type"], "pong");

    // An application's own code.
    let (status, _) = gw
        .post("/api/disconnect", &json!({"user": "bob", "code": 4123}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(until_close(&mut other).await.1, 4123);
    gw.wait_metric("fanout_disconnects_total{reason=\"disconnected\"}", 3.0)
        .await;
}

#[tokio::test]
async fn the_backend_takes_a_channel_away_and_gives_one_without_a_reconnect() {
    let gw = Gateway::start(&[]);
    let mut client = gw.connect_as("ada", &["room:x"]).await;
    client.subscribe("room:x").await;

    let (status, body) = gw
        .post(
            "/api/unsubscribe",
            &json!({"user": "ada", "channel": "room:x"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        client.recv().await,
        json!({"type": "unsubscribed", "channel": "room:x", "server": true})
    );
    gw.publish("room:x", json!("gone")).await;

    // room:y is not in the token: the backend grants it.
    let (status, _) = gw
        .post(
            "/api/subscribe",
            &json!({"user": "ada", "channel": "room:y"}),
        )
        .await;
    assert_eq!(status, 200);
    let reply = client.recv().await;
    assert_eq!(reply["type"], "subscribed");
    assert_eq!(
        (&reply["channel"], &reply["server"]),
        (&json!("room:y"), &json!(true))
    );
    gw.publish("room:y", json!("here")).await;
    let message = client.recv().await;
    assert_eq!(
        (&message["channel"], &message["data"]),
        (&json!("room:y"), &json!("here"))
    );
    // The same connection goes on; nothing of room:x arrived.
    assert_eq!(
        client.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
}

#[tokio::test]
async fn a_revoked_users_sessions_close_and_its_old_tokens_are_refused() {
    let gw = Gateway::start(&[]);
    let old = issued_token("ada", &[], unix_now() - 60, "t-old");
    let (mut live, _) = gw.connect(&old).await;
    let mut sse = SseClient::open(&format!("http://{}", gw.addr), &old, "", None)
        .await
        .expect("stream opened (its connection_ack read)");

    let (status, body) = gw
        .post("/api/revoke", &json!({"user": "ada", "before": unix_now()}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, code, reason) = until_close(&mut live).await;
    assert_eq!((code, reason.as_str()), (4003, "token revoked"));
    let close = loop {
        let event = sse
            .next()
            .await
            .expect("the stream ends with a close event");
        if event.event == "close" {
            break event;
        }
    };
    assert_eq!(close.data["code"], 4003);

    // At connect, in the request or in the auth frame.
    let refused = gw
        .try_connect(Some(&old), &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("token revoked"), "{}", refused.body);
    let mut late = gw.try_connect(None, &[]).await.unwrap();
    late.send(json!({"type": "auth", "token": old})).await;
    assert_eq!(late.expect_close().await.0, 4003);

    // A token issued after the cut-off is fine; a refresh with the old one is refused.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new = issued_token("ada", &[], unix_now() + 1, "t-new");
    let (mut fresh, _) = gw.connect(&new).await;
    let reply = fresh
        .request(json!({"type": "refresh", "token": old, "id": 1}))
        .await;
    assert_eq!(
        (&reply["type"], &reply["code"]),
        (&json!("error"), &json!("unauthorized"))
    );
    assert_eq!(reply["message"], "token revoked");
    gw.wait_metric("fanout_connections_rejected_total{reason=\"revoked\"}", 1.0)
        .await;
}

#[tokio::test]
async fn a_revoked_token_id_ends_only_the_session_holding_it() {
    let gw = Gateway::start(&[]);
    let (mut a, _) = gw
        .connect(&issued_token("ada", &[], unix_now(), "t-a"))
        .await;
    let (mut b, _) = gw
        .connect(&issued_token("ada", &[], unix_now(), "t-b"))
        .await;
    let (status, _) = gw
        .post(
            "/api/revoke",
            &json!({"jti": "t-a", "expires_at": unix_now() + 3600}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(until_close(&mut a).await.1, 4003);
    assert_eq!(b.request(json!({"type": "ping"})).await["type"], "pong");
}

#[tokio::test]
async fn a_channel_token_grants_one_channel_until_it_expires() {
    let gw = Gateway::start(&[]);
    let mut client = gw.connect_as("ada", &["room:lobby"]).await;
    client.subscribe("room:lobby").await;
    let refused = client
        .request(json!({"type": "subscribe", "channel": "room:vip", "id": 1}))
        .await;
    assert_eq!(refused["code"], "forbidden");

    // Someone else's, or another channel's, token does not do.
    for (token, expected) in [
        (channel_token("bob", "room:vip", 60), "forbidden"),
        (channel_token("ada", "room:other", 60), "forbidden"),
        (token("ada", &["room:vip"], 60), "unauthorized"),
    ] {
        let reply = client
            .request(json!({"type": "subscribe", "channel": "room:vip", "token": token, "id": 2}))
            .await;
        assert_eq!(reply["code"], expected, "{reply}");
    }

    let reply = client
        .request(json!({"type": "subscribe", "channel": "room:vip", "token": channel_token("ada", "room:vip", 2), "id": 3}))
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    gw.publish("room:vip", json!("inside")).await;
    assert_eq!(client.recv().await["data"], "inside");

    // Its expiry ends that subscription only.
    let ended = client.recv().await;
    assert_eq!(
        ended,
        json!({"type": "unsubscribed", "channel": "room:vip", "reason": "unauthorized"})
    );
    gw.publish("room:vip", json!("after")).await;
    gw.publish("room:lobby", json!("still here")).await;
    assert_eq!(client.recv().await["data"], "still here");

    // A channel token is no connection token.
    let refused = gw
        .try_connect(Some(&channel_token("ada", "room:vip", 60)), &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("channel token"), "{}", refused.body);
}

#[tokio::test]
async fn the_node_registry_and_the_channel_counts_show_what_is_connected() {
    let gw = Gateway::start_named("solo", &[]);
    let mut a = gw.connect_as("ada", &["room:*"]).await;
    let mut b = gw.connect_as("bob", &["room:*"]).await;
    a.subscribe("room:ops").await;
    b.subscribe("room:ops").await;
    b.subscribe("room:dev").await;

    let (status, info) = gw.api_get("/api/info").await;
    assert_eq!(status, 200, "{info}");
    let nodes = info["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["id"], "solo");
    assert_eq!(nodes[0]["connections"], 2);

    let (status, listed) = gw.api_get("/api/channels?pattern=room:*").await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["channels"],
        json!([
            {"channel": "room:dev", "subscribers": 1},
            {"channel": "room:ops", "subscribers": 2},
        ])
    );
    let (_, all) = gw.api_get("/api/channels").await;
    assert!(all["channels"].as_array().unwrap().len() >= 4, "{all}");
}

#[tokio::test]
async fn bad_control_requests_get_clear_errors() {
    let gw = Gateway::start(&[]);
    let cases = [
        ("/api/disconnect", json!({"user": "not a user!"}), "user"),
        (
            "/api/disconnect",
            json!({"user": "ada", "code": 1000}),
            "code",
        ),
        (
            "/api/disconnect",
            json!({"user": "ada", "reason": "x".repeat(101)}),
            "reason",
        ),
        (
            "/api/disconnect",
            json!({"user": "ada", "surprise": 1}),
            "unknown field",
        ),
        (
            "/api/subscribe",
            json!({"user": "ada", "channel": "nope:x"}),
            "namespace",
        ),
        ("/api/unsubscribe", json!({"user": "ada"}), "channel"),
        (
            "/api/revoke",
            json!({"jti": "x".repeat(300), "expires_at": unix_now()}),
            "jti",
        ),
        ("/api/revoke", json!({"jti": "t"}), "expires_at"),
        ("/api/revoke", json!({"user": "ada", "jti": "t"}), "either"),
        ("/api/revoke", json!({}), "either"),
    ];
    for (path, body, expected) in cases {
        let (status, reply) = gw.post(path, &body).await;
        assert_eq!(status, 400, "{path} {body}: {reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(expected)),
            "{path} {body}: {reply}"
        );
    }
    let (status, reply) = gw
        .api_get(&format!("/api/channels?pattern={}", "a".repeat(200)))
        .await;
    assert_eq!(status, 400, "{reply}");
    let (status, _) = gw.api_get("/api/channels?pattern=room:%7B*").await;
    assert_eq!(status, 400);
    let (status, _) = gw
        .post_with_key("/api/disconnect", None, json!({"user": "ada"}).to_string())
        .await;
    assert_eq!(status, 401);
    // A user with no connection anywhere: accepted (there is nothing to end).
    let (status, _) = gw.post("/api/disconnect", &json!({"user": "nobody"})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_logout_right_after_a_login_reaches_the_new_connection() {
    // The backend acts the moment the client is acknowledged (a login then a logout, a
    // session cut off as it opens): the connection is already the user's, on a busy
    // machine too (a gateway thread preempted between the acknowledgement and the rest).
    let redis = RedisServer::start();
    let gw = Gateway::start_on_redis("login-logout", &redis, &[]).await;
    let mut backend = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _hogs: Vec<CpuHog> = (0..3).map(|_| CpuHog::start(0)).collect();
    for round in 0..40 {
        let user = format!("quick{round}");
        let mut client = gw.connect_as(&user, &[]).await;
        let accepted: u64 = redis::cmd("FCALL")
            .arg(&["fanout_disconnect", "1", "control", &user, "", "logged out"][..])
            .query_async(&mut backend)
            .await
            .unwrap();
        assert_eq!(accepted, 1);
        let (before, code, reason) = until_close(&mut client).await;
        assert_eq!(
            (code, reason.as_str()),
            (4004, "logged out"),
            "round {round}: {before:?}"
        );
    }
}
