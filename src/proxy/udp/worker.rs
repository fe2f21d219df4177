//! One UDP worker: its SO_REUSEPORT socket, its flow table, and the reply task of each flow.
//! See the module comment of [`super`] for the flow rules.

use arc_swap::ArcSwap;
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::batch::Batch;
use super::flows::{FlowTable, Recency};
use super::{UdpStats, MAX_DATAGRAM};
use crate::health::now_ms;
use crate::listener::Listener;
use crate::scheduler::PickContext;
use crate::upstream::{Server, ServerGuard, Tried};

thread_local! {
    /// Where reply tasks read a server's datagram before sending it on: one buffer per runtime
    /// thread instead of one per flow. Never borrowed across an `.await`.
    static REPLY_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; MAX_DATAGRAM].into_boxed_slice());
}

/// Everything one worker needs.
pub(super) struct Worker {
    /// Index within the listener (for the per-worker flow counter).
    pub(super) index: usize,
    /// The worker's own listening socket; reply tasks send from it too.
    pub(super) socket: Arc<UdpSocket>,
    /// Settings and counters, and where flows go: loaded for each new flow, so a reload that
    /// swaps them ([`super::UdpRoute`]) reaches the next flow while open flows keep theirs.
    pub(super) route: Arc<ArcSwap<super::UdpRoute>>,
    /// UDP counters of the listener.
    pub(super) stats: Arc<UdpStats>,
    /// Cancelled when ballast stops accepting: no new flows from then on.
    pub(super) stop: CancellationToken,
    /// Cancelled when the grace period is over: the worker ends at once.
    pub(super) abort: CancellationToken,
}

/// What a flow's worker and its reply task share.
#[derive(Debug, Default)]
struct FlowShared {
    /// [`now_ms`] of the last datagram either way.
    last_ms: AtomicU64,
    /// Datagrams sent to the server.
    sent: AtomicU64,
    /// Datagrams received from the server.
    received: AtomicU64,
    /// Set by the reply task, before it sends the reply that completes `responses` (or when the
    /// server refused): a datagram the client sends after that reply must start a new flow,
    /// even if the worker has not yet processed the close message.
    closed: AtomicBool,
}

/// One client's flow, owned by the worker's table.
struct Flow {
    /// Tells this flow's close message from that of an earlier flow of the same client.
    id: u64,
    shared: Arc<FlowShared>,
    /// Connected to the server.
    socket: Arc<UdpSocket>,
    /// The server's slot (and the client's persistence hold).
    guard: ServerGuard,
    reply: JoinHandle<()>,
    listener: Arc<Listener>,
}

