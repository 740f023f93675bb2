//! The examples of docs/publishing.md, "Controlling sessions", run as written against two
//! real nodes and a real Redis: what the docs show a backend typing works, and does what
//! they say.

use std::process::Command;

use serde_json::json;

use crate::support::*;

/// The ```sh blocks of the section `heading` of docs/publishing.md, by the heading of the
/// sub-section they are in.
fn examples(heading: &str) -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(format!("{}/docs/publishing.md", env!("CARGO_MANIFEST_DIR")))
        .unwrap();
    let start = doc.find(heading).expect("the section exists");
    let section = &doc[start..];
    let end = section[heading.len()..]
        .find("\n## ")
        .map_or(section.len(), |e| e + heading.len());
    let section = &section[..end];
    let mut blocks = Vec::new();
    let mut sub = String::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if let Some(h) = line.strip_prefix("### ") {
            sub = h.to_owned();
        } else if line == "```sh" {
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            blocks.push((sub.clone(), body.join("\n")));
        }
    }
    blocks
}

/// Runs a block with bash, `redis-cli` pointed at the test's Redis and the variables the
/// examples use; returns its output, failing on an error reply or a failed command.
fn run(block: &str, redis: &RedisServer, node: &Gateway) -> String {
    let script = format!(
        "set -eo pipefail\nredis-cli() {{ command redis-cli -h 127.0.0.1 -p {} \"$@\"; }}\n{block}\n",
        redis.port
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .env("FANOUT_URL", node.http(""))
        .env("FANOUT_API_KEY", API_KEY)
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && !stdout.contains("ERR") && !stdout.contains("(error)"),
        "the example failed:\n{block}\n---\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_session_control_examples_run_as_documented() {
    let blocks = examples("## Controlling sessions");
    assert_eq!(
        blocks.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
        ["redis-cli", "HTTP"]
    );
    for (name, block) in &blocks {
        // A deployment of its own for each block: the examples revoke user 42's tokens.
        let redis = RedisServer::start();
        let n1 = Gateway::start_on_redis("n1", &redis, &[]).await;
        let n2 = Gateway::start_on_redis("n2", &redis, &[]).await;
        // User 42, connected to the other node, subscribed to room:ops.
        let mut client = n2.connect_as("42", &["room:*"]).await;
        client.subscribe("room:ops").await;
        let output = run(block, &redis, &n1);
        // The first example ends the connection, with the reason it gives.
        assert_eq!(
            client.recv().await,
            json!({"type": "disconnect", "code": 4004, "reason": "logged out", "reconnect": true}),
            "{name}"
        );
        assert_eq!(
            client.expect_close().await,
            (4004, "logged out".into()),
            "{name}"
        );
        assert!(
            output.contains("n1") && output.contains("n2"),
            "{name}: {output}"
        );
    }
}
