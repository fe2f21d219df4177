//! `/metrics`: Prometheus text exposition format (version 0.0.4), written at scrape time from the
//! counters the data path already keeps.
//!
//! Written by hand rather than through a metrics registry: every figure already lives in an
//! atomic of a listener, upstream or server (and those come and go with runtime changes), so a
//! scrape reads them directly. Nothing on the data path counts twice, and no registry handle has
//! to follow a server added or removed at runtime. Names follow Prometheus conventions:
//! `ballast_<thing>_<unit>`, `_total` on counters, labels `listener`, `upstream`, `server`; every
//! name is a constant in [`names`].

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;

use super::{api, Resp, Services, Shared};
use crate::listener::http_stats::LATENCY_BUCKETS_US;

/// Every metric name ballast exports.
pub mod names {
    /// Gauge, 1, labelled with the version.
    pub const INFO: &str = "ballast_info";
    /// Counter: client connections accepted, per listener.
    pub const LISTENER_CONNECTIONS: &str = "ballast_listener_connections_total";
    /// Gauge: client connections open now, per listener.
    pub const LISTENER_ACTIVE: &str = "ballast_listener_active_connections";
    /// Counter: connections closed because no server could take them.
    pub const LISTENER_NO_SERVER: &str = "ballast_listener_no_server_total";
    /// Counter: connections closed by `idle_timeout`.
    pub const LISTENER_IDLE_TIMEOUTS: &str = "ballast_listener_idle_timeouts_total";
    /// Counter: accept(2) errors.
    pub const LISTENER_ACCEPT_ERRORS: &str = "ballast_listener_accept_errors_total";
    /// Counter: PROXY header refusals.
    pub const LISTENER_PROXY_REFUSED: &str = "ballast_listener_proxy_refused_total";
    /// Counter: failed TLS handshakes.
    pub const LISTENER_TLS_FAILED: &str = "ballast_listener_tls_failed_total";
    /// Gauge: connections waiting in a worker's accept queue.
    pub const ACCEPT_QUEUE_LENGTH: &str = "ballast_listener_accept_queue_length";
    /// Gauge: a worker's accept queue maximum (the effective backlog).
    pub const ACCEPT_QUEUE_MAX: &str = "ballast_listener_accept_queue_max";
    /// Counter: the host's `ListenOverflows` (`/proc/net/netstat`).
    pub const LISTEN_OVERFLOWS: &str = "ballast_listen_overflows_total";
    /// Counter: the host's `ListenDrops`.
    pub const LISTEN_DROPS: &str = "ballast_listen_drops_total";
    /// Counter: HTTP responses by status class.
    pub const HTTP_RESPONSES: &str = "ballast_http_responses_total";
    /// Histogram: time from request to response head.
    pub const HTTP_DURATION: &str = "ballast_http_request_duration_seconds";
    /// Counter: HTTP requests retried on another server.
    pub const HTTP_RETRIES: &str = "ballast_http_retries_total";
    /// Counter: connections or requests no server of the upstream could take.
    pub const UPSTREAM_NO_SERVER: &str = "ballast_upstream_no_server_total";
    /// Gauge: persistence entries.
    pub const UPSTREAM_PERSISTENCE_ENTRIES: &str = "ballast_upstream_persistence_entries";
    /// Gauge: 1 while checks say the server is up.
    pub const SERVER_UP: &str = "ballast_server_up";
    /// Gauge: 1 for the server's operator state.
    pub const SERVER_ADMIN_STATE: &str = "ballast_server_admin_state";
    /// Gauge: the operator's weight.
    pub const SERVER_WEIGHT: &str = "ballast_server_weight";
    /// Gauge: the weight the scheduler uses now.
    pub const SERVER_EFFECTIVE_WEIGHT: &str = "ballast_server_effective_weight";
    /// Gauge: connections open to the server.
    pub const SERVER_ACTIVE: &str = "ballast_server_active_connections";
    /// Counter: connections established.
    pub const SERVER_CONNECTIONS: &str = "ballast_server_connections_total";
    /// Counter: HTTP requests sent.
    pub const SERVER_REQUESTS: &str = "ballast_server_requests_total";
    /// Counter: failed connects.
    pub const SERVER_CONNECT_ERRORS: &str = "ballast_server_connect_errors_total";
    /// Counter: errors after the connect.
    pub const SERVER_ERRORS: &str = "ballast_server_errors_total";
    /// Counter: bytes sent to the server.
    pub const SERVER_SENT_BYTES: &str = "ballast_server_sent_bytes_total";
    /// Counter: bytes received from the server.
    pub const SERVER_RECEIVED_BYTES: &str = "ballast_server_received_bytes_total";
    /// Counter: health transitions.
    pub const SERVER_HEALTH_TRANSITIONS: &str = "ballast_server_health_transitions_total";
    /// Counter: reloads by result (`applied`, `refused`).
    pub const CONFIG_RELOADS: &str = "ballast_config_reloads_total";
    /// Gauge: 1 when the last reload was applied (or none was tried).
    pub const CONFIG_LAST_RELOAD_OK: &str = "ballast_config_last_reload_successful";
    /// Counter: access-log lines dropped because the writer could not keep up.
    pub const ACCESS_LOG_DROPPED: &str = "ballast_access_log_dropped_total";
    /// Counter: access-log lines lost because writing them failed (a full disk, an I/O error).
    pub const ACCESS_LOG_ERRORS: &str = "ballast_access_log_errors_total";
    /// Gauge: 1 for the state each VRRP instance is in, per instance and state.
    pub const VRRP_STATE: &str = "ballast_vrrp_state";
    /// Gauge: effective VRRP priority, per instance.
    pub const VRRP_PRIORITY: &str = "ballast_vrrp_priority";
    /// Counter: VRRP state transitions, per instance and state entered.
    pub const VRRP_TRANSITIONS: &str = "ballast_vrrp_transitions_total";
    /// Counter: VRRP packets dropped, per instance and reason.
    pub const VRRP_DROPPED: &str = "ballast_vrrp_dropped_total";
}

