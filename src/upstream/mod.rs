//! Upstream groups and their servers: who can take a connection, and the counters of what each did.
//!
//! An [`Upstream`] owns its servers ([`Server`], each with atomic [`ServerStats`]) and an
//! [`UpstreamSnapshot`] published through an `ArcSwap`: the server list plus the schedulers built
//! over it (one over the primaries, one over the backups). The data path does one lock-free
//! `load()` per connection and picks by index; whatever changes servers or weights later (health
//! checks, the admin API) builds a new snapshot and stores it in one step, so a connection never sees
//! half an update. Server counters live in `Arc<Server>`s that new snapshots reuse, so they survive.
//!
//! Selection is [`Upstream::select`]: the client's persistence entry first (when configured, see
//! [`crate::persistence`]), then the scheduler proposes, the upstream checks the server's
//! state ([`Server::is_usable`]), `max_connections` and what this connection already tried;
//! backups are asked only when no primary can take it, and the `sorry_server` only when no primary
//! or backup server is usable at all.
//!
//! # Server states
//! Each [`Server`] carries a [`ServerState`]: atomics the data path reads without a lock (one load
//! per candidate) and the health checker ([`crate::health`]) writes. A server takes new
//! connections only while it is up (checks and passive checks agree) and its operator state is
//! `active`. Weight changes (slow start, `inhibit_on_failure`) go through
//! [`Upstream::rebuild`], which builds a new snapshot over the same `Arc<Server>`s, so counters
//! and states survive it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{ServerConfig, UpstreamConfig};
use crate::persistence::{Hold, Persistence};
use crate::proxy::http::pool::ServerPool;
use crate::scheduler::{server_id, PickContext, SchedServer, Scheduler};

mod edit;
mod queue;
mod state;
mod tried;

pub use edit::EditError;
pub use queue::{Queue, Refusal};
pub use state::{LastCheck, ServerState, StateFlags, FULL_WEIGHT};
pub use tried::Tried;

/// Counters of one server. All are monotonic except `active`.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections to this server open right now (proxied, or being connected).
    pub active: AtomicU64,
    /// Connections established to this server since start.
    pub connections: AtomicU64,
    /// HTTP requests sent to this server.
    pub requests: AtomicU64,
    /// Connect attempts that failed (refused, unreachable, timed out).
    pub connect_errors: AtomicU64,
    /// Connections that ended with an error after being established (reset, I/O error).
    pub errors: AtomicU64,
    /// Bytes relayed from clients to this server.
    pub bytes_to_server: AtomicU64,
    /// Bytes relayed from this server to clients.
    pub bytes_from_server: AtomicU64,
    /// Limits the "connect to server failed" warning to one line a second per server (with the
    /// count since the last one): a dead server under load would otherwise log every request.
    pub connect_log: crate::listener::refusals::LogEvery,
    /// The same for "server failed the request" / a relay the server broke.
    pub error_log: crate::listener::refusals::LogEvery,
}

/// One member of an upstream group (or its sorry server).
#[derive(Debug)]
pub struct Server {
    /// The configured address, weight, limit and backup flag.
    pub config: ServerConfig,
    /// What this server has done.
    pub stats: ServerStats,
    /// Up or down, draining, disabled, the weight in use, passive-check counters.
    pub state: ServerState,
    /// Whether this is the upstream's `sorry_server` (outside both schedulers).
    pub sorry: bool,
    /// The upstream's queue, woken when a slot on this server frees up (`None` when the
    /// upstream has no server with `max_connections`).
    queue: Option<Arc<Queue>>,
    /// Kept-alive HTTP connections to this server, shared by every HTTP listener (empty, and
    /// never allocated into, for TCP). Held here rather than in a table by index, so it follows
    /// the server across snapshots; retired with [`Server::retire`] when the server leaves.
    pub pool: Arc<ServerPool>,
}

impl Server {
    /// A server as configured, up, with its configured operator state.
    pub fn new(config: ServerConfig, upstream: &UpstreamConfig, sorry: bool) -> Server {
        let state = ServerState::new(&config, &upstream.health);
        Server {
            config,
            stats: ServerStats::default(),
            state,
            sorry,
            queue: None,
            pool: Arc::default(),
        }
    }

    /// The server has left its upstream (removed at runtime or by a reload): its kept-alive
    /// HTTP connections close now, and those its requests in flight give back later close
    /// instead of being kept. Its established connections themselves go on to their end.
    pub fn retire(&self) {
        self.pool.retire();
    }

    /// Whether the server may take a NEW connection from the scheduler: up (active checks and
    /// passive checks agree) and neither draining nor disabled. One relaxed atomic load.
    #[inline]
    pub fn is_usable(&self) -> bool {
        self.state.flags().is_empty()
    }

