//! The listen backlog made visible: accept queues, their limits, and the kernel counters that say
//! when they overflowed. Behind `ballast backlog`, and meant for the admin API too.
//!
//! What it owns: reading the kernel directly — listening TCP sockets (IPv4 and IPv6) with their
//! accept-queue length and maximum through sock_diag netlink ([`diag`]; `/proc/net/tcp` when
//! netlink is refused, which gives lengths but no maxima), the host limits in
//! `/proc/sys` and the `ListenOverflows`/`ListenDrops`/SYN-cookie counters in `/proc/net/netstat`
//! (`proc`), which process holds which socket (`/proc/[pid]/fd`), and which of those processes
//! are ballast, with their listeners and workers ([`own`]); then the text table, JSON and plain
//! advice ([`report`]). What it does not own: binding or tuning sockets ([`crate::listener`]).
//!
//! The flow: [`collect`] takes one [`Report`] (a serde-serialisable snapshot); `--watch` takes two
//! and [`Report::with_delta`] adds how the counters moved in between; [`report`] renders it.
//! [`workers`] is the in-process view of a running ballast: per worker, the connections it
//! accepted and its accept queue now.
//!
//! About "truncated": listen(2) silently caps the backlog at `net.core.somaxconn` and the kernel
//! keeps only the capped value, so the requested backlog cannot be read back. It is known exactly
//! only for ballast's own listeners (from their configuration). For any other socket, a maximum
//! below somaxconn was not truncated (it *is* the requested value); a maximum equal to somaxconn
//! is "at the cap": the request may have been larger. Both assume somaxconn has not changed since
//! the socket called listen(2). [`Truncation`] keeps the two kinds of answer apart.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;

use crate::listener::Listener;

pub mod diag;
pub mod own;
pub(crate) mod proc;
pub mod report;

pub use diag::DiagError;

/// What to list.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter {
    /// Only sockets held by ballast processes.
    pub own: bool,
    /// Only sockets on this local port.
    pub port: Option<u16>,
}

/// The host's limits on listen backlogs and SYN queues (`/proc/sys`, this network namespace).
/// `None` where unreadable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HostLimits {
    /// `net.core.somaxconn`: the cap listen(2) puts on every backlog.
    pub somaxconn: Option<u32>,
    /// `net.ipv4.tcp_max_syn_backlog`: bounds half-open connections when SYN cookies are off.
    pub tcp_max_syn_backlog: Option<u32>,
    /// `net.ipv4.tcp_syncookies`: 0 off, 1 when a SYN queue overflows, 2 always.
    pub tcp_syncookies: Option<u8>,
}

/// Kernel counters about listen queues (`/proc/net/netstat`, `TcpExt:`), since boot, or over an
/// interval in [`Report::delta`]. `None` where the kernel does not have the counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// `ListenOverflows`: a handshake completed while the accept queue was full.
    pub listen_overflows: Option<u64>,
    /// `ListenDrops`: connection attempts dropped at a listener, overflows included.
    pub listen_drops: Option<u64>,
    /// `SyncookiesSent`: SYN cookies sent because a SYN queue was full (or cookies are always on).
    pub syncookies_sent: Option<u64>,
    /// `SyncookiesRecv`: valid SYN cookies received back.
    pub syncookies_recv: Option<u64>,
    /// `SyncookiesFailed`: invalid SYN cookies received.
    pub syncookies_failed: Option<u64>,
    /// `TCPReqQFullDrop`: SYNs dropped because the SYN queue was full and cookies were off.
    pub req_q_full_drop: Option<u64>,
    /// `TCPReqQFullDoCookies`: SYN queue full, answered with a cookie.
    pub req_q_full_do_cookies: Option<u64>,
}

impl Counters {
    /// `self - earlier`, counter by counter; `None` where either is missing or it went backwards.
    pub fn since(&self, earlier: &Counters) -> Counters {
        let d = |now: Option<u64>, then: Option<u64>| now?.checked_sub(then?);
        Counters {
            listen_overflows: d(self.listen_overflows, earlier.listen_overflows),
            listen_drops: d(self.listen_drops, earlier.listen_drops),
            syncookies_sent: d(self.syncookies_sent, earlier.syncookies_sent),
            syncookies_recv: d(self.syncookies_recv, earlier.syncookies_recv),
            syncookies_failed: d(self.syncookies_failed, earlier.syncookies_failed),
            req_q_full_drop: d(self.req_q_full_drop, earlier.req_q_full_drop),
            req_q_full_do_cookies: d(self.req_q_full_do_cookies, earlier.req_q_full_do_cookies),
        }
    }
}

