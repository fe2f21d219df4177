//! Configurations operators already have, imported: Keepalived, nginx and ipvsadm-save files in
//! `tests/compat/` are each imported to TOML and compared with the golden `.toml` beside them
//! (`BALLAST_BLESS=1 cargo test --test compat` rewrites the goldens), the error corpus gives
//! exact messages, and the tutorial configurations run end to end on loopback with real servers.
//!
//! Corpus files hold placeholders (`@VIP_IP@`, `@VIP_PORT@`, `@RS1_IP@`, `@RS1_PORT@`, …,
//! `@DELAY_LOOP@`, `@RETRY_DELAY@`) so that one file serves both: the golden run fills in
//! documentation addresses and tutorial timings, the end-to-end run 127.0.0.1, the test's own
//! ports and short intervals.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ballast::import::{self, Format};
use ballast::runtime::Runtime;
use common::killable::{tcp_exchange, Client, Killable, Kind};
use common::{eventually, PATIENCE};
use tokio::io::AsyncBufReadExt;

// === corpus plumbing ===

/// The placeholder values of the golden files: documentation addresses and tutorial timings.
fn golden_values() -> Vec<(String, String)> {
    let mut v = vec![
        ("@VIP_IP@".to_string(), "192.168.200.100".to_string()),
        ("@VIP_PORT@".into(), "80".into()),
        ("@VIP2_PORT@".into(), "443".into()),
        ("@DELAY_LOOP@".into(), "6".into()),
        ("@RETRY_DELAY@".into(), "3".into()),
    ];
    for i in 1..=4 {
        v.push((format!("@RS{i}_IP@"), format!("192.168.200.{}", i + 1)));
        v.push((format!("@RS{i}_PORT@"), "80".into()));
    }
    v
}

/// A temporary copy of `tests/compat/DIR` (subdirectories too, for includes) with placeholders
/// filled in.
fn materialise(dir: &str, values: &[(String, String)], tag: &str) -> PathBuf {
    let src = Path::new("tests/compat").join(dir);
    let dst =
        std::env::temp_dir().join(format!("ballast-compat-{tag}-{dir}-{}", std::process::id()));
    copy_tree(&src, &dst, values);
    dst
}

fn copy_tree(src: &Path, dst: &Path, values: &[(String, String)]) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read corpus dir") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &to, values);
        } else {
            let mut text = std::fs::read_to_string(e.path()).expect("read corpus file");
            for (k, v) in values {
                text = text.replace(k, v);
            }
            std::fs::write(&to, text).expect("write");
        }
    }
}

fn format_of(dir: &str) -> Format {
    match dir {
        "keepalived" => Format::Keepalived,
        "nginx" => Format::Nginx,
        _ => Format::Ipvsadm,
    }
}

// === golden files ===

