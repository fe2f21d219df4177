//! The `ballast` binary as an operator runs it: `demo`, `run` with signals, `check`.
//! Each test starts the real executable, talks to it over 127.0.0.1 and stops it with a signal.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(15);

fn ballast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ballast"))
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Kills the child if the test fails half way, so no process outlives the test.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success());
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "ballast did not exit in time");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A backend thread: writes "hi\n", echoes, and after the client's FIN writes "bye".
fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let _ = s.write_all(b"hi\n");
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s.write_all(b"bye\n");
            });
        }
    });
    addr
}

fn write_config(
    dir: &std::path::Path,
    port: u16,
    backend: SocketAddr,
    grace: &str,
) -> std::path::PathBuf {
    let path = dir.join("ballast.toml");
    std::fs::write(
        &path,
        format!(
            "[global]\nshutdown_grace = \"{grace}\"\n\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:{port}\"\nupstream = \"app\"\nworkers = 2\n\n[[upstream]]\nname = \"app\"\nscheduler = \"rr\"\n\n[[upstream.server]]\naddress = \"{backend}\"\n"
        ),
    )
    .expect("write config");
    path
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ballast-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// Starts `ballast run` on a free port in front of one backend; returns once it listens.
fn run_with_backend(name: &str, grace: &str) -> (Guard, SocketAddr, std::path::PathBuf) {
    let dir = tempdir(name);
    let port = free_port();
    let cfg = write_config(&dir, port, backend(), grace);
    let child = Guard(
        ballast()
            .args(["run", "-c"])
            .arg(&cfg)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    wait_listening(addr);
    (child, addr, dir)
}

#[test]
fn sigterm_stops_accepting_lets_connections_finish_and_exits_zero() {
    let (mut child, addr, dir) = run_with_backend("sigterm", "10s");

    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut r = BufReader::new(conn.try_clone().expect("clone"));
    let mut line = String::new();
    r.read_line(&mut line).expect("hi");
    assert_eq!(line, "hi\n");

    child.signal("TERM");
    // New connections are refused once ballast closed its listening sockets.
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        thread::sleep(Duration::from_millis(20));
    }
    // The established connection still works, then ends cleanly.
    conn.write_all(b"after\n").expect("write");
    line.clear();
    r.read_line(&mut line).expect("echo");
    assert_eq!(line, "after\n");
    conn.shutdown(std::net::Shutdown::Write).expect("fin");
    line.clear();
    r.read_line(&mut line).expect("bye");
    assert_eq!(line, "bye\n");
    drop(r);
    drop(conn);
    let status = child.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigterm_with_a_stuck_connection_exits_zero_after_the_grace_period() {
    let (mut child, addr, dir) = run_with_backend("grace", "500ms");
    let conn = TcpStream::connect(addr).expect("connect");
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).expect("hi");
    let started = Instant::now();
    child.signal("INT");
    let status = child.wait_exit();
    assert_eq!(status.code(), Some(0));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "exited before the grace period: {took:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn demo_spreads_connections_over_three_backends_and_stops_on_sigint() {
    let port = free_port();
    let mut child = Guard(
        ballast()
            .args(["demo", "--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn demo"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    wait_listening(addr);
    let mut names = std::collections::HashSet::new();
    for _ in 0..6 {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
        s.write_all(b"GET / HTTP/1.0\r\nHost: demo\r\n\r\n")
            .expect("request");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("response");
        assert!(resp.starts_with("HTTP/1.0 200 OK"), "{resp}");
        let body = resp
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        assert!(body.starts_with("hello from backend-"), "{body}");
        names.insert(body);
    }
    assert_eq!(
        names.len(),
        3,
        "round robin reaches all three backends: {names:?}"
    );
    child.signal("INT");
    let status = child.wait_exit();
    assert_eq!(status.code(), Some(0));
    let mut out = String::new();
    if let Some(mut o) = child.0.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    assert!(
        out.contains(&format!("curl -s http://127.0.0.1:{port}/")),
        "{out}"
    );
}

#[test]
fn check_accepts_a_good_file_and_names_file_line_and_key_for_a_bad_one() {
    let dir = tempdir("check");
    let good = write_config(&dir, 8080, "127.0.0.1:9000".parse().expect("addr"), "5s");
    let out = ballast()
        .args(["check", "-c"])
        .arg(&good)
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok (1 listeners, 1 upstreams, 1 servers)"),
        "{stdout}"
    );

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\nupstream = \"api\"\n\n[[upstream]]\nname = \"app\"\n\n[[upstream.server]]\naddress = \"127.0.0.1:9000\"\nweight = 70000\n",
    )
    .expect("write");
    let out = ballast()
        .args(["check", "-c"])
        .arg(&bad)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let path = bad.display().to_string();
    assert!(
        stderr.contains(&format!("{path}:4:")),
        "names file:line of the bad upstream: {stderr}"
    );
    assert!(stderr.contains("\"api\""), "{stderr}");
    assert!(
        stderr.contains(&format!("{path}:11:")),
        "names file:line of the bad weight: {stderr}"
    );
    assert!(
        stderr.contains("0..=65535"),
        "says what is allowed: {stderr}"
    );

    let out = ballast()
        .args(["check", "-c"])
        .arg(dir.join("missing.toml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_backlog_above_somaxconn_is_reported_at_check_and_at_start() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("read somaxconn")
        .trim()
        .parse()
        .expect("number");
    if somaxconn >= 65535 {
        // The largest backlog ballast accepts cannot exceed it: nothing to warn about here.
        eprintln!("SKIPPED: net.core.somaxconn is {somaxconn}; no backlog can be truncated");
        assert!(std::env::var("CI").is_err(), "a skip is a failure in CI");
        return;
    }
    let backlog = somaxconn + 1;
    let dir = tempdir("somaxconn");
    let port = free_port();
    let cfg = write_config(&dir, port, backend(), "1s");
    let text = std::fs::read_to_string(&cfg).expect("read");
    let text = text.replace("workers = 2", &format!("workers = 2\nbacklog = {backlog}"));
    std::fs::write(&cfg, text).expect("write");
    let expected = format!(
        "listener \"web\" asks for backlog {backlog} but net.core.somaxconn is {somaxconn}"
    );

    let out = ballast()
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .expect("check");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("warning: {expected}")), "{stdout}");

    let mut child = Guard(
        ballast()
            .args(["run", "-c"])
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    wait_listening(format!("127.0.0.1:{port}").parse().expect("addr"));
    child.signal("TERM");
    assert_eq!(child.wait_exit().code(), Some(0));
    let mut stderr = String::new();
    if let Some(mut e) = child.0.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(stderr.contains(&expected), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
