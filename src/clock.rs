//! Wall-clock time in the units the protocol uses (Unix seconds and milliseconds).
//!
//! Token expiry, publish timestamps and inbox entries are Unix times; connection liveness uses
//! Tokio's monotonic clock instead, so it is not here.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    unix_now_ms() / 1000
}

/// Milliseconds since the Unix epoch (0 if the system clock is before it).
pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
