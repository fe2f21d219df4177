//! HTTPS listeners: TLS termination with certificates chosen by SNI, HTTP/1.1 and HTTP/2 by ALPN,
//! over real handshakes on 127.0.0.1 with certificates made by the test.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{start, PATIENCE};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};

struct Pki {
    dir: PathBuf,
}

/// A CA and two server certificates (a.test + 127.0.0.1, and *.b.test) written to a temp dir.
fn pki(name: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("ballast-https-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let ca_key = KeyPair::generate_for(alg).expect("ca key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "ballast test CA");
    let ca = params.self_signed(&ca_key).expect("ca");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    for (file, sans) in [("a", vec!["a.test", "127.0.0.1"]), ("b", vec!["*.b.test"])] {
        let key = KeyPair::generate_for(alg).expect("key");
        let names: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, file);
        let cert = params.signed_by(&key, &ca, &ca_key).expect("sign");
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).expect("write");
    }
    Pki { dir }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HTTP/1.1 server answering with the X-Forwarded-Proto it received.
async fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let proto = req
                            .headers()
                            .get("x-forwarded-proto")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            proto,
                        ))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn config(pki: &Pki, server: SocketAddr) -> String {
    let d = pki.dir.display();
    format!(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nprotocol = \"https\"\nupstream = \"u\"\n\
         [[listener.certificate]]\ncert_file = \"{d}/a.pem\"\nkey_file = \"{d}/a.key\"\n\
         [[listener.certificate]]\ncert_file = \"{d}/b.pem\"\nkey_file = \"{d}/b.key\"\n\n\
         [[upstream]]\nname = \"u\"\nserver = [{{ address = \"{server}\" }}]\n"
    )
}

/// Connects with TLS (SNI `name`, offering `alpn`); returns the stream, the certificate's CN
/// chosen by the server, and the negotiated ALPN.
async fn tls_connect(
    pki: &Pki,
    addr: SocketAddr,
    name: &str,
    alpn: &[&[u8]],
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    Vec<u8>,
    Option<Vec<u8>>,
) {
    let verify = ballast::tls::ServerVerification::CaFiles(vec![pki.dir.join("ca.pem")]);
    let config: Arc<rustls::ClientConfig> =
        ballast::tls::client_config(&verify, alpn).expect("client config");
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let server_name = ServerName::try_from(name.to_owned()).expect("name");
    let tls = tokio::time::timeout(PATIENCE, connector.connect(server_name, tcp))
        .await
        .expect("in time")
        .expect("handshake");
    let (_, conn) = tls.get_ref();
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    (tls, cert, alpn)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn https_terminates_tls_picks_certificates_by_sni_and_speaks_h1_and_h2() {
    let pki = pki("main");
    let rt = start(&config(&pki, backend().await)).await;
    let addr = common::addr(&rt);

    // HTTP/1.1 to a.test: the a.test certificate, and the server sees X-Forwarded-Proto: https.
    let (tls, cert, alpn) = tls_connect(&pki, addr, "a.test", &[b"http/1.1"]).await;
    assert!(contains(&cert, b"a.test"), "a.test certificate served");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (status, body) = h1_get(tls, "a.test").await;
    assert_eq!(status, 200);
    assert_eq!(body, "https");

    // HTTP/2 by ALPN to x.b.test: the wildcard certificate.
    let (tls, cert, alpn) = tls_connect(&pki, addr, "x.b.test", &[b"h2", b"http/1.1"]).await;
    assert!(contains(&cert, b"*.b.test"), "wildcard certificate served");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2");
    tokio::spawn(conn);
    let req = Request::get("https://x.b.test/")
        .body(Empty::<Bytes>::new())
        .expect("req");
    let resp = tokio::time::timeout(PATIENCE, sender.send_request(req))
        .await
        .expect("in time")
        .expect("resp");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"https");

    // A client that does not speak TLS is dropped and counted.
    let mut plain = TcpStream::connect(addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut plain, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        PATIENCE,
        tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut buf),
    )
    .await;
    let l = rt.listener("l").expect("l");
    common::eventually("tls failure counted", || {
        l.stats
            .tls_failed
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    rt.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn check_names_the_certificate_file_that_is_wrong() {
    let pki = pki("check");
    let good = pki.dir.join("good.toml");
    std::fs::write(&good, config(&pki, "127.0.0.1:9".parse().expect("addr"))).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args(["check", "-c"])
        .arg(&good)
        .output()
        .expect("run check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The b certificate with a's key: the key does not match.
    let text = config(&pki, "127.0.0.1:9".parse().expect("addr")).replace("b.key", "a.key");
    let bad = pki.dir.join("bad.toml");
    std::fs::write(&bad, text).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args(["check", "-c"])
        .arg(&bad)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("listener \"l\""), "{stderr}");
    assert!(
        stderr.contains("b.pem"),
        "names the certificate file: {stderr}"
    );
    assert!(stderr.contains("a.key"), "names the key file: {stderr}");
}

/// A server answering each request with its HTTP version (`HTTP/1.1`, `HTTP/2.0`): over TLS
/// with the "a" certificate (version by ALPN) when `pki` is given, else plain HTTP/1.1 or h2c.
async fn version_backend(pki: Option<&Pki>) -> SocketAddr {
    let acceptor = pki.map(|pki| {
        let certs = [ballast::tls::CertSource {
            cert_file: pki.dir.join("a.pem"),
            key_file: pki.dir.join("a.key"),
            server_names: Vec::new(),
        }];
        let config =
            ballast::tls::server_config(&certs, &[b"h2", b"http/1.1"]).expect("server config");
        tokio_rustls::TlsAcceptor::from(config)
    });
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let body = format!("{:?}", req.version());
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            body,
                        ))))
                    });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = match acceptor {
                    Some(acceptor) => match acceptor.accept(s).await {
                        Ok(tls) => builder.serve_connection(TokioIo::new(tls), svc).await,
                        Err(_) => return,
                    },
                    None => builder.serve_connection(TokioIo::new(s), svc).await,
                };
            });
        }
    });
    addr
}

