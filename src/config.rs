//! Configuration: one table of settings, three sources, one validated [`Config`].
//!
//! Every setting is declared once in [`SETTINGS`]. From that entry come its command-line flag
//! (`--max-subscriptions`), its environment variable (`FANOUT_MAX_SUBSCRIPTIONS`), its key in
//! the TOML file (`max_subscriptions`) and its row in the README's configuration table.
//! Precedence is flag > environment > file > default. Resolution never stops at the first
//! problem: it collects every one, so `fanout check-config` can explain them all at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use crate::channel::validate_namespace;

/// One configurable setting.
#[derive(Debug)]
pub struct Setting {
    /// TOML key; the flag is `--key-with-dashes`, the env var `FANOUT_KEY_IN_CAPITALS`.
    pub key: &'static str,
    pub value_name: &'static str,
    /// Default as written in docs; `None` when unset by default.
    pub default: Option<&'static str>,
    pub help: &'static str,
    /// Accepts several values (repeated flag, comma-separated env var, TOML array).
    pub list: bool,
    /// Never printed (secrets).
    pub secret: bool,
}

const fn setting(
    key: &'static str,
    value_name: &'static str,
    default: Option<&'static str>,
    help: &'static str,
) -> Setting {
    Setting {
        key,
        value_name,
        default,
        help,
        list: false,
        secret: false,
    }
}

const fn list(key: &'static str, value_name: &'static str, help: &'static str) -> Setting {
    Setting {
        key,
        value_name,
        default: None,
        help,
        list: true,
        secret: false,
    }
}

const fn secret(s: Setting) -> Setting {
    Setting { secret: true, ..s }
}

