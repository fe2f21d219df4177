//! Server health: active checks, passive checks, slow start, operator states and the events they
//! raise (a log line and the `notify_up` / `notify_down` commands).
//!
//! This module owns *when a server's state changes*; [`crate::upstream::ServerState`] holds the
//! state itself (atomics the data path reads), and [`crate::upstream::Upstream::rebuild`] turns
//! weight changes into a new snapshot. The pieces:
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the rise/fall counter machine ([`Machine`]), one checker task per server, slow start, [`Upstream::set_server_state`] |
//! | `check.rs` | the probes: TCP connect, HTTP `GET`, TLS handshake |
//! | `udp.rs` | the UDP probes: a datagram and its reply, a DNS query |
//! | `passive.rs` | [`Server::passive_failure`] / [`Server::passive_success`], called by the data path |
//! | `notify.rs` | running notify commands, bounded and with a timeout |
//!
//! # Flow
//!
//! ```text
//! checker task (one per server that has checks or passive checks), first check at a random
//! point of the interval, then every `interval` (`fast_interval` while in transition):
//!   probe ─ok/fail─▶ Machine::observe ─transition?─▶ flags (DOWN) ─▶ log once ─▶ notify
//!                                                   └▶ weight: slow start ramp / inhibit → rebuild
//! data path: failure ─▶ passive_failure ─max_fails reached─▶ EJECTED flag + wake the checker
//!   ─▶ checker: DOWN for fail_timeout, log, notify; then active checks (rise) bring it back
//! ```
//!
//! # Why by hand
//! The probes are small and must report *why* they failed in an operator's words; the state
//! machine follows HAProxy's rise/fall exactly and Keepalived's notify semantics; and the state
//! must live in ballast's own lock-free snapshot. Crates that do health checking (pingora's
//! load-balancing crate) own the backend list and its health store themselves, which would put a
//! second source of truth beside the upstream snapshot.
//!
//! # Costs
//! One tokio task per checked server, asleep between checks; a check is one connect (and for
//! HTTP one request) on a fresh socket closed with a RST. `bench/health-cost.sh` measures 1,000
//! servers checked every second.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{AdminState, HealthCheckConfig};
use crate::upstream::{Server, StateFlags, Upstream, FULL_WEIGHT};

mod check;
pub mod notify;
mod passive;
mod udp;

pub use passive::now_ms;
pub use udp::dns_name_ok;

use check::{Probe, SharedProbe};
use notify::{Event, Notifier};

// === the counter machine ===

/// A change of health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// `rise` consecutive successes while down.
    Up,
    /// `fall` consecutive failures while up.
    Down,
}

/// HAProxy's rise/fall machine, pure: consecutive results against the thresholds.
///
/// A server starts up (as in HAProxy and Keepalived without `alpha`): with no check configured,
/// or before the first check, it takes traffic. A result that agrees with the current state
/// resets the opposite streak; `fall` failures in a row take it down, `rise` successes in a row
/// bring it back.
#[derive(Debug, Clone)]
pub struct Machine {
    rise: u32,
    fall: u32,
    up: bool,
    /// Consecutive results that disagree with the current state.
    streak: u32,
}

impl Machine {
    /// Up, no streak. `rise` and `fall` are at least 1.
    pub fn new(rise: u32, fall: u32) -> Machine {
        Machine {
            rise: rise.max(1),
            fall: fall.max(1),
            up: true,
            streak: 0,
        }
    }

    /// Whether the machine says up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Whether a streak is under way (the next checks use `fast_interval`).
    pub fn in_transition(&self) -> bool {
        self.streak > 0
    }

    /// The current streak: failures while up, successes while down.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Counts one result; returns the transition it completes, if any.
    pub fn observe(&mut self, ok: bool) -> Option<Transition> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.streak = 0;
        self.up = ok;
        Some(if ok { Transition::Up } else { Transition::Down })
    }

    /// Down now, whatever the counts (a passive-check ejection).
    pub fn force_down(&mut self) {
        self.up = false;
        self.streak = 0;
    }

    /// Up now, whatever the counts (the end of an ejection with no active check).
    pub fn force_up(&mut self) {
        self.up = true;
        self.streak = 0;
    }
}

// === tasks ===

/// The checker tasks of a runtime; they stop when the token given to [`spawn`] is cancelled.
#[derive(Debug)]
pub struct Checkers {
    tasks: JoinSet<()>,
}

