//! The hub's rules, on the in-process broker: fan-out and its order with replies, recovery
//! buffers and their merge, overflow.

use bytes::Bytes;

use super::*;
use crate::broker::{ChannelRules, Deliver, MemoryBroker, Publication, RelayedFrames};
use crate::outbox::Outgoing;

/// The broker's delivery target: unused, the tests deliver into the hub directly.
struct Nowhere;

impl Deliver for Nowhere {
    fn deliver(&self, _: &Publication) -> usize {
        0
    }
    fn resync(&self, _: &Channel) {}
    fn relayed(&self, _: RelayedFrames) {}
    fn control(&self, _: crate::broker::ControlMessage) {}
}

/// A hub on the in-process broker (which only answers its subscribes here).
fn hub(pending_limit: usize) -> Arc<Hub> {
    let broker = MemoryBroker::new(Arc::new(Nowhere), ChannelRules::default());
    Hub::new(Arc::new(Metrics::new()), pending_limit, Arc::new(broker))
}

fn outbox() -> Arc<Outbox> {
    Arc::new(Outbox::new(1024, 1 << 20))
}

fn channel(name: &str) -> Channel {
    Channel::parse(name).unwrap()
}

/// What the outbox holds, as JSON values (the reply frames and the messages).
fn taken(outbox: &Outbox) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    drop(outbox.take_batch(&mut out, usize::MAX));
    out.iter()
        .map(|o| match o {
            Outgoing::Frame(f) => serde_json::from_slice(f.json()).unwrap(),
            Outgoing::Wire(_) => panic!("no wire bytes expected"),
        })
        .collect()
}

fn epoch() -> Arc<str> {
    Arc::from("e1")
}

fn at(ch: &Channel, n: u64) -> Publication {
    Publication::at(
        ch.clone(),
        Bytes::from(n.to_string()),
        StreamPosition {
            offset: n,
            epoch: epoch(),
        },
    )
}

fn reply(kind: &str) -> Frame {
    Frame::from_json(Bytes::from(format!("{{\"type\":\"{kind}\"}}")))
}

#[tokio::test]
async fn a_message_goes_to_every_local_subscriber_of_its_channel_after_their_reply() {
    let hub = hub(16);
    let lobby = channel("room:lobby");
    let (a, b, other) = (outbox(), outbox(), outbox());
    hub.subscribe(
        1,
        &a,
        std::slice::from_ref(&lobby),
        Some(reply("subscribed")),
    )
    .await
    .unwrap();
    hub.subscribe(2, &b, std::slice::from_ref(&lobby), None)
        .await
        .unwrap();
    hub.subscribe(3, &other, &[channel("room:other")], None)
        .await
        .unwrap();

    let n = hub.deliver(&Publication::new(
        lobby.clone(),
        Bytes::from_static(b"{\"x\":1}"),
    ));
    assert_eq!(n, 2);
    let got = taken(&a);
    assert_eq!(got[0]["type"], "subscribed");
    assert_eq!(got[1]["data"], serde_json::json!({"x": 1}));
    assert_eq!(taken(&b).len(), 1);
    assert!(taken(&other).is_empty());
    assert_eq!(
        hub.deliver(&Publication::new(channel("room:nobody"), Bytes::new())),
        0
    );
}

#[tokio::test]
async fn nothing_of_a_channel_follows_its_unsubscribe_reply() {
    let hub = hub(16);
    let lobby = channel("room:lobby");
    let a = outbox();
    hub.subscribe(1, &a, std::slice::from_ref(&lobby), None)
        .await
        .unwrap();
    hub.deliver(&Publication::new(lobby.clone(), Bytes::from_static(b"1")));
    hub.unsubscribe(
        1,
        &a,
        std::slice::from_ref(&lobby),
        Some(reply("unsubscribed")),
    )
    .await;
    hub.deliver(&Publication::new(lobby.clone(), Bytes::from_static(b"2")));
    let kinds: Vec<_> = taken(&a).into_iter().map(|v| v["type"].clone()).collect();
    assert_eq!(kinds, ["message", "unsubscribed"]);
}

