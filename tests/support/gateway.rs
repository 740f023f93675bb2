//! The real `fanout` binary on an ephemeral loopback port, and HTTP helpers around it.
#![allow(unused_imports)]

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

use super::*;

pub const SECRET: &str = "test-secret-0123456789abcdef0123456789";
pub const API_KEY: &str = "test-api-key";
/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running `fanout serve` process. Killed on drop.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    /// The internal listener's address, when started with `--internal-listen`.
    pub internal: Option<SocketAddr>,
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
                        let _ = tx.send((addr, field(&line, "internal")));
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let (addr, internal) = match rx.recv_timeout(WAIT) {
            Ok((a, internal)) => (
                a.parse().expect("listening address"),
                internal.map(|i| i.parse().expect("internal listening address")),
            ),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "fanout did not start; log:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Gateway {
            child,
            addr,
            internal,
            logs,
        }
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

    /// A URL on the internal listener (`--internal-listen`).
    pub fn internal_http(&self, path: &str) -> String {
        let addr = self.internal.expect("started with --internal-listen");
        format!("http://{addr}{path}")
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

    /// GETs an API path with the test API key; returns status and JSON body.
    pub async fn api_get(&self, path: &str) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .get(self.http(path))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("http request");
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

    /// Polls several metrics until their sum reaches at least `min` within `within` (for an
    /// outcome that may be counted under one of several reasons).
    pub async fn wait_metrics(&self, series: &[&str], min: f64, within: Duration) -> f64 {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut sum = 0.0;
            for s in series {
                sum += self.metric(s).await;
            }
            if sum >= min {
                return sum;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("metrics {series:?} stayed at {sum} in all, wanted >= {min}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
