//! Listeners: the sockets clients connect to, their accept workers and their counters.
//!
//! A listener is a virtual service (`ipvsadm -A -t ADDR`). It is bound as N sockets that share the
//! address through SO_REUSEPORT, one per accept worker, so the kernel spreads incoming connections
//! over N accept queues instead of one (see [`socket`]). Each worker runs its own accept loop
//! ([`accept`]) and hands each connection to the proxy. Counters are per worker where that shows
//! how well the kernel spreads the load.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::ListenerConfig;

pub mod accept;
pub mod http_stats;
pub mod limit;
pub mod refusals;
pub mod socket;

pub use limit::{Gate, Permit};
pub use refusals::{Reason, Refusals};

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
    /// Clients refused because every usable server was full and so was the upstream's queue.
    pub queue_full: AtomicU64,
    /// Clients refused after waiting `queue_timeout` in the upstream's queue.
    pub queue_timeouts: AtomicU64,
    /// Clients refused because ballast ran short of descriptors, memory or source ports when
    /// connecting to a server (the refusal reason `resources`).
    pub resources: AtomicU64,
    /// HTTP client connections closed because the client took no response bytes for
    /// `send_timeout`.
    pub send_timeouts: AtomicU64,
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
    /// Times a worker stopped accepting because the listener's or the global
    /// `max_connections` was reached while a connection was waiting (one per pause, however
    /// long). The refusal reason `limit`.
    pub paused: AtomicU64,
    /// Total time workers spent paused so, in microseconds (summed over workers).
    pub paused_micros: AtomicU64,
    /// Workers paused right now.
    pub paused_now: AtomicU64,
    /// Rate limits of the refusal log lines.
    pub refusals: Refusals,
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
            paused: AtomicU64::new(0),
            paused_micros: AtomicU64::new(0),
            paused_now: AtomicU64::new(0),
            refusals: Refusals::default(),
            queue_full: AtomicU64::new(0),
            queue_timeouts: AtomicU64::new(0),
            resources: AtomicU64::new(0),
            send_timeouts: AtomicU64::new(0),
            http: http_stats::HttpStats::default(),
        }
    }

    /// Counts one refusal for `reason`; `Some(n)` when the caller may log it now (rate-limited:
    /// the first at once, then at most one line a second per listener and reason), `n` being the
    /// refusals since the previous line.
    pub fn refused(&self, reason: Reason) -> Option<u64> {
        let counter = match reason {
            Reason::NoServer => &self.no_server,
            Reason::Limit => &self.paused,
            Reason::QueueFull => &self.queue_full,
            Reason::QueueTimeout => &self.queue_timeouts,
            Reason::Resources => &self.resources,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.refusals.may_log(reason)
    }

    /// Refusals so far for `reason`.
    pub fn refusal_count(&self, reason: Reason) -> u64 {
        match reason {
            Reason::NoServer => self.no_server.load(Ordering::Relaxed),
            Reason::Limit => self.paused.load(Ordering::Relaxed),
            Reason::QueueFull => self.queue_full.load(Ordering::Relaxed),
            Reason::QueueTimeout => self.queue_timeouts.load(Ordering::Relaxed),
            Reason::Resources => self.resources.load(Ordering::Relaxed),
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
    /// Counters, shared by the versions of a listener a reload swaps in (see
    /// [`crate::runtime::reload`]), so they go on counting across a settings change.
    pub stats: Arc<ListenerStats>,
    /// The inode of each worker's listening socket, indexed by worker (0 when unreadable), so
    /// the kernel's sock_diag view of each accept queue can be matched to its worker
    /// ([`crate::backlog::workers`]).
    pub worker_inodes: Box<[u64]>,
    /// This listener's `max_connections` gate (counts its open connections even when unlimited);
    /// shared across reloads, which change its limit in place.
    pub limit: Arc<Gate>,
    /// The UDP counters of a `protocol = "udp"` listener; `None` for the others.
    pub udp: Option<std::sync::Arc<crate::proxy::udp::UdpStats>>,
}
