//! Stage 2 of the configuration pipeline: raw [`ConfigToml`] to a validated [`Config`], and the
//! [`Diagnostic`] every problem is reported as.
//!
//! This module owns the rules: ranges, address and duration syntax, enumerations, required keys,
//! unique names, cross-references between listeners and upstreams, and filling in defaults (from
//! [`super::defaults`]). It does no I/O. Stage 1 (text to raw types, where syntax, type and
//! unknown-key errors come from) is in `toml.rs`.
//!
//! # Every problem at once
//! The validator does not stop at the first problem: it walks the whole file, records a
//! [`Diagnostic`] for each, and returns them sorted by position, so an operator fixes a file in
//! one round (linkerd's `parse_config` does the same). Stage 1 errors necessarily stop at the first.
//!
//! # What a diagnostic looks like
//! `{origin}:{line}:{column}: {key}: {message}`, for example
//! `ballast.toml:12:10: upstream[0].server[1].weight: 70000 is out of range; allowed: 0..=65535`.
//! Line and column are 1-based and columns count characters, not bytes. The position is that of the
//! offending value; for a missing key or an empty table it is the table's `[[header]]` (or the `{`
//! of an inline table); for an unknown key it is the key.
//!
//! # Key paths
//! Keys are named by their path from the top of the file, with **0-based indexes** in file order:
//! `listener[0].bind`, `upstream[1].server[2].weight`, `global.log_format`. Indexes, not names,
//! because a path must exist even when the name is missing, misspelt or duplicated, and because the
//! line and column already say where to look; `upstream[1]` is the second `[[upstream]]` table.
//! Servers written inline (`server = [ { … }, … ]`) are numbered the same way as
//! `[[upstream.server]]` tables. Syntax errors carry no key path (there is no tree yet) and print
//! as `{origin}:{line}:{column}: {message}`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ::toml::Spanned;

use super::defaults;
use super::toml::{
    self as raw, ConfigToml, DurationToml, GlobalToml, ListenerToml, ServerToml, SizeToml,
    StrOrInt, UpstreamToml,
};
use super::{Config, Global, ListenerConfig, LogFormat, Protocol, ServerConfig, UpstreamConfig};
use crate::scheduler::SchedulerKind;

#[path = "validate_admin.rs"]
mod admin;
#[path = "validate_health.rs"]
mod health;
#[path = "validate_http.rs"]
mod http;
#[path = "validate_limits.rs"]
mod limits;
#[path = "validate_persistence.rs"]
mod persistence;
#[path = "validate_privilege.rs"]
mod privilege;
#[path = "validate_udp.rs"]
mod udp;
#[path = "validate_vrrp.rs"]
mod vrrp;

/// One problem found in a configuration file, with where it is and what would be accepted.
///
/// Displays as `{origin}:{line}:{column}: {key}: {message}` (without `{key}: ` when `key` is
/// empty, as for syntax errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the text came from: the file path, or a label such as `<demo>`.
    pub origin: String,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// The key path, such as `upstream[0].server[1].weight`; empty for syntax errors.
    pub key: String,
    /// What was found and what is allowed.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.origin, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// The text being checked, and how to turn its byte offsets into lines and columns.
pub(crate) struct Source<'a> {
    /// The configuration text.
    pub(crate) text: &'a str,
    /// Its origin, for messages.
    pub(crate) origin: &'a str,
}

