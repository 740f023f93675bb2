//! Admission control and rate limits: who may open a connection, and how fast a connection
//! may send.
//!
//! Connection counts are held by RAII slots ([`NodeSlot`], [`UserSlot`]) so that every exit
//! path of a session, including panics and early upgrade failures, gives its slot back. A
//! node slot may also hold one of its client address's slots (`max_connections_per_ip`), and
//! request bodies being read hold one too ([`Admission::hold`]): a client that sends part of a
//! body and goes quiet counts against the same limits as an open session until its deadline.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::Limits;

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// More new connections per second than `max_new_connections_per_s`.
    RateLimited,
    /// `max_connections` reached on this node.
    NodeFull,
    /// `max_connections_per_user` reached for this user on this node.
    UserFull,
    /// `max_connections_per_ip` reached for this client address on this node.
    IpFull,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::RateLimited => "rate_limited",
            Refusal::NodeFull => "node_full",
            Refusal::UserFull => "user_full",
            Refusal::IpFull => "ip_full",
        }
    }
}

/// Connection admission for one node.
pub struct Admission {
    max_connections: usize,
    max_per_user: usize,
    /// 0: no limit.
    max_per_ip: usize,
    open: AtomicUsize,
    per_user: DashMap<String, usize>,
    per_ip: DashMap<IpAddr, usize>,
    new_connections: DefaultDirectRateLimiter,
}

impl Admission {
    pub fn new(limits: &Limits) -> Arc<Admission> {
        Arc::new(Admission {
            max_connections: limits.max_connections,
            max_per_user: limits.max_connections_per_user,
            max_per_ip: limits.max_connections_per_ip,
            open: AtomicUsize::new(0),
            per_user: DashMap::new(),
            per_ip: DashMap::new(),
            new_connections: RateLimiter::direct(Quota::per_second(nonzero(
                limits.max_new_connections_per_s,
            ))),
        })
    }

    /// Takes one of the node's connection slots, if the rate and the node limit allow.
    pub fn admit(self: &Arc<Self>) -> Result<NodeSlot, Refusal> {
        if self.new_connections.check().is_err() {
            return Err(Refusal::RateLimited);
        }
        self.hold()
    }

    /// Takes one of the node's connection slots if the node limit allows, whatever the rate
    /// of new sessions: for a request body while it is read.
    pub fn hold(self: &Arc<Self>) -> Result<NodeSlot, Refusal> {
        let prev = self.open.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::NodeFull);
        }
        Ok(NodeSlot {
            admission: self.clone(),
            ip: None,
        })
    }

    /// Takes one of the user's connection slots.
    pub fn admit_user(self: &Arc<Self>, user: &str) -> Result<UserSlot, Refusal> {
        let mut count = self.per_user.entry(user.to_owned()).or_insert(0);
        if *count >= self.max_per_user {
            return Err(Refusal::UserFull);
        }
        *count += 1;
        drop(count);
        Ok(UserSlot {
            admission: self.clone(),
            user: user.to_owned(),
        })
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One open connection on this node (and of its client address, once
/// [`NodeSlot::with_ip`] took one); released on drop.
pub struct NodeSlot {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
}

impl NodeSlot {
    /// Also takes one of the client address's slots; refused (and this slot given back) when
    /// that address is at `max_connections_per_ip`.
    pub fn with_ip(mut self, ip: IpAddr) -> Result<NodeSlot, Refusal> {
        let max = self.admission.max_per_ip;
        if max == 0 || self.ip.is_some() {
            return Ok(self);
        }
        let mut count = self.admission.per_ip.entry(ip).or_insert(0);
        if *count >= max {
            return Err(Refusal::IpFull);
        }
        *count += 1;
        drop(count);
        self.ip = Some(ip);
        Ok(self)
    }
}

impl Drop for NodeSlot {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            // Remove the entry at zero so the map holds only addresses with open connections.
            self.admission.per_ip.remove_if_mut(&ip, |_, count| {
                *count = count.saturating_sub(1);
                *count == 0
            });
        }
    }
}

/// One open connection of a user on this node; released on drop.
pub struct UserSlot {
    admission: Arc<Admission>,
    user: String,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        // Remove the entry at zero so the map holds only users with open connections.
        self.admission
            .per_user
            .remove_if_mut(&self.user, |_, count| {
                *count = count.saturating_sub(1);
                *count == 0
            });
    }
}

/// What to do with an inbound frame under the per-connection rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameVerdict {
    Process,
    /// Over the rate: answer `rate_limited`, do not process.
    Reject,
    /// Far over the rate for too long: close with 4029.
    Close,
}

