//! Least privilege: once every socket is bound, ballast switches to `[global] user` and `group`
//! and keeps only the capabilities it still needs (HAProxy `user`/`group`, nginx `user`).
//!
//! # When
//! [`drop_after_start`] runs after the runtime started (listeners bound, the access log opened,
//! the admin server listening, VRRP instances started), after the upgrade socket is listening
//! and after a takeover finished: everything that needs root at start has happened. The caller
//! is the thread that drives the runtime (`block_on`), not a worker. [`needs_switch`] runs before
//! anything is bound, so a start that could not switch (not root, not the user) binds nothing.
//!
//! # How
//! In that order, as HAProxy and nginx do: `setgroups` to the user's groups (or to the one
//! group, for a numeric user with no entry), `setresgid`, `setresuid`. glibc applies each of
//! these to every thread of the process. Capabilities, though, belong to each thread: the
//! kernel clears all of them from a thread whose user ids all become non-zero, unless that
//! thread set `PR_SET_KEEPCAPS`, and `capset(2)` changes the calling thread only. So when some
//! capabilities are to be kept, every runtime worker thread is parked in a rendezvous first
//! (one blocking task per worker; a blocked worker cannot take a second one, so each lands on its
//! own thread), each sets keep-caps, the main thread switches ids, then each thread (the main one
//! too) narrows its permitted and effective sets to exactly the ones kept and clears keep-caps.
//! A thread that took no part (the access-log writer, an idle blocking-pool thread) keeps no
//! capability at all: the failure is towards less privilege. Threads created later inherit their
//! creator's sets.
//!
//! Last, every thread of the process is checked in `/proc/self/task/*/status`: all four user and
//! group ids switched, no permitted or effective capability beyond those kept. Anything else
//! fails the start.
//!
//! # What is kept
//! - With VRRP instances: `CAP_NET_ADMIN` (add and remove the virtual addresses through
//!   rtnetlink) and `CAP_NET_RAW` (the raw VRRP and ARP/NA sockets, opened again when an
//!   interface comes back). Nothing else.
//! - Without: nothing.
//! - Not `CAP_NET_BIND_SERVICE`: as in HAProxy, a reload that adds a listener on a port below
//!   1024 fails after the switch (the reload is refused with the bind error; the listeners
//!   running go on). Restart to add one, or use a binary upgrade: the new process is started by
//!   the operator, as root, and switches again after binding.
//!
//! # What still works after the switch
//! Reloads (SIGHUP, `POST /api/v1/reload`) re-read the configuration file and TLS files as the
//! new user, so it must be able to read them. SIGUSR1 reopens the access log as the new user:
//! have logrotate create the new file owned by it (`create 0640 USER adm`). `notify_*`, track
//! and health-check scripts run as the new user, without capabilities. Nothing writes to
//! `/proc/sys` after start. A binary upgrade works as before: the new process is started by the
//! operator.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid};

use crate::config::{Config, RunAs};

/// How long the worker threads may take to gather, and each later step.
const STEP_LIMIT: Duration = Duration::from_secs(5);

/// Why the switch failed. Each is fatal: ballast does not run with more privilege than it was
/// told to.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// Not root, and not already the configured user.
    #[error(
        "cannot switch to user {user} (uid {uid}): running as uid {current}, not root; start ballast as root, as {user}, or remove [global] user"
    )]
    NotRoot {
        /// The configured user.
        user: String,
        /// Its id.
        uid: u32,
        /// Who ballast runs as.
        current: u32,
    },
    /// A system call of the switch failed.
    #[error("cannot switch to user {user}, group {group}: {call} failed")]
    Switch {
        /// The configured user.
        user: String,
        /// The group.
        group: String,
        /// Which call.
        call: &'static str,
        /// What the kernel said.
        #[source]
        source: nix::Error,
    },
    /// Capabilities could not be kept or narrowed.
    #[error("cannot set the capabilities kept after the switch: {0}")]
    Caps(String),
    /// Not every runtime worker thread took part in time.
    #[error("cannot switch users: {0}")]
    Threads(String),
    /// A thread was found with more privilege than it should have after the switch.
    #[error("after the switch: {0}")]
    Verify(String),
}

/// The capabilities kept after the switch for this configuration.
pub fn kept(cfg: &Config) -> CapsHashSet {
    let mut set = CapsHashSet::new();
    if !cfg.vrrp.is_empty() {
        set.insert(Capability::CAP_NET_ADMIN);
        set.insert(Capability::CAP_NET_RAW);
    }
    set
}

