//! The JSON views of the admin API: listeners, upstreams and servers as operators read them,
//! built from the live state (listener counters, the upstream's current snapshot, server
//! states, persistence tables) at the moment of the request.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::AdminState;
use crate::listener::Listener;
use crate::upstream::{LastCheck, Server, Upstream};

/// `GET /api/v1/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusView {
    /// ballast's version.
    pub version: String,
    /// The process id.
    pub pid: u32,
    /// The configuration file.
    pub config: String,
    /// Seconds since the runtime started.
    pub uptime_secs: u64,
    /// Listeners running.
    pub listeners: usize,
    /// Upstreams.
    pub upstreams: usize,
    /// Servers, sorry servers excluded.
    pub servers: usize,
    /// VRRP state; `null` while no VRRP instance is configured.
    pub vrrp: Option<serde_json::Value>,
}

/// One listener (virtual service).
#[derive(Debug, Serialize, Deserialize)]
pub struct ListenerView {
    /// Its name.
    pub name: String,
    /// `tcp`, `http` or `https`.
    pub protocol: String,
    /// The address it listens on (the port filled in).
    pub address: String,
    /// The upstream it serves (HTTP routes may send some requests elsewhere).
    pub upstream: String,
    /// The upstream's scheduler.
    pub scheduler: String,
    /// The upstream's `persistence_timeout` in seconds; `null` = no persistence.
    pub persistence_secs: Option<u64>,
    /// The IPv4 persistence granularity as a prefix length, when persistence is on.
    pub persistence_granularity: Option<u8>,
    /// Accept workers.
    pub workers: usize,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections accepted per worker.
    pub accepted_per_worker: Vec<u64>,
    /// Client connections open now.
    pub active: u64,
    /// Connections closed because no server could take them.
    pub no_server: u64,
    /// Connections closed by `idle_timeout`.
    pub idle_timeouts: u64,
    /// PROXY header refusals.
    pub proxy_refused: u64,
    /// Failed TLS handshakes.
    pub tls_failed: u64,
    /// accept(2) errors.
    pub accept_errors: u64,
    /// Directions moved to splice(2).
    pub spliced: u64,
    /// HTTP counters (HTTP listeners only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpView>,
    /// Each worker's accept queue now (from the kernel; empty when sock_diag cannot be read).
    #[serde(default)]
    pub accept_queue: Vec<QueueView>,
}

/// One worker's accept queue.
#[derive(Debug, Serialize, Deserialize)]
pub struct QueueView {
    /// The worker.
    pub worker: usize,
    /// Connections waiting to be accepted.
    pub queue: u32,
    /// The queue's maximum (the effective backlog), when known.
    pub max: Option<u32>,
}

/// Every listener's accept queues, read from the kernel off the async workers (one netlink
/// round trip); empty when they cannot be read.
pub async fn accept_queues(listeners: &[Arc<Listener>]) -> Vec<crate::backlog::BallastListener> {
    let listeners = listeners.to_vec();
    tokio::task::spawn_blocking(move || crate::backlog::workers(&listeners).unwrap_or_default())
        .await
        .unwrap_or_default()
}

/// HTTP counters of a listener.
#[derive(Debug, Serialize, Deserialize)]
pub struct HttpView {
    /// Responses by status class: `1xx` … `5xx`.
    pub responses: std::collections::BTreeMap<String, u64>,
    /// Requests answered (all classes).
    pub requests: u64,
    /// Mean time to the response head, in milliseconds (0 before the first request).
    pub mean_latency_ms: f64,
    /// 413 answers.
    pub too_large: u64,
    /// 408 answers.
    pub body_timeouts: u64,
    /// Client connections closed because the client took no response bytes for `send_timeout`.
    #[serde(default)]
    pub send_timeouts: u64,
    /// Requests retried on another server.
    pub retries: u64,
    /// 502 answers.
    pub bad_gateway: u64,
    /// 504 answers.
    pub gateway_timeout: u64,
}

/// One upstream.
#[derive(Debug, Serialize, Deserialize)]
pub struct UpstreamView {
    /// Its name.
    pub name: String,
    /// Its scheduler.
    pub scheduler: String,
    /// Connections (or requests) no server could take.
    pub no_server: u64,
    /// Whether servers can be added and removed at runtime: always `true` (HTTP upstreams
    /// included); kept so clients that read it go on working.
    pub editable: bool,
    /// The active check's type; `null` = no active check.
    pub health_check: Option<String>,
    /// The persistence table; `null` = no persistence.
    pub persistence: Option<PersistenceView>,
    /// Its servers, in snapshot order (the sorry server last).
    pub servers: Vec<ServerView>,
}

