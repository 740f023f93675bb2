//! The `fanout` command line as a user meets it: `check-config`, `serve` with a broken
//! configuration, `token`, the README's configuration table and the TOML config file.
//!
//! Every test runs the real binary. Environment variables named `FANOUT_*` and `RUST_LOG` are
//! removed from each child process so that the developer's shell cannot change the outcome.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use support::{Gateway, SECRET, unix_now};

const BIN: &str = env!("CARGO_BIN_EXE_fanout");

/// A secret long enough not to trigger the short-secret warning.
const LONG_SECRET: &str = "check-config-secret-do-not-print-0123456789";

/// What a finished `fanout` run left behind.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A `fanout` command with no `FANOUT_*` or `RUST_LOG` inherited from the test environment.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FANOUT_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `fanout` to completion (it must finish within `support::WAIT`).
fn fanout(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut child = command(args, env).spawn().expect("spawn fanout");
    let deadline = Instant::now() + support::WAIT;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "`fanout {}` did not exit within {:?}; stderr:\n{}",
                args.join(" "),
                support::WAIT,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("wait");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A file under the system temp directory, removed on drop (also when the test fails).
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn new(test: &str, contents: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("fanout-cli-{}-{test}.toml", std::process::id()));
        std::fs::write(&path, contents).expect("write temp config");
        TempFile { path }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A file of the repository, as an absolute path.
fn repo_file(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(rel)
        .to_str()
        .expect("utf-8 path")
        .to_owned()
}

/// The value `check-config` shows for `key` in its summary (`  listen   127.0.0.1:1`).
fn summary_value(stdout: &str, key: &str) -> Option<String> {
    stdout.lines().find_map(|line| {
        let (k, v) = line.trim_start().split_once(char::is_whitespace)?;
        (k == key).then(|| v.trim().to_owned())
    })
}

// ---------------------------------------------------------------------------------------------
// check-config

#[test]
fn check_config_accepts_a_valid_configuration_without_printing_secrets() {
    let file = TempFile::new(
        "valid",
        &format!(
            "jwt_secret = \"{LONG_SECRET}\"\napi_key = [\"file-api-key-1111\", \"file-api-key-2222\"]\n"
        ),
    );
    let short_secret = "hunter2-short";
    let runs = [
        // Secret and API keys from the file.
        (
            fanout(&["check-config", "--config", file.path()], &[]),
            vec![LONG_SECRET, "file-api-key-1111", "file-api-key-2222"],
        ),
        // Secret from the environment, API key from a flag.
        (
            fanout(
                &["check-config", "--api-key", "flag-api-key-3333"],
                &[("FANOUT_JWT_SECRET", LONG_SECRET)],
            ),
            vec![LONG_SECRET, "flag-api-key-3333"],
        ),
        // A short secret is a warning; the warning must not quote it.
        (
            fanout(
                &["check-config", "--jwt-secret", short_secret],
                &[("FANOUT_API_KEY", "env-api-key-4444,env-api-key-5555")],
            ),
            vec![short_secret, "env-api-key-4444", "env-api-key-5555"],
        ),
    ];
    for (run, secrets) in &runs {
        assert_eq!(run.code, Some(0), "{run}");
        assert!(run.stdout.contains("configuration is valid"), "{run}");
        for secret in secrets {
            assert!(
                !run.all().contains(secret),
                "check-config printed the secret {secret:?}:\n{run}"
            );
        }
    }
    assert_eq!(
        summary_value(&runs[0].0.stdout, "api_keys").as_deref(),
        Some("2 configured"),
        "{}",
        runs[0].0
    );
    assert!(
        runs[2].0.stdout.contains("warning: jwt_secret is"),
        "the short secret deserves a warning:\n{}",
        runs[2].0
    );
}

#[test]
fn check_config_lists_every_problem_in_one_run() {
    let file = TempFile::new(
        "problems",
        "bogus_key = 1\n\n[namespaces.agent]\ncolour = \"red\"\n",
    );
    let run = fanout(
        &[
            "check-config",
            "--config",
            file.path(),
            "--listen",
            "nowhere",
            "--public-namespaces",
            "chat",
            "--write-delay-ms",
            "5000",
        ],
        &[("FANOUT_HEARTBEAT_S", "0")],
    );
    assert_eq!(run.code, Some(1), "{run}");
    let out = run.all();
    let problems: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- "))
        .collect();
    let expected: [(&str, &[&str]); 7] = [
        ("bad --listen flag", &["--listen", "nowhere"]),
        (
            "a write delay of seconds",
            &["write_delay_ms (5000)", "at most 1000"],
        ),
        (
            "heartbeat 0 from the environment",
            &["FANOUT_HEARTBEAT_S", "at least 1"],
        ),
        ("unknown key in the file", &[file.path(), "bogus_key"]),
        (
            "unknown field of a namespace section",
            &[file.path(), "[namespaces.agent]", "colour"],
        ),
        (
            "unknown public namespace",
            &["public_namespaces", "\"chat\""],
        ),
        ("no JWT key", &["no token verification key"]),
    ];
    for (what, needles) in expected {
        assert!(
            problems
                .iter()
                .any(|p| needles.iter().all(|n| p.contains(n))),
            "no problem reported for {what} (a line with all of {needles:?}):\n{run}"
        );
    }
    let header = format!("invalid configuration ({} problems)", problems.len());
    assert!(
        out.contains(&header),
        "header should count every listed problem ({header:?}):\n{run}"
    );
    assert!(!out.contains("panicked"), "{run}");
}

#[test]
fn settings_take_precedence_flag_over_env_over_file_over_default() {
    struct Case {
        name: &'static str,
        file: &'static str,
        env: &'static [(&'static str, &'static str)],
        flags: &'static [&'static str],
        listen: &'static str,
        heartbeat_s: &'static str,
    }
    let cases = [
        Case {
            name: "defaults",
            file: "",
            env: &[],
            flags: &[],
            listen: "0.0.0.0:8080",
            heartbeat_s: "25",
        },
        Case {
            name: "file-only",
            file: "listen = \"127.0.0.1:1001\"\nheartbeat_s = 11\n",
            env: &[],
            flags: &[],
            listen: "127.0.0.1:1001",
            heartbeat_s: "11",
        },
        Case {
            name: "env-over-file",
            file: "listen = \"127.0.0.1:1001\"\nheartbeat_s = 11\n",
            env: &[("FANOUT_LISTEN", "127.0.0.1:2002")],
            flags: &[],
            listen: "127.0.0.1:2002",
            heartbeat_s: "11",
        },
        Case {
            name: "flag-over-env-over-file",
            file: "listen = \"127.0.0.1:1001\"\nheartbeat_s = 11\n",
            env: &[
                ("FANOUT_LISTEN", "127.0.0.1:2002"),
                ("FANOUT_HEARTBEAT_S", "22"),
            ],
            flags: &["--listen", "127.0.0.1:3003"],
            listen: "127.0.0.1:3003",
            heartbeat_s: "22",
        },
        Case {
            name: "flag-over-file",
            file: "listen = \"127.0.0.1:1001\"\nheartbeat_s = 11\n",
            env: &[],
            flags: &["--listen", "127.0.0.1:3003", "--heartbeat-s", "33"],
            listen: "127.0.0.1:3003",
            heartbeat_s: "33",
        },
        Case {
            name: "flag-over-env",
            file: "",
            env: &[
                ("FANOUT_LISTEN", "127.0.0.1:2002"),
                ("FANOUT_HEARTBEAT_S", "22"),
            ],
            flags: &["--heartbeat-s", "33"],
            listen: "127.0.0.1:2002",
            heartbeat_s: "33",
        },
    ];
    for case in cases {
        let file = TempFile::new(&format!("precedence-{}", case.name), case.file);
        let mut args = vec![
            "check-config",
            "--config",
            file.path(),
            "--jwt-secret",
            LONG_SECRET,
        ];
        args.extend_from_slice(case.flags);
        let run = fanout(&args, case.env);
        assert_eq!(run.code, Some(0), "case {}: {run}", case.name);
        assert_eq!(
            summary_value(&run.stdout, "listen").as_deref(),
            Some(case.listen),
            "case {}: listen\n{run}",
            case.name
        );
        assert_eq!(
            summary_value(&run.stdout, "heartbeat_s").as_deref(),
            Some(case.heartbeat_s),
            "case {}: heartbeat_s\n{run}",
            case.name
        );
    }
}