impl Source<'_> {
    /// 1-based line and character column of a byte offset. Offsets past the end or inside a
    /// character are clamped, never a panic.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        let mut end = offset.min(self.text.len());
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let before = self.text.get(..end).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let line_text = before
            .rfind('\n')
            .map_or(before, |i| before.get(i + 1..).unwrap_or_default());
        // A byte-order mark is not a column an editor shows.
        let line_text = line_text.strip_prefix('\u{feff}').unwrap_or(line_text);
        (line, line_text.chars().count() + 1)
    }

    /// A diagnostic at a byte offset.
    pub(crate) fn diagnostic(
        &self,
        offset: usize,
        key: &str,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, column) = self.position(offset);
        Diagnostic {
            origin: self.origin.to_owned(),
            line,
            column,
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// Parses and validates `text`; `origin` names it in diagnostics.
///
/// # Errors
/// Every problem found, sorted by position; a single one when the text is not valid TOML or does
/// not match the file's shape (stage 1 stops at its first error).
pub(crate) fn parse(text: &str, origin: &str) -> Result<Config, Vec<Diagnostic>> {
    let src = Source { text, origin };
    let raw = raw::from_str(&src).map_err(|d| vec![d])?;
    validate(&raw, &src)
}

/// Stage 2: checks every rule on the raw file and builds the model with defaults filled in.
///
/// # Errors
/// Every problem found, sorted by line and column.
pub(crate) fn validate(raw: &ConfigToml, src: &Source<'_>) -> Result<Config, Vec<Diagnostic>> {
    let mut v = Validator {
        src,
        diags: Vec::new(),
    };
    let global = v.global(raw.global.as_ref());
    let listeners: Vec<ListenerConfig> = raw
        .listener
        .iter()
        .enumerate()
        .map(|(i, l)| v.listener(i, l))
        .collect();
    let upstreams: Vec<UpstreamConfig> = raw
        .upstream
        .iter()
        .enumerate()
        .map(|(i, u)| v.upstream(i, u))
        .collect();
    v.cross_check(raw);
    let vrrp = v.vrrp(raw);
    v.udp_cross_check(raw);
    let admin = v.admin(raw.admin.as_ref());

    if v.diags.is_empty() {
        Ok(Config {
            origin: src.origin.to_owned(),
            global,
            listeners,
            upstreams,
            vrrp,
            admin,
        })
    } else {
        let mut diags = v.diags;
        // Stable: problems at the same position keep the order they were found in.
        diags.sort_by_key(|d| (d.line, d.column));
        Err(diags)
    }
}

/// Collects diagnostics while the model is built. Each check returns a usable value (the default,
/// or a placeholder) even when it fails, so the walk goes on; the model is thrown away if any
/// diagnostic was recorded.
struct Validator<'s, 'a> {
    src: &'s Source<'a>,
    diags: Vec<Diagnostic>,
}

// === impl Validator: tables ===

impl Validator<'_, '_> {
    fn global(&mut self, raw: Option<&GlobalToml>) -> Global {
        let empty = GlobalToml::default();
        let raw = raw.unwrap_or(&empty);
        let log_level = match &raw.log_level {
            Some(level) => {
                if let Err(message) = check_log_level(level.get_ref()) {
                    self.error(level.span().start, "global.log_level", message);
                }
                level.get_ref().clone()
            }
            None => defaults::LOG_LEVEL.to_owned(),
        };
        let log_format = self.choice(
            raw.log_format.as_ref(),
            "global.log_format",
            "a log format",
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            "",
            LogFormat::Text,
        );
        let threads = self.int(
            raw.threads.as_ref(),
            "global.threads",
            0,
            defaults::THREADS_MAX as i64,
            defaults::THREADS as i64,
        );
        let shutdown_grace = self
            .duration(
                raw.shutdown_grace.as_ref(),
                "global.shutdown_grace",
                Duration::ZERO,
                defaults::DURATION_MAX,
            )
            .unwrap_or(defaults::SHUTDOWN_GRACE);
        Global {
            log_level,
            log_format,
            threads: per_core(
                usize::try_from(threads).unwrap_or(defaults::THREADS),
                defaults::THREADS_MAX,
            ),
            shutdown_grace,
            connections: self.global_limit(raw),
            access_log: self.access_log(raw),
            run_as: self.run_as(raw),
        }
    }

    fn listener(&mut self, index: usize, raw: &Spanned<ListenerToml>) -> ListenerConfig {
        let at = raw.span().start;
        let base = format!("listener[{index}]");
        let key = |field: &str| format!("{base}.{field}");
        let l = raw.get_ref();

        let name = self.name(l.name.as_ref(), at, &key("name"), "name = \"web\"");
        let bind = match self.required(l.bind.as_ref(), at, &key("bind"), "bind = \"0.0.0.0:80\"") {
            Some(bind) => self.address(bind, &key("bind")),
            None => None,
        };
        let protocol = self.choice(
            l.protocol.as_ref(),
            &key("protocol"),
            "a supported protocol",
            &[
                ("tcp", Protocol::Tcp),
                ("http", Protocol::Http),
                ("https", Protocol::Https),
                ("udp", Protocol::Udp),
            ],
            "",
            Protocol::Tcp,
        );
        let upstream = self
            .required(
                l.upstream.as_ref(),
                at,
                &key("upstream"),
                "upstream = \"web\"",
            )
            .map(|u| u.get_ref().clone())
            .unwrap_or_default();
        let backlog = self.int(
            l.backlog.as_ref(),
            &key("backlog"),
            1,
            i64::from(defaults::BACKLOG_MAX),
            i64::from(defaults::BACKLOG),
        );
        let workers = self.int(
            l.workers.as_ref(),
            &key("workers"),
            0,
            defaults::WORKERS_MAX as i64,
            defaults::WORKERS as i64,
        );
        let tcp_keepalive = self.duration(
            l.tcp_keepalive.as_ref(),
            &key("tcp_keepalive"),
            defaults::TCP_KEEPALIVE_MIN,
            defaults::TCP_KEEPALIVE_MAX,
        );
        let idle_timeout = self
            .duration(
                l.idle_timeout.as_ref(),
                &key("idle_timeout"),
                Duration::from_millis(1),
                defaults::DURATION_MAX,
            )
            .unwrap_or(defaults::IDLE_TIMEOUT);
        let buffer_size = self.size(l.buffer_size.as_ref(), &key("buffer_size"));
        let (routes, http) = self.listener_http(&base, l, protocol.is_http());
        let certificates = self.certificates(&base, at, l, protocol == Protocol::Https);
        let accept_proxy = self.accept_proxy(&base, l);
        let udp = self.listener_udp(&base, at, l, protocol == Protocol::Udp);

        ListenerConfig {
            name,
            bind: bind.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            protocol,
            upstream,
            backlog: u32::try_from(backlog).unwrap_or(defaults::BACKLOG),
            workers: per_core(
                usize::try_from(workers).unwrap_or(defaults::WORKERS),
                defaults::WORKERS_MAX,
            ),
            tcp_nodelay: l.tcp_nodelay.unwrap_or(defaults::TCP_NODELAY),
            tcp_keepalive,
            idle_timeout,
            buffer_size,
            splice: l.splice.unwrap_or(defaults::SPLICE),
            accept_proxy,
            certificates,
            routes,
            http,
            connections: self.listener_limit(&base, l),
            udp,
        }
    }

    fn upstream(&mut self, index: usize, raw: &Spanned<UpstreamToml>) -> UpstreamConfig {
        let at = raw.span().start;
        let base = format!("upstream[{index}]");
        let key = |field: &str| format!("{base}.{field}");
        let u = raw.get_ref();

        let name = self.name(u.name.as_ref(), at, &key("name"), "name = \"web\"");
        let schedulers: Vec<(&str, SchedulerKind)> = SchedulerKind::ALL
            .iter()
            .map(|k| (k.as_str(), *k))
            .collect();
        let scheduler = self.choice(
            u.scheduler.as_ref(),
            &key("scheduler"),
            "a scheduler",
            &schedulers,
            "",
            defaults::SCHEDULER,
        );
        let connect_timeout = self
            .duration(
                u.connect_timeout.as_ref(),
                &key("connect_timeout"),
                Duration::from_millis(1),
                defaults::DURATION_MAX,
            )
            .unwrap_or(defaults::CONNECT_TIMEOUT);
        let retries = self.int(
            u.retries.as_ref(),
            &key("retries"),
            0,
            i64::from(defaults::RETRIES_MAX),
            i64::from(defaults::RETRIES),
        );
        let tcp_keepalive = self.duration(
            u.tcp_keepalive.as_ref(),
            &key("tcp_keepalive"),
            defaults::TCP_KEEPALIVE_MIN,
            defaults::TCP_KEEPALIVE_MAX,
        );
        if u.server.is_empty() {
            self.error(
                at,
                &key("server"),
                "no servers; add at least one [[upstream.server]] with an address",
            );
        }
        let checked = u.health_check.is_some();
        let servers = u
            .server
            .iter()
            .enumerate()
            .map(|(i, s)| self.server(&format!("{base}.server[{i}]"), s, checked))
            .collect();

        let http = self.upstream_http(&base, u);
        let health = self.upstream_health(&base, u);
        let send_proxy = self.send_proxy(&base, u);
        let persistence = self.persistence(&base, u);
        let max_queue = self.int(
            u.max_queue.as_ref(),
            &key("max_queue"),
            0,
            defaults::MAX_QUEUE_MAX,
            defaults::MAX_QUEUE,
        );
        let queue_timeout = self
            .duration(
                u.queue_timeout.as_ref(),
                &key("queue_timeout"),
                Duration::from_millis(1),
                defaults::DURATION_MAX,
            )
            .unwrap_or(connect_timeout);
        UpstreamConfig {
            max_queue: usize::try_from(max_queue).unwrap_or(0),
            queue_timeout,
            send_proxy,
            persistence,
            name,
            scheduler,
            http,
            connect_timeout,
            retries: u32::try_from(retries).unwrap_or(defaults::RETRIES),
            tcp_keepalive,
            health,
            servers,
        }
    }

    fn server(&mut self, base: &str, raw: &Spanned<ServerToml>, checked: bool) -> ServerConfig {
        let at = raw.span().start;
        let key = |field: &str| format!("{base}.{field}");
        let s = raw.get_ref();

        let address = self
            .required(
                s.address.as_ref(),
                at,
                &key("address"),
                "address = \"10.0.0.1:80\"",
            )
            .and_then(|a| {
                let addr = self.address(a, &key("address"))?;
                self.server_address(a, addr, &key("address"))
            });
        let weight = self.int(
            s.weight.as_ref(),
            &key("weight"),
            0,
            i64::from(defaults::WEIGHT_MAX),
            i64::from(defaults::WEIGHT),
        );
        let max_connections = self.int(
            s.max_connections.as_ref(),
            &key("max_connections"),
            0,
            i64::from(u32::MAX),
            0,
        );
        let (check, check_port, state) = self.server_health(base, s, checked);
        ServerConfig {
            address: address.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            weight: u32::try_from(weight).unwrap_or(defaults::WEIGHT),
            max_connections: u32::try_from(max_connections).unwrap_or(0),
            backup: s.backup.unwrap_or(false),
            check,
            check_port,
            state,
        }
    }

    /// Rules that span tables: unique names, listeners naming a defined upstream, distinct bind
    /// addresses, distinct servers within an upstream, at least one listener.
    fn cross_check(&mut self, raw: &ConfigToml) {
        // A node that only runs VRRP (the service is another program) needs no listener.
        if raw.listener.is_empty() && raw.vrrp.is_none() {
            self.error(
                0,
                "listener",
                "nothing to serve: define at least one [[listener]]",
            );
        }

        let listener_names = raw.listener.iter().map(|l| l.get_ref().name.as_ref());
        self.unique_names("listener", listener_names);
        let upstream_names = raw.upstream.iter().map(|u| u.get_ref().name.as_ref());
        self.unique_names("upstream", upstream_names);

        let mut defined: Vec<&str> = Vec::new();
        for u in &raw.upstream {
            if let Some(name) = &u.get_ref().name {
                if !defined.contains(&name.get_ref().as_str()) {
                    defined.push(name.get_ref());
                }
            }
        }
        let defined_list = if defined.is_empty() {
            "no [[upstream]] is defined".to_owned()
        } else {
            let quoted: Vec<String> = defined.iter().map(|n| format!("{n:?}")).collect();
            format!("defined upstreams: {}", quoted.join(", "))
        };
        // A TCP and a UDP listener may share an address (DNS serves both); keyed by both.
        let mut binds: HashMap<(SocketAddr, bool), usize> = HashMap::new();
        for (i, l) in raw.listener.iter().enumerate() {
            let l = l.get_ref();
            for (r, route) in l.route.iter().enumerate() {
                let Some(up) = &route.get_ref().upstream else {
                    continue;
                };
                if !defined.contains(&up.get_ref().as_str()) {
                    let message = format!("no upstream named {:?}; {defined_list}", up.get_ref());
                    let key = format!("listener[{i}].route[{r}].upstream");
                    self.error(up.span().start, &key, message);
                }
            }
            if let Some(up) = &l.upstream {
                if !defined.contains(&up.get_ref().as_str()) {
                    let message = format!("no upstream named {:?}; {defined_list}", up.get_ref());
                    self.error(up.span().start, &format!("listener[{i}].upstream"), message);
                }
            }
            // Two sockets on one address would, with SO_REUSEPORT, silently share its traffic.
            // Port 0 asks the kernel for a fresh port each time, so it never collides.
            let Some(bind) = &l.bind else { continue };
            let Ok(addr) = bind.get_ref().parse::<SocketAddr>() else {
                continue;
            };
            if addr.port() == 0 {
                continue;
            }
            let udp = l.protocol.as_ref().is_some_and(|p| p.get_ref() == "udp");
            if let Some(first) = binds.get(&(addr, udp)) {
                let message = format!(
                    "{addr} is already the bind address of listener[{first}] (line {}); \
                     two listeners cannot share an address",
                    self.line_of(
                        raw.listener
                            .get(*first)
                            .and_then(|f| f.get_ref().bind.as_ref())
                    ),
                );
                self.error(bind.span().start, &format!("listener[{i}].bind"), message);
            } else {
                binds.insert((addr, udp), i);
            }
        }

        for (u, up) in raw.upstream.iter().enumerate() {
            let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
            for (s, server) in up.get_ref().server.iter().enumerate() {
                let Some(address) = &server.get_ref().address else {
                    continue;
                };
                let Ok(addr) = address.get_ref().parse::<SocketAddr>() else {
                    continue;
                };
                if let Some(line) = seen.get(&addr) {
                    let message = format!(
                        "duplicate server address {addr} in this upstream (first defined at line {line})"
                    );
                    let key = format!("upstream[{u}].server[{s}].address");
                    self.error(address.span().start, &key, message);
                } else {
                    seen.insert(addr, self.src.position(address.span().start).0);
                }
            }
        }
    }

    fn unique_names<'r>(
        &mut self,
        table: &str,
        names: impl Iterator<Item = Option<&'r Spanned<String>>>,
    ) {
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.enumerate() {
            let Some(name) = name else { continue };
            let line = self.src.position(name.span().start).0;
            if let Some(first_line) = first.get(name.get_ref().as_str()) {
                let message = format!(
                    "duplicate {table} name {:?} (first defined at line {first_line})",
                    name.get_ref()
                );
                self.error(name.span().start, &format!("{table}[{i}].name"), message);
            } else {
                first.insert(name.get_ref(), line);
            }
        }
    }
}

