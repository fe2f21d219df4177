//! The raw configuration file: serde types that mirror the TOML text, before any checking.
//!
//! This module owns stage 1 of the pipeline described in [`crate::config`]: it turns text into a
//! [`ConfigToml`] and nothing more. Every table rejects unknown keys (`deny_unknown_fields`), and
//! every value the validator may complain about is wrapped in [`Spanned`] so a message can point at
//! its line and column. Values are kept loose on purpose (integers as `i64`, enumerations as
//! strings, durations and sizes as "string or integer"): a value of the right TOML type but out of
//! range is reported by `validate.rs`, which collects every such problem in one pass, rather than by
//! serde, which stops at the first.
//!
//! Required keys are `Option`s here for the same reason: a missing `name` is a validation problem
//! reported alongside the others, not a parse failure.
//!
//! What serde does reject (syntax errors, a value of the wrong TOML type, an unknown key) stops the
//! parse at the first problem. [`from_str`] turns that error into a [`Diagnostic`]: the toml crate
//! gives a message and a byte span; the key path is recovered by parsing the text again into the
//! crate's spanned document tree (`toml::de::DeTable`) and walking down to the node under the span,
//! so an unknown key deep in `[[upstream.server]]` is reported as `upstream[1].server[0].wieght`, not
//! just `wieght`. serde's wording is then rephrased in the project's style ("unknown key; allowed:
//! …", "\"3\" is a string; expected an integer"). Syntax errors keep the toml crate's first line and
//! carry no key path.
//!
//! No `flatten`: it would lose both the spans and `deny_unknown_fields`.

use std::fmt;
use std::ops::Range;

use ::toml::de::{DeTable, DeValue};
use ::toml::Spanned;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::validate::{Diagnostic, Source};

#[path = "toml_vrrp.rs"]
mod vrrp;
pub(crate) use vrrp::*;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigToml {
    /// `[global]`, optional.
    #[serde(default)]
    pub(crate) global: Option<GlobalToml>,
    /// `[[listener]]` tables, in file order.
    #[serde(default)]
    pub(crate) listener: Vec<Spanned<ListenerToml>>,
    /// `[[upstream]]` tables, in file order.
    #[serde(default)]
    pub(crate) upstream: Vec<Spanned<UpstreamToml>>,
    /// `[vrrp]`, optional: VRRP instances.
    pub(crate) vrrp: Option<Spanned<VrrpToml>>,
    /// `[admin]`, optional: the admin API, metrics and dashboard.
    #[serde(default)]
    pub(crate) admin: Option<Spanned<AdminToml>>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminToml {
    /// `bind`: `IP:port`, or a unix socket path (absolute, or `unix:PATH`).
    pub(crate) bind: Option<Spanned<String>>,
    /// `token`: the bearer token, inline.
    pub(crate) token: Option<Spanned<String>>,
    /// `token_file`: a file holding the bearer token.
    pub(crate) token_file: Option<Spanned<String>>,
}

/// `[global]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GlobalToml {
    /// `log_level`: a `tracing` filter.
    pub(crate) log_level: Option<Spanned<String>>,
    /// `log_format`: `text` or `json`.
    pub(crate) log_format: Option<Spanned<String>>,
    /// `threads`: async runtime worker threads; 0 = one per core.
    pub(crate) threads: Option<Spanned<i64>>,
    /// `shutdown_grace`: a duration.
    pub(crate) shutdown_grace: Option<Spanned<DurationToml>>,
    /// `max_connections`: process-wide limit on client connections; 0 = derived.
    pub(crate) max_connections: Option<Spanned<i64>>,
    /// `resume_at`: percent of `max_connections` at which accepting resumes.
    pub(crate) resume_at: Option<Spanned<i64>>,
    /// `access_log`: `stdout` or a path.
    pub(crate) access_log: Option<Spanned<String>>,
    /// `access_log_format`: `text` or `json`.
    pub(crate) access_log_format: Option<Spanned<String>>,
    /// `user`: a user name or numeric id to run as once everything is bound.
    pub(crate) user: Option<Spanned<IdToml>>,
    /// `group`: a group name or numeric id; default the user's primary group.
    pub(crate) group: Option<Spanned<IdToml>>,
}

