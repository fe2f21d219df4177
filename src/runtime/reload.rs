//! Reload: apply a new, fully validated configuration to a running [`Runtime`] in place (SIGHUP,
//! `ballast ctl reload`, `POST /api/v1/reload`).
//!
//! The new file is validated by the caller exactly as at start (an invalid file changes
//! nothing). Then the two configurations are compared, by name, as sozu's `ConfigState::diff`
//! does, and every difference is sorted into what can be applied in place and what cannot:
//!
//! | difference | applied how |
//! |---|---|
//! | a listener unchanged | kept: same sockets, same accept workers, nothing refused |
//! | a listener added (TCP) | bound and started; a bind failure fails the whole reload before anything changed |
//! | a listener removed | stops accepting (its sockets close); its established connections go on to their end |
//! | an upstream's servers (added, removed, weight, state, limits) | one new snapshot, one atomic store; unchanged servers keep their counters and connections |
//! | an upstream added | created, with its health checks, for new listeners to use |
//! | a listener changed, an HTTP listener added, an upstream removed or its other settings changed, servers added to or removed from an upstream an HTTP listener uses | refused: the reload is rejected as a whole, naming each one; nothing changes |
//! | `[global]`, `[admin]` | take effect at the next start (logged) |
//!
//! All or nothing: every check runs before the first change, and the only step that can fail
//! while applying (binding new listeners) runs first. Established connections are never cut.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Runtime;
use crate::config::{Config, Protocol, ServerConfig, UpstreamConfig};
use crate::listener::accept::Worker;
use crate::listener::{self, Listener, ListenerStats};
use crate::proxy::Route;
use crate::upstream::Upstream;

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Listeners kept with their sockets.
    pub listeners_kept: usize,
    /// Listeners started.
    pub listeners_started: Vec<String>,
    /// Listeners stopped (draining).
    pub listeners_stopped: Vec<String>,
    /// Upstreams created.
    pub upstreams_added: Vec<String>,
    /// Upstreams whose servers changed.
    pub upstreams_changed: Vec<String>,
    /// Settings that take effect only at the next start.
    pub deferred: Vec<String>,
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} listeners kept, started [{}], stopped [{}]; upstreams added [{}], servers changed in [{}]",
            self.listeners_kept,
            self.listeners_started.join(", "),
            self.listeners_stopped.join(", "),
            self.upstreams_added.join(", "),
            self.upstreams_changed.join(", "),
        )?;
        if !self.deferred.is_empty() {
            write!(f, "; at next start: {}", self.deferred.join(", "))?;
        }
        Ok(())
    }
}

/// Whether two upstream configurations differ only in their servers.
fn same_but_servers(a: &UpstreamConfig, b: &UpstreamConfig) -> bool {
    let mut a = a.clone();
    a.servers.clone_from(&b.servers);
    a == *b
}

/// Whether the member list changes (addresses or anything a kept server cannot take on).
fn membership_changes(old: &[ServerConfig], new: &[ServerConfig]) -> bool {
    old.len() != new.len()
        || old.iter().zip(new).any(|(a, b)| {
            a.address != b.address
                || a.max_connections != b.max_connections
                || a.backup != b.backup
                || a.check != b.check
                || a.check_port != b.check_port
        })
}

/// Names of upstreams an HTTP listener of `config` uses.
fn http_upstreams(config: &Config) -> Vec<&str> {
    config
        .listeners
        .iter()
        .filter(|l| l.protocol.is_http())
        .flat_map(|l| {
            std::iter::once(l.upstream.as_str()).chain(l.routes.iter().map(|r| r.upstream.as_str()))
        })
        .collect()
}

