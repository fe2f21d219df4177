//! Keepalived's `keepalived.conf`: read into a tree of blocks (`parse.rs`), then mapped to
//! ballast here; VRRP in `vrrp.rs`.
//!
//! The syntax (keepalived.conf(5)): one directive per line, words separated by blanks, `"…"`
//! quoting, comments from `#` or `!` to the end of the line, blocks in `{ … }` (the `{` may end
//! the line or start the next one; one-line blocks such as `url { path / }` work),
//! `include PATTERN` anywhere, with glob(3) patterns taken from the including file's directory.
//!
//! The mapping (the full table is in `docs/import.md`): each `virtual_server IP PORT` becomes a
//! TCP `[[listener]]` bound to `IP:PORT` and an `[[upstream]]`; each `real_server` a
//! `[[upstream.server]]`; `TCP_CHECK`, `HTTP_GET`, `SSL_GET` the upstream's
//! `[upstream.health_check]` with Keepalived's own defaults written out. `vrrp_instance` and
//! `vrrp_script` are parsed completely and emitted as ballast's `[vrrp]` section by
//! [`emit_vrrp`].

use std::path::Path;

use super::emit::{name, udp_listener, Plan, Table, Value};
use super::source::suggest;
use super::{ImportError, Loc, Problem};

mod parse;
mod vrrp;

use parse::{parse, Node};
use vrrp::{emit_vrrp, Vrrp};

// === the mapping ===

/// Imports `path`: parse, then map.
///
/// # Errors
/// As [`parse`], and [`ImportError::Invalid`] listing every directive that cannot be imported.
pub(super) fn import(path: &Path) -> Result<Plan, ImportError> {
    map(&parse(path)?)
}

/// Imports `text` (named `name` in locations) without touching the filesystem.
///
/// # Errors
/// As [`parse_str`], and [`ImportError::Invalid`] listing every directive that cannot be imported.
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

const TOP: &[&str] = &[
    "global_defs",
    "vrrp_instance",
    "vrrp_script",
    "vrrp_sync_group",
    "virtual_server",
    "virtual_server_group",
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "linkbeat_use_polling",
    "garp_group",
    "track_file",
    "vrrp_track_file",
    "track_process",
];

#[derive(Default)]
struct Mapper {
    plan: Plan,
    problems: Vec<Problem>,
    groups: Vec<Node>,
    vrrp: Vrrp,
    nonlocal_noted: bool,
}

impl Mapper {
    fn error(&mut self, at: &Loc, message: impl Into<String>) {
        self.problems.push(Problem {
            at: at.clone(),
            message: message.into(),
        });
    }

    /// An unknown directive: an error naming it, with the nearest known one when it looks like a typo.
    fn unknown(&mut self, n: &Node, context: &str, known: &[&str]) {
        let hint = match suggest(&n.name, known) {
            Some(s) => format!("; did you mean {s}?"),
            None => String::new(),
        };
        self.error(
            &n.at,
            format!(
                "{}: unknown or unsupported directive in {context}{hint}",
                n.name
            ),
        );
    }

    fn top(&mut self, nodes: &[Node]) {
        self.groups = nodes
            .iter()
            .filter(|n| n.name == "virtual_server_group")
            .cloned()
            .collect();
        for n in nodes {
            match n.name.as_str() {
                "global_defs" => self.global(n),
                "vrrp_instance" => self.vrrp_instance(n),
                "vrrp_script" => self.vrrp_script(n),
                "vrrp_sync_group" => self.vrrp.sync_groups.push(n.clone()),
                "virtual_server" => self.virtual_server(n),
                "virtual_server_group" => {}
                "static_ipaddress"
                | "static_routes"
                | "static_rules"
                | "linkbeat_use_polling"
                | "garp_group" => self.plan.ignore(&n.name, &n.at),
                "track_file" | "vrrp_track_file" | "track_process" => {
                    self.vrrp.other.push(n.clone())
                }
                _ => self.unknown(n, "the top level", TOP),
            }
        }
        emit_vrrp(&mut self.plan, &self.vrrp);
    }

