//! When a message that failed comes back. The processor hides each failed record for a wait
//! that grows with its receive count, so that the queue's `maxReceiveCount` receives span an
//! outage of hours instead of half an hour of 360 s visibility timeouts. The stacks choose
//! `maxReceiveCount` from [`Backoff::receives_for`] and their `RetryHorizonHours` (a template
//! test checks the two agree).

use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::QueueError;

/// SQS's longest visibility timeout: 12 hours.
pub const SQS_MAX_VISIBILITY: Duration = Duration::from_secs(43_200);

/// The SQS attribute of a record that counts its receives, this one included.
pub const RECEIVE_COUNT: &str = "ApproximateReceiveCount";

/// Exponential waits with jitter on top: after the n-th failed receive, `base × 2^(n-1)`, at
/// most `cap`, plus up to `jitter` of itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The wait after the first failed receive.
    pub base: Duration,
    /// The longest wait before jitter: how long an event may wait after its downstream
    /// recovered, at most (plus the jitter).
    pub cap: Duration,
    /// The jitter's share of a wait, on top of it: a wait is never shorter than its floor, so
    /// the schedule's span is a lower bound the stacks can count on.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 1 minute, doubling to an hour, +0–10 %: 1, 2, 4, 8, 16, 32, 60, 60, … minutes.
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(60),
            cap: Duration::from_secs(3600),
            jitter: 0.1,
        }
    }
}

impl Backoff {
    /// The wait after the `receives`-th failed receive (1 for the first), before jitter.
    pub fn floor(&self, receives: u32) -> Duration {
        let doublings = receives.saturating_sub(1).min(32);
        self.base
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.cap)
            .min(SQS_MAX_VISIBILITY)
    }

    /// The wait after the `receives`-th failed receive, with `unit` (in `[0, 1)`) of the jitter
    /// on top; never more than SQS's 12 hours.
    pub fn delay(&self, receives: u32, unit: f64) -> Duration {
        let floor = self.floor(receives);
        floor
            .saturating_add(floor.mul_f64(self.jitter * unit.clamp(0.0, 1.0)))
            .min(SQS_MAX_VISIBILITY)
    }

    /// The wait for one record: its jitter drawn from its message id and receive count, so that
    /// records that failed together come back spread out, and one run is the same when repeated.
    pub fn delay_for(&self, message_id: &str, receives: u32) -> Duration {
        let digest = Sha256::new()
            .chain_update(message_id.as_bytes())
            .chain_update(receives.to_be_bytes())
            .finalize();
        let bits = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        self.delay(receives, (bits >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// From the first receive to the `n`-th, at the floor: the earliest the `n`-th receive can
    /// come (processing time only adds to it).
    pub fn span(&self, n: u32) -> Duration {
        (1..n).map(|k| self.floor(k)).sum()
    }

    /// The fewest receives whose last comes `horizon` or more after the first, at the floor:
    /// the `maxReceiveCount` with which an outage up to `horizon` leaves the event on the queue
    /// for a receive after it.
    pub fn receives_for(&self, horizon: Duration) -> u32 {
        if self.base.is_zero() {
            return u32::MAX;
        }
        (1..)
            .find(|&n| self.span(n) >= horizon)
            .expect("the waits are at least base")
    }
}

/// Hides failed messages for their wait (SQS ChangeMessageVisibility).
#[async_trait]
pub trait Visibility: Send + Sync {
    /// Sets each message's (receipt handle, wait) visibility timeout to the wait, from now. One
    /// result per entry, in order; a message not changed comes back after the queue's own
    /// visibility timeout.
    async fn hide(&self, entries: &[(String, Duration)]) -> Vec<Result<(), QueueError>>;
}

/// Visibility changes kept in memory, for unit tests.
#[derive(Default)]
pub struct MemoryVisibility {
    hidden: std::sync::Mutex<Vec<(String, Duration)>>,
    failing: std::sync::atomic::AtomicBool,
}

impl MemoryVisibility {
    /// Every change fails while `on`.
    pub fn fail(&self, on: bool) {
        self.failing.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Each change made: receipt handle and wait.
    pub fn hidden(&self) -> Vec<(String, Duration)> {
        self.hidden.lock().unwrap().clone()
    }
}

#[async_trait]
impl Visibility for MemoryVisibility {
    async fn hide(&self, entries: &[(String, Duration)]) -> Vec<Result<(), QueueError>> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return entries
                .iter()
                .map(|_| Err(QueueError("injected".into())))
                .collect();
        }
        self.hidden.lock().unwrap().extend_from_slice(entries);
        entries.iter().map(|_| Ok(())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn waits_double_from_a_minute_to_an_hour() {
        let b = Backoff::default();
        let minutes: Vec<u64> = (1..=9).map(|n| b.floor(n).as_secs() / 60).collect();
        assert_eq!(minutes, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(b.floor(0), MIN);
        assert_eq!(b.floor(u32::MAX), 60 * MIN);
    }

    #[test]
    fn jitter_is_on_top_and_never_past_twelve_hours() {
        let b = Backoff::default();
        assert_eq!(b.delay(3, 0.0), 4 * MIN);
        assert_eq!(b.delay(3, 0.5), 4 * MIN + Duration::from_secs(12));
        assert!(b.delay(3, 0.999_999) < 4 * MIN + Duration::from_secs(24));
        let long = Backoff {
            base: Duration::from_secs(40_000),
            cap: Duration::from_secs(100_000),
            jitter: 0.5,
        };
        assert_eq!(long.delay(1, 0.9), SQS_MAX_VISIBILITY);
        assert_eq!(long.delay(5, 0.0), SQS_MAX_VISIBILITY);
    }

    #[test]
    fn records_that_failed_together_come_back_spread_out() {
        let b = Backoff::default();
        let waits: std::collections::BTreeSet<Duration> =
            (0..50).map(|i| b.delay_for(&format!("m-{i}"), 4)).collect();
        assert!(waits.len() > 40, "{} distinct waits of 50", waits.len());
        assert!(waits
            .iter()
            .all(|w| *w >= 8 * MIN && *w < 8 * MIN + 48 * MIN / 60));
        // The same record, the same wait; another receive, another draw.
        assert_eq!(b.delay_for("m-1", 4), b.delay_for("m-1", 4));
    }

    #[test]
    fn the_receives_for_a_horizon_span_it_and_one_fewer_would_not() {
        let b = Backoff::default();
        // 1+2+4+8+16+32 = 63 minutes after 7 receives; then an hour a receive.
        assert_eq!(b.span(7), 63 * MIN);
        assert_eq!(b.receives_for(Duration::from_secs(3600)), 7);
        assert_eq!(b.receives_for(Duration::from_secs(24 * 3600)), 30);
        for hours in [1, 6, 12, 24, 48, 72] {
            let horizon = Duration::from_secs(hours * 3600);
            let n = b.receives_for(horizon);
            assert!(b.span(n) >= horizon, "{hours} h");
            assert!(b.span(n - 1) < horizon, "{hours} h: {n} is not the fewest");
        }
    }
}