/// Fragments of Rust's own error and debug output, which a person should never have to read.
const RUST_OUTPUT: &[&str] = &[
    "invalid digit",
    "ParseIntError",
    "Some(",
    "None",
    "Err(",
    "kind:",
    "invalid type:",
    "expected u64",
    "expected usize",
    "expected u32",
    "panicked",
];

/// Runs `check-config --config <file contents> --jwt-secret …` plus `args` and `env`; asserts
/// that it fails with exactly one problem, holding every one of `needles`, and that nothing it
/// printed is Rust's own output. The file's path is among the needles when `in_file`.
fn assert_one_problem(
    case: &str,
    (file, in_file): (&str, bool),
    args: &[&str],
    env: &[(&str, &str)],
    needles: &[&str],
) {
    let file = TempFile::new(&format!("type-{case}"), file);
    let mut all_args = vec![
        "check-config",
        "--config",
        file.path(),
        "--jwt-secret",
        LONG_SECRET,
    ];
    all_args.extend_from_slice(args);
    let run = fanout(&all_args, env);
    assert_eq!(run.code, Some(1), "case {case}: {run}");
    let problems: Vec<&str> = run
        .stdout
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- "))
        .collect();
    assert_eq!(
        problems.len(),
        1,
        "case {case}: one problem expected:\n{run}"
    );
    let path = [file.path()];
    let needles = needles.iter().chain(path.iter().filter(|_| in_file));
    for needle in needles {
        assert!(
            problems[0].contains(needle),
            "case {case}: {needle:?} missing from the problem:\n{run}"
        );
    }
    for rust in RUST_OUTPUT {
        assert!(
            !run.all().contains(rust),
            "case {case}: Rust output {rust:?} in:\n{run}"
        );
    }
}

