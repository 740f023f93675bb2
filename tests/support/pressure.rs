//! CPU pressure for scenarios that must hold on a busy machine: processes spinning on a
//! core each, for as long as the test holds them.

use std::process::{Child, Command, Stdio};

/// A process spinning on one core for as long as it lives, at the given niceness (5: a
/// batch job beside the gateway; 0: as greedy as the gateway itself).
pub struct CpuHog(Child);

impl CpuHog {
    pub fn start(niceness: i32) -> CpuHog {
        CpuHog(
            Command::new("nice")
                .args([
                    "-n",
                    &niceness.to_string(),
                    "sh",
                    "-c",
                    "while :; do :; done",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn a busy loop"),
        )
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
