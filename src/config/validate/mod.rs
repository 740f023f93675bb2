//! From typed settings to a [`Config`]: what the values mean together, every problem at once.
//!
//! This file exists so that `fanout check-config` can explain everything wrong with a
//! configuration in one run: a wrong value is recorded (by `sources.rs`) and reading goes on;
//! here the values are checked together (a key or a secret, a public `user` namespace, a queue
//! smaller than a message, ...) and the `[namespaces.<name>]` sections are read. Nothing stops
//! at the first problem; [`resolve`] returns them all.
//!
//! The checks are split by subject: [`redis`](self::redis) (one server or a cluster, TLS
//! files), [`keys`] (the token keys), [`namespaces`] (the built-in and configured namespaces
//! and their `[namespaces.<name>]` sections); this file holds the whole and the rest.

mod keys;
mod namespaces;
mod redis;

use std::fmt::Display;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::settings::Settings;
use super::sources::{SettingsArgs, Sources};
use super::values::{algorithm_name, quote};
use super::{Config, JoinLeave, Limits, OriginRule};

/// Everything wrong with a configuration.
#[derive(Debug, Clone, Default)]
pub struct Problems {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

impl Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl SettingsArgs {
    /// Resolves every setting; `Err` lists every problem found.
    pub fn resolve(&self) -> Result<Config, Problems> {
        resolve(Sources::load(self))
    }
}

/// Reads every setting from `sources` and checks them together.
fn resolve(mut sources: Sources) -> Result<Config, Problems> {
    let settings = Settings::read(&mut sources);
    let mut v = Validator {
        problems: std::mem::take(&mut sources.problems),
        warnings: Vec::new(),
        file_name: sources.file_name.clone(),
    };
    let config = v.build(settings, std::mem::take(&mut sources.sections));
    match config {
        Some(c) if v.problems.is_empty() => Ok(Config {
            warnings: v.warnings,
            ..c
        }),
        _ => Err(Problems {
            problems: v.problems,
            warnings: v.warnings,
        }),
    }
}

/// `redis_tls_ca_file`, `redis_tls_cert_file`, `redis_tls_key_file` as read.
type TlsFiles = (
    Option<Option<PathBuf>>,
    Option<Option<PathBuf>>,
    Option<Option<PathBuf>>,
);

/// A `[namespaces.<name>]` section of the config file; absent keys keep the defaults.
#[derive(Debug, Default)]
struct NamespaceSection {
    public: Option<bool>,
    presence: Option<bool>,
    join_leave: Option<JoinLeave>,
    publish: Option<bool>,
    inbox: Option<String>,
    /// 0 turns history off.
    history_size: Option<usize>,
    history_ttl_s: Option<u64>,
}

/// The keys of a `[namespaces.<name>]` section, for messages.
pub(super) const SECTION_KEYS: &str =
    "public, presence, join_leave, publish, inbox, history_size, history_ttl_s";

struct Validator {
    problems: Vec<String>,
    warnings: Vec<String>,
    file_name: String,
}

impl Validator {
    /// `None` when a value the [`Config`] needs is missing (its problem is recorded).
    fn build(&mut self, s: Settings, sections: toml::Table) -> Option<Config> {
        // In full, so that a declared setting which nothing uses does not compile.
        let Settings {
            listen,
            internal_listen,
            api_on_public,
            node_id,
            jwt_secret,
            jwt_public_key,
            jwt_algorithm,
            jwt_audience,
            jwt_issuer,
            jwt_leeway_s,
            allowed_origins,
            trusted_proxies,
            api_key,
            namespaces,
            public_namespaces,
            redis_url,
            redis_tls_ca_file,
            redis_tls_cert_file,
            redis_tls_key_file,
            redis_cluster_url,
            redis_prefix,
            redis_pubsub_connections,
            redis_pool_size,
            redis_dispatch_buffer,
            redis_probe_interval_s,
            presence_lease_s,
            idempotency_window_s,
            log_format,
            log_level,
            heartbeat_s,
            pong_timeout_s,
            auth_timeout_s,
            drain_s,
            demo,
            demo_play,
            write_timeout_s,
            write_delay_ms,
            max_message_bytes,
            max_payload_bytes,
            max_recovery_messages,
            max_publishes_per_s,
            max_subscriptions,
            max_frames_per_s,
            max_connections,
            max_connections_per_user,
            max_new_connections_per_s,
            queue_max_messages,
            queue_max_bytes,
        } = s;
        let node_id = self.node_id(node_id);
        let internal_listen = self.internal_listen(listen, internal_listen, api_on_public);
        let jwt = self.jwt(
            jwt_secret,
            jwt_public_key,
            jwt_algorithm,
            (jwt_audience, jwt_issuer, jwt_leeway_s),
        );
        let allowed_origins = self.origins(allowed_origins.unwrap_or_default());
        let namespaces = self.namespaces(
            sections,
            namespaces.unwrap_or_default(),
            public_namespaces.unwrap_or_default(),
        );
        let tls_files = (redis_tls_ca_file, redis_tls_cert_file, redis_tls_key_file);
        let redis = match redis_cluster_url {
            Some(seeds) if !seeds.is_empty() => self.redis_cluster(
                (seeds, redis_url),
                tls_files,
                redis_prefix,
                (redis_pubsub_connections, redis_pool_size),
                redis_dispatch_buffer,
                redis_probe_interval_s,
            ),
            _ => self.redis(
                redis_url,
                tls_files,
                redis_prefix,
                (redis_pubsub_connections, redis_pool_size),
                redis_dispatch_buffer,
                redis_probe_interval_s,
            ),
        };
        if let Some(level) = &log_level
            && let Err(e) = tracing_subscriber::EnvFilter::try_new(level)
        {
            self.problems
                .push(format!("log_level: invalid filter {}: {e}", quote(level)));
        }
        let limits = Limits {
            max_message_bytes: max_message_bytes?,
            max_recovery_messages: max_recovery_messages?,
            max_publishes_per_s: max_publishes_per_s?,
            max_payload_bytes: max_payload_bytes?,
            max_subscriptions: max_subscriptions?,
            max_frames_per_s: max_frames_per_s?,
            max_connections: max_connections?,
            max_connections_per_user: max_connections_per_user?,
            max_new_connections_per_s: max_new_connections_per_s?,
            queue_max_messages: queue_max_messages?,
            queue_max_bytes: queue_max_bytes?,
        };
        // A message frame is the payload plus the envelope; it must fit an empty queue.
        if limits.queue_max_bytes < limits.max_payload_bytes + 512 {
            self.problems.push(format!(
                "queue_max_bytes ({}) must exceed max_payload_bytes ({}) by at least 512 bytes, or one message would close every subscriber as slow",
                limits.queue_max_bytes, limits.max_payload_bytes
            ));
        }
        if let Some(ms) = write_delay_ms
            && ms > 1000
        {
            self.problems.push(format!(
                "write_delay_ms ({ms}) may be at most 1000: a longer hold makes every message that late"
            ));
        }
        let secs = |s: Option<u64>| s.map(Duration::from_secs);
        let embedded_broker = matches!(redis, Some(None));
        Some(Config {
            listen: listen?,
            internal_listen: internal_listen?,
            api_on_public: api_on_public?,
            node_id: node_id?,
            jwt: jwt?,
            allowed_origins,
            trusted_proxies: trusted_proxies.unwrap_or_default(),
            api_keys: api_key?,
            namespaces,
            redis: redis?,
            log_format: log_format?,
            log_level: log_level?,
            heartbeat: secs(heartbeat_s)?,
            pong_timeout: secs(pong_timeout_s)?,
            auth_timeout: secs(auth_timeout_s)?,
            drain: secs(drain_s)?,
            write_timeout: secs(write_timeout_s)?,
            write_delay: write_delay_ms.map(Duration::from_millis)?,
            presence_lease: secs(presence_lease_s)?,
            idempotency_window: secs(idempotency_window_s)?,
            demo: demo?,
            demo_play: demo_play?.unwrap_or(embedded_broker),
            limits,
            warnings: Vec::new(),
        })
    }

