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

use tokio::io::unix::AsyncFd;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::config::Protocol;
use crate::listener::accept::Worker;
use crate::listener::{self, Gate, Listener, ListenerError, ListenerStats};
use crate::proxy::http::{route::Router, HttpRoutes, HttpUpstream};
use crate::proxy::Route;
use crate::upstream::Upstream;

pub mod nofile;
pub mod reload;
pub mod signals;
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
    /// The health checker tasks (aborted if the runtime is dropped without a shutdown).
    checkers: Option<crate::health::Checkers>,
    global_limit: Arc<Gate>,
    /// VRRP instances, when `[vrrp]` is configured.
    vrrp: Option<crate::vrrp::Vrrp>,
    /// The admin API server (`[admin]`), and the reloads it asks for until someone takes them.
    admin: Option<crate::admin::AdminServer>,
    reload_requests: Option<tokio::sync::mpsc::Receiver<crate::admin::ReloadRequest>>,
    /// Per listener (indexed like `listeners`): stops its workers alone (a reload removed it).
    listener_stops: Vec<CancellationToken>,
    /// The access log, when `[global] access_log` is set.
    access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// Per listener (indexed like `listeners`): copies of its listening sockets, for a binary
    /// upgrade to hand over. Dropped when the listener stops, so a stopped listener's sockets
    /// really close (refusing, not queueing, new connections).
    listener_fds: Vec<Vec<std::os::fd::OwnedFd>>,
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
        let mut bound = Vec::with_capacity(config.listeners.len());
        let is_udp = |l: &&crate::config::ListenerConfig| l.protocol == Protocol::Udp;
        for lc in config.listeners.iter().filter(|l| !is_udp(l)) {
            bound.push(match inherited.take(lc) {
                Some(b) => b,
                None => listener::bind(lc)?,
            });
        }
        let mut udp_bound = Vec::new();
        for lc in config.listeners.iter().filter(is_udp) {
            udp_bound.push((lc, crate::proxy::udp::bind(lc)?));
        }
        let stop_checks = CancellationToken::new();
        let checkers = crate::health::spawn(&upstreams, &stop_checks)?;
        let global_limit = Arc::new(global_gate(&config));
        let stop_accepting = CancellationToken::new();
        let abort = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut workers = JoinSet::new();
        let mut listeners = Vec::with_capacity(bound.len());
        let mut listener_stops = Vec::with_capacity(bound.len());
        let mut listener_fds = Vec::with_capacity(bound.len());
        for (lc, b) in config.listeners.iter().filter(|l| !is_udp(l)).zip(bound) {
            let listener = Arc::new(Listener {
                config: lc.clone(),
                local_addr: b.local_addr,
                stats: ListenerStats::new(b.sockets.len()),
                worker_inodes: b.sockets.iter().map(crate::backlog::socket_inode).collect(),
                limit: Arc::new(Gate::new(lc.connections)),
                udp: None,
            });
            // Validation guarantees the upstream exists; a hand-built Config may not.
            let Some(upstream) = upstreams.iter().find(|u| u.name() == lc.upstream) else {
                return Err(RuntimeError::UnknownUpstream {
                    listener: lc.name.clone(),
                    upstream: lc.upstream.clone(),
                });
            };
            let tls = if lc.protocol == Protocol::Https {
                let config = crate::tls::server_config(&lc.certificates, &[b"h2", b"http/1.1"])
                    .map_err(|source| RuntimeError::Tls {
                        listener: lc.name.clone(),
                        source,
                    })?;
                Some(tokio_rustls::TlsAcceptor::from(config))
            } else {
                None
            };
            let http = lc.protocol.is_http().then(|| {
                let router =
                    Router::new(lc, |name| upstreams.iter().position(|u| u.name() == name));
                Arc::new(HttpRoutes {
                    router,
                    upstreams: http_upstreams.clone(),
                    tls,
                })
            });
            let route = Arc::new(Route {
                listener: Arc::clone(&listener),
                upstream: Arc::clone(upstream),
                http,
                access_log: access_log.clone(),
            });
            let listener_stop = reload::listener_token(&stop_accepting);
            listener_stops.push(listener_stop.clone());
            listener_fds.push(upgrade_copies(&b.sockets));
            let effective_backlog = b.effective_backlog(lc.backlog);
            for (index, socket) in b.sockets.into_iter().enumerate() {
                // `AsyncFd::new` is deprecated because it is unsound for a type whose
                // `as_raw_fd` could change or close under the registration; `socket2::Socket`
                // owns its descriptor and always returns the same open one until dropped, which
                // is exactly what the safe-to-use condition of `AsyncFd::register` asks.
                #[allow(deprecated)]
                let socket = AsyncFd::new(socket2::Socket::from(socket)).map_err(|source| {
                    RuntimeError::Register {
                        listener: lc.name.clone(),
                        source,
                    }
                })?;
                let worker = Worker {
                    index,
                    socket,
                    route: Arc::clone(&route),
                    stop_accepting: listener_stop.clone(),
                    abort: abort.clone(),
                    tracker: tracker.clone(),
                    global_limit: Arc::clone(&global_limit),
                };
                workers.spawn(worker.run());
            }
            tracing::info!(
                listener = %lc.name,
                addr = %b.local_addr,
                upstream = %lc.upstream,
                workers = listener.stats.accepted.len(),
                backlog = lc.backlog,
                effective_backlog,
                max_connections = lc.connections.max,
                "listening"
            );
            listeners.push(listener);
        }
        for (lc, b) in udp_bound {
            let Some(upstream) = upstreams.iter().find(|u| u.name() == lc.upstream) else {
                return Err(RuntimeError::UnknownUpstream {
                    listener: lc.name.clone(),
                    upstream: lc.upstream.clone(),
                });
            };
            let register = |source| RuntimeError::Register {
                listener: lc.name.clone(),
                source,
            };
            // Indexed like `listeners`, as the TCP ones: a stop of its own, no sockets to hand
            // over in a binary upgrade (a new process binds UDP afresh).
            let stop = stop_accepting.child_token();
            let udp = crate::proxy::udp::start(lc, b, upstream, &stop, &abort, &tracker);
            listeners.push(udp.map_err(register)?);
            listener_stops.push(stop);
            listener_fds.push(Vec::new());
        }

        // VRRP last: listeners bound to a VIP already listen (IP_FREEBIND) when it arrives.
        let vrrp = (!config.vrrp.is_empty())
            .then(|| crate::vrrp::Vrrp::start(&config.vrrp, |name| vrrp_probe(&upstreams, name)));
        let (admin, reload_requests) = if inherited.defer_admin {
            (None, None)
        } else {
            crate::admin::start_for(&config, &listeners, &upstreams, &stop_checks)
                .await?
                .unzip()
        };
        if let (Some(a), Some(log)) = (&admin, &access_log) {
            let _ = a.shared.access_log.set(Arc::clone(log));
        }
        if let (Some(a), Some(v)) = (&admin, &vrrp) {
            let _ = a.shared.vrrp.set(v.instances().to_vec());
        }
        Ok(Runtime {
            admin,
            reload_requests,
            listener_stops,
            listener_fds,
            access_log,
            config,
            listeners,
            upstreams,
            stop_accepting,
            abort,
            tracker,
            workers,
            stop_checks,
            checkers: Some(checkers),
            global_limit,
            vrrp,
        })
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
        self.listener_fds.clear();
        self.stop_accepting.cancel();
        self.stop_checks.cancel();
        if let Some(checkers) = self.checkers.take() {
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
fn vrrp_probe(upstreams: &[Arc<Upstream>], name: &str) -> Option<crate::vrrp::UpstreamProbe> {
    let upstream = Arc::clone(upstreams.iter().find(|u| u.name() == name)?);
    Some(Arc::new(move || {
        upstream
            .snapshot()
            .servers
            .iter()
            .any(|s| !s.sorry && s.is_usable() && s.config.weight > 0)
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

/// Copies of a listener's sockets for a later handover (fds that cannot be copied are left out,
/// and that listener is then bound afresh by the new process).
fn upgrade_copies(sockets: &[std::net::TcpListener]) -> Vec<std::os::fd::OwnedFd> {
    sockets
        .iter()
        .filter_map(|s| s.try_clone().ok())
        .map(std::os::fd::OwnedFd::from)
        .collect()
}

impl Runtime {
    /// Every listener's sockets, for a new process taking over ([`upgrade::hand_over`]).
    pub fn handover_sockets(&self) -> Vec<(upgrade::Header, Vec<std::os::fd::OwnedFd>)> {
        self.listeners
            .iter()
            .zip(&self.listener_fds)
            .filter(|(l, fds)| fds.len() == l.stats.accepted.len())
            .map(|(l, fds)| {
                let header = upgrade::Header {
                    name: l.config.name.clone(),
                    bind: l.config.bind,
                    local: l.local_addr,
                    workers: fds.len(),
                };
                (
                    header,
                    fds.iter().filter_map(|f| f.try_clone().ok()).collect(),
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