/// Every setting of `fanout serve`, in documentation order.
pub const SETTINGS: &[Setting] = &[
    setting(
        "listen",
        "ADDR",
        Some("0.0.0.0:8080"),
        "Address and port for WebSocket and HTTP (`/ws`, `/api/*`, `/metrics`, `/healthz`, `/readyz`).",
    ),
    setting(
        "node_id",
        "ID",
        None,
        "Name of this node in logs, metrics and `connection_ack`. Default: the hostname.",
    ),
    secret(setting(
        "jwt_secret",
        "SECRET",
        None,
        "HS256 secret that connection tokens are signed with. Use at least 32 random bytes.",
    )),
    setting(
        "jwt_public_key",
        "PEM_FILE",
        None,
        "PEM public key (RSA or EC P-256) that tokens are verified with, instead of a secret.",
    ),
    setting(
        "jwt_algorithm",
        "ALG",
        None,
        "Pin the token algorithm. Default: HS256 with a secret, RS256 for RSA keys, ES256 for EC keys.",
    ),
    list(
        "jwt_audience",
        "AUD",
        "Accepted `aud` values; when set, tokens must carry one of them.",
    ),
    list(
        "jwt_issuer",
        "ISS",
        "Accepted `iss` values; when set, tokens must carry one of them.",
    ),
    setting(
        "jwt_leeway_s",
        "SECONDS",
        Some("0"),
        "Clock skew tolerated when checking `exp` and `nbf`.",
    ),
    list(
        "allowed_origins",
        "ORIGIN",
        "Browser origins allowed to open `/ws` (`https://app.example.com`, `https://*.example.com`). Empty: any.",
    ),
    secret(list(
        "api_key",
        "KEY",
        "API keys accepted by `POST /api/*` as `Authorization: Bearer <key>`. Several allowed; none: API disabled.",
    )),
    list(
        "namespaces",
        "NS",
        "Extra channel namespaces besides `user`, `room` and `dag` (e.g. `agent`).",
    ),
    list(
        "public_namespaces",
        "NS",
        "Namespaces any authenticated client may subscribe to without a `channels` claim (not `user`).",
    ),
    secret(setting(
        "redis_url",
        "URL",
        None,
        "Redis for a cluster of nodes (`redis://host:6379/0`, `redis://:password@host`). Unset: the in-process broker, one node.",
    )),
    setting(
        "redis_prefix",
        "PREFIX",
        Some("fanout:"),
        "Prefix of Redis channel names: channel `room:lobby` is Redis channel `fanout:room:lobby`.",
    ),
    setting(
        "redis_pubsub_connections",
        "N",
        Some("2"),
        "Redis pub/sub connections per node; channels are spread over them by hash.",
    ),
    setting(
        "redis_pool_size",
        "N",
        Some("16"),
        "Redis connections per node for commands (PUBLISH, probes).",
    ),
    setting(
        "redis_dispatch_buffer",
        "N",
        Some("8192"),
        "Messages buffered per dispatch worker between Redis and fan-out; beyond, dropped and counted.",
    ),
    setting(
        "redis_probe_interval_s",
        "SECONDS",
        Some("5"),
        "Interval of the pub/sub liveness probe; a probe not received within 3 s rebuilds the connection.",
    ),
    setting(
        "presence_lease_s",
        "SECONDS",
        Some("30"),
        "Presence entries live this long unless their node renews them (every third of it); a crashed node's members leave within about 4/3 of it.",
    ),
    setting(
        "log_format",
        "FORMAT",
        Some("text"),
        "Log format: `text` or `json`.",
    ),
    setting(
        "log_level",
        "FILTER",
        Some("info"),
        "Log filter (`info`, `debug`, `fanout=debug,info`, ...). `RUST_LOG` overrides it.",
    ),
    setting(
        "heartbeat_s",
        "SECONDS",
        Some("25"),
        "Interval of server WebSocket pings; sent to clients as `heartbeat_s`.",
    ),
    setting(
        "pong_timeout_s",
        "SECONDS",
        Some("10"),
        "How long after a ping a silent connection is closed (4009).",
    ),
    setting(
        "auth_timeout_s",
        "SECONDS",
        Some("10"),
        "How long a connection without a token may take to send its `auth` frame (then 4001).",
    ),
    setting(
        "drain_s",
        "SECONDS",
        Some("10"),
        "On SIGTERM/SIGINT, window over which connections are closed with 1012.",
    ),
    setting(
        "demo",
        "BOOL",
        Some("false"),
        "Serve the live demo dashboard at `/demo`, with `/demo/token` minting tokens for anyone: development only.",
    ),
    setting(
        "write_timeout_s",
        "SECONDS",
        Some("10"),
        "A socket write that makes no progress for this long drops the connection.",
    ),
    setting(
        "max_message_bytes",
        "BYTES",
        Some("65536"),
        "Largest inbound WebSocket message; larger closes with 1009.",
    ),
    setting(
        "max_payload_bytes",
        "BYTES",
        Some("262144"),
        "Largest payload accepted by the HTTP publish API (413 `too_large` beyond).",
    ),
    setting(
        "max_recovery_messages",
        "N",
        Some("1000"),
        "Most messages replayed by one recovery or history request; a larger gap answers `recovered: false`.",
    ),
    setting(
        "max_publishes_per_s",
        "N",
        Some("10"),
        "Client `publish`, `send` and `status` frames per second per connection (`rate_limited` beyond).",
    ),
    setting(
        "max_subscriptions",
        "N",
        Some("128"),
        "Channels per connection, `user:<id>` and `broadcast` included (`limit_exceeded` beyond).",
    ),
    setting(
        "max_frames_per_s",
        "N",
        Some("100"),
        "Inbound frames per second per connection (`rate_limited` beyond, 4029 at twice the rate).",
    ),
    setting(
        "max_connections",
        "N",
        Some("100000"),
        "Open connections per node (HTTP 503 beyond).",
    ),
    setting(
        "max_connections_per_user",
        "N",
        Some("100"),
        "Open connections per user on this node (HTTP 429 or close 4010 beyond).",
    ),
    setting(
        "max_new_connections_per_s",
        "N",
        Some("1000"),
        "New connections accepted per second per node (HTTP 503 beyond).",
    ),
    setting(
        "queue_max_messages",
        "N",
        Some("1024"),
        "Outbound queue of a connection, in frames; overflow closes it as slow (4008).",
    ),
    setting(
        "queue_max_bytes",
        "BYTES",
        Some("1048576"),
        "Outbound queue of a connection, in bytes; overflow closes it as slow (4008).",
    ),
];