    fn global(&mut self, g: &Node) {
        for n in g.kids() {
            let k = n.name.as_str();
            if k == "router_id" {
                self.vrrp.router_id = n.arg(0).map(|s| (s.to_string(), n.at.clone()));
            } else if k.starts_with("vrrp_") || k.starts_with("garp_") || k.starts_with("gna_") {
                self.vrrp.global.push(n.clone());
            } else if k.starts_with("notification_email")
                || k.starts_with("smtp_")
                || k.starts_with("snmp_")
                || k.starts_with("enable_snmp")
                || k.starts_with("enable_dbus")
                || k.starts_with("lvs_")
                || k.starts_with("checker_")
                || k.starts_with("bfd_")
                || k.starts_with("max_auto_priority")
                || matches!(
                    k,
                    "script_user"
                        | "enable_script_security"
                        | "dynamic_interfaces"
                        | "enable_traps"
                        | "process_names"
                        | "instance"
                        | "net_namespace"
                        | "notify_fifo"
                        | "notify_fifo_script"
                        | "default_interface"
                        | "lvs_flush"
                        | "disable_local_igmp"
                        | "dbus_service_name"
                        | "nftables"
                        | "nftables_priority"
                        | "ipset_names"
                        | "no_email_faults"
                        | "startup_script"
                        | "shutdown_script"
                        | "reload_time_file"
                        | "data_use_instance"
                        | "script_timeout"
                )
            {
                self.plan.ignore(&format!("global_defs {k}"), &n.at);
            } else {
                self.unknown(
                    n,
                    "global_defs",
                    &["router_id", "notification_email", "smtp_server"],
                );
            }
        }
    }

    /// The listening addresses of a virtual server: one, or each member of its group.
    fn vs_addresses(&mut self, vs: &Node) -> Option<(String, Vec<(String, Loc)>)> {
        match (vs.arg(0), vs.arg(1)) {
            (Some("group"), Some(g)) => {
                let Some(group) = self.groups.iter().find(|n| n.arg(0) == Some(g)).cloned() else {
                    self.error(
                        &vs.at,
                        format!("virtual_server group {g}: no virtual_server_group named {g:?}"),
                    );
                    return None;
                };
                let mut out = Vec::new();
                for m in group.kids() {
                    if m.name == "fwmark" {
                        self.error(&m.at, "fwmark: firewall-mark virtual services select packets in the kernel; ballast listens on addresses: list IP PORT members instead");
                        continue;
                    }
                    let Some(port) = m.arg(0) else {
                        self.error(&m.at, format!("{}: a group member is IP PORT", m.name));
                        continue;
                    };
                    for ip in expand_range(&m.name) {
                        out.push((join(&ip, port), m.at.clone()));
                    }
                }
                Some((format!("vsg-{}", name(g)), out))
            }
            (Some("fwmark"), _) => {
                self.error(&vs.at, "virtual_server fwmark: firewall-mark virtual services select packets in the kernel; ballast listens on addresses: write virtual_server IP PORT");
                None
            }
            (Some(ip), Some(port)) => {
                let addr = join(ip, port);
                Some((
                    format!("vs-{}", name(&addr.replace(':', "-"))),
                    vec![(addr, vs.at.clone())],
                ))
            }
            (Some(ip), None) if ip.contains(':') && !ip.contains("::") => {
                let addr = ip.to_string();
                Some((
                    format!("vs-{}", name(&addr.replace(':', "-"))),
                    vec![(addr, vs.at.clone())],
                ))
            }
            _ => {
                self.error(
                    &vs.at,
                    "virtual_server: expected IP PORT, group NAME or fwmark N",
                );
                None
            }
        }
    }