// === impl Validator: values ===

impl Validator<'_, '_> {
    fn error(&mut self, offset: usize, key: &str, message: impl Into<String>) {
        let diag = self.src.diagnostic(offset, key, message);
        self.diags.push(diag);
    }

    fn line_of<T>(&self, value: Option<&Spanned<T>>) -> usize {
        value.map_or(0, |v| self.src.position(v.span().start).0)
    }

    /// A key that must be present; `table_at` is where its table starts, `example` a line to add.
    fn required<'r>(
        &mut self,
        value: Option<&'r Spanned<String>>,
        table_at: usize,
        key: &str,
        example: &str,
    ) -> Option<&'r Spanned<String>> {
        if value.is_none() {
            self.error(
                table_at,
                key,
                format!("missing required key; for example: {example}"),
            );
        }
        value
    }

    /// A required name: 1 to 64 ASCII letters, digits, `-`, `_` or `.`, so that it is safe in log
    /// fields, metric labels, admin API paths and command lines without quoting.
    fn name(
        &mut self,
        value: Option<&Spanned<String>>,
        table_at: usize,
        key: &str,
        example: &str,
    ) -> String {
        let Some(name) = self.required(value, table_at, key, example) else {
            return String::new();
        };
        let text = name.get_ref();
        let valid = (1..=64).contains(&text.len())
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            let message = format!(
                "{text:?} is not a valid name; use 1 to 64 letters, digits, '-', '_' or '.'"
            );
            self.error(name.span().start, key, message);
        }
        text.clone()
    }

    /// An integer in `min..=max`; `default` when absent.
    fn int(
        &mut self,
        value: Option<&Spanned<i64>>,
        key: &str,
        min: i64,
        max: i64,
        default: i64,
    ) -> i64 {
        let Some(value) = value else { return default };
        let n = *value.get_ref();
        if (min..=max).contains(&n) {
            n
        } else {
            self.error(
                value.span().start,
                key,
                format!("{n} is out of range; allowed: {min}..={max}"),
            );
            default
        }
    }

    /// One of a fixed set of spellings; `what` names the set ("a scheduler"), `note` follows the
    /// list of allowed spellings.
    fn choice<T: Copy>(
        &mut self,
        value: Option<&Spanned<String>>,
        key: &str,
        what: &str,
        allowed: &[(&str, T)],
        note: &str,
        default: T,
    ) -> T {
        let Some(value) = value else { return default };
        if let Some((_, t)) = allowed.iter().find(|(s, _)| *s == value.get_ref()) {
            return *t;
        }
        let list: Vec<&str> = allowed.iter().map(|(s, _)| *s).collect();
        let message = format!(
            "{:?} is not {what}; allowed: {}{note}",
            value.get_ref(),
            list.join(", ")
        );
        self.error(value.span().start, key, message);
        default
    }

    /// A duration string with a unit, in `min..=max`; `None` when absent or invalid.
    fn duration(
        &mut self,
        value: Option<&Spanned<DurationToml>>,
        key: &str,
        min: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let value = value?;
        let at = value.span().start;
        let text = match &value.get_ref().0 {
            StrOrInt::Str(text) => text,
            StrOrInt::Int(n) => {
                // Unit-less numbers are where operators get bitten (seconds? milliseconds?).
                let message = format!(
                    "{n} has no unit; write a string with a unit, such as \"{n}s\", \"250ms\" or \"10m\""
                );
                self.error(at, key, message);
                return None;
            }
        };
        let Ok(d) = humantime::parse_duration(text) else {
            let message = format!(
                "cannot parse {text:?} as a duration; expected a number with a unit, such as \"250ms\", \"3s\", \"10m\""
            );
            self.error(at, key, message);
            return None;
        };
        if d < min || d > max {
            let message = format!(
                "{text:?} is out of range; allowed: {}..={}",
                format_limit(min),
                format_limit(max)
            );
            self.error(at, key, message);
            return None;
        }
        Some(d)
    }

    /// `buffer_size`: bytes as an integer or a string with a binary unit; the default when absent.
    fn size(&mut self, value: Option<&Spanned<SizeToml>>, key: &str) -> usize {
        let (min, max) = (defaults::BUFFER_SIZE_MIN, defaults::BUFFER_SIZE_MAX);
        self.size_in(value, key, min, max, defaults::BUFFER_SIZE)
    }

    /// A size in `min..=max` bytes; `default` when absent or invalid.
    fn size_in(
        &mut self,
        value: Option<&Spanned<SizeToml>>,
        key: &str,
        min: usize,
        max: usize,
        default: usize,
    ) -> usize {
        let Some(value) = value else {
            return default;
        };
        let at = value.span().start;
        let (bytes, shown) = match &value.get_ref().0 {
            StrOrInt::Int(n) => (u64::try_from(*n).ok(), n.to_string()),
            StrOrInt::Str(text) => {
                let Some(bytes) = parse_size(text) else {
                    let message = format!(
                        "cannot parse {text:?} as a size; expected a number of bytes with an optional \
                         binary unit (B, KiB, MiB, GiB), such as \"64KiB\", \"1MiB\" or 65536"
                    );
                    self.error(at, key, message);
                    return default;
                };
                (Some(bytes), format!("{text:?}"))
            }
        };
        match bytes.and_then(|b| usize::try_from(b).ok()) {
            Some(b) if (min..=max).contains(&b) => b,
            _ => {
                let message = format!(
                    "{shown} is out of range; allowed: {}..={} ({min}..={max} bytes)",
                    format_size(min),
                    format_size(max)
                );
                self.error(at, key, message);
                default
            }
        }
    }

    /// `IP:port`, with a hint for the two usual mistakes (a host name, IPv6 without brackets).
    fn address(&mut self, value: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        let text = value.get_ref();
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Some(addr);
        }
        let hint = if text.contains("::") && text.parse::<Ipv6Addr>().is_ok() {
            " (write IPv6 addresses in brackets, with the port after them)"
        } else {
            match text.rsplit_once(':') {
                Some((host, port))
                    if port.parse::<u16>().is_ok()
                        && !host.is_empty()
                        && !host.starts_with('[')
                        && host.parse::<IpAddr>().is_err()
                        && host.chars().any(|c| c.is_ascii_alphabetic()) =>
                {
                    " (host names are not resolved; write an IP address)"
                }
                _ => "",
            }
        };
        let message = format!(
            "cannot parse {text:?} as an address{hint}; expected IP:port, such as \"0.0.0.0:80\" or \"[::]:443\""
        );
        self.error(value.span().start, key, message);
        None
    }

    /// A server address must be one ballast can connect to: not port 0, not the wildcard address.
    fn server_address(
        &mut self,
        value: &Spanned<String>,
        addr: SocketAddr,
        key: &str,
    ) -> Option<SocketAddr> {
        let message = if addr.port() == 0 {
            format!("{addr} has port 0, which cannot be connected to; expected the server's port, such as \"10.0.0.1:80\"")
        } else if addr.ip().is_unspecified() {
            format!("{} is the wildcard address, not a server; expected the server's IP (127.0.0.1 or [::1] for this host)", addr.ip())
        } else {
            return Some(addr);
        };
        self.error(value.span().start, key, message);
        None
    }
}

