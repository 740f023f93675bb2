//! The edge across nodes (issue 23): an SSE ticket issued by one node opens a stream on
//! another, once in the whole cluster; and a POST of frames relayed to the node holding the
//! stream answers what docs/protocol.md says a relayed POST answers.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn a_ticket_from_one_node_opens_a_stream_on_another_once_cluster_wide() {
    let redis = RedisServer::start();
    let n1 = Gateway::start_on_redis("n1", &redis, &[]).await;
    let n2 = Gateway::start_on_redis("n2", &redis, &[]).await;
    let tok = token("7", &["room:*"], 3600);
    let ticket = sse_ticket(&n1.http(""), &tok).await.unwrap();
    // Kept in Redis out of reach of channel names, for the ticket's lifetime at most.
    let key = format!("!fanout:once:sse-ticket:{ticket}");
    let ttl: i64 = redis.cli(&["PTTL", &key]).trim().parse().unwrap();
    assert!((1..=30_000).contains(&ttl), "PTTL {ttl}");
    let mut sse = SseClient::open_url(&n2.http(""), &tok, &format!("ticket={ticket}"), None)
        .await
        .expect("another node redeems it");
    assert_eq!(sse.ack["node"], "n2");
    assert_eq!(
        redis.cli(&["EXISTS", &key]).trim(),
        "0",
        "taken, not left behind"
    );
    for node in [&n1, &n2] {
        let refused = SseClient::open_url(&node.http(""), &tok, &format!("ticket={ticket}"), None)
            .await
            .err()
            .expect("used once");
        assert_eq!(refused.status, 401, "{refused}");
    }
    assert_eq!(sse.request(json!({"type": "ping", "id": 1})).await["id"], 1);
    assert!(!n1.logs().contains(&tok) && !n2.logs().contains(&tok));
}

#[tokio::test]
async fn a_relayed_post_says_relayed_and_the_holder_drops_what_fails_its_checks() {
    let redis = RedisServer::start();
    let mut n1 = Gateway::start_on_redis("n1", &redis, &[]).await;
    let n2 = Gateway::start_on_redis("n2", &redis, &[]).await;
    let alice = token("alice", &["room:*"], 3600);
    let mallory = token("mallory", &["room:*"], 3600);
    let mut sse = SseClient::open(&n1.http(""), &alice, "", None)
        .await
        .unwrap();
    let conn = sse.conn_id.clone();
    assert!(conn.ends_with(".n1"), "{conn}");
    let ping = |id: &str| json!({"type": "ping", "id": id}).to_string();

    // The owner, through the other node: relayed, carried out.
    let (status, body) = post_frames(&n2.http(""), &conn, &alice, ping("via-n2")).await;
    assert_eq!(
        (status, &body),
        (202, &json!({"accepted": 1, "relayed": true}))
    );
    assert_eq!(sse.recv().await["id"], "via-n2");
    // Straight to the holder: not relayed.
    let (status, body) = post_frames(&n1.http(""), &conn, &alice, ping("direct")).await;
    assert_eq!((status, &body), (202, &json!({"accepted": 1})));
    assert_eq!(sse.recv().await["id"], "direct");

    // Someone else's token: the holder answers 403; through another node the POST is
    // relayed (202, relayed) and the holder drops the frame: nothing reaches the stream.
    let (status, _) = post_frames(&n1.http(""), &conn, &mallory, ping("m1")).await;
    assert_eq!(status, 403);
    let (status, body) = post_frames(&n2.http(""), &conn, &mallory, ping("m2")).await;
    assert_eq!(
        (status, &body),
        (202, &json!({"accepted": 1, "relayed": true}))
    );
    let (status, _) = post_frames(&n2.http(""), &conn, &alice, ping("after")).await;
    assert_eq!(status, 202);
    let next = sse.recv().await;
    assert_eq!(next["id"], "after", "mallory's frame was dropped: {next}");
    let late = sse.next_within(std::time::Duration::from_millis(500)).await;
    assert!(late.is_err(), "nothing else on the stream: {late:?}");

    // An ended session: the holder answers 404; another node relays (the holder is there)
    // and the frames are dropped.
    drop(sse);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, _) = post_frames(&n1.http(""), &conn, &alice, ping("gone")).await;
        if status == 404 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the session ends");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, body) = post_frames(&n2.http(""), &conn, &alice, ping("gone")).await;
    assert_eq!(
        (status, &body),
        (202, &json!({"accepted": 1, "relayed": true}))
    );

    // The holder is gone: nothing listens on its relay channel, so 404 from any node.
    n1.signal("KILL");
    n1.wait_exit(WAIT);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = post_frames(&n2.http(""), &conn, &alice, ping("dead")).await;
        if status == 404 {
            assert_eq!(body["error"]["code"], "not_found");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