/// One `[[listener]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerToml {
    /// `name`, required.
    pub(crate) name: Option<Spanned<String>>,
    /// `bind`, required: `IP:port`.
    pub(crate) bind: Option<Spanned<String>>,
    /// `protocol`: only `tcp` so far.
    pub(crate) protocol: Option<Spanned<String>>,
    /// `upstream`, required: the name of an `[[upstream]]`.
    pub(crate) upstream: Option<Spanned<String>>,
    /// `backlog`: listen(2) backlog.
    pub(crate) backlog: Option<Spanned<i64>>,
    /// `workers`: 0 = one per core.
    pub(crate) workers: Option<Spanned<i64>>,
    /// `tcp_nodelay`.
    pub(crate) tcp_nodelay: Option<bool>,
    /// `tcp_keepalive`: a duration; absent = off.
    pub(crate) tcp_keepalive: Option<Spanned<DurationToml>>,
    /// `idle_timeout`: a duration.
    pub(crate) idle_timeout: Option<Spanned<DurationToml>>,
    /// `buffer_size`: a size (`"256KiB"`) or a number of bytes.
    pub(crate) buffer_size: Option<Spanned<SizeToml>>,
    /// `splice`: allow splice(2) for bulk directions.
    pub(crate) splice: Option<bool>,
    /// `accept_proxy`: trusted networks for incoming PROXY headers.
    pub(crate) accept_proxy: Option<Spanned<Vec<Spanned<String>>>>,
    /// `[[listener.certificate]]`: certificates of an https listener.
    #[serde(default)]
    pub(crate) certificate: Vec<Spanned<CertificateToml>>,
    /// `[[listener.route]]`: HTTP routes.
    #[serde(default)]
    pub(crate) route: Vec<Spanned<RouteToml>>,
    /// `header_timeout`: a duration (HTTP).
    pub(crate) header_timeout: Option<Spanned<DurationToml>>,
    /// `forwarded`: send RFC 7239 `Forwarded` (HTTP).
    pub(crate) forwarded: Option<bool>,
    /// `via`: add `Via` (HTTP).
    pub(crate) via: Option<bool>,
    /// `body_timeout`: a duration (HTTP).
    pub(crate) body_timeout: Option<Spanned<DurationToml>>,
    /// `send_timeout`: a duration (HTTP).
    pub(crate) send_timeout: Option<Spanned<DurationToml>>,
    /// `max_header_size`: a size (HTTP).
    pub(crate) max_header_size: Option<Spanned<SizeToml>>,
    /// `max_headers` (HTTP).
    pub(crate) max_headers: Option<Spanned<i64>>,
    /// `max_body_size`: a size; 0 = unlimited (HTTP).
    pub(crate) max_body_size: Option<Spanned<SizeToml>>,
    /// `request_id_header`: a header name (HTTP).
    pub(crate) request_id_header: Option<Spanned<String>>,
    /// `max_connections`: this listener's limit on client connections; 0 = none.
    pub(crate) max_connections: Option<Spanned<i64>>,
    /// `resume_at`: percent of `max_connections` at which accepting resumes.
    pub(crate) resume_at: Option<Spanned<i64>>,
    /// `udp_timeout`: a duration (UDP).
    pub(crate) udp_timeout: Option<Spanned<DurationToml>>,
    /// `max_flows`: flow table size (UDP).
    pub(crate) max_flows: Option<Spanned<i64>>,
    /// `responses`: replies after which a flow closes (UDP).
    pub(crate) responses: Option<Spanned<i64>>,
}

/// One `[[listener.certificate]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertificateToml {
    /// `cert_file`, required: PEM chain.
    pub(crate) cert_file: Option<Spanned<String>>,
    /// `key_file`, required: PEM private key.
    pub(crate) key_file: Option<Spanned<String>>,
    /// `server_names`: names served; empty = the certificate's DNS names.
    #[serde(default)]
    pub(crate) server_names: Vec<Spanned<String>>,
}

