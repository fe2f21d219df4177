//! `/api/v1`: JSON views of listeners, upstreams and servers built from the live state, and the
//! runtime changes (`ipvsadm -a/-e/-d`, drain, disable, enable, reload). See [`super`] for the
//! endpoint table.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use super::views::{listener_view, upstream_view, ListenerView, StatusView, UpstreamView};
use super::{ReloadRequest, Resp, Shared, Who};
use crate::config::{AdminState, Config, ServerConfig};
use crate::upstream::Upstream;

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

/// The answer to a change of a listener's settings.
const LISTENER_SETTINGS: &str = "a listener's settings change through the configuration file and a reload \
     (POST /api/v1/reload); a listener is added with POST /api/v1/listeners and removed with DELETE";

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
                    vrrp: shared
                        .vrrp
                        .get()
                        .map(|v| v.iter().map(|i| i.view()).collect()),
                },
            )
        }
        (&Method::GET, ["listeners"]) => {
            let queues = super::views::accept_queues(&services.listeners).await;
            let v: Vec<ListenerView> = services
                .listeners
                .iter()
                .map(|l| listener_view(l, &services.upstreams, &queues))
                .collect();
            json(StatusCode::OK, &v)
        }
        (&Method::GET, ["listeners", name]) => {
            match services.listeners.iter().find(|l| l.config.name == *name) {
                Some(l) => {
                    let queues = super::views::accept_queues(std::slice::from_ref(l)).await;
                    json(
                        StatusCode::OK,
                        &listener_view(l, &services.upstreams, &queues),
                    )
                }
                None => error(
                    StatusCode::NOT_FOUND,
                    &format!("no listener named {name:?}"),
                ),
            }
        }
        (&Method::POST, ["listeners"]) => add_listener(shared, who, body).await,
        (&Method::DELETE, ["listeners", name]) => remove_listener(shared, who, name).await,
        (&Method::POST | &Method::PUT | &Method::PATCH | &Method::DELETE, ["listeners", ..]) => {
            error(StatusCode::NOT_IMPLEMENTED, LISTENER_SETTINGS)
        }
        (&Method::GET, ["upstreams"]) => {
            let v: Vec<UpstreamView> = services
                .upstreams
                .iter()
                .map(|u| upstream_view(u))
                .collect();
            json(StatusCode::OK, &v)
        }
        (&Method::GET, ["vrrp"]) => match shared.vrrp.get() {
            Some(v) => json(
                StatusCode::OK,
                &v.iter().map(|i| i.view()).collect::<Vec<_>>(),
            ),
            None => error(StatusCode::NOT_FOUND, "no VRRP instance is configured"),
        },
        (&Method::POST, ["reload"]) => reload(shared, who).await,
        (_, ["upstreams", name, tail @ ..]) => {
            let Some(u) = services.upstream(name) else {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("no upstream named {name:?}"),
                );
            };
            upstream_route(shared, u, who, method, tail, body)
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "no such endpoint; see docs/admin-api.yaml",
        ),
    }
}

fn upstream_route(
    shared: &Arc<Shared>,
    u: &Arc<Upstream>,
    who: &Who,
    method: &Method,
    tail: &[&str],
    body: &Bytes,
) -> Resp {
    match (method, tail) {
        (&Method::GET, []) => json(StatusCode::OK, &upstream_view(u)),
        (&Method::GET, ["servers"]) => json(StatusCode::OK, &upstream_view(u).servers),
        (&Method::POST, ["servers"]) => add_server(shared, u, who, body),
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
                    let view = upstream_view(u);
                    match view.servers.into_iter().nth(index) {
                        Some(s) => json(StatusCode::OK, &s),
                        None => error(StatusCode::NOT_FOUND, "the server was just removed"),
                    }
                }
                (&Method::PATCH | &Method::PUT, []) => match parse_edit_server(body) {
                    Ok(change) => edit_server(u, index, address, who, change),
                    Err(why) => error(StatusCode::BAD_REQUEST, &why),
                },
                (&Method::DELETE, []) => remove_server(u, address, who),
                (&Method::POST, ["drain"]) => edit_server(
                    u,
                    index,
                    address,
                    who,
                    ServerChange::state(AdminState::Draining),
                ),
                (&Method::POST, ["disable"]) => edit_server(
                    u,
                    index,
                    address,
                    who,
                    ServerChange::state(AdminState::Disabled),
                ),
                (&Method::POST, ["enable"]) => edit_server(
                    u,
                    index,
                    address,
                    who,
                    ServerChange::state(AdminState::Active),
                ),
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

/// A validated `PATCH …/servers/{address}` body, or what a drain/disable/enable action asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerChange {
    /// The new weight, 0..=65535.
    pub weight: Option<u32>,
    /// The new operator state.
    pub state: Option<AdminState>,
}

