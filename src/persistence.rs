//! Persistence: a client keeps going to the server it was first sent to (Keepalived
//! `persistence_timeout`, LVS persistent services `ipvsadm -p`).
//!
//! This module owns the table that maps a client — its address masked to
//! `persistence_granularity`, so a whole subnet can count as one client (`ipvsadm -M`) — to the
//! index of a server in its upstream, and the rules for how long an entry lives:
//!
//! * An entry is created when a client without one is scheduled, and counts the client's
//!   connections (TCP) or requests (HTTP) that are open on it.
//! * While any is open the entry lives; once the last one ends, it expires `persistence_timeout`
//!   later unless the client comes back (LVS's persistence template, whose timer restarts with
//!   each connection and runs only once the client is idle).
//! * The caller drops an entry whose server can no longer take the client (down, draining,
//!   disabled, full, or refusing connects) and schedules the client afresh; the new choice
//!   becomes the entry. Connections still open on the old server keep counting on it, so the
//!   entry cannot expire while the client has any connection open.
//! * The table holds at most `persistence_max_entries`. When it is full, expired entries are
//!   swept (at most once a second); a client that still finds no room is scheduled without an
//!   entry, and counted (`full`).
//!
//! The table is sharded: each shard a `HashMap` behind a std mutex held for one lookup or update,
//! never across an `.await`, so connections of different clients rarely meet on a lock.
//! Written here rather than taken from a cache crate because the expiry rule (idle time counted
//! only once the last connection ends) is LVS's, not an LRU's or a TTL cache's.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::PersistenceConfig;

/// Number of shards; a power of two.
const SHARDS: usize = 64;

/// Counters of one persistence table.
#[derive(Debug, Default)]
pub struct PersistenceStats {
    /// Entries in the table now (including expired ones not swept yet).
    pub entries: AtomicU64,
    /// Clients sent to the server their entry named.
    pub hits: AtomicU64,
    /// Clients without a (live) entry, scheduled afresh.
    pub misses: AtomicU64,
    /// Entries dropped because their server could not take the client any more.
    pub rescheduled: AtomicU64,
    /// Entries removed after `persistence_timeout` of idleness.
    pub expired: AtomicU64,
    /// Clients scheduled without an entry because the table was full.
    pub full: AtomicU64,
}

/// One client's entry.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Index of the server in the upstream's snapshot; `None` once [`Persistence::forget`] let
    /// go of it while connections still held the entry (the next hold names the new server).
    server: Option<usize>,
    /// Connections (or requests) of this client open on the entry now.
    open: u32,
    /// When the last one ended (or the entry was made).
    idle_since: Instant,
}

impl Entry {
    fn expired(&self, now: Instant, timeout: Duration) -> bool {
        self.open == 0 && now.saturating_duration_since(self.idle_since) >= timeout
    }
}

/// A persistence table of one upstream.
#[derive(Debug)]
pub struct Persistence {
    timeout: Duration,
    v4_prefix: u8,
    v6_prefix: u8,
    max_entries: u64,
    shards: Box<[Mutex<HashMap<IpAddr, Entry>>]>,
    /// Last sweep, as milliseconds since `epoch`; limits sweeps to one a second.
    last_sweep_ms: AtomicU64,
    epoch: Instant,
    /// What the table did.
    pub stats: PersistenceStats,
}

/// The client's hold on its entry: one open connection or request. Dropping it starts the
/// entry's idle clock when it was the last one.
#[derive(Debug)]
pub struct Hold {
    table: Arc<Persistence>,
    key: IpAddr,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.table.release(self.key);
    }
}

impl Persistence {
    /// An empty table with the upstream's settings.
    pub fn new(config: &PersistenceConfig) -> Persistence {
        Persistence {
            timeout: config.timeout,
            v4_prefix: config.granularity_v4.min(32),
            v6_prefix: config.granularity_v6.min(128),
            max_entries: config.max_entries,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            last_sweep_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            stats: PersistenceStats::default(),
        }
    }

    /// The table key of a client: its address masked to the configured granularity (IPv4-mapped
    /// IPv6 addresses count as IPv4).
    pub fn key(&self, client: IpAddr) -> IpAddr {
        match client {
            IpAddr::V4(a) => IpAddr::V4(mask_v4(a, self.v4_prefix)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(mask_v4(v4, self.v4_prefix)),
                None => IpAddr::V6(mask_v6(a, self.v6_prefix)),
            },
        }
    }