/// Switches to `[global] user`/`group` if configured, keeping [`kept`]. Already running as that
/// user (started by a service manager with `User=`) is a warning, not an error.
///
/// Call from the thread that drives the tokio runtime (`block_on`), not from a task: it blocks
/// for the moment the worker threads are held.
///
/// # Errors
/// Any step of the switch failing, or a thread left with more privilege; see
/// [`PrivilegeError`].
pub async fn drop_after_start(cfg: &Config) -> Result<(), PrivilegeError> {
    let Some(run_as) = &cfg.global.run_as else {
        return Ok(());
    };
    if !needs_switch(cfg)? {
        tracing::warn!(user = %run_as.user, uid = run_as.uid,
            "already running as the configured user; nothing to switch");
        return Ok(());
    }
    // Root without some capability (a container that dropped it) cannot keep it: VRRP will
    // report its own errors then, rather than the switch failing.
    let held = caps::read(None, CapSet::Permitted)
        .map_err(|e| PrivilegeError::Caps(format!("cannot read the permitted set: {e}")))?;
    let wanted = kept(cfg);
    for missing in wanted.difference(&held) {
        tracing::warn!(capability = %missing, "not held at start, so it cannot be kept after the switch");
    }
    let keep: CapsHashSet = wanted.intersection(&held).copied().collect();
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    switch(run_as, &keep, workers)?;
    verify(run_as, &keep)?;
    let mut names: Vec<String> = keep.iter().map(|c| c.to_string().to_lowercase()).collect();
    names.sort();
    let kept = if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(",")
    };
    tracing::info!(user = %run_as.user, uid = run_as.uid, group = %run_as.group,
        gid = run_as.gid, capabilities = %kept, "switched user");
    Ok(())
}

/// Whether the switch is to be made: `false` without `user` or when already running as it.
/// Checked before anything is bound, so a start that could not switch binds nothing.
///
/// # Errors
/// [`PrivilegeError::NotRoot`]: not root, and not already the configured user.
pub fn needs_switch(cfg: &Config) -> Result<bool, PrivilegeError> {
    let Some(run_as) = &cfg.global.run_as else {
        return Ok(false);
    };
    let current = Uid::effective();
    if current.is_root() {
        return Ok(true);
    }
    if current.as_raw() == run_as.uid {
        return Ok(false);
    }
    Err(PrivilegeError::NotRoot {
        user: run_as.user.clone(),
        uid: run_as.uid,
        current: current.as_raw(),
    })
}

/// Where the rendezvous of the threads is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Workers arriving.
    Gather,
    /// Each sets keep-caps.
    Prepare,
    /// The ids are switched: each narrows its capabilities.
    Switched,
    /// Given up: each clears keep-caps and leaves.
    Abort,
}

#[derive(Debug)]
struct Phase {
    step: Step,
    arrived: usize,
    prepared: usize,
    finished: usize,
    failures: Vec<String>,
}

#[derive(Debug)]
struct Rendezvous {
    phase: Mutex<Phase>,
    changed: Condvar,
}

impl Rendezvous {
    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Updates the phase and wakes every waiter.
    fn update(&self, f: impl FnOnce(&mut Phase)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    /// Waits until `done` holds; false when `limit` passed first.
    fn wait_for(&self, limit: Duration, done: impl Fn(&Phase) -> bool) -> bool {
        let guard = self.lock();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, limit, |p| !done(p))
            .unwrap_or_else(PoisonError::into_inner);
        done(&guard)
    }

    /// Waits (without a limit: the main thread always moves the step on) while the step is
    /// `step`, and returns the next one.
    fn after(&self, step: Step) -> Step {
        let guard = self.lock();
        let guard = self
            .changed
            .wait_while(guard, |p| p.step == step)
            .unwrap_or_else(PoisonError::into_inner);
        guard.step
    }
}

