//! The load generator works end to end: a tiny, bounded run completes with zero loss.
//! (Performance is measured with it by hand; see BENCHMARKS.md. Nothing here is timed.)
//!
//! `fanout-bench` is a workspace member of its own (`tools/fanout-bench`), so Cargo gives this
//! package no `CARGO_BIN_EXE_fanout-bench`: the binary is taken from the target directory this
//! test runs from, where `cargo test` at the root (both packages are default members) or with
//! `--workspace` has just built it. Its own tests (`tools/fanout-bench/tests`) check what it
//! refuses.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use support::*;

/// `fanout-bench` of the same build as this test: `<target>/<profile>/fanout-bench`, this
/// test's executable being `<target>/<profile>/deps/bench_smoke-<hash>`. Refuses a binary
/// missing, or older than the tool's sources (a `cargo test -p fanout` after an edit of the
/// tool would otherwise run the previous build).
fn bench_binary() -> PathBuf {
    let test = std::env::current_exe().expect("test executable");
    let profile = test
        .parent()
        .and_then(Path::parent)
        .expect("<target>/<profile>/deps/");
    let bin = profile.join(format!("fanout-bench{}", std::env::consts::EXE_SUFFIX));
    let how = "build it with `cargo test` at the root or `cargo test --workspace` (not `-p fanout`), \
               or `cargo build -p fanout-bench`";
    assert!(bin.exists(), "no {}: {how}", bin.display());
    let built = modified(&bin);
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/fanout-bench");
    let newest = newest_file(&tool.join("src"));
    assert!(
        newest <= built,
        "{} is older than the sources in {}: {how}",
        bin.display(),
        tool.display()
    );
    bin
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The latest modification time of the files under `dir`.
fn newest_file(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).expect("read the tool's sources") {
        let path = entry.expect("directory entry").path();
        let time = if path.is_dir() {
            newest_file(&path)
        } else {
            modified(&path)
        };
        newest = newest.max(time);
    }
    newest
}

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(bench_binary())
        .args(args)
        .args(["--jwt-secret", SECRET, "--json", "--quiet"])
        .output()
        .expect("run fanout-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fanout-bench failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON report")
}

#[tokio::test]
async fn fifty_connections_for_one_second_through_the_http_api_lose_nothing() {
    let gw = Gateway::start(&[]);
    let url = gw.ws_url();
    let pid = gw.pid().to_string();
    let report = tokio::task::spawn_blocking(move || {
        bench(&[
            "--url",
            &url,
            "--connections",
            "50",
            "--channels",
            "5",
            "--rate",
            "50",
            "--duration",
            "1",
            "--publish",
            "http",
            "--api-key",
            API_KEY,
            "--gateway-pid",
            &pid,
        ])
    })
    .await
    .unwrap();
    assert_eq!(report["connected"], 50);
    assert_eq!(report["published"], 50);
    assert_eq!(
        report["expected"], 500,
        "each message reaches its channel's 10 subscribers"
    );
    assert_eq!(report["delivered"], 500);
    assert!(report["gateways"][0]["rss_bytes"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_cluster_run_through_redis_publish_and_fcall_loses_nothing() {
    let redis = RedisServer::start();
    let n1 = Gateway::start_on_redis("n1", &redis, &[]).await;
    let n2 = Gateway::start_on_redis("n2", &redis, &[]).await;
    let urls = format!("{},{}", n1.ws_url(), n2.ws_url());
    let redis_url = redis.url();
    let report = tokio::task::spawn_blocking(move || {
        let plain = bench(&[
            "--url",
            &urls,
            "--connections",
            "50",
            "--rate",
            "50",
            "--duration",
            "1",
            "--publish",
            "redis",
            "--redis-url",
            &redis_url,
        ]);
        let history = bench(&[
            "--url",
            &urls,
            "--connections",
            "50",
            "--channels",
            "2",
            "--namespace",
            "dag",
            "--rate",
            "50",
            "--duration",
            "1",
            "--publish",
            "fcall",
            "--redis-url",
            &redis_url,
        ]);
        (plain, history)
    })
    .await
    .unwrap();
    for r in [report.0, report.1] {
        assert_eq!(r["connected"], 50, "{r}");
        assert!(r["expected"].as_u64().unwrap() > 0);
        assert_eq!(r["delivered"], r["expected"], "{r}");
    }
}