    fn shard(&self, key: &IpAddr) -> Option<std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>>> {
        let h = match key {
            IpAddr::V4(a) => u64::from(a.to_bits()),
            IpAddr::V6(a) => {
                let b = a.to_bits();
                (b as u64) ^ ((b >> 64) as u64)
            }
        };
        // Fibonacci hashing spreads neighbouring addresses over the shards.
        let i = (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % SHARDS;
        self.shards.get(i)?.lock().ok()
    }

    /// The server the client's live entry names, if any. The caller then either takes it with
    /// [`Persistence::hold`] or, when that server cannot take the client, [`Persistence::forget`]s it.
    pub fn lookup(&self, key: IpAddr) -> Option<usize> {
        let now = Instant::now();
        let mut shard = self.shard(&key)?;
        match shard.get(&key) {
            Some(e) if e.expired(now, self.timeout) => {
                shard.remove(&key);
                self.stats.entries.fetch_sub(1, Ordering::Relaxed);
                self.stats.expired.fetch_add(1, Ordering::Relaxed);
                None
            }
            Some(e) => e.server,
            None => None,
        }
    }

    /// Records that the client now uses `server` (creating or replacing its entry) and returns
    /// its hold; `None` when the table is full, so the client goes unrecorded.
    pub fn hold(self: &Arc<Self>, key: IpAddr, server: usize, hit: bool) -> Option<Hold> {
        let counter = if hit {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let exists = self.shard(&key)?.contains_key(&key);
        if !exists && self.stats.entries.load(Ordering::Relaxed) >= self.max_entries {
            self.sweep(now);
            if self.stats.entries.load(Ordering::Relaxed) >= self.max_entries {
                self.stats.full.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        let mut shard = self.shard(&key)?;
        match shard.get_mut(&key) {
            Some(e) if e.server == Some(server) => e.open = e.open.saturating_add(1),
            Some(e) => {
                // Re-pointed: connections still open on the old server keep running, and their
                // holds now count on this entry.
                e.server = Some(server);
                e.open = e.open.saturating_add(1);
            }
            None => {
                shard.insert(
                    key,
                    Entry {
                        server: Some(server),
                        open: 1,
                        idle_since: now,
                    },
                );
                self.stats.entries.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(Hold {
            table: Arc::clone(self),
            key,
        })
    }

    /// Drops the client's entry: its server can no longer take it. While connections of the
    /// client are still open (on the old server), the entry stays with their count and names no
    /// server, so it cannot expire under them; the next [`Persistence::hold`] names the new one.
    pub fn forget(&self, key: IpAddr) {
        let Some(mut shard) = self.shard(&key) else {
            return;
        };
        let Some(e) = shard.get_mut(&key) else {
            return;
        };
        self.stats.rescheduled.fetch_add(1, Ordering::Relaxed);
        if e.open > 0 {
            e.server = None;
        } else {
            shard.remove(&key);
            self.stats.entries.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn release(&self, key: IpAddr) {
        let Some(mut shard) = self.shard(&key) else {
            return;
        };
        if let Some(e) = shard.get_mut(&key) {
            e.open = e.open.saturating_sub(1);
            if e.open == 0 {
                e.idle_since = Instant::now();
            }
        }
    }

    /// Removes expired entries from every shard, unless a sweep ran less than a second ago.
    fn sweep(&self, now: Instant) {
        let ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if last != 0 && ms.saturating_sub(last) < 1000 {
            return;
        }
        self.last_sweep_ms.store(ms.max(1), Ordering::Relaxed);
        for shard in self.shards.iter() {
            let Ok(mut shard) = shard.lock() else {
                continue;
            };
            let before = shard.len();
            shard.retain(|_, e| !e.expired(now, self.timeout));
            let removed = (before - shard.len()) as u64;
            self.stats.entries.fetch_sub(removed, Ordering::Relaxed);
            self.stats.expired.fetch_add(removed, Ordering::Relaxed);
        }
    }

    /// Points every entry at `f(server)`, or drops it when `f` says `None` (its server was
    /// removed from the upstream). Takes each shard's lock once; for admin changes only.
    pub fn remap(&self, f: impl Fn(usize) -> Option<usize>) {
        for shard in self.shards.iter() {
            let Ok(mut shard) = shard.lock() else {
                continue;
            };
            let before = shard.len();
            shard.retain(|_, e| match e.server.map(&f) {
                Some(Some(to)) => {
                    e.server = Some(to);
                    true
                }
                Some(None) => false,
                // Names no server yet: nothing to remap.
                None => true,
            });
            let removed = (before - shard.len()) as u64;
            self.stats.entries.fetch_sub(removed, Ordering::Relaxed);
        }
    }

    /// Entries per server index (indices at or past `servers` are not counted). Takes each
    /// shard's lock once; for the admin API, not the data path.
    pub fn entries_per_server(&self, servers: usize) -> Vec<u64> {
        let mut out = vec![0u64; servers];
        for shard in self.shards.iter() {
            let Ok(shard) = shard.lock() else {
                continue;
            };
            for e in shard.values() {
                if let Some(n) = e.server.and_then(|s| out.get_mut(s)) {
                    *n += 1;
                }
            }
        }
        out
    }

    /// How long an entry outlives its client's last connection.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Entries in the table now.
    pub fn len(&self) -> u64 {
        self.stats.entries.load(Ordering::Relaxed)
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn mask_v4(a: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from_bits(a.to_bits() & mask)
}

fn mask_v6(a: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    Ipv6Addr::from_bits(a.to_bits() & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(timeout_ms: u64, v4: u8, max: u64) -> Arc<Persistence> {
        Arc::new(Persistence::new(&PersistenceConfig {
            timeout: Duration::from_millis(timeout_ms),
            granularity_v4: v4,
            granularity_v6: 64,
            max_entries: max,
        }))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn keys_are_masked_to_the_granularity() {
        let t = table(1000, 24, 10);
        assert_eq!(t.key(ip("192.0.2.77")), ip("192.0.2.0"));
        assert_eq!(t.key(ip("::ffff:192.0.2.77")), ip("192.0.2.0"));
        assert_eq!(t.key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        let exact = table(1000, 32, 10);
        assert_eq!(exact.key(ip("192.0.2.77")), ip("192.0.2.77"));
        let all = table(1000, 0, 10);
        assert_eq!(all.key(ip("192.0.2.77")), ip("0.0.0.0"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_lives_while_held_and_expires_after_idle_timeout() {
        let t = table(1000, 32, 10);
        let k = t.key(ip("192.0.2.1"));
        assert_eq!(t.lookup(k), None);
        let hold = t.hold(k, 2, false).expect("room");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(t.lookup(k), Some(2), "held: the timeout does not run");
        drop(hold);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(t.lookup(k), Some(2), "idle for less than the timeout");
        let again = t.hold(k, 2, true).expect("room");
        drop(again);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(
            t.lookup(k),
            Some(2),
            "the clock restarted with the last use"
        );
        tokio::time::advance(Duration::from_millis(2)).await;
        assert_eq!(t.lookup(k), None, "expired");
        assert_eq!(t.stats.expired.load(Ordering::Relaxed), 1);
        assert_eq!(t.stats.hits.load(Ordering::Relaxed), 1);
        assert_eq!(t.stats.misses.load(Ordering::Relaxed), 1);
        assert!(t.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_sweeps_and_then_refuses() {
        let t = table(1000, 32, 2);
        let a = t.hold(ip("10.0.0.1"), 0, false).expect("room");
        let _b = t.hold(ip("10.0.0.2"), 1, false).expect("room");
        assert!(t.hold(ip("10.0.0.3"), 0, false).is_none(), "full");
        assert_eq!(t.stats.full.load(Ordering::Relaxed), 1);
        drop(a);
        tokio::time::advance(Duration::from_secs(2)).await;
        let _c = t
            .hold(ip("10.0.0.3"), 0, false)
            .expect("the idle entry was swept");
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(ip("10.0.0.1")), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rescheduled_entry_lives_while_the_old_server_still_has_a_connection() {
        let t = table(1000, 32, 10);
        let k = ip("10.0.0.1");
        let old = t.hold(k, 0, false).expect("room");
        // Server 0 is drained: the client's next connection goes to server 1.
        t.forget(k);
        let new = t.hold(k, 1, false).expect("room");
        // The connection on server 0 ends; the one on server 1 is still open.
        drop(old);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            t.lookup(k),
            Some(1),
            "held by the open connection: no expiry"
        );
        drop(new);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(t.lookup(k), Some(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(t.lookup(k), None, "expired a timeout after the last close");
        assert!(t.is_empty());
    }

    #[test]
    fn a_forgotten_entry_is_rescheduled() {
        let t = table(1000, 32, 10);
        let k = ip("10.0.0.1");
        let _h = t.hold(k, 0, false).expect("room");
        t.forget(k);
        assert_eq!(t.lookup(k), None);
        assert_eq!(t.stats.rescheduled.load(Ordering::Relaxed), 1);
        let _h2 = t.hold(k, 1, false).expect("room");
        assert_eq!(t.lookup(k), Some(1));
    }
}
