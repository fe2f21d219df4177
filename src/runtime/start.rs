//! Starting one listener, the same way at start and on a reload: [`Ready`] (its sockets bound
//! and registered, nothing serving), the [`Route`] its connections take, then
//! [`Runtime::launch`], which spawns its workers and returns the [`Running`] handle a reload
//! later changes it through.
//!
//! Everything that can fail (bind, registration with the async runtime, loading certificates)
//! happens before [`Runtime::launch`], which cannot fail: a start or a reload does every
//! fallible step for every listener first, so it is all or nothing.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

use super::{Runtime, RuntimeError};
use crate::config::{ListenerConfig, Protocol};
use crate::listener::accept::Worker;
use crate::listener::{self, Gate, Listener, ListenerStats};
use crate::proxy::http::{route::Router, HttpRoutes, HttpUpstream};
use crate::proxy::Route;
use crate::upstream::Upstream;

/// A listener's sockets, bound and registered with the async runtime, not yet serving.
#[derive(Debug)]
pub(super) enum Ready {
    /// A TCP, HTTP or HTTPS listener.
    Tcp(ReadyTcp),
    /// A UDP listener.
    Udp(crate::proxy::udp::ReadyUdp, SocketAddr),
}

/// The sockets of a TCP-family listener (or the sockets a reload adds to one).
#[derive(Debug)]
pub(super) struct ReadyTcp {
    /// One per worker, registered.
    pub sockets: Vec<AsyncFd<socket2::Socket>>,
    /// A copy of each (same socket): for a binary upgrade to hand over, and for a reload to
    /// change the backlog, options or SO_REUSEPORT steering in place.
    pub fds: Vec<OwnedFd>,
    /// Each socket's inode.
    pub inodes: Vec<u64>,
    /// The address they listen on.
    pub local_addr: SocketAddr,
}

impl Ready {
    /// Binds the sockets of `lc` (TCP-family or UDP) and registers them.
    ///
    /// # Errors
    /// The bind or registration error, naming the listener.
    pub(super) fn bind(lc: &ListenerConfig) -> Result<Ready, RuntimeError> {
        if lc.protocol == Protocol::Udp {
            let b = crate::proxy::udp::bind(lc)?;
            let addr = b.local_addr;
            return Ok(Ready::Udp(b.register().map_err(register(lc))?, addr));
        }
        let b = listener::bind(lc)?;
        Ready::tcp(lc, b.local_addr, b.sockets)
    }

    /// Registers TCP listening sockets (bound here or inherited from an old process).
    ///
    /// # Errors
    /// When a socket cannot be copied or registered.
    pub(super) fn tcp(
        lc: &ListenerConfig,
        local_addr: SocketAddr,
        sockets: Vec<std::net::TcpListener>,
    ) -> Result<Ready, RuntimeError> {
        let mut ready = ReadyTcp {
            sockets: Vec::with_capacity(sockets.len()),
            fds: Vec::with_capacity(sockets.len()),
            inodes: sockets.iter().map(crate::backlog::socket_inode).collect(),
            local_addr,
        };
        for s in sockets {
            ready
                .fds
                .push(OwnedFd::from(s.try_clone().map_err(register(lc))?));
            // `AsyncFd::new` is deprecated because it is unsound for a type whose `as_raw_fd`
            // could change or close under the registration; `socket2::Socket` owns its
            // descriptor and always returns the same open one until dropped, which is exactly
            // what the safe-to-use condition of `AsyncFd::register` asks.
            #[allow(deprecated)]
            let socket = AsyncFd::new(socket2::Socket::from(s)).map_err(register(lc))?;
            ready.sockets.push(socket);
        }
        Ok(Ready::Tcp(ready))
    }

    /// Where it listens.
    pub(super) fn local_addr(&self) -> SocketAddr {
        match self {
            Ready::Tcp(t) => t.local_addr,
            Ready::Udp(_, a) => *a,
        }
    }
}

/// The registration error of listener `lc`.
pub(super) fn register(lc: &ListenerConfig) -> impl Fn(std::io::Error) -> RuntimeError + '_ {
    |source| RuntimeError::Register {
        listener: lc.name.clone(),
        source,
    }
}

/// One worker of a running TCP-family listener.
#[derive(Debug)]
pub(super) struct WorkerSlot {
    /// Retires this worker alone (see [`Worker::retire`]).
    pub retire: CancellationToken,
    /// A copy of its socket (see [`ReadyTcp::fds`]). Dropped when the worker stops, so the
    /// socket really closes once the worker has drained its queue.
    pub fd: OwnedFd,
    /// Cancelled once the worker has ended and its socket closed.
    pub closed: CancellationToken,
}

/// A running listener, as a reload sees it.
#[derive(Debug)]
pub(super) struct Running {
    /// The route its workers load per connection; `None` for UDP.
    pub route: Option<Arc<ArcSwap<Route>>>,
    /// The route a UDP listener's workers load per new flow; `None` for the others.
    pub udp_route: Option<Arc<ArcSwap<crate::proxy::udp::UdpRoute>>>,
    /// Stops all its workers (a child of the runtime's `stop_accepting`).
    pub stop: CancellationToken,
    /// Its workers, in the order of their sockets in the SO_REUSEPORT group.
    pub workers: Vec<WorkerSlot>,
    /// Whether a steering program was attached to its SO_REUSEPORT group (fewer workers after a
    /// reload, [`listener::socket::steer`]); a later change of the worker count updates it.
    pub steered: bool,
}