/// One `[[listener.route]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteToml {
    /// `host`: a host name or `*.suffix`.
    pub(crate) host: Option<Spanned<String>>,
    /// `path_prefix`: starts with `/`.
    pub(crate) path_prefix: Option<Spanned<String>>,
    /// `path`: an exact path, starts with `/`.
    pub(crate) path: Option<Spanned<String>>,
    /// `upstream`, required.
    pub(crate) upstream: Option<Spanned<String>>,
    /// `host_rewrite`: the Host sent to servers.
    pub(crate) host_rewrite: Option<Spanned<String>>,
}

/// One `[[upstream]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamToml {
    /// `name`, required.
    pub(crate) name: Option<Spanned<String>>,
    /// `scheduler`: an LVS short name.
    pub(crate) scheduler: Option<Spanned<String>>,
    /// `connect_timeout`: a duration.
    pub(crate) connect_timeout: Option<Spanned<DurationToml>>,
    /// `retries`.
    pub(crate) retries: Option<Spanned<i64>>,
    /// `tcp_keepalive`: a duration; absent = off.
    pub(crate) tcp_keepalive: Option<Spanned<DurationToml>>,
    /// `max_queue`: most connections or requests waiting for a server slot.
    pub(crate) max_queue: Option<Spanned<i64>>,
    /// `queue_timeout`: longest wait in that queue.
    pub(crate) queue_timeout: Option<Spanned<DurationToml>>,
    /// `persistence_timeout`: a duration; present = persistence on.
    pub(crate) persistence_timeout: Option<Spanned<DurationToml>>,
    /// `persistence_granularity`: an IPv4 netmask or `/N`.
    pub(crate) persistence_granularity: Option<Spanned<String>>,
    /// `persistence_granularity_v6`: an IPv6 prefix length.
    pub(crate) persistence_granularity_v6: Option<Spanned<i64>>,
    /// `persistence_max_entries`: most clients remembered.
    pub(crate) persistence_max_entries: Option<Spanned<i64>>,
    /// `send_proxy`: `v1` or `v2`.
    pub(crate) send_proxy: Option<Spanned<String>>,
    /// `response_timeout`: a duration (HTTP).
    pub(crate) response_timeout: Option<Spanned<DurationToml>>,
    /// `keepalive_pool`: idle connections per server (HTTP).
    pub(crate) keepalive_pool: Option<Spanned<i64>>,
    /// `keepalive_timeout`: a duration (HTTP).
    pub(crate) keepalive_timeout: Option<Spanned<DurationToml>>,
    /// `sticky_cookie`: a cookie name (HTTP).
    pub(crate) sticky_cookie: Option<Spanned<String>>,
    /// `retry_on`: failures to retry (HTTP).
    pub(crate) retry_on: Option<Vec<Spanned<String>>>,
    /// `retry_timeout`: total retry budget (HTTP).
    pub(crate) retry_timeout: Option<Spanned<DurationToml>>,
    /// `http2`: HTTP/2 to servers (HTTP).
    pub(crate) http2: Option<bool>,
    /// `tls`: TLS to servers (HTTP).
    pub(crate) tls: Option<Spanned<bool>>,
    /// `tls_ca_file`: CA bundle for server certificates.
    pub(crate) tls_ca_file: Option<Spanned<String>>,
    /// `tls_verify`: false = no verification at all.
    pub(crate) tls_verify: Option<Spanned<bool>>,
    /// `tls_server_name`: SNI and verified name.
    pub(crate) tls_server_name: Option<Spanned<String>>,
    /// `[upstream.health_check]`: active checks.
    pub(crate) health_check: Option<Spanned<HealthCheckToml>>,
    /// `max_fails`: passive checks; 0 = off.
    pub(crate) max_fails: Option<Spanned<i64>>,
    /// `fail_timeout`: a duration (passive checks).
    pub(crate) fail_timeout: Option<Spanned<DurationToml>>,
    /// `slow_start`: a duration.
    pub(crate) slow_start: Option<Spanned<DurationToml>>,
    /// `inhibit_on_failure`: weight 0 instead of removal.
    pub(crate) inhibit_on_failure: Option<bool>,
    /// `sorry_server`: `IP:port`.
    pub(crate) sorry_server: Option<Spanned<String>>,
    /// `notify_up`: a shell command.
    pub(crate) notify_up: Option<Spanned<String>>,
    /// `notify_down`: a shell command.
    pub(crate) notify_down: Option<Spanned<String>>,
    /// `notify_timeout`: a duration.
    pub(crate) notify_timeout: Option<Spanned<DurationToml>>,
    /// `[[upstream.server]]` tables or an inline `server = [ { … }, … ]` array: both read the same.
    #[serde(default)]
    pub(crate) server: Vec<Spanned<ServerToml>>,
}

