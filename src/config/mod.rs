//! Configuration: the validated, typed [`Config`] that the rest of fanout runs on.
//!
//! This module exists to turn flags, `FANOUT_*` environment variables and the optional TOML
//! file into one [`Config`], or into every problem at once (`fanout check-config`). Its files:
//!
//! - `settings.rs`: every setting declared once (flag, env var, TOML key, default, doc, type);
//! - `values.rs`: what each type accepts, from text and from TOML, and how a wrong one reads;
//! - `sources.rs`: the command line, the environment and the file, by precedence
//!   (flag > environment > file > default);
//! - `validate.rs`: the settings checked together, and the `[namespaces.<name>]` sections;
//! - `redis_tls.rs`: the CA and client certificate of `rediss://`, read and checked;
//! - `reference.rs`: the README's table of settings;
//! - `schema.rs`: the JSON Schema of the TOML file (`fanout config-schema`, for the chart);
//! - this file: [`Config`] and its sections, as the server, the hub and the brokers see them.

mod redis_tls;
mod reference;
mod schema;
mod settings;
mod sources;
mod validate;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

pub use redis_tls::{PemFile, RedisTls};
pub use reference::reference_table;
pub use schema::settings_schema;
pub use settings::{SETTINGS, Setting, Settings};
pub use sources::{Origin, SettingsArgs};
pub use validate::Problems;

/// How tokens are verified (and, for `fanout token`, signed).
#[derive(Clone)]
pub struct JwtConfig {
    pub algorithm: Algorithm,
    pub decoding_key: DecodingKey,
    /// Present with an HS256 secret; asymmetric keys sign only with a private key.
    pub encoding_key: Option<EncodingKey>,
    pub audience: Vec<String>,
    pub issuer: Vec<String>,
    pub leeway_s: u64,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway_s", &self.leeway_s)
            .finish_non_exhaustive()
    }
}

/// A browser origin allowed to connect: exact, or `scheme://*.domain` for any subdomain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    Any,
    Exact(String),
    Subdomains { scheme: String, suffix: String },
}

impl OriginRule {
    fn parse(s: &str) -> Result<OriginRule, String> {
        let s = s.trim().trim_end_matches('/');
        if s == "*" {
            return Ok(OriginRule::Any);
        }
        let Some((scheme, host)) = s.split_once("://") else {
            return Err(format!(
                "origin {} must look like https://app.example.com",
                values::quote(s)
            ));
        };
        if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains('/') {
            return Err(format!(
                "origin {} must be scheme://host[:port] with scheme http or https and no path",
                values::quote(s)
            ));
        }
        match host.strip_prefix("*.") {
            Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => {
                Ok(OriginRule::Subdomains {
                    scheme: scheme.to_ascii_lowercase(),
                    suffix: format!(".{}", suffix.to_ascii_lowercase()),
                })
            }
            _ if host.contains('*') => Err(format!(
                "origin {}: a wildcard is only allowed as the first label (https://*.example.com)",
                values::quote(s)
            )),
            _ => Ok(OriginRule::Exact(s.to_ascii_lowercase())),
        }
    }

    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        match self {
            OriginRule::Any => true,
            OriginRule::Exact(o) => *o == origin,
            OriginRule::Subdomains { scheme, suffix } => origin
                .strip_prefix(scheme.as_str())
                .and_then(|rest| rest.strip_prefix("://"))
                .is_some_and(|host| host.ends_with(suffix.as_str()) && host.len() > suffix.len()),
        }
    }
}

/// The rules of one channel namespace (`broadcast` has an entry of its own, for history).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceConfig {
    /// Any authenticated client may subscribe, without a `channels` claim.
    pub public: bool,
    /// Channels of this namespace keep their recent messages for recovery.
    pub history: Option<HistoryConfig>,
    /// Who is subscribed is kept, cluster-wide, and can be queried.
    pub presence: bool,
    /// Whether subscribers are told of joins and leaves.
    pub join_leave: JoinLeave,
    /// Any client allowed to subscribe may also publish (without a `publish` claim).
    pub publish: bool,
    /// Redis stream that `send` frames of this namespace go to (`None`: `<prefix>inbox`).
    pub inbox: Option<String>,
}

