//! The UDP proxy: listeners with `protocol = "udp"` (LVS `-u` virtual services, nginx
//! `listen … udp`), for DNS, syslog and other datagram protocols.
//!
//! This module owns UDP listening sockets, the flow tables and the relay of datagrams both ways.
//! It does not choose servers (that is [`Upstream::select`], with the upstream's scheduler and
//! persistence) nor decide server health (checks are in [`crate::health`]; this module reports
//! ICMP port unreachable as a passive failure).
//!
//! # Flows
//!
//! ```text
//! client ──dgram──▶ listener socket (one per worker, SO_REUSEPORT)
//!                     │ worker: flow table lookup by client address
//!                     │   hit  ─▶ send on the flow's socket
//!                     │   miss ─▶ select a server (scheduler, persistence) ─▶ new socket,
//!                     │           connect()ed to it ─▶ send; a reply task starts
//! server ──reply──▶ flow socket ─▶ reply task ─▶ listener socket send_to(client)
//! ```
//!
//! * The datagrams of one client address (IP and port) are a *flow*: the first one picks a
//!   server, the later ones go to the same server over the same socket, and the server's replies
//!   go back to the client from the listener's address. The kernel hashes a client's datagrams to
//!   one SO_REUSEPORT socket, so each worker keeps its own table, without a lock.
//! * A flow ends after `udp_timeout` without a datagram either way (swept a few times per timeout
//!   period, at most once a second), or at once after `responses` replies per client datagram
//!   (nginx `proxy_responses`), so each DNS query of one client is scheduled on its own.
//! * A listener holds at most `max_flows`. A new client at a full listener evicts the least
//!   recently used flow of its worker (counted: `evicted`); a worker with no flow to give up drops
//!   the datagram (`table_full`).
//! * The flow's server socket is `connect()`ed, so an ICMP port unreachable from the server comes
//!   back as ECONNREFUSED on it: the flow ends, the server's error counter and passive check
//!   ([`crate::upstream::Server::passive_failure`]) learn of it, and the client's next datagram
//!   is scheduled afresh.
//! * Each flow holds a [`crate::upstream::ServerGuard`], so `lc`, `wlc`, `max_connections` and the
//!   per-server counters see flows as connections.
//!
//! # Reload
//! Workers load their [`UdpRoute`] (listener settings and upstream) for each new flow; a reload
//! publishes a new one in one store, so new flows take the new settings and server choice while
//! open flows keep theirs, on the same sockets.
//!
//! # Shutdown
//! When ballast stops accepting, a UDP worker takes no new flows (their datagrams are dropped and
//! counted, `stopping`) and keeps relaying for the flows it has until they end or the grace period
//! does; it then closes its socket.
//!
//! # Batching
//! A worker reads its socket with recvmmsg(2), up to 32 datagrams per call (`batch.rs`). With
//! `bench/udp.sh` (64 clients in request/response lockstep, one worker pinned to one CPU) a call
//! took about 20 datagrams on average, replacing 20 recvfrom(2) calls, and the proxy's CPU per
//! request went from 1.05 to 1.00 s per 100k requests (throughput moved within the box's noise).
//! What is left per request is two sends (to the server, to the client; on loopback each also
//! pays for the receiver's network stack), one read of the server's answer and the read that
//! finds its socket empty. sendmmsg(2) does not fit: each flow sends on its own socket, and
//! answers go to different clients from different tasks. UDP GRO/GSO do not either: they merge or
//! split runs of datagrams of *one* flow, and a request/response flow has one in flight.
//!
//! # Costs
//! A flow is a socket (a file descriptor: `max_flows` must fit under `ulimit -n`), a hash-table
//! entry and a small task asleep until its server answers; no buffer of its own. Datagrams are
//! read into 32 buffers of 64 KiB per worker (only the pages datagrams are written to are ever
//! touched) and replies into one 64 KiB buffer per runtime thread.
//!
//! [`Upstream::select`]: crate::upstream::Upstream::select

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ListenerConfig;
use crate::listener::socket::bind_error;
use crate::listener::{Listener, ListenerError, ListenerStats};
use crate::upstream::Upstream;

