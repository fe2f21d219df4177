//! UDP load balancing end to end: ballast in this process on 127.0.0.1, real UDP servers started
//! by each test (each answers a datagram with its own name and the datagram), real clients, each
//! client socket (one source port) being one flow. A "dead" server is one whose socket was closed:
//! datagrams to it draw an ICMP port unreachable. Every wait is bounded.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ballast::runtime::Runtime;
use common::{eventually, start, PATIENCE};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;

// === servers and clients ===

/// A UDP server answering each datagram with `"{name} {datagram}"`.
struct UdpServer {
    name: String,
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl UdpServer {
    async fn start(name: &str) -> UdpServer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind server");
        let addr = socket.local_addr().expect("server addr");
        let received = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&received);
        let label = name.to_owned();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let mut reply = format!("{label} ").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = socket.send_to(&reply, peer).await;
            }
        });
        UdpServer {
            name: name.to_owned(),
            addr,
            received,
            task,
        }
    }

    /// Closes the server's socket: from now on its port answers with ICMP port unreachable.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// An address where nothing is bound.
async fn dead_addr() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    s.local_addr().expect("addr")
}

/// A client: one socket, so one flow.
async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("bind client")
}

/// Sends `msg` to `to` and returns the first word of the answer (the server's name) and where it
/// came from; `None` when nothing comes within `wait`.
async fn ask_within(
    c: &UdpSocket,
    to: SocketAddr,
    msg: &str,
    wait: Duration,
) -> Option<(String, SocketAddr)> {
    c.send_to(msg.as_bytes(), to).await.expect("send");
    let mut buf = vec![0u8; 65536];
    let (n, from) = tokio::time::timeout(wait, c.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(text.ends_with(msg), "answer {text:?} does not echo {msg:?}");
    Some((text.split(' ').next().unwrap_or_default().to_owned(), from))
}

/// As [`ask_within`], and the answer must come.
async fn ask(c: &UdpSocket, to: SocketAddr, msg: &str) -> String {
    let (name, from) = ask_within(c, to, msg, PATIENCE)
        .await
        .expect("an answer in time");
    assert_eq!(from, to, "the answer must come from the listener's address");
    name
}

/// One UDP listener `l` in front of upstream `u`.
fn config(
    scheduler: &str,
    servers: &[SocketAddr],
    listener_extra: &str,
    upstream_extra: &str,
) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|a| format!("[[upstream.server]]\naddress = \"{a}\"\n"))
        .collect();
    // Two workers unless the test says otherwise.
    let workers = if listener_extra.contains("workers") {
        ""
    } else {
        "workers = 2\n"
    };
    format!(
        "[global]\nshutdown_grace = \"1s\"\n\n[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n\
         protocol = \"udp\"\nupstream = \"u\"\n{workers}{listener_extra}\n\n[[upstream]]\n\
         name = \"u\"\nscheduler = \"{scheduler}\"\n{upstream_extra}\n{}\n",
        list.join("\n")
    )
}

fn addr(rt: &Runtime) -> SocketAddr {
    rt.listener_addr("l").expect("listener l")
}

fn flows_open(rt: &Runtime) -> u64 {
    rt.listener("l")
        .expect("l")
        .stats
        .active
        .load(Ordering::SeqCst)
}

fn flows_made(rt: &Runtime) -> u64 {
    rt.listener("l").expect("l").stats.accepted_total()
}

fn udp_stats(rt: &Runtime) -> Arc<ballast::proxy::udp::UdpStats> {
    Arc::clone(
        rt.listener("l")
            .expect("l")
            .udp
            .as_ref()
            .expect("udp stats"),
    )
}

fn server(rt: &Runtime, i: usize) -> Arc<ballast::upstream::Server> {
    Arc::clone(&rt.upstream("u").expect("upstream u").snapshot().servers[i])
}

fn counts(names: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for n in names {
        *m.entry(n.clone()).or_insert(0) += 1;
    }
    m
}

// === scheduling and flows ===

