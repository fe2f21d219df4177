//! `ballast ctl`: the command-line client of the admin API.
//!
//! `ballast ctl list` prints what `ipvsadm -Ln` prints, in its layout, so eyes and scripts used
//! to it read it at once:
//!
//! ```text
//! ballast 0.1.0 (admin 127.0.0.1:8404)
//! Prot LocalAddress:Port Scheduler Flags
//!   -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
//! TCP  127.0.0.1:8080 rr persistent 300
//!   -> 127.0.0.1:9001               Masq    1      0          0
//! ```
//!
//! A proxy's forwarding is what LVS calls masquerading (NAT): both directions pass through
//! ballast, so every server says `Masq`. As in LVS, a server that takes no new connections
//! (down, draining or disabled) shows weight 0; InActConn is always 0 (a proxy keeps no
//! connection in FIN/TIME_WAIT state on a server's behalf). The sorry server is not listed.
//! `--stats` and `--rate` keep ipvsadm's columns where ballast has the figure and replace the
//! packet columns, which a proxy does not count, with requests and errors.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use http::{Method, StatusCode};

use super::client::Client;
use super::views::{ListenerView, UpstreamView};

/// Options of `ballast ctl`.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// The admin API: `IP:port`, or a unix socket path.
    #[arg(
        long,
        value_name = "ADDR",
        env = "BALLAST_ADMIN",
        default_value = "127.0.0.1:8404",
        global = true
    )]
    pub admin: String,
    /// The bearer token (or set BALLAST_TOKEN).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "BALLAST_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// Read the bearer token from this file.
    #[arg(long, value_name = "FILE", global = true, conflicts_with = "token")]
    pub token_file: Option<std::path::PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `ballast ctl` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// List virtual services (listeners) and their real servers, as `ipvsadm -Ln` does.
    List {
        /// Counters: connections, requests, errors, bytes (ipvsadm --stats).
        #[arg(long, conflicts_with = "rate")]
        stats: bool,
        /// Rates over one second: connections, requests, errors, bytes per second (ipvsadm --rate).
        #[arg(long)]
        rate: bool,
        /// The API's JSON (listeners and upstreams) instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Set a server's weight (ipvsadm -e -w).
    SetWeight {
        /// The upstream.
        upstream: String,
        /// The server, IP:port.
        server: String,
        /// The new weight, 0..=65535.
        weight: u32,
    },
    /// Drain a server: no new connections, established ones go on.
    Drain {
        /// The upstream.
        upstream: String,
        /// The server, IP:port.
        server: String,
    },
    /// Put a server back in service (undoes drain and disable).
    Enable {
        /// The upstream.
        upstream: String,
        /// The server, IP:port.
        server: String,
    },
    /// Disable a server (maintenance): no connections, no checks.
    Disable {
        /// The upstream.
        upstream: String,
        /// The server, IP:port.
        server: String,
    },
    /// Add a server to an upstream (ipvsadm -a).
    AddServer {
        /// The upstream.
        upstream: String,
        /// The server, IP:port.
        server: String,
        /// Its weight.
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// Most concurrent connections; 0 = unlimited.
        #[arg(long, default_value_t = 0)]
        max_connections: u32,
        /// A backup server.
        #[arg(long)]
        backup: bool,
    },
    /// Remove a server from an upstream (ipvsadm -d); its connections go on to their end.
    RemoveServer {
        /// The upstream.
        upstream: String,
        /// The server, IP:port.
        server: String,
    },
    /// Re-read the configuration file and apply it (as SIGHUP does); an invalid file changes
    /// nothing and every problem is printed.
    Reload,
    /// Add a TCP listener (virtual service, ipvsadm -A) to the running configuration (not to
    /// the file: a reload from the file drops it).
    AddListener {
        /// Its name.
        name: String,
        /// IP:port to listen on.
        bind: String,
        /// The upstream that serves it.
        upstream: String,
        /// Accept workers (0 = one per core).
        #[arg(long, default_value_t = 1)]
        workers: u32,
    },
    /// Remove a listener (ipvsadm -D): it stops accepting, its connections go on.
    RemoveListener {
        /// Its name.
        name: String,
    },
}

