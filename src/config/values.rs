//! What each type of setting accepts, from text (flags, environment, defaults) and from TOML.
//!
//! This file exists so that a value of the wrong type is an error wherever it comes from, with
//! a message written for people: `expected an integer number of seconds, got a string "25"`.
//! In the TOML file types are exact (`heartbeat_s = "25"`, `api_key = 5` and
//! `allowed_origins = "https://…"` are errors); flags and environment variables are text and
//! are parsed. Messages never contain Rust debug output and never quote a secret. Each type
//! also says what it accepts as a JSON Schema (`schema.rs` assembles the file's schema from
//! them), so that the schema and the parser are written side by side.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use super::{JoinLeave, LogFormat};

/// A single value of a setting.
pub trait Scalar: Sized {
    /// What a value looks like, for messages (`an integer number of seconds`); `unit` is the
    /// setting's value name (`SECONDS`, `BYTES`, `N`, ...).
    fn expected(unit: &str) -> String;
    /// What a list of values looks like.
    fn expected_list(unit: &str) -> String {
        format!("a list of values, each {}", Self::expected(unit))
    }
    fn from_text(text: &str) -> Option<Self>;
    fn from_toml(value: &toml::Value) -> Option<Self>;
    /// The JSON Schema of a TOML value of this type (bounds beyond the type's own are the
    /// setting's: see `schema.rs`).
    fn json_schema() -> Value;
}

/// The type of a setting's field: a value (needs a default), `Option` of one or `Vec` of them.
pub trait FieldType: Sized {
    /// Accepts several values.
    const LIST: bool;
    fn expected(unit: &str) -> String;
    /// From flags, an environment variable or the default; `Err` says what was got instead.
    fn from_texts(texts: &[String], secret: bool) -> Result<Self, String>;
    /// From the TOML file; `Err` says what was got instead.
    fn from_toml(value: &toml::Value, secret: bool) -> Result<Self, String>;
    /// The value of a setting that is not given and has no default (`None`: it must be given).
    fn unset() -> Option<Self>;
    /// The JSON Schema of its TOML value: a list is an array (never a single value).
    fn json_schema() -> Value;
}

impl<T: Scalar> FieldType for T {
    const LIST: bool = false;
    fn expected(unit: &str) -> String {
        T::expected(unit)
    }
    fn from_texts(texts: &[String], secret: bool) -> Result<Self, String> {
        match texts {
            [one] => T::from_text(one.trim()).ok_or_else(|| got_text(one, secret)),
            _ => Err(format!("{} values", texts.len())),
        }
    }
    fn from_toml(value: &toml::Value, secret: bool) -> Result<Self, String> {
        T::from_toml(value).ok_or_else(|| got_toml(value, secret))
    }
    fn unset() -> Option<Self> {
        None
    }
    fn json_schema() -> Value {
        T::json_schema()
    }
}

impl<T: Scalar> FieldType for Option<T> {
    const LIST: bool = false;
    fn expected(unit: &str) -> String {
        T::expected(unit)
    }
    fn from_texts(texts: &[String], secret: bool) -> Result<Self, String> {
        <T as FieldType>::from_texts(texts, secret).map(Some)
    }
    fn from_toml(value: &toml::Value, secret: bool) -> Result<Self, String> {
        <T as FieldType>::from_toml(value, secret).map(Some)
    }
    fn unset() -> Option<Self> {
        Some(None)
    }
    fn json_schema() -> Value {
        T::json_schema()
    }
}

