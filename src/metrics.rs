//! Prometheus metrics of one node, served at `/metrics`.
//!
//! The registry belongs to the server instance rather than being global, so several servers
//! can live in one process (tests, embedding) without clashing. Label values are fixed sets
//! (close-code labels, error codes, reasons), never client-controlled strings.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub connections_open: IntGauge,
    pub connections_accepted: IntCounter,
    /// Upgrade requests refused before a session started, by reason.
    pub connections_rejected: IntCounterVec,
    /// Sessions ended, by close-code label (`protocol::CloseCode::label`).
    pub disconnects: IntCounterVec,
    pub subscriptions: IntGauge,
    pub channels: IntGauge,
    /// Messages accepted for publishing by this node's HTTP API or embedding code.
    pub messages_published: IntCounterVec,
    /// Messages handed from the broker to this node's hub.
    pub messages_received: IntCounter,
    /// Channel messages queued to sockets (one per subscriber per message).
    pub deliveries: IntCounter,
    /// Messages not delivered, by reason.
    pub messages_dropped: IntCounterVec,
    pub slow_consumers: IntCounter,
    /// Error frames sent to clients, by error code.
    pub inbound_errors: IntCounterVec,
    /// From the broker handing a message to the hub until it is queued on every local socket.
    pub dispatch_latency: Histogram,
    /// From the `timestamp` a publisher put in the payload to local fan-out.
    pub publish_lag: Histogram,
    /// 1 while `/readyz` answers 200 (updated when scraped).
    pub ready: IntGauge,
    /// Subscribes with `since` (or an SSE `Last-Event-ID`), by outcome.
    pub recoveries: IntCounterVec,
    /// Presence entries held by this node's sessions.
    pub presence_members: IntGauge,
}

