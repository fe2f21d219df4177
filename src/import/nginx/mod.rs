//! nginx's `nginx.conf`: read into a tree (`parse.rs`), then mapped to ballast: `http` in
//! `http.rs`, `stream` in `stream.rs`, upstreams and what both share here.
//!
//! The syntax: words separated by blanks, `'…'` and `"…"` quoting with `\` escapes, `#`
//! comments, simple directives ending in `;`, blocks in `{ … }`, and `include PATTERN` (glob,
//! relative to the main file's directory, as nginx resolves it against its prefix).
//!
//! The mapping (the table is in `docs/import.md`): an `upstream` becomes an `[[upstream]]`; each
//! distinct `listen` address of the `http` `server`s becomes one HTTP `[[listener]]` whose
//! `server_name` + `location` pairs become `[[listener.route]]`s (exact paths first, then
//! prefixes longest first, as nginx chooses); a `stream` `server` becomes a TCP listener.

use std::path::Path;

use super::emit::{name, Plan, Table, Value};
use super::source::suggest;
use super::{ImportError, Loc, Problem};

mod http;
mod parse;
mod stream;

use parse::{parse, Node};

/// Imports `path`.
///
/// # Errors
/// [`ImportError::Read`] for an unreadable file, [`ImportError::Invalid`] for syntax errors and
/// every directive that cannot be imported.
pub(super) fn import(path: &Path) -> Result<Plan, ImportError> {
    map(&parse(path)?)
}

/// Imports `text` (named `name` in locations) without touching the filesystem.
///
/// # Errors
/// [`ImportError::Invalid`] for syntax errors, every `include` and every directive that cannot be
/// imported.
pub(super) fn import_str(text: &str, name: &str) -> Result<Plan, ImportError> {
    map(&parse::parse_str(text, name)?)
}

fn map(nodes: &[Node]) -> Result<Plan, ImportError> {
    let mut m = Mapper::default();
    m.top(nodes);
    if m.problems.is_empty() {
        Ok(m.plan)
    } else {
        Err(ImportError::Invalid(m.problems))
    }
}

/// Directives that do not matter to a balancer, in any context.
const IGNORED: &[&str] = &[
    "user",
    "worker_processes",
    "pid",
    "error_log",
    "worker_rlimit_nofile",
    "load_module",
    "env",
    "daemon",
    "master_process",
    "pcre_jit",
    "thread_pool",
    "timer_resolution",
    "worker_cpu_affinity",
    "worker_priority",
    "working_directory",
    "lock_file",
    "events",
    "sendfile",
    "tcp_nopush",
    "tcp_nodelay",
    "types_hash_max_size",
    "types_hash_bucket_size",
    "server_names_hash_bucket_size",
    "server_names_hash_max_size",
    "types",
    "default_type",
    "access_log",
    "log_format",
    "gzip",
    "gzip_vary",
    "gzip_proxied",
    "gzip_comp_level",
    "gzip_buffers",
    "gzip_http_version",
    "gzip_types",
    "gzip_min_length",
    "gzip_disable",
    "root",
    "index",
    "charset",
    "server_tokens",
    "client_body_buffer_size",
    "autoindex",
    "proxy_buffering",
    "proxy_buffers",
    "proxy_buffer_size",
    "proxy_busy_buffers_size",
    "proxy_redirect",
    "proxy_cache",
    "proxy_cache_path",
    "proxy_temp_path",
    "proxy_hide_header",
    "proxy_intercept_errors",
    "expires",
    "add_header",
    "error_page",
    "resolver",
    "resolver_timeout",
    "open_file_cache",
    "ssl_protocols",
    "ssl_ciphers",
    "ssl_prefer_server_ciphers",
    "ssl_session_cache",
    "ssl_session_timeout",
    "ssl_session_tickets",
    "ssl_stapling",
    "ssl_stapling_verify",
    "ssl_dhparam",
    "proxy_send_timeout",
    "send_timeout",
    "keepalive_requests",
    "keepalive_timeout",
    "map",
    "zone",
    "proxy_request_buffering",
    "proxy_ignore_client_abort",
    "limit_req_zone",
    "limit_conn_zone",
    "variables_hash_max_size",
    "map_hash_bucket_size",
    "reset_timedout_connection",
    "aio",
    "directio",
    "output_buffers",
    "postpone_output",
    "multi_accept",
    "worker_connections",
    "use",
    "accept_mutex",
    "http2",
    "ssl_buffer_size",
    "proxy_socket_keepalive",
    "proxy_buffer",
    "preread_timeout",
    "proxy_download_rate",
    "proxy_upload_rate",
];

#[derive(Default)]
struct Mapper {
    plan: Plan,
    problems: Vec<Problem>,
    /// Listeners by bind address: (table, routes).
    http: Vec<HttpListener>,
    real_ip_from: Vec<String>,
    nonlocal: bool,
}