/// Join and leave events of a namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinLeave {
    /// No events.
    #[default]
    Off,
    /// One event per connection.
    Connection,
    /// One event per user: `join` for a user's first connection, `leave` for the last.
    User,
}

/// How much of a channel's past is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Messages kept per channel (exactly; older ones are trimmed).
    pub size: usize,
    /// How long a channel's history lives after its last publish.
    pub ttl: Duration,
}

/// The namespaces that always exist, with their default rules: `dag:` keeps 1,000 messages
/// for an hour, `user:` 100 for ten minutes, `room:` and `broadcast` none.
pub fn builtin_namespaces() -> BTreeMap<String, NamespaceConfig> {
    let history = |size, ttl_s| {
        Some(HistoryConfig {
            size,
            ttl: Duration::from_secs(ttl_s),
        })
    };
    BTreeMap::from([
        (
            "user".to_owned(),
            NamespaceConfig {
                history: history(100, 600),
                ..NamespaceConfig::default()
            },
        ),
        ("room".to_owned(), NamespaceConfig::default()),
        (
            "dag".to_owned(),
            NamespaceConfig {
                history: history(1000, 3600),
                ..NamespaceConfig::default()
            },
        ),
        ("broadcast".to_owned(), NamespaceConfig::default()),
    ])
}

/// Largest history a namespace may keep per channel.
pub const MAX_HISTORY_SIZE: usize = 100_000;

/// The Redis broker, when configured.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// May contain a password: never log it (see [`RedisConfig::display_addr`]).
    pub url: String,
    /// Present exactly for a `rediss://` URL.
    pub tls: Option<RedisTls>,
    pub prefix: String,
    pub pubsub_connections: usize,
    pub pool_size: usize,
    pub dispatch_buffer: usize,
    pub probe_interval: Duration,
    /// Seed nodes of a Redis Cluster (may contain a password: never log them); empty for
    /// one Redis. When set, `url` is the first of them.
    pub cluster_seeds: Vec<String>,
}

impl RedisConfig {
    /// A client for this Redis, with the CA and client certificate of a `rediss://` URL. Every
    /// connection a node opens (commands, pub/sub, relay) comes from this client.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.tls {
            None => redis::Client::open(self.url.as_str()),
            Some(tls) => redis::Client::build_with_tls(self.url.as_str(), tls.certificates()),
        }
    }

    /// How the connection is secured, for logs: `plain TCP` or what TLS checks.
    pub fn describe_transport(&self) -> String {
        match &self.tls {
            None => "plain TCP (no TLS)".to_owned(),
            Some(tls) => tls.describe(),
        }
    }

    /// `host:port` (or socket path) without credentials, for logs.
    pub fn display_addr(&self) -> String {
        match redis::Client::open(self.url.as_str()) {
            Ok(c) => c.get_connection_info().addr().to_string(),
            Err(_) => "<invalid redis url>".into(),
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("addr", &self.display_addr())
            .field("tls", &self.tls)
            .field("prefix", &self.prefix)
            .field("pubsub_connections", &self.pubsub_connections)
            .field("pool_size", &self.pool_size)
            .field("dispatch_buffer", &self.dispatch_buffer)
            .field("probe_interval", &self.probe_interval)
            .field("cluster_seeds", &self.cluster_seeds.len())
            .finish()
    }
}

/// Inbound, outbound and connection limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_recovery_messages: usize,
    pub max_publishes_per_s: u32,
    pub max_payload_bytes: usize,
    pub max_subscriptions: usize,
    pub max_frames_per_s: u32,
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    pub max_new_connections_per_s: u32,
    pub queue_max_messages: usize,
    pub queue_max_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected `text` or `json`".into()),
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Clients' listener; also the API's and the operations endpoints' without
    /// `internal_listen`.
    pub listen: SocketAddr,
    /// The operations endpoints' and the API's listener, when set (`internal_listen`).
    pub internal_listen: Option<SocketAddr>,
    /// With `internal_listen`: the API is served on `listen` too.
    pub api_on_public: bool,
    pub node_id: String,
    pub jwt: JwtConfig,
    pub allowed_origins: Vec<OriginRule>,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Accepted API keys; never logged.
    pub api_keys: Vec<String>,
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// `None`: the in-process broker.
    pub redis: Option<RedisConfig>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub heartbeat: Duration,
    pub pong_timeout: Duration,
    pub auth_timeout: Duration,
    pub drain: Duration,
    pub write_timeout: Duration,
    /// How long a connection's writer waits for more before writing (`write_delay_ms`).
    pub write_delay: Duration,
    pub presence_lease: Duration,
    /// How long an idempotency key remembers its publish.
    pub idempotency_window: Duration,
    /// Serve the demo dashboard and its token endpoint.
    pub demo: bool,
    /// With `demo`: play a sample run on `dag:demo` while nothing else publishes there.
    pub demo_play: bool,
    pub limits: Limits,
    /// Things that work but deserve attention (printed at start and by `check-config`).
    pub warnings: Vec<String>,
}

