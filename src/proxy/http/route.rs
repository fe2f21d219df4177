//! HTTP routing: which upstream serves a request, by host and path, like nginx `server_name` +
//! `location`.
//!
//! Routes are compiled once when the listener starts and matched in file order; the first match
//! wins, and a request no route matches goes to the listener's own upstream. Matching is a short
//! linear scan with no allocation: hosts are compared lower-cased and without port.

use http::HeaderValue;

use crate::config::{ListenerConfig, PathMatch};

/// Which hosts a route takes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: any host ending with it.
    Suffix(String),
}

impl HostMatch {
    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h.eq_ignore_ascii_case(host),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host
                        .get(host.len() - s.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(s))
            }
        }
    }
}

/// One compiled route.
#[derive(Debug)]
struct Route {
    host: HostMatch,
    path: Option<PathMatch>,
    /// Index into the router's upstream list.
    upstream: usize,
    host_rewrite: Option<HeaderValue>,
}

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub struct Target<'r> {
    /// Index into the upstream list the router was built with.
    pub upstream: usize,
    /// The Host header to send instead of the client's, if the route rewrites it.
    pub host_rewrite: Option<&'r HeaderValue>,
}

/// The compiled routes of one listener.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
    default: usize,
}

impl Router {
    /// Compiles a listener's routes. `index_of` maps an upstream name to its index; names were
    /// checked by validation, so an unknown one (only possible with a hand-built config) falls
    /// back to the default route.
    pub fn new(listener: &ListenerConfig, index_of: impl Fn(&str) -> Option<usize>) -> Router {
        let default = index_of(&listener.upstream).unwrap_or(0);
        let routes = listener
            .routes
            .iter()
            .map(|r| Route {
                host: match r.host.as_deref() {
                    None => HostMatch::Any,
                    Some(h) => match h.strip_prefix('*') {
                        Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
                        None => HostMatch::Exact(h.to_owned()),
                    },
                },
                path: r.path.clone(),
                upstream: index_of(&r.upstream).unwrap_or(default),
                host_rewrite: r
                    .host_rewrite
                    .as_deref()
                    .and_then(|h| HeaderValue::from_str(h).ok()),
            })
            .collect();
        Router { routes, default }
    }

    /// The target for a request to `host` (without port) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Target<'_> {
        for r in &self.routes {
            let path_ok = match &r.path {
                None => true,
                Some(PathMatch::Prefix(p)) => path.starts_with(p.as_str()),
                Some(PathMatch::Exact(p)) => path == p,
            };
            if path_ok && r.host.matches(host) {
                return Target {
                    upstream: r.upstream,
                    host_rewrite: r.host_rewrite.as_ref(),
                };
            }
        }
        Target {
            upstream: self.default,
            host_rewrite: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn router(routes: &str) -> Router {
        let text = format!(
            "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\nupstream = \"d\"\n{routes}\n\
             [[upstream]]\nname = \"d\"\nserver = [{{ address = \"127.0.0.1:1\" }}]\n\
             [[upstream]]\nname = \"a\"\nserver = [{{ address = \"127.0.0.1:2\" }}]\n\
             [[upstream]]\nname = \"b\"\nserver = [{{ address = \"127.0.0.1:3\" }}]\n"
        );
        let cfg = Config::from_str(&text, "t.toml").expect("valid");
        let names: Vec<String> = cfg.upstreams.iter().map(|u| u.name.clone()).collect();
        Router::new(&cfg.listeners[0], |n| names.iter().position(|x| x == n))
    }

    #[test]
    fn first_matching_route_wins_and_the_rest_go_to_the_default() {
        let r = router(
            "[[listener.route]]\npath = \"/healthz\"\nupstream = \"b\"\n\
             [[listener.route]]\nhost = \"api.example.com\"\npath_prefix = \"/v1/\"\nupstream = \"a\"\n\
             [[listener.route]]\nhost = \"*.example.com\"\nupstream = \"b\"\nhost_rewrite = \"internal\"\n",
        );
        assert_eq!(r.find("x", "/healthz").upstream, 2);
        assert_eq!(r.find("x", "/healthz/more").upstream, 0, "exact path only");
        assert_eq!(r.find("API.example.com", "/v1/users").upstream, 1);
        assert_eq!(
            r.find("api.example.com", "/v2/users").upstream,
            2,
            "falls to the wildcard"
        );
        let t = r.find("www.example.com", "/");
        assert_eq!(t.upstream, 2);
        assert_eq!(t.host_rewrite.map(|h| h.as_bytes()), Some(&b"internal"[..]));
        assert_eq!(
            r.find("example.com", "/").upstream,
            0,
            "wildcard needs a label before"
        );
        assert_eq!(r.find("other.org", "/v1/").upstream, 0);
    }
}
