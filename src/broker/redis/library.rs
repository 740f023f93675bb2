//! The `fanout` Redis Function library: publishing with history, atomically in Redis.
//!
//! `FCALL fanout_publish 1 <channel> <payload>` works from anything that speaks Redis
//! (redis-cli, phpredis `rawCommand`). For a channel whose namespace keeps history it bumps
//! the channel's offset, appends the message to a bounded stream (exact size, TTL), and
//! PUBLISHes it with its offset and epoch in a small envelope; it returns the offset. For
//! other channels it is a plain PUBLISH and returns 0.
//!
//! Keys, for channel `dag:7` and prefix `fanout:`: `fanout:{dag:7}:meta` (hash: `epoch`,
//! `offset`) and `fanout:{dag:7}:stream` (entries `<offset>-0` with field `d`). The hash
//! tag keeps a channel's keys on the channel name's own slot. The epoch is made from Redis's
//! clock whenever the meta hash is missing (first use, expiry, flush, restart without
//! persistence), and the stream is cleared then, so offsets restart at 1 under a new epoch.
//!
//! The Lua is in `fanout.lua` beside this file; the history rules, prefix and payload limit
//! are written into it when a node loads it (`__PREFIX__` and the like), so every node
//! sharing a Redis must use the same ones; the node that loads last defines them, and nodes
//! warn when they find a different library loaded.

use std::fmt::Write;
use std::sync::Arc;

use bytes::Bytes;

use crate::broker::{
    BrokerError, ChannelRules, Departure, History, HistoryMessage, HistoryQuery, PresenceMember,
};
use crate::channel::Channel;

/// The library name (`FUNCTION LIST LIBRARYNAME fanout`).
pub const NAME: &str = "fanout";

/// The library's Lua source for these rules and this prefix, publishing with classic pub/sub.
pub fn source(prefix: &str, rules: &ChannelRules, max_payload: usize) -> String {
    source_for(prefix, rules, max_payload, false)
}

/// The library's Lua source; `sharded`: for Redis Cluster, where it publishes every message
/// with SPUBLISH on the channel's envelope channel (in the slot of the channel's keys).
pub fn source_for(prefix: &str, rules: &ChannelRules, max_payload: usize, sharded: bool) -> String {
    let mut history = String::new();
    for (ns, h) in rules.histories() {
        let _ = write!(
            history,
            "[{}] = {{{}, {}}}, ",
            lua_string(ns),
            h.size,
            h.ttl.as_secs()
        );
    }
    let body = include_str!("fanout.lua")
        .replace("__NAME__", NAME)
        .replace("__HISTORY__", &history)
        .replace("__MAX_PAYLOAD__", &max_payload.to_string())
        .replace("__SHARDED__", if sharded { "true" } else { "false" })
        .replace(
            "__IDEMPOTENCY_TTL__",
            &rules.idempotency_window().as_secs().max(1).to_string(),
        )
        // Last: the prefix is the one operator-chosen text.
        .replace("__PREFIX__", &lua_string(prefix));
    // The hash lets a node tell whether the loaded library is its own.
    let hash = source_hash(&body);
    body.replacen(
        "local PREFIX",
        &format!("local SOURCE_HASH = \"{hash:016x}\"\nlocal PREFIX"),
        1,
    )
}

fn source_hash(text: &str) -> u64 {
    // FNV-1a: stable across processes and versions (unlike std's hasher).
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The hash embedded in a library source.
pub fn hash_of(source: &str) -> Option<&str> {
    let start = source.find("SOURCE_HASH = \"")? + "SOURCE_HASH = \"".len();
    source.get(start..start + 16)
}

fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b}");
                }
            }
        }
    }
    out.push('"');
    out
}

/// Loads (or replaces) the library; warns when another configuration was loaded.
pub async fn load(pool: &deadpool_redis::Pool, source: &str) -> Result<(), BrokerError> {
    let mut conn = pool
        .get()
        .await
        .map_err(|e| BrokerError::Unavailable(format!("no Redis connection: {e}")))?;
    let loaded: Option<String> = ::redis::cmd("FCALL")
        .arg("fanout_library_source_hash")
        .arg(0)
        .query_async(&mut *conn)
        .await
        .ok();
    let ours = hash_of(source).unwrap_or_default();
    match loaded.as_deref() {
        Some(h) if h == ours => return Ok(()),
        Some(_) => tracing::warn!(
            "Redis had a fanout library with other history settings or prefix; replacing it (nodes sharing a Redis must share those settings)"
        ),
        None => {}
    }
    ::redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(source)
        .query_async::<String>(&mut *conn)
        .await
        .map_err(|e| BrokerError::Unavailable(format!("FUNCTION LOAD failed: {e}")))?;
    tracing::info!("loaded the fanout Redis function library");
    Ok(())
}

/// Whether a Redis error means the library is not loaded (e.g. Redis restarted).
pub fn is_missing(e: &::redis::RedisError) -> bool {
    e.to_string().contains("Function not found")
}

