//! The `stream` context: TCP (and UDP) listeners in front of upstreams.

use super::parse::Node;
use super::{duration, name, Mapper, Proxy, IGNORED};
use crate::import::emit::{udp_listener, Table, Value};

impl Mapper {
    pub(super) fn stream(&mut self, st: &Node) {
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
                    // nginx's proxy_timeout is the idle time of a UDP session too.
                    let key = if extra.iter().any(|(k, _, _)| k == "@udp") {
                        "udp_timeout"
                    } else {
                        "idle_timeout"
                    };
                    t.set(key, d.clone(), a);
                }
                self.note_nonlocal(&at, &bind);
                self.plan.listeners.push(t);
            }
        }
    }

    pub(super) fn stream_proxy(&mut self, n: &Node, p: &mut Proxy) -> bool {
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
