//! Server health end to end: ballast in this process on 127.0.0.1, real TCP and HTTP backends that
//! the tests kill and restart on the same port, real clients. Intervals are short (50-100 ms) so
//! the whole file runs in a few seconds; every wait is bounded.
//!
//! "Killing" a TCP backend closes its listening socket (new connects are refused) and lets the
//! connections it already has finish: an L4 proxy cannot save a connection already established to
//! a server that crashes, so what checks and retries promise is that no *new* connection fails.
//! Killing an HTTP backend closes its listener and every connection it has (a crash): idempotent
//! requests in flight are retried on another server.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ballast::config::AdminState;
use ballast::runtime::Runtime;
use bytes::Bytes;
use common::killable::{tcp_exchange, time_until, Client, Killable, Kind};
use common::{start, PATIENCE};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

// === configuration ===

/// One listener `l` (tcp or http) in front of upstream `u`.
fn config(protocol: &str, scheduler: &str, upstream_extra: &str, servers: &[SocketAddr]) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|a| format!("[[upstream.server]]\naddress = \"{a}\"\nweight = 10\n"))
        .collect();
    format!(
        "[global]\nshutdown_grace = \"2s\"\n\n[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n\
         protocol = \"{protocol}\"\nupstream = \"u\"\nworkers = 2\n\n[[upstream]]\nname = \"u\"\n\
         scheduler = \"{scheduler}\"\nconnect_timeout = \"1s\"\n{upstream_extra}\n\n{}",
        list.join("\n")
    )
}

fn server(rt: &Runtime, i: usize) -> Arc<ballast::upstream::Server> {
    Arc::clone(&rt.upstream("u").expect("upstream u").snapshot().servers[i])
}

// === the kill test ===

const INTERVAL: Duration = Duration::from_millis(100);
const RISE: u32 = 2;
const FALL: u32 = 3;
/// Scheduling slack on a loaded test machine, on top of the configured bounds.
const SLACK: Duration = Duration::from_millis(150);

fn check_table(kind: &str, extra: &str) -> String {
    format!(
        "[upstream.health_check]\ntype = \"{kind}\"\ninterval = \"{}ms\"\ntimeout = \"{}ms\"\nrise = {RISE}\nfall = {FALL}\n{extra}",
        INTERVAL.as_millis(),
        INTERVAL.as_millis()
    )
}

/// Runs client loops against `addr` until `stop`; returns (successes, failures with reasons).
fn load<F, Fut>(loops: usize, stop: Arc<AtomicBool>, one: F) -> JoinHandle<(usize, Vec<String>)>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Vec<Result<String, String>>> + Send,
{
    let one = Arc::new(one);
    tokio::spawn(async move {
        let mut set = JoinSet::new();
        for _ in 0..loops {
            let (stop, one) = (Arc::clone(&stop), Arc::clone(&one));
            set.spawn(async move {
                let (mut ok, mut failed) = (0, Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    for r in one().await {
                        match r {
                            Ok(_) => ok += 1,
                            Err(e) => failed.push(e),
                        }
                    }
                }
                (ok, failed)
            });
        }
        let (mut ok, mut failed) = (0, Vec::new());
        while let Some(r) = set.join_next().await {
            let (o, f) = r.expect("client loop");
            ok += o;
            failed.extend(f);
        }
        (ok, failed)
    })
}

