//! Who may connect: tokens in each place they may come, and every way they are refused.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn a_token_in_the_authorization_header_is_accepted() {
    let gw = Gateway::start(&[]);
    let (_client, ack) = gw.connect(&token("42", &[], 3600)).await;
    assert_eq!(ack["user"], "42");
    assert_eq!(ack["node"], "test-node");
    assert_eq!(ack["heartbeat_s"], 25);
    assert_eq!(ack["channels"], json!(["broadcast", "user:42"]));
    assert!(ack["conn_id"].as_str().is_some_and(|s| !s.is_empty()));
}

#[tokio::test]
async fn a_token_in_the_query_string_is_accepted() {
    let gw = Gateway::start(&[]);
    let url = format!("{}?token={}", gw.ws_url(), token("7", &[], 3600));
    let mut client = gw.try_connect_url(&url, None, &[]).await.unwrap();
    let ack = client.recv().await;
    assert_eq!(ack["type"], "connection_ack");
    assert_eq!(ack["user"], "7");
}

#[tokio::test]
async fn a_token_in_the_first_frame_is_accepted_and_its_id_echoed() {
    let gw = Gateway::start(&[]);
    let mut client = gw.try_connect(None, &[]).await.unwrap();
    let ack = client
        .request(json!({"type": "auth", "token": token("9", &[], 3600), "id": "a1"}))
        .await;
    assert_eq!(ack["type"], "connection_ack");
    assert_eq!(ack["user"], "9");
    assert_eq!(ack["id"], "a1");
}

#[tokio::test]
async fn a_numeric_sub_is_read_as_the_user_id() {
    let gw = Gateway::start(&[]);
    let t = token_with(json!({"sub": 42, "exp": unix_now() + 60}));
    let (_c, ack) = gw.connect(&t).await;
    assert_eq!(ack["user"], "42");
}

#[tokio::test]
async fn bad_tokens_with_the_request_get_401_before_the_upgrade() {
    let gw = Gateway::start(&[]);
    let wrong_secret = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "1", "exp": unix_now() + 60}),
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-xx"),
    )
    .unwrap();
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &json!({"sub": "1", "exp": unix_now() + 60}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let cases = [
        ("bad signature", wrong_secret, "signature"),
        ("expired", token("1", &[], -120), "expired"),
        ("wrong algorithm", hs512, "algorithm"),
        ("alg none", unsigned_token(), "algorithm"),
        ("no exp", token_with(json!({"sub": "1"})), "exp"),
        ("garbage", "not.a.token".to_owned(), "malformed"),
        (
            "bad user id",
            token_with(json!({"sub": "a b", "exp": unix_now() + 60})),
            "user id",
        ),
    ];
    for (name, token, needle) in cases {
        let refused = match gw.try_connect(Some(&token), &[]).await {
            Err(r) => r,
            Ok(_) => panic!("{name}: upgrade was accepted"),
        };
        assert_eq!(refused.status, 401, "{name}");
        let body: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{name}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{name}: {message}");
    }
    // Tokens never reach the logs.
    assert!(
        !gw.logs().contains("eyJ"),
        "a token was logged:\n{}",
        gw.logs()
    );
}

/// `{"alg":"none"}` with a valid-looking payload and an empty signature.
fn unsigned_token() -> String {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = b64(format!(r#"{{"sub":"1","exp":{}}}"#, unix_now() + 60).as_bytes());
    format!("{header}.{claims}.")
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn sign(alg: jsonwebtoken::Algorithm, key: &jsonwebtoken::EncodingKey) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        &json!({"sub": "1", "exp": unix_now() + 60}),
        key,
    )
    .unwrap()
}

#[tokio::test]
async fn rs256_and_es256_public_keys_verify_and_reject_algorithm_confusion() {
    use jsonwebtoken::{Algorithm, EncodingKey};
    for (public, private, alg) in [
        ("rsa_public.pem", "rsa_private.pem", Algorithm::RS256),
        ("ec_public.pem", "ec_private.pem", Algorithm::ES256),
    ] {
        let public_path = fixture(public);
        let gw = Gateway::start_with(
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--jwt-public-key",
                &public_path,
            ],
            &[],
        );
        let pem = std::fs::read(fixture(private)).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        gw.connect(&sign(alg, &key)).await;
        // The classic confusion: HS256 "signed" with the public key as the HMAC secret.
        let public_pem = std::fs::read(&public_path).unwrap();
        let confused = sign(Algorithm::HS256, &EncodingKey::from_secret(&public_pem));
        let refused = gw.try_connect(Some(&confused), &[]).await.err().unwrap();
        assert_eq!(refused.status, 401, "{alg:?}");
        assert!(refused.body.contains("algorithm"), "{}", refused.body);
        let refused = gw
            .try_connect(Some(&unsigned_token()), &[])
            .await
            .err()
            .unwrap();
        assert_eq!(refused.status, 401);
    }
}

