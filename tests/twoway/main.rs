//! Two-way scenarios: presence and status, clients publishing, and the durable inbox that
//! carries clients' decisions to a backend.

#[path = "../support/mod.rs"]
mod support;

mod inbox;
mod presence;
mod publish;

/// A config file with presence and client publishing switched on for some namespaces.
pub fn twoway_config() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("fanout-twoway-{}-{n}.toml", std::process::id()));
    std::fs::write(
        &path,
        r#"
[namespaces.room]
presence = true
join_leave = "connection"
publish = true

[namespaces.team]
presence = true
join_leave = "user"

[namespaces.dag]
presence = true
"#,
    )
    .unwrap();
    path.display().to_string()
}
