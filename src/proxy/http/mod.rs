//! The HTTP reverse proxy: nginx `upstream` + `proxy_pass`, HAProxy `mode http`.
//!
//! ```text
//! client ─HTTP/1.1 or h2c─▶ hyper server conn ─▶ handle(request)
//!     route by host + path ─▶ upstream ─▶ scheduler picks a server (per request)
//!     headers: hop-by-hop out, X-Forwarded-* / Forwarded / Via / request id in
//!     kept-alive connection from the server's pool, or a new one (connect_timeout; a failed
//!     connect retries another server, the request is not sent yet so nothing is lost)
//!     send, wait for the response head (response_timeout) ─▶ stream the body back
//!     body finished ─▶ the connection returns to the server's pool
//! ```
//!
//! Errors answer the client, never hang it: 503 when no server can take the request (or ballast
//! is short of descriptors to reach one), 502 when the server fails (connect refused everywhere,
//! reset, malformed response), 504 when it does not answer within `response_timeout`. Each is
//! counted on the listener. A client that stops reading its response is closed after
//! `send_timeout` ([`send_timeout`]).
//!
//! Built on hyper 1.x: `hyper_util`'s auto builder serves HTTP/1.1 and cleartext HTTP/2 (prior
//! knowledge) on the same port; servers are spoken to in HTTP/1.1 through
//! `hyper::client::conn::http1` with ballast's own per-server pool (see [`pool`]), because the
//! pool must follow the scheduler's per-request choice of server. Each server carries its pool
//! ([`Server::pool`](crate::upstream::Server)), so servers can be added to and removed from an
//! upstream at runtime without disturbing the pools of the others.
//!
//! An upstream with `send_proxy` gets a PROXY header at the start of each server connection. Such
//! a connection speaks for one client, so it is private to the client connection that opened it
//! (kept alive for that client's later requests and closed with it), as HAProxy does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::RetryOn;
use crate::listener::socket::tune_stream;
use crate::scheduler::PickContext;
use crate::upstream::{Refusal, Server, ServerGuard, Tried, Upstream, UpstreamSnapshot};

pub mod body;
pub mod head;
pub mod headers;
pub mod pool;
pub mod route;
pub mod send_timeout;

use body::Pooled;
pub use body::{BodyFault, ProxyBody, RequestBody};

use pool::{Sender, ServerPool};
use route::Router;

use super::proxy_protocol::write_header;
use super::{client_addresses, ActiveGuard, Route};

/// An upstream as HTTP sees it: the upstream and TLS to the servers when configured. Kept-alive
/// connections are in each server's own pool (`Server::pool`), unused when the upstream is sent
/// PROXY headers: each client connection then keeps its own, see [`Ctx::private`].
pub struct HttpUpstream {
    /// The upstream.
    pub upstream: Arc<Upstream>,
    /// TLS to the servers (`tls = true`).
    tls: Option<UpstreamTls>,
}