/// The persistence table of an upstream.
#[derive(Debug, Serialize, Deserialize)]
pub struct PersistenceView {
    /// `persistence_timeout` in seconds.
    pub timeout_secs: u64,
    /// Entries now.
    pub entries: u64,
    /// Clients sent to their remembered server.
    pub hits: u64,
    /// Clients scheduled afresh.
    pub misses: u64,
    /// Entries dropped because their server could not take the client.
    pub rescheduled: u64,
    /// Entries expired.
    pub expired: u64,
    /// Clients not remembered because the table was full.
    pub full: u64,
}

/// One server.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServerView {
    /// `IP:port`.
    pub address: String,
    /// `primary`, `backup` or `sorry`.
    pub role: String,
    /// One word for the dashboard: `disabled`, `down`, `draining` or `up` (the first that
    /// applies).
    pub status: String,
    /// What checks say: `up` or `down`.
    pub health: String,
    /// What the operator says: `active`, `draining` or `disabled`.
    pub admin: String,
    /// The operator's weight.
    pub weight: u32,
    /// The weight the scheduler uses now (slow start, `inhibit_on_failure`).
    pub effective_weight: u32,
    /// `max_connections` (0 = unlimited).
    pub max_connections: u32,
    /// Connections open now (ipvsadm ActiveConn).
    pub active_connections: u64,
    /// Always 0: a proxied connection that ended is gone (ipvsadm InActConn counts IPVS entries
    /// in FIN/TIME_WAIT states, which a proxy does not keep).
    pub inactive_connections: u64,
    /// Connections established since start.
    pub connections: u64,
    /// HTTP requests sent.
    pub requests: u64,
    /// Failed connects.
    pub connect_errors: u64,
    /// Errors after the connect.
    pub errors: u64,
    /// Bytes sent to the server.
    pub bytes_in: u64,
    /// Bytes received from the server.
    pub bytes_out: u64,
    /// Persistence entries naming this server.
    pub persistence_entries: u64,
    /// Whether active checks run against it.
    pub checked: bool,
    /// The last active check; `null` before the first (or without checks).
    pub last_check: Option<CheckView>,
    /// Health transitions since start.
    pub health_transitions: u64,
}

/// The last active check of a server.
#[derive(Debug, Serialize, Deserialize)]
pub struct CheckView {
    /// Whether it passed.
    pub ok: bool,
    /// Why it failed.
    pub reason: String,
    /// When it ended, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl From<LastCheck> for CheckView {
    fn from(c: LastCheck) -> CheckView {
        CheckView {
            ok: c.ok,
            reason: c.reason,
            unix_ms: c.unix_ms,
        }
    }
}

