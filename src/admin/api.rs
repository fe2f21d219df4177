//! `/api/v1`: JSON views of listeners, upstreams and servers built from the live state, and the
//! runtime changes (`ipvsadm -a/-e/-d`, drain, disable, enable, reload). See [`super`] for the
//! endpoint table.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use super::{ReloadRequest, Resp, Shared, Who};
use crate::config::{AdminState, ServerConfig};
use crate::listener::Listener;
use crate::upstream::{LastCheck, Server, Upstream};

// === views ===

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
    /// Whether servers can be added and removed at runtime (not while an HTTP listener uses it).
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
pub fn listener_view(l: &Listener, upstreams: &[Arc<Upstream>]) -> ListenerView {
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
    }
}

/// The view of an upstream and its servers.
pub fn upstream_view(u: &Upstream, editable: bool) -> UpstreamView {
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
        editable,
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

// === requests ===

/// `PATCH …/servers/{address}`: what to change (`ipvsadm -e`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EditServer {
    /// A new weight, 0..=65535.
    pub weight: Option<u32>,
    /// A new operator state: `active`, `draining` or `disabled`.
    pub state: Option<String>,
}

/// `POST …/servers`: a server to add (`ipvsadm -a`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddServer {
    /// `IP:port`.
    pub address: String,
    /// Weight, 0..=65535. Default 1.
    #[serde(default = "one")]
    pub weight: u32,
    /// `max_connections`; 0 = unlimited (default).
    #[serde(default)]
    pub max_connections: u32,
    /// A backup server. Default false.
    #[serde(default)]
    pub backup: bool,
    /// Run the upstream's active check against it. Default true.
    #[serde(default = "yes")]
    pub check: bool,
    /// Operator state to start in: `active` (default), `draining`, `disabled`.
    #[serde(default)]
    pub state: Option<String>,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

// === routing ===

/// Serves `/api/v1/{rest}`.
pub async fn route(
    shared: &Arc<Shared>,
    who: &Who,
    method: &Method,
    rest: &[&str],
    body: &Bytes,
) -> Resp {
    let services = shared.services.load_full();
    match (method, rest) {
        (&Method::GET, ["status"]) => {
            let servers = services
                .upstreams
                .iter()
                .map(|u| u.snapshot().servers.iter().filter(|s| !s.sorry).count())
                .sum();
            json(
                StatusCode::OK,
                &StatusView {
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    pid: std::process::id(),
                    config: shared.origin.clone(),
                    uptime_secs: shared.started.elapsed().map_or(0, |d| d.as_secs()),
                    listeners: services.listeners.len(),
                    upstreams: services.upstreams.len(),
                    servers,
                    vrrp: None,
                },
            )
        }
        (&Method::GET, ["listeners"]) => {
            let v: Vec<ListenerView> = services
                .listeners
                .iter()
                .map(|l| listener_view(l, &services.upstreams))
                .collect();
            json(StatusCode::OK, &v)
        }
        (&Method::GET, ["listeners", name]) => match services.listeners.iter().find(|l| l.config.name == *name) {
            Some(l) => json(StatusCode::OK, &listener_view(l, &services.upstreams)),
            None => error(StatusCode::NOT_FOUND, &format!("no listener named {name:?}")),
        },
        (&Method::POST | &Method::PUT | &Method::PATCH | &Method::DELETE, ["listeners", ..]) => error(
            StatusCode::NOT_IMPLEMENTED,
            "listeners (virtual services) are added, changed and removed through the configuration file and a reload (POST /api/v1/reload)",
        ),
        (&Method::GET, ["upstreams"]) => {
            let v: Vec<UpstreamView> = services
                .upstreams
                .iter()
                .map(|u| upstream_view(u, editable(&services, u)))
                .collect();
            json(StatusCode::OK, &v)
        }
        (&Method::GET, ["vrrp"]) => error(StatusCode::NOT_FOUND, "no VRRP instance is configured"),
        (&Method::POST, ["reload"]) => reload(shared, who).await,
        (_, ["upstreams", name, tail @ ..]) => {
            let Some(u) = services.upstream(name) else {
                return error(StatusCode::NOT_FOUND, &format!("no upstream named {name:?}"));
            };
            upstream_route(shared, &services, u, who, method, tail, body)
        }
        _ => error(StatusCode::NOT_FOUND, "no such endpoint; see docs/admin-api.yaml"),
    }
}