/// Lists: empty items are dropped (`FANOUT_API_KEY=` is no key), the others trimmed.
impl<T: Scalar> FieldType for Vec<T> {
    const LIST: bool = true;
    fn expected(unit: &str) -> String {
        T::expected_list(unit)
    }
    fn from_texts(texts: &[String], secret: bool) -> Result<Self, String> {
        texts
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .map(|t| T::from_text(t).ok_or_else(|| got_text(t, secret)))
            .collect()
    }
    fn from_toml(value: &toml::Value, secret: bool) -> Result<Self, String> {
        let toml::Value::Array(items) = value else {
            return Err(got_toml(value, secret));
        };
        let mut out = Vec::new();
        for item in items {
            if let toml::Value::String(s) = item
                && s.trim().is_empty()
            {
                continue;
            }
            match T::from_toml(item) {
                Some(v) => out.push(v),
                None => return Err(format!("a list holding {}", got_toml(item, secret))),
            }
        }
        Ok(out)
    }
    fn unset() -> Option<Self> {
        Some(Vec::new())
    }
    fn json_schema() -> Value {
        json!({ "type": "array", "items": T::json_schema() })
    }
}

/// A text value as shown in a message: quoted, or not at all for a secret.
pub fn got_text(text: &str, secret: bool) -> String {
    if secret {
        "a value that is not shown (secret)".into()
    } else {
        quote(text)
    }
}

/// A TOML value as shown in a message: its type, and its value unless it is a secret.
pub fn got_toml(value: &toml::Value, secret: bool) -> String {
    use toml::Value as V;
    match (value, secret) {
        (V::String(_), true) => "a string".into(),
        (V::String(s), false) => format!("a string {}", quote(s)),
        (V::Integer(_) | V::Float(_), true) => "a number".into(),
        (V::Integer(i), false) => i.to_string(),
        (V::Float(f), false) if f.fract() == 0.0 && f.is_finite() => format!("{f:.1}"),
        (V::Float(f), false) => f.to_string(),
        (V::Boolean(_), true) => "a boolean".into(),
        (V::Boolean(b), false) => b.to_string(),
        (V::Datetime(_), _) => "a date".into(),
        (V::Array(_), _) => "a list".into(),
        (V::Table(_), _) => "a table".into(),
    }
}

/// `"text"`, with quotes and control characters escaped.
pub fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn integer(unit: &str) -> String {
    match unit {
        "SECONDS" => "an integer number of seconds".into(),
        "BYTES" => "an integer number of bytes".into(),
        "MESSAGES" => "an integer number of messages".into(),
        _ => "an integer".into(),
    }
}

macro_rules! integers {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            fn json_schema() -> Value {
                // TOML integers are i64: a bound only for types smaller than that.
                match u64::try_from(<$t>::MAX) {
                    Ok(max) if max < i64::MAX as u64 => {
                        json!({ "type": "integer", "minimum": 0, "maximum": max })
                    }
                    _ => json!({ "type": "integer", "minimum": 0 }),
                }
            }
            fn expected(unit: &str) -> String {
                integer(unit)
            }
            fn from_text(text: &str) -> Option<Self> {
                text.parse().ok()
            }
            fn from_toml(value: &toml::Value) -> Option<Self> {
                value.as_integer().and_then(|i| i.try_into().ok())
            }
        }
    )*};
}
integers!(u32, u64, usize);

/// Types written as a TOML string and parsed like the text of a flag.
macro_rules! from_string {
    ($($t:ty => $expected:expr, $list:expr, $schema:expr, $parse:expr;)*) => {$(
        impl Scalar for $t {
            fn json_schema() -> Value {
                $schema
            }
            fn expected(_unit: &str) -> String {
                $expected.into()
            }
            fn expected_list(_unit: &str) -> String {
                $list.into()
            }
            fn from_text(text: &str) -> Option<Self> {
                let parse: fn(&str) -> Option<$t> = $parse;
                parse(text)
            }
            fn from_toml(value: &toml::Value) -> Option<Self> {
                value.as_str().and_then(|s| Self::from_text(s.trim()))
            }
        }
    )*};
}
from_string! {
    String => "a string", "a list of strings", json!({ "type": "string" }), |s| Some(s.to_owned());
    PathBuf => "a file path (a string)", "a list of file paths", json!({ "type": "string" }),
        |s| Some(PathBuf::from(s));
    SocketAddr => "an address and port such as 0.0.0.0:8080", "a list of addresses",
        json!({ "type": "string" }), |s| s.parse().ok();
    std::net::IpAddr => "an IP address such as 10.0.0.5", "a list of IP addresses",
        json!({ "type": "string" }), |s| s.parse().ok();
    LogFormat => "`text` or `json`", "a list of log formats", json!({ "enum": ["text", "json"] }),
        |s| s.parse().ok();
    JoinLeave => "`off`, `connection` or `user`", "a list of join_leave modes",
        json!({ "enum": ["off", "connection", "user"] }), |s| match s {
        "off" => Some(JoinLeave::Off),
        "connection" => Some(JoinLeave::Connection),
        "user" => Some(JoinLeave::User),
        _ => None,
    };
    Algorithm => "one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384",
        "a list of algorithms", algorithms_schema(), parse_algorithm;
}