/// A version of a TCP-family listener: a fresh one, or (a reload) one that shares the counters
/// and the gate of the version it replaces (`None`: new ones).
pub(super) fn tcp_listener(
    lc: &ListenerConfig,
    local_addr: SocketAddr,
    inodes: Vec<u64>,
    stats: Option<Arc<ListenerStats>>,
    limit: Option<Arc<Gate>>,
) -> Arc<Listener> {
    let stats = stats.unwrap_or_else(|| Arc::new(ListenerStats::new(inodes.len())));
    let limit = limit.unwrap_or_else(|| Arc::new(Gate::new(lc.connections)));
    Arc::new(Listener {
        config: lc.clone(),
        local_addr,
        stats,
        worker_inodes: inodes.into(),
        limit,
        udp: None,
    })
}

/// The TLS termination of an https listener: its certificates, loaded now.
///
/// # Errors
/// What is wrong with a certificate or key file.
pub(super) fn tls_acceptor(
    lc: &ListenerConfig,
) -> Result<Option<tokio_rustls::TlsAcceptor>, RuntimeError> {
    if lc.protocol != Protocol::Https {
        return Ok(None);
    }
    let config =
        crate::tls::server_config(&lc.certificates, &[b"h2", b"http/1.1"]).map_err(|source| {
            RuntimeError::Tls {
                listener: lc.name.clone(),
                source,
            }
        })?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(config)))
}

/// Where the connections of `listener` go: its upstream and, for HTTP, its routes over
/// `upstreams` (with `http`, indexed alike).
///
/// # Errors
/// [`RuntimeError::UnknownUpstream`] (validation rules it out; a hand-built `Config` may not).
pub(super) fn route(
    listener: Arc<Listener>,
    upstreams: &[Arc<Upstream>],
    http: &[Arc<HttpUpstream>],
    tls: Option<tokio_rustls::TlsAcceptor>,
    access_log: Option<Arc<crate::access_log::AccessLog>>,
) -> Result<Route, RuntimeError> {
    let lc = &listener.config;
    let Some(upstream) = upstreams.iter().find(|u| u.name() == lc.upstream) else {
        return Err(RuntimeError::UnknownUpstream {
            listener: lc.name.clone(),
            upstream: lc.upstream.clone(),
        });
    };
    let http = lc.protocol.is_http().then(|| {
        let router = Router::new(lc, |name| upstreams.iter().position(|u| u.name() == name));
        Arc::new(HttpRoutes {
            router,
            upstreams: http.to_vec(),
            tls,
        })
    });
    Ok(Route {
        upstream: Arc::clone(upstream),
        listener,
        http,
        access_log,
    })
}

impl Runtime {
    /// Starts the workers of a TCP-family listener on `sockets`, with its connections going by
    /// `route`. Cannot fail: everything that can was done when the sockets were made [`Ready`].
    pub(super) fn launch_tcp(&mut self, route: Route, ready: ReadyTcp) -> Running {
        let lc = route.listener.config.clone();
        let stop = self.stop_accepting.child_token();
        let swap = Arc::new(ArcSwap::from_pointee(route));
        let workers = self.spawn_workers(&swap, &stop, 0, ready.sockets, ready.fds);
        let b = listener::socket::somaxconn();
        tracing::info!(
            listener = %lc.name,
            addr = %ready.local_addr,
            protocol = lc.protocol.as_str(),
            upstream = %lc.upstream,
            workers = workers.len(),
            backlog = lc.backlog,
            effective_backlog = b.map_or(lc.backlog, |m| lc.backlog.min(m)),
            max_connections = lc.connections.max,
            "listening"
        );
        Running {
            route: Some(swap),
            udp_route: None,
            stop,
            workers,
            steered: false,
        }
    }

    /// Spawns one accept worker per socket, numbered from `first`.
    pub(super) fn spawn_workers(
        &mut self,
        route: &Arc<ArcSwap<Route>>,
        stop: &CancellationToken,
        first: usize,
        sockets: Vec<AsyncFd<socket2::Socket>>,
        fds: Vec<OwnedFd>,
    ) -> Vec<WorkerSlot> {
        let mut slots = Vec::with_capacity(sockets.len());
        for (i, (socket, fd)) in sockets.into_iter().zip(fds).enumerate() {
            let retire = CancellationToken::new();
            let closed = CancellationToken::new();
            self.workers.spawn(
                Worker {
                    index: first + i,
                    socket,
                    route: Arc::clone(route),
                    retire: retire.clone(),
                    stop_accepting: stop.clone(),
                    abort: self.abort.clone(),
                    tracker: self.tracker.clone(),
                    global_limit: Arc::clone(&self.global_limit),
                    closed: closed.clone().drop_guard(),
                }
                .run(),
            );
            slots.push(WorkerSlot { retire, fd, closed });
        }
        slots
    }

    /// Starts the workers of a UDP listener serving `upstream`.
    pub(super) fn launch_udp(
        &mut self,
        lc: &ListenerConfig,
        ready: crate::proxy::udp::ReadyUdp,
        upstream: &Arc<Upstream>,
    ) -> (Arc<Listener>, Running) {
        // A stop of its own; no sockets to hand over in a binary upgrade (a new process binds
        // UDP afresh).
        let stop = self.stop_accepting.child_token();
        let route =
            crate::proxy::udp::start(lc, ready, upstream, &stop, &self.abort, &self.tracker);
        let listener = Arc::clone(&route.load().listener);
        let running = Running {
            route: None,
            udp_route: Some(route),
            stop,
            workers: Vec::new(),
            steered: false,
        };
        (listener, running)
    }
}