/// Whether listen(2) truncated a socket's backlog, and how we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// Known: the requested backlog (ballast's configuration) is above the maximum the kernel
    /// gave.
    Yes,
    /// Known (ballast's own listener asked for at most the maximum), or inferred exactly (the
    /// maximum is below somaxconn, so it is the requested value).
    No,
    /// Inferred: the maximum equals somaxconn, so the request may have been larger.
    AtCap,
    /// The maximum or somaxconn is unknown, or somaxconn is lower than the maximum (changed
    /// since listen(2)).
    Unknown,
}

impl Truncation {
    /// Inferred from the maximum alone, for a socket whose requested backlog is unknown.
    pub fn infer(max: Option<u32>, somaxconn: Option<u32>) -> Truncation {
        match (max, somaxconn) {
            (Some(max), Some(cap)) if max < cap => Truncation::No,
            (Some(max), Some(cap)) if max == cap => Truncation::AtCap,
            _ => Truncation::Unknown,
        }
    }

    /// Known, from the backlog that was asked for.
    pub fn known(requested: u32, max: Option<u32>) -> Truncation {
        match max {
            Some(max) if requested > max => Truncation::Yes,
            Some(_) => Truncation::No,
            None => Truncation::Unknown,
        }
    }
}

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Command name (`/proc/[pid]/comm`).
    pub comm: String,
}

/// Where a socket sits in a ballast process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BallastSocket {
    /// The ballast process.
    pub pid: u32,
    /// The listener's name, when its configuration could be read and matched.
    pub listener: Option<String>,
    /// The worker: the socket's rank by file descriptor among that listener's sockets, which
    /// is the order ballast bound them in.
    pub worker: usize,
}

/// One listening TCP socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listening {
    /// Local address and port.
    pub local: SocketAddr,
    /// The local port alone (for scripts).
    pub port: u16,
    /// Connections waiting in the accept queue now.
    pub queue: u32,
    /// The accept queue's maximum: min(requested backlog, somaxconn when it listened); `None`
    /// when the sockets came from `/proc/net/tcp` because sock_diag was unavailable.
    pub max: Option<u32>,
    /// The backlog that was asked for, when known (ballast's own listeners).
    pub requested_backlog: Option<u32>,
    /// Whether that request was cut down to `max`.
    pub truncated: Truncation,
    /// The socket's owner uid.
    pub uid: u32,
    /// The socket's inode.
    pub inode: u64,
    /// Processes holding the socket; empty when none could be read (other users' processes need
    /// root).
    pub processes: Vec<Process>,
    /// Set when the socket belongs to a ballast process.
    pub ballast: Option<BallastSocket>,
}

/// The accept queue of one worker of a ballast listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerQueue {
    /// Worker index within its listener.
    pub worker: usize,
    /// Connections waiting in this worker's accept queue now.
    pub queue: u32,
    /// The queue's maximum (`None` as in [`Listening::max`]).
    pub max: Option<u32>,
    /// Connections this worker accepted (known only inside the ballast process).
    pub accepted: Option<u64>,
    /// The socket's inode.
    pub inode: u64,
    /// Connection attempts the kernel dropped at this worker's socket since it was created
    /// (accept queue full): its share of `ListenDrops`. Absent when not reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drops: Option<u64>,
}

/// One listener of a ballast process with its workers' accept queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BallastListener {
    /// The ballast process.
    pub pid: u32,
    /// Where the configuration came from (`ballast run -c` file, read now), when known.
    pub config: Option<String>,
    /// The listener's name, when known.
    pub listener: Option<String>,
    /// Local address and port.
    pub local: SocketAddr,
    /// The configured backlog, when known.
    pub requested_backlog: Option<u32>,
    /// Whether somaxconn cut it down (see [`Truncation`]).
    pub truncated: Truncation,
    /// Per worker, in worker order.
    pub workers: Vec<WorkerQueue>,
}