struct HttpListener {
    table: Table,
    routes: Vec<Route>,
}

struct Route {
    host: Option<String>,
    exact: bool,
    path: String,
    upstream: String,
    at: Loc,
    default_server: bool,
}

/// Upstream settings that nginx sets per `server`/`location` and ballast per upstream.
#[derive(Default, Clone)]
struct Proxy {
    settings: Vec<(String, Value, Loc)>,
}

impl Mapper {
    fn error(&mut self, at: &Loc, message: impl Into<String>) {
        self.problems.push(Problem {
            at: at.clone(),
            message: message.into(),
        });
    }

    fn unknown(&mut self, n: &Node, context: &str, known: &[&str]) {
        let hint = suggest(&n.name, known)
            .map(|s| format!("; did you mean {s}?"))
            .unwrap_or_default();
        self.error(
            &n.at,
            format!(
                "{}: unknown or unsupported directive in {context}{hint}",
                n.name
            ),
        );
    }

    fn top(&mut self, nodes: &[Node]) {
        for n in nodes {
            match n.name.as_str() {
                "http" => self.http(n),
                "stream" => self.stream(n),
                "mail" => self.error(&n.at, "mail: ballast does not proxy mail protocols"),
                k if IGNORED.contains(&k) => self.plan.ignore(k, &n.at),
                _ => self.unknown(
                    n,
                    "the main context",
                    &["http", "stream", "events", "worker_processes"],
                ),
            }
        }
        let http = std::mem::take(&mut self.http);
        for l in http {
            self.finish_http(l);
        }
    }

    fn note_nonlocal(&mut self, at: &Loc, bind: &str) {
        if !self.nonlocal
            && !bind.starts_with("0.0.0.0:")
            && !bind.starts_with("[::]:")
            && !bind.starts_with("127.")
        {
            self.nonlocal = true;
            // ballast binds with IP_FREEBIND: a virtual address not (yet) on this host needs no
            // `ip_nonlocal_bind`, so nothing to warn about.
            let _ = at;
        }
    }

    // --- upstreams ---

    fn upstream(&mut self, u: &Node, prefix: &str, http: bool) {
        let uname = format!("{prefix}{}", name(u.arg(0)));
        let mut t = Table::new(&u.at);
        t.set("name", uname, &u.at);
        // nginx's default: weighted round robin.
        t.set("scheduler", "wrr", &u.at);
        let mut fails: Vec<(i64, String, Loc)> = Vec::new();
        for n in u.kids() {
            match n.name.as_str() {
                "server" => {
                    let (max_fails, fail_timeout) = self.server(n, &mut t);
                    fails.push((max_fails, fail_timeout, n.at.clone()));
                }
                "least_conn" => t.set("scheduler", "wlc", &n.at),
                "ip_hash" => {
                    t.set("scheduler", "sh", &n.at);
                    self.plan.warn(&n.at, "ip_hash: imported as sh (source hashing); nginx hashes the first three octets of an IPv4 address (a /24), ballast the whole address, so clients of one /24 may reach different servers");
                }
                "hash" => {
                    let key = n.arg(0);
                    if key == "$remote_addr" || key == "$binary_remote_addr" {
                        t.set(
                            "scheduler",
                            if n.arg(1) == "consistent" { "mh" } else { "sh" },
                            &n.at,
                        );
                    } else {
                        self.error(&n.at, format!("hash {key}: ballast hashes the client address only (hash $remote_addr → sh, with consistent → mh); for stickiness by cookie use sticky_cookie"));
                    }
                }
                "random" => {
                    if n.arg(0) == "two" {
                        t.set("scheduler", "p2c", &n.at);
                        if n.arg(1) == "least_time" {
                            self.plan.warn(&n.at, "random two least_time: imported as p2c, which compares active connections, not response times");
                        }
                    } else {
                        t.set("scheduler", "random", &n.at);
                    }
                }
                "keepalive" if http => match n.arg(0).parse::<i64>() {
                    Ok(v) => t.set("keepalive_pool", v, &n.at),
                    Err(_) => self.error(&n.at, "keepalive: expected a number of connections"),
                },
                "keepalive_timeout" if http => {
                    t.set("keepalive_timeout", duration(n.arg(0)), &n.at)
                }
                "sticky" if http && n.arg(0) == "cookie" => {
                    t.set("sticky_cookie", n.arg(1).to_string(), &n.at)
                }
                k if IGNORED.contains(&k) => self.plan.ignore(k, &n.at),
                _ => self.unknown(
                    n,
                    "upstream",
                    &[
                        "server",
                        "least_conn",
                        "ip_hash",
                        "hash",
                        "random",
                        "keepalive",
                        "keepalive_timeout",
                        "zone",
                    ],
                ),
            }
        }
        // Passive checks: nginx's per-server max_fails/fail_timeout are one pair per upstream here.
        if let Some((mf, ft, at)) = fails.first().cloned() {
            if fails.iter().any(|(m, f, _)| *m != mf || *f != ft) {
                self.plan.warn(&at, "max_fails/fail_timeout differ between the servers of this upstream; ballast has one pair per upstream: the first server's is used");
            }
            if mf > 0 {
                t.set("max_fails", mf, &at);
                t.set("fail_timeout", ft, &at);
            }
        }
        self.plan.upstreams.push(t);
    }