    fn virtual_server(&mut self, vs: &Node) {
        let Some((uname, addrs)) = self.vs_addresses(vs) else {
            return;
        };
        let vs_port = vs
            .arg(1)
            .filter(|_| vs.arg(0) != Some("group"))
            .map(str::to_string);
        let mut up = Table::new(&vs.at);
        up.set("name", uname.clone(), &vs.at);
        // Keepalived's default scheduler is wlc, as ballast's; written out so it can be seen.
        up.set("scheduler", "wlc", &vs.at);
        let mut udp = None;
        let mut interval: Option<(String, Loc)> = None;
        let mut persistence: Option<Loc> = None;
        let mut granularity: Option<(String, Loc)> = None;
        let mut vs_defaults: Vec<&Node> = Vec::new();
        let mut checks: Vec<Check> = Vec::new();
        let mut servers = 0;
        for n in vs.kids() {
            let a0 = n.arg(0).unwrap_or_default();
            match n.name.as_str() {
                "delay_loop" => match duration(a0) {
                    Some(d) => interval = Some((d, n.at.clone())),
                    None => self.bad_value(n, "a number of seconds"),
                },
                "lb_algo" | "lvs_sched" => match scheduler(a0) {
                    Some((s, note)) => {
                        up.set("scheduler", s, &n.at);
                        if let Some(note) = note {
                            self.plan.warn(&n.at, format!("{} {a0}: {note}", n.name));
                        }
                    }
                    None => self.error(&n.at, format!("{} {a0:?}: not an LVS scheduler; allowed: rr, wrr, lc, wlc, lblc, lblcr, sh, dh, mh, sed, nq, fo, ovf, twos", n.name)),
                },
                "lb_kind" | "lvs_method" => self.forwarding(&n.at, &n.name, a0),
                "persistence_timeout" => {
                    let d = if a0.is_empty() { Some("360s".to_string()) } else { duration(a0) };
                    match d {
                        Some(d) => {
                            up.set("persistence_timeout", d, &n.at);
                            persistence = Some(n.at.clone());
                        }
                        None => self.bad_value(n, "a number of seconds"),
                    }
                }
                "persistence_granularity" => granularity = Some((a0.to_string(), n.at.clone())),
                "protocol" => match a0.to_ascii_uppercase().as_str() {
                    "TCP" => {}
                    "UDP" => udp = Some(n.at.clone()),
                    _ => self.error(&n.at, format!("protocol {a0}: ballast proxies TCP (and UDP); {a0} is not supported")),
                },
                "sorry_server" => match (n.arg(0), n.arg(1)) {
                    (Some(ip), Some(port)) => up.set("sorry_server", join(ip, port), &n.at),
                    _ => self.bad_value(n, "IP PORT"),
                },
                "sorry_server_inhibit" | "sorry_server_lvs_method" => self.plan.warn(&n.at, format!("{}: not needed: ballast's sorry server is a proxied server like the others", n.name)),
                "quorum" => {
                    if a0.parse::<u32>().map_or(true, |q| q > 1) {
                        self.plan.warn(&n.at, format!("quorum {a0}: not supported: ballast keeps serving while any server is up (quorum 1) and uses the sorry_server only when none is"));
                    }
                }
                "hysteresis" | "quorum_up" | "quorum_down" => self.plan.warn(&n.at, format!("{}: not supported: ballast has no quorum (it serves while any server is up)", n.name)),
                "virtualhost" => vs_defaults.push(n),
                "connect_timeout" | "retry" | "delay_before_retry" | "warmup" | "nb_get_retry" => vs_defaults.push(n),
                "alpha" => self.plan.warn(&n.at, "alpha: ballast starts servers up and takes them down after the failed checks; there is no start-down mode"),
                "omega" | "ha_suspend" | "smtp_alert" | "ops" | "one_packet_scheduling" | "ip_family" | "nat_mask" | "delay_first_check" => self.plan.ignore(&format!("virtual_server {}", n.name), &n.at),
                "real_server" => {
                    servers += 1;
                    self.real_server(n, &mut up, vs_port.as_deref(), &mut checks);
                }
                _ => self.unknown(n, "virtual_server", &["delay_loop", "lb_algo", "lvs_sched", "lb_kind", "lvs_method", "persistence_timeout", "persistence_granularity", "protocol", "sorry_server", "quorum", "real_server", "virtualhost"]),
            }
        }
        if servers == 0 {
            self.error(&vs.at, "virtual_server: no real_server; ballast needs at least one server (a sorry_server alone is not enough)");
        }
        if let Some((g, at)) = granularity {
            if persistence.is_some() {
                up.set("persistence_granularity", g, &at);
            } else {
                self.plan.warn(&at, "persistence_granularity without persistence_timeout has no effect (as in Keepalived); left out");
            }
        }
        self.health(&mut up, vs, interval, &vs_defaults, checks);
        for (addr, at) in addrs {
            let mut l = Table::new(&at);
            let lname = if vs.arg(0) == Some("group") {
                format!("{uname}-{}", name(&addr.replace(':', "-")))
            } else {
                uname.clone()
            };
            l.set("name", name(&lname), &at);
            l.set("bind", addr, &at);
            if let Some(u) = &udp {
                if let Err(message) = udp_listener(&mut l, u) {
                    self.error(u, message);
                }
            }
            l.set("upstream", uname.clone(), &vs.at);
            self.note_nonlocal(&at);
            self.plan.listeners.push(l);
        }
        self.plan.upstreams.push(up);
    }

