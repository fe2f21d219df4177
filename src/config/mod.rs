//! Configuration: the TOML file an operator writes, and the validated model the runtime is built from.
//!
//! The pipeline has three stages, each a function tests can call without touching the disk:
//!
//! ```text
//! text --toml::from_str--> ConfigToml (toml.rs: raw serde types, unknown keys rejected, spans kept)
//!      --validate------->  Config     (validate.rs: ranges, addresses, durations, cross-references;
//!                                      every problem collected as a Diagnostic with file:line:column)
//!      --Runtime::start->  listeners and upstreams (runtime module)
//! ```
//!
//! `ballast check -c FILE` runs the first two stages exactly as `ballast run` does.
//!
//! Defaults live in [`defaults`] and are documented beside each field here and in `docs/config.md`.
//! The model types below carry no serde: they are what the rest of ballast reads.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use crate::proxy::proxy_protocol::{TrustedSources, Version as ProxyVersion};
use crate::scheduler::SchedulerKind;
pub use crate::tls::{CertSource, ServerVerification};

mod admin;
pub mod defaults;
mod toml;
mod udp;
mod validate;
pub mod vrrp;
pub use vrrp::{VrrpInstanceConfig, VrrpVersion};

pub use udp::{UdpCheckConfig, UdpListenerConfig};

pub use admin::{
    AccessLogConfig, AccessLogFormat, AccessLogTarget, AdminBind, AdminConfig, AdminToken,
};

#[cfg(test)]
mod tests;

pub use validate::Diagnostic;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the configuration came from (a file path, or a label such as `<demo>`), used in messages.
    pub origin: String,
    /// Process-wide settings (`[global]`).
    pub global: Global,
    /// Listeners (`[[listener]]`), in file order. Names are unique.
    pub listeners: Vec<ListenerConfig>,
    /// Upstream groups (`[[upstream]]`), in file order. Names are unique, and every listener's
    /// `upstream` names one of them.
    pub upstreams: Vec<UpstreamConfig>,
    /// VRRP instances (`[[vrrp.instance]]`), in file order; empty when there is no `[vrrp]`.
    pub vrrp: Vec<VrrpInstanceConfig>,
    /// The admin API, metrics and dashboard (`[admin]`); `None` = not served (no `[admin]`).
    pub admin: Option<AdminConfig>,
}

/// Process-wide settings: the `[global]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    /// `log_level`: a `tracing` filter such as `info` or `ballast=debug`. `RUST_LOG`, when set, wins.
    /// Default: `info`.
    pub log_level: String,
    /// `log_format`: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// `threads`: worker threads of the async runtime. `0` in the file means one per CPU core the
    /// process may run on (its affinity mask); here it is already resolved (≥ 1).
    pub threads: usize,
    /// `shutdown_grace`: on SIGTERM/SIGINT, how long established connections may go on before they
    /// are closed. Default: 30 s.
    pub shutdown_grace: Duration,
    /// `max_connections` and `resume_at`: the most client connections open at once across all
    /// listeners (HAProxy global `maxconn`). `max` 0 (the default) means derived at start from
    /// the file-descriptor limit (see [`crate::runtime::nofile`]).
    pub connections: ConnectionLimit,
    /// `access_log` and `access_log_format`: one line per TCP connection and HTTP request.
    /// `None` = off (default).
    pub access_log: Option<AccessLogConfig>,
    /// `user` and `group`: who ballast runs as once every socket is bound
    /// ([`crate::privilege`]). `None` = stay as started (default).
    pub run_as: Option<RunAs>,
}

/// `[global] user` and `group`, resolved against the user and group databases when the
/// configuration was validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// `user` as written (a name, or a numeric id), for messages.
    pub user: String,
    /// Its user id.
    pub uid: u32,
    /// `group` as written, or the name of the user's primary group.
    pub group: String,
    /// The group id switched to.
    pub gid: u32,
    /// The supplementary groups switched to: the user's groups from the group database (with
    /// `gid`), or `gid` alone for a numeric user with no entry.
    pub groups: Vec<u32>,
}

