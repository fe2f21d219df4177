//! Listeners: the sockets clients connect to, their accept workers and their counters.
//!
//! A listener is a virtual service (`ipvsadm -A -t ADDR`). It is bound as N sockets that share the
//! address through SO_REUSEPORT, one per accept worker, so the kernel spreads incoming connections
//! over N accept queues instead of one (see [`socket`]). Each worker runs its own accept loop
//! ([`accept`]) and hands each connection to the proxy. Counters are per worker where that shows
//! how well the kernel spreads the load.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::ListenerConfig;

pub mod accept;
pub mod http_stats;
pub mod socket;

pub use socket::{bind, BoundListener, ListenerError};

/// Counters of one listener.
#[derive(Debug)]
pub struct ListenerStats {
    /// Connections accepted by each worker, indexed by worker.
    pub accepted: Box<[AtomicU64]>,
    /// Client connections open right now.
    pub active: AtomicU64,
    /// Client connections closed at once because no server could take them.
    pub no_server: AtomicU64,
    /// Client connections that ended because nothing moved for `idle_timeout`.
    pub idle_timeouts: AtomicU64,
    /// Connections refused because a PROXY header was expected and missing, bad, or came from an
    /// untrusted peer.
    pub proxy_refused: AtomicU64,
    /// TLS handshakes that failed or timed out (https listeners).
    pub tls_failed: AtomicU64,
    /// HTTP requests answered 413 because the body was larger than `max_body_size`.
    pub too_large: AtomicU64,
    /// HTTP requests answered 408 because the body stalled longer than `body_timeout`.
    pub body_timeouts: AtomicU64,
    /// HTTP requests sent again to another server after a server failure (`retry_on`).
    pub retries: AtomicU64,
    /// HTTP requests answered 502 because the server failed.
    pub bad_gateway: AtomicU64,
    /// HTTP requests answered 504 because the server did not answer in time.
    pub gateway_timeout: AtomicU64,
    /// Connection directions that moved to splice(2) because they carried bulk data.
    pub spliced: AtomicU64,
    /// accept(2) errors other than a client giving up before it was accepted.
    pub accept_errors: AtomicU64,
    /// HTTP responses by status class and their latency (HTTP listeners).
    pub http: http_stats::HttpStats,
}

impl ListenerStats {
    /// Zeroed counters for `workers` workers.
    pub fn new(workers: usize) -> ListenerStats {
        ListenerStats {
            accepted: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            active: AtomicU64::new(0),
            no_server: AtomicU64::new(0),
            idle_timeouts: AtomicU64::new(0),
            spliced: AtomicU64::new(0),
            bad_gateway: AtomicU64::new(0),
            proxy_refused: AtomicU64::new(0),
            tls_failed: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            body_timeouts: AtomicU64::new(0),
            gateway_timeout: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            http: http_stats::HttpStats::default(),
        }
    }

    /// Connections accepted by all workers together.
    pub fn accepted_total(&self) -> u64 {
        self.accepted
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }

    /// Connections accepted by each worker.
    pub fn accepted_per_worker(&self) -> Vec<u64> {
        self.accepted
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect()
    }
}

/// A running listener: its configuration, the address it really got, and its counters.
#[derive(Debug)]
pub struct Listener {
    /// The configuration it was built from.
    pub config: ListenerConfig,
    /// The bound address (the configured one, with the port filled in when it was 0).
    pub local_addr: SocketAddr,
    /// Counters.
    pub stats: ListenerStats,
    /// The inode of each worker's listening socket, indexed by worker (0 when unreadable), so
    /// the kernel's sock_diag view of each accept queue can be matched to its worker
    /// ([`crate::backlog::workers`]).
    pub worker_inodes: Box<[u64]>,
}