    fn note_nonlocal(&mut self, at: &Loc) {
        // ballast binds listeners with IP_FREEBIND, so a VIP not (yet) on this node needs no
        // `ip_nonlocal_bind`; nothing to say.
        let _ = at;
        self.nonlocal_noted = true;
    }

    fn bad_value(&mut self, n: &Node, expected: &str) {
        self.error(
            &n.at,
            format!("{} {}: expected {expected}", n.name, n.args.join(" ")),
        );
    }

    /// `lb_kind`/`lvs_method`: NAT is what ballast does; DR and TUN are run as a full proxy.
    fn forwarding(&mut self, at: &Loc, key: &str, kind: &str) {
        match kind.to_ascii_uppercase().as_str() {
            "NAT" => {}
            "DR" | "TUN" => self
                .plan
                .warn(at, format!("{key} {kind}: {}", dr_tun_note())),
            _ => self.error(at, format!("{key} {kind:?}: allowed: NAT, DR, TUN")),
        }
    }

    fn real_server(
        &mut self,
        rs: &Node,
        up: &mut Table,
        vs_port: Option<&str>,
        checks: &mut Vec<Check>,
    ) {
        let (Some(ip), port) = (rs.arg(0), rs.arg(1).or(vs_port)) else {
            self.bad_value(rs, "IP PORT");
            return;
        };
        let Some(port) = port else {
            self.bad_value(rs, "IP PORT");
            return;
        };
        let mut s = Table::new(&rs.at);
        s.set("address", join(ip, port), &rs.at);
        let mut check: Option<Check> = None;
        for n in rs.kids() {
            let a0 = n.arg(0).unwrap_or_default();
            match n.name.as_str() {
                "weight" => match a0.parse::<i64>() {
                    Ok(w) => s.set("weight", w, &n.at),
                    Err(_) => self.bad_value(n, "an integer weight"),
                },
                "inhibit_on_failure" => up.set("inhibit_on_failure", true, &n.at),
                "notify_up" | "notify_down" => {
                    let cmd = n.args.join(" ");
                    if let Some(old) = up.get(&n.name).and_then(Value::as_str) {
                        if old != cmd {
                            self.plan.warn(&n.at, format!("{}: ballast runs one {} command per upstream (it gets the server as $2); this one differs from the first and is left out", n.name, n.name));
                            continue;
                        }
                    }
                    up.set(&n.name, cmd, &n.at);
                }
                "uthreshold" => match a0.parse::<i64>() {
                    Ok(v) => s.set("max_connections", v, &n.at),
                    Err(_) => self.bad_value(n, "an integer"),
                },
                "lthreshold" => self.plan.warn(&n.at, "lthreshold: ballast takes a full server back as soon as it is below max_connections (uthreshold)"),
                "lb_kind" | "lvs_method" => self.forwarding(&n.at, &n.name, a0),
                "TCP_CHECK" | "HTTP_GET" | "SSL_GET" => {
                    if check.is_some() {
                        self.plan.warn(&n.at, format!("{}: ballast runs one check per server; the first checker of this real_server is used", n.name));
                        continue;
                    }
                    check = self.checker(n);
                }
                "MISC_CHECK" | "SMTP_CHECK" | "DNS_CHECK" | "UDP_CHECK" | "PING_CHECK" | "FILE_CHECK" | "BFD_CHECK" => {
                    let what = if n.name == "MISC_CHECK" { "MISC_CHECK (a script as the check)" } else { n.name.as_str() };
                    self.plan.warn(&n.at, format!("{what} is not supported yet: this real server gets no active check (it stays up unless its connects fail; failed connects are retried on another server)"));
                }
                "delay_loop" | "alpha" | "omega" | "smtp_alert" | "virtualhost" | "connect_timeout" | "retry" | "delay_before_retry" | "warmup" => self.plan.ignore(&format!("real_server {}", n.name), &n.at),
                _ => self.unknown(n, "real_server", &["weight", "inhibit_on_failure", "notify_up", "notify_down", "uthreshold", "lthreshold", "TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK"]),
            }
        }
        if let Some(c) = &check {
            if let Some((p, at)) = &c.port {
                s.set("check_port", i64::from(*p), at);
            }
        }
        checks.push(check.unwrap_or_else(|| Check::none(&rs.at)));
        let s_at = s.at.clone();
        let slot = up.child("[[server]]", &s_at);
        *slot = s;
    }