impl ServerChange {
    fn state(state: AdminState) -> ServerChange {
        ServerChange {
            weight: None,
            state: Some(state),
        }
    }
}

/// Parses and checks a `PATCH …/servers/{address}` body.
///
/// # Errors
/// The message a 400 answer carries: not the expected JSON, an unknown state, a weight out of
/// range, or nothing to change.
#[doc(hidden)]
pub fn parse_edit_server(body: &[u8]) -> Result<ServerChange, String> {
    let edit: EditServer = parse_body(body)?;
    let state = match edit.state.as_deref().map(|s| (s, parse_state(s))) {
        Some((s, None)) => {
            return Err(format!(
                "state {s:?} is not one of: active, draining, disabled"
            ))
        }
        Some((_, Some(st))) => Some(st),
        None => None,
    };
    if edit.weight.is_none() && state.is_none() {
        return Err("nothing to change; give weight and/or state".to_owned());
    }
    if let Some(w) = edit.weight.filter(|&w| w > 65535) {
        return Err(format!("weight {w} is out of range; allowed: 0..=65535"));
    }
    Ok(ServerChange {
        weight: edit.weight,
        state,
    })
}

fn edit_server(
    u: &Arc<Upstream>,
    index: usize,
    address: SocketAddr,
    who: &Who,
    change: ServerChange,
) -> Resp {
    if u.snapshot().servers.get(index).is_some_and(|s| s.sorry) {
        return error(
            StatusCode::CONFLICT,
            "the sorry server has no weight or state to change; change sorry_server in the configuration",
        );
    }
    if let Some(w) = change.weight {
        match u.set_weight(address, w) {
            Ok(old) => tracing::info!(target: "ballast::admin", %who, upstream = %u.name(),
                server = %address, from = old, to = w, "weight changed"),
            Err(e) => return error(StatusCode::NOT_FOUND, &e.to_string()),
        }
    }
    if let Some(st) = change.state {
        let reason = format!("admin API, {who}");
        u.set_server_state(index, st, &reason);
    }
    let view = upstream_view(u);
    match view.servers.into_iter().nth(index) {
        Some(s) => json(StatusCode::OK, &s),
        None => error(StatusCode::NOT_FOUND, "the server was just removed"),
    }
}

/// Parses and checks a `POST …/servers` body into the server to add.
///
/// # Errors
/// The message a 400 answer carries: not the expected JSON, an address that is not IP:port or
/// cannot be connected to, a weight out of range, or an unknown state.
#[doc(hidden)]
pub fn parse_add_server(body: &[u8]) -> Result<ServerConfig, String> {
    let add: AddServer = parse_body(body)?;
    let Ok(address) = add.address.parse::<SocketAddr>() else {
        return Err(format!(
            "address {:?} is not IP:port, such as \"10.0.0.1:80\"",
            add.address
        ));
    };
    if address.port() == 0 || address.ip().is_unspecified() {
        return Err(format!(
            "{address} cannot be connected to; expected the server's IP and port"
        ));
    }
    if add.weight > 65535 {
        return Err(format!(
            "weight {} is out of range; allowed: 0..=65535",
            add.weight
        ));
    }
    let state = match add.state.as_deref().map(|s| (s, parse_state(s))) {
        None => AdminState::Active,
        Some((_, Some(st))) => st,
        Some((s, None)) => {
            return Err(format!(
                "state {s:?} is not one of: active, draining, disabled"
            ))
        }
    };
    Ok(ServerConfig {
        address,
        weight: add.weight,
        max_connections: add.max_connections,
        backup: add.backup,
        check: add.check,
        check_port: None,
        state,
    })
}

