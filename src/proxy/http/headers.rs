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

/// The headers that are hop-by-hop by themselves (not only because `Connection` names them).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    KEEP_ALIVE,
    PROXY_CONNECTION,
];

/// The position of `name` in [`HOP_BY_HOP`], if it is there.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    HOP_BY_HOP.iter().position(|h| h == name)
}

/// Whether a `Connection` token names a header that must also go: not `close` or `keep-alive`
/// (options, not names), nor one of [`HOP_BY_HOP`] (removed anyway).
fn names_extra_header(token: &str) -> bool {
    !token.is_empty()
        && !token.eq_ignore_ascii_case("close")
        && !HOP_BY_HOP
            .iter()
            .any(|h| token.eq_ignore_ascii_case(h.as_str()))
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
///
/// Runs on every request and response, so it first looks (one pass over the names, no hashing)
/// and removes only what is there, allocating nothing in the common case: no hop-by-hop header,
/// or only `Connection: keep-alive` / `close`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Names listed in Connection are hop-by-hop too; collect them before removing Connection.
    let tokens = || {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
    };
    if tokens().any(names_extra_header) {
        let named: Vec<HeaderName> = tokens()
            .filter(|t| names_extra_header(t))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
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
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
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
    /// The same, as a header value (made once per client connection).
    pub client_value: &'a HeaderValue,
    /// The Host the client asked for, if any.
    pub host: Option<&'a HeaderValue>,
    /// `http` or `https`.
    pub proto: &'static str,
    /// Also add RFC 7239 `Forwarded`.
    pub forwarded: bool,
    /// Also add `Via`.
    pub via: bool,
}

/// Adds X-Forwarded-* (and optionally `Forwarded`, `Via`) to a request going to a server.
pub fn add_forwarding(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    let xff = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::as_bytes) {
        Some(prev) if !prev.trim_ascii().is_empty() => {
            let mut v = Vec::with_capacity(prev.len() + 2 + f.client_value.len());
            v.extend_from_slice(prev);
            v.extend_from_slice(b", ");
            v.extend_from_slice(f.client_value.as_bytes());
            HeaderValue::from_bytes(&v).ok()
        }
        _ => Some(f.client_value.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(f.proto));
    if let Some(host) = f.host.filter(|h| !h.is_empty()) {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    if f.forwarded {
        // RFC 7239 §6: IPv6 addresses are quoted and bracketed.
        let node = match f.client {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("\"[{a}]\""),
        };
        let mut value = format!("for={node};proto={}", f.proto);
        if let Some(host) = f
            .host
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic() && c != '"'))
        {
            value.push_str(";host=");
            value.push_str(host);
        }
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.append(header::FORWARDED, v);
        }
    }
    if f.via {
        headers.append(header::VIA, VIA_VALUE);
    }
}

/// Sets `name` to a fresh request id (32 hex digits) unless the request already has one; returns
/// the id.
pub fn ensure_request_id(headers: &mut HeaderMap, name: &HeaderName) -> HeaderValue {
    if let Some(v) = headers.get(name) {
        return v.clone();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let random = u128::from(fastrand::u64(..)) << 64 | u128::from(fastrand::u64(..));
    let mut id = [0u8; 32];
    for (i, digit) in id.iter_mut().enumerate() {
        *digit = HEX[((random >> (124 - 4 * i)) & 0xf) as usize];
    }
    let v = HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("0"));
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

        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("close"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static(" X-Other ,Keep-Alive"),
        );
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn forwarding_headers_append_to_an_existing_chain() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        let f = Forwarding {
            client: "2001:db8::1".parse().expect("ip"),
            client_value: &HeaderValue::from_static("2001:db8::1"),
            host: Some(&HeaderValue::from_static("example.com")),
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
        assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit), "{id:?}");
        let other = ensure_request_id(&mut HeaderMap::new(), &name);
        assert_ne!(other, id, "fresh ids differ");
        assert_eq!(ensure_request_id(&mut h, &name), id, "kept once present");
    }
}
