//! HTTP abuse cases: raw bytes on a TCP socket to a real ballast HTTP listener, in front of a
//! recording server that keeps every byte ballast sent it. Each case asserts what the client got
//! back and what reached the server: nothing, or exactly one (or, pipelined, two) well-framed
//! requests. Nothing a client sends may reach a server framed differently from how ballast read
//! it (request smuggling), and nothing may hold a connection open without bound.
//!
//! | case | client gets | server sees |
//! |---|---|---|
//! | `Content-Length` and `Transfer-Encoding: chunked` | 200, then the connection is closed | one request, chunked body re-framed, no `Content-Length`; the bytes after it never |
//! | two different `Content-Length`s; `Content-Length: 1, 2`; `Content-Length: +2` | 400 (hyper) | nothing |
//! | `Transfer-Encoding: chunked, identity`; `Transfer-Encoding` in HTTP/1.0 | 400 (hyper) | nothing |
//! | `Transfer-Encoding: gzip, chunked` | 501 (ballast) | nothing |
//! | obs-fold (a header line starting with a space); a space before the colon | 400 (httparse) | nothing |
//! | bare CR | 400 (httparse) | nothing |
//! | bare LF line endings | 200 | one request, written with CRLF |
//! | NUL, `\x01` or DEL in a header value | 400 (httparse) | nothing |
//! | HTTP/0.9 `GET /`; `HTTP/1.2` | 400 (httparse) | nothing |
//! | request line, or one header, past `max_header_size`; more than `max_headers` | 431 (hyper) | nothing |
//! | chunk extensions (`5;name=value`) | 200 | one request, re-chunked without the extension |
//! | chunk size `zz`; chunk size `ffffffffffffffffff` (overflow) | 400 (ballast: the body fault is the client's) | never a complete request |
//! | absolute-form `GET http://x/abs?q=1` | 200 | `GET /abs?q=1`, origin-form, `Host: x` |
//! | `CONNECT example.com:443` | 501 (ballast) | nothing |
//! | HTTP/1.1 without Host; two Host lines (1.1 or 1.0); a Host that is not `host[:port]` (`a@b`, `a/b`); `http://user@host/` | 400 (ballast) | nothing |
//! | HTTP/1.0 without Host | 200 | one request |
//! | two pipelined requests in one write | 200, 200 in order | two requests, in order |
//! | a second request inside a `Content-Length` body, then a real one | 200, 200 | two requests; the hidden one stays body |
//! | headers one byte every 50 ms, `header_timeout = "300ms"` | closed at the timeout, no answer (hyper) | nothing |
//! | body that stops arriving, `body_timeout = "300ms"` | 408 at the timeout (ballast) | never a complete request |
//! | client that never reads a 128 MiB response | nothing more is read from the server once the pipes are full (about 10 MiB on loopback) | — |
//! | h2c rapid reset: 5,000 streams opened and reset in one write | GOAWAY `ENHANCE_YOUR_CALM` and close (h2) | — |
//! | h2c SETTINGS and PING floods, acks never read | the worker keeps serving other clients | — |
//!
//! Not bounded today: a body trickled faster than `body_timeout` (the timeout is per wait, as
//! nginx's `client_body_timeout`), and a client that never reads its response holds its
//! connection and the server's until one side gives up (there is no send timeout).
//!
//! Who does the work: hyper's HTTP/1 parser (httparse underneath) refuses malformed request
//! lines and header fields and answers 400/431 itself; hyper drops `Content-Length` when
//! `Transfer-Encoding: chunked` is present and closes the connection after the answer
//! (RFC 9112 §6.3); ballast removes `Transfer-Encoding` and lets hyper re-frame every body it
//! sends, so a server reads exactly the bytes ballast decoded.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{start, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the recording server received.
#[derive(Default)]
struct Seen {
    /// Every complete request, as the bytes that framed it.
    requests: Vec<Vec<u8>>,
    /// Bytes left over when a connection ended (an incomplete or unparseable request).
    leftovers: Vec<Vec<u8>>,
    /// Connections accepted.
    connections: usize,
}

