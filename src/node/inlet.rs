//! Where the brokers deliver into this node ([`Inlet`]): publications and resyncs go to the
//! hub, relayed client frames to the directory of SSE sessions.
//!
//! The brokers are started before the hub exists (the hub needs a broker to subscribe
//! through), so the inlet is handed to them first and the hub plugged in once it is built.
//! It holds the hub weakly: the hub owns the broker, which owns the inlet.

use std::sync::{Arc, OnceLock, Weak};

use super::inbound::InboundSessions;
use crate::broker::{Deliver, Publication, RelayedFrames};
use crate::channel::Channel;
use crate::hub::Hub;

#[derive(Default)]
pub struct Inlet {
    hub: OnceLock<Weak<Hub>>,
    inbound: OnceLock<Weak<InboundSessions>>,
}

impl Inlet {
    /// Plugs in the hub and the SSE directory; what arrived before is dropped (nothing was
    /// subscribed yet).
    pub fn connect(&self, hub: &Arc<Hub>, inbound: &Arc<InboundSessions>) {
        let _ = self.hub.set(Arc::downgrade(hub));
        let _ = self.inbound.set(Arc::downgrade(inbound));
    }

    fn hub(&self) -> Option<Arc<Hub>> {
        self.hub.get().and_then(Weak::upgrade)
    }
}

impl Deliver for Inlet {
    fn deliver(&self, publication: &Publication) -> usize {
        self.hub().map_or(0, |hub| hub.deliver(publication))
    }

    fn resync(&self, channel: &Channel) {
        if let Some(hub) = self.hub() {
            hub.resync(channel);
        }
    }

    fn relayed(&self, relay: RelayedFrames) {
        if let Some(inbound) = self.inbound.get().and_then(Weak::upgrade) {
            inbound.hand_over(&relay.user, &relay.conn_id, relay.frames);
        }
    }
}
