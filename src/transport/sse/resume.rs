//! The `id:` of SSE events: where the stream is in each history channel, so that a browser's
//! automatic reconnect (which sends the last id back as `Last-Event-ID`) can resume every
//! channel exactly where it stopped.
//!
//! Format: `<channel>=<offset>:<epoch>` for each history channel, joined by `,` (channel names
//! contain neither `=` nor `,`; epochs are checked to be plain tokens). The id is per stream,
//! not per message: the JSON of a message is shared by every subscriber, its id line is not.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::channel::Channel;
use crate::protocol::{HistoryMark, MAX_OFFSET, Since};

/// Longest `Last-Event-ID` read (a browser sends back what we sent; this bounds a forged one).
pub const MAX_ID_LEN: usize = 16 * 1024;

/// The last position the stream wrote, per history channel.
#[derive(Debug, Default)]
pub struct Positions(BTreeMap<Channel, (u64, Arc<str>)>);

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Positions {
    /// Records a message written to the stream.
    pub fn record(&mut self, mark: &HistoryMark) {
        if is_token(&mark.epoch) {
            self.0
                .insert(mark.channel.clone(), (mark.offset, mark.epoch.clone()));
        }
    }

    /// Forgets a channel the stream no longer carries.
    pub fn forget(&mut self, channel: &str) {
        self.0.retain(|c, _| c.as_str() != channel);
    }

    /// The id line's value.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (channel, (offset, epoch)) in &self.0 {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(channel.as_str());
            out.push('=');
            out.push_str(&offset.to_string());
            out.push(':');
            out.push_str(epoch);
        }
        out
    }

    /// Reads a `Last-Event-ID` back into positions to recover from. Entries that do not parse
    /// are skipped: a damaged id costs a reload of those channels, never a wrong replay.
    pub fn decode(id: &str) -> Vec<(Channel, Since)> {
        if id.len() > MAX_ID_LEN {
            return Vec::new();
        }
        id.split(',')
            .filter_map(|entry| {
                let (channel, position) = entry.split_once('=')?;
                let (offset, epoch) = position.split_once(':')?;
                let offset: u64 = offset.parse().ok().filter(|o| *o <= MAX_OFFSET)?;
                if !is_token(epoch) {
                    return None;
                }
                let channel = Channel::parse(channel).ok()?;
                Some((
                    channel,
                    Since {
                        offset,
                        epoch: epoch.to_owned(),
                    },
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_damaged_entries_are_skipped() {
        let mut p = Positions::default();
        let mark = |c: &str, o: u64, e: &str| HistoryMark {
            channel: Channel::parse(c).unwrap(),
            offset: o,
            epoch: e.into(),
        };
        p.record(&mark("dag:7", 3, "abc"));
        p.record(&mark("user:42", 9, "e-1"));
        p.record(&mark("dag:7", 4, "abc"));
        p.record(&mark("dag:8", 1, "bad epoch"));
        let id = p.encode();
        assert_eq!(id, "dag:7=4:abc,user:42=9:e-1");
        let back = Positions::decode(&id);
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].0.as_str(), "dag:7");
        assert_eq!(back[0].1.offset, 4);
        let damaged =
            Positions::decode("dag:7=x:abc,nonsense,user:1=2:ok,dag:9=18446744073709551615:e");
        assert_eq!(damaged.len(), 1);
        assert_eq!(damaged[0].0.as_str(), "user:1");
        p.forget("dag:7");
        assert_eq!(p.encode(), "user:42=9:e-1");
    }
}
