//! Persistence: clients connecting and closing at random through [`Upstream::select`] with
//! `persistence_timeout`, servers drained, disabled, marked down and back, time moved on by
//! tokio's paused clock.
//!
//! Invariants, after every step:
//! * a client whose entry is live goes to the server it names while that server is usable;
//! * an entry never expires while the client has a connection open that holds it, and expires
//!   `persistence_timeout` after the last one closes (looked up, an entry is exact to the
//!   millisecond; sweeping only decides when an expired one frees its place);
//! * a client is never sent to a server that is down, draining or disabled, and is always served
//!   while one is usable; after a reschedule the entry names the new server;
//! * the table never holds more than `persistence_max_entries`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use ballast::config::Config;
use ballast::scheduler::PickContext;
use ballast::upstream::{ServerGuard, StateFlags, Tried, Upstream};
use tokio::time::Instant;

/// What the model knows of one client's entry.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The server it names; `None` once rescheduling dropped it while connections still held it.
    server: Option<usize>,
    /// Open connections holding it.
    held: u32,
    /// When the last one closed.
    idle_since: Instant,
}

impl Entry {
    fn live(&self, now: Instant, timeout: Duration) -> bool {
        self.held > 0 || now.saturating_duration_since(self.idle_since) < timeout
    }
}

/// One open connection: the guard, and whether it holds the client's entry.
struct Conn {
    client: usize,
    guard: ServerGuard,
    holds: bool,
}

pub(crate) fn simulate(seed: u64, trace: bool) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let mut log = trace.then(String::new);
    let result = rt.block_on(run(seed, &mut log));
    if let Some(t) = log {
        eprintln!("{t}");
    }
    result
}