/// One `[[upstream.server]]` (or one inline table of `server = [ … ]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerToml {
    /// `address`, required: `IP:port`.
    pub(crate) address: Option<Spanned<String>>,
    /// `weight`.
    pub(crate) weight: Option<Spanned<i64>>,
    /// `max_connections`: 0 = unlimited.
    pub(crate) max_connections: Option<Spanned<i64>>,
    /// `backup`.
    pub(crate) backup: Option<bool>,
    /// `check`: false = not actively checked.
    pub(crate) check: Option<Spanned<bool>>,
    /// `check_port`: the port checked.
    pub(crate) check_port: Option<Spanned<i64>>,
    /// `state`: `active`, `draining` or `disabled`.
    pub(crate) state: Option<Spanned<String>>,
}

/// `[upstream.health_check]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthCheckToml {
    /// `type`: `tcp`, `http` or `tls`.
    #[serde(rename = "type")]
    pub(crate) kind: Option<Spanned<String>>,
    /// `interval`: a duration.
    pub(crate) interval: Option<Spanned<DurationToml>>,
    /// `fast_interval`: a duration.
    pub(crate) fast_interval: Option<Spanned<DurationToml>>,
    /// `timeout`: a duration.
    pub(crate) timeout: Option<Spanned<DurationToml>>,
    /// `rise`.
    pub(crate) rise: Option<Spanned<i64>>,
    /// `fall`.
    pub(crate) fall: Option<Spanned<i64>>,
    /// `port`.
    pub(crate) port: Option<Spanned<i64>>,
    /// `path` (http).
    pub(crate) path: Option<Spanned<String>>,
    /// `host` (http).
    pub(crate) host: Option<Spanned<String>>,
    /// `expect_status` (http).
    pub(crate) expect_status: Option<Spanned<Vec<Spanned<i64>>>>,
    /// `expect_body` (http).
    pub(crate) expect_body: Option<Spanned<String>>,
    /// `send` (udp): the payload, `\xHH` escapes allowed.
    pub(crate) send: Option<Spanned<String>>,
    /// `expect` (udp): a substring of the reply.
    pub(crate) expect: Option<Spanned<String>>,
    /// `query_name` (dns).
    pub(crate) query_name: Option<Spanned<String>>,
}

/// A TOML value that is either a string or an integer, kept as written so the validator can say
/// exactly what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StrOrInt {
    /// A string such as `"3s"` or `"64KiB"`.
    Str(String),
    /// A bare integer such as `30`.
    Int(i64),
}

/// A duration as written: the validator accepts only strings with a unit, but a bare integer
/// deserializes too so that the message can say "needs a unit" instead of serde's "invalid type".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DurationToml(pub(crate) StrOrInt);

/// A byte size as written: a string with a binary unit (`"64KiB"`) or an integer number of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SizeToml(pub(crate) StrOrInt);

impl<'de> Deserialize<'de> for DurationToml {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrOrIntVisitor {
            expecting: "a duration with a unit, such as \"3s\"",
        })
        .map(DurationToml)
    }
}

/// A user or group as written: a name (`"nobody"`) or a numeric id (`65534` or `"65534"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdToml(pub(crate) StrOrInt);

impl<'de> Deserialize<'de> for IdToml {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrOrIntVisitor {
            expecting: "a name or a numeric id, such as \"nobody\" or 65534",
        })
        .map(IdToml)
    }
}

impl<'de> Deserialize<'de> for SizeToml {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrOrIntVisitor {
            expecting: "a size, such as \"64KiB\" or 65536",
        })
        .map(SizeToml)
    }
}

