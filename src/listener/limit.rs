//! Connection limits that stop *accepting*, not connections: [`Gate`] and [`Permit`].
//!
//! Each listener has a gate (`max_connections` of the listener, possibly unlimited) and all
//! listeners share one more (`[global] max_connections`). An accept worker takes a slot from
//! both gates *before* it calls accept(2); a slot is a [`Permit`] that travels with the connection
//! and gives the slot back when the connection ends, however it ends. When a gate is full the
//! worker stops accepting and waits for room: new connections wait in the kernel's accept queue,
//! fully established, where a client costs ballast nothing, instead of being accepted and then
//! closed (HAProxy's `maxconn`, mini-redis's semaphore before `accept`).
//!
//! Accepting resumes at the low-water mark ([`ConnectionLimit::low_water`]): with `resume_at =
//! 100` (the default) as soon as one connection ends; with less, once the open connections have
//! fallen to that share of the limit, so that a full listener does not wake its workers for every
//! single connection that ends.
//!
//! Every worker waiting on a gate is woken when it reaches the mark, and they race for the free
//! slots; the losers pause again. With `resume_at = 100` and many workers that is a small herd per
//! connection that ends, which is why a lower `resume_at` exists.
//!
//! The hot path is lock-free: taking a slot is one compare-and-swap on each gate, giving it back
//! one atomic subtraction. Only a worker that found a gate full registers with its [`Notify`], and
//! a connection's end touches the `Notify` (which has a mutex) only when a worker is waiting and
//! the count has reached the mark.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::SeqCst};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::ConnectionLimit;

/// One connection limit: how many connections are open under it, and where waiting workers wait.
#[derive(Debug)]
pub struct Gate {
    /// The configured `max` (0 = unlimited); an atomic so that a reload can change it on the
    /// gate the open connections already count against.
    max: AtomicU64,
    /// The configured `resume_at`.
    resume_at: AtomicU8,
    /// Slots taken: connections open (plus, for an instant, one being accepted per worker).
    open: AtomicU64,
    /// Workers waiting for room right now.
    waiting: AtomicU64,
    /// Woken when `open` falls to the low-water mark while a worker waits.
    room: Notify,
}

impl Gate {
    /// A gate for `limit`; `max` 0 makes it count connections without ever closing.
    pub fn new(limit: ConnectionLimit) -> Gate {
        Gate {
            max: AtomicU64::new(limit.max),
            resume_at: AtomicU8::new(limit.resume_at),
            open: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            room: Notify::new(),
        }
    }

    /// The limit, `None` when unlimited.
    pub fn max(&self) -> Option<u64> {
        let max = self.max.load(SeqCst);
        (max > 0).then_some(max)
    }

    /// The configured limit and resume mark.
    pub fn limit(&self) -> ConnectionLimit {
        ConnectionLimit {
            max: self.max.load(SeqCst),
            resume_at: self.resume_at.load(SeqCst),
        }
    }

    /// Changes the limit (a reload), keeping the count of open connections: a lower limit
    /// pauses accepting until enough of them ended, a higher one wakes the paused workers.
    pub fn set_limit(&self, limit: ConnectionLimit) {
        self.resume_at.store(limit.resume_at, SeqCst);
        self.max.store(limit.max, SeqCst);
        self.room.notify_waiters();
    }

    /// Connections open under this gate now.
    pub fn open(&self) -> u64 {
        self.open.load(SeqCst)
    }

    /// Takes a slot when one is free.
    pub fn try_take(&self) -> bool {
        let max = self.max.load(SeqCst);
        if max == 0 {
            self.open.fetch_add(1, SeqCst);
            return true;
        }
        self.open
            .fetch_update(SeqCst, SeqCst, |n| (n < max).then_some(n + 1))
            .is_ok()
    }

    /// Gives a slot back, waking the waiting workers when the count reached the low-water mark.
    pub fn give_back(&self) {
        let before = self.open.fetch_sub(1, SeqCst);
        debug_assert!(before > 0, "a gate gave back more slots than it handed out");
        // SeqCst on both sides (here: `open` then `waiting`; in `room`: `waiting` then `open`)
        // means either this sees the waiter, or the waiter sees the new count; never neither.
        if before.saturating_sub(1) <= self.limit().low_water() && self.waiting.load(SeqCst) > 0 {
            self.room.notify_waiters();
        }
    }

