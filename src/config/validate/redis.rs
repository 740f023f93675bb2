//! The Redis settings checked together: one server or a cluster, TLS files, prefix, pools.

use std::path::PathBuf;
use std::time::Duration;

use super::{TlsFiles, Validator};
use crate::config::values::quote;
use crate::config::{RedisConfig, RedisTls, redis_tls};

impl Validator {
    /// `Some(None)` when Redis is not configured; `None` on a problem.
    pub(super) fn redis(
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
    pub(super) fn redis_cluster(
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
}