/// Runs `ballast ctl`.
///
/// # Errors
/// When the API cannot be reached or refuses the request; the API's message is included.
pub fn run(args: &CtlArgs) -> Result<()> {
    let target = super::parse_target(&args.admin).map_err(anyhow::Error::msg)?;
    let token = match &args.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .trim()
                .to_owned(),
        ),
        None => args.token.clone(),
    };
    let client = Client::new(target, token);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(command(&client, &args.command))
}

async fn command(client: &Client, cmd: &CtlCommand) -> Result<()> {
    let server_path =
        |u: &str, s: &str| format!("/api/v1/upstreams/{}/servers/{}", escape(u), escape(s));
    let (method, path, body) = match cmd {
        CtlCommand::List { stats, rate, json } => return list(client, *stats, *rate, *json).await,
        CtlCommand::SetWeight {
            upstream,
            server,
            weight,
        } => (
            Method::PATCH,
            server_path(upstream, server),
            Some(serde_json::json!({ "weight": weight })),
        ),
        CtlCommand::Drain { upstream, server } => {
            (Method::POST, server_path(upstream, server) + "/drain", None)
        }
        CtlCommand::Enable { upstream, server } => (
            Method::POST,
            server_path(upstream, server) + "/enable",
            None,
        ),
        CtlCommand::Disable { upstream, server } => (
            Method::POST,
            server_path(upstream, server) + "/disable",
            None,
        ),
        CtlCommand::AddServer {
            upstream,
            server,
            weight,
            max_connections,
            backup,
        } => (
            Method::POST,
            format!("/api/v1/upstreams/{}/servers", escape(upstream)),
            Some(serde_json::json!({
                "address": server, "weight": weight, "max_connections": max_connections, "backup": backup,
            })),
        ),
        CtlCommand::RemoveServer { upstream, server } => {
            (Method::DELETE, server_path(upstream, server), None)
        }
        CtlCommand::Reload => (Method::POST, "/api/v1/reload".to_owned(), None),
        CtlCommand::AddListener {
            name,
            bind,
            upstream,
            workers,
        } => (
            Method::POST,
            "/api/v1/listeners".to_owned(),
            Some(serde_json::json!({
                "name": name, "bind": bind, "upstream": upstream, "workers": workers,
            })),
        ),
        CtlCommand::RemoveListener { name } => (
            Method::DELETE,
            format!("/api/v1/listeners/{}", escape(name)),
            None,
        ),
    };
    let (status, body) = client.request(method, &path, body.as_ref()).await?;
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let mut msg = value.get("error").and_then(|e| e.as_str()).map_or_else(
            || String::from_utf8_lossy(&body).into_owned(),
            str::to_owned,
        );
        if let Some(problems) = value.get("problems").and_then(|p| p.as_array()) {
            for p in problems {
                let _ = write!(msg, "\n  {}", p.as_str().unwrap_or_default());
            }
        }
        bail!("{} ({})", msg, status);
    }
    match cmd {
        CtlCommand::Reload => println!(
            "reloaded: {}",
            value
                .get("summary")
                .and_then(|s| s.as_str())
                .unwrap_or("ok")
        ),
        CtlCommand::RemoveServer { upstream, server } => {
            println!("removed {server} from {upstream}")
        }
        CtlCommand::AddListener { name, .. } => println!(
            "added listener {name} on {}",
            value.get("address").and_then(|a| a.as_str()).unwrap_or("?")
        ),
        CtlCommand::RemoveListener { name } => {
            println!("removed listener {name}; its connections go on")
        }
        _ => {
            let s = |k: &str| {
                value
                    .get(k)
                    .map(|v| v.to_string().trim_matches('"').to_owned())
                    .unwrap_or_default()
            };
            println!(
                "{} status {} weight {} (effective {}) active {}",
                s("address"),
                s("status"),
                s("weight"),
                s("effective_weight"),
                s("active_connections")
            );
        }
    }
    Ok(())
}

/// Percent-escapes what a path segment cannot hold as it is (IPv6 brackets, spaces, slashes).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

