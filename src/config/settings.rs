//! Every setting of `fanout serve`, declared once.
//!
//! This file exists so that adding a setting is one entry in [`settings!`] below: from the
//! entry come its command-line flag (`--heartbeat-s`), its environment variable
//! (`FANOUT_HEARTBEAT_S`), its key in the TOML file (`heartbeat_s`), its default, its line in
//! `--help` and in the README table (the doc comment), its lower bound, and its typed field of
//! [`Settings`], read from the three sources with exact types (`heartbeat_s = "25"` in the
//! file is an error, not a silently converted number). What the values mean together (a key
//! or a secret, Redis or not, namespaces) is decided in `validate.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;

use jsonwebtoken::Algorithm;

use super::LogFormat;
use super::values::FieldType;

/// What is known about one setting, for the command line, messages and the README.
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
    /// Smallest value accepted (integers), when more than 0.
    pub min: Option<u64>,
    /// The JSON Schema of its TOML value, without the bound and the docs (`schema.rs`).
    pub schema: fn() -> serde_json::Value,
}

impl Setting {
    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }

    pub fn env(&self) -> String {
        format!("FANOUT_{}", self.key.to_ascii_uppercase())
    }
}

/// Where [`Settings::read`] gets each value from (the precedence of flags, environment, file
/// and defaults is `sources.rs`'s), recording what is wrong instead of stopping at it.
pub(super) trait SettingSource {
    /// The typed value of a setting; `None` (and a recorded problem) when it is wrong.
    fn read<T: FieldType>(&mut self, setting: &'static Setting) -> Option<T>;

    /// `value` if it is at least `min`; otherwise `None` and a recorded problem.
    fn at_least<T: PartialOrd + std::fmt::Display>(
        &mut self,
        setting: &'static Setting,
        value: Option<T>,
        min: T,
    ) -> Option<T>;
}

/// The setting declared under `key`, if any.
pub fn find_setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// `"0.0.0.0:8080"` (a string literal as written in the declaration) -> `0.0.0.0:8080`.
const fn unquote(s: &'static str) -> &'static str {
    match s.as_bytes() {
        [b'"', inner @ .., b'"'] => match std::str::from_utf8(inner) {
            Ok(s) => s,
            Err(_) => panic!("default is not UTF-8"),
        },
        _ => s,
    }
}

/// Declares the settings. Each entry is
///
/// ```text
/// /// Doc line (the help text and the README's "meaning").
/// key: Type [= default], "VALUE_NAME" [, min LOWEST] [, [secret]];
/// ```
///
/// `Type` is a value type (`u64`, `String`, `SocketAddr`, ...) and then needs a default, or
/// `Option<T>` (unset by default), or `Vec<T>` (a list). It generates [`SETTINGS`] (the
/// metadata) and [`Settings`] (the typed values, read by [`Settings::read`]).
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $key:ident: $ty:ty $(= $default:literal)?, $value_name:literal
            $(, min $min:literal)? $(, [$secret:ident])?;
    )*) => {
        /// The metadata of each setting, one constant per key.
        #[allow(non_upper_case_globals)]
        mod meta {
            use super::*;
            $(
                pub const $key: Setting = Setting {
                    key: stringify!($key),
                    value_name: $value_name,
                    default: settings!(@default $($default)?),
                    help: concat!($($doc),+).trim_ascii(),
                    list: <$ty as FieldType>::LIST,
                    secret: settings!(@secret $($secret)?),
                    min: settings!(@min $($min)?),
                    schema: <$ty as FieldType>::json_schema,
                };
            )*
        }

        /// Every setting of `fanout serve`, in documentation order.
        pub const SETTINGS: &[Setting] = &[$(meta::$key),*];

        /// Every setting, typed, after precedence (flag > environment > file > default).
        /// `None`: the value given was wrong, and the problem is already recorded.
        #[derive(Debug, Default)]
        pub struct Settings {
            $(
                $(#[doc = $doc])+
                pub $key: Option<$ty>,
            )*
        }

        impl Settings {
            /// Reads every setting from its sources, recording every problem in `sources`.
            pub(super) fn read(sources: &mut impl SettingSource) -> Settings {
                Settings {
                    $($key: {
                        let value = sources.read::<$ty>(&meta::$key);
                        $(let value = sources.at_least(&meta::$key, value, $min);)?
                        value
                    },)*
                }
            }
        }
    };
    (@default) => { None };
    (@default $default:literal) => { Some(unquote(stringify!($default))) };
    (@secret) => { false };
    (@secret secret) => { true };
    (@min) => { None };
    (@min $min:literal) => { Some($min) };
}

