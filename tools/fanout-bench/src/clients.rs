//! The benchmark's clients: connect (paced, from many loopback source addresses) over
//! WebSocket or SSE ([`crate::sse`]), subscribe, then read and time every message until
//! stopped. Both transports count into the same [`Stats`] in the same way.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload};
use hdrhistogram::Histogram;
use http_body_util::Empty;
use hyper::Request;
use hyper::header::{CONNECTION, UPGRADE};
use indicatif::ProgressBar;
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

use crate::Transport;
use crate::sse::{self, SseStream};

/// Connections per source address (one address has ~28k ephemeral ports, fewer once earlier
/// runs left sockets in TIME_WAIT).
const PER_SOURCE_ADDRESS: usize = 4_000;
/// Handshakes in flight at once.
const CONCURRENT_CONNECTS: usize = 512;
const SHARDS: usize = 16;
/// Deliveries slower than this are kept one by one (send time, latency, client), to show
/// when the tail happened and whom it hit (see `report::SlowDeliveries`).
pub const SLOW_US: u64 = 5_000;
/// At most this many slow deliveries are kept.
const MAX_SLOW_KEPT: usize = 200_000;

/// One delivery slower than [`SLOW_US`].
#[derive(Debug, Clone, Copy)]
pub struct Slow {
    /// The publisher's send time, Unix nanoseconds.
    pub sent_ns: u64,
    pub latency_us: u64,
    pub client: usize,
}

/// Counters and histograms shared by every client.
pub struct Stats {
    delivered: AtomicU64,
    pub connected: AtomicU64,
    pub disconnects: AtomicU64,
    /// Publish-to-receive latency, microseconds, sharded to keep locks uncontended.
    latency: Vec<Mutex<Histogram<u64>>>,
    connect_time: Mutex<Histogram<u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    slow: Mutex<Vec<Slow>>,
    /// Every slow delivery, kept or not.
    slow_count: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        let histogram = || Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds");
        Stats {
            delivered: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            latency: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
            connect_time: Mutex::new(histogram()),
            errors: Mutex::new(BTreeMap::new()),
            slow: Mutex::new(Vec::new()),
            slow_count: AtomicU64::new(0),
        }
    }
}

impl Stats {
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// All latency shards merged.
    pub fn latency(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds");
        for shard in &self.latency {
            if let Ok(h) = shard.lock() {
                let _ = all.add(&*h);
            }
        }
        all
    }

    pub fn connect_time(&self) -> Histogram<u64> {
        self.connect_time
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| {
                Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds")
            })
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }

    fn error(&self, kind: String) {
        if let Ok(mut e) = self.errors.lock() {
            *e.entry(kind).or_default() += 1;
        }
    }

    /// A message received by client `i`: counted, and timed when it carries the
    /// publisher's send time (anything else, such as a reply, is not a delivery).
    pub fn delivery(&self, i: usize, message: &[u8]) {
        if let Some(sent) = sent_ns(message) {
            let latency_us = unix_ns().saturating_sub(sent) / 1_000;
            self.delivered.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut h) = self.latency[i % SHARDS].lock() {
                let _ = h.record(latency_us.max(1));
            }
            if latency_us >= SLOW_US
                && self.slow_count.fetch_add(1, Ordering::Relaxed) < MAX_SLOW_KEPT as u64
                && let Ok(mut slow) = self.slow.lock()
            {
                slow.push(Slow {
                    sent_ns: sent,
                    latency_us,
                    client: i,
                });
            }
        }
    }

    /// The deliveries slower than [`SLOW_US`] (the first 200,000 kept, in no particular
    /// order), and how many there were in all.
    pub fn slow(&self) -> (Vec<Slow>, u64) {
        let kept = self.slow.lock().map(|s| s.clone()).unwrap_or_default();
        (kept, self.slow_count.load(Ordering::Relaxed))
    }

    /// A connection the gateway closed or lost while the run was going on.
    pub fn disconnected(&self) {
        self.disconnects.fetch_add(1, Ordering::Relaxed);
    }
}

/// An established connection of either transport.
enum Connection {
    Ws(Ws),
    Sse(SseStream),
}

/// What to connect: `assignment.len()` clients, client i subscribing
/// `channels[assignment[i]]` on `targets[i % targets.len()]`.
pub struct Plan<'a> {
    pub transport: Transport,
    pub targets: &'a [(SocketAddr, String)],
    /// HS256 secret the clients' tokens are signed with.
    pub secret: &'a str,
    pub channels: &'a [String],
    pub assignment: &'a [usize],
    /// New connections per second.
    pub connect_rate: u32,
}

pub struct Clients {
    tasks: Vec<JoinHandle<()>>,
    up: Vec<bool>,
}