/// One HTTP/1.1 GET with `Host: host` over `io` (plain or TLS); returns the status and body.
async fn h1_get<I>(io: I, host: &str) -> (hyper::StatusCode, String)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("h1");
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .expect("req");
    let resp = tokio::time::timeout(PATIENCE, sender.send_request(req))
        .await
        .expect("in time")
        .expect("resp");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A GET to a.test through plain HTTP at `addr`; the body, after checking for a 200.
async fn get_body(addr: SocketAddr) -> String {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (status, body) = h1_get(tcp, "a.test").await;
    assert_eq!(status, 200);
    body
}

#[tokio::test]
async fn servers_can_be_reached_with_tls_and_with_http2() {
    let pki = pki("upstream");
    let ca = pki.dir.join("ca.pem");
    let tls = version_backend(Some(&pki)).await;
    let h2c = version_backend(None).await;
    let cfg = |extra: &str, server: SocketAddr| {
        format!(
            "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"u\"\n\n\
             [[upstream]]\nname = \"u\"\n{extra}\nserver = [{{ address = \"{server}\" }}]\n"
        )
    };
    let ca_line = format!(
        "tls = true\ntls_ca_file = \"{}\"\ntls_server_name = \"a.test\"",
        ca.display()
    );
    for (extra, server, want) in [
        (ca_line.clone(), tls, "HTTP/1.1"),
        (format!("{ca_line}\nhttp2 = true"), tls, "HTTP/2.0"),
        ("http2 = true".to_owned(), h2c, "HTTP/2.0"),
        ("tls = true\ntls_verify = false".to_owned(), tls, "HTTP/1.1"),
    ] {
        let rt = start(&cfg(&extra, server)).await;
        for _ in 0..3 {
            assert_eq!(get_body(common::addr(&rt)).await, want, "{extra}");
        }
        rt.shutdown(Duration::from_secs(1)).await;
    }
    // Verification on: a certificate for another name fails the connect, so no server can take
    // the request (503); it is never silently accepted.
    let wrong = format!(
        "tls = true\ntls_ca_file = \"{}\"\ntls_server_name = \"other.test\"",
        ca.display()
    );
    let rt = start(&cfg(&wrong, tls)).await;
    let tcp = TcpStream::connect(common::addr(&rt))
        .await
        .expect("connect");
    let (status, _) = h1_get(tcp, "x").await;
    assert_eq!(status, 503, "no server could be connected to");
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn grpc_style_http2_with_trailers_passes_end_to_end() {
    // An h2c server that checks `te: trailers` and answers a body then a grpc-status trailer.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let te_ok = req.headers().get("te").is_some_and(|v| v == "trailers");
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert(
                            "grpc-status",
                            if te_ok { "0" } else { "3" }.parse().expect("value"),
                        );
                        let body = TrailerBody {
                            data: Some(Bytes::from_static(b"\0\0\0\0\x02hi")),
                            trailers: Some(trailers),
                        };
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .header("content-type", "application/grpc")
                                .body(body)
                                .expect("response"),
                        )
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let cfg = format!(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"u\"\n\n\
         [[upstream]]\nname = \"u\"\nhttp2 = true\nserver = [{{ address = \"{server}\" }}]\n"
    );
    let rt = start(&cfg).await;
    let tcp = TcpStream::connect(common::addr(&rt))
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2");
    tokio::spawn(conn);
    let req = Request::post("http://grpc.test/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02yo")))
        .expect("req");
    let resp = tokio::time::timeout(PATIENCE, sender.send_request(req))
        .await
        .expect("in time")
        .expect("resp");
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.expect("body");
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0", "the server saw te: trailers");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x02hi");
    rt.shutdown(Duration::from_secs(1)).await;
}

