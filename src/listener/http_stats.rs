//! Counters of an HTTP listener's responses: how many of each status class, and how long the
//! response heads took, as a fixed-bucket histogram (Prometheus `histogram` shape).
//!
//! Everything is a relaxed atomic: recording a response is a handful of `fetch_add`s, no lock and
//! no allocation, and the admin API reads the same atomics at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds (1 ms … 10 s, as Prometheus client
/// libraries' defaults spread them); a last, implicit bucket counts everything (`+Inf`).
pub const LATENCY_BUCKETS_US: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// Responses and latencies of one HTTP listener.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Responses sent, by status class: index 0 = 1xx … 4 = 5xx.
    pub responses: [AtomicU64; 5],
    /// Response heads per latency bucket (not cumulative), indexed like [`LATENCY_BUCKETS_US`];
    /// the last entry counts those slower than every bound.
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    /// Sum of all latencies, in microseconds.
    pub latency_sum_us: AtomicU64,
}

impl HttpStats {
    /// Counts one response with `status` whose head was ready `took` after the request arrived.
    #[inline]
    pub fn record(&self, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Responses of each class now: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub fn responses(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.responses[i].load(Ordering::Relaxed))
    }

    /// Every response counted.
    pub fn requests(&self) -> u64 {
        self.responses().iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_fall_in_their_class_and_latency_bucket() {
        let s = HttpStats::default();
        s.record(204, Duration::from_micros(900));
        s.record(503, Duration::from_millis(3));
        s.record(999, Duration::from_secs(60));
        assert_eq!(s.responses(), [0, 1, 0, 0, 2]);
        assert_eq!(s.latency_buckets[0].load(Ordering::Relaxed), 1);
        assert_eq!(s.latency_buckets[2].load(Ordering::Relaxed), 1);
        assert_eq!(
            s.latency_buckets[LATENCY_BUCKETS_US.len()].load(Ordering::Relaxed),
            1
        );
    }
}
