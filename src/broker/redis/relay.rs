//! Relaying client frames between nodes: an SSE session's stream is held by one node, but a
//! load balancer may send the POSTs that carry its client frames to any node. The node that
//! gets such a POST publishes the frames on the holding node's own relay channel
//! (`!<prefix>node:<node id>`, out of plain publishers' reach), and each node
//! listens on its own with a dedicated pub/sub connection, reconnecting by itself.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::envelope::internal_channel;
use super::timing::{Backoff, CONNECT_TIMEOUT};
use super::tls::warn_failed;
use crate::broker::{Deliver, RelayedFrames};

/// The relay channel of a node.
pub fn channel(prefix: &str, node_id: &str) -> String {
    internal_channel(prefix, &format!("node:{node_id}"))
}

/// Listens on this node's relay channel until cancelled, handing frames to `sink`.
pub async fn run(
    client: ::redis::Client,
    channel: String,
    sink: Arc<dyn Deliver>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new();
    loop {
        let mut subscribed = false;
        let listened = async {
            let mut pubsub = timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
                .await
                .map_err(|_| "connect timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            pubsub
                .subscribe(&channel)
                .await
                .map_err(|e| e.to_string())?;
            tracing::debug!(%channel, "relay channel subscribed");
            subscribed = true;
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let relayed = std::str::from_utf8(message.get_payload_bytes())
                    .ok()
                    .and_then(RelayedFrames::decode);
                match relayed {
                    Some(relayed) => sink.relayed(relayed),
                    None => tracing::debug!("ignored a malformed relay message"),
                }
            }
            Err::<(), String>("relay connection lost".into())
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            result = listened => {
                if let Err(e) = result {
                    warn_failed("redis relay listener", None, &e);
                }
            }
        }
        // A connection that worked starts the next one's backoff afresh.
        if subscribed {
            backoff.reset();
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}
