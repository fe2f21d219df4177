//! Applying a reload in two phases. First the plan: what each upstream and listener of the new
//! configuration needs (see the table in [`super`]), with every step that can fail done for all
//! of them (binding new sockets, loading certificates, TLS to servers and health-check setup);
//! any problem returns before the first change, and the new sockets close unused. Then the
//! changes, none of which can fail: upstreams first (so that listeners route to the new ones),
//! then listeners, in the order new sockets start before old ones stop.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{anyhow_like, ReloadSummary};
use crate::config::{Config, ListenerConfig, Protocol};
use crate::listener::{socket, Listener};
use crate::proxy::http::HttpUpstream;
use crate::runtime::start::{self, Ready, ReadyTcp, Running};
use crate::runtime::{Runtime, RuntimeError};
use crate::upstream::Upstream;

/// How long workers a reload retires (fewer `workers`) go on accepting after new connections
/// were steered to the others, before they take what is left in their queues and close: long
/// enough for handshakes begun before the steering to complete (a SYN-RECV connection belongs
/// to the socket its SYN reached).
const RETIRE_SETTLE: Duration = Duration::from_millis(500);

/// What happens to an upstream of the new configuration.
enum UpstreamPlan {
    /// Kept; `sync` when its servers changed (applied in place).
    Kept { old: Arc<Upstream>, sync: bool },
    /// Other settings changed: `new` replaces `old` ([`Upstream::replacing`]).
    Replaced {
        old: Arc<Upstream>,
        new: Arc<Upstream>,
    },
    /// New.
    Added(Arc<Upstream>),
}

impl UpstreamPlan {
    fn upstream(&self) -> &Arc<Upstream> {
        match self {
            UpstreamPlan::Kept { old, .. } => old,
            UpstreamPlan::Replaced { new, .. } | UpstreamPlan::Added(new) => new,
        }
    }
}

/// What happens to a listener of the new configuration.
enum ListenerPlan {
    /// Same settings: the running version stays; its route is rebuilt over the new upstreams
    /// (an https listener's with its certificates read again, `tls`).
    Kept {
        index: usize,
        tls: Option<tokio_rustls::TlsAcceptor>,
    },
    /// New settings on the same sockets (a TCP-family listener on the same address).
    Changed(Box<Change>),
    /// New settings for a UDP listener on the same sockets (same address and workers).
    UdpChanged {
        index: usize,
        listener: Arc<Listener>,
    },
    /// New sockets: a listener added, or one replacing listener `replaces` (a new address,
    /// TCP and UDP swapped, or a UDP listener's worker count changed).
    Started {
        replaces: Option<usize>,
        ready: Ready,
        tls: Option<tokio_rustls::TlsAcceptor>,
    },
}

/// A listener changed in place.
struct Change {
    /// Which running listener.
    index: usize,
    /// Its new version (shared gate; shared counters unless the worker count changed).
    listener: Arc<Listener>,
    /// Its TLS termination, certificates read again.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Sockets for the workers it gains.
    more: Option<ReadyTcp>,
}