/// Imports every top-level file of `tests/compat/DIR` (not `.toml`) and compares with `NAME.toml`.
fn golden(dir: &str) {
    let tmp = materialise(dir, &golden_values(), "golden");
    let bless = std::env::var_os("BALLAST_BLESS").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut seen = 0;
    let mut entries: Vec<_> = std::fs::read_dir(Path::new("tests/compat").join(dir))
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "conf" || x == "rules"))
        .collect();
    entries.sort();
    for path in entries {
        seen += 1;
        let file = path.file_name().expect("name");
        let rel = format!("tests/compat/{dir}/{}", file.to_string_lossy());
        let tmp_file = tmp.join(file);
        let imported = import::import_file(format_of(dir), &tmp_file)
            .unwrap_or_else(|e| panic!("{rel} does not import:\n{e}"));
        // Every imported file must also be a valid ballast configuration.
        if let Err(e) = imported.config(&rel) {
            panic!(
                "{rel} imports to an invalid configuration:\n{e}\n---\n{}",
                imported.toml
            );
        }
        let text = imported.toml.replace(
            &format!("{}/", tmp.display()),
            &format!("tests/compat/{dir}/"),
        );
        let golden = path.with_extension("toml");
        if bless {
            std::fs::write(&golden, &text).expect("write golden");
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if want != text {
            failures.push(format!("{rel}: differs from {}:\n{text}", golden.display()));
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(seen > 0, "no corpus files in tests/compat/{dir}");
    assert!(
        failures.is_empty(),
        "{}\n(BALLAST_BLESS=1 cargo test --test compat rewrites the golden files)",
        failures.join("\n\n")
    );
}

#[test]
fn keepalived_corpus_matches_golden_files() {
    golden("keepalived");
}

#[test]
fn nginx_corpus_matches_golden_files() {
    golden("nginx");
}

#[test]
fn ipvsadm_corpus_matches_golden_files() {
    golden("ipvsadm");
}

// === errors ===

/// Imports `text` as `name` in a fresh directory (with `extra` files beside it) and returns the
/// error message, with the directory replaced by `DIR`.
fn error_of(format: Format, name: &str, text: &str, extra: &[(&str, &str)]) -> String {
    let dir = std::env::temp_dir().join(format!(
        "ballast-compat-err-{}-{}",
        name.replace('.', "-"),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (n, t) in extra {
        let p = dir.join(n);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, t).expect("write");
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    let result = import::load(format, &path);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok((_, imported)) => panic!("{name} imported, expected an error:\n{}", imported.toml),
        Err(e) => e
            .to_string()
            .replace(&format!("{}/", dir.display()), "DIR/"),
    }
}

/// (name, text, files beside it, expected message).
type ErrorCase<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

#[test]
fn keepalived_errors_name_the_file_line_and_directive() {
    let cases: &[ErrorCase] = &[
        (
            "typo",
            "virtual_server 10.0.0.1 80 {\n    lb_algoo rr\n    real_server 10.0.1.1 80 {\n    }\n}\n",
            &[],
            "DIR/typo.conf:2: lb_algoo: unknown or unsupported directive in virtual_server; did you mean lb_algo?",
        ),
        (
            "unbalanced",
            "virtual_server 10.0.0.1 80 {\n    lb_algo rr\n    real_server 10.0.1.1 80 {\n}\n",
            &[],
            "DIR/unbalanced.conf:1: unbalanced braces: this { is never closed",
        ),
        (
            "extra-close",
            "global_defs {\n    router_id A\n}\n}\n",
            &[],
            "DIR/extra-close.conf:4: unbalanced braces: this } closes no block",
        ),
        (
            "bad-include",
            "include conf.d/missing.conf\n",
            &[],
            "DIR/bad-include.conf:1: include \"conf.d/missing.conf\": no such file DIR/conf.d/missing.conf",
        ),
        (
            "include-error",
            "include conf.d/*.conf\n",
            &[("conf.d/a.conf", "virtual_server 10.0.0.1 80 {\n  lb_algo sed2\n  real_server 10.0.1.1 80 {\n  }\n}\n")],
            "DIR/conf.d/a.conf:2: lb_algo \"sed2\": not an LVS scheduler; allowed: rr, wrr, lc, wlc, lblc, lblcr, sh, dh, mh, sed, nq, fo, ovf, twos",
        ),
        (
            "fwmark",
            "virtual_server fwmark 1 {\n    real_server 10.0.1.1 80 {\n    }\n}\n",
            &[],
            "DIR/fwmark.conf:1: virtual_server fwmark: firewall-mark virtual services select packets in the kernel; ballast listens on addresses: write virtual_server IP PORT",
        ),
        (
            "invalid",
            "virtual_server 10.0.0.1 80 {\n  real_server 10.0.1.1 80 {\n    weight 70000\n  }\n  real_server 10.0.1.1 80 {\n  }\n}\n",
            &[],
            "the imported configuration is not valid:\n\
             DIR/invalid.conf:3: upstream[0].server[0].weight: 70000 is out of range; allowed: 0..=65535\n\
             DIR/invalid.conf:5: upstream[0].server[1].address: duplicate server address 10.0.1.1:80 in this upstream (first defined at DIR/invalid.conf:2)",
        ),
        (
            "quote",
            "global_defs {\n    router_id \"A\n}\n",
            &[],
            "DIR/quote.conf:2: unterminated quoted string: a \" is never closed\n\
             DIR/quote.conf:1: unbalanced braces: this { is never closed",
        ),
    ];
    for (name, text, extra, want) in cases {
        let got = error_of(Format::Keepalived, &format!("{name}.conf"), text, extra);
        assert_eq!(&got, want, "case {name}");
    }
}

#[test]
fn ipvsadm_errors_name_the_line() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "names",
            "-A -t www.example.com:http -s rr\n",
            "DIR/names.rules:1: \"www.example.com:http\" is not a numeric IP:PORT; ballast resolves no host or service names: save the rules with `ipvsadm-save -n` (or `ipvsadm -Sn`)",
        ),
        (
            "orphan",
            "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.2:80 -r 10.0.1.1:80 -m\n",
            "DIR/orphan.rules:2: -t 10.0.0.2:80: no virtual service -A -t 10.0.0.2:80 before this line",
        ),
        (
            "option",
            "-A -t 10.0.0.1:80 -s rr --bogus\n",
            "DIR/option.rules:1: --bogus: unknown or unsupported option",
        ),
    ];
    for (name, text, want) in cases {
        let got = error_of(Format::Ipvsadm, &format!("{name}.rules"), text, &[]);
        assert_eq!(&got, want, "case {name}");
    }
}