    /// Waits until the open connections are at or below the low-water mark. Returns at once
    /// when they already are (or the gate is unlimited).
    pub async fn room(&self) {
        loop {
            // Created before the count is read, so a `notify_waiters` in between is not lost.
            let notified = self.room.notified();
            self.waiting.fetch_add(1, SeqCst);
            let _waiting = Waiting(&self.waiting);
            let limit = self.limit();
            if limit.max == 0 || self.open.load(SeqCst) <= limit.low_water() {
                return;
            }
            notified.await;
        }
    }
}

/// Decrements the waiting count however the wait ends (room, or the wait was dropped at shutdown).
struct Waiting<'a>(&'a AtomicU64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

/// Which gate was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The listener's own `max_connections`.
    Listener,
    /// `[global] max_connections`.
    Global,
}

/// A slot in the listener's gate and in the global gate, held by one connection for its life.
#[derive(Debug)]
pub struct Permit {
    listener: Arc<Gate>,
    global: Arc<Gate>,
}

impl Permit {
    /// Takes a slot from both gates, or from neither: `Err` names the one that was full.
    ///
    /// # Errors
    /// [`Full`] when the listener's or the global limit is reached.
    pub fn try_take(listener: &Arc<Gate>, global: &Arc<Gate>) -> Result<Permit, Full> {
        if !listener.try_take() {
            return Err(Full::Listener);
        }
        if !global.try_take() {
            listener.give_back();
            return Err(Full::Global);
        }
        Ok(Permit {
            listener: Arc::clone(listener),
            global: Arc::clone(global),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.global.give_back();
        self.listener.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn gate(max: u64, resume_at: u8) -> Arc<Gate> {
        Arc::new(Gate::new(ConnectionLimit { max, resume_at }))
    }

    #[test]
    fn the_low_water_mark_is_below_the_limit() {
        let l = |max, resume_at| ConnectionLimit { max, resume_at }.low_water();
        assert_eq!(l(3, 100), 2);
        assert_eq!(l(1, 100), 0);
        assert_eq!(l(100, 90), 90);
        assert_eq!(l(10, 1), 0);
        assert_eq!(l(1000, 50), 500);
    }

    #[test]
    fn permits_take_from_both_gates_or_neither() {
        let l = gate(2, 100);
        let g = gate(3, 100);
        let a = Permit::try_take(&l, &g).expect("room");
        let b = Permit::try_take(&l, &g).expect("room");
        assert_eq!(Permit::try_take(&l, &g).err(), Some(Full::Listener));
        let other = gate(0, 100);
        let c = Permit::try_take(&other, &g).expect("global has one left");
        assert_eq!(Permit::try_take(&other, &g).err(), Some(Full::Global));
        assert_eq!((l.open(), g.open(), other.open()), (2, 3, 1));
        drop((a, b, c));
        assert_eq!((l.open(), g.open(), other.open()), (0, 0, 0));
    }

    #[tokio::test]
    async fn a_raised_limit_wakes_a_waiting_worker_and_a_lowered_one_holds_it() {
        let g = gate(1, 100);
        let held = Permit::try_take(&gate(0, 100), &g).expect("room");
        assert!(!g.try_take(), "full at 1");
        let waiter = {
            let g = Arc::clone(&g);
            tokio::spawn(async move { g.room().await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        g.set_limit(ConnectionLimit {
            max: 3,
            resume_at: 100,
        });
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the new limit")
            .expect("no panic");
        assert_eq!(g.open(), 1, "the open connection still counts");
        g.set_limit(ConnectionLimit {
            max: 1,
            resume_at: 100,
        });
        assert!(
            !g.try_take(),
            "a lower limit applies to the next connection"
        );
        drop(held);
        assert!(g.try_take());
    }

    #[tokio::test]
    async fn a_waiting_worker_wakes_at_the_low_water_mark_not_before() {
        let g = gate(4, 50);
        let permits: Vec<Permit> = (0..4)
            .map(|_| Permit::try_take(&gate(0, 100), &g).expect("room"))
            .collect();
        let waiter = {
            let g = Arc::clone(&g);
            tokio::spawn(async move { g.room().await })
        };
        let mut permits = permits.into_iter();
        drop(permits.next());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "3 open is above the mark of 2");
        drop(permits.next());
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken at 2 open")
            .expect("no panic");
        assert_eq!(g.waiting.load(SeqCst), 0);
    }
}