/// Inbound frame rate of one connection: `n` per second with a burst of `n`; rejected frames
/// draw on a second budget of the same size, and a client that exhausts it too (sending at
/// more than twice the rate) is closed.
pub struct FrameRate {
    frames: DefaultDirectRateLimiter,
    strikes: DefaultDirectRateLimiter,
}

impl FrameRate {
    pub fn new(per_second: u32) -> FrameRate {
        let quota = Quota::per_second(nonzero(per_second));
        FrameRate {
            frames: RateLimiter::direct(quota),
            strikes: RateLimiter::direct(quota),
        }
    }

    pub fn check(&self) -> FrameVerdict {
        if self.frames.check().is_ok() {
            FrameVerdict::Process
        } else if self.strikes.check().is_ok() {
            FrameVerdict::Reject
        } else {
            FrameVerdict::Close
        }
    }
}

/// A per-connection budget of some action per second (e.g. client publishes).
pub struct RateBudget(DefaultDirectRateLimiter);

impl RateBudget {
    pub fn new(per_second: u32) -> RateBudget {
        RateBudget(RateLimiter::direct(Quota::per_second(nonzero(per_second))))
    }

    /// Takes one unit; false when the budget is spent for now.
    pub fn take(&self) -> bool {
        self.0.check().is_ok()
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, per_user: usize) -> Limits {
        Limits {
            max_message_bytes: 65536,
            max_recovery_messages: 100,
            max_publishes_per_s: 10,
            max_payload_bytes: 1024,
            max_subscriptions: 8,
            max_frames_per_s: 10,
            max_connections,
            max_connections_per_user: per_user,
            max_connections_per_ip: 0,
            max_new_connections_per_s: 1000,
            queue_max_messages: 16,
            queue_max_bytes: 1 << 20,
        }
    }

    #[test]
    fn slots_are_counted_and_given_back() {
        let a = Admission::new(&limits(2, 1));
        let s1 = a.admit().unwrap();
        let _s2 = a.admit().unwrap();
        assert_eq!(a.admit().err(), Some(Refusal::NodeFull));
        drop(s1);
        assert!(a.admit().is_ok());

        let u1 = a.admit_user("42").unwrap();
        assert_eq!(a.admit_user("42").err(), Some(Refusal::UserFull));
        assert!(a.admit_user("7").is_ok());
        drop(u1);
        assert!(a.admit_user("42").is_ok());
        assert!(
            a.per_user.get("7").is_none(),
            "released users leave the map"
        );
    }

    #[test]
    fn address_slots_are_counted_given_back_and_give_the_node_slot_back_when_refused() {
        let mut l = limits(10, 10);
        l.max_connections_per_ip = 2;
        let a = Admission::new(&l);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = a.hold().unwrap().with_ip(ip).unwrap();
        let _s2 = a.hold().unwrap().with_ip(ip).unwrap();
        assert_eq!(a.hold().unwrap().with_ip(ip).err(), Some(Refusal::IpFull));
        assert_eq!(
            a.open_connections(),
            2,
            "a refused address slot frees its node slot"
        );
        assert!(a.hold().unwrap().with_ip(other).is_ok());
        drop(s1);
        let _s3 = a.hold().unwrap().with_ip(ip).unwrap();
        // 0 means no limit.
        let unlimited = Admission::new(&limits(10, 10));
        let held: Vec<_> = (0..5)
            .map(|_| unlimited.hold().unwrap().with_ip(ip).unwrap())
            .collect();
        assert_eq!(held.len(), 5);
        assert!(unlimited.per_ip.is_empty());
    }

    #[test]
    fn a_flood_is_rejected_then_closed() {
        let rate = FrameRate::new(5);
        let verdicts: Vec<_> = (0..20).map(|_| rate.check()).collect();
        assert_eq!(&verdicts[..5], &[FrameVerdict::Process; 5]);
        assert_eq!(&verdicts[5..10], &[FrameVerdict::Reject; 5]);
        assert_eq!(verdicts[10], FrameVerdict::Close);
    }
}

/// The address of the peer a request came from (the client, or the proxy in front of it),
/// put in every request's extensions by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr(pub std::net::SocketAddr);

/// Allows one log line per interval; reports how many were suppressed in between.
pub struct RateLimitedLog {
    interval_ms: u64,
    clock: Instant,
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimitedLog {
    pub fn new(interval: Duration) -> RateLimitedLog {
        RateLimitedLog {
            interval_ms: interval.as_millis() as u64,
            clock: Instant::now(),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed count)` when a line may be logged now.
    pub fn allow(&self) -> Option<u64> {
        let now = self.clock.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + self.interval_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}