#[tokio::test]
async fn a_bad_token_in_the_auth_frame_closes_with_4001() {
    let gw = Gateway::start(&[]);
    let mut client = gw.try_connect(None, &[]).await.unwrap();
    client
        .send(json!({"type": "auth", "token": token("1", &[], -60)}))
        .await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 4001);
    assert!(reason.contains("expired"), "{reason}");
}

#[tokio::test]
async fn a_connection_that_never_authenticates_is_closed_with_4001() {
    let gw = Gateway::start(&["--auth-timeout-s", "1"]);
    let mut client = gw.try_connect(None, &[]).await.unwrap();
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 4001);
    assert!(reason.contains("auth"), "{reason}");
}

#[tokio::test]
async fn any_frame_before_auth_closes_with_4001() {
    let gw = Gateway::start(&[]);
    let mut client = gw.try_connect(None, &[]).await.unwrap();
    client
        .send(json!({"type": "subscribe", "channel": "room:a"}))
        .await;
    assert_eq!(client.expect_close().await.0, 4001);
}

#[tokio::test]
async fn audience_and_issuer_are_checked_when_configured() {
    let gw = Gateway::start(&["--jwt-audience", "fanout", "--jwt-issuer", "wp"]);
    let exp = unix_now() + 60;
    let good = token_with(json!({"sub": "1", "exp": exp, "aud": "fanout", "iss": "wp"}));
    let wrong_aud = token_with(json!({"sub": "1", "exp": exp, "aud": "other", "iss": "wp"}));
    let no_iss = token_with(json!({"sub": "1", "exp": exp, "aud": "fanout"}));
    gw.connect(&good).await;
    for t in [wrong_aud, no_iss] {
        assert_eq!(
            gw.try_connect(Some(&t), &[]).await.err().unwrap().status,
            401
        );
    }
}

#[tokio::test]
async fn audience_lists_and_fractional_expiry_follow_the_jwt_standard() {
    let gw = Gateway::start(&["--jwt-audience", "fanout"]);
    let exp = unix_now() as f64 + 60.5;
    let t = token_with(json!({"sub": "1", "exp": exp, "aud": ["other", "fanout"]}));
    let (_c, ack) = gw.connect(&t).await;
    assert_eq!(ack["expires_at"], exp.floor() as i64);
    let t = token_with(json!({"sub": "1", "exp": exp, "aud": ["other"]}));
    assert_eq!(
        gw.try_connect(Some(&t), &[]).await.err().unwrap().status,
        401
    );
}

#[tokio::test]
async fn origins_outside_the_allowlist_are_refused() {
    let gw = Gateway::start(&[
        "--allowed-origins",
        "https://app.example.com,https://*.example.org",
    ]);
    let t = token("1", &[], 60);
    let refused = gw
        .try_connect(Some(&t), &[("origin", "https://evil.example.net")])
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 403);
    for ok in ["https://app.example.com", "https://x.example.org"] {
        let mut c = gw.try_connect(Some(&t), &[("origin", ok)]).await.unwrap();
        assert_eq!(c.recv().await["type"], "connection_ack", "{ok}");
    }
    // Non-browser clients send no Origin and are not affected.
    gw.connect(&t).await;
}

