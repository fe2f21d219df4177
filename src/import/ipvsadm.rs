//! `ipvsadm-save -n` / `ipvsadm -Sn` output: one rule per line, ipvsadm(8) arguments.
//!
//! `-A` (or `-E`) defines a virtual service: `-t|-u ADDR -s SCHED [-p [TIMEOUT]] [-M NETMASK]`; it
//! becomes a `[[listener]]` bound to ADDR and an `[[upstream]]`. `-a` (or `-e`) adds a real
//! server to it: `-t|-u ADDR -r REAL [-g|-m|-i] [-w WEIGHT] [-x UPPER] [-y LOWER]`; it becomes an
//! `[[upstream.server]]`. Lines may start with `ipvsadm`; `#` starts a comment; `-C` (clear) is
//! ignored. Host and service names (output without `-n`) are refused: ballast resolves no names.

use std::sync::Arc;

use super::emit::{name, udp_listener, Plan, Table};
use super::keepalived::{dr_tun_note, scheduler};
use super::{ImportError, Loc, Problem};

struct Service {
    key: String,
    listener: Table,
    upstream: Table,
    /// Lines whose real server uses `-g` or `-i`, with the flag.
    dr: Vec<(Loc, &'static str)>,
}

/// Maps the whole text.
///
/// # Errors
/// [`ImportError::Invalid`] with every line that cannot be imported.
pub(super) fn map(text: &str, origin: &str) -> Result<Plan, ImportError> {
    let file: Arc<str> = Arc::from(origin);
    let mut plan = Plan::default();
    let mut problems = Vec::new();
    let mut services: Vec<Service> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let at = Loc {
            file: Arc::clone(&file),
            line: i + 1,
        };
        let line = raw.split('#').next().unwrap_or_default();
        let mut words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"ipvsadm") {
            words.remove(0);
        }
        if words.is_empty() {
            continue;
        }
        if let Err(message) = rule(&words, &at, &mut services, &mut plan) {
            problems.push(Problem { at, message });
        }
    }
    if !problems.is_empty() {
        return Err(ImportError::Invalid(problems));
    }
    for s in services {
        if let Some((first, flag)) = s.dr.first() {
            let lines: Vec<String> = s.dr.iter().map(|(l, _)| l.line.to_string()).collect();
            let what = if *flag == "-g" {
                "-g (direct routing)"
            } else {
                "-i (tunnelling)"
            };
            plan.warn(
                first,
                format!(
                    "{what} for {} (line{} {}): {}",
                    s.key,
                    if lines.len() > 1 { "s" } else { "" },
                    lines.join(", "),
                    dr_tun_note()
                ),
            );
        }
        if s.upstream.children("[[server]]").next().is_none() {
            return Err(ImportError::Invalid(vec![Problem {
                at: s.listener.at.clone(),
                message: format!(
                    "virtual service {} has no real server (-a); ballast needs at least one",
                    s.key
                ),
            }]));
        }
        plan.listeners.push(s.listener);
        plan.upstreams.push(s.upstream);
    }
    Ok(plan)
}

/// The value after an option, or an error naming the option.
fn value<'a>(words: &[&'a str], i: &mut usize, opt: &str) -> Result<&'a str, String> {
    *i += 1;
    words
        .get(*i)
        .copied()
        .ok_or_else(|| format!("{opt} needs a value"))
}

