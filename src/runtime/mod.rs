//! The running balancer: builds listeners and upstreams from a [`Config`], runs their workers, and
//! stops them gracefully.
//!
//! Start-up is all or nothing: every listener is bound before any accepts, so a bad address fails
//! the start instead of leaving half a service up. Shutdown has two steps, each a cancellation
//! token: `stop_accepting` closes the listening sockets while established connections go on, and
//! `abort` ends those still open when the grace period runs out. A [`TaskTracker`] counts the
//! connection tasks, so "all connections finished" is a wait, not a guess.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::config::Protocol;
use crate::listener::{Gate, Listener, ListenerError};
use crate::proxy::http::HttpUpstream;
use crate::upstream::Upstream;

pub mod nofile;
pub mod reload;
pub mod signals;
mod start;
pub mod summary;
pub mod upgrade;

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A listener could not be bound.
    #[error(transparent)]
    Listener(#[from] ListenerError),
    /// The certificates of an https listener could not be loaded.
    #[error("listener \"{listener}\": cannot set up TLS")]
    Tls {
        /// The listener's name.
        listener: String,
        /// What is wrong, naming the file.
        #[source]
        source: crate::tls::TlsError,
    },
    /// TLS to an upstream's servers could not be set up.
    #[error("upstream \"{upstream}\": cannot set up TLS to its servers")]
    UpstreamTls {
        /// The upstream's name.
        upstream: String,
        /// What is wrong, naming the file.
        #[source]
        source: crate::tls::TlsError,
    },
    /// A listener names an upstream that does not exist.
    #[error("listener \"{listener}\": no upstream named \"{upstream}\"")]
    UnknownUpstream {
        /// The listener's name.
        listener: String,
        /// The missing upstream.
        upstream: String,
    },
    /// Health checks could not be set up.
    #[error(transparent)]
    Health(#[from] crate::health::HealthError),
    /// The admin server could not start.
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    /// The access log file could not be opened.
    #[error("cannot open the access log")]
    AccessLog(#[source] std::io::Error),
    /// A listening socket could not be handed to the async runtime.
    #[error("listener \"{listener}\": cannot register socket with the runtime")]
    Register {
        /// The listener's name.
        listener: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// Every connection finished within the grace period.
    Drained,
    /// The grace period ran out; this many connections were closed.
    Aborted(usize),
}

/// A running set of listeners and upstreams.
#[derive(Debug)]
pub struct Runtime {
    config: Config,
    listeners: Vec<Arc<Listener>>,
    upstreams: Vec<Arc<Upstream>>,
    stop_accepting: CancellationToken,
    abort: CancellationToken,
    tracker: TaskTracker,
    workers: JoinSet<()>,
    /// Stops the health checkers.
    stop_checks: CancellationToken,
    /// The health checker tasks (aborted if the runtime is dropped without a shutdown): those
    /// of the start, then those a reload started for new or replaced upstreams.
    checkers: Vec<crate::health::Checkers>,
    global_limit: Arc<Gate>,
    /// VRRP instances, when `[vrrp]` is configured.
    vrrp: Option<crate::vrrp::Vrrp>,
    /// The admin API server (`[admin]`), and the reloads it asks for until someone takes them.
    admin: Option<crate::admin::AdminServer>,
    reload_requests: Option<tokio::sync::mpsc::Receiver<crate::admin::ReloadRequest>>,
    /// Per listener (indexed like `listeners`): what a reload changes it through (its route,
    /// its stop token, its workers and copies of their sockets, which a binary upgrade hands
    /// over). A stopped listener's copies are dropped, so its sockets really close (refusing,
    /// not queueing, new connections).
    running: Vec<start::Running>,
    /// Per upstream (indexed like `upstreams`): its HTTP side (pools, TLS to the servers);
    /// empty while no listener speaks HTTP.
    http_upstreams: Vec<Arc<HttpUpstream>>,
    /// The upstreams as of the last reload, for those that look them up later by name (VRRP
    /// `track_upstream`).
    shared_upstreams: Arc<ArcSwap<Vec<Arc<Upstream>>>>,
    /// The access log, when `[global] access_log` is set.
    access_log: Option<Arc<crate::access_log::AccessLog>>,
}

impl Runtime {
    /// Binds every listener, then starts their accept workers. Must be called inside a tokio
    /// runtime.
    ///
    /// # Errors
    /// The first listener that cannot be bound; nothing is left listening then.
    pub async fn start(config: Config) -> Result<Runtime, RuntimeError> {
        Runtime::start_with(config, upgrade::Inherited::default()).await
    }

    /// As [`Runtime::start`], with listening sockets inherited from an old process (binary
    /// upgrade, [`upgrade`]): a listener with a matching inherited socket set uses it instead
    /// of binding.
    ///
    /// # Errors
    /// As [`Runtime::start`].
    pub async fn start_with(
        config: Config,
        mut inherited: upgrade::Inherited,
    ) -> Result<Runtime, RuntimeError> {
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| Arc::new(Upstream::new(u.clone())))
            .collect();
        // TLS client setups for HTTP, one per upstream, shared by every HTTP listener (kept-alive
        // connections are in each server's own pool); none at all when no listener speaks HTTP.
        let any_http = config.listeners.iter().any(|l| l.protocol.is_http());
        let mut http_upstreams: Vec<Arc<HttpUpstream>> = Vec::with_capacity(upstreams.len());
        for u in upstreams.iter().filter(|_| any_http) {
            let hu =
                HttpUpstream::new(Arc::clone(u)).map_err(|source| RuntimeError::UpstreamTls {
                    upstream: u.name().to_owned(),
                    source,
                })?;
            http_upstreams.push(Arc::new(hu));
        }
        let access_log = match &config.global.access_log {
            Some(c) => {
                Some(crate::access_log::AccessLog::start(c).map_err(RuntimeError::AccessLog)?)
            }
            None => None,
        };
        // Bind everything first: all or nothing.
        // TCP-family listeners first, then UDP ones (the order they are listed in).
        let (tcp, udp): (Vec<_>, Vec<_>) = config
            .listeners
            .iter()
            .partition(|l| l.protocol != Protocol::Udp);
        let mut ready = Vec::with_capacity(config.listeners.len());
        for lc in tcp.into_iter().chain(udp) {
            if config.upstream(&lc.upstream).is_none() {
                return Err(RuntimeError::UnknownUpstream {
                    listener: lc.name.clone(),
                    upstream: lc.upstream.clone(),
                });
            }
            let inherited = (lc.protocol != Protocol::Udp)
                .then(|| inherited.take(lc))
                .flatten();
            let r = match inherited {
                Some(b) => start::Ready::tcp(lc, b.local_addr, b.sockets)?,
                None => start::Ready::bind(lc)?,
            };
            let tls = start::tls_acceptor(lc)?;
            ready.push((lc.clone(), r, tls));
        }
        let stop_checks = CancellationToken::new();
        let checkers = crate::health::spawn(&upstreams, &stop_checks)?;
        let global_limit = Arc::new(global_gate(&config));
        let shared_upstreams = Arc::new(ArcSwap::from_pointee(upstreams.clone()));
        let mut rt = Runtime {
            admin: None,
            reload_requests: None,
            running: Vec::with_capacity(ready.len()),
            access_log,
            config,
            listeners: Vec::with_capacity(ready.len()),
            upstreams,
            http_upstreams,
            shared_upstreams,
            stop_accepting: CancellationToken::new(),
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
            workers: JoinSet::new(),
            stop_checks,
            checkers: vec![checkers],
            global_limit,
            vrrp: None,
        };
        for (lc, r, tls) in ready {
            let (listener, running) = rt.start_listener(&lc, r, tls)?;
            rt.listeners.push(listener);
            rt.running.push(running);
        }
        let config = &rt.config;

        // VRRP last: listeners bound to a VIP already listen (IP_FREEBIND) when it arrives.
        let probes = Arc::clone(&rt.shared_upstreams);
        rt.vrrp = (!config.vrrp.is_empty())
            .then(|| crate::vrrp::Vrrp::start(&config.vrrp, |name| vrrp_probe(&probes, name)));
        if !inherited.defer_admin {
            rt.start_admin().await?;
        }
        Ok(rt)
    }

    /// Starts one listener from its [`start::Ready`] sockets (at start, and for a listener a
    /// reload adds or moves): its route over the current upstreams, then its workers.
    ///
    /// # Errors
    /// [`RuntimeError::UnknownUpstream`]; nothing was started then.
    fn start_listener(
        &mut self,
        lc: &crate::config::ListenerConfig,
        ready: start::Ready,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<(Arc<Listener>, start::Running), RuntimeError> {
        let unknown = || RuntimeError::UnknownUpstream {
            listener: lc.name.clone(),
            upstream: lc.upstream.clone(),
        };
        match ready {
            start::Ready::Tcp(t) => {
                let listener = start::tcp_listener(lc, t.local_addr, t.inodes.clone(), None, None);
                let route = start::route(
                    Arc::clone(&listener),
                    &self.upstreams,
                    &self.http_upstreams,
                    tls,
                    self.access_log.clone(),
                )?;
                Ok((listener, self.launch_tcp(route, t)))
            }
            start::Ready::Udp(u, _) => {
                let upstream = self.upstream(&lc.upstream).cloned().ok_or_else(unknown)?;
                Ok(self.launch_udp(lc, u, &upstream))
            }
        }
    }

    /// The configuration this runtime runs.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The running listeners.
    pub fn listeners(&self) -> &[Arc<Listener>] {
        &self.listeners
    }

    /// The upstreams.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The listener named `name`.
    pub fn listener(&self, name: &str) -> Option<&Arc<Listener>> {
        self.listeners.iter().find(|l| l.config.name == name)
    }

    /// The address the listener named `name` really listens on.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listener(name).map(|l| l.local_addr)
    }

    /// The upstream named `name`.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.name() == name)
    }

    /// Connection tasks alive now.
    pub fn connections(&self) -> usize {
        self.tracker.len()
    }

    /// Stops accepting at once (closing the listening sockets), lets established connections run
    /// for up to `grace`, then closes whatever is left.
    pub async fn shutdown(mut self, grace: Duration) -> ShutdownOutcome {
        // VRRP first: a MASTER sends priority 0 and removes its VIPs, so the BACKUP takes new
        // clients after Skew_Time while this node drains.
        if let Some(vrrp) = self.vrrp.take() {
            vrrp.shutdown().await;
        }
        if let Some(admin) = self.admin.take() {
            admin.stop().await;
        }
        self.running.clear();
        self.stop_accepting.cancel();
        self.stop_checks.cancel();
        for checkers in std::mem::take(&mut self.checkers) {
            checkers.join().await;
        }
        while self.workers.join_next().await.is_some() {}
        self.tracker.close();
        let open = self.tracker.len();
        if open > 0 {
            tracing::info!(
                connections = open,
                ?grace,
                "stopped accepting; waiting for connections to finish"
            );
        }
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
        {
            self.flush_access_log().await;
            return ShutdownOutcome::Drained;
        }
        let left = self.tracker.len();
        tracing::warn!(
            connections = left,
            ?grace,
            "grace period over; closing remaining connections"
        );
        self.abort.cancel();
        // Aborted relays return at their next poll; this wait is short but still bounded.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        self.flush_access_log().await;
        ShutdownOutcome::Aborted(left)
    }
}

impl Runtime {
    /// A token that, when cancelled, closes every established connection at once (used by a
    /// second stop signal during a graceful shutdown).
    pub fn abort_handle(&self) -> CancellationToken {
        self.abort.clone()
    }

    /// Per listener and worker: connections accepted and the accept queue now (length and
    /// maximum, from the kernel), to see whether SO_REUSEPORT spreads the load. One short
    /// blocking netlink round trip.
    ///
    /// # Errors
    /// When the kernel's sock_diag interface cannot be used.
    pub fn accept_queues(
        &self,
    ) -> Result<Vec<crate::backlog::BallastListener>, crate::backlog::DiagError> {
        crate::backlog::workers(&self.listeners)
    }

    /// The counters table of [`summary::render`] for this runtime, then the connection limits
    /// and refusals ([`summary::render_limits`]), then the VRRP instances.
    pub fn summary(&self) -> String {
        let queues = self.accept_queues().ok();
        let mut s = summary::render(&self.listeners, &self.upstreams)
            + &summary::render_limits(&self.global_limit, &self.listeners, queues.as_deref());
        if let Some(v) = &self.vrrp {
            s.push_str(&v.summary());
        }
        s
    }

    /// The VRRP instances, when `[vrrp]` is configured.
    pub fn vrrp(&self) -> Option<&crate::vrrp::Vrrp> {
        self.vrrp.as_ref()
    }

    /// A closure that renders [`Runtime::summary`] later, even after the runtime was consumed by
    /// [`Runtime::shutdown`].
    pub fn summary_handle(&self) -> impl Fn() -> String + Send + 'static {
        let listeners = self.listeners.clone();
        let upstreams = self.upstreams.clone();
        let global_limit = Arc::clone(&self.global_limit);
        move || {
            let queues = crate::backlog::workers(&listeners).ok();
            summary::render(&listeners, &upstreams)
                + &summary::render_limits(&global_limit, &listeners, queues.as_deref())
        }
    }

    /// The process-wide `max_connections` gate: its limit (configured or derived from
    /// RLIMIT_NOFILE) and the client connections open now across all listeners.
    pub fn global_limit(&self) -> &Arc<Gate> {
        &self.global_limit
    }
}