    /// Whether the server may take a new connection for a client already bound to it (the HTTP
    /// `sticky_cookie`, persistence): as [`Server::is_usable`], and also while it is draining or,
    /// with `inhibit_on_failure`, down-but-kept at weight 0 (what IPVS does for a quiesced real
    /// server's persistence templates). Never while disabled.
    #[inline]
    pub fn accepts_bound(&self) -> bool {
        let f = self.state.flags();
        !f.contains(StateFlags::DISABLED) && (!f.contains(StateFlags::DOWN) || self.state.inhibit)
    }

    /// The server's address.
    pub fn address(&self) -> SocketAddr {
        self.config.address
    }

    /// Active connections now.
    pub fn active(&self) -> u64 {
        self.stats.active.load(Ordering::Relaxed)
    }

    /// Whether `max_connections` allows one more connection right now (racy by nature; the
    /// authoritative check is the increment in [`Upstream::select`]).
    fn has_room(&self) -> bool {
        let max = u64::from(self.config.max_connections);
        max == 0 || self.active() < max
    }
}

/// Counters of an upstream as a whole.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    /// Client connections closed because no server could take them (all down, full or failing).
    pub no_server: AtomicU64,
}

/// The part of an upstream the data path reads: servers and the schedulers over them.
#[derive(Debug)]
pub struct UpstreamSnapshot {
    /// All servers, in configuration order, then the sorry server if there is one.
    pub servers: Box<[Arc<Server>]>,
    /// The weight each server has in the schedulers (indexed like `servers`): the configured
    /// weight, less during slow start, 0 while inhibited. 0 for the sorry server.
    pub weights: Box<[u32]>,
    /// The index of the sorry server in `servers`.
    sorry: Option<usize>,
    /// Scheduler over the primary servers.
    primary: Tier,
    /// Scheduler over the backup servers (used only when no primary can take a connection).
    backup: Tier,
}

/// One scheduler and the server indices it schedules over.
#[derive(Debug)]
struct Tier {
    scheduler: Scheduler,
    /// `members[i]` is the index in `servers` of the scheduler's server `i`.
    members: Box<[usize]>,
}

impl Tier {
    fn new(
        config: &UpstreamConfig,
        servers: &[Arc<Server>],
        weights: &[u32],
        backup: bool,
    ) -> Tier {
        let members: Box<[usize]> = servers
            .iter()
            .enumerate()
            .filter(|(_, s)| s.config.backup == backup && !s.sorry)
            .map(|(i, _)| i)
            .collect();
        let sched: Vec<SchedServer> = members
            .iter()
            .map(|&i| SchedServer {
                weight: weights[i],
                id: server_id(&servers[i].config.address),
            })
            .collect();
        Tier {
            scheduler: Scheduler::new(config.scheduler, &sched),
            members,
        }
    }
}

/// A group of servers behind one scheduler.
#[derive(Debug)]
pub struct Upstream {
    /// The configuration this upstream was built from.
    pub config: UpstreamConfig,
    /// Upstream-wide counters.
    pub stats: UpstreamStats,
    /// Which server each client was sent to, when `persistence_timeout` is set.
    pub persistence: Option<Arc<Persistence>>,
    /// Clients waiting for a server slot, when a server has `max_connections`.
    pub queue: Option<Arc<Queue>>,
    snapshot: ArcSwap<UpstreamSnapshot>,
    /// Serialises [`Upstream::rebuild`], so two concurrent weight changes cannot store their
    /// snapshots in the wrong order and lose one. Never taken on the data path.
    rebuilding: std::sync::Mutex<()>,
    /// Set when a reload replaced or removed this upstream: its health checkers end (the
    /// servers it shares with its successor are checked by the successor's).
    retired: std::sync::atomic::AtomicBool,
}

/// A reservation of one connection slot on a server; releases it when dropped. With persistence,
/// it also holds the client's entry, whose idle clock starts when the last hold is dropped.
#[derive(Debug)]
pub struct ServerGuard {
    server: Arc<Server>,
    index: usize,
    hold: Option<Hold>,
}

impl ServerGuard {
    /// The reserved server.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// The server's index in the snapshot's `servers`.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        // Acquire pairs with the Release of a waiter's failed `reserve`: if that waiter found
        // the server full before this slot was freed, its place in the queue (taken before it
        // looked) is visible to `slot_freed` below, so the wake-up cannot be lost. On x86 both
        // are the same locked instruction as Relaxed.
        self.server.stats.active.fetch_sub(1, Ordering::AcqRel);
        if let Some(queue) = &self.server.queue {
            queue.slot_freed();
        }
    }
}