fn editable(services: &super::Services, u: &Upstream) -> bool {
    !services.http_upstreams.iter().any(|n| n == u.name())
}

fn upstream_route(
    shared: &Arc<Shared>,
    services: &super::Services,
    u: &Arc<Upstream>,
    who: &Who,
    method: &Method,
    tail: &[&str],
    body: &Bytes,
) -> Resp {
    match (method, tail) {
        (&Method::GET, []) => json(StatusCode::OK, &upstream_view(u, editable(services, u))),
        (&Method::GET, ["servers"]) => json(
            StatusCode::OK,
            &upstream_view(u, editable(services, u)).servers,
        ),
        (&Method::POST, ["servers"]) => add_server(shared, services, u, who, body),
        (_, ["servers", address, action @ ..]) => {
            let Ok(address) = address.parse::<SocketAddr>() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("{address:?} is not IP:port"),
                );
            };
            let found = u
                .snapshot()
                .servers
                .iter()
                .position(|s| s.address() == address);
            let Some(index) = found else {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("upstream {:?} has no server {address}", u.name()),
                );
            };
            match (method, action) {
                (&Method::GET, []) => {
                    let view = upstream_view(u, editable(services, u));
                    match view.servers.into_iter().nth(index) {
                        Some(s) => json(StatusCode::OK, &s),
                        None => error(StatusCode::NOT_FOUND, "the server was just removed"),
                    }
                }
                (&Method::PATCH | &Method::PUT, []) => {
                    let edit: EditServer = match parse_body(body) {
                        Ok(e) => e,
                        Err(resp) => return *resp,
                    };
                    edit_server(u, index, address, who, edit.weight, edit.state.as_deref())
                }
                (&Method::DELETE, []) => remove_server(services, u, address, who),
                (&Method::POST, ["drain"]) => {
                    edit_server(u, index, address, who, None, Some("draining"))
                }
                (&Method::POST, ["disable"]) => {
                    edit_server(u, index, address, who, None, Some("disabled"))
                }
                (&Method::POST, ["enable"]) => {
                    edit_server(u, index, address, who, None, Some("active"))
                }
                _ => error(
                    StatusCode::NOT_FOUND,
                    "no such endpoint; see docs/admin-api.yaml",
                ),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "no such endpoint; see docs/admin-api.yaml",
        ),
    }
}

fn parse_state(s: &str) -> Option<AdminState> {
    match s {
        "active" | "enable" | "enabled" | "ready" => Some(AdminState::Active),
        "draining" | "drain" => Some(AdminState::Draining),
        "disabled" | "disable" | "maint" => Some(AdminState::Disabled),
        _ => None,
    }
}

fn edit_server(
    u: &Arc<Upstream>,
    index: usize,
    address: SocketAddr,
    who: &Who,
    weight: Option<u32>,
    state: Option<&str>,
) -> Resp {
    let state = match state.map(|s| (s, parse_state(s))) {
        Some((s, None)) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("state {s:?} is not one of: active, draining, disabled"),
            )
        }
        Some((_, Some(st))) => Some(st),
        None => None,
    };
    if weight.is_none() && state.is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "nothing to change; give weight and/or state",
        );
    }
    if let Some(w) = weight.filter(|&w| w > 65535) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("weight {w} is out of range; allowed: 0..=65535"),
        );
    }
    if u.snapshot().servers.get(index).is_some_and(|s| s.sorry) {
        return error(
            StatusCode::CONFLICT,
            "the sorry server has no weight or state to change; change sorry_server in the configuration",
        );
    }
    if let Some(w) = weight {
        match u.set_weight(address, w) {
            Ok(old) => tracing::info!(target: "ballast::admin", %who, upstream = %u.name(),
                server = %address, from = old, to = w, "weight changed"),
            Err(e) => return error(StatusCode::NOT_FOUND, &e.to_string()),
        }
    }
    if let Some(st) = state {
        let reason = format!("admin API, {who}");
        u.set_server_state(index, st, &reason);
    }
    let view = upstream_view(u, true);
    match view.servers.into_iter().nth(index) {
        Some(s) => json(StatusCode::OK, &s),
        None => error(StatusCode::NOT_FOUND, "the server was just removed"),
    }
}