/// Serves `GET /metrics`. The accept queues take one netlink round trip, run off the async
/// workers.
pub async fn endpoint(shared: &Arc<Shared>) -> Resp {
    let services = shared.services.load_full();
    let for_queues = Arc::clone(&services);
    let extra = tokio::task::spawn_blocking(move || {
        let queues = crate::backlog::workers(&for_queues.listeners).ok();
        let netstat = crate::backlog::proc::netstat().ok().map(|n| n.counters());
        (queues, netstat)
    })
    .await
    .unwrap_or((None, None));
    let mut text = render(&services, extra.0.as_deref(), extra.1.as_ref());
    render_process(shared, &mut text);
    api::respond(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        Bytes::from(text),
    )
}

/// A metric family being written: its header once, then samples.
struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Process-wide families: reloads and the access log.
fn render_process(shared: &Shared, text: &mut String) {
    use names::*;
    let mut o = Out {
        text: std::mem::take(text),
    };
    let r = &shared.reloads;
    o.family(
        CONFIG_RELOADS,
        "counter",
        "Configuration reloads, by result.",
    );
    o.sample(
        CONFIG_RELOADS,
        &[("result", "applied")],
        r.applied.load(Ordering::Relaxed),
    );
    o.sample(
        CONFIG_RELOADS,
        &[("result", "refused")],
        r.refused.load(Ordering::Relaxed),
    );
    o.family(
        CONFIG_LAST_RELOAD_OK,
        "gauge",
        "1 when the last reload was applied (or none was tried), 0 when it was refused.",
    );
    o.sample(
        CONFIG_LAST_RELOAD_OK,
        &[],
        u8::from(r.last_ok.load(Ordering::Relaxed)),
    );
    if let Some(instances) = shared.vrrp.get() {
        o.family(
            VRRP_STATE,
            "gauge",
            "1 for the state each VRRP instance is in, 0 for the others.",
        );
        for i in instances {
            let now = i.state().as_str();
            for state in ["INIT", "BACKUP", "MASTER", "FAULT"] {
                o.sample(
                    VRRP_STATE,
                    &[("instance", i.config.name.as_str()), ("state", state)],
                    u8::from(state == now),
                );
            }
        }
        o.family(
            VRRP_PRIORITY,
            "gauge",
            "Effective VRRP priority (base plus tracking weights).",
        );
        for i in instances {
            o.sample(
                VRRP_PRIORITY,
                &[("instance", i.config.name.as_str())],
                i.priority(),
            );
        }
        o.family(
            VRRP_TRANSITIONS,
            "counter",
            "VRRP state transitions, by the state entered.",
        );
        for i in instances {
            let st = &i.stats;
            for (to, n) in [
                ("MASTER", &st.became_master),
                ("BACKUP", &st.became_backup),
                ("FAULT", &st.became_fault),
            ] {
                o.sample(
                    VRRP_TRANSITIONS,
                    &[("instance", i.config.name.as_str()), ("to", to)],
                    n.load(Ordering::Relaxed),
                );
            }
        }
        o.family(
            VRRP_DROPPED,
            "counter",
            "VRRP packets received and dropped, by reason.",
        );
        for i in instances {
            for (reason, n) in i.drops() {
                o.sample(
                    VRRP_DROPPED,
                    &[("instance", i.config.name.as_str()), ("reason", reason)],
                    n,
                );
            }
        }
    }
    if let Some(log) = shared.access_log.get() {
        o.family(
            ACCESS_LOG_DROPPED,
            "counter",
            "Access-log lines dropped because the writer could not keep up.",
        );
        o.sample(ACCESS_LOG_DROPPED, &[], log.dropped());
        o.family(
            ACCESS_LOG_ERRORS,
            "counter",
            "Access-log lines lost because writing them failed (a full disk, an I/O error).",
        );
        o.sample(ACCESS_LOG_ERRORS, &[], log.write_errors());
    }
    *text = o.text;
}

