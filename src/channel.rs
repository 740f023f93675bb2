//! Channel names, their grammar, and the patterns tokens use to grant them.
//!
//! A channel is either `broadcast` or `<namespace>:<name>`. The namespace decides the rules
//! (who may subscribe, later: history, presence); the name is free-form within a small,
//! URL- and Redis-safe alphabet. Keeping the grammar strict here means every later layer
//! (hub keys, Redis channel names, log lines) can treat a [`Channel`] as trusted text.

use std::fmt;
use std::sync::Arc;

/// Longest accepted channel name, in bytes, namespace included.
pub const MAX_CHANNEL_LEN: usize = 128;

/// The one channel every connection joins, outside any namespace.
pub const BROADCAST: &str = "broadcast";

/// A validated channel name. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Channel(Arc<str>);

/// Why a string is not a channel name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {MAX_CHANNEL_LEN} bytes")]
    TooLong,
    #[error("channel name must be `broadcast` or `<namespace>:<name>`")]
    NoNamespace,
    #[error("`broadcast` is a channel of its own, not a namespace")]
    ReservedNamespace,
    #[error("channel namespace is longer than 32 characters")]
    NamespaceTooLong,
    #[error("channel name has an empty part after the namespace")]
    EmptyName,
    #[error(
        "channel name contains {0:?}; allowed: letters, digits and `_ - . : @` (namespace: lowercase letters, digits, `_ -`)"
    )]
    BadCharacter(char),
}

impl Channel {
    /// Parses a channel name against the grammar (not against configured namespaces; see
    /// `config::Namespaces` for that).
    pub fn parse(s: &str) -> Result<Channel, ChannelError> {
        if s.is_empty() {
            return Err(ChannelError::Empty);
        }
        if s.len() > MAX_CHANNEL_LEN {
            return Err(ChannelError::TooLong);
        }
        if s == BROADCAST {
            return Ok(Channel(Arc::from(s)));
        }
        let Some((ns, name)) = s.split_once(':') else {
            return Err(ChannelError::NoNamespace);
        };
        validate_namespace(ns)?;
        if ns == BROADCAST {
            return Err(ChannelError::ReservedNamespace);
        }
        if name.is_empty() {
            return Err(ChannelError::EmptyName);
        }
        if let Some(c) = name.chars().find(|c| !is_name_char(*c)) {
            return Err(ChannelError::BadCharacter(c));
        }
        Ok(Channel(Arc::from(s)))
    }

    /// The personal channel of a user: `user:<id>`.
    pub fn user(user_id: &str) -> Result<Channel, ChannelError> {
        Channel::parse(&format!("user:{user_id}"))
    }

    pub fn broadcast() -> Channel {
        Channel(Arc::from(BROADCAST))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace (`room` for `room:lobby`); `broadcast` for the broadcast channel.
    pub fn namespace(&self) -> &str {
        match self.0.split_once(':') {
            Some((ns, _)) => ns,
            None => &self.0,
        }
    }
}

/// Checks a namespace identifier: 1-32 characters of `[a-z0-9_-]`.
pub fn validate_namespace(ns: &str) -> Result<(), ChannelError> {
    if ns.is_empty() {
        return Err(ChannelError::NoNamespace);
    }
    if ns.len() > 32 {
        return Err(ChannelError::NamespaceTooLong);
    }
    match ns
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        Some(c) => Err(ChannelError::BadCharacter(c)),
        None => Ok(()),
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@')
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Channel({})", self.0)
    }
}

impl AsRef<str> for Channel {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// One entry of a token's `channels` (or, later, `publish`) claim: an exact channel name, or
/// a prefix ending in `*` (`room:*`, `dag:7*`, `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelPattern {
    Exact(String),
    Prefix(String),
}

impl ChannelPattern {
    pub fn parse(s: &str) -> ChannelPattern {
        match s.strip_suffix('*') {
            Some(prefix) => ChannelPattern::Prefix(prefix.to_owned()),
            None => ChannelPattern::Exact(s.to_owned()),
        }
    }

    pub fn matches(&self, channel: &Channel) -> bool {
        match self {
            ChannelPattern::Exact(name) => name == channel.as_str(),
            ChannelPattern::Prefix(prefix) => channel.as_str().starts_with(prefix.as_str()),
        }
    }

    /// The pattern as written (`room:*`).
    pub fn as_str(&self) -> String {
        match self {
            ChannelPattern::Exact(name) => name.clone(),
            ChannelPattern::Prefix(prefix) => format!("{prefix}*"),
        }
    }
}

/// Parses a list of patterns; empty entries are ignored.
pub fn parse_patterns<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<ChannelPattern> {
    items
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(ChannelPattern::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_shapes() {
        for ok in [
            "broadcast",
            "user:42",
            "room:lobby",
            "dag:7",
            "room:org-1.team_a:general",
            "user:alice@example.com",
        ] {
            assert!(Channel::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_malformed_names_with_a_reason() {
        assert_eq!(Channel::parse(""), Err(ChannelError::Empty));
        assert_eq!(Channel::parse("lobby"), Err(ChannelError::NoNamespace));
        assert_eq!(Channel::parse("room:"), Err(ChannelError::EmptyName));
        assert_eq!(Channel::parse(":x"), Err(ChannelError::NoNamespace));
        assert_eq!(
            Channel::parse("broadcast:x"),
            Err(ChannelError::ReservedNamespace)
        );
        assert_eq!(
            Channel::parse("Room:x"),
            Err(ChannelError::BadCharacter('R'))
        );
        assert_eq!(
            Channel::parse("room:a b"),
            Err(ChannelError::BadCharacter(' '))
        );
        assert_eq!(
            Channel::parse("room:a*"),
            Err(ChannelError::BadCharacter('*'))
        );
        let long = format!("room:{}", "x".repeat(MAX_CHANNEL_LEN));
        assert_eq!(Channel::parse(&long), Err(ChannelError::TooLong));
    }

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        let room = Channel::parse("room:lobby").unwrap();
        let dag7 = Channel::parse("dag:7").unwrap();
        let dag70 = Channel::parse("dag:70").unwrap();
        assert!(ChannelPattern::parse("room:*").matches(&room));
        assert!(ChannelPattern::parse("*").matches(&room));
        assert!(ChannelPattern::parse("dag:7").matches(&dag7));
        assert!(!ChannelPattern::parse("dag:7").matches(&dag70));
        assert!(!ChannelPattern::parse("room:*").matches(&dag7));
        assert_eq!(room.namespace(), "room");
        assert_eq!(Channel::broadcast().namespace(), "broadcast");
    }
}
