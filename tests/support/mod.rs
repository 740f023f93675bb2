//! Test support: the real `fanout` binary on an ephemeral loopback port, WebSocket clients
//! (tokio-tungstenite, an independent implementation) and HTTP helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-0123456789abcdef0123456789";
pub const API_KEY: &str = "test-api-key";
/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running `fanout serve` process. Killed on drop.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// Starts the gateway with the test secret and API key, plus `extra` flags.
    pub fn start(extra: &[&str]) -> Gateway {
        Gateway::start_named("test-node", extra)
    }

    /// Starts a node named `node_id` connected to `redis`, and waits until it is ready.
    pub async fn start_on_redis(node_id: &str, redis: &RedisServer, extra: &[&str]) -> Gateway {
        let url = redis.url();
        let mut args = vec!["--redis-url", url.as_str(), "--redis-probe-interval-s", "1"];
        args.extend_from_slice(extra);
        let gw = Gateway::start_named(node_id, &args);
        gw.wait_ready(true).await;
        gw
    }

    /// Starts the gateway under a node id, with the test secret and API key.
    pub fn start_named(node_id: &str, extra: &[&str]) -> Gateway {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
            "--api-key",
            API_KEY,
            "--node-id",
            node_id,
            "--log-level",
            "fanout=debug,info",
        ];
        args.extend_from_slice(extra);
        Gateway::start_with(&args, &[])
    }

    /// Starts `fanout` with exactly these arguments and environment variables.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fanout"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn fanout");
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("listening")
                        && let Some(addr) = field(&line, "addr")
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(addr);
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let addr = match rx.recv_timeout(WAIT) {
            Ok(a) => a.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "fanout did not start; log:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Gateway { child, addr, logs }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connects with the token in `Authorization: Bearer` and returns the client and its ack.
    pub async fn connect(&self, token: &str) -> (Client, Value) {
        let mut client = self
            .try_connect(Some(token), &[])
            .await
            .unwrap_or_else(|e| panic!("connect failed: {e}"));
        let ack = client.recv().await;
        assert_eq!(ack["type"], "connection_ack", "first frame: {ack}");
        (client, ack)
    }

    /// Connects as `user` with a token granting `channels`.
    pub async fn connect_as(&self, user: &str, channels: &[&str]) -> Client {
        self.connect(&token(user, channels, 3600)).await.0
    }

    /// Opens `/ws` with an optional bearer token and extra headers; Err carries the HTTP
    /// status and body when the upgrade was refused.
    pub async fn try_connect(
        &self,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Client, Refused> {
        self.try_connect_url(&self.ws_url(), bearer, headers).await
    }

    pub async fn try_connect_url(
        &self,
        url: &str,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<Client, Refused> {
        let mut req = url.into_client_request().expect("request");
        if let Some(t) = bearer {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        for (k, v) in headers {
            let name: tungstenite::http::HeaderName = k.parse().expect("header name");
            req.headers_mut()
                .insert(name, v.parse().expect("header value"));
        }
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await {
            Err(_) => panic!("connect timed out"),
            Ok(Ok((ws, _))) => Ok(Client { ws }),
            Ok(Err(tungstenite::Error::Http(resp))) => {
                let status = resp.status().as_u16();
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err(Refused { status, body })
            }
            Ok(Err(e)) => panic!("connect error: {e}"),
        }
    }

    /// POSTs JSON to an API path with the test API key; returns status and JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_with_key(path, Some(API_KEY), body.to_string())
            .await
    }

    pub async fn post_with_key(&self, path: &str, key: Option<&str>, body: String) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .post(self.http(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.expect("http request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Publishes through the HTTP API and checks it was accepted.
    pub async fn publish(&self, channel: &str, data: Value) {
        let (status, body) = self
            .post("/api/publish", &json!({"channel": channel, "data": data}))
            .await;
        assert_eq!(status, 200, "publish failed: {body}");
    }

    /// Polls `/readyz` until it answers ready (`true`) or not ready (`false`).
    pub async fn wait_ready(&self, ready: bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, body) = self.get("/readyz").await;
            if (status == 200) == ready {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "readyz stayed {status} {body}, wanted ready={ready}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = reqwest::get(self.http(path)).await.expect("http get");
        (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )
    }

    /// The value of a metric line (exact name with labels, e.g. `x_total{reason="a"}`).
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// Polls a metric until it reaches at least `min`.
    pub async fn wait_metric(&self, series: &str, min: f64) -> f64 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.metric(series).await;
            if v >= min {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("metric {series} stayed at {v}, wanted >= {min}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                panic!("fanout did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Extracts `key=value` from a text log line (value up to the next space).
fn field(line: &str, key: &str) -> Option<String> {
    let pat = format!("{key}=");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"').to_owned())
}

/// An upgrade refused with an HTTP status.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body)
    }
}

/// What a client saw when reading.
#[derive(Debug)]
pub enum Seen {
    Json(Value),
    Close(Option<u16>, String),
    /// The connection ended without a close frame.
    Ended,
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    /// The next frame of interest (JSON text, close, or end), skipping pings and pongs.
    pub async fn next(&mut self) -> Seen {
        self.next_within(WAIT)
            .await
            .expect("nothing received in time")
    }

    pub async fn next_within(&mut self, within: Duration) -> Option<Seen> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(Seen::Ended),
                Ok(Some(Err(_))) => return Some(Seen::Ended),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    return Some(Seen::Json(
                        serde_json::from_str(&t).expect("server sent JSON"),
                    ));
                }
                Message::Close(frame) => {
                    return Some(match frame {
                        Some(CloseFrame { code, reason }) => {
                            Seen::Close(Some(code.into()), reason.to_string())
                        }
                        None => Seen::Close(None, String::new()),
                    });
                }
                Message::Binary(_) => panic!("server sent a binary frame"),
                _ => continue,
            }
        }
    }

    /// The next JSON frame; panics on close.
    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Seen::Json(v) => v,
            other => panic!("expected a JSON frame, got {other:?}"),
        }
    }

    /// Sends a request and returns the reply (the next frame).
    pub async fn request(&mut self, v: Value) -> Value {
        self.send(v).await;
        self.recv().await
    }

    /// Subscribes and asserts success.
    pub async fn subscribe(&mut self, channel: &str) {
        let reply = self
            .request(json!({"type": "subscribe", "channel": channel}))
            .await;
        assert_eq!(reply["type"], "subscribed", "subscribe {channel}: {reply}");
    }

    /// Expects the server to close; returns the close code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.next().await {
                Seen::Json(v) if v["type"] == "message" => continue,
                Seen::Json(v) => panic!("expected close, got {v}"),
                Seen::Close(code, reason) => return (code.unwrap_or(1005), reason),
                Seen::Ended => panic!("connection ended without a close frame"),
            }
        }
    }

    /// Asserts nothing arrives for a while (used after unsubscribe and the like).
    pub async fn expect_silence(&mut self, within: Duration) {
        if let Some(seen) = self.next_within(within).await {
            panic!("expected nothing, got {seen:?}");
        }
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An HS256 token for `sub` granting `channels`, expiring in `ttl_s` seconds (negative:
/// already expired).
pub fn token(sub: &str, channels: &[&str], ttl_s: i64) -> String {
    token_with(json!({
        "sub": sub,
        "exp": unix_now() + ttl_s,
        "channels": channels,
    }))
}

/// An HS256 token with exactly these claims, signed with the test secret.
pub fn token_with(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign token")
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A `redis-server` of this test's own, on a free loopback port, without persistence.
/// Killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = free_port();
        let mut server = RedisServer { child: None, port };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--dir",
                &std::env::temp_dir().display().to_string(),
                "--logfile",
                "",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + WAIT;
        while self.try_cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Runs the real `redis-cli` against this server; returns its trimmed output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }

    /// `PUBSUB NUMSUB`: how many connections subscribe a Redis channel.
    pub fn numsub(&self, channel: &str) -> i64 {
        let out = self.cli(&["PUBSUB", "NUMSUB", channel]);
        out.lines()
            .nth(1)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(-1)
    }

    /// Kills the server (no persistence: everything in it is lost).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `check` until it returns true, or panics with `what` after [`WAIT`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy in front of Redis that can freeze the pub/sub connections passing through it:
/// the sockets stay open but nothing flows, which is how a subscription dies silently.
pub struct FreezingProxy {
    pub port: u16,
    conns: Arc<Mutex<Vec<Arc<ProxiedConn>>>>,
}

#[derive(Default)]
struct ProxiedConn {
    subscriber: std::sync::atomic::AtomicBool,
    frozen: std::sync::atomic::AtomicBool,
}

impl FreezingProxy {
    pub async fn start(target_port: u16) -> FreezingProxy {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<Arc<ProxiedConn>>>> = Arc::default();
        let registry = conns.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)).await else {
                    continue;
                };
                let conn = Arc::new(ProxiedConn::default());
                registry.lock().unwrap().push(conn.clone());
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = conn.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16384];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 || up.frozen.load(Ordering::SeqCst) {
                            break;
                        }
                        if buf[..n]
                            .windows(9)
                            .any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE"))
                        {
                            up.subscriber.store(true, Ordering::SeqCst);
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    // Frozen: keep the socket open and silent.
                    std::future::pending::<()>().await;
                });
                let down = conn.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16384];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 || down.frozen.load(Ordering::SeqCst) {
                            break;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    std::future::pending::<()>().await;
                });
            }
        });
        FreezingProxy { port, conns }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Freezes every connection that has subscribed to something; returns how many.
    pub fn freeze_subscribers(&self) -> usize {
        use std::sync::atomic::Ordering;
        let conns = self.conns.lock().unwrap();
        let mut n = 0;
        for c in conns.iter() {
            if c.subscriber.load(Ordering::SeqCst) && !c.frozen.swap(true, Ordering::SeqCst) {
                n += 1;
            }
        }
        n
    }
}