#[tokio::test]
async fn rr_spreads_flows_evenly_over_servers() {
    let s = [
        UdpServer::start("a").await,
        UdpServer::start("b").await,
        UdpServer::start("c").await,
    ];
    let addrs: Vec<SocketAddr> = s.iter().map(|s| s.addr).collect();
    let rt = start(&config("rr", &addrs, "", "")).await;
    let mut names = Vec::new();
    for i in 0..9 {
        names.push(ask(&client().await, addr(&rt), &format!("q{i}")).await);
    }
    let c = counts(&names);
    for s in &s {
        assert_eq!(
            c.get(&s.name),
            Some(&3),
            "each server takes 3 of 9 flows: {names:?}"
        );
    }
    assert_eq!(flows_made(&rt), 9);
    assert_eq!(
        server(&rt, 0).stats.connections.load(Ordering::SeqCst),
        3,
        "flows count as connections"
    );
    let summary = rt.summary();
    assert!(summary.contains("udp in 9 dgrams"), "{summary}");
}

#[tokio::test]
async fn a_flow_stays_on_its_server() {
    let s = [UdpServer::start("a").await, UdpServer::start("b").await];
    let addrs: Vec<SocketAddr> = s.iter().map(|s| s.addr).collect();
    let rt = start(&config("rr", &addrs, "", "")).await;
    let (one, two) = (client().await, client().await);
    let first = ask(&one, addr(&rt), "x").await;
    let other = ask(&two, addr(&rt), "y").await;
    assert_ne!(first, other, "rr: the second flow goes to the other server");
    for i in 0..20 {
        assert_eq!(ask(&one, addr(&rt), &format!("m{i}")).await, first);
    }
    assert_eq!(
        flows_made(&rt),
        2,
        "one flow per client, however many datagrams"
    );
    assert_eq!(flows_open(&rt), 2);
    let st = udp_stats(&rt);
    assert_eq!(st.datagrams_in.load(Ordering::SeqCst), 22);
    assert_eq!(st.datagrams_out.load(Ordering::SeqCst), 22);
}

#[tokio::test]
async fn idle_flows_expire_after_udp_timeout() {
    let s = [UdpServer::start("a").await, UdpServer::start("b").await];
    let addrs: Vec<SocketAddr> = s.iter().map(|s| s.addr).collect();
    let rt = start(&config("rr", &addrs, "udp_timeout = \"200ms\"", "")).await;
    let c = client().await;
    let first = ask(&c, addr(&rt), "x").await;
    let sent = Instant::now();
    assert_eq!(flows_open(&rt), 1);
    eventually("the flow expires", || flows_open(&rt) == 0).await;
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(180),
        "expired too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(2),
        "expired too late: {waited:?}"
    );
    assert_eq!(
        rt.listener("l")
            .expect("l")
            .stats
            .idle_timeouts
            .load(Ordering::SeqCst),
        1
    );
    // The same client again: a new flow, scheduled afresh (rr: the other server).
    let second = ask(&c, addr(&rt), "y").await;
    assert_ne!(first, second);
    assert_eq!(flows_made(&rt), 2);
}

