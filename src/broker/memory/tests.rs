//! The in-process broker's rules: history, idempotency, presence, and what it cannot do.

use std::sync::Mutex;

use super::*;
use crate::broker::{Backchannel, BrokerError, InboxEntry, Lease, PresenceStore, RelayedFrames};
use crate::config::SettingsArgs;

/// What the broker delivered to its node.
#[derive(Default)]
struct Recorder(Mutex<Vec<Publication>>);

impl Deliver for Recorder {
    fn deliver(&self, publication: &Publication) -> usize {
        self.0.lock().unwrap().push(publication.clone());
        1
    }
    fn resync(&self, _: &Channel) {}
    fn relayed(&self, _: RelayedFrames) {}
    fn control(&self, _: crate::broker::ControlMessage) {}
}

/// A broker with the default namespaces (`dag:` keeps 1,000 messages), and what it
/// delivered.
fn broker() -> (MemoryBroker, Arc<Recorder>) {
    let config = SettingsArgs::from_pairs([("jwt_secret", "0123456789abcdef0123456789abcdef")])
        .resolve()
        .unwrap();
    let recorder = Arc::new(Recorder::default());
    (
        MemoryBroker::new(recorder.clone(), ChannelRules::from_config(&config)),
        recorder,
    )
}

fn channel(name: &str) -> Channel {
    Channel::parse(name).unwrap()
}

#[tokio::test]
async fn history_channels_number_their_messages_and_replay_what_was_asked() {
    let (broker, delivered) = broker();
    let dag = channel("dag:7");
    for n in 1..=5u64 {
        let offset = broker
            .publish(&dag, Bytes::from(n.to_string()), None, None)
            .await
            .unwrap();
        assert_eq!(offset, Some(n));
    }
    let after = broker
        .history(
            &dag,
            HistoryQuery::After {
                offset: 3,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!((after.offset, after.first), (5, 1));
    let offsets: Vec<u64> = after.messages.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, [4, 5]);
    let latest = broker
        .history(&dag, HistoryQuery::Latest { limit: 2 })
        .await
        .unwrap();
    assert_eq!(latest.epoch, after.epoch);
    assert_eq!(latest.messages.len(), 2);
    // Delivered to the node with their positions, in order.
    let positions: Vec<u64> = delivered
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.position.as_ref().unwrap().offset)
        .collect();
    assert_eq!(positions, [1, 2, 3, 4, 5]);
    // A channel without history has none to read.
    let room = channel("room:lobby");
    assert_eq!(
        broker
            .publish(&room, Bytes::new(), None, None)
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        broker
            .history(&room, HistoryQuery::Latest { limit: 1 })
            .await,
        Err(BrokerError::NoHistory(_))
    ));
}

#[tokio::test]
async fn a_publish_repeated_with_its_idempotency_key_publishes_once() {
    let (broker, delivered) = broker();
    let dag = channel("dag:9");
    let first = broker
        .publish(&dag, Bytes::from_static(b"1"), None, Some("k"))
        .await
        .unwrap();
    let again = broker
        .publish(&dag, Bytes::from_static(b"1"), None, Some("k"))
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(delivered.0.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn presence_tells_a_users_first_join_and_last_leave() {
    let (broker, _) = broker();
    let room = channel("room:ops");
    let member = |conn: &str| PresenceMember {
        user: "ada".into(),
        conn_id: conn.into(),
        node: "n1".into(),
        info: None,
        status: None,
    };
    let lease = Lease {
        duration: Duration::from_secs(30),
        renewed: true,
    };
    let first = PresenceStore::join(&broker, &room, &member("c1"), lease)
        .await
        .unwrap();
    assert_eq!((first.new, first.first_of_user), (true, true));
    let second = PresenceStore::join(&broker, &room, &member("c2"), lease)
        .await
        .unwrap();
    assert_eq!((second.new, second.first_of_user), (true, false));
    let status = serde_json::json!({"state": "busy"});
    let updated = broker.set_status(&room, "c2", &status).await.unwrap();
    assert_eq!(updated.unwrap().status, Some(status));
    assert_eq!(broker.members(&room).await.unwrap().len(), 2);
    let left = PresenceStore::leave(&broker, &room, "c1").await.unwrap();
    assert!(!left.unwrap().last_of_user);
    let left = PresenceStore::leave(&broker, &room, "c2").await.unwrap();
    assert!(left.unwrap().last_of_user);
    assert_eq!(
        PresenceStore::leave(&broker, &room, "c2").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn without_redis_there_is_no_inbox_and_no_other_node() {
    let (broker, _) = broker();
    let entry = InboxEntry {
        channel: channel("room:x"),
        user: "u".into(),
        conn_id: "c".into(),
        node: "n".into(),
        received_at_ms: 0,
        data: Bytes::from_static(b"{}"),
    };
    assert!(matches!(
        broker.inbox_append("fanout:inbox", &entry).await,
        Err(BrokerError::Unsupported(_))
    ));
    let frames = RelayedFrames {
        user: "u".into(),
        conn_id: "c.n2".into(),
        frames: vec!["{}".into()],
    };
    assert!(!broker.relay("n2", &frames).await.unwrap());
}
