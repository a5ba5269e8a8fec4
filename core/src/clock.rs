//! Wall time behind a trait, so tests can move the clock.
//!
//! Two clocks, two jobs: *wall time* (`Clock::now`) is what gets stored and shown; *durations and
//! timers* always use the monotonic `tokio::time::Instant`, so a wall-clock jump can never make a
//! negative duration or skip a backoff (case C15).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

/// A source of wall time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current UTC time, as stored in the database and shown to users.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock shifted by an adjustable offset: lets tests jump wall time forwards and
/// backwards while timers keep running on the monotonic clock.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
}

impl OffsetClock {
    /// A clock that starts equal to the system clock.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Moves wall time by `delta` (negative: back in time).
    pub fn jump(&self, delta: TimeDelta) {
        self.offset_ms.fetch_add(delta.num_milliseconds(), Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }
}

/// Milliseconds since the Unix epoch: the storage format of times.
pub fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Inverse of [`to_ms`]; out-of-range values clamp to the epoch.
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_clock_jumps_both_ways() {
        let clock = OffsetClock::new();
        let before = clock.now();
        clock.jump(TimeDelta::hours(-1));
        assert!(clock.now() < before - TimeDelta::minutes(59));
        clock.jump(TimeDelta::hours(2));
        assert!(clock.now() > before + TimeDelta::minutes(59));
    }

    #[test]
    fn millisecond_round_trip() {
        let t = from_ms(1_764_758_467_123);
        assert_eq!(to_ms(t), 1_764_758_467_123);
    }
}
