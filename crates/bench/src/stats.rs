//! Latency summaries (min/p50/p99/max over every sample, nearest-rank) and the tool's own
//! CPU time, read from the kernel so it can be set beside the server's figures.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds, as the report prints them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub samples: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    pub fn of(mut samples: Vec<Duration>) -> Summary {
        samples.sort_unstable();
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let at = |p: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            // Nearest rank: the smallest sample with at least p of all samples at or below it.
            let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            ms(samples[rank - 1])
        };
        Summary {
            samples: samples.len(),
            min_ms: samples.first().map(|d| ms(*d)).unwrap_or(0.0),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: samples.last().map(|d| ms(*d)).unwrap_or(0.0),
        }
    }

    pub fn line(&self) -> String {
        format!(
            "min {:.2}  p50 {:.2}  p99 {:.2}  max {:.2} ms",
            self.min_ms, self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// User + system CPU seconds this process has used so far.
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Resident set size of a process, in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Summary::of((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(s.samples, 100);
        assert_eq!(
            (s.min_ms, s.p50_ms, s.p99_ms, s.max_ms),
            (1.0, 50.0, 99.0, 100.0)
        );
        let one = Summary::of(vec![Duration::from_micros(1500)]);
        assert_eq!((one.p50_ms, one.p99_ms), (1.5, 1.5));
        assert_eq!(Summary::of(vec![]).samples, 0);
    }

    #[test]
    fn cpu_time_moves_forward() {
        let before = own_cpu_seconds();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(own_cpu_seconds() > before);
        assert!(rss_kib(std::process::id()).unwrap_or(0) > 0);
    }
}
