//! A real Redis Cluster of the test's own: 3 masters and 3 replicas, six `redis-server`
//! processes on free loopback ports, each in its own temporary directory (for its
//! `nodes.conf`), without persistence. Every process is killed and every directory removed on
//! drop, also when the test fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// How long forming the cluster or a failover may take.
const FORM_WAIT: Duration = Duration::from_secs(30);

struct ClusterNode {
    port: u16,
    /// With TLS: the node's TLS port, for clients (`port` stays plain, for `redis-cli`).
    tls_port: Option<u16>,
    dir: PathBuf,
    child: Option<Child>,
}

pub struct LocalCluster {
    nodes: Vec<ClusterNode>,
}

impl ClusterNode {
    /// Starts one cluster-enabled `redis-server` on free ports; `None` when it did not come up
    /// as itself (a port taken meanwhile by a concurrent test: the caller tries new ports).
    fn spawn(tls: Option<&TestPki>) -> Option<ClusterNode> {
        let port = free_port();
        let tls_port = tls.map(|_| free_port());
        // The cluster bus listens on port + 10000 unless told otherwise: that port may be
        // taken, or past 65535.
        let bus_port = free_port();
        let dir =
            std::env::temp_dir().join(format!("fanout-cluster-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = |p: PathBuf| p.display().to_string();
        // TLS on a port of its own, and on the cluster bus and replication links.
        let tls_args: Vec<String> = match (tls, tls_port) {
            (Some(pki), Some(tls_port)) => [
                pki.server_args(tls_port, false),
                vec![
                    // The bus and replication links are TLS clients too, with a client
                    // certificate.
                    "--tls-client-cert-file".into(),
                    path(pki.client_cert()),
                    "--tls-client-key-file".into(),
                    path(pki.client_key()),
                    "--tls-cluster".into(),
                    "yes".into(),
                    "--tls-replication".into(),
                    "yes".into(),
                ],
            ]
            .concat(),
            _ => Vec::new(),
        };
        let child = Command::new("redis-server")
            .args(&tls_args)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                &bus_port.to_string(),
                // Failover within about two seconds of a master's death.
                "--cluster-node-timeout",
                "1000",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--logfile",
                "",
            ])
            .current_dir(&dir)
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (apt-get install redis-server)");
        let mut node = ClusterNode {
            port,
            tls_port,
            dir,
            child: Some(child),
        };
        let own_pid = format!("process_id:{}", node.child.as_ref().map_or(0, Child::id));
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let exited = node
                .child
                .as_mut()
                .is_none_or(|c| !matches!(c.try_wait(), Ok(None)));
            if exited {
                break;
            }
            if cli_at(port, &["INFO", "server"]).is_some_and(|i| i.contains(&own_pid)) {
                return Some(node);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        node.stop();
        None
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl LocalCluster {
    /// Starts six nodes, joins them into a cluster with one replica per master and waits
    /// until every node reports `cluster_state:ok` and every replica is in sync.
    pub fn start() -> LocalCluster {
        LocalCluster::start_with(None)
    }

    /// [`LocalCluster::start`] with TLS for clients, the cluster bus and replication, from
    /// certificates of `pki`; `redis-cli` keeps using the plain ports.
    pub fn start_tls(pki: &TestPki) -> LocalCluster {
        LocalCluster::start_with(Some(pki))
    }

    fn start_with(tls: Option<&TestPki>) -> LocalCluster {
        let mut cluster = LocalCluster { nodes: Vec::new() };
        for _ in 0..6 {
            let node = (0..5)
                .find_map(|_| ClusterNode::spawn(tls))
                .expect("redis-server did not start (apt-get install redis-server)");
            cluster.nodes.push(node);
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        // `redis-cli --cluster create` waits for the nodes to agree without a deadline of
        // its own.
        let out = Command::new("timeout")
            .args(["60", "redis-cli"])
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_healthy(6);
        cluster
    }

    /// Waits until every running node says `cluster_state:ok`, `live` nodes agree on three
    /// masters, and every replica's link to its master is up.
    pub fn wait_healthy(&self, live: usize) {
        let deadline = Instant::now() + FORM_WAIT;
        loop {
            let ports = self.running_ports();
            let ok = ports.len() == live
                && ports.iter().all(|p| {
                    cli_at(*p, &["CLUSTER", "INFO"]).is_some_and(|i| i.contains("cluster_state:ok"))
                        && cli_at(*p, &["INFO", "replication"]).is_some_and(|i| {
                            i.contains("role:master") || i.contains("master_link_status:up")
                        })
                })
                && self.masters().len() == 3;
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn running_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// `--redis-cluster-url` flags naming every node as a seed.
    pub fn seed_flags(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|n| {
                let url = match n.tls_port {
                    Some(tls_port) => format!("rediss://127.0.0.1:{tls_port}"),
                    None => format!("redis://127.0.0.1:{}", n.port),
                };
                ["--redis-cluster-url".to_owned(), url]
            })
            .collect()
    }

    /// `host:port,host:port,...` of every node (for the PHP example).
    pub fn seed_list(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The live masters' ports, as a running node sees the cluster.
    pub fn masters(&self) -> Vec<u16> {
        let Some(nodes) = self
            .running_ports()
            .into_iter()
            .find_map(|p| cli_at(p, &["CLUSTER", "NODES"]))
        else {
            return Vec::new();
        };
        let mut masters: Vec<u16> = nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let flags = fields.get(2)?;
                let alive = !flags.contains("fail") && fields.len() > 8;
                (flags.contains("master") && alive)
                    .then(|| fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok())
                    .flatten()
            })
            .collect();
        masters.sort_unstable();
        masters
    }

    /// The master that owns the slot of `key` (a key or a sharded channel name): a keyed
    /// command on a master that does not own it answers `MOVED <slot> <host>:<port>`.
    pub fn master_of(&self, key: &str) -> u16 {
        let asked = self.masters()[0];
        let reply = cli_at(asked, &["EXISTS", key]).expect("EXISTS");
        match reply.strip_prefix("MOVED ") {
            None => asked,
            Some(rest) => rest
                .rsplit(':')
                .next()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("unexpected reply {reply}")),
        }
    }

    /// `PUBSUB SHARDNUMSUB name` on one node.
    pub fn shardnumsub(&self, port: u16, name: &str) -> i64 {
        cli_at(port, &["PUBSUB", "SHARDNUMSUB", name])
            .and_then(|o| o.lines().nth(1).and_then(|n| n.trim().parse().ok()))
            .unwrap_or(-1)
    }

    /// `PUBSUB SHARDCHANNELS pattern` on one node.
    pub fn shardchannels(&self, port: u16, pattern: &str) -> Vec<String> {
        cli_at(port, &["PUBSUB", "SHARDCHANNELS", pattern])
            .map(|o| {
                o.lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `redis-cli -c` (cluster mode, following redirections) against a live node.
    pub fn cli(&self, args: &[&str]) -> String {
        let port = self.running_ports()[0];
        let out = Command::new("redis-cli")
            .args(["-c", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(out.status.success(), "redis-cli -c {args:?} failed");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Moves the slot of `key` to another master, the way `redis-cli --cluster reshard`
    /// does (IMPORTING/MIGRATING, MIGRATE its keys, SETSLOT NODE everywhere); returns the new
    /// owner.
    pub fn migrate_slot_of(&self, key: &str) -> u16 {
        let slot = self.cli(&["CLUSTER", "KEYSLOT", key]);
        let source = self.master_of(key);
        let target = *self
            .masters()
            .iter()
            .find(|m| **m != source)
            .expect("another master");
        let id = |port: u16| cli_at(port, &["CLUSTER", "MYID"]).expect("node id");
        let (source_id, target_id) = (id(source), id(target));
        let ok = |port: u16, args: &[&str]| {
            let reply = cli_at(port, args).unwrap_or_default();
            assert!(!reply.contains("ERR"), "{args:?} on {port}: {reply}");
        };
        ok(
            target,
            &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source_id],
        );
        ok(
            source,
            &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target_id],
        );
        for _ in 0..1000 {
            let keys =
                cli_at(source, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]).unwrap_or_default();
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = target.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            ok(source, &args);
        }
        for port in self.masters() {
            ok(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &target_id]);
        }
        target
    }

    /// SIGKILLs the node on `port` (a master: its replica takes over).
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
    }
}

/// `redis-cli` against one node (no redirections); `None` if it could not run or connect.
pub fn cli_at(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
}

/// Starts a gateway on the cluster (probing every second) with `extra` flags, and waits
/// until it is ready.
pub async fn gateway_on_with(cluster: &LocalCluster, node_id: &str, extra: &[&str]) -> Gateway {
    let seeds = cluster.seed_flags();
    let mut args: Vec<&str> = seeds.iter().map(String::as_str).collect();
    args.extend(["--redis-probe-interval-s", "1"]);
    args.extend_from_slice(extra);
    let gw = Gateway::start_named(node_id, &args);
    gw.wait_ready(true).await;
    gw
}

/// [`gateway_on_with`] without extra flags.
pub async fn gateway_on(cluster: &LocalCluster, node_id: &str) -> Gateway {
    gateway_on_with(cluster, node_id, &[]).await
}