/// A limit on open client connections and where accepting resumes once it was reached.
///
/// At the limit, ballast stops calling accept(2): new connections wait, fully established, in
/// the kernel's accept queue (up to `backlog`) and are accepted once enough connections have
/// ended. Nothing is accepted and then closed for want of room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimit {
    /// `max_connections`: most client connections open at once; 0 = no limit (for `[global]`:
    /// derived from the file-descriptor limit).
    pub max: u64,
    /// `resume_at`: once the limit was reached, accepting resumes when the open connections
    /// have fallen to this percentage of `max` (1..=100). Default: 100, which resumes as soon as
    /// one connection ends (HAProxy's behaviour).
    pub resume_at: u8,
}

impl ConnectionLimit {
    /// No limit.
    pub const UNLIMITED: ConnectionLimit = ConnectionLimit {
        max: 0,
        resume_at: 100,
    };

    /// The low-water mark: paused accepting resumes once at most this many connections are
    /// open. Always below `max` (a limit of 1 resumes at 0).
    pub fn low_water(&self) -> u64 {
        let mark = self.max.saturating_mul(u64::from(self.resume_at)) / 100;
        mark.min(self.max.saturating_sub(1))
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Layer-4 TCP proxy: bytes are relayed both ways, unparsed.
    Tcp,
    /// Layer-7 HTTP reverse proxy: HTTP/1.1 and cleartext HTTP/2 (h2c) from clients, routed by
    /// host and path, kept-alive HTTP/1.1 connections to servers.
    Http,
    /// As `Http`, behind TLS termination: certificates chosen by SNI, ALPN `h2` and `http/1.1`.
    Https,
    /// UDP datagrams: each client address is a flow with its own server (LVS `-u`, nginx
    /// `listen … udp`). See [`crate::proxy::udp`].
    Udp,
}

impl Protocol {
    /// The spelling used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Udp => "udp",
        }
    }

    /// Whether this listener speaks HTTP (with or without TLS).
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Https)
    }
}

/// One `[[listener.route]]` of an HTTP listener, like an nginx `server_name` + `location`: requests
/// whose host and path match go to `upstream`. Routes are tried in file order; the first match
/// wins; a request no route matches goes to the listener's `upstream`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// `host`: the Host (without port), lower case; `*.example.com` matches one or more labels
    /// before `example.com`. `None` = any host.
    pub host: Option<String>,
    /// `path_prefix` or `path`: which paths match. `None` = every path.
    pub path: Option<PathMatch>,
    /// `upstream`: where matching requests go.
    pub upstream: String,
    /// `host_rewrite`: the Host header sent to servers instead of the client's.
    pub host_rewrite: Option<String>,
}

/// How a route matches the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// `path_prefix = "/api/"`: the path starts with it (nginx `location /api/`).
    Prefix(String),
    /// `path = "/healthz"`: the path is exactly it (nginx `location = /healthz`).
    Exact(String),
}

/// HTTP settings of a listener (ignored by TCP listeners).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpListenerConfig {
    /// `header_timeout`: how long a client may take to send a request's headers (slowloris
    /// defence; nginx `client_header_timeout`, HAProxy `timeout http-request`). The clock also runs
    /// while a kept-alive connection waits for its next request, so it is the keep-alive idle
    /// timeout too (HAProxy `timeout http-keep-alive`). Default: 60 s.
    pub header_timeout: Duration,
    /// `forwarded`: also send the RFC 7239 `Forwarded` header. Default: false.
    pub forwarded: bool,
    /// `via`: add `Via: 1.1 ballast` to requests and responses. Default: false.
    pub via: bool,
    /// `body_timeout`: longest wait for the next piece of a request body; then 408 (nginx
    /// `client_body_timeout`, HAProxy `timeout client`). Default: 60 s.
    pub body_timeout: Duration,
    /// `send_timeout`: longest time a client may go without taking any response byte while
    /// ballast has some to send; then its connection is closed (nginx `send_timeout`, HAProxy
    /// `timeout client`). Default: 60 s.
    pub send_timeout: Duration,
    /// `max_header_size`: most bytes of request line and headers; more is answered 431.
    /// Default: 32 KiB.
    pub max_header_size: usize,
    /// `max_headers`: most request header fields; more is answered 431. Default: 100.
    pub max_headers: usize,
    /// `max_body_size`: most bytes of request body; more is answered 413. 0 = unlimited
    /// (default).
    pub max_body_size: u64,
    /// `request_id_header`: the header carrying a request id, generated when the client sent
    /// none. Default: `x-request-id`.
    pub request_id_header: String,
}

