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

/// Longest id written, and longest `Last-Event-ID` read (a browser sends back what we sent;
/// this bounds a forged one). Positions that would make an id longer are left out of it
/// (those channels are subscribed afresh on a resume, as if the stream had carried none of
/// their messages): 128 channels of the longest names fit.
pub const MAX_ID_LEN: usize = 32 * 1024;

/// `n` in decimal, in the tail of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

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

    /// Whether there is any position to write.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends the id line's value to `out`. Written per history message and per stream,
    /// so straight into the chunk being built, without a string of its own.
    pub fn write_to(&self, out: &mut impl bytes::BufMut) {
        let mut first = true;
        let mut written = 0;
        for (channel, (offset, epoch)) in &self.0 {
            // `,` + `=` + `:` + 20 digits at most.
            let entry = channel.as_str().len() + epoch.len() + 23;
            if written + entry > MAX_ID_LEN {
                break;
            }
            written += entry;
            if !first {
                out.put_u8(b',');
            }
            first = false;
            out.put_slice(channel.as_str().as_bytes());
            out.put_u8(b'=');
            let mut digits = [0u8; 20];
            out.put_slice(decimal(*offset, &mut digits));
            out.put_u8(b':');
            out.put_slice(epoch.as_bytes());
        }
    }

    /// The id line's value.
    #[cfg(test)]
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        self.write_to(&mut out);
        // Channels, digits and token epochs are ASCII.
        String::from_utf8_lossy(&out).into_owned()
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
    fn offsets_are_written_in_decimal() {
        let mut buf = [0u8; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(1090, &mut buf), b"1090");
        assert_eq!(decimal(u64::MAX, &mut buf), b"18446744073709551615");
    }

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
