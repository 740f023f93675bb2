//! The envelope: what a PUBLISH payload carries besides the message when a gateway (through
//! the function library, or a node's own PUBLISH) wrote it. It starts with NUL, which no JSON
//! or text payload starts with: `\0h<epoch>\0<offset>\0<user>\0<payload>` for a message of a
//! channel with history, `\0m<user>\0<payload>` for a client message without history,
//! `\0e<frame>` for a presence event.
//!
//! **Who may write one.** An envelope names the publishing user and can carry a whole server
//! frame, so it must not be forgeable by a backend that publishes text it got from a user.
//! Enveloped messages therefore travel on a Redis channel of their own,
//! [`envelope_channel`] `!<prefix>{<channel>}`, which only the node and its function library
//! publish to; plain publishers use [`public_channel`] `<prefix><channel>`, whose payloads are
//! always data. A backend that builds `<prefix>` + any name (even a user's) cannot reach an
//! envelope channel, because those start with `!`; a NUL-led payload on a public channel is
//! dropped and counted as `forged_envelope`. Both channels of a fanout channel are held by the
//! same pub/sub connection, and Redis delivers one connection's messages in publish order, so
//! plain and enveloped messages of a channel stay in order.
//!
//! [`decode_message`] is the read side: one pub/sub message into a publication.

use std::sync::Arc;

use bytes::Bytes;

use crate::broker::{Publication, StreamPosition};
use crate::channel::Channel;

/// First byte of a PUBLISH payload that carries an envelope.
const ENVELOPE: u8 = 0;

/// A node's own channel (relayed client frames, survey replies): `!<prefix>node:<id>`.
pub fn node_channel(prefix: &str, node_id: &str) -> String {
    internal_channel(prefix, &format!("node:{node_id}"))
}

/// The channel of control commands for every node: `!<prefix>{control}` (the hash tag
/// puts it in the control slot with the revocations and the node registry).
pub fn control_channel(prefix: &str) -> String {
    internal_channel(prefix, "{control}")
}

/// The Redis channel plain publishers use for `channel`: `<prefix><channel>`.
pub fn public_channel(prefix: &str, channel: &Channel) -> String {
    format!("{prefix}{channel}")
}

/// The Redis channel enveloped messages of `channel` travel on: `!<prefix>{<channel>}`. The
/// braces are a Redis Cluster hash tag, so it lives in the slot of the channel's keys (and of
/// `FCALL fanout_publish 1 <channel>`), where the function library publishes.
pub fn envelope_channel(prefix: &str, channel: &Channel) -> String {
    format!("!{prefix}{{{channel}}}")
}

/// A Redis channel for the nodes' own traffic (relay, probes): `!<prefix><name>`, out of reach
/// of plain publishers like the envelope channels.
pub fn internal_channel(prefix: &str, name: &str) -> String {
    format!("!{prefix}{name}")
}

/// Which fanout channel a Redis channel belongs to, and whether it is the envelope channel.
/// `None` for anything else (an invalid channel name, another prefix).
pub fn channel_of(prefix: &str, redis_channel: &str) -> Option<(Channel, bool)> {
    let enveloped = redis_channel
        .strip_prefix('!')
        .and_then(|r| r.strip_prefix(prefix))
        .and_then(|r| r.strip_prefix('{'))
        .and_then(|r| r.strip_suffix('}'));
    match enveloped {
        Some(name) => Channel::parse(name).ok().map(|c| (c, true)),
        None => redis_channel
            .strip_prefix(prefix)
            .and_then(|name| Channel::parse(name).ok())
            .map(|c| (c, false)),
    }
}

/// What a PUBLISH payload that starts with NUL carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Envelope {
    /// `\0h<epoch>\0<offset>\0<user>\0<payload>`: a message of a channel with history.
    History {
        position: StreamPosition,
        publisher: Option<Arc<str>>,
        payload: Bytes,
    },
    /// `\0m<user>\0<payload>`: a message without history, from a WebSocket client (`user`
    /// set) or, on Redis Cluster, from a backend (`user` empty: no publisher), where every
    /// message travels on the envelope channel, in the slot of the channel's keys.
    Message {
        publisher: Option<Arc<str>>,
        payload: Bytes,
    },
    /// `\0e<frame>`: a gateway event, a complete server frame.
    Event { frame: Bytes },
}

/// Opens a PUBLISH payload: `None` for plain payloads (not starting with NUL), `Some(Err)`
/// for a malformed envelope.
pub fn open_envelope(raw: &[u8]) -> Option<Result<Envelope, ()>> {
    if raw.first() != Some(&ENVELOPE) {
        return None;
    }
    Some(parse_envelope(&raw[1..]).ok_or(()))
}

