//! Things between clients and nodes, or nodes and Redis: HAProxy in front of several
//! nodes, and a TCP proxy that can freeze Redis pub/sub connections.
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

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}