mod batch;
mod flows;
mod worker;

/// Largest datagram relayed: the UDP length field's limit.
const MAX_DATAGRAM: usize = 65535;

/// Counters of one UDP listener, beside its [`ListenerStats`] (there: flows created per worker
/// as `accepted`, flows open as `active`, `no_server`, and flows expired as `idle_timeouts`).
#[derive(Debug, Default)]
pub struct UdpStats {
    /// Datagrams received from clients.
    pub datagrams_in: AtomicU64,
    /// Bytes received from clients.
    pub bytes_in: AtomicU64,
    /// Datagrams sent to clients (servers' replies).
    pub datagrams_out: AtomicU64,
    /// Bytes sent to clients.
    pub bytes_out: AtomicU64,
    /// Flows closed after their `responses`.
    pub answered: AtomicU64,
    /// Flows evicted to make room for a new client.
    pub evicted: AtomicU64,
    /// Flows ended by an ICMP port unreachable from their server.
    pub refused: AtomicU64,
    /// Datagrams dropped: the listener was full and this worker had no flow to evict.
    pub drop_table_full: AtomicU64,
    /// Datagrams dropped: a send to the server or to the client failed (buffers full, no
    /// socket could be opened).
    pub drop_send_error: AtomicU64,
    /// Datagrams dropped: a new client while ballast was stopping.
    pub drop_stopping: AtomicU64,
}

impl UdpStats {
    /// One line for the counters table.
    pub fn summary(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "udp in {} dgrams {} B  out {} dgrams {} B  answered {} evicted {} refused {}  drops: table-full {} send-error {} stopping {}",
            g(&self.datagrams_in),
            g(&self.bytes_in),
            g(&self.datagrams_out),
            g(&self.bytes_out),
            g(&self.answered),
            g(&self.evicted),
            g(&self.refused),
            g(&self.drop_table_full),
            g(&self.drop_send_error),
            g(&self.drop_stopping),
        )
    }
}

/// The sockets of one UDP listener, bound, not yet served.
#[derive(Debug)]
pub struct BoundUdp {
    /// One socket per worker, all on `local_addr` with SO_REUSEPORT.
    pub sockets: Vec<std::net::UdpSocket>,
    /// The bound address (the port filled in when 0 was asked for).
    pub local_addr: SocketAddr,
}

/// Binds a UDP listener's sockets: one per worker, each with SO_REUSEPORT.
///
/// # Errors
/// [`ListenerError::Bind`] naming the listener, the address and a hint.
pub fn bind(config: &ListenerConfig) -> Result<BoundUdp, ListenerError> {
    let err = |addr: SocketAddr| bind_error(&config.name, addr, hint);
    if config.bind.port() != 0 {
        // Without SO_REUSEPORT, so that anything already bound there (even another ballast)
        // makes this fail instead of silently sharing the port's datagrams.
        udp_socket(config.bind, false).map_err(err(config.bind))?;
    }
    let mut addr = config.bind;
    let mut sockets = Vec::with_capacity(config.workers);
    for _ in 0..config.workers.max(1) {
        let socket = udp_socket(addr, true).map_err(err(addr))?;
        if addr.port() == 0 {
            addr = socket.local_addr().map_err(err(addr))?;
        }
        sockets.push(socket);
    }
    Ok(BoundUdp {
        sockets,
        local_addr: addr,
    })
}

/// Binds `config.workers` sockets on `addr`, where this listener's own sockets are already bound
/// (a reload replacing them): they join its SO_REUSEPORT group, so no probe.
///
/// # Errors
/// [`ListenerError::Bind`] as [`bind`].
pub fn bind_siblings(config: &ListenerConfig, addr: SocketAddr) -> Result<BoundUdp, ListenerError> {
    let sockets = (0..config.workers.max(1))
        .map(|_| udp_socket(addr, true).map_err(bind_error(&config.name, addr, hint)))
        .collect::<Result<_, _>>()?;
    Ok(BoundUdp {
        sockets,
        local_addr: addr,
    })
}