#[test]
fn a_value_of_the_wrong_type_in_the_config_file_is_a_clear_error() {
    let cases: [(&str, &str, &[&str]); 7] = [
        (
            "string-for-integer",
            "heartbeat_s = \"25\"\n",
            &[
                "heartbeat_s",
                "expected an integer number of seconds",
                "got a string \"25\"",
            ],
        ),
        (
            "fraction-for-integer",
            "heartbeat_s = 2.5\n",
            &[
                "heartbeat_s",
                "expected an integer number of seconds",
                "got 2.5",
            ],
        ),
        (
            "number-for-secret-list",
            "api_key = 5\n",
            &["api_key", "expected a list of strings", "got a number"],
        ),
        (
            "string-for-list",
            "allowed_origins = \"https://app.example.com\"\n",
            &[
                "allowed_origins",
                "expected a list of strings",
                "got a string \"https://app.example.com\"",
            ],
        ),
        (
            "number-for-string",
            "log_level = 3\n",
            &["log_level", "expected a string", "got 3"],
        ),
        (
            "negative-number",
            "max_subscriptions = -5\n",
            &["max_subscriptions", "expected an integer", "got -5"],
        ),
        (
            "string-in-a-namespace-section",
            "[namespaces.dag]\nhistory_size = \"10\"\nhistory_ttl_s = 60\n",
            &[
                "[namespaces.dag]",
                "history_size",
                "expected an integer",
                "got a string \"10\"",
            ],
        ),
    ];
    for (case, file, needles) in cases {
        assert_one_problem(case, (file, true), &[], &[], needles);
    }
}

#[test]
fn a_secret_of_the_wrong_type_is_not_quoted() {
    let file = TempFile::new("type-secret", "api_key = [\"secret-api-key-7777\", 8888]\n");
    let run = fanout(
        &[
            "check-config",
            "--config",
            file.path(),
            "--jwt-secret",
            LONG_SECRET,
        ],
        &[],
    );
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stdout.contains("api_key"), "{run}");
    for secret in ["secret-api-key-7777", "8888", LONG_SECRET] {
        assert!(!run.all().contains(secret), "{secret:?} printed:\n{run}");
    }
}

