//! Malformed frames get a clear answer; the connection survives where the protocol says so.

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::support::*;

async fn still_alive(client: &mut Client) {
    let pong = client.request(json!({"type": "ping", "id": "alive"})).await;
    assert_eq!(pong, json!({"type": "pong", "id": "alive"}));
}

#[tokio::test]
async fn malformed_frames_get_bad_request_and_the_connection_lives() {
    let gw = Gateway::start(&[]);
    let mut client = gw.connect_as("1", &["room:*"]).await;
    let cases: &[(&str, Option<serde_json::Value>, &str)] = &[
        ("not json at all", None, "JSON"),
        ("[1,2,3]", None, "JSON object"),
        (r#"["ping"]"#, None, "JSON object"),
        (r#"{"id":4}"#, Some(json!(4)), "type"),
        (
            r#"{"type":"teleport","id":"t"}"#,
            Some(json!("t")),
            "unknown frame type",
        ),
        (r#"{"type":"subscribe","id":5}"#, Some(json!(5)), "channel"),
        (
            r#"{"type":"subscribe","channel":42,"id":6}"#,
            Some(json!(6)),
            "must be a string",
        ),
        (r#"{"type":7,"id":6}"#, Some(json!(6)), "must be a string"),
        (r#"{"type":"ping","id":{"nested":true}}"#, None, "id"),
        (r#"{"type":"refresh","id":7}"#, Some(json!(7)), "token"),
        (
            r#"{"type":"auth","token":"x","id":8}"#,
            Some(json!(8)),
            "already authenticated",
        ),
    ];
    for (frame, id, needle) in cases {
        client.send_text(frame).await;
        let reply = client.recv().await;
        assert_eq!(reply["type"], "error", "{frame}");
        assert_eq!(reply["code"], "bad_request", "{frame}: {reply}");
        if let Some(id) = id {
            assert_eq!(&reply["id"], id, "{frame}");
        }
        let message = reply["message"].as_str().unwrap();
        assert!(message.contains(needle), "{frame}: {message}");
    }
    still_alive(&mut client).await;
}

#[tokio::test]
async fn request_ids_are_echoed_exactly_as_sent() {
    let gw = Gateway::start(&[]);
    let mut client = gw.connect_as("1", &[]).await;
    for id in ["1.5e3", "123456789012345678901234567890", "-0", r#""abc""#] {
        client
            .send_text(&format!(r#"{{"type":"ping","id":{id}}}"#))
            .await;
        let reply = client.ws.next().await.unwrap().unwrap();
        let text = reply.into_text().unwrap();
        assert_eq!(text.as_str(), format!(r#"{{"type":"pong","id":{id}}}"#));
    }
    // A field the frame type does not use cannot spoil it.
    let reply = client
        .request(json!({"type": "ping", "channel": 5, "token": [1]}))
        .await;
    assert_eq!(reply["type"], "pong");
}

#[tokio::test]
async fn a_binary_frame_is_refused_and_the_connection_lives() {
    let gw = Gateway::start(&[]);
    let mut client = gw.connect_as("1", &[]).await;
    client
        .send_raw(Message::binary(b"{\"type\":\"ping\"}".to_vec()))
        .await;
    let reply = client.recv().await;
    assert_eq!(reply["code"], "bad_request");
    assert!(reply["message"].as_str().unwrap().contains("binary"));
    still_alive(&mut client).await;
}

#[tokio::test]
async fn a_fragmented_message_is_reassembled() {
    let gw = Gateway::start(&[]);
    let mut client = gw.connect_as("1", &[]).await;
    let text = r#"{"type":"ping","id":"fragmented"}"#;
    let (a, rest) = text.split_at(10);
    let (b, c) = rest.split_at(10);
    client
        .send_raw(Message::Frame(Frame::message(
            a.as_bytes().to_vec(),
            OpCode::Data(Data::Text),
            false,
        )))
        .await;
    client
        .send_raw(Message::Frame(Frame::message(
            b.as_bytes().to_vec(),
            OpCode::Data(Data::Continue),
            false,
        )))
        .await;
    client
        .send_raw(Message::Frame(Frame::message(
            c.as_bytes().to_vec(),
            OpCode::Data(Data::Continue),
            true,
        )))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"type": "pong", "id": "fragmented"})
    );
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let gw = Gateway::start(&[]);
    let mut client = gw.connect_as("1", &[]).await;
    client
        .send_raw(Message::Frame(Frame::message(
            vec![b'{', 0xff, 0xfe, b'}'],
            OpCode::Data(Data::Text),
            true,
        )))
        .await;
    assert_eq!(client.expect_close().await.0, 1007);
}

#[tokio::test]
async fn invalid_utf8_split_across_fragments_closes_with_1007() {
    let gw = Gateway::start(&[]);
    let mut client = gw.connect_as("1", &[]).await;
    // "é" is C3 A9; sending C3 then 28 is invalid across the fragment boundary.
    client
        .send_raw(Message::Frame(Frame::message(
            vec![b'"', 0xc3],
            OpCode::Data(Data::Text),
            false,
        )))
        .await;
    client
        .send_raw(Message::Frame(Frame::message(
            vec![0x28, b'"'],
            OpCode::Data(Data::Continue),
            true,
        )))
        .await;
    assert_eq!(client.expect_close().await.0, 1007);
}

#[tokio::test]
async fn an_oversize_message_closes_with_1009_in_one_frame_or_many() {
    let gw = Gateway::start(&["--max-message-bytes", "1024"]);
    // Exactly at the limit is fine.
    let mut client = gw.connect_as("1", &[]).await;
    let pad = "x".repeat(1024 - r#"{"type":"ping","pad":""}"#.len());
    client
        .send_text(&format!(r#"{{"type":"ping","pad":"{pad}"}}"#))
        .await;
    assert_eq!(client.recv().await["type"], "pong");
    // One byte more is not.
    client
        .send_text(&format!(r#"{{"type":"ping","pad":"{pad}x"}}"#))
        .await;
    assert_eq!(client.expect_close().await.0, 1009);

    // Many small fragments adding up past the limit.
    let mut client = gw.connect_as("1", &[]).await;
    client
        .send_raw(Message::Frame(Frame::message(
            vec![b' '; 600],
            OpCode::Data(Data::Text),
            false,
        )))
        .await;
    client
        .send_raw(Message::Frame(Frame::message(
            vec![b' '; 600],
            OpCode::Data(Data::Continue),
            true,
        )))
        .await;
    assert_eq!(client.expect_close().await.0, 1009);
}

#[tokio::test]
async fn a_continuation_without_a_message_is_a_protocol_error() {
    let gw = Gateway::start(&[]);
    let mut client = gw.connect_as("1", &[]).await;
    client
        .send_raw(Message::Frame(Frame::message(
            b"x".to_vec(),
            OpCode::Data(Data::Continue),
            true,
        )))
        .await;
    assert_eq!(client.expect_close().await.0, 1002);
}

#[tokio::test]
async fn one_clients_bad_input_does_not_disturb_another() {
    let gw = Gateway::start(&[]);
    let mut good = gw.connect_as("good", &["room:*"]).await;
    good.subscribe("room:shared").await;
    let mut bad = gw.connect_as("bad", &["room:*"]).await;
    bad.subscribe("room:shared").await;
    bad.send_raw(Message::Frame(Frame::message(
        vec![0xff],
        OpCode::Data(Data::Text),
        true,
    )))
    .await;
    gw.publish("room:shared", json!("for the good one")).await;
    assert_eq!(good.recv().await["data"], "for the good one");
    assert_eq!(bad.expect_close().await.0, 1007);
}

/// RFC 6455 5.1: a client must mask every frame; a server closes on one that is not (1002).
/// tungstenite always masks, so this client speaks the protocol by hand over TCP.
#[tokio::test]
async fn an_unmasked_client_frame_is_a_protocol_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let gw = Gateway::start(&[]);
    let mut other = gw.connect_as("other", &[]).await;
    let host = gw.addr.to_string();
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {}\r\n\r\n",
        token("1", &[], 3600)
    );
    tcp.write_all(upgrade.as_bytes()).await.unwrap();
    // The 101 response, then the connection_ack frame.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("connection_ack") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before the ack: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 101"));

    // A text frame, FIN, without the mask bit: `{"type":"ping"}`.
    let ping = br#"{"type":"ping"}"#;
    let mut frame = vec![0x81, ping.len() as u8];
    frame.extend_from_slice(ping);
    tcp.write_all(&frame).await.unwrap();

    let mut reply = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut reply),
    )
    .await
    .expect("the server closes the connection");
    assert!(
        reply.len() >= 4 && reply[0] == 0x88,
        "a close frame, not a pong: {reply:?}"
    );
    assert_eq!(u16::from_be_bytes([reply[2], reply[3]]), 1002);
    assert!(String::from_utf8_lossy(&reply[4..]).contains("masked"));
    // Nobody else noticed.
    still_alive(&mut other).await;
}