impl Runtime {
    /// Reads the configuration file the runtime was started from again, validates it as at
    /// start, and applies it with [`Runtime::reload`]. Logs every problem of an invalid file.
    ///
    /// # Errors
    /// Every problem (file:line:column diagnostics, or differences that need a restart);
    /// nothing has changed then.
    pub async fn reload_file(&mut self) -> Result<ReloadSummary, Vec<String>> {
        // A configuration imported at start (`run --keepalived|--nginx`) is imported again.
        let imported = [
            crate::import::Format::Keepalived,
            crate::import::Format::Nginx,
            crate::import::Format::Ipvsadm,
        ]
        .into_iter()
        .find_map(|f| {
            let suffix = format!(" (imported from {})", f.as_str());
            self.config
                .origin
                .strip_suffix(suffix.as_str())
                .map(|p| (f, std::path::PathBuf::from(p)))
        });
        let path = imported.as_ref().map_or_else(
            || std::path::PathBuf::from(&self.config.origin),
            |(_, p)| p.clone(),
        );
        let loaded = match imported {
            Some((format, p)) => crate::import::load(format, &p)
                .map(|(c, _)| c)
                .map_err(|e| vec![anyhow_like(&e)]),
            None => Config::load(&path).map_err(|e| match e {
                crate::config::ConfigError::Invalid(diags) => {
                    diags.iter().map(ToString::to_string).collect()
                }
                e => vec![anyhow_like(&e)],
            }),
        };
        let result = match loaded {
            Ok(new) => self.reload(new).await,
            Err(problems) => Err(problems),
        };
        if let Some(admin) = &self.admin {
            admin.shared.reloads.record(result.is_ok());
        }
        if let Err(problems) = &result {
            tracing::error!(config = %path.display(), problems = problems.len(),
                "reload refused; nothing changed");
            for p in problems {
                tracing::error!("{p}");
            }
        }
        result
    }

    /// Answers a request of the admin API: re-reads the file, or applies the request's edit to
    /// the running configuration; either way through [`Runtime::reload`].
    pub async fn answer(&mut self, request: crate::admin::ReloadRequest) {
        tracing::info!(by = %request.who, "configuration change asked through the admin API");
        let result = match request.edit {
            None => self.reload_file().await,
            Some(edit) => match edit(&self.config) {
                Ok(new) => self.reload(new).await,
                Err(problem) => Err(vec![problem]),
            },
        };
        let _ = request.reply.send(result.map(|s| s.to_string()));
    }

    /// Applies `new` in place; see the module documentation for what is applied and how.
    ///
    /// # Errors
    /// Every difference that cannot be applied in place, or the listener that could not be
    /// bound; nothing has changed then.
    pub async fn reload(&mut self, new: Config) -> Result<ReloadSummary, Vec<String>> {
        let old = &self.config;
        let mut summary = ReloadSummary::default();
        if old.global != new.global {
            summary.deferred.push("[global]".to_owned());
        }
        if old.admin != new.admin {
            summary.deferred.push("[admin]".to_owned());
        }
        let problems = refusals(old, &new);
        if !problems.is_empty() {
            return Err(problems);
        }

        // Bind new listeners first: the one step that can fail.
        let added: Vec<_> = new
            .listeners
            .iter()
            .filter(|l| !old.listeners.iter().any(|o| o.name == l.name))
            .collect();
        let mut bound = Vec::with_capacity(added.len());
        for lc in &added {
            match listener::bind(lc) {
                Ok(b) => bound.push(b),
                Err(e) => return Err(vec![anyhow_like(&e)]),
            }
        }

        // Upstreams: new ones, then server lists.
        for u in new
            .upstreams
            .iter()
            .filter(|u| old.upstream(&u.name).is_none())
        {
            let up = Arc::new(Upstream::new(u.clone()));
            for s in up.snapshot().servers.iter().filter(|s| !s.sorry) {
                if let Err(e) = crate::health::spawn_server(&up, s, &self.stop_checks) {
                    tracing::warn!(upstream = %u.name, error = %e, "no health checks");
                }
            }
            self.upstreams.push(up);
            summary.upstreams_added.push(u.name.clone());
        }
        for u in &old.upstreams {
            let (Some(n), Some(up)) = (
                new.upstream(&u.name),
                self.upstreams.iter().find(|x| x.name() == u.name),
            ) else {
                continue;
            };
            if u.servers == n.servers {
                continue;
            }
            let created = up.sync_servers(&u.servers, &n.servers);
            for s in &created {
                if let Err(e) = crate::health::spawn_server(up, s, &self.stop_checks) {
                    tracing::warn!(upstream = %u.name, server = %s.address(), error = %e, "no health checks");
                }
            }
            tracing::info!(upstream = %u.name, servers = n.servers.len(), new = created.len(),
                "reload: servers updated");
            summary.upstreams_changed.push(u.name.clone());
        }

        // Listeners: start the new ones, stop the removed ones.
        for (lc, b) in added.into_iter().zip(bound) {
            let Some(upstream) = self.upstreams.iter().find(|u| u.name() == lc.upstream) else {
                continue;
            };
            let listener = Arc::new(Listener {
                config: lc.clone(),
                local_addr: b.local_addr,
                stats: ListenerStats::new(b.sockets.len()),
                worker_inodes: b.sockets.iter().map(crate::backlog::socket_inode).collect(),
                limit: Arc::new(crate::listener::Gate::new(lc.connections)),
                udp: None,
            });
            let route = Arc::new(Route {
                listener: Arc::clone(&listener),
                upstream: Arc::clone(upstream),
                http: None,
                access_log: self.access_log.clone(),
            });
            let stop = self.stop_accepting.child_token();
            let fds = super::upgrade_copies(&b.sockets);
            for (index, socket) in b.sockets.into_iter().enumerate() {
                // As in `Runtime::start`: `socket2::Socket` owns its descriptor and keeps it open
                // and unchanged until dropped, which is what `AsyncFd` registration needs.
                #[allow(deprecated)]
                let Ok(socket) = tokio::io::unix::AsyncFd::new(socket2::Socket::from(socket)) else {
                    continue;
                };
                self.workers.spawn(
                    Worker {
                        index,
                        socket,
                        route: Arc::clone(&route),
                        stop_accepting: stop.clone(),
                        abort: self.abort.clone(),
                        tracker: self.tracker.clone(),
                        global_limit: Arc::clone(&self.global_limit),
                    }
                    .run(),
                );
            }
            tracing::info!(listener = %lc.name, addr = %b.local_addr, upstream = %lc.upstream,
                "reload: listening");
            self.listeners.push(listener);
            self.listener_stops.push(stop);
            self.listener_fds.push(fds);
            summary.listeners_started.push(lc.name.clone());
        }
        let mut i = 0;
        while i < self.listeners.len() {
            let name = &self.listeners[i].config.name;
            if new.listeners.iter().any(|l| &l.name == name) {
                i += 1;
                continue;
            }
            let l = self.listeners.remove(i);
            if i < self.listener_fds.len() {
                self.listener_fds.remove(i);
            }
            if i < self.listener_stops.len() {
                self.listener_stops.remove(i).cancel();
            }
            tracing::info!(listener = %l.config.name, addr = %l.local_addr,
                active = l.stats.active.load(std::sync::atomic::Ordering::Relaxed),
                "reload: stopped accepting; established connections go on");
            summary.listeners_stopped.push(l.config.name.clone());
        }
        summary.listeners_kept = self.listeners.len() - summary.listeners_started.len();
        self.config = new;
        if let Some(admin) = &self.admin {
            admin
                .shared
                .services
                .store(Arc::new(crate::admin::Services::new(
                    &self.config,
                    self.listeners.clone(),
                    self.upstreams.clone(),
                )));
        }
        tracing::info!(%summary, "configuration reloaded");
        Ok(summary)
    }
}