/// A raw HTTP/1.1 server: frames requests itself (Content-Length or chunked), records each one
/// and answers `200 ok` to it.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                shared.lock().expect("lock").connections += 1;
                tokio::spawn(record(s, Arc::clone(&shared)));
            }
        });
        Recorder { addr, seen }
    }

    fn requests(&self) -> Vec<String> {
        let seen = self.seen.lock().expect("lock");
        seen.requests
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }

    /// Asserts that no byte reached the server.
    fn assert_nothing(&self, case: &str) {
        let seen = self.seen.lock().expect("lock");
        assert!(
            seen.requests.is_empty() && seen.leftovers.iter().all(Vec::is_empty),
            "{case}: the server saw {:?} / {:?}",
            seen.requests
                .iter()
                .map(|r| String::from_utf8_lossy(r))
                .collect::<Vec<_>>(),
            seen.leftovers
                .iter()
                .map(|r| String::from_utf8_lossy(r))
                .collect::<Vec<_>>()
        );
    }
}

async fn record(mut s: TcpStream, seen: Arc<Mutex<Seen>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        while let Some(n) = frame(&buf) {
            let req: Vec<u8> = buf.drain(..n).collect();
            seen.lock().expect("lock").requests.push(req);
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .is_err()
            {
                return;
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    seen.lock().expect("lock").leftovers.push(buf);
}

/// The length of the first complete request in `buf` (head and body), if there is one.
fn frame(buf: &[u8]) -> Option<usize> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    if field("transfer-encoding:").is_some_and(|v| v.ends_with("chunked")) {
        let mut at = head_end;
        loop {
            let line_end = at + find(&buf[at..], b"\r\n")?;
            let line = std::str::from_utf8(&buf[at..line_end]).ok()?;
            let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
            at = line_end + 2;
            if size == 0 {
                // Trailers, then an empty line.
                loop {
                    let end = at + find(&buf[at..], b"\r\n")?;
                    let empty = end == at;
                    at = end + 2;
                    if empty {
                        return Some(at);
                    }
                }
            }
            at += size + 2;
            if at > buf.len() {
                return None;
            }
        }
    }
    let len = field("content-length:").map_or(Some(0), |v| v.parse::<usize>().ok())?;
    (buf.len() >= head_end + len).then_some(head_end + len)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn http_config(listener_extra: &str, server: SocketAddr) -> String {
    format!(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"u\"\nworkers = 1\n{listener_extra}\n\n[[upstream]]\nname = \"u\"\nscheduler = \"rr\"\nconnect_timeout = \"1s\"\nserver = [{{ address = \"{server}\" }}]\n"
    )
}

/// What came back on one client connection.
struct Answer {
    /// The status of each complete response, in order.
    statuses: Vec<u16>,
    /// Their bodies.
    bodies: Vec<String>,
    /// Whether ballast closed the connection (rather than the client stopping after `want`).
    closed: bool,
}

/// Writes `request` on a fresh connection, then reads until `want` complete responses have
/// arrived or ballast closes the connection.
async fn exchange(addr: SocketAddr, request: &[u8], want: usize) -> Answer {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // ballast may answer and close before the whole request is written.
    let _ = s.write_all(request).await;
    read_answers(&mut s, want).await
}

async fn read_answers(s: &mut TcpStream, want: usize) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut answer = Answer {
        statuses: Vec::new(),
        bodies: Vec::new(),
        closed: false,
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        while let Some(n) = frame(&buf) {
            let resp: Vec<u8> = buf.drain(..n).collect();
            let text = String::from_utf8_lossy(&resp).into_owned();
            let status = text
                .get(9..12)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("no status line: {text:?}"));
            answer.statuses.push(status);
            answer
                .bodies
                .push(text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned());
        }
        if answer.statuses.len() >= want {
            return answer;
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => panic!("no answer in time; got {:?}", String::from_utf8_lossy(&buf)),
            Ok(Ok(0) | Err(_)) => {
                answer.closed = true;
                return answer;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Requests hyper's parser refuses before ballast sees them: the status, and nothing at the
/// server.
#[tokio::test]
async fn malformed_requests_are_refused_and_reach_no_server() {
    let server = Recorder::start().await;
    let rt = start(&http_config(
        "max_header_size = \"8KiB\"\nmax_headers = 20",
        server.addr,
    ))
    .await;
    let a = common::addr(&rt);
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(9000)
    );
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "two different Content-Lengths",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
                .to_vec(),
            400,
        ),
        (
            "Content-Length: 1, 2",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 2\r\n\r\nab".to_vec(),
            400,
        ),
        (
            "Content-Length: +2",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\nab".to_vec(),
            400,
        ),
        (
            "Transfer-Encoding not ending in chunked",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "obs-fold",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "space before the colon",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 0\r\n\r\n".to_vec(),
            400,
        ),
        ("bare CR", b"GET / HTTP/1.1\rHost: x\r\n\r\n".to_vec(), 400),
        (
            "NUL in a header value",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "control character in a header value",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "DEL in a header value",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n".to_vec(),
            400,
        ),
        ("HTTP/0.9", b"GET /\r\n\r\n".to_vec(), 400),
        (
            "HTTP/1.2",
            b"GET / HTTP/1.2\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        ("oversized request line", long_line.into_bytes(), 431),
        ("oversized header", big_header.into_bytes(), 431),
        ("too many headers", many.into_bytes(), 431),
    ];
    for (case, bytes, status) in &cases {
        let answer = exchange(a, bytes, 1).await;
        assert_eq!(answer.statuses, [*status], "{case}");
        server.assert_nothing(case);
    }
    rt.shutdown(Duration::from_secs(1)).await;
}

/// Requests ballast passes on: each reaches the server as exactly one well-framed request.
#[tokio::test]
async fn accepted_oddities_reach_the_server_as_one_well_framed_request() {
    let cases: Vec<(&str, &[u8], &str)> = vec![
        (
            "bare LF line endings",
            b"GET /lf HTTP/1.1\nHost: x\n\n",
            "GET /lf HTTP/1.1\r\n",
        ),
        (
            "absolute-form URI",
            b"GET http://x/abs?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /abs?q=1 HTTP/1.1\r\n",
        ),
        (
            "chunk extensions",
            b"POST /ext HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\n\r\n",
            "POST /ext HTTP/1.1\r\n",
        ),
    ];
    for (case, bytes, line) in cases {
        let server = Recorder::start().await;
        let rt = start(&http_config("", server.addr)).await;
        let answer = exchange(common::addr(&rt), bytes, 1).await;
        assert_eq!(answer.statuses, [200], "{case}");
        assert_eq!(answer.bodies, ["ok"], "{case}");
        let seen = server.requests();
        assert_eq!(seen.len(), 1, "{case}: {seen:?}");
        assert!(seen[0].starts_with(line), "{case}: {seen:?}");
        assert!(!seen[0].contains(";name"), "{case}: re-framed: {seen:?}");
        assert!(
            seen[0].to_ascii_lowercase().contains("host: x\r\n"),
            "{case}: {seen:?}"
        );
        rt.shutdown(Duration::from_secs(1)).await;
    }
}

/// `Content-Length` and `Transfer-Encoding: chunked` together: chunked wins, the length is
/// dropped, the server gets the chunked body re-framed, and the client connection is closed after
/// the answer, so the bytes after the chunked body are never read as a request.
#[tokio::test]
async fn content_length_with_chunked_is_read_as_chunked_and_the_connection_closed() {
    let server = Recorder::start().await;
    let rt = start(&http_config("", server.addr)).await;
    let answer = exchange(
        common::addr(&rt),
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        2,
    )
    .await;
    assert_eq!(answer.statuses, [200]);
    assert!(answer.closed, "the connection is closed after the answer");
    let seen = server.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].starts_with("POST /a HTTP/1.1\r\n"), "{seen:?}");
    assert!(
        !seen[0].to_ascii_lowercase().contains("content-length: 40"),
        "{seen:?}"
    );
    assert!(
        seen[0].ends_with("abc\r\n0\r\n\r\n") || seen[0].ends_with("\r\n\r\nabc"),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|r| r.contains("smuggled")), "{seen:?}");
    rt.shutdown(Duration::from_secs(1)).await;
}

