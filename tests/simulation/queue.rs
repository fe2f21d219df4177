//! The upstream queue: clients arriving at seeded random times call
//! [`Upstream::select_queued`], hold their server for a random time and let go; servers are
//! drained and made active again through the admin path. Runs on tokio's paused clock, so every
//! wait is exact.
//!
//! Invariants:
//! * never more connections on a server than its `max_connections`, never more waiting than
//!   `max_queue`;
//! * first come, first served: a client never gets a server while one that arrived before it
//!   still waits (unless that one reaches its deadline at that very instant);
//! * a client that waits is served or refused by its deadline (`queue_timeout` after it came),
//!   and refused for the timeout exactly then, not before;
//! * nobody waits while a usable server has a free slot (checked whenever the clock stops);
//! * refusals are counted by reason: `full` and `timeouts` match what the clients saw.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballast::config::{AdminState, Config};
use ballast::scheduler::PickContext;
use ballast::upstream::{Refusal, Tried, Upstream};
use tokio::time::Instant;

/// What happened to a client.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Served(usize),
    Refused(Refusal),
}

#[derive(Debug, Clone, Copy)]
struct Client {
    arrived: Duration,
    arrived_seq: u64,
    resolved: Option<(Duration, u64, Outcome)>,
}

#[derive(Default)]
struct Log {
    seq: u64,
    clients: Vec<Client>,
    /// Connections open per server, as the clients count them.
    open: Vec<u64>,
    error: Option<String>,
    trace: Option<String>,
}

impl Log {
    fn fail(&mut self, why: String) {
        self.error.get_or_insert(why);
    }

    fn note(&mut self, now: Duration, what: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            let _ = writeln!(t, "{now:>10?} {}", what());
        }
    }
}

pub(crate) fn simulate(seed: u64, trace: bool) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(run(seed, trace))
}

async fn run(seed: u64, trace: bool) -> Result<(), String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let n_servers = rng.usize(1..=3);
    let max_conns: Vec<u32> = (0..n_servers).map(|_| rng.u32(1..=3)).collect();
    let max_queue = rng.usize(1..=6);
    let timeout_ms = [50u64, 200, 1000][rng.usize(0..3)];
    let scheduler = ["rr", "wrr", "lc", "wlc", "sh"][rng.usize(0..5)];
    let servers: String = max_conns
        .iter()
        .enumerate()
        .map(|(i, m)| {
            format!(
                "[[upstream.server]]\naddress = \"127.0.0.1:{}\"\nmax_connections = {m}\n",
                9000 + i
            )
        })
        .collect();
    let text = format!(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\n\
         [[upstream]]\nname = \"u\"\nscheduler = \"{scheduler}\"\nmax_queue = {max_queue}\n\
         queue_timeout = \"{timeout_ms}ms\"\n{servers}"
    );
    let mut cfg = Config::from_str(&text, "sim.toml").map_err(|e| e.to_string())?;
    let up = Arc::new(Upstream::new(cfg.upstreams.remove(0)));
    let queue = up.queue.clone().ok_or("a queue")?;
    let timeout = Duration::from_millis(timeout_ms);
    let log = Arc::new(Mutex::new(Log {
        open: vec![0; n_servers],
        trace: trace.then(String::new),
        ..Log::default()
    }));
    let start = Instant::now();
    let failed = |log: &Arc<Mutex<Log>>| {
        log.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .error
            .clone()
    };
    {
        let mut l = log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        l.note(Duration::ZERO, || {
            format!("{scheduler}, max_connections {max_conns:?}, max_queue {max_queue}, queue_timeout {timeout_ms} ms")
        });
    }

    let n_clients = rng.usize(10..80);
    let mut tasks = tokio::task::JoinSet::new();
    let mut at = Duration::ZERO;
    for id in 0..n_clients {
        // Bursts and lulls around the queue timeout.
        at += Duration::from_millis(match rng.u32(0..3) {
            0 => 0,
            1 => rng.u64(0..=timeout_ms / 4),
            _ => rng.u64(0..=timeout_ms * 2),
        });
        tokio::time::sleep_until(start + at).await;
        settle().await;
        let now = start.elapsed();
        check_quiet(&up, &queue, max_queue, &log, now);
        // Now and then the operator drains a server or makes it active again.
        if rng.u32(0..8) == 0 {
            let s = rng.usize(0..n_servers);
            let state = if rng.bool() {
                AdminState::Draining
            } else {
                AdminState::Active
            };
            up.set_server_state(s, state, "simulation");
            log.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .note(now, || format!("server {s} {state:?}"));
            settle().await;
            check_quiet(&up, &queue, max_queue, &log, start.elapsed());
        }
        let hold = Duration::from_millis(match rng.u32(0..3) {
            0 => rng.u64(0..=timeout_ms / 2),
            1 => rng.u64(0..=timeout_ms * 2),
            _ => rng.u64(timeout_ms..=timeout_ms * 4),
        });
        let client = IpAddr::V4(Ipv4Addr::new(10, 0, rng.u8(..), rng.u8(..)));
        {
            let mut l = log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            l.seq += 1;
            let seq = l.seq;
            l.clients.push(Client {
                arrived: now,
                arrived_seq: seq,
                resolved: None,
            });
            l.note(now, || format!("client {id} arrives, holds {hold:?}"));
        }
        let (up, queue, task_log) = (Arc::clone(&up), Arc::clone(&queue), Arc::clone(&log));
        let max_conns = max_conns.clone();
        tasks.spawn(async move {
            let log = task_log;
            let ctx = PickContext {
                client,
                local: IpAddr::V4(Ipv4Addr::LOCALHOST),
            };
            let r = up.select_queued(&ctx, &Tried::new()).await;
            let now = start.elapsed();
            let guard = {
                let mut l = log
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                l.seq += 1;
                let seq = l.seq;
                let outcome = match &r {
                    Ok(g) => Outcome::Served(g.index()),
                    Err(e) => Outcome::Refused(*e),
                };
                l.clients[id].resolved = Some((now, seq, outcome));
                l.note(now, || format!("client {id}: {outcome:?}"));
                if queue.len() > max_queue {
                    l.fail(format!("{} waiting, max_queue {max_queue}", queue.len()));
                }
                if let Ok(guard) = &r {
                    let s = guard.index();
                    l.open[s] += 1;
                    let active = guard.server().active();
                    let open = l.open[s];
                    if open > u64::from(max_conns[s]) || active > u64::from(max_conns[s]) {
                        l.fail(format!(
                            "server {s}: {open} open ({active} active), max_connections {}",
                            max_conns[s]
                        ));
                    }
                }
                r
            };
            let Ok(guard) = guard else { return };
            let s = guard.index();
            tokio::time::sleep(hold).await;
            {
                let mut l = log
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                l.open[s] -= 1;
                l.note(start.elapsed(), || {
                    format!("client {id} releases server {s}")
                });
            }
            drop(guard);
        });
        if let Some(e) = failed(&log) {
            return finish(&log, Err(e));
        }
    }
    while tasks.join_next().await.is_some() {}
    let result = check_history(&log, &queue, timeout);
    finish(&log, result)
}