    fn checker(&mut self, c: &Node) -> Option<Check> {
        let kind = match c.name.as_str() {
            "TCP_CHECK" => "tcp",
            "HTTP_GET" => "http",
            _ => "tls",
        };
        let mut check = Check::none(&c.at);
        check.kind = Some(kind);
        if kind == "tls" {
            self.plan.warn(&c.at, "SSL_GET: imported as a TLS handshake check (type = \"tls\"); the url's path and status_code are not checked over TLS on a TCP listener");
        }
        let mut urls = 0;
        for n in c.kids() {
            let a0 = n.arg(0).unwrap_or_default();
            match n.name.as_str() {
                "connect_timeout" => check.timeout = self.dur(n),
                "connect_port" => match a0.parse::<u16>() {
                    Ok(p) if p > 0 => check.port = Some((p, n.at.clone())),
                    _ => self.bad_value(n, "a port, 1 to 65535"),
                },
                "connect_ip" | "bindto" | "bind_port" | "bind_if" | "fwmark" => self.plan.warn(&n.at, format!("{}: not supported: checks connect from ballast's own address to the server's address (or connect_port)", n.name)),
                "retry" | "nb_get_retry" => match a0.parse::<u32>() {
                    Ok(r) => check.retry = Some((r, n.at.clone())),
                    Err(_) => self.bad_value(n, "a count"),
                },
                "delay_before_retry" => check.retry_delay = self.dur(n),
                "warmup" => self.plan.warn(&n.at, "warmup: ballast spreads each server's first check over the first interval instead"),
                "virtualhost" => check.host = Some((a0.to_string(), n.at.clone())),
                "http_protocol" | "enable_sni" | "tls_compliant" | "fast_recovery" => self.plan.ignore(&format!("{} {}", c.name, n.name), &n.at),
                "url" => {
                    urls += 1;
                    if urls > 1 {
                        self.plan.warn(&n.at, "url: ballast checks one URL per server; the first url block is used");
                        continue;
                    }
                    for u in n.kids() {
                        let a = u.arg(0).unwrap_or_default();
                        if u.name == "path" && u.args.len() > 1 {
                            self.error(&u.at, format!("path {}: takes one value; write each directive on a line of its own", u.args.join(" ")));
                            continue;
                        }
                        match u.name.as_str() {
                            "path" if kind == "http" => check.path = Some((a.to_string(), u.at.clone())),
                            "status_code" if kind == "http" => {
                                let mut codes = Vec::new();
                                for v in &u.args {
                                    match status_codes(v) {
                                        Some(c) => codes.extend(c),
                                        None => self.bad_value(u, "HTTP status codes (200, 200-299)"),
                                    }
                                }
                                check.status = Some((codes, u.at.clone()));
                            }
                            "digest" => self.plan.warn(&u.at, "digest: not supported (ballast does not compare an MD5 of the body); the status code is still checked. An expect_body substring can replace it"),
                            "regex" | "regex_no_match" | "regex_options" | "regex_stack" | "regex_min_offset" | "regex_max_offset" => self.plan.warn(&u.at, format!("{}: not supported; an expect_body substring can replace a literal pattern", u.name)),
                            "path" | "status_code" => {}
                            "virtualhost" => check.host = Some((a.to_string(), u.at.clone())),
                            _ => self.unknown(u, "url", &["path", "status_code", "digest", "virtualhost"]),
                        }
                    }
                }
                _ => self.unknown(n, &c.name, &["connect_timeout", "connect_port", "connect_ip", "retry", "nb_get_retry", "delay_before_retry", "url", "virtualhost", "warmup"]),
            }
        }
        Some(check)
    }

    fn dur(&mut self, n: &Node) -> Option<(String, Loc)> {
        match n.arg(0).and_then(duration) {
            Some(d) => Some((d, n.at.clone())),
            None => {
                self.bad_value(n, "a number of seconds");
                None
            }
        }
    }