impl Checkers {
    /// How many checker tasks run (one per server with checks or passive checks).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Waits for every task to end (after the stop token was cancelled).
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Why the checkers could not start.
#[derive(Debug, thiserror::Error)]
#[error("upstream \"{upstream}\": cannot set up TLS for health checks")]
pub struct HealthError {
    /// The upstream's name.
    pub upstream: String,
    /// What is wrong, naming the file.
    #[source]
    pub source: crate::tls::TlsError,
}

/// Starts a checker task for every server that has active checks (its upstream has a
/// `health_check` and the server does not say `check = false`) or passive checks. Upstreams with
/// neither get no task: their servers stay up. Must be called inside a tokio runtime.
///
/// # Errors
/// When a `tls` or HTTPS check's CA file cannot be used.
pub fn spawn(
    upstreams: &[Arc<Upstream>],
    stop: &CancellationToken,
) -> Result<Checkers, HealthError> {
    let notifier = Notifier::default();
    let mut tasks = JoinSet::new();
    for up in upstreams {
        let cfg = &up.config.health;
        let probe = match &cfg.check {
            Some(check) => Some(Arc::new(
                Probe::new(check, up.config.http.tls.as_ref()).map_err(|source| HealthError {
                    upstream: up.name().to_owned(),
                    source,
                })?,
            )),
            None => None,
        };
        for (index, server) in up.snapshot().servers.iter().enumerate() {
            if server.sorry {
                continue;
            }
            let active = match (&cfg.check, &probe) {
                (Some(c), Some(p)) if server.config.check => Some((c.clone(), Arc::clone(p))),
                _ => None,
            };
            if active.is_none() && cfg.passive.is_none() {
                continue;
            }
            let checker = Checker {
                upstream: Arc::clone(up),
                server: Arc::clone(server),
                index,
                active,
                notifier: notifier.clone(),
                stop: stop.clone(),
            };
            tasks.spawn(checker.run());
        }
    }
    Ok(Checkers { tasks })
}

/// Whether [`spawn`] can set up the checks of `upstream` (their TLS CA file), without starting
/// any: a reload checks this before its first change.
///
/// # Errors
/// As [`spawn`].
pub fn validate(upstream: &Upstream) -> Result<(), HealthError> {
    if let Some(check) = &upstream.config.health.check {
        Probe::new(check, upstream.config.http.tls.as_ref()).map_err(|source| HealthError {
            upstream: upstream.name().to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// Watches one server: runs its active checks, handles passive-check ejections, ramps its weight
/// after a recovery.
struct Checker {
    upstream: Arc<Upstream>,
    server: Arc<Server>,
    /// The server's index in the snapshot, logged beside its address.
    index: usize,
    active: Option<(HealthCheckConfig, SharedProbe)>,
    notifier: Notifier,
    stop: CancellationToken,
}

/// A slow-start ramp in progress.
struct Ramp {
    started: Instant,
    length: Duration,
}

impl Checker {
    async fn run(self) {
        let (rise, fall) = self
            .active
            .as_ref()
            .map_or((1, 1), |(c, _)| (c.rise, c.fall));
        let mut machine = Machine::new(rise, fall);
        // A server carried over by a reload keeps its state: down stays down until `rise`
        // checks pass (without active checks the reload has set it up again).
        if self.active.is_some() && self.server.state.flags().contains(StateFlags::DOWN) {
            machine.force_down();
        }
        let mut last_failure = String::new();
        let mut ejected_until: Option<Instant> = None;
        let mut ramp: Option<Ramp> = None;
        // The first check at a random point of the interval, so 1,000 servers are not all
        // checked in the same millisecond.
        let mut next_check = self.active.as_ref().map(|(c, _)| {
            let ms = u64::try_from(c.interval.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            Instant::now() + Duration::from_millis(fastrand::u64(0..ms))
        });
        loop {
            let next_ramp = ramp.as_ref().map(|_| Instant::now() + ramp_step(&ramp));
            // No checks while a passive-check ejection lasts: its end is the next wake-up.
            let check_due = if ejected_until.is_some() {
                None
            } else {
                next_check
            };
            let wake_at = [check_due, ejected_until, next_ramp]
                .into_iter()
                .flatten()
                .min();
            let sleep = async {
                match wake_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = self.server.state.wake.notified() => {}
                () = sleep => {}
            }
            // Removed from its upstream at runtime (admin API): nothing left to watch.
            if !self.upstream.contains(&self.server) {
                return;
            }
            let now = Instant::now();

            // A passive-check ejection raised by the data path.
            if self.server.state.flags().contains(StateFlags::EJECTED) {
                let passive = self.server.state.passive;
                let backoff = passive.map_or(Duration::ZERO, |p| p.fail_timeout);
                let fails = passive.map_or(0, |p| p.max_fails);
                self.server.state.set(StateFlags::DOWN, true);
                self.server.state.set(StateFlags::EJECTED, false);
                self.server
                    .state
                    .fails
                    .store(0, std::sync::atomic::Ordering::Relaxed);
                ejected_until = Some(now + backoff);
                ramp = None;
                if machine.is_up() {
                    machine.force_down();
                    let reason = format!(
                        "max_fails reached: {fails} failed in a row on real traffic; down for at least {backoff:?}"
                    );
                    self.changed(Transition::Down, &reason);
                }
            }
            if let Some(until) = ejected_until {
                if now < until {
                    continue;
                }
                ejected_until = None;
                if self.active.is_none() {
                    machine.force_up();
                    self.server.state.set(StateFlags::DOWN, false);
                    self.upstream.wake_queue();
                    self.changed(
                        Transition::Up,
                        "fail_timeout is over (no active check to wait for)",
                    );
                    ramp = self.start_ramp(now);
                }
                // With active checks, the next ones (starting now) must pass `rise` times.
                if self.active.is_some() {
                    next_check = Some(now);
                }
            }

            // Slow start.
            if let Some(r) = &ramp {
                if !machine.is_up() {
                    ramp = None;
                } else {
                    let done = now.saturating_duration_since(r.started);
                    let permille = if done >= r.length {
                        FULL_WEIGHT
                    } else {
                        let frac = done.as_secs_f64() / r.length.as_secs_f64();
                        ((frac * f64::from(FULL_WEIGHT)) as u32).clamp(1, FULL_WEIGHT)
                    };
                    if permille != self.server.state.weight_permille() {
                        self.server.state.set_weight_permille(permille);
                        self.upstream.rebuild();
                    }
                    if permille >= FULL_WEIGHT {
                        ramp = None;
                    }
                }
            }

            // The active check, when it is due (and the server is not in maintenance).
            let Some((cfg, probe)) = &self.active else {
                continue;
            };
            if next_check.is_none_or(|t| t > now) || ejected_until.is_some() {
                continue;
            }
            if self.server.state.flags().contains(StateFlags::DISABLED) {
                next_check = Some(now + cfg.interval);
                continue;
            }
            let mut target = self.server.address();
            if let Some(port) = self.server.config.check_port.or(cfg.port) {
                target.set_port(port);
            }
            let result = tokio::select! {
                r = probe.run(target) => r,
                () = self.stop.cancelled() => return,
            };
            if let Err(why) = &result {
                last_failure.clone_from(why);
            }
            record_check(&self.server, &result);
            match machine.observe(result.is_ok()) {
                Some(Transition::Down) => {
                    let reason = if cfg.fall == 1 {
                        last_failure.clone()
                    } else {
                        format!("{last_failure} ({} checks in a row failed)", cfg.fall)
                    };
                    self.server.state.set(StateFlags::DOWN, true);
                    ramp = None;
                    self.changed(Transition::Down, &reason);
                }
                Some(Transition::Up) => {
                    let reason = format!("{} checks in a row passed", cfg.rise);
                    self.server.state.set(StateFlags::DOWN, false);
                    self.upstream.wake_queue();
                    self.changed(Transition::Up, &reason);
                    ramp = self.start_ramp(Instant::now());
                }
                None => {}
            }
            let gap = if machine.in_transition() {
                cfg.fast_interval
            } else {
                cfg.interval
            };
            next_check = Some(Instant::now() + gap);
        }
    }

    /// After a recovery: starts the slow-start ramp, or (with `inhibit_on_failure`) gives the
    /// weight back at once.
    fn start_ramp(&self, now: Instant) -> Option<Ramp> {
        match self.upstream.config.health.slow_start {
            Some(length) => {
                self.server.state.set_weight_permille(1);
                self.upstream.rebuild();
                Some(Ramp {
                    started: now,
                    length,
                })
            }
            None => {
                if self.server.state.weight_permille() != FULL_WEIGHT {
                    self.server.state.set_weight_permille(FULL_WEIGHT);
                    self.upstream.rebuild();
                }
                None
            }
        }
    }

    /// Logs a health transition once, adjusts the weight for `inhibit_on_failure`, and runs the
    /// notify command.
    fn changed(&self, t: Transition, reason: &str) {
        let (old, new) = match t {
            Transition::Up => ("down", "up"),
            Transition::Down => ("up", "down"),
        };
        let upstream = self.upstream.name();
        let server = self.server.address();
        self.server
            .state
            .transitions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match t {
            Transition::Up => tracing::info!(%upstream, %server, index = self.index,
                from = old, to = new, %reason, "server state changed"),
            Transition::Down => tracing::warn!(%upstream, %server, index = self.index,
                from = old, to = new, %reason, "server state changed"),
        }
        if t == Transition::Down && self.server.state.inhibit {
            self.server.state.set_weight_permille(0);
            self.upstream.rebuild();
        }
        let health = &self.upstream.config.health;
        let command = match t {
            Transition::Up => health.notify_up.as_deref(),
            Transition::Down => health.notify_down.as_deref(),
        };
        if let Some(command) = command {
            self.notifier.spawn(
                command,
                health.notify_timeout,
                Event {
                    upstream: upstream.to_owned(),
                    server: server.to_string(),
                    state: new,
                    old_state: old,
                    reason: reason.to_owned(),
                },
            );
        }
    }
}

/// Keeps the outcome of a check for the admin API.
fn record_check(server: &Server, result: &Result<(), String>) {
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let last = crate::upstream::LastCheck {
        ok: result.is_ok(),
        reason: result.as_ref().err().cloned().unwrap_or_default(),
        unix_ms,
    };
    *server
        .state
        .last_check
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(last);
}

/// Starts the checker of a server added at runtime (the admin API), when its upstream has active
/// or passive checks; `None` when it has neither. The task ends when `stop` is cancelled or the
/// server is removed again.
///
/// # Errors
/// When a `tls` or HTTPS check's CA file cannot be used.
pub fn spawn_server(
    upstream: &Arc<Upstream>,
    server: &Arc<Server>,
    stop: &CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, HealthError> {
    let cfg = &upstream.config.health;
    let active = match &cfg.check {
        Some(check) if server.config.check => {
            let probe = Probe::new(check, upstream.config.http.tls.as_ref()).map_err(|source| {
                HealthError {
                    upstream: upstream.name().to_owned(),
                    source,
                }
            })?;
            Some((check.clone(), Arc::new(probe)))
        }
        _ => None,
    };
    if active.is_none() && cfg.passive.is_none() {
        return Ok(None);
    }
    let index = upstream
        .snapshot()
        .servers
        .iter()
        .position(|s| Arc::ptr_eq(s, server))
        .unwrap_or(usize::MAX);
    let checker = Checker {
        upstream: Arc::clone(upstream),
        server: Arc::clone(server),
        index,
        active,
        notifier: Notifier::default(),
        stop: stop.clone(),
    };
    Ok(Some(tokio::spawn(checker.run())))
}

/// How often a slow-start ramp updates the weight: 20 steps over the ramp, at most 4 a second.
fn ramp_step(ramp: &Option<Ramp>) -> Duration {
    ramp.as_ref().map_or(Duration::from_secs(1), |r| {
        (r.length / 20).max(Duration::from_millis(250))
    })
}

// === operator states ===

impl Upstream {
    /// Sets the operator state of the server at `index` (its index in the snapshot's `servers`):
    /// `draining` stops new connections while established ones go on, `disabled` also stops its
    /// checks and refuses clients bound to it, `active` undoes either. Logs the change once.
    /// Returns whether anything changed (`false` for an unknown index or the same state).
    pub fn set_server_state(&self, index: usize, state: AdminState, reason: &str) -> bool {
        let snapshot = self.snapshot();
        let Some(server) = snapshot.servers.get(index) else {
            return false;
        };
        let old = server.state.admin();
        if old == state {
            return false;
        }
        let s = &server.state;
        s.set(StateFlags::DRAINING, state == AdminState::Draining);
        s.set(StateFlags::DISABLED, state == AdminState::Disabled);
        if state == AdminState::Active {
            // New room: clients waiting in the queue look again.
            self.wake_queue();
        }
        tracing::info!(upstream = %self.name(), server = %server.address(), index,
            from = old.as_str(), to = state.as_str(), %reason, "server state changed");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{Machine, Transition};

    #[test]
    fn fall_failures_in_a_row_take_it_down_and_rise_successes_bring_it_back() {
        let mut m = Machine::new(2, 3);
        assert!(m.is_up());
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(false), None);
        assert!(m.in_transition());
        assert_eq!(m.observe(true), None, "a success breaks the run");
        assert!(!m.in_transition());
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(false), None);
        assert_eq!(m.observe(false), Some(Transition::Down));
        assert!(!m.is_up());
        assert_eq!(m.observe(false), None, "already down: nothing new");
        assert_eq!(m.observe(true), None);
        assert_eq!(m.streak(), 1);
        assert_eq!(m.observe(false), None, "a failure breaks the rise");
        assert_eq!(m.observe(true), None);
        assert_eq!(m.observe(true), Some(Transition::Up));
        assert!(m.is_up());
    }

    #[test]
    fn rise_and_fall_of_one_flip_at_once() {
        let mut m = Machine::new(1, 1);
        assert_eq!(m.observe(false), Some(Transition::Down));
        assert_eq!(m.observe(true), Some(Transition::Up));
        let mut z = Machine::new(0, 0);
        assert_eq!(z.observe(false), Some(Transition::Down), "0 counts as 1");
    }

    #[test]
    fn forced_changes_clear_the_streak() {
        let mut m = Machine::new(2, 2);
        m.observe(false);
        m.force_down();
        assert!(!m.is_up() && !m.in_transition());
        m.observe(true);
        m.force_up();
        assert!(m.is_up() && !m.in_transition());
    }
}