impl Runtime {
    /// Applies `new` in place; see the module documentation of [`super`] for what is applied
    /// and how.
    ///
    /// # Errors
    /// Every difference that cannot be applied in place, and every listener that could not be
    /// bound or certificate that could not be loaded; nothing has changed then.
    pub async fn reload(&mut self, new: Config) -> Result<ReloadSummary, Vec<String>> {
        let mut summary = ReloadSummary::default();
        if self.config.global != new.global {
            summary.deferred.push("[global]".to_owned());
        }
        if self.config.admin != new.admin {
            summary.deferred.push("[admin]".to_owned());
        }
        let mut problems = Vec::new();

        // Plan, and do every step that can fail.
        let any_http = new.listeners.iter().any(|l| l.protocol.is_http());
        let mut ups = Vec::with_capacity(new.upstreams.len());
        let mut http = Vec::with_capacity(new.upstreams.len());
        for n in &new.upstreams {
            let old = self.config.upstream(&n.name).zip(self.upstream(&n.name));
            let plan = match old {
                Some((o, old)) if super::same_but_servers(o, n) => UpstreamPlan::Kept {
                    old: Arc::clone(old),
                    sync: o.servers != n.servers,
                },
                Some((_, old)) => UpstreamPlan::Replaced {
                    old: Arc::clone(old),
                    new: Arc::new(Upstream::replacing(old, n.clone())),
                },
                None => UpstreamPlan::Added(Arc::new(Upstream::new(n.clone()))),
            };
            if !matches!(plan, UpstreamPlan::Kept { .. }) {
                if let Err(e) = crate::health::validate(plan.upstream()) {
                    problems.push(anyhow_like(&e));
                }
            }
            if any_http {
                match self.http_side(&plan) {
                    Ok(h) => http.push(h),
                    Err(e) => problems.push(anyhow_like(&e)),
                }
            }
            ups.push(plan);
        }
        let mut plans = Vec::with_capacity(new.listeners.len());
        for lc in &new.listeners {
            match self.plan_listener(lc) {
                Ok(p) => plans.push(p),
                Err(e) => problems.push(anyhow_like(&e)),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }

        // Apply: upstreams, then listeners.
        self.apply_upstreams(&new, ups, http, &mut summary);
        let closing = self.apply_listeners(&new, plans, &mut summary);
        self.config = new;
        self.shared_upstreams
            .store(Arc::new(self.upstreams.clone()));
        if let Some(admin) = &self.admin {
            admin
                .shared
                .services
                .store(Arc::new(crate::admin::Services::new(
                    self.listeners.clone(),
                    self.upstreams.clone(),
                )));
        }
        // The sockets of removed and moved listeners close once their workers have taken what
        // was queued (without waiting for room): wait for that, briefly, so that when the reload
        // answers, those addresses refuse new connections.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        for c in &closing {
            if tokio::time::timeout_at(deadline, c.cancelled())
                .await
                .is_err()
            {
                tracing::warn!("reload: some stopped listeners' sockets are still closing");
                break;
            }
        }
        tracing::info!(%summary, "configuration reloaded");
        Ok(summary)
    }

    /// The HTTP side of a planned upstream: the running one when it is kept and has one (its
    /// pools of kept-alive connections go on), else a new one.
    fn http_side(&self, plan: &UpstreamPlan) -> Result<Arc<HttpUpstream>, RuntimeError> {
        if let UpstreamPlan::Kept { old, .. } = plan {
            let i = self.upstreams.iter().position(|u| Arc::ptr_eq(u, old));
            if let Some(h) = i.and_then(|i| self.http_upstreams.get(i)) {
                return Ok(Arc::clone(h));
            }
        }
        let up = plan.upstream();
        HttpUpstream::new(Arc::clone(up))
            .map(Arc::new)
            .map_err(|source| RuntimeError::UpstreamTls {
                upstream: up.name().to_owned(),
                source,
            })
    }

