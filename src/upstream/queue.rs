//! The proxy-side queue: what HAProxy does with `maxconn` on its servers and `timeout queue`.
//!
//! When every server that could take a connection (TCP) or request (HTTP) is at its
//! `max_connections`, the client does not get an error at once: it waits in its upstream's queue
//! for a slot, at most `queue_timeout`, and the queue holds at most `max_queue` clients. A freed
//! slot (a [`super::ServerGuard`] dropped) wakes the first waiter, which then selects again as if
//! it had just arrived (scheduler, persistence, limits). New arrivals do not jump the queue: while
//! anyone waits, they wait too, behind. A waiter keeps its place until it leaves: one that is
//! woken but finds no slot (the freed one was on a server now draining, or a retry of a
//! connection already in progress took it) stays first in line. A waiter that leaves, served or
//! not, wakes the next one, so when several slots appear at once (a server made active again
//! also wakes the queue) the waiters fill them one after the other.
//!
//! Races we accept: on a multi-threaded runtime two waiters woken for two slots may run in either
//! order, and the second may take the slot the first would have found.
//!
//! Only capacity makes a client wait: when no server is usable at all (down, draining, disabled),
//! waiting would not help, and the client is refused at once as before.
//!
//! Cost when nobody waits: one relaxed atomic load per freed slot. While some wait: a short std
//! mutex (never held across an `.await`) around the waiting list on each wake-up.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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
    /// Clients waiting now (the length of `waiters`, readable without its lock).
    waiting: AtomicUsize,
    /// The waiters in arrival order.
    waiters: Mutex<Waiters>,
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

/// The waiting list: ticket (arrival order) → the waiter's wake-up.
#[derive(Debug, Default)]
struct Waiters {
    next_ticket: u64,
    list: BTreeMap<u64, Waiter>,
}

#[derive(Debug)]
struct Waiter {
    /// Its own wake-up; a wake-up sent while it is not waiting is kept (a `Notify` permit).
    wake: Arc<Notify>,
    /// A wake-up was sent and it has not looked since: the next one goes to someone else.
    woken: bool,
}

impl Waiters {
    /// Wakes the first waiter that is not already woken.
    fn wake_first(&mut self) {
        if let Some(w) = self.list.values_mut().find(|w| !w.woken) {
            w.woken = true;
            w.wake.notify_one();
        }
    }
}

impl Queue {
    /// An empty queue.
    pub fn new(max: usize, timeout: Duration) -> Queue {
        Queue {
            waiting: AtomicUsize::new(0),
            waiters: Mutex::new(Waiters::default()),
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

    /// The list; a poisoned lock only means a panic elsewhere, the list itself is intact.
    fn waiters(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A server slot was freed, or a server became usable: wake the first waiter, if any.
    #[inline]
    pub(crate) fn slot_freed(&self) {
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.waiters().wake_first();
        }
    }

    /// Takes a place at the back of the queue, unless it is full; also says whether others were
    /// already waiting (then the newcomer waits its turn before looking for a slot).
    pub(crate) fn join(&self) -> Option<(Place<'_>, bool)> {
        let before = self.waiting.fetch_add(1, Ordering::Relaxed);
        if before >= self.max {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            self.full.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let wake = Arc::new(Notify::new());
        let mut waiters = self.waiters();
        let ticket = waiters.next_ticket;
        waiters.next_ticket += 1;
        waiters.list.insert(
            ticket,
            Waiter {
                wake: Arc::clone(&wake),
                woken: false,
            },
        );
        Some((
            Place {
                queue: self,
                ticket,
                wake,
                served: false,
            },
            before > 0,
        ))
    }
}

/// A client's place in the queue; leaving it (served or not) frees it and wakes the next waiter.
#[derive(Debug)]
pub(crate) struct Place<'q> {
    queue: &'q Queue,
    ticket: u64,
    wake: Arc<Notify>,
    served: bool,
}

impl Place<'_> {
    /// About to look for a slot: a wake-up sent from now on is a new one.
    pub(crate) fn looking(&self) {
        if let Some(w) = self.queue.waiters().list.get_mut(&self.ticket) {
            w.woken = false;
        }
    }

    /// Waits for a wake-up (one sent since the last [`Place::looking`] returns at once).
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// The client got its server.
    pub(crate) fn served(mut self) {
        self.served = true;
        self.queue.served.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut waiters = self.queue.waiters();
        waiters.list.remove(&self.ticket);
        self.queue.waiting.fetch_sub(1, Ordering::Relaxed);
        // Served: another slot may be free too (several freed at once, a server made active),
        // so the next waiter looks. Not served: it may have swallowed a wake-up meant for a
        // freed slot, so pass it on. Either way at worst the next finds nothing and waits on,
        // still first in line.
        waiters.wake_first();
    }
}