async fn run(seed: u64, log: &mut Option<String>) -> Result<(), String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let n_servers = rng.usize(2..=4);
    let n_clients = rng.usize(1..=12);
    let timeout_ms = [100u64, 1000, 5000][rng.usize(0..3)];
    let max_entries = rng.u64(1..=8);
    let servers: String = (0..n_servers)
        .map(|i| {
            format!(
                "[[upstream.server]]\naddress = \"127.0.0.1:{}\"\n",
                9000 + i
            )
        })
        .collect();
    let scheduler = ["rr", "wrr", "lc", "sh"][rng.usize(0..4)];
    let text = format!(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\n\
         [[upstream]]\nname = \"u\"\nscheduler = \"{scheduler}\"\n\
         persistence_timeout = \"{timeout_ms}ms\"\npersistence_max_entries = {max_entries}\n{servers}"
    );
    let mut cfg = Config::from_str(&text, "sim.toml").map_err(|e| e.to_string())?;
    let up = Arc::new(Upstream::new(cfg.upstreams.remove(0)));
    let table = up.persistence.clone().ok_or("persistence is on")?;
    let timeout = Duration::from_millis(timeout_ms);
    let clients: Vec<IpAddr> = (0..n_clients)
        .map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + i as u8)))
        .collect();
    let mut model: HashMap<usize, Entry> = HashMap::new();
    let mut conns: Vec<Conn> = Vec::new();
    let start = Instant::now();
    macro_rules! log {
        ($($arg:tt)*) => {
            if let Some(t) = log {
                let _ = write!(t, "{:>8?} ", start.elapsed());
                let _ = writeln!(t, $($arg)*);
            }
        };
    }
    log!("{n_servers} servers ({scheduler}), {n_clients} clients, timeout {timeout_ms} ms, max {max_entries} entries");
    for step in 0..rng.usize(100..600) {
        let now = Instant::now();
        let snapshot = up.snapshot();
        let usable: Vec<bool> = snapshot.servers.iter().map(|s| s.is_usable()).collect();
        match rng.u32(0..100) {
            0..=39 => {
                let c = rng.usize(0..n_clients);
                let key = table.key(clients[c]);
                let ctx = PickContext {
                    client: clients[c],
                    local: IpAddr::V4(Ipv4Addr::LOCALHOST),
                };
                let before = model.get(&c).copied().filter(|e| e.live(now, timeout));
                let guard = up.select(&snapshot, &ctx, &Tried::new());
                let got = guard.as_ref().map(ServerGuard::index);
                log!("client {c} connects (entry {before:?}) → server {got:?}");
                if let Some(s) = got {
                    if !usable[s] {
                        return Err(format!(
                            "step {step}: client {c} sent to server {s}, which is {}",
                            snapshot.servers[s].state.describe()
                        ));
                    }
                } else if usable.iter().any(|&u| u) {
                    return Err(format!(
                        "step {step}: client {c} refused with {usable:?} usable"
                    ));
                }
                // A live entry on a usable server is honoured.
                if let Some(Entry {
                    server: Some(s), ..
                }) = before
                {
                    if usable[s] && got != Some(s) {
                        return Err(format!(
                            "step {step}: client {c}'s live entry names usable server {s}, sent to {got:?}"
                        ));
                    }
                }
                let recorded = table.lookup(key);
                let Some(guard) = guard else {
                    // Rescheduling found nothing: the entry no longer names a server.
                    if let Some(e) = model.get_mut(&c) {
                        e.server = None;
                        if e.held == 0 {
                            model.remove(&c);
                        }
                    }
                    if recorded.is_some() {
                        return Err(format!(
                            "step {step}: refused client {c} keeps entry {recorded:?}"
                        ));
                    }
                    continue;
                };
                let s = guard.index();
                let holds = recorded == Some(s);
                if recorded.is_some() && !holds {
                    return Err(format!(
                        "step {step}: client {c} sent to {s} but its entry names {recorded:?}"
                    ));
                }
                if holds {
                    let e = model.entry(c).or_insert(Entry {
                        server: None,
                        held: 0,
                        idle_since: now,
                    });
                    if !e.live(now, timeout) {
                        e.held = 0;
                    }
                    e.server = Some(s);
                    e.held += 1;
                } else if before.is_some() {
                    return Err(format!(
                        "step {step}: client {c} had a live entry but got none on server {s}"
                    ));
                } else {
                    // The table was full: served without an entry.
                    model.remove(&c);
                }
                conns.push(Conn {
                    client: c,
                    guard,
                    holds,
                });
            }
            40..=69 => {
                if conns.is_empty() {
                    continue;
                }
                let conn = conns.swap_remove(rng.usize(0..conns.len()));
                log!(
                    "client {} closes on server {}",
                    conn.client,
                    conn.guard.index()
                );
                if conn.holds {
                    if let Some(e) = model.get_mut(&conn.client) {
                        e.held = e.held.saturating_sub(1);
                        if e.held == 0 {
                            e.idle_since = now;
                            if e.server.is_none() {
                                model.remove(&conn.client);
                            }
                        }
                    }
                }
                drop(conn);
            }
            70..=84 => {
                let ms = match rng.u32(0..3) {
                    0 => rng.u64(0..=10),
                    1 => rng.u64(timeout_ms - timeout_ms / 10..=timeout_ms + timeout_ms / 10),
                    _ => rng.u64(0..=timeout_ms * 2),
                };
                log!("time +{ms} ms");
                tokio::time::advance(Duration::from_millis(ms)).await;
            }
            85..=94 => {
                let s = rng.usize(0..n_servers);
                let flag =
                    [StateFlags::DOWN, StateFlags::DRAINING, StateFlags::DISABLED][rng.usize(0..3)];
                let on = rng.bool();
                snapshot.servers[s].state.set(flag, on);
                log!(
                    "server {s} {flag:?} {on} → {}",
                    snapshot.servers[s].state.describe()
                );
            }
            _ => {
                // Look at every client's entry.
                for c in 0..n_clients {
                    check_entry(&table, &clients, c, &model, now, timeout)
                        .map_err(|e| format!("step {step}: {e}"))?;
                }
            }
        }
        if table.len() > max_entries {
            return Err(format!(
                "step {step}: {} entries, max {max_entries}",
                table.len()
            ));
        }
        // Entries held by an open connection are always there.
        let now = Instant::now();
        for c in 0..n_clients {
            if model.get(&c).is_some_and(|e| e.held > 0) {
                check_entry(&table, &clients, c, &model, now, timeout)
                    .map_err(|e| format!("step {step}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// The table's answer for client `c` against the model's.
fn check_entry(
    table: &ballast::persistence::Persistence,
    clients: &[IpAddr],
    c: usize,
    model: &HashMap<usize, Entry>,
    now: Instant,
    timeout: Duration,
) -> Result<(), String> {
    let got = table.lookup(table.key(clients[c]));
    let want = model
        .get(&c)
        .filter(|e| e.live(now, timeout))
        .and_then(|e| e.server);
    if got != want {
        return Err(format!(
            "client {c}: the table says {got:?}, want {want:?} (model {:?})",
            model.get(&c)
        ));
    }
    Ok(())
}
