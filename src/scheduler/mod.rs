//! Schedulers: which server of an upstream gets the next connection.
//!
//! This module owns the choice of one server index for one new connection, and nothing else. It
//! does not know addresses, health, connection limits or retries: the caller (the proxy) hands in
//! a `load` closure that says, for server `i`, whether it may be picked *now* and how many active
//! connections it has. Whatever makes a server unpickable (down, drained, at `max_conns`, already
//! tried for this connection) is the caller's business, and every scheduler simply falls back to
//! another eligible server. Persistence with an idle timeout (`ipvsadm -p`), backup servers and
//! connection limits live elsewhere (the upstream and persistence modules), built on `pick`.
//!
//! # Flow
//!
//! ```text
//! upstream snapshot build (reload, weight change)      per connection (hot path)
//! ──────────────────────────────────────────────      ────────────────────────────────────────
//! [SchedServer{weight, id}] ─ Scheduler::new ─▶ tables ─▶ pick(ctx, load) ─▶ Some(i) ─ connect
//!                                                         ▲                     │ failed
//!                                                         └─ load(i) = None ◀───┘ (retry)
//! ```
//!
//! Everything that costs time (the `wrr` cycle, the `sh`/`dh` bucket tables, the Maglev lookup
//! table, cumulative weights) is computed once in [`Scheduler::new`], when the upstream snapshot is
//! built. [`Scheduler::pick`] only reads those tables, bumps an atomic cursor where the algorithm
//! rotates, and calls `load`: no lock and no allocation. A [`Scheduler`] is immutable apart from its
//! atomics, so it is `Send + Sync` and lives in the `Arc` snapshot the data path loads lock-free.
//!
//! # The schedulers (LVS names and semantics, see `ipvsadm(8)`)
//!
//! In all of them a server of weight 0 is never picked (LVS: quiesced), and a server for which
//! `load` returns `None` is skipped. Each one tries its own first choice, then a bounded walk, then
//! at worst one scan over all servers of weight > 0, so `pick` returns `None` exactly when no
//! server of weight > 0 is eligible, and always terminates. A caller that retries (marking each
//! tried server ineligible) thus visits every pickable server once and then gets `None`.
//!
//! | kind | contract |
//! |---|---|
//! | `rr` | Rotates over the servers of weight > 0; an ineligible one is skipped and the rotation continues after the server picked, so the eligible ones keep equal shares. |
//! | `wrr` | Over one cycle (Σw/gcd picks) each server gets exactly its weight share, interleaved by nginx's *smooth weighted round robin* (5,1,1 → `a a b a c a a`, not `a a a a a b c`). Cycles longer than 65536 picks are scaled down (see `wrr.rs`). |
//! | `lc` | Fewest active connections; ties go to the first one after a rotating start that then moves past the server picked, so equal servers take exact turns. Weights only matter as 0 / not 0. |
//! | `wlc` | Fewest active/weight, compared as `a1·w2 < a2·w1` in integers (as LVS does); ties rotate. The LVS (and ballast) default. |
//! | `sh` | Hash of the client address into a bucket table where each server owns buckets in proportion to its weight. Same client, same server, while the server list (order and weights) is unchanged. Ineligible → a per-client walk to other buckets (LVS `sh-fallback`), itself stable. |
//! | `dh` | As `sh`, keyed on the local address the client connected to. |
//! | `mh` | Maglev consistent hashing (Eisenbud et al., NSDI '16, §3.4), table size 65537, keyed on the client address; weights honoured as LVS `mh` does. Servers are placed by `id`, not list position. Removing one of N servers moves about 1/N of the clients (measured at most 1.11/N for N = 5, 10, 20). Fallback as `sh`. |
//! | `random` | Weighted random (cumulative weights and a binary search); ineligible → a few redraws, then one weighted draw among the eligible, so shares stay proportional. |
//! | `p2c` | Power of two choices: two distinct weighted-random eligible servers; the one with the lower active/weight wins. |
//!
//! # Why these are written by hand
//!
//! No crate offers LVS-semantics schedulers that decide over *live* connection counts supplied by
//! the caller, with a per-pick eligibility filter for retries and a lock-free `&self` pick. What
//! exists is either one algorithm over a fixed node list (consistent-hash rings, Maglev tables)
//! with no notion of load or eligibility, or a selection framework that owns health and weight
//! state itself (pingora-load-balancing's `SelectionAlgorithm`, which has no least-connection
//! scheduler). Each algorithm here is small; owning them keeps the semantics exactly those of the
//! `ipvsadm` names an operator types, and keeps the hot path free of locks and allocation.
//!
//! # Why the hash seed is fixed
//!
//! `sh`, `dh` and `mh` promise "same client, same server". That must hold across a reload, a
//! binary upgrade, a restart and a VRRP failover to the peer node, so every process must hash the
//! same key to the same value. `std::collections::hash_map::RandomState` (or any per-process seed)
//! would silently reshuffle every client on every restart. So [`server_id`] and the key hash use
//! xxh3 with fixed seeds (`HASH_SEED` and two Maglev seeds). Hash flooding is not a concern:
//! clients choose their address only within what routing lets them use, and the worst they can do
//! is pick which server they land on, which a hashing scheduler lets them do anyway.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use xxhash_rust::xxh3::xxh3_64_with_seed;

