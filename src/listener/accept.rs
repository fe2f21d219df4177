//! The accept loop of one worker.
//!
//! Each worker owns one SO_REUSEPORT socket and loops until shutdown:
//!
//! ```text
//! wait until a connection is in the accept queue ─▶ take a slot (listener + global limit) ─▶ accept(2) ─▶ spawn
//!                                                     │ a limit is full
//!                                                     └─▶ pause: wait for room, without accepting
//! ```
//!
//! Waiting for readiness *before* taking a slot matters with several workers: a worker whose own
//! queue is empty holds no slot, so it never keeps a connection waiting in another worker's queue.
//! While paused, connections stay in the kernel's accept queue, established (the client's
//! handshake is done and its first bytes are buffered); when the queue overflows the kernel drops
//! further handshakes (`ListenOverflows`) and the clients retry their SYN. Nothing is accepted and
//! then closed for want of room. See [`super::limit`].
//!
//! Each connection task runs on the shared [`TaskTracker`] so shutdown can wait for them, and
//! carries its [`Permit`] until it ends. Accept errors follow the usual policy: a client that gave
//! up before it was accepted (ECONNABORTED, ECONNRESET…) is not our error and is skipped; anything
//! else (EMFILE, ENFILE, ENOMEM) is logged (at most one line a second per worker, with the count)
//! and the worker backs off, 5 ms doubling up to 1 s, instead of spinning, leaving new connections
//! waiting in the kernel's queue; the first accept that succeeds resets the back-off.
//!
//! The listener's settings and upstream are loaded per connection from an `ArcSwap` ([`Route`]),
//! so a reload changes them under a running worker. Closing a listening socket resets every
//! connection still in its queue, so a worker that stops first accepts what is queued: when
//! retired by a reload (its listener goes on with fewer workers, new connections steered
//! elsewhere) it waits for room under the limits as usual until its queue is empty; when its
//! listener stops, it takes what the limits have room for, without waiting.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use socket2::Socket;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Protocol;
use crate::listener::limit::{Full, Gate, Permit};
use crate::listener::refusals::{LogEvery, Reason};
use crate::proxy::{http, tcp, Route};

/// How long a worker pauses after a resource error from accept(2), doubled up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Everything one worker needs.
#[derive(Debug)]
pub struct Worker {
    /// Index of this worker within its listener (for per-worker counters).
    pub index: usize,
    /// The worker's own listening socket (non-blocking, registered with the runtime).
    pub socket: AsyncFd<Socket>,
    /// Where its connections go: loaded once per accepted connection, so a reload that swaps
    /// the listener's settings or upstream ([`crate::runtime::reload`]) reaches the next
    /// connection while this one keeps the version it started with.
    pub route: Arc<ArcSwap<Route>>,
    /// Cancelled when a reload retires this worker (fewer `workers`) after steering new
    /// connections to the others: it then accepts what its queue still holds, waiting for room
    /// under the limits as usual, and stops when the queue is empty.
    pub retire: CancellationToken,
    /// Cancelled when the listener stops accepting (shutdown, or a reload removed or moved it).
    /// What is already in the queue is then accepted if the limits have room, without waiting.
    pub stop_accepting: CancellationToken,
    /// Cancelled when established connections must end (grace period over).
    pub abort: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// The process-wide `max_connections` gate, shared by every worker of every listener.
    pub global_limit: Arc<Gate>,
    /// Cancels its token when the worker ends. Declared after `socket`, so the socket has closed
    /// by then: a reload that removes a listener waits on it before answering, so that once the
    /// answer is out the address refuses connections.
    pub closed: tokio_util::sync::DropGuard,
}

