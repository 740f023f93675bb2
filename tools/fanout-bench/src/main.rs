//! `fanout-bench`: a load generator for fanout gateways, loopback only.
//!
//! It opens N WebSocket or Server-Sent Events connections (spreading their source addresses
//! over 127.0.0.0/8 so one machine can open more than the ~28k ports one address allows),
//! subscribes them across K channels, publishes at a fixed total rate R for T seconds
//! (Redis `PUBLISH`, `FCALL fanout_publish`, or the HTTP API), and reports delivery, loss,
//! publish-to-receive latency (the send time travels in the payload), connect times and
//! errors, and the gateways' CPU and memory read from /proc. Every run is bounded and stops
//! by itself.
//!
//! A crate of its own in the workspace (`tools/fanout-bench`), not a binary of the gateway's
//! package: it talks to gateways only over the wire and imports nothing from the `fanout`
//! library, so its dependencies (progress bar, histograms, /proc, an HTTP client) stay out of
//! the gateway's. README.md beside this crate's manifest says where it sits and how it is built.

mod clients;
mod publisher;
mod report;
mod sse;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use clients::{Clients, Stats};
use report::{GatewaySample, Report};

/// Upper bounds that keep every run finite and on this machine.
const MAX_CONNECTIONS: usize = 200_000;
const MAX_DURATION_S: u64 = 3_600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Distribution {
    /// Connection i subscribes channel i mod K.
    Uniform,
    /// Channel k gets a share proportional to 1/(k+1) (a few hot channels, a long tail).
    Zipf,
}

/// How the clients connect; both are counted the same way, so their reports compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Transport {
    /// WebSocket: `GET /ws` upgraded, then a `subscribe` frame.
    Ws,
    /// Server-Sent Events: one HTTP/1.1 `GET /sse?token=..&channel=..` per connection.
    Sse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PublishVia {
    /// Redis `PUBLISH <prefix><channel>` (no history).
    Redis,
    /// Redis `FCALL fanout_publish` (history when the namespace keeps it).
    Fcall,
    /// `POST /api/publish` on the first gateway.
    Http,
}

#[derive(Debug, Parser)]
#[command(
    name = "fanout-bench",
    version,
    about = "Load generator for fanout (loopback only)"
)]
struct Args {
    /// Gateway URLs, `ws://` or `http://`; connections are spread over them round-robin.
    /// Only the host and port are used: WebSocket clients open `/ws` and SSE clients
    /// `/sse` on them, so the same ws:// URLs serve both transports.
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:8080/ws")]
    url: Vec<String>,
    /// `ws`: WebSocket clients; `sse`: Server-Sent Events clients subscribed through
    /// `channel=` in the query (the same channel for the same client as with ws).
    #[arg(long, value_enum, default_value = "ws")]
    transport: Transport,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Channels the connections subscribe to.
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Channel namespace: `room` (no history) or `dag` (history, offsets).
    #[arg(long, default_value = "room")]
    namespace: String,
    #[arg(long, value_enum, default_value = "uniform")]
    distribution: Distribution,
    /// Messages per second, all channels together (0: idle run).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of publishing (or of idling, with --rate 0).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds to wait after the last publish for deliveries in flight.
    #[arg(long, default_value_t = 2)]
    settle: u64,
    /// New connections per second while connecting.
    #[arg(long, default_value_t = 2000)]
    connect_rate: u32,
    #[arg(long, value_enum, default_value = "redis")]
    publish: PublishVia,
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis_url: String,
    #[arg(long, default_value = "fanout:")]
    redis_prefix: String,
    /// API key for --publish http.
    #[arg(long, env = "FANOUT_API_KEY")]
    api_key: Option<String>,
    /// HS256 secret the gateways verify tokens with (tokens are minted here).
    #[arg(long, env = "FANOUT_JWT_SECRET")]
    jwt_secret: String,
    /// Bytes of padding in each payload.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Gateway process ids to sample CPU time and memory from (/proc).
    #[arg(long, value_delimiter = ',')]
    gateway_pid: Vec<u32>,
    /// Machine-readable output (one JSON object) instead of the table.
    #[arg(long)]
    json: bool,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = check(&args) {
        eprintln!("fanout-bench: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fanout-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            report.print();
            if report.loss() > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("fanout-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Rejects runs that are unbounded or leave loopback.
fn check(args: &Args) -> Result<(), String> {
    if args.connections == 0 || args.connections > MAX_CONNECTIONS {
        return Err(format!("--connections must be 1 to {MAX_CONNECTIONS}"));
    }
    if args.channels == 0 || args.channels > args.connections {
        return Err("--channels must be 1 to --connections".into());
    }
    if args.duration == 0 || args.duration > MAX_DURATION_S {
        return Err(format!("--duration must be 1 to {MAX_DURATION_S} seconds"));
    }
    if !(args.rate >= 0.0 && args.rate <= 10_000_000.0) {
        return Err("--rate must be 0 to 10000000".into());
    }
    for url in &args.url {
        gateway_addr(url)?;
    }
    if !args.redis_url.contains("127.0.0.1") && !args.redis_url.contains("localhost") {
        return Err("--redis-url must be on loopback".into());
    }
    if args.publish == PublishVia::Http && args.api_key.is_none() {
        return Err("--publish http needs --api-key".into());
    }
    Ok(())
}

/// The loopback socket address of a `ws://host:port/path` or `http://host:port/path` URL.
fn gateway_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url}: only ws:// or http:// URLs (loopback, no TLS)"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = hostport.replace("localhost", "127.0.0.1");
    let addr: SocketAddr = hostport
        .parse()
        .map_err(|_| format!("{url}: expected ws://127.x.y.z:port/ws"))?;
    let loopback = match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback(),
    };
    if !loopback {
        return Err(format!("{url}: fanout-bench only targets loopback"));
    }
    Ok(addr)
}

async fn run(args: Args) -> Result<Report, String> {
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|e| format!("cannot raise the file-descriptor limit: {e}"))?;
    if fd_limit < args.connections as u64 + 256 {
        return Err(format!(
            "the file-descriptor limit is {fd_limit}; {} connections need more (ulimit -Hn)",
            args.connections
        ));
    }
    let targets: Vec<(SocketAddr, String)> = args
        .url
        .iter()
        .map(|u| Ok((gateway_addr(u)?, u.clone())))
        .collect::<Result<_, String>>()?;
    let channels: Vec<String> = (0..args.channels)
        .map(|k| format!("{}:bench-{k}", args.namespace))
        .collect();
    let assignment = assign(args.connections, args.channels, args.distribution);
    let stats = Arc::new(Stats::default());
    let baseline: Vec<GatewaySample> = args
        .gateway_pid
        .iter()
        .map(|pid| GatewaySample::read(*pid))
        .collect::<Result<_, _>>()?;