/// What connecting with TLS needs.
struct UpstreamTls {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for HttpUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpUpstream")
            .field("upstream", &self.upstream.name())
            .field("servers", &self.upstream.snapshot().servers.len())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl HttpUpstream {
    /// `upstream` with its TLS client configuration.
    ///
    /// # Errors
    /// When TLS to the servers is configured and its CA file cannot be used.
    pub fn new(upstream: Arc<Upstream>) -> Result<HttpUpstream, crate::tls::TlsError> {
        let http = &upstream.config.http;
        let tls = match &http.tls {
            None => None,
            Some(t) => {
                let alpn: &[&[u8]] = if http.http2 { &[b"h2"] } else { &[b"http/1.1"] };
                let config = crate::tls::client_config(&t.verify, alpn)?;
                Some(UpstreamTls {
                    connector: tokio_rustls::TlsConnector::from(config),
                    server_name: t
                        .server_name
                        .as_ref()
                        .and_then(|n| ServerName::try_from(n.clone()).ok()),
                })
            }
        };
        Ok(HttpUpstream { upstream, tls })
    }
}

/// What an HTTP listener needs besides its own settings: its routes and the upstreams they name.
pub struct HttpRoutes {
    /// The compiled routes; their indices point into `upstreams`.
    pub router: Router,
    /// Every upstream of the configuration, shared with other listeners.
    pub upstreams: Vec<Arc<HttpUpstream>>,
    /// TLS termination, for https listeners.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for HttpRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRoutes")
            .field("router", &self.router)
            .field("upstreams", &self.upstreams.len())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Serves one accepted client connection: HTTP/1.1 with keep-alive, or h2c.
pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    route: Arc<Route>,
    abort: CancellationToken,
) {
    let listener = &route.listener;
    listener.stats.active.fetch_add(1, Ordering::Relaxed);
    let _active = ActiveGuard(&listener.stats.active);
    let Some((peer, destination)) = client_addresses(&mut stream, peer, listener).await else {
        return;
    };
    let Some(http) = route.http.clone() else {
        return;
    };
    let cfg = &listener.config.http;
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout)
        .max_buf_size(cfg.max_header_size)
        .max_headers(cfg.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(cfg.max_header_size).unwrap_or(u32::MAX));
    let ctx = Arc::new(Ctx {
        route: Arc::clone(&route),
        abort: abort.clone(),
        proto: if http.tls.is_some() { "https" } else { "http" },
        http: Arc::clone(&http),
        peer,
        client_value: HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown")),
        destination,
        private: Mutex::new(Vec::new()),
        request_id: HeaderName::from_bytes(cfg.request_id_header.as_bytes())
            .unwrap_or(HeaderName::from_static("x-request-id")),
    });
    let activity = Arc::new(Activity::new());
    let seen = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        let seen = Arc::clone(&seen);
        async move {
            let _busy = seen.begin();
            let started = std::time::Instant::now();
            let logged = ctx.route.access_log.as_ref().map(|log| {
                let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                (Arc::clone(log), req.method().to_string(), path.to_owned())
            });
            // Boxed: hyper keeps the slot for the service's future allocated for the connection's
            // whole life, so an unboxed `handle` (everything a request can go through, several
            // KiB) would cost every idle kept-alive connection that much. Boxed, the slot holds a
            // pointer and the request's state exists only while a request is in flight.
            let resp = Box::pin(handle(req, &ctx)).await;
            let stats = &ctx.route.listener.stats.http;
            stats.record(resp.status().as_u16(), started.elapsed());
            let pending = logged.map(|(log, method, path)| {
                Box::new(crate::access_log::Pending {
                    log,
                    listener: ctx.route.listener.config.name.clone(),
                    client: ctx.peer,
                    method,
                    path,
                    status: resp.status().as_u16(),
                    started,
                    server: resp
                        .extensions()
                        .get::<crate::access_log::ServedBy>()
                        .map(|s| s.0),
                    request_id: resp
                        .headers()
                        .get(&ctx.request_id)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned(),
                })
            });
            Ok::<_, Infallible>(resp.map(|b| crate::access_log::Logged::new(b, pending)))
        }
    });
    let idle = (&*activity, cfg.header_timeout);
    let stream = send_timeout::SendTimeout::new(stream, Arc::clone(listener));
    // The TLS states are boxed so that they do not enlarge every plain connection's task (this
    // future is as large as its largest branch, for the connection's whole life).
    let result = match &http.tls {
        None => run_conn(&builder, stream, service, &abort, idle).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(cfg.header_timeout, acceptor.accept(stream));
            match Box::pin(handshake).await {
                Ok(Ok(tls)) => Box::pin(run_conn(&builder, tls, service, &abort, idle)).await,
                Ok(Err(e)) => {
                    listener.stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(listener = %listener.config.name, %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    listener.stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(listener = %listener.config.name, %peer, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(listener = %listener.config.name, %peer, error = %e, "client connection ended with an error");
    }
}

/// When a client connection last had a request in flight: for the idle timeout of HTTP/2
/// connections (hyper times out idle HTTP/1.1 connections itself, with `header_read_timeout`).
#[derive(Debug)]
struct Activity {
    /// Requests being handled now.
    in_flight: std::sync::atomic::AtomicU32,
    /// When the last one started or ended, in milliseconds since `epoch`.
    last_ms: std::sync::atomic::AtomicU64,
    epoch: tokio::time::Instant,
}

/// One request in flight; its end counts as activity.
struct Busy<'a>(&'a Activity);

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: std::sync::atomic::AtomicU32::new(0),
            last_ms: std::sync::atomic::AtomicU64::new(0),
            epoch: tokio::time::Instant::now(),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn begin(&self) -> Busy<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        Busy(self)
    }

    /// When the connection will have been idle for `timeout`, if nothing happens before; `None`
    /// while a request is in flight.
    fn idle_deadline(&self, timeout: std::time::Duration) -> Option<tokio::time::Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.epoch + last + timeout)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves HTTP on one (plain or TLS) client stream until it closes; until `abort`, when the
