//! The edge as someone attacking it sees it (issue 23): credentials kept out of URLs (the
//! WebSocket `auth` frame, SSE tickets, `allow_query_token`), request deadlines and the
//! slots partial requests hold, the per-address limit, the demo's warning and audience, and
//! close frames that reach a flooding client.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// Opens `/ws` with nothing in the request and authenticates with the first frame.
async fn connect_with_auth_frame(gw: &Gateway, token: &str) -> (Client, Value) {
    let mut client = gw.try_connect(None, &[]).await.expect("upgrade");
    let ack = client
        .request(json!({"type": "auth", "token": token, "id": "a"}))
        .await;
    (client, ack)
}

#[tokio::test]
async fn with_query_tokens_off_only_the_auth_frame_headers_and_tickets_authenticate() {
    let gw = Gateway::start(&["--allow-query-token", "false"]);
    let tok = token("7", &["room:*"], 3600);

    // WebSocket: the token in the URL is refused, and says what to do instead.
    let refused = gw
        .try_connect_url(&format!("{}?token={tok}", gw.ws_url()), None, &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 401, "{refused}");
    assert!(refused.body.contains("auth frame"), "{refused}");
    // The first frame does it, as does a header.
    let (_ws, ack) = connect_with_auth_frame(&gw, &tok).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    assert_eq!(ack["id"], "a");
    gw.connect(&tok).await;

    // SSE: a ticket opens the stream; the token in the URL does not.
    let base = gw.http("");
    let refused = SseClient::open_with_query_token(&base, &tok, "", None)
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 401, "{refused}");
    assert!(refused.body.contains("POST /sse/ticket"), "{refused}");
    let mut sse = SseClient::open(&base, &tok, "channel=room:a", None)
        .await
        .expect("a ticket opens the stream");
    assert_eq!(sse.recv().await["type"], "subscribed");
    // Frames: the header authenticates, the query does not.
    let (status, body) = reqwest::Client::new()
        .post(format!(
            "{base}/sse/frames?conn_id={}&token={tok}",
            sse.conn_id
        ))
        .body(r#"{"type":"ping"}"#)
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 401, "{:?}", body.text().await);
    assert_eq!(sse.request(json!({"type": "ping", "id": 3})).await["id"], 3);
    assert!(!gw.logs().contains(&tok), "no token in the node's logs");
}

#[tokio::test]
async fn a_ticket_opens_one_stream_once_and_old_clients_still_work_by_default() {
    let gw = Gateway::start(&[]);
    let base = gw.http("");
    let tok = token("8", &["room:*"], 3600);
    let ticket = sse_ticket(&base, &tok).await.expect("ticket");
    assert_eq!(ticket.len(), 32, "{ticket}");
    let mut sse = SseClient::open_url(&base, &tok, &format!("ticket={ticket}"), None)
        .await
        .expect("first use");
    assert_eq!(sse.ack["user"], "8");
    for reuse in [
        ticket.as_str(),
        "0123456789abcdef0123456789abcdef",
        "nonsense",
    ] {
        let refused = SseClient::open_url(&base, &tok, &format!("ticket={reuse}"), None)
            .await
            .err()
            .expect("a used or unknown ticket is refused");
        assert_eq!(refused.status, 401, "{refused}");
        assert!(refused.body.contains("already used"), "{refused}");
    }
    // A ticket is issued for a valid token in a header only.
    let refused = sse_ticket(&base, &token("8", &[], -60))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("expired"), "{refused}");
    let status = reqwest::Client::new()
        .post(format!("{base}/sse/ticket?token={tok}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401, "no ticket for a token in the URL");

    // Old clients (token in the URL) work while allow_query_token is on, the default.
    let mut old = SseClient::open_with_query_token(&base, &tok, "", None)
        .await
        .expect("old SSE client");
    assert_eq!(old.request(json!({"type": "ping", "id": 1})).await["id"], 1);
    let (_ws, _) = gw.connect(&tok).await;
    assert_eq!(
        sse.request(json!({"type": "ping", "id": 2})).await["type"],
        "pong"
    );
}

/// A raw connection to the node.
async fn raw(gw: &Gateway) -> TcpStream {
    TcpStream::connect(gw.addr).await.expect("connect")
}

/// Reads until the node closes the connection; `None` if it is still open after `within`.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut got)).await {
        Ok(_) => Some(String::from_utf8_lossy(&got).into_owned()),
        Err(_) => None,
    }
}

