//! VRRP in network namespaces: two ballast nodes, and ballast beside a real Keepalived, on a
//! private bridge.
//!
//! Each test builds its own lab: a switch namespace with a bridge, and one namespace per node
//! (`a` and `b`, the routers; `c`, the client), joined by veth pairs created directly inside
//! them, so nothing appears in the host's namespace and no packet can leave it. Names carry the
//! test process id, and a guard deletes everything (processes first) even when a test fails.
//! The tests take one lock so their timings are not disturbed by each other.
//!
//! Every wait is bounded. Times are asserted against the RFC formula
//! (`Master_Down_Interval = 3 × advert + (256 − priority) × advert / 256`, or `Skew_Time` after
//! a priority-0 advert) plus a stated margin for process start-up and scheduling on a loaded
//! 2-core machine.
//!
//! Needs root (namespaces, raw sockets, addresses) and, for the interoperability tests,
//! `keepalived`. Without them the tests are skipped with a loud message; with `CI=true` a skip
//! is a failure.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ballast::vrrp::addr::Netlink;
use common::netns::{in_ns, sh};

/// The tests run one at a time: their timings need the CPU.
static LOCK: Mutex<()> = Mutex::new(());

const VIP: &str = "10.77.0.50";
const PORT: u16 = 8000;

/// Upper bound for any single wait.
const PATIENCE: Duration = Duration::from_secs(15);

fn ip_of(node: &str) -> String {
    match node {
        "a" => "10.77.0.11".into(),
        "b" => "10.77.0.12".into(),
        _ => "10.77.0.100".into(),
    }
}

/// Whether the test can run here; a skip is loud, and fatal under CI.
fn can_run(need_keepalived: bool) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    let ip = Command::new("ip").arg("-V").output().is_ok();
    let keepalived =
        !need_keepalived || Command::new("keepalived").arg("--version").output().is_ok();
    if root && ip && keepalived {
        return true;
    }
    let why = if !root {
        "not root (network namespaces and raw sockets need it)"
    } else if !ip {
        "iproute2 (`ip`) is not installed"
    } else {
        "keepalived is not installed (apt-get install keepalived)"
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "VRRP test cannot run under CI: {why}"
    );
    eprintln!("\n*** SKIPPED: VRRP namespace test: {why} ***\n");
    false
}

/// What runs on a router node.
enum Proc {
    Ballast(Child),
    Keepalived(Child),
}

impl Proc {
    fn child(&mut self) -> &mut Child {
        match self {
            Proc::Ballast(c) | Proc::Keepalived(c) => c,
        }
    }
}

