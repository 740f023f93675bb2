//! Fan-out: a publication encoded once into a [`Frame`] and pushed to every local subscriber
//! of its channel without waiting; the `resync` notice; the delivery metrics.

use super::{
    Hub, MAX_CLOCK_SKEW_MS, MAX_PLAUSIBLE_LAG_MS, SubscriberState, WRITE_NOW_MAX_SUBSCRIBERS,
};
use crate::broker::{Content, Publication};
use crate::channel::Channel;
use crate::clock::unix_now_ms;
use crate::outbox::Pushed;
use crate::protocol::{self, Frame};

impl Hub {
    /// Sends the `resync` notice to the live subscribers of a channel.
    pub fn resync(&self, channel: &Channel) {
        let Some(subs) = self.channels.get(channel).map(|e| e.clone()) else {
            return;
        };
        let notice = protocol::ServerFrame::Resync {
            channel: channel.as_str(),
        }
        .encode();
        let by_conn = subs.lock();
        for sub in by_conn.values() {
            if matches!(sub.state, SubscriberState::Live { .. }) {
                let _ = sub.outbox.push(notice.clone());
            }
        }
        tracing::warn!(%channel, subscribers = by_conn.len(), "messages lost on the way to this node; subscribers told to resync");
    }

    /// Fans a publication out to local subscribers; returns how many were queued.
    pub fn deliver(&self, publication: &Publication) -> usize {
        self.metrics.messages_received.inc();
        let Some(subs) = self.channels.get(&publication.channel).map(|e| e.clone()) else {
            return 0;
        };
        let position = publication.position.as_ref();
        let (frame, timestamp_ms) = match &publication.content {
            // Events are complete frames already.
            Content::Event { frame } => (Frame::from_json(frame.clone()), None),
            Content::Message { payload, publisher } => {
                let info = protocol::PayloadInfo::of(payload);
                let frame = protocol::message_frame_with(
                    &publication.channel,
                    payload,
                    info.is_json,
                    position.map(|p| (p.offset, &p.epoch)),
                    publisher.as_deref(),
                );
                (frame, info.timestamp_ms)
            }
        };
        let mut queued = 0u64;
        let mut slow = 0u64;
        let mut dropped = 0u64;
        {
            let mut by_conn = subs.lock();
            let write_now = by_conn.len() <= WRITE_NOW_MAX_SUBSCRIBERS;
            for sub in by_conn.values_mut() {
                match &mut sub.state {
                    SubscriberState::Live { skip } => {
                        if let Some(s) = skip.as_ref() {
                            match position {
                                Some(p) if p.epoch == s.epoch && p.offset <= s.offset => continue,
                                // Past the replay (or a new epoch): no more checks needed.
                                Some(_) => *skip = None,
                                None => {}
                            }
                        }
                    }
                    SubscriberState::Pending {
                        buffered,
                        overflowed,
                    } => {
                        if buffered.len() >= self.pending_limit {
                            // Recovering more slowly than messages come: let the buffer go
                            // (history has them) rather than the connection; the replay goes
                            // on from history before the subscriber turns live.
                            let unrecoverable =
                                buffered.iter().filter(|f| f.mark().is_none()).count();
                            dropped += unrecoverable as u64;
                            buffered.clear();
                            if !*overflowed {
                                *overflowed = true;
                                tracing::debug!(channel = %publication.channel, limit = self.pending_limit, "recovering subscriber fell behind; its buffer is let go, the replay goes on from history");
                            }
                        }
                        buffered.push(frame.clone());
                        continue;
                    }
                }
                let pushed = if write_now {
                    sub.outbox.push(frame.clone())
                } else {
                    sub.outbox.queue(frame.clone())
                };
                match pushed {
                    Ok(Pushed::Queued | Pushed::Written) => queued += 1,
                    Ok(Pushed::Discarded) => dropped += 1,
                    Err(overflow) => {
                        slow += 1;
                        dropped += overflow.dropped as u64;
                    }
                }
            }
        }
        self.metrics.deliveries.inc_by(queued);
        if slow > 0 {
            self.metrics.slow_consumers.inc_by(slow);
        }
        if dropped > 0 {
            self.metrics
                .messages_dropped
                .with_label_values(&["slow_consumer"])
                .inc_by(dropped);
        }
        self.metrics
            .dispatch_latency
            .observe(publication.received_at.elapsed().as_secs_f64());
        if let Some(sent_ms) = timestamp_ms {
            let lag_ms = unix_now_ms() as f64 - sent_ms;
            // A publisher clock slightly ahead of ours gives a small negative lag: count it as
            // zero. A timestamp far off (an example payload with a fixed date, a clock that is
            // minutes wrong) says nothing about delivery: leave it out.
            if (-MAX_CLOCK_SKEW_MS..=MAX_PLAUSIBLE_LAG_MS).contains(&lag_ms) {
                self.metrics.publish_lag.observe(lag_ms.max(0.0) / 1000.0);
            }
        }
        queued as usize
    }
}
