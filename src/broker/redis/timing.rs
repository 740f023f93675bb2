//! How long the Redis side of a node waits, and how it backs off: defined once for every
//! connection (commands, pub/sub, the relay listener, the cluster connection) and every
//! probe, so that they behave alike when Redis is slow or gone.

use std::time::Duration;

/// Longest wait for a connection to Redis to be established.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for one command's reply (a pool connection included); past it, the broker
/// counts Redis as unavailable.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a liveness probe may take to come back before its connection (or shard) counts
/// as dead.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a Redis Cluster probe's own commands (the slot map, a probe's SPUBLISH or
/// SSUBSCRIBE) may take: a healthy shard answers in milliseconds, and a dead master must be
/// noticed fast.
pub const PROBE_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// Reconnection delays: doubling from 100 ms to 3 s, each drawn with jitter between half and
/// all of it, so that the nodes of a cluster do not return to a restarted Redis in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const MIN: Duration = Duration::from_millis(100);
    pub const MAX: Duration = Duration::from_secs(3);

    pub fn new() -> Backoff {
        Backoff { next: Backoff::MIN }
    }

    /// The delay to wait now; the next one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next.mul_f64(rand::random_range(0.5..1.0));
        self.next = (self.next * 2).min(Backoff::MAX);
        delay
    }

    /// A connection that worked starts the next one's backoff afresh.
    pub fn reset(&mut self) {
        self.next = Backoff::MIN;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_and_start_over_after_a_reset() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= Backoff::MIN / 2 && first <= Backoff::MIN);
        for _ in 0..20 {
            assert!(b.next_delay() <= Backoff::MAX);
        }
        let late = b.next_delay();
        assert!(late >= Backoff::MAX / 2, "{late:?}");
        b.reset();
        assert!(b.next_delay() <= Backoff::MIN);
    }
}