    /// What listener `lc` needs, with its new sockets bound and its certificates loaded.
    fn plan_listener(&self, lc: &ListenerConfig) -> Result<ListenerPlan, RuntimeError> {
        let Some(index) = self.listeners.iter().position(|l| l.config.name == lc.name) else {
            return Ok(ListenerPlan::Started {
                replaces: None,
                ready: Ready::bind(lc)?,
                tls: start::tls_acceptor(lc)?,
            });
        };
        let old = &self.listeners[index];
        let o = &old.config;
        let udp = lc.protocol == Protocol::Udp;
        let was_udp = o.protocol == Protocol::Udp;
        if o == lc {
            // As nginx and HAProxy do on a reload, certificate files are read again: renewed
            // certificates take effect for new connections.
            let tls = start::tls_acceptor(lc)?;
            return Ok(ListenerPlan::Kept { index, tls });
        }
        if udp && was_udp && o.bind == lc.bind && o.workers == lc.workers {
            let listener = Arc::new(Listener {
                config: lc.clone(),
                local_addr: old.local_addr,
                stats: Arc::clone(&old.stats),
                worker_inodes: Box::new([]),
                limit: Arc::clone(&old.limit),
                udp: old.udp.clone(),
            });
            return Ok(ListenerPlan::UdpChanged { index, listener });
        }
        if udp || was_udp || o.bind != lc.bind {
            let ready = if udp && was_udp && o.bind == lc.bind {
                // Same address: the new sockets join the old ones' SO_REUSEPORT group.
                let b = crate::proxy::udp::bind_siblings(lc, old.local_addr)?;
                let ready = b.register().map_err(start::register(lc))?;
                Ready::Udp(ready, old.local_addr)
            } else {
                Ready::bind(lc)?
            };
            return Ok(ListenerPlan::Started {
                replaces: Some(index),
                ready,
                tls: start::tls_acceptor(lc)?,
            });
        }
        let tls = start::tls_acceptor(lc)?;
        let had = self.running[index].workers.len();
        let want = lc.workers.max(1);
        let more = if want > had {
            let sockets = socket::bind_siblings(lc, old.local_addr, want - had)?;
            match Ready::tcp(lc, old.local_addr, sockets)? {
                Ready::Tcp(t) => Some(t),
                Ready::Udp(..) => None,
            }
        } else {
            None
        };
        let mut inodes: Vec<u64> = old.worker_inodes.iter().take(want).copied().collect();
        if let Some(m) = &more {
            inodes.extend(&m.inodes);
        }
        // Per-worker counters are indexed by worker: a new worker count starts them afresh.
        let stats = (want == had).then(|| Arc::clone(&old.stats));
        let limit = Some(Arc::clone(&old.limit));
        Ok(ListenerPlan::Changed(Box::new(Change {
            index,
            listener: start::tcp_listener(lc, old.local_addr, inodes, stats, limit),
            tls,
            more,
        })))
    }

    /// Applies the upstream plans: server lists synced in place, replacements taking over,
    /// new upstreams created, removed ones retired; health checks follow.
    fn apply_upstreams(
        &mut self,
        new: &Config,
        ups: Vec<UpstreamPlan>,
        mut http: Vec<Arc<HttpUpstream>>,
        summary: &mut ReloadSummary,
    ) {
        let mut list = Vec::with_capacity(ups.len());
        let mut start_checks = Vec::new();
        for (i, plan) in ups.into_iter().enumerate() {
            match plan {
                UpstreamPlan::Kept { old, sync } => {
                    let name = old.name().to_owned();
                    if let (true, Some(o), Some(n)) =
                        (sync, self.config.upstream(&name), new.upstream(&name))
                    {
                        let created = old.sync_servers(&o.servers, &n.servers);
                        for s in &created {
                            if let Err(e) = crate::health::spawn_server(&old, s, &self.stop_checks)
                            {
                                tracing::warn!(upstream = %name, server = %s.address(), error = %e, "no health checks");
                            }
                        }
                        tracing::info!(upstream = %name, servers = n.servers.len(), new = created.len(),
                            "reload: servers updated");
                        // An HTTP side made for this reload (the first HTTP listener to use
                        // it) was made before the servers changed: made again over the new
                        // list (the first one proved its TLS setup works).
                        let running = &self.http_upstreams;
                        let made_now =
                            |h: &&mut Arc<HttpUpstream>| !running.iter().any(|r| Arc::ptr_eq(r, h));
                        if let Some(h) = http.get_mut(i).filter(made_now) {
                            if let Ok(fresh) = HttpUpstream::new(Arc::clone(&old)) {
                                *h = Arc::new(fresh);
                            }
                        }
                        summary.upstreams_changed.push(name);
                    }
                    list.push(old);
                }
                UpstreamPlan::Replaced { old, new } => {
                    new.take_over(&old);
                    tracing::info!(upstream = %new.name(), scheduler = new.config.scheduler.as_str(),
                        "reload: upstream settings changed; open connections finish on the old ones");
                    summary.upstreams_replaced.push(new.name().to_owned());
                    start_checks.push(Arc::clone(&new));
                    list.push(new);
                }
                UpstreamPlan::Added(up) => {
                    tracing::info!(upstream = %up.name(), "reload: upstream added");
                    summary.upstreams_added.push(up.name().to_owned());
                    start_checks.push(Arc::clone(&up));
                    list.push(up);
                }
            }
        }
        for old in &self.upstreams {
            if new.upstream(old.name()).is_none() {
                old.retire();
                // Its idle kept-alive connections close; requests in flight finish.
                for s in old.snapshot().servers.iter() {
                    s.retire();
                }
                tracing::info!(upstream = %old.name(), active = old.snapshot().servers.iter().map(|s| s.active()).sum::<u64>(),
                    "reload: upstream removed; its health checks stop, open connections finish");
                summary.upstreams_removed.push(old.name().to_owned());
            }
        }
        self.upstreams = list;
        self.http_upstreams = http;
        for up in start_checks {
            match crate::health::spawn(std::slice::from_ref(&up), &self.stop_checks) {
                Ok(c) => self.checkers.push(c),
                // Checked before the first change; only a CA file removed since can do this.
                Err(e) => tracing::error!(error = %anyhow_like(&e), "reload: no health checks"),
            }
        }
    }

