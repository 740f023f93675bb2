//! The run's results: a table for people, JSON for machines.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::clients::{SLOW_US, Slow, Stats};
use crate::publisher::Published;

/// CPU time and memory of a gateway process, from /proc.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GatewaySample {
    pub pid: u32,
    pub cpu_s: f64,
    pub rss_bytes: u64,
    /// Page faults that had to read from disk so far (a page of the binary the kernel had
    /// dropped, say): each one stalls the thread that hit it.
    pub major_faults: u64,
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
            major_faults: stat.majflt,
        })
    }
}

/// CPU time the hypervisor gave to other guests while this machine's vCPUs wanted it
/// (`steal` of /proc/stat, all CPUs), in seconds: time in which nothing here ran, which
/// shows up as latency no program on this machine caused.
pub fn steal_s() -> f64 {
    use procfs::CurrentSI;
    procfs::KernelStats::current()
        .ok()
        .and_then(|k| k.total.steal)
        .map_or(0.0, |ticks| {
            ticks as f64 / procfs::ticks_per_second() as f64
        })
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
    /// [`steal_s`] when publishing started and when the run ended.
    pub steal_s: (f64, f64),
    /// When publishing started, Unix nanoseconds.
    pub publish_start_ns: u64,
    pub json: bool,
}

/// The deliveries slower than `threshold_ms`, grouped into episodes: runs of slow messages
/// sent less than 100 ms apart. One message late for every subscriber points at what all
/// deliveries share (publisher, Redis, the gateway's read loop or a stalled machine); one
/// client late for many messages points at that connection.
#[derive(Debug, Serialize)]
pub struct SlowDeliveries {
    pub threshold_ms: f64,
    /// All slow deliveries; the episodes are built from the first 200,000.
    pub count: u64,
    /// The worst episodes first (at most 10).
    pub episodes: Vec<Episode>,
}

#[derive(Debug, Serialize)]
pub struct Episode {
    /// Seconds after publishing started that the first slow message was sent.
    pub at_s: f64,
    /// How long the slow messages' send times span, in milliseconds.
    pub span_ms: f64,
    /// Slow deliveries, distinct messages (by send time) and distinct clients.
    pub deliveries: usize,
    pub messages: usize,
    pub clients: usize,
    pub max_ms: f64,
}

impl SlowDeliveries {
    fn of((mut slow, count): (Vec<Slow>, u64), start_ns: u64) -> SlowDeliveries {
        const GAP_NS: u64 = 100_000_000;
        slow.sort_by_key(|s| s.sent_ns);
        let mut episodes = Vec::new();
        let mut rest = &slow[..];
        while let Some(first) = rest.first() {
            let mut end = 1;
            while end < rest.len() && rest[end].sent_ns - rest[end - 1].sent_ns < GAP_NS {
                end += 1;
            }
            let group = &rest[..end];
            let mut messages: Vec<u64> = group.iter().map(|s| s.sent_ns).collect();
            messages.dedup();
            let mut clients: Vec<usize> = group.iter().map(|s| s.client).collect();
            clients.sort_unstable();
            clients.dedup();
            episodes.push(Episode {
                at_s: first.sent_ns.saturating_sub(start_ns) as f64 / 1e9,
                span_ms: (group[end - 1].sent_ns - first.sent_ns) as f64 / 1e6,
                deliveries: group.len(),
                messages: messages.len(),
                clients: clients.len(),
                max_ms: group.iter().map(|s| s.latency_us).max().unwrap_or(0) as f64 / 1000.0,
            });
            rest = &rest[end..];
        }
        episodes.sort_by(|a, b| b.max_ms.total_cmp(&a.max_ms));
        episodes.truncate(10);
        SlowDeliveries {
            threshold_ms: SLOW_US as f64 / 1000.0,
            count,
            episodes,
        }
    }
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
    /// Major page faults during the run (after connecting).
    pub major_faults: u64,
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
    pub slow_deliveries: SlowDeliveries,
    /// CPU time stolen by the hypervisor during the run (all vCPUs), seconds.
    pub steal_s: f64,
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
                    major_faults: end.major_faults.saturating_sub(conn.major_faults),
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
            slow_deliveries: SlowDeliveries::of(i.stats.slow(), i.publish_start_ns),
            steal_s: i.steal_s.1 - i.steal_s.0,
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
        let slow = &self.slow_deliveries;
        row(
            &format!("slower than {} ms", slow.threshold_ms),
            format!(
                "{} deliveries in {} episodes (worst first below); hypervisor steal {:.2} CPU-s",
                slow.count,
                slow.episodes.len(),
                self.steal_s
            ),
        );
        for e in slow.episodes.iter().take(5) {
            row(
                "",
                format!(
                    "at {:.2} s: {} deliveries, {} messages over {:.0} ms, {} clients, max {:.1} ms",
                    e.at_s, e.deliveries, e.messages, e.span_ms, e.clients, e.max_ms
                ),
            );
        }
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
                    "{:.2} CPU s during the run ({:.2} cores), RSS {:.1} MiB, {:.0} B/connection after connecting, {:.0} B at the end, {} major page faults",
                    g.cpu_s_during_run,
                    g.cpu_per_s,
                    g.rss_bytes as f64 / 1_048_576.0,
                    g.rss_per_connection_bytes,
                    g.rss_per_connection_end_bytes,
                    g.major_faults
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

#[cfg(test)]
mod tests {
    use super::*;

    fn slow(sent_ms: u64, latency_ms: u64, client: usize) -> Slow {
        Slow {
            sent_ns: sent_ms * 1_000_000,
            latency_us: latency_ms * 1000,
            client,
        }
    }

    #[test]
    fn slow_deliveries_group_into_episodes_worst_first() {
        let start = 1_000;
        let report = SlowDeliveries::of(
            (
                vec![
                    // One message late for its three subscribers, at 2 s.
                    slow(3_000, 9, 1),
                    slow(3_000, 8, 2),
                    slow(3_000, 7, 3),
                    // One client late for two messages 50 ms apart, at 5 s: one episode.
                    slow(6_050, 20, 4),
                    slow(6_000, 6, 4),
                ],
                5,
            ),
            start * 1_000_000,
        );
        assert_eq!(report.count, 5);
        assert_eq!(report.episodes.len(), 2);
        let worst = &report.episodes[0];
        assert_eq!((worst.deliveries, worst.messages, worst.clients), (2, 2, 1));
        assert_eq!((worst.at_s, worst.span_ms, worst.max_ms), (5.0, 50.0, 20.0));
        let other = &report.episodes[1];
        assert_eq!((other.deliveries, other.messages, other.clients), (3, 1, 3));
        assert_eq!((other.at_s, other.max_ms), (2.0, 9.0));
    }
}