/// The global gate: `[global] max_connections`, or the limit derived from the hard RLIMIT_NOFILE
/// when it is not configured ([`nofile::budget`]).
fn global_gate(config: &Config) -> Gate {
    let hard = nofile::current().ok().and_then(|(_, hard)| hard);
    let mut limit = config.global.connections;
    limit.max = nofile::budget(config, hard).max_connections;
    Gate::new(limit)
}

/// The `track_upstream` check for upstream `name`: it has a server that can take traffic (up by
/// its health checks, neither draining nor disabled, weight above 0); the sorry server does not
/// count.
/// The upstream is looked up by name at each probe, so it follows a reload that replaced it (and
/// fails, as an upstream with no usable server, once a reload removed it).
fn vrrp_probe(
    upstreams: &Arc<ArcSwap<Vec<Arc<Upstream>>>>,
    name: &str,
) -> Option<crate::vrrp::UpstreamProbe> {
    upstreams.load().iter().find(|u| u.name() == name)?;
    let upstreams = Arc::clone(upstreams);
    let name = name.to_owned();
    Some(Arc::new(move || {
        upstreams
            .load()
            .iter()
            .find(|u| u.name() == name)
            .is_some_and(|u| {
                u.snapshot()
                    .servers
                    .iter()
                    .any(|s| !s.sorry && s.is_usable() && s.config.weight > 0)
            })
    }))
}