#[test]
fn a_flag_or_environment_variable_of_the_wrong_type_is_a_clear_error() {
    type Case<'a> = (
        &'a str,
        &'a [&'a str],
        &'a [(&'a str, &'a str)],
        &'a [&'a str],
    );
    let cases: [Case; 5] = [
        (
            "fraction-flag",
            &["--heartbeat-s", "2.5"],
            &[],
            &[
                "--heartbeat-s",
                "expected an integer number of seconds",
                "got \"2.5\"",
            ],
        ),
        (
            "word-in-env",
            &[],
            &[("FANOUT_MAX_SUBSCRIPTIONS", "many")],
            &[
                "FANOUT_MAX_SUBSCRIPTIONS",
                "expected an integer",
                "got \"many\"",
            ],
        ),
        (
            "unknown-log-format",
            &["--log-format", "xml"],
            &[],
            &["--log-format", "expected `text` or `json`", "got \"xml\""],
        ),
        (
            "unsupported-algorithm-in-env",
            &[],
            &[("FANOUT_JWT_ALGORITHM", "EdDSA")],
            &["FANOUT_JWT_ALGORITHM", "HS256", "got \"EdDSA\""],
        ),
        (
            "too-large-for-the-type",
            &["--max-frames-per-s", "99999999999"],
            &[],
            &["--max-frames-per-s", "expected an integer", "99999999999"],
        ),
    ];
    for (case, args, env, needles) in cases {
        // A value of the right type in the file is overridden, wrong type and all.
        let file = "heartbeat_s = 11\nmax_subscriptions = 12\nlog_format = \"json\"\n";
        assert_one_problem(case, (file, false), args, env, needles);
    }
}

// ---------------------------------------------------------------------------------------------
// serve

#[test]
fn serve_with_an_invalid_configuration_exits_2_and_explains_why() {
    let started = Instant::now();
    let run = fanout(
        &["serve", "--listen", "nowhere", "--jwt-secret", LONG_SECRET],
        &[],
    );
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(run.stderr.contains("invalid configuration"), "{run}");
    assert!(run.stderr.contains("--listen"), "{run}");
    assert!(!run.all().contains("panicked"), "{run}");
    assert!(!run.all().contains(LONG_SECRET), "{run}");
}

#[test]
fn check_config_explains_redis_urls_it_cannot_use() {
    let run = fanout(
        &[
            "check-config",
            "--jwt-secret",
            LONG_SECRET,
            "--redis-url",
            "rediss://:pw@redis.example:6380/0#insecure",
        ],
        &[],
    );
    assert_ne!(run.code, Some(0), "{run}");
    assert!(
        run.stdout.contains("#insecure") && run.stdout.contains("not supported"),
        "certificate checks cannot be turned off: {run}"
    );
    assert!(
        !run.all().contains(":pw@"),
        "the password is never printed: {run}"
    );
    let run = fanout(
        &[
            "check-config",
            "--jwt-secret",
            LONG_SECRET,
            "--redis-url",
            "http://redis:6379",
        ],
        &[],
    );
    assert!(run.stdout.contains("unknown scheme \"http\""), "{run}");
}