/// request in flight may finish before the connection closes; or until it has had no request in
/// flight for the idle timeout, when it is closed the same graceful way (HTTP/2: GOAWAY, and the
/// client opens a new connection for its next request).
async fn run_conn<S, Svc>(
    builder: &hyper_util::server::conn::auto::Builder<TokioExecutor>,
    stream: S,
    service: Svc,
    abort: &CancellationToken,
    (activity, idle_timeout): (&Activity, std::time::Duration),
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<
            Request<Incoming>,
            Response = Response<crate::access_log::Logged<ProxyBody>>,
            Error = Infallible,
        > + Send
        + 'static,
    Svc::Future: Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // The idle check wakes once per timeout at most, not per request.
    let check = tokio::time::sleep(idle_timeout);
    tokio::pin!(check);
    loop {
        tokio::select! {
            r = conn.as_mut() => return r,
            () = abort.cancelled() => break,
            () = check.as_mut() => {
                match activity.idle_deadline(idle_timeout) {
                    Some(at) if at <= tokio::time::Instant::now() => break,
                    Some(at) => check.as_mut().reset(at),
                    None => check.as_mut().reset(tokio::time::Instant::now() + idle_timeout),
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}

/// Per-connection context shared by its requests.
struct Ctx {
    route: Arc<Route>,
    /// Cancelled when shutdown's grace period ends (ends upgraded tunnels too).
    abort: CancellationToken,
    /// `http` or `https`, for X-Forwarded-Proto.
    proto: &'static str,
    http: Arc<HttpRoutes>,
    /// The client's address (from the PROXY header when the listener accepts one).
    peer: SocketAddr,
    /// The client's IP address as a header value, for X-Forwarded-For.
    client_value: HeaderValue,
    /// The address the client connected to, as a PROXY header to servers states it.
    destination: SocketAddr,
    /// Server connections that carry this client's PROXY header, so no other client may use them
    /// (HAProxy's private connections): one pool per server this connection used, closed with
    /// it, or at its next request once that server has left its upstream.
    private: Mutex<Vec<PrivatePool>>,
    request_id: HeaderName,
}

/// A client connection's own pool of connections to one server, known by identity (the same
/// address may come back as a new server after a removal; it gets a pool of its own).
struct PrivatePool {
    server: Arc<Server>,
    pool: Arc<ServerPool>,
}

impl Ctx {
    /// The pool a request to `server` of `up` takes its connection from and returns it to: the
    /// server's own, or this client connection's private one when the upstream sends PROXY
    /// headers. Private pools of servers that have left their upstream are dropped here, which
    /// closes their idle connections.
    fn pool(&self, up: &HttpUpstream, server: &Arc<Server>) -> Option<Arc<ServerPool>> {
        if up.upstream.config.send_proxy.is_none() {
            return Some(Arc::clone(&server.pool));
        }
        let mut private = self.private.lock().ok()?;
        private.retain(|p| !p.server.pool.is_retired());
        if let Some(p) = private.iter().find(|p| Arc::ptr_eq(&p.server, server)) {
            return Some(Arc::clone(&p.pool));
        }
        let pool = Arc::new(ServerPool::default());
        private.push(PrivatePool {
            server: Arc::clone(server),
            pool: Arc::clone(&pool),
        });
        Some(pool)
    }
}

async fn handle(mut req: Request<Incoming>, ctx: &Ctx) -> Response<ProxyBody> {
    let listener = &ctx.route.listener;
    let lcfg = &listener.config;
    if let Some((status, why)) = head::refused(&req) {
        return error(status, why);
    }
    let host_value = head::request_host(&req);
    let host_with_port = host_value
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    // A body announced bigger than allowed is refused before anything is sent.
    let limit = lcfg.http.max_body_size;
    if limit > 0 && req.body().size_hint().lower() > limit {
        listener.stats.too_large.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than allowed",
        );
    }
    let target = ctx
        .http
        .router
        .find(head::strip_port(host_with_port), req.uri().path());
    let Some(up) = ctx.http.upstreams.get(target.upstream) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no upstream for this request",
        );
    };

    // An HTTP/1.1 Upgrade (WebSocket…) keeps its Upgrade header and becomes a tunnel after 101.
    let upgrade =
        headers::requested_upgrade(&req).map(|protocol| (protocol, hyper::upgrade::on(&mut req)));

    let request_id = head::rewrite_for_server(
        &mut req,
        &head::Rewrite {
            upgrade: upgrade.as_ref().map(|(protocol, _)| protocol),
            forwarding: headers::Forwarding {
                client: ctx.peer.ip(),
                client_value: &ctx.client_value,
                host: host_value.as_ref(),
                proto: ctx.proto,
                forwarded: lcfg.http.forwarded,
                via: lcfg.http.via,
            },
            host_rewrite: target.host_rewrite,
            request_id: &ctx.request_id,
        },
    );

    let fault = Arc::new(AtomicU8::new(0));
    let req = req.map(|body| RequestBody {
        inner: Some(body),
        remaining: if limit == 0 { u64::MAX } else { limit },
        fault: Arc::clone(&fault),
        timeout: lcfg.http.body_timeout,
        timer: None,
        waiting: false,
    });
    let mut resp = forward(req, ctx, up, upgrade.map(|(_, on)| on)).await;
    match BodyFault::read(&fault) {
        Some(BodyFault::TooLarge) => {
            listener.stats.too_large.fetch_add(1, Ordering::Relaxed);
            resp = error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than allowed",
            );
        }
        Some(BodyFault::TooSlow) => {
            listener.stats.body_timeouts.fetch_add(1, Ordering::Relaxed);
            resp = error(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            );
        }
        Some(BodyFault::Malformed) => {
            resp = error(StatusCode::BAD_REQUEST, "the request body is malformed");
        }
        None => {}
    }
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    let kept = switching.then(|| h.get(header::UPGRADE).cloned()).flatten();
    headers::remove_hop_by_hop(h);
    if let Some(protocol) = kept {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, protocol);
    }
    if lcfg.http.via {
        h.append(header::VIA, headers::VIA_VALUE);
    }
    h.insert(ctx.request_id.clone(), request_id);
    resp
}

