//! Recovering subscribers: a subscription that buffers its channel's live messages while its
//! session replays history, then merges them by offset ([`Hub::activate`]), or lets the
//! buffer go and says so when the replay is slower than the channel.

use std::sync::Arc;

use super::{Activation, ConnKey, Hub, Subscriber, SubscriberState, already_sent};
use crate::broker::{BrokerError, StreamPosition};
use crate::channel::Channel;
use crate::outbox::Outbox;

impl Hub {
    /// Subscribes a connection to a channel in the pending state (buffering), or switches an
    /// existing subscription to it, for a recovery. [`Hub::activate`] ends it.
    pub async fn subscribe_pending(
        &self,
        key: ConnKey,
        outbox: &Arc<Outbox>,
        channel: &Channel,
    ) -> Result<(), BrokerError> {
        let _interest = self.lock_interest(&[channel]).await;
        if !self.channels.contains_key(channel) {
            self.broker.subscribe(std::slice::from_ref(channel)).await?;
        }
        let subs = self.channels.entry(channel.clone()).or_default().clone();
        let mut by_conn = subs.lock();
        let pending = SubscriberState::Pending {
            buffered: Vec::new(),
            overflowed: false,
        };
        match by_conn.get_mut(&key) {
            Some(sub) => {
                if matches!(sub.state, SubscriberState::Live { .. }) {
                    sub.state = pending;
                }
            }
            None => {
                by_conn.insert(
                    key,
                    Subscriber {
                        outbox: outbox.clone(),
                        state: pending,
                    },
                );
                self.metrics.subscriptions.inc();
            }
        }
        drop(by_conn);
        self.metrics.channels.set(self.channels.len() as i64);
        Ok(())
    }

    /// Ends a recovery (the session queued the reply and the replay meanwhile): queues the
    /// buffered messages not already covered by `replayed_up_to` and makes the subscriber
    /// live, skipping later messages up to that position too. If the buffer overflowed
    /// meanwhile, nothing changes but the overflow mark: the session must replay on from
    /// `replayed_up_to` first ([`Activation::FellBehind`]).
    pub fn activate(
        &self,
        key: ConnKey,
        channel: &Channel,
        replayed_up_to: Option<StreamPosition>,
    ) -> Activation {
        let Some(subs) = self.channels.get(channel).map(|e| e.clone()) else {
            return Activation::NotSubscribed;
        };
        let mut by_conn = subs.lock();
        let Some(sub) = by_conn.get_mut(&key) else {
            return Activation::NotSubscribed;
        };
        let buffered = match &mut sub.state {
            SubscriberState::Pending { overflowed, .. }
                if *overflowed && replayed_up_to.is_some() =>
            {
                *overflowed = false;
                return Activation::FellBehind;
            }
            SubscriberState::Pending { buffered, .. } => std::mem::take(buffered),
            SubscriberState::Live { .. } => Vec::new(),
        };
        sub.state = SubscriberState::Live {
            skip: replayed_up_to.clone(),
        };
        for frame in buffered {
            if !already_sent(frame.mark(), replayed_up_to.as_ref()) {
                let _ = sub.outbox.push(frame);
            }
        }
        Activation::Live
    }

    /// Makes a pending subscriber live with whatever it buffered, skipping nothing (a
    /// recovery that could not be completed). False if the buffer had overflowed, so that
    /// messages are missing before what it held: the client must be told to `resync`.
    pub fn go_live(&self, key: ConnKey, channel: &Channel) -> bool {
        let Some(subs) = self.channels.get(channel).map(|e| e.clone()) else {
            return true;
        };
        let mut by_conn = subs.lock();
        let Some(sub) = by_conn.get_mut(&key) else {
            return true;
        };
        let SubscriberState::Pending {
            buffered,
            overflowed,
        } = &mut sub.state
        else {
            return true;
        };
        let complete = !*overflowed;
        let buffered = std::mem::take(buffered);
        sub.state = SubscriberState::Live { skip: None };
        for frame in buffered {
            let _ = sub.outbox.push(frame);
        }
        complete
    }
}