fn finish(log: &Arc<Mutex<Log>>, result: Result<(), String>) -> Result<(), String> {
    let mut l = log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(t) = l.trace.take() {
        eprintln!("{t}");
    }
    match l.error.take() {
        Some(e) => Err(e),
        None => result,
    }
}

/// Lets every task woken at this instant run.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

/// With the clock stopped and every task run: nobody waits while a slot is free.
fn check_quiet(
    up: &Upstream,
    queue: &ballast::upstream::Queue,
    max_queue: usize,
    log: &Arc<Mutex<Log>>,
    now: Duration,
) {
    let mut l = log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if queue.len() > max_queue {
        l.fail(format!("{} waiting, max_queue {max_queue}", queue.len()));
    }
    if queue.is_empty() {
        return;
    }
    let snapshot = up.snapshot();
    for (i, s) in snapshot.servers.iter().enumerate() {
        if s.is_usable() && s.active() < u64::from(s.config.max_connections) {
            l.fail(format!(
                "at {now:?}: {} waiting while server {i} has {} of {} slots in use",
                queue.len(),
                s.active(),
                s.config.max_connections
            ));
        }
    }
}

/// First come, first served; deadlines; counters.
fn check_history(
    log: &Arc<Mutex<Log>>,
    queue: &ballast::upstream::Queue,
    timeout: Duration,
) -> Result<(), String> {
    let l = log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut full = 0;
    let mut timeouts = 0;
    for (i, c) in l.clients.iter().enumerate() {
        let Some((when, seq, outcome)) = c.resolved else {
            return Err(format!("client {i} never got an answer"));
        };
        if when > c.arrived + timeout {
            return Err(format!(
                "client {i} came at {:?}, answered at {when:?}, past its deadline",
                c.arrived
            ));
        }
        match outcome {
            Outcome::Refused(Refusal::QueueTimeout) => {
                timeouts += 1;
                if when != c.arrived + timeout {
                    return Err(format!(
                        "client {i} came at {:?}, refused for the timeout at {when:?}",
                        c.arrived
                    ));
                }
            }
            Outcome::Refused(Refusal::QueueFull) => full += 1,
            _ => {}
        }
        if let Outcome::Served(_) = outcome {
            // Nobody who came before it still waits.
            for (j, e) in l.clients[..i].iter().enumerate() {
                let Some((e_when, e_seq, e_outcome)) = e.resolved else {
                    continue;
                };
                // One that reached its deadline at the very instant the slot came free may be
                // refused either side of the other's service: a tie, not a queue jump.
                let tie = e_when == when && e_outcome == Outcome::Refused(Refusal::QueueTimeout);
                if e.arrived_seq < c.arrived_seq && e_seq > seq && !tie {
                    return Err(format!(
                        "client {i} (came at {:?}) served at {when:?} while client {j} (came at {:?}) still waited",
                        c.arrived, e.arrived
                    ));
                }
            }
        }
    }
    let counted = (
        queue.full.load(std::sync::atomic::Ordering::Relaxed),
        queue.timeouts.load(std::sync::atomic::Ordering::Relaxed),
    );
    if counted != (full, timeouts) {
        return Err(format!(
            "counted (full, timeouts) {counted:?}, clients saw ({full}, {timeouts})"
        ));
    }
    if !queue.is_empty() {
        return Err(format!("{} still waiting at the end", queue.len()));
    }
    Ok(())
}
