//! nginx's `nginx.conf`: the tokenizer, the tree, and the mapping of `http` and `stream` to ballast.
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
use std::sync::Arc;

use super::emit::{name, udp_listener, Plan, Table, Value};
use super::source::{self, suggest};
use super::{ImportError, Loc, Problem};

/// One directive.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    args: Vec<String>,
    children: Option<Vec<Node>>,
    at: Loc,
}

impl Node {
    fn kids(&self) -> &[Node] {
        self.children.as_deref().unwrap_or(&[])
    }
    fn arg(&self, i: usize) -> &str {
        self.args.get(i).map(String::as_str).unwrap_or_default()
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Semi,
    Open,
    Close,
}

fn lex(text: &str, file: &Arc<str>, problems: &mut Vec<Problem>) -> Vec<(Tok, usize)> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let mut word = String::new();
    let mut word_line = 1;
    macro_rules! flush {
        () => {
            if !word.is_empty() {
                out.push((Tok::Word(std::mem::take(&mut word)), word_line));
            }
        };
    }
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                flush!();
                line += 1;
            }
            '#' if word.is_empty() => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            ';' => {
                flush!();
                out.push((Tok::Semi, line));
            }
            '{' => {
                flush!();
                out.push((Tok::Open, line));
            }
            '}' => {
                flush!();
                out.push((Tok::Close, line));
            }
            '"' | '\'' if word.is_empty() => {
                let start = line;
                word_line = line;
                let mut closed = false;
                while let Some(ch) = chars.next() {
                    match ch {
                        _ if ch == c => {
                            closed = true;
                            break;
                        }
                        '\\' => {
                            if let Some(n) = chars.next() {
                                word.push(n);
                            }
                        }
                        '\n' => {
                            line += 1;
                            word.push(ch);
                        }
                        _ => word.push(ch),
                    }
                }
                if !closed {
                    problems.push(Problem {
                        at: Loc {
                            file: Arc::clone(file),
                            line: start,
                        },
                        message: format!("unterminated quoted string: a {c} is never closed"),
                    });
                }
                out.push((Tok::Word(std::mem::take(&mut word)), start));
            }
            c if c.is_whitespace() => flush!(),
            c => {
                if word.is_empty() {
                    word_line = line;
                }
                word.push(c);
            }
        }
    }
    flush!();
    out
}

struct Parser<'a> {
    main: &'a Path,
    problems: &'a mut Vec<Problem>,
    depth: usize,
}

impl Parser<'_> {
    fn file(&mut self, path: &Path) -> Result<Vec<Node>, ImportError> {
        let text = source::read(path)?;
        let file: Arc<str> = Arc::from(path.display().to_string());
        let toks = lex(&text, &file, self.problems);
        let mut i = 0;
        self.block(&toks, &mut i, &file, None)
    }

    fn block(
        &mut self,
        toks: &[(Tok, usize)],
        i: &mut usize,
        file: &Arc<str>,
        opened: Option<usize>,
    ) -> Result<Vec<Node>, ImportError> {
        let loc = |line| Loc {
            file: Arc::clone(file),
            line,
        };
        let mut nodes = Vec::new();
        let mut words: Vec<String> = Vec::new();
        let mut first = 0;
        loop {
            let Some((tok, line)) = toks.get(*i) else {
                if let Some(w) = words.first() {
                    self.problems.push(Problem {
                        at: loc(first),
                        message: format!("{w}: missing ; at the end of the directive"),
                    });
                }
                if let Some(open) = opened {
                    self.problems.push(Problem {
                        at: loc(open),
                        message: "unbalanced braces: this { is never closed".into(),
                    });
                }
                return Ok(nodes);
            };
            *i += 1;
            match tok {
                Tok::Word(w) => {
                    if words.is_empty() {
                        first = *line;
                    }
                    words.push(w.clone());
                }
                Tok::Semi | Tok::Open => {
                    if words.is_empty() {
                        self.problems.push(Problem {
                            at: loc(*line),
                            message: format!(
                                "unexpected {}",
                                if *tok == Tok::Semi { ";" } else { "{" }
                            ),
                        });
                        continue;
                    }
                    let name = words.remove(0);
                    let mut node = Node {
                        name,
                        args: std::mem::take(&mut words),
                        children: None,
                        at: loc(first),
                    };
                    if *tok == Tok::Open {
                        node.children = Some(self.block(toks, i, file, Some(*line))?);
                        nodes.push(node);
                    } else if node.name == "include" {
                        self.include(&node, &mut nodes)?;
                    } else {
                        nodes.push(node);
                    }
                }
                Tok::Close => {
                    if let Some(w) = words.first() {
                        self.problems.push(Problem {
                            at: loc(first),
                            message: format!("{w}: missing ; at the end of the directive"),
                        });
                        words.clear();
                    }
                    if opened.is_some() {
                        return Ok(nodes);
                    }
                    self.problems.push(Problem {
                        at: loc(*line),
                        message: "unbalanced braces: this } closes no block".into(),
                    });
                }
            }
        }
    }

    fn include(&mut self, node: &Node, into: &mut Vec<Node>) -> Result<(), ImportError> {
        if self.depth >= 16 {
            self.problems.push(Problem {
                at: node.at.clone(),
                message: "include: nested more than 16 deep (does a file include itself?)".into(),
            });
            return Ok(());
        }
        match source::glob(self.main, node.arg(0)) {
            Ok(files) => {
                for f in files {
                    self.depth += 1;
                    let nodes = self.file(&f);
                    self.depth -= 1;
                    into.extend(nodes?);
                }
            }
            Err(message) => self.problems.push(Problem {
                at: node.at.clone(),
                message,
            }),
        }
        Ok(())
    }
}

