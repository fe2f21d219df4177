//! PROXY protocol on real sockets: ballast accepting headers from a trusted balancer in front, and
//! sending them to servers, so each side sees the original client address.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ballast::proxy::proxy_protocol::{encode, parse, ProxyHeader, Version};
use common::{eventually, start, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A raw TCP server that reports the first bytes of each connection (up to "hello"), then
/// answers "ok" and closes.
async fn raw_server() -> (SocketAddr, mpsc::Receiver<Vec<u8>>, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel(16);
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 512];
                while !got.ends_with(b"hello") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(got).await;
                let _ = s.write_all(b"ok").await;
            });
        }
    });
    (addr, rx, accepted)
}

fn tcp_config(listener_extra: &str, upstream_extra: &str, server: SocketAddr) -> String {
    format!(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\nworkers = 1\n{listener_extra}\n\n\
         [[upstream]]\nname = \"u\"\nscheduler = \"rr\"\n{upstream_extra}\nserver = [{{ address = \"{server}\" }}]\n"
    )
}

/// Sends `first` through ballast, then "hello"; returns what the client read back.
async fn exchange(addr: SocketAddr, first: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(first).await.expect("header");
    s.write_all(b"hello").await.expect("data");
    let mut back = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut back))
        .await
        .expect("in time");
    back
}