fn add_server(shared: &Arc<Shared>, u: &Arc<Upstream>, who: &Who, body: &Bytes) -> Resp {
    let config = match parse_add_server(body) {
        Ok(c) => c,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let (address, weight, backup) = (config.address, config.weight, config.backup);
    let server = match u.add_server(config) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::CONFLICT, &e.to_string()),
    };
    if let Err(e) = crate::health::spawn_server(u, &server, &shared.stop_checks) {
        tracing::warn!(target: "ballast::admin", upstream = %u.name(), server = %address,
            error = %e, "added server has no health checks");
    }
    tracing::info!(target: "ballast::admin", %who, upstream = %u.name(), server = %address,
        weight, backup, "server added");
    let view = upstream_view(u);
    match view
        .servers
        .into_iter()
        .find(|s| s.address == address.to_string())
    {
        Some(s) => json(StatusCode::CREATED, &s),
        None => error(StatusCode::CONFLICT, "the server was removed again at once"),
    }
}

fn remove_server(u: &Arc<Upstream>, address: SocketAddr, who: &Who) -> Resp {
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

async fn reload(shared: &Arc<Shared>, who: &Who) -> Resp {
    tracing::info!(target: "ballast::admin", %who, "reload requested");
    match ask_runtime(shared, who, None).await {
        Ok(Ok(summary)) => json(
            StatusCode::OK,
            &serde_json::json!({ "reloaded": true, "summary": summary }),
        ),
        Ok(Err(problems)) => refused(problems),
        Err(resp) => *resp,
    }
}

fn refused(problems: Vec<String>) -> Resp {
    json(
        StatusCode::UNPROCESSABLE_ENTITY,
        &serde_json::json!({
            "error": "the new configuration is invalid or needs a restart; nothing changed",
            "problems": problems,
        }),
    )
}

/// Sends a reload (or a configuration edit) to the runtime's owner and waits, bounded, for the
/// outcome.
async fn ask_runtime(
    shared: &Arc<Shared>,
    who: &Who,
    edit: Option<super::ConfigEdit>,
) -> Result<Result<String, Vec<String>>, Box<Resp>> {
    let Some(tx) = &shared.reload else {
        return Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this ballast does not take configuration changes through the API (not started by `ballast run`)",
        )));
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = ReloadRequest {
        who: who.to_string(),
        edit,
        reply,
    };
    if tx.send(request).await.is_err() {
        return Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the runtime is shutting down",
        )));
    }
    // Bounded: a runtime whose owner does not take requests never answers.
    match tokio::time::timeout(std::time::Duration::from_secs(60), answer).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(_)) => Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the request was not answered",
        ))),
        Err(_) => Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the request was not answered within 60 s",
        ))),
    }
}

/// `POST /api/v1/listeners`: a TCP listener to add (`ipvsadm -A`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddListener {
    /// Its name (unique).
    pub name: String,
    /// `IP:port`.
    pub bind: String,
    /// The upstream that serves it.
    pub upstream: String,
    /// Accept workers; default 1 (0 = one per core).
    #[serde(default)]
    pub workers: Option<u32>,
    /// listen(2) backlog; default as in the configuration file.
    #[serde(default)]
    pub backlog: Option<u32>,
}

/// The listener `add` describes, validated as the configuration file is (defaults filled in), or
/// every problem found.
fn listener_config(add: &AddListener) -> Result<crate::config::ListenerConfig, Vec<String>> {
    // JSON string syntax is valid TOML basic-string syntax, so values cannot break out.
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut text = format!(
        "[[listener]]\nname = {}\nbind = {}\nupstream = {}\nworkers = {}\n",
        q(&add.name),
        q(&add.bind),
        q(&add.upstream),
        add.workers.unwrap_or(1)
    );
    if let Some(b) = add.backlog {
        text.push_str(&format!("backlog = {b}\n"));
    }
    // A stand-in upstream for the cross-reference check; the real one is checked by the edit.
    text.push_str(&format!(
        "\n[[upstream]]\nname = {}\n[[upstream.server]]\naddress = \"127.0.0.1:1\"\n",
        q(&add.upstream)
    ));
    let mut config = crate::config::Config::from_str(&text, "<api>").map_err(|e| {
        e.diagnostics()
            .iter()
            .map(|d| format!("{}: {}", d.key, d.message))
            .collect::<Vec<_>>()
    })?;
    config
        .listeners
        .pop()
        .ok_or_else(|| vec!["no listener".to_owned()])
}

/// Why a `POST /api/v1/listeners` body was refused.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerBodyError {
    /// Not the expected JSON.
    Json(String),
    /// Valid JSON, but not a valid listener: every problem found.
    Invalid(Vec<String>),
}

