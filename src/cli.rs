//! The `fanout` command line: `serve`, `check-config`, `token` (and, hidden, the generated
//! documentation: `config-reference`, `config-schema`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use jsonwebtoken::{Algorithm, EncodingKey};

use crate::auth::{TokenRequest, mint};
use crate::config::{Config, LogFormat, SettingsArgs, reference_table, settings_schema};
use crate::server::Server;

#[derive(Debug, Parser)]
#[command(
    name = "fanout",
    version,
    about = "Real-time WebSocket fan-out gateway",
    long_about = "Real-time WebSocket fan-out gateway.\n\nEvery setting is a flag, a FANOUT_* environment variable and a key of the --config TOML file; precedence is flag > environment > file > default."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (on the in-process broker).
    Serve {
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Validate a configuration and explain every problem in it.
    CheckConfig {
        /// Also connect to the configured Redis as a node would (TLS and password included):
        /// PING, its version (7 or later), and whether the function library is loaded.
        #[arg(long)]
        probe: bool,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Print a signed connection token (or, with --channel, a channel token), for
    /// development and tests.
    Token {
        /// The user id (`sub` claim).
        #[arg(long)]
        sub: String,
        /// Mint a channel token for this one channel (`channel` claim): sent with the
        /// `subscribe` of that channel, it grants it whatever the connection token says.
        #[arg(long, conflicts_with_all = ["channels", "publish"])]
        channel: Option<String>,
        /// A token id (`jti` claim), to revoke this one token later.
        #[arg(long)]
        jti: Option<String>,
        /// Channels the token may subscribe to: exact names or prefixes ending in `*`.
        #[arg(long, value_delimiter = ',')]
        channels: Vec<String>,
        /// Channels the token may publish to (same patterns).
        #[arg(long, value_delimiter = ',')]
        publish: Vec<String>,
        /// Lifetime, e.g. `30m`, `1h`, `7d`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// JSON value for the `info` claim.
        #[arg(long)]
        info: Option<String>,
        /// `aud` claim (default: the first jwt_audience, if any).
        #[arg(long)]
        aud: Option<String>,
        /// `iss` claim (default: the first jwt_issuer, if any).
        #[arg(long)]
        iss: Option<String>,
        /// PEM private key, needed with jwt_public_key (RS*/PS*/ES* algorithms).
        #[arg(long, value_name = "PEM_FILE")]
        private_key: Option<PathBuf>,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Print the configuration reference as a Markdown table (used for the README).
    #[command(hide = true)]
    ConfigReference,
    /// Print the JSON Schema of the TOML configuration file (used for the Helm chart's
    /// values.schema.json).
    #[command(hide = true)]
    ConfigSchema,
}

/// Runs the command line; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { settings } => serve(settings),
        Command::CheckConfig { settings, probe } => check_config(settings, probe),
        Command::Token {
            sub,
            channel,
            jti,
            channels,
            publish,
            ttl,
            info,
            aud,
            iss,
            private_key,
            settings,
        } => {
            let request = TokenRequest {
                sub,
                channels,
                publish,
                ttl,
                info: None,
                audience: aud,
                issuer: iss,
                channel,
                jti,
            };
            token(settings, request, info, private_key)
        }
        Command::ConfigReference => {
            print!("{}", reference_table());
            ExitCode::SUCCESS
        }
        Command::ConfigSchema => {
            use std::io::Write;
            let printed = serde_json::to_string_pretty(&settings_schema())
                .map_err(std::io::Error::other)
                .and_then(|text| writeln!(std::io::stdout(), "{text}"));
            match printed {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cannot print the schema: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn load(settings: &SettingsArgs) -> Result<Config, ExitCode> {
    settings.resolve().map_err(|problems| {
        eprint!("{problems}");
        for w in &problems.warnings {
            eprintln!("  warning: {w}");
        }
        eprintln!("run `fanout check-config --help` for the list of settings");
        ExitCode::from(2)
    })
}

fn serve(settings: SettingsArgs) -> ExitCode {
    let config = match load(&settings) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _log_writer = init_logging(&config);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    // Every connection is a file descriptor: use all the process may have.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if (limit as usize) < config.limits.max_connections + 1024 => tracing::warn!(
            fd_limit = limit,
            max_connections = config.limits.max_connections,
            "the file-descriptor limit is below max_connections; raise it (ulimit -Hn, LimitNOFILE)"
        ),
        Ok(limit) => tracing::debug!(fd_limit = limit, "file-descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the file-descriptor limit"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Before anything is announced: a signal that arrives once the node says it is
        // listening must be a shutdown, never the default action (termination).
        let signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return ExitCode::FAILURE;
            }
        };
        let listen = config.listen;
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%listen, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        let addr = server.local_addr().map_or(listen, |a| a);
        let node = server.node();
        // The API and the operations endpoints, when not on `addr`.
        let internal = server
            .internal_addr()
            .and_then(Result::ok)
            .or(node.config.internal_listen);
        tracing::info!(
            %addr,
            internal = internal.map(tracing::field::display),
            node = %node.config.node_id,
            broker = node.hub.broker().kind(),
            "listening"
        );
        match server.run(signals.shutdown()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGTERM and SIGINT, listened to from start-up on.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    #[cfg(not(unix))]
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }

    /// Resolves on the first SIGTERM or SIGINT (graceful drain); a second one ends the
    /// process at once, whatever the drain is waiting for.
    async fn shutdown(mut self) {
        self.recv().await;
        tokio::spawn(async move {
            self.recv().await;
            eprintln!("second shutdown signal: exiting without finishing the drain");
            std::process::exit(1);
        });
    }
}

/// Logs go through a background writer that drops lines rather than wait: a stalled or
/// closed log pipe (`fanout serve | head`) must never block a request or the drain. The
/// returned guard flushes what is buffered when `serve` returns.
fn init_logging(config: &Config) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    use std::io::IsTerminal;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let _ = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    guard
}
fn check_config(settings: SettingsArgs, probe: bool) -> ExitCode {
    match settings.resolve() {
        Ok(config) => {
            println!("configuration is valid");
            for w in &config.warnings {
                println!("  warning: {w}");
            }
            print!("{}", config.summary());
            if probe {
                return probe_redis(&config);
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            print!("{problems}");
            for w in &problems.warnings {
                println!("  warning: {w}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `check-config --probe`: connects to the configured Redis and says what it found.
fn probe_redis(config: &Config) -> ExitCode {
    let Some(redis) = &config.redis else {
        println!("probe: no redis_url: this node runs the embedded broker, nothing to probe");
        return ExitCode::SUCCESS;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("probe: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = redis.display_addr();
    match runtime.block_on(crate::broker::probe_redis(redis)) {
        Ok(report) => {
            println!(
                "probe: redis at {addr} answers over {}: Redis {}",
                redis.describe_transport(),
                report.version
            );
            if report.library_loaded {
                println!("probe: the fanout function library is loaded");
            } else {
                println!(
                    "probe: the fanout function library is not loaded yet (the first node to start loads it)"
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("probe: redis at {addr} failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn token(
    settings: SettingsArgs,
    mut request: TokenRequest,
    info: Option<String>,
    private_key: Option<PathBuf>,
) -> ExitCode {
    let config = match load(&settings) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(channel) = &request.channel
        && let Err(e) = crate::channel::Channel::parse(channel)
    {
        eprintln!("--channel {channel:?}: {e}");
        return ExitCode::from(2);
    }
    if let Some(info) = info {
        match serde_json::from_str(&info) {
            Ok(v) => request.info = Some(v),
            Err(e) => {
                eprintln!("--info must be JSON: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let key = match (&config.jwt.encoding_key, private_key) {
        (Some(key), _) => key.clone(),
        (None, Some(path)) => match signing_key(&config, &path) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("--private-key {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        (None, None) => {
            eprintln!(
                "tokens for {:?} are signed with a private key: pass --private-key <PEM_FILE>",
                config.jwt.algorithm
            );
            return ExitCode::from(2);
        }
    };
    match mint(&config.jwt, &key, &request) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot sign the token: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads a private key and checks that the configured public key verifies what it signs.
fn signing_key(config: &Config, path: &PathBuf) -> Result<EncodingKey, String> {
    let alg = config.jwt.algorithm;
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .map_err(|_| format!("not a PEM private key for {alg:?}"))?;
    let probe = TokenRequest {
        sub: "key-check".into(),
        ttl: Duration::from_secs(60),
        ..TokenRequest::default()
    };
    let token = mint(&config.jwt, &key, &probe).map_err(|e| format!("cannot sign: {e}"))?;
    crate::auth::Verifier::new(&config.jwt)
        .verify(&token)
        .map_err(|_| "does not match the configured jwt_public_key".to_owned())?;
    Ok(key)
}