/// One `[[listener]]`: a virtual service (`ipvsadm -A -t ADDR`), the address clients connect to.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// `name`: unique; used in logs and messages.
    pub name: String,
    /// `bind`: the address and port to listen on, e.g. `0.0.0.0:80` or `[::]:443`.
    pub bind: SocketAddr,
    /// `protocol`: default `tcp`.
    pub protocol: Protocol,
    /// `upstream`: the name of the upstream group that serves this listener.
    pub upstream: String,
    /// `backlog`: the `backlog` argument of listen(2) for each worker's socket. The kernel silently
    /// caps it at `net.core.somaxconn`; ballast warns at start when it would. Default: 4096.
    pub backlog: u32,
    /// `workers`: number of accept workers, each with its own SO_REUSEPORT socket and accept queue.
    /// `0` in the file means one per CPU core; here it is already resolved (≥ 1).
    pub workers: usize,
    /// `tcp_nodelay`: disable Nagle's algorithm on client and server sockets. Default: true.
    pub tcp_nodelay: bool,
    /// `tcp_keepalive`: idle time before TCP keepalive probes on client sockets; `None` = off (default).
    pub tcp_keepalive: Option<Duration>,
    /// `idle_timeout`: a proxied connection with no bytes in either direction for this long is
    /// closed. Default: 10 min (nginx `proxy_timeout`).
    pub idle_timeout: Duration,
    /// `buffer_size`: most bytes of relay buffer per direction per connection. Buffers start at
    /// 16 KiB and double up to this while a connection moves bulk data. Default: 256 KiB.
    pub buffer_size: usize,
    /// `splice`: let a direction that carries bulk data move to splice(2) (zero-copy through a
    /// pipe) once its reads fill a 64 KiB buffer. Default: true.
    pub splice: bool,
    /// `accept_proxy`: accept a PROXY protocol header (v1 or v2) from these networks only, and
    /// use the client address it carries. `None` = no PROXY header expected (default).
    pub accept_proxy: Option<TrustedSources>,
    /// `[[listener.certificate]]`: the certificates of an `https` listener (at least one; the
    /// first is the default when SNI matches none). Relative paths are resolved against the
    /// directory of the configuration file.
    pub certificates: Vec<CertSource>,
    /// `[[listener.route]]`: HTTP routes, in file order (HTTP listeners only).
    pub routes: Vec<RouteConfig>,
    /// HTTP settings (HTTP listeners only; defaults otherwise).
    pub http: HttpListenerConfig,
    /// `max_connections` and `resume_at`: the most client connections this listener keeps open
    /// at once (HAProxy `bind … maxconn` / frontend `maxconn`). Default: no limit.
    pub connections: ConnectionLimit,
    /// UDP flow settings (UDP listeners only; defaults otherwise).
    pub udp: UdpListenerConfig,
}