#[test]
fn nginx_errors_name_the_file_line_and_directive() {
    let cases: &[ErrorCase] = &[
        (
            "typo",
            "http {\n    upstream b { server 10.0.1.1:80; }\n    server {\n        listen 80;\n        location / { proxy_pas http://b; }\n    }\n}\n",
            &[],
            "DIR/typo.conf:5: proxy_pas: unknown or unsupported directive in location; did you mean proxy_pass?",
        ),
        (
            "semicolon",
            "http {\n    upstream b {\n        server 10.0.1.1:80\n    }\n}\n",
            &[],
            "DIR/semicolon.conf:3: server: missing ; at the end of the directive",
        ),
        (
            "unbalanced",
            "http {\n    upstream b {\n        server 10.0.1.1:80;\n}\n",
            &[],
            "DIR/unbalanced.conf:1: unbalanced braces: this { is never closed",
        ),
        (
            "bad-include",
            "http {\n    include sites/*.conf;\n}\n",
            &[],
            "DIR/bad-include.conf:2: include \"sites/*.conf\": cannot read directory DIR/sites: No such file or directory (os error 2)",
        ),
        (
            "hostname",
            "http {\n    upstream b { server app.internal:8080; }\n}\n",
            &[],
            "DIR/hostname.conf:2: server app.internal:8080: host names are not resolved by ballast; write an IP address (IP:PORT)",
        ),
        (
            "regex",
            "http {\n    upstream b { server 10.0.1.1:80; }\n    server {\n        listen 80;\n        location ~ \\.php$ { proxy_pass http://b; }\n    }\n}\n",
            &[],
            "DIR/regex.conf:5: location ~ \\.php$: regular-expression locations are not supported; ballast routes by exact path and prefix",
        ),
    ];
    for (name, text, extra, want) in cases {
        let got = error_of(Format::Nginx, &format!("{name}.conf"), text, extra);
        assert_eq!(&got, want, "case {name}");
    }
}

// === end to end ===

/// Three killable backends of `kind` and the placeholder values that put them behind a VIP on
/// 127.0.0.1 with a free port.
async fn loopback(kind: Kind) -> (Vec<Killable>, SocketAddr, Vec<(String, String)>) {
    let mut backends = Vec::new();
    for name in ["rs1", "rs2", "rs3"] {
        backends.push(Killable::start(name, kind).await);
    }
    // A loopback address of its own: no client socket of a test running alongside (all on
    // 127.0.0.1) can hold the chosen port on it.
    let vip = SocketAddr::new([127, 0, 0, 41].into(), common::closed_port().await.port());
    let mut values = vec![
        ("@VIP_IP@".to_string(), vip.ip().to_string()),
        ("@VIP_PORT@".into(), vip.port().to_string()),
        ("@DELAY_LOOP@".into(), "0.1".into()),
        ("@RETRY_DELAY@".into(), "0.1".into()),
    ];
    for (i, b) in backends.iter().enumerate() {
        values.push((format!("@RS{}_IP@", i + 1), "127.0.0.1".into()));
        values.push((format!("@RS{}_PORT@", i + 1), b.addr.port().to_string()));
    }
    (backends, vip, values)
}

async fn run_imported(dir: &str, file: &str, values: &[(String, String)]) -> Runtime {
    // A directory per file: tests of one corpus run at the same time.
    let tag = format!("e2e-{}", file.replace('.', "-"));
    let tmp = materialise(dir, values, &tag);
    let path = tmp.join(file);
    let result = import::load(format_of(dir), &path);
    let _ = std::fs::remove_dir_all(&tmp);
    let (cfg, _) = match result {
        Ok(r) => r,
        Err(e) => panic!("{file}: {e}"),
    };
    Runtime::start(cfg)
        .await
        .expect("imported configuration starts")
}

