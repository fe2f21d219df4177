//! Connection limits: at `max_connections` ballast stops accepting, connections wait in the
//! kernel's accept queue (handshake done, no server bytes yet), and each connection that ends lets
//! exactly one waiting client in; nothing is accepted and then dropped. Per listener and global.
//! Then the binary: RLIMIT_NOFILE raised at start, and a warning naming the numbers when the hard
//! limit is too low.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ballast::runtime::Runtime;
use common::{eventually, start, Backend, PATIENCE};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A client connected through ballast and served: it read the backend's name line. The backend
/// keeps the connection open until the client closes it.
async fn served(addr: SocketAddr) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).await.expect("connect");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, r.read_line(&mut line))
        .await
        .expect("served in time")
        .expect("read the backend's line");
    assert!(!line.is_empty(), "closed before any server byte");
    r
}

/// `n` clients that connect (the kernel completes the handshake) and then wait for the server's
/// line. Each sends its index on `tx` once served (keeping its connection open until `hold`
/// closes), or panics the test through `Err` if it was reset or closed without a byte.
async fn waiting(
    addr: SocketAddr,
    n: usize,
    first: usize,
    tx: &mpsc::UnboundedSender<Result<usize, String>>,
    hold: &tokio_util::sync::CancellationToken,
) {
    for i in first..first + n {
        let s = tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
            .await
            .expect("the handshake completes while ballast is paused")
            .expect("connect");
        let tx = tx.clone();
        let hold = hold.clone();
        tokio::spawn(async move {
            let mut r = BufReader::new(s);
            let mut line = String::new();
            let result = match r.read_line(&mut line).await {
                Ok(n) if n > 0 => Ok(i),
                Ok(_) => Err(format!("client {i} closed without a byte")),
                Err(e) => Err(format!("client {i}: {e}")),
            };
            let _ = tx.send(result);
            // Keep the connection (and its slot) until the test releases it.
            hold.cancelled().await;
            drop(r);
        });
    }
}

/// Sum of the listener's workers' accept queues, from the kernel.
fn queued(rt: &Runtime, listener: &str) -> u32 {
    rt.accept_queues()
        .expect("sock_diag works here")
        .iter()
        .filter(|l| l.listener.as_deref() == Some(listener))
        .flat_map(|l| l.workers.iter().map(|w| w.queue))
        .sum()
}

/// Receives the next served client within `PATIENCE`.
async fn next_served(rx: &mut mpsc::UnboundedReceiver<Result<usize, String>>) -> usize {
    match tokio::time::timeout(PATIENCE, rx.recv()).await {
        Ok(Some(Ok(i))) => i,
        Ok(Some(Err(e))) => panic!("a waiting client was not served: {e}"),
        Ok(None) => panic!("channel closed"),
        Err(_) => panic!("no waiting client was served in time"),
    }
}