/// Two requests in one write: two answers in order, two requests at the server.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let server = Recorder::start().await;
    let rt = start(&http_config("", server.addr)).await;
    let answer = exchange(
        common::addr(&rt),
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nPOST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        2,
    )
    .await;
    assert_eq!(answer.statuses, [200, 200]);
    let seen = server.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].starts_with("GET /one "), "{seen:?}");
    assert!(seen[1].starts_with("POST /two "), "{seen:?}");
    assert!(seen[1].ends_with("\r\n\r\nabc"), "{seen:?}");
    rt.shutdown(Duration::from_secs(1)).await;
}

/// A body that holds a second request, framed by Content-Length: the server gets it as body,
/// and the next request on the same client connection is a request of its own.
#[tokio::test]
async fn a_request_hidden_in_a_body_stays_body() {
    let server = Recorder::start().await;
    let rt = start(&http_config("", server.addr)).await;
    let hidden = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let first = format!(
        "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{hidden}",
        hidden.len()
    );
    let mut s = TcpStream::connect(common::addr(&rt))
        .await
        .expect("connect");
    s.write_all(first.as_bytes()).await.expect("write");
    let answer = read_answers(&mut s, 1).await;
    assert_eq!(answer.statuses, [200]);
    s.write_all(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let answer = read_answers(&mut s, 1).await;
    assert_eq!(answer.statuses, [200]);
    let seen = server.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].starts_with("POST /a "), "{seen:?}");
    assert!(seen[0].ends_with(&format!("\r\n\r\n{hidden}")), "{seen:?}");
    assert!(seen[1].starts_with("GET /b "), "{seen:?}");
    rt.shutdown(Duration::from_secs(1)).await;
}