impl Setting {
    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }

    pub fn env(&self) -> String {
        format!("FANOUT_{}", self.key.to_ascii_uppercase())
    }
}

fn find_setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// Raw settings from the command line and environment, plus the optional config file path.
#[derive(Debug, Clone, Default)]
pub struct SettingsArgs {
    /// Per key: the values and whether they came from a flag or the environment.
    given: BTreeMap<&'static str, (Vec<String>, Origin)>,
    config_file: Option<PathBuf>,
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env,
    File,
    Default,
}

impl Args for SettingsArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let mut cmd = cmd.arg(
            Arg::new("config")
                .long("config")
                .env("FANOUT_CONFIG")
                .value_name("FILE")
                .help("TOML configuration file (keys as in the table of settings)")
                .help_heading("Settings"),
        );
        for s in SETTINGS {
            let mut arg = Arg::new(s.key)
                .long(s.flag())
                .env(s.env())
                .value_name(s.value_name)
                .help(s.help)
                .help_heading("Settings")
                .hide_env_values(s.secret);
            if let Some(d) = s.default {
                arg = arg.help(format!("{} [default: {d}]", s.help));
            }
            if s.list {
                arg = arg.action(ArgAction::Append).value_delimiter(',');
            }
            if s.value_name == "BOOL" {
                // `--demo` alone means `--demo true`.
                arg = arg.num_args(0..=1).default_missing_value("true");
            }
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for SettingsArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut given = BTreeMap::new();
        for s in SETTINGS {
            let origin = match m.value_source(s.key) {
                Some(ValueSource::CommandLine) => Origin::Flag,
                Some(ValueSource::EnvVariable) => Origin::Env,
                _ => continue,
            };
            let values: Vec<String> = m
                .get_many::<String>(s.key)
                .map(|v| v.cloned().collect())
                .unwrap_or_default();
            given.insert(s.key, (values, origin));
        }
        Ok(SettingsArgs {
            given,
            config_file: m.get_one::<String>("config").map(PathBuf::from),
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl SettingsArgs {
    /// Settings given programmatically (tests, embedding): `("listen", "127.0.0.1:0")`.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> SettingsArgs {
        let mut given: BTreeMap<&'static str, (Vec<String>, Origin)> = BTreeMap::new();
        for (k, v) in pairs {
            if let Some(s) = find_setting(k) {
                let entry = given.entry(s.key).or_insert((Vec::new(), Origin::Flag));
                entry.0.extend(v.split(',').map(|x| x.trim().to_owned()));
            }
        }
        SettingsArgs {
            given,
            config_file: None,
        }
    }

    pub fn with_config_file(mut self, path: impl Into<PathBuf>) -> SettingsArgs {
        self.config_file = Some(path.into());
        self
    }

    /// Resolves every setting; `Err` lists every problem found.
    pub fn resolve(&self) -> Result<Config, Problems> {
        let mut r = Resolver::new(self);
        let config = r.build();
        match config {
            Some(c) if r.problems.is_empty() => Ok(Config {
                warnings: r.warnings,
                ..c
            }),
            _ => Err(Problems {
                problems: r.problems,
                warnings: r.warnings,
            }),
        }
    }
}

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
                "origin {s:?} must look like https://app.example.com"
            ));
        };
        if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains('/') {
            return Err(format!(
                "origin {s:?} must be scheme://host[:port] with scheme http or https and no path"
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
                "origin {s:?}: a wildcard is only allowed as the first label (https://*.example.com)"
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

/// A `[namespaces.<name>]` section of the config file; absent keys keep the defaults.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
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
    pub prefix: String,
    pub pubsub_connections: usize,
    pub pool_size: usize,
    pub dispatch_buffer: usize,
    pub probe_interval: Duration,
}

impl RedisConfig {
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
            .field("prefix", &self.prefix)
            .field("pubsub_connections", &self.pubsub_connections)
            .field("pool_size", &self.pool_size)
            .field("dispatch_buffer", &self.dispatch_buffer)
            .field("probe_interval", &self.probe_interval)
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
    pub listen: SocketAddr,
    pub node_id: String,
    pub jwt: JwtConfig,
    pub allowed_origins: Vec<OriginRule>,
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
    pub presence_lease: Duration,
    /// Serve the demo dashboard and its token endpoint.
    pub demo: bool,
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
        line("node_id", self.node_id.clone());
        line("jwt_algorithm", format!("{:?}", self.jwt.algorithm));
        line("jwt_audience", format!("{:?}", self.jwt.audience));
        line("jwt_issuer", format!("{:?}", self.jwt.issuer));
        line("allowed_origins", format!("{:?}", self.allowed_origins));
        line("api_keys", format!("{} configured", self.api_keys.len()));
        line(
            "broker",
            match &self.redis {
                Some(r) => format!("redis at {} (prefix {:?})", r.display_addr(), r.prefix),
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
                        s.push_str(&format!(" (presence, join_leave {:?})", v.join_leave));
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
        line("limits", format!("{:?}", self.limits));
        out
    }
}

/// Reads values by key from the three sources and collects problems.
struct Resolver<'a> {
    args: &'a SettingsArgs,
    file: BTreeMap<String, toml::Value>,
    file_name: String,
    problems: Vec<String>,
    warnings: Vec<String>,
}

impl<'a> Resolver<'a> {
    fn new(args: &'a SettingsArgs) -> Resolver<'a> {
        let mut r = Resolver {
            args,
            file: BTreeMap::new(),
            file_name: String::new(),
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        if let Some(path) = &args.config_file {
            r.file_name = path.display().to_string();
            match std::fs::read_to_string(path) {
                Err(e) => r
                    .problems
                    .push(format!("config file {}: cannot read: {e}", path.display())),
                Ok(text) => match text.parse::<toml::Table>() {
                    Err(e) => r.problems.push(format!(
                        "config file {}: not valid TOML: {}",
                        path.display(),
                        e.to_string().trim()
                    )),
                    Ok(table) => {
                        for (k, v) in table {
                            if k != "namespaces" && find_setting(&k).is_none() {
                                r.problems.push(format!(
                                    "config file {}: unknown key `{k}`{}",
                                    path.display(),
                                    suggest(&k)
                                ));
                            } else {
                                r.file.insert(k, v);
                            }
                        }
                    }
                },
            }
        }
        r
    }

    /// The raw values of a setting and where they came from.
    fn raw(&mut self, key: &'static str) -> Option<(Vec<String>, Origin)> {
        if let Some((v, o)) = self.args.given.get(key) {
            return Some((v.clone(), *o));
        }
        // `namespaces` in the file is either a list of names (this setting) or the table of
        // `[namespaces.<name>]` sections (read by `namespaces()`).
        let file_value = self
            .file
            .get(key)
            .filter(|v| !(key == "namespaces" && v.is_table()));
        if let Some(v) = file_value {
            let values = match v {
                toml::Value::String(s) => Some(vec![s.clone()]),
                toml::Value::Integer(i) => Some(vec![i.to_string()]),
                toml::Value::Float(f) => Some(vec![f.to_string()]),
                toml::Value::Boolean(b) => Some(vec![b.to_string()]),
                toml::Value::Array(items) => items
                    .iter()
                    .map(|i| match i {
                        toml::Value::String(s) => Some(s.clone()),
                        toml::Value::Integer(i) => Some(i.to_string()),
                        _ => None,
                    })
                    .collect(),
                _ => None,
            };
            return match values {
                Some(v) => Some((v, Origin::File)),
                None => {
                    self.problems.push(format!(
                        "config file {}: `{key}` must be a string, number, boolean or list of them",
                        self.file_name
                    ));
                    None
                }
            };
        }
        find_setting(key)
            .and_then(|s| s.default)
            .map(|d| (vec![d.to_owned()], Origin::Default))
    }

    fn source(&self, key: &str, origin: Origin) -> String {
        let s = find_setting(key).expect("known setting");
        match origin {
            Origin::Flag => format!("--{}", s.flag()),
            Origin::Env => s.env(),
            Origin::File => format!("`{key}` in {}", self.file_name),
            Origin::Default => format!("default of {key}"),
        }
    }

    /// A single typed value; records a problem and returns `None` when it does not parse.
    fn one<T: FromStr>(&mut self, key: &'static str) -> Option<T>
    where
        T::Err: Display,
    {
        let (values, origin) = self.raw(key)?;
        let [value] = values.as_slice() else {
            let src = self.source(key, origin);
            self.problems
                .push(format!("{src}: expected one value, got {}", values.len()));
            return None;
        };
        match value.trim().parse::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                let src = self.source(key, origin);
                let shown = if find_setting(key).is_some_and(|s| s.secret) {
                    "<redacted>".to_owned()
                } else {
                    format!("{value:?}")
                };
                self.problems
                    .push(format!("{src}: invalid value {shown}: {e}"));
                None
            }
        }
    }

    /// A required value (has a default), with a lower bound.
    fn number<T>(&mut self, key: &'static str, min: T) -> Option<T>
    where
        T: FromStr + PartialOrd + Display + Copy,
        T::Err: Display,
    {
        let v = self.one::<T>(key)?;
        if v < min {
            let origin = self.raw(key).map(|(_, o)| o).unwrap_or(Origin::Default);
            let src = self.source(key, origin);
            self.problems
                .push(format!("{src}: must be at least {min}, got {v}"));
            return None;
        }
        Some(v)
    }

    fn list(&mut self, key: &'static str) -> Vec<String> {
        self.raw(key)
            .map(|(v, _)| {
                v.into_iter()
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn build(&mut self) -> Option<Config> {
        let listen = self.one::<SocketAddr>("listen");
        let node_id = self.node_id();
        let jwt = self.jwt();
        let allowed_origins = self.origins();
        let api_keys = self.list("api_key");
        let namespaces = self.namespaces();
        let redis = self.redis();
        let log_format = self.one::<LogFormat>("log_format");
        let log_level = self.one::<String>("log_level");
        if let Some(level) = &log_level
            && let Err(e) = tracing_subscriber::EnvFilter::try_new(level)
        {
            self.problems
                .push(format!("log_level: invalid filter {level:?}: {e}"));
        }
        let heartbeat = self.number::<u64>("heartbeat_s", 1);
        let pong_timeout = self.number::<u64>("pong_timeout_s", 1);
        let auth_timeout = self.number::<u64>("auth_timeout_s", 1);
        let drain = self.number::<u64>("drain_s", 0);
        let write_timeout = self.number::<u64>("write_timeout_s", 1);
        let presence_lease = self.number::<u64>("presence_lease_s", 2);
        let demo = self.one::<bool>("demo");
        let limits = self.limits();

        Some(Config {
            listen: listen?,
            node_id: node_id?,
            jwt: jwt?,
            allowed_origins,
            api_keys,
            namespaces,
            redis: redis?,
            log_format: log_format?,
            log_level: log_level?,
            heartbeat: Duration::from_secs(heartbeat?),
            pong_timeout: Duration::from_secs(pong_timeout?),
            auth_timeout: Duration::from_secs(auth_timeout?),
            drain: Duration::from_secs(drain?),
            write_timeout: Duration::from_secs(write_timeout?),
            presence_lease: Duration::from_secs(presence_lease?),
            demo: demo?,
            limits: limits?,
            warnings: Vec::new(),
        })
    }

    /// `Some(None)` when Redis is not configured; `None` on a problem.
    fn redis(&mut self) -> Option<Option<RedisConfig>> {
        let url = self.one::<String>("redis_url");
        let prefix = self.one::<String>("redis_prefix");
        let pubsub_connections = self.number::<usize>("redis_pubsub_connections", 1);
        let pool_size = self.number::<usize>("redis_pool_size", 1);
        let dispatch_buffer = self.number::<usize>("redis_dispatch_buffer", 16);
        let probe_interval = self.number::<u64>("redis_probe_interval_s", 1);
        let Some(url) = url else {
            return if self.raw("redis_url").is_some() {
                None
            } else {
                Some(None)
            };
        };
        if let Err(e) = redis::Client::open(url.as_str()) {
            // The error may quote the URL; name only the kind.
            self.problems
                .push(format!("redis_url: not a valid Redis URL ({:?})", e.kind()));
            return None;
        }
        let prefix = prefix?;
        if prefix.len() > 64 || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.problems.push(format!(
                "redis_prefix {prefix:?}: at most 64 characters, no whitespace"
            ));
            return None;
        }
        Some(Some(RedisConfig {
            url,
            prefix,
            pubsub_connections: pubsub_connections?,
            pool_size: pool_size?,
            dispatch_buffer: dispatch_buffer?,
            probe_interval: Duration::from_secs(probe_interval?),
        }))
    }

    fn node_id(&mut self) -> Option<String> {
        let id = match self.one::<String>("node_id") {
            Some(id) => id,
            None if self.args.given.contains_key("node_id")
                || self.file.contains_key("node_id") =>
            {
                return None;
            }
            None => default_node_id(),
        };
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            self.problems.push(format!(
                "node_id {id:?}: use 1-64 characters of letters, digits, `-`, `_` and `.`"
            ));
            return None;
        }
        Some(id)
    }

    fn jwt(&mut self) -> Option<JwtConfig> {
        let secret = self.one::<String>("jwt_secret");
        let public_key = self.one::<PathBuf>("jwt_public_key");
        let algorithm = match self.raw("jwt_algorithm") {
            Some(_) => match self.one::<String>("jwt_algorithm") {
                Some(a) => match parse_algorithm(&a) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        self.problems.push(format!("jwt_algorithm: {e}"));
                        return None;
                    }
                },
                None => return None,
            },
            None => None,
        };
        let audience = self.list("jwt_audience");
        let issuer = self.list("jwt_issuer");
        let leeway_s = self.number::<u64>("jwt_leeway_s", 0)?;

        let (algorithm, decoding_key, encoding_key) = match (secret, public_key) {
            (Some(_), Some(_)) => {
                self.problems.push(
                    "jwt_secret and jwt_public_key are both set: choose one, so the token algorithm is unambiguous".into(),
                );
                return None;
            }
            (None, None) => {
                self.problems.push(
                    "no token verification key: set jwt_secret (--jwt-secret / FANOUT_JWT_SECRET) or jwt_public_key (--jwt-public-key / FANOUT_JWT_PUBLIC_KEY)".into(),
                );
                return None;
            }
            (Some(secret), None) => {
                let alg = algorithm.unwrap_or(Algorithm::HS256);
                if !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                    self.problems.push(format!(
                        "jwt_algorithm {alg:?} needs jwt_public_key; a secret only works with HS256/HS384/HS512"
                    ));
                    return None;
                }
                if secret.is_empty() {
                    self.problems.push("jwt_secret is empty".into());
                    return None;
                }
                if secret.len() < 32 {
                    self.warnings.push(format!(
                        "jwt_secret is {} bytes; use at least 32 random bytes in production",
                        secret.len()
                    ));
                }
                (
                    alg,
                    DecodingKey::from_secret(secret.as_bytes()),
                    Some(EncodingKey::from_secret(secret.as_bytes())),
                )
            }
            (None, Some(path)) => {
                let (alg, key) = self.public_key(&path, algorithm)?;
                (alg, key, None)
            }
        };
        Some(JwtConfig {
            algorithm,
            decoding_key,
            encoding_key,
            audience,
            issuer,
            leeway_s,
        })
    }

    fn public_key(
        &mut self,
        path: &Path,
        algorithm: Option<Algorithm>,
    ) -> Option<(Algorithm, DecodingKey)> {
        let pem = match std::fs::read(path) {
            Ok(p) => p,
            Err(e) => {
                self.problems.push(format!(
                    "jwt_public_key {}: cannot read: {e}",
                    path.display()
                ));
                return None;
            }
        };
        let rsa = DecodingKey::from_rsa_pem(&pem).ok();
        let ec = DecodingKey::from_ec_pem(&pem).ok();
        let found = match (algorithm, rsa, ec) {
            (None | Some(Algorithm::RS256), Some(k), _) => Some((Algorithm::RS256, k)),
            (None | Some(Algorithm::ES256), None, Some(k)) => Some((Algorithm::ES256, k)),
            (
                Some(
                    a @ (Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512),
                ),
                Some(k),
                _,
            ) => Some((a, k)),
            (Some(a @ Algorithm::ES384), None, Some(k)) => Some((a, k)),
            _ => None,
        };
        if found.is_none() {
            self.problems.push(format!(
                "jwt_public_key {}: not a PEM public key that fits {}",
                path.display(),
                algorithm.map_or("RS256 (RSA) or ES256 (EC P-256)".to_owned(), |a| format!(
                    "{a:?}"
                ))
            ));
        }
        found
    }

    fn origins(&mut self) -> Vec<OriginRule> {
        let mut rules = Vec::new();
        for o in self.list("allowed_origins") {
            match OriginRule::parse(&o) {
                Ok(r) => rules.push(r),
                Err(e) => self.problems.push(format!("allowed_origins: {e}")),
            }
        }
        rules
    }

    fn namespaces(&mut self) -> BTreeMap<String, NamespaceConfig> {
        let mut out = builtin_namespaces();
        if let Some(table) = self.file.get("namespaces").cloned() {
            match table {
                // A plain list of names is the `namespaces` setting, read below.
                toml::Value::Array(_) => {}
                toml::Value::Table(t) => {
                    for (name, v) in t {
                        if name != crate::channel::BROADCAST
                            && let Err(e) = validate_namespace(&name)
                        {
                            self.problems
                                .push(format!("[namespaces.{name}]: bad namespace name: {e}"));
                            continue;
                        }
                        match v.try_into::<NamespaceSection>() {
                            Ok(section) => {
                                let ns = out.entry(name.clone()).or_default();
                                self.apply_section(&name, ns, section);
                            }
                            Err(e) => self.problems.push(format!(
                                "[namespaces.{name}] in {}: {}",
                                self.file_name,
                                e.to_string().trim()
                            )),
                        }
                    }
                }
                _ => self.problems.push(format!(
                    "config file {}: `namespaces` must be a list of names or [namespaces.<name>] sections",
                    self.file_name
                )),
            }
        }
        for name in self.list("namespaces") {
            match validate_namespace(&name) {
                Ok(()) => {
                    out.entry(name).or_default();
                }
                Err(e) => self
                    .problems
                    .push(format!("namespaces: bad namespace {name:?}: {e}")),
            }
        }
        let public: BTreeSet<String> = self.list("public_namespaces").into_iter().collect();
        for name in public {
            match out.get_mut(&name) {
                Some(ns) => ns.public = true,
                None => self.problems.push(format!(
                    "public_namespaces: {name:?} is not a namespace (known: {}); add it to namespaces first",
                    out.keys().cloned().collect::<Vec<_>>().join(", ")
                )),
            }
        }
        if out.get("user").is_some_and(|u| u.public) {
            self.problems.push(
                "the `user` namespace cannot be public: anyone could read anyone's personal channel".into(),
            );
        }
        out
    }

    /// Applies a `[namespaces.<name>]` section over the namespace's defaults.
    fn apply_section(&mut self, name: &str, ns: &mut NamespaceConfig, section: NamespaceSection) {
        if let Some(public) = section.public {
            ns.public = public;
        }
        if let Some(presence) = section.presence {
            ns.presence = presence;
        }
        if let Some(join_leave) = section.join_leave {
            ns.join_leave = join_leave;
        }
        if ns.join_leave != JoinLeave::Off && !ns.presence {
            self.problems.push(format!(
                "[namespaces.{name}] join_leave needs presence = true"
            ));
        }
        if let Some(publish) = section.publish {
            ns.publish = publish;
        }
        if let Some(inbox) = section.inbox {
            if inbox.is_empty() || inbox.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.problems.push(format!(
                    "[namespaces.{name}] inbox {inbox:?}: a Redis key name without whitespace"
                ));
            }
            ns.inbox = Some(inbox);
        }
        let size = section
            .history_size
            .or(ns.history.map(|h| h.size))
            .unwrap_or(0);
        let ttl_s = section
            .history_ttl_s
            .or(ns.history.map(|h| h.ttl.as_secs()));
        ns.history = match (size, ttl_s) {
            (0, _) if section.history_ttl_s.is_some() => {
                self.problems.push(format!(
                    "[namespaces.{name}] history_ttl_s has no effect without history_size"
                ));
                None
            }
            (0, _) => None,
            (size, _) if size > MAX_HISTORY_SIZE => {
                self.problems.push(format!(
                    "[namespaces.{name}] history_size {size}: at most {MAX_HISTORY_SIZE}"
                ));
                None
            }
            (_, None | Some(0)) => {
                self.problems.push(format!(
                    "[namespaces.{name}] keeps history: set history_ttl_s (seconds, at least 1)"
                ));
                None
            }
            (size, Some(ttl_s)) => Some(HistoryConfig {
                size,
                ttl: Duration::from_secs(ttl_s),
            }),
        };
    }

    fn limits(&mut self) -> Option<Limits> {
        let max_message_bytes = self.number::<usize>("max_message_bytes", 256);
        let max_recovery_messages = self.number::<usize>("max_recovery_messages", 1);
        let max_publishes_per_s = self.number::<u32>("max_publishes_per_s", 1);
        let max_payload_bytes = self.number::<usize>("max_payload_bytes", 1);
        let max_subscriptions = self.number::<usize>("max_subscriptions", 2);
        let max_frames_per_s = self.number::<u32>("max_frames_per_s", 1);
        let max_connections = self.number::<usize>("max_connections", 1);
        let max_connections_per_user = self.number::<usize>("max_connections_per_user", 1);
        let max_new_connections_per_s = self.number::<u32>("max_new_connections_per_s", 1);
        let queue_max_messages = self.number::<usize>("queue_max_messages", 1);
        let queue_max_bytes = self.number::<usize>("queue_max_bytes", 1024);
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
        Some(limits)
    }
}

fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    let alg = Algorithm::from_str(&s.to_ascii_uppercase())
        .map_err(|_| format!("unknown algorithm {s:?}"))?;
    match alg {
        Algorithm::HS256
        | Algorithm::HS384
        | Algorithm::HS512
        | Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512
        | Algorithm::ES256
        | Algorithm::ES384 => Ok(alg),
        other => Err(format!("algorithm {other:?} is not supported")),
    }
}

fn suggest(key: &str) -> String {
    let normalized = key.replace('-', "_").to_ascii_lowercase();
    let close = |s: &&Setting| {
        s.key == normalized
            || (normalized.len() >= 4
                && (s.key.contains(&normalized) || normalized.contains(s.key)))
    };
    match SETTINGS.iter().find(close) {
        Some(s) => format!(" (did you mean `{}`?)", s.key),
        None => String::new(),
    }
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

/// The README's configuration table, generated from [`SETTINGS`].
pub fn reference_table() -> String {
    let mut out = String::from(
        "| flag | environment | TOML key | default | meaning |\n|---|---|---|---|---|\n",
    );
    for s in SETTINGS {
        out.push_str(&format!(
            "| `--{}` | `{}` | `{}` | {} | {} |\n",
            s.flag(),
            s.env(),
            s.key,
            s.default.map_or("".to_owned(), |d| format!("`{d}`")),
            s.help.replace('|', "\\|")
        ));
    }
    out
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