#[tokio::test]
async fn refresh_extends_the_session_and_expiry_without_refresh_closes_4001() {
    let gw = Gateway::start(&[]);
    // The first token ends within 2 s of connecting; the refreshed one not before 6 s.
    let (mut client, ack) = gw.connect(&token("5", &[], 1)).await;
    let connected = tokio::time::Instant::now();
    let first_exp = ack["expires_at"].as_i64().unwrap();
    let reply = client
        .request(json!({"type": "refresh", "token": token("5", &[], 6), "id": 1}))
        .await;
    assert_eq!(reply["type"], "refreshed");
    assert_eq!(reply["id"], 1);
    assert!(reply["expires_at"].as_i64().unwrap() > first_exp);
    // Still alive well after the first token's expiry.
    tokio::time::sleep_until(connected + std::time::Duration::from_secs(3)).await;
    let pong = client.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 4001);
    assert!(reason.contains("expired"), "{reason}");
}

#[tokio::test]
async fn connection_ack_and_refreshed_carry_the_remaining_lifetime_by_the_server_clock() {
    let gw = Gateway::start(&[]);
    let before = unix_now();
    let (mut client, ack) = gw.connect(&token("5", &[], 600)).await;
    let after = unix_now();
    let expires_at = ack["expires_at"].as_i64().unwrap();
    let expires_in = ack["expires_in"]
        .as_i64()
        .expect("expires_in in connection_ack");
    // Whole seconds left on the server's clock when it sent the ack, rounded down.
    assert!(
        (expires_at - after - 1..=expires_at - before).contains(&expires_in),
        "{ack}"
    );
    let reply = client
        .request(json!({"type": "refresh", "token": token("5", &[], 3600), "id": "r"}))
        .await;
    assert_eq!(reply["type"], "refreshed");
    let expires_at = reply["expires_at"].as_i64().unwrap();
    let expires_in = reply["expires_in"]
        .as_i64()
        .expect("expires_in in refreshed");
    assert!(
        (expires_at - unix_now() - 1..=expires_at - before).contains(&expires_in),
        "{reply}"
    );
    assert!(expires_in > 3500, "{reply}");
}

#[tokio::test]
async fn refresh_with_a_bad_or_foreign_token_is_refused_and_the_session_lives() {
    let gw = Gateway::start(&[]);
    let (mut client, _) = gw.connect(&token("5", &[], 3600)).await;
    let reply = client
        .request(json!({"type": "refresh", "token": token("5", &[], -10)}))
        .await;
    assert_eq!(reply["code"], "unauthorized");
    let reply = client
        .request(json!({"type": "refresh", "token": token("6", &[], 60)}))
        .await;
    assert_eq!(reply["code"], "forbidden");
    assert_eq!(
        client.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
}

#[tokio::test]
async fn a_refreshed_token_that_no_longer_grants_a_channel_ends_that_subscription() {
    let gw = Gateway::start(&[]);
    let (mut client, _) = gw.connect(&token("5", &["room:*"], 3600)).await;
    client.subscribe("room:a").await;
    client
        .send(json!({"type": "refresh", "token": token("5", &["dag:1"], 3600)}))
        .await;
    let notice = client.recv().await;
    assert_eq!(
        notice,
        json!({"type": "unsubscribed", "channel": "room:a", "reason": "forbidden"})
    );
    assert_eq!(client.recv().await["type"], "refreshed");
    gw.publish("room:a", json!(1)).await;
    client
        .expect_silence(std::time::Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn a_token_minted_in_plain_php_is_accepted() {
    let gw = Gateway::start(&[]);
    let out = std::process::Command::new("php")
        .arg(format!(
            "{}/examples/php/token.php",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args([SECRET, "42", "room:*,dag:7", "600"])
        .output()
        .expect("run php (apt-get install php-cli)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let (mut client, ack) = gw.connect(token.trim()).await;
    assert_eq!(ack["user"], "42");
    client.subscribe("room:lobby").await;
    client.subscribe("dag:7").await;
    let reply = client
        .request(json!({"type": "subscribe", "channel": "dag:8"}))
        .await;
    assert_eq!(reply["code"], "forbidden");
}