impl Recency for Flow {
    fn last_ms(&self) -> u64 {
        self.shared.last_ms.load(Ordering::Relaxed)
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.reply.abort();
        self.listener.stats.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A flow's end, as told by its reply task: (client, flow id).
type Closed = (SocketAddr, u64);

impl Worker {
    /// Relays until the grace period ends, or until ballast stops accepting and this worker's
    /// last flow is over.
    pub(super) async fn run(self) {
        let cfg = self.route.load().listener.config.udp.clone();
        let (closed_tx, mut closed_rx) = mpsc::unbounded_channel::<Closed>();
        let mut table: FlowTable<Flow> = FlowTable::new();
        let mut batch = Batch::new();
        let period = (cfg.timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut sweep = tokio::time::interval(period);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        let mut next_id = 0u64;
        loop {
            tokio::select! {
                biased;
                () = self.abort.cancelled() => break,
                () = self.stop.cancelled(), if !stopping => stopping = true,
                Some((client, id)) = closed_rx.recv() => {
                    if table.get(&client).is_some_and(|f| f.id == id) {
                        table.remove(&client);
                    }
                }
                _ = sweep.tick() => {
                    // The current `udp_timeout` (a reload may change it; the sweep period
                    // stays the one computed at start).
                    let route = self.route.load();
                    let timeout = route.listener.config.udp.timeout;
                    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                    let n = table.expire(now_ms(), timeout_ms);
                    if n > 0 {
                        route.listener.stats.idle_timeouts.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
                r = self.socket.readable() => {
                    if r.is_err() {
                        break;
                    }
                    // Until the queue is empty (WouldBlock clears the readiness), a batch at a time.
                    loop {
                        let fd = self.socket.as_raw_fd();
                        let n = match self.socket.try_io(Interest::READABLE, || batch.recv(fd)) {
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                tracing::debug!(listener = %self.route.load().listener.config.name, error = %e, "udp receive failed");
                                break;
                            }
                        };
                        for i in 0..n {
                            if let Some((data, Some(client))) = batch.get(i) {
                                self.datagram(&mut table, client, data, stopping, &mut next_id, &closed_tx);
                            }
                        }
                    }
                }
            }
            if stopping && table.is_empty() {
                break;
            }
        }
        tracing::debug!(listener = %self.route.load().listener.config.name, worker = self.index,
            flows = table.len(), "udp worker stopped");
    }

    /// One datagram from `client`.
    fn datagram(
        &self,
        table: &mut FlowTable<Flow>,
        client: SocketAddr,
        data: &[u8],
        stopping: bool,
        next_id: &mut u64,
        closed_tx: &mpsc::UnboundedSender<Closed>,
    ) {
        self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes_in
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let now = now_ms();
        if let Some(flow) = table.get(&client) {
            if !flow.shared.closed.load(Ordering::Acquire) {
                if !self.forward(flow, data, now) {
                    table.remove(&client);
                }
                return;
            }
            table.remove(&client);
        }
        if stopping {
            self.stats.drop_stopping.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let route = self.route.load();
        let max = route.listener.config.udp.max_flows as u64;
        if route.listener.stats.active.load(Ordering::Relaxed) >= max {
            if table.evict_lru().is_some() {
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
            } else {
                self.stats.drop_table_full.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        *next_id = next_id.wrapping_add(1);
        let Some(flow) = self.open(client, *next_id, now, closed_tx) else {
            return;
        };
        if self.forward(&flow, data, now) {
            table.insert(client, flow);
        }
    }

    /// A new flow for `client`: a server from the upstream (retrying on another one when a
    /// socket cannot be connected to it), a socket connected to it, and the reply task. `None`
    /// (counted) when no server can take it.
    fn open(
        &self,
        client: SocketAddr,
        id: u64,
        now: u64,
        closed_tx: &mpsc::UnboundedSender<Closed>,
    ) -> Option<Flow> {
        let route = self.route.load_full();
        let (listener, upstream) = (&route.listener, &route.upstream);
        let snapshot = upstream.snapshot();
        let ctx = PickContext {
            client: client.ip(),
            local: listener.local_addr.ip(),
        };
        let mut tried = Tried::new();
        for _ in 0..=upstream.config.retries {
            let guard = upstream.select(&snapshot, &ctx, &tried)?;
            tried.insert(guard.index());
            let server = Arc::clone(guard.server());
            let socket = match connected_socket(server.address()) {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    server.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                    if crate::proxy::is_local_shortage(&e) {
                        // Out of file descriptors or memory: not the server's fault.
                        self.stats.drop_send_error.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(listener = %listener.config.name, error = %e,
                            "cannot open a socket for a new udp flow (raise ulimit -n or lower max_flows)");
                        return None;
                    }
                    server.passive_failure();
                    if let Some(failures) = server.stats.connect_log.tick() {
                        tracing::warn!(listener = %listener.config.name, server = %server.address(),
                            error = %e, failures,
                            "cannot connect a udp socket to the server; trying another ({failures} \
                             since the last line, at most one line a second per server)");
                    }
                    continue;
                }
            };
            server.stats.connections.fetch_add(1, Ordering::Relaxed);
            if let Some(c) = listener.stats.accepted.get(self.index) {
                c.fetch_add(1, Ordering::Relaxed);
            }
            listener.stats.active.fetch_add(1, Ordering::Relaxed);
            let shared = Arc::new(FlowShared {
                last_ms: AtomicU64::new(now),
                ..FlowShared::default()
            });
            let replies = Replies {
                id,
                client,
                shared: Arc::clone(&shared),
                socket: Arc::clone(&socket),
                listener_socket: Arc::clone(&self.socket),
                server,
                stats: Arc::clone(&self.stats),
                responses: listener.config.udp.responses.map(u64::from),
                closed_tx: closed_tx.clone(),
            };
            return Some(Flow {
                id,
                shared,
                socket,
                guard,
                reply: tokio::spawn(replies.run()),
                listener: Arc::clone(listener),
            });
        }
        listener.stats.no_server.fetch_add(1, Ordering::Relaxed);
        upstream.stats.no_server.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(listener = %listener.config.name, %client, "no server for a new udp flow; datagram dropped");
        None
    }

    /// Sends a client datagram on its flow. `false` when the flow must end (its server refused).
    fn forward(&self, flow: &Flow, data: &[u8], now: u64) -> bool {
        flow.shared.last_ms.store(now, Ordering::Relaxed);
        flow.shared.sent.fetch_add(1, Ordering::Release);
        let server = flow.guard.server();
        // Straight to the socket: tokio's try_send would refuse a socket whose first
        // writability event the reactor has not seen yet, and a UDP send does not wait anyway.
        match SockRef::from(&*flow.socket).send(data) {
            Ok(n) => {
                server
                    .stats
                    .bytes_to_server
                    .fetch_add(n as u64, Ordering::Relaxed);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                // An ICMP port unreachable for an earlier datagram of this flow.
                refused(server, &self.stats);
                false
            }
            Err(e) => {
                server.stats.errors.fetch_add(1, Ordering::Relaxed);
                self.stats.drop_send_error.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(server = %server.address(), error = %e, "udp send to server failed");
                true
            }
        }
    }
}

/// A server that answered with ICMP port unreachable: counted, and a passive failure.
fn refused(server: &Server, stats: &UdpStats) {
    server.stats.errors.fetch_add(1, Ordering::Relaxed);
    stats.refused.fetch_add(1, Ordering::Relaxed);
    server.passive_failure();
    tracing::debug!(server = %server.address(), "udp server port unreachable");
}

/// A non-blocking UDP socket `connect()`ed to `server` (the kernel picks the local port).
fn connected_socket(server: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(server),
        Type::DGRAM.nonblocking(),
        Some(Protocol::UDP),
    )?;
    socket.connect(&server.into())?;
    UdpSocket::from_std(socket.into())
}

/// The reply task of one flow: server datagrams back to the client.
struct Replies {
    id: u64,
    client: SocketAddr,
    shared: Arc<FlowShared>,
    socket: Arc<UdpSocket>,
    listener_socket: Arc<UdpSocket>,
    server: Arc<Server>,
    stats: Arc<UdpStats>,
    /// `responses` per client datagram, if the flow closes after them.
    responses: Option<u64>,
    closed_tx: mpsc::UnboundedSender<Closed>,
}

/// What one read from the server's socket gave.
enum Read {
    /// A datagram relayed; `true` when it completed the flow.
    Relayed(bool),
    /// Nothing more to read now.
    Empty,
    /// The socket failed; the flow is over.
    Failed(io::Error),
}

impl Replies {
    /// Runs until the flow is complete or fails; the worker aborts it when it drops the flow.
    async fn run(self) {
        loop {
            // An ICMP error sets only EPOLLERR, which `readable()` does not wake for.
            tokio::select! {
                r = self.socket.readable() => if r.is_err() { return },
                r = self.socket.ready(Interest::ERROR) => {
                    if r.is_err() {
                        return;
                    }
                    match SockRef::from(&*self.socket).take_error() {
                        Ok(Some(e)) => return self.failed(&e),
                        Ok(None) | Err(_) => {
                            // Nothing pending (taken by a send): clear the readiness.
                            let _ = self.socket.try_io(Interest::ERROR, || {
                                Err::<(), _>(io::ErrorKind::WouldBlock.into())
                            });
                            continue;
                        }
                    }
                }
            }
            loop {
                match self.read_one() {
                    Read::Relayed(false) => {}
                    Read::Relayed(true) => {
                        self.stats.answered.fetch_add(1, Ordering::Relaxed);
                        let _ = self.closed_tx.send((self.client, self.id));
                        return;
                    }
                    Read::Empty => break,
                    Read::Failed(e) => return self.failed(&e),
                }
            }
        }
    }

    /// The server's socket failed (an ICMP port unreachable, usually): the flow is over.
    fn failed(&self, e: &io::Error) {
        if e.kind() == io::ErrorKind::ConnectionRefused {
            refused(&self.server, &self.stats);
        } else {
            self.server.stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(server = %self.server.address(), error = %e, "udp receive from server failed");
        }
        self.shared.closed.store(true, Ordering::Release);
        let _ = self.closed_tx.send((self.client, self.id));
    }

    /// Reads one datagram from the server and sends it to the client, without waiting.
    fn read_one(&self) -> Read {
        REPLY_BUF.with(|cell| {
            let Ok(mut buf) = cell.try_borrow_mut() else {
                // Cannot happen (no await while borrowed); treat as nothing to read.
                return Read::Empty;
            };
            let n = match self.socket.try_recv(&mut buf[..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Read::Empty,
                Err(e) => return Read::Failed(e),
            };
            self.server
                .stats
                .bytes_from_server
                .fetch_add(n as u64, Ordering::Relaxed);
            self.server.passive_success();
            self.shared.last_ms.store(now_ms(), Ordering::Relaxed);
            let got = self.shared.received.fetch_add(1, Ordering::Relaxed) + 1;
            let done = self
                .responses
                .is_some_and(|r| got >= self.shared.sent.load(Ordering::Acquire).saturating_mul(r));
            if done {
                // Before the reply leaves: the client's next datagram must find the flow closed.
                self.shared.closed.store(true, Ordering::Release);
            }
            let data = buf.get(..n).unwrap_or_default();
            match SockRef::from(&*self.listener_socket).send_to(data, &self.client.into()) {
                Ok(sent) => {
                    self.stats.datagrams_out.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .bytes_out
                        .fetch_add(sent as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    self.stats.drop_send_error.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(client = %self.client, error = %e, "udp send to client failed");
                }
            }
            Read::Relayed(done)
        })
    }
}
