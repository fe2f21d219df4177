//! `ballast backlog` against sockets the tests make on 127.0.0.1: exact accept-queue lengths and
//! maxima, truncation by somaxconn (inferred for other programs, known for ballast's own
//! listeners), `--watch`, `--advise`; and SO_REUSEPORT spreading connections over every worker.
//!
//! When `net.core.somaxconn` is so high that no ballast backlog can exceed it, the truncation
//! test runs inside a network namespace of its own (somaxconn is per namespace) with somaxconn
//! lowered to 128; that needs root and `ip`. `BALLAST_TEST_NETNS=1` forces that path. The test
//! of the fallback without netlink uses `strace` to make the netlink socket(2) call fail.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use socket2::{Domain, Protocol, Socket, Type};

const PATIENCE: Duration = Duration::from_secs(15);

fn ballast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ballast"))
}

/// Runs `ballast backlog ARGS --json` (through `wrap`, e.g. `ip netns exec`) and parses it.
fn backlog_json(wrap: &[&str], args: &[&str]) -> Value {
    let out = if let Some((program, rest)) = wrap.split_first() {
        Command::new(program)
            .args(rest)
            .arg(env!("CARGO_BIN_EXE_ballast"))
            .arg("backlog")
            .args(args)
            .arg("--json")
            .output()
    } else {
        ballast().arg("backlog").args(args).arg("--json").output()
    }
    .expect("run ballast backlog");
    assert!(
        out.status.success(),
        "ballast backlog failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("read somaxconn")
        .trim()
        .parse()
        .expect("a number")
}

/// A listener on 127.0.0.1 with this backlog that never accepts.
fn silent_listener(backlog: i32) -> (Socket, SocketAddr) {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    s.bind(&any.into()).expect("bind");
    s.listen(backlog).expect("listen");
    let addr = s
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet address");
    (s, addr)
}

/// The sockets of a report on `addr`.
fn sockets_on(report: &Value, addr: SocketAddr) -> Vec<Value> {
    report["sockets"]
        .as_array()
        .expect("sockets array")
        .iter()
        .filter(|s| s["local"] == addr.to_string())
        .cloned()
        .collect()
}

#[test]
fn a_full_accept_queue_is_reported_with_its_exact_length_and_max() {
    let backlog = 5;
    let (listener, addr) = silent_listener(backlog);
    // The accept queue holds backlog + 1 connections; further connects get no SYN-ACK (the
    // kernel drops their SYNs) and time out here.
    let mut clients = Vec::new();
    for i in 0..backlog + 3 {
        let room = i <= backlog;
        let wait = if room {
            PATIENCE
        } else {
            Duration::from_millis(300)
        };
        match TcpStream::connect_timeout(&addr, wait) {
            Ok(c) => {
                assert!(room, "connect {i} got through a full queue");
                clients.push(c);
            }
            Err(e) => assert!(!room, "connect {i} failed early: {e}"),
        }
    }
    assert_eq!(clients.len(), 6, "the queue took backlog + 1 connections");

    let port = addr.port().to_string();
    let report = backlog_json(&[], &["--port", &port]);
    let found = sockets_on(&report, addr);
    assert_eq!(found.len(), 1, "{report:#}");
    let s = &found[0];
    assert_eq!(s["queue"], 6, "{s:#}");
    assert_eq!(s["max"], 5, "{s:#}");
    // 5 < somaxconn: the maximum is the request itself.
    assert_eq!(s["truncated"], "no", "{s:#}");
    assert_eq!(s["processes"][0]["pid"], std::process::id(), "{s:#}");
    assert!(report["host"]["somaxconn"].is_u64(), "{report:#}");
    assert!(
        report["counters"]["listen_overflows"].is_u64(),
        "{report:#}"
    );

    // The text table shows the same, and --advise calls the queue full.
    let out = ballast()
        .args(["backlog", "--advise", "--port", &port])
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with(&addr.to_string()))
        .unwrap_or_else(|| panic!("no row for {addr}: {text}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[1..4], ["6", "5", "no"], "{text}");
    let me = std::process::id();
    assert!(
        text.contains(&format!(", pid {me}): the accept queue is full (6 of 5)")),
        "{text}"
    );
    assert!(text.contains(&format!("port {port} (")), "{text}");
    drop(clients);
    drop(listener);
}

#[test]
fn watch_prints_one_sample_per_interval_with_counter_deltas() {
    let (_listener, addr) = silent_listener(1);
    let started = Instant::now();
    let out = ballast()
        .args(["backlog", "--json", "--watch", "0.2", "--count", "2"])
        .args(["--port", &addr.port().to_string()])
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(started.elapsed() < PATIENCE);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for line in lines {
        let v: Value = serde_json::from_str(line).expect("one JSON document per line");
        let secs = v["interval_secs"].as_f64().expect("interval");
        assert!((0.15..5.0).contains(&secs), "{secs}");
        assert!(v["delta"]["listen_overflows"].is_u64(), "{v:#}");
        assert_eq!(sockets_on(&v, addr).len(), 1, "{v:#}");
    }
}

#[test]
fn a_backlog_above_somaxconn_from_another_program_is_at_the_cap() {
    let cap = somaxconn();
    let Ok(asked) = i32::try_from(u64::from(cap) + 1) else {
        eprintln!("SKIPPED: net.core.somaxconn is {cap}; listen(2) cannot ask for more");
        return;
    };
    let (_listener, addr) = silent_listener(asked);
    let report = backlog_json(&[], &["--port", &addr.port().to_string()]);
    let found = sockets_on(&report, addr);
    assert_eq!(found.len(), 1, "{report:#}");
    assert_eq!(found[0]["max"], cap);
    assert_eq!(found[0]["queue"], 0);
    // The kernel kept only the capped value: ballast says "maybe", not "yes".
    assert_eq!(found[0]["truncated"], "at_cap");
    assert_eq!(found[0]["requested_backlog"], Value::Null);
}

/// A network namespace of the test's own with `net.core.somaxconn` = 128, deleted on drop.
struct Netns(String);

impl Netns {
    const SOMAXCONN: u32 = 128;

    fn new() -> Netns {
        let name = format!("ballast-backlog-{}", std::process::id());
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().expect("run ip");
            assert!(st.success(), "ip {args:?} failed");
        };
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ip(&["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"]);
        ip(&[
            "netns",
            "exec",
            &ns.0,
            "sh",
            "-c",
            &format!("echo {} > /proc/sys/net/core/somaxconn", Netns::SOMAXCONN),
        ]);
        ns
    }

    fn wrap(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.0]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Kills the child if the test fails half way.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_ballast_backlog_above_somaxconn_is_reported_as_truncated_with_the_request() {
    let host_cap = somaxconn();
    let forced = std::env::var("BALLAST_TEST_NETNS").is_ok_and(|v| v == "1");
    let is_root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    // ballast accepts backlogs up to 65535; above that somaxconn cannot truncate one, so lower
    // it in a namespace of our own.
    let netns = if forced || host_cap >= 65535 {
        if !is_root {
            eprintln!(
                "SKIPPED: net.core.somaxconn is {host_cap} and lowering it in a network \
                 namespace needs root"
            );
            assert!(std::env::var("CI").is_err(), "a skip is a failure in CI");
            return;
        }
        Some(Netns::new())
    } else {
        None
    };
    let cap = netns.as_ref().map_or(host_cap, |_| Netns::SOMAXCONN);
    let asked = cap + 1;
    let wrap: Vec<&str> = netns
        .as_ref()
        .map(|n| n.wrap().to_vec())
        .unwrap_or_default();

    let dir = std::env::temp_dir().join(format!("ballast-backlog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let cfg = dir.join("ballast.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:{port}\"\nupstream = \"app\"\n\
             backlog = {asked}\nworkers = 2\n\n[[upstream]]\nname = \"app\"\n\n\
             [[upstream.server]]\naddress = \"127.0.0.1:9\"\n"
        ),
    )
    .expect("write config");
    let mut run = match wrap.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(env!("CARGO_BIN_EXE_ballast"));
            c
        }
        None => ballast(),
    };
    let child = Guard(
        run.args(["run", "-c"])
            .arg(&cfg)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ballast run"),
    );

    let port_s = port.to_string();
    let deadline = Instant::now() + PATIENCE;
    let report = loop {
        let r = backlog_json(&wrap, &["--own", "--port", &port_s]);
        // Both workers: ballast binds its sockets one after the other.
        if r["ballast"][0]["workers"].as_array().map(Vec::len) == Some(2) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "ballast's listener never showed: {r:#}"
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(report["host"]["somaxconn"], cap, "{report:#}");
    let sockets = report["sockets"].as_array().expect("sockets");
    assert_eq!(sockets.len(), 2, "one socket per worker: {report:#}");
    for (i, s) in sockets.iter().enumerate() {
        assert_eq!(s["truncated"], "yes", "{s:#}");
        assert_eq!(s["requested_backlog"], asked, "{s:#}");
        assert_eq!(s["max"], cap, "{s:#}");
        assert_eq!(s["ballast"]["listener"], "web", "{s:#}");
        let worker = s["ballast"]["worker"].as_u64().expect("worker");
        assert!(worker < 2, "{s:#} ({i})");
    }
    let l = &report["ballast"][0];
    assert_eq!(l["listener"], "web", "{l:#}");
    assert_eq!(l["requested_backlog"], asked);
    assert_eq!(l["truncated"], "yes");
    assert_eq!(l["workers"].as_array().map(Vec::len), Some(2), "{l:#}");
    assert_eq!(l["config"], cfg.display().to_string());
    if netns.is_none() {
        // (`ip netns exec` execs in place, but only the direct case is certain of the pid.)
        assert_eq!(l["pid"], child.0.id(), "{l:#}");
    }

    // --advise names the port, both numbers and the sysctl to raise.
    let mut advise = match wrap.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(env!("CARGO_BIN_EXE_ballast"));
            c
        }
        None => ballast(),
    };
    let out = advise
        .args(["backlog", "--own", "--advise", "--port", &port_s])
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "port {port} (ballast listener \"web\", pid {}) asks for backlog {asked} but \
             net.core.somaxconn is {cap}",
            l["pid"]
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("sysctl -w net.core.somaxconn={asked}")),
        "{text}"
    );
    // Per worker: both SO_REUSEPORT sockets, each with its own (empty) queue.
    assert!(
        text.contains(&format!(
            "\"web\" 127.0.0.1:{port}: 2 workers, backlog {asked}, max {cap} (truncated by \
             somaxconn)"
        )),
        "{text}"
    );
    assert!(text.contains("    queues: 0 0\n"), "{text}");
    drop(child);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn so_reuseport_spreads_connections_over_every_worker() {
    let backend = common::Backend::start("b").await;
    let workers = 4;
    let text = common::config(
        "rr",
        &common::servers(&[(backend.addr, 1)]),
        "backlog = 64",
        "",
    )
    .replace("workers = 2", &format!("workers = {workers}"));
    let rt = common::start(&text).await;
    let addr = common::addr(&rt);
    // Every connection comes from a new ephemeral source port, so the kernel's reuseport hash
    // spreads them; with 4 workers and 200 connections, a worker left out has odds of
    // 4 * (3/4)^200, about 1e-25.
    let n = 200;
    for _ in 0..n {
        assert_eq!(common::who(addr).await, "b");
    }
    let queues = rt.accept_queues().expect("sock_diag works here");
    let l = queues
        .iter()
        .find(|l| l.listener.as_deref() == Some("l"))
        .expect("listener l");
    assert_eq!(l.workers.len(), workers);
    assert_eq!(l.requested_backlog, Some(64));
    let accepted: Vec<u64> = l.workers.iter().map(|w| w.accepted.unwrap_or(0)).collect();
    assert_eq!(accepted.iter().sum::<u64>(), n, "{accepted:?}");
    assert!(
        accepted.iter().all(|a| *a > 0),
        "every worker accepted some: {accepted:?}"
    );
    let effective = somaxconn().min(64);
    for w in &l.workers {
        assert_ne!(w.inode, 0, "{w:?}");
        assert_eq!(w.max, Some(effective), "{w:?}");
        assert_eq!(w.queue, 0, "all accepted: {w:?}");
    }
    // The same spread, per worker, in the counters ballast keeps.
    let stats = rt.listener("l").expect("l").stats.accepted_per_worker();
    assert_eq!(stats, accepted);
    rt.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn without_netlink_the_queues_come_from_proc_net_tcp_and_the_report_says_so() {
    // strace makes the first socket(2) call (the netlink one) fail with EPERM, as a sandbox
    // that forbids netlink would.
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("SKIPPED: strace is not installed");
        assert!(std::env::var("CI").is_err(), "a skip is a failure in CI");
        return;
    }
    let (listener, addr) = silent_listener(4);
    let _client = TcpStream::connect(addr).expect("connect");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=socket"])
        .args(["-e", "inject=socket:error=EPERM:when=1"])
        .arg(env!("CARGO_BIN_EXE_ballast"))
        .args(["backlog", "--json", "--port", &addr.port().to_string()])
        .output()
        .expect("run strace");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let found = sockets_on(&report, addr);
    assert_eq!(found.len(), 1, "{report:#}");
    assert_eq!(found[0]["queue"], 1, "{report:#}");
    assert_eq!(found[0]["max"], Value::Null, "{report:#}");
    assert_eq!(found[0]["truncated"], "unknown", "{report:#}");
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("sock_diag") && notes.contains("not permitted"),
        "{notes}"
    );
    assert!(notes.contains("/proc/net/tcp"), "{notes}");
    drop(listener);
}