/// Imports `path`.
///
/// # Errors
/// [`ImportError::Read`] for an unreadable file, [`ImportError::Invalid`] for syntax errors and
/// every directive that cannot be imported.
pub(super) fn import(path: &Path) -> Result<Plan, ImportError> {
    let mut problems = Vec::new();
    let nodes = Parser {
        main: path,
        problems: &mut problems,
        depth: 0,
    }
    .file(path)?;
    if !problems.is_empty() {
        return Err(ImportError::Invalid(problems));
    }
    let mut m = Mapper::default();
    m.top(&nodes);
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
            self.plan.warn(at, "a listener binds to a specific address; if it is a virtual address not (yet) on this host, binding needs `sysctl -w net.ipv4.ip_nonlocal_bind=1`");
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

    // --- http ---

    fn http(&mut self, h: &Node) {
        let mut defaults = Proxy::default();
        for n in h.kids() {
            if n.name == "set_real_ip_from" {
                self.real_ip_from.push(n.arg(0).to_string());
            }
        }
        for n in h.kids() {
            match n.name.as_str() {
                "upstream" => self.upstream(n, "", true),
                "server" | "set_real_ip_from" => {}
                "real_ip_header" | "real_ip_recursive" => self.plan.ignore(&n.name, &n.at),
                _ if self.proxy_directive(n, &mut defaults) => {}
                k if IGNORED.contains(&k) => self.plan.ignore(k, &n.at),
                _ => self.unknown(
                    n,
                    "http",
                    &[
                        "upstream",
                        "server",
                        "proxy_connect_timeout",
                        "proxy_read_timeout",
                        "proxy_next_upstream",
                        "keepalive_timeout",
                    ],
                ),
            }
        }
        for n in h.kids().iter().filter(|n| n.name == "server") {
            self.http_server(n, &defaults);
        }
    }

    /// `proxy_*` settings that become upstream keys; true when `n` was one.
    fn proxy_directive(&mut self, n: &Node, p: &mut Proxy) -> bool {
        let mut set = |k: &str, v: Value| p.settings.push((k.to_string(), v, n.at.clone()));
        match n.name.as_str() {
            "proxy_connect_timeout" => set("connect_timeout", duration(n.arg(0)).into()),
            "proxy_read_timeout" => set("response_timeout", duration(n.arg(0)).into()),
            "proxy_next_upstream_timeout" => set("retry_timeout", duration(n.arg(0)).into()),
            "proxy_next_upstream_tries" => {
                let tries = n.arg(0).parse::<i64>().unwrap_or(0);
                if tries > 0 {
                    set("retries", (tries - 1).into());
                }
            }
            "proxy_next_upstream" => {
                let mut on = Vec::new();
                for a in &n.args {
                    match a.as_str() {
                        "error" | "timeout" => on.push(a.clone()),
                        "http_500" | "http_502" | "http_503" | "http_504" => {
                            if !on.iter().any(|x| x == "http_5xx") {
                                on.push("http_5xx".into());
                            }
                        }
                        "off" => {}
                        "invalid_header" | "http_403" | "http_404" | "http_429" | "non_idempotent" => self.plan.warn(&n.at, format!("proxy_next_upstream {a}: not supported; ballast retries on error, timeout and 5xx, idempotent requests only")),
                        _ => self.error(&n.at, format!("proxy_next_upstream {a}: unknown condition")),
                    }
                }
                if on.iter().any(|x| x == "http_5xx")
                    && !n.args.iter().all(|a| {
                        !a.starts_with("http_5")
                            || ["http_500", "http_502", "http_503", "http_504"]
                                .iter()
                                .all(|c| n.args.contains(&c.to_string()))
                    })
                {
                    self.plan.warn(&n.at, "proxy_next_upstream: http_500/502/503/504 are imported as http_5xx (any 5xx answer)");
                }
                p.settings.push((
                    "retry_on".into(),
                    Value::Array(on.into_iter().map(Value::String).collect()),
                    n.at.clone(),
                ));
            }
            "proxy_http_version" => {
                if n.arg(0) == "2" {
                    p.settings.push(("http2".into(), true.into(), n.at.clone()));
                } else {
                    self.plan.ignore("proxy_http_version", &n.at);
                }
            }
            "proxy_set_header" => self.set_header(n),
            "proxy_protocol" if n.arg(0) == "on" => {
                p.settings
                    .push(("send_proxy".into(), "v1".into(), n.at.clone()))
            }
            "proxy_ssl_server_name"
            | "proxy_ssl_verify"
            | "proxy_ssl_trusted_certificate"
            | "proxy_ssl_name" => match n.name.as_str() {
                "proxy_ssl_verify" => {
                    p.settings
                        .push(("tls_verify".into(), (n.arg(0) == "on").into(), n.at.clone()))
                }
                "proxy_ssl_trusted_certificate" => {
                    p.settings
                        .push(("tls_ca_file".into(), n.arg(0).into(), n.at.clone()))
                }
                "proxy_ssl_name" => {
                    p.settings
                        .push(("tls_server_name".into(), n.arg(0).into(), n.at.clone()))
                }
                _ => self.plan.ignore(&n.name, &n.at),
            },
            _ => return false,
        }
        true
    }

    fn set_header(&mut self, n: &Node) {
        let (h, v) = (n.arg(0).to_ascii_lowercase(), n.arg(1));
        let same = matches!(
            (h.as_str(), v),
            ("host", "$host" | "$http_host" | "$host:$server_port")
                | ("x-real-ip", "$remote_addr")
                | (
                    "x-forwarded-for",
                    "$proxy_add_x_forwarded_for" | "$remote_addr"
                )
                | ("x-forwarded-proto", "$scheme")
                | ("x-forwarded-host", "$host" | "$http_host")
                | ("upgrade", "$http_upgrade")
                | (
                    "connection",
                    "$connection_upgrade" | "upgrade" | "\"upgrade\"" | ""
                )
        );
        if same {
            if h == "x-real-ip" {
                self.plan.warn(&n.at, "proxy_set_header X-Real-IP: ballast sends X-Forwarded-For (the client address) instead of X-Real-IP");
            } else {
                self.plan.ignore(
                    &format!("proxy_set_header {} (ballast does this itself)", n.arg(0)),
                    &n.at,
                );
            }
        } else {
            self.plan.warn(&n.at, format!("proxy_set_header {} {v}: not supported; the header is not set (ballast keeps Host and sends X-Forwarded-For/-Proto/-Host)", n.arg(0)));
        }
    }

    fn http_server(&mut self, s: &Node, inherited: &Proxy) {
        let mut proxy = inherited.clone();
        let mut binds: Vec<(String, Loc, bool)> = Vec::new();
        let mut names: Vec<Option<String>> = Vec::new();
        let mut locations = Vec::new();
        let mut listen_extra: Vec<(String, Value, Loc)> = Vec::new();
        for n in s.kids() {
            match n.name.as_str() {
                "listen" => {
                    let Some(bind) = self.listen(n, &mut listen_extra, false) else { continue };
                    let default = n.args.iter().any(|a| a == "default_server" || a == "default");
                    binds.push((bind, n.at.clone(), default));
                }
                "server_name" => {
                    for a in &n.args {
                        match server_name(a) {
                            Ok(v) => names.extend(v),
                            Err(m) => self.error(&n.at, m),
                        }
                    }
                }
                "location" => locations.push(n),
                "ssl_certificate" | "ssl_certificate_key" => self.error(&n.at, format!("{}: HTTPS servers are not imported yet; write the listener with protocol = \"https\" and [[listener.certificate]] by hand", n.name)),
                "return" | "rewrite" | "try_files" => self.plan.warn(&n.at, format!("{}: ballast only proxies; this server-level {} is left out", n.name, n.name)),
                _ if self.proxy_directive(n, &mut proxy) => {}
                "set_real_ip_from" => self.real_ip_from.push(n.arg(0).to_string()),
                k if IGNORED.contains(&k) => self.plan.ignore(k, &n.at),
                _ => self.unknown(n, "server", &["listen", "server_name", "location", "proxy_pass"]),
            }
        }
        if binds.is_empty() {
            binds.push(("0.0.0.0:80".into(), s.at.clone(), false));
        }
        if names.is_empty() {
            names.push(None);
        }
        let mut routes = Vec::new();
        for l in locations {
            let (exact, path) = match (l.arg(0), l.args.len()) {
                ("=", 2) => (true, l.arg(1).to_string()),
                ("^~", 2) => (false, l.arg(1).to_string()),
                ("~" | "~*", _) => {
                    self.error(&l.at, format!("location {} {}: regular-expression locations are not supported; ballast routes by exact path and prefix", l.arg(0), l.arg(1)));
                    continue;
                }
                (p, 1) if p.starts_with('/') => (false, p.to_string()),
                (p, _) => {
                    self.error(
                        &l.at,
                        format!("location {p}: expected a prefix (/path), = /exact or ^~ /prefix"),
                    );
                    continue;
                }
            };
            let mut lproxy = proxy.clone();
            let mut target = None;
            for n in l.kids() {
                match n.name.as_str() {
                    "proxy_pass" => target = self.proxy_pass(n),
                    "location" => self.error(&n.at, "location: nested locations are not supported; write each one at server level"),
                    "return" | "rewrite" | "try_files" | "alias" | "fastcgi_pass" | "uwsgi_pass" | "grpc_pass" => self.plan.warn(&n.at, format!("{}: ballast only proxies (proxy_pass); left out", n.name)),
                    _ if self.proxy_directive(n, &mut lproxy) => {}
                    k if IGNORED.contains(&k) => self.plan.ignore(k, &n.at),
                    _ => self.unknown(n, "location", &["proxy_pass", "proxy_set_header", "proxy_connect_timeout", "proxy_read_timeout", "proxy_next_upstream"]),
                }
            }
            let Some((upstream, tls)) = target else {
                self.plan.warn(&l.at, format!("location {path}: no proxy_pass; ballast only proxies, so this location is left out"));
                continue;
            };
            if tls {
                lproxy
                    .settings
                    .push(("tls".into(), true.into(), l.at.clone()));
            }
            self.apply(&upstream, &lproxy);
            routes.push((exact, path, upstream, l.at.clone()));
        }
        for (bind, at, default) in binds {
            let idx =
                match self.http.iter().position(|h| {
                    h.table.get("bind").and_then(Value::as_str) == Some(bind.as_str())
                }) {
                    Some(i) => i,
                    None => {
                        let mut t = Table::new(&at);
                        t.set(
                            "name",
                            format!(
                                "http-{}",
                                name(&bind.replace([':', '[', ']'], "-")).trim_matches('-')
                            ),
                            &at,
                        );
                        t.set("bind", bind.clone(), &at);
                        t.set("protocol", "http", &at);
                        for (k, v, a) in &listen_extra {
                            t.set(k, v.clone(), a);
                        }
                        self.note_nonlocal(&at, &bind);
                        self.http.push(HttpListener {
                            table: t,
                            routes: Vec::new(),
                        });
                        self.http.len() - 1
                    }
                };
            for host in &names {
                for (exact, path, upstream, at) in &routes {
                    self.http[idx].routes.push(Route {
                        host: host.clone(),
                        exact: *exact,
                        path: path.clone(),
                        upstream: upstream.clone(),
                        at: at.clone(),
                        default_server: default,
                    });
                }
            }
        }
    }

    /// `proxy_pass http://NAME` → (upstream name, tls). A direct address gets an upstream of its own.
    fn proxy_pass(&mut self, n: &Node) -> Option<(String, bool)> {
        let url = n.arg(0);
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            self.error(
                &n.at,
                format!("proxy_pass {url}: expected http://UPSTREAM or https://UPSTREAM"),
            );
            return None;
        };
        let (host, uri) = rest.split_once('/').map_or((rest, ""), |(h, u)| (h, u));
        if !uri.is_empty() {
            self.error(&n.at, format!("proxy_pass {url}: a URI after the upstream rewrites the path, which ballast does not do; write proxy_pass http://{host}"));
            return None;
        }
        if host.contains('$') {
            self.error(
                &n.at,
                format!("proxy_pass {url}: variables are not supported"),
            );
            return None;
        }
        self.target(host, &n.at).map(|u| (u, tls))
    }

    /// The upstream for `host`: a named upstream, or a new one for a literal address.
    fn target(&mut self, host: &str, at: &Loc) -> Option<String> {
        if self
            .plan
            .upstreams
            .iter()
            .any(|u| u.get("name").and_then(Value::as_str) == Some(host))
        {
            return Some(host.to_string());
        }
        match server_address(host) {
            Ok(addr) => {
                let uname = format!("direct-{}", name(&addr.replace([':', '[', ']'], "-")));
                if !self
                    .plan
                    .upstreams
                    .iter()
                    .any(|u| u.get("name").and_then(Value::as_str) == Some(uname.as_str()))
                {
                    let mut t = Table::new(at);
                    t.set("name", uname.clone(), at);
                    t.child("[[server]]", at).set("address", addr, at);
                    self.plan.upstreams.push(t);
                }
                Some(uname)
            }
            Err(_) => {
                self.error(at, format!("proxy_pass: no upstream named {host:?} (defined before this line) and not an IP:port"));
                None
            }
        }
    }

    /// Puts location/server proxy settings on the upstream they send to.
    fn apply(&mut self, upstream: &str, p: &Proxy) {
        let mut warnings = Vec::new();
        if let Some(u) = self
            .plan
            .upstreams
            .iter_mut()
            .find(|u| u.get("name").and_then(Value::as_str) == Some(upstream))
        {
            for (k, v, at) in &p.settings {
                if let Some(old) = u.get(k) {
                    if old != v {
                        warnings.push((at.clone(), format!("{k}: upstream {upstream:?} is used with different settings; ballast has one per upstream: the first is kept")));
                        continue;
                    }
                }
                u.set(k, v.clone(), at);
            }
        }
        for (at, w) in warnings {
            self.plan.warn(&at, w);
        }
    }

    /// `listen`: the bind address; extra listener keys go to `extra`.
    fn listen(
        &mut self,
        n: &Node,
        extra: &mut Vec<(String, Value, Loc)>,
        stream: bool,
    ) -> Option<String> {
        let bind = match listen_address(n.arg(0)) {
            Ok(b) => b,
            Err(m) => {
                self.error(&n.at, m);
                return None;
            }
        };
        for p in n.args.iter().skip(1) {
            let (k, v) = p.split_once('=').unwrap_or((p.as_str(), ""));
            match k {
                "default_server" | "default" | "reuseport" | "ipv6only" | "deferred" | "bind" | "fastopen" | "rcvbuf" | "sndbuf" | "so_keepalive" => self.plan.ignore(&format!("listen {k}"), &n.at),
                "http2" if !stream => self.plan.ignore("listen http2 (ballast speaks h2c and HTTP/1.1 on every HTTP listener)", &n.at),
                "backlog" => match v.parse::<i64>() {
                    Ok(b) => extra.push(("backlog".into(), b.into(), n.at.clone())),
                    Err(_) => self.error(&n.at, format!("listen {p}: expected an integer")),
                },
                "proxy_protocol" => {
                    if self.real_ip_from.is_empty() {
                        self.error(&n.at, "listen proxy_protocol: ballast accepts PROXY headers only from trusted networks; add set_real_ip_from with them");
                    } else {
                        extra.push(("accept_proxy".into(), Value::Array(self.real_ip_from.iter().cloned().map(Value::String).collect()), n.at.clone()));
                    }
                }
                "ssl" => self.error(&n.at, "listen ssl: HTTPS and TLS listeners are not imported yet; write protocol = \"https\" with [[listener.certificate]] by hand"),
                "udp" if stream => extra.push(("@udp".into(), true.into(), n.at.clone())),
                _ => self.error(&n.at, format!("listen {p}: unknown or unsupported parameter")),
            }
        }
        Some(bind)
    }

    fn finish_http(&mut self, mut l: HttpListener) {
        let at = l.table.at.clone();
        // nginx picks an exact match first, then the longest prefix; ballast takes the first
        // route that matches, so routes are written in that order, named hosts before the rest.
        l.routes.sort_by(|a, b| {
            (
                a.host.is_none(),
                !a.exact,
                std::cmp::Reverse(a.path.len()),
                !a.default_server,
            )
                .cmp(&(
                    b.host.is_none(),
                    !b.exact,
                    std::cmp::Reverse(b.path.len()),
                    !b.default_server,
                ))
        });
        let default = l
            .routes
            .iter()
            .find(|r| r.host.is_none() && !r.exact && r.path == "/")
            .or_else(|| {
                l.routes
                    .iter()
                    .find(|r| r.default_server && !r.exact && r.path == "/")
            })
            .map(|r| (r.upstream.clone(), r.at.clone()));
        let (upstream, uat) = match default {
            Some(d) => d,
            None => match l.routes.first() {
                Some(r) => {
                    self.plan.warn(&at, format!("no catch-all `location /` on {}: nginx answers 404 where no location matches; ballast sends those requests to upstream {:?}", l.table.get("bind").and_then(Value::as_str).unwrap_or_default(), r.upstream));
                    (r.upstream.clone(), r.at.clone())
                }
                None => {
                    // Said once, and not as a consequence of an error already reported.
                    if self.problems.is_empty() {
                        self.error(&at, "server: no location with proxy_pass; ballast has nothing to send requests to");
                    }
                    return;
                }
            },
        };
        l.table.set("upstream", upstream.clone(), &uat);
        let mut seen: Vec<(Option<String>, bool, String)> = Vec::new();
        for r in &l.routes {
            if r.host.is_none() && !r.exact && r.path == "/" {
                continue;
            }
            let key = (r.host.clone(), r.exact, r.path.clone());
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let t = l.table.child("[[route]]", &r.at);
            if let Some(h) = &r.host {
                t.set("host", h.clone(), &r.at);
            }
            if r.exact {
                t.set("path", r.path.clone(), &r.at);
            } else if r.path != "/" {
                t.set("path_prefix", r.path.clone(), &r.at);
            }
            t.set("upstream", r.upstream.clone(), &r.at);
        }
        self.plan.listeners.push(l.table);
    }

    // --- stream ---

    fn stream(&mut self, st: &Node) {
        let mut defaults = Proxy::default();
        for n in st.kids() {
            if n.name == "set_real_ip_from" {
                self.real_ip_from.push(n.arg(0).to_string());
            }
        }
        let http_names: Vec<String> = self
            .plan
            .upstreams
            .iter()
            .filter_map(|u| u.get("name").and_then(Value::as_str).map(str::to_string))
            .collect();
        for n in st.kids() {
            match n.name.as_str() {
                "upstream" => {
                    let prefix = if http_names.iter().any(|h| h == n.arg(0)) {
                        "stream-"
                    } else {
                        ""
                    };
                    self.upstream(n, prefix, false);
                }
                "server" | "set_real_ip_from" => {}
                _ if self.stream_proxy(n, &mut defaults) => {}
                k if IGNORED.contains(&k) => self.plan.ignore(k, &n.at),
                _ => self.unknown(
                    n,
                    "stream",
                    &[
                        "upstream",
                        "server",
                        "proxy_timeout",
                        "proxy_connect_timeout",
                    ],
                ),
            }
        }
        for s in st.kids().iter().filter(|n| n.name == "server") {
            let mut p = defaults.clone();
            let mut binds = Vec::new();
            let mut extra = Vec::new();
            let mut target = None;
            let mut idle = None;
            for n in s.kids() {
                match n.name.as_str() {
                    "listen" => {
                        if let Some(b) = self.listen(n, &mut extra, true) {
                            binds.push((b, n.at.clone()));
                        }
                    }
                    "proxy_pass" => {
                        let raw = n.arg(0);
                        let named = if http_names.iter().any(|h| h == raw) {
                            format!("stream-{raw}")
                        } else {
                            raw.to_string()
                        };
                        target = self.target(&named, &n.at).map(|u| (u, n.at.clone()));
                    }
                    "proxy_timeout" => idle = Some((duration(n.arg(0)), n.at.clone())),
                    _ if self.stream_proxy(n, &mut p) => {}
                    k if IGNORED.contains(&k) => self.plan.ignore(k, &n.at),
                    _ => self.unknown(
                        n,
                        "stream server",
                        &[
                            "listen",
                            "proxy_pass",
                            "proxy_timeout",
                            "proxy_connect_timeout",
                            "proxy_protocol",
                        ],
                    ),
                }
            }
            let Some((upstream, pat)) = target else {
                self.error(
                    &s.at,
                    "server: no proxy_pass; ballast has nothing to send connections to",
                );
                continue;
            };
            self.apply(&upstream, &p);
            for (bind, at) in binds {
                let mut t = Table::new(&at);
                t.set(
                    "name",
                    format!(
                        "stream-{}",
                        name(&bind.replace([':', '[', ']'], "-")).trim_matches('-')
                    ),
                    &at,
                );
                t.set("bind", bind.clone(), &at);
                for (k, v, a) in &extra {
                    if k == "@udp" {
                        if let Err(m) = udp_listener(&mut t, a) {
                            self.error(a, m);
                        }
                    } else {
                        t.set(k, v.clone(), a);
                    }
                }
                t.set("upstream", upstream.clone(), &pat);
                if let Some((d, a)) = &idle {
                    t.set("idle_timeout", d.clone(), a);
                }
                self.note_nonlocal(&at, &bind);
                self.plan.listeners.push(t);
            }
        }
    }

    fn stream_proxy(&mut self, n: &Node, p: &mut Proxy) -> bool {
        match n.name.as_str() {
            "proxy_connect_timeout" => p.settings.push((
                "connect_timeout".into(),
                duration(n.arg(0)).into(),
                n.at.clone(),
            )),
            "proxy_protocol" => {
                if n.arg(0) == "on" {
                    p.settings
                        .push(("send_proxy".into(), "v1".into(), n.at.clone()));
                }
            }
            "proxy_next_upstream" => {
                if n.arg(0) == "off" {
                    p.settings.push(("retries".into(), 0.into(), n.at.clone()));
                }
            }
            "proxy_next_upstream_tries" => {
                if let Ok(t) = n.arg(0).parse::<i64>() {
                    if t > 0 {
                        p.settings
                            .push(("retries".into(), (t - 1).into(), n.at.clone()));
                    }
                }
            }
            "proxy_next_upstream_timeout" => self.plan.warn(
                &n.at,
                "proxy_next_upstream_timeout: applies to HTTP upstreams only in ballast; left out",
            ),
            _ => return false,
        }
        true
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