async fn fetch(client: &Client) -> Result<(Vec<ListenerView>, Vec<UpstreamView>)> {
    let get = |path: &'static str| async move {
        let (status, body) = client.request(Method::GET, path, None).await?;
        if status != StatusCode::OK {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            bail!(
                "{path}: {} ({status})",
                v.get("error").and_then(|e| e.as_str()).unwrap_or("failed")
            );
        }
        Ok(body)
    };
    let l = get("/api/v1/listeners").await?;
    let u = get("/api/v1/upstreams").await?;
    Ok((
        serde_json::from_slice(&l).context("unexpected /api/v1/listeners answer")?,
        serde_json::from_slice(&u).context("unexpected /api/v1/upstreams answer")?,
    ))
}

async fn list(client: &Client, stats: bool, rate: bool, json: bool) -> Result<()> {
    let (listeners, upstreams) = fetch(client).await?;
    let mode = if rate {
        let started = std::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (l2, u2) = fetch(client).await?;
        let secs = started.elapsed().as_secs_f64();
        Mode::Rate {
            before: (listeners, upstreams),
            secs,
        }
        .with_now(l2, u2)
    } else if stats {
        Mode::Stats(listeners, upstreams)
    } else {
        Mode::Plain(listeners, upstreams)
    };
    if json {
        let (l, u) = mode.now();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "listeners": l, "upstreams": u }))?
        );
        return Ok(());
    }
    print!("{}", render(&client.target.to_string(), &mode));
    Ok(())
}

/// What `ctl list` shows.
#[derive(Debug)]
pub enum Mode {
    /// `ipvsadm -Ln`.
    Plain(Vec<ListenerView>, Vec<UpstreamView>),
    /// `ipvsadm -Ln --stats`.
    Stats(Vec<ListenerView>, Vec<UpstreamView>),
    /// `ipvsadm -Ln --rate`: two samples `secs` apart.
    Rate {
        /// The first sample.
        before: (Vec<ListenerView>, Vec<UpstreamView>),
        /// Seconds between the samples.
        secs: f64,
    },
    /// `--rate` once the second sample is in.
    RateDone {
        /// The first sample.
        before: (Vec<ListenerView>, Vec<UpstreamView>),
        /// The second sample.
        now: (Vec<ListenerView>, Vec<UpstreamView>),
        /// Seconds between them.
        secs: f64,
    },
}

impl Mode {
    fn with_now(self, l: Vec<ListenerView>, u: Vec<UpstreamView>) -> Mode {
        match self {
            Mode::Rate { before, secs } => Mode::RateDone {
                before,
                now: (l, u),
                secs,
            },
            other => other,
        }
    }

    fn now(&self) -> (&[ListenerView], &[UpstreamView]) {
        match self {
            Mode::Plain(l, u) | Mode::Stats(l, u) => (l, u),
            Mode::Rate { before, .. } => (&before.0, &before.1),
            Mode::RateDone { now, .. } => (&now.0, &now.1),
        }
    }
}

/// An IPv4 prefix length as a dotted netmask.
fn netmask(prefix: u8) -> String {
    let bits = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    std::net::Ipv4Addr::from(bits).to_string()
}

