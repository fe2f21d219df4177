//! A real HTTP/1.1 server (hyper) that names itself in every answer and counts what it sees:
//! requests, connections accepted and connections open now; and a kept-alive client load that
//! counts every failed request. For tests that change an HTTP upstream's servers at runtime.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::PATIENCE;

/// An HTTP/1.1 server answering `200` with its name as the body, keeping connections alive.
pub struct HttpBackend {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// Requests answered.
    pub requests: Arc<AtomicUsize>,
    /// Connections accepted since start.
    pub accepted: Arc<AtomicUsize>,
    /// Connections open now (accepted and not yet closed by either side).
    pub open: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

/// Decrements the open-connection count when a connection's task ends, however it ends.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl HttpBackend {
    pub async fn start(name: &'static str) -> HttpBackend {
        HttpBackend::start_with(name, false).await
    }

    /// As [`HttpBackend::start`], for an upstream with `send_proxy = "v1"`: each connection
    /// starts with a PROXY v1 line, read and dropped before HTTP.
    pub async fn start_proxied(name: &'static str) -> HttpBackend {
        HttpBackend::start_with(name, true).await
    }

    async fn start_with(name: &'static str, proxied: bool) -> HttpBackend {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (r, a, o) = (
            Arc::clone(&requests),
            Arc::clone(&accepted),
            Arc::clone(&open),
        );
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let guard = OpenGuard(Arc::clone(&o));
                let r = Arc::clone(&r);
                tokio::spawn(async move {
                    let _guard = guard;
                    if proxied && !skip_proxy_line(&mut s).await {
                        return;
                    }
                    let svc = hyper::service::service_fn(move |_req: Request<_>| {
                        r.fetch_add(1, Ordering::SeqCst);
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name)))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        HttpBackend {
            name,
            addr,
            requests,
            accepted,
            open,
            task,
        }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// Reads a PROXY v1 line (`PROXY … \r\n`, at most 107 bytes) byte by byte, so nothing of the
/// HTTP request after it is consumed. Whether one was there.
async fn skip_proxy_line(s: &mut TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut line = Vec::with_capacity(108);
    while line.len() < 108 {
        match s.read_u8().await {
            Ok(b) => line.push(b),
            Err(_) => return false,
        }
        if line.ends_with(b"\r\n") {
            return line.starts_with(b"PROXY ");
        }
    }
    false
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One kept-alive client connection to `addr`.
pub async fn client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

/// `GET /` on a kept-alive connection; the body (the backend's name) of a `200`, or why not.
pub async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
) -> Result<String, String> {
    let req = Request::get("/")
        .header("host", "t")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(PATIENCE, async {
        sender.ready().await.map_err(|e| format!("ready: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        if status == http::StatusCode::OK {
            Ok(body)
        } else {
            Err(format!("{status}: {body}"))
        }
    })
    .await
    .map_err(|_| "no answer in time".to_owned())?
}

/// Kept-alive clients sending `GET /` one after another on their own connections until stopped
/// or until each has sent `max` requests; records who answered (in order) and every failure.
pub struct Load {
    stop: Arc<AtomicBool>,
    /// The names that answered, in the order the answers came.
    pub answers: Arc<Mutex<Vec<String>>>,
    pub failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    pub async fn start(addr: SocketAddr, clients: usize, max: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::with_capacity(clients);
        for _ in 0..clients {
            let mut sender = client(addr).await;
            let (stop, answers, failures) = (
                Arc::clone(&stop),
                Arc::clone(&answers),
                Arc::clone(&failures),
            );
            tasks.push(tokio::spawn(async move {
                for _ in 0..max {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match get(&mut sender).await {
                        Ok(name) => answers.lock().expect("lock").push(name),
                        Err(e) => {
                            failures.lock().expect("lock").push(e);
                            // A failed connection is replaced, so one failure is not many.
                            sender = client(addr).await;
                        }
                    }
                    // Paced a little, so the loop runs alongside the test's changes.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }));
        }
        Load {
            stop,
            answers,
            failures,
            tasks,
        }
    }

    /// Answers so far.
    pub fn answered(&self) -> usize {
        self.answers.lock().expect("lock").len()
    }

    /// Waits until `n` more answers than now have come (bounded by `PATIENCE`).
    pub async fn wait_for_more(&self, n: usize) {
        let target = self.answered() + n;
        super::eventually(&format!("{target} answers"), || self.answered() >= target).await;
    }

    /// Stops the clients and waits for them; returns (answers, failures).
    pub async fn finish(self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = tokio::time::timeout(PATIENCE, t).await;
        }
        let answers = self.answers.lock().expect("lock").clone();
        let failures = self.failures.lock().expect("lock").clone();
        (answers, failures)
    }
}