/// No client served within `d`.
async fn none_served(rx: &mut mpsc::UnboundedReceiver<Result<usize, String>>, d: Duration) {
    if let Ok(Some(r)) = tokio::time::timeout(d, rx.recv()).await {
        panic!("served while the limit was reached: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_connections_clients_wait_in_the_kernel_queue_and_are_served_in_turn() {
    let backend = Backend::start("b").await;
    let text = common::config(
        "rr",
        &common::servers(&[(backend.addr, 1)]),
        "max_connections = 3",
        "",
    );
    let rt = start(&text).await;
    let addr = common::addr(&rt);
    let l = rt.listener("l").expect("listener").clone();

    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(served(addr).await);
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hold = tokio_util::sync::CancellationToken::new();
    waiting(addr, 5, 0, &tx, &hold).await;

    // The five completed their handshake and wait in the kernel's queues, unaccepted.
    let deadline = Instant::now() + PATIENCE;
    while queued(&rt, "l") < 5 {
        assert!(Instant::now() < deadline, "queues: {}", queued(&rt, "l"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    none_served(&mut rx, Duration::from_millis(300)).await;
    assert_eq!(l.stats.accepted_total(), 3);
    assert_eq!(l.limit.open(), 3);
    assert_eq!(queued(&rt, "l"), 5);
    assert!(l.stats.paused.load(Ordering::Relaxed) >= 1);
    assert!(l.stats.paused_now.load(Ordering::Relaxed) >= 1);
    let table = rt.summary();
    assert!(table.contains("open 3 of 3"), "{table}");
    assert!(table.contains("refused: no_server 0, limit "), "{table}");
    // The queue is long enough for the five: the kernel dropped nothing.
    assert!(
        table.contains("dropped by the kernel (queue full) 0"),
        "{table}"
    );

    // Each connection that ends lets exactly one waiting client in.
    let mut served_now = Vec::new();
    for (k, client) in first.into_iter().enumerate() {
        drop(client);
        served_now.push(next_served(&mut rx).await);
        assert_eq!(l.stats.accepted_total(), 4 + k as u64);
        assert!(l.limit.open() <= 3);
    }
    // The remaining two get in once two of the new ones end.
    hold.cancel();
    for _ in 0..2 {
        served_now.push(next_served(&mut rx).await);
    }
    served_now.sort_unstable();
    assert_eq!(
        served_now,
        vec![0, 1, 2, 3, 4],
        "every waiting client served once"
    );
    assert_eq!(l.stats.accepted_total(), 8);
    assert_eq!(l.stats.no_server.load(Ordering::Relaxed), 0);
    eventually("accepting resumed", || {
        l.stats.paused_now.load(Ordering::Relaxed) == 0
    })
    .await;
    assert!(l.stats.paused_micros.load(Ordering::Relaxed) > 0);
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_limit_holds_across_listeners() {
    let backend = Backend::start("b").await;
    let text = format!(
        "[global]\nmax_connections = 4\nshutdown_grace = \"1s\"\n\n\
         [[listener]]\nname = \"a\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\nworkers = 1\n\n\
         [[listener]]\nname = \"b\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\nworkers = 2\n\n\
         [[upstream]]\nname = \"u\"\n\n[[upstream.server]]\naddress = \"{}\"\n",
        backend.addr
    );
    let rt = start(&text).await;
    let (a, b) = (
        rt.listener_addr("a").expect("a"),
        rt.listener_addr("b").expect("b"),
    );
    assert_eq!(rt.global_limit().max(), Some(4));
    let mut first = vec![
        served(a).await,
        served(a).await,
        served(b).await,
        served(b).await,
    ];
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hold = tokio_util::sync::CancellationToken::new();
    waiting(a, 1, 0, &tx, &hold).await;
    waiting(b, 1, 1, &tx, &hold).await;
    let deadline = Instant::now() + PATIENCE;
    while queued(&rt, "a") + queued(&rt, "b") < 2 {
        assert!(Instant::now() < deadline, "both wait in a queue");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    none_served(&mut rx, Duration::from_millis(300)).await;
    assert_eq!(rt.global_limit().open(), 4);
    let la = rt.listener("a").expect("a").clone();
    let lb = rt.listener("b").expect("b").clone();
    assert_eq!(la.stats.accepted_total() + lb.stats.accepted_total(), 4);

    // One connection of listener a ends: one waiting client (of either listener) gets in.
    drop(first.remove(0));
    let one = next_served(&mut rx).await;
    none_served(&mut rx, Duration::from_millis(200)).await;
    assert_eq!(rt.global_limit().open(), 4);
    drop(first.remove(0));
    let other = next_served(&mut rx).await;
    assert_eq!(one + other, 1, "both waiting clients served");
    assert_eq!(la.stats.accepted_total() + lb.stats.accepted_total(), 6);
    hold.cancel();
    drop(first);
    rt.shutdown(Duration::from_secs(1)).await;
}

// === the binary: RLIMIT_NOFILE ===

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn write_config(name: &str, port: u16, max_connections: u32) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ballast-limits-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("ballast.toml");
    std::fs::write(
        &path,
        format!(
            "[global]\nmax_connections = {max_connections}\nshutdown_grace = \"1s\"\n\n\
             [[listener]]\nname = \"web\"\nbind = \"127.0.0.1:{port}\"\nupstream = \"app\"\n\
             workers = 1\n\n[[upstream]]\nname = \"app\"\n\n[[upstream.server]]\n\
             address = \"127.0.0.1:9\"\n"
        ),
    )
    .expect("write config");
    path
}

/// Runs `ballast run` under `ulimit -n 4096` (hard and soft) then a soft limit of 256, until it
/// listens; returns (soft, hard) of "Max open files" from its /proc/PID/limits, and its stderr.
fn run_under_low_limits(name: &str, max_connections: u32) -> (u64, u64, String) {
    let port = free_port();
    let cfg = write_config(name, port, max_connections);
    let log = cfg.with_file_name("stderr.log");
    let script = "ulimit -n 4096 && ulimit -S -n 256 && exec \"$0\" run -c \"$1\" 2>\"$2\"";
    let mut child = Command::new("sh")
        .args(["-c", script, env!("CARGO_BIN_EXE_ballast")])
        .arg(&cfg)
        .arg(&log)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn sh");
    let deadline = Instant::now() + PATIENCE;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() >= deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ballast did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id()))
        .expect("read /proc/PID/limits");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    (nums[0], nums[1], stderr)
}

#[test]
fn the_soft_nofile_limit_is_raised_to_what_max_connections_needs() {
    // 2 × 1000 connections + 1 listening socket + 64 in reserve.
    let (soft, hard, stderr) = run_under_low_limits("raise", 1000);
    assert_eq!((soft, hard), (2065, 4096), "{stderr}");
    assert!(
        stderr.contains("raised the RLIMIT_NOFILE soft limit from 256 to 2065"),
        "{stderr}"
    );
}

#[test]
fn a_hard_nofile_limit_too_low_is_reported_with_the_numbers_and_the_fix() {
    let (soft, hard, stderr) = run_under_low_limits("short", 5000);
    assert_eq!((soft, hard), (4096, 4096), "raised as far as allowed");
    assert!(
        stderr.contains("hard limit 4096 is below the 10065 file descriptors"),
        "{stderr}"
    );
    assert!(stderr.contains("ulimit -n 10065"), "{stderr}");
    assert!(stderr.contains("LimitNOFILE=10065"), "{stderr}");

    // `ballast check` says the same before anything runs.
    let cfg = write_config("check", free_port(), 5000);
    let out = Command::new("sh")
        .args([
            "-c",
            "ulimit -n 4096 && exec \"$0\" check -c \"$1\"",
            env!("CARGO_BIN_EXE_ballast"),
        ])
        .arg(&cfg)
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("warning: RLIMIT_NOFILE hard limit 4096 is below the 10065"),
        "{stdout}"
    );
}