impl Scalar for bool {
    fn json_schema() -> Value {
        json!({ "type": "boolean" })
    }
    fn expected(_unit: &str) -> String {
        "`true` or `false`".into()
    }
    fn from_text(text: &str) -> Option<Self> {
        text.parse().ok()
    }
    fn from_toml(value: &toml::Value) -> Option<Self> {
        value.as_bool()
    }
}

/// The names [`parse_algorithm`] accepts, in capitals and in small letters.
fn algorithms_schema() -> Value {
    let names: Vec<String> = SUPPORTED_ALGORITHMS
        .iter()
        .filter_map(|a| algorithm_name(*a))
        .flat_map(|n| [n.to_owned(), n.to_ascii_lowercase()])
        .collect();
    json!({ "enum": names })
}

/// Every algorithm [`algorithm_name`] names.
const SUPPORTED_ALGORITHMS: [Algorithm; 11] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// The token algorithms fanout verifies (any case: `rs256` is RS256).
fn parse_algorithm(s: &str) -> Option<Algorithm> {
    let alg = Algorithm::from_str(&s.to_ascii_uppercase()).ok()?;
    algorithm_name(alg).map(|_| alg)
}

/// The name of a supported algorithm, as written in tokens (`None`: not supported).
pub fn algorithm_name(alg: Algorithm) -> Option<&'static str> {
    Some(match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml_value(text: &str) -> toml::Value {
        text.parse::<toml::Table>().unwrap().remove("v").unwrap()
    }

    #[test]
    fn toml_types_are_exact() {
        let int = |t| <u64 as FieldType>::from_toml(&toml_value(t), false);
        assert_eq!(int("v = 25"), Ok(25));
        assert_eq!(int("v = \"25\""), Err("a string \"25\"".into()));
        assert_eq!(int("v = 2.5"), Err("2.5".into()));
        assert_eq!(int("v = 25.0"), Err("25.0".into()));
        assert_eq!(int("v = -1"), Err("-1".into()));
        let keys = |t| <Vec<String> as FieldType>::from_toml(&toml_value(t), true);
        assert_eq!(keys("v = [\"a\", \"\"]"), Ok(vec!["a".to_owned()]));
        assert_eq!(keys("v = 5"), Err("a number".into()));
        assert_eq!(keys("v = \"k\""), Err("a string".into()));
        assert_eq!(keys("v = [5]"), Err("a list holding a number".into()));
    }

    #[test]
    fn text_is_parsed_and_lists_drop_empty_items() {
        let texts = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            <u64 as FieldType>::from_texts(&texts(&[" 7 "]), false),
            Ok(7)
        );
        assert_eq!(
            <u64 as FieldType>::from_texts(&texts(&["2.5"]), false),
            Err("\"2.5\"".into())
        );
        assert_eq!(
            <Vec<String> as FieldType>::from_texts(&texts(&["a", " ", "b "]), false),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(
            <Option<Algorithm> as FieldType>::from_texts(&texts(&["rs256"]), false),
            Ok(Some(Algorithm::RS256))
        );
        assert!(<Option<Algorithm> as FieldType>::from_texts(&texts(&["EdDSA"]), false).is_err());
    }
}