/// Parses a `POST /api/v1/listeners` body into the listener it describes, validated as the
/// configuration file is.
///
/// # Errors
/// [`ListenerBodyError`].
#[doc(hidden)]
pub fn parse_add_listener(body: &[u8]) -> Result<crate::config::ListenerConfig, ListenerBodyError> {
    let add: AddListener = parse_body(body).map_err(ListenerBodyError::Json)?;
    listener_config(&add).map_err(ListenerBodyError::Invalid)
}

/// The running configuration with `listener` added: the edit `POST /api/v1/listeners` asks the
/// runtime for, which then reloads to the result.
///
/// # Errors
/// A listener of that name exists, or its upstream does not.
#[doc(hidden)]
pub fn with_listener(
    config: &Config,
    listener: crate::config::ListenerConfig,
) -> Result<Config, String> {
    if config.listeners.iter().any(|l| l.name == listener.name) {
        return Err(format!("a listener named {:?} exists", listener.name));
    }
    if config.upstream(&listener.upstream).is_none() {
        return Err(format!("no upstream named {:?}", listener.upstream));
    }
    let mut new = config.clone();
    new.listeners.push(listener);
    Ok(new)
}

/// The running configuration without listener `name`: the edit `DELETE /api/v1/listeners/{name}`
/// asks the runtime for.
///
/// # Errors
/// No such listener, or it is the last one.
#[doc(hidden)]
pub fn without_listener(config: &Config, name: &str) -> Result<Config, String> {
    if !config.listeners.iter().any(|l| l.name == name) {
        return Err(format!("no listener named {name:?}"));
    }
    if config.listeners.len() == 1 {
        return Err(format!(
            "{name:?} is the last listener; ballast keeps at least one"
        ));
    }
    let mut new = config.clone();
    new.listeners.retain(|l| l.name != name);
    Ok(new)
}

async fn add_listener(shared: &Arc<Shared>, who: &Who, body: &Bytes) -> Resp {
    let listener = match parse_add_listener(body) {
        Ok(l) => l,
        Err(ListenerBodyError::Json(why)) => return error(StatusCode::BAD_REQUEST, &why),
        Err(ListenerBodyError::Invalid(problems)) => {
            return json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": "invalid listener", "problems": problems }),
            )
        }
    };
    let name = listener.name.clone();
    let (bind, upstream) = (listener.bind, listener.upstream.clone());
    let edit: super::ConfigEdit = Box::new(move |config| with_listener(config, listener));
    tracing::info!(target: "ballast::admin", %who, listener = %name, %bind,
        %upstream, "listener add requested");
    match ask_runtime(shared, who, Some(edit)).await {
        Ok(Ok(_)) => {
            let services = shared.services.load_full();
            match services.listeners.iter().find(|l| l.config.name == name) {
                Some(l) => {
                    let queues = super::views::accept_queues(std::slice::from_ref(l)).await;
                    json(
                        StatusCode::CREATED,
                        &listener_view(l, &services.upstreams, &queues),
                    )
                }
                None => error(
                    StatusCode::CONFLICT,
                    "the listener was removed again at once",
                ),
            }
        }
        Ok(Err(problems)) => json(
            StatusCode::CONFLICT,
            &serde_json::json!({ "error": "the listener cannot be added; nothing changed", "problems": problems }),
        ),
        Err(resp) => *resp,
    }
}

async fn remove_listener(shared: &Arc<Shared>, who: &Who, name: &str) -> Resp {
    let wanted = name.to_owned();
    let edit: super::ConfigEdit = Box::new(move |config| without_listener(config, &wanted));
    tracing::info!(target: "ballast::admin", %who, listener = %name, "listener removal requested");
    match ask_runtime(shared, who, Some(edit)).await {
        Ok(Ok(_)) => json(
            StatusCode::OK,
            &serde_json::json!({ "removed": name, "note": "it stopped accepting; its connections go on" }),
        ),
        Ok(Err(problems)) if problems.iter().any(|p| p.starts_with("no listener")) => {
            error(StatusCode::NOT_FOUND, &problems.join("; "))
        }
        Ok(Err(problems)) => json(
            StatusCode::CONFLICT,
            &serde_json::json!({ "error": "the listener cannot be removed; nothing changed", "problems": problems }),
        ),
        Err(resp) => *resp,
    }
}

// === helpers ===

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("the body is not the expected JSON: {e}"))
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
