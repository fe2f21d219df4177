//! A text table of what the runtime is doing, laid out like `ipvsadm -Ln --stats`: each listener
//! (virtual service) with its scheduler and counters, then its servers with weight, active
//! connections and per-server counters.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::listener::Listener;
use crate::upstream::Upstream;

/// Renders listeners, their upstreams and per-server counters as a table.
pub fn render(listeners: &[Arc<Listener>], upstreams: &[Arc<Upstream>]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Prot LocalAddress:Port Scheduler  (listener -> upstream)\n  -> RemoteAddress:Port       Weight  ActiveConn  Conns  ConnErrs  Errors  InBytes  OutBytes"
    );
    for l in listeners {
        let Some(u) = upstreams.iter().find(|u| u.name() == l.config.upstream) else {
            continue;
        };
        let s = &l.stats;
        let _ = writeln!(
            out,
            "{} {} {}  ({} -> {})  accepted {} {:?} active {} no-server {} idle-timeouts {} spliced {}",
            l.config.protocol.as_str().to_uppercase(),
            l.local_addr,
            u.config.scheduler.as_str(),
            l.config.name,
            u.name(),
            s.accepted_total(),
            s.accepted_per_worker(),
            s.active.load(Ordering::Relaxed),
            s.no_server.load(Ordering::Relaxed),
            s.idle_timeouts.load(Ordering::Relaxed),
            s.spliced.load(Ordering::Relaxed),
        );
        if let Some(p) = &u.persistence {
            // ipvsadm shows `persistent N` on the service line; the table's own counters follow.
            let ps = &p.stats;
            let _ = writeln!(
                out,
                "  persistent {:?}  entries {} hits {} misses {} rescheduled {} expired {} full {}",
                p.timeout(),
                p.len(),
                ps.hits.load(Ordering::Relaxed),
                ps.misses.load(Ordering::Relaxed),
                ps.rescheduled.load(Ordering::Relaxed),
                ps.expired.load(Ordering::Relaxed),
                ps.full.load(Ordering::Relaxed),
            );
        }
        for server in u.snapshot().servers.iter() {
            let st = &server.stats;
            let role = if server.sorry {
                " (sorry)"
            } else if server.config.backup {
                " (backup)"
            } else {
                ""
            };
            let state = server.state.describe();
            let addr = if state == "up" {
                format!("{}{role}", server.address())
            } else {
                format!("{}{role} [{state}]", server.address())
            };
            let weight =
                u64::from(server.state.weight()) * u64::from(server.state.weight_permille()) / 1000;
            let _ = writeln!(
                out,
                "  -> {:<24} {:>6}  {:>10}  {:>5}  {:>8}  {:>6}  {:>7}  {:>8}",
                addr,
                weight,
                st.active.load(Ordering::Relaxed),
                st.connections.load(Ordering::Relaxed),
                st.connect_errors.load(Ordering::Relaxed),
                st.errors.load(Ordering::Relaxed),
                st.bytes_to_server.load(Ordering::Relaxed),
                st.bytes_from_server.load(Ordering::Relaxed),
            );
        }
    }
    out
}
