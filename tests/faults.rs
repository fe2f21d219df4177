//! Faults injected into a running ballast, with real backends and bounded client loops, and
//! what each costs the clients. The promise under test: no idempotent request fails while a
//! healthy server remains, and no VRRP split brain.
//!
//! | fault | how it is injected | test |
//! |---|---|---|
//! | server frozen | SIGSTOP of a backend process (python3): connects still complete into its backlog | `frozen_*` |
//! | network partition | the backend's veth link taken down inside its network namespace | `partitioned_*` |
//! | disk full | the access log on a small tmpfs, filled up | `a_full_disk_*` |
//! | lying VRRP peer | crafted adverts from a second namespace | `lying_vrrp_peer_*` |
//! | unresolvable server name | a host name in `address` | `a_server_host_name_*` |
//! | server killed | — | already in `tests/health.rs` (`*_server_killed_during_load_*`) |
//!
//! The tests take one lock so their timings are not disturbed by each other. Those that need
//! root (namespaces, a tmpfs mount) or python3 are skipped with a loud message elsewhere; with
//! `CI=true` a skip is a failure.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader as StdBufReader, Read as _};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use ballast::runtime::Runtime;
use common::killable::{time_until, Client, Killable, Kind};
use common::netns::{in_ns, sh};
use common::{start, PATIENCE};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// One test at a time: detection times need the CPU.
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Health checks: every 100 ms, 200 ms to answer, two in a row to change state.
const INTERVAL: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_millis(200);
const RISE: u32 = 2;
const FALL: u32 = 2;
/// Scheduling slack on a loaded 2-core machine, on top of the configured bounds.
const SLACK: Duration = Duration::from_millis(500);

/// The longest a failing server may stay up: the next check is at most one interval away, then
/// `FALL` checks that each time out, `fast_interval` (= interval) apart.
fn detection_bound() -> Duration {
    INTERVAL * FALL + TIMEOUT * FALL + SLACK
}

/// The longest a recovered server may stay down: `RISE` passing checks, an interval apart.
fn recovery_bound() -> Duration {
    INTERVAL * (RISE + 1) + TIMEOUT + SLACK
}

fn check_table() -> String {
    format!(
        "[upstream.health_check]\ntype = \"http\"\npath = \"/health\"\ninterval = \"{}ms\"\n\
         timeout = \"{}ms\"\nrise = {RISE}\nfall = {FALL}\n",
        INTERVAL.as_millis(),
        TIMEOUT.as_millis()
    )
}

/// One listener `l` (`protocol`) in front of upstream `u`, round robin over `servers`.
fn config(protocol: &str, upstream_extra: &str, servers: &[SocketAddr]) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|a| format!("[[upstream.server]]\naddress = \"{a}\"\n"))
        .collect();
    format!(
        "[global]\nshutdown_grace = \"1s\"\n\n[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n\
         protocol = \"{protocol}\"\nupstream = \"u\"\nworkers = 2\n\n[[upstream]]\nname = \"u\"\n\
         scheduler = \"rr\"\n{upstream_extra}\n{}\n{}",
        check_table(),
        list.join("\n")
    )
}

fn server(rt: &Runtime, i: usize) -> Arc<ballast::upstream::Server> {
    Arc::clone(&rt.upstream("u").expect("upstream u").snapshot().servers[i])
}

/// Whether a test needing `needs` can run here; a skip is loud, and fatal under CI.
fn can_run(what: &str, root: bool, python: bool) -> bool {
    let why = if root && !nix::unistd::Uid::effective().is_root() {
        Some("not root (network namespaces and mounts need it)")
    } else if root && Command::new("ip").arg("-V").output().is_err() {
        Some("iproute2 (`ip`) is not installed")
    } else if python && Command::new("python3").arg("-V").output().is_err() {
        Some("python3 is not installed (the frozen backend is a python3 process)")
    } else {
        None
    };
    let Some(why) = why else {
        return true;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "fault test {what} cannot run under CI: {why}"
    );
    eprintln!("\n*** SKIPPED: fault test {what}: {why} ***\n");
    false
}

// === client loops ===

/// What the client loops saw: successes, and each failure with when its attempt started.
#[derive(Default)]
struct Tally {
    ok: usize,
    failed: Vec<(Instant, String)>,
}