mod hash;
mod lc;
mod maglev;
mod random;
mod rr;
mod wrr;

// === impl SchedulerKind ===

/// The scheduling algorithms, spelled in config with the LVS short names (`rr`, `wlc`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// `rr`: round robin over servers of weight > 0.
    RoundRobin,
    /// `wrr`: smooth weighted round robin.
    WeightedRoundRobin,
    /// `lc`: least active connections.
    LeastConn,
    /// `wlc`: least active connections per unit of weight (the LVS default).
    WeightedLeastConn,
    /// `sh`: hash of the client (source) address.
    SourceHash,
    /// `dh`: hash of the local (destination) address the client connected to.
    DestinationHash,
    /// `mh`: Maglev consistent hashing of the client address.
    Maglev,
    /// `random`: weighted random.
    Random,
    /// `p2c`: power of two (weighted random) choices, the less loaded wins.
    PowerOfTwo,
}

impl SchedulerKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [SchedulerKind; 9] = [
        SchedulerKind::RoundRobin,
        SchedulerKind::WeightedRoundRobin,
        SchedulerKind::LeastConn,
        SchedulerKind::WeightedLeastConn,
        SchedulerKind::SourceHash,
        SchedulerKind::DestinationHash,
        SchedulerKind::Maglev,
        SchedulerKind::Random,
        SchedulerKind::PowerOfTwo,
    ];

    /// The config spelling: `rr wrr lc wlc sh dh mh random p2c`.
    pub fn as_str(self) -> &'static str {
        match self {
            SchedulerKind::RoundRobin => "rr",
            SchedulerKind::WeightedRoundRobin => "wrr",
            SchedulerKind::LeastConn => "lc",
            SchedulerKind::WeightedLeastConn => "wlc",
            SchedulerKind::SourceHash => "sh",
            SchedulerKind::DestinationHash => "dh",
            SchedulerKind::Maglev => "mh",
            SchedulerKind::Random => "random",
            SchedulerKind::PowerOfTwo => "p2c",
        }
    }

    /// The inverse of [`as_str`](Self::as_str): exact, lowercase; anything else is `None`.
    pub fn parse(s: &str) -> Option<SchedulerKind> {
        SchedulerKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl SchedServer, PickContext ===

/// What the scheduler knows of one server when it is built.
#[derive(Debug, Clone, Copy)]
pub struct SchedServer {
    /// Relative weight. 0 means the server is never picked (LVS quiesce); it still occupies its
    /// index so indices stay aligned with the caller's server list.
    pub weight: u32,
    /// Stable identity hash, normally [`server_id`] of the server's address. `mh` places servers
    /// by it, so the same server lands on the same Maglev slots in every process and after reloads.
    pub id: u64,
}

/// Stable 64-bit identity of a server address: xxh3 with the fixed `HASH_SEED` over the IP
/// octets (IPv4-mapped IPv6 addresses taken as IPv4) and the port in network order.
pub fn server_id(addr: &SocketAddr) -> u64 {
    let mut buf = [0u8; 18];
    let port = addr.port().to_be_bytes();
    let len = match addr.ip().to_canonical() {
        IpAddr::V4(ip) => {
            buf[..4].copy_from_slice(&ip.octets());
            buf[4..6].copy_from_slice(&port);
            6
        }
        IpAddr::V6(ip) => {
            buf[..16].copy_from_slice(&ip.octets());
            buf[16..18].copy_from_slice(&port);
            18
        }
    };
    xxh3_64_with_seed(&buf[..len], HASH_SEED)
}

/// Per-connection facts the hashing schedulers key on.
#[derive(Debug, Clone, Copy)]
pub struct PickContext {
    /// The client's (source) address: the key of `sh` and `mh`.
    pub client: IpAddr,
    /// The local (destination) address the client connected to: the key of `dh`.
    pub local: IpAddr,
}

// === impl Scheduler ===

/// One upstream's scheduler: immutable tables built by [`new`](Self::new) plus atomic cursors.
///
/// `Send + Sync`; [`pick`](Self::pick) takes `&self`, never locks and never allocates.
#[derive(Debug)]
pub struct Scheduler {
    /// The algorithm, as configured.
    kind: SchedulerKind,
    /// Number of servers given to `new` (including weight 0 ones): indices are `0..len`.
    len: usize,
    /// The algorithm's state.
    inner: Inner,
}

/// Per-algorithm state (static dispatch: an enum, no `dyn` on the data path).
#[derive(Debug)]
enum Inner {
    RoundRobin(rr::RoundRobin),
    WeightedRoundRobin(wrr::WeightedRoundRobin),
    /// `lc` and `wlc` (the struct knows which).
    LeastConn(lc::LeastConn),
    /// `sh` and `dh`: the same table, keyed on a different address.
    Bucket(hash::BucketTable),
    Maglev(maglev::Maglev),
    Random(random::WeightedRandom),
    PowerOfTwo(random::PowerOfTwo),
}

impl Scheduler {
    /// Builds the scheduler's tables for `servers` (indices of [`pick`](Self::pick) are indices
    /// into this slice). Never fails: an empty list, or all weights 0, gives a scheduler whose
    /// `pick` always returns `None`.
    ///
    /// Cost (n = servers of weight > 0): `mh` fills a 65537-entry table (a few milliseconds,
    /// 256 KiB); `wrr` runs its cycle of at most 65536 entries in O(cycle · n); `sh`/`dh` fill
    /// and shuffle `max(1024, 16·n)` buckets (rounded up to a power of two, 4 bytes each); the
    /// others keep O(n). Build it when the upstream snapshot is built, not per connection.
    pub fn new(kind: SchedulerKind, servers: &[SchedServer]) -> Scheduler {
        let inner = match kind {
            SchedulerKind::RoundRobin => Inner::RoundRobin(rr::RoundRobin::new(servers)),
            SchedulerKind::WeightedRoundRobin => {
                Inner::WeightedRoundRobin(wrr::WeightedRoundRobin::new(servers))
            }
            SchedulerKind::LeastConn => Inner::LeastConn(lc::LeastConn::new(servers, false)),
            SchedulerKind::WeightedLeastConn => Inner::LeastConn(lc::LeastConn::new(servers, true)),
            SchedulerKind::SourceHash | SchedulerKind::DestinationHash => {
                Inner::Bucket(hash::BucketTable::new(servers))
            }
            SchedulerKind::Maglev => Inner::Maglev(maglev::Maglev::new(servers)),
            SchedulerKind::Random => Inner::Random(random::WeightedRandom::new(servers)),
            SchedulerKind::PowerOfTwo => Inner::PowerOfTwo(random::PowerOfTwo::new(servers)),
        };
        Scheduler {
            kind,
            len: servers.len(),
            inner,
        }
    }

    /// The algorithm this scheduler runs.
    pub fn kind(&self) -> SchedulerKind {
        self.kind
    }

    /// Number of servers given to [`new`](Self::new), weight 0 ones included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether [`new`](Self::new) was given no server at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Picks one server index (into the slice given to `new`). `load(i)` returns `None` when
    /// server i may not be picked now (already tried for this connection, at max connections, down)
    /// and `Some(active)` with its current active-connection count otherwise.
    /// Returns `None` when no server with weight > 0 is eligible.
    ///
    /// `load` is called only with indices of servers of weight > 0, possibly more than once for
    /// the same index; it should be cheap (atomic loads). Usually it is called once (twice for
    /// `p2c`, n times for `lc`/`wlc`), and never more than `64 + 4·n` times (n = servers of
    /// weight > 0; the worst case is `p2c` with almost every server ineligible). `ctx` matters
    /// only to `sh`, `dh` and `mh`.
    pub fn pick<F: Fn(usize) -> Option<u64>>(&self, ctx: &PickContext, load: F) -> Option<usize> {
        let picked = match &self.inner {
            Inner::RoundRobin(s) => s.pick(&load),
            Inner::WeightedRoundRobin(s) => s.pick(&load),
            Inner::LeastConn(s) => s.pick(&load),
            Inner::Bucket(s) => {
                let key = if self.kind == SchedulerKind::DestinationHash {
                    ctx.local
                } else {
                    ctx.client
                };
                s.pick(key, &load)
            }
            Inner::Maglev(s) => s.pick(ctx.client, &load),
            Inner::Random(s) => s.pick(&load),
            Inner::PowerOfTwo(s) => s.pick(&load),
        };
        debug_assert!(picked.is_none_or(|i| i < self.len));
        picked
    }
}

// === shared helpers ===

/// Seed of every ballast hash that must agree across processes and nodes: [`server_id`] and the
/// `sh`/`dh`/`mh` key hash. Changing it moves every hashed client to a new server: don't. (The
/// value is the ASCII text "ballast!".)
const HASH_SEED: u64 = 0x6261_6c6c_6173_7421;

/// Hash of a client or local address for the hashing schedulers: xxh3 with [`HASH_SEED`] over
/// the octets. IPv4-mapped IPv6 addresses (what a dual-stack listener reports for IPv4 clients)
/// hash as the IPv4 address, so one client maps the same whichever socket it came in on.
fn hash_ip(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => xxh3_64_with_seed(&v4.octets(), HASH_SEED),
        IpAddr::V6(v6) => xxh3_64_with_seed(&v6.octets(), HASH_SEED),
    }
}