fn add_server(
    shared: &Arc<Shared>,
    services: &super::Services,
    u: &Arc<Upstream>,
    who: &Who,
    body: &Bytes,
) -> Resp {
    if !editable(services, u) {
        return not_editable(u);
    }
    let add: AddServer = match parse_body(body) {
        Ok(a) => a,
        Err(resp) => return *resp,
    };
    let Ok(address) = add.address.parse::<SocketAddr>() else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "address {:?} is not IP:port, such as \"10.0.0.1:80\"",
                add.address
            ),
        );
    };
    if address.port() == 0 || address.ip().is_unspecified() {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("{address} cannot be connected to; expected the server's IP and port"),
        );
    }
    if add.weight > 65535 {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("weight {} is out of range; allowed: 0..=65535", add.weight),
        );
    }
    let state = match add.state.as_deref().map(|s| (s, parse_state(s))) {
        None => AdminState::Active,
        Some((_, Some(st))) => st,
        Some((s, None)) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("state {s:?} is not one of: active, draining, disabled"),
            )
        }
    };
    let config = ServerConfig {
        address,
        weight: add.weight,
        max_connections: add.max_connections,
        backup: add.backup,
        check: add.check,
        check_port: None,
        state,
    };
    let server = match u.add_server(config) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::CONFLICT, &e.to_string()),
    };
    if let Err(e) = crate::health::spawn_server(u, &server, &shared.stop_checks) {
        tracing::warn!(target: "ballast::admin", upstream = %u.name(), server = %address,
            error = %e, "added server has no health checks");
    }
    tracing::info!(target: "ballast::admin", %who, upstream = %u.name(), server = %address,
        weight = add.weight, backup = add.backup, "server added");
    let view = upstream_view(u, true);
    match view
        .servers
        .into_iter()
        .find(|s| s.address == address.to_string())
    {
        Some(s) => json(StatusCode::CREATED, &s),
        None => error(StatusCode::CONFLICT, "the server was removed again at once"),
    }
}

fn remove_server(
    services: &super::Services,
    u: &Arc<Upstream>,
    address: SocketAddr,
    who: &Who,
) -> Resp {
    if !editable(services, u) {
        return not_editable(u);
    }
    match u.remove_server(address) {
        Ok(server) => {
            let active = server.active();
            tracing::info!(target: "ballast::admin", %who, upstream = %u.name(), server = %address,
                established = active, "server removed; its established connections go on");
            json(
                StatusCode::OK,
                &serde_json::json!({ "removed": address.to_string(), "established_connections": active }),
            )
        }
        Err(e @ crate::upstream::EditError::NoSuchServer { .. }) => {
            error(StatusCode::NOT_FOUND, &e.to_string())
        }
        Err(e) => error(StatusCode::CONFLICT, &e.to_string()),
    }
}

fn not_editable(u: &Upstream) -> Resp {
    error(
        StatusCode::CONFLICT,
        &format!(
            "upstream {:?} serves an HTTP listener, whose connection pools are per server: add or remove its servers in the configuration and reload; weight and state changes work",
            u.name()
        ),
    )
}

async fn reload(shared: &Arc<Shared>, who: &Who) -> Resp {
    let Some(tx) = &shared.reload else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this ballast does not take reloads through the API (not started by `ballast run`)",
        );
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    tracing::info!(target: "ballast::admin", %who, "reload requested");
    if tx
        .send(ReloadRequest {
            who: who.to_string(),
            reply,
        })
        .await
        .is_err()
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the runtime is shutting down",
        );
    }
    match answer.await {
        Ok(Ok(summary)) => json(
            StatusCode::OK,
            &serde_json::json!({ "reloaded": true, "summary": summary }),
        ),
        Ok(Err(problems)) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({
                "error": "the new configuration is invalid; nothing changed",
                "problems": problems,
            }),
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the reload was not answered",
        ),
    }
}

// === helpers ===

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Box<Resp>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("the body is not the expected JSON: {e}"),
        ))
    })
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Resp {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", Bytes::from(body))
}

/// `{"error": why}` with `status`.
pub fn error(status: StatusCode, why: &str) -> Resp {
    json(status, &serde_json::json!({ "error": why }))
}

/// A response with a body and its content type.
pub fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Resp {
    let mut resp = http::Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}
