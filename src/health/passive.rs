//! Passive checks: real traffic's failures count against a server (nginx `max_fails` /
//! `fail_timeout`, Envoy outlier detection's `consecutive_5xx` / `consecutive_gateway_failure`).
//!
//! The data path calls [`Server::passive_failure`] where it already counts a failed connect (and,
//! for HTTP, a reset, a timeout or a 5xx answer), and [`Server::passive_success`] where a server
//! did its job. Both are a few relaxed atomic operations and no lock; a success writes only when
//! there is a run of failures to reset, so a healthy server's cache line stays shared.
//!
//! When `max_fails` consecutive failures fall within `fail_timeout`, the call that reaches the
//! count sets [`StateFlags::EJECTED`] (the server takes no new connections from that instant)
//! and wakes the server's checker, which logs the change, runs `notify_down`, and keeps the
//! server down for `fail_timeout`. After that, active checks (if configured) must pass `rise`
//! times before it comes back; without active checks it comes back at once, as in nginx.
//!
//! Races we accept: two failures counted at the same instant by two threads may both start a new
//! window, losing one count; the only effect is one more failure before the ejection.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;

// tokio's clock, not std's: the same in a release build, and paused tests (the simulation in
// tests/simulation/health.rs) can move it.
use tokio::time::Instant;

use crate::upstream::{Server, StateFlags};

/// Milliseconds since the first call in this process: a clock atomics can hold.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Server {
    /// Counts one failure on real traffic (a failed connect; for HTTP also a reset, a timeout or
    /// a 5xx answer). Ejects the server when it makes `max_fails` consecutive failures within
    /// `fail_timeout`. Does nothing when passive checks are off.
    pub fn passive_failure(&self) {
        let Some(passive) = self.state.passive else {
            return;
        };
        let now = now_ms();
        let window = u64::try_from(passive.fail_timeout.as_millis()).unwrap_or(u64::MAX);
        let since = self.state.fails_since_ms.load(Ordering::Relaxed);
        let count = if self.state.fails.load(Ordering::Relaxed) == 0
            || now.saturating_sub(since) > window
        {
            // A new run of failures starts here.
            self.state.fails_since_ms.store(now, Ordering::Relaxed);
            self.state.fails.store(1, Ordering::Relaxed);
            1
        } else {
            self.state.fails.fetch_add(1, Ordering::Relaxed) + 1
        };
        if count >= passive.max_fails
            && !self.state.flags().is_down()
            && self.state.set(StateFlags::EJECTED, true)
        {
            // Only the call that set the flag gets here.
            self.state.wake.notify_one();
        }
    }

    /// Counts one success on real traffic: a run of failures is over.
    #[inline]
    pub fn passive_success(&self) {
        if self.state.passive.is_some() && self.state.fails.load(Ordering::Relaxed) != 0 {
            self.state.fails.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{PassiveConfig, ServerConfig, UpstreamConfig, UpstreamHealthConfig};
    use crate::upstream::{Server, StateFlags};

    fn server(max_fails: u32, fail_timeout: Duration) -> Server {
        let text = "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\n\
                    [[upstream]]\nname = \"u\"\nserver = [{ address = \"127.0.0.1:9\" }]\n";
        let mut up: UpstreamConfig = crate::config::Config::from_str(text, "t")
            .expect("valid")
            .upstreams
            .remove(0);
        up.health = UpstreamHealthConfig {
            passive: Some(PassiveConfig {
                max_fails,
                fail_timeout,
            }),
            ..up.health
        };
        let sc: ServerConfig = up.servers[0].clone();
        Server::new(sc, &up, false)
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_run() {
        let s = server(3, Duration::from_secs(60));
        s.passive_failure();
        s.passive_failure();
        s.passive_success();
        s.passive_failure();
        s.passive_failure();
        assert!(s.is_usable(), "two in a row after a success: not yet");
        s.passive_failure();
        assert!(s.state.flags().contains(StateFlags::EJECTED));
        assert!(!s.is_usable());
    }

    #[test]
    fn failures_outside_the_window_start_a_new_run() {
        let s = server(2, Duration::from_millis(1));
        s.passive_failure();
        std::thread::sleep(Duration::from_millis(5));
        s.passive_failure();
        assert!(s.is_usable(), "the first failure fell out of the window");
    }
}
