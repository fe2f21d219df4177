//! The accept loop of one worker.
//!
//! Each worker owns one SO_REUSEPORT socket and loops on accept(2) until shutdown, spawning one task
//! per connection on the shared [`TaskTracker`] so shutdown can wait for them. Accept errors follow
//! the usual policy: a client that gave up before it was accepted (ECONNABORTED, ECONNRESET…) is
//! not our error and is skipped; anything else (EMFILE, ENFILE, ENOMEM) is logged and the worker
//! backs off briefly instead of spinning, leaving new connections waiting in the kernel's queue.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Protocol;
use crate::proxy::{http, tcp, Route};

/// How long a worker pauses after a resource error from accept(2), doubled up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Everything one worker needs.
#[derive(Debug)]
pub struct Worker {
    /// Index of this worker within its listener (for per-worker counters).
    pub index: usize,
    /// The worker's own listening socket.
    pub socket: TcpListener,
    /// Where its connections go.
    pub route: Arc<Route>,
    /// Cancelled when the process stops accepting.
    pub stop_accepting: CancellationToken,
    /// Cancelled when established connections must end (grace period over).
    pub abort: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them.
    pub tracker: TaskTracker,
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

impl Worker {
    /// Accepts until `stop_accepting` is cancelled; then drops the socket (closing its queue).
    pub async fn run(self) {
        let listener = &self.route.listener;
        let mut backoff = BACKOFF_START;
        loop {
            let accepted = tokio::select! {
                biased;
                () = self.stop_accepting.cancelled() => break,
                r = self.socket.accept() => r,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = BACKOFF_START;
                    if let Some(c) = listener.stats.accepted.get(self.index) {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    let route = Arc::clone(&self.route);
                    let abort = self.abort.clone();
                    match listener.config.protocol {
                        Protocol::Tcp => self.tracker.spawn(tcp::serve(stream, peer, route, abort)),
                        Protocol::Http | Protocol::Https => {
                            self.tracker.spawn(http::serve(stream, peer, route, abort))
                        }
                        // UDP listeners have no accept loop (see proxy::udp).
                        Protocol::Udp => continue,
                    };
                }
                Err(e) if is_client_gone(&e) => {}
                Err(e) => {
                    listener.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(listener = %listener.config.name, error = %e,
                        "accept failed; pausing {:?}", backoff);
                    tokio::select! {
                        () = self.stop_accepting.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        tracing::debug!(listener = %listener.config.name, worker = self.index, "stopped accepting");
    }
}
