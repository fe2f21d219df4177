//! The L4 TCP proxy end to end: ballast in this process on 127.0.0.1, in front of real TCP backends,
//! driven by real clients.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ballast::runtime::ShutdownOutcome;
use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

async fn backends(n: usize) -> Vec<Backend> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(Backend::start(&format!("b{i}")).await);
    }
    v
}

fn weighted(bs: &[Backend], weights: &[u32]) -> String {
    let list: Vec<(SocketAddr, u32)> = bs.iter().zip(weights).map(|(b, w)| (b.addr, *w)).collect();
    servers(&list)
}

/// One backend named b0 behind ballast (rr), with extra listener settings.
async fn single(listener_extra: &str) -> (Vec<Backend>, ballast::runtime::Runtime) {
    let bs = backends(1).await;
    let rt = start(&config("rr", &weighted(&bs, &[1]), listener_extra, "")).await;
    (bs, rt)
}

/// Opens a connection through ballast and keeps it open; returns the stream and the backend name.
async fn hold(addr: SocketAddr) -> (BufReader<TcpStream>, String) {
    let s = TcpStream::connect(addr).await.expect("connect");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, r.read_line(&mut line))
        .await
        .expect("in time")
        .expect("read");
    (r, line.trim().to_string())
}

/// Connects from a chosen loopback source address.
async fn who_from(src: &str, addr: SocketAddr) -> String {
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind(format!("{src}:0").parse().expect("src"))
        .expect("bind source");
    let s = tokio::time::timeout(PATIENCE, sock.connect(addr))
        .await
        .expect("in time")
        .expect("connect");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, r.read_line(&mut line))
        .await
        .expect("in time")
        .expect("read");
    line.trim().to_string()
}

