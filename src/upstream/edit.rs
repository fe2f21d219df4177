//! Runtime changes to an upstream's server list and weights (the admin API's `ipvsadm -a/-e/-d`).
//!
//! Every change builds a new snapshot and publishes it in one store, under the same lock as
//! [`Upstream::rebuild`], so concurrent changes (a health checker's slow-start step and an
//! operator's weight change) cannot lose one another. Servers that stay keep their `Arc<Server>`,
//! so their counters, states, open connections and kept-alive HTTP connections are untouched. A
//! server that leaves is retired ([`Server::retire`]) once the snapshot without it is published:
//! its idle kept-alive connections close, its requests in flight finish.
//!
//! # Indices
//! The snapshot's server indices are what persistence entries store. Adding a server appends it
//! after the configured ones (before the sorry server, which persistence never names), so no
//! entry moves. Removing one shifts the servers after it down by one: the persistence table is
//! remapped in the same step (entries of the removed server are dropped, later ones shift).
//!
//! # Races we accept
//! A connection that loaded the old snapshot just before a removal may still record a
//! persistence entry with an old index after the remap; that client is then sent to the server
//! now at that index once, or rescheduled if it cannot take it. Its connection itself is
//! unaffected. Likewise a connection or HTTP request retrying on another server while one is
//! removed marks what it tried by index, so it may skip one server or try its failed one again.
//! A request that picked a server just before its removal still goes to it (on a new connection
//! if the server's pool was already retired).

use std::net::SocketAddr;
use std::sync::Arc;

use super::{build_snapshot, Server, Upstream};
use crate::config::ServerConfig;

/// Why a change to an upstream's servers was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// No server with that address in the upstream.
    #[error("upstream \"{upstream}\" has no server {address}")]
    NoSuchServer {
        /// The upstream's name.
        upstream: String,
        /// The address asked for.
        address: SocketAddr,
    },
    /// The server to add is already a member.
    #[error("upstream \"{upstream}\" already has server {address}")]
    Exists {
        /// The upstream's name.
        upstream: String,
        /// The address asked for.
        address: SocketAddr,
    },
    /// The last primary server cannot be removed (an upstream has at least one).
    #[error("server {address} is the last server of upstream \"{upstream}\"; an upstream keeps at least one")]
    LastServer {
        /// The upstream's name.
        upstream: String,
        /// The address asked for.
        address: SocketAddr,
    },
    /// The sorry server is configuration, not a member.
    #[error("{address} is the sorry server of upstream \"{upstream}\"; change sorry_server in the configuration")]
    Sorry {
        /// The upstream's name.
        upstream: String,
        /// The address asked for.
        address: SocketAddr,
    },
}

impl Upstream {
    /// The index in the current snapshot of the member (not the sorry server) at `address`.
    pub fn server_index(&self, address: SocketAddr) -> Option<usize> {
        self.snapshot()
            .servers
            .iter()
            .position(|s| !s.sorry && s.address() == address)
    }

    /// Sets the weight of the server at `address` (`ipvsadm -e -w`) and publishes a snapshot
    /// with it. Returns the weight it had.
    ///
    /// # Errors
    /// [`EditError::NoSuchServer`].
    pub fn set_weight(&self, address: SocketAddr, weight: u32) -> Result<u32, EditError> {
        let _serial = self.lock_rebuild();
        let snapshot = self.snapshot.load_full();
        let server = snapshot
            .servers
            .iter()
            .find(|s| !s.sorry && s.address() == address)
            .ok_or_else(|| self.no_such(address))?;
        let old = server.state.weight();
        server.state.set_weight(weight);
        let next = build_snapshot(&self.config, snapshot.servers.clone());
        self.snapshot.store(Arc::new(next));
        Ok(old)
    }

    /// Adds a server (`ipvsadm -a`) after the existing members and publishes the new snapshot.
    /// The server starts up, with the operator state of `config`. Returns it, so the caller can
    /// start its health checks.
    ///
    /// # Errors
    /// [`EditError::Exists`] when a member (or the sorry server) already has that address.
    pub fn add_server(&self, config: ServerConfig) -> Result<Arc<Server>, EditError> {
        let _serial = self.lock_rebuild();
        let snapshot = self.snapshot.load_full();
        if snapshot
            .servers
            .iter()
            .any(|s| s.address() == config.address)
        {
            return Err(EditError::Exists {
                upstream: self.name().to_owned(),
                address: config.address,
            });
        }
        let server = Arc::new(Server::new(config, &self.config, false));
        let mut servers: Vec<Arc<Server>> = snapshot.servers.to_vec();
        let at = servers
            .iter()
            .position(|s| s.sorry)
            .unwrap_or(servers.len());
        servers.insert(at, Arc::clone(&server));
        let next = build_snapshot(&self.config, servers.into());
        self.snapshot.store(Arc::new(next));
        Ok(server)
    }

