//! The load generator refuses what would leave loopback or never end, before connecting.
//! (It runs against real gateways in `tests/bench_smoke.rs` at the workspace root.)

use std::process::Command;

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
            .args(["--jwt-secret", "bench-secret-bench-secret-bench-secret"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