    /// Applies the listener plans: new sockets start, kept and changed listeners get their new
    /// route (and backlog, options, worker count) on their sockets, then replaced and removed
    /// ones stop. Returns what is cancelled once the stopped ones' sockets have closed.
    fn apply_listeners(
        &mut self,
        new: &Config,
        plans: Vec<ListenerPlan>,
        summary: &mut ReloadSummary,
    ) -> Vec<CancellationToken> {
        let mut old: Vec<Option<(Arc<Listener>, Running)>> = std::mem::take(&mut self.listeners)
            .into_iter()
            .zip(std::mem::take(&mut self.running))
            .map(Some)
            .collect();
        let mut retired = Vec::new();
        for (lc, plan) in new.listeners.iter().zip(plans) {
            match plan {
                ListenerPlan::Kept { index, tls } => {
                    let Some((l, r)) = old.get_mut(index).and_then(Option::take) else {
                        continue;
                    };
                    if let Some(swap) = &r.route {
                        self.store_route(swap, Arc::clone(&l), tls);
                    }
                    self.store_udp_route(&r, &l);
                    self.listeners.push(l);
                    self.running.push(r);
                    summary.listeners_kept += 1;
                }
                ListenerPlan::UdpChanged { index, listener } => {
                    let Some((_, r)) = old.get_mut(index).and_then(Option::take) else {
                        continue;
                    };
                    self.store_udp_route(&r, &listener);
                    tracing::info!(listener = %lc.name, addr = %listener.local_addr, upstream = %lc.upstream,
                        "reload: udp listener changed in place; open flows keep their settings and server");
                    self.listeners.push(listener);
                    self.running.push(r);
                    summary.listeners_changed.push(lc.name.clone());
                }
                ListenerPlan::Changed(change) => {
                    let Some((l, mut r)) = old.get_mut(change.index).and_then(Option::take) else {
                        continue;
                    };
                    let version = Arc::clone(&change.listener);
                    self.change_in_place(&l, &mut r, *change);
                    self.listeners.push(version);
                    self.running.push(r);
                    summary.listeners_changed.push(lc.name.clone());
                }
                ListenerPlan::Started {
                    replaces,
                    ready,
                    tls,
                } => {
                    let addr = ready.local_addr();
                    match self.start_listener(lc, ready, tls) {
                        Ok((l, r)) => {
                            self.listeners.push(l);
                            self.running.push(r);
                        }
                        Err(e) => {
                            tracing::error!(listener = %lc.name, error = %anyhow_like(&e), "reload: not started");
                            continue;
                        }
                    }
                    match replaces.and_then(|i| old.get_mut(i).and_then(Option::take)) {
                        Some(prev) => {
                            tracing::info!(listener = %lc.name, from = %prev.0.local_addr, to = %addr,
                                "reload: listener moved to new sockets; the old ones stop accepting, established connections go on");
                            retired.push(prev);
                            summary.listeners_changed.push(lc.name.clone());
                        }
                        None => summary.listeners_started.push(lc.name.clone()),
                    }
                }
            }
        }
        // Replaced and removed listeners stop only now: their successors already accept.
        let mut closing = Vec::new();
        for (l, r) in retired {
            r.stop.cancel();
            closing.extend(r.workers.iter().map(|w| w.closed.clone()));
            drop(r);
            drop(l);
        }
        for (l, r) in old.into_iter().flatten() {
            r.stop.cancel();
            closing.extend(r.workers.iter().map(|w| w.closed.clone()));
            tracing::info!(listener = %l.config.name, addr = %l.local_addr,
                active = l.stats.active.load(std::sync::atomic::Ordering::Relaxed),
                "reload: stopped accepting; established connections go on");
            summary.listeners_stopped.push(l.config.name.clone());
        }
        closing
    }