    /// Removes the server at `address` (`ipvsadm -d`) and publishes the new snapshot. Its
    /// established connections go on to their end (they hold the server); it gets no new ones,
    /// and its health checker stops at its next wake-up. Returns the removed server.
    ///
    /// # Errors
    /// [`EditError::NoSuchServer`], [`EditError::Sorry`], or [`EditError::LastServer`] when it
    /// is the only primary server left.
    pub fn remove_server(&self, address: SocketAddr) -> Result<Arc<Server>, EditError> {
        let _serial = self.lock_rebuild();
        let snapshot = self.snapshot.load_full();
        let Some(index) = snapshot.servers.iter().position(|s| s.address() == address) else {
            return Err(self.no_such(address));
        };
        let server = Arc::clone(&snapshot.servers[index]);
        if server.sorry {
            return Err(EditError::Sorry {
                upstream: self.name().to_owned(),
                address,
            });
        }
        let primaries = snapshot
            .servers
            .iter()
            .filter(|s| !s.sorry && !s.config.backup)
            .count();
        if !server.config.backup && primaries <= 1 {
            return Err(EditError::LastServer {
                upstream: self.name().to_owned(),
                address,
            });
        }
        let mut servers: Vec<Arc<Server>> = snapshot.servers.to_vec();
        servers.remove(index);
        let next = build_snapshot(&self.config, servers.into());
        if let Some(table) = &self.persistence {
            table.remap(|i| match i {
                i if i == index => None,
                i if i > index => Some(i - 1),
                i => Some(i),
            });
        }
        self.snapshot.store(Arc::new(next));
        server.retire();
        Ok(server)
    }

    /// Makes the members match `wanted` (a reload), in one snapshot store: a server whose
    /// address and settings are unchanged keeps its `Arc<Server>` (counters, states and open
    /// connections); a changed weight or operator state in the configuration is applied to it
    /// (runtime changes the configuration did not touch are kept, compared against `previous`,
    /// the configuration it replaces); others are created, or dropped and retired. Persistence
    /// entries follow their server's address. Returns the servers created, so the caller can
    /// start their checks.
    pub fn sync_servers(
        &self,
        previous: &[ServerConfig],
        wanted: &[ServerConfig],
    ) -> Vec<Arc<Server>> {
        let _serial = self.lock_rebuild();
        let snapshot = self.snapshot.load_full();
        let mut created = Vec::new();
        let mut servers: Vec<Arc<Server>> = Vec::with_capacity(wanted.len() + 1);
        for w in wanted {
            let kept = snapshot.servers.iter().find(|s| {
                !s.sorry && s.address() == w.address && same_but_weight_state(&s.config, w)
            });
            match kept {
                Some(s) => {
                    let before = previous.iter().find(|p| p.address == w.address);
                    apply_configured(s, before, w);
                    servers.push(Arc::clone(s));
                }
                None => {
                    let s = Arc::new(Server::new(w.clone(), &self.config, false));
                    created.push(Arc::clone(&s));
                    servers.push(s);
                }
            }
        }
        servers.extend(snapshot.servers.iter().filter(|s| s.sorry).cloned());
        if let Some(table) = &self.persistence {
            let old: Vec<SocketAddr> = snapshot.servers.iter().map(|s| s.address()).collect();
            let new: Vec<(SocketAddr, bool)> =
                servers.iter().map(|s| (s.address(), s.sorry)).collect();
            table.remap(|i| {
                let addr = old.get(i)?;
                new.iter().position(|(a, sorry)| a == addr && !sorry)
            });
        }
        let next = build_snapshot(&self.config, servers.into());
        self.snapshot.store(Arc::new(next));
        for gone in snapshot.servers.iter().filter(|s| !self.contains(s)) {
            gone.retire();
        }
        created
    }

    /// Whether `server` is still a member of the current snapshot (never, once the upstream is
    /// retired).
    pub fn contains(&self, server: &Arc<Server>) -> bool {
        !self.retired.load(std::sync::atomic::Ordering::Relaxed)
            && self
                .snapshot
                .load()
                .servers
                .iter()
                .any(|s| Arc::ptr_eq(s, server))
    }

