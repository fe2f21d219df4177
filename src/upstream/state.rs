//! The state of one server, as atomics: what the data path reads per candidate, lock-free, and the
//! health checker ([`crate::health`]) writes.
//!
//! Two kinds of state are kept apart, as pingora keeps "healthy" apart from "enabled": what checks
//! found (`DOWN`, and `EJECTED` for a passive-check ejection), and what the operator asked for
//! (`DRAINING`, `DISABLED`). A server takes new connections only while no flag is set, so the hot
//! path is one relaxed load compared with zero.
//!
//! # Races we accept
//! Flags are read with relaxed ordering: a connection scheduled a few nanoseconds after a server
//! was marked down may still go to it; its connect then fails or succeeds on its own merits and
//! retries cover the rest. No connection waits on a lock for a state change.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crate::config::{AdminState, PassiveConfig, ServerConfig, UpstreamHealthConfig};

use super::Server;

/// A set of state flags; empty = up and active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateFlags(u8);

impl StateFlags {
    /// Active checks (or an expired passive ejection not yet cleared by them) say down.
    pub const DOWN: StateFlags = StateFlags(1);
    /// The operator is draining it: no new connections, established ones go on.
    pub const DRAINING: StateFlags = StateFlags(2);
    /// The operator disabled it (maintenance): no new connections at all, no checks.
    pub const DISABLED: StateFlags = StateFlags(4);
    /// Passive checks ejected it: too many failures on real traffic.
    pub const EJECTED: StateFlags = StateFlags(8);

    /// No flag set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: StateFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether checks (active or passive) hold the server down.
    pub fn is_down(self) -> bool {
        self.0 & (StateFlags::DOWN.0 | StateFlags::EJECTED.0) != 0
    }
}

/// Per-mille of the configured weight a server has when nothing lowers it.
pub const FULL_WEIGHT: u32 = 1000;

/// While any server of an upstream ramps up (slow start), every weight is multiplied by this, so
/// a server of weight 1 can still ramp in steps (HAProxy scales weights by 16 for the same reason).
const RAMP_SCALE: u64 = 16;

/// The state of one server. See the module documentation.
#[derive(Debug)]
pub struct ServerState {
    /// [`StateFlags`] bits.
    flags: AtomicU8,
    /// The share of its configured weight the schedulers give the server, in per-mille:
    /// [`FULL_WEIGHT`] normally, less during slow start, 0 while down with `inhibit_on_failure`.
    weight_permille: AtomicU32,
    /// `inhibit_on_failure` of the upstream: down means weight 0, not removal.
    pub inhibit: bool,
    /// Passive-check settings of the upstream; `None` = off.
    pub passive: Option<PassiveConfig>,
    /// Consecutive failures on real traffic (passive checks).
    pub(crate) fails: AtomicU32,
    /// When the current run of failures started, in milliseconds of [`crate::health::now_ms`].
    pub(crate) fails_since_ms: AtomicU64,
    /// Wakes the server's checker when passive checks eject it.
    pub(crate) wake: tokio::sync::Notify,
    /// The weight the operator gave the server: `weight` of the configuration at start, changed
    /// at runtime through the admin API (`ipvsadm -e -w`). Read when snapshots are built.
    weight: AtomicU32,
    /// What the checker found last, for the admin API; `None` before the first check.
    pub(crate) last_check: std::sync::Mutex<Option<LastCheck>>,
    /// Health transitions (up to down and back) since start.
    pub(crate) transitions: AtomicU64,
}

/// The outcome of the last active check of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCheck {
    /// Whether it passed.
    pub ok: bool,
    /// Why it failed (empty when it passed).
    pub reason: String,
    /// When it ended, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl ServerState {
    /// Up, with the operator state and upstream settings of the configuration.
    pub fn new(config: &ServerConfig, health: &UpstreamHealthConfig) -> ServerState {
        let flags = match config.state {
            AdminState::Active => StateFlags::default(),
            AdminState::Draining => StateFlags::DRAINING,
            AdminState::Disabled => StateFlags::DISABLED,
        };
        ServerState {
            flags: AtomicU8::new(flags.0),
            weight_permille: AtomicU32::new(FULL_WEIGHT),
            inhibit: health.inhibit_on_failure,
            passive: health.passive,
            fails: AtomicU32::new(0),
            fails_since_ms: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            weight: AtomicU32::new(config.weight),
            last_check: std::sync::Mutex::new(None),
            transitions: AtomicU64::new(0),
        }
    }

    /// The operator's weight now (see the field).
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Sets the operator's weight; the caller then rebuilds the upstream's snapshot.
    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    /// The last active check's outcome, if any ran.
    pub fn last_check(&self) -> Option<LastCheck> {
        self.last_check
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Health transitions since start.
    pub fn transitions(&self) -> u64 {
        self.transitions.load(Ordering::Relaxed)
    }

    /// The flags now.
    #[inline]
    pub fn flags(&self) -> StateFlags {
        StateFlags(self.flags.load(Ordering::Relaxed))
    }

    /// Sets or clears `flag`; returns whether that changed anything (so exactly one of several
    /// racing callers sees `true`).
    pub fn set(&self, flag: StateFlags, on: bool) -> bool {
        let before = if on {
            self.flags.fetch_or(flag.0, Ordering::AcqRel)
        } else {
            self.flags.fetch_and(!flag.0, Ordering::AcqRel)
        };
        (before & flag.0 != 0) != on
    }

    /// The operator state.
    pub fn admin(&self) -> AdminState {
        let f = self.flags();
        if f.contains(StateFlags::DISABLED) {
            AdminState::Disabled
        } else if f.contains(StateFlags::DRAINING) {
            AdminState::Draining
        } else {
            AdminState::Active
        }
    }

    /// The share of the configured weight in use, in per-mille.
    pub fn weight_permille(&self) -> u32 {
        self.weight_permille.load(Ordering::Relaxed)
    }

    /// Sets the share of the configured weight; the caller then rebuilds the upstream's snapshot.
    pub fn set_weight_permille(&self, permille: u32) {
        self.weight_permille
            .store(permille.min(FULL_WEIGHT), Ordering::Relaxed);
    }

    /// `up`, `down`, `draining`, `disabled`, or two of them (`down, draining`), for logs and the
    /// counters table.
    pub fn describe(&self) -> String {
        let f = self.flags();
        let health = if f.is_down() { "down" } else { "up" };
        match self.admin() {
            AdminState::Active => health.to_owned(),
            admin => format!("{health}, {}", admin.as_str()),
        }
    }
}

/// The weight each server gets in the schedulers now; see [`ServerState::weight_permille`].
pub(super) fn effective_weights(servers: &[Arc<Server>]) -> Box<[u32]> {
    let ramping = servers.iter().any(|s| {
        let p = s.state.weight_permille();
        p != 0 && p < FULL_WEIGHT
    });
    let scale = if ramping { RAMP_SCALE } else { 1 };
    servers
        .iter()
        .map(|s| {
            let w = u64::from(s.state.weight()) * scale;
            let p = u64::from(s.state.weight_permille());
            let weighted = match p {
                _ if s.sorry || w == 0 || p == 0 => 0,
                p if p >= u64::from(FULL_WEIGHT) => w,
                p => (w * p / u64::from(FULL_WEIGHT)).max(1),
            };
            u32::try_from(weighted).unwrap_or(u32::MAX)
        })
        .collect()
}