#[test]
fn check_config_describes_redis_over_tls() {
    let pki = support::TestPki::create();
    let ca = pki.ca_cert().display().to_string();
    let cert = pki.client_cert().display().to_string();
    let tls = pki.gateway_args();
    let mut args = vec![
        "check-config",
        "--jwt-secret",
        LONG_SECRET,
        "--redis-url",
        "rediss://:pw@redis.example:6380/0",
    ];
    args.extend(tls.iter().map(String::as_str));
    let run = fanout(&args, &[]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout.contains(&format!(
            "redis.example:6380 (prefix \"fanout:\"); TLS, server certificate checked against {ca}, client certificate {cert}"
        )),
        "{run}"
    );
    assert!(!run.all().contains(":pw@"), "{run}");
    assert!(!run.all().contains("PRIVATE KEY"), "{run}");

    // Without a CA file, the built-in public roots.
    let run = fanout(
        &[
            "check-config",
            "--jwt-secret",
            LONG_SECRET,
            "--redis-url",
            "rediss://redis.example:6380",
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout
            .contains("TLS, server certificate checked against the built-in public roots"),
        "{run}"
    );
}

#[test]
fn check_config_refuses_tls_files_that_cannot_work() {
    let pki = support::TestPki::create();
    let path = |p: PathBuf| p.display().to_string();
    let (ca, cert, key) = (
        path(pki.ca_cert()),
        path(pki.client_cert()),
        path(pki.client_key()),
    );
    let not_pem = path(pki.dir().join("client.ext"));
    let missing = path(pki.dir().join("missing.pem"));
    let server_key = path(pki.server_key());
    let check = |url: &str, files: &[(&str, &str)]| {
        let mut args = vec![
            "check-config",
            "--jwt-secret",
            LONG_SECRET,
            "--redis-url",
            url,
        ];
        for (flag, value) in files {
            args.extend([*flag, *value]);
        }
        let run = fanout(&args, &[]);
        assert_ne!(run.code, Some(0), "{run}");
        run.stdout
    };
    // The first base64 line of every key and certificate: never in a message.
    let contents: Vec<String> = [
        pki.ca_cert(),
        pki.client_cert(),
        pki.client_key(),
        pki.server_key(),
    ]
    .iter()
    .map(|p| {
        let pem = std::fs::read_to_string(p).unwrap();
        pem.lines().nth(1).unwrap().to_owned()
    })
    .collect();
    let tls = "rediss://127.0.0.1:6380";
    for (files, expected) in [
        (
            vec![("--redis-tls-ca-file", missing.as_str())],
            format!("redis_tls_ca_file {missing}: cannot read"),
        ),
        (
            vec![("--redis-tls-ca-file", not_pem.as_str())],
            format!("redis_tls_ca_file {not_pem}: holds no PEM certificate"),
        ),
        (
            vec![("--redis-tls-cert-file", cert.as_str())],
            "redis_tls_cert_file and redis_tls_key_file go together".to_owned(),
        ),
        (
            vec![
                ("--redis-tls-cert-file", cert.as_str()),
                ("--redis-tls-key-file", server_key.as_str()),
            ],
            format!(
                "redis_tls_cert_file {cert} and redis_tls_key_file {server_key} are not a usable client certificate and key"
            ),
        ),
        (
            vec![
                ("--redis-tls-cert-file", cert.as_str()),
                ("--redis-tls-key-file", ca.as_str()),
            ],
            format!("redis_tls_key_file {ca}: not a PEM private key"),
        ),
    ] {
        let out = check(tls, &files);
        assert!(out.contains(&expected), "{files:?}: {out}");
        for secret in &contents {
            assert!(
                !out.contains(secret.as_str()),
                "no file contents in messages: {out}"
            );
        }
    }
    // TLS files with a plain URL would silently not be used: refused.
    let out = check("redis://127.0.0.1:6379", &[("--redis-tls-ca-file", &ca)]);
    assert!(out.contains("only apply to a rediss:// redis_url"), "{out}");
    let run = fanout(
        &[
            "check-config",
            "--jwt-secret",
            LONG_SECRET,
            "--redis-tls-key-file",
            &key,
        ],
        &[],
    );
    assert_ne!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("redis_url is not set"), "{run}");
}

// ---------------------------------------------------------------------------------------------
// token

/// Runs `fanout token` and returns the one line it printed.
fn mint(args: &[&str]) -> String {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    let run = fanout(&all, &[]);
    assert_eq!(run.code, Some(0), "{run}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "expected one token line:\n{run}");
    let token = lines[0].trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");
    token
}

#[tokio::test]
async fn a_minted_channel_token_grants_its_one_channel_on_top_of_the_connection_token() {
    let channel_token = mint(&[
        "--sub",
        "42",
        "--channel",
        "room:doc-7",
        "--jti",
        "grant-1",
        "--ttl",
        "10m",
        "--jwt-secret",
        SECRET,
    ]);
    let gw = Gateway::start(&[]);
    let (mut client, _) = gw.connect(&support::token("42", &[], 3600)).await;
    let refused = client
        .request(json!({"type": "subscribe", "channel": "room:doc-7"}))
        .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let granted = client
        .request(json!({"type": "subscribe", "channel": "room:doc-7", "token": channel_token}))
        .await;
    assert_eq!(granted["type"], "subscribed", "{granted}");
    // A bad channel name is refused before anything is signed.
    let run = fanout(
        &[
            "token",
            "--sub",
            "42",
            "--channel",
            "nope",
            "--jwt-secret",
            SECRET,
        ],
        &[],
    );
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("--channel"), "{run}");
}

