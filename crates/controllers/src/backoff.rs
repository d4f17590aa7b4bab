//! Per-object exponential back-off with a ceiling: how long a loop waits before retrying what
//! failed, and how many attempts it has made (for the "promise made visible" messages).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Attempts and delays per key (e.g. `namespace/name`); forgotten on success.
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempts: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// Count one more failure of `key`; returns (attempts so far, delay before the next).
    pub fn failed(&self, key: &str) -> (u32, Duration) {
        let mut m = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        (*n, self.delay(*n))
    }

    /// The delay after `attempts` failures: base, 2×base, 4×base … up to the ceiling.
    pub fn delay(&self, attempts: u32) -> Duration {
        let shift = attempts.saturating_sub(1).min(31);
        self.base
            .checked_mul(1u32 << shift)
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// Failures of `key` since its last success.
    pub fn attempts(&self, key: &str) -> u32 {
        let m = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        m.get(key).copied().unwrap_or(0)
    }

    /// `key` succeeded (or is gone): start from the base again next time.
    pub fn reset(&self, key: &str) {
        let mut m = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_ceiling_and_resets() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        let d: Vec<u64> = (0..6).map(|_| b.failed("a").1.as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 10, 10]);
        assert_eq!(b.attempts("a"), 6);
        b.reset("a");
        assert_eq!(b.failed("a"), (1, Duration::from_secs(1)));
        assert_eq!(b.delay(200), Duration::from_secs(10));
    }
}