/// Picks a server, gets a connection to it (retrying other servers while connects fail), sends
/// the request and returns the response, or the error response the client should see.
async fn forward(
    req: Request<RequestBody>,
    ctx: &Ctx,
    up: &Arc<HttpUpstream>,
    mut upgrade: Option<OnUpgrade>,
) -> Response<ProxyBody> {
    let listener = &ctx.route.listener;
    let upstream = &up.upstream;
    let ucfg = &upstream.config;
    let snapshot = upstream.snapshot();
    let pick = PickContext {
        client: ctx.peer.ip(),
        local: listener.local_addr.ip(),
    };
    let mut tried = Tried::new();
    // A request that may be sent again after a failure: idempotent, with no body to replay.
    let template = (upgrade.is_none() && is_retryable(&req)).then(|| {
        (
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
            Arc::clone(&req.body().fault),
        )
    });
    let started = tokio::time::Instant::now();
    // Stickiness: the server the client's cookie names goes first, and the cookie is not passed
    // on (it is ballast's, not the application's).
    let mut req = req;
    let cookie_name = ucfg.http.sticky_cookie.as_deref();
    let mut sticky = None;
    if let Some(name) = cookie_name {
        sticky = headers::cookie(req.headers(), name).and_then(|v| sticky_index(&snapshot, v));
        headers::remove_cookie(req.headers_mut(), name);
    }
    // The server the cookie names, by address: the index is only meaningful in `snapshot`.
    let wanted = sticky
        .and_then(|i| snapshot.servers.get(i))
        .map(|s| s.address());
    let mut req = Some(req);
    let mut last_failure = None;
    for _attempt in 0..=ucfg.retries {
        let preferred = sticky
            .take()
            .and_then(|i| upstream.select_server(&snapshot, i, &tried));
        let guard = match preferred {
            Some(guard) => guard,
            None => match upstream.select_queued(&pick, &tried).await {
                Ok(guard) => guard,
                Err(Refusal::NoServer) => break,
                Err(refusal) => {
                    // HAProxy answers 503 here too.
                    super::refused_by_queue(listener, upstream, refusal);
                    let why = match refusal {
                        Refusal::QueueFull => "every server is busy and the queue is full",
                        _ => "every server stayed busy for too long",
                    };
                    return error(StatusCode::SERVICE_UNAVAILABLE, why);
                }
            },
        };
        let index = guard.index();
        tried.insert(index);
        let Some(pool) = ctx.pool(up, guard.server()) else {
            continue;
        };
        // An upgraded connection becomes a tunnel and never returns to a pool, so it gets its own.
        let pooled = match &upgrade {
            Some(_) => None,
            None => pool.checkout(ucfg.http.keepalive_timeout).await,
        };
        let sender = match pooled {
            Some(s) => s,
            None => match connect(&guard, ctx, up, &pool).await {
                Ok(s) => s,
                Err(e) if super::is_local_shortage(&e) => {
                    // ballast's shortage, not the server's: no retry, no blame.
                    super::refused_for_resources(listener, upstream, &e);
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the proxy is short of resources to reach a server",
                    );
                }
                Err(e) => {
                    guard
                        .server()
                        .stats
                        .connect_errors
                        .fetch_add(1, Ordering::Relaxed);
                    guard.server().passive_failure();
                    if let Some(failures) = guard.server().stats.connect_log.tick() {
                        tracing::warn!(listener = %listener.config.name, upstream = %ucfg.name,
                            server = %guard.server().address(), error = %e, failures,
                            "connect to server failed; trying another ({failures} such failures \
                             since the last line, at most one line a second per server)");
                    }
                    continue;
                }
            },
        };
        let Some(this) = req.take() else {
            break;
        };
        let address = guard.server().address();
        let failed = match send(this, sender, guard, pool, ctx, up, upgrade.take()).await {
            Ok(mut resp) => {
                if let (Some(name), false) = (cookie_name, wanted == Some(address)) {
                    set_sticky_cookie(&mut resp, name, address);
                }
                return resp;
            }
            Err(failed) => failed,
        };
        let within_budget = ucfg
            .http
            .retry_timeout
            .is_none_or(|budget| started.elapsed() < budget);
        let rebuilt = match &template {
            Some((method, uri, headers, fault))
                if within_budget && ucfg.http.retry_on.contains(&failed.reason) =>
            {
                let mut r = Request::new(RequestBody {
                    inner: None,
                    remaining: 0,
                    fault: Arc::clone(fault),
                    timeout: listener.config.http.body_timeout,
                    timer: None,
                    waiting: false,
                });
                *r.method_mut() = method.clone();
                *r.uri_mut() = uri.clone();
                *r.headers_mut() = headers.clone();
                Some(r)
            }
            _ => None,
        };
        match rebuilt {
            Some(r) => {
                listener.stats.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(listener = %listener.config.name, reason = ?failed.reason, "retrying on another server");
                req = Some(r);
                last_failure = Some(failed.answer);
            }
            None => return failed.answer,
        }
    }
    if let Some(answer) = last_failure {
        // Retries ran out: the client gets the last server failure.
        return answer;
    }
    super::refused_no_server(listener, upstream, tried.len());
    error(StatusCode::SERVICE_UNAVAILABLE, "no server is available")
}