#[tokio::test]
async fn a_minted_hs256_token_carries_its_claims_and_opens_exactly_its_channels() {
    let token = mint(&[
        "--sub",
        "42",
        "--channels",
        "room:*,dag:7",
        "--ttl",
        "1h",
        "--jwt-secret",
        SECRET,
    ]);

    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .expect("token verifies with the same secret")
    .claims;
    assert_eq!(claims["sub"], "42", "{claims}");
    assert_eq!(claims["channels"], json!(["room:*", "dag:7"]), "{claims}");
    let exp = claims["exp"].as_i64().expect("numeric exp");
    let expected = unix_now() + 3600;
    assert!(
        (exp - expected).abs() <= 60,
        "exp {exp} should be about now+3600 ({expected})"
    );

    let gw = Gateway::start(&[]);
    let (mut client, ack) = gw.connect(&token).await;
    assert_eq!(ack["user"], "42");
    client.subscribe("room:lobby").await;
    client.subscribe("dag:7").await;
    let reply = client
        .request(json!({"type": "subscribe", "channel": "dag:8"}))
        .await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "forbidden", "{reply}");
}

#[tokio::test]
async fn an_rs256_token_needs_the_private_key_and_then_opens_the_gateway() {
    let public = repo_file("tests/fixtures/rsa_public.pem");
    let private = repo_file("tests/fixtures/rsa_private.pem");

    let run = fanout(&["token", "--sub", "7", "--jwt-public-key", &public], &[]);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("--private-key"), "{run}");
    assert!(run.stdout.trim().is_empty(), "no token expected:\n{run}");

    let token = mint(&[
        "--sub",
        "7",
        "--channels",
        "room:*",
        "--jwt-public-key",
        &public,
        "--private-key",
        &private,
    ]);
    let header = jsonwebtoken::decode_header(&token).expect("token header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);

    let gw = Gateway::start_with(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--jwt-public-key",
            &public,
            "--node-id",
            "test-node",
        ],
        &[],
    );
    let (mut client, ack) = gw.connect(&token).await;
    assert_eq!(ack["user"], "7");
    client.subscribe("room:lobby").await;
}

// ---------------------------------------------------------------------------------------------
// README

const TABLE_START: &str = "<!-- config-table:start -->";
const TABLE_END: &str = "<!-- config-table:end -->";

/// The text between the README's config-table marker lines, without the blank lines that may
/// surround the table; line endings normalised to `\n`.
fn config_table_section(readme: &str) -> Result<String, String> {
    let readme = readme.replace("\r\n", "\n");
    let lines: Vec<&str> = readme.lines().collect();
    let find = |marker: &str| -> Result<usize, String> {
        let found: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.trim() == marker)
            .map(|(i, _)| i)
            .collect();
        match found.as_slice() {
            [i] => Ok(*i),
            [] => Err(format!("README.md has no line `{marker}`")),
            _ => Err(format!("README.md has the line `{marker}` more than once")),
        }
    };
    let start = find(TABLE_START)?;
    let end = find(TABLE_END)?;
    if end <= start {
        return Err(format!(
            "README.md: `{TABLE_END}` comes before `{TABLE_START}`"
        ));
    }
    let mut body = &lines[start + 1..end];
    while let [first, rest @ ..] = body
        && first.trim().is_empty()
    {
        body = rest;
    }
    while let [rest @ .., last] = body
        && last.trim().is_empty()
    {
        body = rest;
    }
    Ok(body.iter().map(|l| format!("{l}\n")).collect())
}

