//! The JSON Schema of the TOML configuration file, generated from the settings' declaration.
//!
//! This file exists so that tools which write fanout's configuration can check it before a
//! node reads it, with the same keys and types: `fanout config-schema` prints this schema, and
//! the Helm chart's `values.schema.json` carries it under `config` (`scripts/update-chart-docs`
//! writes it there; a deploy test fails when the two differ). Each setting's type gives its
//! schema (`values.rs`), its declaration the lower bound, default and description; the file's
//! `[namespaces.<name>]` sections are described here, beside the keys `validate.rs` reads.

use serde_json::{Map, Value, json};

use super::settings::{SETTINGS, Setting};
use super::{MAX_HISTORY_SIZE, validate};

/// What a namespace name looks like (`channel::validate_namespace`): 1-32 of `[a-z0-9_-]`.
const NAMESPACE_NAME: &str = "^[a-z0-9_-]{1,32}$";

/// The JSON Schema (draft 7) of fanout's TOML configuration file: every setting, nothing else.
pub fn settings_schema() -> Value {
    let mut properties = Map::new();
    for setting in SETTINGS {
        let schema = if setting.key == "namespaces" {
            namespaces_schema(setting)
        } else {
            setting_schema(setting)
        };
        properties.insert(setting.key.to_owned(), schema);
    }
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "fanout configuration file",
        "description": "Keys of fanout's TOML configuration file (`fanout serve --config`), generated from the settings' declaration by `fanout config-schema`.",
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    })
}

/// One setting: its type's schema with its lower bound, default and help.
fn setting_schema(setting: &Setting) -> Value {
    let mut schema = (setting.schema)();
    let Value::Object(object) = &mut schema else {
        unreachable!("every type's schema is an object");
    };
    if let Some(min) = setting.min {
        // For a list the bound is each item's (no list setting has one today).
        let target = match object.get_mut("items") {
            Some(Value::Object(items)) => items,
            _ => &mut *object,
        };
        target.insert("minimum".into(), json!(min));
    }
    if let Some(default) = setting.default {
        let value = match object.get("type").and_then(Value::as_str) {
            Some("integer") => default.parse::<i64>().map(Value::from).ok(),
            Some("boolean") => default.parse::<bool>().map(Value::from).ok(),
            _ => Some(Value::from(default)),
        };
        if let Some(value) = value {
            object.insert("default".into(), value);
        }
    }
    object.insert("description".into(), json!(setting.help));
    schema
}