#[tokio::test]
async fn a_recovering_subscriber_gets_the_buffered_messages_past_its_replay_once() {
    let hub = hub(16);
    let dag = channel("dag:7");
    let a = outbox();
    hub.subscribe_pending(1, &a, &dag).await.unwrap();
    for n in 5..=7 {
        hub.deliver(&at(&dag, n));
    }
    assert!(taken(&a).is_empty(), "buffered while recovering");
    // The replay went up to 6: only 7 is queued; a late duplicate of 6 is skipped.
    let top = StreamPosition {
        offset: 6,
        epoch: epoch(),
    };
    assert_eq!(hub.activate(1, &dag, Some(top)), Activation::Live);
    hub.deliver(&at(&dag, 6));
    hub.deliver(&at(&dag, 8));
    let offsets: Vec<_> = taken(&a).into_iter().map(|v| v["offset"].clone()).collect();
    assert_eq!(offsets, [7, 8]);
}

#[tokio::test]
async fn a_replay_slower_than_its_channel_lets_the_buffer_go_and_says_so() {
    let hub = hub(2);
    let dag = channel("dag:7");
    let a = outbox();
    hub.subscribe_pending(1, &a, &dag).await.unwrap();
    for n in 1..=5 {
        hub.deliver(&at(&dag, n));
    }
    let replayed = StreamPosition {
        offset: 0,
        epoch: epoch(),
    };
    assert_eq!(
        hub.activate(1, &dag, Some(replayed.clone())),
        Activation::FellBehind,
        "more arrived than the buffer holds: the session must read on from history"
    );
    assert!(
        taken(&a).is_empty(),
        "still pending, nothing queued, nobody cut"
    );
    assert!(!a.is_ending());
    // The session read 1..=4 from history; what the buffer kept since (4, 5) is merged.
    let read_on = StreamPosition {
        offset: 4,
        epoch: epoch(),
    };
    assert_eq!(hub.activate(1, &dag, Some(read_on)), Activation::Live);
    let offsets: Vec<_> = taken(&a).into_iter().map(|v| v["offset"].clone()).collect();
    assert_eq!(offsets, [5]);
    assert_eq!(
        hub.activate(2, &dag, Some(replayed)),
        Activation::NotSubscribed
    );
}

#[tokio::test]
async fn going_live_without_a_replay_tells_whether_the_buffer_was_whole() {
    let hub = hub(1);
    let dag = channel("dag:7");
    let (whole, overflowed) = (outbox(), outbox());
    hub.subscribe_pending(1, &whole, &dag).await.unwrap();
    hub.deliver(&at(&dag, 1));
    assert!(hub.go_live(1, &dag));
    assert_eq!(taken(&whole).len(), 1);

    hub.subscribe_pending(2, &overflowed, &dag).await.unwrap();
    hub.deliver(&at(&dag, 2));
    hub.deliver(&at(&dag, 3));
    assert!(
        !hub.go_live(2, &dag),
        "2 was let go: the client must resync"
    );
    let offsets: Vec<_> = taken(&overflowed)
        .into_iter()
        .map(|v| v["offset"].clone())
        .collect();
    assert_eq!(offsets, [3]);
}

#[tokio::test]
async fn a_subscriber_whose_queue_overflows_is_cut_and_counted() {
    let hub = hub(16);
    let lobby = channel("room:lobby");
    let small = Arc::new(Outbox::new(2, 1 << 20));
    hub.subscribe(1, &small, std::slice::from_ref(&lobby), None)
        .await
        .unwrap();
    for _ in 0..3 {
        hub.deliver(&Publication::new(lobby.clone(), Bytes::from_static(b"1")));
    }
    assert!(small.is_ending());
    assert_eq!(hub.metrics.slow_consumers.get(), 1);
    let mut out = Vec::new();
    let batch = small.take_batch(&mut out, 16);
    assert!(out.is_empty(), "its queue was let go");
    assert_eq!(batch.ending.unwrap().label(), "slow_consumer");
}
