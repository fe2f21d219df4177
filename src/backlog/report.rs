//! A [`Report`] for people and for scripts: the text table, JSON, and advice in plain words.

use std::fmt::Write as _;

use super::{BallastListener, Counters, Listening, Report, Truncation};

/// Linux's default `net.core.somaxconn` since 5.4; below it, common backlogs are cut.
const MODERN_SOMAXCONN: u32 = 4096;

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

fn process(l: &Listening) -> String {
    let mut s = match l.processes.first() {
        Some(p) => format!("{}/{}", p.comm, p.pid),
        None => format!("unknown (uid {})", l.uid),
    };
    if l.processes.len() > 1 {
        let _ = write!(s, " (+{})", l.processes.len() - 1);
    }
    if let Some(b) = &l.ballast {
        let _ = write!(
            s,
            " {} worker {}",
            b.listener.as_deref().unwrap_or("?"),
            b.worker
        );
    }
    s
}

fn truncated(t: Truncation, requested: Option<u32>) -> String {
    match (t, requested) {
        (Truncation::Yes, Some(r)) => format!("yes (asked {r})"),
        (Truncation::Yes, None) => "yes".to_owned(),
        (Truncation::No, _) => "no".to_owned(),
        (Truncation::AtCap, _) => "maybe (at cap)".to_owned(),
        (Truncation::Unknown, _) => "?".to_owned(),
    }
}

fn counters_line(c: &Counters, sign: &str) -> String {
    format!(
        "ListenOverflows {sign}{}   ListenDrops {sign}{}   SyncookiesSent {sign}{}   \
         TCPReqQFullDrop {sign}{}",
        opt(c.listen_overflows),
        opt(c.listen_drops),
        opt(c.syncookies_sent),
        opt(c.req_q_full_drop),
    )
}

fn listener_name(b: &BallastListener) -> String {
    match &b.listener {
        Some(n) => format!("\"{n}\""),
        None => "(listener unknown)".to_owned(),
    }
}

/// The report as a text table, followed by ballast's listeners per worker, notes and advice.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    let h = &r.host;
    let _ = writeln!(
        out,
        "net.core.somaxconn {}   net.ipv4.tcp_max_syn_backlog {}   net.ipv4.tcp_syncookies {}",
        opt(h.somaxconn),
        opt(h.tcp_max_syn_backlog),
        opt(h.tcp_syncookies)
    );
    let _ = writeln!(out, "since boot: {}", counters_line(&r.counters, ""));
    if let (Some(d), Some(secs)) = (&r.delta, r.interval_secs) {
        let _ = writeln!(out, "last {secs:.1} s: {}", counters_line(d, "+"));
    }
    out.push('\n');
    if let Some(e) = &r.sockets_error {
        let _ = writeln!(out, "listening sockets: {e}");
    } else if r.sockets.is_empty() {
        out.push_str("no listening TCP socket matches\n");
    } else {
        let width = r
            .sockets
            .iter()
            .map(|s| s.local.to_string().len())
            .max()
            .unwrap_or(0)
            .max("Local Address:Port".len());
        let _ = writeln!(
            out,
            "{:<width$}  {:>6}  {:>6}  {:<16}  Process",
            "Local Address:Port", "Queue", "Max", "Truncated"
        );
        for s in &r.sockets {
            let _ = writeln!(
                out,
                "{:<width$}  {:>6}  {:>6}  {:<16}  {}",
                s.local.to_string(),
                s.queue,
                opt(s.max),
                truncated(s.truncated, s.requested_backlog),
                process(s)
            );
        }
        if r.sockets.iter().any(|s| s.truncated == Truncation::AtCap) {
            out.push_str(
                "\nmaybe (at cap): the maximum equals net.core.somaxconn; the program may have \
                 asked for more (the kernel keeps only the capped value).\n",
            );
        }
    }
    if !r.ballast.is_empty() {
        out.push_str("\nballast listeners, accept queue per worker:\n");
        for b in &r.ballast {
            let backlog = match b.requested_backlog {
                Some(req) => format!(
                    "backlog {req}, max {}{}",
                    opt(b.workers.first().and_then(|w| w.max)),
                    if b.truncated == Truncation::Yes {
                        " (truncated by somaxconn)"
                    } else {
                        ""
                    }
                ),
                None => format!(
                    "max {} (requested backlog unknown)",
                    opt(b.workers.first().and_then(|w| w.max))
                ),
            };
            let _ = writeln!(
                out,
                "  pid {} {} {}: {} workers, {}{}",
                b.pid,
                listener_name(b),
                b.local,
                b.workers.len(),
                backlog,
                b.config
                    .as_deref()
                    .map(|c| format!(" [{c}]"))
                    .unwrap_or_default()
            );
            let queues: Vec<String> = b.workers.iter().map(|w| w.queue.to_string()).collect();
            let _ = write!(out, "    queues: {}", queues.join(" "));
            if b.workers.iter().all(|w| w.accepted.is_some()) && !b.workers.is_empty() {
                let acc: Vec<String> = b.workers.iter().map(|w| opt(w.accepted)).collect();
                let _ = write!(out, "   accepted: {}", acc.join(" "));
            }
            out.push('\n');
        }
    }
    if !r.notes.is_empty() {
        out.push('\n');
        for n in &r.notes {
            let _ = writeln!(out, "note: {n}");
        }
    }
    if !r.advice.is_empty() {
        out.push_str("\nadvice:\n");
        for a in &r.advice {
            let _ = writeln!(out, "  * {a}");
        }
    }
    out
}