// === value parsers ===

/// Checks a `log_level`. `tracing`'s filter syntax takes any bare word as a target name, so a typo
/// such as `warning` would be accepted and silently log almost nothing: a directive without `=` must
/// therefore be a level. Anything else goes to the real parser.
fn check_log_level(text: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let allowed = "allowed: off, error, warn, info, debug, trace, or directives such as \"info,ballast=debug\"";
    if text.trim().is_empty() {
        return Err(format!("empty log level; {allowed}"));
    }
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[', ':']);
        if bare && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
            return Err(format!("{directive:?} is not a log level; {allowed}"));
        }
    }
    match tracing_subscriber::EnvFilter::builder().parse(text) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("cannot parse {text:?} as a log filter: {e}")),
    }
}

/// `"65536"`, `"64KiB"`, `"64 KiB"`, `"1MiB"`, `"512B"` to bytes. Units are binary and
/// case-insensitive; decimal units (`KB`, `MB`) are refused rather than guessed at.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number: u64 = text.get(..digits)?.parse().ok()?;
    let unit = text.get(digits..)?.trim_start().to_ascii_lowercase();
    let multiplier: u64 = match unit.as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// A byte count in the largest binary unit that divides it: `16MiB`, `1KiB`, `1000B`.
fn format_size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

/// A limit in the largest unit that divides it, in the syntax the file accepts: `365d`, `1s`, `1ms`.
fn format_limit(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".to_owned(),
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// `0` (for `workers` and `threads`) means one per CPU core this process may run on: what
/// `available_parallelism` reports, which honours the affinity mask and cgroup CPU quotas. Capped at
/// the key's maximum; 1 if the count is unknown. Any other value is kept.
fn per_core(n: usize, max: usize) -> usize {
    if n != 0 {
        return n;
    }
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, max)
}
