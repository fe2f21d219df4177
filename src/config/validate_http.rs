//! Validation of the HTTP keys: listener routes and HTTP settings, upstream HTTP settings.
//!
//! A child of `validate.rs` (so it shares its `Validator` and value checkers), kept apart so each
//! file stays readable. Same rules: every problem is collected with its line, column and key path.

use std::time::Duration;

use ::toml::Spanned;

use std::path::{Path, PathBuf};

use super::super::toml::{ListenerToml, RouteToml, UpstreamToml};
use super::super::{
    defaults, CertSource, HttpListenerConfig, HttpUpstreamConfig, PathMatch, ProxyVersion, RetryOn,
    RouteConfig, ServerVerification, TrustedSources, UpstreamTls,
};
use super::Validator;
use crate::proxy::proxy_protocol::Cidr;

impl Validator<'_, '_> {
    /// The HTTP settings and routes of `listener[index]`; `is_http` says whether it is an HTTP
    /// listener (routes on a TCP listener are an error: they would silently do nothing).
    pub(super) fn listener_http(
        &mut self,
        base: &str,
        l: &ListenerToml,
        is_http: bool,
    ) -> (Vec<RouteConfig>, HttpListenerConfig) {
        let key = |field: &str| format!("{base}.{field}");
        if !is_http {
            if let Some(first) = l.route.first() {
                self.error(
                    first.span().start,
                    &format!("{base}.route[0]"),
                    "routes need protocol = \"http\"; a tcp listener sends everything to its upstream",
                );
            }
        }
        let routes = l
            .route
            .iter()
            .enumerate()
            .filter_map(|(i, r)| self.route(&format!("{base}.route[{i}]"), r))
            .collect();
        let header_timeout = self
            .duration(
                l.header_timeout.as_ref(),
                &key("header_timeout"),
                Duration::from_millis(1),
                defaults::DURATION_MAX,
            )
            .unwrap_or(defaults::HEADER_TIMEOUT);
        let request_id_header = match &l.request_id_header {
            Some(h) => {
                let name = h.get_ref().to_ascii_lowercase();
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() || name.is_empty() {
                    let message = format!(
                        "{:?} is not a valid header name; allowed: letters, digits and !#$%&'*+-.^_`|~",
                        h.get_ref()
                    );
                    self.error(h.span().start, &key("request_id_header"), message);
                }
                name
            }
            None => defaults::REQUEST_ID_HEADER.to_owned(),
        };
        let body_timeout = self
            .duration(
                l.body_timeout.as_ref(),
                &key("body_timeout"),
                Duration::from_millis(1),
                defaults::DURATION_MAX,
            )
            .unwrap_or(defaults::BODY_TIMEOUT);
        let send_timeout = self
            .duration(
                l.send_timeout.as_ref(),
                &key("send_timeout"),
                Duration::from_millis(1),
                defaults::DURATION_MAX,
            )
            .unwrap_or(defaults::SEND_TIMEOUT);
        let max_header_size = self.size_in(
            l.max_header_size.as_ref(),
            &key("max_header_size"),
            defaults::MAX_HEADER_SIZE_MIN,
            defaults::MAX_HEADER_SIZE_MAX,
            defaults::MAX_HEADER_SIZE,
        );
        let max_headers = self.int(
            l.max_headers.as_ref(),
            &key("max_headers"),
            1,
            defaults::MAX_HEADERS_MAX as i64,
            defaults::MAX_HEADERS as i64,
        );
        let max_body_size = self.size_in(
            l.max_body_size.as_ref(),
            &key("max_body_size"),
            0,
            defaults::MAX_BODY_SIZE_MAX,
            0,
        );
        let http = HttpListenerConfig {
            header_timeout,
            body_timeout,
            send_timeout,
            max_header_size,
            max_headers: usize::try_from(max_headers).unwrap_or(defaults::MAX_HEADERS),
            max_body_size: max_body_size as u64,
            forwarded: l.forwarded.unwrap_or(false),
            via: l.via.unwrap_or(false),
            request_id_header,
        };
        (routes, http)
    }

    fn route(&mut self, base: &str, raw: &Spanned<RouteToml>) -> Option<RouteConfig> {
        let at = raw.span().start;
        let key = |field: &str| format!("{base}.{field}");
        let r = raw.get_ref();
        let upstream = self.required(
            r.upstream.as_ref(),
            at,
            &key("upstream"),
            "upstream = \"api\"",
        );
        let host = r
            .host
            .as_ref()
            .and_then(|h| self.host(h, &key("host"), true));
        let host_rewrite = r
            .host_rewrite
            .as_ref()
            .and_then(|h| self.host(h, &key("host_rewrite"), false));
        let path = match (&r.path_prefix, &r.path) {
            (Some(p), Some(e)) => {
                let message = format!(
                    "give either path_prefix or path, not both (path_prefix at line {})",
                    self.src.position(p.span().start).0
                );
                self.error(e.span().start, &key("path"), message);
                None
            }
            (Some(p), None) => self.path(p, &key("path_prefix")).map(PathMatch::Prefix),
            (None, Some(e)) => self.path(e, &key("path")).map(PathMatch::Exact),
            (None, None) => None,
        };
        Some(RouteConfig {
            host,
            path,
            upstream: upstream?.get_ref().clone(),
            host_rewrite,
        })
    }