/// `FCALL fanout_publish 1 <channel> <payload> <user> [<idempotency key>]`: publishes with
/// history (the offset is the reply; 0 for a channel without history), the user a client's
/// publisher (empty for a backend's).
pub fn publish_command(
    channel: &Channel,
    payload: &[u8],
    publisher: Option<&str>,
    idempotency_key: Option<&str>,
) -> ::redis::Cmd {
    let mut command = ::redis::cmd("FCALL");
    command
        .arg("fanout_publish")
        .arg(1)
        .arg(channel.as_str())
        .arg(payload)
        .arg(publisher.unwrap_or(""));
    if let Some(key) = idempotency_key {
        command.arg(key);
    }
    command
}

/// `FCALL fanout_history`: a consistent snapshot of a channel's history.
pub fn history_command(channel: &Channel, query: HistoryQuery) -> ::redis::Cmd {
    let (since, limit) = match query {
        HistoryQuery::After { offset, limit } => (offset as i64, limit),
        HistoryQuery::Latest { limit } => (-1, limit),
    };
    let mut command = ::redis::cmd("FCALL");
    command
        .arg("fanout_history")
        .arg(1)
        .arg(channel.as_str())
        .arg(since)
        .arg(limit);
    command
}

/// Runs [`history_command`] on a connection (the dispatch workers' gap filling): a pooled
/// one, or a Redis Cluster connection, which routes it to the channel's slot.
pub async fn history(
    conn: &mut impl ::redis::aio::ConnectionLike,
    channel: &Channel,
    query: HistoryQuery,
) -> Result<History, ::redis::RedisError> {
    let reply: Vec<::redis::Value> = history_command(channel, query).query_async(conn).await?;
    parse_history(&reply).ok_or_else(|| {
        ::redis::RedisError::from((::redis::ErrorKind::Parse, "unexpected fanout_history reply"))
    })
}

/// Parses the reply of `fanout_history`.
pub fn parse_history(reply: &[::redis::Value]) -> Option<History> {
    use ::redis::Value;
    let int = |v: &Value| match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    };
    let bytes = |v: &Value| match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    };
    let epoch = String::from_utf8(bytes(reply.first()?)?).ok()?;
    let offset = int(reply.get(1)?)?;
    let first = int(reply.get(2)?)?;
    let mut messages = Vec::new();
    for triple in reply.get(3..)?.chunks(3) {
        let [o, u, p] = triple else { return None };
        let user = bytes(u)?;
        messages.push(HistoryMessage {
            offset: int(o)?,
            publisher: (!user.is_empty())
                .then(|| String::from_utf8(user).ok().map(Arc::from))
                .flatten(),
            payload: Bytes::from(bytes(p)?),
        });
    }
    Some(History {
        epoch: Arc::from(epoch),
        offset,
        first,
        messages,
    })
}

/// Parses `{member JSON, status JSON or "", ...}` groups of `size` values from a presence
/// function into members (status merged), with the values after them.
pub fn parse_members(
    reply: &[::redis::Value],
    size: usize,
) -> Option<Vec<(PresenceMember, Vec<::redis::Value>)>> {
    use ::redis::Value;
    let bytes = |v: &Value| match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    };
    let mut out = Vec::new();
    for group in reply.chunks(size) {
        if group.len() != size {
            return None;
        }
        // One damaged entry (written by hand, or by another program) must not make the
        // channel's presence unavailable for everyone: skip it, and say so.
        let Ok(mut member) = serde_json::from_slice::<PresenceMember>(&bytes(&group[0])?) else {
            tracing::warn!("skipped a presence entry that is not a valid member");
            continue;
        };
        let status = bytes(&group[1])?;
        if !status.is_empty() {
            member.status = serde_json::from_slice(&status).ok();
        }
        out.push((member, group[2..].to_vec()));
    }
    Some(out)
}

/// Departures from `{member, status, last, ...}` triples.
pub fn parse_departures(reply: &[::redis::Value]) -> Option<Vec<Departure>> {
    parse_members(reply, 3)?
        .into_iter()
        .map(|(member, rest)| {
            Some(Departure {
                member,
                last_of_user: matches!(rest.first()?, ::redis::Value::Int(1)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_embeds_rules_prefix_and_a_stable_hash() {
        let config = crate::config::SettingsArgs::from_pairs([("jwt_secret", "x")])
            .resolve()
            .unwrap();
        let rules = ChannelRules::from_config(&config);
        let a = source("fanout:", &rules, 1000);
        assert!(a.contains(r#"["dag"] = {1000, 3600}"#), "{a}");
        assert!(a.contains(r#"local PREFIX = "fanout:""#));
        assert!(a.contains("local MAX_PAYLOAD = 1000"));
        assert_eq!(hash_of(&a), hash_of(&source("fanout:", &rules, 1000)));
        assert_ne!(hash_of(&a), hash_of(&source("other:", &rules, 1000)));
        assert_eq!(lua_string("a\"b\\c"), r#""a\"b\\c""#);
        assert!(a.contains("local SHARDED = false"));
        let sharded = source_for("fanout:", &rules, 1000, true);
        assert!(sharded.contains("local SHARDED = true"));
        assert_ne!(hash_of(&a), hash_of(&sharded));
    }
}