/// What a client following the recovery protocol keeps per channel: the last position it
/// processed and everything it processed, in order.
#[derive(Debug, Default, Clone)]
pub struct Tracker {
    pub epoch: String,
    pub offset: u64,
    pub seen: Vec<Value>,
    pub duplicates: usize,
}

impl Tracker {
    /// The `since` to send when (re)subscribing.
    pub fn since(&self) -> Value {
        json!({"offset": self.offset, "epoch": self.epoch})
    }

    /// Adopts the position of a `subscribed` reply (after a fresh subscribe or a failed recovery).
    pub fn start_at(&mut self, reply: &Value) {
        self.epoch = reply["epoch"].as_str().unwrap_or_default().to_owned();
        self.offset = reply["offset"].as_u64().unwrap_or(0);
    }

    /// Processes a `message` frame: counts duplicates instead of processing them twice.
    pub fn process(&mut self, msg: &Value) {
        let offset = msg["offset"].as_u64().expect("message with an offset");
        if msg["epoch"] == self.epoch.as_str() && offset <= self.offset {
            self.duplicates += 1;
            return;
        }
        assert_eq!(
            msg["epoch"],
            self.epoch.as_str(),
            "epoch changed mid-stream: {msg}"
        );
        assert_eq!(offset, self.offset + 1, "gap before {msg}");
        self.offset = offset;
        self.seen.push(msg["data"].clone());
    }
}

