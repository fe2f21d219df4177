//! Persistence (Keepalived `persistence_timeout`, `ipvsadm -p`) end to end: real ballast, real
//! backends, clients from several loopback addresses (127.0.0.0/8 is all local).

mod common;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ballast::config::AdminState;
use ballast::persistence::Persistence;
use ballast::runtime::Runtime;
use common::{addr, config, servers, start, Backend, PATIENCE};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Connects to `to` from `from` (port chosen by the kernel).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    let ip: IpAddr = from.parse().expect("ip");
    socket.bind(SocketAddr::new(ip, 0)).expect("bind source");
    tokio::time::timeout(PATIENCE, socket.connect(to))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// The name of the backend a connection from `from` lands on (the connection is then closed).
async fn who_from(from: &str, to: SocketAddr) -> String {
    let s = connect_from(from, to).await;
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, BufReader::new(s).read_line(&mut line))
        .await
        .expect("name in time")
        .expect("read name");
    line.trim().to_owned()
}

/// ballast, round robin over `backends`, with the persistence settings in `extra`.
async fn persistent(backends: &[Backend], extra: &str) -> Runtime {
    let list = servers(&backends.iter().map(|b| (b.addr, 1)).collect::<Vec<_>>());
    start(&config("rr", &list, "", extra)).await
}

/// The persistence table of upstream "u".
fn table(rt: &Runtime) -> Arc<Persistence> {
    rt.upstream("u")
        .and_then(|u| u.persistence.clone())
        .expect("persistence on")
}

async fn backends() -> Vec<Backend> {
    vec![
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ]
}

#[tokio::test]
async fn a_client_stays_on_its_server_until_it_has_been_idle_for_the_timeout() {
    let b = backends().await;
    let rt = persistent(&b, "persistence_timeout = \"400ms\"").await;
    let to = addr(&rt);
    let first = who_from("127.0.0.1", to).await;
    for _ in 0..5 {
        assert_eq!(
            who_from("127.0.0.1", to).await,
            first,
            "round robin is overridden"
        );
    }
    // An open connection keeps the entry alive however long it lasts.
    let open = connect_from("127.0.0.1", to).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        who_from("127.0.0.1", to).await,
        first,
        "held by an open connection"
    );
    drop(open);
    // Idle for longer than the timeout: scheduled afresh, and round robin moves on.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = who_from("127.0.0.1", to).await;
    assert_ne!(after, first, "the entry expired");
    let table = table(&rt);
    assert_eq!(table.stats.expired.load(Ordering::Relaxed), 1);
    assert_eq!(table.stats.hits.load(Ordering::Relaxed), 7);
    assert_eq!(table.stats.misses.load(Ordering::Relaxed), 2);
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_granularity_makes_a_network_one_client() {
    let b = backends().await;
    let clients = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];

    // Default granularity: each address is its own client, so round robin spreads them.
    let rt = persistent(&b, "persistence_timeout = \"60s\"").await;
    let mut seen = Vec::new();
    for c in clients {
        seen.push(who_from(c, addr(&rt)).await);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "{seen:?}");
    rt.shutdown(Duration::from_secs(1)).await;

    // /8: all of 127.0.0.0/8 is one client.
    let rt = persistent(
        &b,
        "persistence_timeout = \"60s\"\npersistence_granularity = \"255.0.0.0\"",
    )
    .await;
    let first = who_from(clients[0], addr(&rt)).await;
    for c in clients {
        assert_eq!(who_from(c, addr(&rt)).await, first, "{c}");
    }
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_client_whose_server_dies_is_moved_at_once() {
    let mut b = backends().await;
    let rt = persistent(&b, "persistence_timeout = \"60s\"").await;
    let to = addr(&rt);
    let first = who_from("127.0.0.1", to).await;
    let i = b
        .iter()
        .position(|x| x.name == first)
        .expect("known backend");
    drop(b.remove(i)); // its port now refuses connections
    let moved = who_from("127.0.0.1", to).await;
    assert_ne!(moved, first);
    assert!(!moved.is_empty(), "the client was served, not dropped");
    for _ in 0..3 {
        assert_eq!(
            who_from("127.0.0.1", to).await,
            moved,
            "and stays on the new one"
        );
    }
    let table = table(&rt);
    assert_eq!(table.stats.rescheduled.load(Ordering::Relaxed), 1);
    assert_eq!(table.len(), 1);
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_client_whose_server_drains_is_moved_while_its_open_connection_goes_on() {
    let b = backends().await;
    let rt = persistent(&b, "persistence_timeout = \"60s\"").await;
    let to = addr(&rt);
    let first = who_from("127.0.0.1", to).await;
    let mut open = connect_from("127.0.0.1", to).await;
    let mut line = String::new();
    let mut reader = BufReader::new(&mut open);
    reader.read_line(&mut line).await.expect("name");
    assert_eq!(line.trim(), first);
    let u = rt.upstream("u").expect("u");
    let i = b
        .iter()
        .position(|x| x.name == first)
        .expect("known backend");
    assert!(u.set_server_state(i, AdminState::Draining, "test"));
    let moved = who_from("127.0.0.1", to).await;
    assert_ne!(moved, first, "a draining server takes no persistent client");
    // The connection made before draining still works.
    reader.get_mut().write_all(b"ping").await.expect("write");
    let mut echo = [0u8; 4];
    tokio::time::timeout(PATIENCE, reader.read_exact(&mut echo))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&echo, b"ping");
    assert_eq!(table(&rt).stats.rescheduled.load(Ordering::Relaxed), 1);
    rt.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_table_is_bounded_and_a_client_beyond_it_is_still_served() {
    let b = backends().await;
    let rt = persistent(
        &b,
        "persistence_timeout = \"60s\"\npersistence_max_entries = 2",
    )
    .await;
    for c in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        assert!(!who_from(c, addr(&rt)).await.is_empty());
    }
    let table = table(&rt);
    assert_eq!(table.len(), 2);
    assert_eq!(table.stats.full.load(Ordering::Relaxed), 1);
    rt.shutdown(Duration::from_secs(1)).await;
}