fn rule(
    words: &[&str],
    at: &Loc,
    services: &mut Vec<Service>,
    plan: &mut Plan,
) -> Result<(), String> {
    let cmd = words[0];
    match cmd {
        "-A" | "--add-service" | "-E" | "--edit-service" | "-a" | "--add-server" | "-e" | "--edit-server" => {}
        "-C" | "--clear" => {
            plan.ignore("-C (clear)", at);
            return Ok(());
        }
        "--set" | "--start-daemon" | "--stop-daemon" => {
            plan.ignore(cmd, at);
            return Ok(());
        }
        _ => return Err(format!("{cmd}: unknown or unsupported command; ipvsadm-save lines start with -A (a virtual service) or -a (a real server)")),
    }
    let service = matches!(cmd, "-A" | "--add-service" | "-E" | "--edit-service");
    let mut vaddr: Option<(String, bool)> = None;
    let mut sched = None;
    let mut persistent: Option<String> = None;
    let mut netmask = None;
    let mut real = None;
    let mut weight = None;
    let mut upper = None;
    let mut fwd: Option<&'static str> = None;
    let mut i = 1;
    while i < words.len() {
        let w = words[i];
        match w {
            "-t" | "--tcp-service" => vaddr = Some((address(value(words, &mut i, w)?)?, false)),
            "-u" | "--udp-service" => vaddr = Some((address(value(words, &mut i, w)?)?, true)),
            "-f" | "--fwmark-service" => return Err("-f: firewall-mark virtual services select packets in the kernel; ballast listens on addresses: use -t ADDR:PORT".into()),
            "--sctp-service" => return Err("--sctp-service: ballast proxies TCP (and UDP), not SCTP".into()),
            "-s" | "--scheduler" => sched = Some(value(words, &mut i, w)?),
            "-p" | "--persistent" => {
                persistent = Some(match words.get(i + 1) {
                    Some(t) if !t.starts_with('-') => {
                        i += 1;
                        t.parse::<u64>().map(|s| format!("{s}s")).map_err(|_| format!("-p {t}: expected a number of seconds"))?
                    }
                    _ => "300s".to_string(),
                });
            }
            "-M" | "--netmask" => netmask = Some(value(words, &mut i, w)?),
            "-b" | "--sched-flags" | "--pe" => {
                let v = value(words, &mut i, w)?;
                plan.warn(at, format!("{w} {v}: scheduler flags are not supported and left out"));
            }
            "-r" | "--real-server" => real = Some(value(words, &mut i, w)?),
            "-g" | "--gatewaying" => fwd = Some("-g"),
            "-i" | "--ipip" => fwd = Some("-i"),
            "-m" | "--masquerading" => fwd = None,
            "-w" | "--weight" => weight = Some(value(words, &mut i, w)?.parse::<i64>().map_err(|_| format!("{w}: expected an integer weight"))?),
            "-x" | "--u-threshold" => upper = Some(value(words, &mut i, w)?.parse::<i64>().map_err(|_| format!("{w}: expected an integer"))?),
            "-y" | "--l-threshold" => {
                value(words, &mut i, w)?;
                plan.warn(at, "-y (lower threshold): ballast takes a full server back as soon as it is below max_connections (-x)");
            }
            "--tun-type" | "--tun-port" | "--tun-nocsum" | "--tun-csum" | "--tun-remcsum" => {
                if w == "--tun-type" || w == "--tun-port" {
                    value(words, &mut i, w)?;
                }
            }
            "-n" | "--numeric" => {}
            _ => return Err(format!("{w}: unknown or unsupported option")),
        }
        i += 1;
    }
    let Some((vaddr, udp)) = vaddr else {
        return Err(format!(
            "{cmd}: the virtual service is missing (-t ADDR:PORT or -u ADDR:PORT)"
        ));
    };
    let key = format!("{} {vaddr}", if udp { "-u" } else { "-t" });
    if service {
        if services.iter().any(|s| s.key == key) {
            return Err(format!("{key}: this virtual service is defined twice"));
        }
        let uname = format!("vs-{}", name(&vaddr.replace(':', "-")));
        let mut l = Table::new(at);
        l.set("name", uname.clone(), at);
        l.set("bind", vaddr.clone(), at);
        if udp {
            udp_listener(&mut l, at)?;
        }
        l.set("upstream", uname.clone(), at);
        let mut u = Table::new(at);
        u.set("name", uname, at);
        // ipvsadm's default scheduler is wlc, as ballast's.
        let s = sched.unwrap_or("wlc");
        let (mapped, note) = scheduler(s).ok_or_else(|| format!("-s {s}: not an LVS scheduler; allowed: rr, wrr, lc, wlc, lblc, lblcr, sh, dh, mh, sed, nq, fo, ovf, twos"))?;
        if let Some(note) = note {
            plan.warn(at, format!("-s {s}: {note}"));
        }
        u.set("scheduler", mapped, at);
        if let Some(p) = persistent {
            u.set("persistence_timeout", p, at);
            if let Some(m) = netmask {
                u.set("persistence_granularity", m, at);
            }
        } else if netmask.is_some() {
            plan.warn(at, "-M without -p has no effect (as in ipvsadm); left out");
        }
        services.push(Service {
            key,
            listener: l,
            upstream: u,
            dr: Vec::new(),
        });
        return Ok(());
    }
    let Some(svc) = services.iter_mut().find(|s| s.key == key) else {
        return Err(format!(
            "{key}: no virtual service -A {key} before this line"
        ));
    };
    let Some(real) = real else {
        return Err("-a: the real server is missing (-r ADDR:PORT)".into());
    };
    let real = if real.contains(':') && !real.ends_with(']') {
        address(real)?
    } else {
        // A real server without a port takes the virtual service's.
        let port = vaddr.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
        format!("{}:{port}", address_ip(real)?)
    };
    let s = svc.upstream.child("[[server]]", at);
    s.set("address", real, at);
    if let Some(w) = weight {
        s.set("weight", w, at);
    }
    if let Some(x) = upper.filter(|x| *x > 0) {
        s.set("max_connections", x, at);
    }
    if let Some(f) = fwd {
        svc.dr.push((at.clone(), f));
    }
    Ok(())
}

/// `IP:PORT` or `[IPv6]:PORT`, numeric only.
fn address(s: &str) -> Result<String, String> {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a numeric IP:PORT; ballast resolves no host or service names: save the rules with `ipvsadm-save -n` (or `ipvsadm -Sn`)"))
    }
}

fn address_ip(s: &str) -> Result<String, String> {
    let bare = s.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(_)) => Ok(format!("[{bare}]")),
        Ok(_) => Ok(bare.to_string()),
        Err(_) => Err(format!(
            "{s:?} is not a numeric IP address; save the rules with `ipvsadm-save -n`"
        )),
    }
}
