//! Fuzz target `http_head`: an HTTP/1.x request head from arbitrary bytes through what ballast
//! does to it before a server sees it ([`ballast::proxy::http::head`]): the refusals, routing by
//! host and path, hop-by-hop removal, forwarding headers, the request id and the origin-form
//! target.
//!
//! The head is parsed with httparse (what hyper parses with) into an `http::Request<()>` under
//! the framing rules hyper's server applies before ballast sees a request (see [`hyper_rules`]).
//! Then, on what would be sent: no hop-by-hop header is left (but an Upgrade's pair, and
//! `TE: trailers`), exactly one Host when the client named one, and that a plain `host[:port]`
//! (no userinfo, nothing a server could read as another host), never both Content-Length and
//! Transfer-Encoding, every value still a valid field value, and the serialized head parses back
//! as the same request.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use ballast::config::Config;
use ballast::proxy::http::head::{refused, request_host, rewrite_for_server, strip_port, Rewrite};
use ballast::proxy::http::headers::{
    requested_upgrade, Forwarding, X_FORWARDED_FOR, X_FORWARDED_PROTO,
};
use ballast::proxy::http::route::Router;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};

/// hyper's default limit on header lines.
const MAX_HEADERS: usize = 100;

/// An HTTP listener with host and path routes, one rewriting Host.
const SAMPLE: &str = r#"
[[listener]]
name = "site"
bind = "127.0.0.1:8081"
protocol = "http"
upstream = "default"
[[listener.route]]
path = "/healthz"
upstream = "b"
[[listener.route]]
host = "api.example.com"
path_prefix = "/v1/"
upstream = "a"
[[listener.route]]
host = "*.example.com"
upstream = "b"
host_rewrite = "internal.example"

[[upstream]]
name = "default"
server = [{ address = "127.0.0.1:9001" }]
[[upstream]]
name = "a"
server = [{ address = "127.0.0.1:9002" }]
[[upstream]]
name = "b"
server = [{ address = "127.0.0.1:9003" }]
"#;

fn router() -> &'static (Router, usize) {
    static ROUTER: OnceLock<(Router, usize)> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let config = Config::from_str(SAMPLE, "sample.toml").expect("the sample is valid");
        let names: Vec<String> = config.upstreams.iter().map(|u| u.name.clone()).collect();
        let router = Router::new(&config.listeners[0], |n| names.iter().position(|x| x == n));
        (router, names.len())
    })
}

/// The hop-by-hop headers that must not reach a server (Connection and Upgrade only as an
/// upgrade's pair, TE only as `trailers`).
const HOP_BY_HOP: [&str; 4] = [
    "keep-alive",
    "proxy-connection",
    "trailer",
    "transfer-encoding",
];

/// The headers ballast itself sets after removing hop-by-hop ones: a client's `Connection`
/// naming one of them removes the client's copy, not ballast's.
const SET_BY_BALLAST: [&str; 8] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "via",
    "x-request-id",
    "te",
];

pub(crate) fn head(data: &[u8]) {
    let Some(mut req) = parse(data) else {
        return;
    };
    if let Some((status, _)) = refused(&req) {
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_IMPLEMENTED,
            "{status}"
        );
        return;
    }
    assert!(req.headers().get_all(header::HOST).iter().count() <= 1);
    let host = request_host(&req);
    let host_str = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
    let (router, upstreams) = router();
    let target = router.find(strip_port(host_str), req.uri().path());
    assert!(target.upstream < *upstreams);

    // Names the client's Connection header made hop-by-hop, before they go.
    let named: Vec<String> = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    let upgrade = requested_upgrade(&req);
    let client = if data.len().is_multiple_of(2) {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7))
    };
    let client_value = HeaderValue::from_str(&client.to_string()).expect("an address is a value");
    let request_id = HeaderName::from_static("x-request-id");
    let id = rewrite_for_server(
        &mut req,
        &Rewrite {
            upgrade: upgrade.as_ref(),
            forwarding: Forwarding {
                client,
                client_value: &client_value,
                host: host.as_ref(),
                proto: "http",
                forwarded: true,
                via: true,
            },
            host_rewrite: target.host_rewrite,
            request_id: &request_id,
        },
    );
    check_sent(
        &req,
        host.is_some(),
        upgrade.as_ref(),
        &named,
        &client_value,
    );
    assert_eq!(req.headers().get(&request_id), Some(&id));
}