/// An HTTP/1.1 server whose every answer is its name.
async fn http_backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(name.as_bytes()),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    a
}

/// One `Connection: close` GET from `from`; returns the body of the 200.
async fn get_from(from: &str, to: SocketAddr) -> String {
    let (status, body) = common::get_and_close(connect_from(from, to).await).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn http_requests_persist_per_client_address() {
    let list = [
        http_backend("a").await,
        http_backend("b").await,
        http_backend("c").await,
    ];
    let text = format!(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"u\"\n\n\
         [[upstream]]\nname = \"u\"\nscheduler = \"rr\"\npersistence_timeout = \"60s\"\n{}",
        servers(&list.iter().map(|a| (*a, 1)).collect::<Vec<_>>())
    );
    let rt = start(&text).await;
    let to = addr(&rt);
    let one = get_from("127.0.0.1", to).await;
    let two = get_from("127.0.0.2", to).await;
    assert_ne!(one, two, "two clients, scheduled round robin");
    for _ in 0..4 {
        assert_eq!(get_from("127.0.0.1", to).await, one);
        assert_eq!(get_from("127.0.0.2", to).await, two);
    }
    rt.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn persistence_settings_are_validated() {
    let text = "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\n\n\
                [[upstream]]\nname = \"u\"\npersistence_granularity = \"255.0.255.0\"\n\
                server = [{ address = \"127.0.0.1:1\" }]\n\n\
                [[upstream]]\nname = \"v\"\npersistence_timeout = \"60s\"\n\
                persistence_granularity = \"255.0.255.0\"\npersistence_max_entries = 0\n\
                server = [{ address = \"127.0.0.1:1\" }]\n";
    let err = ballast::config::Config::from_str(text, "t.toml").expect_err("invalid");
    let lines: Vec<String> = err.diagnostics().iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "t.toml:8:27: upstream[0].persistence_granularity: has no effect without persistence_timeout; add persistence_timeout = \"300s\"",
            "t.toml:14:27: upstream[1].persistence_granularity: \"255.0.255.0\" is not an IPv4 netmask; allowed: a contiguous netmask such as \"255.255.255.0\", or a prefix length \"/0\"..=\"/32\"",
            "t.toml:15:27: upstream[1].persistence_max_entries: 0 is out of range; allowed: 1..=16777216",
        ],
        "{lines:#?}"
    );
}