/// The switch itself, with the worker threads held when capabilities are to be kept.
fn switch(run_as: &RunAs, keep: &CapsHashSet, workers: usize) -> Result<(), PrivilegeError> {
    if keep.is_empty() {
        // Every thread loses every capability with the ids: nothing to coordinate.
        return set_ids(run_as);
    }
    let r = Arc::new(Rendezvous {
        phase: Mutex::new(Phase {
            step: Step::Gather,
            arrived: 0,
            prepared: 0,
            finished: 0,
            failures: Vec::new(),
        }),
        changed: Condvar::new(),
    });
    for _ in 0..workers {
        let r = Arc::clone(&r);
        let keep = keep.clone();
        // Blocks its worker thread on purpose, for the few milliseconds of the switch: that is
        // what places one of these tasks on each worker.
        tokio::spawn(async move { worker_side(&r, &keep) });
    }
    let give_up = |r: &Rendezvous, why: String| {
        r.update(|p| p.step = Step::Abort);
        let _ = nix::sys::prctl::set_keepcaps(false);
        r.wait_for(STEP_LIMIT, |p| p.finished == p.arrived);
        PrivilegeError::Threads(why)
    };
    let started = Instant::now();
    if !r.wait_for(STEP_LIMIT, |p| p.arrived == workers) {
        let arrived = r.lock().arrived;
        return Err(give_up(
            &r,
            format!(
                "only {arrived} of {workers} runtime worker threads answered within {STEP_LIMIT:?}"
            ),
        ));
    }
    r.update(|p| p.step = Step::Prepare);
    let mine = nix::sys::prctl::set_keepcaps(true).map_err(|e| format!("PR_SET_KEEPCAPS: {e}"));
    if !r.wait_for(STEP_LIMIT, |p| p.prepared == workers) {
        return Err(give_up(&r, "a worker thread did not set keep-caps".into()));
    }
    let failures = std::mem::take(&mut r.lock().failures);
    if let Some(e) = mine.err().or(failures.into_iter().next()) {
        return Err(give_up(&r, e));
    }
    if let Err(e) = set_ids(run_as) {
        // Fatal either way; every thread leaves keep-caps off before the process exits.
        r.update(|p| p.step = Step::Abort);
        let _ = nix::sys::prctl::set_keepcaps(false);
        return Err(e);
    }
    let mine = narrow(keep);
    r.update(|p| p.step = Step::Switched);
    let finished = r.wait_for(STEP_LIMIT, |p| p.finished == workers);
    mine.map_err(PrivilegeError::Caps)?;
    if !finished {
        return Err(PrivilegeError::Caps(
            "a worker thread did not narrow its capabilities".into(),
        ));
    }
    if let Some(e) = std::mem::take(&mut r.lock().failures).into_iter().next() {
        return Err(PrivilegeError::Caps(e));
    }
    tracing::debug!(workers, took = ?started.elapsed(), "every worker thread switched");
    Ok(())
}

/// One worker thread's part: arrive, set keep-caps, wait for the switch, narrow.
fn worker_side(r: &Rendezvous, keep: &CapsHashSet) {
    r.update(|p| p.arrived += 1);
    if r.after(Step::Gather) == Step::Abort {
        r.update(|p| p.finished += 1);
        return;
    }
    let prepared = nix::sys::prctl::set_keepcaps(true).map_err(|e| format!("PR_SET_KEEPCAPS: {e}"));
    r.update(|p| {
        p.prepared += 1;
        if let Err(e) = prepared {
            p.failures.push(e);
        }
    });
    let result = match r.after(Step::Prepare) {
        Step::Switched => narrow(keep),
        _ => nix::sys::prctl::set_keepcaps(false).map_err(|e| format!("PR_SET_KEEPCAPS: {e}")),
    };
    r.update(|p| {
        p.finished += 1;
        if let Err(e) = result {
            p.failures.push(e);
        }
    });
}

/// setgroups, setresgid, setresuid: each applied to every thread by the C library.
fn set_ids(run_as: &RunAs) -> Result<(), PrivilegeError> {
    let fail = |call| {
        move |source| PrivilegeError::Switch {
            user: run_as.user.clone(),
            group: run_as.group.clone(),
            call,
            source,
        }
    };
    let groups: Vec<Gid> = run_as.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).map_err(fail("setgroups"))?;
    let gid = Gid::from_raw(run_as.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(fail("setresgid"))?;
    let uid = Uid::from_raw(run_as.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(fail("setresuid"))?;
    Ok(())
}

/// This thread, after the switch: permitted and effective exactly `keep`, nothing inheritable,
/// keep-caps off.
fn narrow(keep: &CapsHashSet) -> Result<(), String> {
    caps::set(None, CapSet::Permitted, keep).map_err(|e| format!("permitted set: {e}"))?;
    caps::set(None, CapSet::Effective, keep).map_err(|e| format!("effective set: {e}"))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| format!("inheritable set: {e}"))?;
    nix::sys::prctl::set_keepcaps(false).map_err(|e| format!("PR_SET_KEEPCAPS: {e}"))
}