/// The table, as `ipvsadm -Ln` (or `--stats`, `--rate`) lays it out.
pub fn render(admin: &str, mode: &Mode) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "ballast {} (admin {admin})", env!("CARGO_PKG_VERSION"));
    let (listeners, upstreams) = mode.now();
    match mode {
        Mode::Plain(..) => out.push_str(
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
        ),
        Mode::Stats(..) => out.push_str(
            "Prot LocalAddress:Port               Conns     Reqs   Errors  InBytes OutBytes\n  -> RemoteAddress:Port\n",
        ),
        Mode::Rate { .. } | Mode::RateDone { .. } => out.push_str(
            "Prot LocalAddress:Port                 CPS      RPS    ErrPS    InBPS   OutBPS\n  -> RemoteAddress:Port\n",
        ),
    }
    let before = match mode {
        Mode::RateDone { before, secs, .. } => Some((before, *secs)),
        _ => None,
    };
    for l in listeners {
        let Some(u) = upstreams.iter().find(|u| u.name == l.upstream) else {
            continue;
        };
        let service = format!("TCP  {}", l.address);
        let servers: Vec<_> = u.servers.iter().filter(|s| s.role != "sorry").collect();
        let sum = |f: fn(&super::views::ServerView) -> u64, ss: &[&super::views::ServerView]| {
            ss.iter().map(|s| f(s)).sum::<u64>()
        };
        let reqs = |l: &ListenerView| l.http.as_ref().map_or(0, |h| h.requests);
        match mode {
            Mode::Plain(..) => {
                let mut flags = String::new();
                if let Some(p) = l.persistence_secs {
                    let _ = write!(flags, " persistent {p}");
                    if let Some(g) = l.persistence_granularity.filter(|&g| g != 32) {
                        let _ = write!(flags, " mask {}", netmask(g));
                    }
                }
                let _ = writeln!(out, "{service} {}{flags}", l.scheduler);
                for s in &servers {
                    let weight = if s.status == "up" { s.weight } else { 0 };
                    let _ = writeln!(
                        out,
                        "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
                        s.address, "Masq", weight, s.active_connections, s.inactive_connections
                    );
                }
            }
            Mode::Stats(..) => {
                let _ = writeln!(
                    out,
                    "{service:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    l.accepted,
                    reqs(l),
                    l.no_server + sum(|s| s.connect_errors + s.errors, &servers),
                    sum(|s| s.bytes_in, &servers),
                    sum(|s| s.bytes_out, &servers)
                );
                for s in &servers {
                    let _ = writeln!(
                        out,
                        "  -> {:<28} {:>8} {:>8} {:>8} {:>8} {:>8}",
                        s.address,
                        s.connections,
                        s.requests,
                        s.connect_errors + s.errors,
                        s.bytes_in,
                        s.bytes_out
                    );
                }
            }
            Mode::Rate { .. } | Mode::RateDone { .. } => {
                let Some((b, secs)) = before else { continue };
                let per = |now: u64, then: u64| {
                    ((now.saturating_sub(then)) as f64 / secs.max(0.001)).round() as u64
                };
                let bl = b.0.iter().find(|x| x.name == l.name);
                let bu = b.1.iter().find(|x| x.name == u.name);
                let bservers: Vec<_> = bu
                    .map(|u| u.servers.iter().filter(|s| s.role != "sorry").collect())
                    .unwrap_or_default();
                let bs = |a: &str| bservers.iter().copied().find(|s| s.address == a);
                let _ = writeln!(
                    out,
                    "{service:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    per(l.accepted, bl.map_or(l.accepted, |x| x.accepted)),
                    per(reqs(l), bl.map_or(reqs(l), reqs)),
                    per(
                        l.no_server + sum(|s| s.connect_errors + s.errors, &servers),
                        bl.map_or(0, |x| x.no_server)
                            + sum(|s| s.connect_errors + s.errors, &bservers)
                    ),
                    per(
                        sum(|s| s.bytes_in, &servers),
                        sum(|s| s.bytes_in, &bservers)
                    ),
                    per(
                        sum(|s| s.bytes_out, &servers),
                        sum(|s| s.bytes_out, &bservers)
                    ),
                );
                for s in &servers {
                    let p = bs(&s.address);
                    let _ = writeln!(
                        out,
                        "  -> {:<28} {:>8} {:>8} {:>8} {:>8} {:>8}",
                        s.address,
                        per(s.connections, p.map_or(s.connections, |p| p.connections)),
                        per(s.requests, p.map_or(s.requests, |p| p.requests)),
                        per(
                            s.connect_errors + s.errors,
                            p.map_or(s.connect_errors + s.errors, |p| p.connect_errors + p.errors)
                        ),
                        per(s.bytes_in, p.map_or(s.bytes_in, |p| p.bytes_in)),
                        per(s.bytes_out, p.map_or(s.bytes_out, |p| p.bytes_out)),
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_print_as_netmasks() {
        assert_eq!(netmask(24), "255.255.255.0");
        assert_eq!(netmask(0), "0.0.0.0");
        assert_eq!(netmask(32), "255.255.255.255");
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(escape("[::1]:80"), "%5B::1%5D:80");
        assert_eq!(escape("a/b"), "a%2Fb");
    }
}