/// The invariants of a rewritten head.
fn check_sent(
    req: &Request<()>,
    had_host: bool,
    upgrade: Option<&HeaderValue>,
    named: &[String],
    client: &HeaderValue,
) {
    let h = req.headers();
    for name in HOP_BY_HOP {
        assert!(!h.contains_key(name), "{name} is sent: {h:?}");
    }
    if let Some(te) = h.get(header::TE) {
        assert_eq!(te, "trailers");
    }
    match upgrade {
        Some(protocol) => {
            assert_eq!(h.get_all(header::CONNECTION).iter().count(), 1);
            assert_eq!(h[header::CONNECTION], "upgrade");
            assert_eq!(h.get(header::UPGRADE), Some(protocol));
        }
        None => {
            assert!(!h.contains_key(header::CONNECTION), "{h:?}");
            assert!(!h.contains_key(header::UPGRADE), "{h:?}");
        }
    }
    for name in named {
        let ours = SET_BY_BALLAST.contains(&name.as_str())
            || (upgrade.is_some() && (name == "upgrade" || name == "connection"));
        if !ours {
            assert!(
                !h.contains_key(name.as_str()),
                "{name} was named by Connection"
            );
        }
    }
    let hosts = h.get_all(header::HOST).iter().count();
    assert!(hosts <= 1, "{hosts} Host headers");
    if had_host {
        assert_eq!(hosts, 1);
    }
    // The Host sent names the host routing matched, nothing a server could read as another.
    if let Some(host) = h.get(header::HOST) {
        let ok = host.is_empty()
            || http::uri::Authority::try_from(host.as_bytes())
                .is_ok_and(|a| a.as_str() == host && !a.as_str().contains('@'));
        assert!(ok, "Host {host:?} is not host[:port]");
    }
    assert!(
        !(h.contains_key(header::CONTENT_LENGTH) && h.contains_key(header::TRANSFER_ENCODING)),
        "both Content-Length and Transfer-Encoding"
    );
    let xff = h.get(&X_FORWARDED_FOR).expect("X-Forwarded-For is set");
    assert!(xff.as_bytes().ends_with(client.as_bytes()), "{xff:?}");
    assert_eq!(h[&X_FORWARDED_PROTO], "http");
    for (name, value) in h {
        assert!(
            !value
                .as_bytes()
                .iter()
                .any(|&b| b == b'\r' || b == b'\n' || b == 0),
            "{name}: {value:?}"
        );
    }
    assert!(req.uri().scheme().is_none() && req.uri().authority().is_none());
    assert_eq!(req.version(), Version::HTTP_11);

    // What goes on the wire parses back as the same request.
    let mut wire = Vec::new();
    wire.extend_from_slice(req.method().as_str().as_bytes());
    wire.push(b' ');
    wire.extend_from_slice(req.uri().to_string().as_bytes());
    wire.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in h {
        wire.extend_from_slice(name.as_str().as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value.as_bytes());
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    let mut lines = vec![httparse::EMPTY_HEADER; h.len() + 1];
    let mut back = httparse::Request::new(&mut lines);
    match back.parse(&wire) {
        Ok(httparse::Status::Complete(n)) => {
            assert_eq!(n, wire.len());
            assert_eq!(back.headers.len(), h.len());
            assert_eq!(back.method, Some(req.method().as_str()));
        }
        other => panic!(
            "the rewritten head does not parse back: {other:?}: {:?}",
            String::from_utf8_lossy(&wire)
        ),
    }
}

/// Parses a request head as hyper's HTTP/1 server would hand it to ballast, or `None` where
/// hyper answers 400 itself.
fn parse(data: &[u8]) -> Option<Request<()>> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut lines);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(data) else {
        return None;
    };
    let method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    let uri = Uri::try_from(parsed.path?).ok()?;
    let version = match parsed.version? {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        _ => return None,
    };
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .version(version)
        .body(())
        .ok()?;
    for line in parsed.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(line.value).ok()?;
        req.headers_mut().append(name, value);
    }
    hyper_rules(req)
}

/// The request framing rules of hyper's HTTP/1 server (`proto::h1::role`, RFC 9112 §6.3):
/// `Transfer-Encoding` is refused in HTTP/1.0 and when `chunked` is not its last coding; with
/// it, every `Content-Length` is dropped; otherwise differing or invalid lengths are refused
/// and repeated equal ones kept once.
fn hyper_rules(mut req: Request<()>) -> Option<Request<()>> {
    let http10 = req.version() == Version::HTTP_10;
    let h = req.headers_mut();
    if h.contains_key(header::TRANSFER_ENCODING) {
        if http10 {
            return None;
        }
        let last = h
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .map(|v| v.as_bytes().rsplit(|b| *b == b',').next().unwrap_or(b""))
            .map(<[u8]>::trim_ascii);
        if !last.is_some_and(|l| l.eq_ignore_ascii_case(b"chunked")) {
            return None;
        }
        h.remove(header::CONTENT_LENGTH);
    } else {
        let mut len = None;
        for v in h.get_all(header::CONTENT_LENGTH) {
            let n: u64 = std::str::from_utf8(v.as_bytes())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            if len.is_some_and(|l| l != n) {
                return None;
            }
            len = Some(n);
        }
        if let Some(n) = len {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    Some(req)
}
