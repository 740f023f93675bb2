//! The load generator works end to end: a tiny, bounded run completes with zero loss.
//! (Performance is measured with it by hand; see BENCHMARKS.md. Nothing here is timed.)

#[path = "support/mod.rs"]
mod support;

use std::process::Command;

use support::*;

fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_fanout-bench"))
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

#[test]
fn the_load_generator_refuses_targets_off_loopback_and_unbounded_runs() {
    for args in [
        vec!["--url", "ws://10.1.2.3:8080/ws"],
        vec!["--connections", "0"],
        vec!["--duration", "0"],
        vec!["--redis-url", "redis://192.168.1.10:6379/"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_fanout-bench"))
            .args(&args)
            .args(["--jwt-secret", SECRET])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