/// A response body of one data frame followed by trailers.
struct TrailerBody {
    data: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl hyper::body::Body for TrailerBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let frame = match self.data.take() {
            Some(d) => Some(hyper::body::Frame::data(d)),
            None => self.trailers.take().map(hyper::body::Frame::trailers),
        };
        std::task::Poll::Ready(frame.map(Ok))
    }
}

/// Runs curl (a real, independent client) with `args`; `None` when curl is not installed, which
/// fails the test under CI (`.ci/run` installs it).
fn curl(args: &[&str]) -> Option<String> {
    let Ok(out) = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
    else {
        assert!(
            std::env::var("CI").is_err(),
            "curl is missing, and CI must install it"
        );
        eprintln!("SKIPPED: curl is not installed");
        return None;
    };
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_http1_h2c_and_https_through_ballast() {
    let pki = pki("curl");
    let backend = backend().await;
    let d = pki.dir.display();
    let cfg = format!(
        "[[listener]]\nname = \"plain\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"u\"\n\n\
         [[listener]]\nname = \"tls\"\nbind = \"127.0.0.1:0\"\nprotocol = \"https\"\nupstream = \"u\"\n\
         [[listener.certificate]]\ncert_file = \"{d}/a.pem\"\nkey_file = \"{d}/a.key\"\n\n\
         [[upstream]]\nname = \"u\"\nserver = [{{ address = \"{backend}\" }}]\n"
    );
    let rt = start(&cfg).await;
    let plain = rt.listener_addr("plain").expect("plain");
    let tls = rt.listener_addr("tls").expect("tls");
    let url = format!("http://{plain}/");
    let https = format!("https://a.test:{}/", tls.port());
    let resolve = format!("a.test:{}:127.0.0.1", tls.port());
    let ca = pki.dir.join("ca.pem");
    let ca = ca.to_str().expect("utf-8 path").to_owned();
    let results = tokio::task::spawn_blocking(move || {
        [
            curl(&["--http1.1", &url]),
            curl(&["--http2-prior-knowledge", &url]),
            curl(&["--http2", "--cacert", &ca, "--resolve", &resolve, &https]),
            curl(&["--http1.1", "--cacert", &ca, "--resolve", &resolve, &https]),
        ]
    })
    .await
    .expect("curl runs");
    let want = ["http", "http", "https", "https"];
    for (got, want) in results.iter().zip(want) {
        if let Some(got) = got {
            assert_eq!(got, want);
        }
    }
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_reload_serves_renewed_certificates_on_the_same_socket() {
    let old = pki("renew");
    let server = backend().await;
    let text = config(&old, server);
    let mut rt = start(&text).await;
    let addr = common::addr(&rt);
    let (_, before, _) = tls_connect(&old, addr, "a.test", &[b"http/1.1"]).await;
    // Renewed in place: same file names, new keys and a new CA.
    let renewed = pki("renew");
    let cfg = ballast::config::Config::from_str(&text, "test.toml").expect("valid");
    let summary = rt.reload(cfg).await.expect("reload applies");
    assert_eq!(summary.listeners_kept, 1, "{summary}");
    assert_eq!(common::addr(&rt), addr, "same socket");
    // The handshake verifies against the new CA only if the renewed certificate is served.
    let (_, after, _) = tls_connect(&renewed, addr, "a.test", &[b"http/1.1"]).await;
    assert_ne!(before, after);
    rt.shutdown(PATIENCE).await;
}