fn is_client_gone(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// accept4(2) with the flags tokio needs: the new socket is non-blocking and close-on-exec.
fn accept(socket: &Socket) -> io::Result<(TcpStream, SocketAddr)> {
    let (stream, addr) = socket.accept4(nix::libc::SOCK_NONBLOCK | nix::libc::SOCK_CLOEXEC)?;
    let peer = addr
        .as_socket()
        .ok_or_else(|| io::Error::other("accepted a connection without an IP peer address"))?;
    Ok((TcpStream::from_std(stream.into())?, peer))
}

impl Worker {
    /// Accepts until `stop_accepting` is cancelled; then drops the socket (closing its queue).
    pub async fn run(self) {
        let mut backoff = BACKOFF_START;
        // Set while this worker is paused by a limit: when the pause began.
        let mut paused: Option<Instant> = None;
        let mut retired = false;
        // Under descriptor exhaustion accept fails again after every back-off: one line a second.
        let accept_log = LogEvery::default();
        loop {
            let route = self.route.load_full();
            let listener = &route.listener;
            let ready = tokio::select! {
                biased;
                () = self.stop_accepting.cancelled() => break,
                () = self.retire.cancelled() => {
                    retired = true;
                    break;
                }
                r = self.socket.readable() => r,
            };
            let mut ready = match ready {
                Ok(r) => r,
                Err(e) => {
                    // Only when the socket cannot be polled at all; nothing to do but retry.
                    listener.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(listener = %listener.config.name, error = %e,
                        "cannot wait for connections; pausing {:?}", backoff);
                    if !self.sleep(backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            let permit = match Permit::try_take(&listener.limit, &self.global_limit) {
                Ok(p) => p,
                Err(full) => {
                    // Readiness stays set: the connection is still there when room comes.
                    drop(ready);
                    if paused.is_none() {
                        paused = Some(Instant::now());
                        self.pause_begins(full);
                    }
                    let gate = match full {
                        Full::Listener => &listener.limit,
                        Full::Global => &self.global_limit,
                    };
                    tokio::select! {
                        biased;
                        () = self.stop_accepting.cancelled() => break,
                        () = self.retire.cancelled() => {
                            retired = true;
                            break;
                        }
                        () = gate.room() => {}
                    }
                    continue;
                }
            };
            if let Some(since) = paused.take() {
                self.pause_ends(since);
            }
            let accepted = match ready.try_io(|s| accept(s.get_ref())) {
                Ok(r) => r,
                // Nothing to accept after all (readiness was stale); the permit goes back.
                Err(_would_block) => continue,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = BACKOFF_START;
                    self.spawn(stream, peer, permit);
                }
                Err(e) if is_client_gone(&e) => {}
                Err(e) => {
                    drop(permit);
                    listener.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if let Some(failures) = accept_log.tick() {
                        let hint = if crate::proxy::is_local_shortage(&e) {
                            "; raise RLIMIT_NOFILE or lower max_connections"
                        } else {
                            ""
                        };
                        tracing::warn!(listener = %listener.config.name, worker = self.index,
                            error = %e, failures,
                            "accept failed ({e}): new connections wait in the kernel's accept \
                             queue, retrying in {backoff:?} ({failures} failures since the last \
                             such line){hint}");
                    }
                    if !self.sleep(backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        if let Some(since) = paused {
            self.pause_ends(since);
        }
        let drained = if retired {
            self.drain_retired().await
        } else {
            self.drain_queue()
        };
        let route = self.route.load();
        tracing::debug!(listener = %route.listener.config.name, worker = self.index, drained,
            "stopped accepting");
    }

    /// Hands an accepted connection to the proxy of the listener's current version.
    fn spawn(&self, stream: TcpStream, peer: SocketAddr, permit: Permit) {
        let route = self.route.load_full();
        if let Some(c) = route.listener.stats.accepted.get(self.index) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let abort = self.abort.clone();
        match route.listener.config.protocol {
            Protocol::Tcp => self.tracker.spawn(async move {
                let _permit = permit;
                tcp::serve(stream, peer, route, abort).await;
            }),
            Protocol::Http | Protocol::Https => self.tracker.spawn(async move {
                let _permit = permit;
                http::serve(stream, peer, route, abort).await;
            }),
            // UDP listeners have no accept loop (see proxy::udp).
            Protocol::Udp => return,
        };
    }

    /// Accepts what is already in the accept queue, without waiting, before the socket closes
    /// (closing a listening socket resets the connections still queued on it). Stops at the
    /// first empty read, or when a limit is full: those connections are reset with the socket,
    /// as at shutdown. Returns how many it took.
    fn drain_queue(&self) -> usize {
        let mut taken = 0;
        // Bounded: a queue holds at most its backlog (at most 65535).
        for _ in 0..=u16::MAX {
            let route = self.route.load();
            let Ok(permit) = Permit::try_take(&route.listener.limit, &self.global_limit) else {
                break;
            };
            match accept(self.socket.get_ref()) {
                Ok((stream, peer)) => {
                    self.spawn(stream, peer, permit);
                    taken += 1;
                }
                Err(e) if is_client_gone(&e) && e.kind() != io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        taken
    }

    /// A retired worker's last duty: new connections no longer reach its socket, so it accepts
    /// until its queue is empty, waiting for room under the limits like a running worker (its
    /// listener goes on, so these clients must be served, not reset). Ends early at shutdown.
    async fn drain_retired(&self) -> usize {
        let mut taken = 0;
        for _ in 0..=u16::MAX {
            let route = self.route.load_full();
            let permit = loop {
                match Permit::try_take(&route.listener.limit, &self.global_limit) {
                    Ok(p) => break p,
                    Err(full) => {
                        let gate = match full {
                            Full::Listener => &route.listener.limit,
                            Full::Global => &self.global_limit,
                        };
                        tokio::select! {
                            biased;
                            () = self.stop_accepting.cancelled() => return taken,
                            () = gate.room() => {}
                        }
                    }
                }
            };
            match accept(self.socket.get_ref()) {
                Ok((stream, peer)) => {
                    self.spawn(stream, peer, permit);
                    taken += 1;
                }
                Err(e) if is_client_gone(&e) && e.kind() != io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        taken
    }

    /// Sleeps `d`; `false` when accepting stopped meanwhile.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            () = self.stop_accepting.cancelled() => false,
            () = tokio::time::sleep(d) => true,
        }
    }

    /// Counts a pause and logs it (at most one line a second per listener).
    fn pause_begins(&self, full: Full) {
        let route = self.route.load();
        let listener = &route.listener;
        let stats = &listener.stats;
        stats.paused_now.fetch_add(1, Ordering::Relaxed);
        let Some(pauses) = stats.refused(Reason::Limit) else {
            return;
        };
        let (which, gate) = match full {
            Full::Listener => ("listener max_connections", &listener.limit),
            Full::Global => ("global max_connections", &self.global_limit),
        };
        tracing::warn!(
            listener = %listener.config.name,
            reason = Reason::Limit.as_str(),
            limit = which,
            max = gate.limit().max,
            open = gate.open(),
            resume_at = gate.limit().low_water(),
            pauses,
            "{which} reached: accepting paused, new connections wait in the kernel's accept \
             queue (pauses since the last line: {pauses})"
        );
    }

    /// Adds a finished pause to the listener's paused time.
    fn pause_ends(&self, since: Instant) {
        let route = self.route.load();
        let stats = &route.listener.stats;
        stats.paused_now.fetch_sub(1, Ordering::Relaxed);
        let micros = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.paused_micros.fetch_add(micros, Ordering::Relaxed);
    }
}
