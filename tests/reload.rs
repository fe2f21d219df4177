//! Reload in place: under a bounded client load, ten reloads alternating two valid
//! configurations refuse no connection and fail no exchange; established connections survive;
//! an invalid or unsupported configuration changes nothing and reports every problem. Also
//! through the real binary: SIGHUP and `ballast ctl reload`.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ballast::config::Config;
use common::killable::tcp_exchange;
use common::{Backend, PATIENCE};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Configuration A: listener `l` over `a` and `b`. B: `a` weighs 3, `c` joins, and a second
/// listener `extra` serves the same upstream.
fn config_text(
    a: SocketAddr,
    b: SocketAddr,
    c: SocketAddr,
    variant_b: bool,
    l_port: u16,
) -> String {
    let mut servers = vec![(a, if variant_b { 3 } else { 1 }), (b, 1)];
    if variant_b {
        servers.push((c, 1));
    }
    let mut text = format!(
        "[global]\nshutdown_grace = \"5s\"\n\n[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:{l_port}\"\nupstream = \"u\"\nworkers = 2\n\n[[upstream]]\nname = \"u\"\nscheduler = \"wrr\"\nconnect_timeout = \"1s\"\n\n{}",
        common::servers(&servers)
    );
    if variant_b {
        text.push_str("\n[[listener]]\nname = \"extra\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\nworkers = 1\n");
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_reloads_under_load_refuse_no_connection_and_cut_none() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    // Listener port fixed across reloads (a kept listener keeps its socket either way).
    let port = common::closed_port().await.port();
    let parse = |variant_b| {
        Config::from_str(
            &config_text(a.addr, b.addr, c.addr, variant_b, port),
            "test.toml",
        )
        .expect("valid")
    };
    let mut rt = ballast::runtime::Runtime::start(parse(false))
        .await
        .expect("starts");
    let l = rt.listener_addr("l").expect("l");

    // Long-lived connections opened before the reloads.
    let mut held = Vec::new();
    for _ in 0..4 {
        let s = TcpStream::connect(l).await.expect("connect");
        let mut r = BufReader::new(s);
        let mut name = String::new();
        r.read_line(&mut name).await.expect("name");
        held.push(r);
    }

    // The client load: 4 loops of connect + echo, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failures) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failures));
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match tcp_exchange(l).await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.lock().expect("lock").push(e),
                }
            }
        }));
    }
    let mut extra_seen = 0;
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let variant_b = i % 2 == 0;
        let summary = rt.reload(parse(variant_b)).await.expect("reload applies");
        assert_eq!(summary.listeners_kept, 1, "{summary}");
        if variant_b {
            let extra = rt.listener_addr("extra").expect("extra started");
            assert!(tcp_exchange(extra).await.is_ok(), "the new listener serves");
            extra_seen += 1;
            assert_eq!(
                rt.upstream("u").map(|u| u.snapshot().servers.len()),
                Some(3)
            );
        } else {
            assert!(rt.listener_addr("extra").is_none(), "extra stopped");
            assert_eq!(
                rt.upstream("u").map(|u| u.snapshot().servers.len()),
                Some(2)
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.await.expect("client loop");
    }
    let failures = failures.lock().expect("lock").clone();
    let done = ok.load(Ordering::Relaxed);
    eprintln!(
        "reload under load: {done} exchanges, {} failed, 10 reloads",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed exchanges during reloads: {failures:?}"
    );
    assert!(done > 50, "the load loop ran ({done} exchanges)");
    assert_eq!(extra_seen, 5);

    // The connections opened before the reloads are still alive.
    for r in &mut held {
        r.get_mut()
            .write_all(b"still there\n")
            .await
            .expect("write");
        let mut echo = String::new();
        tokio::time::timeout(PATIENCE, r.read_line(&mut echo))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(echo, "still there\n");
    }
    rt.shutdown(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_cannot_bind_is_refused_whole_and_changes_nothing() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let text = config_text(a.addr, b.addr, c.addr, false, 0);
    let mut rt = common::start(&text).await;
    let l = rt.listener_addr("l").expect("l");
    // A new server, a scheduler change and more workers (all applicable), with a new listener
    // on a port something else holds (not).
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_addr = busy.local_addr().expect("addr");
    let changed = config_text(a.addr, b.addr, c.addr, true, 0)
        .replace("scheduler = \"wrr\"", "scheduler = \"lc\"")
        .replace("workers = 2", "workers = 3")
        .replace(
            "name = \"extra\"\nbind = \"127.0.0.1:0\"",
            &format!("name = \"extra\"\nbind = \"{busy_addr}\""),
        );
    let cfg = Config::from_str(&changed, "test.toml").expect("valid");
    let problems = rt.reload(cfg).await.expect_err("refused");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("listener \"extra\"") && problems[0].contains("in use"),
        "{problems:?}"
    );
    let u = rt.upstream("u").expect("u");
    assert_eq!(u.snapshot().servers.len(), 2, "nothing changed");
    assert_eq!(u.config.scheduler.as_str(), "wrr");
    let lv = rt.listener("l").expect("l");
    assert_eq!(lv.stats.accepted.len(), 2, "still two workers");
    assert!(rt.listener_addr("extra").is_none());
    assert_eq!(rt.listener_addr("l"), Some(l));
    assert!(tcp_exchange(l).await.is_ok());
    rt.shutdown(PATIENCE).await;
}

