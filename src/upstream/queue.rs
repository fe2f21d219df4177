//! The proxy-side queue: what HAProxy does with `maxconn` on its servers and `timeout queue`.
//!
//! When every server that could take a connection (TCP) or request (HTTP) is at its
//! `max_connections`, the client does not get an error at once: it waits in its upstream's queue
//! for a slot, at most `queue_timeout`, and the queue holds at most `max_queue` clients. A freed
//! slot (a [`super::ServerGuard`] dropped) wakes one waiter, which then selects again as if it had
//! just arrived (scheduler, persistence, limits). New arrivals do not jump the queue: while anyone
//! waits, they wait too, behind. Waiters are woken in arrival order; one that is woken but loses
//! the slot (to a retry of a connection already in progress) waits again at the back.
//!
//! Only capacity makes a client wait: when no server is usable at all (down, draining, disabled),
//! waiting would not help, and the client is refused at once as before.
//!
//! Cost when nobody waits: one relaxed atomic load per freed slot.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Why a client got no server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No server is usable (down, draining, disabled, or all tried).
    #[error("no server is available")]
    NoServer,
    /// Every usable server was full and so was the queue.
    #[error("every server is busy and the queue is full")]
    QueueFull,
    /// Every usable server stayed full for `queue_timeout`.
    #[error("every server stayed busy for queue_timeout")]
    QueueTimeout,
}

/// The waiting room of one upstream.
#[derive(Debug)]
pub struct Queue {
    /// Clients waiting now.
    waiting: AtomicUsize,
    wake: Notify,
    /// `max_queue`.
    pub(crate) max: usize,
    /// `queue_timeout`.
    pub(crate) timeout: Duration,
    /// Clients that waited and then got a server.
    pub served: AtomicU64,
    /// Clients refused because the queue was full.
    pub full: AtomicU64,
    /// Clients refused after waiting `queue_timeout`.
    pub timeouts: AtomicU64,
}

impl Queue {
    /// An empty queue.
    pub fn new(max: usize, timeout: Duration) -> Queue {
        Queue {
            waiting: AtomicUsize::new(0),
            wake: Notify::new(),
            max,
            timeout,
            served: AtomicU64::new(0),
            full: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
        }
    }

    /// Clients waiting now.
    pub fn len(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A server slot was freed: wake the first waiter, if any.
    #[inline]
    pub(crate) fn slot_freed(&self) {
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.wake.notify_one();
        }
    }

    /// A registration for the next wake-up, made before looking for a slot so a slot freed in
    /// between is not missed.
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// Takes a place in the queue, unless it is full; also says whether others were already
    /// waiting (then the newcomer waits its turn before looking for a slot).
    pub(crate) fn join(&self) -> Option<(Place<'_>, bool)> {
        let before = self.waiting.fetch_add(1, Ordering::Relaxed);
        if before >= self.max {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            self.full.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some((
            Place {
                queue: self,
                served: false,
            },
            before > 0,
        ))
    }
}

/// A client's place in the queue; leaving it (served or not) frees it.
#[derive(Debug)]
pub(crate) struct Place<'q> {
    queue: &'q Queue,
    served: bool,
}

impl Place<'_> {
    /// The client got its server.
    pub(crate) fn served(mut self) {
        self.served = true;
        self.queue.served.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let left = self.queue.waiting.fetch_sub(1, Ordering::Relaxed) - 1;
        // A waiter that leaves unserved may have swallowed a wake-up meant for a freed slot:
        // pass it on, so the next waiter looks (at worst it finds nothing and waits again).
        if !self.served && left > 0 {
            self.queue.wake.notify_one();
        }
    }
}