/// Kills backend 1 of 3 during a client loop and restarts it; checks nothing failed, and that it
/// was marked down within interval × fall and back up within interval × rise.
async fn kill_during_load(
    protocol: &str,
    bs: &mut [Killable],
    rt: &Runtime,
    stop: Arc<AtomicBool>,
    clients: JoinHandle<(usize, Vec<String>)>,
) {
    let victim = server(rt, 1);
    // Let the load run and the first checks pass.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(victim.is_usable());

    bs[1].kill();
    let detection = time_until("the killed server is marked down", || !victim.is_usable()).await;
    // Once it is down, no new connection is sent to it. A connect that picked it just before
    // (a refused connect on loopback fails within microseconds) may still be counted: let those
    // settle first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let errors_at_down = victim.stats.connect_errors.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        victim.stats.connect_errors.load(Ordering::SeqCst),
        errors_at_down,
        "{protocol}: connections were still sent to a server marked down"
    );

    bs[1].restart().await;
    let accepted_before = bs[1].accepted();
    let recovery = time_until("the restarted server is back", || victim.is_usable()).await;
    // It takes traffic again.
    time_until("the restarted server gets traffic", || {
        bs[1].accepted() > accepted_before + 3
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = clients.await.expect("clients");

    eprintln!(
        "{protocol}: detection {detection:?} (configured interval × fall = {:?}), recovery {recovery:?} \
         (interval × rise = {:?}), {ok} exchanges, {} failed",
        INTERVAL * FALL,
        INTERVAL * RISE,
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{protocol}: {} of {} failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "{protocol}: the load ran ({ok} exchanges)");
    assert!(
        detection <= INTERVAL * FALL + SLACK,
        "{protocol}: marked down after {detection:?}; configured interval × fall = {:?}",
        INTERVAL * FALL
    );
    // Checks that pass take a moment each; `rise` of them one `interval` apart.
    assert!(
        recovery <= INTERVAL * RISE + SLACK,
        "{protocol}: back after {recovery:?}; configured interval × rise = {:?}",
        INTERVAL * RISE
    );
}

#[tokio::test]
async fn tcp_server_killed_during_load_costs_no_connection_and_is_detected_in_time() {
    let mut bs = vec![
        Killable::start("b0", Kind::Tcp).await,
        Killable::start("b1", Kind::Tcp).await,
        Killable::start("b2", Kind::Tcp).await,
    ];
    let addrs: Vec<SocketAddr> = bs.iter().map(|b| b.addr).collect();
    let rt = start(&config("tcp", "rr", &check_table("tcp", ""), &addrs)).await;
    let a = common::addr(&rt);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(4, Arc::clone(&stop), move || async move {
        vec![tcp_exchange(a).await]
    });
    kill_during_load("tcp", &mut bs, &rt, stop, clients).await;
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn http_server_killed_during_load_costs_no_request_and_is_detected_in_time() {
    let mut bs = vec![
        Killable::start("b0", Kind::Http).await,
        Killable::start("b1", Kind::Http).await,
        Killable::start("b2", Kind::Http).await,
    ];
    let addrs: Vec<SocketAddr> = bs.iter().map(|b| b.addr).collect();
    let check = check_table(
        "http",
        "path = \"/health\"\nexpect_status = [200]\nexpect_body = \"ok\"\n",
    );
    let rt = start(&config("http", "rr", &check, &addrs)).await;
    let a = common::addr(&rt);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(4, Arc::clone(&stop), move || async move {
        // Twenty requests on one kept-alive client connection.
        let mut c = Client::connect(a).await;
        let mut out = Vec::with_capacity(20);
        for _ in 0..20 {
            out.push(match c.get("/", None).await {
                Ok((StatusCode::OK, body, _)) => Ok(body),
                Ok((status, body, _)) => Err(format!("{status}: {body}")),
                Err(e) => Err(e),
            });
        }
        out
    });
    kill_during_load("http", &mut bs, &rt, stop, clients).await;
    rt.shutdown(Duration::from_secs(1)).await;
}

// === operator states ===

#[tokio::test]
async fn draining_lets_an_established_connection_finish_while_new_ones_go_elsewhere() {
    let bs = [
        Killable::start("b0", Kind::Tcp).await,
        Killable::start("b1", Kind::Tcp).await,
    ];
    let rt = start(&config("tcp", "rr", "", &[bs[0].addr, bs[1].addr])).await;
    let a = common::addr(&rt);
    // A long connection on b0.
    let mut long = None;
    for _ in 0..2 {
        let s = TcpStream::connect(a).await.expect("connect");
        let mut r = BufReader::new(s);
        let mut name = String::new();
        r.read_line(&mut name).await.expect("name");
        if name.trim() == "b0" {
            long = Some(r);
        }
    }
    let mut long = long.expect("rr reached b0 within two connections");
    let up = rt.upstream("u").expect("u");
    assert!(up.set_server_state(0, AdminState::Draining, "test"));
    assert!(
        !up.set_server_state(0, AdminState::Draining, "test"),
        "no change, no event"
    );
    for _ in 0..10 {
        assert_eq!(
            tcp_exchange(a).await.as_deref(),
            Ok("b1"),
            "new connections avoid the draining server"
        );
    }
    // The established one still works both ways.
    long.get_mut()
        .write_all(b"still here\n")
        .await
        .expect("write");
    let mut echo = String::new();
    tokio::time::timeout(PATIENCE, long.read_line(&mut echo))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(echo, "still here\n");
    assert_eq!(
        server(&rt, 0).active(),
        1,
        "the long connection is counted on b0"
    );
    drop(long);

    assert!(up.set_server_state(0, AdminState::Active, "test"));
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..4 {
        *seen
            .entry(tcp_exchange(a).await.expect("exchange"))
            .or_default() += 1;
    }
    assert_eq!(seen.get("b0"), Some(&2), "back in rotation: {seen:?}");
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_server_configured_disabled_gets_nothing_and_is_not_checked() {
    let bs = [
        Killable::start("b0", Kind::Tcp).await,
        Killable::start("b1", Kind::Tcp).await,
    ];
    let text = config(
        "tcp",
        "rr",
        &check_table("tcp", ""),
        &[bs[0].addr, bs[1].addr],
    )
    .replacen("weight = 10\n", "weight = 10\nstate = \"disabled\"\n", 1);
    let rt = start(&text).await;
    let a = common::addr(&rt);
    for _ in 0..6 {
        assert_eq!(tcp_exchange(a).await.as_deref(), Ok("b1"));
    }
    // Checks of b1 connect to it; b0 sees nothing at all, not even a check.
    let b1_before = bs[1].accepted();
    time_until("b1 is checked", || bs[1].accepted() >= b1_before + 2).await;
    assert_eq!(
        bs[0].accepted(),
        0,
        "a disabled server is neither used nor checked"
    );
    rt.shutdown(Duration::from_secs(1)).await;
}

// === slow start ===

#[tokio::test]
async fn slow_start_ramps_a_recovered_server_up_measurably() {
    let mut bs = [
        Killable::start("b0", Kind::Tcp).await,
        Killable::start("b1", Kind::Tcp).await,
    ];
    let check =
        "slow_start = \"1s\"\n[upstream.health_check]\ninterval = \"50ms\"\nrise = 1\nfall = 1\n";
    let rt = start(&config("tcp", "wrr", check, &[bs[0].addr, bs[1].addr])).await;
    let a = common::addr(&rt);
    let b1 = server(&rt, 1);
    bs[1].kill();
    time_until("b1 down", || !b1.is_usable()).await;
    bs[1].restart().await;
    time_until("b1 up", || b1.is_usable()).await;

    // Share of b1 in 40 connections, and b1's weight in the snapshot, over the ramp.
    let share = |n: usize| async move {
        let mut on_b1 = 0;
        for _ in 0..n {
            if tcp_exchange(a).await.expect("exchange") == "b1" {
                on_b1 += 1;
            }
        }
        on_b1 as f64 / n as f64
    };
    let early = share(40).await;
    let mut weights = vec![b1.state.weight_permille()];
    time_until("the ramp ends", || {
        weights.push(b1.state.weight_permille());
        b1.state.weight_permille() == ballast::upstream::FULL_WEIGHT
    })
    .await;
    let late = share(40).await;
    eprintln!("slow start: b1's share {early:.2} right after recovery, {late:.2} after the ramp");
    assert!(
        early <= 0.25,
        "right after recovery b1 should get a small share: {early}"
    );
    assert!(
        (0.4..=0.6).contains(&late),
        "after the ramp b1 gets its full half: {late}"
    );
    assert!(
        weights.windows(2).all(|w| w[0] <= w[1]),
        "the weight only grows: {weights:?}"
    );
    let distinct = {
        let mut d = weights.clone();
        d.dedup();
        d.len()
    };
    assert!(distinct >= 3, "the weight grows in steps: {weights:?}");
    rt.shutdown(Duration::from_secs(1)).await;
}

// === notify ===

#[tokio::test]
async fn notify_commands_fire_with_the_server_state_and_reason() {
    let mut b = Killable::start("b0", Kind::Tcp).await;
    let other = Killable::start("b1", Kind::Tcp).await;
    let file = std::env::temp_dir().join(format!(
        "ballast-notify-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let path = file.display().to_string();
    let command = format!(
        "echo \\\"$1 $2 $3|$BALLAST_UPSTREAM $BALLAST_SERVER $BALLAST_OLD_STATE>$BALLAST_STATE|$BALLAST_REASON\\\" >> {path}"
    );
    let extra = format!(
        "notify_up = \"{command}\"\nnotify_down = \"{command}\"\nnotify_timeout = \"2s\"\n\
         [upstream.health_check]\ninterval = \"50ms\"\nrise = 1\nfall = 2\n"
    );
    let rt = start(&config("tcp", "rr", &extra, &[b.addr, other.addr])).await;
    let read = || std::fs::read_to_string(&file).unwrap_or_default();
    b.kill();
    time_until("notify_down ran", || read().lines().count() == 1).await;
    b.restart().await;
    time_until("notify_up ran", || read().lines().count() == 2).await;
    let lines: Vec<String> = read().lines().map(str::to_owned).collect();
    let addr = b.addr;
    assert_eq!(
        lines[0],
        format!("u {addr} down|u {addr} up>down|connect refused (2 checks in a row failed)")
    );
    assert_eq!(
        lines[1],
        format!("u {addr} up|u {addr} down>up|1 checks in a row passed")
    );
    let _ = std::fs::remove_file(&file);
    rt.shutdown(Duration::from_secs(1)).await;
}

// === passive checks, HTTP checks, inhibit, sorry server ===

#[tokio::test]
async fn passive_checks_eject_a_failing_server_and_active_checks_bring_it_back() {
    let bs = [
        Killable::start("b0", Kind::Http).await,
        Killable::start("b1", Kind::Http).await,
    ];
    // Long active interval: only passive checks can take b0 down quickly.
    let extra = "max_fails = 3\nfail_timeout = \"300ms\"\nretry_on = [\"http_5xx\"]\n\
                 [upstream.health_check]\ntype = \"http\"\npath = \"/health\"\ninterval = \"100ms\"\nrise = 2\nfall = 100\n";
    let rt = start(&config("http", "rr", extra, &[bs[0].addr, bs[1].addr])).await;
    let b0 = server(&rt, 0);
    let mut c = Client::connect(common::addr(&rt)).await;
    // b0 answers 500 to real requests, but its health page says ok.
    bs[0].behaviour.app_status.store(500, Ordering::SeqCst);
    for _ in 0..10 {
        let (status, body, _) = c.get("/", None).await.expect("answer");
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "name=b1"),
            "retried on b1"
        );
    }
    assert!(!b0.is_usable(), "3 consecutive 5xx ejected b0");
    let ejected = Instant::now();
    bs[0].behaviour.app_status.store(200, Ordering::SeqCst);
    time_until("b0 back", || b0.is_usable()).await;
    let back = ejected.elapsed();
    assert!(
        back >= Duration::from_millis(300),
        "down for at least fail_timeout, then rise checks: back after {back:?}"
    );
    let mut names = HashMap::new();
    for _ in 0..4 {
        let (_, body, _) = c.get("/", None).await.expect("answer");
        *names.entry(body).or_insert(0) += 1;
    }
    assert_eq!(names.get("name=b0"), Some(&2), "{names:?}");
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn passive_checks_alone_bring_a_server_back_after_fail_timeout() {
    let mut b0 = Killable::start("b0", Kind::Tcp).await;
    let b1 = Killable::start("b1", Kind::Tcp).await;
    let rt = start(&config(
        "tcp",
        "rr",
        "max_fails = 1\nfail_timeout = \"200ms\"",
        &[b0.addr, b1.addr],
    ))
    .await;
    let a = common::addr(&rt);
    let s0 = server(&rt, 0);
    b0.kill();
    for _ in 0..4 {
        assert_eq!(tcp_exchange(a).await.as_deref(), Ok("b1"));
    }
    assert!(!s0.is_usable(), "one refused connect ejected b0");
    assert_eq!(
        s0.stats.connect_errors.load(Ordering::SeqCst),
        1,
        "and it was tried once only"
    );
    b0.restart().await;
    let back = time_until("b0 back after fail_timeout", || s0.is_usable()).await;
    assert!(back <= Duration::from_millis(200) + SLACK, "{back:?}");
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn http_check_expectations_and_inhibit_on_failure_keep_bound_clients() {
    let bs = [
        Killable::start("b0", Kind::Http).await,
        Killable::start("b1", Kind::Http).await,
    ];
    let extra = "sticky_cookie = \"srv\"\ninhibit_on_failure = true\n\
                 [upstream.health_check]\ntype = \"http\"\npath = \"/health\"\nexpect_body = \"ok\"\n\
                 interval = \"50ms\"\nrise = 1\nfall = 1\n";
    let rt = start(&config("http", "rr", extra, &[bs[0].addr, bs[1].addr])).await;
    let up = rt.upstream("u").expect("u");
    let mut c = Client::connect(common::addr(&rt)).await;
    // Find b0's cookie.
    let mut cookie = None;
    for _ in 0..2 {
        let (_, body, headers) = c.get("/", None).await.expect("answer");
        if body == "name=b0" {
            let set = headers
                .get("set-cookie")
                .expect("cookie set")
                .to_str()
                .expect("text");
            cookie = set.split(';').next().map(str::to_owned);
        }
    }
    let cookie = cookie.expect("b0's cookie");
    // b0's health page degrades (503 "degraded"): inhibited, weight 0, but still listed.
    bs[0].behaviour.unhealthy.store(true, Ordering::SeqCst);
    let b0 = server(&rt, 0);
    time_until("b0 down", || !b0.is_usable()).await;
    time_until("weight 0 in the snapshot", || up.snapshot().weights[0] == 0).await;
    for _ in 0..4 {
        let (_, body, _) = c.get("/", None).await.expect("answer");
        assert_eq!(body, "name=b1", "the scheduler sends nothing new to b0");
    }
    let (_, body, _) = c.get("/", Some(&cookie)).await.expect("answer");
    assert_eq!(
        body, "name=b0",
        "a client bound to b0 by its cookie still reaches it (inhibit)"
    );
    bs[0].behaviour.unhealthy.store(false, Ordering::SeqCst);
    time_until("b0 up", || b0.is_usable()).await;
    assert_eq!(up.snapshot().weights[0], 10, "weight given back");
    rt.shutdown(Duration::from_secs(1)).await;

    // Without inhibit the same cookie no longer reaches a down server.
    let extra = extra.replace("inhibit_on_failure = true\n", "");
    let rt = start(&config("http", "rr", &extra, &[bs[0].addr, bs[1].addr])).await;
    let b0 = server(&rt, 0);
    bs[0].behaviour.unhealthy.store(true, Ordering::SeqCst);
    time_until("b0 down", || !b0.is_usable()).await;
    let mut c = Client::connect(common::addr(&rt)).await;
    let (_, body, _) = c.get("/", Some(&cookie)).await.expect("answer");
    assert_eq!(
        body, "name=b1",
        "removed: the cookie is not followed to a down server"
    );
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn sorry_server_serves_when_no_server_is_up_tcp_and_http() {
    for (protocol, kind) in [("tcp", Kind::Tcp), ("http", Kind::Http)] {
        let mut b = Killable::start("real", kind).await;
        let sorry = Killable::start("sorry", kind).await;
        let extra = format!(
            "sorry_server = \"{}\"\n[upstream.health_check]\ntype = \"tcp\"\ninterval = \"50ms\"\nrise = 1\nfall = 1\n",
            sorry.addr
        );
        let rt = start(&config(protocol, "rr", &extra, &[b.addr])).await;
        let a = common::addr(&rt);
        let fetch = || async move {
            if protocol == "tcp" {
                tcp_exchange(a).await.expect("exchange")
            } else {
                let (_, body, _) = Client::connect(a)
                    .await
                    .get("/", None)
                    .await
                    .expect("answer");
                body.trim_start_matches("name=").to_owned()
            }
        };
        assert_eq!(
            fetch().await,
            "real",
            "{protocol}: the sorry server waits while a server is up"
        );
        b.kill();
        let s = server(&rt, 0);
        time_until("the server is down", || !s.is_usable()).await;
        assert_eq!(fetch().await, "sorry", "{protocol}");
        let table = rt.summary();
        assert!(table.contains(&format!("{} [down]", b.addr)), "{table}");
        assert!(
            table.contains(&format!("{} (sorry)", sorry.addr)),
            "{table}"
        );
        b.restart().await;
        time_until("the server is up", || s.is_usable()).await;
        assert_eq!(fetch().await, "real", "{protocol}");
        rt.shutdown(Duration::from_secs(1)).await;
    }
}

// === TLS and HTTPS checks ===

/// An HTTPS server (self-signed certificate for 127.0.0.1) answering 200 `ok` to everything.
async fn tls_server() -> (SocketAddr, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "ballast-health-tls-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("cert");
    std::fs::write(dir.join("c.pem"), ck.cert.pem()).expect("write");
    std::fs::write(dir.join("c.key"), ck.key_pair.serialize_pem()).expect("write");
    let certs = [ballast::tls::CertSource {
        cert_file: dir.join("c.pem"),
        key_file: dir.join("c.key"),
        server_names: Vec::new(),
    }];
    let config = ballast::tls::server_config(&certs, &[b"http/1.1"]).expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, dir)
}

#[tokio::test]
async fn tls_and_https_checks_tell_a_tls_server_from_a_plain_one() {
    let (tls_addr, dir) = tls_server().await;
    let plain = Killable::start("plain", Kind::Tcp).await;
    let cases = [
        ("tcp", "[upstream.health_check]\ntype = \"tls\"\ninterval = \"50ms\"\nrise = 1\nfall = 1\n"),
        (
            "http",
            "tls = true\ntls_verify = false\n[upstream.health_check]\ntype = \"http\"\nexpect_body = \"ok\"\n\
             interval = \"50ms\"\nrise = 1\nfall = 1\n",
        ),
    ];
    for (protocol, extra) in cases {
        let rt = start(&config(protocol, "rr", extra, &[tls_addr, plain.addr])).await;
        let (good, bad) = (server(&rt, 0), server(&rt, 1));
        time_until("the plain server fails its TLS check", || !bad.is_usable()).await;
        // Several check rounds later the TLS server is still up.
        let accepted = plain.accepted();
        time_until("more check rounds", || plain.accepted() >= accepted + 3).await;
        assert!(good.is_usable(), "{protocol}: the TLS server passes");
        rt.shutdown(Duration::from_secs(1)).await;
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_notify_command_that_overruns_notify_timeout_is_killed() {
    let mut b = Killable::start("b0", Kind::Tcp).await;
    let other = Killable::start("b1", Kind::Tcp).await;
    let file = std::env::temp_dir().join(format!(
        "ballast-notify-pid-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    // The shell writes its pid, then becomes a 30 s sleep with the same pid.
    let extra = format!(
        "notify_down = \"echo $$ > {}; exec sleep 30\"\nnotify_timeout = \"200ms\"\n\
         [upstream.health_check]\ninterval = \"50ms\"\nrise = 1\nfall = 1\n",
        file.display()
    );
    let rt = start(&config("tcp", "rr", &extra, &[b.addr, other.addr])).await;
    b.kill();
    let mut pid = String::new();
    time_until("the command started", || {
        pid = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .trim()
            .to_owned();
        !pid.is_empty()
    })
    .await;
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    let gone = time_until("the command is killed", || !proc_dir.exists()).await;
    assert!(
        gone < Duration::from_secs(2),
        "killed after {gone:?}, not after its 30 s sleep"
    );
    let _ = std::fs::remove_file(&file);
    rt.shutdown(Duration::from_secs(1)).await;
}