#[test]
fn the_readme_configuration_table_matches_the_code() {
    const FIX: &str = "regenerate it: run `scripts/update-readme-table` (or paste the output of `cargo run -q -- config-reference`) its output \
                       between the `<!-- config-table:start -->` and `<!-- config-table:end -->` \
                       lines of README.md";
    let run = fanout(&["config-reference"], &[]);
    assert_eq!(run.code, Some(0), "{run}");
    let expected = run.stdout.replace("\r\n", "\n");
    assert!(expected.starts_with("| flag |"), "{run}");

    let path = repo_file("README.md");
    let readme = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read {path}: {e}; the README must hold the configuration table: {FIX}")
    });
    let actual = config_table_section(&readme).unwrap_or_else(|e| panic!("{e}; {FIX}"));
    if actual != expected {
        let first_difference = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, e)| a != e)
            .map_or_else(
                || {
                    format!(
                        "README has {} lines, config-reference prints {}",
                        actual.lines().count(),
                        expected.lines().count()
                    )
                },
                |i| {
                    format!(
                        "first difference at table line {}:\n  README:           {}\n  config-reference: {}",
                        i + 1,
                        actual.lines().nth(i).unwrap_or(""),
                        expected.lines().nth(i).unwrap_or("")
                    )
                },
            );
        panic!("the README configuration table is out of date; {FIX}.\n{first_difference}");
    }
}

#[test]
fn the_readme_table_extraction_finds_exactly_the_marked_section() {
    let readme = "# Title\n\ntext\n\n<!-- config-table:start -->\n\n| a | b |\r\n|---|---|\n| 1 | 2 |\n\n<!-- config-table:end -->\n\nmore\n";
    assert_eq!(
        config_table_section(readme).unwrap(),
        "| a | b |\n|---|---|\n| 1 | 2 |\n"
    );
    assert_eq!(
        config_table_section("<!-- config-table:start -->\n<!-- config-table:end -->\n").unwrap(),
        ""
    );
    assert!(config_table_section("# no markers\n").is_err());
    assert!(config_table_section("<!-- config-table:start -->\n| a |\n").is_err());
    assert!(
        config_table_section("<!-- config-table:end -->\n<!-- config-table:start -->\n").is_err()
    );
}

