//! The validated `[admin]` section: where the admin API listens and the token it asks for.

use std::net::SocketAddr;
use std::path::PathBuf;

/// `[admin]`: the admin API, Prometheus metrics and the dashboard ([`crate::admin`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// `bind`: where the admin server listens. Default: `127.0.0.1:9090`.
    pub bind: AdminBind,
    /// `token` or `token_file`: the bearer token changes (and, off loopback, every request) must
    /// carry. Required when `bind` is neither loopback nor a unix socket. `None` = no token.
    pub token: Option<AdminToken>,
}

/// Where the admin server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminBind {
    /// A TCP address (`127.0.0.1:9090`; port 0 picks a free port).
    Tcp(SocketAddr),
    /// A unix stream socket at this path (`unix:/run/ballast.sock` or `/run/ballast.sock`).
    Unix(PathBuf),
}

impl AdminBind {
    /// Whether only this host can reach it: a loopback address or a unix socket.
    pub fn is_local(&self) -> bool {
        match self {
            AdminBind::Tcp(a) => a.ip().is_loopback(),
            AdminBind::Unix(_) => true,
        }
    }
}

impl std::fmt::Display for AdminBind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminBind::Tcp(a) => write!(f, "{a}"),
            AdminBind::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Where the bearer token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminToken {
    /// `token = "…"`.
    Inline(crate::secret::Secret),
    /// `token_file = "…"`: read when the admin server starts (relative paths are resolved
    /// against the configuration file's directory); surrounding whitespace is ignored.
    File(PathBuf),
}

/// `[global] access_log` and `access_log_format`: one line per TCP connection and per HTTP
/// request ([`crate::access_log`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// `access_log`: `"stdout"` or a file path (relative paths against the configuration
    /// file's directory).
    pub target: AccessLogTarget,
    /// `access_log_format`: `text` (default) or `json`.
    pub format: AccessLogFormat,
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// A file, appended to and reopened on SIGUSR1.
    File(PathBuf),
}

/// How access-log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// `key=value` pairs after an RFC 3339 time.
    Text,
    /// One JSON object per line.
    Json,
}
