//! The flow table of one UDP worker: client address → flow, with idle expiry and eviction of the
//! least recently used flow when the listener is full.
//!
//! The table is owned by its worker task and never shared, so it needs no lock. What other tasks
//! update (a flow's last activity, set by the task relaying the server's replies) is read through
//! [`Recency`], an atomic in the flow.
//!
//! Eviction is LRU over "last activity in either direction". Finding the oldest of 65,536 flows
//! for every new client would cost a full scan each time, so one scan picks the oldest 1/64th (at
//! least one, at most 1,024) as a victim list, and the next evictions take from it, skipping any
//! victim that saw traffic after it was listed. The cost is one scan per 64 evictions, and a
//! victim is always among the oldest flows at scan time and idle since.

use std::collections::HashMap;
use std::net::SocketAddr;

/// What the table needs to know of a flow: when it last carried a datagram.
pub(crate) trait Recency {
    /// Milliseconds (on the caller's clock) of the flow's last datagram, either direction.
    fn last_ms(&self) -> u64;
}

/// Client address → flow.
#[derive(Debug)]
pub(crate) struct FlowTable<V> {
    map: HashMap<SocketAddr, V>,
    /// Eviction candidates, oldest last, each with its `last_ms` when listed.
    victims: Vec<(SocketAddr, u64)>,
}

impl<V: Recency> FlowTable<V> {
    /// An empty table.
    pub(crate) fn new() -> FlowTable<V> {
        FlowTable {
            map: HashMap::new(),
            victims: Vec::new(),
        }
    }

    /// Flows in the table.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The client's flow.
    pub(crate) fn get(&self, client: &SocketAddr) -> Option<&V> {
        self.map.get(client)
    }

    /// Adds (or replaces) the client's flow; returns the one replaced.
    pub(crate) fn insert(&mut self, client: SocketAddr, flow: V) -> Option<V> {
        self.map.insert(client, flow)
    }

    /// Removes the client's flow.
    pub(crate) fn remove(&mut self, client: &SocketAddr) -> Option<V> {
        self.map.remove(client)
    }

    /// Removes every flow idle for `timeout_ms` or more at `now_ms`; returns how many.
    pub(crate) fn expire(&mut self, now_ms: u64, timeout_ms: u64) -> usize {
        let before = self.map.len();
        self.map
            .retain(|_, f| now_ms.saturating_sub(f.last_ms()) < timeout_ms);
        before - self.map.len()
    }

    /// Removes and returns the least recently used flow (see the module comment); `None` when
    /// the table is empty.
    pub(crate) fn evict_lru(&mut self) -> Option<V> {
        if self.map.is_empty() {
            return None;
        }
        loop {
            let Some((client, listed)) = self.victims.pop() else {
                self.list_victims();
                continue;
            };
            // Gone already, or active since it was listed: not a victim any more.
            if self.map.get(&client).is_some_and(|f| f.last_ms() <= listed) {
                return self.map.remove(&client);
            }
        }
    }

    /// Fills `victims` with the oldest flows, oldest last. Never leaves it empty while the table
    /// has flows, so [`FlowTable::evict_lru`] ends.
    fn list_victims(&mut self) {
        let mut all: Vec<(SocketAddr, u64)> =
            self.map.iter().map(|(k, f)| (*k, f.last_ms())).collect();
        let k = (all.len() / 64).clamp(1, 1024).min(all.len());
        if k < all.len() {
            all.select_nth_unstable_by_key(k - 1, |(_, t)| *t);
            all.truncate(k);
        }
        // Newest first, so pop() yields the oldest.
        all.sort_unstable_by_key(|(_, t)| std::cmp::Reverse(*t));
        self.victims = all;
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::net::SocketAddr;

    use super::{FlowTable, Recency};

    struct F(Cell<u64>);

    impl Recency for F {
        fn last_ms(&self) -> u64 {
            self.0.get()
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn eviction_takes_the_least_recently_used_flow() {
        let mut t = FlowTable::new();
        for (port, at) in [(1, 10), (2, 5), (3, 20), (4, 7)] {
            t.insert(addr(port), F(Cell::new(at)));
        }
        assert_eq!(t.evict_lru().map(|f| f.last_ms()), Some(5));
        // Port 4 (at 7) was listed as a victim; traffic now makes it the newest.
        if let Some(f) = t.get(&addr(4)) {
            f.0.set(30);
        }
        assert_eq!(t.evict_lru().map(|f| f.last_ms()), Some(10));
        assert_eq!(t.evict_lru().map(|f| f.last_ms()), Some(20));
        assert_eq!(t.evict_lru().map(|f| f.last_ms()), Some(30));
        assert!(t.evict_lru().is_none());
    }

    #[test]
    fn a_large_table_evicts_from_its_oldest_sixty_fourth() {
        let mut t = FlowTable::new();
        for port in 0..6400u16 {
            t.insert(addr(port + 1), F(Cell::new(u64::from(port))));
        }
        for expected in 0..200u64 {
            assert_eq!(t.evict_lru().map(|f| f.last_ms()), Some(expected));
        }
        assert_eq!(t.len(), 6200);
    }

    #[test]
    fn idle_flows_expire() {
        let mut t = FlowTable::new();
        t.insert(addr(1), F(Cell::new(100)));
        t.insert(addr(2), F(Cell::new(900)));
        assert_eq!(t.expire(1000, 500), 1);
        assert!(t.get(&addr(1)).is_none() && t.get(&addr(2)).is_some());
        assert_eq!(t.expire(1000, 500), 0);
    }
}