    /// Marks the upstream replaced or removed by a reload and wakes its health checkers, which
    /// then end. Connections that hold it go on to their end.
    pub fn retire(&self) {
        self.retired
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for s in self.snapshot.load().servers.iter() {
            s.state.wake.notify_waiters();
        }
    }

    /// The upstream that replaces `old` when a reload changed its settings (scheduler,
    /// persistence, queue, health checks, timeouts…), built from `config`; nothing of `old`
    /// changes until [`Upstream::take_over`]. A server whose address and settings are unchanged
    /// is carried over with its `Arc<Server>` (counters, health and operator state, open
    /// connections, `max_connections` accounting), as [`Upstream::sync_servers`] does, when
    /// what a server holds of its upstream did not change: `inhibit_on_failure` and `passive`
    /// (copied into its state) and the queue it wakes (`max_queue`, `queue_timeout`, whether
    /// there is one). Otherwise every server starts afresh, and the old ones serve their open
    /// connections to the end. The persistence table is carried over when `persistence` did
    /// not change.
    pub fn replacing(old: &Upstream, config: crate::config::UpstreamConfig) -> Upstream {
        let wants_queue = config.servers.iter().any(|s| s.max_connections > 0);
        let same_queue = old.queue.is_some() == wants_queue
            && old.config.max_queue == config.max_queue
            && old.config.queue_timeout == config.queue_timeout;
        let carry = same_queue
            && old.config.health.inhibit_on_failure == config.health.inhibit_on_failure
            && old.config.health.passive == config.health.passive;
        let mut fresh = Upstream::new(config);
        if old.config.persistence == fresh.config.persistence {
            fresh.persistence.clone_from(&old.persistence);
        }
        if !carry {
            return fresh;
        }
        let snapshot = old.snapshot.load_full();
        fresh.queue.clone_from(&old.queue);
        let servers: Vec<Arc<Server>> = fresh
            .snapshot
            .load()
            .servers
            .iter()
            .map(|new| {
                let kept = snapshot.servers.iter().find(|s| {
                    s.sorry == new.sorry
                        && s.address() == new.address()
                        && same_but_weight_state(&s.config, &new.config)
                });
                if let Some(s) = kept {
                    return Arc::clone(s);
                }
                let mut s = Server::new(new.config.clone(), &fresh.config, new.sorry);
                if !new.sorry {
                    s.queue.clone_from(&fresh.queue);
                }
                Arc::new(s)
            })
            .collect();
        let next = build_snapshot(&fresh.config, servers.into());
        fresh.snapshot.store(Arc::new(next));
        fresh
    }

    /// Completes a [`Upstream::replacing`] when the reload applies it: the carried-over servers
    /// take on the weight and operator state the new configuration gives them (where it changed
    /// them) and are up again if no active check watches them any more, the persistence entries
    /// follow their servers' addresses, and `old` retires (its health checkers end).
    pub fn take_over(&self, old: &Upstream) {
        let before = old.snapshot.load_full();
        let serial = self.lock_rebuild();
        let snapshot = self.snapshot.load_full();
        for s in snapshot.servers.iter().filter(|s| !s.sorry) {
            let wanted = self
                .config
                .servers
                .iter()
                .find(|w| w.address == s.address());
            if let (true, Some(wanted)) = (before.servers.iter().any(|b| Arc::ptr_eq(b, s)), wanted)
            {
                let previous = old.config.servers.iter().find(|p| p.address == s.address());
                apply_configured(s, previous, wanted);
                // Down only while a check can bring it back: without active checks now (or a
                // passive ejection whose end the old checker was timing), it is up again.
                if self.config.health.check.is_none() || !wanted.check {
                    s.state.set(super::StateFlags::DOWN, false);
                    s.state.set(super::StateFlags::EJECTED, false);
                }
            }
        }
        if let (Some(table), Some(old_table)) = (&self.persistence, &old.persistence) {
            if Arc::ptr_eq(table, old_table) {
                let old_addrs: Vec<SocketAddr> =
                    before.servers.iter().map(|s| s.address()).collect();
                table.remap(|i| {
                    let addr = old_addrs.get(i)?;
                    snapshot
                        .servers
                        .iter()
                        .position(|s| s.address() == *addr && !s.sorry)
                });
            }
        }
        let next = build_snapshot(&self.config, snapshot.servers.clone());
        self.snapshot.store(Arc::new(next));
        drop(serial);
        // Servers not carried over close their idle kept-alive connections.
        for s in before
            .servers
            .iter()
            .filter(|b| !snapshot.servers.iter().any(|s| Arc::ptr_eq(s, b)))
        {
            s.retire();
        }
        old.retire();
    }

