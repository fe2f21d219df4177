//! A text table of what the runtime is doing, laid out like `ipvsadm -Ln --stats`: each listener
//! (virtual service) with its scheduler and counters, then its servers with weight, active
//! connections and per-server counters.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::backlog::BallastListener;
use crate::listener::{Gate, Listener, Reason};
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
        if let Some(q) = &u.queue {
            let _ = writeln!(
                out,
                "  queue {} of {} (timeout {:?})  served {} full {} timeouts {}",
                q.len(),
                q.max,
                q.timeout,
                q.served.load(Ordering::Relaxed),
                q.full.load(Ordering::Relaxed),
                q.timeouts.load(Ordering::Relaxed),
            );
        }
        if let Some(udp) = &l.udp {
            let _ = writeln!(out, "  {}", udp.summary());
        }
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

/// The connection limits and refusals: the global limit with the connections open under it, then
/// per listener its limit, open connections, pauses of accepting (count, total time, workers
/// paused now), refusals by reason, and, when `queues` (from [`crate::backlog::workers`]) has
/// them, the connection attempts the kernel dropped at the listener's full accept queues.
pub fn render_limits(
    global: &Gate,
    listeners: &[Arc<Listener>],
    queues: Option<&[BallastListener]>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Connections: open {} of global max_connections {}",
        global.open(),
        global
            .max()
            .map_or_else(|| "unlimited".to_owned(), |m| m.to_string()),
    );
    for l in listeners {
        let s = &l.stats;
        let mut refusals: Vec<String> = Reason::ALL
            .iter()
            .map(|r| format!("{} {}", r.as_str(), s.refusal_count(*r)))
            .collect();
        let drops = queues
            .and_then(|q| {
                q.iter()
                    .find(|b| b.listener.as_deref() == Some(l.config.name.as_str()))
            })
            .and_then(|b| b.workers.iter().map(|w| w.drops).sum::<Option<u64>>());
        if let Some(d) = drops {
            refusals.push(format!("dropped by the kernel (queue full) {d}"));
        }
        let _ = writeln!(
            out,
            "  {:<16} open {} of {}  paused {} ({:.3}s, {} now)  refused: {}",
            l.config.name,
            l.limit.open(),
            l.limit
                .max()
                .map_or_else(|| "unlimited".to_owned(), |m| m.to_string()),
            s.paused.load(Ordering::Relaxed),
            Duration::from_micros(s.paused_micros.load(Ordering::Relaxed)).as_secs_f64(),
            s.paused_now.load(Ordering::Relaxed),
            refusals.join(", "),
        );
    }
    out
}