    pub(super) fn path(&mut self, value: &Spanned<String>, key: &str) -> Option<String> {
        let p = value.get_ref();
        if !p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
            let message =
                format!("{p:?} is not a path; it must start with \"/\" and contain no spaces");
            self.error(value.span().start, key, message);
            return None;
        }
        Some(p.clone())
    }

    /// A host name (lower-cased); `*.` prefixes allowed when `wildcard`.
    pub(super) fn host(
        &mut self,
        value: &Spanned<String>,
        key: &str,
        wildcard: bool,
    ) -> Option<String> {
        let h = value.get_ref().to_ascii_lowercase();
        let bare = match h.strip_prefix("*.") {
            Some(rest) if wildcard => rest,
            _ => h.as_str(),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if bare.is_empty() || bare.len() > 253 || !bare.split('.').all(label_ok) {
            let allowed = if wildcard {
                "a host name such as \"api.example.com\" or \"*.example.com\", without port"
            } else {
                "a host name such as \"api.internal\", without port"
            };
            let message = format!(
                "{:?} is not a host name; allowed: {allowed}",
                value.get_ref()
            );
            self.error(value.span().start, key, message);
            return None;
        }
        Some(h)
    }

    /// `[[listener.certificate]]`: required (at least one) on https listeners, refused elsewhere.
    /// Paths are resolved against the configuration file's directory; the files themselves are
    /// read later (by `ballast check` and at start), so parsing stays free of I/O.
    pub(super) fn certificates(
        &mut self,
        base: &str,
        at: usize,
        l: &ListenerToml,
        is_https: bool,
    ) -> Vec<CertSource> {
        if !is_https {
            if let Some(first) = l.certificate.first() {
                self.error(
                    first.span().start,
                    &format!("{base}.certificate[0]"),
                    "certificates need protocol = \"https\"",
                );
            }
            return Vec::new();
        }
        if l.certificate.is_empty() {
            self.error(
                at,
                &format!("{base}.certificate"),
                "an https listener needs at least one [[listener.certificate]] with cert_file and key_file",
            );
        }
        let mut out = Vec::new();
        for (i, c) in l.certificate.iter().enumerate() {
            let key = |field: &str| format!("{base}.certificate[{i}].{field}");
            let cat = c.span().start;
            let r = c.get_ref();
            let cert = self.required(
                r.cert_file.as_ref(),
                cat,
                &key("cert_file"),
                "cert_file = \"/etc/ballast/site.pem\"",
            );
            let keyf = self.required(
                r.key_file.as_ref(),
                cat,
                &key("key_file"),
                "key_file = \"/etc/ballast/site.key\"",
            );
            let names: Vec<String> = r
                .server_names
                .iter()
                .enumerate()
                .filter_map(|(n, h)| self.host(h, &key(&format!("server_names[{n}]")), true))
                .collect();
            if let (Some(cert), Some(keyf)) = (cert, keyf) {
                out.push(CertSource {
                    cert_file: self.resolve_path(cert.get_ref()),
                    key_file: self.resolve_path(keyf.get_ref()),
                    server_names: names,
                });
            }
        }
        out
    }

    /// `accept_proxy`: the trusted networks, each checked; `None` when absent.
    pub(super) fn accept_proxy(&mut self, base: &str, l: &ListenerToml) -> Option<TrustedSources> {
        let list = l.accept_proxy.as_ref()?;
        let key = format!("{base}.accept_proxy");
        if list.get_ref().is_empty() {
            self.error(
                list.span().start,
                &key,
                "an empty list trusts nobody; list the networks of the balancers in front, such as [\"10.0.0.0/8\"]",
            );
            return None;
        }
        let mut nets = Vec::new();
        for (i, entry) in list.get_ref().iter().enumerate() {
            match Cidr::parse(entry.get_ref()) {
                Ok(c) => nets.push(c),
                Err(e) => {
                    let message = format!("{:?}: {e}", entry.get_ref());
                    self.error(entry.span().start, &format!("{key}[{i}]"), message);
                }
            }
        }
        Some(TrustedSources::new(nets))
    }

    /// `send_proxy`: `v1` or `v2`; `None` when absent.
    pub(super) fn send_proxy(&mut self, base: &str, u: &UpstreamToml) -> Option<ProxyVersion> {
        let value = u.send_proxy.as_ref()?;
        Some(self.choice(
            Some(value),
            &format!("{base}.send_proxy"),
            "a PROXY protocol version",
            &[("v1", ProxyVersion::V1), ("v2", ProxyVersion::V2)],
            "",
            ProxyVersion::V2,
        ))
    }

    /// The HTTP settings of an upstream.
    pub(super) fn upstream_http(&mut self, base: &str, u: &UpstreamToml) -> HttpUpstreamConfig {
        let key = |field: &str| format!("{base}.{field}");
        let response_timeout = self
            .duration(
                u.response_timeout.as_ref(),
                &key("response_timeout"),
                Duration::from_millis(1),
                defaults::DURATION_MAX,
            )
            .unwrap_or(defaults::RESPONSE_TIMEOUT);
        let keepalive_pool = self.int(
            u.keepalive_pool.as_ref(),
            &key("keepalive_pool"),
            0,
            defaults::KEEPALIVE_POOL_MAX as i64,
            defaults::KEEPALIVE_POOL as i64,
        );
        let keepalive_timeout = self
            .duration(
                u.keepalive_timeout.as_ref(),
                &key("keepalive_timeout"),
                Duration::from_millis(1),
                defaults::DURATION_MAX,
            )
            .unwrap_or(defaults::SERVER_KEEPALIVE_TIMEOUT);
        let tls = self.upstream_tls(base, u);
        let retry_on = match &u.retry_on {
            None => vec![RetryOn::Error, RetryOn::Timeout],
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    self.choice(
                        Some(v),
                        &key(&format!("retry_on[{i}]")),
                        "a retry condition",
                        &[
                            ("error", RetryOn::Error),
                            ("timeout", RetryOn::Timeout),
                            ("http_5xx", RetryOn::Http5xx),
                        ],
                        "",
                        RetryOn::Error,
                    )
                })
                .collect(),
        };
        let retry_timeout = self.duration(
            u.retry_timeout.as_ref(),
            &key("retry_timeout"),
            Duration::from_millis(1),
            defaults::DURATION_MAX,
        );
        let sticky_cookie = u.sticky_cookie.as_ref().and_then(|c| {
            let name = c.get_ref();
            // RFC 6265 §4.1.1: a cookie name is an HTTP token.
            let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if name.is_empty() || !name.bytes().all(token) {
                let message = format!(
                    "{name:?} is not a cookie name; allowed: letters, digits and !#$%&'*+-.^_`|~"
                );
                self.error(c.span().start, &key("sticky_cookie"), message);
                return None;
            }
            Some(name.clone())
        });
        HttpUpstreamConfig {
            sticky_cookie,
            retry_on,
            retry_timeout,
            response_timeout,
            keepalive_pool: usize::try_from(keepalive_pool).unwrap_or(defaults::KEEPALIVE_POOL),
            keepalive_timeout,
            http2: u.http2.unwrap_or(false),
            tls,
        }
    }

    /// `tls`, `tls_ca_file`, `tls_verify`, `tls_server_name` of an upstream.
    fn upstream_tls(&mut self, base: &str, u: &UpstreamToml) -> Option<UpstreamTls> {
        let key = |field: &str| format!("{base}.{field}");
        let on = u.tls.as_ref().is_some_and(|t| *t.get_ref());
        if !on {
            // The other keys mean nothing without tls = true; say so rather than ignore them.
            let stray = [
                (
                    u.tls_ca_file.as_ref().map(|v| v.span().start),
                    "tls_ca_file",
                ),
                (u.tls_verify.as_ref().map(|v| v.span().start), "tls_verify"),
                (
                    u.tls_server_name.as_ref().map(|v| v.span().start),
                    "tls_server_name",
                ),
            ];
            for (at, field) in stray {
                if let Some(at) = at {
                    self.error(at, &key(field), "has no effect without tls = true");
                }
            }
            return None;
        }
        let verify_off = u.tls_verify.as_ref().is_some_and(|v| !*v.get_ref());
        let verify = match (&u.tls_ca_file, verify_off) {
            (Some(ca), true) => {
                let message = "give tls_ca_file or tls_verify = false, not both";
                self.error(ca.span().start, &key("tls_ca_file"), message);
                ServerVerification::Insecure
            }
            (Some(ca), false) => ServerVerification::CaFiles(vec![self.resolve_path(ca.get_ref())]),
            (None, true) => ServerVerification::Insecure,
            (None, false) => ServerVerification::CaFiles(Vec::new()),
        };
        let server_name = u
            .tls_server_name
            .as_ref()
            .and_then(|h| self.host(h, &key("tls_server_name"), false));
        Some(UpstreamTls {
            verify,
            server_name,
        })
    }

    /// A path from the file, relative to the configuration file's directory unless absolute.
    fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        Path::new(self.src.origin)
            .parent()
            .map_or_else(|| p.to_path_buf(), |dir| dir.join(p))
    }
}
