//! Header handling between client and server: hop-by-hop headers removed both ways (RFC 9110
//! §7.6.1), and the forwarding headers servers rely on added to requests.
//!
//! * Removed: `Connection` and every header it names, `Keep-Alive`, `Proxy-Connection`, `TE`
//!   (except `TE: trailers`, which gRPC needs),
//!   `Trailer`, `Transfer-Encoding` (hyper re-frames the body itself), `Upgrade`.
//! * Added to requests: `X-Forwarded-For` (the client address appended to what came in),
//!   `X-Forwarded-Proto`, `X-Forwarded-Host` (the Host the client asked for), optionally RFC 7239
//!   `Forwarded` and `Via`, and a request id when the client sent none.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The `Via` value ballast adds.
pub const VIA_VALUE: HeaderValue = HeaderValue::from_static("1.1 ballast");

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Names listed in Connection are hop-by-hop too; collect them before removing Connection.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    // `TE: trailers` is the one TE value that is end to end in spirit: it says the client accepts
    // trailers, and gRPC servers refuse requests without it (RFC 9113 §8.2.2 allows it in HTTP/2).
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for name in [
        header::CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The protocol an HTTP/1.1 request asks to switch to (`Upgrade` named by `Connection`), if any.
pub fn requested_upgrade<B>(req: &http::Request<B>) -> Option<HeaderValue> {
    if req.version() != http::Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        req.headers().get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// The value of cookie `name` in the request's `Cookie` headers, if present.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Removes cookie `name` from the request's `Cookie` headers (dropping a header left empty).
pub fn remove_cookie(headers: &mut HeaderMap, name: &str) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .map(str::trim)
                .filter(|pair| pair.split_once('=').is_none_or(|(k, _)| k != name))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|v| !v.is_empty())
        .collect();
    headers.remove(header::COOKIE);
    for v in kept {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.append(header::COOKIE, v);
        }
    }
}

/// What the forwarding headers say about the client.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The client's address.
    pub client: IpAddr,
    /// The Host the client asked for (may be empty).
    pub host: &'a str,
    /// `http` or `https`.
    pub proto: &'static str,
    /// Also add RFC 7239 `Forwarded`.
    pub forwarded: bool,
    /// Also add `Via`.
    pub via: bool,
}

/// Adds X-Forwarded-* (and optionally `Forwarded`, `Via`) to a request going to a server.
pub fn add_forwarding(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    let client = f.client.to_string();
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {client}"),
        _ => client.clone(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(f.proto));
    if !f.host.is_empty() {
        if let Ok(v) = HeaderValue::from_str(f.host) {
            headers.insert(X_FORWARDED_HOST, v);
        }
    }
    if f.forwarded {
        // RFC 7239 §6: IPv6 addresses are quoted and bracketed.
        let node = match f.client {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("\"[{a}]\""),
        };
        let mut value = format!("for={node};proto={}", f.proto);
        if !f.host.is_empty() && f.host.chars().all(|c| c.is_ascii_graphic() && c != '"') {
            value.push_str(";host=");
            value.push_str(f.host);
        }
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.append(header::FORWARDED, v);
        }
    }
    if f.via {
        headers.append(header::VIA, VIA_VALUE);
    }
}

/// Sets `name` to a fresh request id unless the request already has one; returns the id.
pub fn ensure_request_id(headers: &mut HeaderMap, name: &HeaderName) -> HeaderValue {
    if let Some(v) = headers.get(name) {
        return v.clone();
    }
    let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let v = HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("0"));
    headers.insert(name.clone(), v.clone());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));

        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers, gzip"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h[header::TE], "trailers", "TE: trailers is kept, for gRPC");
    }

    #[test]
    fn forwarding_headers_append_to_an_existing_chain() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        let f = Forwarding {
            client: "2001:db8::1".parse().expect("ip"),
            host: "example.com",
            proto: "http",
            forwarded: true,
            via: true,
        };
        add_forwarding(&mut h, &f);
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.7, 2001:db8::1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "example.com");
        assert_eq!(
            h[header::FORWARDED],
            "for=\"[2001:db8::1]\";proto=http;host=example.com"
        );
        assert_eq!(h[header::VIA], "1.1 ballast");
    }

    #[test]
    fn a_cookie_is_found_and_removed_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; SERVERID=abc; b=2"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("SERVERID=zzz"));
        assert_eq!(cookie(&h, "SERVERID"), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        remove_cookie(&mut h, "SERVERID");
        let left: Vec<&str> = h
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(left, ["a=1; b=2"]);
    }

    #[test]
    fn a_request_id_is_kept_or_generated() {
        let name = HeaderName::from_static("x-request-id");
        let mut h = HeaderMap::new();
        let id = ensure_request_id(&mut h, &name);
        assert_eq!(id.len(), 32);
        assert_eq!(ensure_request_id(&mut h, &name), id, "kept once present");
    }
}
