//! Test harness: real backends, real clients and ballast itself, all on 127.0.0.1 ephemeral ports.
//!
//! Every wait here has a deadline; nothing sleeps and hopes.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ballast::config::Config;
use ballast::runtime::Runtime;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub mod http_backend;
pub mod killable;
pub mod netns;

/// Upper bound for any single wait in a test.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A TCP backend. On each connection it writes its name and a newline, then echoes what it reads;
/// when the client half-closes, it writes `bye <n>` (n = bytes it received) and closes.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        let label = name.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let label = label.clone();
                tokio::spawn(async move {
                    if s.write_all(format!("{label}\n").as_bytes()).await.is_err() {
                        return;
                    }
                    let mut buf = [0u8; 16 * 1024];
                    let mut total = 0usize;
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) => break,
                            Ok(n) => {
                                total += n;
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                            Err(_) => return,
                        }
                    }
                    let _ = s.write_all(format!("bye {total}\n").as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            accepted,
            task,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address on which nothing listens (connects are refused).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr
}

/// `[[upstream.server]]` tables for the given addresses and weights.
pub fn servers(list: &[(SocketAddr, u32)]) -> String {
    list.iter()
        .map(|(a, w)| format!("[[upstream.server]]\naddress = \"{a}\"\nweight = {w}\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A one-listener, one-upstream configuration on 127.0.0.1:0. `listener_extra` and
/// `upstream_extra` are extra `key = value` lines.
pub fn config(
    scheduler: &str,
    servers_toml: &str,
    listener_extra: &str,
    upstream_extra: &str,
) -> String {
    format!(
        "[global]\nshutdown_grace = \"5s\"\n\n[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\nworkers = 2\n{listener_extra}\n\n[[upstream]]\nname = \"u\"\nscheduler = \"{scheduler}\"\nconnect_timeout = \"1s\"\n{upstream_extra}\n\n{servers_toml}"
    )
}

pub async fn start(text: &str) -> Runtime {
    let cfg = match Config::from_str(text, "test.toml") {
        Ok(c) => c,
        Err(e) => panic!("test config invalid:\n{e}\n---\n{text}"),
    };
    Runtime::start(cfg).await.expect("ballast starts")
}

pub fn addr(rt: &Runtime) -> SocketAddr {
    rt.listener_addr("l").expect("listener l")
}

/// Connects through ballast and returns the first line (the backend's name).
pub async fn who(addr: SocketAddr) -> String {
    tokio::time::timeout(PATIENCE, async {
        let s = TcpStream::connect(addr).await.expect("connect to ballast");
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).await.expect("read name");
        line.trim().to_string()
    })
    .await
    .expect("answer in time")
}

/// Makes `n` sequential connections and counts which backend answered each.
pub async fn spread(addr: SocketAddr, n: usize) -> (Vec<String>, HashMap<String, usize>) {
    let mut seq = Vec::with_capacity(n);
    let mut counts = HashMap::new();
    for _ in 0..n {
        let name = who(addr).await;
        *counts.entry(name.clone()).or_insert(0) += 1;
        seq.push(name);
    }
    (seq, counts)
}

/// Polls `cond` until it holds or `PATIENCE` runs out.
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that a timeout of 300 ms fired: at least 250 ms after `started` (not early) and well
/// within 3 s (not stuck).
pub fn assert_fired_after_300ms(started: tokio::time::Instant, what: &str) {
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "{what} too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "{what} too late: {waited:?}"
    );
}

/// One `GET /` with `Connection: close` on `s`; returns the status code and the body.
pub async fn get_and_close(mut s: TcpStream) -> (u16, String) {
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut all = String::new();
    tokio::time::timeout(PATIENCE, s.read_to_string(&mut all))
        .await
        .expect("answer in time")
        .expect("read");
    let status = all
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {all:?}"));
    let body = all.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}
