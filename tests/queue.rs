//! Server `max_connections` with the proxy-side queue (HAProxy `maxconn` + `timeout queue`): many
//! concurrent clients against servers that take only a few at a time, measured at the servers.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ballast::listener::Reason;
use common::{addr, config, servers, start, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the servers saw: connections (TCP) or requests (HTTP) being served now, and the most at
/// once, across all servers of a test.
#[derive(Default)]
struct Load {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Load {
    fn begin(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    /// Called before the answer leaves, so the proxy cannot free the slot before this counts.
    fn end(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// A TCP server that holds each connection for `hold`, then writes "ok" and closes.
async fn tcp_server(load: Arc<Load>, hold: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let load = Arc::clone(&load);
            tokio::spawn(async move {
                load.begin();
                tokio::time::sleep(hold).await;
                load.end();
                let _ = s.write_all(b"ok").await;
            });
        }
    });
    a
}

/// An HTTP/1.1 server that answers each request "ok" after `hold`.
async fn http_server(load: Arc<Load>, hold: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let load = Arc::clone(&load);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let load = Arc::clone(&load);
                    async move {
                        load.begin();
                        tokio::time::sleep(hold).await;
                        load.end();
                        Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"ok"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    a
}

/// `[[upstream.server]]` tables with `max_connections`.
fn limited(list: &[SocketAddr], max: u32) -> String {
    servers(&list.iter().map(|a| (*a, 1)).collect::<Vec<_>>()).replace(
        "weight = 1\n",
        &format!("weight = 1\nmax_connections = {max}\n"),
    )
}

/// Through ballast: read everything the server sends.
async fn tcp_exchange(to: SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(to).await.expect("connect");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut got))
        .await
        .expect("in time");
    got
}

/// One `Connection: close` GET; returns the status code and body.
async fn http_get(to: SocketAddr) -> (u16, String) {
    common::get_and_close(TcpStream::connect(to).await.expect("connect")).await
}

/// The servers took at most 3 × 2 at once, and more than one at a time.
fn assert_peak_within_limits(load: &Load) {
    let peak = load.peak();
    assert!(peak <= 6, "at most 3 × 2 at once, saw {peak}");
    assert!(peak >= 4, "the servers were used in parallel: {peak}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_tcp_clients_wait_their_turn_and_all_complete() {
    let load = Arc::new(Load::default());
    let mut list = Vec::new();
    for _ in 0..3 {
        list.push(tcp_server(Arc::clone(&load), Duration::from_millis(100)).await);
    }
    let rt = start(&config(
        "wlc",
        &limited(&list, 2),
        "",
        "queue_timeout = \"5s\"",
    ))
    .await;
    let to = addr(&rt);
    let clients: Vec<_> = (0..30).map(|_| tokio::spawn(tcp_exchange(to))).collect();
    for c in clients {
        assert_eq!(c.await.expect("client"), b"ok", "every client is served");
    }
    assert_peak_within_limits(&load);
    let queue = rt
        .upstream("u")
        .and_then(|u| u.queue.clone())
        .expect("queue");
    assert!(
        queue.served.load(Ordering::Relaxed) >= 20,
        "most clients waited"
    );
    assert_eq!(queue.timeouts.load(Ordering::Relaxed), 0);
    assert_eq!(queue.full.load(Ordering::Relaxed), 0);
    assert!(queue.is_empty());
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_http_requests_wait_their_turn_and_all_complete() {
    let load = Arc::new(Load::default());
    let mut list = Vec::new();
    for _ in 0..3 {
        list.push(http_server(Arc::clone(&load), Duration::from_millis(100)).await);
    }
    let text = format!(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"u\"\n\n\
         [[upstream]]\nname = \"u\"\nscheduler = \"lc\"\nqueue_timeout = \"5s\"\n{}",
        limited(&list, 2)
    );
    let rt = start(&text).await;
    let to = addr(&rt);
    let clients: Vec<_> = (0..30).map(|_| tokio::spawn(http_get(to))).collect();
    for c in clients {
        assert_eq!(c.await.expect("client"), (200, "ok".to_owned()));
    }
    assert_peak_within_limits(&load);
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_waits_past_queue_timeout_gets_a_503_and_a_full_queue_refuses_at_once() {
    let load = Arc::new(Load::default());
    let server = http_server(Arc::clone(&load), Duration::from_millis(1500)).await;
    let text = format!(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"u\"\n\n\
         [[upstream]]\nname = \"u\"\nqueue_timeout = \"300ms\"\nmax_queue = 1\n{}",
        limited(&[server], 1)
    );
    let rt = start(&text).await;
    let to = addr(&rt);
    // Takes the only slot for 1.5 s.
    let busy = tokio::spawn(http_get(to));
    common::eventually("the slow request reached the server", || {
        load.now.load(Ordering::SeqCst) == 1
    })
    .await;
    // Waits in the queue, alone.
    let started = tokio::time::Instant::now();
    let waiting = tokio::spawn(http_get(to));
    let queue = rt
        .upstream("u")
        .and_then(|u| u.queue.clone())
        .expect("queue");
    common::eventually("one waiting", || queue.len() == 1).await;
    // No room in the queue: refused at once.
    let (status, body) = http_get(to).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("queue is full"), "{body}");
    assert!(started.elapsed() < Duration::from_millis(250), "at once");
    let (status, body) = waiting.await.expect("client");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("busy for too long"), "{body}");
    common::assert_fired_after_300ms(started, "queue timeout");
    assert_eq!(busy.await.expect("client").0, 200, "the slow one finishes");
    assert_eq!(queue.full.load(Ordering::Relaxed), 1);
    assert_eq!(queue.timeouts.load(Ordering::Relaxed), 1);
    let stats = &rt.listener("l").expect("l").stats;
    assert_eq!(stats.refusal_count(Reason::QueueFull), 1);
    assert_eq!(stats.refusal_count(Reason::QueueTimeout), 1);
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_client_that_waits_past_queue_timeout_is_reset() {
    let load = Arc::new(Load::default());
    let server = tcp_server(Arc::clone(&load), Duration::from_millis(1500)).await;
    let rt = start(&config(
        "rr",
        &limited(&[server], 1),
        "",
        "queue_timeout = \"300ms\"",
    ))
    .await;
    let to = addr(&rt);
    let busy = tokio::spawn(tcp_exchange(to));
    common::eventually("the first connection reached the server", || {
        load.now.load(Ordering::SeqCst) == 1
    })
    .await;
    let started = tokio::time::Instant::now();
    let mut s = TcpStream::connect(to).await.expect("connect");
    let mut buf = [0u8; 8];
    let r = tokio::time::timeout(PATIENCE, s.read(&mut buf))
        .await
        .expect("in time");
    assert!(
        matches!(r, Err(ref e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
    common::assert_fired_after_300ms(started, "queue timeout");
    assert_eq!(busy.await.expect("client"), b"ok");
    rt.shutdown(Duration::from_secs(1)).await;
}