/// One `[[upstream]]`: a group of servers behind one scheduler (nginx `upstream`, LVS real servers).
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// `name`: unique; listeners refer to it.
    pub name: String,
    /// `scheduler`: LVS names: `rr wrr lc wlc sh dh mh random p2c`. Default: `wlc` (the LVS default).
    pub scheduler: SchedulerKind,
    /// `connect_timeout`: how long a connect to one server may take. Default: 3 s.
    pub connect_timeout: Duration,
    /// `retries`: after a failed connect, how many other servers to try (each server at most once
    /// per client connection). Default: 3 (HAProxy `retries`).
    pub retries: u32,
    /// `tcp_keepalive`: idle time before TCP keepalive probes on server sockets; `None` = off.
    pub tcp_keepalive: Option<Duration>,
    /// `send_proxy`: send a PROXY protocol header (`v1` or `v2`) on every connection to a
    /// server, so it sees the client's address (HAProxy `send-proxy` / `send-proxy-v2`).
    /// Default: none.
    pub send_proxy: Option<ProxyVersion>,
    /// `max_queue`: when every server that could take a connection (or HTTP request) is at its
    /// `max_connections`, up to this many wait, first come first served, for a slot (HAProxy's
    /// queue). 0 = refuse at once. Default: 1024.
    pub max_queue: usize,
    /// `queue_timeout`: longest wait in that queue; then the client is refused (HTTP 503, TCP
    /// reset). Default: `connect_timeout` (HAProxy `timeout queue`).
    pub queue_timeout: Duration,
    /// `persistence_timeout` and friends: keep each client on one server (Keepalived
    /// `persistence_timeout`, `ipvsadm -p`). `None` = off (the default).
    pub persistence: Option<PersistenceConfig>,
    /// HTTP settings, used when an HTTP listener sends requests here.
    pub http: HttpUpstreamConfig,
    /// Health checks, passive checks, slow start, the sorry server and notify commands.
    pub health: UpstreamHealthConfig,
    /// `server`: the members, in file order. At least one.
    pub servers: Vec<ServerConfig>,
}

/// Persistence of an upstream: which clients count as one, and how long they are remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistenceConfig {
    /// `persistence_timeout`: how long a client's entry outlives its last connection (or
    /// request). Keepalived `persistence_timeout`, `ipvsadm -p` (default there 300 s).
    pub timeout: Duration,
    /// `persistence_granularity`: IPv4 clients in one network of this prefix length are one
    /// client (`ipvsadm -M`). Default: 32 (each address on its own).
    pub granularity_v4: u8,
    /// `persistence_granularity_v6`: the same for IPv6. Default: 128.
    pub granularity_v6: u8,
    /// `persistence_max_entries`: most clients remembered at once. Default: 262144.
    pub max_entries: u64,
}

/// Everything about an upstream's server states: how they are checked and what happens when one
/// changes. The default (no checks, no passive checks) keeps every server up, always.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamHealthConfig {
    /// `[upstream.health_check]`: active checks. `None` = none (default).
    pub check: Option<HealthCheckConfig>,
    /// `max_fails` and `fail_timeout`: passive checks on real traffic. `None` = off (default).
    pub passive: Option<PassiveConfig>,
    /// `slow_start`: after a server comes back up, its weight ramps from nearly 0 to its
    /// configured weight over this long (HAProxy `slowstart`). `None` = off (default).
    pub slow_start: Option<Duration>,
    /// `inhibit_on_failure`: a server marked down is kept with weight 0 rather than removed
    /// (Keepalived `inhibit_on_failure`). Default: false.
    pub inhibit_on_failure: bool,
    /// `sorry_server`: where connections go when no primary or backup server is usable
    /// (Keepalived `sorry_server`). `None` = none (default).
    pub sorry_server: Option<SocketAddr>,
    /// `notify_up`: a shell command run when a server comes up. `None` = none (default).
    pub notify_up: Option<String>,
    /// `notify_down`: a shell command run when a server goes down. `None` = none (default).
    pub notify_down: Option<String>,
    /// `notify_timeout`: a notify command still running after this long is killed. Default: 10 s.
    pub notify_timeout: Duration,
}

impl Default for UpstreamHealthConfig {
    /// No checks, every server always up.
    fn default() -> UpstreamHealthConfig {
        UpstreamHealthConfig {
            check: None,
            passive: None,
            slow_start: None,
            inhibit_on_failure: false,
            sorry_server: None,
            notify_up: None,
            notify_down: None,
            notify_timeout: defaults::NOTIFY_TIMEOUT,
        }
    }
}