/// Runs `loops` client loops until `stop` (each at most 100,000 attempts).
fn load<F, Fut>(loops: usize, stop: Arc<AtomicBool>, one: F) -> JoinHandle<Tally>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Vec<(Instant, Result<String, String>)>> + Send,
{
    let one = Arc::new(one);
    tokio::spawn(async move {
        let mut set = JoinSet::new();
        for _ in 0..loops {
            let (stop, one) = (Arc::clone(&stop), Arc::clone(&one));
            set.spawn(async move {
                let mut t = Tally::default();
                for _ in 0..100_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    for (at, r) in one().await {
                        match r {
                            Ok(_) => t.ok += 1,
                            Err(e) => t.failed.push((at, e)),
                        }
                    }
                }
                t
            });
        }
        let mut all = Tally::default();
        while let Some(r) = set.join_next().await {
            let t = r.expect("client loop");
            all.ok += t.ok;
            all.failed.extend(t.failed);
        }
        all
    })
}

/// Ten GETs on one kept-alive client connection to `addr`.
async fn http_burst(addr: SocketAddr) -> Vec<(Instant, Result<String, String>)> {
    let mut c = Client::connect(addr).await;
    let mut out = Vec::with_capacity(10);
    for _ in 0..10 {
        let at = Instant::now();
        out.push((
            at,
            match c.get("/", None).await {
                Ok((StatusCode::OK, body, _)) => Ok(body),
                Ok((status, body, _)) => Err(format!("{status}: {body}")),
                Err(e) => Err(e),
            },
        ));
    }
    out
}

/// One `GET /` with `Connection: close` over a plain TCP connection (through an L4 listener),
/// answered within 1 s.
async fn tcp_get(addr: SocketAddr) -> Vec<(Instant, Result<String, String>)> {
    let at = Instant::now();
    let exchange = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut all = String::new();
        s.read_to_string(&mut all)
            .await
            .map_err(|e| format!("read: {e}"))?;
        match all.split_once("name=") {
            Some((_, name)) => Ok(name.to_owned()),
            None => Err(format!("answer was {all:?}")),
        }
    };
    let r = tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer within 1 s".to_owned()));
    vec![(at, r)]
}

// === a backend process that can be frozen ===

/// An HTTP/1.1 backend in a python3 process of its own (so SIGSTOP freezes it and nothing
/// else): `/health` answers `ok`, anything else `name=NAME`. Killed on drop.
struct PyBackend {
    child: Child,
    addr: SocketAddr,
}

