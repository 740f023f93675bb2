//! Metrics of the Redis broker, registered in the node's registry when Redis is configured.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

use crate::metrics::Metrics;

pub struct RedisMetrics {
    /// Redis channels this node is subscribed to (probe channels excluded).
    pub subscriptions: IntGauge,
    /// Pub/sub connections currently up.
    pub connections_up: IntGauge,
    pub messages_received: IntCounter,
    pub publish_duration: Histogram,
    pub reconnects: IntCounter,
    pub resubscribed: IntCounter,
    pub dropped: IntCounterVec,
    pub probe_failures: IntCounter,
    /// Messages read from history to fill a gap in a channel's offsets.
    pub gap_filled: IntCounter,
    /// Gaps history could not fill: subscribers were told to resync.
    pub resyncs: IntCounter,
}

impl RedisMetrics {
    pub fn new(registry: &Metrics) -> RedisMetrics {
        let m = RedisMetrics {
            subscriptions: IntGauge::new(
                "fanout_redis_subscriptions",
                "Redis channels this node is subscribed to",
            )
            .expect("valid metric"),
            connections_up: IntGauge::new(
                "fanout_redis_pubsub_connections_up",
                "Redis pub/sub connections currently connected and subscribed",
            )
            .expect("valid metric"),
            messages_received: IntCounter::new(
                "fanout_redis_messages_received_total",
                "Messages received from Redis pub/sub",
            )
            .expect("valid metric"),
            publish_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "fanout_redis_publish_duration_seconds",
                    "Latency of publishing to Redis",
                )
                .buckets(vec![
                    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 1.0,
                ]),
            )
            .expect("valid metric"),
            reconnects: IntCounter::new(
                "fanout_redis_reconnects_total",
                "Pub/sub connections re-established after a loss",
            )
            .expect("valid metric"),
            resubscribed: IntCounter::new(
                "fanout_redis_resubscribed_channels_total",
                "Channels subscribed again after a reconnect",
            )
            .expect("valid metric"),
            dropped: IntCounterVec::new(
                Opts::new(
                    "fanout_redis_dropped_total",
                    "Messages from Redis not dispatched, by reason",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            probe_failures: IntCounter::new(
                "fanout_redis_probe_failures_total",
                "Pub/sub liveness probes that did not come back in time",
            )
            .expect("valid metric"),
            gap_filled: IntCounter::new(
                "fanout_redis_gap_filled_total",
                "Messages read from history to fill a gap in a channel's offsets",
            )
            .expect("valid metric"),
            resyncs: IntCounter::new(
                "fanout_resyncs_total",
                "Gaps history could not fill; the channel's subscribers were told to resync",
            )
            .expect("valid metric"),
        };
        // Every reason from start, so that alerts on `rate()` see zero rather than nothing.
        for reason in [
            "dispatch_full",
            "shutting_down",
            "bad_channel",
            "bad_envelope",
            "forged_envelope",
            "too_large",
            "bad_presence_entry",
        ] {
            m.dropped.with_label_values(&[reason]);
        }
        registry.register(Box::new(m.gap_filled.clone()));
        registry.register(Box::new(m.resyncs.clone()));
        registry.register(Box::new(m.subscriptions.clone()));
        registry.register(Box::new(m.connections_up.clone()));
        registry.register(Box::new(m.messages_received.clone()));
        registry.register(Box::new(m.publish_duration.clone()));
        registry.register(Box::new(m.reconnects.clone()));
        registry.register(Box::new(m.resubscribed.clone()));
        registry.register(Box::new(m.dropped.clone()));
        registry.register(Box::new(m.probe_failures.clone()));
        m
    }
}