/// Accepts a string or an integer; `expecting` words serde's message for anything else.
struct StrOrIntVisitor {
    expecting: &'static str,
}

impl Visitor<'_> for StrOrIntVisitor {
    type Value = StrOrInt;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOrInt, E> {
        Ok(StrOrInt::Str(v.to_owned()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrOrInt, E> {
        Ok(StrOrInt::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrOrInt, E> {
        // TOML integers are i64; saturate rather than fail if a deserializer ever hands a u64.
        Ok(StrOrInt::Int(i64::try_from(v).unwrap_or(i64::MAX)))
    }
}

// === stage 1 ===

/// Stage 1: text to raw types.
///
/// # Errors
/// One [`Diagnostic`] for the first syntax error, wrong-typed value or unknown key; serde cannot go
/// on past it.
pub(crate) fn from_str(src: &Source<'_>) -> Result<ConfigToml, Diagnostic> {
    ::toml::from_str(src.text).map_err(|err| diagnose(src, &err))
}

/// Turns the toml crate's error into a diagnostic with a key path and a rephrased message.
fn diagnose(src: &Source<'_>, err: &::toml::de::Error) -> Diagnostic {
    let Ok(doc) = DeTable::parse(src.text) else {
        return syntax_error(src, err);
    };
    let message = first_line(err.message());
    let span = err.span().unwrap_or(0..0);
    let snippet = src.text.get(span.clone()).unwrap_or_default();

    let mut path = Vec::new();
    let hit = locate_in_table(doc.get_ref(), span.start, &mut path);
    let last_key = path.iter().rev().find_map(|seg| match seg {
        Seg::Key(k) => Some(*k),
        Seg::Index(_) => None,
    });

    let message = if let Some(rest) = message.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once("`, expected ").unwrap_or((rest, ""));
        if path.is_empty() {
            // Not located in the tree (should not happen): at least name the key itself.
            path.push(Seg::Key(key.trim_end_matches('`')));
        }
        unknown_key(key, expected)
    } else if let Some(rest) = message.strip_prefix("invalid type: ") {
        let expected = rest.rsplit_once(", expected ").map_or("", |(_, e)| e);
        let value = hit.map(Spanned::get_ref);
        wrong_type(value, snippet, expected, last_key)
    } else {
        message.to_owned()
    };
    src.diagnostic(span.start, &format_path(&path), message)
}

/// A syntax error: the document has no tree to walk, so there is no key path.
///
/// The parser recovers and may find several errors; `toml::from_str` reports the first one it
/// *found*, which for an unterminated string is a complaint about the next line. The one that comes
/// first in the text is where a reader should start, so that one is reported.
fn syntax_error(src: &Source<'_>, err: &::toml::de::Error) -> Diagnostic {
    let (_, errors) = DeTable::parse_recoverable(src.text);
    let first = errors
        .iter()
        .filter(|e| e.span().is_some())
        .min_by_key(|e| e.span().map_or(0, |s| s.start))
        .unwrap_or(err);
    let span = first.span().unwrap_or(0..0);
    let message = first_line(first.message());
    // "duplicate key" spans the repeated key, which is worth naming.
    let key = if message == "duplicate key" {
        src.text.get(span.clone()).unwrap_or_default()
    } else {
        ""
    };
    src.diagnostic(span.start, key, message)
}

/// The first line of a message, trimmed.
fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or_default().trim()
}

/// "unknown key; allowed: a, b, c", and a guess when one allowed key is a typo away.
/// `expected` is serde's tail: "one of `a`, `b`", "`a`" or "there are no fields".
fn unknown_key(key: &str, expected: &str) -> String {
    let allowed: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let mut message = format!("unknown key; allowed: {}", allowed.join(", "));
    let guess = allowed
        .iter()
        .map(|a| (edit_distance(key, a), *a))
        .filter(|(d, _)| *d <= 2 && *d < key.chars().count())
        .min_by_key(|(d, _)| *d);
    if let Some((_, guess)) = guess {
        message.push_str(&format!("; did you mean {guess}?"));
    }
    message
}

/// Rephrases serde's "invalid type: X, expected Y" as `VALUE is a KIND; expected Y`, with Y
/// in words an operator uses and a hint for the classic `[listener]`-for-`[[listener]]` mistake.
fn wrong_type(
    value: Option<&DeValue<'_>>,
    snippet: &str,
    expected: &str,
    key: Option<&str>,
) -> String {
    let expected = match expected {
        "i64" => "an integer",
        "a boolean" => "a boolean (true or false)",
        "a sequence" => "an array",
        e if e.starts_with("struct ") => "a table",
        e => e,
    };
    let (expected, hint) = match (expected, key) {
        ("an array", Some("listener")) => (
            "an array of tables",
            "; write [[listener]], with double brackets",
        ),
        ("an array", Some("upstream")) => (
            "an array of tables",
            "; write [[upstream]], with double brackets, before its [[upstream.server]] tables",
        ),
        ("an array", Some("server")) => (
            "an array of tables",
            "; write [[upstream.server]], with double brackets, or server = [ { address = \"…\" } ]",
        ),
        (e, _) => (e, ""),
    };
    let snippet = snippet.trim();
    // The value of a secret key is never quoted back, even when it has the wrong type.
    let quote = !matches!(key, Some("token" | "auth_pass"));
    let found = match value {
        Some(DeValue::String(_)) => ("a string", true),
        Some(DeValue::Integer(_)) => ("an integer", true),
        Some(DeValue::Float(_)) => ("a float", true),
        Some(DeValue::Boolean(_)) => ("a boolean", true),
        Some(DeValue::Datetime(_)) => ("a date-time", true),
        Some(DeValue::Array(_)) => ("an array", false),
        Some(DeValue::Table(_)) => ("a table", false),
        None => ("a value", false),
    };
    match found {
        ("an integer", _) if quote && expected == "an integer" => {
            format!("{snippet} does not fit in a 64-bit integer")
        }
        (kind, true) if quote && snippet.chars().count() <= 40 && !snippet.contains('\n') => {
            format!("{snippet} is {kind}; expected {expected}{hint}")
        }
        (kind, _) => format!("found {kind}; expected {expected}{hint}"),
    }
}

// === key paths ===

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, Copy)]
enum Seg<'d> {
    Key(&'d str),
    Index(usize),
}

