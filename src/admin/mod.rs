//! The admin server: a JSON API over HTTP, Prometheus metrics and a live dashboard, on one
//! listener of its own (`[admin]`, 127.0.0.1:8404 or a unix socket by default).
//!
//! # Endpoints
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/` | the dashboard: one self-contained page, refreshed every second ([`dashboard`]) |
//! | GET | `/metrics` | Prometheus text exposition format ([`metrics`]) |
//! | GET | `/api/v1/status` | version, pid, configuration file, uptime, counts |
//! | GET | `/api/v1/listeners` | every listener (virtual service) with its counters and accept queues |
//! | POST | `/api/v1/listeners` | add a TCP listener (`ipvsadm -A`); body `{"name": "…", "bind": "IP:port", "upstream": "…"}` (optional `workers`, `backlog`) |
//! | GET | `/api/v1/listeners/{name}` | one listener |
//! | DELETE | `/api/v1/listeners/{name}` | remove a listener (`ipvsadm -D`): it stops accepting, its connections go on |
//! | GET | `/api/v1/upstreams` | every upstream with its servers: state, weights, connections, health, bytes, errors, persistence |
//! | GET | `/api/v1/upstreams/{name}` | one upstream |
//! | GET | `/api/v1/upstreams/{name}/servers` | its servers |
//! | POST | `/api/v1/upstreams/{name}/servers` | add a server (`ipvsadm -a`); body `{"address": "IP:port", "weight": 1, …}` |
//! | GET | `/api/v1/upstreams/{name}/servers/{address}` | one server |
//! | PATCH | `/api/v1/upstreams/{name}/servers/{address}` | edit a server (`ipvsadm -e`); body `{"weight": 3}` and/or `{"state": "draining"}` |
//! | DELETE | `/api/v1/upstreams/{name}/servers/{address}` | remove a server (`ipvsadm -d`) |
//! | POST | `/api/v1/upstreams/{name}/servers/{address}/drain` | no new connections, established ones go on |
//! | POST | `/api/v1/upstreams/{name}/servers/{address}/disable` | maintenance: no connections, no checks |
//! | POST | `/api/v1/upstreams/{name}/servers/{address}/enable` | back to active |
//! | POST | `/api/v1/reload` | re-read and apply the configuration file, as SIGHUP does |
//! | GET | `/api/v1/vrrp` | VRRP instances: state, priority, counters, drops by reason (404 without `[vrrp]`) |
//!
//! `docs/admin-api.yaml` is the OpenAPI description. Errors are `{"error": "…"}` with a status
//! that says whose fault it is (400 bad input, 401 no or wrong token, 404 unknown name, 409 a
//! change that cannot apply, 503 reload not available).
//!
//! # Access
//! On loopback or a unix socket, reads are open to the host; changes need the token when one is
//! configured. Bound anywhere else, a token is required by the configuration and every request
//! but `GET /` (the static page, which asks for the token) must carry it as
//! `Authorization: Bearer TOKEN`. Tokens are compared in constant time. Every change is logged
//! (target `ballast::admin`) with the peer, whether it carried the token, and what changed.
//!
//! # What it does not own
//! The state it shows and changes belongs to [`crate::upstream`] (snapshots, weights, membership)
//! and [`crate::health`] (operator states, checkers); this module only translates HTTP into
//! calls on them. Reloads are carried out by whoever runs the [`crate::runtime::Runtime`]
//! (`ballast run` answers them as it answers SIGHUP).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{AdminBind, AdminConfig, AdminToken, Config};
use crate::listener::Listener;
use crate::secret::Secret;
use crate::upstream::Upstream;

pub mod api;
pub mod client;
pub mod ctl;
pub mod dashboard;
pub mod metrics;
pub mod views;

/// Largest request body the admin API reads.
const MAX_BODY: usize = 64 * 1024;

/// Why the admin server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address or socket path could not be bound.
    #[error("admin: cannot listen on {bind}")]
    Bind {
        /// Where it tried.
        bind: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The token file could not be read or is empty.
    #[error("admin: cannot read token_file {path}")]
    TokenFile {
        /// The file.
        path: String,
        /// What the OS said (or that it was empty).
        #[source]
        source: std::io::Error,
    },
}

/// What the admin server shows and changes: the runtime's listeners and upstreams, swapped as
/// one on a reload.
#[derive(Debug, Clone)]
pub struct Services {
    /// The running listeners.
    pub listeners: Vec<Arc<Listener>>,
    /// The upstreams.
    pub upstreams: Vec<Arc<Upstream>>,
}

impl Services {
    /// The view of the running listeners and upstreams.
    pub fn new(listeners: Vec<Arc<Listener>>, upstreams: Vec<Arc<Upstream>>) -> Services {
        Services {
            listeners,
            upstreams,
        }
    }

    /// The upstream named `name`.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.name() == name)
    }
}

/// A change of the running configuration made through the API (a listener added or removed):
/// it turns the configuration now into the one wanted, or says why it cannot.
pub type ConfigEdit = Box<dyn FnOnce(&Config) -> Result<Config, String> + Send>;

/// A reload asked for through the API; the answer goes back on `reply`.
pub struct ReloadRequest {
    /// Who asked (for the log).
    pub who: String,
    /// `None`: re-read the configuration file. `Some`: apply this edit to the running
    /// configuration instead (the file is not read, nor written).
    pub edit: Option<ConfigEdit>,
    /// `Ok(summary)` when the new configuration runs, `Err(every problem)` when nothing changed.
    pub reply: oneshot::Sender<Result<String, Vec<String>>>,
}

impl std::fmt::Debug for ReloadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadRequest")
            .field("who", &self.who)
            .field("edit", &self.edit.is_some())
            .finish()
    }
}

/// State shared by the admin server's connections.
#[derive(Debug)]
pub struct Shared {
    /// The listeners and upstreams now.
    pub services: ArcSwap<Services>,
    /// The configuration file the runtime was started from.
    pub origin: String,
    /// When the runtime started.
    pub started: SystemTime,
    /// Stops health checkers (those of servers added through the API too).
    pub stop_checks: CancellationToken,
    /// Where reload requests go; `None` when nothing handles them.
    pub reload: Option<mpsc::Sender<ReloadRequest>>,
    /// Reloads applied and refused, and whether the last one was applied (for `/metrics`).
    pub reloads: ReloadStats,
    /// The runtime's access log, when it has one (for its drop counter).
    pub access_log: std::sync::OnceLock<Arc<crate::access_log::AccessLog>>,
    /// The VRRP instances, when `[vrrp]` is configured.
    pub vrrp: std::sync::OnceLock<Vec<Arc<crate::vrrp::InstanceStatus>>>,
    token: Option<Secret>,
    /// Whether reads need the token too (the bind is reachable from other hosts).
    reads_need_token: bool,
}

/// Reload outcomes since start.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Reloads applied.
    pub applied: std::sync::atomic::AtomicU64,
    /// Reloads refused (invalid file, or a change that needs a restart).
    pub refused: std::sync::atomic::AtomicU64,
    /// 1 when the last reload was applied (or none was tried), 0 when it was refused.
    pub last_ok: std::sync::atomic::AtomicBool,
}

impl ReloadStats {
    /// Counts one reload.
    pub fn record(&self, ok: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        if ok {
            self.applied.fetch_add(1, Relaxed);
        } else {
            self.refused.fetch_add(1, Relaxed);
        }
        self.last_ok.store(ok, Relaxed);
    }
}

/// A running admin server.
#[derive(Debug)]
pub struct AdminServer {
    /// Where it listens (the port filled in when the configuration said 0).
    pub bind: AdminBind,
    /// Its shared state.
    pub shared: Arc<Shared>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Stops accepting and ends its connections; waits for the accept loop to end.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        if let AdminBind::Unix(path) = &self.bind {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds the admin server and starts serving it on the current tokio runtime.
///
/// # Errors
/// When the address cannot be bound or the token file cannot be read.
pub async fn spawn(
    config: &AdminConfig,
    services: Services,
    origin: String,
    stop_checks: CancellationToken,
    reload: Option<mpsc::Sender<ReloadRequest>>,
) -> Result<AdminServer, AdminError> {
    let token = match &config.token {
        None => None,
        Some(AdminToken::Inline(t)) => Some(t.clone()),
        Some(AdminToken::File(path)) => {
            let err = |source| AdminError::TokenFile {
                path: path.display().to_string(),
                source,
            };
            let text = std::fs::read_to_string(path).map_err(err)?;
            let t = text.trim();
            if t.is_empty() {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the file is empty",
                )));
            }
            Some(Secret::new(t))
        }
    };
    let shared = Arc::new(Shared {
        services: ArcSwap::from_pointee(services),
        origin,
        started: SystemTime::now(),
        stop_checks,
        reload,
        reloads: ReloadStats {
            last_ok: std::sync::atomic::AtomicBool::new(true),
            ..ReloadStats::default()
        },
        access_log: std::sync::OnceLock::new(),
        vrrp: std::sync::OnceLock::new(),
        reads_need_token: !config.bind.is_local(),
        token,
    });
    let stop = CancellationToken::new();
    let bind_err = |source| AdminError::Bind {
        bind: config.bind.to_string(),
        source,
    };
    let (bind, task) = match &config.bind {
        AdminBind::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(bind_err)?;
            let local = listener.local_addr().map_err(bind_err)?;
            let task = tokio::spawn(accept_tcp(listener, Arc::clone(&shared), stop.clone()));
            (AdminBind::Tcp(local), task)
        }
        AdminBind::Unix(path) => {
            // A socket file left by an earlier run that did not stop cleanly would make bind fail.
            if std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                let _ = std::fs::remove_file(path);
            }
            let listener = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
            // Owner only: whoever can connect may change servers when no token is configured.
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(bind_err)?;
            let task = tokio::spawn(accept_unix(listener, Arc::clone(&shared), stop.clone()));
            (AdminBind::Unix(path.clone()), task)
        }
    };
    let auth = match (&shared.token, shared.reads_need_token) {
        (Some(_), true) => "bearer token required for every request",
        (Some(_), false) => "bearer token required for changes",
        (None, _) => "no token: open to this host",
    };
    tracing::info!(target: "ballast::admin", bind = %bind, auth, "admin API listening");
    Ok(AdminServer {
        bind,
        shared,
        stop,
        task,
    })
}

async fn accept_tcp(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(target: "ballast::admin", error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tokio::spawn(serve_conn(
            stream,
            peer.to_string(),
            Arc::clone(&shared),
            stop.clone(),
        ));
    }
}

async fn accept_unix(
    listener: tokio::net::UnixListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!(target: "ballast::admin", error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tokio::spawn(serve_conn(
            stream,
            "unix".to_owned(),
            Arc::clone(&shared),
            stop.clone(),
        ));
    }
}

async fn serve_conn<S>(stream: S, peer: String, shared: Arc<Shared>, stop: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let shared = Arc::clone(&shared);
        let peer = peer.clone();
        async move { Ok::<_, Infallible>(handle(req, &shared, &peer).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), conn).await;
        }
    }
}

/// Who made a request, for the change log.
#[derive(Debug, Clone)]
pub struct Who {
    /// The peer address (`unix` for the unix socket).
    pub peer: String,
    /// Whether it carried the valid token.
    pub token: bool,
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.token { "token" } else { "no token" };
        write!(f, "{} ({how})", self.peer)
    }
}

/// The response type of every endpoint.
pub type Resp = Response<Full<Bytes>>;

async fn handle(req: Request<Incoming>, shared: &Arc<Shared>, peer: &str) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let presented = bearer(&req);
    let token_ok = match (&shared.token, &presented) {
        (Some(t), Some(p)) => constant_time_eq(t.expose().as_bytes(), p.as_bytes()),
        _ => false,
    };
    let who = Who {
        peer: peer.to_owned(),
        token: token_ok,
    };
    let read = method == Method::GET || method == Method::HEAD;
    if needs_token(
        &method,
        &path,
        shared.token.is_some(),
        shared.reads_need_token,
    ) && !token_ok
    {
        let why = if presented.is_some() {
            "wrong token"
        } else {
            "this request needs Authorization: Bearer TOKEN"
        };
        tracing::info!(target: "ballast::admin", %who, %method, %path, why, "refused");
        let mut resp = api::error(StatusCode::UNAUTHORIZED, why);
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"ballast\""),
        );
        return resp;
    }
    let body = if read {
        Bytes::new()
    } else {
        match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return api::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the request body is too large or was cut off",
                )
            }
        }
    };
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (&method, segs.as_slice()) {
        (&Method::GET, []) => dashboard::page(),
        (&Method::GET, ["metrics"]) => metrics::endpoint(shared).await,
        (_, ["api", "v1", rest @ ..]) => api::route(shared, &who, &method, rest, &body).await,
        _ => api::error(
            StatusCode::NOT_FOUND,
            "no such endpoint; see /api/v1/status and docs/admin-api.yaml",
        ),
    }
}

/// Whether a request must carry the token: never without one configured; never for the page
/// itself (`GET /`, which asks for it); always for changes; for reads only when the admin
/// server is reachable from other hosts.
fn needs_token(method: &Method, path: &str, configured: bool, reads_need_token: bool) -> bool {
    let read = method == Method::GET || method == Method::HEAD;
    configured && !(read && path == "/") && (!read || reads_need_token)
}

/// The token of an `Authorization: Bearer …` header.
fn bearer(req: &Request<Incoming>) -> Option<String> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// Compares two secrets in time that depends only on their lengths, never on where they
/// differ (`subtle`'s constant-time comparison: no early exit, and its result is hidden from
/// the optimiser so the loop cannot be turned into one that stops at the first difference).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(a.ct_eq(b))
}

/// Decodes `%XX` escapes in a path segment (so `[::1]:80` can be written `%5B::1%5D:80`);
/// malformed escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The admin address a client reaches: `IP:port`, or a unix socket path.
pub fn parse_target(s: &str) -> Result<AdminBind, String> {
    if let Some(p) = s.strip_prefix("unix:") {
        return Ok(AdminBind::Unix(p.into()));
    }
    if s.starts_with('/') {
        return Ok(AdminBind::Unix(s.into()));
    }
    s.parse::<SocketAddr>()
        .map(AdminBind::Tcp)
        .map_err(|_| format!("{s:?} is neither IP:port nor a unix socket path"))
}

/// Starts the admin server of a runtime when its configuration has `[admin]`; also returns the
/// receiving end of the reload requests the API forwards.
///
/// # Errors
/// As [`spawn`].
pub async fn start_for(
    config: &Config,
    listeners: &[Arc<Listener>],
    upstreams: &[Arc<Upstream>],
    stop_checks: &CancellationToken,
) -> Result<Option<(AdminServer, mpsc::Receiver<ReloadRequest>)>, AdminError> {
    let Some(admin) = &config.admin else {
        return Ok(None);
    };
    let (tx, rx) = mpsc::channel(4);
    let services = Services::new(listeners.to_vec(), upstreams.to_vec());
    let server = spawn(
        admin,
        services,
        config.origin.clone(),
        stop_checks.clone(),
        Some(tx),
    )
    .await?;
    Ok(Some((server, rx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"secret-token-123", b"secret-token-123"));
        assert!(!constant_time_eq(b"secret-token-123", b"secret-token-124"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn the_token_is_asked_for_changes_and_off_loopback_for_reads() {
        let (get, post) = (Method::GET, Method::POST);
        // No token configured: open (the configuration only allows that on loopback or unix).
        assert!(!needs_token(&post, "/api/v1/reload", false, false));
        // Loopback with a token: reads open, changes need it.
        assert!(!needs_token(&get, "/api/v1/upstreams", true, false));
        assert!(!needs_token(&get, "/metrics", true, false));
        assert!(needs_token(&post, "/api/v1/reload", true, false));
        // Reachable from other hosts: everything but the page.
        assert!(needs_token(&get, "/api/v1/upstreams", true, true));
        assert!(needs_token(&get, "/metrics", true, true));
        assert!(!needs_token(&get, "/", true, true));
        assert!(needs_token(&post, "/", true, true));
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("%5B::1%5D:80"), "[::1]:80");
        assert_eq!(percent_decode("a%zz"), "a%zz");
    }
}