#[tokio::test]
async fn a_trusted_v1_header_is_accepted_and_passed_on_as_v2() {
    let (server, mut seen, _) = raw_server().await;
    let rt = start(&tcp_config(
        "accept_proxy = [\"127.0.0.0/8\"]",
        "send_proxy = \"v2\"",
        server,
    ))
    .await;
    let back = exchange(
        common::addr(&rt),
        b"PROXY TCP4 203.0.113.5 198.51.100.1 40000 443\r\n",
    )
    .await;
    assert_eq!(back, b"ok");
    let got = tokio::time::timeout(PATIENCE, seen.recv())
        .await
        .expect("in time")
        .expect("bytes");
    let (header, used) = parse(&got).expect("valid").expect("complete");
    assert_eq!(
        header,
        ProxyHeader::Proxied {
            source: "203.0.113.5:40000".parse().expect("addr"),
            destination: "198.51.100.1:443".parse().expect("addr"),
        }
    );
    assert_eq!(
        got.get(used..),
        Some(&b"hello"[..]),
        "the payload follows, untouched"
    );
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn without_accept_proxy_the_real_client_address_is_sent_as_v1() {
    let (server, mut seen, _) = raw_server().await;
    let rt = start(&tcp_config("", "send_proxy = \"v1\"", server)).await;
    let listener = common::addr(&rt);
    let mut s = TcpStream::connect(listener).await.expect("connect");
    let me = s.local_addr().expect("local");
    s.write_all(b"hello").await.expect("data");
    let mut back = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, s.read_to_end(&mut back)).await;
    let got = tokio::time::timeout(PATIENCE, seen.recv())
        .await
        .expect("in time")
        .expect("bytes");
    let mut expected = Vec::new();
    encode(Version::V1, me, listener, &mut expected);
    expected.extend_from_slice(b"hello");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected)
    );
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn untrusted_peers_and_bad_headers_are_refused_and_counted() {
    let (server, _seen, accepted) = raw_server().await;
    // 127.0.0.1 is not in 10.0.0.0/8: refused before anything is read.
    let rt = start(&tcp_config("accept_proxy = [\"10.0.0.0/8\"]", "", server)).await;
    let back = exchange(common::addr(&rt), b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n").await;
    assert!(back.is_empty());
    let l = rt.listener("l").expect("l");
    eventually("refusal counted", || {
        l.stats.proxy_refused.load(Ordering::Relaxed) == 1
    })
    .await;
    rt.shutdown(Duration::from_secs(1)).await;

    // Trusted peer, but it speaks HTTP instead of sending a PROXY header.
    let rt = start(&tcp_config("accept_proxy = [\"127.0.0.1\"]", "", server)).await;
    let back = exchange(common::addr(&rt), b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(back.is_empty());
    let l = rt.listener("l").expect("l");
    eventually("refusal counted", || {
        l.stats.proxy_refused.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "nothing reached the server"
    );
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_http_listener_uses_the_proxied_client_in_x_forwarded_for() {
    let (server, mut seen, _) = raw_server().await;
    let text = format!(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"u\"\n\
         accept_proxy = [\"127.0.0.1/32\"]\n\n[[upstream]]\nname = \"u\"\nserver = [{{ address = \"{server}\" }}]\n"
    );
    let rt = start(&text).await;
    let mut s = TcpStream::connect(common::addr(&rt))
        .await
        .expect("connect");
    s.write_all(b"PROXY TCP6 2001:db8::7 2001:db8::1 5555 80\r\nGET /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .expect("write");
    let got = tokio::time::timeout(PATIENCE, seen.recv())
        .await
        .expect("in time")
        .expect("bytes");
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.contains("x-forwarded-for: 2001:db8::7\r\n"), "{text}");
    rt.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn proxy_settings_are_validated() {
    let bad = "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"u\"\n\
               accept_proxy = [\"10.0.0.0/33\", \"nonsense\"]\n\n[[upstream]]\nname = \"u\"\nsend_proxy = \"v3\"\n\
               server = [{ address = \"127.0.0.1:1\" }]\n";
    let err = ballast::config::Config::from_str(bad, "t.toml").expect_err("invalid");
    let lines: Vec<String> = err.diagnostics().iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].starts_with("t.toml:6:17: listener[0].accept_proxy[0]: \"10.0.0.0/33\": "),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(
            "t.toml:6:32: listener[0].accept_proxy[1]: \"nonsense\": not an IP address"
        ),
        "{}",
        lines[1]
    );
    assert!(
        lines.iter().any(|l| l.contains(
            "upstream[0].send_proxy: \"v3\" is not a PROXY protocol version; allowed: v1, v2"
        )),
        "{lines:#?}"
    );
}

/// An HTTP/1.1 server behind a PROXY v1 header: each connection must start with one. Every
/// response body is `from=<source in the header> conn=<K>`, K numbering the server's connections.
async fn proxied_http_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let conn = count.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                // Byte by byte up to the line's end, so hyper gets the stream right after it.
                let mut line = Vec::new();
                while !line.ends_with(b"\r\n") && line.len() < 108 {
                    let mut b = [0u8; 1];
                    match s.read(&mut b).await {
                        Ok(1) => line.push(b[0]),
                        _ => return,
                    }
                }
                let from = match parse(&line) {
                    Ok(Some((ProxyHeader::Proxied { source, .. }, _))) => source.to_string(),
                    _ => return,
                };
                let svc = hyper::service::service_fn(move |_req| {
                    let body = format!("from={from} conn={conn}");
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, connections)
}

/// One GET on a kept-alive connection; returns the response body.
async fn get(s: &mut TcpStream) -> String {
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("request");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .expect("content-length");
            if body.len() >= length {
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                return body.to_owned();
            }
        }
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("in time")
            .expect("read");
        assert!(n > 0, "closed early: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn an_http_listener_sends_each_client_its_own_proxied_server_connections() {
    let (server, connections) = proxied_http_server().await;
    let text = format!(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"u\"\n\n\
         [[upstream]]\nname = \"u\"\nsend_proxy = \"v1\"\nserver = [{{ address = \"{server}\" }}]\n"
    );
    let rt = start(&text).await;
    let listener = common::addr(&rt);
    let mut a = TcpStream::connect(listener).await.expect("connect a");
    let mut b = TcpStream::connect(listener).await.expect("connect b");
    let (a_me, b_me) = (
        a.local_addr().expect("local a"),
        b.local_addr().expect("local b"),
    );
    // Interleaved: a's kept-alive server connection is idle while b asks, yet b must not get it.
    let a1 = get(&mut a).await;
    let b1 = get(&mut b).await;
    let a2 = get(&mut a).await;
    let b2 = get(&mut b).await;
    assert!(a1.starts_with(&format!("from={a_me} ")), "{a1}");
    assert!(b1.starts_with(&format!("from={b_me} ")), "{b1}");
    assert_eq!(a1, a2, "a's requests share a's own server connection");
    assert_eq!(b1, b2, "b's requests share b's own server connection");
    assert_ne!(a1, b1);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    rt.shutdown(Duration::from_secs(1)).await;
}