/// The head of a POST whose body is announced but not sent.
fn stalled_post(path: &str, headers: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{headers}content-length: 1000\r\n\r\n{{\"chan"
    )
}

#[tokio::test]
async fn slow_headers_and_stalled_bodies_are_cut_at_their_deadline() {
    let gw = Gateway::start(&["--body-timeout-s", "1"]);
    // Headers that never end: closed, without an answer.
    let mut slow = raw(&gw).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut slow, Duration::from_secs(6)).await;
    assert!(answer.is_some(), "a slow-header connection is closed");
    // So is one that sends nothing at all.
    let mut silent = raw(&gw).await;
    let answer = read_to_close(&mut silent, Duration::from_secs(6)).await;
    assert_eq!(answer.as_deref(), Some(""), "a silent connection is closed");
    // A body that stops halfway, on the API and on the SSE frames endpoint: 408, closed.
    for (path, headers) in [
        (
            "/api/publish",
            format!("authorization: Bearer {API_KEY}\r\n"),
        ),
        (
            "/sse/frames?conn_id=x",
            format!("authorization: Bearer {}\r\n", token("1", &[], 60)),
        ),
    ] {
        let mut stalled = raw(&gw).await;
        stalled
            .write_all(stalled_post(path, &headers).as_bytes())
            .await
            .unwrap();
        let answer = read_to_close(&mut stalled, Duration::from_secs(6))
            .await
            .unwrap_or_else(|| panic!("{path}: a stalled body is still held after 6 s"));
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("not received within 1 s"), "{answer}");
    }
    // The node is fine.
    assert_eq!(gw.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn partial_bodies_count_against_the_node_and_address_limits() {
    let gw = Gateway::start(&["--max-connections", "3", "--body-timeout-s", "30"]);
    let tok = token("1", &[], 3600);
    let auth = format!("authorization: Bearer {API_KEY}\r\n");
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = raw(&gw).await;
        s.write_all(stalled_post("/api/publish", &auth).as_bytes())
            .await
            .unwrap();
        held.push(s);
    }
    // The node's slots are taken by bodies that never come.
    held_slots(&gw, 3).await;
    eventually_refused(&gw, &tok, 503).await;
    drop(held);
    eventually_connects(&gw, &tok).await;

    let gw = Gateway::start(&["--max-connections-per-ip", "2", "--body-timeout-s", "30"]);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = raw(&gw).await;
        s.write_all(stalled_post("/api/publish", &auth).as_bytes())
            .await
            .unwrap();
        held.push(s);
    }
    held_slots(&gw, 2).await;
    let refused = eventually_refused(&gw, &tok, 429).await;
    assert!(refused.body.contains("from this address"), "{refused}");
    // Another body from the same address is refused before it is read.
    let mut third = raw(&gw).await;
    third
        .write_all(stalled_post("/api/publish", &auth).as_bytes())
        .await
        .unwrap();
    let answer = read_to_close(&mut third, Duration::from_secs(5))
        .await
        .expect("answered at once");
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    drop(held);
    eventually_connects(&gw, &tok).await;
}