settings! {
    /// Address and port for clients (`/ws`, `/sse`, `/sse/frames`, `/demo`) and, unless `internal_listen` is set, the HTTP API and the operations endpoints (`/api/*`, `/metrics`, `/healthz`, `/readyz`).
    listen: SocketAddr = "0.0.0.0:8080", "ADDR";
    /// Address and port of an internal listener (`127.0.0.1:9090`, `0.0.0.0:9090`): when set, `/metrics`, `/healthz`, `/readyz` and the HTTP API (`/api/*`) are served there and no longer on `listen`, which then serves only the client paths. Unset or empty: everything on `listen`.
    internal_listen: Option<String>, "ADDR";
    /// With `internal_listen`: serve the HTTP API (`/api/*`) on `listen` as well, for backends that publish through the public load balancer. The operations endpoints stay internal.
    api_on_public: bool = false, "BOOL";
    /// Name of this node in logs, metrics and `connection_ack`. Default: the hostname.
    node_id: Option<String>, "ID";
    /// HS256 secret that connection tokens are signed with. Use at least 32 random bytes.
    jwt_secret: Option<String>, "SECRET", [secret];
    /// PEM public key (RSA or EC P-256) that tokens are verified with, instead of a secret.
    jwt_public_key: Option<PathBuf>, "PEM_FILE";
    /// Pin the token algorithm. Default: HS256 with a secret, RS256 for RSA keys, ES256 for EC keys.
    jwt_algorithm: Option<Algorithm>, "ALG";
    /// Accepted `aud` values; when set, tokens must carry one of them.
    jwt_audience: Vec<String>, "AUD";
    /// Accepted `iss` values; when set, tokens must carry one of them.
    jwt_issuer: Vec<String>, "ISS";
    /// Clock skew tolerated when checking `exp` and `nbf`.
    jwt_leeway_s: u64 = 0, "SECONDS";
    /// Browser origins allowed to open `/ws` (`https://app.example.com`, `https://*.example.com`). Empty: any.
    allowed_origins: Vec<String>, "ORIGIN";
    /// Proxies (IP addresses) whose `X-Forwarded-For` is believed: behind them, logs show the client's address from that header instead of the proxy's.
    trusted_proxies: Vec<std::net::IpAddr>, "IP";
    /// API keys accepted by `POST /api/*` as `Authorization: Bearer <key>`. Several allowed; none: API disabled.
    api_key: Vec<String>, "KEY", [secret];
    /// Extra channel namespaces besides `user`, `room` and `dag` (e.g. `agent`).
    namespaces: Vec<String>, "NS";
    /// Namespaces any authenticated client may subscribe to without a `channels` claim (not `user`).
    public_namespaces: Vec<String>, "NS";
    /// Redis for a cluster of nodes (`redis://host:6379/0`, `redis://:password@host`, `rediss://` for TLS). Unset: the in-process broker, one node.
    redis_url: Option<String>, "URL", [secret];
    /// With `rediss://`: PEM file of the CA(s) that signed the Redis server's certificate. Unset: Mozilla's public roots, built in.
    redis_tls_ca_file: Option<PathBuf>, "PEM_FILE";
    /// With `rediss://`: PEM client certificate (chain) for Redis servers that require one (`tls-auth-clients`); needs `redis_tls_key_file`.
    redis_tls_cert_file: Option<PathBuf>, "PEM_FILE";
    /// With `rediss://`: PEM private key of `redis_tls_cert_file`.
    redis_tls_key_file: Option<PathBuf>, "PEM_FILE";
    /// Seed nodes of a Redis Cluster (`redis://10.0.0.1:7000`, several allowed; `rediss://` for TLS) instead of `redis_url`: sharded pub/sub, keys and functions in each channel's slot. The other `redis_*` settings apply too, except `redis_pubsub_connections` and `redis_pool_size` (one multiplexed connection per cluster node).
    redis_cluster_url: Vec<String>, "URL", [secret];
    /// Prefix of Redis channel names: channel `room:lobby` is Redis channel `fanout:room:lobby`.
    redis_prefix: String = "fanout:", "PREFIX";
    /// Redis pub/sub connections per node; channels are spread over them by hash.
    redis_pubsub_connections: usize = 2, "N", min 1;
    /// Redis connections per node for commands (PUBLISH, probes).
    redis_pool_size: usize = 16, "N", min 1;
    /// Messages of history channels buffered per dispatch worker between Redis and fan-out (where gaps are filled); beyond, dropped and counted. Other channels are fanned out by the read loop itself.
    redis_dispatch_buffer: usize = 8192, "N", min 16;
    /// Interval of the pub/sub liveness probe; a probe not received within 3 s rebuilds the connection.
    redis_probe_interval_s: u64 = 5, "SECONDS", min 1;
    /// Presence entries live this long unless their node renews them (every third of it); a crashed node's members leave within about 4/3 of it.
    presence_lease_s: u64 = 30, "SECONDS", min 2;
    /// A publish repeated with the same idempotency key within this window returns the first result instead of publishing again.
    idempotency_window_s: u64 = 300, "SECONDS", min 1;
    /// Log format: `text` or `json`.
    log_format: LogFormat = "text", "FORMAT";
    /// Log filter (`info`, `debug`, `fanout=debug,info`, ...). `RUST_LOG` overrides it.
    log_level: String = "info", "FILTER";
    /// Interval of server WebSocket pings; sent to clients as `heartbeat_s`.
    heartbeat_s: u64 = 25, "SECONDS", min 1;
    /// How long after a ping a silent connection is closed (4009).
    pong_timeout_s: u64 = 10, "SECONDS", min 1;
    /// How long a connection without a token may take to send its `auth` frame (then 4001).
    auth_timeout_s: u64 = 10, "SECONDS", min 1;
    /// On SIGTERM/SIGINT, window over which connections are closed with 1012.
    drain_s: u64 = 10, "SECONDS";
    /// Serve the live demo dashboard at `/demo`, with `/demo/token` minting tokens for anyone: development only.
    demo: bool = false, "BOOL";
    /// With `demo`: the gateway itself plays a sample run on `dag:demo` (the graph, the human gate, the agent console, a notification to whoever decides) whenever nothing else has published there for a while. Default: on with the embedded broker, off with Redis (where `examples/simulator` plays).
    demo_play: Option<bool>, "BOOL";
    /// A socket write that makes no progress for this long drops the connection.
    write_timeout_s: u64 = 10, "SECONDS", min 1;
    /// Hold each connection's writes up to this long, so what arrives meanwhile goes out in one write: fewer system calls per message when connections get many messages a second, at up to this much added latency. 0 writes at once (and lets small fan-outs write from the fan-out itself).
    write_delay_ms: u64 = 0, "MS";
    /// Largest inbound WebSocket message; larger closes with 1009.
    max_message_bytes: usize = 65536, "BYTES", min 256;
    /// Largest payload accepted by the HTTP publish API (413 `too_large` beyond).
    max_payload_bytes: usize = 262144, "BYTES", min 1;
    /// Most messages replayed by one recovery or history request; a larger gap answers `recovered: false`.
    max_recovery_messages: usize = 1000, "N", min 1;
    /// Client `publish`, `send` and `status` frames per second per connection (`rate_limited` beyond).
    max_publishes_per_s: u32 = 10, "N", min 1;
    /// Channels per connection, `user:<id>` and `broadcast` included (`limit_exceeded` beyond).
    max_subscriptions: usize = 128, "N", min 2;
    /// Inbound frames per second per connection (`rate_limited` beyond, 4029 at twice the rate).
    max_frames_per_s: u32 = 100, "N", min 1;
    /// Open connections per node (HTTP 503 beyond).
    max_connections: usize = 100000, "N", min 1;
    /// Open connections per user on this node (HTTP 429 or close 4010 beyond).
    max_connections_per_user: usize = 100, "N", min 1;
    /// New connections accepted per second per node (HTTP 503 beyond).
    max_new_connections_per_s: u32 = 1000, "N", min 1;
    /// Outbound queue of a connection, in frames; overflow closes it as slow (4008).
    queue_max_messages: usize = 1024, "N", min 1;
    /// Outbound queue of a connection, in bytes; overflow closes it as slow (4008).
    queue_max_bytes: usize = 1048576, "BYTES", min 1024;
}