/// The whole exposition.
pub fn render(
    services: &Services,
    queues: Option<&[crate::backlog::BallastListener]>,
    netstat: Option<&crate::backlog::Counters>,
) -> String {
    use names::*;
    let mut o = Out {
        text: String::with_capacity(16 * 1024),
    };
    o.family(INFO, "gauge", "ballast's version.");
    o.sample(INFO, &[("version", env!("CARGO_PKG_VERSION"))], 1);

    let ls = &services.listeners;
    type ListenerCounter = fn(&crate::listener::ListenerStats) -> u64;
    let listener_counters: [(&str, &str, &str, ListenerCounter); 6] = [
        (
            LISTENER_CONNECTIONS,
            "counter",
            "Client connections accepted.",
            |s| s.accepted_total(),
        ),
        (
            LISTENER_ACTIVE,
            "gauge",
            "Client connections open now.",
            |s| s.active.load(Ordering::Relaxed),
        ),
        (
            LISTENER_NO_SERVER,
            "counter",
            "Client connections closed because no server could take them.",
            |s| s.no_server.load(Ordering::Relaxed),
        ),
        (
            LISTENER_IDLE_TIMEOUTS,
            "counter",
            "Connections closed after idle_timeout.",
            |s| s.idle_timeouts.load(Ordering::Relaxed),
        ),
        (
            LISTENER_ACCEPT_ERRORS,
            "counter",
            "accept(2) errors.",
            |s| s.accept_errors.load(Ordering::Relaxed),
        ),
        (
            LISTENER_PROXY_REFUSED,
            "counter",
            "Connections refused for a missing or bad PROXY header.",
            |s| s.proxy_refused.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, get) in listener_counters {
        o.family(name, kind, help);
        for l in ls {
            o.sample(name, &[("listener", &l.config.name)], get(&l.stats));
        }
    }
    o.family(
        LISTENER_TLS_FAILED,
        "counter",
        "TLS handshakes that failed or timed out.",
    );
    for l in ls
        .iter()
        .filter(|l| l.config.protocol == crate::config::Protocol::Https)
    {
        o.sample(
            LISTENER_TLS_FAILED,
            &[("listener", &l.config.name)],
            l.stats.tls_failed.load(Ordering::Relaxed),
        );
    }

    if let Some(queues) = queues {
        o.family(
            ACCEPT_QUEUE_LENGTH,
            "gauge",
            "Connections waiting in the accept queue of a listener's worker.",
        );
        for q in queues {
            let name = q.listener.as_deref().unwrap_or("");
            for w in &q.workers {
                o.sample(
                    ACCEPT_QUEUE_LENGTH,
                    &[("listener", name), ("worker", &w.worker.to_string())],
                    w.queue,
                );
            }
        }
        o.family(
            ACCEPT_QUEUE_MAX,
            "gauge",
            "Accept queue maximum of a listener's worker (the effective backlog).",
        );
        for q in queues {
            let name = q.listener.as_deref().unwrap_or("");
            for w in &q.workers {
                if let Some(max) = w.max {
                    o.sample(
                        ACCEPT_QUEUE_MAX,
                        &[("listener", name), ("worker", &w.worker.to_string())],
                        max,
                    );
                }
            }
        }
    }
    if let Some(n) = netstat {
        if let Some(v) = n.listen_overflows {
            o.family(LISTEN_OVERFLOWS, "counter", "Host-wide: handshakes completed while an accept queue was full (TcpExt ListenOverflows).");
            o.sample(LISTEN_OVERFLOWS, &[], v);
        }
        if let Some(v) = n.listen_drops {
            o.family(
                LISTEN_DROPS,
                "counter",
                "Host-wide: connection attempts dropped at a listener (TcpExt ListenDrops).",
            );
            o.sample(LISTEN_DROPS, &[], v);
        }
    }

    let http: Vec<_> = ls.iter().filter(|l| l.config.protocol.is_http()).collect();
    o.family(
        HTTP_RESPONSES,
        "counter",
        "HTTP responses sent, by status class.",
    );
    for l in &http {
        let r = l.stats.http.responses();
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            o.sample(
                HTTP_RESPONSES,
                &[("listener", &l.config.name), ("class", class)],
                r[i],
            );
        }
    }
    o.family(
        HTTP_DURATION,
        "histogram",
        "Time from a request's arrival to its response head.",
    );
    for l in &http {
        let h = &l.stats.http;
        let mut cumulative = 0u64;
        for (i, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
            cumulative += h.latency_buckets[i].load(Ordering::Relaxed);
            let le = format!("{}", *bound as f64 / 1e6);
            o.sample(
                &format!("{HTTP_DURATION}_bucket"),
                &[("listener", &l.config.name), ("le", &le)],
                cumulative,
            );
        }
        cumulative += h.latency_buckets[LATENCY_BUCKETS_US.len()].load(Ordering::Relaxed);
        o.sample(
            &format!("{HTTP_DURATION}_bucket"),
            &[("listener", &l.config.name), ("le", "+Inf")],
            cumulative,
        );
        let sum = h.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        o.sample(
            &format!("{HTTP_DURATION}_sum"),
            &[("listener", &l.config.name)],
            sum,
        );
        o.sample(
            &format!("{HTTP_DURATION}_count"),
            &[("listener", &l.config.name)],
            cumulative,
        );
    }
    o.family(
        HTTP_RETRIES,
        "counter",
        "HTTP requests sent again to another server.",
    );
    for l in &http {
        o.sample(
            HTTP_RETRIES,
            &[("listener", &l.config.name)],
            l.stats.retries.load(Ordering::Relaxed),
        );
    }

    let us = &services.upstreams;
    o.family(
        UPSTREAM_NO_SERVER,
        "counter",
        "Connections or requests no server of the upstream could take.",
    );
    for u in us {
        o.sample(
            UPSTREAM_NO_SERVER,
            &[("upstream", u.name())],
            u.stats.no_server.load(Ordering::Relaxed),
        );
    }
    o.family(
        UPSTREAM_PERSISTENCE_ENTRIES,
        "gauge",
        "Clients remembered by the persistence table.",
    );
    for u in us {
        if let Some(p) = &u.persistence {
            o.sample(
                UPSTREAM_PERSISTENCE_ENTRIES,
                &[("upstream", u.name())],
                p.len(),
            );
        }
    }

    let snapshots: Vec<_> = us.iter().map(|u| (u, u.snapshot())).collect();
    type ServerValue = fn(&crate::upstream::Server, u32) -> u64;
    let server_metrics: [(&str, &str, &str, ServerValue); 11] = [
        (
            SERVER_UP,
            "gauge",
            "1 while checks say the server is up.",
            |s, _| u64::from(!s.state.flags().is_down()),
        ),
        (
            SERVER_WEIGHT,
            "gauge",
            "The server's weight as the operator set it.",
            |s, _| u64::from(s.state.weight()),
        ),
        (
            SERVER_EFFECTIVE_WEIGHT,
            "gauge",
            "The weight the scheduler uses now (slow start, inhibit_on_failure).",
            |_, w| u64::from(w),
        ),
        (
            SERVER_ACTIVE,
            "gauge",
            "Connections open to the server.",
            |s, _| s.stats.active.load(Ordering::Relaxed),
        ),
        (
            SERVER_CONNECTIONS,
            "counter",
            "Connections established to the server.",
            |s, _| s.stats.connections.load(Ordering::Relaxed),
        ),
        (
            SERVER_REQUESTS,
            "counter",
            "HTTP requests sent to the server.",
            |s, _| s.stats.requests.load(Ordering::Relaxed),
        ),
        (
            SERVER_CONNECT_ERRORS,
            "counter",
            "Connects to the server that failed.",
            |s, _| s.stats.connect_errors.load(Ordering::Relaxed),
        ),
        (
            SERVER_ERRORS,
            "counter",
            "Connections that failed after the connect.",
            |s, _| s.stats.errors.load(Ordering::Relaxed),
        ),
        (
            SERVER_SENT_BYTES,
            "counter",
            "Bytes relayed from clients to the server.",
            |s, _| s.stats.bytes_to_server.load(Ordering::Relaxed),
        ),
        (
            SERVER_RECEIVED_BYTES,
            "counter",
            "Bytes relayed from the server to clients.",
            |s, _| s.stats.bytes_from_server.load(Ordering::Relaxed),
        ),
        (
            SERVER_HEALTH_TRANSITIONS,
            "counter",
            "Health transitions (up to down, down to up).",
            |s, _| s.state.transitions(),
        ),
    ];
    for (name, kind, help, get) in server_metrics {
        o.family(name, kind, help);
        for (u, snap) in &snapshots {
            for (i, s) in snap.servers.iter().enumerate().filter(|(_, s)| !s.sorry) {
                let addr = s.address().to_string();
                let w = snap.weights.get(i).copied().unwrap_or(0);
                o.sample(
                    name,
                    &[("upstream", u.name()), ("server", &addr)],
                    get(s, w),
                );
            }
        }
    }
    o.family(
        SERVER_ADMIN_STATE,
        "gauge",
        "1 for the server's operator state (active, draining, disabled).",
    );
    for (u, snap) in &snapshots {
        for s in snap.servers.iter().filter(|s| !s.sorry) {
            let addr = s.address().to_string();
            let now = s.state.admin();
            for st in [
                crate::config::AdminState::Active,
                crate::config::AdminState::Draining,
                crate::config::AdminState::Disabled,
            ] {
                o.sample(
                    SERVER_ADMIN_STATE,
                    &[
                        ("upstream", u.name()),
                        ("server", &addr),
                        ("state", st.as_str()),
                    ],
                    u8::from(st == now),
                );
            }
        }
    }
    o.text
}