#[tokio::test]
async fn rr_rotates_over_all_servers_in_order() {
    let bs = backends(3).await;
    let rt = start(&config("rr", &weighted(&bs, &[1, 1, 1]), "", "")).await;
    let (seq, counts) = spread(addr(&rt), 30).await;
    for b in &bs {
        assert_eq!(counts.get(&b.name), Some(&10), "{counts:?}");
    }
    // A rotation: no server twice in a row.
    assert!(seq.windows(2).all(|w| w[0] != w[1]), "{seq:?}");
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn wrr_matches_weights_over_whole_cycles_and_interleaves() {
    let bs = backends(3).await;
    let rt = start(&config("wrr", &weighted(&bs, &[3, 2, 1]), "", "")).await;
    let (seq, counts) = spread(addr(&rt), 60).await;
    assert_eq!(counts.get("b0"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("b1"), Some(&20), "{counts:?}");
    assert_eq!(counts.get("b2"), Some(&10), "{counts:?}");
    // Interleaved: the heaviest never gets more than two in a row.
    let longest = seq
        .chunk_by(|a, b| a == b)
        .filter(|run| run[0] == "b0")
        .map(<[String]>::len)
        .max();
    assert!(longest <= Some(2), "{seq:?}");
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn weight_zero_server_gets_no_connections() {
    let bs = backends(3).await;
    let rt = start(&config("rr", &weighted(&bs, &[1, 0, 1]), "", "")).await;
    let (_, counts) = spread(addr(&rt), 20).await;
    assert_eq!(counts.get("b1"), None, "{counts:?}");
    assert_eq!(counts.get("b0"), Some(&10));
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn lc_sends_each_new_connection_to_the_least_busy_server() {
    let bs = backends(3).await;
    let rt = start(&config("lc", &weighted(&bs, &[1, 1, 1]), "", "")).await;
    let a = addr(&rt);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(hold(a).await);
    }
    let mut names: Vec<String> = held.iter().map(|(_, n)| n.clone()).collect();
    names.sort();
    assert_eq!(names, ["b0", "b1", "b2"], "one open connection per server");
    // Free the slot on one server: the next connection must go there.
    let (freed_stream, freed) = held.remove(1);
    drop(freed_stream);
    let up = rt.upstream("u").expect("upstream");
    eventually("ballast sees the close", || {
        up.snapshot()
            .servers
            .iter()
            .map(|s| s.active())
            .sum::<u64>()
            == 2
    })
    .await;
    let (_s, next) = hold(a).await;
    assert_eq!(next, freed);
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn wlc_fills_servers_in_proportion_to_weight() {
    let bs = backends(2).await;
    let rt = start(&config("wlc", &weighted(&bs, &[1, 3]), "", "")).await;
    let a = addr(&rt);
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(hold(a).await);
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (_, n) in &held {
        *counts.entry(n.clone()).or_default() += 1;
    }
    assert_eq!(counts.get("b0"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("b1"), Some(&6), "{counts:?}");
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn sh_and_mh_keep_each_client_on_one_server_and_spread_clients() {
    for sched in ["sh", "mh"] {
        let bs = backends(3).await;
        let rt = start(&config(sched, &weighted(&bs, &[1, 1, 1]), "", "")).await;
        let a = addr(&rt);
        let mut seen = HashMap::new();
        for i in 1..=24u8 {
            let src = format!("127.0.0.{i}");
            let first = who_from(&src, a).await;
            for _ in 0..3 {
                assert_eq!(
                    who_from(&src, a).await,
                    first,
                    "{sched}: client {src} moved"
                );
            }
            *seen.entry(first).or_insert(0) += 1;
        }
        assert_eq!(
            seen.len(),
            3,
            "{sched}: 24 clients should reach all 3 servers: {seen:?}"
        );
        rt.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn dh_keys_on_the_address_the_client_connected_to() {
    let bs = backends(3).await;
    let text = config("dh", &weighted(&bs, &[1, 1, 1]), "", "").replace("127.0.0.1:0", "0.0.0.0:0");
    let rt = start(&text).await;
    let port = addr(&rt).port();
    let mut seen = HashMap::new();
    for i in 1..=24u8 {
        let dst: SocketAddr = format!("127.0.0.{i}:{port}").parse().expect("dst");
        let first = who(dst).await;
        for _ in 0..2 {
            assert_eq!(who(dst).await, first, "destination {dst} moved");
        }
        *seen.entry(first).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn random_and_p2c_use_every_server() {
    for sched in ["random", "p2c"] {
        let bs = backends(3).await;
        let rt = start(&config(sched, &weighted(&bs, &[1, 1, 1]), "", "")).await;
        let (_, counts) = spread(addr(&rt), 90).await;
        for b in &bs {
            // Expected 30 each; below 10 is more than 4 standard deviations off.
            assert!(
                counts.get(&b.name).copied().unwrap_or(0) >= 10,
                "{sched}: {counts:?}"
            );
        }
        rt.shutdown(Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn refused_server_costs_clients_nothing() {
    let bs = backends(2).await;
    let dead1 = closed_port().await;
    let dead2 = closed_port().await;
    let list = [(dead1, 1), (bs[0].addr, 1), (dead2, 1), (bs[1].addr, 1)];
    let rt = start(&config("rr", &servers(&list), "", "retries = 3")).await;
    let (_, counts) = spread(addr(&rt), 40).await;
    assert_eq!(
        counts.values().sum::<usize>(),
        40,
        "every client connection was served"
    );
    assert_eq!(counts.len(), 2, "{counts:?}");
    let up = rt.upstream("u").expect("upstream");
    let snap = up.snapshot();
    assert!(snap.servers[0].stats.connect_errors.load(Ordering::Relaxed) > 0);
    assert!(snap.servers[2].stats.connect_errors.load(Ordering::Relaxed) > 0);
    assert_eq!(up.stats.no_server.load(Ordering::Relaxed), 0);
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn no_server_closes_the_client_promptly_and_is_counted() {
    let dead = closed_port().await;
    let rt = start(&config("rr", &servers(&[(dead, 1)]), "", "")).await;
    let mut s = TcpStream::connect(addr(&rt))
        .await
        .expect("connect is accepted by the kernel");
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("closed within 2 s");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    let l = rt.listener("l").expect("listener");
    eventually("no_server counted", || {
        l.stats.no_server.load(Ordering::Relaxed) == 1
    })
    .await;
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn backup_serves_only_when_no_primary_can() {
    let primary = Backend::start("primary").await;
    let backup = Backend::start("backup").await;
    let list = format!(
        "{}\n[[upstream.server]]\naddress = \"{}\"\nbackup = true\n",
        servers(&[(primary.addr, 1)]),
        backup.addr
    );
    let rt = start(&config("rr", &list, "", "")).await;
    let (_, counts) = spread(addr(&rt), 10).await;
    assert_eq!(counts.get("primary"), Some(&10), "{counts:?}");
    rt.shutdown(Duration::from_secs(1)).await;

    let dead = closed_port().await;
    let list = format!(
        "{}\n[[upstream.server]]\naddress = \"{}\"\nbackup = true\n",
        servers(&[(dead, 1)]),
        backup.addr
    );
    let rt = start(&config("rr", &list, "", "")).await;
    let (_, counts) = spread(addr(&rt), 10).await;
    assert_eq!(counts.get("backup"), Some(&10), "{counts:?}");
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn max_connections_sends_the_excess_elsewhere() {
    let bs = backends(2).await;
    let list = format!(
        "[[upstream.server]]\naddress = \"{}\"\nmax_connections = 1\n\n[[upstream.server]]\naddress = \"{}\"\n",
        bs[0].addr, bs[1].addr
    );
    let rt = start(&config("rr", &list, "", "")).await;
    let a = addr(&rt);
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(hold(a).await);
    }
    let on_b0 = held.iter().filter(|(_, n)| n == "b0").count();
    assert_eq!(on_b0, 1, "b0 holds at most one connection");
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn half_close_keeps_the_other_direction_open() {
    let (_bs, rt) = single("").await;
    let mut s = TcpStream::connect(addr(&rt)).await.expect("connect");
    s.write_all(b"hello").await.expect("write");
    s.shutdown().await.expect("send FIN");
    // After our FIN the backend still sends: its name, the echo, and "bye 5" after it saw the FIN.
    let mut all = String::new();
    tokio::time::timeout(PATIENCE, s.read_to_string(&mut all))
        .await
        .expect("in time")
        .expect("read to EOF");
    assert_eq!(all, "b0\nhellobye 5\n");
    rt.shutdown(Duration::from_secs(1)).await;
}

/// Sends 4 MB through ballast and checks every byte of the echo; returns the listener's
/// `spliced` counter.
async fn transfer_4mb(listener_extra: &str) -> u64 {
    let (_bs, rt) = single(listener_extra).await;
    let s = TcpStream::connect(addr(&rt)).await.expect("connect");
    let (mut r, mut w) = s.into_split();
    let payload: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    let expect = payload.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&payload).await.expect("write");
        w.shutdown().await.expect("fin");
    });
    let mut got = Vec::new();
    tokio::time::timeout(PATIENCE, r.read_to_end(&mut got))
        .await
        .expect("in time")
        .expect("read");
    writer.await.expect("writer");
    assert_eq!(&got[..3], b"b0\n");
    assert!(
        got[3..3 + expect.len()] == expect[..],
        "{listener_extra}: echo differs"
    );
    assert_eq!(&got[3 + expect.len()..], b"bye 4000000\n");
    let server = &rt.upstream("u").expect("u").snapshot().servers[0];
    eventually("byte counters", || {
        server.stats.bytes_to_server.load(Ordering::Relaxed) == 4_000_000
            && server.stats.bytes_from_server.load(Ordering::Relaxed) == 4_000_000 + 3 + 12
    })
    .await;
    let spliced = rt
        .listener("l")
        .expect("l")
        .stats
        .spliced
        .load(Ordering::Relaxed);
    rt.shutdown(Duration::from_secs(1)).await;
    spliced
}

#[tokio::test]
async fn large_transfer_arrives_intact_with_small_buffers() {
    assert_eq!(transfer_4mb("buffer_size = \"4KiB\"").await, 0);
}

#[tokio::test]
async fn large_transfer_arrives_intact_when_copying_with_growing_buffers() {
    assert_eq!(transfer_4mb("splice = false").await, 0);
}

#[tokio::test]
async fn large_transfer_arrives_intact_through_splice() {
    // The defaults: buffers grow while the transfer is bulk, then the directions move to pipes.
    assert!(
        transfer_4mb("").await >= 1,
        "a 4 MB stream should have moved to splice(2)"
    );
}

#[tokio::test]
async fn idle_connection_is_closed_after_idle_timeout() {
    let (_bs, rt) = single("idle_timeout = \"300ms\"").await;
    let (mut s, _) = hold(addr(&rt)).await;
    let started = tokio::time::Instant::now();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf))
        .await
        .expect("closed in time");
    common::assert_fired_after_300ms(started, "idle close");
    assert!(r.is_ok(), "{r:?}");
    let l = rt.listener("l").expect("l");
    eventually("idle timeout counted", || {
        l.stats.idle_timeouts.load(Ordering::Relaxed) == 1
    })
    .await;
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn active_connection_is_not_cut_by_idle_timeout() {
    let (_bs, rt) = single("idle_timeout = \"300ms\"").await;
    let (mut s, _) = hold(addr(&rt)).await;
    // Traffic every 100 ms for 1 s: three idle periods' worth, never idle for one.
    for i in 0..10u8 {
        s.get_mut().write_all(&[b'a' + i]).await.expect("write");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.expect("echo");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn graceful_shutdown_stops_accepting_and_lets_connections_finish() {
    let (_bs, rt) = single("").await;
    let a = addr(&rt);
    let (mut s, _) = hold(a).await;
    let shutdown = tokio::spawn(rt.shutdown(Duration::from_secs(5)));
    // New connections are refused once the listening sockets are closed.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if TcpStream::connect(a).await.is_err() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The established connection still works both ways.
    s.get_mut().write_all(b"ping").await.expect("write");
    let mut b = [0u8; 4];
    s.read_exact(&mut b).await.expect("echo");
    assert_eq!(&b, b"ping");
    s.get_mut().shutdown().await.expect("fin");
    let mut rest = String::new();
    s.read_to_string(&mut rest).await.expect("rest");
    assert_eq!(rest, "bye 4\n");
    let outcome = tokio::time::timeout(PATIENCE, shutdown)
        .await
        .expect("in time")
        .expect("join");
    assert_eq!(outcome, ShutdownOutcome::Drained);
}

#[tokio::test]
async fn shutdown_closes_what_is_left_when_grace_runs_out() {
    let (_bs, rt) = single("").await;
    let (mut s, _) = hold(addr(&rt)).await;
    let started = tokio::time::Instant::now();
    let outcome = rt.shutdown(Duration::from_millis(300)).await;
    assert_eq!(outcome, ShutdownOutcome::Aborted(1));
    assert!(started.elapsed() < Duration::from_secs(3));
    let mut buf = Vec::new();
    let r = tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf))
        .await
        .expect("in time");
    assert!(r.is_ok() || r.is_err(), "the client sees the close");
}

#[tokio::test]
async fn reuseport_workers_share_the_accepting() {
    let bs = backends(1).await;
    let rt =
        start(&config("rr", &weighted(&bs, &[1]), "", "").replace("workers = 2", "workers = 4"))
            .await;
    let (_, counts) = spread(addr(&rt), 200).await;
    assert_eq!(counts.values().sum::<usize>(), 200);
    let per_worker = rt.listener("l").expect("l").stats.accepted_per_worker();
    assert_eq!(per_worker.len(), 4);
    assert_eq!(per_worker.iter().sum::<u64>(), 200);
    // The kernel hashes each connection's 4-tuple to one of the 4 queues; 200 connections leave
    // a queue empty with probability about 4 * (3/4)^200 ≈ 1e-25.
    assert!(per_worker.iter().all(|&n| n > 0), "{per_worker:?}");
}

#[tokio::test]
async fn port_in_use_is_a_clear_error_naming_the_listener() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let bs = backends(1).await;
    let text = config("rr", &weighted(&bs, &[1]), "", "")
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let cfg = ballast::config::Config::from_str(&text, "t.toml").expect("valid");
    let err = ballast::runtime::Runtime::start(cfg)
        .await
        .expect_err("port is taken");
    let msg = err.to_string();
    assert!(msg.contains("listener \"l\""), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("address already in use"), "{msg}");
}

#[tokio::test]
async fn server_reset_is_passed_to_the_client_as_a_reset() {
    // A backend that answers one line, waits for one byte, then aborts with a RST. (Resetting
    // right after the line could discard the line in flight: a RST drops unread data.)
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let backend = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(b"rst\n").await;
            let mut b = [0u8; 1];
            let _ = s.read_exact(&mut b).await;
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            drop(s);
        }
    });
    let rt = start(&config("rr", &servers(&[(backend, 1)]), "", "")).await;
    let (mut s, name) = hold(addr(&rt)).await;
    assert_eq!(name, "rst");
    s.get_mut().write_all(b"x").await.expect("write");
    let mut buf = Vec::new();
    let r = tokio::time::timeout(PATIENCE, s.read_to_end(&mut buf))
        .await
        .expect("in time");
    let err = r.expect_err("a reset, not a clean end of stream");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    let server = &rt.upstream("u").expect("u").snapshot().servers[0];
    eventually("server error counted", || {
        server.stats.errors.load(Ordering::Relaxed) == 1
    })
    .await;
    rt.shutdown(Duration::from_secs(1)).await;
}

/// The kernel's view of an established TCP socket from /proc/net/tcp, found by its remote
/// address (and its local one when given): (timer kind, seconds until it fires).
fn proc_tcp_timer(local: Option<SocketAddr>, remote: SocketAddr) -> Option<(u8, f64)> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => String::new(),
    };
    let (l, r) = (local.map(hex), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_ok = l.as_deref().is_none_or(|l| f.get(1) == Some(&l));
        // Only established sockets (state 01): a TIME_WAIT left by an earlier connection to a
        // port number the backend now reuses is not ours.
        if !local_ok || f.get(2) != Some(&r.as_str()) || f.get(3) != Some(&"01") {
            return None;
        }
        // Field 5 is "tr:tm->when": timer kind (2 = keepalive) and clock ticks (USER_HZ = 100).
        let (tr, when) = f.get(5)?.split_once(':')?;
        let ticks = u64::from_str_radix(when, 16).ok()?;
        Some((u8::from_str_radix(tr, 16).ok()?, ticks as f64 / 100.0))
    })
}

#[tokio::test]
async fn tcp_keepalive_is_armed_on_client_and_server_sockets() {
    let bs = backends(1).await;
    let rt = start(&config(
        "rr",
        &weighted(&bs, &[1]),
        "tcp_keepalive = \"77s\"",
        "tcp_keepalive = \"55s\"",
    ))
    .await;
    let a = addr(&rt);
    let (s, _) = hold(a).await;
    let client = s.get_ref().local_addr().expect("client addr");
    // ballast's accepted socket: local = the listener, remote = our client.
    let (tr, left) = proc_tcp_timer(Some(a), client).expect("ballast's client-side socket");
    assert_eq!(tr, 2, "keepalive timer on the client-side socket");
    assert!(
        (70.0..=77.0).contains(&left),
        "client-side keepalive in {left} s"
    );
    // ballast's connection to the backend (the only socket whose remote is the backend).
    let (tr, left) = proc_tcp_timer(None, bs[0].addr).expect("ballast's server-side socket");
    assert_eq!(tr, 2, "keepalive timer on the server-side socket");
    assert!(
        (48.0..=55.0).contains(&left),
        "server-side keepalive in {left} s"
    );
    drop(s);
    rt.shutdown(Duration::from_secs(1)).await;
}