/// `a_active / a_weight < b_active / b_weight`, without division (LVS `wlc`:
/// `a1 * w2 < a2 * w1`). u64 × u32 needs 96 bits, so the products are u128 and cannot overflow.
fn less_loaded(a_active: u64, a_weight: u32, b_active: u64, b_weight: u32) -> bool {
    u128::from(a_active) * u128::from(b_weight) < u128::from(b_active) * u128::from(a_weight)
}

/// Greatest common divisor (0 with anything is the other).
fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `start + step`, wrapping: cursors are free-running counters reduced modulo a table length.
/// When a counter wraps at `usize::MAX` the rotation jumps once; harmless.
fn at(start: usize, step: usize, len: usize) -> usize {
    start.wrapping_add(step) % len
}

/// The servers of weight > 0, in index order: what every scheduler picks among, and the list the
/// last-resort scan walks.
#[derive(Debug)]
struct Members {
    /// Server index (into the slice given to `Scheduler::new`) of each member.
    index: Box<[u32]>,
    /// Weight of each member, > 0.
    weight: Box<[u32]>,
}

/// One eligible member found by [`Members::scan`].
#[derive(Debug, Clone, Copy)]
struct Found {
    /// How many members were skipped before this one.
    steps: usize,
    /// Position in [`Members`].
    member: usize,
    /// Its active connections, as `load` reported them.
    active: u64,
}