    /// The internal listener's address (`Some(None)`: none); `None` on a problem.
    fn internal_listen(
        &mut self,
        listen: Option<std::net::SocketAddr>,
        internal: Option<Option<String>>,
        api_on_public: Option<bool>,
    ) -> Option<Option<std::net::SocketAddr>> {
        let internal = match internal?.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => match text.parse::<std::net::SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.problems.push(format!(
                        "internal_listen: expected an address and port such as 127.0.0.1:9090, got {}",
                        quote(text)
                    ));
                    return None;
                }
            },
        };
        if let (Some(addr), Some(public)) = (internal, listen)
            && addr.port() != 0
            && addr.port() == public.port()
            && (addr.ip() == public.ip()
                || addr.ip().is_unspecified()
                || public.ip().is_unspecified())
        {
            self.problems.push(format!(
                "internal_listen ({addr}) and listen ({public}) are the same port: the internal listener needs a port of its own"
            ));
            return None;
        }
        if internal.is_none() && api_on_public == Some(true) {
            self.warnings.push(
                "api_on_public has no effect without internal_listen: everything is served on listen".into(),
            );
        }
        Some(internal)
    }

    fn node_id(&mut self, id: Option<Option<String>>) -> Option<String> {
        let id = id?.unwrap_or_else(default_node_id);
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            self.problems.push(format!(
                "node_id {}: use 1-64 characters of letters, digits, `-`, `_` and `.`",
                quote(&id)
            ));
            return None;
        }
        Some(id)
    }

    fn origins(&mut self, origins: Vec<String>) -> Vec<OriginRule> {
        let mut rules = Vec::new();
        for o in origins {
            match OriginRule::parse(&o) {
                Ok(r) => rules.push(r),
                Err(e) => self.problems.push(format!("allowed_origins: {e}")),
            }
        }
        rules
    }
}

/// The name of an algorithm fanout accepts (the settings parser admits no other).
fn name(alg: Algorithm) -> &'static str {
    algorithm_name(alg).unwrap_or("an unsupported algorithm")
}

/// The hostname, made safe for a node id.
fn default_node_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let id: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if id.is_empty() { "fanout".into() } else { id }
}