/// The backend name a client connecting from `source` (a 127.x address) is sent to.
async fn who_from(vip: SocketAddr, source: &str) -> String {
    tokio::time::timeout(PATIENCE, async {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.bind(format!("{source}:0").parse().expect("source"))
            .expect("bind source");
        let s = s.connect(vip).await.expect("connect to ballast");
        let mut line = String::new();
        tokio::io::BufReader::new(s)
            .read_line(&mut line)
            .await
            .expect("read name");
        line.trim().to_string()
    })
    .await
    .expect("answer in time")
}

fn usable(rt: &Runtime, upstream: &str, addr: SocketAddr) -> bool {
    rt.upstream(upstream)
        .expect("upstream")
        .snapshot()
        .servers
        .iter()
        .find(|s| s.address() == addr)
        .is_some_and(|s| s.is_usable())
}

/// The Keepalived LVS-DR tutorial: rr over three servers with TCP_CHECK and
/// `persistence_timeout 50`, run as a full proxy on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalived_tutorial_runs_with_persistence_and_checks() {
    let (mut backends, vip, values) = loopback(Kind::Tcp).await;
    let rt = run_imported("keepalived", "tutorial-dr.conf", &values).await;
    let upstream = format!("vs-{}-{}", vip.ip(), vip.port());

    // Round robin over clients: three client addresses land on three different servers, and
    // persistence keeps each on its own.
    let mut first = HashMap::new();
    for src in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        first.insert(src, who_from(vip, src).await);
    }
    let mut names: Vec<&String> = first.values().collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        3,
        "rr spreads three clients over three servers: {first:?}"
    );
    for src in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        for _ in 0..3 {
            assert_eq!(
                who_from(vip, src).await,
                first[src],
                "persistence keeps {src}"
            );
        }
    }

    // TCP_CHECK: the server of 127.0.0.2 stops; the check marks it down and the client moves.
    let victim = backends
        .iter()
        .position(|b| b.name == first["127.0.0.2"])
        .expect("victim");
    let addr = backends[victim].addr;
    backends[victim].kill();
    eventually("the TCP check marks the stopped server down", || {
        !usable(&rt, &upstream, addr)
    })
    .await;
    let moved = who_from(vip, "127.0.0.2").await;
    assert_ne!(
        moved, first["127.0.0.2"],
        "the client moved off the down server"
    );
    backends[victim].restart().await;
    eventually("the TCP check brings it back", || {
        usable(&rt, &upstream, addr)
    })
    .await;
    rt.shutdown(Duration::from_secs(1)).await;
}

/// HTTP_GET checks on a weighted virtual server: weights 3, 1, 1 share 3:1:1, and a server whose
/// /health answers 503 is taken out by the check and brought back when it answers 200 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalived_http_get_checks_take_a_failing_server_out() {
    let (backends, vip, values) = loopback(Kind::Http).await;
    let rt = run_imported("keepalived", "http-get.conf", &values).await;
    let upstream = format!("vs-{}-{}", vip.ip(), vip.port());
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..25 {
        let mut c = Client::connect(vip).await;
        let (status, body, _) = c.get("/", None).await.expect("GET /");
        assert_eq!(status, 200);
        *counts.entry(body).or_default() += 1;
    }
    assert_eq!(counts.get("name=rs1"), Some(&15), "{counts:?}");
    assert_eq!(counts.get("name=rs2"), Some(&5), "{counts:?}");
    assert_eq!(counts.get("name=rs3"), Some(&5), "{counts:?}");

    backends[1]
        .behaviour
        .unhealthy
        .store(true, std::sync::atomic::Ordering::SeqCst);
    eventually("HTTP_GET (status 503) takes rs2 down", || {
        !usable(&rt, &upstream, backends[1].addr)
    })
    .await;
    for _ in 0..10 {
        let mut c = Client::connect(vip).await;
        let (_, body, _) = c.get("/", None).await.expect("GET /");
        assert_ne!(body, "name=rs2");
    }
    backends[1]
        .behaviour
        .unhealthy
        .store(false, std::sync::atomic::Ordering::SeqCst);
    eventually("HTTP_GET (status 200) brings rs2 back", || {
        usable(&rt, &upstream, backends[1].addr)
    })
    .await;
    rt.shutdown(Duration::from_secs(1)).await;
}

