//! The shipped deployment files are valid.

use std::process::Command;

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn docker_compose_config_is_valid() {
    let out = Command::new("docker-compose")
        .args(["-f", &repo("docker-compose.yml"), "config", "-q"])
        .env(
            "FANOUT_JWT_SECRET",
            "a-secret-for-validating-the-compose-file",
        )
        .output()
        .expect("run docker-compose (apt-get install docker-compose)");
    assert!(
        out.status.success(),
        "docker-compose config failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn docker_compose_refuses_to_start_without_a_jwt_secret() {
    let out = Command::new("docker-compose")
        .args(["-f", &repo("docker-compose.yml"), "config", "-q"])
        .env_remove("FANOUT_JWT_SECRET")
        .output()
        .expect("run docker-compose");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("FANOUT_JWT_SECRET"));
}

#[test]
fn the_compose_haproxy_config_is_valid() {
    let out = Command::new("haproxy")
        .args(["-c", "-f", &repo("deploy/haproxy.cfg")])
        .output()
        .expect("run haproxy");
    assert!(
        out.status.success(),
        "haproxy -c failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_scrapes_every_replica() {
    let text = std::fs::read_to_string(repo("deploy/prometheus.yml")).unwrap();
    for target in ["fanout1:8080", "fanout2:8080", "fanout3:8080"] {
        assert!(text.contains(target), "prometheus.yml lacks {target}");
    }
}