/// A snapshot of accept queues, limits and counters.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the snapshot was taken, in milliseconds since the Unix epoch.
    pub unix_time_ms: u64,
    /// Host limits.
    pub host: HostLimits,
    /// Counters since boot.
    pub counters: Counters,
    /// Seconds between the previous sample and this one (`--watch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<f64>,
    /// How the counters moved over `interval_secs` (`--watch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<Counters>,
    /// Listening sockets, by port then address.
    pub sockets: Vec<Listening>,
    /// Ballast's listeners among them, with per-worker queues.
    pub ballast: Vec<BallastListener>,
    /// Why the sockets could not be listed, when they could not; limits and counters still are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sockets_error: Option<String>,
    /// What could not be read and what that means for the figures.
    pub notes: Vec<String>,
    /// Plain-words advice (`--advise`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub advice: Vec<String>,
}

impl Report {
    /// This report with the counters' movement since `earlier` taken `secs` seconds before.
    pub fn with_delta(mut self, earlier: &Report, secs: f64) -> Report {
        self.delta = Some(self.counters.since(&earlier.counters));
        self.interval_secs = Some(secs);
        self
    }
}

/// Takes one snapshot of the listening sockets `filter` selects, the host limits and counters.
/// Never fails as a whole: what cannot be read is said in [`Report::sockets_error`] and
/// [`Report::notes`].
pub fn collect(filter: Filter) -> Report {
    let host = proc::host_limits();
    let mut notes = Vec::new();
    if host.somaxconn.is_none() {
        notes.push(
            "net.core.somaxconn is unreadable: truncation of other programs' backlogs cannot be \
             inferred"
                .to_owned(),
        );
    }
    let counters = match proc::netstat() {
        Ok(n) => n.counters(),
        Err(e) => {
            notes.push(format!(
                "/proc/net/netstat is unreadable ({e}): no counters"
            ));
            Counters::default()
        }
    };
    let (mut found, sockets_error) = match diag::listening_sockets() {
        Ok(s) => (s, None),
        Err(e) => match proc::proc_net_listeners() {
            Ok(s) => {
                notes.push(format!(
                    "{}; the sockets come from /proc/net/tcp and tcp6 instead, which show each \
                     accept queue's length but not its maximum",
                    error_chain(&e)
                ));
                (s, None)
            }
            Err(pe) => (
                Vec::new(),
                Some(format!(
                    "{}; /proc/net/tcp is unreadable too ({pe}); the host limits and counters \
                     are still shown",
                    error_chain(&e)
                )),
            ),
        },
    };
    if let Some(port) = filter.port {
        found.retain(|s| s.local.port() == port);
    }
    let wanted: HashSet<u64> = found.iter().map(|s| s.inode).collect();
    let (holders, unreadable) = proc::socket_holders(&wanted);
    let me = std::process::id();
    let mut ballast_pids: HashMap<u32, bool> = HashMap::new();
    for h in holders.values().flatten() {
        let pid = h.process.pid;
        ballast_pids
            .entry(pid)
            .or_insert_with(|| pid != me && proc::is_ballast(pid));
    }
    let owned = own::group(&found, &holders, &ballast_pids, host.somaxconn, &mut notes);
    let mut sockets: Vec<Listening> = found
        .iter()
        .map(|s| {
            let mut processes: Vec<Process> = holders
                .get(&s.inode)
                .map(|hs| hs.iter().map(|h| h.process.clone()).collect())
                .unwrap_or_default();
            processes.dedup_by_key(|p| p.pid);
            let ballast = owned.socket(s.inode);
            let requested_backlog = owned.requested(s.inode);
            let truncated = match requested_backlog {
                Some(r) => Truncation::known(r, s.max),
                None => Truncation::infer(s.max, host.somaxconn),
            };
            Listening {
                local: s.local,
                port: s.local.port(),
                queue: s.queue,
                max: s.max,
                requested_backlog,
                truncated,
                uid: s.uid,
                inode: s.inode,
                processes,
                ballast,
            }
        })
        .filter(|l| !filter.own || l.ballast.is_some())
        .collect();
    sockets.sort_by(|a, b| {
        (a.local.port(), a.local.is_ipv6(), a.local.ip(), a.inode).cmp(&(
            b.local.port(),
            b.local.is_ipv6(),
            b.local.ip(),
            b.inode,
        ))
    });
    // Counted before `--own` filters: a ballast of another user is among these.
    let unowned = found
        .iter()
        .filter(|s| !holders.contains_key(&s.inode))
        .count();
    if unowned > 0 && unreadable > 0 {
        notes.push(format!(
            "processes whose file descriptors this user cannot read: {unreadable}; their sockets \
             show no process (root sees all)"
        ));
    } else if unowned > 0 {
        notes.push(format!(
            "sockets held by no process visible here: {unowned} (held in another PID namespace, \
             such as a container's, or by the kernel)"
        ));
    }
    if filter.own && sockets_error.is_none() && owned.listeners.is_empty() {
        notes.push(if unowned > 0 && unreadable > 0 {
            "no ballast process of this user listens here; one of another user would show to \
             root only"
                .to_owned()
        } else {
            "no running ballast process listens here (in this network namespace)".to_owned()
        });
    }
    Report {
        unix_time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        host,
        counters,
        interval_secs: None,
        delta: None,
        sockets,
        ballast: owned.listeners,
        sockets_error,
        notes,
        advice: Vec::new(),
    }
}