#[test]
fn check_config_explains_the_internal_listener() {
    for (case, args, needles) in [
        (
            "not an address",
            &["--internal-listen", "localhost"][..],
            &["internal_listen", "\"localhost\"", "127.0.0.1:9090"][..],
        ),
        (
            "the public port",
            &[
                "--listen",
                "0.0.0.0:8080",
                "--internal-listen",
                "127.0.0.1:8080",
            ][..],
            &["internal_listen (127.0.0.1:8080)", "same port"][..],
        ),
    ] {
        assert_one_problem(case, ("", false), args, &[], needles);
    }
    let file = TempFile::new("internal-listen", "internal_listen = \"0.0.0.0:9090\"\n");
    let run = fanout(
        &[
            "check-config",
            "--config",
            file.path(),
            "--jwt-secret",
            LONG_SECRET,
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(
        summary_value(&run.stdout, "internal_listen").as_deref(),
        Some("0.0.0.0:9090 (API and operations endpoints)"),
        "{run}"
    );
    // Empty is off, as unset; api_on_public without it is a warning, not an error.
    let run = fanout(
        &[
            "check-config",
            "--jwt-secret",
            LONG_SECRET,
            "--api-on-public",
        ],
        &[("FANOUT_INTERNAL_LISTEN", "")],
    );
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        summary_value(&run.stdout, "internal_listen").is_some_and(|v| v.starts_with("off")),
        "{run}"
    );
    assert!(
        run.stdout
            .contains("warning: api_on_public has no effect without internal_listen"),
        "{run}"
    );
}

#[test]
fn config_schema_prints_every_setting_of_the_file() {
    let run = fanout(&["config-schema"], &[]);
    assert_eq!(run.code, Some(0), "{run}");
    let schema: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(schema["additionalProperties"], false);
    let reference = fanout(&["config-reference"], &[]).stdout;
    // Every TOML key of the README table is a property, and no other.
    let keys: Vec<&str> = reference
        .lines()
        .skip(2)
        .filter_map(|l| l.split('`').nth(5))
        .collect();
    let properties = schema["properties"].as_object().expect("properties");
    assert_eq!(properties.len(), keys.len(), "{keys:?}");
    for key in keys {
        assert!(properties.contains_key(key), "{key} missing");
    }
    assert_eq!(properties["internal_listen"]["type"], "string");
    assert_eq!(properties["max_connections"]["minimum"], 1);
}

// ---------------------------------------------------------------------------------------------
// config file

#[test]
fn the_readme_example_configuration_file_is_valid() {
    let readme = std::fs::read_to_string(repo_file("README.md")).expect("README.md");
    let example = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README.md has a ```toml example");
    let file = TempFile::new(
        "readme-example",
        &example.replace(
            "jwt_secret = \"…\"",
            &format!("jwt_secret = \"{LONG_SECRET}\""),
        ),
    );
    let run = fanout(&["check-config", "--config", file.path()], &[]);
    assert_eq!(run.code, Some(0), "the README's example:\n{example}\n{run}");
}

#[tokio::test]
async fn a_public_namespace_from_the_config_file_needs_no_grant() {
    let file = TempFile::new("public-namespace", "[namespaces.agent]\npublic = true\n");
    // check-config first: its explanation is clearer than a gateway that does not start.
    let run = fanout(
        &[
            "check-config",
            "--config",
            file.path(),
            "--jwt-secret",
            SECRET,
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(
        summary_value(&run.stdout, "namespaces").as_deref(),
        Some(
            "agent (public), broadcast, dag (history 1000 for 3600 s), room, user (history 100 for 600 s)"
        ),
        "{run}"
    );
    let gw = Gateway::start_with(
        &[
            "serve",
            "--config",
            file.path(),
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
            "--node-id",
            "test-node",
        ],
        &[],
    );
    let mut client = gw.connect_as("1", &[]).await;
    client.subscribe("agent:bot-1").await;
    // Only `agent` became public.
    let reply = client
        .request(json!({"type": "subscribe", "channel": "room:lobby"}))
        .await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
}

/// `check-config --probe` connects as a node would and says what it found, or what failed.
#[tokio::test]
async fn check_config_probe_reaches_redis_or_says_why_not() {
    let redis = support::RedisServer::start();
    let url = redis.url();
    let probe = |url: &str, extra: &[&str]| {
        let mut args = vec![
            "check-config",
            "--probe",
            "--jwt-secret",
            LONG_SECRET,
            "--redis-url",
            url,
        ];
        args.extend_from_slice(extra);
        fanout(&args, &[])
    };
    let run = probe(&url, &[]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(
        run.stdout
            .contains("answers over plain TCP (no TLS): Redis 7."),
        "{run}"
    );
    assert!(run.stdout.contains("library is not loaded yet"), "{run}");

    // Once a node has started on it, the library is there.
    let _node = Gateway::start_on_redis("n1", &redis, &[]).await;
    let run = probe(&url, &[]);
    assert!(run.stdout.contains("library is loaded"), "{run}");

    // Nothing listening.
    let nobody = format!("redis://127.0.0.1:{}", support::free_port());
    let run = probe(&nobody, &[]);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stdout.contains("failed: connect"), "{run}");

    // TLS with a CA that did not sign the server's certificate: the hint names the setting.
    let pki = support::TestPki::create();
    let other = support::TestPki::create();
    let tls = support::RedisServer::start_tls(support::TlsServer {
        pki: &pki,
        require_client_cert: false,
        password: Some("s3cret"),
    });
    let ca = other.ca_cert().display().to_string();
    let run = probe(&tls.url(), &["--redis-tls-ca-file", &ca]);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stdout.contains("redis_tls_ca_file"), "{run}");
    let ca = pki.ca_cert().display().to_string();
    let run = probe(&tls.url(), &["--redis-tls-ca-file", &ca]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.contains("answers over TLS"), "{run}");
    assert!(!run.all().contains("s3cret"), "{run}");
}