#[tokio::test]
async fn responses_1_spreads_one_clients_queries_over_servers() {
    let s = [
        UdpServer::start("a").await,
        UdpServer::start("b").await,
        UdpServer::start("c").await,
    ];
    let addrs: Vec<SocketAddr> = s.iter().map(|s| s.addr).collect();
    let rt = start(&config("rr", &addrs, "responses = 1", "")).await;
    let c = client().await;
    let mut names = Vec::new();
    for i in 0..6 {
        names.push(ask(&c, addr(&rt), &format!("q{i}")).await);
    }
    let counts = counts(&names);
    for s in &s {
        assert_eq!(
            counts.get(&s.name),
            Some(&2),
            "one client, every query scheduled: {names:?}"
        );
    }
    eventually("answered flows close", || flows_open(&rt) == 0).await;
    assert_eq!(flows_made(&rt), 6);
    assert_eq!(udp_stats(&rt).answered.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn persistence_keeps_a_clients_new_flows_on_its_server() {
    let s = [UdpServer::start("a").await, UdpServer::start("b").await];
    let addrs: Vec<SocketAddr> = s.iter().map(|s| s.addr).collect();
    let rt = start(&config(
        "rr",
        &addrs,
        "responses = 1",
        "persistence_timeout = \"10s\"",
    ))
    .await;
    // Two clients on one address (127.0.0.1), different ports: one client for persistence.
    let (one, two) = (client().await, client().await);
    let first = ask(&one, addr(&rt), "q0").await;
    for i in 1..6 {
        let c = if i % 2 == 0 { &one } else { &two };
        assert_eq!(
            ask(c, addr(&rt), &format!("q{i}")).await,
            first,
            "every flow of 127.0.0.1 goes to {first}"
        );
    }
    assert_eq!(flows_made(&rt), 6, "responses = 1: six flows");
    let p = rt
        .upstream("u")
        .expect("u")
        .persistence
        .as_ref()
        .expect("persistence")
        .stats
        .hits
        .load(Ordering::SeqCst);
    assert_eq!(p, 5);
}

#[tokio::test]
async fn a_full_table_evicts_the_least_recently_used_flow() {
    let s = UdpServer::start("a").await;
    let rt = start(&config("rr", &[s.addr], "workers = 1\nmax_flows = 2", "")).await;
    let to = addr(&rt);
    let (a, b, c) = (client().await, client().await, client().await);
    // Distinct milliseconds, so "least recently used" is not a tie.
    let pause = || tokio::time::sleep(Duration::from_millis(20));
    ask(&a, to, "a1").await;
    pause().await;
    ask(&b, to, "b1").await;
    pause().await;
    ask(&c, to, "c1").await; // full: a (the oldest) goes
    let st = udp_stats(&rt);
    assert_eq!(st.evicted.load(Ordering::SeqCst), 1);
    assert_eq!(flows_open(&rt), 2);
    assert_eq!(flows_made(&rt), 3);
    pause().await;
    ask(&b, to, "b2").await;
    assert_eq!(flows_made(&rt), 3, "b's flow was kept");
    pause().await;
    ask(&a, to, "a2").await; // a new flow for a; c is now the least recently used
    assert_eq!((flows_made(&rt), st.evicted.load(Ordering::SeqCst)), (4, 2));
    ask(&b, to, "b3").await;
    assert_eq!(flows_made(&rt), 4, "b is still there");
    ask(&c, to, "c2").await;
    assert_eq!(flows_made(&rt), 5, "c was evicted");
    assert!(rt.summary().contains("evicted 3"), "{}", rt.summary());
}

// === dead servers ===

#[tokio::test]
async fn a_dead_server_is_found_by_the_udp_check_and_avoided() {
    let a = UdpServer::start("a").await;
    let b = UdpServer::start("b").await;
    let check = "[upstream.health_check]\ntype = \"udp\"\nsend = 'ping\\x00'\nexpect = \"ping\"\n\
                 interval = \"50ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n";
    let rt = start(&config("rr", &[a.addr, b.addr], "", check)).await;
    eventually("checks reach both servers", || {
        a.received.load(Ordering::SeqCst) > 0 && b.received.load(Ordering::SeqCst) > 0
    })
    .await;
    assert!(server(&rt, 1).is_usable());
    b.kill().await;
    eventually("the check takes b down", || !server(&rt, 1).is_usable()).await;
    for i in 0..6 {
        assert_eq!(
            ask(&client().await, addr(&rt), &format!("q{i}")).await,
            "a",
            "b is avoided"
        );
    }
    assert_eq!(server(&rt, 1).state.describe(), "down");
}

#[tokio::test]
async fn port_unreachable_is_a_passive_failure() {
    let a = UdpServer::start("a").await;
    let dead = dead_addr().await;
    let rt = start(&config(
        "rr",
        &[dead, a.addr],
        "",
        "max_fails = 1\nfail_timeout = \"10s\"",
    ))
    .await;
    let to = addr(&rt);
    // Clients until one lands on the dead server (rr: within two); it gets no answer.
    let mut unanswered = 0;
    for i in 0..2 {
        let c = client().await;
        if ask_within(&c, to, &format!("q{i}"), Duration::from_millis(300))
            .await
            .is_none()
        {
            unanswered += 1;
        }
    }
    assert_eq!(
        unanswered, 1,
        "one of the two flows went to the dead server"
    );
    let dead_server = server(&rt, 0);
    eventually("ICMP port unreachable ejects the server", || {
        !dead_server.is_usable()
    })
    .await;
    assert!(dead_server.stats.errors.load(Ordering::SeqCst) >= 1);
    assert!(udp_stats(&rt).refused.load(Ordering::SeqCst) >= 1);
    for i in 0..4 {
        assert_eq!(ask(&client().await, to, &format!("r{i}")).await, "a");
    }
    eventually("the refused flow is closed", || flows_open(&rt) == 5).await;
}

// === DNS ===

/// A minimal authoritative DNS server: answers every A question with 192.0.2.1 (RFC 1035 §4.1),
/// anything else with an empty NOERROR answer. Counts queries.
async fn dns_server() -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind dns");
    let addr = socket.local_addr().expect("addr");
    let queries = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&queries);
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let q = &buf[..n];
            if q.len() < 12 {
                continue;
            }
            // The question: labels up to the root, then QTYPE and QCLASS.
            let mut i = 12;
            while i < q.len() && q[i] != 0 {
                i += usize::from(q[i]) + 1;
            }
            let end = i + 5;
            if end > q.len() {
                continue;
            }
            count.fetch_add(1, Ordering::SeqCst);
            let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
            let answers: u16 = u16::from(qtype == 1);
            let mut r = Vec::with_capacity(end + 16);
            r.extend_from_slice(&q[..2]); // id
            r.extend_from_slice(&[0x84 | (q[2] & 0x01), 0x00]); // QR, AA, RD copied; NOERROR
            r.extend_from_slice(&[0, 1]); // QDCOUNT
            r.extend_from_slice(&answers.to_be_bytes());
            r.extend_from_slice(&[0, 0, 0, 0]);
            r.extend_from_slice(&q[12..end]);
            if answers == 1 {
                // Name: a pointer to the question's name; A, IN, TTL 60, 4 bytes.
                r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
            }
            let _ = socket.send_to(&r, peer).await;
        }
    });
    (addr, queries, task)
}

