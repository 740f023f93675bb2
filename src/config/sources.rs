//! Where settings come from: flags, `FANOUT_*` environment variables, the TOML file, defaults.
//!
//! This file exists to apply the precedence (flag > environment > file > default) once, for
//! every setting alike, and to say in each message where a wrong value came from
//! (`--listen`, `FANOUT_HEARTBEAT_S`, `` `heartbeat_s` in fanout.toml ``). Flags and
//! environment variables reach us as text (clap does not parse them: a wrong one must be one
//! problem among all the others, not the end of the run); `values.rs` gives them their types.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};

use super::settings::{SETTINGS, Setting, SettingSource, find_setting};
use super::values::FieldType;

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
}

/// The three sources of one run, read setting by setting; collects problems.
pub(super) struct Sources<'a> {
    args: &'a SettingsArgs,
    /// The file's settings (known keys only).
    file: toml::Table,
    /// The file's `[namespaces.<name>]` sections, by name.
    pub sections: toml::Table,
    pub file_name: String,
    /// Where each setting read so far came from.
    origins: BTreeMap<&'static str, Origin>,
    pub problems: Vec<String>,
}

impl<'a> Sources<'a> {
    /// Reads the config file, if any; an unreadable file or an unknown key is a problem.
    pub fn load(args: &'a SettingsArgs) -> Sources<'a> {
        let mut s = Sources {
            args,
            file: toml::Table::new(),
            sections: toml::Table::new(),
            file_name: String::new(),
            origins: BTreeMap::new(),
            problems: Vec::new(),
        };
        let Some(path) = &args.config_file else {
            return s;
        };
        s.file_name = path.display().to_string();
        let table = match std::fs::read_to_string(path) {
            Err(e) => {
                s.problems
                    .push(format!("config file {}: cannot read: {e}", s.file_name));
                return s;
            }
            Ok(text) => match text.parse::<toml::Table>() {
                Err(e) => {
                    s.problems.push(format!(
                        "config file {}: not valid TOML: {}",
                        s.file_name,
                        e.to_string().trim()
                    ));
                    return s;
                }
                Ok(table) => table,
            },
        };
        for (k, v) in table {
            match (k.as_str(), v) {
                // `namespaces` is either a list of names (the setting) or the table of
                // `[namespaces.<name>]` sections.
                ("namespaces", toml::Value::Table(t)) => s.sections = t,
                ("namespaces", v @ toml::Value::Array(_)) => {
                    s.file.insert(k, v);
                }
                ("namespaces", _) => s.problems.push(format!(
                    "config file {}: `namespaces` must be a list of names or [namespaces.<name>] sections",
                    s.file_name
                )),
                (_, v) if find_setting(&k).is_some() => {
                    s.file.insert(k, v);
                }
                _ => s.problems.push(format!(
                    "config file {}: unknown key `{k}`{}",
                    s.file_name,
                    suggest(&k)
                )),
            }
        }
        s
    }

    /// Where a value of `setting` from `origin` was written, for messages.
    fn source(&self, setting: &Setting, origin: Origin) -> String {
        match origin {
            Origin::Flag => format!("--{}", setting.flag()),
            Origin::Env => setting.env(),
            Origin::File => format!("`{}` in {}", setting.key, self.file_name),
            Origin::Default => format!("default of {}", setting.key),
        }
    }
}

impl SettingSource for Sources<'_> {
    /// The typed value of a setting, by precedence; `None` (and a problem) when it is wrong.
    fn read<T: FieldType>(&mut self, setting: &'static Setting) -> Option<T> {
        let unit = setting.value_name;
        let (result, origin) = if let Some((texts, origin)) = self.args.given.get(setting.key) {
            (T::from_texts(texts, setting.secret), *origin)
        } else if let Some(value) = self.file.get(setting.key) {
            (T::from_toml(value, setting.secret), Origin::File)
        } else if let Some(default) = setting.default {
            (
                T::from_texts(&[default.to_owned()], setting.secret),
                Origin::Default,
            )
        } else {
            return T::unset().or_else(|| {
                self.problems.push(format!("{} must be set", setting.key));
                None
            });
        };
        self.origins.insert(setting.key, origin);
        match result {
            Ok(v) => Some(v),
            Err(got) => {
                let src = self.source(setting, origin);
                self.problems
                    .push(format!("{src}: expected {}, got {got}", T::expected(unit)));
                None
            }
        }
    }

    /// `value` if it is at least `min`; otherwise `None` and a problem.
    fn at_least<T: PartialOrd + Display>(
        &mut self,
        setting: &'static Setting,
        value: Option<T>,
        min: T,
    ) -> Option<T> {
        let v = value?;
        if v < min {
            let origin = self.origins.get(setting.key).copied();
            let src = self.source(setting, origin.unwrap_or(Origin::Default));
            self.problems
                .push(format!("{src}: must be at least {min}, got {v}"));
            return None;
        }
        Some(v)
    }
}

/// ` (did you mean `key`?)` for a key close to a known one, else empty.
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
