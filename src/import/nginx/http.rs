//! The `http` context: HTTP listeners with routes from `server` + `location`, and the `proxy_*`
//! settings that become upstream keys.

use super::parse::Node;
use super::{
    duration, listen_address, name, server_address, server_name, HttpListener, Mapper, Proxy,
    Route, IGNORED,
};
use crate::import::emit::{Table, Value};
use crate::import::Loc;

impl Mapper {
    pub(super) fn http(&mut self, h: &Node) {
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
    pub(super) fn proxy_directive(&mut self, n: &Node, p: &mut Proxy) -> bool {
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

    pub(super) fn set_header(&mut self, n: &Node) {
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

    pub(super) fn http_server(&mut self, s: &Node, inherited: &Proxy) {
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
    pub(super) fn proxy_pass(&mut self, n: &Node) -> Option<(String, bool)> {
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
    pub(super) fn target(&mut self, host: &str, at: &Loc) -> Option<String> {
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
    pub(super) fn apply(&mut self, upstream: &str, p: &Proxy) {
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
    pub(super) fn listen(
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

    pub(super) fn finish_http(&mut self, mut l: HttpListener) {
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
}
