//! Schedulers: which server of an upstream gets the next connection.
//!
//! INTERFACE CONTRACT (to be replaced by the real module doc):
//!
//! ```ignore
//! pub enum SchedulerKind { RoundRobin, WeightedRoundRobin, LeastConn, WeightedLeastConn,
//!                          SourceHash, DestinationHash, Maglev, Random, PowerOfTwo }
//! impl SchedulerKind {
//!     pub const ALL: [SchedulerKind; 9];
//!     pub fn as_str(self) -> &'static str;             // "rr" "wrr" "lc" "wlc" "sh" "dh" "mh" "random" "p2c"
//!     pub fn parse(s: &str) -> Option<SchedulerKind>;  // inverse of as_str
//! }
//!
//! /// What the scheduler knows of one server when it is built: its weight (0 = never picked) and a
//! /// stable identity hash (from its address) used by the hashing schedulers.
//! pub struct SchedServer { pub weight: u32, pub id: u64 }
//!
//! /// Per-connection facts the hashing schedulers key on.
//! pub struct PickContext { pub client: IpAddr, pub local: IpAddr }
//!
//! pub struct Scheduler { .. }   // Send + Sync; all state interior (atomics), no locks on pick
//! impl Scheduler {
//!     pub fn new(kind: SchedulerKind, servers: &[SchedServer]) -> Scheduler;
//!     pub fn kind(&self) -> SchedulerKind;
//!     /// Picks one server index (into the slice given to `new`). `load(i)` returns `None` when
//!     /// server i may not be picked now (already tried, full, down) and `Some(active)` with its
//!     /// active connection count otherwise. Returns `None` when no server is eligible.
//!     pub fn pick<F: Fn(usize) -> Option<u64>>(&self, ctx: &PickContext, load: F) -> Option<usize>;
//! }
//! ```
