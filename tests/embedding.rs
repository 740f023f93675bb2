//! A Rust process embeds fanout as a library and publishes into it directly.

#[path = "support/mod.rs"]
mod support;

use bytes::Bytes;
use fanout::channel::Channel;
use fanout::config::SettingsArgs;
use fanout::server::Server;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use support::{SECRET, WAIT, token};

async fn next_json(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("frame in time")
            .expect("open")
            .expect("ok");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test]
async fn an_embedding_process_publishes_to_its_own_node() {
    let config = SettingsArgs::from_pairs([("listen", "127.0.0.1:0"), ("jwt_secret", SECRET)])
        .resolve()
        .expect("valid config");
    let server = Server::bind(config).await.expect("bind");
    let addr = server.local_addr().unwrap();
    let node = server.node().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));

    let url = format!("ws://{addr}/ws?token={}", token("42", &["dag:*"], 60));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    assert_eq!(next_json(&mut ws).await["type"], "connection_ack");
    ws.send(Message::text(
        json!({"type": "subscribe", "channel": "dag:7"}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "subscribed");

    let channel = Channel::parse("dag:7").unwrap();
    node.publish(
        &channel,
        Bytes::from_static(br#"{"type":"node_state","node":"n3","state":"running"}"#),
        "embedded",
    )
    .await
    .expect("publish");
    let msg = next_json(&mut ws).await;
    assert_eq!(msg["channel"], "dag:7");
    assert_eq!(msg["data"]["state"], "running");

    // Shutting the embedded server down drains the client with 1012 and returns Ok.
    stop.send(()).unwrap();
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1012);
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    serving.await.unwrap().expect("server returned Ok");
}
