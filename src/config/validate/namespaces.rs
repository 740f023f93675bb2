//! Channel namespaces: the built-in ones, the extra ones named by `namespaces`, and the
//! `[namespaces.<name>]` sections of the config file, read with exact types.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{NamespaceSection, SECTION_KEYS, Validator};
use crate::channel::validate_namespace;
use crate::config::values::{FieldType, Scalar, got_toml, quote};
use crate::config::{
    HistoryConfig, JoinLeave, MAX_HISTORY_SIZE, NamespaceConfig, builtin_namespaces,
};

impl Validator {
    pub(super) fn namespaces(
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
