//! Where the brokers deliver into this node ([`Inlet`]): publications and resyncs go to the
//! hub, relayed client frames to the directory of SSE sessions, control commands and survey
//! replies to the node itself.
//!
//! The brokers are started before the node exists (its hub needs a broker to subscribe
//! through), so the inlet is handed to them first and the node plugged in once it is built.
//! It holds the node weakly: the node owns the brokers, which own the inlet.

use std::sync::{Arc, OnceLock, Weak};

use super::Node;
use crate::broker::{ControlMessage, Deliver, Publication, RelayedFrames};
use crate::channel::Channel;

#[derive(Default)]
pub struct Inlet {
    node: OnceLock<Weak<Node>>,
}

impl Inlet {
    /// Plugs in the node; what arrived before is dropped (nothing was subscribed yet).
    pub fn connect(&self, node: &Arc<Node>) {
        let _ = self.node.set(Arc::downgrade(node));
    }

    fn node(&self) -> Option<Arc<Node>> {
        self.node.get().and_then(Weak::upgrade)
    }
}

impl Deliver for Inlet {
    fn deliver(&self, publication: &Publication) -> usize {
        self.node().map_or(0, |node| node.hub.deliver(publication))
    }

    fn resync(&self, channel: &Channel) {
        if let Some(node) = self.node() {
            node.hub.resync(channel);
        }
    }

    fn relayed(&self, relay: RelayedFrames) {
        if let Some(node) = self.node() {
            node.inbound
                .hand_over(&relay.user, &relay.conn_id, relay.frames);
        }
    }

    fn control(&self, message: ControlMessage) {
        if let Some(node) = self.node() {
            node.on_control(message);
        }
    }
}