impl Clients {
    /// Connects the clients of `plan`, paced at its connect rate.
    pub async fn connect(plan: Plan<'_>, stats: Arc<Stats>, bar: &ProgressBar) -> Clients {
        let Plan {
            transport,
            targets,
            secret,
            channels,
            assignment,
            connect_rate,
        } = plan;
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
        let namespace = channels[0].split(':').next().unwrap_or("room").to_owned();
        let gate = Arc::new(Semaphore::new(CONCURRENT_CONNECTS));
        let base = random_base();
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(assignment.len());
        let mut ready = Vec::with_capacity(assignment.len());
        for (i, &k) in assignment.iter().enumerate() {
            let due = start + Duration::from_secs_f64(i as f64 / f64::from(connect_rate.max(1)));
            tokio::time::sleep_until(due.into()).await;
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &serde_json::json!({
                    "sub": format!("bench-{i}"),
                    "exp": unix_s() + 86_400,
                    "channels": [format!("{namespace}:*")],
                }),
                &key,
            )
            .unwrap_or_default();
            let (target, _) = targets[i % targets.len()];
            let source = source_address(base, i);
            let channel = channels[k].clone();
            let stats = stats.clone();
            let gate = gate.clone();
            let (tx, rx) = oneshot::channel();
            tasks.push(tokio::spawn(async move {
                let permit = gate.acquire_owned().await;
                let began = Instant::now();
                let opened = match transport {
                    Transport::Ws => open(source, target, &token, &channel)
                        .await
                        .map(Connection::Ws),
                    Transport::Sse => sse::open(source, target, &token, &channel)
                        .await
                        .map(Connection::Sse),
                };
                match opened {
                    Ok(connection) => {
                        drop(permit);
                        if let Ok(mut h) = stats.connect_time.lock() {
                            let _ = h.record(began.elapsed().as_micros().max(1) as u64);
                        }
                        stats.connected.fetch_add(1, Ordering::Relaxed);
                        let _ = tx.send(true);
                        match connection {
                            Connection::Ws(ws) => read(ws, i, &stats).await,
                            Connection::Sse(stream) => stream.read(i, &stats).await,
                        }
                    }
                    Err(e) => {
                        stats.error(e);
                        let _ = tx.send(false);
                    }
                }
            }));
            ready.push(rx);
        }
        let mut up = Vec::with_capacity(ready.len());
        for rx in ready {
            up.push(rx.await.unwrap_or(false));
            bar.inc(1);
        }
        Clients { tasks, up }
    }

    pub fn connected(&self, i: usize) -> bool {
        self.up.get(i).copied().unwrap_or(false)
    }

    /// Stops every client; returns how many were still connected.
    pub async fn close(self) -> usize {
        let open = self.tasks.iter().filter(|t| !t.is_finished()).count();
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        open
    }
}

/// Consecutive loopback addresses, 4k connections each, from a random start in 127.1.0.0/16
/// so that one run does not collide with the TIME_WAIT sockets of the previous one.
fn source_address(base: u32, i: usize) -> Ipv4Addr {
    Ipv4Addr::from(base + (i / PER_SOURCE_ADDRESS) as u32)
}

fn random_base() -> u32 {
    u32::from(Ipv4Addr::new(127, 1, 0, 1)) + rand::random_range(0..60_000u32)
}

type Ws = FragmentCollector<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}

/// WebSocket: connects, upgrades, waits for `connection_ack`, subscribes and waits for
/// `subscribed`.
async fn open(
    source: Ipv4Addr,
    target: SocketAddr,
    token: &str,
    channel: &str,
) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {}", e.kind()))?;
    let _ = socket.set_reuseaddr(true);
    socket
        .bind(SocketAddr::new(source.into(), 0))
        .map_err(|e| format!("bind {source}: {}", e.kind()))?;
    let tcp = tokio::time::timeout(Duration::from_secs(10), socket.connect(target))
        .await
        .map_err(|_| "connect: timeout".to_owned())?
        .map_err(|e| format!("connect: {}", e.kind()))?;
    let _ = tcp.set_nodelay(true);
    let request = Request::builder()
        .method("GET")
        .uri(format!("http://{target}/ws?token={token}"))
        .header("Host", target.to_string())
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let (ws, response) = tokio::time::timeout(
        Duration::from_secs(10),
        fastwebsockets::handshake::client(&SpawnExecutor, request, tcp),
    )
    .await
    .map_err(|_| "handshake: timeout".to_owned())?
    .map_err(|e| format!("handshake: {e}"))?;
    if response.status() != 101 {
        return Err(format!("handshake: HTTP {}", response.status().as_u16()));
    }
    let mut ws = FragmentCollector::new(ws);
    expect(&mut ws, "connection_ack").await?;
    let subscribe = format!(r#"{{"type":"subscribe","channel":"{channel}"}}"#);
    ws.write_frame(Frame::text(Payload::Owned(subscribe.into_bytes())))
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    expect(&mut ws, "subscribed").await?;
    Ok(ws)
}

/// Reads until a frame of `kind`; an error frame or a close is a failure.
async fn expect(ws: &mut Ws, kind: &str) -> Result<(), String> {
    let wanted = format!(r#"{{"type":"{kind}""#);
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.read_frame())
            .await
            .map_err(|_| format!("{kind}: timeout"))?
            .map_err(|e| format!("{kind}: {e}"))?;
        match frame.opcode {
            OpCode::Text if frame.payload.starts_with(wanted.as_bytes()) => return Ok(()),
            OpCode::Text if frame.payload.starts_with(br#"{"type":"error""#) => {
                return Err(format!(
                    "{kind}: {}",
                    String::from_utf8_lossy(&frame.payload)
                ));
            }
            OpCode::Close => return Err(format!("{kind}: closed by the gateway")),
            _ => {}
        }
    }
}

/// Times every message until the connection ends or the task is stopped.
async fn read(mut ws: Ws, i: usize, stats: &Stats) {
    loop {
        let frame = match ws.read_frame().await {
            Ok(f) => f,
            Err(_) => {
                stats.disconnected();
                return;
            }
        };
        match frame.opcode {
            OpCode::Text => stats.delivery(i, &frame.payload),
            OpCode::Close => {
                stats.disconnected();
                return;
            }
            _ => {}
        }
    }
}

/// The `"t":<ns>` send time in a message payload.
fn sent_ns(frame: &[u8]) -> Option<u64> {
    let at = frame.windows(4).position(|w| w == br#""t":"#)? + 4;
    let digits = frame[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&frame[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn unix_s() -> u64 {
    unix_ns() / 1_000_000_000
}
