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
async fn an_unsupported_change_is_refused_whole_and_changes_nothing() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let text = config_text(a.addr, b.addr, c.addr, false, 0);
    let mut rt = common::start(&text).await;
    let l = rt.listener_addr("l").expect("l");
    // A new server (fine) together with a scheduler change and a changed listener (not fine).
    let changed = config_text(a.addr, b.addr, c.addr, true, 0)
        .replace("scheduler = \"wrr\"", "scheduler = \"lc\"")
        .replace("workers = 2", "workers = 3");
    let cfg = Config::from_str(&changed, "test.toml").expect("valid");
    let problems = rt.reload(cfg).await.expect_err("refused");
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("upstream \"u\": settings other than its servers changed"),
        "{problems:?}"
    );
    assert!(
        problems[1].contains("listener \"l\" changed"),
        "{problems:?}"
    );
    assert_eq!(
        rt.upstream("u").map(|u| u.snapshot().servers.len()),
        Some(2),
        "nothing changed"
    );
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