fn ballast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ballast"))
}

fn ctl(admin: SocketAddr, args: &[&str]) -> (bool, String) {
    let out = ballast()
        .args(["ctl", "--admin", &admin.to_string()])
        .args(args)
        .env_remove("BALLAST_TOKEN")
        .output()
        .expect("ctl runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_ctl_reload_apply_the_file_and_an_invalid_file_changes_nothing() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let port = common::closed_port().await.port();
    let admin = common::closed_port().await;
    let dir = std::env::temp_dir().join(format!("ballast-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("ballast.toml");
    let with_admin = |t: String| t + &format!("\n[admin]\nbind = \"{admin}\"\n");
    std::fs::write(
        &path,
        with_admin(config_text(a.addr, b.addr, c.addr, false, port)),
    )
    .expect("write");
    let mut child = ballast()
        .args(["run", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ballast runs");
    let l = SocketAddr::from(([127, 0, 0, 1], port));
    common::killable::time_until("ballast listens", || {
        std::net::TcpStream::connect(admin).is_ok()
    })
    .await;

    // ctl reload to B.
    std::fs::write(
        &path,
        with_admin(config_text(a.addr, b.addr, c.addr, true, port)),
    )
    .expect("write");
    let (ok, out) = ctl(admin, &["reload"]);
    assert!(ok, "{out}");
    assert!(out.contains("started [extra]"), "{out}");
    let (_, list) = ctl(admin, &["list"]);
    assert!(list.contains(&c.addr.to_string()), "{list}");

    // ipvsadm -A / -D: a listener added to and removed from the running configuration.
    let extra = common::closed_port().await;
    let (ok, out) = ctl(
        admin,
        &["add-listener", "api-added", &extra.to_string(), "u"],
    );
    assert!(ok, "{out}");
    assert!(
        tcp_exchange(extra).await.is_ok(),
        "the added listener serves"
    );
    let (ok, out) = ctl(
        admin,
        &["add-listener", "api-added", &extra.to_string(), "u"],
    );
    assert!(!ok && out.contains("exists"), "{out}");
    let (ok, out) = ctl(admin, &["add-listener", "bad", "nowhere", "nope"]);
    assert!(!ok && out.contains("bind"), "{out}");
    let (ok, out) = ctl(admin, &["remove-listener", "api-added"]);
    assert!(ok, "{out}");
    assert!(
        TcpStream::connect(extra).await.is_err(),
        "the removed listener refuses"
    );
    let (ok, out) = ctl(admin, &["remove-listener", "api-added"]);
    assert!(!ok && out.contains("404"), "{out}");

    // An invalid file: every problem reported, nothing changed.
    std::fs::write(
        &path,
        "[[listener]]\nname = \"l\"\nbind = \"nowhere\"\nupstream = \"u\"\nworkers = 70000\n",
    )
    .expect("write");
    let (ok, out) = ctl(admin, &["reload"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("listener[0].bind") && out.contains("listener[0].workers"),
        "every problem: {out}"
    );
    let (_, list) = ctl(admin, &["list"]);
    assert!(list.contains(&c.addr.to_string()), "unchanged: {list}");

    // SIGHUP back to A.
    std::fs::write(
        &path,
        with_admin(config_text(a.addr, b.addr, c.addr, false, port)),
    )
    .expect("write");
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (_, list) = ctl(admin, &["list"]);
        if !list.contains(&c.addr.to_string()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(tcp_exchange(l).await.is_ok());
    let client = ballast::admin::client::Client::new(ballast::config::AdminBind::Tcp(admin), None);
    let wanted = [
        "ballast_config_reloads_total{result=\"applied\"} 2",
        "ballast_config_reloads_total{result=\"refused\"} 1",
        "ballast_config_last_reload_successful 1",
    ];
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (_, metrics) = client
            .request(http::Method::GET, "/metrics", None)
            .await
            .expect("metrics");
        let metrics = String::from_utf8_lossy(&metrics).into_owned();
        if wanted.iter().all(|w| metrics.lines().any(|l| l == *w)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{wanted:?} in\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("exits");
    assert!(status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTP listener `web` on `port` over upstream `h` (rr) with `servers`. The hourly check
/// keeps a removed server's checker, and so the server, alive: its pooled connections must be
/// closed on purpose.
fn http_config_text(port: u16, servers: &[SocketAddr]) -> String {
    let list: Vec<(SocketAddr, u32)> = servers.iter().map(|a| (*a, 1)).collect();
    format!(
        "[global]\nshutdown_grace = \"5s\"\n\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:{port}\"\nprotocol = \"http\"\nupstream = \"h\"\nworkers = 2\n\n[[upstream]]\nname = \"h\"\nscheduler = \"rr\"\nconnect_timeout = \"1s\"\n\n[upstream.health_check]\ninterval = \"1h\"\ntimeout = \"1s\"\n\n{}",
        common::servers(&list)
    )
}

/// A reload that adds a server to, then removes one from, an upstream an HTTP listener uses is
/// applied, under kept-alive load, with no failed request; the removed server's pooled
/// connections close and it gets no request after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_and_removes_servers_of_an_http_upstream_under_load() {
    use common::http_backend::{HttpBackend, Load};
    let (a, b, c) = (
        HttpBackend::start("a").await,
        HttpBackend::start("b").await,
        HttpBackend::start("c").await,
    );
    let port = common::closed_port().await.port();
    let parse = |servers: &[SocketAddr]| {
        Config::from_str(&http_config_text(port, servers), "test.toml").expect("valid")
    };
    let mut rt = ballast::runtime::Runtime::start(parse(&[a.addr, b.addr]))
        .await
        .expect("starts");
    let web = rt.listener_addr("web").expect("web");
    let load = Load::start(web, 4, 3000).await;
    load.wait_for_more(40).await;

    let summary = rt
        .reload(parse(&[a.addr, b.addr, c.addr]))
        .await
        .expect("adding a server of an HTTP upstream is applied");
    assert_eq!(summary.upstreams_changed, ["h"], "{summary}");
    common::eventually("the added server answers requests", || c.requests() >= 10).await;
    assert!(a.open() > 0, "pooled connections to a");

    let summary = rt
        .reload(parse(&[b.addr, c.addr]))
        .await
        .expect("removing a server of an HTTP upstream is applied");
    assert_eq!(summary.upstreams_changed, ["h"], "{summary}");
    let closed_after =
        common::killable::time_until("a's pooled connections are closed", || a.open() == 0).await;
    load.wait_for_more(40).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (a_requests, from) = (a.requests(), load.answered());
    load.wait_for_more(200).await;
    assert_eq!(a.requests(), a_requests, "a got requests after the reload");
    let later: Vec<String> = load.answers.lock().expect("lock")[from..].to_vec();
    assert!(
        later.iter().all(|n| n == "b" || n == "c"),
        "every later answer is b's or c's: {later:?}"
    );
    assert_eq!(a.open(), 0, "a's connections stay closed");
    let (answers, failures) = load.finish().await;
    eprintln!(
        "HTTP reloads under load: {} requests ({} a, {} b, {} c), {} failed; a's connections closed {closed_after:?} after the reload",
        answers.len(),
        a.requests(),
        b.requests(),
        c.requests(),
        failures.len()
    );
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    rt.shutdown(PATIENCE).await;
}

// === changes applied in place ===

/// Client loops of connect + echo against `addr` until stopped: how many exchanges succeeded,
/// and what failed.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, loops: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..loops)
            .map(|_| {
                let (stop, ok, failures) =
                    (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failures));
                tokio::spawn(async move {
                    // Bounded: stopped by the test, and at most 20,000 exchanges per loop.
                    for _ in 0..20_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match tcp_exchange(addr).await {
                            Ok(_) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures.lock().expect("lock").push(e),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    /// Stops the loops; (exchanges done, failures).
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("client loop");
        }
        let failures = self.failures.lock().expect("lock").clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// An established connection through ballast: reads the server's name.
async fn hold(addr: SocketAddr) -> (String, BufReader<TcpStream>) {
    let s = TcpStream::connect(addr).await.expect("connect");
    let mut r = BufReader::new(s);
    let mut name = String::new();
    r.read_line(&mut name).await.expect("name");
    (name.trim().to_owned(), r)
}

/// Asserts an established connection still relays both ways.
async fn still_relays(r: &mut BufReader<TcpStream>) {
    r.get_mut()
        .write_all(b"still there\n")
        .await
        .expect("write");
    let mut echo = String::new();
    tokio::time::timeout(PATIENCE, r.read_line(&mut echo))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(echo, "still there\n");
}

/// A UDP server that answers each datagram with its name, a space and the datagram.
async fn udp_server(name: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let mut reply = format!("{name} ").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    (addr, task)
}

fn parse(text: &str) -> Config {
    match Config::from_str(text, "test.toml") {
        Ok(c) => c,
        Err(e) => panic!("test config invalid:\n{e}\n---\n{text}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_udp_listeners_added_by_a_reload_serve() {
    let a = Backend::start("a").await;
    let web = common::killable::Killable::start("web", common::killable::Kind::Http).await;
    let (dns, dns_task) = udp_server("dns").await;
    let base = common::config("rr", &common::servers(&[(a.addr, 1)]), "", "");
    let mut rt = common::start(&base).await;
    let more = format!(
        "{base}\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"h\"\n\n\
         [[listener]]\nname = \"dns\"\nbind = \"127.0.0.1:0\"\nprotocol = \"udp\"\nupstream = \"d\"\n\n\
         [[upstream]]\nname = \"h\"\n{}\n[[upstream]]\nname = \"d\"\n{}",
        common::servers(&[(web.addr, 1)]),
        common::servers(&[(dns, 1)]),
    );
    let summary = rt.reload(parse(&more)).await.expect("reload applies");
    assert_eq!(summary.listeners_started, ["web", "dns"], "{summary}");
    assert_eq!(summary.upstreams_added, ["h", "d"], "{summary}");

    let web_addr = rt.listener_addr("web").expect("web");
    let mut client = common::killable::Client::connect(web_addr).await;
    let (status, body, _) = client.get("/", None).await.expect("HTTP answer");
    assert_eq!((status.as_u16(), body.as_str()), (200, "name=web"));

    let dns_addr = rt.listener_addr("dns").expect("dns");
    let c = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    c.send_to(b"query", dns_addr).await.expect("send");
    let mut buf = [0u8; 64];
    let (n, _) = tokio::time::timeout(PATIENCE, c.recv_from(&mut buf))
        .await
        .expect("UDP answer in time")
        .expect("recv");
    assert_eq!(&buf[..n], b"dns query");
    assert!(
        tcp_exchange(common::addr(&rt)).await.is_ok(),
        "l still serves"
    );

    // Both changed to other upstreams: new connections and new flows go there; the kept-alive
    // HTTP connection keeps the version it was accepted with.
    let web2 = common::killable::Killable::start("web2", common::killable::Kind::Http).await;
    let (dns2, dns2_task) = udp_server("dns2").await;
    let changed = format!(
        "{more}\n[[upstream]]\nname = \"h2\"\n{}\n[[upstream]]\nname = \"d2\"\n{}",
        common::servers(&[(web2.addr, 1)]),
        common::servers(&[(dns2, 1)]),
    )
    .replace("upstream = \"h\"\n", "upstream = \"h2\"\n")
    .replace("upstream = \"d\"\n", "upstream = \"d2\"\n");
    let summary = rt.reload(parse(&changed)).await.expect("reload applies");
    assert_eq!(summary.listeners_changed, ["web", "dns"], "{summary}");
    assert_eq!(rt.listener_addr("web"), Some(web_addr), "same sockets");
    let mut fresh = common::killable::Client::connect(web_addr).await;
    let (_, body, _) = fresh.get("/", None).await.expect("HTTP answer");
    assert_eq!(body, "name=web2");
    let (_, body, _) = client.get("/", None).await.expect("HTTP answer");
    assert_eq!(
        body, "name=web",
        "an established connection keeps its version"
    );
    drop((client, fresh));
    assert_eq!(rt.listener_addr("dns"), Some(dns_addr), "same address");
    // The same sockets: a new client (a new flow) goes to the new upstream at once, while the
    // first client's open flow keeps its server.
    let fresh_udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    fresh_udp.send_to(b"query", dns_addr).await.expect("send");
    let (n, _) = tokio::time::timeout(PATIENCE, fresh_udp.recv_from(&mut buf))
        .await
        .expect("UDP answer in time")
        .expect("recv");
    let answered = Some(buf[..n].to_vec());
    c.send_to(b"again", dns_addr).await.expect("send");
    let (n, _) = tokio::time::timeout(PATIENCE, c.recv_from(&mut buf))
        .await
        .expect("UDP answer in time")
        .expect("recv");
    assert_eq!(&buf[..n], b"dns again", "an open flow keeps its server");
    assert_eq!(answered.as_deref(), Some(&b"dns2 query"[..]));
    // UDP flows stay open until udp_timeout: a short grace closes them.
    rt.shutdown(Duration::from_millis(300)).await;
    dns_task.abort();
    dns2_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listeners_upstream_and_timeouts_change_under_load_without_a_failed_connection() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let upstreams = format!(
        "[[upstream]]\nname = \"old\"\nconnect_timeout = \"1s\"\n{}\n[[upstream]]\nname = \"new\"\nconnect_timeout = \"2s\"\n{}",
        common::servers(&[(a.addr, 1), (b.addr, 1)]),
        common::servers(&[(c.addr, 1)]),
    );
    let text = |upstream: &str, idle: &str, max: u32| {
        format!(
            "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\nworkers = 2\nidle_timeout = \"{idle}\"\nmax_connections = {max}\n\n{upstreams}"
        )
    };
    let mut rt = ballast::runtime::Runtime::start(parse(&text("old", "30s", 0)))
        .await
        .expect("starts");
    let l = common::addr(&rt);
    let inodes = rt.listener("l").expect("l").worker_inodes.clone();
    let (before, mut held) = hold(l).await;
    assert!(before == "a" || before == "b", "{before}");

    let load = Load::start(l, 4);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let summary = rt
        .reload(parse(&text("new", "45s", 500)))
        .await
        .expect("reload applies");
    assert_eq!(summary.listeners_changed, ["l"], "{summary}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (done, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(done > 20, "the load ran: {done}");

    let lv = rt.listener("l").expect("l");
    assert_eq!(lv.config.idle_timeout, Duration::from_secs(45));
    assert_eq!(lv.limit.max(), Some(500));
    assert_eq!(lv.worker_inodes, inodes, "the same sockets");
    assert_eq!(common::addr(&rt), l);
    for _ in 0..4 {
        assert_eq!(
            tcp_exchange(l).await.as_deref(),
            Ok("c"),
            "the new upstream serves"
        );
    }
    still_relays(&mut held).await;
    drop(held);
    rt.shutdown(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_change_is_applied_on_the_same_socket() {
    let a = Backend::start("a").await;
    let text = |backlog: u32| {
        common::config(
            "rr",
            &common::servers(&[(a.addr, 1)]),
            &format!("backlog = {backlog}"),
            "",
        )
    };
    let mut rt = common::start(&text(64)).await;
    let l = common::addr(&rt);
    let queues = |rt: &ballast::runtime::Runtime| {
        let q = rt.accept_queues().expect("sock_diag");
        q[0].workers
            .iter()
            .map(|w| (w.inode, w.max))
            .collect::<Vec<_>>()
    };
    let before = queues(&rt);
    assert!(before.iter().all(|(_, max)| *max == Some(64)), "{before:?}");
    let load = Load::start(l, 2);
    tokio::time::sleep(Duration::from_millis(150)).await;
    rt.reload(parse(&text(200))).await.expect("reload applies");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (done, failures) = load.finish().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(done > 10, "the load ran: {done}");
    let after = queues(&rt);
    let somaxconn = ballast::listener::socket::somaxconn().unwrap_or(4096);
    let want = Some(200.min(somaxconn));
    assert_eq!(after.len(), before.len());
    for ((i0, _), (i1, max)) in before.iter().zip(&after) {
        assert_eq!(i0, i1, "same socket");
        assert_eq!(*max, want, "{after:?}");
    }
    assert_eq!(common::addr(&rt), l);
    rt.shutdown(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_change_serves_on_the_new_port_and_the_old_one_drains() {
    let a = Backend::start("a").await;
    let text = |port: u16| {
        common::config("rr", &common::servers(&[(a.addr, 1)]), "", "")
            .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
    };
    let mut rt = common::start(&text(0)).await;
    let old = common::addr(&rt);
    let (_, mut held) = hold(old).await;
    let port = common::closed_port().await.port();
    let summary = rt.reload(parse(&text(port))).await.expect("reload applies");
    assert_eq!(summary.listeners_changed, ["l"], "{summary}");
    let new = common::addr(&rt);
    assert_eq!(new.port(), port);
    assert_eq!(tcp_exchange(new).await.as_deref(), Ok("a"));
    common::killable::time_until("the old port refuses", || {
        std::net::TcpStream::connect(old).is_err()
    })
    .await;
    still_relays(&mut held).await;
    drop(held);
    rt.shutdown(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_removed_and_a_scheduler_changed_apply() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let u = |scheduler: &str| {
        format!(
            "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\n\n\
             [[upstream]]\nname = \"u\"\nscheduler = \"{scheduler}\"\n{}",
            common::servers(&[(a.addr, 1), (b.addr, 1)])
        )
    };
    let both = format!(
        "{}\n[[listener]]\nname = \"m\"\nbind = \"127.0.0.1:0\"\nupstream = \"v\"\n\n[[upstream]]\nname = \"v\"\n{}",
        u("rr"),
        common::servers(&[(c.addr, 1)])
    );
    let mut rt = common::start(&both).await;
    let l = common::addr(&rt);
    let (name, mut held) = hold(rt.listener_addr("m").expect("m")).await;
    assert_eq!(name, "c");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(tcp_exchange(l).await.expect("exchange"));
    }
    assert_eq!(seen.len(), 2, "rr alternates: {seen:?}");
    let servers_before = rt.upstream("u").expect("u").snapshot().servers.clone();
    let old_v = Arc::clone(rt.upstream("v").expect("v"));

    let summary = rt.reload(parse(&u("sh"))).await.expect("reload applies");
    assert_eq!(summary.upstreams_removed, ["v"], "{summary}");
    assert_eq!(summary.upstreams_replaced, ["u"], "{summary}");
    assert_eq!(summary.listeners_stopped, ["m"], "{summary}");
    assert!(rt.upstream("v").is_none());
    let up = rt.upstream("u").expect("u");
    assert_eq!(up.config.scheduler.as_str(), "sh");
    let servers_after = up.snapshot().servers.clone();
    for (x, y) in servers_before.iter().zip(servers_after.iter()) {
        assert!(
            Arc::ptr_eq(x, y),
            "servers carried over with their counters"
        );
    }
    // sh: every connection from 127.0.0.1 goes to the same server.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        seen.insert(tcp_exchange(l).await.expect("exchange"));
    }
    assert_eq!(
        seen.len(),
        1,
        "sh keeps one client address on one server: {seen:?}"
    );
    // The removed upstream's established connection finishes normally.
    still_relays(&mut held).await;
    assert_eq!(
        old_v.snapshot().servers[0].active(),
        1,
        "still counted on the removed upstream"
    );
    drop(held);
    rt.shutdown(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_and_fewer_workers_under_load_refuse_no_connection() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let text = |workers: usize| {
        common::config("rr", &common::servers(&[(a.addr, 1), (b.addr, 1)]), "", "")
            .replace("workers = 2", &format!("workers = {workers}"))
    };
    let mut rt = common::start(&text(2)).await;
    let l = common::addr(&rt);
    let load = Load::start(l, 4);
    for workers in [4, 1, 3, 2] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        rt.reload(parse(&text(workers)))
            .await
            .expect("reload applies");
        assert_eq!(rt.listener("l").expect("l").stats.accepted.len(), workers);
    }
    // Retired workers drain after a short settle time.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (done, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(done > 20, "the load ran: {done}");
    let queues = rt.accept_queues().expect("sock_diag");
    assert_eq!(queues[0].workers.len(), 2);
    // Listening sockets on the port (state 0A in /proc/net/tcp): the retired ones closed.
    let wanted = format!(":{:04X}", l.port());
    let open = std::fs::read_to_string("/proc/net/tcp")
        .expect("/proc/net/tcp")
        .lines()
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&wanted) && f[3] == "0A"
        })
        .count();
    assert_eq!(open, 2, "retired workers' sockets closed");
    rt.shutdown(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retired_worker_serves_the_connections_queued_on_it() {
    let a = Backend::start("a").await;
    let text = |workers: usize| {
        common::config(
            "rr",
            &common::servers(&[(a.addr, 1)]),
            "max_connections = 2",
            "",
        )
        .replace("workers = 2", &format!("workers = {workers}"))
    };
    let mut rt = common::start(&text(2)).await;
    let l = common::addr(&rt);
    // The limit is full: both workers pause and new clients wait in the kernel's queues.
    let held = vec![hold(l).await.1, hold(l).await.1];
    let waiting: Vec<_> = (0..8)
        .map(|_| tokio::spawn(async move { tcp_exchange(l).await }))
        .collect();
    let queued = |rt: &ballast::runtime::Runtime| -> Vec<u32> {
        rt.accept_queues().expect("sock_diag")[0]
            .workers
            .iter()
            .map(|w| w.queue)
            .collect()
    };
    common::killable::time_until("8 clients queued", || queued(&rt).iter().sum::<u32>() == 8).await;
    let second = queued(&rt)[1];
    assert!(
        second > 0,
        "the kernel put some on the second worker's socket"
    );
    // One worker: the second is retired with connections in its queue.
    rt.reload(parse(&text(1))).await.expect("reload applies");
    // New clients all reach the worker that stays (the retired one is steered around).
    let first = 8 - second;
    let later: Vec<_> = (0..6)
        .map(|_| tokio::spawn(async move { tcp_exchange(l).await }))
        .collect();
    common::killable::time_until("6 more clients queued on worker 0", || {
        queued(&rt) == [first + 6]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    drop(held);
    for w in waiting.into_iter().chain(later) {
        let r = w.await.expect("client");
        assert_eq!(r.as_deref(), Ok("a"), "a queued client is served");
    }
    rt.shutdown(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_follow_a_reload_and_a_down_server_stays_down_while_checked() {
    let a = Backend::start("a").await;
    let dead = common::closed_port().await;
    let check =
        "[upstream.health_check]\ninterval = \"50ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n";
    let text = |with_check: bool| {
        let mut t = common::config("rr", &common::servers(&[(a.addr, 1), (dead, 1)]), "", "");
        if with_check {
            t.push_str(check);
        }
        t
    };
    let mut rt = common::start(&text(false)).await;
    let down = |rt: &ballast::runtime::Runtime| {
        let up = rt.upstream("u").expect("u");
        let s = Arc::clone(&up.snapshot().servers[1]);
        s.state
            .flags()
            .contains(ballast::upstream::StateFlags::DOWN)
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!down(&rt), "no checks yet: the dead server counts as up");
    let summary = rt.reload(parse(&text(true))).await.expect("reload applies");
    assert_eq!(summary.upstreams_replaced, ["u"], "{summary}");
    common::killable::time_until("the new check finds the dead server down", || down(&rt)).await;
    // A change that keeps the check (the scheduler): the server stays down, not reset to up.
    let wrr = |with_check| text(with_check).replace("scheduler = \"rr\"", "scheduler = \"wrr\"");
    rt.reload(parse(&wrr(true))).await.expect("reload applies");
    assert!(down(&rt), "state carried over");
    for _ in 0..4 {
        assert_eq!(tcp_exchange(common::addr(&rt)).await.as_deref(), Ok("a"));
    }
    // The check removed: nothing could bring the server back, so it counts as up again.
    rt.reload(parse(&wrr(false))).await.expect("reload applies");
    assert!(!down(&rt), "up without checks");
    rt.shutdown(PATIENCE).await;
}
