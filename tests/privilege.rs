//! Least privilege and secrets, on the real binary: `[global] user`/`group` switch every thread
//! after start (with only CAP_NET_ADMIN and CAP_NET_RAW kept for VRRP), secrets never reach logs,
//! the admin API or `ballast check`, secret files open to others are warned about, and an admin
//! API reachable from other hosts needs a token.
//!
//! The switch tests need root (and `ip` for the VRRP one, which runs inside a network namespace
//! the test creates, on a veth pair of its own). Without them they are skipped with a loud
//! message; with `CI=true` a skip is a failure. Credentials are read from
//! `/proc/PID/task/*/status`, every thread, not just the main one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(15);
/// CAP_NET_ADMIN (12) and CAP_NET_RAW (13), as `/proc/…/status` shows them.
const NET_ADMIN_AND_RAW: u64 = 0x3000;

fn ballast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ballast"))
}

/// Whether a root-only test can run; a skip is loud, and fatal under CI.
fn can_run(what: &str, need_ip: bool) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    let nobody = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .is_some()
        && nix::unistd::Group::from_name("nogroup")
            .ok()
            .flatten()
            .is_some();
    let ip = !need_ip || Command::new("ip").arg("-V").output().is_ok();
    if root && nobody && ip {
        return true;
    }
    let why = if !root {
        "not root (switching users needs it)"
    } else if !nobody {
        "no user nobody or group nogroup on this host"
    } else {
        "iproute2 (`ip`) is not installed"
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} cannot run under CI: {why}"
    );
    eprintln!("\n*** SKIPPED: {what}: {why} ***\n");
    false
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A directory every user can read (the configuration is re-read as `nobody`).
fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ballast-priv-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A running ballast with its stderr collected; killed if the test fails half way.
struct Proc {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Proc {
    fn start(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ballast");
        let log = Arc::new(Mutex::new(String::new()));
        for out in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let mut l = log.lock().expect("log");
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        Proc { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).expect("pid"));
        nix::sys::signal::kill(pid, sig).expect("kill");
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the readers drain what was left in the pipes.
                thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ballast did not exit in time\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `cond` every 20 ms for at most PATIENCE.
    fn until(&mut self, what: &str, mut cond: impl FnMut(&mut Proc) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !cond(self) {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("ballast exited ({status}) before: {what}\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for: {what}\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Credentials of one thread, from its status file.
#[derive(Debug)]
struct Creds {
    tid: String,
    uids: Vec<u32>,
    gids: Vec<u32>,
    groups: Vec<u32>,
    cap_prm: u64,
    cap_eff: u64,
}

fn creds(pid: u32) -> Vec<Creds> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::trim)
                .unwrap_or_default()
                .to_owned()
        };
        let ids = |key: &str| -> Vec<u32> {
            field(key)
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        };
        let mask = |key: &str| u64::from_str_radix(&field(key), 16).expect("capability mask");
        out.push(Creds {
            tid: t.file_name().to_string_lossy().into_owned(),
            uids: ids("Uid:"),
            gids: ids("Gid:"),
            groups: ids("Groups:"),
            cap_prm: mask("CapPrm:"),
            cap_eff: mask("CapEff:"),
        });
    }
    out
}

fn leader(pid: u32) -> Option<Creds> {
    let pid_s = pid.to_string();
    creds(pid).into_iter().find(|c| c.tid == pid_s)
}

fn nobody() -> (u32, u32) {
    let u = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("user nobody");
    let g = nix::unistd::Group::from_name("nogroup")
        .ok()
        .flatten()
        .expect("group nogroup");
    (u.uid.as_raw(), g.gid.as_raw())
}

/// Every thread of `pid` runs as nobody:nogroup with no capability beyond `allowed`, and the
/// main thread's effective set is exactly `leader_eff`.
fn assert_switched(p: &Proc, allowed: u64, leader_eff: u64) {
    let (uid, gid) = nobody();
    let all = creds(p.pid());
    assert!(all.len() >= 2, "expected several threads: {all:?}");
    for c in &all {
        assert_eq!(c.uids, vec![uid; 4], "thread {c:?}\n{}", p.log());
        assert_eq!(c.gids, vec![gid; 4], "thread {c:?}");
        assert_eq!(c.groups, vec![gid], "supplementary groups of {c:?}");
        assert_eq!(
            c.cap_prm & !allowed,
            0,
            "permitted beyond {allowed:x}: {c:?}"
        );
        assert_eq!(
            c.cap_eff & !allowed,
            0,
            "effective beyond {allowed:x}: {c:?}"
        );
    }
    let main = leader(p.pid()).expect("main thread");
    assert_eq!(main.cap_eff, leader_eff, "main thread {main:?}");
    assert_eq!(main.cap_prm, leader_eff, "main thread {main:?}");
}

/// A backend answering every connection with a small HTTP response (for TCP and HTTP
/// listeners alike); stops with `stop`.
fn backend(stop: Arc<AtomicBool>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let addr = l.local_addr().expect("addr");
    l.set_nonblocking(true).expect("nonblocking");
    thread::spawn(move || serve(&l, &stop));
    addr
}

fn serve(l: &TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((mut s, _)) => {
                thread::spawn(move || {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nproxied\n",
                    );
                });
            }
            Err(_) => thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// One HTTP/1.1 request; the whole response.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> String {
    request(addr, "GET", path, token)
}

fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn listener(name: &str, port: u16, protocol: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nbind = \"127.0.0.1:{port}\"\nprotocol = \"{protocol}\"\nupstream = \"app\"\nworkers = 1\n\n"
    )
}

fn upstream(backend: SocketAddr) -> String {
    format!("[[upstream]]\nname = \"app\"\nserver = [{{ address = \"{backend}\" }}]\n\n")
}

#[test]
fn as_root_with_user_nobody_every_thread_switches_with_no_capabilities_and_traffic_still_flows() {
    if !can_run("user switch test", false) {
        return;
    }
    let dir = tempdir("plain");
    let stop = Arc::new(AtomicBool::new(false));
    let backend = backend(Arc::clone(&stop));
    let (tcp, http) = (free_port(), free_port());
    let cfg = dir.join("ballast.toml");
    write(
        &cfg,
        &format!(
            "[global]\nuser = \"nobody\"\ngroup = \"nogroup\"\nthreads = 2\nshutdown_grace = \"2s\"\n\n{}{}{}",
            listener("tcp", tcp, "tcp"),
            listener("web", http, "http"),
            upstream(backend)
        ),
        0o644,
    );
    let mut cmd = ballast();
    cmd.args(["run", "-c"]).arg(&cfg);
    let mut p = Proc::start(cmd);
    let (uid, _) = nobody();
    p.until("the main thread runs as nobody", |p| {
        leader(p.pid()).is_some_and(|c| c.uids.first() == Some(&uid))
    });
    p.until("the switch is logged", |p| {
        p.log().contains("switched user")
    });
    assert_switched(&p, 0, 0);
    assert!(
        p.log().contains("capabilities=none"),
        "the log says what was kept\n{}",
        p.log()
    );
    // Traffic after the switch, through both listeners.
    for port in [tcp, http] {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let resp = get(addr, "/", None);
        assert!(
            resp.starts_with("HTTP/1.1 200") && resp.ends_with("proxied\n"),
            "port {port}: {resp:?}\n{}",
            p.log()
        );
    }
    p.signal(nix::sys::signal::Signal::SIGTERM);
    let status = p.wait_exit();
    stop.store(true, Ordering::SeqCst);
    assert!(status.success(), "exit {status}\n{}", p.log());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A network namespace with a veth pair inside it (`eth0` and its peer, up, no address yet),
/// removed on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("bpriv{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ns = Netns(name);
        let n = ns.0.as_str();
        for args in [
            vec!["netns", "add", n],
            vec![
                "-n", n, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
            ],
            vec!["-n", n, "link", "set", "lo", "up"],
            vec!["-n", n, "link", "set", "eth1", "up"],
            vec!["-n", n, "link", "set", "eth0", "up"],
        ] {
            ip(&args);
        }
        ns
    }

    /// Gives `eth0` its address, 10.78.0.11/24.
    fn address_eth0(&self) {
        ip(&["-n", &self.0, "addr", "add", "10.78.0.11/24", "dev", "eth0"]);
    }

    fn addresses(&self) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.0, "-4", "addr", "show", "dev", "eth0"])
            .output()
            .expect("ip addr");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a thread inside the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.0);
        thread::spawn(move || {
            let fd = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread")
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn as_root_with_vrrp_the_switched_process_keeps_exactly_net_admin_and_net_raw_and_still_adds_the_vip(
) {
    if !can_run("user switch with VRRP test", true) {
        return;
    }
    let dir = tempdir("vrrp");
    let ns = Netns::new();
    // The backend lives in the namespace, on its loopback.
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let backend = ns.run(move || backend(s));
    let port = free_port();
    let cfg = dir.join("ballast.toml");
    write(
        &cfg,
        &format!(
            "[global]\nuser = \"nobody\"\ngroup = \"nogroup\"\nthreads = 2\nshutdown_grace = \"2s\"\n\n{}{}\
             [[vrrp.instance]]\nname = \"vi\"\ninterface = \"eth0\"\nvirtual_router_id = 78\npriority = 150\n\
             advert_int = \"1s\"\nvirtual_ipaddress = [\"10.78.0.50/24\"]\n",
            listener("tcp", port, "tcp"),
            upstream(backend)
        ),
        0o644,
    );
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &ns.0,
        env!("CARGO_BIN_EXE_ballast"),
        "run",
        "-c",
    ])
    .arg(&cfg);
    let mut p = Proc::start(cmd);
    let (uid, _) = nobody();
    p.until("the main thread runs as nobody", |p| {
        leader(p.pid()).is_some_and(|c| c.uids.first() == Some(&uid))
    });
    p.until("the switch is logged", |p| {
        p.log().contains("switched user")
    });
    assert_switched(&p, NET_ADMIN_AND_RAW, NET_ADMIN_AND_RAW);
    // The interface had no address at start, so the instance waits; it opens its raw sockets
    // (CAP_NET_RAW) only now, after the switch, on whichever worker thread runs it.
    assert!(
        p.log().contains("VRRP instance cannot start yet"),
        "{}",
        p.log()
    );
    ns.address_eth0();
    // Alone on its link, the instance becomes MASTER after Master_Down_Interval (~3.4 s) and
    // adds the VIP, which needs CAP_NET_ADMIN after the switch.
    p.until("the VIP is added", |_| {
        ns.addresses().contains("10.78.0.50/24")
    });
    assert!(
        p.log().contains("Entering MASTER STATE"),
        "MASTER is logged\n{}",
        p.log()
    );
    assert_switched(&p, NET_ADMIN_AND_RAW, NET_ADMIN_AND_RAW);
    let resp = ns.run(move || {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        get(addr, "/", None)
    });
    assert!(resp.ends_with("proxied\n"), "{resp:?}\n{}", p.log());
    // A clean stop removes the VIP: still allowed after the switch.
    p.signal(nix::sys::signal::Signal::SIGTERM);
    let status = p.wait_exit();
    stop.store(true, Ordering::SeqCst);
    assert!(status.success(), "exit {status}\n{}", p.log());
    assert!(
        !ns.addresses().contains("10.78.0.50"),
        "the VIP is removed at exit: {}\n{}",
        ns.addresses(),
        p.log()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The binary run as user `nobody` (the test must be root to do that), from a copy in `dir`:
/// the build directory may be closed to other users.
fn as_nobody(dir: &Path) -> Command {
    let copy = dir.join("ballast");
    if !copy.exists() {
        // A hard link when the file system allows it (the debug binary is large).
        let bin = env!("CARGO_BIN_EXE_ballast");
        if std::fs::hard_link(bin, &copy).is_err() {
            std::fs::copy(bin, &copy).expect("copy the binary");
        }
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let (uid, gid) = nobody();
    let mut cmd = Command::new(copy);
    cmd.uid(uid).gid(gid);
    cmd
}

#[test]
fn started_as_the_configured_user_it_warns_and_runs_and_as_another_user_it_refuses() {
    if !can_run("non-root start test", false) {
        return;
    }
    let dir = tempdir("nonroot");
    let stop = Arc::new(AtomicBool::new(false));
    let backend = backend(Arc::clone(&stop));
    let port = free_port();
    let same = dir.join("same.toml");
    write(
        &same,
        &format!(
            "[global]\nuser = \"nobody\"\nshutdown_grace = \"1s\"\n\n{}{}",
            listener("tcp", port, "tcp"),
            upstream(backend)
        ),
        0o644,
    );
    let mut cmd = as_nobody(&dir);
    cmd.args(["run", "-c"]).arg(&same);
    let mut p = Proc::start(cmd);
    p.until("the warning", |p| {
        p.log().contains("already running as the configured user")
    });
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(get(addr, "/", None).ends_with("proxied\n"), "{}", p.log());
    p.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(p.wait_exit().success(), "{}", p.log());

    let other = dir.join("other.toml");
    write(
        &other,
        &format!(
            "[global]\nuser = \"daemon\"\n\n{}{}",
            listener("tcp", free_port(), "tcp"),
            upstream(backend)
        ),
        0o644,
    );
    let out = as_nobody(&dir)
        .args(["run", "-c"])
        .arg(&other)
        .output()
        .expect("run");
    stop.store(true, Ordering::SeqCst);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cannot switch to user daemon") && err.contains("not root"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// === secrets ===

const TOKEN: &str = "tok-Kq7ZpW3xN9vR2mLs";
const AUTH_PASS: &str = "pw7Qz9Xk";

fn assert_no_secret(what: &str, text: &str) {
    for secret in [TOKEN, AUTH_PASS, &TOKEN[4..16], &AUTH_PASS[2..]] {
        assert!(
            !text.contains(secret),
            "{what} shows a secret ({secret:?}):\n{text}"
        );
    }
}

#[test]
fn secrets_never_appear_in_logs_the_admin_api_or_check_output() {
    let dir = tempdir("secrets");
    let stop = Arc::new(AtomicBool::new(false));
    let backend = backend(Arc::clone(&stop));
    let (port, admin) = (free_port(), free_port());
    let cfg = dir.join("ballast.toml");
    // The VRRP instance names an interface that does not exist: it retries and never sends.
    let text = format!(
        "[global]\nlog_level = \"trace\"\nshutdown_grace = \"1s\"\n\n[admin]\nbind = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\n\n{}{}\
         [[vrrp.instance]]\nname = \"vi\"\ninterface = \"bnone{}\"\nvirtual_router_id = 9\n\
         authentication = {{ auth_type = \"PASS\", auth_pass = \"{AUTH_PASS}\" }}\nvirtual_ipaddress = [\"10.79.0.50/24\"]\n",
        listener("web", port, "http"),
        upstream(backend),
        std::process::id() % 10000
    );
    write(&cfg, &text, 0o644);
    let mut cmd = ballast();
    cmd.args(["run", "-c"]).arg(&cfg);
    let mut p = Proc::start(cmd);
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().expect("addr");
    p.until("the admin API answers", |_| {
        get(admin, "/api/v1/status", None).starts_with("HTTP/1.1 200")
    });
    // The file holding both secrets is world-readable: warned about at start.
    p.until("the permission warning", |p| {
        p.log().contains("(mode 0644); run chmod 600")
    });
    let wrong = format!("{TOKEN}x");
    let mut api = String::new();
    for path in [
        "/api/v1/status",
        "/api/v1/vrrp",
        "/api/v1/listeners",
        "/api/v1/upstreams",
        "/metrics",
        "/",
    ] {
        for token in [None, Some(TOKEN), Some(wrong.as_str())] {
            api.push_str(&get(admin, path, token));
        }
    }
    assert!(
        api.contains("\"virtual_router_id\""),
        "the VRRP view answered: {api}"
    );
    // Changes with a wrong token are refused (and logged); a reload of a file that is now
    // invalid is refused with its diagnostics, by the API and by SIGHUP.
    let refused = request(admin, "POST", "/api/v1/reload", Some(&wrong));
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    api.push_str(&refused);
    let broken = text.replace(
        &format!("auth_pass = \"{AUTH_PASS}\""),
        &format!("auth_pass = \"{AUTH_PASS}{AUTH_PASS}\""),
    );
    write(&cfg, &broken, 0o600);
    let reload = request(admin, "POST", "/api/v1/reload", Some(TOKEN));
    assert!(
        !reload.starts_with("HTTP/1.1 200") && reload.contains("auth_pass: must be 1 to 8 bytes"),
        "{reload}"
    );
    api.push_str(&reload);
    let refusals = p.log().matches("reload refused").count();
    p.signal(nix::sys::signal::Signal::SIGHUP);
    p.until("the SIGHUP reload is refused", |p| {
        p.log().matches("reload refused").count() > refusals
    });
    // Proxied traffic with an Authorization header at trace level.
    let web: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(get(web, "/", Some(TOKEN)).ends_with("proxied\n"));
    p.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(p.wait_exit().success(), "{}", p.log());
    stop.store(true, Ordering::SeqCst);
    let log = p.log();
    assert!(log.contains("wrong token"), "the refusal is logged:\n{log}");
    assert_no_secret("the log", &log);
    assert_no_secret("the admin API", &api);

    // `ballast check`: the valid file (with its warning) and the one with a bad auth_pass.
    let bad_pass = text.replace(
        &format!("auth_pass = \"{AUTH_PASS}\""),
        &format!("auth_pass = \"{AUTH_PASS}{AUTH_PASS}\""),
    );
    for (body, ok) in [(text.as_str(), true), (bad_pass.as_str(), false)] {
        write(&cfg, body, 0o644);
        let out: Output = ballast()
            .args(["check", "-c"])
            .arg(&cfg)
            .output()
            .expect("check");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.success(), ok, "{all}");
        if !ok {
            assert!(all.contains("auth_pass: must be 1 to 8 bytes"), "{all}");
        }
        assert_no_secret("ballast check", &all);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_warns_about_secret_files_open_to_others_naming_the_file_the_mode_and_the_fix() {
    let dir = tempdir("modes");
    let token = dir.join("admin.token");
    write(&token, &format!("{TOKEN}\n"), 0o640);
    let cfg = dir.join("ballast.toml");
    write(
        &cfg,
        &format!(
            "[admin]\nbind = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n\n{}{}",
            listener("web", 1, "tcp"),
            upstream("127.0.0.1:1".parse().expect("addr"))
        ),
        0o644,
    );
    let check = || {
        let out = ballast()
            .args(["check", "-c"])
            .arg(&cfg)
            .output()
            .expect("check");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = check();
    let t = token.display();
    assert!(
        out.contains(&format!(
            "warning: {t} holds the admin token (admin.token_file) and is open to its group (mode 0640); run chmod 600 {t}"
        )),
        "{out}"
    );
    // The configuration itself holds no secret here: its mode is its own business.
    assert!(
        !out.contains(&cfg.display().to_string().replace(".toml", ".toml holds")),
        "{out}"
    );
    assert_no_secret("ballast check", &out);
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = check();
    assert!(!out.contains("holds"), "no warning at 0600: {out}");

    // An inline token makes the configuration file a secret file.
    write(
        &cfg,
        &format!(
            "[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n{}{}",
            listener("web", 1, "tcp"),
            upstream("127.0.0.1:1".parse().expect("addr"))
        ),
        0o604,
    );
    let out = check();
    let c = cfg.display();
    assert!(
        out.contains(&format!(
            "warning: {c} holds the admin token (admin.token) and is open to other users (mode 0604); run chmod 600 {c}"
        )),
        "{out}"
    );
    assert_no_secret("ballast check", &out);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_admin_api_reachable_from_other_hosts_without_a_token_refuses_to_start() {
    let dir = tempdir("admin-open");
    let cfg = dir.join("ballast.toml");
    let admin = free_port();
    write(
        &cfg,
        &format!(
            "[admin]\nbind = \"0.0.0.0:{admin}\"\n\n{}{}",
            listener("web", free_port(), "tcp"),
            upstream("127.0.0.1:1".parse().expect("addr"))
        ),
        0o600,
    );
    let out = ballast()
        .args(["run", "-c"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "admin.bind: 0.0.0.0:{admin} is reachable from other hosts, so the admin API needs a token"
        )),
        "{err}"
    );
    let addr: SocketAddr = format!("127.0.0.1:{admin}").parse().expect("addr");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
        "nothing listens on the admin port"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