/// `ipvsadm -A -t VIP:80 -s rr` with three `-g` real servers: round robin, in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipvsadm_tutorial_runs_round_robin() {
    let (mut backends, vip, values) = loopback(Kind::Tcp).await;
    let rt = run_imported("ipvsadm", "tutorial-dr.rules", &values).await;
    let mut seq = Vec::new();
    for _ in 0..9 {
        seq.push(tcp_exchange(vip).await.expect("exchange"));
    }
    for i in 3..9 {
        assert_eq!(
            seq[i],
            seq[i - 3],
            "round robin repeats every three: {seq:?}"
        );
    }
    let mut distinct = seq[..3].to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{seq:?}");
    // No checks in ipvsadm: a stopped server costs clients nothing (the connect is retried).
    backends[0].kill();
    refused(backends[0].addr).await;
    for _ in 0..6 {
        let who = tcp_exchange(vip)
            .await
            .expect("exchange with one server stopped");
        assert_ne!(who, "rs1");
    }
    rt.shutdown(Duration::from_secs(1)).await;
}

/// Waits until connects to `addr` are refused (a killed backend's listener is dropped at its
/// task's next poll).
async fn refused(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} still accepts"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[allow(dead_code)]
async fn http_get(vip: SocketAddr, path: &str) -> String {
    let mut c = Client::connect(vip).await;
    c.get(path, None)
        .await
        .map(|(_, body, _)| body)
        .unwrap_or_default()
}

// === the binary ===

fn ballast() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_ballast"))
}

/// `ballast check --keepalived`, `ballast import ipvsadm -` and the exclusive `-c`.
#[test]
fn the_command_line_imports_checks_and_refuses_two_sources() {
    let tmp = materialise("keepalived", &golden_values(), "cli");
    let file = tmp.join("tutorial-dr.conf");
    let out = ballast()
        .args(["check", "--keepalived"])
        .arg(&file)
        .output()
        .expect("run ballast check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("ok (1 listeners, 1 upstreams, 3 servers)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("lb_kind DR: ballast is a full proxy"),
        "{stderr}"
    );

    let both = ballast()
        .args(["run", "-c", "x.toml", "--keepalived"])
        .arg(&file)
        .output()
        .expect("run ballast");
    assert_eq!(
        both.status.code(),
        Some(2),
        "-c and --keepalived together are a usage error"
    );
    let _ = std::fs::remove_dir_all(&tmp);

    let mut child = ballast()
        .args(["import", "ipvsadm", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ballast import");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(b"-A -t 10.0.0.1:80 -s wrr\n-a -t 10.0.0.1:80 -r 10.0.1.1:8080 -m -w 2\n")
            .expect("write rules");
    }
    let out = child.wait_with_output().expect("ballast import exits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("address = \"10.0.1.1:8080\"  # from <stdin>:2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("scheduler = \"wrr\"  # from <stdin>:1"),
        "{stdout}"
    );
}

#[test]
fn udp_services_become_udp_listeners() {
    let dir = std::env::temp_dir().join(format!("ballast-compat-udp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let cases = [
        (
            Format::Keepalived,
            "k.conf",
            "virtual_server 10.0.0.1 53 {\n    protocol UDP\n    real_server 10.0.1.1 53 {\n    }\n}\n",
            None,
        ),
        (
            Format::Nginx,
            "n.conf",
            "stream {\n    upstream dns { server 10.0.1.1:53; }\n    server {\n        listen 53 udp;\n        proxy_pass dns;\n        proxy_timeout 20s;\n    }\n}\n",
            Some(std::time::Duration::from_secs(20)),
        ),
        (
            Format::Ipvsadm,
            "i.rules",
            "-A -u 10.0.0.1:53 -s rr\n-a -u 10.0.0.1:53 -r 10.0.1.1:53 -m -w 1\n",
            None,
        ),
    ];
    for (format, name, text, timeout) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        let imported = ballast::import::import_file(format, &path).expect("imports");
        let cfg = imported.config("t").expect("a valid ballast configuration");
        let l = &cfg.listeners[0];
        assert_eq!(
            l.protocol,
            ballast::config::Protocol::Udp,
            "{}",
            imported.toml
        );
        if let Some(t) = timeout {
            assert_eq!(l.udp.timeout, t, "{}", imported.toml);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