/// Opens a connection to the guarded server: TCP, the PROXY header when the upstream sends one,
/// TLS when configured, then the HTTP handshake. A new HTTP/2 connection is shared through `pool`
/// at once.
async fn connect(
    guard: &ServerGuard,
    ctx: &Ctx,
    up: &HttpUpstream,
    pool: &ServerPool,
) -> std::io::Result<Sender> {
    let server = guard.server();
    let ucfg = &up.upstream.config;
    let mut stream = super::tcp::connect(server.address(), ucfg.connect_timeout).await?;
    server.stats.connections.fetch_add(1, Ordering::Relaxed);
    let _ = tune_stream(&stream, ctx.route.listener.config.tcp_nodelay, None);
    if let Some(version) = ucfg.send_proxy {
        write_header(&mut stream, version, ctx.peer, ctx.destination).await?;
    }
    let sender = match &up.tls {
        None => handshake(stream, ucfg.http.http2).await?,
        Some(tls) => {
            let name = match &tls.server_name {
                Some(n) => n.clone(),
                None => ServerName::IpAddress(server.address().ip().into()),
            };
            let connect = tls.connector.connect(name, stream);
            let stream = tokio::time::timeout(ucfg.connect_timeout, connect)
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            handshake(stream, ucfg.http.http2).await?
        }
    };
    if sender.is_http2() {
        // Shared from the start, so concurrent requests multiplex on it.
        if let Sender::Http2(s) = &sender {
            pool.checkin(Sender::Http2(s.clone()), 1);
        }
    }
    Ok(sender)
}

