//! A `redis-server` of the test's own, and publishing into it.
#![allow(unused_imports)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

/// A `redis-server` of this test's own, on a free loopback port, without persistence.
/// Killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    /// The port clients use: the plain port, or the TLS port of [`RedisServer::start_tls`].
    pub port: u16,
    /// Extra `redis-server` arguments (TLS, password), kept for restarts.
    server_args: Vec<String>,
    /// Extra `redis-cli` arguments (TLS, password).
    cli_args: Vec<String>,
    /// What [`RedisServer::url`] returns.
    url: String,
}

/// How [`RedisServer::start_tls`] sets up TLS.
pub struct TlsServer<'a> {
    /// Where the server's certificate, the CA and the client certificate for `redis-cli` are.
    pub pki: &'a TestPki,
    /// `--tls-auth-clients yes`: clients must present a certificate signed by the CA.
    pub require_client_cert: bool,
    /// `--requirepass`, put into the URL as `rediss://:password@…`.
    pub password: Option<&'a str>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        // A port found free may be taken (by another test's client, say) before the server
        // binds it: then the server exits at once, and another port is tried.
        for _ in 0..5 {
            let port = free_port();
            let mut server = RedisServer {
                child: None,
                port,
                server_args: Vec::new(),
                cli_args: Vec::new(),
                url: format!("redis://127.0.0.1:{port}/"),
            };
            if server.try_spawn() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// A server that accepts TLS only (`--port 0 --tls-port <free port>`), with the
    /// certificates of `tls.pki`. Its `redis-cli` talks TLS with the CA and client certificate.
    pub fn start_tls(tls: TlsServer<'_>) -> RedisServer {
        let port = free_port();
        let pki = tls.pki;
        let path = |p: PathBuf| p.display().to_string();
        let mut server_args = pki.server_args(port, tls.require_client_cert);
        let mut cli_args = vec![
            "--tls".to_owned(),
            "--cacert".to_owned(),
            path(pki.ca_cert()),
            "--cert".to_owned(),
            path(pki.client_cert()),
            "--key".to_owned(),
            path(pki.client_key()),
        ];
        let credentials = match tls.password {
            Some(password) => {
                server_args.extend(["--requirepass".to_owned(), password.to_owned()]);
                cli_args.extend([
                    "-a".to_owned(),
                    password.to_owned(),
                    "--no-auth-warning".to_owned(),
                ]);
                format!(":{password}@")
            }
            None => String::new(),
        };
        let mut server = RedisServer {
            child: None,
            port,
            server_args,
            cli_args,
            url: format!("rediss://{credentials}127.0.0.1:{port}/"),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        assert!(self.try_spawn(), "redis-server did not start");
    }

    /// Starts the server; false if it exited before answering (its port was taken).
    fn try_spawn(&mut self) -> bool {
        // With TLS, the plain port is off (0) and clients use the TLS port.
        let plain_port = if self.url.starts_with("rediss://") {
            "0".to_owned()
        } else {
            self.port.to_string()
        };
        let child = Command::new("redis-server")
            .args(&self.server_args)
            .args([
                "--port",
                &plain_port,
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
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || std::time::Instant::now() >= deadline {
                self.stop();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// `redis://127.0.0.1:<port>/`, or `rediss://[:password@]127.0.0.1:<port>/` with TLS.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Runs the real `redis-cli` against this server; returns its trimmed output.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.cli_args)
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

/// A certificate authority, a server certificate for 127.0.0.1 and a client certificate, made
/// with the `openssl` command line in a directory of their own (removed on drop). Each
/// `TestPki` is a different CA (its own key and name), so one's certificates are unknown to
/// another.
pub struct TestPki {
    dir: PathBuf,
}

impl TestPki {
    /// The `redis-server` flags that serve TLS on `tls_port` with this PKI's server
    /// certificate, trusting its CA for client certificates (required or not).
    pub fn server_args(&self, tls_port: u16, require_client_cert: bool) -> Vec<String> {
        let path = |p: PathBuf| p.display().to_string();
        vec![
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--tls-cert-file".to_owned(),
            path(self.server_cert()),
            "--tls-key-file".to_owned(),
            path(self.server_key()),
            "--tls-ca-cert-file".to_owned(),
            path(self.ca_cert()),
            "--tls-auth-clients".to_owned(),
            if require_client_cert { "yes" } else { "no" }.to_owned(),
        ]
    }

    /// The gateway flags that trust this CA and present its client certificate.
    pub fn gateway_args(&self) -> Vec<String> {
        let path = |p: PathBuf| p.display().to_string();
        vec![
            "--redis-tls-ca-file".to_owned(),
            path(self.ca_cert()),
            "--redis-tls-cert-file".to_owned(),
            path(self.client_cert()),
            "--redis-tls-key-file".to_owned(),
            path(self.client_key()),
        ]
    }

    /// Makes the CA and both certificates (EC P-256, valid for two days). Panics, naming the
    /// command, if `openssl` is missing or fails: a TLS test must never pass without TLS.
    pub fn create() -> TestPki {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fanout-pki-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the PKI directory");
        let pki = TestPki { dir };
        pki.openssl(&[
            "req",
            "-x509",
            "-new",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            &format!("/CN=fanout test CA {}-{n}", std::process::id()),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        pki.issue(
            "server",
            "/CN=127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n",
        );
        pki.issue(
            "client",
            "/CN=fanout-gateway",
            "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n",
        );
        pki
    }

    /// A key and a certificate `<name>.key`, `<name>.crt` signed by the CA.
    fn issue(&self, name: &str, subject: &str, extensions: &str) {
        let (key, csr, crt, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        std::fs::write(self.dir.join(&ext), extensions).expect("write extensions");
        self.openssl(&[
            "req",
            "-new",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl (apt-get install openssl): {e}"));
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.crt")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