impl Client {
    /// Subscribes with `since` and returns the `subscribed` reply.
    pub async fn recover(&mut self, channel: &str, tracker: &Tracker) -> Value {
        let reply = self
            .request(json!({"type": "subscribe", "channel": channel, "since": tracker.since()}))
            .await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        reply
    }

    /// Reads messages of `channel` into the tracker until it has processed `count` in total.
    pub async fn read_until(&mut self, channel: &str, tracker: &mut Tracker, count: usize) {
        while tracker.seen.len() < count {
            let msg = self.recv().await;
            if msg["type"] == "message" && msg["channel"] == channel {
                tracker.process(&msg);
            }
        }
    }
}

/// A real HAProxy (Debian package) on a free loopback port in front of gateways, with
/// WebSocket tunnel timeouts and `/readyz` health checks. Killed on drop.
pub struct Haproxy {
    child: Child,
    pub port: u16,
    config: std::path::PathBuf,
}

impl Haproxy {
    pub fn start(backends: &[&Gateway]) -> Haproxy {
        let port = free_port();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, g)| format!("  server n{} {} check\n", i + 1, g.addr))
            .collect();
        let config =
            std::env::temp_dir().join(format!("fanout-haproxy-{}-{port}.cfg", std::process::id()));
        std::fs::write(
            &config,
            format!(
                "global\n  maxconn 2000\n\
                 defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  timeout tunnel 1h\n  option redispatch\n  retries 3\n\
                 frontend ws\n  bind 127.0.0.1:{port}\n  default_backend fanout\n\
                 backend fanout\n  balance roundrobin\n  option httpchk GET /readyz\n  http-check expect status 200\n  default-server inter 200ms fall 1 rise 2\n{servers}"
            ),
        )
        .unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn haproxy (apt-get install haproxy)");
        Haproxy {
            child,
            port,
            config,
        }
    }

    pub fn url(&self, token: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?token={token}", self.port)
    }

    /// Connects through the balancer with a token, retrying while it still routes to a dead
    /// node; returns the client and its `connection_ack`.
    pub async fn connect(&self, token: &str) -> (Client, Value) {
        connect_via_balancer(self.port, token).await
    }
}

/// [`Haproxy::connect`] for tasks that only know the balancer's port.
pub async fn connect_via_balancer(port: u16, token: &str) -> (Client, Value) {
    let url = format!("ws://127.0.0.1:{port}/ws?token={token}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(Ok((ws, _))) =
            tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url.as_str())).await
        {
            let mut c = Client { ws };
            if let Some(Seen::Json(ack)) = c.next_within(WAIT).await
                && ack["type"] == "connection_ack"
            {
                return (c, ack);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "could not connect through the balancer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl RedisServer {
    /// Publishes `0..total` to `channel` with `FCALL fanout_publish` from a background
    /// thread, pausing `pause` between messages.
    pub fn fcall_in_background(
        &self,
        channel: &'static str,
        total: usize,
        pause: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let url = self.url();
        tokio::task::spawn_blocking(move || {
            let client = redis::Client::open(url).unwrap();
            let mut conn = client.get_connection().unwrap();
            for n in 0..total {
                let _: u64 = redis::cmd("FCALL")
                    .arg("fanout_publish")
                    .arg(1)
                    .arg(channel)
                    .arg(n.to_string())
                    .query(&mut conn)
                    .unwrap();
                std::thread::sleep(pause);
            }
        })
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}