/// Bytes read from a server connection at a time (HTTP/1.1), and the largest response head
/// accepted from a server.
const SERVER_READ: usize = 64 * 1024;

/// The HTTP handshake on a connected (plain or TLS) stream; the connection is driven by a task of
/// its own until the server closes it or every sender is gone.
async fn handshake<I>(io: I, http2: bool) -> std::io::Result<Sender>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    if http2 {
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Sender::Http2(sender))
    } else {
        // Reads from servers are at most SERVER_READ bytes each. hyper's default buffer grows to
        // 400 KiB, and every body chunk handed on shares its buffer: a client that reads slowly
        // would pin up to 16 queued chunks of such buffers (~10 MiB). With exact-size reads each
        // chunk pins at most this much, so a stalled client costs about 1 MiB at most.
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .read_buf_exact_size(Some(SERVER_READ))
            .handshake(io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            // Drives the connection until the server closes it or its pool lets it go (or,
            // after a 101, hands the socket over to the tunnel).
            let _ = conn.with_upgrades().await;
        });
        Ok(Sender::Http1(sender))
    }
}

async fn send(
    req: Request<RequestBody>,
    mut sender: Sender,
    guard: ServerGuard,
    pool: Arc<ServerPool>,
    ctx: &Ctx,
    up: &Arc<HttpUpstream>,
    upgrade: Option<OnUpgrade>,
) -> Result<Response<ProxyBody>, Failed> {
    let listener = &ctx.route.listener;
    let ucfg = &up.upstream.config;
    let server = Arc::clone(guard.server());
    server.stats.requests.fetch_add(1, Ordering::Relaxed);
    let body_fault = Arc::clone(&req.body().fault);
    let mut req = req;
    if sender.is_http2() {
        // HTTP/2 carries scheme and authority as pseudo-headers: give the request an absolute URI.
        let scheme = if up.tls.is_some() { "https" } else { "http" };
        let authority = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = Uri::try_from(format!("{scheme}://{authority}{path}")) {
            *req.uri_mut() = uri;
            *req.version_mut() = Version::HTTP_2;
            req.headers_mut().remove(header::HOST);
        }
    }
    let sent = tokio::time::timeout(ucfg.http.response_timeout, sender.send_request(req)).await;
    match sent {
        Ok(Ok(mut resp)) => {
            if let (Some(client), StatusCode::SWITCHING_PROTOCOLS) = (upgrade, resp.status()) {
                let server_side = hyper::upgrade::on(&mut resp);
                tokio::spawn(tunnel(client, server_side, guard, ctx.abort.clone()));
                let (parts, _) = resp.into_parts();
                return Ok(Response::from_parts(parts, ProxyBody::Full(None)));
            }
            let server_error = resp.status().is_server_error();
            if server_error {
                server.passive_failure();
            } else {
                server.passive_success();
            }
            let (parts, body) = resp.into_parts();
            let body = ProxyBody::Upstream(Box::new(Pooled {
                body,
                sender: Some(sender),
                pool,
                max_idle: ucfg.http.keepalive_pool,
                guard,
            }));
            let mut resp = Response::from_parts(parts, body);
            resp.extensions_mut()
                .insert(crate::access_log::ServedBy(server.address()));
            if server_error {
                // Nothing has reached the client yet: a retry may still take its place.
                return Err(Failed {
                    reason: RetryOn::Http5xx,
                    answer: resp,
                });
            }
            Ok(resp)
        }
        Ok(Err(_)) if BodyFault::read(&body_fault).is_some() => {
            // The client's fault, not the server's: the caller answers 413 or 408.
            Ok(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than allowed",
            ))
        }
        Ok(Err(e)) => {
            server.stats.errors.fetch_add(1, Ordering::Relaxed);
            server.passive_failure();
            listener.stats.bad_gateway.fetch_add(1, Ordering::Relaxed);
            if let Some(failures) = server.stats.error_log.tick() {
                tracing::warn!(listener = %listener.config.name, server = %server.address(),
                    error = %e, failures,
                    "server failed the request ({failures} since the last line, at most one line \
                     a second per server)");
            }
            Err(Failed {
                reason: RetryOn::Error,
                answer: error(StatusCode::BAD_GATEWAY, "the server failed to answer"),
            })
        }
        Err(_) => {
            server.stats.errors.fetch_add(1, Ordering::Relaxed);
            server.passive_failure();
            listener
                .stats
                .gateway_timeout
                .fetch_add(1, Ordering::Relaxed);
            if let Some(failures) = server.stats.error_log.tick() {
                tracing::warn!(listener = %listener.config.name, server = %server.address(),
                    timeout = ?ucfg.http.response_timeout, failures,
                    "server did not answer in time ({failures} failed requests since the last \
                     line, at most one line a second per server)");
            }
            Err(Failed {
                reason: RetryOn::Timeout,
                answer: error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the server did not answer in time",
                ),
            })
        }
    }
}