    pub(crate) fn lock_rebuild(&self) -> std::sync::MutexGuard<'_, ()> {
        // A poisoned lock only means another rebuild panicked; the snapshot itself is intact.
        self.rebuilding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn no_such(&self, address: SocketAddr) -> EditError {
        EditError::NoSuchServer {
            upstream: self.name().to_owned(),
            address,
        }
    }
}

/// Gives a kept server the weight and operator state of its new configuration `wanted`, where
/// the configuration changed them since `before` (runtime changes the file did not touch stay).
fn apply_configured(s: &Server, before: Option<&ServerConfig>, wanted: &ServerConfig) {
    if before.is_none_or(|p| p.weight != wanted.weight) {
        s.state.set_weight(wanted.weight);
    }
    if before.is_none_or(|p| p.state != wanted.state) && s.state.admin() != wanted.state {
        s.state.set(
            super::StateFlags::DRAINING,
            wanted.state == crate::config::AdminState::Draining,
        );
        s.state.set(
            super::StateFlags::DISABLED,
            wanted.state == crate::config::AdminState::Disabled,
        );
    }
}

/// Whether two server settings differ at most in weight and operator state (which a running
/// server can take on without being replaced).
fn same_but_weight_state(a: &ServerConfig, b: &ServerConfig) -> bool {
    a.address == b.address
        && a.max_connections == b.max_connections
        && a.backup == b.backup
        && a.check == b.check
        && a.check_port == b.check_port
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AdminState, Config};

    fn upstream(extra: &str) -> Upstream {
        let text = format!(
            "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\n\n[[upstream]]\nname = \"u\"\nscheduler = \"wrr\"\n{extra}\n[[upstream.server]]\naddress = \"127.0.0.1:1\"\n[[upstream.server]]\naddress = \"127.0.0.1:2\"\nweight = 2\n"
        );
        let cfg = Config::from_str(&text, "t").expect("valid");
        Upstream::new(cfg.upstreams[0].clone())
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn server(port: u16) -> ServerConfig {
        ServerConfig {
            address: addr(port),
            weight: 3,
            max_connections: 0,
            backup: false,
            check: true,
            check_port: None,
            state: AdminState::Active,
        }
    }

    #[test]
    fn a_weight_change_is_in_the_next_snapshot_and_keeps_the_server() {
        let u = upstream("");
        let before = Arc::clone(&u.snapshot().servers[1]);
        assert_eq!(u.set_weight(addr(2), 7), Ok(2));
        let s = u.snapshot();
        assert_eq!(&*s.weights, &[1, 7]);
        assert!(Arc::ptr_eq(&before, &s.servers[1]));
        assert!(u.set_weight(addr(9), 1).is_err());
    }

    #[test]
    fn added_servers_come_before_the_sorry_server_and_duplicates_are_refused() {
        let u = upstream("sorry_server = \"127.0.0.1:99\"\n");
        u.add_server(server(3)).expect("added");
        let s = u.snapshot();
        let ports: Vec<u16> = s.servers.iter().map(|s| s.address().port()).collect();
        assert_eq!(ports, [1, 2, 3, 99]);
        assert!(s.servers[3].sorry);
        assert!(matches!(
            u.add_server(server(2)),
            Err(EditError::Exists { .. })
        ));
        assert!(matches!(
            u.remove_server(addr(99)),
            Err(EditError::Sorry { .. })
        ));
    }

    #[test]
    fn removal_keeps_one_primary_and_the_others_counters() {
        let u = upstream("");
        let kept = Arc::clone(&u.snapshot().servers[1]);
        u.remove_server(addr(1)).expect("removed");
        assert!(Arc::ptr_eq(&kept, &u.snapshot().servers[0]));
        assert!(matches!(
            u.remove_server(addr(2)),
            Err(EditError::LastServer { .. })
        ));
        assert!(matches!(
            u.remove_server(addr(1)),
            Err(EditError::NoSuchServer { .. })
        ));
    }

    #[test]
    fn servers_that_leave_have_their_pools_retired_and_the_others_keep_theirs() {
        let u = upstream("");
        let (one, two) = {
            let s = u.snapshot();
            (Arc::clone(&s.servers[0]), Arc::clone(&s.servers[1]))
        };
        let before: Vec<ServerConfig> = u.config.servers.clone();
        let added = u.add_server(server(3)).expect("added");
        assert!(!added.pool.is_retired());
        let removed = u.remove_server(addr(1)).expect("removed");
        assert!(Arc::ptr_eq(&removed, &one));
        assert!(one.pool.is_retired(), "a removed server's pool is retired");
        assert!(!two.pool.is_retired() && !added.pool.is_retired());
        assert!(Arc::ptr_eq(&u.snapshot().servers[0].pool, &two.pool));
        // A reload that drops 3 and changes 2 beyond weight (a limit): both leave, 2 comes back
        // as a new server with a pool of its own.
        let now: Vec<ServerConfig> = vec![before[1].clone(), server(3)];
        let mut wanted = vec![before[1].clone()];
        wanted[0].max_connections = 10;
        let created = u.sync_servers(&now, &wanted);
        assert_eq!(created.len(), 1);
        assert!(added.pool.is_retired() && two.pool.is_retired());
        assert!(!created[0].pool.is_retired());
        assert!(!Arc::ptr_eq(&created[0].pool, &two.pool));
    }

    #[test]
    fn a_replacement_carries_unchanged_servers_and_the_persistence_table() {
        let old = upstream("persistence_timeout = \"60s\"\n");
        let a = Arc::clone(&old.snapshot().servers[0]);
        a.stats
            .connections
            .store(7, std::sync::atomic::Ordering::Relaxed);
        let table = Arc::clone(old.persistence.as_ref().expect("persistence"));
        let mut config = old.config.clone();
        config.scheduler = crate::scheduler::SchedulerKind::SourceHash;
        config.servers[1].weight = 5;
        let new = Upstream::replacing(&old, config);
        assert!(
            Arc::ptr_eq(&a, &new.snapshot().servers[0]),
            "a carried over"
        );
        assert_eq!(
            new.snapshot().servers[1].state.weight(),
            2,
            "nothing applied yet"
        );
        assert!(old.contains(&a));
        new.take_over(&old);
        let s = new.snapshot();
        assert_eq!(&*s.weights, &[1, 5], "the new weight applied at take-over");
        assert_eq!(
            s.servers[0]
                .stats
                .connections
                .load(std::sync::atomic::Ordering::Relaxed),
            7
        );
        assert!(Arc::ptr_eq(&table, new.persistence.as_ref().expect("kept")));
        assert!(
            !old.contains(&a),
            "the old upstream is retired: its checkers end"
        );
        assert!(new.contains(&a));
    }

    #[test]
    fn a_replacement_starts_servers_afresh_when_their_state_depends_on_the_change() {
        let old = upstream("");
        let mut config = old.config.clone();
        config.health.inhibit_on_failure = true;
        let new = Upstream::replacing(&old, config);
        assert!(!Arc::ptr_eq(
            &old.snapshot().servers[0],
            &new.snapshot().servers[0]
        ));
        assert!(new.snapshot().servers[0].state.inhibit);
        let left = Arc::clone(&old.snapshot().servers[0]);
        assert!(!left.pool.is_retired(), "in use until the take-over");
        new.take_over(&old);
        assert!(
            left.pool.is_retired(),
            "a server not carried over closes its idle pool"
        );
        assert!(!new.snapshot().servers[0].pool.is_retired());
    }

    #[test]
    fn a_sync_keeps_unchanged_servers_and_applies_configured_changes_only() {
        let u = upstream("");
        let before: Vec<ServerConfig> = u.config.servers.clone();
        let a = Arc::clone(&u.snapshot().servers[0]);
        // An operator drained a at runtime; the new file changes b's weight and adds c.
        u.set_server_state(0, AdminState::Draining, "test");
        let mut wanted = before.clone();
        wanted[1].weight = 5;
        wanted.push(server(3));
        let created = u.sync_servers(&before, &wanted);
        assert_eq!(created.len(), 1);
        let s = u.snapshot();
        assert!(Arc::ptr_eq(&a, &s.servers[0]));
        assert_eq!(
            s.servers[0].state.admin(),
            AdminState::Draining,
            "kept: the file did not change it"
        );
        assert_eq!(&*s.weights, &[1, 5, 3]);
        // And back: c removed.
        let created = u.sync_servers(&wanted, &before);
        assert!(created.is_empty());
        assert_eq!(u.snapshot().servers.len(), 2);
    }
}