impl Config {
    /// The namespace rules for a channel namespace, if the namespace exists.
    pub fn namespace(&self, ns: &str) -> Option<&NamespaceConfig> {
        self.namespaces.get(ns)
    }

    /// The history kept for a channel, if any.
    pub fn history(&self, channel: &crate::channel::Channel) -> Option<HistoryConfig> {
        self.namespace(channel.namespace()).and_then(|n| n.history)
    }

    /// A short human summary with secrets redacted, for `check-config`.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("  {k:<26} {v}\n"));
        line("listen", self.listen.to_string());
        line(
            "internal_listen",
            match self.internal_listen {
                None => "off (API and operations endpoints on listen)".to_owned(),
                Some(addr) if self.api_on_public => {
                    format!("{addr} (operations endpoints; API here and on listen)")
                }
                Some(addr) => format!("{addr} (API and operations endpoints)"),
            },
        );
        line("node_id", self.node_id.clone());
        let list = |items: &[String], empty: &str| {
            if items.is_empty() {
                empty.to_owned()
            } else {
                items.join(", ")
            }
        };
        line("jwt_algorithm", format!("{:?}", self.jwt.algorithm));
        line(
            "jwt_audience",
            list(&self.jwt.audience, "any (not checked)"),
        );
        line("jwt_issuer", list(&self.jwt.issuer, "any (not checked)"));
        let origins: Vec<String> = self
            .allowed_origins
            .iter()
            .map(|o| match o {
                OriginRule::Any => "*".to_owned(),
                OriginRule::Exact(origin) => origin.clone(),
                OriginRule::Subdomains { scheme, suffix } => format!("{scheme}://*{suffix}"),
            })
            .collect();
        line("allowed_origins", list(&origins, "any"));
        line("api_keys", format!("{} configured", self.api_keys.len()));
        line(
            "broker",
            match &self.redis {
                Some(r) if !r.cluster_seeds.is_empty() => format!(
                    "redis-cluster, {} seed nodes, first {} (prefix {:?}); {}",
                    r.cluster_seeds.len(),
                    r.display_addr(),
                    r.prefix,
                    r.describe_transport()
                ),
                Some(r) => format!(
                    "redis at {} (prefix {:?}); {}",
                    r.display_addr(),
                    r.prefix,
                    r.describe_transport()
                ),
                None => "memory (single node)".into(),
            },
        );
        line(
            "namespaces",
            self.namespaces
                .iter()
                .map(|(k, v)| {
                    let mut s = k.clone();
                    if v.public {
                        s.push_str(" (public)");
                    }
                    if let Some(h) = v.history {
                        s.push_str(&format!(" (history {} for {} s)", h.size, h.ttl.as_secs()));
                    }
                    if v.presence {
                        s.push_str(&format!(
                            " (presence, join/leave events {})",
                            format!("{:?}", v.join_leave).to_lowercase()
                        ));
                    }
                    if v.publish {
                        s.push_str(" (client publish)");
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join(", "),
        );
        line("heartbeat_s", self.heartbeat.as_secs().to_string());
        let l = &self.limits;
        line(
            "limits",
            format!(
                "{} connections ({} per user, {} new/s); {} subscriptions per connection; \
                 messages up to {} B, payloads up to {} B; {} frames/s and {} publishes/s per \
                 connection; outbound queue {} frames / {} B; recovery up to {} messages",
                l.max_connections,
                l.max_connections_per_user,
                l.max_new_connections_per_s,
                l.max_subscriptions,
                l.max_message_bytes,
                l.max_payload_bytes,
                l.max_frames_per_s,
                l.max_publishes_per_s,
                l.queue_max_messages,
                l.queue_max_bytes,
                l.max_recovery_messages
            ),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(pairs: &[(&str, &str)]) -> Result<Config, Problems> {
        SettingsArgs::from_pairs(pairs.iter().copied()).resolve()
    }

    #[test]
    fn defaults_apply_when_only_a_secret_is_given() {
        let c = resolve(&[("jwt_secret", "0123456789abcdef0123456789abcdef")]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.limits.max_message_bytes, 65536);
        assert_eq!(c.heartbeat, Duration::from_secs(25));
        assert!(c.warnings.is_empty());
        assert_eq!(
            c.namespaces.keys().collect::<Vec<_>>(),
            ["broadcast", "dag", "room", "user"]
        );
        let dag = c.namespaces["dag"].history.unwrap();
        assert_eq!((dag.size, dag.ttl.as_secs()), (1000, 3600));
        let user = c.namespaces["user"].history.unwrap();
        assert_eq!((user.size, user.ttl.as_secs()), (100, 600));
        assert!(c.namespaces["room"].history.is_none());
        assert!(c.namespaces["broadcast"].history.is_none());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = resolve(&[
            ("listen", "nowhere"),
            ("heartbeat_s", "0"),
            ("max_subscriptions", "many"),
            ("public_namespaces", "user,chat"),
            ("allowed_origins", "example.com"),
        ])
        .unwrap_err();
        let all = err.problems.join("\n");
        for needle in [
            "--listen",
            "--heartbeat-s: must be at least 1",
            "--max-subscriptions",
            "no token verification key",
            "\"chat\" is not a namespace",
            "`user` namespace cannot be public",
            "origin \"example.com\"",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn redis_cluster_url_selects_a_cluster_and_excludes_redis_url() {
        const SECRET: (&str, &str) = ("jwt_secret", "0123456789abcdef0123456789abcdef");
        let c = resolve(&[
            SECRET,
            (
                "redis_cluster_url",
                "redis://10.0.0.1:7000,redis://10.0.0.2:7000",
            ),
            ("redis_prefix", "app:"),
        ])
        .unwrap();
        let redis = c.redis.expect("redis configured");
        assert_eq!(
            redis.cluster_seeds,
            ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]
        );
        assert_eq!(
            (redis.url.as_str(), redis.prefix.as_str()),
            ("redis://10.0.0.1:7000", "app:")
        );
        let standalone = resolve(&[SECRET, ("redis_url", "redis://10.0.0.1:6379")]).unwrap();
        assert!(standalone.redis.expect("redis").cluster_seeds.is_empty());

        let both = resolve(&[
            SECRET,
            ("redis_url", "redis://10.0.0.1:6379"),
            ("redis_cluster_url", "redis://10.0.0.1:7000"),
        ])
        .unwrap_err();
        assert!(
            both.problems
                .join("\n")
                .contains("redis_url and redis_cluster_url are both set"),
            "{:?}",
            both.problems
        );
        let unix = resolve(&[SECRET, ("redis_cluster_url", "unix:///tmp/r.sock")]).unwrap_err();
        assert!(
            unix.problems
                .join("\n")
                .contains("redis_cluster_url: each seed node")
        );
    }

    #[test]
    fn origins_match_exactly_or_by_subdomain() {
        let exact = OriginRule::parse("https://app.example.com").unwrap();
        assert!(exact.allows("https://APP.example.com"));
        assert!(!exact.allows("http://app.example.com"));
        let sub = OriginRule::parse("https://*.example.com").unwrap();
        assert!(sub.allows("https://a.example.com"));
        assert!(!sub.allows("https://example.com"));
        assert!(!sub.allows("https://evilexample.com"));
        assert!(OriginRule::parse("https://a.*.com").is_err());
    }

    #[test]
    fn a_short_secret_is_a_warning_not_an_error() {
        let c = resolve(&[("jwt_secret", "dev")]).unwrap();
        assert_eq!(c.warnings.len(), 1);
    }
}