impl Upstream {
    /// Builds an upstream and its first snapshot from its configuration.
    pub fn new(config: UpstreamConfig) -> Upstream {
        // A queue only where a server has a limit to wait for.
        let queue = config
            .servers
            .iter()
            .any(|s| s.max_connections > 0)
            .then(|| Arc::new(Queue::new(config.max_queue, config.queue_timeout)));
        let mut servers: Vec<Arc<Server>> = config
            .servers
            .iter()
            .map(|s| {
                let mut server = Server::new(s.clone(), &config, false);
                server.queue = queue.clone();
                Arc::new(server)
            })
            .collect();
        if let Some(address) = config.health.sorry_server {
            let sorry = ServerConfig {
                address,
                weight: 0,
                max_connections: 0,
                backup: false,
                check: false,
                check_port: None,
                state: crate::config::AdminState::Active,
            };
            servers.push(Arc::new(Server::new(sorry, &config, true)));
        }
        let snapshot = build_snapshot(&config, servers.into());
        Upstream {
            persistence: config
                .persistence
                .as_ref()
                .map(|p| Arc::new(Persistence::new(p))),
            queue,
            config,
            stats: UpstreamStats::default(),
            snapshot: ArcSwap::from_pointee(snapshot),
            rebuilding: std::sync::Mutex::new(()),
            retired: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Builds a new snapshot over the same servers with the weights their states ask for now
    /// (slow start, `inhibit_on_failure`), and publishes it in one store. Connections already
    /// holding the old snapshot finish their selection on it. Costs what building the schedulers
    /// costs (a Maglev table is the largest: 65537 entries), so it runs on weight changes only.
    pub fn rebuild(&self) {
        // A poisoned lock only means another rebuild panicked; the snapshot itself is intact.
        let _serial = self
            .rebuilding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let servers = self.snapshot.load().servers.clone();
        let next = build_snapshot(&self.config, servers);
        self.snapshot.store(Arc::new(next));
        // A weight may have grown from 0: clients waiting in the queue look again.
        self.wake_queue();
    }

    /// Wakes the first client waiting in the queue (if any) to look for a slot again: a server
    /// became usable or got weight, so there may be room that no freed slot announces.
    pub fn wake_queue(&self) {
        if let Some(queue) = &self.queue {
            queue.slot_freed();
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<UpstreamSnapshot> {
        self.snapshot.load_full()
    }

    /// Picks a server for a connection and reserves a slot on it, or `None` when no server that
    /// this connection has not tried yet can take it. Backup servers are considered only when no
    /// primary can.
    ///
    /// With persistence, a client whose entry names a server that can take it goes there; an
    /// entry whose server cannot (or was already tried by this connection, so its connect
    /// failed) is dropped, and the scheduler's choice becomes the client's new entry (unless it
    /// is the sorry server). A server can take it when it is usable ([`Server::is_usable`]: up and
    /// neither draining nor disabled) and [`Upstream::select_server`] finds room on it.
    pub fn select(
        &self,
        snapshot: &UpstreamSnapshot,
        ctx: &PickContext,
        tried: &Tried,
    ) -> Option<ServerGuard> {
        let Some(table) = &self.persistence else {
            return self.schedule(snapshot, ctx, tried);
        };
        let key = table.key(ctx.client);
        if let Some(index) = table.lookup(key) {
            // Unlike a cookie, persistence gives way to draining (LVS: weight 0 quiesces it).
            let usable = snapshot.servers.get(index).is_some_and(|s| s.is_usable());
            let guard = usable
                .then(|| self.select_server(snapshot, index, tried))
                .flatten();
            if let Some(mut guard) = guard {
                guard.hold = table.hold(key, index, true);
                return Some(guard);
            }
            table.forget(key);
        }
        let mut guard = self.schedule(snapshot, ctx, tried)?;
        // The sorry server stands in while nothing is up; clients are not bound to it.
        if !guard.server.sorry {
            guard.hold = table.hold(key, guard.index, false);
        }
        Some(guard)
    }

    /// As [`Upstream::select`] on the current snapshot, but when every usable server is full,
    /// waits in the upstream's queue for a slot (see [`queue`](self::queue)) instead of giving up.
    ///
    /// # Errors
    /// Why the client gets no server: none usable, the queue full, or the wait too long.
    pub async fn select_queued(
        &self,
        ctx: &PickContext,
        tried: &Tried,
    ) -> Result<ServerGuard, Refusal> {
        let snapshot = self.snapshot();
        let Some(queue) = &self.queue else {
            return self.select(&snapshot, ctx, tried).ok_or(Refusal::NoServer);
        };
        if queue.is_empty() {
            if let Some(guard) = self.select(&snapshot, ctx, tried) {
                return Ok(guard);
            }
        }
        if !busy(&snapshot, tried) {
            return self.select(&snapshot, ctx, tried).ok_or(Refusal::NoServer);
        }
        let Some((place, behind)) = queue.join() else {
            return Err(Refusal::QueueFull);
        };
        let deadline = tokio::time::Instant::now() + queue.timeout;
        let mut look = !behind;
        loop {
            if look {
                // A wake-up sent after this is kept for the wait below, so none is missed.
                place.looking();
                let snapshot = self.snapshot();
                if let Some(guard) = self.select(&snapshot, ctx, tried) {
                    place.served();
                    return Ok(guard);
                }
                if !busy(&snapshot, tried) {
                    return Err(Refusal::NoServer);
                }
            }
            look = true;
            if tokio::time::timeout_at(deadline, place.woken())
                .await
                .is_err()
            {
                queue.timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::QueueTimeout);
            }
        }
    }

    /// The scheduler's choice (primaries, then backups), with its slot reserved.
    fn schedule(
        &self,
        snapshot: &UpstreamSnapshot,
        ctx: &PickContext,
        tried: &Tried,
    ) -> Option<ServerGuard> {
        // Servers found full between the scheduler's look and our increment; skipped for this call.
        let mut full = Tried::new();
        for tier in [&snapshot.primary, &snapshot.backup] {
            // Each round either returns or marks one more member full, so it ends.
            for _ in 0..=tier.members.len() {
                let pick = tier.scheduler.pick(ctx, |i| {
                    let idx = tier.members[i];
                    let server = &snapshot.servers[idx];
                    if tried.contains(idx)
                        || full.contains(idx)
                        || !server.is_usable()
                        || !server.has_room()
                    {
                        None
                    } else {
                        Some(server.active())
                    }
                });
                let Some(i) = pick else { break };
                let idx = tier.members[i];
                match reserve(snapshot, idx) {
                    Some(guard) => return Some(guard),
                    None => full.insert(idx),
                }
            }
        }
        self.select_sorry(snapshot, tried)
    }

    /// The sorry server, when there is one, this connection has not tried it, and no primary or
    /// backup server is usable (full or already-tried servers do not count: they are up).
    fn select_sorry(&self, snapshot: &UpstreamSnapshot, tried: &Tried) -> Option<ServerGuard> {
        let index = snapshot.sorry?;
        if tried.contains(index) {
            return None;
        }
        let any_usable = snapshot
            .servers
            .iter()
            .any(|s| !s.sorry && s.is_usable() && s.state.weight() > 0);
        if any_usable {
            return None;
        }
        reserve(snapshot, index)
    }

    /// Reserves a slot on the server at `index` if it can take a connection now for a client
    /// bound to it ([`Server::accepts_bound`], configured weight above 0, room under
    /// `max_connections`, not yet tried). Used when something other than the scheduler, such as
    /// a stickiness cookie, names the server.
    pub fn select_server(
        &self,
        snapshot: &UpstreamSnapshot,
        index: usize,
        tried: &Tried,
    ) -> Option<ServerGuard> {
        let server = snapshot.servers.get(index)?;
        if tried.contains(index)
            || server.sorry
            || server.state.weight() == 0
            || !server.accepts_bound()
            || !server.has_room()
        {
            return None;
        }
        reserve(snapshot, index)
    }
}

/// Whether a usable server this client may still try is at its `max_connections`, so waiting
/// for a slot makes sense.
fn busy(snapshot: &UpstreamSnapshot, tried: &Tried) -> bool {
    snapshot.servers.iter().enumerate().any(|(i, s)| {
        !s.sorry
            && s.is_usable()
            && s.config.weight > 0
            && s.config.max_connections > 0
            && !tried.contains(i)
            && !s.has_room()
    })
}

/// A snapshot over `servers` with the weights their states ask for now.
fn build_snapshot(config: &UpstreamConfig, servers: Box<[Arc<Server>]>) -> UpstreamSnapshot {
    let weights = state::effective_weights(&servers);
    UpstreamSnapshot {
        primary: Tier::new(config, &servers, &weights, false),
        backup: Tier::new(config, &servers, &weights, true),
        sorry: servers.iter().position(|s| s.sorry),
        weights,
        servers,
    }
}

/// Takes one connection slot on `snapshot.servers[index]`, unless `max_connections` is reached.
fn reserve(snapshot: &UpstreamSnapshot, index: usize) -> Option<ServerGuard> {
    let server = snapshot.servers.get(index)?;
    // Release: see `ServerGuard::drop`.
    let before = server.stats.active.fetch_add(1, Ordering::AcqRel);
    let max = u64::from(server.config.max_connections);
    if max != 0 && before >= max {
        server.stats.active.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    Some(ServerGuard {
        server: Arc::clone(server),
        index,
        hold: None,
    })
}