/// The view of a listener.
pub fn listener_view(
    l: &Listener,
    upstreams: &[Arc<Upstream>],
    queues: &[crate::backlog::BallastListener],
) -> ListenerView {
    let accept_queue = queues
        .iter()
        .find(|q| q.listener.as_deref() == Some(l.config.name.as_str()) && q.local == l.local_addr)
        .map(|q| {
            q.workers
                .iter()
                .map(|w| QueueView {
                    worker: w.worker,
                    queue: w.queue,
                    max: w.max,
                })
                .collect()
        })
        .unwrap_or_default();
    let s = &l.stats;
    let up = upstreams.iter().find(|u| u.name() == l.config.upstream);
    let persistence = up.and_then(|u| u.config.persistence.as_ref());
    let http = l.config.protocol.is_http().then(|| {
        let r = s.http.responses();
        let requests = s.http.requests();
        let sum_us = s.http.latency_sum_us.load(Ordering::Relaxed);
        HttpView {
            responses: (1..=5).map(|c| (format!("{c}xx"), r[c - 1])).collect(),
            requests,
            mean_latency_ms: if requests == 0 {
                0.0
            } else {
                sum_us as f64 / requests as f64 / 1000.0
            },
            too_large: s.too_large.load(Ordering::Relaxed),
            body_timeouts: s.body_timeouts.load(Ordering::Relaxed),
            send_timeouts: s.send_timeouts.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            bad_gateway: s.bad_gateway.load(Ordering::Relaxed),
            gateway_timeout: s.gateway_timeout.load(Ordering::Relaxed),
        }
    });
    ListenerView {
        name: l.config.name.clone(),
        protocol: l.config.protocol.as_str().to_owned(),
        address: l.local_addr.to_string(),
        upstream: l.config.upstream.clone(),
        scheduler: up.map_or("", |u| u.config.scheduler.as_str()).to_owned(),
        persistence_secs: persistence.map(|p| p.timeout.as_secs()),
        persistence_granularity: persistence.map(|p| p.granularity_v4),
        workers: s.accepted.len(),
        accepted: s.accepted_total(),
        accepted_per_worker: s.accepted_per_worker(),
        active: s.active.load(Ordering::Relaxed),
        no_server: s.no_server.load(Ordering::Relaxed),
        idle_timeouts: s.idle_timeouts.load(Ordering::Relaxed),
        proxy_refused: s.proxy_refused.load(Ordering::Relaxed),
        tls_failed: s.tls_failed.load(Ordering::Relaxed),
        accept_errors: s.accept_errors.load(Ordering::Relaxed),
        spliced: s.spliced.load(Ordering::Relaxed),
        http,
        accept_queue,
    }
}

/// The view of an upstream and its servers.
pub fn upstream_view(u: &Upstream) -> UpstreamView {
    let snapshot = u.snapshot();
    let entries = u
        .persistence
        .as_ref()
        .map(|p| p.entries_per_server(snapshot.servers.len()));
    let servers = snapshot
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let effective = snapshot.weights.get(i).copied().unwrap_or(0);
            let persisted = entries
                .as_ref()
                .and_then(|e| e.get(i))
                .copied()
                .unwrap_or(0);
            server_view(u, s, effective, persisted)
        })
        .collect();
    UpstreamView {
        name: u.name().to_owned(),
        scheduler: u.config.scheduler.as_str().to_owned(),
        no_server: u.stats.no_server.load(Ordering::Relaxed),
        editable: true,
        health_check: u
            .config
            .health
            .check
            .as_ref()
            .map(|c| c.kind.as_str().to_owned()),
        persistence: u.persistence.as_ref().map(|p| PersistenceView {
            timeout_secs: p.timeout().as_secs(),
            entries: p.len(),
            hits: p.stats.hits.load(Ordering::Relaxed),
            misses: p.stats.misses.load(Ordering::Relaxed),
            rescheduled: p.stats.rescheduled.load(Ordering::Relaxed),
            expired: p.stats.expired.load(Ordering::Relaxed),
            full: p.stats.full.load(Ordering::Relaxed),
        }),
        servers,
    }
}

fn server_view(u: &Upstream, s: &Server, effective: u32, persisted: u64) -> ServerView {
    let flags = s.state.flags();
    let admin = s.state.admin();
    let down = flags.is_down();
    let status = match admin {
        AdminState::Disabled => "disabled",
        _ if down => "down",
        AdminState::Draining => "draining",
        AdminState::Active => "up",
    };
    let st = &s.stats;
    ServerView {
        address: s.address().to_string(),
        role: if s.sorry {
            "sorry"
        } else if s.config.backup {
            "backup"
        } else {
            "primary"
        }
        .to_owned(),
        status: status.to_owned(),
        health: if down { "down" } else { "up" }.to_owned(),
        admin: admin.as_str().to_owned(),
        weight: s.state.weight(),
        effective_weight: effective,
        max_connections: s.config.max_connections,
        active_connections: st.active.load(Ordering::Relaxed),
        inactive_connections: 0,
        connections: st.connections.load(Ordering::Relaxed),
        requests: st.requests.load(Ordering::Relaxed),
        connect_errors: st.connect_errors.load(Ordering::Relaxed),
        errors: st.errors.load(Ordering::Relaxed),
        bytes_in: st.bytes_to_server.load(Ordering::Relaxed),
        bytes_out: st.bytes_from_server.load(Ordering::Relaxed),
        persistence_entries: persisted,
        checked: u.config.health.check.is_some() && s.config.check && !s.sorry,
        last_check: s.state.last_check().map(CheckView::from),
        health_transitions: s.state.transitions(),
    }
}
