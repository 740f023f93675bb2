//! Three nodes behind a real HAProxy on loopback: a node killed or drained costs clients a
//! reconnect, not their messages after it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

struct Haproxy {
    child: Child,
    port: u16,
    config: std::path::PathBuf,
}

impl Haproxy {
    fn start(backends: &[&Gateway]) -> Haproxy {
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

    fn url(&self, token: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?token={token}", self.port)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// Connects through the balancer, retrying while it still routes to a dead node; returns the
/// client and the node that served it.
async fn connect_through(lb: &Haproxy, via: &Gateway, user: &str) -> (Client, String) {
    let token = token(user, &["room:*"], 3600);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(mut c) = via.try_connect_url(&lb.url(&token), None, &[]).await
            && let Seen::Json(ack) = c.next().await
            && ack["type"] == "connection_ack"
        {
            let node = ack["node"].as_str().unwrap().to_owned();
            c.subscribe("room:lb").await;
            return (c, node);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "could not reconnect through the balancer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn clients_of_a_killed_node_reconnect_to_survivors_and_a_drained_node_says_1012() {
    let redis = RedisServer::start();
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        nodes.push(Gateway::start_on_redis(name, &redis, &[]).await);
    }
    let lb = Haproxy::start(&nodes.iter().collect::<Vec<_>>());
    // Wait until HAProxy sees every node up (rise 2 × 200 ms).
    tokio::time::sleep(Duration::from_millis(800)).await;

    let mut clients = Vec::new();
    for i in 0..6 {
        clients.push(connect_through(&lb, &nodes[0], &format!("u{i}")).await);
    }
    let served: std::collections::BTreeSet<&str> =
        clients.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        served.len(),
        3,
        "round robin spreads clients over the nodes: {served:?}"
    );

    redis.cli(&["PUBLISH", "fanout:room:lb", "\"before\""]);
    for (c, _) in &mut clients {
        assert_eq!(c.recv().await["data"], "before");
    }

    // SIGKILL n2: its clients lose the connection and come back through the balancer.
    nodes[1].signal("KILL");
    for (c, node) in &mut clients {
        if node == "n2" {
            assert!(matches!(c.next().await, Seen::Ended | Seen::Close(..)));
            let user = format!("re-{node}");
            let (fresh, served_by) = connect_through(&lb, &nodes[0], &user).await;
            assert_ne!(served_by, "n2");
            *c = fresh;
            *node = served_by;
        }
    }
    redis.cli(&["PUBLISH", "fanout:room:lb", "\"after kill\""]);
    for (c, _) in &mut clients {
        assert_eq!(c.recv().await["data"], "after kill");
    }

    // SIGTERM n3: its clients are told to reconnect (1012), and it exits cleanly.
    nodes[2].signal("TERM");
    for (c, node) in &mut clients {
        if node == "n3" {
            assert_eq!(c.expect_close().await.0, 1012);
        }
    }
    assert_eq!(nodes[2].wait_exit(Duration::from_secs(15)), Some(0));
}