/// A chunked body that turns out malformed (a chunk size that is not hex, or overflows 64 bits):
/// the server never gets a complete request, and the client gets a 400 (its fault, so no 502 and
/// no mark against the server).
#[tokio::test]
async fn a_malformed_chunked_body_never_completes_a_request() {
    let server = Recorder::start().await;
    let rt = start(&http_config("", server.addr)).await;
    for (case, size) in [
        ("chunk size zz", "zz"),
        ("chunk size overflow", "ffffffffffffffffff"),
    ] {
        let req = format!(
            "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nabc\r\n0\r\n\r\n"
        );
        let answer = exchange(common::addr(&rt), req.as_bytes(), 1).await;
        assert_eq!(answer.statuses, [400], "{case}");
        assert!(
            server.requests().is_empty(),
            "{case}: {:?}",
            server.requests()
        );
    }
    let l = rt.listener("l").expect("l");
    assert_eq!(
        l.stats
            .bad_gateway
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "not the server's fault"
    );
    rt.shutdown(Duration::from_secs(1)).await;
}

/// A transfer coding besides chunked (`gzip, chunked`) is a 501: only the chunked layer would be
/// decoded, and the server would get gzip bytes with nothing saying so.
#[tokio::test]
async fn a_transfer_coding_besides_chunked_is_not_implemented() {
    let server = Recorder::start().await;
    let rt = start(&http_config("", server.addr)).await;
    let answer = exchange(
        common::addr(&rt),
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        1,
    )
    .await;
    assert_eq!(answer.statuses, [501]);
    server.assert_nothing("gzip, chunked");
    rt.shutdown(Duration::from_secs(1)).await;
}

/// CONNECT is refused with 501 before any server is asked: ballast opens no tunnel, to the
/// named host or anywhere else.
#[tokio::test]
async fn connect_is_not_implemented_and_opens_no_tunnel() {
    let server = Recorder::start().await;
    let rt = start(&http_config("", server.addr)).await;
    let answer = exchange(
        common::addr(&rt),
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        1,
    )
    .await;
    assert_eq!(answer.statuses, [501]);
    server.assert_nothing("CONNECT");
    rt.shutdown(Duration::from_secs(1)).await;
}