impl Runtime {
    /// Where the admin API listens (the port filled in when the configuration said 0); `None`
    /// without `[admin]`.
    pub fn admin_bind(&self) -> Option<&crate::config::AdminBind> {
        self.admin.as_ref().map(|a| &a.bind)
    }

    /// The reload requests the admin API forwards (`POST /api/v1/reload`), for whoever applies
    /// reloads; `None` without `[admin]` or once taken.
    pub fn take_reload_requests(
        &mut self,
    ) -> Option<tokio::sync::mpsc::Receiver<crate::admin::ReloadRequest>> {
        self.reload_requests.take()
    }
}

impl Runtime {
    /// Reopens the access log file (SIGUSR1, after logrotate moved it).
    pub fn reopen_access_log(&self) {
        if let Some(log) = &self.access_log {
            log.reopen();
        }
    }

    /// Access-log entries dropped because the writer could not keep up.
    pub fn access_log_dropped(&self) -> u64 {
        self.access_log.as_ref().map_or(0, |l| l.dropped())
    }

    /// Access-log lines lost because writing them failed (a full disk).
    pub fn access_log_write_errors(&self) -> u64 {
        self.access_log.as_ref().map_or(0, |l| l.write_errors())
    }

    /// Waits (bounded) until every access-log line so far is written.
    pub async fn flush_access_log(&self) {
        if let Some(log) = self.access_log.clone() {
            let _ = tokio::task::spawn_blocking(move || log.flush(Duration::from_secs(5))).await;
        }
    }
}

