//! Refusals by reason, and log lines about them that cannot flood the log.
//!
//! Under overload the same refusal happens thousands of times a second; one log line each would
//! cost more than the refusals themselves and bury everything else. So every reason of every
//! listener has a [`LogEvery`]: the first refusal is logged at once, later ones at most once a
//! second, each line saying how many happened since the previous one. The counters themselves are
//! exact (atomics on [`super::ListenerStats`]); only the log is sampled.
//!
//! Adding a reason (`queue_full`, `queue_timeout`…): a [`Reason`] variant with its name, a
//! counter on `ListenerStats`, and one arm in [`super::ListenerStats::refused`] and in
//! [`super::ListenerStats::refusal_count`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Why ballast did not serve (or did not yet accept) a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No server could take the connection (all down, full, or every connect failed): the client
    /// was closed at once (TCP: RST; HTTP: 503).
    NoServer,
    /// The listener's or the global `max_connections` was reached: accepting paused and the
    /// connection waited in the kernel's accept queue (it is served later, or dropped by the
    /// kernel if the queue overflows).
    Limit,
    /// Every usable server was at its `max_connections` and the upstream's queue was full: the
    /// client was refused at once (TCP: RST; HTTP: 503).
    QueueFull,
    /// The client waited `queue_timeout` in the upstream's queue without a server slot freeing up
    /// (TCP: RST; HTTP: 503).
    QueueTimeout,
    /// ballast itself ran short of a resource (file descriptors: EMFILE/ENFILE, kernel memory,
    /// source ports) when connecting to a server: the client was refused at once (TCP: RST;
    /// HTTP: 503) and no server was blamed. HAProxy's termination state `R`.
    Resources,
}

impl Reason {
    /// Every reason, in the order tables show them.
    pub const ALL: [Reason; 5] = [
        Reason::NoServer,
        Reason::Limit,
        Reason::QueueFull,
        Reason::QueueTimeout,
        Reason::Resources,
    ];

    /// The name in logs, tables and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoServer => "no_server",
            Reason::Limit => "limit",
            Reason::QueueFull => "queue_full",
            Reason::QueueTimeout => "queue_timeout",
            Reason::Resources => "resources",
        }
    }

    fn index(self) -> usize {
        match self {
            Reason::NoServer => 0,
            Reason::Limit => 1,
            Reason::QueueFull => 2,
            Reason::QueueTimeout => 3,
            Reason::Resources => 4,
        }
    }
}

/// The log rate limiters of one listener, one per [`Reason`].
#[derive(Debug, Default)]
pub struct Refusals {
    logs: [LogEvery; Reason::ALL.len()],
}

impl Refusals {
    /// Counts one refusal for the log; `Some(n)` when a line may be written now, `n` being the
    /// refusals since the previous line (this one included).
    pub fn may_log(&self, reason: Reason) -> Option<u64> {
        self.logs.get(reason.index()).and_then(LogEvery::tick)
    }
}

/// At most one log line per [`LogEvery::PERIOD`], counting what happened in between.
#[derive(Debug, Default)]
pub struct LogEvery {
    /// When the last line was allowed, in ms since [`epoch`], plus one (0 = never).
    last: AtomicU64,
    /// Events since the last line was allowed.
    since: AtomicU64,
}

impl LogEvery {
    /// One line per second at most.
    pub const PERIOD: Duration = Duration::from_secs(1);

    /// Counts one event; `Some(n)` when a line may be written now (`n` events since the last
    /// one, this one included), `None` when the last line was less than a period ago.
    pub fn tick(&self) -> Option<u64> {
        self.tick_at(u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1)
    }

    /// [`LogEvery::tick`] at `now` ms (≥ 1) on the limiter's clock.
    fn tick_at(&self, now: u64) -> Option<u64> {
        self.since.fetch_add(1, Ordering::Relaxed);
        let last = self.last.load(Ordering::Relaxed);
        let period = u64::try_from(Self::PERIOD.as_millis()).unwrap_or(1000);
        if last != 0 && now < last.saturating_add(period) {
            return None;
        }
        // Of several threads here at once, one wins the line; the others' events go into it.
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        Some(self.since.swap(0, Ordering::Relaxed))
    }
}

/// A fixed point in time for [`LogEvery`]'s millisecond clock.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_event_is_logged_then_at_most_one_line_a_second_with_the_count() {
        let l = LogEvery::default();
        assert_eq!(l.tick_at(10), Some(1));
        assert_eq!(l.tick_at(500), None);
        assert_eq!(l.tick_at(1009), None);
        assert_eq!(l.tick_at(1010), Some(3));
        assert_eq!(l.tick_at(1500), None);
        assert_eq!(l.tick_at(9000), Some(2));
    }

    #[test]
    fn reasons_have_their_own_limiters() {
        let r = Refusals::default();
        assert_eq!(r.may_log(Reason::NoServer), Some(1));
        assert_eq!(r.may_log(Reason::Limit), Some(1));
        assert_eq!(r.may_log(Reason::NoServer), None);
    }
}