/// An HTTP/1.1 request without Host, any request with two or with one that is not
/// `host[:port]`, and userinfo in an absolute-form target, are a 400 (RFC 9112 §3.2, RFC 9110
/// §4.2.4) and reach no server; HTTP/1.0 without Host is served.
#[tokio::test]
async fn host_missing_or_repeated_is_a_400() {
    let server = Recorder::start().await;
    let rt = start(&http_config("", server.addr)).await;
    for (case, bytes) in [
        ("no Host", &b"GET / HTTP/1.1\r\n\r\n"[..]),
        (
            "two Hosts",
            &b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..],
        ),
        (
            "two Hosts, HTTP/1.0",
            &b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"[..],
        ),
        (
            "userinfo in Host",
            &b"GET / HTTP/1.1\r\nHost: evil.example@a\r\n\r\n"[..],
        ),
        (
            "Host with a path",
            &b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"[..],
        ),
        (
            "userinfo in an absolute-form target",
            &b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        ),
    ] {
        let answer = exchange(common::addr(&rt), bytes, 1).await;
        assert_eq!(answer.statuses, [400], "{case}");
        server.assert_nothing(case);
    }
    let answer = exchange(common::addr(&rt), b"GET /old HTTP/1.0\r\n\r\n", 1).await;
    assert_eq!(answer.statuses, [200]);
    let seen = server.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].starts_with("GET /old HTTP/1.1\r\n"), "{seen:?}");
    rt.shutdown(Duration::from_secs(1)).await;
}
/// Slowloris: headers one byte every 50 ms never finish within `header_timeout`; the
/// connection is closed at the timeout and nothing reaches the server.
#[tokio::test]
async fn headers_sent_a_byte_at_a_time_are_cut_off_at_header_timeout() {
    let server = Recorder::start().await;
    let rt = start(&http_config("header_timeout = \"300ms\"", server.addr)).await;
    let s = TcpStream::connect(common::addr(&rt))
        .await
        .expect("connect");
    let (mut rd, mut wr) = s.into_split();
    let started = tokio::time::Instant::now();
    let trickle = tokio::spawn(async move {
        for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut back = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, rd.read_to_end(&mut back))
        .await
        .expect("closed in time");
    common::assert_fired_after_300ms(started, "slowloris close");
    assert!(back.is_empty(), "{:?}", String::from_utf8_lossy(&back));
    trickle.abort();
    server.assert_nothing("slowloris");
    rt.shutdown(Duration::from_secs(1)).await;
}

/// Slow POST: a body that stops arriving is answered 408 after `body_timeout`; the server never
/// gets a complete request.
#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_408() {
    let server = Recorder::start().await;
    let rt = start(&http_config("body_timeout = \"300ms\"", server.addr)).await;
    let mut s = TcpStream::connect(common::addr(&rt))
        .await
        .expect("connect");
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        .await
        .expect("write");
    for b in b"abcd" {
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.write_all(&[*b]).await.expect("write");
    }
    let started = tokio::time::Instant::now();
    let answer = read_answers(&mut s, 1).await;
    assert_eq!(answer.statuses, [408]);
    common::assert_fired_after_300ms(started, "408");
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    rt.shutdown(Duration::from_secs(1)).await;
}

/// A client that never reads a large response: ballast reads from the server only as fast as
/// the client takes it, so the server's writes stop well short of the whole body.
#[tokio::test]
async fn a_client_that_does_not_read_stops_the_server_not_ballast_memory() {
    const BODY: usize = 128 << 20;
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&written);
    tokio::spawn(async move {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let mut buf = [0u8; 4096];
        let mut head = Vec::new();
        while find(&head, b"\r\n\r\n").is_none() {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n");
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
        let piece = vec![b'x'; 64 * 1024];
        while count.load(std::sync::atomic::Ordering::SeqCst) < BODY {
            if s.write_all(&piece).await.is_err() {
                return;
            }
            count.fetch_add(piece.len(), std::sync::atomic::Ordering::SeqCst);
        }
    });
    let rt = start(&http_config("", addr)).await;
    let mut s = TcpStream::connect(common::addr(&rt))
        .await
        .expect("connect");
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    // Let the pipes fill, then check the server is stuck well short of the end.
    let mut last = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = written.load(std::sync::atomic::Ordering::SeqCst);
        if now == last && now > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never stopped: {now}"
        );
        last = now;
    }
    eprintln!("server wrote {last} bytes before blocking");
    assert!(last < BODY / 4, "ballast took {last} of {BODY} bytes");
    drop(s);
    rt.shutdown(Duration::from_secs(1)).await;
}