/// A bound, non-blocking UDP socket.
fn udp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        socket.set_reuse_port(true)?;
        // Bursts queue in the kernel while the worker is busy; ask for room for a few thousand
        // datagrams (the kernel caps it at net.core.rmem_max, and that is fine).
        let _ = socket.set_recv_buffer_size(4 << 20);
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn hint(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::AddrInUse => {
            "address already in use (another process is bound there; `ss -lunp` shows which)"
        }
        io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        }
        io::ErrorKind::AddrNotAvailable => {
            "address not available (no interface on this host has that IP)"
        }
        _ => "the system refused it",
    }
}

/// Where a UDP listener's new flows go: the listener's version (settings, shared counters) and
/// its upstream. A reload publishes a new one in one store; open flows keep theirs.
#[derive(Debug)]
pub struct UdpRoute {
    /// The listener's settings and counters.
    pub listener: Arc<Listener>,
    /// The upstream that serves it.
    pub upstream: Arc<Upstream>,
}

/// The sockets of a UDP listener registered with the async runtime, ready to serve.
#[derive(Debug)]
pub struct ReadyUdp {
    sockets: Vec<Arc<tokio::net::UdpSocket>>,
    local_addr: SocketAddr,
}

impl BoundUdp {
    /// Registers the sockets with the async runtime (the step of [`start`] that can fail, done
    /// before anything starts so a start or reload stays all or nothing).
    ///
    /// # Errors
    /// When a socket cannot be registered.
    pub fn register(self) -> io::Result<ReadyUdp> {
        let mut sockets = Vec::with_capacity(self.sockets.len());
        for s in self.sockets {
            sockets.push(Arc::new(tokio::net::UdpSocket::from_std(s)?));
        }
        Ok(ReadyUdp {
            sockets,
            local_addr: self.local_addr,
        })
    }
}

/// Starts the workers of a UDP listener on `tracker`; returns the route they load per new flow
/// (its listener is the running listener).
pub fn start(
    config: &ListenerConfig,
    bound: ReadyUdp,
    upstream: &Arc<Upstream>,
    stop_accepting: &CancellationToken,
    abort: &CancellationToken,
    tracker: &TaskTracker,
) -> Arc<ArcSwap<UdpRoute>> {
    let stats = Arc::new(UdpStats::default());
    let listener = Arc::new(Listener {
        config: config.clone(),
        local_addr: bound.local_addr,
        stats: Arc::new(ListenerStats::new(bound.sockets.len())),
        worker_inodes: Box::new([]),
        // Flows are bounded by `max_flows`; connection limits are for accepted connections.
        limit: Arc::new(crate::listener::Gate::new(
            crate::config::ConnectionLimit::UNLIMITED,
        )),
        udp: Some(Arc::clone(&stats)),
    });
    let route = Arc::new(ArcSwap::from_pointee(UdpRoute {
        listener: Arc::clone(&listener),
        upstream: Arc::clone(upstream),
    }));
    for (index, socket) in bound.sockets.into_iter().enumerate() {
        let w = worker::Worker {
            index,
            socket,
            route: Arc::clone(&route),
            stats: Arc::clone(&stats),
            stop: stop_accepting.clone(),
            abort: abort.clone(),
        };
        tracker.spawn(w.run());
    }
    tracing::info!(
        listener = %config.name,
        addr = %bound.local_addr,
        upstream = %config.upstream,
        workers = listener.stats.accepted.len(),
        udp_timeout = ?config.udp.timeout,
        max_flows = config.udp.max_flows,
        responses = ?config.udp.responses,
        "listening (udp)"
    );
    route
}