/// Label values every labelled metric starts with, so that `rate()` and `absent()` work
/// before the first event of each kind.
const REJECT_REASONS: &[&str] = &[
    "bad_request",
    "draining",
    "origin",
    "rate_limited",
    "node_full",
    "user_full",
    "unauthorized",
    "revoked",
    "broker_unavailable",
];
const END_REASONS: &[&str] = &["client_closed", "connection_lost", "write_timeout"];
const PUBLISH_SOURCES: &[&str] = &["http", "client", "embedded"];
const DROP_REASONS: &[&str] = &["slow_consumer"];
const RECOVERY_OUTCOMES: &[&str] = &["recovered", "not_recovered"];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let m = Metrics {
            connections_open: IntGauge::new("fanout_connections_open", "Open client connections (WebSocket and SSE)")
                .expect("valid metric"),
            connections_accepted: IntCounter::new(
                "fanout_connections_accepted_total",
                "WebSocket upgrades accepted",
            )
            .expect("valid metric"),
            connections_rejected: IntCounterVec::new(
                Opts::new(
                    "fanout_connections_rejected_total",
                    "WebSocket upgrade requests refused before a session started, by reason",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            disconnects: IntCounterVec::new(
                Opts::new(
                    "fanout_disconnects_total",
                    "Sessions ended, by close reason (close-code label)",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            subscriptions: IntGauge::new(
                "fanout_subscriptions",
                "Channel subscriptions of local sessions",
            )
            .expect("valid metric"),
            channels: IntGauge::new(
                "fanout_channels",
                "Channels with at least one local subscriber",
            )
            .expect("valid metric"),
            messages_published: IntCounterVec::new(
                Opts::new(
                    "fanout_messages_published_total",
                    "Messages published through this node, by source",
                ),
                &["source"],
            )
            .expect("valid metric"),
            messages_received: IntCounter::new(
                "fanout_messages_received_total",
                "Messages handed from the broker to this node for local fan-out",
            )
            .expect("valid metric"),
            deliveries: IntCounter::new(
                "fanout_messages_delivered_total",
                "Channel messages queued to local sockets (one per subscriber per message)",
            )
            .expect("valid metric"),
            messages_dropped: IntCounterVec::new(
                Opts::new(
                    "fanout_messages_dropped_total",
                    "Messages or deliveries dropped, by reason",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            slow_consumers: IntCounter::new(
                "fanout_slow_consumers_total",
                "Connections cut loose because their outbound queue overflowed",
            )
            .expect("valid metric"),
            inbound_errors: IntCounterVec::new(
                Opts::new(
                    "fanout_inbound_errors_total",
                    "Error frames sent in reply to client frames, by error code",
                ),
                &["code"],
            )
            .expect("valid metric"),
            dispatch_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "fanout_dispatch_latency_seconds",
                    "Time from a message reaching this node to its being queued on every local subscriber",
                )
                .buckets(vec![
                    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5,
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                ]),
            )
            .expect("valid metric"),
            publish_lag: Histogram::with_opts(
                HistogramOpts::new(
                    "fanout_publish_lag_seconds",
                    "From the `timestamp` in a message payload (when present) to its fan-out on this node; includes publisher clock skew",
                )
                .buckets(vec![
                    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0,
                ]),
            )
            .expect("valid metric"),
            ready: IntGauge::new("fanout_ready", "1 while the node is ready for traffic (/readyz 200)")
                .expect("valid metric"),
            recoveries: IntCounterVec::new(
                Opts::new(
                    "fanout_recoveries_total",
                    "Subscribes that asked to recover from a position, by outcome",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
            presence_members: IntGauge::new(
                "fanout_presence_members",
                "Presence entries held by this node's sessions",
            )
            .expect("valid metric"),
            registry,
        };
        for reason in REJECT_REASONS {
            m.connections_rejected.with_label_values(&[reason]);
        }
        for code in crate::protocol::CloseCode::ALL {
            m.disconnects.with_label_values(&[code.label()]);
        }
        for reason in END_REASONS {
            m.disconnects.with_label_values(&[reason]);
        }
        for source in PUBLISH_SOURCES {
            m.messages_published.with_label_values(&[source]);
        }
        for reason in DROP_REASONS {
            m.messages_dropped.with_label_values(&[reason]);
        }
        for code in crate::protocol::ErrorCode::ALL {
            m.inbound_errors.with_label_values(&[code.as_str()]);
        }
        for outcome in RECOVERY_OUTCOMES {
            m.recoveries.with_label_values(&[outcome]);
        }
        // The usual `*_build_info` gauge: constant 1, the facts in its labels, so dashboards
        // can show which version each node runs and alerts can join on it.
        let build_info = prometheus::IntGaugeVec::new(
            Opts::new(
                "fanout_build_info",
                "Always 1; the labels say which fanout build this node runs",
            ),
            &["version", "protocol", "target"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), "1", std::env::consts::ARCH])
            .set(1);
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(build_info),
            Box::new(m.connections_open.clone()),
            Box::new(m.connections_accepted.clone()),
            Box::new(m.connections_rejected.clone()),
            Box::new(m.disconnects.clone()),
            Box::new(m.subscriptions.clone()),
            Box::new(m.channels.clone()),
            Box::new(m.messages_published.clone()),
            Box::new(m.messages_received.clone()),
            Box::new(m.deliveries.clone()),
            Box::new(m.messages_dropped.clone()),
            Box::new(m.slow_consumers.clone()),
            Box::new(m.inbound_errors.clone()),
            Box::new(m.dispatch_latency.clone()),
            Box::new(m.publish_lag.clone()),
            Box::new(m.ready.clone()),
            Box::new(m.recoveries.clone()),
            Box::new(m.presence_members.clone()),
            #[cfg(target_os = "linux")]
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for c in collectors {
            // Names are distinct constants, so registration cannot collide.
            m.registry.register(c).expect("metric registered once");
        }
        m
    }

    /// Registers an extra collector (e.g. a broker's own metrics).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(collector) {
            tracing::warn!(error = %e, "metric registration failed");
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