/// The client connection preface and an empty SETTINGS frame (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// One HTTP/2 frame: 9-byte header, then the payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("small frame")
        .to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A HEADERS frame for `GET http://x/` (HPACK: static-table :method GET, :scheme http, :path /,
/// and :authority x as a literal), ending the stream.
fn h2_get(stream: u32) -> Vec<u8> {
    h2_frame(
        0x1,
        0x4 | 0x1,
        stream,
        &[0x82, 0x86, 0x84, 0x01, 0x01, b'x'],
    )
}

/// Reads frames until a GOAWAY or the end of the connection; returns the GOAWAY error code if
/// one came.
async fn h2_goaway(s: &mut TcpStream) -> Option<u32> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == 0x7 && len >= 8 {
                let code = &buf[9 + 4..9 + 8];
                return Some(u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
            }
            buf.drain(..9 + len);
        }
        match tokio::time::timeout(PATIENCE, s.read(&mut chunk)).await {
            Err(_) => panic!("neither GOAWAY nor close in time"),
            Ok(Ok(0) | Err(_)) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// HTTP/2 rapid reset (CVE-2023-44487): streams opened and reset at once, thousands of them.
/// The connection is sent GOAWAY (h2's limit on streams reset before they are accepted,
/// ENHANCE_YOUR_CALM) and closed, and another client is served meanwhile.
#[tokio::test]
async fn h2c_rapid_reset_gets_goaway_and_others_are_still_served() {
    let server = Recorder::start().await;
    let rt = start(&http_config("", server.addr)).await;
    let a = common::addr(&rt);
    let mut s = TcpStream::connect(a).await.expect("connect");
    let mut flood = H2_PREFACE.to_vec();
    for i in 0..5000u32 {
        let stream = 2 * i + 1;
        flood.extend(h2_get(stream));
        flood.extend(h2_frame(0x3, 0, stream, &8u32.to_be_bytes()));
    }
    let started = tokio::time::Instant::now();
    let _ = s.write_all(&flood).await;
    let code = h2_goaway(&mut s).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(code, Some(0xb), "GOAWAY ENHANCE_YOUR_CALM");
    let answer = exchange(a, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n", 1).await;
    assert_eq!(answer.statuses, [200]);
    rt.shutdown(Duration::from_secs(1)).await;
}

/// SETTINGS and PING floods from a client that never reads the acknowledgements: h2 stops
/// reading the flood once its answers back up, so memory stays bounded, and the worker keeps
/// serving other clients.
#[tokio::test]
async fn h2c_settings_and_ping_floods_do_not_stop_other_clients() {
    let server = Recorder::start().await;
    let rt = start(&http_config("", server.addr)).await;
    let a = common::addr(&rt);
    let mut floods = Vec::new();
    for kind in [0x4u8, 0x6] {
        let mut s = TcpStream::connect(a).await.expect("connect");
        let mut flood = H2_PREFACE.to_vec();
        for i in 0..20_000u64 {
            flood.extend(if kind == 0x6 {
                h2_frame(0x6, 0, 0, &i.to_be_bytes())
            } else {
                h2_frame(0x4, 0, 0, &[0, 0x3, 0, 0, 0, 100])
            });
        }
        // The write stops when ballast stops reading; that is the point, so it runs aside.
        floods.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(&flood)).await;
            s
        }));
    }
    for _ in 0..3 {
        let answer = exchange(a, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n", 1).await;
        assert_eq!(answer.statuses, [200]);
    }
    for f in floods {
        f.abort();
    }
    rt.shutdown(Duration::from_secs(1)).await;
}
