//! The run's results: a table for people, JSON for machines.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::clients::Stats;
use crate::publisher::Published;

/// CPU time and memory of a gateway process, from /proc.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GatewaySample {
    pub pid: u32,
    pub cpu_s: f64,
    pub rss_bytes: u64,
}

impl GatewaySample {
    pub fn read(pid: u32) -> Result<GatewaySample, String> {
        let process =
            procfs::process::Process::new(pid as i32).map_err(|e| format!("pid {pid}: {e}"))?;
        let stat = process.stat().map_err(|e| format!("pid {pid}: {e}"))?;
        let ticks = procfs::ticks_per_second() as f64;
        let page = procfs::page_size();
        Ok(GatewaySample {
            pid,
            cpu_s: (stat.utime + stat.stime) as f64 / ticks,
            rss_bytes: stat.rss * page,
        })
    }
}

pub struct Inputs<'a> {
    /// `ws` or `sse`.
    pub transport: String,
    pub connections: usize,
    pub channels: usize,
    pub rate: f64,
    pub duration: Duration,
    pub publish_via: String,
    pub payload_bytes: usize,
    pub connect_elapsed: Duration,
    pub publish_elapsed: Duration,
    pub phase_elapsed: Duration,
    pub published: Published,
    pub stats: &'a Stats,
    pub still_open: usize,
    pub baseline: Vec<GatewaySample>,
    pub after_connect: Vec<GatewaySample>,
    pub after_run: Vec<GatewaySample>,
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// From a histogram of microseconds, in milliseconds.
    fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |v: u64| v as f64 / 1000.0;
        Percentiles {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct GatewayReport {
    pub pid: u32,
    pub cpu_s_during_run: f64,
    pub cpu_per_s: f64,
    pub rss_bytes: u64,
    /// RSS growth per connection, right after connecting.
    pub rss_per_connection_bytes: f64,
    /// RSS growth per connection at the end of the run (after allocator decay; the figure
    /// for idle runs).
    pub rss_per_connection_end_bytes: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// Which clients ran: `ws` or `sse`.
    pub transport: String,
    pub connections: usize,
    pub connected: u64,
    pub connect_errors: std::collections::BTreeMap<String, u64>,
    pub connect_s: f64,
    pub connect_ms: Percentiles,
    pub channels: usize,
    pub publish_via: String,
    pub payload_bytes: usize,
    pub rate_target: f64,
    pub rate_achieved: f64,
    pub published: u64,
    pub publish_errors: u64,
    pub expected: u64,
    pub delivered: u64,
    pub deliveries_per_s: f64,
    pub latency_ms: Percentiles,
    pub disconnects: u64,
    pub still_open: usize,
    pub gateways: Vec<GatewayReport>,
    /// Deliveries per gateway CPU-second, all gateways together.
    pub deliveries_per_cpu_s: f64,
    #[serde(skip)]
    json: bool,
}

impl Report {
    pub fn new(i: Inputs<'_>) -> Report {
        let delivered = i.stats.delivered();
        let run_s = i.phase_elapsed.as_secs_f64().max(1e-9);
        let connected = i.stats.connected.load(std::sync::atomic::Ordering::Relaxed);
        let gateways: Vec<GatewayReport> = i
            .baseline
            .iter()
            .zip(&i.after_connect)
            .zip(&i.after_run)
            .map(|((base, conn), end)| {
                let cpu = end.cpu_s - conn.cpu_s;
                // Connections are spread evenly over the gateways.
                let share = (connected as f64 / i.baseline.len() as f64).max(1.0);
                GatewayReport {
                    pid: base.pid,
                    cpu_s_during_run: cpu,
                    cpu_per_s: cpu / run_s,
                    rss_bytes: end.rss_bytes,
                    rss_per_connection_bytes: (conn.rss_bytes as f64 - base.rss_bytes as f64)
                        / share,
                    rss_per_connection_end_bytes: (end.rss_bytes as f64 - base.rss_bytes as f64)
                        / share,
                }
            })
            .collect();
        let total_cpu: f64 = gateways.iter().map(|g| g.cpu_s_during_run).sum();
        Report {
            transport: i.transport,
            connections: i.connections,
            connected,
            connect_errors: i.stats.errors(),
            connect_s: i.connect_elapsed.as_secs_f64(),
            connect_ms: Percentiles::of(&i.stats.connect_time()),
            channels: i.channels,
            publish_via: i.publish_via,
            payload_bytes: i.payload_bytes,
            rate_target: i.rate,
            rate_achieved: i.published.sent as f64 / i.publish_elapsed.as_secs_f64().max(1e-9),
            published: i.published.sent,
            publish_errors: i.published.errors,
            expected: i.published.expected,
            delivered,
            deliveries_per_s: delivered as f64 / i.duration.as_secs_f64(),
            latency_ms: Percentiles::of(&i.stats.latency()),
            disconnects: i
                .stats
                .disconnects
                .load(std::sync::atomic::Ordering::Relaxed),
            still_open: i.still_open,
            deliveries_per_cpu_s: if total_cpu > 0.0 {
                delivered as f64 / total_cpu
            } else {
                0.0
            },
            gateways,
            json: i.json,
        }
    }

    /// Deliveries that never arrived.
    pub fn loss(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }

    pub fn print(&self) {
        if self.json {
            println!("{}", serde_json::to_string(self).unwrap_or_default());
            return;
        }
        let row = |k: &str, v: String| println!("{k:<28} {v}");
        row("transport", self.transport.clone());
        row(
            "connections",
            format!(
                "{} of {} connected in {:.1} s",
                self.connected, self.connections, self.connect_s
            ),
        );
        row("connect time (ms)", pct(&self.connect_ms));
        if !self.connect_errors.is_empty() {
            row("connect errors", format!("{:?}", self.connect_errors));
        }
        row("channels", self.channels.to_string());
        row(
            "publish",
            format!(
                "{} at {:.0}/s target, {:.0}/s achieved, {} B padding",
                self.publish_via, self.rate_target, self.rate_achieved, self.payload_bytes
            ),
        );
        row(
            "published",
            format!("{} ({} errors)", self.published, self.publish_errors),
        );
        row(
            "deliveries",
            format!(
                "{} of {} expected, loss {}",
                self.delivered,
                self.expected,
                self.loss()
            ),
        );
        row("deliveries/s", format!("{:.0}", self.deliveries_per_s));
        row("latency (ms)", pct(&self.latency_ms));
        row(
            "disconnects",
            format!(
                "{} (still open at the end: {})",
                self.disconnects, self.still_open
            ),
        );
        for g in &self.gateways {
            row(
                &format!("gateway {}", g.pid),
                format!(
                    "{:.2} CPU s during the run ({:.2} cores), RSS {:.1} MiB, {:.0} B/connection after connecting, {:.0} B at the end",
                    g.cpu_s_during_run,
                    g.cpu_per_s,
                    g.rss_bytes as f64 / 1_048_576.0,
                    g.rss_per_connection_bytes,
                    g.rss_per_connection_end_bytes
                ),
            );
        }
        if !self.gateways.is_empty() {
            row(
                "deliveries per CPU-second",
                format!("{:.0}", self.deliveries_per_cpu_s),
            );
        }
    }
}

fn pct(p: &Percentiles) -> String {
    format!(
        "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        p.p50, p.p90, p.p99, p.p999, p.max
    )
}
