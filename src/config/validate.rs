//! From typed settings to a [`Config`]: what the values mean together, every problem at once.
//!
//! This file exists so that `fanout check-config` can explain everything wrong with a
//! configuration in one run: a wrong value is recorded (by `sources.rs`) and reading goes on;
//! here the values are checked together (a key or a secret, a public `user` namespace, a queue
//! smaller than a message, ...) and the `[namespaces.<name>]` sections are read. Nothing stops
//! at the first problem; [`resolve`] returns them all.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use super::settings::Settings;
use super::sources::Sources;
use super::values::{FieldType, Scalar, algorithm_name, got_toml, quote};
use super::{
    Config, HistoryConfig, JoinLeave, JwtConfig, Limits, MAX_HISTORY_SIZE, NamespaceConfig,
    OriginRule, RedisConfig, RedisTls, builtin_namespaces, redis_tls,
};
use crate::channel::validate_namespace;

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

/// Reads every setting from `sources` and checks them together.
pub(super) fn resolve(mut sources: Sources) -> Result<Config, Problems> {
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
const SECTION_KEYS: &str =
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

    /// `Some(None)` when Redis is not configured; `None` on a problem.
    fn redis(
        &mut self,
        url: Option<Option<String>>,
        tls_files: TlsFiles,
        prefix: Option<String>,
        (pubsub_connections, pool_size): (Option<usize>, Option<usize>),
        dispatch_buffer: Option<usize>,
        probe_interval_s: Option<u64>,
    ) -> Option<Option<RedisConfig>> {
        let (ca_file, cert_file, key_file) = tls_files;
        let (ca_file, cert_file, key_file) = (ca_file?, cert_file?, key_file?);
        let any_tls_file = ca_file.is_some() || cert_file.is_some() || key_file.is_some();
        let Some(url) = url? else {
            if any_tls_file {
                self.problems.push(
                    "redis_tls_ca_file, redis_tls_cert_file and redis_tls_key_file only apply to a rediss:// redis_url, and redis_url is not set".into(),
                );
                return None;
            }
            return Some(None);
        };
        // The scheme and fragment only: the rest of the URL may hold a password.
        let scheme = url
            .trim_start()
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase());
        let tls = matches!(scheme.as_deref(), Some("rediss" | "valkeys"));
        if tls && url.trim_end().ends_with("#insecure") {
            self.problems.push(
                "redis_url: #insecure (TLS without checking the server's certificate) is not supported; give the CA that signed the server's certificate with redis_tls_ca_file".into(),
            );
            return None;
        }
        if redis::Client::open(url.as_str()).is_err() {
            // The error may quote the URL, password included: describe the form instead.
            let problem = match &scheme {
                Some(s) if !matches!(s.as_str(), "redis" | "rediss" | "unix" | "redis+unix") => format!(
                    "redis_url: unknown scheme {}: expected redis://[:password@]host[:port][/db], rediss://… (TLS) or unix:///path",
                    quote(&s.chars().take(20).collect::<String>())
                ),
                _ => "redis_url: not a valid Redis URL (expected redis://[:password@]host[:port][/db], rediss://… (TLS) or unix:///path)".into(),
            };
            self.problems.push(problem);
            return None;
        }
        if !tls && any_tls_file {
            self.problems.push(
                "redis_tls_ca_file, redis_tls_cert_file and redis_tls_key_file only apply to a rediss:// redis_url; this one is not TLS (use rediss://host:port to connect with TLS)".into(),
            );
            return None;
        }
        let tls = if tls {
            Some(self.redis_tls(ca_file, cert_file, key_file)?)
        } else {
            None
        };
        let prefix = prefix?;
        // A leading `!` is what keeps the nodes' own Redis channels apart from the prefix's.
        if prefix.len() > 64
            || prefix.starts_with('!')
            || prefix.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            self.problems.push(format!(
                "redis_prefix {}: at most 64 characters, no whitespace, not starting with `!`",
                quote(&prefix)
            ));
            return None;
        }
        Some(Some(RedisConfig {
            url,
            tls,
            prefix,
            pubsub_connections: pubsub_connections?,
            pool_size: pool_size?,
            dispatch_buffer: dispatch_buffer?,
            probe_interval: Duration::from_secs(probe_interval_s?),
            cluster_seeds: Vec::new(),
        }))
    }

    /// Reads and checks the CA and client certificate files of a `rediss://` URL.
    fn redis_tls(
        &mut self,
        ca_file: Option<PathBuf>,
        cert_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
    ) -> Option<RedisTls> {
        let mut ok = true;
        let mut report = |problems: &mut Vec<String>, r: Result<(), String>| {
            if let Err(e) = r {
                problems.push(e);
                ok = false;
            }
        };
        let ca = match ca_file.map(|p| redis_tls::read("redis_tls_ca_file", &p)) {
            Some(Ok(ca)) => {
                report(
                    &mut self.problems,
                    redis_tls::check_ca("redis_tls_ca_file", &ca),
                );
                Some(ca)
            }
            Some(Err(e)) => {
                report(&mut self.problems, Err(e));
                None
            }
            None => None,
        };
        let client = match (cert_file, key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let cert = redis_tls::read("redis_tls_cert_file", &cert);
                let key = redis_tls::read("redis_tls_key_file", &key);
                match (cert, key) {
                    (Ok(cert), Ok(key)) => {
                        report(&mut self.problems, redis_tls::check_client(&cert, &key));
                        Some((cert, key))
                    }
                    (cert, key) => {
                        for e in [cert.err(), key.err()].into_iter().flatten() {
                            report(&mut self.problems, Err(e));
                        }
                        None
                    }
                }
            }
            (Some(_), None) | (None, Some(_)) => {
                report(
                    &mut self.problems,
                    Err("redis_tls_cert_file and redis_tls_key_file go together: a client certificate needs its private key".into()),
                );
                None
            }
        };
        ok.then_some(RedisTls { ca, client })
    }

    /// Redis Cluster from its seed nodes; the other Redis settings as for one Redis.
    fn redis_cluster(
        &mut self,
        (seeds, standalone_url): (Vec<String>, Option<Option<String>>),
        tls_files: TlsFiles,
        prefix: Option<String>,
        connections: (Option<usize>, Option<usize>),
        dispatch_buffer: Option<usize>,
        probe_interval_s: Option<u64>,
    ) -> Option<Option<RedisConfig>> {
        if matches!(standalone_url, Some(Some(_))) {
            self.problems.push(
                "redis_url and redis_cluster_url are both set: choose one Redis (redis_url) or a Redis Cluster (redis_cluster_url)".into(),
            );
            return None;
        }
        // All seeds speak the same: plain TCP (`redis://`) or TLS (`rediss://`, with the
        // redis_tls_* files checked as for one Redis).
        let scheme = |seed: &str| {
            let seed = seed.trim_start().to_ascii_lowercase();
            if seed.starts_with("rediss://") {
                Some(true)
            } else if seed.starts_with("redis://") {
                Some(false)
            } else {
                None
            }
        };
        let first_tls = scheme(&seeds[0]);
        for seed in &seeds {
            if first_tls.is_none()
                || scheme(seed) != first_tls
                || redis::Client::open(seed.as_str()).is_err()
            {
                // The value may hold a password: describe the form instead of quoting it.
                self.problems.push(
                    "redis_cluster_url: each seed node must be redis://[[user]:password@]host:port, or rediss://… for TLS (all seeds the same)"
                        .into(),
                );
                return None;
            }
        }
        let mut config = self
            .redis(
                Some(Some(seeds[0].clone())),
                tls_files,
                prefix,
                connections,
                dispatch_buffer,
                probe_interval_s,
            )
            .flatten()?;
        config.cluster_seeds = seeds;
        Some(Some(config))
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

    /// `None` when a value is wrong (already reported) or the keys do not fit together.
    fn jwt(
        &mut self,
        secret: Option<Option<String>>,
        public_key: Option<Option<PathBuf>>,
        algorithm: Option<Option<Algorithm>>,
        (audience, issuer, leeway_s): (Option<Vec<String>>, Option<Vec<String>>, Option<u64>),
    ) -> Option<JwtConfig> {
        // A wrong value is already reported; a missing key is reported even so.
        let (secret, public_key) = (secret?, public_key?);
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
                let alg = algorithm?.unwrap_or(Algorithm::HS256);
                if !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                    self.problems.push(format!(
                        "jwt_algorithm {} needs jwt_public_key; a secret only works with HS256/HS384/HS512",
                        name(alg)
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
                let (alg, key) = self.public_key(&path, algorithm?)?;
                (alg, key, None)
            }
        };
        Some(JwtConfig {
            algorithm,
            decoding_key,
            encoding_key,
            audience: audience?,
            issuer: issuer?,
            leeway_s: leeway_s?,
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
                algorithm.map_or("RS256 (RSA) or ES256 (EC P-256)", name)
            ));
        }
        found
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

    fn namespaces(
        &mut self,
        sections: toml::Table,
        extra: Vec<String>,
        public: Vec<String>,
    ) -> BTreeMap<String, NamespaceConfig> {
        let mut out = builtin_namespaces();
        for (name, v) in sections {
            if name != crate::channel::BROADCAST
                && let Err(e) = validate_namespace(&name)
            {
                self.problems
                    .push(format!("[namespaces.{name}]: bad namespace name: {e}"));
                continue;
            }
            if let Some(section) = self.section(&name, &v) {
                let ns = out.entry(name.clone()).or_default();
                self.apply_section(&name, ns, section);
            }
        }
        for name in extra {
            match validate_namespace(&name) {
                Ok(()) => {
                    out.entry(name).or_default();
                }
                Err(e) => self
                    .problems
                    .push(format!("namespaces: bad namespace {}: {e}", quote(&name))),
            }
        }
        let public: BTreeSet<String> = public.into_iter().collect();
        for name in public {
            match out.get_mut(&name) {
                Some(ns) => ns.public = true,
                None => self.problems.push(format!(
                    "public_namespaces: {} is not a namespace (known: {}); add it to namespaces first",
                    quote(&name),
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

    /// Reads a `[namespaces.<name>]` section with exact types; `None` if anything is wrong.
    fn section(&mut self, name: &str, value: &toml::Value) -> Option<NamespaceSection> {
        let file = self.file_name.clone();
        let toml::Value::Table(table) = value else {
            self.problems.push(format!(
                "[namespaces.{name}] in {file}: expected a section of settings, got {}",
                got_toml(value, false)
            ));
            return None;
        };
        let mut section = NamespaceSection::default();
        let mut ok = true;
        for (key, v) in table {
            let s = &mut section;
            ok &= match key.as_str() {
                "public" => self.field(name, key, v, "", &mut s.public),
                "presence" => self.field(name, key, v, "", &mut s.presence),
                "join_leave" => self.field(name, key, v, "", &mut s.join_leave),
                "publish" => self.field(name, key, v, "", &mut s.publish),
                "inbox" => self.field(name, key, v, "", &mut s.inbox),
                "history_size" => self.field(name, key, v, "MESSAGES", &mut s.history_size),
                "history_ttl_s" => self.field(name, key, v, "SECONDS", &mut s.history_ttl_s),
                _ => {
                    self.problems.push(format!(
                        "[namespaces.{name}] in {file}: unknown key `{key}` (known: {SECTION_KEYS})"
                    ));
                    false
                }
            };
        }
        ok.then_some(section)
    }

    /// Reads one key of a section into `slot`; false (and a problem) on a wrong type.
    fn field<T: Scalar>(
        &mut self,
        name: &str,
        key: &str,
        value: &toml::Value,
        unit: &str,
        slot: &mut Option<T>,
    ) -> bool {
        match <T as FieldType>::from_toml(value, false) {
            Ok(v) => {
                *slot = Some(v);
                true
            }
            Err(got) => {
                self.problems.push(format!(
                    "[namespaces.{name}] {key} in {}: expected {}, got {got}",
                    self.file_name,
                    T::expected(unit)
                ));
                false
            }
        }
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
                    "[namespaces.{name}] inbox {}: a Redis key name without whitespace",
                    quote(&inbox)
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