/// `listener[0].bind`: keys joined by dots, array indexes in brackets, keys that are not bare TOML
/// keys quoted.
fn format_path(path: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    out.push_str(k);
                } else {
                    out.push_str(&format!("{k:?}"));
                }
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The value found under an offset; when the offset is on a key, that key's value. Table spans
/// from `[[header]]` sections cover only the header, so children are searched before a container's
/// own span.
type Hit<'d, 'i> = Option<&'d Spanned<DeValue<'i>>>;

/// Walks `table` for the key or value under `offset`, leaving its key path in `path`.
fn locate_in_table<'d, 'i>(
    table: &'d DeTable<'i>,
    offset: usize,
    path: &mut Vec<Seg<'d>>,
) -> Hit<'d, 'i> {
    for (key, value) in table.iter() {
        path.push(Seg::Key(key.get_ref().as_ref()));
        if contains(&key.span(), offset) {
            return Some(value);
        }
        if let Some(hit) = locate_in_value(value, offset, path) {
            return Some(hit);
        }
        path.pop();
    }
    None
}

/// As [`locate_in_table`], for any value.
fn locate_in_value<'d, 'i>(
    value: &'d Spanned<DeValue<'i>>,
    offset: usize,
    path: &mut Vec<Seg<'d>>,
) -> Hit<'d, 'i> {
    match value.get_ref() {
        DeValue::Table(table) => {
            if let Some(hit) = locate_in_table(table, offset, path) {
                return Some(hit);
            }
        }
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                if let Some(hit) = locate_in_value(item, offset, path) {
                    return Some(hit);
                }
                path.pop();
            }
        }
        _ => {}
    }
    contains(&value.span(), offset).then_some(value)
}

/// Whether `offset` falls in `span` (an empty span contains its own start).
fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

/// Levenshtein distance, for "did you mean". Keys are short, so the O(n·m) table is nothing.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diag
            } else {
                1 + diag.min(above).min(row[j])
            };
            diag = above;
        }
    }
    row[b.len()]
}
