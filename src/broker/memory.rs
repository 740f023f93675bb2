//! The in-process broker: the default when no Redis is configured.
//!
//! With a single node the local hub is the only subscriber there is, so interest needs no
//! bookkeeping and a publish is a direct hand-over to the hub in the publisher's task.

use async_trait::async_trait;
use bytes::Bytes;

use super::{Broker, BrokerError, HubSink, Publication};
use crate::channel::Channel;

pub struct MemoryBroker {
    hub: HubSink,
}

impl MemoryBroker {
    pub fn new(hub: HubSink) -> MemoryBroker {
        MemoryBroker { hub }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn subscribe(&self, _channels: &[Channel]) -> Result<(), BrokerError> {
        // Every publication is offered to the hub, which knows its own subscribers.
        Ok(())
    }

    async fn unsubscribe(&self, _channels: &[Channel]) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn publish(&self, channel: &Channel, payload: Bytes) -> Result<(), BrokerError> {
        self.hub
            .deliver(&Publication::new(channel.clone(), payload));
        Ok(())
    }

    async fn publish_many(&self, channels: &[Channel], payload: Bytes) -> Result<(), BrokerError> {
        for channel in channels {
            self.hub
                .deliver(&Publication::new(channel.clone(), payload.clone()));
        }
        Ok(())
    }

    fn is_ready(&self) -> bool {
        true
    }
}