/// A lab: switch, routers `a` and `b`, client `c`; removed on drop.
struct Lab {
    prefix: String,
    dir: PathBuf,
    procs: Vec<(String, Proc, PathBuf)>,
    /// Netlink sockets opened inside each router's namespace, for fast polling.
    netlink: Vec<(String, Netlink)>,
    stop: Arc<AtomicBool>,
    /// The virtual address and its prefix length.
    vip: (IpAddr, u8),
    /// When the last crash, stop or tracked change was caused: takeover times count from here.
    mark: Instant,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let prefix = format!("bv{}{tag}", std::process::id());
        let dir = std::env::temp_dir().join(format!("ballast-vrrp-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut lab = Lab {
            prefix,
            dir,
            procs: Vec::new(),
            netlink: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            vip: (VIP.parse().expect("vip"), 24),
            mark: Instant::now(),
        };
        let sw = lab.ns("sw");
        sh(&["ip", "netns", "add", &sw]);
        sh(&[
            "ip",
            "-n",
            &sw,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ]);
        sh(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        for (i, node) in ["a", "b", "c"].iter().enumerate() {
            let ns = lab.ns(node);
            sh(&["ip", "netns", "add", &ns]);
            let port = format!("p-{node}");
            let mac = format!("02:00:0a:4d:00:{:02x}", i + 1);
            sh(&[
                "ip", "link", "add", &port, "netns", &sw, "type", "veth", "peer", "name", "eth0",
                "netns", &ns, "address", &mac,
            ]);
            sh(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            // No duplicate address detection: the IPv6 link-local address VRRPv3 sends from is
            // usable as soon as the link is up.
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.eth0.accept_dad=0",
            ]);
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", ip_of(node)),
                "dev",
                "eth0",
            ]);
            if *node != "c" {
                let nl = in_ns(&ns, || Netlink::open().expect("netlink in namespace"));
                lab.netlink.push((node.to_string(), nl));
            }
        }
        lab
    }

    fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    /// A TCP service on 0.0.0.0:`port` in `node` that answers each connection with the node's
    /// name (what a client reaching the VIP sees). Stops with the lab.
    fn service(&self, node: &str, port: u16) {
        let name = node.to_string();
        let stop = Arc::clone(&self.stop);
        let ns = self.ns(node);
        let ready = Arc::new(AtomicBool::new(false));
        let r = Arc::clone(&ready);
        thread::spawn(move || {
            let fd = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let l = TcpListener::bind(("0.0.0.0", port)).expect("bind service");
            l.set_nonblocking(true).expect("nonblocking");
            r.store(true, Ordering::SeqCst);
            while !stop.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.write_all(format!("{name}\n").as_bytes());
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        wait("service ready", Duration::from_secs(5), || {
            ready.load(Ordering::SeqCst)
        });
    }

    /// Who answers a client in `c` connecting to VIP:PORT (200 ms limit), if anyone.
    fn client(&self) -> Option<String> {
        in_ns(&self.ns("c"), || {
            let addr: SocketAddr = format!("{VIP}:{PORT}").parse().ok()?;
            let s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
            s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).ok()?;
            Some(line.trim().to_string())
        })
    }

    /// Whether `node` has the VIP configured.
    fn holds(&mut self, node: &str) -> bool {
        let vip = self.vip.0;
        let nl = &mut self
            .netlink
            .iter_mut()
            .find(|(n, _)| n == node)
            .expect("router node")
            .1;
        nl.all_addresses()
            .expect("address dump")
            .iter()
            .any(|(_, a)| a.addr == vip)
    }

    fn holders(&mut self) -> (bool, bool) {
        (self.holds("a"), self.holds("b"))
    }

    /// Polls (every 2 ms) until `cond`; returns the time it took. Fails after `limit`.
    fn until(
        &mut self,
        what: &str,
        limit: Duration,
        mut cond: impl FnMut(&mut Lab) -> bool,
    ) -> Duration {
        let t0 = Instant::now();
        while !cond(self) {
            if t0.elapsed() > limit {
                let logs = self.logs();
                panic!("timed out after {limit:?} waiting for: {what}\n{logs}");
            }
            thread::sleep(Duration::from_millis(2));
        }
        t0.elapsed()
    }

    /// Waits until `cond`; returns the time since the mark (the crash, stop or change that
    /// caused the takeover), not since the call.
    fn takeover(&mut self, what: &str, cond: impl FnMut(&mut Lab) -> bool) -> Duration {
        self.until(what, PATIENCE, cond);
        self.mark.elapsed()
    }

    /// Asserts that exactly one router holds the VIP, `who`, for the whole of `span`.
    fn exactly_one_for(&mut self, who: &str, span: Duration) {
        let t0 = Instant::now();
        while t0.elapsed() < span {
            let (a, b) = self.holders();
            let ok = if who == "a" { a && !b } else { b && !a };
            if !ok {
                let logs = self.logs();
                panic!(
                    "expected only {who} to hold {}, got a={a} b={b}\n{logs}",
                    self.vip.0
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Removes a VIP a crash left behind, as a reboot would.
    fn forget_vip(&self, node: &str) {
        let _ = Command::new("ip")
            .args([
                "-n",
                &self.ns(node),
                "addr",
                "del",
                &format!("{}/{}", self.vip.0, self.vip.1),
                "dev",
                "eth0",
            ])
            .output();
    }

    fn port(&self, node: &str, up: bool) {
        let sw = self.ns("sw");
        sh(&[
            "ip",
            "-n",
            &sw,
            "link",
            "set",
            &format!("p-{node}"),
            if up { "up" } else { "down" },
        ]);
    }

    /// Starts ballast on `node` with one VRRP instance (`extra` lines appended) and, when
    /// `listener`, a TCP listener on VIP:PORT in front of the node's service on 127.0.0.1:7000.
    fn ballast(&mut self, node: &str, priority: u8, instance: &str, listener: bool) {
        let conf = self.dir.join(format!("{node}-ballast.toml"));
        let mut text = String::from(
            "[global]\nshutdown_grace = \"1s\"\nthreads = 2\nlog_level = \"info,ballast=debug\"\n",
        );
        if listener {
            text.push_str(&format!(
                "[[listener]]\nname = \"vip\"\nbind = \"{VIP}:{PORT}\"\nupstream = \"svc\"\nworkers = 1\n\
                 [[upstream]]\nname = \"svc\"\n[[upstream.server]]\naddress = \"127.0.0.1:7000\"\n"
            ));
        }
        text.push_str(&format!(
            "[vrrp]\n[[vrrp.instance]]\nname = \"VI_51\"\ninterface = \"eth0\"\nvirtual_router_id = 51\n\
             priority = {priority}\nvirtual_ipaddress = [\"{}/{}\"]\n{instance}\n",
            self.vip.0, self.vip.1
        ));
        std::fs::write(&conf, text).expect("write config");
        let log = self.dir.join(format!("{node}-ballast.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(node)])
            .arg(env!("CARGO_BIN_EXE_ballast"))
            .args(["run", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .process_group(0)
            .spawn()
            .expect("spawn ballast");
        self.procs
            .push((node.to_string(), Proc::Ballast(child), log));
    }

    /// A keepalived.conf with one `vrrp_instance VI_51` (and `instance`'s extra lines).
    fn keepalived_conf(&self, node: &str, priority: u8, instance: &str, version: u8) -> String {
        format!(
            "global_defs {{\n    router_id {node}\n    vrrp_version {version}\n}}\n\
             vrrp_instance VI_51 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 51\n\
             priority {priority}\n{instance}\n    virtual_ipaddress {{\n        {}/{} dev eth0\n    }}\n}}\n",
            self.vip.0, self.vip.1
        )
    }

    /// Starts ballast on `node` on a keepalived.conf, as it is (`ballast run --keepalived`).
    fn ballast_on_keepalived_conf(
        &mut self,
        node: &str,
        priority: u8,
        instance: &str,
        version: u8,
    ) {
        let conf = self.dir.join(format!("{node}-for-ballast-keepalived.conf"));
        std::fs::write(
            &conf,
            self.keepalived_conf(node, priority, instance, version),
        )
        .expect("write keepalived.conf");
        let log = self.dir.join(format!("{node}-ballast.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(node)])
            .arg(env!("CARGO_BIN_EXE_ballast"))
            .args(["run", "--keepalived"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .process_group(0)
            .spawn()
            .expect("spawn ballast");
        self.procs
            .push((node.to_string(), Proc::Ballast(child), log));
    }

    /// Starts keepalived on `node` (VRRP only, foreground, its own pid files and log).
    fn keepalived(&mut self, node: &str, priority: u8, instance: &str, version: u8) {
        let d = self.dir.join(format!("{node}-keepalived"));
        std::fs::create_dir_all(&d).expect("mkdir");
        let conf = d.join("keepalived.conf");
        std::fs::write(
            &conf,
            self.keepalived_conf(node, priority, instance, version),
        )
        .expect("write keepalived.conf");
        let log = d.join("log");
        // A crashed instance leaves its pid files, and its VRRP child may linger as a zombie
        // (reparented to a pid 1 that does not reap), which keepalived would take for a running
        // daemon.
        for f in ["keepalived.pid", "vrrp.pid", "checkers.pid", "bfd.pid"] {
            let _ = std::fs::remove_file(d.join(f));
        }
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let p = |f: &str| d.join(f).display().to_string();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(node),
                "keepalived",
                "-n",
                "-l",
                "-D",
                "-G",
                "-P",
                "-f",
            ])
            .arg(&conf)
            .args([
                "-p",
                &p("keepalived.pid"),
                "-r",
                &p("vrrp.pid"),
                "-c",
                &p("checkers.pid"),
                "-b",
                &p("bfd.pid"),
            ])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .expect("spawn keepalived");
        self.procs
            .push((node.to_string(), Proc::Keepalived(child), log));
    }

    fn proc_of(&mut self, node: &str) -> &mut Child {
        self.procs
            .iter_mut()
            .rev()
            .find(|(n, p, _)| n == node && matches!(p, Proc::Ballast(_) | Proc::Keepalived(_)))
            .expect("process on node")
            .1
            .child()
    }

    /// SIGKILL of the node's whole process group (Keepalived's VRRP work is in a child).
    fn crash(&mut self, node: &str) {
        self.mark = Instant::now();
        let c = self.proc_of(node);
        let pgid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).expect("pid"));
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = c.wait();
    }

    /// SIGTERM to the node's process group: a clean stop.
    fn stop_clean(&mut self, node: &str) {
        self.mark = Instant::now();
        let c = self.proc_of(node);
        let pgid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).expect("pid"));
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
    }

    fn wait_exit(&mut self, node: &str) -> std::process::ExitStatus {
        let c = self.proc_of(node);
        let t0 = Instant::now();
        loop {
            if let Some(s) = c.try_wait().expect("try_wait") {
                return s;
            }
            assert!(t0.elapsed() < PATIENCE, "process on {node} did not exit");
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for (node, _, log) in &self.procs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- {node}: {} (last lines)\n", log.display()));
            for l in tail.iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for (_, p, _) in &mut self.procs {
            let c = p.child();
            if let Ok(None) = c.try_wait() {
                let pgid = nix::unistd::Pid::from_raw(i32::try_from(c.id()).unwrap_or(0));
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                let _ = c.wait();
            }
        }
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for node in ["a", "b", "c", "sw"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(node)])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Master_Down_Interval for `priority` at `advert` (v3 formula; v2 is the same at whole seconds).
fn mdi(priority: u8, advert: Duration) -> Duration {
    advert * 3 + skew(priority, advert)
}

fn skew(priority: u8, advert: Duration) -> Duration {
    advert * (256 - u32::from(priority)) / 256
}

/// Waits until a client in `c` is served by `who`.
fn served_by(lab: &mut Lab, who: &str, limit: Duration) -> Duration {
    let want = who.to_string();
    lab.until(&format!("client served by {who}"), limit, |l| {
        l.client().as_deref() == Some(want.as_str())
    })
}

/// Sends three bad VRRPv2 adverts for VRID 51 from the client namespace to 224.0.0.18.
fn inject_bad_adverts(lab: &Lab) {
    use ballast::vrrp::packet::{encode, Advert, Auth, Version, GROUP_V4};
    use socket2::{Domain, Protocol, Socket, Type};
    let src: IpAddr = ip_of("c").parse().expect("ip");
    let group = IpAddr::V4(GROUP_V4);
    let advert = |pass: &str| Advert {
        version: Version::V2,
        vrid: 51,
        priority: 254,
        interval: 1,
        addrs: vec![VIP.parse().expect("vip")],
        auth: Auth::pass(pass),
    };
    let wrong_password = encode(&advert("guess"), src, group);
    let good = encode(&advert("secret"), src, group);
    let mut bad_checksum = good.clone();
    bad_checksum[6] ^= 0xff;
    in_ns(&lab.ns("c"), move || {
        let s =
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112))).expect("raw socket");
        s.set_multicast_if_v4(&"10.77.0.100".parse().expect("ip"))
            .expect("mcast if");
        let to: SocketAddr = SocketAddr::new(group, 0);
        s.set_multicast_ttl_v4(255).expect("ttl");
        s.send_to(&wrong_password, &to.into()).expect("send");
        s.send_to(&bad_checksum, &to.into()).expect("send");
        // A correct advert, but from beyond a router.
        s.set_multicast_ttl_v4(64).expect("ttl");
        s.send_to(&good, &to.into()).expect("send");
    });
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Startup and scheduling allowance on top of the formulas.
const MARGIN: Duration = Duration::from_millis(600);

#[test]
fn ballast_pair_v3_fails_over_on_kill_preempts_back_and_stops_cleanly() {
    if !can_run(false) {
        return;
    }
    let _g = lock();
    let advert = Duration::from_millis(100);
    let mut lab = Lab::new("p3");
    lab.service("a", 7000);
    lab.service("b", 7000);
    let inst = "version = 3\nadvert_int = \"100ms\"\ngarp_master_delay = \"1s\"";
    lab.ballast("a", 100, inst, true);
    lab.ballast("b", 90, inst, true);
    lab.until("a holds the VIP alone", PATIENCE, |l| {
        l.holders() == (true, false)
    });
    lab.exactly_one_for("a", Duration::from_millis(500));
    served_by(&mut lab, "a", Duration::from_secs(2));

    // Crash: SIGKILL and the node's link down.
    lab.crash("a");
    lab.port("a", false);
    let t = lab.takeover("b takes the VIP", |l| l.holds("b"));
    let limit = mdi(90, advert) + MARGIN;
    assert!(
        t <= limit,
        "failover took {t:?}; Master_Down_Interval {:?} + margin",
        mdi(90, advert)
    );
    let t2 = served_by(&mut lab, "b", Duration::from_secs(2));
    eprintln!(
        "ballast↔ballast v3 100ms: kill → VIP on backup {t:?}, → client served {:?}",
        t + t2
    );

    // The node comes back (its stale VIP is removed by ballast at start) and preempts.
    lab.port("a", true);
    lab.mark = Instant::now();
    lab.ballast("a", 100, inst, true);
    let t = lab.takeover("a preempts", |l| l.holders() == (true, false));
    assert!(
        t <= mdi(100, advert) + Duration::from_secs(2),
        "preemption took {t:?}"
    );
    served_by(&mut lab, "a", Duration::from_secs(2));
    lab.exactly_one_for("a", Duration::from_millis(300));

    // Clean stop: priority 0, the VIP removed, exit 0, and b takes over.
    lab.stop_clean("a");
    lab.until("b takes the VIP after a clean stop", PATIENCE, |l| {
        l.holders() == (false, true)
    });
    assert!(lab.wait_exit("a").success(), "ballast exits 0");
    served_by(&mut lab, "b", Duration::from_secs(2));
}

#[test]
fn ballast_pair_v2_pass_clean_stop_hands_over_after_skew_time() {
    if !can_run(false) {
        return;
    }
    let _g = lock();
    let advert = Duration::from_secs(1);
    let mut lab = Lab::new("p2");
    let inst = "authentication = { auth_type = \"PASS\", auth_pass = \"secret\" }";
    lab.ballast("a", 100, inst, false);
    lab.ballast("b", 90, inst, false);
    lab.until("a holds the VIP alone", PATIENCE, |l| {
        l.holders() == (true, false)
    });
    lab.exactly_one_for("a", Duration::from_millis(1200));

    // Hostile adverts from the client's namespace, each claiming priority 254: a wrong password,
    // a TTL that is not 255, a broken checksum. All are dropped and counted, none moves the VIP.
    inject_bad_adverts(&lab);
    lab.exactly_one_for("a", Duration::from_millis(500));
    let log = lab.dir.join("a-ballast.log");
    let read = move || std::fs::read_to_string(&log).unwrap_or_default();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(lab.proc_of("a").id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).expect("SIGUSR1");
    wait("drop counters in the SIGUSR1 table", PATIENCE, || {
        read().contains("dropped ttl=1 checksum=1 auth_password=1")
    });
    assert!(
        read().contains("reason=\"auth_password\""),
        "the first drop of a kind is logged"
    );

    lab.stop_clean("a");
    let t = lab.takeover("b takes over", |l| l.holds("b"));
    // Skew_Time for priority 90 is 0.648 s; without the priority-0 advert it would take the whole
    // Master_Down_Interval, 3.648 s.
    let limit = skew(90, advert) + MARGIN;
    assert!(
        t <= limit,
        "takeover after a clean stop took {t:?}; Skew_Time {:?}",
        skew(90, advert)
    );
    assert!(t < mdi(90, advert) / 2);
    eprintln!(
        "ballast↔ballast v2 1s: SIGTERM → VIP on backup {t:?} (Skew_Time {:?})",
        skew(90, advert)
    );
    assert!(lab.wait_exit("a").success());
}

#[test]
fn ballast_and_keepalived_v3_fail_over_both_ways() {
    if !can_run(true) {
        return;
    }
    let _g = lock();
    let advert = Duration::from_millis(100);
    let mut lab = Lab::new("k3");
    lab.service("a", PORT);
    lab.service("b", PORT);
    let ballast_inst = "version = 3\nadvert_int = \"100ms\"";
    let ka_inst = "    advert_int 0.1";

    // ballast MASTER, keepalived BACKUP.
    lab.ballast("a", 100, ballast_inst, false);
    lab.keepalived("b", 90, ka_inst, 3);
    lab.until("ballast (a) holds the VIP alone", PATIENCE, |l| {
        l.holders() == (true, false)
    });
    lab.exactly_one_for("a", Duration::from_millis(800));
    served_by(&mut lab, "a", Duration::from_secs(2));
    lab.crash("a");
    lab.port("a", false);
    let t = lab.takeover("keepalived (b) takes over", |l| l.holds("b"));
    assert!(t <= mdi(90, advert) + MARGIN, "keepalived took {t:?}");
    served_by(&mut lab, "b", Duration::from_secs(2));
    eprintln!("ballast→keepalived v3 100ms: kill → VIP {t:?}");
    lab.port("a", true);
    lab.ballast("a", 100, ballast_inst, false);
    lab.until("ballast preempts keepalived", PATIENCE, |l| {
        l.holders() == (true, false)
    });
    lab.exactly_one_for("a", Duration::from_millis(500));
    served_by(&mut lab, "a", Duration::from_secs(2));

    // keepalived MASTER, ballast BACKUP.
    lab.crash("a");
    lab.crash("b");
    lab.forget_vip("a");
    lab.keepalived("a", 100, ka_inst, 3);
    lab.ballast("b", 90, ballast_inst, false);
    lab.until("keepalived (a) holds the VIP alone", PATIENCE, |l| {
        l.holders() == (true, false)
    });
    lab.exactly_one_for("a", Duration::from_millis(800));
    lab.crash("a");
    lab.port("a", false);
    let t = lab.takeover("ballast (b) takes over", |l| l.holds("b"));
    assert!(t <= mdi(90, advert) + MARGIN, "ballast took {t:?}");
    served_by(&mut lab, "b", Duration::from_secs(2));
    eprintln!("keepalived→ballast v3 100ms: kill → VIP {t:?}");
    lab.port("a", true);
    lab.keepalived("a", 100, ka_inst, 3);
    lab.until("keepalived preempts ballast", PATIENCE, |l| {
        l.holders() == (true, false)
    });
    served_by(&mut lab, "a", Duration::from_secs(2));
}

#[test]
fn ballast_and_keepalived_v2_pass_hand_over_both_ways() {
    if !can_run(true) {
        return;
    }
    let _g = lock();
    let advert = Duration::from_secs(1);
    let mut lab = Lab::new("k2");
    lab.service("a", PORT);
    lab.service("b", PORT);
    let ballast_inst = "authentication = { auth_type = \"PASS\", auth_pass = \"secret\" }";
    let ka_inst = "    advert_int 1\n    authentication {\n        auth_type PASS\n        auth_pass secret\n    }";

    // ballast MASTER (100), keepalived BACKUP (90): keepalived must accept ballast's PASS adverts,
    // or it would take the VIP too after 3.6 s.
    lab.ballast("a", 100, ballast_inst, false);
    lab.keepalived("b", 90, ka_inst, 2);
    lab.until("ballast (a) holds the VIP alone", PATIENCE, |l| {
        l.holders() == (true, false)
    });
    lab.exactly_one_for("a", Duration::from_millis(1500));
    lab.stop_clean("a");
    let t = lab.takeover("keepalived takes over after ballast's priority 0", |l| {
        l.holds("b")
    });
    assert!(t <= skew(90, advert) + MARGIN, "keepalived took {t:?}");
    assert!(!lab.holds("a"));
    served_by(&mut lab, "b", Duration::from_secs(2));
    eprintln!("ballast→keepalived v2 PASS 1s: SIGTERM → VIP {t:?}");
    assert!(lab.wait_exit("a").success());

    // ballast returns as BACKUP (80) behind keepalived: it must accept keepalived's adverts for
    // longer than its own Master_Down_Interval (3.69 s), then take over on keepalived's stop.
    lab.ballast("a", 80, ballast_inst, false);
    lab.exactly_one_for("b", mdi(80, advert) + Duration::from_millis(500));
    lab.stop_clean("b");
    let t = lab.takeover("ballast takes over after keepalived's priority 0", |l| {
        l.holds("a")
    });
    assert!(t <= skew(80, advert) + MARGIN, "ballast took {t:?}");
    served_by(&mut lab, "a", Duration::from_secs(2));
    eprintln!("keepalived→ballast v2 PASS 1s: SIGTERM → VIP {t:?}");
}

#[test]
fn tracking_moves_the_vip_and_notify_commands_run() {
    if !can_run(false) {
        return;
    }
    let _g = lock();
    let advert = Duration::from_millis(100);
    let mut lab = Lab::new("tr");
    let flag = lab.dir.join("a-script-fails");
    let notes = lab.dir.join("a-notify");
    let fault = lab.dir.join("a-fault");
    let ns_a = lab.ns("a");
    // A tracked link of a's own (a veth pair inside a; not every kernel has dummy interfaces).
    sh(&[
        "ip", "-n", &ns_a, "link", "add", "trk0", "type", "veth", "peer", "name", "trk1",
    ]);
    sh(&["ip", "-n", &ns_a, "link", "set", "trk1", "up"]);
    sh(&["ip", "-n", &ns_a, "link", "set", "trk0", "up"]);
    let inst_a = format!(
        "version = 3\nadvert_int = \"100ms\"\n\
         track_script = [{{ script = \"test ! -e {}\", interval = \"50ms\", weight = -20 }}]\n\
         track_interface = [{{ interface = \"trk0\" }}]\n\
         notify = \"f() {{ echo \\\"$*\\\" >> {}; }}; f\"\n\
         notify_fault = \"touch {}\"",
        flag.display(),
        notes.display(),
        fault.display()
    );
    lab.ballast("a", 100, &inst_a, false);
    lab.ballast("b", 90, "version = 3\nadvert_int = \"100ms\"", false);
    lab.until("a holds the VIP alone", PATIENCE, |l| {
        l.holders() == (true, false)
    });
    let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    wait("notify MASTER", PATIENCE, || {
        read(&notes).contains("INSTANCE VI_51 MASTER 100")
    });

    // The script fails: a's priority drops to 80, below b's 90, and b preempts.
    lab.mark = Instant::now();
    std::fs::write(&flag, b"").expect("flag");
    let t = lab.takeover("b preempts a weakened a", |l| l.holders() == (false, true));
    assert!(t <= mdi(90, advert) + MARGIN, "took {t:?}");
    wait("notify BACKUP", PATIENCE, || {
        read(&notes).contains("INSTANCE VI_51 BACKUP 80")
    });

    // The script recovers: a is back at 100 and preempts b.
    std::fs::remove_file(&flag).expect("flag");
    lab.until("a preempts again", PATIENCE, |l| {
        l.holders() == (true, false)
    });

    // A tracked interface with weight 0 goes down: FAULT, priority 0 on the wire, b takes over
    // after its Skew_Time rather than its Master_Down_Interval.
    lab.mark = Instant::now();
    sh(&["ip", "-n", &ns_a, "link", "set", "trk0", "down"]);
    let t = lab.takeover("b takes over from a faulty a", |l| {
        l.holders() == (false, true)
    });
    assert!(t <= skew(90, advert) + MARGIN, "took {t:?}");
    wait("notify_fault ran", PATIENCE, || fault.exists());
    wait("notify FAULT", PATIENCE, || {
        read(&notes).contains("INSTANCE VI_51 FAULT")
    });
    sh(&["ip", "-n", &ns_a, "link", "set", "trk0", "up"]);
    lab.until("a recovers and preempts", PATIENCE, |l| {
        l.holders() == (true, false)
    });
}

#[test]
fn ballast_pair_v3_ipv6_fails_over() {
    if !can_run(false) {
        return;
    }
    let _g = lock();
    let advert = Duration::from_millis(100);
    let mut lab = Lab::new("v6");
    lab.vip = ("fd77::50".parse().expect("vip"), 64);
    let inst = "advert_int = \"100ms\"";
    lab.ballast("a", 100, inst, false);
    lab.ballast("b", 90, inst, false);
    lab.until("a holds the IPv6 VIP alone", PATIENCE, |l| {
        l.holders() == (true, false)
    });
    lab.exactly_one_for("a", Duration::from_millis(500));
    lab.crash("a");
    lab.port("a", false);
    let t = lab.takeover("b takes the IPv6 VIP", |l| l.holds("b"));
    assert!(t <= mdi(90, advert) + MARGIN, "failover took {t:?}");
    eprintln!("ballast↔ballast v3 IPv6 100ms: kill → VIP on backup {t:?}");
    lab.port("a", true);
    lab.ballast("a", 100, inst, false);
    lab.until("a preempts", PATIENCE, |l| l.holders() == (true, false));
}

#[test]
fn ballast_and_keepalived_unicast_v3_fail_over() {
    if !can_run(true) {
        return;
    }
    let _g = lock();
    let advert = Duration::from_millis(100);
    let mut lab = Lab::new("u3");
    let (a, b) = (ip_of("a"), ip_of("b"));
    let ballast_inst = format!("version = 3\nadvert_int = \"100ms\"\nunicast_peer = [\"{b}\"]");
    let ka_inst = format!(
        "    advert_int 0.1\n    unicast_src_ip {b}\n    unicast_peer {{\n        {a}\n    }}"
    );
    lab.ballast("a", 100, &ballast_inst, false);
    lab.keepalived("b", 90, &ka_inst, 3);
    lab.until("ballast (a) holds the VIP alone", PATIENCE, |l| {
        l.holders() == (true, false)
    });
    // keepalived hears ballast's unicast adverts (pseudo-header checksum over the peer
    // address), or it would take the VIP after 0.365 s.
    lab.exactly_one_for("a", Duration::from_millis(800));
    lab.crash("a");
    let t = lab.takeover("keepalived takes over", |l| l.holds("b"));
    assert!(t <= mdi(90, advert) + MARGIN, "took {t:?}");
    // ballast comes back and preempts: it hears keepalived's unicast adverts too.
    lab.forget_vip("a");
    lab.ballast("a", 100, &ballast_inst, false);
    lab.until("ballast preempts", PATIENCE, |l| {
        l.holders() == (true, false)
    });
    lab.exactly_one_for("a", Duration::from_millis(500));
}

#[test]
fn ballast_and_keepalived_v3_ipv6_fail_over() {
    if !can_run(true) {
        return;
    }
    let _g = lock();
    let advert = Duration::from_millis(100);
    let mut lab = Lab::new("k6");
    lab.vip = ("fd77::50".parse().expect("vip"), 64);
    let ballast_inst = "advert_int = \"100ms\"";
    let ka_inst = "    advert_int 0.1";
    lab.ballast("a", 100, ballast_inst, false);
    lab.keepalived("b", 90, ka_inst, 3);
    lab.until("ballast (a) holds the IPv6 VIP alone", PATIENCE, |l| {
        l.holders() == (true, false)
    });
    // keepalived checks ballast's IPv6 pseudo-header checksum, or it would take the VIP too.
    lab.exactly_one_for("a", Duration::from_millis(800));
    lab.crash("a");
    lab.port("a", false);
    let t = lab.takeover("keepalived takes the IPv6 VIP", |l| l.holds("b"));
    assert!(t <= mdi(90, advert) + MARGIN, "took {t:?}");
    eprintln!("ballast→keepalived v3 IPv6 100ms: kill → VIP {t:?}");
    lab.port("a", true);
    lab.ballast("a", 100, ballast_inst, false);
    lab.until("ballast preempts keepalived over IPv6", PATIENCE, |l| {
        l.holders() == (true, false)
    });
    lab.exactly_one_for("a", Duration::from_millis(500));
}

#[test]
fn ballast_runs_a_keepalived_conf_as_it_is_beside_a_real_keepalived() {
    if !can_run(true) {
        return;
    }
    let _g = lock();
    let advert = Duration::from_secs(1);
    let mut lab = Lab::new("kc");
    lab.service("a", PORT);
    lab.service("b", PORT);
    let inst = "    advert_int 1\n    authentication {\n        auth_type PASS\n        auth_pass secret\n    }";
    // The same keepalived.conf on both nodes but for the priority: one run by ballast.
    lab.ballast_on_keepalived_conf("a", 100, inst, 2);
    lab.keepalived("b", 90, inst, 2);
    lab.until("ballast (a) holds the VIP alone", PATIENCE, |l| {
        l.holders() == (true, false)
    });
    lab.exactly_one_for("a", Duration::from_millis(1500));
    lab.stop_clean("a");
    let t = lab.takeover("keepalived takes over after ballast's priority 0", |l| {
        l.holds("b")
    });
    assert!(t <= skew(90, advert) + MARGIN, "keepalived took {t:?}");
    assert!(lab.wait_exit("a").success());
}