const PY_BACKEND: &str = r#"
import http.server, sys
name = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        body = b"ok" if self.path == "/health" else ("name=" + name).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
s = S(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

impl PyBackend {
    fn start(name: &str) -> PyBackend {
        let mut child = Command::new("python3")
            .args(["-c", PY_BACKEND, name])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn python3");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = StdBufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(PATIENCE).expect("python backend's port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("python backend printed {line:?}"));
        PyBackend {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, sig).expect("signal the backend");
    }
}

impl Drop for PyBackend {
    fn drop(&mut self) {
        // A stopped process still dies of SIGKILL; no SIGCONT needed.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === server frozen ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_server_costs_no_http_request_and_is_marked_down_then_up() {
    if !can_run("frozen server (HTTP)", false, true) {
        return;
    }
    let _g = LOCK.lock().await;
    let bs: Vec<PyBackend> = ["b0", "b1", "b2"].map(PyBackend::start).into();
    let addrs: Vec<SocketAddr> = bs.iter().map(|b| b.addr).collect();
    // A frozen server accepts connects (the kernel completes them into its backlog) and never
    // answers: only response_timeout reveals it, and retry_on's default (error, timeout) sends
    // the request on to another server.
    let rt = start(&config("http", "response_timeout = \"300ms\"\n", &addrs)).await;
    let a = common::addr(&rt);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(4, Arc::clone(&stop), move || http_burst(a));
    let victim = server(&rt, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(victim.is_usable());

    bs[1].signal(nix::sys::signal::Signal::SIGSTOP);
    let detection = time_until("the frozen server is marked down", || !victim.is_usable()).await;
    // Requests that picked it just before finish (by timing out and retrying) within
    // response_timeout; after that it gets none.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let sent_at_down = victim.stats.requests.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        victim.stats.requests.load(Ordering::SeqCst),
        sent_at_down,
        "requests were still sent to a server marked down"
    );

    bs[1].signal(nix::sys::signal::Signal::SIGCONT);
    let recovery = time_until("the thawed server is back", || victim.is_usable()).await;
    time_until("the thawed server gets requests again", || {
        victim.stats.requests.load(Ordering::SeqCst) > sent_at_down + 3
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let t = clients.await.expect("clients");
    let timeouts = victim.stats.errors.load(Ordering::SeqCst);
    eprintln!(
        "frozen server, HTTP: marked down after {detection:?} (bound {:?}), back {recovery:?} \
         after SIGCONT; {} requests, {} failed, {timeouts} timed out on the frozen server and \
         were retried",
        detection_bound(),
        t.ok + t.failed.len(),
        t.failed.len()
    );
    assert!(
        t.failed.is_empty(),
        "{} of {} requests failed: {:?}",
        t.failed.len(),
        t.ok + t.failed.len(),
        t.failed.iter().take(5).map(|f| &f.1).collect::<Vec<_>>()
    );
    assert!(t.ok > 100, "the load ran ({} requests)", t.ok);
    assert!(
        timeouts > 0,
        "some request met the frozen server (the retry path ran)"
    );
    assert!(
        detection <= detection_bound(),
        "detection took {detection:?}"
    );
    assert!(recovery <= recovery_bound(), "recovery took {recovery:?}");
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_server_behind_a_tcp_listener_fails_only_connections_made_before_detection() {
    if !can_run("frozen server (TCP)", false, true) {
        return;
    }
    let _g = LOCK.lock().await;
    let bs: Vec<PyBackend> = ["b0", "b1", "b2"].map(PyBackend::start).into();
    let addrs: Vec<SocketAddr> = bs.iter().map(|b| b.addr).collect();
    // L4: the connect to a frozen server succeeds, so `retries` (connect failures) cannot help,
    // and ballast never sees the bytes it relays as requests. New connections avoid the server
    // once the (HTTP) health check marks it down; connections made before that hang.
    let rt = start(&config("tcp", "connect_timeout = \"1s\"\n", &addrs)).await;
    let a = common::addr(&rt);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(4, Arc::clone(&stop), move || tcp_get(a));
    let victim = server(&rt, 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(victim.is_usable());

    let frozen_at = Instant::now();
    bs[1].signal(nix::sys::signal::Signal::SIGSTOP);
    let detection = time_until("the frozen server is marked down", || !victim.is_usable()).await;
    let down_at = Instant::now();
    // Connections opened after detection, for a while: none may fail.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    bs[1].signal(nix::sys::signal::Signal::SIGCONT);
    let recovery = time_until("the thawed server is back", || victim.is_usable()).await;
    let conns = victim.stats.connections.load(Ordering::SeqCst);
    time_until("the thawed server gets connections again", || {
        victim.stats.connections.load(Ordering::SeqCst) > conns + 3
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let t = clients.await.expect("clients");
    eprintln!(
        "frozen server, TCP: marked down after {detection:?}, back {recovery:?} after SIGCONT; \
         {} connections, {} failed, all open at the freeze or opened before detection",
        t.ok + t.failed.len(),
        t.failed.len()
    );
    // What may fail: connections open to the server when it froze, and those opened until it
    // was marked down (one that picked it an instant before the flag was set may still land
    // there: allow 50 ms).
    let late: Vec<_> = t
        .failed
        .iter()
        .filter(|(at, _)| *at > down_at + Duration::from_millis(50))
        .collect();
    assert!(
        late.is_empty(),
        "connections outside the detection window failed: {:?}",
        late.iter()
            .map(|(at, e)| (at.saturating_duration_since(frozen_at), e))
            .collect::<Vec<_>>()
    );
    // Each client loop waits 1 s on a hung connection, so at most one failure per loop and per
    // second of the detection window.
    let bound = 4 * (usize::try_from(detection.as_secs()).unwrap_or(usize::MAX / 8) + 1);
    assert!(
        t.failed.len() <= bound,
        "{} failures, more than {bound}",
        t.failed.len()
    );
    assert!(t.ok > 50, "the load ran ({} connections)", t.ok);
    assert!(
        detection <= detection_bound(),
        "detection took {detection:?}"
    );
    assert!(recovery <= recovery_bound(), "recovery took {recovery:?}");
    rt.shutdown(Duration::from_secs(1)).await;
}

// === network namespaces ===

/// Network namespaces (and host-side links) the test made; deleted on drop, even on failure.
struct Netns {
    prefix: String,
    made: Vec<String>,
    host_links: Vec<String>,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        Netns {
            prefix: format!("bf{}{tag}", std::process::id()),
            made: Vec::new(),
            host_links: Vec::new(),
        }
    }

    fn name(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    fn add(&mut self, node: &str) -> String {
        let ns = self.name(node);
        sh(&["ip", "netns", "add", &ns]);
        self.made.push(ns.clone());
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for l in &self.host_links {
            let _ = Command::new("ip").args(["link", "del", l]).output();
        }
        for ns in &self.made {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

// === network partition ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_server_costs_no_http_request_and_is_marked_down_then_up() {
    if !can_run("network partition", true, false) {
        return;
    }
    let _g = LOCK.lock().await;
    let mut net = Netns::new("p");
    let ns = net.add("s");
    // A veth pair: the host end in this namespace, `eth0` in the server's. A /30 of its own,
    // picked from the process id so parallel runs do not collide.
    let host = format!("{}h", net.prefix);
    let octet = 16 + std::process::id() % 200;
    let (host_ip, server_ip) = (format!("10.79.{octet}.1"), format!("10.79.{octet}.2"));
    sh(&[
        "ip", "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
    ]);
    net.host_links.push(host.clone());
    sh(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &host]);
    sh(&["ip", "link", "set", &host, "up"]);
    sh(&[
        "ip",
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{server_ip}/30"),
        "dev",
        "eth0",
    ]);
    sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
    let bind: SocketAddr = format!("{server_ip}:0").parse().expect("addr");
    let std_listener = in_ns(&ns, move || {
        std::net::TcpListener::bind(bind).expect("bind in ns")
    });
    let far = Killable::on_listener("far", Kind::Http, std_listener);
    let b0 = Killable::start("b0", Kind::Http).await;
    let b2 = Killable::start("b2", Kind::Http).await;
    let addrs = [b0.addr, far.addr, b2.addr];
    let rt = start(&config(
        "http",
        "connect_timeout = \"300ms\"\nresponse_timeout = \"500ms\"\n",
        &addrs,
    ))
    .await;
    let a = common::addr(&rt);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(4, Arc::clone(&stop), move || http_burst(a));
    let victim = server(&rt, 1);
    time_until("the far server takes requests", || far.accepted() > 0).await;
    assert!(victim.is_usable());

    // The partition: the server's end of the link goes down. Its packets are dropped, so a
    // connect to it times out (nothing refuses it).
    sh(&["ip", "-n", &ns, "link", "set", "eth0", "down"]);
    let detection = time_until("the partitioned server is marked down", || {
        !victim.is_usable()
    })
    .await;
    let probe_started = Instant::now();
    let probe =
        tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(far.addr)).await;
    let probe_took = probe_started.elapsed();
    let what = match &probe {
        Err(_) => "timed out".to_owned(),
        Ok(Err(e)) => format!("failed: {e}"),
        Ok(Ok(_)) => "succeeded".to_owned(),
    };
    assert!(
        !matches!(probe, Ok(Ok(_))),
        "a connect across the partition succeeded"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let sent_at_down = victim.stats.requests.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        victim.stats.requests.load(Ordering::SeqCst),
        sent_at_down,
        "requests were still sent to a server marked down"
    );

    sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
    let recovery = time_until("the server is back after the partition heals", || {
        victim.is_usable()
    })
    .await;
    time_until("the server gets requests again", || {
        victim.stats.requests.load(Ordering::SeqCst) > sent_at_down + 3
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let t = clients.await.expect("clients");
    let failed_on_victim = victim.stats.errors.load(Ordering::SeqCst)
        + victim.stats.connect_errors.load(Ordering::SeqCst);
    eprintln!(
        "partition: marked down after {detection:?} (bound {:?}), back {recovery:?} after link up; \
         a connect across it {what} after {probe_took:?}; {} requests, {} failed, \
         {failed_on_victim} attempts on the partitioned server retried",
        detection_bound(),
        t.ok + t.failed.len(),
        t.failed.len()
    );
    assert!(
        t.failed.is_empty(),
        "{} of {} requests failed: {:?}",
        t.failed.len(),
        t.ok + t.failed.len(),
        t.failed.iter().take(5).map(|f| &f.1).collect::<Vec<_>>()
    );
    assert!(t.ok > 100, "the load ran ({} requests)", t.ok);
    assert!(
        detection <= detection_bound(),
        "detection took {detection:?}"
    );
    // A check sent while the link was down may have left the server's neighbour entry
    // unresolved: the kernel asks again after `retrans_time` (1 s), and checks wait for that.
    assert!(
        recovery <= recovery_bound() + Duration::from_secs(1),
        "recovery took {recovery:?}"
    );
    rt.shutdown(Duration::from_secs(1)).await;
    drop(net);
}

// === disk full for the access log ===

/// Everything ballast logs at warn level or above in this test process.
fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    Arc::clone(LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .try_init();
        buf
    }))
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_lines_with(log: &Mutex<Vec<u8>>, what: &str) -> usize {
    let bytes = log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| l.contains(what))
        .count()
}

/// A small tmpfs mounted on a fresh directory; unmounted and removed on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_costs_log_lines_not_requests_is_reported_once_and_logging_resumes() {
    if !can_run("disk full", true, false) {
        return;
    }
    let _g = LOCK.lock().await;
    let log = captured_log();
    let dir = std::env::temp_dir().join(format!("ballast-faults-tmpfs-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let fs = Tmpfs(dir.clone());
    sh(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=256k",
        "tmpfs",
        &dir.display().to_string(),
    ]);
    let path = fs.0.join("access.log");
    let b0 = Killable::start("b0", Kind::Http).await;
    let b1 = Killable::start("b1", Kind::Http).await;
    let text = format!(
        "[global]\naccess_log = \"{}\"\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n[[listener]]\n\
         name = \"l\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"u\"\n\n\
         [[upstream]]\nname = \"u\"\n[[upstream.server]]\naddress = \"{}\"\n\
         [[upstream.server]]\naddress = \"{}\"\n",
        path.display(),
        b0.addr,
        b1.addr
    );
    let rt = start(&text).await;
    let a = common::addr(&rt);
    let mut c = Client::connect(a).await;
    let (status, _, _) = c.get("/before", None).await.expect("answer");
    assert_eq!(status, 200);
    rt.flush_access_log().await;
    assert!(std::fs::read_to_string(&path)
        .unwrap_or_default()
        .contains("path=\"/before\""));

    // Fill the disk.
    let filler = fs.0.join("filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = [0u8; 4096];
        let mut n = 0;
        while f.write_all(&chunk).is_ok() && n < 1024 {
            n += 1;
        }
        assert!(n < 1024, "the tmpfs never filled up");
    }
    let warned_before = log_lines_with(&log, "access log write failed");

    // Traffic on a full disk: every request is answered.
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(2, Arc::clone(&stop), move || http_burst(a));
    time_until("access-log lines are lost", || {
        rt.access_log_write_errors() > 100
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lost = rt.access_log_write_errors();
    let failed_warnings = log_lines_with(&log, "access log write failed") - warned_before;
    let still = log_lines_with(&log, "access log writes still failing");

    // Space returns: the buffered lines and new ones are written again.
    std::fs::remove_file(&filler).expect("remove filler");
    let (status, _, _) = c.get("/after-space-returns", None).await.expect("answer");
    assert_eq!(status, 200);
    let resumed = time_until("the access log is written again", || {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .contains("path=\"/after-space-returns\"")
    })
    .await;
    time_until("the recovery is logged", || {
        log_lines_with(&log, "access log writes succeed again") > 0
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let t = clients.await.expect("clients");

    // The counter is exported.
    let admin = match rt.admin_bind() {
        Some(ballast::config::AdminBind::Tcp(addr)) => *addr,
        other => panic!("admin should listen on TCP, got {other:?}"),
    };
    let mut m = Client::connect(admin).await;
    let (_, metrics, _) = m.get("/metrics", None).await.expect("metrics");
    let exported: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ballast_access_log_errors_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ballast_access_log_errors_total in:\n{metrics}"));

    eprintln!(
        "disk full: {} requests, {} failed; {lost} log lines lost, reported in {failed_warnings} \
         warning(s) (+{still} repeat); logging resumed {resumed:?} after space returned",
        t.ok + t.failed.len(),
        t.failed.len()
    );
    assert!(
        t.failed.is_empty(),
        "requests failed on a full disk: {:?}",
        t.failed.iter().take(5).map(|f| &f.1).collect::<Vec<_>>()
    );
    assert!(t.ok > lost as usize / 2, "the load ran");
    assert_eq!(
        failed_warnings, 1,
        "one warning when the failure starts, not one per line"
    );
    assert_eq!(still, 0, "no repeat within the report interval");
    assert!(exported >= lost, "exported {exported}, counted {lost}");
    rt.shutdown(Duration::from_secs(1)).await;
    drop(fs);
}

// === a lying VRRP peer ===

const VIP2: &str = "10.78.0.50";
const VIP3: &str = "10.78.0.60";

/// ballast in namespace `r` (10.78.0.1), the liar in namespace `p` (10.78.0.2), on one veth
/// pair. ballast runs two instances: `V2` (VRRPv2, PASS, 1 s, VRID 51) and `V3` (VRRPv3, 100 ms,
/// VRID 52), both priority 100.
struct VrrpLab {
    net: Netns,
    ballast: Child,
    log: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl VrrpLab {
    fn new() -> VrrpLab {
        let mut net = Netns::new("v");
        let r = net.add("r");
        let p = net.add("p");
        sh(&[
            "ip", "link", "add", "eth0", "netns", &r, "type", "veth", "peer", "name", "eth0",
            "netns", &p,
        ]);
        for (ns, ip) in [(&r, "10.78.0.1/24"), (&p, "10.78.0.2/24")] {
            sh(&["ip", "-n", ns, "addr", "add", ip, "dev", "eth0"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        let dir = std::env::temp_dir().join(format!("ballast-faults-{}", net.prefix));
        let _ = std::fs::create_dir_all(&dir);
        let conf = dir.join("ballast.toml");
        let text = format!(
            "[global]\nshutdown_grace = \"1s\"\nthreads = 1\nlog_level = \"info\"\n[vrrp]\n\
             [[vrrp.instance]]\nname = \"V2\"\ninterface = \"eth0\"\nvirtual_router_id = 51\n\
             priority = 100\nvirtual_ipaddress = [\"{VIP2}/24\"]\n\
             authentication = {{ auth_type = \"PASS\", auth_pass = \"secret\" }}\n\
             [[vrrp.instance]]\nname = \"V3\"\ninterface = \"eth0\"\nvirtual_router_id = 52\n\
             version = 3\nadvert_int = \"100ms\"\npriority = 100\n\
             virtual_ipaddress = [\"{VIP3}/24\"]\n"
        );
        std::fs::write(&conf, text).expect("write config");
        let log = dir.join("ballast.log");
        let ballast = Command::new("ip")
            .args(["netns", "exec", &r])
            .arg(env!("CARGO_BIN_EXE_ballast"))
            .args(["run", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn ballast");
        VrrpLab {
            net,
            ballast,
            log,
            dir,
        }
    }

    /// Whether ballast's namespace holds `vip`.
    fn holds(&self, vip: &str) -> bool {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.net.name("r"),
                "-o",
                "addr",
                "show",
                "dev",
                "eth0",
            ])
            .output()
            .expect("ip addr");
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {vip}/"))
    }

    /// Polls every 5 ms until `cond`; the time it took. Fails after `limit`.
    fn until(&self, what: &str, limit: Duration, mut cond: impl FnMut(&Self) -> bool) -> Duration {
        let t0 = std::time::Instant::now();
        while !cond(self) {
            assert!(
                t0.elapsed() < limit,
                "timed out after {limit:?} waiting for: {what}\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(5));
        }
        t0.elapsed()
    }

    /// Asserts `vip` stays on ballast for all of `span`.
    fn keeps(&self, vip: &str, span: Duration) {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < span {
            assert!(self.holds(vip), "ballast lost {vip}\n{}", self.log_text());
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The instance's line of the SIGUSR1 counters table, freshly printed.
    fn summary(&self, instance: &str) -> String {
        let head = format!("vrrp {instance} vrid");
        let count = |t: &str| t.lines().filter(|l| l.contains(&head)).count();
        let before = count(&self.log_text());
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.ballast.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).expect("SIGUSR1");
        self.until("the counters table", PATIENCE, |l| {
            count(&l.log_text()) > before
        });
        let text = self.log_text();
        text.lines()
            .rev()
            .find(|l| l.contains(&head))
            .map(str::to_owned)
            .unwrap_or_default()
    }

    /// Drops by reason, from the instance's counters line.
    fn drops(&self, instance: &str) -> HashMap<String, u64> {
        let line = self.summary(instance);
        line.split_once("dropped ")
            .map(|(_, tail)| {
                tail.split_whitespace()
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        Some((k.to_owned(), v.trim_end_matches(',').parse().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends crafted adverts from the liar's namespace to 224.0.0.18, each with its TTL.
    fn send(&self, packets: Vec<(Vec<u8>, u32)>) {
        use socket2::{Domain, Protocol, Socket, Type};
        in_ns(&self.net.name("p"), move || {
            let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112)))
                .expect("raw socket");
            s.set_multicast_if_v4(&"10.78.0.2".parse().expect("ip"))
                .expect("multicast interface");
            let to = SocketAddr::new(IpAddr::V4(GROUP), 0);
            for (p, ttl) in packets {
                s.set_multicast_ttl_v4(ttl).expect("ttl");
                s.send_to(&p, &to.into()).expect("send");
            }
        });
    }
}

impl Drop for VrrpLab {
    fn drop(&mut self) {
        let _ = self.ballast.kill();
        let _ = self.ballast.wait();
        if thread::panicking() {
            eprintln!("--- ballast log:\n{}", self.log_text());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const GROUP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(224, 0, 0, 18);

fn advert(
    version: ballast::vrrp::packet::Version,
    vrid: u8,
    priority: u8,
    interval: u16,
    vip: &str,
    auth: ballast::vrrp::packet::Auth,
) -> Vec<u8> {
    use ballast::vrrp::packet::{encode, Advert};
    let a = Advert {
        version,
        vrid,
        priority,
        interval,
        addrs: vec![vip.parse().expect("vip")],
        auth,
    };
    encode(&a, "10.78.0.2".parse().expect("ip"), IpAddr::V4(GROUP))
}

#[test]
fn lying_vrrp_peer_cannot_take_the_vip_and_a_valid_one_can() {
    use ballast::vrrp::packet::{Auth, Version};
    if !can_run("lying VRRP peer", true, false) {
        return;
    }
    let _g = LOCK.blocking_lock();
    let lab = VrrpLab::new();
    // Both instances start as BACKUP and take over after their Master_Down_Interval: 3.61 s
    // (v2, 1 s) and 0.36 s (v3, 100 ms).
    lab.until("ballast is MASTER of both", PATIENCE, |l| {
        l.holds(VIP2) && l.holds(VIP3)
    });

    // (a) v2 lies, each claiming priority 254, five rounds 200 ms apart. The wrong password, a
    // TTL below 255 and a bad checksum are tests/vrrp.rs's; these are the rest.
    let pass = || Auth::pass("secret");
    for _ in 0..5 {
        lab.send(vec![
            // A different advertisement interval (RFC 3768 §7.1: discard; Keepalived does too).
            (advert(Version::V2, 51, 254, 2, VIP2, pass()), 255),
            // No authentication where PASS is configured.
            (advert(Version::V2, 51, 254, 1, VIP2, Auth::None), 255),
            // Another virtual address for this VRID.
            (advert(Version::V2, 51, 254, 1, "10.78.0.99", pass()), 255),
            // Another VRID (normal traffic on a shared link: counted, not warned).
            (advert(Version::V2, 99, 254, 1, VIP2, pass()), 255),
            // v3: a TTL below 255 (forwarded by a router).
            (advert(Version::V3, 52, 254, 10, VIP3, Auth::None), 64),
        ]);
        lab.keeps(VIP2, Duration::from_millis(200));
    }
    lab.keeps(VIP3, Duration::from_millis(300));
    let d2 = lab.drops("V2");
    let d3 = lab.drops("V3");
    for reason in ["interval", "auth_type", "address_list"] {
        assert_eq!(d2.get(reason), Some(&5), "V2 drops {d2:?}");
    }
    assert!(d2.get("vrid").is_some_and(|n| *n >= 5), "V2 drops {d2:?}");
    assert_eq!(d3.get("ttl"), Some(&5), "V3 drops {d3:?}");
    assert!(lab.summary("V2").contains("MASTER"));
    assert!(lab.summary("V3").contains("MASTER"));

    // (b) Control, v2: a valid advert of priority 200 takes the VIP at once; then that master's
    // priority 0 (it resigns) gives it back after Skew_Time (0.61 s), not Master_Down_Interval.
    lab.send(vec![(advert(Version::V2, 51, 200, 1, VIP2, pass()), 255)]);
    let gave_up = lab.until("V2 steps down to a valid higher priority", PATIENCE, |l| {
        !l.holds(VIP2)
    });
    lab.send(vec![(advert(Version::V2, 51, 0, 1, VIP2, pass()), 255)]);
    let back2 = lab.until("V2 takes over after the priority 0", PATIENCE, |l| {
        l.holds(VIP2)
    });
    assert!(
        back2 <= Duration::from_millis(609 + 600),
        "v2 takeover after priority 0 took {back2:?}; Skew_Time 0.61 s"
    );

    // (c) Control, v3: a valid advert of priority 200 with a 500 ms interval. RFC 5798 §6.4.3 has
    // no interval check in v3: ballast steps down and adopts 500 ms as Master_Adver_Interval, so
    // it waits 3 × 0.5 s + skew (1.80 s) after that advert, not its own 0.36 s.
    lab.send(vec![(
        advert(Version::V3, 52, 200, 50, VIP3, Auth::None),
        255,
    )]);
    let sent = std::time::Instant::now();
    lab.until("V3 steps down to a valid higher priority", PATIENCE, |l| {
        !l.holds(VIP3)
    });
    lab.until("V3 takes over when the peer goes quiet", PATIENCE, |l| {
        l.holds(VIP3)
    });
    let back3 = sent.elapsed();
    eprintln!(
        "lying VRRP peer: V2 drops {d2:?}, V3 drops {d3:?}; a valid higher priority took the \
         v2 VIP in {gave_up:?}, its priority 0 gave it back in {back2:?}; v3 with a 500 ms \
         interval: back after {back3:?} (adopted interval: 1.80 s)"
    );
    assert!(
        back3 >= Duration::from_millis(1400),
        "V3 took over after {back3:?}: it did not adopt the master's 500 ms interval"
    );
    assert!(back3 <= Duration::from_millis(1805 + 600), "took {back3:?}");
}

// === unresolvable server names ===

#[test]
fn a_server_host_name_is_refused_at_load_naming_file_line_and_column() {
    // ballast resolves no names, at start or later: a host name where a server address belongs
    // is a configuration error, so a resolver failure can never appear at runtime.
    let dir = std::env::temp_dir().join(format!("ballast-faults-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let conf = dir.join("faults.toml");
    std::fs::write(
        &conf,
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\n\n[[upstream]]\n\
         name = \"u\"\n[[upstream.server]]\naddress = \"127.0.0.1:8081\"\n[[upstream.server]]\n\
         address = \"backend.invalid:8080\"\n",
    )
    .expect("write config");
    for cmd in ["check", "run"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ballast"))
            .args([cmd, "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ballast");
        let t0 = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if t0.elapsed() > PATIENCE {
                let _ = child.kill();
                panic!("ballast {cmd} did not exit");
            }
            thread::sleep(Duration::from_millis(10));
        };
        let mut err = String::new();
        let _ = child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err);
        assert!(!status.success(), "ballast {cmd} accepted a host name");
        let want = format!(
            "{}:11:11: upstream[0].server[1].address: cannot parse \"backend.invalid:8080\" as an \
             address (host names are not resolved; write an IP address)",
            conf.display()
        );
        assert!(err.contains(&want), "ballast {cmd} said:\n{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