/// `namespaces`: a list of extra namespace names, or the table of `[namespaces.<name>]`
/// sections.
fn namespaces_schema(setting: &Setting) -> Value {
    let section = json!({
        "type": "object",
        "properties": {
            "public": { "type": "boolean", "description": "Any authenticated client may subscribe, without a `channels` claim." },
            "presence": { "type": "boolean", "description": "Who is subscribed is kept, cluster-wide, and can be queried." },
            "join_leave": {
                "enum": ["off", "connection", "user"],
                "description": "Join and leave events: none, one per connection, or one per user (needs presence)."
            },
            "publish": { "type": "boolean", "description": "Any client allowed to subscribe may also publish." },
            "inbox": { "type": "string", "minLength": 1, "description": "Redis stream that `send` frames of this namespace go to." },
            "history_size": {
                "type": "integer", "minimum": 0, "maximum": MAX_HISTORY_SIZE,
                "description": "Messages kept per channel for recovery; 0: no history."
            },
            "history_ttl_s": {
                "type": "integer", "minimum": 0,
                "description": "How long a channel's history lives after its last publish."
            }
        },
        "additionalProperties": false,
    });
    json!({
        "description": format!(
            "{} In the file also the table of `[namespaces.<name>]` sections (keys: {}).",
            setting.help,
            validate::SECTION_KEYS
        ),
        "oneOf": [
            { "type": "array", "items": { "type": "string", "pattern": NAMESPACE_NAME } },
            {
                "type": "object",
                "propertyNames": { "pattern": NAMESPACE_NAME },
                "additionalProperties": section,
            }
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SettingsArgs;

    fn validator() -> jsonschema::Validator {
        jsonschema::validator_for(&settings_schema()).expect("a valid JSON Schema")
    }

    /// The TOML text as the JSON a chart would write it from.
    fn as_json(toml_text: &str) -> Value {
        let table: toml::Table = toml_text.parse().expect("TOML");
        serde_json::to_value(table).expect("JSON")
    }

    /// Whether the gateway accepts this file (with a JWT secret from the command line), given
    /// as the command line gives it (`--config`).
    fn resolves(toml_text: &str) -> bool {
        use clap::{Args, FromArgMatches};
        static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("fanout-schema-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, toml_text).expect("write");
        let matches = SettingsArgs::augment_args(clap::Command::new("fanout"))
            .try_get_matches_from([
                "fanout",
                "--jwt-secret",
                "0123456789abcdef0123456789abcdef",
                "--config",
                path.to_str().expect("a UTF-8 temporary path"),
            ])
            .expect("flags");
        let result = SettingsArgs::from_arg_matches(&matches)
            .expect("settings")
            .resolve();
        let _ = std::fs::remove_file(&path);
        result.is_ok()
    }

    #[test]
    fn every_setting_is_a_property_and_nothing_else_is() {
        let schema = settings_schema();
        let properties = schema["properties"].as_object().unwrap();
        assert_eq!(properties.len(), SETTINGS.len());
        for s in SETTINGS {
            assert!(properties.contains_key(s.key), "{} missing", s.key);
        }
        assert_eq!(schema["additionalProperties"], false);
        assert!(!validator().is_valid(&json!({"drain_sec": 5})));
    }

    #[test]
    fn the_defaults_are_valid_and_bounds_match_the_declaration() {
        let schema = settings_schema();
        let mut defaults = Map::new();
        for s in SETTINGS {
            if let Some(d) = schema["properties"][s.key].get("default") {
                defaults.insert(s.key.to_owned(), d.clone());
            }
        }
        let declared = SETTINGS.iter().filter(|s| s.default.is_some()).count();
        assert_eq!(
            defaults.len(),
            declared,
            "every default is in the schema, typed"
        );
        let validator = validator();
        let errors: Vec<String> = validator
            .iter_errors(&Value::Object(defaults))
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(schema["properties"]["heartbeat_s"]["minimum"], 1);
        assert_eq!(schema["properties"]["drain_s"]["minimum"], 0);
        assert_eq!(schema["properties"]["api_key"]["type"], "array");
        assert!(!validator.is_valid(&json!({"heartbeat_s": 0})));
        assert!(!validator.is_valid(&json!({"heartbeat_s": "25"})));
        assert!(!validator.is_valid(&json!({"api_key": "k"})));
        assert!(!validator.is_valid(&json!({"log_format": "yaml"})));
    }

    /// Files the gateway accepts are valid, and files it refuses for a type or a key are not:
    /// the schema says what the parser does.
    #[test]
    fn the_schema_agrees_with_the_parser() {
        let accepted = [
            "heartbeat_s = 30\napi_key = [\"k1\", \"k2\"]\nlog_format = \"json\"\n",
            "jwt_algorithm = \"hs512\"\ninternal_listen = \"127.0.0.1:9090\"\napi_on_public = true\n",
            "namespaces = [\"agent\"]\npublic_namespaces = [\"agent\"]\n",
            "[namespaces.room]\npublic = true\npresence = true\njoin_leave = \"user\"\n[namespaces.dag]\nhistory_size = 5000\nhistory_ttl_s = 7200\n",
            "trusted_proxies = [\"10.0.0.1\"]\nredis_cluster_url = [\"redis://10.0.0.1:7000\"]\n",
        ];
        let refused = [
            "heartbeat_s = \"30\"\n",
            "api_key = \"k\"\n",
            "drain_sec = 5\n",
            "max_subscriptions = 1\n",
            "[namespaces.room]\nhistroy_size = 5\n",
            "[namespaces.room]\njoin_leave = \"sometimes\"\npresence = true\n",
            "[namespaces.Room]\npublic = true\n",
            "jwt_algorithm = \"EdDSA\"\n",
        ];
        let validator = validator();
        for text in accepted {
            assert!(resolves(text), "the gateway refuses:\n{text}");
            let errors: Vec<String> = validator
                .iter_errors(&as_json(text))
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "the schema refuses:\n{text}\n{errors:?}");
        }
        for text in refused {
            assert!(!resolves(text), "the gateway accepts:\n{text}");
            assert!(
                !validator.is_valid(&as_json(text)),
                "the schema accepts:\n{text}"
            );
        }
    }

    #[test]
    fn namespace_sections_have_the_keys_the_validator_reads() {
        let schema = settings_schema();
        let section = &schema["properties"]["namespaces"]["oneOf"][1]["additionalProperties"];
        let mut in_schema: Vec<&str> = section["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut read: Vec<&str> = validate::SECTION_KEYS.split(", ").collect();
        in_schema.sort_unstable();
        read.sort_unstable();
        assert_eq!(in_schema, read);
        let (longest, too_long) = ("x".repeat(32), "x".repeat(33));
        for name in ["room", "a-b_9", &longest, "", "Room", "a.b", &too_long] {
            let pattern_ok = jsonschema::is_valid(
                &json!({"type": "string", "pattern": NAMESPACE_NAME}),
                &json!(name),
            );
            assert_eq!(
                pattern_ok,
                crate::channel::validate_namespace(name).is_ok(),
                "{name:?}"
            );
        }
    }
}