/// `[upstream.health_check]`: an active check run against every server of the upstream (unless
/// a server says `check = false`).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    /// `type`: what one check does. Default: `tcp`.
    pub kind: CheckKind,
    /// `interval`: time between two checks of a server (HAProxy `inter`, Keepalived
    /// `delay_loop`). Default: 2 s.
    pub interval: Duration,
    /// `fast_interval`: time between checks while a server is in transition, i.e. after a first
    /// failure while up or a first success while down (HAProxy `fastinter`, Keepalived
    /// `delay_before_retry`). Default: `interval`.
    pub fast_interval: Duration,
    /// `timeout`: how long one check may take, connect included (Keepalived `connect_timeout`,
    /// HAProxy `timeout check`). Default: `interval`.
    pub timeout: Duration,
    /// `rise`: consecutive successes that bring a down server up. Default: 2 (HAProxy).
    pub rise: u32,
    /// `fall`: consecutive failures that take an up server down. Default: 3 (HAProxy).
    pub fall: u32,
    /// `port`: the port checked instead of the server's (Keepalived `connect_port`, HAProxy
    /// `port`). A server's `check_port` wins. `None` = the server's port.
    pub port: Option<u16>,
    /// What an `http` check sends and expects (defaults when the kind is not `http`).
    pub http: HttpCheckConfig,
    /// What a `udp` or `dns` check sends and expects (defaults otherwise).
    pub udp: UdpCheckConfig,
}

/// What a check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// `tcp`: the connect succeeds within `timeout` (Keepalived `TCP_CHECK`, HAProxy `check`).
    Tcp,
    /// `http`: a `GET` answered with an expected status (and body) within `timeout`
    /// (Keepalived `HTTP_GET`, HAProxy `option httpchk` + `http-check expect`). Over TLS when the
    /// upstream has `tls = true` (Keepalived `SSL_GET`).
    Http,
    /// `tls`: a TLS handshake completes within `timeout`.
    Tls,
    /// `udp`: a datagram (`send`) is answered within `timeout`, the answer containing `expect`
    /// (Keepalived `UDP_CHECK` with `require_reply`).
    Udp,
    /// `dns`: a DNS query for `query_name` gets a well-formed answer with the same id
    /// (Keepalived `DNS_CHECK`).
    Dns,
}

impl CheckKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
            CheckKind::Tls => "tls",
            CheckKind::Udp => "udp",
            CheckKind::Dns => "dns",
        }
    }
}

/// The request and expectations of an `http` check.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpCheckConfig {
    /// `path`: what is asked for, with an optional query. Default: `/`.
    pub path: String,
    /// `host`: the Host header. `None` = the checked address (`IP:port`).
    pub host: Option<String>,
    /// `expect_status`: statuses that count as a success. Empty = any 2xx or 3xx (HAProxy's
    /// default).
    pub expect_status: Vec<u16>,
    /// `expect_body`: a substring the first 64 KiB of the body must contain. `None` = no check.
    pub expect_body: Option<String>,
}

/// Passive checks: real traffic's failures count against a server (nginx `max_fails` /
/// `fail_timeout`, Envoy outlier detection's consecutive errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveConfig {
    /// `max_fails`: this many consecutive failures (failed connects; for HTTP also resets,
    /// timeouts and 5xx answers), all within `fail_timeout`, mark the server down. ≥ 1.
    pub max_fails: u32,
    /// `fail_timeout`: the window the failures must fall in, and how long the server then stays
    /// down before it may come back (nginx semantics). Default: 10 s.
    pub fail_timeout: Duration,
}

/// What an operator says a server should do, apart from what checks find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdminState {
    /// `active`: takes connections while it is up. The default.
    #[default]
    Active,
    /// `draining`: takes no new connections; established ones go on until they end (HAProxy
    /// `drain`, a weight-0 quiesce in ipvsadm). Checks go on.
    Draining,
    /// `disabled`: maintenance. Takes no new connections, not even from clients bound to it by a
    /// cookie; checks stop (HAProxy `maint`, `disabled`).
    Disabled,
}