/// Every difference between `old` and `new` that a reload cannot apply in place (the refused
/// rows of the table in the module documentation); empty when `new` can be applied. No I/O: the
/// one later step that can still fail is binding new listeners.
pub fn refusals(old: &Config, new: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let http_used = http_upstreams(old);
    for u in &old.upstreams {
        match new.upstream(&u.name) {
            None => problems.push(format!(
                "upstream \"{}\" was removed: removing an upstream needs a restart",
                u.name
            )),
            Some(n) if !same_but_servers(u, n) => problems.push(format!(
                "upstream \"{}\": settings other than its servers changed: that needs a restart (servers alone are changed in place)",
                u.name
            )),
            Some(n)
                if http_used.contains(&u.name.as_str())
                    && membership_changes(&u.servers, &n.servers) =>
            {
                problems.push(format!(
                    "upstream \"{}\" serves an HTTP listener: adding or removing its servers needs a restart (weights and states are changed in place)",
                    u.name
                ));
            }
            Some(_) => {}
        }
    }
    for l in &new.listeners {
        match old.listeners.iter().find(|o| o.name == l.name) {
            Some(o) if o == l => {}
            Some(_) => problems.push(format!(
                "listener \"{}\" changed: a listener is replaced by giving it a new name (the old one drains), or by a restart",
                l.name
            )),
            None if l.protocol != Protocol::Tcp => problems.push(format!(
                "listener \"{}\": adding an {} listener needs a restart (TCP listeners are added in place)",
                l.name,
                l.protocol.as_str()
            )),
            None => {}
        }
    }
    problems
}

/// An error with its causes, one line.
fn anyhow_like(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A token per listener, children of the runtime's `stop_accepting`, so one listener can stop
/// on a reload while a shutdown still stops them all.
pub(super) fn listener_token(stop_accepting: &CancellationToken) -> CancellationToken {
    stop_accepting.child_token()
}