impl Runtime {
    /// Every listener's sockets, for a new process taking over ([`upgrade::hand_over`]).
    pub fn handover_sockets(&self) -> Vec<(upgrade::Header, Vec<std::os::fd::OwnedFd>)> {
        self.listeners
            .iter()
            .zip(&self.running)
            .filter(|(l, r)| !r.workers.is_empty() && r.workers.len() == l.stats.accepted.len())
            .map(|(l, r)| {
                let header = upgrade::Header {
                    name: l.config.name.clone(),
                    bind: l.config.bind,
                    local: l.local_addr,
                    workers: r.workers.len(),
                };
                (
                    header,
                    r.workers
                        .iter()
                        .filter_map(|w| w.fd.try_clone().ok())
                        .collect(),
                )
            })
            .collect()
    }

    /// Stops the admin server (the old process of an upgrade frees its address).
    pub async fn stop_admin(&mut self) {
        if let Some(admin) = self.admin.take() {
            admin.stop().await;
        }
    }

    /// Starts the admin server if the configuration has one and it is not running (after
    /// [`upgrade::Inherited::defer_admin`]).
    ///
    /// # Errors
    /// When it cannot listen.
    pub async fn start_admin(&mut self) -> Result<(), RuntimeError> {
        if self.admin.is_some() {
            return Ok(());
        }
        if let Some((admin, rx)) = crate::admin::start_for(
            &self.config,
            &self.listeners,
            &self.upstreams,
            &self.stop_checks,
        )
        .await?
        {
            if let Some(log) = &self.access_log {
                let _ = admin.shared.access_log.set(Arc::clone(log));
            }
            if let Some(v) = &self.vrrp {
                let _ = admin.shared.vrrp.set(v.instances().to_vec());
            }
            self.admin = Some(admin);
            self.reload_requests = Some(rx);
        }
        Ok(())
    }
}