fn parse_envelope(raw: &[u8]) -> Option<Envelope> {
    fn field(rest: &[u8]) -> Option<(&[u8], &[u8])> {
        let end = rest.iter().position(|b| *b == 0)?;
        Some((&rest[..end], &rest[end + 1..]))
    }
    let text = |b: &[u8]| std::str::from_utf8(b).ok().map(Arc::<str>::from);
    let (tag, rest) = raw.split_first()?;
    match tag {
        b'h' => {
            let (epoch, rest) = field(rest)?;
            let (offset, rest) = field(rest)?;
            let (user, payload) = field(rest)?;
            Some(Envelope::History {
                position: StreamPosition {
                    offset: std::str::from_utf8(offset).ok()?.parse().ok()?,
                    epoch: text(epoch)?,
                },
                publisher: (!user.is_empty()).then(|| text(user)).flatten(),
                payload: Bytes::copy_from_slice(payload),
            })
        }
        b'm' => {
            let (user, payload) = field(rest)?;
            Some(Envelope::Message {
                publisher: if user.is_empty() {
                    None
                } else {
                    Some(text(user)?)
                },
                payload: Bytes::copy_from_slice(payload),
            })
        }
        b'e' => Some(Envelope::Event {
            frame: Bytes::copy_from_slice(rest),
        }),
        _ => None,
    }
}

/// The PUBLISH payload of an event frame.
pub fn event_envelope(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 2);
    out.extend_from_slice(&[ENVELOPE, b'e']);
    out.extend_from_slice(frame);
    out
}

/// The PUBLISH payload of a message on a channel without history; `publisher` is empty for
/// none (a backend's publish on Redis Cluster).
pub fn message_envelope(publisher: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + publisher.len() + 3);
    out.extend_from_slice(&[ENVELOPE, b'm']);
    out.extend_from_slice(publisher.as_bytes());
    out.push(0);
    out.extend_from_slice(payload);
    out
}

/// Turns one pub/sub message (Redis channel name and payload) into a publication: strips the
/// prefix, validates the channel, opens a fanout envelope, checks the size. The per-message
/// work of the Redis read path; `Err` names why a message is dropped (a metric label).
pub fn decode_message(
    prefix: &str,
    redis_channel: &str,
    raw: &[u8],
    max_payload: usize,
) -> Result<Publication, &'static str> {
    let (channel, enveloped) = channel_of(prefix, redis_channel).ok_or("bad_channel")?;
    let publication = match (enveloped, open_envelope(raw)) {
        (false, None) => Publication::new(channel, Bytes::copy_from_slice(raw)),
        // Only the node and its library write envelopes, and never on a public channel.
        (false, Some(_)) => return Err("forged_envelope"),
        (true, None | Some(Err(()))) => return Err("bad_envelope"),
        (
            true,
            Some(Ok(Envelope::History {
                position,
                publisher,
                payload,
            })),
        ) => Publication::at(channel, payload, position).by(publisher),
        (true, Some(Ok(Envelope::Message { publisher, payload }))) => {
            Publication::new(channel, payload).by(publisher)
        }
        (true, Some(Ok(Envelope::Event { frame }))) => Publication::event(channel, frame),
    };
    if publication.len() > max_payload {
        return Err("too_large");
    }
    Ok(publication)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_open_and_plain_payloads_are_not_envelopes() {
        let Some(Ok(Envelope::History {
            position,
            publisher,
            payload,
        })) = open_envelope(b"\0he1\x0042\0u7\0{\"a\":\"\0\"}")
        else {
            panic!("not a history envelope");
        };
        assert_eq!((position.offset, &*position.epoch), (42, "e1"));
        assert_eq!(publisher.as_deref(), Some("u7"));
        assert_eq!(&payload[..], b"{\"a\":\"\0\"}");
        let Some(Ok(Envelope::History { publisher, .. })) = open_envelope(b"\0he1\x001\0\0x")
        else {
            panic!("not a history envelope");
        };
        assert_eq!(publisher, None);
        assert_eq!(
            open_envelope(&message_envelope("u1", b"1")),
            Some(Ok(Envelope::Message {
                publisher: Some(Arc::from("u1")),
                payload: Bytes::from_static(b"1")
            }))
        );
        // An empty user is no publisher (a backend's message on Redis Cluster).
        assert_eq!(
            open_envelope(&message_envelope("", b"2")),
            Some(Ok(Envelope::Message {
                publisher: None,
                payload: Bytes::from_static(b"2")
            }))
        );
        assert_eq!(
            open_envelope(&event_envelope(b"{}")),
            Some(Ok(Envelope::Event {
                frame: Bytes::from_static(b"{}")
            }))
        );
        assert!(open_envelope(b"{\"plain\":1}").is_none());
        assert_eq!(open_envelope(b"\0broken"), Some(Err(())));
    }

    #[test]
    fn plain_publishers_cannot_name_an_envelope_channel() {
        let room = Channel::parse("room:x").unwrap();
        assert_eq!(public_channel("fanout:", &room), "fanout:room:x");
        assert_eq!(envelope_channel("fanout:", &room), "!fanout:{room:x}");
        assert_eq!(
            channel_of("fanout:", "fanout:room:x"),
            Some((room.clone(), false))
        );
        assert_eq!(
            channel_of("fanout:", "!fanout:{room:x}"),
            Some((room.clone(), true))
        );
        // `<prefix>` + whatever a user typed is never an envelope channel.
        assert_eq!(channel_of("fanout:", "fanout:!fanout:{room:x}"), None);
        assert_eq!(channel_of("fanout:", "fanout:{room:x}"), None);
        assert_eq!(channel_of("fanout:", "!fanout:node:n1"), None);
        // An empty prefix keeps the two apart too.
        assert_eq!(channel_of("", "!{room:x}"), Some((room.clone(), true)));
        assert_eq!(channel_of("", "room:x"), Some((room, false)));
    }
}
