//! Backends that tests kill and restart on the same port, and clients that report failures
//! instead of panicking, for the health-check tests. Every wait is bounded.
//!
//! Killing a TCP backend closes its listening socket and lets its established connections finish;
//! killing an HTTP backend closes its listener and every connection it has (a crash).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::PATIENCE;

/// What a backend serves.
#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    /// The TCP backend of `common`: its name and a newline, then an echo.
    Tcp,
    /// HTTP/1.1: `/health` answers 200 `ok` while `healthy`, else 503 `degraded`; any other path
    /// answers `app_status` with `name=NAME`.
    Http,
}

/// Switches the HTTP backend's answers.
#[derive(Default)]
pub struct Behaviour {
    pub unhealthy: AtomicBool,
    pub app_status: AtomicU16,
}

pub struct Killable {
    pub name: &'static str,
    pub addr: SocketAddr,
    kind: Kind,
    pub behaviour: Arc<Behaviour>,
    accepted: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

/// A listener on `addr` that may be re-bound while old connections linger in TIME_WAIT.
fn bind(addr: SocketAddr) -> TcpListener {
    let s = TcpSocket::new_v4().expect("socket");
    s.set_reuseaddr(true).expect("SO_REUSEADDR");
    s.bind(addr).expect("bind backend");
    s.listen(1024).expect("listen")
}

impl Killable {
    pub async fn start(name: &'static str, kind: Kind) -> Killable {
        let listener = bind("127.0.0.1:0".parse().expect("addr"));
        let addr = listener.local_addr().expect("addr");
        let behaviour = Arc::new(Behaviour {
            app_status: AtomicU16::new(200),
            ..Behaviour::default()
        });
        let mut k = Killable {
            name,
            addr,
            kind,
            behaviour,
            accepted: Arc::new(AtomicUsize::new(0)),
            task: None,
        };
        k.serve(listener);
        k
    }

    /// A backend on a listener the caller bound (in another network namespace, say: a socket
    /// stays in the namespace it was made in). Must be called inside a tokio runtime.
    pub fn on_listener(
        name: &'static str,
        kind: Kind,
        listener: std::net::TcpListener,
    ) -> Killable {
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        let addr = listener.local_addr().expect("addr");
        let mut k = Killable {
            name,
            addr,
            kind,
            behaviour: Arc::new(Behaviour {
                app_status: AtomicU16::new(200),
                ..Behaviour::default()
            }),
            accepted: Arc::new(AtomicUsize::new(0)),
            task: None,
        };
        k.serve(listener);
        k
    }

    fn serve(&mut self, listener: TcpListener) {
        let (name, kind) = (self.name, self.kind);
        let behaviour = Arc::clone(&self.behaviour);
        let accepted = Arc::clone(&self.accepted);
        self.task = Some(tokio::spawn(async move {
            // HTTP connections live in this set and die with the task (a crash); TCP connections
            // are detached and finish on their own.
            let mut conns = JoinSet::new();
            while let Ok((s, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                match kind {
                    Kind::Tcp => {
                        tokio::spawn(echo(s, name));
                    }
                    Kind::Http => {
                        conns.spawn(http_conn(s, name, Arc::clone(&behaviour)));
                    }
                }
                while conns.try_join_next().is_some() {}
            }
        }));
    }

    pub fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    pub async fn restart(&mut self) {
        // The aborted task drops its listener at its next poll; wait until the port is free.
        let deadline = Instant::now() + PATIENCE;
        let listener = loop {
            let s = TcpSocket::new_v4().expect("socket");
            s.set_reuseaddr(true).expect("SO_REUSEADDR");
            if s.bind(self.addr).is_ok() {
                if let Ok(l) = s.listen(1024) {
                    break l;
                }
            }
            assert!(Instant::now() < deadline, "port {} never freed", self.addr);
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        self.serve(listener);
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn echo(mut s: TcpStream, name: &'static str) {
    if s.write_all(format!("{name}\n").as_bytes()).await.is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn http_conn(s: TcpStream, name: &'static str, b: Arc<Behaviour>) {
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let b = Arc::clone(&b);
        async move {
            let (status, body) = if req.uri().path() == "/health" {
                if b.unhealthy.load(Ordering::SeqCst) {
                    (503, "degraded".to_owned())
                } else {
                    (200, "ok".to_owned())
                }
            } else {
                (b.app_status.load(Ordering::SeqCst), format!("name={name}"))
            };
            Ok::<_, Infallible>(
                Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from(body)))
                    .expect("response"),
            )
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(s), svc)
        .await;
}

/// Polls `cond` every 2 ms; returns how long it took to hold. Panics after `PATIENCE`.
pub async fn time_until<F: FnMut() -> bool>(what: &str, mut cond: F) -> Duration {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < PATIENCE,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

/// One TCP client exchange through ballast: connect, read the server's name, send and read back
/// an echo. `Err` says what failed.
pub async fn tcp_exchange(addr: SocketAddr) -> Result<String, String> {
    let exchange = async {
        let s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut r = BufReader::new(s);
        let mut name = String::new();
        r.read_line(&mut name)
            .await
            .map_err(|e| format!("read name: {e}"))?;
        if name.is_empty() {
            return Err("closed before the name".to_owned());
        }
        r.get_mut()
            .write_all(b"ping\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut echo = String::new();
        r.read_line(&mut echo)
            .await
            .map_err(|e| format!("read echo: {e}"))?;
        if echo != "ping\n" {
            return Err(format!("echo was {echo:?}"));
        }
        Ok(name.trim().to_owned())
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer within 3 s".to_owned()))
}

/// A kept-alive HTTP/1.1 client connection to ballast.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Client { sender }
    }

    /// GET `path`; the status and body, or what failed.
    pub async fn get(
        &mut self,
        path: &str,
        cookie: Option<&str>,
    ) -> Result<(StatusCode, String, http::HeaderMap), String> {
        let mut req = Request::get(path).header("host", "example.com");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let req = req.body(Empty::new()).expect("request");
        let exchange = async {
            self.sender
                .ready()
                .await
                .map_err(|e| format!("ready: {e}"))?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| format!("send: {e}"))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok((
                parts.status,
                String::from_utf8_lossy(&body).into_owned(),
                parts.headers,
            ))
        };
        tokio::time::timeout(Duration::from_secs(3), exchange)
            .await
            .unwrap_or_else(|_| Err("no answer within 3 s".to_owned()))
    }
}