/// Tells the client which server to come back to (HAProxy `insert nocache`: the response is also
/// marked `Cache-Control: private`, so no shared cache hands one client's cookie to others).
/// The cookie value is a stable hash of the server's address ([`crate::scheduler::server_id`]),
/// so it survives restarts, reloads and membership changes, and means the same on every ballast
/// of a pair.
fn set_sticky_cookie(resp: &mut Response<ProxyBody>, name: &str, server: SocketAddr) {
    let value = crate::scheduler::server_id(&server);
    if let Ok(v) = HeaderValue::from_str(&format!("{name}={value:016x}; Path=/; HttpOnly")) {
        resp.headers_mut().append(header::SET_COOKIE, v);
        resp.headers_mut()
            .append(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
}

/// The index in `snapshot` of the member a `sticky_cookie` value names (see
/// [`set_sticky_cookie`]), if it is still one.
fn sticky_index(snapshot: &UpstreamSnapshot, value: &str) -> Option<usize> {
    if value.len() != 16 {
        return None;
    }
    let id = u64::from_str_radix(value, 16).ok()?;
    snapshot
        .servers
        .iter()
        .position(|s| !s.sorry && crate::scheduler::server_id(&s.address()) == id)
}

/// A request a server failed before any byte of an answer reached the client.
struct Failed {
    /// What went wrong, as `retry_on` names it.
    reason: RetryOn,
    /// What the client gets if the request is not retried.
    answer: Response<ProxyBody>,
}

/// Whether a request may be sent to another server after a failure: an idempotent method
/// (RFC 9110 §9.2.2) and no body, since a body already streamed cannot be replayed.
fn is_retryable(req: &Request<RequestBody>) -> bool {
    use http::Method;
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    idempotent && req.body().is_end_stream()
}

/// Relays an upgraded connection (WebSocket…) both ways until either side closes or shutdown's
/// grace period ends; the server's connection slot is held until then.
async fn tunnel(
    client: OnUpgrade,
    server: OnUpgrade,
    guard: ServerGuard,
    abort: CancellationToken,
) {
    let (Ok(client), Ok(server)) = tokio::join!(client, server) else {
        return;
    };
    let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
    let stats = &guard.server().stats;
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut server) => {
            if let Ok((up, down)) = r {
                stats.bytes_to_server.fetch_add(up, Ordering::Relaxed);
                stats.bytes_from_server.fetch_add(down, Ordering::Relaxed);
            }
        }
        () = abort.cancelled() => {}
    }
}

fn error(status: StatusCode, why: &'static str) -> Response<ProxyBody> {
    let reason = status.canonical_reason().unwrap_or("");
    let body = format!("{} {reason}: {why}\n", status.as_u16());
    let mut resp = Response::new(ProxyBody::Full(Some(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