/// The in-process view of a running ballast: for each listener, each worker's accepted
/// connections and accept queue now. `listeners` are the runtime's
/// ([`crate::runtime::Runtime::listeners`]).
///
/// # Errors
/// [`DiagError`] when the kernel's sock_diag interface cannot be used.
pub fn workers(listeners: &[Arc<Listener>]) -> Result<Vec<BallastListener>, DiagError> {
    let found = diag::listening_sockets()?;
    let by_inode: HashMap<u64, &diag::ListenSocket> = found.iter().map(|s| (s.inode, s)).collect();
    let pid = std::process::id();
    Ok(listeners
        .iter()
        .map(|l| {
            let workers: Vec<WorkerQueue> = l
                .worker_inodes
                .iter()
                .enumerate()
                .map(|(worker, inode)| {
                    let s = by_inode.get(inode);
                    WorkerQueue {
                        worker,
                        queue: s.map_or(0, |s| s.queue),
                        max: s.and_then(|s| s.max),
                        accepted: l
                            .stats
                            .accepted
                            .get(worker)
                            .map(|a| a.load(Ordering::Relaxed)),
                        inode: *inode,
                        drops: s.and_then(|s| s.drops).map(u64::from),
                    }
                })
                .collect();
            let max = workers.first().and_then(|w| w.max);
            BallastListener {
                pid,
                config: None,
                listener: Some(l.config.name.clone()),
                local: l.local_addr,
                requested_backlog: Some(l.config.backlog),
                truncated: Truncation::known(l.config.backlog, max),
                workers,
            }
        })
        .collect())
}

/// The inode of a socket this process holds (`/proc/self/fd/N -> socket:[inode]`); 0 when it
/// cannot be read.
pub fn socket_inode(fd: &impl std::os::fd::AsRawFd) -> u64 {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()
        .and_then(|l| proc::socket_inode(&l))
        .unwrap_or(0)
}

/// An error and its causes on one line, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_is_inferred_only_where_the_maximum_tells() {
        assert_eq!(Truncation::infer(Some(511), Some(4096)), Truncation::No);
        assert_eq!(Truncation::infer(Some(4096), Some(4096)), Truncation::AtCap);
        assert_eq!(
            Truncation::infer(Some(4096), Some(128)),
            Truncation::Unknown
        );
        assert_eq!(Truncation::infer(Some(128), None), Truncation::Unknown);
        assert_eq!(Truncation::infer(None, Some(128)), Truncation::Unknown);
        assert_eq!(Truncation::known(5000, Some(4096)), Truncation::Yes);
        assert_eq!(Truncation::known(4096, Some(4096)), Truncation::No);
        assert_eq!(Truncation::known(4096, None), Truncation::Unknown);
    }

    #[test]
    fn counter_deltas_skip_missing_and_backwards_counters() {
        let then = Counters {
            listen_overflows: Some(10),
            listen_drops: Some(12),
            syncookies_sent: Some(5),
            ..Counters::default()
        };
        let now = Counters {
            listen_overflows: Some(13),
            listen_drops: Some(11),
            syncookies_sent: None,
            ..Counters::default()
        };
        let d = now.since(&then);
        assert_eq!(d.listen_overflows, Some(3));
        assert_eq!(d.listen_drops, None);
        assert_eq!(d.syncookies_sent, None);
    }

    #[test]
    fn truncation_serialises_as_a_word() {
        let j = serde_json::to_string(&[Truncation::Yes, Truncation::AtCap]).expect("json");
        assert_eq!(j, r#"["yes","at_cap"]"#);
    }
}