impl AdminState {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Active => "active",
            AdminState::Draining => "draining",
            AdminState::Disabled => "disabled",
        }
    }
}

/// HTTP settings of an upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpUpstreamConfig {
    /// `response_timeout`: how long a server may take to send the response headers after the
    /// request was sent (nginx `proxy_read_timeout`, HAProxy `timeout server`); then 504.
    /// Default: 60 s.
    pub response_timeout: Duration,
    /// `keepalive_pool`: most idle kept-alive connections per server (nginx `keepalive`).
    /// 0 = a new connection per request. Default: 32.
    pub keepalive_pool: usize,
    /// `keepalive_timeout`: an idle pooled connection older than this is closed rather than
    /// reused (nginx `keepalive_timeout` in `upstream`). Default: 60 s.
    pub keepalive_timeout: Duration,
    /// `http2`: speak HTTP/2 to the servers (prior knowledge over TCP, ALPN `h2` over TLS), one
    /// multiplexed connection per server; needed for gRPC. Default: false (HTTP/1.1).
    pub http2: bool,
    /// `tls = true`: connect to the servers with TLS. `None` = plain TCP (default).
    pub tls: Option<UpstreamTls>,
    /// `sticky_cookie`: the name of a cookie that keeps a client on one server (HAProxy `cookie
    /// NAME insert indirect nocache`): ballast sets it on responses, follows it on requests while
    /// that server can take them, and removes it before the request reaches the server. `None` =
    /// off (default).
    pub sticky_cookie: Option<String>,
    /// `retry_on`: which server failures send an idempotent, bodyless request to another server
    /// (a failed connect always does). Default: error and timeout (nginx `proxy_next_upstream`).
    pub retry_on: Vec<RetryOn>,
    /// `retry_timeout`: no retry starts once this long has passed since the first attempt
    /// (nginx `proxy_next_upstream_timeout`). `None` = no limit (default).
    pub retry_timeout: Option<Duration>,
}

/// A server failure after which a request may be retried on another server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// `error`: the connection failed while sending the request or reading the response head.
    Error,
    /// `timeout`: no response head within `response_timeout`.
    Timeout,
    /// `http_5xx`: the server answered with a 5xx status.
    Http5xx,
}

/// TLS to the servers of an upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// How server certificates are checked: `tls_ca_file` (CA files), the built-in web roots when
    /// absent, or nothing at all with `tls_verify = false`.
    pub verify: ServerVerification,
    /// `tls_server_name`: the name sent as SNI and checked against the certificate. Default: the
    /// server's IP address.
    pub server_name: Option<String>,
}

/// One `[[upstream.server]]`: a real server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// `address`: `IP:port` of the server.
    pub address: SocketAddr,
    /// `weight`: 0..=65535 (the ipvsadm range). 0 = takes no new connections. Default: 1.
    pub weight: u32,
    /// `max_connections`: most concurrent connections to this server; 0 = unlimited (default).
    pub max_connections: u32,
    /// `backup`: used only when no primary server can take the connection. Default: false.
    pub backup: bool,
    /// `check`: whether the upstream's active check runs against this server. Default: true.
    pub check: bool,
    /// `check_port`: the port checked instead of the server's; wins over the check's `port`.
    pub check_port: Option<u16>,
    /// `state`: the operator's state at start. Default: active.
    pub state: AdminState,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The path that was tried.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration; every problem found is listed.
    #[error("{}", DiagnosticList(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The individual problems, when the configuration was invalid.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Invalid(d) => d,
            ConfigError::Read { .. } => &[],
        }
    }
}

struct DiagnosticList<'a>(&'a [Diagnostic]);

impl fmt::Display for DiagnosticList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Parses and validates configuration text. `origin` names it in messages (usually the path).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with every problem found, each naming `origin:line:column`.
    pub fn from_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        validate::parse(text, origin).map_err(ConfigError::Invalid)
    }

    /// Reads, parses and validates a configuration file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] when the file cannot be read, otherwise as [`Config::from_str`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_str(&text, &path.display().to_string())
    }

    /// The upstream named `name`.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}