    /// Publishes listener version `l` and its upstream (by name, from the current ones) to the
    /// workers of a UDP listener, in one store.
    fn store_udp_route(&self, r: &Running, l: &Arc<Listener>) {
        let (Some(swap), Some(upstream)) = (&r.udp_route, self.upstream(&l.config.upstream)) else {
            return;
        };
        swap.store(Arc::new(crate::proxy::udp::UdpRoute {
            listener: Arc::clone(l),
            upstream: Arc::clone(upstream),
        }));
    }

    /// Builds the route of listener version `l` over the current upstreams and publishes it to
    /// its workers in one store.
    fn store_route(
        &self,
        swap: &arc_swap::ArcSwap<crate::proxy::Route>,
        l: Arc<Listener>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) {
        let name = l.config.name.clone();
        match start::route(
            l,
            &self.upstreams,
            &self.http_upstreams,
            tls,
            self.access_log.clone(),
        ) {
            Ok(route) => swap.store(Arc::new(route)),
            // Validation guarantees the upstream exists.
            Err(e) => {
                tracing::error!(listener = %name, error = %anyhow_like(&e), "reload: route kept")
            }
        }
    }

    /// Changes a running TCP-family listener on its sockets: the new version's route, its
    /// `max_connections`, listen(2) again for a new backlog, socket options, and workers added
    /// (SO_REUSEPORT siblings) or retired (steered away from, then drained).
    fn change_in_place(&mut self, old: &Listener, r: &mut Running, c: Change) {
        let lc = c.listener.config.clone();
        let o = &old.config;
        if o.connections != lc.connections {
            c.listener.limit.set_limit(lc.connections);
        }
        let Some(swap) = r.route.clone() else {
            return;
        };
        self.store_route(&swap, Arc::clone(&c.listener), c.tls);
        let had = r.workers.len();
        let want = lc.workers.max(1);
        if o.backlog != lc.backlog {
            for w in r.workers.iter().take(want) {
                if let Err(e) = socket::relisten(&w.fd, lc.backlog) {
                    tracing::warn!(listener = %lc.name, error = %e, "reload: backlog not changed");
                }
            }
        }
        if o.tcp_nodelay != lc.tcp_nodelay || o.tcp_keepalive != lc.tcp_keepalive {
            for w in r.workers.iter().take(want) {
                if let Err(e) = socket::retune(&w.fd, &lc) {
                    tracing::warn!(listener = %lc.name, error = %e, "reload: socket options not changed");
                }
            }
        }
        if let Some(more) = c.more {
            let slots = self.spawn_workers(&swap, &r.stop, had, more.sockets, more.fds);
            r.workers.extend(slots);
        }
        if want < had || (want > had && r.steered) {
            let steered = r.workers.first().map(|w| socket::steer(&w.fd, want));
            match steered {
                Some(Ok(())) => r.steered = true,
                Some(Err(e)) => tracing::warn!(listener = %lc.name, error = %e,
                    "reload: cannot steer new connections away from retired workers; connections queued at their sockets when they close are reset"),
                None => {}
            }
        }
        if want < had {
            let retiring = r.workers.split_off(want);
            tokio::spawn(async move {
                tokio::time::sleep(RETIRE_SETTLE).await;
                for w in retiring {
                    // The worker accepts what its queue still holds, then its socket closes
                    // (this copy of it closes here).
                    w.retire.cancel();
                }
            });
        }
        tracing::info!(listener = %lc.name, addr = %c.listener.local_addr, upstream = %lc.upstream,
            backlog = lc.backlog, workers = want, "reload: listener changed in place; its sockets are kept");
    }
}