    let bar = progress(args.quiet, args.connections as u64, "connecting");
    let started = Instant::now();
    let plan = clients::Plan {
        transport: args.transport,
        targets: &targets,
        secret: &args.jwt_secret,
        channels: &channels,
        assignment: &assignment,
        connect_rate: args.connect_rate,
    };
    let clients = Clients::connect(plan, stats.clone(), &bar).await;
    let connect_elapsed = started.elapsed();
    bar.finish_and_clear();
    let after_connect: Vec<GatewaySample> = args
        .gateway_pid
        .iter()
        .map(|pid| GatewaySample::read(*pid))
        .collect::<Result<_, _>>()?;

    // Subscribers per channel, for the expected deliveries of each message.
    let mut subscribers = vec![0u64; channels.len()];
    for (i, k) in assignment.iter().enumerate() {
        if clients.connected(i) {
            subscribers[*k] += 1;
        }
    }

    let bar = progress(
        args.quiet,
        args.duration,
        if args.rate > 0.0 {
            "publishing"
        } else {
            "idle"
        },
    );
    let phase_start = Instant::now();
    let publish_start_ns = clients::unix_ns();
    let steal_at_start = report::steal_s();
    let published = if args.rate > 0.0 {
        let publisher = publisher::Publisher::new(
            args.publish,
            &args.redis_url,
            &args.redis_prefix,
            &targets[0].0,
            args.api_key.clone(),
            args.payload_bytes,
        )
        .await?;
        publisher
            .run(
                args.rate,
                Duration::from_secs(args.duration),
                &channels,
                &subscribers,
                &stats,
                &bar,
            )
            .await?
    } else {
        for s in 0..args.duration {
            bar.set_position(s);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        publisher::Published::default()
    };
    let publish_elapsed = phase_start.elapsed();
    bar.finish_and_clear();
    // Deliveries still in flight.
    let settle_deadline = Instant::now() + Duration::from_secs(args.settle);
    while Instant::now() < settle_deadline && stats.delivered() < published.expected {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let phase_elapsed = phase_start.elapsed();
    let after_run: Vec<GatewaySample> = args
        .gateway_pid
        .iter()
        .map(|pid| GatewaySample::read(*pid))
        .collect::<Result<_, _>>()?;
    let still_open = clients.close().await;

    Ok(Report::new(report::Inputs {
        transport: format!("{:?}", args.transport).to_lowercase(),
        connections: args.connections,
        channels: args.channels,
        rate: args.rate,
        duration: Duration::from_secs(args.duration),
        publish_via: format!("{:?}", args.publish).to_lowercase(),
        payload_bytes: args.payload_bytes,
        connect_elapsed,
        publish_elapsed,
        phase_elapsed,
        published,
        stats: &stats,
        still_open,
        baseline,
        after_connect,
        after_run,
        steal_s: (steal_at_start, report::steal_s()),
        publish_start_ns,
        json: args.json,
    }))
}

/// The channel of each connection.
fn assign(connections: usize, channels: usize, distribution: Distribution) -> Vec<usize> {
    match distribution {
        Distribution::Uniform => (0..connections).map(|i| i % channels).collect(),
        Distribution::Zipf => {
            let weights: Vec<f64> = (0..channels).map(|k| 1.0 / (k as f64 + 1.0)).collect();
            let total: f64 = weights.iter().sum();
            // Deterministic: fill channel k with its share of the connections, in order.
            let mut out = Vec::with_capacity(connections);
            for (k, w) in weights.iter().enumerate() {
                let n = ((w / total) * connections as f64).round() as usize;
                out.extend(std::iter::repeat_n(k, n.max(1)));
            }
            out.resize(connections, 0);
            out
        }
    }
}

fn progress(quiet: bool, len: u64, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}