/// Waits until the node counts `n` open connections (`/readyz`): the stalled bodies are in.
async fn held_slots(gw: &Gateway, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, body) = gw.get("/readyz").await;
        let ready: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if ready["connections"] == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "wanted {n} connections: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn eventually_refused(gw: &Gateway, tok: &str, status: u16) -> Refused {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match gw.try_connect(Some(tok), &[]).await {
            Err(refused) if refused.status == status => return refused,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "wanted HTTP {status}, got {:?}",
                    other.err()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn eventually_connects(gw: &Gateway, tok: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Err(refused) = gw.try_connect(Some(tok), &[]).await {
        assert!(tokio::time::Instant::now() < deadline, "{refused}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn connections_per_address_are_limited_with_the_address_trusted_proxies_forward() {
    // Behind a trusted proxy: the forwarded address counts.
    let gw = Gateway::start(&[
        "--max-connections-per-ip",
        "2",
        "--trusted-proxies",
        "127.0.0.1",
    ]);
    let tok = token("1", &["room:*"], 3600);
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let _a = gw
        .try_connect(Some(&tok), &from("192.0.2.7"))
        .await
        .unwrap();
    let b = gw
        .try_connect(Some(&tok), &from("192.0.2.7"))
        .await
        .unwrap();
    let refused = gw
        .try_connect(Some(&tok), &from("192.0.2.7"))
        .await
        .err()
        .expect("third from one address");
    assert_eq!(refused.status, 429, "{refused}");
    let body: Value = serde_json::from_str(&refused.body).unwrap();
    assert_eq!(body["error"]["code"], "limit_exceeded");
    assert_eq!(
        body["error"]["message"],
        "too many open connections from this address"
    );
    // SSE counts the same.
    let refused = reqwest::Client::new()
        .get(gw.http("/sse"))
        .bearer_auth(&tok)
        .header("x-forwarded-for", "192.0.2.7")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let _other = gw
        .try_connect(Some(&tok), &from("192.0.2.8"))
        .await
        .unwrap();
    assert!(
        gw.metric("fanout_connections_rejected_total{reason=\"ip_full\"}")
            .await
            >= 2.0
    );
    drop(b);
    let deadline = tokio::time::Instant::now() + WAIT;
    while gw
        .try_connect(Some(&tok), &from("192.0.2.7"))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot comes back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Not behind a trusted proxy: a forwarded address is a claim, and is not believed.
    let gw = Gateway::start(&["--max-connections-per-ip", "1"]);
    let _a = gw
        .try_connect(Some(&tok), &from("192.0.2.1"))
        .await
        .unwrap();
    let refused = gw
        .try_connect(Some(&tok), &from("192.0.2.2"))
        .await
        .err()
        .expect("the same real address");
    assert_eq!(refused.status, 429);
}

#[tokio::test]
async fn the_demo_warns_at_start_and_its_tokens_work_on_demo_nodes_only() {
    let demo = Gateway::start(&["--demo"]);
    let plain = Gateway::start(&[]);
    let logs = demo.logs();
    assert!(
        logs.contains("WARN") && logs.contains("demo is on") && logs.contains("any user id"),
        "{logs}"
    );
    assert!(!plain.logs().contains("demo is on"));
    let (status, body) = demo.get("/demo/token?user=mallory").await;
    assert_eq!(status, 200, "{body}");
    let minted: Value = serde_json::from_str(&body).unwrap();
    let tok = minted["token"].as_str().unwrap();
    // The demo node takes it; a node sharing the key but not the demo refuses it.
    let (_ws, ack) = demo.connect(tok).await;
    assert_eq!(ack["user"], "mallory");
    let refused = plain
        .try_connect(Some(tok), &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("audience"), "{refused}");
    let (mut ws, _) = {
        let mut client = plain.try_connect(None, &[]).await.unwrap();
        client.send(json!({"type": "auth", "token": tok})).await;
        (client, ())
    };
    assert_eq!(ws.expect_close().await.0, 4001);
    // Ordinary tokens still work on the demo node.
    demo.connect(&token("9", &[], 60)).await;
}

/// Connects and writes `n` subscribes in one go, then reads until the connection ends;
/// returns the close code (`None`: it ended without a close frame).
async fn flood(gw: &Gateway, tok: &str, n: usize) -> Option<u16> {
    let (mut client, _) = gw.connect(tok).await;
    for i in 0..n {
        let frame = json!({"type": "subscribe", "channel": format!("room:c{i}")});
        // The node may close the connection before everything is written.
        if client
            .ws
            .feed(Message::text(frame.to_string()))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = client.ws.flush().await;
    for _ in 0..10_000 {
        match client.next().await {
            Seen::Json(_) => {}
            Seen::Close(code, _) => return code,
            Seen::Ended => return None,
        }
    }
    panic!("no end after 10,000 frames");
}

#[tokio::test]
async fn a_client_cut_for_flooding_reads_its_4029_every_time() {
    let gw = Gateway::start(&[]);
    let tok = token("1", &["room:*"], 3600);
    let runs = 40;
    let mut codes = Vec::new();
    for _ in 0..runs {
        codes.push(flood(&gw, &tok, 1000).await);
    }
    let delivered = codes.iter().filter(|c| **c == Some(4029)).count();
    assert_eq!(delivered, runs, "close codes seen: {codes:?}");
}