#[tokio::test]
async fn dns_round_trip_with_dig_and_a_dns_check() {
    let (dns, queries, _task) = dns_server().await;
    let check = "[upstream.health_check]\ntype = \"dns\"\nquery_name = \"health.test\"\n\
                 interval = \"50ms\"\nrise = 1\nfall = 1\n";
    let rt = start(&config("rr", &[dns], "responses = 1", check)).await;
    eventually("the dns check asks", || queries.load(Ordering::SeqCst) > 0).await;
    let port = addr(&rt).port().to_string();
    let run = tokio::process::Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port,
            "www.example.test",
            "A",
            "+short",
            "+tries=1",
            "+time=3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let out = match tokio::time::timeout(PATIENCE, run)
        .await
        .expect("dig ends in time")
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "dig is missing under CI=true; .ci/run installs bind9-dnsutils"
            );
            eprintln!(
                "SKIPPED dns_round_trip_with_dig: dig not found (apt-get install bind9-dnsutils)"
            );
            return;
        }
        Err(e) => panic!("cannot run dig: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dig failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "192.0.2.1");
    assert!(server(&rt, 0).is_usable(), "the dns check passes");
    eventually("the query's flow closed after its answer", || {
        flows_open(&rt) == 0
    })
    .await;
    assert_eq!(udp_stats(&rt).answered.load(Ordering::SeqCst), 1);
}
