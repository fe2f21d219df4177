//! The request head on its way through ballast, with no I/O: what is refused before any server is
//! asked ([`refused`]), the host the client asked for ([`request_host`], [`strip_port`]) and the
//! rewrite into what the server gets ([`rewrite_for_server`]).
//!
//! [`super::handle`] runs these on every request, in that order, between routing and sending;
//! the `http_head` fuzz target runs the same functions on heads parsed from arbitrary bytes.

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, StatusCode, Uri, Version};

use super::headers::{self, Forwarding};

/// What hyper lets through but ballast must not forward, answered before any server is asked.
///
/// * `CONNECT`: ballast is a reverse proxy, not a forward one; passing it on would send the
///   server a malformed `CONNECT /` (origin-form), and a 2xx answer would make hyper hand the
///   client connection over as a tunnel. 501, as for any method a server does not implement
///   (RFC 9110 §9.3.6, §15.6.2).
/// * A transfer coding other than `chunked` (`gzip, chunked`): hyper decodes only the chunked
///   layer and `Transfer-Encoding` is hop-by-hop, so the server would get still-encoded bytes with
///   nothing saying so. 501, as RFC 9112 §6.1 asks for a coding the server does not understand.
/// * Host: RFC 9112 §3.2 requires a 400 for an HTTP/1.1 request without Host, for any request
///   with more than one Host line and for a Host that is not a valid `host[:port]`. hyper checks
///   none of these; ballast routes by Host and forwards one, so two of them, or one a server
///   reads differently (`a@b`, `a/b`), could route by one host and be served as another.
/// * Userinfo (`user@`) in an absolute-form target, which RFC 9110 §4.2.4 says to treat as an
///   error: its authority would become the Host sent.
pub fn refused<B>(req: &Request<B>) -> Option<(StatusCode, &'static str)> {
    if req.method() == http::Method::CONNECT {
        return Some((
            StatusCode::NOT_IMPLEMENTED,
            "CONNECT is not supported by this proxy",
        ));
    }
    let other_coding = req
        .headers()
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|t| !t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    if other_coding {
        return Some((
            StatusCode::NOT_IMPLEMENTED,
            "transfer codings other than chunked are not supported",
        ));
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Some((StatusCode::BAD_REQUEST, "more than one Host header"));
    }
    if first.is_none() && req.version() == Version::HTTP_11 {
        return Some((
            StatusCode::BAD_REQUEST,
            "an HTTP/1.1 request needs a Host header",
        ));
    }
    if first.is_some_and(|h| !valid_host(h.as_bytes())) {
        return Some((
            StatusCode::BAD_REQUEST,
            "the Host header is not host[:port]",
        ));
    }
    if req
        .uri()
        .authority()
        .is_some_and(|a| a.as_str().contains('@'))
    {
        return Some((
            StatusCode::BAD_REQUEST,
            "userinfo in the request target is not allowed",
        ));
    }
    None
}

/// Whether a Host value is one ballast forwards: `host[:port]` without userinfo, or empty (RFC
/// 9110 §7.2 allows that for targets without an authority).
pub fn valid_host(value: &[u8]) -> bool {
    value.is_empty()
        || http::uri::Authority::try_from(value).is_ok_and(|a| !a.as_str().contains('@'))
}

/// The host the client asked for: the URI authority (HTTP/2, absolute-form) or else `Host`.
pub fn request_host<B>(req: &Request<B>) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    }
}

/// `host` without its port (`[v6]:port` too), as routes match it.
pub fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

/// How one request is rewritten for its server.
#[derive(Debug)]
pub struct Rewrite<'a> {
    /// The protocol of an HTTP/1.1 Upgrade the request asks for
    /// ([`headers::requested_upgrade`]): kept, with `Connection: upgrade`.
    pub upgrade: Option<&'a HeaderValue>,
    /// The forwarding headers to add.
    pub forwarding: Forwarding<'a>,
    /// The Host to send instead of the client's (a route's `host_rewrite`).
    pub host_rewrite: Option<&'a HeaderValue>,
    /// The request-id header name (`x-request-id` unless configured otherwise).
    pub request_id: &'a HeaderName,
}

/// Rewrites a request that passed [`refused`] into what its server gets: hop-by-hop headers out
/// (an Upgrade put back), forwarding headers in, one `Host` (the route's rewrite or the client's),
/// a request id, origin-form target and HTTP/1.1. Returns the request id.
pub fn rewrite_for_server<B>(req: &mut Request<B>, rw: &Rewrite<'_>) -> HeaderValue {
    let request_id = {
        let h = req.headers_mut();
        headers::remove_hop_by_hop(h);
        if let Some(protocol) = rw.upgrade {
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, protocol.clone());
        }
        headers::add_forwarding(h, &rw.forwarding);
        if let Some(host) = rw.host_rewrite.or(rw.forwarding.host) {
            h.insert(header::HOST, host.clone());
        }
        headers::ensure_request_id(h, rw.request_id)
    };
    // Servers get origin-form (`/path?query`); most requests already are.
    if req.uri().authority().is_some() || req.uri().scheme().is_some() {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *req.uri_mut() = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
    }
    *req.version_mut() = Version::HTTP_11;
    request_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped_from_names_and_bracketed_v6() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("a:b"), "a:b", "not a port");
    }

    #[test]
    fn a_host_that_is_not_host_and_port_is_refused() {
        for ok in [
            "example.com",
            "example.com:8080",
            "[::1]:80",
            "10.0.0.1",
            "",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok:?}");
        }
        for bad in ["user@example.com", "a/b", "a b", "a?b", "a#b", "a\\b"] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?}");
        }
        let req = |uri: &str, host: &str| {
            Request::builder()
                .uri(uri)
                .header(http::header::HOST, host)
                .body(())
                .expect("a request")
        };
        let refusal = |uri, host| refused(&req(uri, host)).map(|(status, _)| status);
        assert_eq!(refusal("/", "a@b"), Some(StatusCode::BAD_REQUEST));
        assert_eq!(refusal("http://u@a/", "a"), Some(StatusCode::BAD_REQUEST));
        assert_eq!(refusal("http://a:81/x", "a"), None);
        assert_eq!(refusal("/", "a.example:8080"), None);
    }
}
