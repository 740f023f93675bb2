//! A node's own channel (`!<prefix>node:<node id>`, out of plain publishers' reach): client
//! frames relayed to it (an SSE session's stream is held by one node, but a load balancer may
//! send the POSTs that carry its client frames to any node), and replies to the surveys it
//! sent. On one Redis server each node listens on it, and on the control channel, with a
//! dedicated pub/sub connection that reconnects by itself ([`run`]); on a cluster the
//! cluster connection holds both ([`on_node_message`] is shared).

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::control;
use super::timing::{Backoff, CONNECT_TIMEOUT};
use super::tls::warn_failed;
use crate::broker::{Deliver, RelayedFrames};

/// A message of a node's own channel: a survey reply, or relayed client frames.
pub fn on_node_message(payload: &[u8], sink: &dyn Deliver) {
    if let Some(reply) = control::decode_reply(payload) {
        sink.control(reply);
        return;
    }
    match std::str::from_utf8(payload)
        .ok()
        .and_then(RelayedFrames::decode)
    {
        Some(relayed) => sink.relayed(relayed),
        None => tracing::debug!("ignored a malformed relay message"),
    }
}

/// Listens on this node's own channel and on the control channel until cancelled, handing
/// what arrives to `sink`.
pub async fn run(
    client: ::redis::Client,
    channel: String,
    control_channel: String,
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
                .subscribe(&[&channel, &control_channel])
                .await
                .map_err(|e| e.to_string())?;
            tracing::debug!(%channel, "node and control channels subscribed");
            subscribed = true;
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let payload = message.get_payload_bytes();
                if message.get_channel_name() == control_channel {
                    if let Some(command) = control::decode_command(payload) {
                        sink.control(command);
                    }
                } else {
                    on_node_message(payload, &*sink);
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