/// The report as pretty JSON (one document), or compact on one line (`--watch`: one line per
/// sample).
pub fn json(r: &Report, one_line: bool) -> String {
    let res = if one_line {
        serde_json::to_string(r)
    } else {
        serde_json::to_string_pretty(r)
    };
    // Every field is a plain number, string, list or map: serialising cannot fail.
    res.unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

fn who(s: &Listening) -> String {
    if let Some(b) = &s.ballast {
        return match &b.listener {
            Some(n) => format!("ballast listener \"{n}\", pid {}", b.pid),
            None => format!("ballast, pid {}", b.pid),
        };
    }
    match s.processes.first() {
        Some(p) => format!("{}, pid {}", p.comm, p.pid),
        None => "owner unknown".to_owned(),
    }
}

/// Plain-words advice: what to raise and why, from what the report shows.
pub fn advise(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let cap = r.host.somaxconn;
    if let Some(cap) = cap.filter(|c| *c < MODERN_SOMAXCONN) {
        out.push(format!(
            "net.core.somaxconn is {cap}, below the {MODERN_SOMAXCONN} Linux has defaulted to \
             since 5.4: every listen backlog above {cap} is silently cut to {cap}. Raise it: \
             `sysctl -w net.core.somaxconn={MODERN_SOMAXCONN}`, and persist it in /etc/sysctl.d/."
        ));
    }
    for b in r.ballast.iter().filter(|b| b.truncated == Truncation::Yes) {
        let max = opt(b.workers.first().and_then(|w| w.max));
        let req = b.requested_backlog.unwrap_or(0);
        out.push(format!(
            "port {} (ballast listener {}, pid {}) asks for backlog {req} but \
             net.core.somaxconn is {}: each of its accept queues holds only {max}. Raise \
             net.core.somaxconn to at least {req} (`sysctl -w net.core.somaxconn={req}`), or \
             lower `backlog` to {max} to say what you get.",
            b.local.port(),
            listener_name(b),
            b.pid,
            opt(cap)
        ));
    }
    let mut at_cap: Vec<String> = r
        .sockets
        .iter()
        .filter(|s| s.truncated == Truncation::AtCap)
        .map(|s| format!("{} ({})", s.local.port(), who(s)))
        .collect();
    at_cap.dedup();
    if !at_cap.is_empty() {
        out.push(format!(
            "port{} {} ha{} an accept queue maximum equal to net.core.somaxconn ({}): the \
             program may have asked for more and been cut down. If ListenOverflows rises, raise \
             net.core.somaxconn together with the program's own backlog setting.",
            if at_cap.len() > 1 { "s" } else { "" },
            at_cap.join(", "),
            if at_cap.len() > 1 { "ve" } else { "s" },
            opt(cap)
        ));
    }
    let mut full = false;
    for s in &r.sockets {
        let Some(max) = s.max else { continue };
        if max > 0 && s.queue >= max {
            full = true;
            out.push(format!(
                "port {} ({}): the accept queue is full ({} of {}): the program is not accepting \
                 as fast as connections arrive, and further handshakes are dropped \
                 (ListenOverflows). A larger backlog only absorbs bursts; the program must \
                 accept faster (more workers or threads) or get less load.",
                s.local.port(),
                who(s),
                s.queue,
                max
            ));
        } else if max >= 10 && u64::from(s.queue) * 10 >= u64::from(max) * 8 {
            out.push(format!(
                "port {} ({}): the accept queue is nearly full ({} of {}): connections wait \
                 to be accepted; raise the backlog or let the program accept faster.",
                s.local.port(),
                who(s),
                s.queue,
                max
            ));
        }
    }
    for b in r.ballast.iter().filter(|b| b.workers.len() > 1) {
        let queues: Vec<u32> = b.workers.iter().map(|w| w.queue).collect();
        let top = queues.iter().copied().max().unwrap_or(0);
        let sum: u64 = queues.iter().map(|q| u64::from(*q)).sum();
        let mean = sum / queues.len() as u64;
        if top >= 8 && u64::from(top) >= 2 * mean.max(1) {
            out.push(format!(
                "ballast listener {} (pid {}): the workers' accept queues are uneven ({}): \
                 SO_REUSEPORT spreads connections by address and port hash, so one long queue \
                 means that worker is slow to accept.",
                listener_name(b),
                b.pid,
                queues
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
    let (c, when) = match (&r.delta, r.interval_secs) {
        (Some(d), Some(secs)) => (d, format!("in the last {secs:.1} s")),
        _ => (&r.counters, "since boot".to_owned()),
    };
    let overflows = c.listen_overflows.unwrap_or(0);
    if overflows > 0 {
        let tail = if r.delta.is_some() {
            if full {
                " The full queue above is where."
            } else {
                " No queue is full at this instant, so they come in bursts: raise the busy \
                 listener's backlog (and net.core.somaxconn), or let it accept faster."
            }
        } else {
            " Run `ballast backlog --watch` to see whether it still happens."
        };
        out.push(format!(
            "ListenOverflows is {overflows} {when}: an accept queue was full when a handshake \
             completed, and the connection was dropped (the client retries after a second or \
             more).{tail}"
        ));
    }
    let cookies = c.syncookies_sent.unwrap_or(0);
    if cookies > 0 {
        out.push(format!(
            "SyncookiesSent is {cookies} {when}: a listener's SYN queue (bounded by its listen \
             backlog) was full — a SYN flood, or more new connections than the backlog allows. \
             Connections still succeed, but with fewer TCP options. If it is not a flood, raise \
             the listen backlog (and net.core.somaxconn)."
        ));
    }
    let qdrop = c.req_q_full_drop.unwrap_or(0);
    if qdrop > 0 {
        out.push(format!(
            "TCPReqQFullDrop is {qdrop} {when}: SYNs were dropped because a SYN queue was full \
             and SYN cookies were not used. Set net.ipv4.tcp_syncookies = 1 and raise the listen \
             backlog."
        ));
    }
    match r.host.tcp_syncookies {
        Some(0) => out.push(format!(
            "SYN cookies are off (net.ipv4.tcp_syncookies = 0): when a SYN queue fills, new \
             connections are dropped, and half-open connections are also bounded by \
             net.ipv4.tcp_max_syn_backlog ({}). Set net.ipv4.tcp_syncookies = 1.",
            opt(r.host.tcp_max_syn_backlog)
        )),
        Some(2) => out.push(
            "SYN cookies are always on (net.ipv4.tcp_syncookies = 2): every connection loses \
             some TCP options. 1 (cookies only when a SYN queue overflows) is the usual setting."
                .to_owned(),
        ),
        _ => {}
    }
    if out.is_empty() {
        out.push(format!(
            "Nothing to raise: no accept queue is full or truncated, and no listen overflows or \
             SYN cookies {when}."
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backlog::{HostLimits, Process, WorkerQueue};

    fn report() -> Report {
        Report {
            unix_time_ms: 0,
            host: HostLimits {
                somaxconn: Some(128),
                tcp_max_syn_backlog: Some(512),
                tcp_syncookies: Some(1),
            },
            counters: Counters::default(),
            interval_secs: None,
            delta: None,
            sockets: Vec::new(),
            ballast: Vec::new(),
            sockets_error: None,
            notes: Vec::new(),
            advice: Vec::new(),
        }
    }

    fn socket(local: &str, queue: u32, max: u32, t: Truncation) -> Listening {
        Listening {
            local: local.parse().expect("addr"),
            port: 0,
            queue,
            max: Some(max),
            requested_backlog: None,
            truncated: t,
            uid: 0,
            inode: 1,
            processes: vec![Process {
                pid: 77,
                comm: "nginx".into(),
            }],
            ballast: None,
        }
    }

    #[test]
    fn a_ballast_backlog_above_somaxconn_is_named_with_both_numbers() {
        let mut r = report();
        r.ballast.push(BallastListener {
            pid: 9,
            config: None,
            listener: Some("web".into()),
            local: "0.0.0.0:80".parse().expect("addr"),
            requested_backlog: Some(511),
            truncated: Truncation::Yes,
            workers: vec![WorkerQueue {
                worker: 0,
                queue: 0,
                max: Some(128),
                accepted: None,
                inode: 1,
                drops: None,
            }],
        });
        let advice = advise(&r).join("\n");
        assert!(
            advice.contains("net.core.somaxconn is 128, below the 4096"),
            "{advice}"
        );
        assert!(
            advice.contains(
                "port 80 (ballast listener \"web\", pid 9) asks for backlog 511 but \
                 net.core.somaxconn is 128: each of its accept queues holds only 128"
            ),
            "{advice}"
        );
        assert!(
            advice.contains("sysctl -w net.core.somaxconn=511"),
            "{advice}"
        );
    }

    #[test]
    fn full_queues_overflows_and_cookies_are_explained() {
        let mut r = report();
        r.host.somaxconn = Some(4096);
        r.sockets
            .push(socket("0.0.0.0:80", 129, 128, Truncation::No));
        r.sockets
            .push(socket("0.0.0.0:443", 0, 4096, Truncation::AtCap));
        r.delta = Some(Counters {
            listen_overflows: Some(3),
            syncookies_sent: Some(2),
            ..Counters::default()
        });
        r.interval_secs = Some(1.0);
        let advice = advise(&r).join("\n");
        assert!(
            advice.contains("port 80 (nginx, pid 77): the accept queue is full (129 of 128)"),
            "{advice}"
        );
        assert!(
            advice.contains("port 443 (nginx, pid 77) has an accept queue maximum equal to"),
            "{advice}"
        );
        assert!(
            advice.contains("ListenOverflows is 3 in the last 1.0 s"),
            "{advice}"
        );
        assert!(
            advice.contains("The full queue above is where."),
            "{advice}"
        );
        assert!(
            advice.contains("SyncookiesSent is 2 in the last 1.0 s"),
            "{advice}"
        );
    }

    #[test]
    fn a_quiet_host_gets_nothing_to_raise() {
        let mut r = report();
        r.host.somaxconn = Some(4096);
        r.sockets.push(socket("0.0.0.0:22", 0, 128, Truncation::No));
        assert_eq!(
            advise(&r),
            vec![
                "Nothing to raise: no accept queue is full or truncated, and no listen \
                 overflows or SYN cookies since boot."
                    .to_owned()
            ]
        );
    }

    #[test]
    fn the_table_shows_queue_max_truncation_and_process() {
        let mut r = report();
        r.sockets
            .push(socket("127.0.0.1:8080", 3, 128, Truncation::AtCap));
        let t = text(&r);
        assert!(
            t.contains("net.core.somaxconn 128   net.ipv4.tcp_max_syn_backlog 512"),
            "{t}"
        );
        let row = t
            .lines()
            .find(|l| l.starts_with("127.0.0.1:8080"))
            .expect("row");
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "127.0.0.1:8080",
                "3",
                "128",
                "maybe",
                "(at",
                "cap)",
                "nginx/77"
            ]
        );
        assert!(t.contains("maybe (at cap): the maximum equals"), "{t}");
    }
}