#[cfg(test)]
mod tests {
    use super::super::SettingsArgs;
    use super::super::sources::Sources;
    use super::*;

    #[test]
    fn every_default_is_valid_and_every_value_without_one_is_optional() {
        let args = SettingsArgs::default();
        let mut sources = Sources::load(&args);
        let settings = Settings::read(&mut sources);
        assert_eq!(sources.problems, Vec::<String>::new());
        assert_eq!(settings.heartbeat_s, Some(25));
        assert_eq!(settings.listen, Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(settings.redis_prefix.as_deref(), Some("fanout:"));
        assert_eq!(settings.jwt_secret, Some(None));
        assert_eq!(settings.api_key, Some(vec![]));
    }

    #[test]
    fn the_declaration_gives_names_defaults_and_help() {
        let s = find_setting("max_connections_per_user").unwrap();
        assert_eq!(s.flag(), "max-connections-per-user");
        assert_eq!(s.env(), "FANOUT_MAX_CONNECTIONS_PER_USER");
        assert_eq!(s.default, Some("100"));
        assert!(s.help.starts_with("Open connections per user"));
        let key = find_setting("api_key").unwrap();
        assert!(key.list && key.secret && key.default.is_none());
        assert_eq!(
            find_setting("listen").unwrap().default,
            Some("0.0.0.0:8080")
        );
        assert!(SETTINGS.iter().all(|s| !s.help.starts_with(' ')));
    }
}
