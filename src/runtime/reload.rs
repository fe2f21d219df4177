//! Reload: apply a new, fully validated configuration to a running [`Runtime`] in place (SIGHUP,
//! `ballast ctl reload`, `POST /api/v1/reload`).
//!
//! The new file is validated by the caller exactly as at start (an invalid file changes
//! nothing). Then the two configurations are compared, by name, as sozu's `ConfigState::diff`
//! does, and every difference is sorted by how it is applied (`reload/apply.rs` does it):
//!
//! | difference | applied how |
//! |---|---|
//! | a listener unchanged | kept: same sockets, same accept workers, nothing refused; an https listener's certificate files are read again (renewed certificates serve new connections) |
//! | a listener added (TCP, HTTP, HTTPS, UDP) | bound and started exactly as at start (`start.rs`); a bind or certificate failure fails the whole reload before anything changed |
//! | a listener's settings that only affect new connections (upstream and routes, timeouts, limits, buffer, splice, headers, PROXY protocol, certificates, `tcp`/`http`/`https`) | a new version of the listener (same counters, same `max_connections` gate, whose limit changes in place) and its route are published to its workers in one atomic store; the sockets and their queues stay; each connection keeps the version it was accepted with |
//! | `backlog` | listen(2) again on the same sockets (Linux changes the queue's maximum in place) |
//! | `tcp_nodelay`, `tcp_keepalive` | set again on the same listening sockets (accepted sockets inherit them) |
//! | `workers` up | new SO_REUSEPORT sockets join the group and start accepting |
//! | `workers` down | a BPF program on the SO_REUSEPORT group steers new connections to the workers that stay; the others keep accepting for a moment (handshakes under way), then accept what is left in their queues, waiting for room under the limits as usual, and close: no queued connection is reset |
//! | `bind`, or `udp` for or against a TCP protocol | new sockets bound first (a failure refuses the reload), their workers started, then the old sockets stop accepting; established connections go on. An address that overlaps the old one (the same port on `0.0.0.0` instead of one IP) cannot be bound while the old one listens: that reload is refused, naming the address in use |
//! | a UDP listener's settings (upstream, `udp_timeout`, `max_flows`, `responses`…), or its upstream replaced | a new version and upstream published to its workers in one store, on the same sockets; open flows keep their server and settings, new flows take the new ones |
//! | a UDP listener's `workers` | new sockets join its SO_REUSEPORT group and start, then the old workers take no new flows and relay for theirs until these end; meanwhile a new client's datagrams that the kernel hashes to an old socket are dropped (counted as `stopping`) |
//! | a listener removed | stops accepting (what its queues hold is accepted when the limits have room, then its sockets close, before the reload answers); its established connections go on to their end |
//! | an upstream's servers (added, removed, weight, state, limits), TCP or HTTP | one new snapshot, one atomic store; unchanged servers keep their counters, connections and kept-alive HTTP pools; removed ones close their idle pooled connections |
//! | an upstream's other settings (scheduler, persistence, queue, retries, timeouts, keep-alive, TLS, health checks) | a new upstream is built ([`crate::upstream::Upstream::replacing`]), carrying over unchanged servers (counters, health and operator state, connections) and the persistence table where they do not depend on what changed; every listener routing to it gets a new route in one store; its health checks restart (a server down stays down until it passes `rise` checks; with no active check any more, it is up again); connections in flight finish on the old one |
//! | an upstream added | created, with its health checks |
//! | an upstream removed (no listener of the new file uses it; validation checks that) | its health checks stop; connections in flight finish |
//! | `[global]`, `[admin]` | take effect at the next start (logged) |
//!
//! All or nothing: every check and every step that can fail (binding new sockets, loading
//! certificates, TLS to servers, health-check setup) runs for the whole file before the first
//! change. New sockets start before old ones stop. No established connection is cut and no
//! listener that stays refuses a connection.
//!
//! Why the HTTP side needs no socket replacement: hyper's server settings (header timeout, header
//! limits, HTTP/2 settings) are built per accepted connection from the listener version its
//! worker loads, so they follow the atomic swap like everything else. Sockets are replaced only
//! when the socket itself must differ (address, TCP against UDP), and workers are retired only
//! after steering and draining, because closing a listening socket resets every connection still
//! in its accept queue.
//!
//! The file is the source of truth, as Keepalived's reload is for IPVS: listeners added through
//! the admin API (`ballast ctl add-listener`) are part of the running configuration only, and a
//! reload from the file stops those the file does not have; an upstream the reload changes gets
//! exactly the file's servers (servers added through the API leave it). Weights and states set
//! through the API outlive a reload unless the file changes that server's weight or state.

use super::Runtime;
use crate::config::{Config, UpstreamConfig};

mod apply;

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Listeners kept with their sockets.
    pub listeners_kept: usize,
    /// Listeners started.
    pub listeners_started: Vec<String>,
    /// Listeners whose settings changed (on their sockets, or moved to new ones).
    pub listeners_changed: Vec<String>,
    /// Listeners stopped (draining).
    pub listeners_stopped: Vec<String>,
    /// Upstreams created.
    pub upstreams_added: Vec<String>,
    /// Upstreams whose servers changed.
    pub upstreams_changed: Vec<String>,
    /// Upstreams whose other settings changed (replaced by a new one).
    pub upstreams_replaced: Vec<String>,
    /// Upstreams removed.
    pub upstreams_removed: Vec<String>,
    /// Settings that take effect only at the next start.
    pub deferred: Vec<String>,
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} listeners kept, started [{}], changed [{}], stopped [{}]; upstreams added [{}], changed [{}], removed [{}], servers changed in [{}]",
            self.listeners_kept,
            self.listeners_started.join(", "),
            self.listeners_changed.join(", "),
            self.listeners_stopped.join(", "),
            self.upstreams_added.join(", "),
            self.upstreams_replaced.join(", "),
            self.upstreams_removed.join(", "),
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
}

/// An error with its causes, one line.
pub(super) fn anyhow_like(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