    /// The upstream's `[upstream.health_check]` from the real servers' checkers.
    fn health(
        &mut self,
        up: &mut Table,
        vs: &Node,
        interval: Option<(String, Loc)>,
        vs_defaults: &[&Node],
        checks: Vec<Check>,
    ) {
        let Some(first) = checks.iter().find(|c| c.kind.is_some()).cloned() else {
            return;
        };
        // Virtual-server-level checker settings are defaults for every checker.
        let mut base = Check::none(&vs.at);
        for n in vs_defaults {
            match n.name.as_str() {
                "connect_timeout" => base.timeout = self.dur(n),
                "delay_before_retry" => base.retry_delay = self.dur(n),
                "retry" | "nb_get_retry" => {
                    base.retry = n
                        .arg(0)
                        .and_then(|a| a.parse().ok())
                        .map(|r| (r, n.at.clone()))
                }
                "virtualhost" => base.host = n.arg(0).map(|h| (h.to_string(), n.at.clone())),
                _ => self
                    .plan
                    .ignore(&format!("virtual_server {}", n.name), &n.at),
            }
        }
        for c in checks.iter().filter(|c| c.kind.is_some()) {
            if !c.same_as(&first) {
                self.plan.warn(&c.at, format!("this checker differs from the one at {}; ballast runs one check per upstream, so every real server of this virtual_server gets that one", first.at));
            }
        }
        let kind = first.kind.unwrap_or("tcp");
        let at = first.at.clone();
        let (iv, iv_at) = interval.unwrap_or_else(|| ("60s".to_string(), vs.at.clone()));
        let timeout = first
            .timeout
            .clone()
            .or(base.timeout)
            .unwrap_or_else(|| ("5s".into(), at.clone()));
        let retry = first
            .retry
            .clone()
            .or(base.retry)
            .unwrap_or((1, at.clone()));
        let delay = first
            .retry_delay
            .clone()
            .or(base.retry_delay)
            .unwrap_or_else(|| ((if kind == "tcp" { "1s" } else { "3s" }).into(), at.clone()));
        let host = first.host.clone().or(base.host);
        for (i, c) in checks.iter().enumerate() {
            if c.kind.is_none() {
                if let Some(t) = nth_server(up, i) {
                    let at = t.at.clone();
                    t.set("check", false, &at);
                }
            }
        }
        let h = up.child("health_check", &at);
        h.set("type", kind, &at);
        h.set("interval", iv, &iv_at);
        h.set("fast_interval", delay.0, &delay.1);
        h.set("timeout", timeout.0, &timeout.1);
        h.set("rise", 1, &at);
        h.set("fall", i64::from(retry.0) + 1, &retry.1);
        if kind == "http" {
            if let Some((p, a)) = &first.path {
                h.set("path", p.clone(), a);
            }
            if let Some((codes, a)) = &first.status {
                h.set(
                    "expect_status",
                    Value::Array(
                        codes
                            .iter()
                            .map(|c| Value::Integer(i64::from(*c)))
                            .collect(),
                    ),
                    a,
                );
            }
            if let Some((host, a)) = &host {
                h.set("host", host.clone(), a);
            }
        }
        // Servers come after the health table in the text; move the table before them.
        up.hoist("health_check");
    }
}

/// The server table `i` of `up` (in file order).
fn nth_server(up: &mut Table, i: usize) -> Option<&mut Table> {
    up.children_mut("[[server]]").nth(i)
}

/// A checker, reduced to what ballast's check takes.
#[derive(Debug, Clone, Default)]
struct Check {
    kind: Option<&'static str>,
    at: Loc,
    timeout: Option<(String, Loc)>,
    port: Option<(u16, Loc)>,
    retry: Option<(u32, Loc)>,
    retry_delay: Option<(String, Loc)>,
    path: Option<(String, Loc)>,
    status: Option<(Vec<u16>, Loc)>,
    host: Option<(String, Loc)>,
}

impl Check {
    fn none(at: &Loc) -> Check {
        Check {
            at: at.clone(),
            ..Check::default()
        }
    }
    /// Same check apart from the port (which ballast sets per server).
    fn same_as(&self, o: &Check) -> bool {
        let v = |x: &Option<(String, Loc)>| x.as_ref().map(|(s, _)| s.clone());
        self.kind == o.kind
            && v(&self.timeout) == v(&o.timeout)
            && self.retry.as_ref().map(|r| r.0) == o.retry.as_ref().map(|r| r.0)
            && v(&self.retry_delay) == v(&o.retry_delay)
            && v(&self.path) == v(&o.path)
            && self.status.as_ref().map(|s| s.0.clone()) == o.status.as_ref().map(|s| s.0.clone())
            && v(&self.host) == v(&o.host)
    }
}

// === shared helpers (ipvsadm uses them too) ===