/// The ids and capability sets of one thread, from its `status` file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ThreadCreds {
    /// Real, effective, saved and filesystem user ids.
    pub uids: Vec<u32>,
    /// The same four group ids.
    pub gids: Vec<u32>,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Permitted capabilities, as a bit mask.
    pub cap_prm: u64,
    /// Effective capabilities.
    pub cap_eff: u64,
}

impl ThreadCreds {
    /// Parses a `/proc/…/status` text; missing fields stay empty (or 0).
    pub fn parse(status: &str) -> ThreadCreds {
        let mut c = ThreadCreds::default();
        for line in status.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let ids = || -> Vec<u32> {
                value
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            };
            let mask = || u64::from_str_radix(value.trim(), 16).unwrap_or(u64::MAX);
            match key {
                "Uid" => c.uids = ids(),
                "Gid" => c.gids = ids(),
                "Groups" => c.groups = ids(),
                "CapPrm" => c.cap_prm = mask(),
                "CapEff" => c.cap_eff = mask(),
                _ => {}
            }
        }
        c
    }
}

/// The bit mask of a capability set, as `/proc/…/status` shows it.
pub fn mask(set: &CapsHashSet) -> u64 {
    set.iter().fold(0, |m, c| m | c.bitmask())
}

/// Every thread of this process: switched ids, nothing beyond `keep`.
fn verify(run_as: &RunAs, keep: &CapsHashSet) -> Result<(), PrivilegeError> {
    let allowed = mask(keep);
    let tasks = std::fs::read_dir("/proc/self/task")
        .map_err(|e| PrivilegeError::Verify(format!("cannot list /proc/self/task: {e}")))?;
    let mut wrong = Vec::new();
    for task in tasks.flatten() {
        // A thread that ended meanwhile has no status left to check.
        let Ok(text) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let c = ThreadCreds::parse(&text);
        let ids_ok = c.uids.len() == 4
            && c.uids.iter().all(|u| *u == run_as.uid)
            && c.gids.len() == 4
            && c.gids.iter().all(|g| *g == run_as.gid);
        let caps_ok = c.cap_prm & !allowed == 0 && c.cap_eff & !allowed == 0;
        if !ids_ok || !caps_ok {
            wrong.push(format!(
                "thread {}: uids {:?} gids {:?} CapPrm {:016x} CapEff {:016x}",
                task.file_name().to_string_lossy(),
                c.uids,
                c.gids,
                c.cap_prm,
                c.cap_eff
            ));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(PrivilegeError::Verify(format!(
            "threads with more privilege than allowed (capabilities {allowed:016x}): {}",
            wrong.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_as_ids_and_masks() {
        let text =
            "Name:\tballast\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\n\
                    Groups:\t65534 \nCapInh:\t0000000000000000\nCapPrm:\t0000000000003000\n\
                    CapEff:\t0000000000003000\n";
        let c = ThreadCreds::parse(text);
        assert_eq!(c.uids, vec![65534; 4]);
        assert_eq!(c.gids, vec![65534; 4]);
        assert_eq!(c.groups, vec![65534]);
        assert_eq!(c.cap_prm, 0x3000);
        assert_eq!(c.cap_eff, 0x3000);
    }

    #[test]
    fn vrrp_keeps_exactly_net_admin_and_net_raw_and_nothing_else_keeps_any() {
        let plain = Config::from_str(
            "[[listener]]\nname = \"a\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\n\
             [[upstream]]\nname = \"u\"\nserver = [{ address = \"127.0.0.1:1\" }]\n",
            "t.toml",
        )
        .expect("valid");
        assert!(kept(&plain).is_empty());
        let with_vrrp = Config::from_str(
            "[[vrrp.instance]]\nname = \"v\"\ninterface = \"eth0\"\nvirtual_router_id = 5\n\
             virtual_ipaddress = [\"10.0.0.5/24\"]\n",
            "t.toml",
        )
        .expect("valid");
        // CAP_NET_ADMIN is bit 12, CAP_NET_RAW bit 13.
        assert_eq!(mask(&kept(&with_vrrp)), 0x3000);
    }
}
