//! Ten reloads (`ballast ctl reload`, alternating two valid files) and then a binary upgrade (a
//! second ballast process takes the listening sockets over through the upgrade socket,
//! SCM_RIGHTS), all while TCP and HTTP clients keep connecting: no connection is refused, no
//! exchange or request fails, and a connection the old process holds finishes on it.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ballast::admin::client::Client;
use ballast::config::AdminBind;
use common::killable::{tcp_exchange, Killable, Kind};
use common::{Backend, PATIENCE};
use http::Method;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(config: &std::path::Path, socket: &std::path::Path, takeover: bool) -> Proc {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ballast"));
    c.args(["run", "-c"])
        .arg(config)
        .arg("--upgrade-socket")
        .arg(socket);
    if takeover {
        c.arg("--takeover");
    }
    Proc(
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ballast runs"),
    )
}

async fn admin_pid(admin: SocketAddr) -> Option<u64> {
    let client = Client::new(AdminBind::Tcp(admin), None);
    let (_, body) = client
        .request(Method::GET, "/api/v1/status", None)
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    v["pid"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_reloads_and_a_binary_upgrade_under_load_fail_nothing() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let port = common::closed_port().await.port();
    let admin = common::closed_port().await;
    let dir = std::env::temp_dir().join(format!("ballast-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("ballast.toml");
    let socket = dir.join("upgrade.sock");
    let h = Killable::start("h", Kind::Http).await;
    let web_port = common::closed_port().await.port();
    let text = |variant_b: bool| {
        let mut servers = vec![(a.addr, if variant_b { 3 } else { 1 }), (b.addr, 1)];
        if variant_b {
            servers.push((c.addr, 1));
        }
        format!(
            "[global]\nshutdown_grace = \"10s\"\n\n[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:{port}\"\nupstream = \"u\"\nworkers = 2\n\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:{web_port}\"\nprotocol = \"http\"\nupstream = \"h\"\nworkers = 1\n\n[[upstream]]\nname = \"u\"\nscheduler = \"wrr\"\n\n{}\n[[upstream]]\nname = \"h\"\n[[upstream.server]]\naddress = \"{}\"\nweight = {}\n\n[admin]\nbind = \"{admin}\"\n",
            common::servers(&servers),
            h.addr,
            if variant_b { 2 } else { 1 }
        )
    };
    std::fs::write(&config, text(false)).expect("write config");
    let l = SocketAddr::from(([127, 0, 0, 1], port));

    let mut old = run(&config, &socket, false);
    let old_pid = u64::from(old.0.id());
    common::killable::time_until("the old process serves", || socket.exists()).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while admin_pid(admin).await != Some(old_pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old process's admin API"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A connection the old process holds through the upgrade.
    let held = TcpStream::connect(l).await.expect("connect");
    let mut held = BufReader::new(held);
    let mut name = String::new();
    held.read_line(&mut name).await.expect("name");

    // Client load.
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
    let web = SocketAddr::from(([127, 0, 0, 1], web_port));
    for _ in 0..2 {
        let (stop, ok, failures) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failures));
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // A new connection per request, so refused connections would show.
                let mut c = common::killable::Client::connect(web).await;
                match c.get("/", None).await {
                    Ok((s, _, _)) if s == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((s, _, _)) => failures.lock().expect("lock").push(format!("HTTP {s}")),
                    Err(e) => failures.lock().expect("lock").push(e),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Ten reloads, alternating two valid files, through `ballast ctl reload`.
    for i in 0..10 {
        std::fs::write(&config, text(i % 2 == 0)).expect("write config");
        let out = Command::new(env!("CARGO_BIN_EXE_ballast"))
            .args(["ctl", "--admin", &admin.to_string(), "reload"])
            .env_remove("BALLAST_TOKEN")
            .output()
            .expect("ctl runs");
        assert!(
            out.status.success(),
            "reload {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let new = run(&config, &socket, true);
    let new_pid = u64::from(new.0.id());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while admin_pid(admin).await != Some(new_pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new process's admin API"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The old process is draining: its held connection still works.
    held.get_mut()
        .write_all(b"through the upgrade\n")
        .await
        .expect("write");
    let mut echo = String::new();
    tokio::time::timeout(PATIENCE, held.read_line(&mut echo))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(echo, "through the upgrade\n");
    assert!(
        old.0.try_wait().expect("wait").is_none(),
        "the old process waits for its connection"
    );
    drop(held);
    let deadline = std::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(s) = old.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old process did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        status.success(),
        "the old process exits cleanly: {status:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client loop");
    }
    let failures = failures.lock().expect("lock").clone();
    let done = ok.load(Ordering::Relaxed);
    eprintln!(
        "10 reloads and a binary upgrade under load: {done} TCP exchanges and HTTP requests, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed exchanges during the upgrade: {failures:?}"
    );
    assert!(done > 20, "the load ran ({done})");
    assert!(tcp_exchange(l).await.is_ok(), "the new process serves");
    assert!(socket.exists(), "the new process serves the next upgrade");
    drop(new);
    let _ = std::fs::remove_dir_all(&dir);
}