/// The ballast scheduler for an LVS scheduler name, with a note when it is an approximation.
pub(super) fn scheduler(lvs: &str) -> Option<(&'static str, Option<&'static str>)> {
    Some(match lvs {
        "rr" => ("rr", None),
        "wrr" => ("wrr", None),
        "lc" => ("lc", None),
        "wlc" => ("wlc", None),
        "sh" => ("sh", None),
        "dh" => ("dh", None),
        "mh" => ("mh", None),
        "twos" => ("p2c", Some("imported as p2c (power of two choices), ballast's weighted random two-choice scheduler")),
        "sed" | "nq" => ("wlc", Some("approximated by wlc: ballast has no shortest-expected-delay/never-queue scheduler; wlc differs only when servers are idle")),
        "lblc" | "lblcr" => ("dh", Some("approximated by dh (destination hashing): ballast does not move an overloaded destination's clients to another server")),
        "fo" => ("wrr", Some("approximated by wrr: for weighted failover, mark the spare servers `backup = true`")),
        "ovf" => ("wlc", Some("approximated by wlc: ballast has no overflow scheduler; max_connections per server gives a similar spill-over")),
        _ => return None,
    })
}

/// What DR/TUN forwarding becomes in a full proxy, said once per line.
pub(super) fn dr_tun_note() -> &'static str {
    "ballast is a full proxy and runs this virtual service like NAT (masquerading) in user space: \
     clients connect to ballast and ballast connects to the real servers, so the real servers now \
     see ballast's address as the source, need no VIP on loopback and no ARP tweaks, and reply \
     through ballast. To give them the client's address, set send_proxy = \"v2\" on the upstream \
     (the servers must accept the PROXY protocol) or use an HTTP listener (X-Forwarded-For)"
}

/// `IP PORT` → `IP:PORT` (IPv6 in brackets).
pub(super) fn join(ip: &str, port: &str) -> String {
    if ip.contains(':') && !ip.starts_with('[') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// Keepalived's range syntax `10.0.0.1-5` (last octet).
fn expand_range(s: &str) -> Vec<String> {
    if let Some((base, end)) = s.rsplit_once('-') {
        if let (Some((prefix, start)), Ok(end)) = (base.rsplit_once('.'), end.parse::<u8>()) {
            if let Ok(start) = start.parse::<u8>() {
                if start <= end {
                    return (start..=end).map(|o| format!("{prefix}.{o}")).collect();
                }
            }
        }
    }
    vec![s.to_string()]
}

/// Keepalived seconds (`6`, `0.5`) as a ballast duration (`"6s"`, `"500ms"`).
pub(super) fn duration(s: &str) -> Option<String> {
    if let Ok(n) = s.parse::<u64>() {
        return Some(format!("{n}s"));
    }
    let f: f64 = s.parse().ok()?;
    if !(0.0..=31_536_000.0).contains(&f) {
        return None;
    }
    Some(format!("{}ms", (f * 1000.0).round() as u64))
}

/// `200`, `200-299`.
fn status_codes(s: &str) -> Option<Vec<u16>> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
    ((100..=599).contains(&a) && (a..=599).contains(&b)).then(|| (a..=b).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalived_seconds_become_ballast_durations() {
        assert_eq!(duration("6").as_deref(), Some("6s"));
        assert_eq!(duration("0.5").as_deref(), Some("500ms"));
        assert_eq!(duration("-1"), None);
        assert_eq!(duration("six"), None);
    }

    #[test]
    fn status_code_ranges_and_address_ranges_expand() {
        assert_eq!(status_codes("200-202"), Some(vec![200, 201, 202]));
        assert_eq!(status_codes("200"), Some(vec![200]));
        assert_eq!(status_codes("99"), None);
        assert_eq!(
            expand_range("10.0.0.1-3"),
            ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        );
        assert_eq!(expand_range("10.0.0.1"), ["10.0.0.1"]);
    }

    #[test]
    fn every_lvs_scheduler_has_a_ballast_one() {
        for s in ["rr", "wrr", "lc", "wlc", "sh", "dh", "mh"] {
            assert_eq!(scheduler(s), Some((s, None)));
        }
        for s in ["lblc", "lblcr", "sed", "nq", "fo", "ovf", "twos"] {
            assert!(scheduler(s).is_some_and(|(_, note)| note.is_some()), "{s}");
        }
        assert_eq!(scheduler("bogus"), None);
    }
}