impl Members {
    /// Keeps the servers of weight > 0. Indices are stored as u32 (tables stay half the size);
    /// servers past index `u32::MAX` are never picked, which no real upstream reaches.
    fn new(servers: &[SchedServer]) -> Members {
        let (index, weight): (Vec<u32>, Vec<u32>) = servers
            .iter()
            .enumerate()
            .filter(|(_, s)| s.weight > 0)
            .filter_map(|(i, s)| Some((u32::try_from(i).ok()?, s.weight)))
            .unzip();
        Members {
            index: index.into_boxed_slice(),
            weight: weight.into_boxed_slice(),
        }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    /// The server index of member `m`.
    fn server(&self, m: usize) -> usize {
        self.index[m] as usize
    }

    /// First eligible member at or after position `start` (modulo the length), each member
    /// checked once: at most `len` calls to `load`.
    fn scan<F: Fn(usize) -> Option<u64>>(&self, start: usize, load: &F) -> Option<Found> {
        let n = self.len();
        (0..n).find_map(|steps| {
            let member = at(start, steps, n);
            load(self.server(member)).map(|active| Found {
                steps,
                member,
                active,
            })
        })
    }
}

/// A free-running pick counter for the rotating schedulers.
///
/// Concurrency note: `next` and `skip` are two separate atomic adds. Picks racing on other
/// threads may interleave between them, so under contention the rotation is approximately, not
/// exactly, fair when servers are being skipped. That is accepted: a lock would cost more than the
/// imbalance, and with no skipped server each pick still gets its own slot.
#[derive(Debug, Default)]
struct Cursor(AtomicUsize);

impl Cursor {
    /// The next start position (free-running; reduce it modulo a table length).
    fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed)
    }

    /// After a pick that had to skip `steps` ineligible entries, moves the rotation past the entry
    /// picked (LVS `rr` resumes after the server it chose), so skipped servers' turns are shared by
    /// the others instead of all going to the next one in line.
    fn skip(&self, steps: usize) {
        if steps > 0 {
            self.0.fetch_add(steps, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod testutil;

#[cfg(test)]
mod tests;