    /// One `server` of an `upstream`: returns its (max_fails, fail_timeout), nginx's defaults 1 and 10s.
    fn server(&mut self, n: &Node, up: &mut Table) -> (i64, String) {
        let (mut max_fails, mut fail_timeout) = (1, "10s".to_string());
        let addr = match server_address(n.arg(0)) {
            Ok(a) => a,
            Err(m) => {
                self.error(&n.at, m);
                return (max_fails, fail_timeout);
            }
        };
        let mut slow_start = None;
        let mut s = Table::new(&n.at);
        s.set("address", addr, &n.at);
        for p in n.args.iter().skip(1) {
            let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
            match k {
                "weight" => match v.parse::<i64>() {
                    Ok(w) => s.set("weight", w, &n.at),
                    Err(_) => self.problems.push(Problem { at: n.at.clone(), message: format!("server {p}: expected an integer weight") }),
                },
                "max_conns" => match v.parse::<i64>() {
                    Ok(c) => s.set("max_connections", c, &n.at),
                    Err(_) => self.problems.push(Problem { at: n.at.clone(), message: format!("server {p}: expected an integer") }),
                },
                "max_fails" => match v.parse::<i64>() {
                    Ok(c) => max_fails = c,
                    Err(_) => self.problems.push(Problem { at: n.at.clone(), message: format!("server {p}: expected an integer") }),
                },
                "fail_timeout" => fail_timeout = duration(v),
                "backup" => s.set("backup", true, &n.at),
                "down" => s.set("state", "disabled", &n.at),
                "slow_start" => slow_start = Some(duration(v)),
                _ => self.problems.push(Problem { at: n.at.clone(), message: format!("server {p}: unknown or unsupported parameter (ballast takes weight=, max_conns=, max_fails=, fail_timeout=, backup, down)") }),
            }
        }
        if let Some(d) = slow_start {
            up.set("slow_start", d, &n.at);
        }
        *up.child("[[server]]", &n.at) = s;
        (max_fails, fail_timeout)
    }
}

/// nginx time (`60`, `60s`, `1m`, `500ms`) as a ballast duration; a bare number is seconds.
fn duration(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        format!("{s}s")
    } else {
        s.to_string()
    }
}

/// An upstream `server` address: `IP:PORT`, or `IP` (port 80).
fn server_address(s: &str) -> Result<String, String> {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(s.to_string());
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(_)) => Ok(format!("[{bare}]:80")),
        Ok(_) => Ok(format!("{bare}:80")),
        Err(_) if s.starts_with("unix:") => {
            Err(format!("server {s}: unix sockets are not supported"))
        }
        Err(_) => Err(format!(
            "server {s}: host names are not resolved by ballast; write an IP address (IP:PORT)"
        )),
    }
}

/// A `listen` address: `80`, `*:80`, `IP`, `IP:80`, `[::]:80`.
fn listen_address(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(format!("0.0.0.0:{s}"));
    }
    if let Some(port) = s.strip_prefix("*:") {
        return Ok(format!("0.0.0.0:{port}"));
    }
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(s.to_string());
    }
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(_)) => Ok(format!("[{bare}]:80")),
        Ok(_) => Ok(format!("{bare}:80")),
        Err(_) => Err(format!("listen {s}: expected a port or IP:PORT (host names and unix sockets are not supported)")),
    }
}

/// A `server_name` as route hosts: none for the catch-alls, both forms for `.example.com`.
fn server_name(s: &str) -> Result<Vec<Option<String>>, String> {
    if s.is_empty() || s == "_" {
        return Ok(vec![None]);
    }
    if s.starts_with('~') {
        return Err(format!("server_name {s}: regular expressions are not supported; ballast matches names and *.suffix"));
    }
    if let Some(rest) = s.strip_prefix('.') {
        return Ok(vec![Some(rest.to_string()), Some(format!("*.{rest}"))]);
    }
    if s.ends_with(".*") {
        return Err(format!("server_name {s}: trailing wildcards are not supported; ballast matches names and *.suffix"));
    }
    Ok(vec![Some(s.to_string())])
}
