//! The data path: what happens to a connection between accept and close.
//!
//! [`tcp`] picks a server, connects (retrying on another server when a connect fails) and hands the
//! two sockets to [`relay`], which copies bytes both ways with half-close, an idle timeout and
//! reset propagation. [`http`] is the L7 reverse proxy: it routes each request by host and path
//! and forwards it over kept-alive connections. [`udp`] relays datagrams by flow for UDP listeners.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::listener::{Listener, Reason};
use crate::upstream::{Refusal, Upstream};

pub mod http;
pub mod proxy_protocol;
pub mod relay;
mod splice;
pub mod tcp;
pub mod udp;

/// Where a listener's connections go: the listener (for its settings and counters), its default
/// upstream, and for HTTP listeners the routes.
#[derive(Debug)]
pub struct Route {
    /// The listener that accepted.
    pub listener: Arc<Listener>,
    /// The upstream that serves it (the default route of an HTTP listener).
    pub upstream: Arc<Upstream>,
    /// Routes and the upstreams they name, for HTTP listeners.
    pub http: Option<Arc<http::HttpRoutes>>,
    /// Where access-log lines go; `None` = no access log.
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
}

/// Decrements the listener's active count when the connection ends, however it ends.
pub(crate) struct ActiveGuard<'a>(pub(crate) &'a AtomicU64);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a client turned away because no server could take it (the listener's and the
/// upstream's `no_server`) and logs it, at most one line a second per listener with the count
/// since the previous line: under overload a line per refusal would flood the log.
pub(crate) fn refused_no_server(listener: &Listener, upstream: &Upstream, tried: usize) {
    upstream.stats.no_server.fetch_add(1, Ordering::Relaxed);
    if let Some(refused) = listener.stats.refused(Reason::NoServer) {
        tracing::warn!(listener = %listener.config.name, upstream = %upstream.name(), tried,
            reason = Reason::NoServer.as_str(), refused,
            "no server available: client refused ({refused} since the last such line)");
    }
}

/// Counts (and, rate-limited, logs) a client refused by the upstream's queue.
pub(crate) fn refused_by_queue(listener: &Listener, upstream: &Upstream, refusal: Refusal) {
    let reason = match refusal {
        Refusal::QueueFull => Reason::QueueFull,
        Refusal::QueueTimeout => Reason::QueueTimeout,
        Refusal::NoServer => Reason::NoServer,
    };
    if let Some(refused) = listener.stats.refused(reason) {
        tracing::warn!(listener = %listener.config.name, upstream = %upstream.name(),
            reason = reason.as_str(), refused,
            "{refusal}: client refused ({refused} since the last such line)");
    }
}

/// Whether a failed connect to a server failed for want of a local resource rather than because
/// of the server: descriptors (EMFILE, ENFILE), kernel memory (ENOBUFS, ENOMEM) or source ports
/// (EADDRNOTAVAIL). Such a failure says nothing about the server, so it is not counted against
/// it, and trying another server would fail the same way.
pub(crate) fn is_local_shortage(e: &std::io::Error) -> bool {
    use nix::libc;
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// Counts a client refused because ballast ran short of a resource connecting to a server
/// (reason `resources`) and logs it, rate-limited like the other refusals: under descriptor
/// exhaustion this happens for every connection.
pub(crate) fn refused_for_resources(listener: &Listener, upstream: &Upstream, e: &std::io::Error) {
    if let Some(refused) = listener.stats.refused(Reason::Resources) {
        tracing::warn!(listener = %listener.config.name, upstream = %upstream.name(),
            reason = Reason::Resources.as_str(), error = %e, refused,
            "cannot open a connection to a server ({e}): client refused ({refused} since the \
             last such line); raise RLIMIT_NOFILE or lower max_connections");
    }
}

/// The client's addresses as the proxy should see them: the socket's, or, on a listener with
/// `accept_proxy`, those of the PROXY header the trusted balancer in front sent. `None` means the
/// connection was refused (untrusted peer, bad or missing header) and is counted; the caller just
/// drops it.
pub(crate) async fn client_addresses(
    stream: &mut TcpStream,
    peer: SocketAddr,
    listener: &Listener,
) -> Option<(SocketAddr, SocketAddr)> {
    let Some(trusted) = &listener.config.accept_proxy else {
        return Some((peer, listener.local_addr));
    };
    let name = &listener.config.name;
    if !trusted.contains(peer.ip()) {
        listener.stats.proxy_refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(listener = %name, %peer, "refused: PROXY header expected, but the peer is not in accept_proxy");
        return None;
    }
    let timeout = listener.config.http.header_timeout;
    match proxy_protocol::read_header(stream, timeout).await {
        Ok(proxy_protocol::ProxyHeader::Proxied {
            source,
            destination,
        }) => Some((source, destination)),
        Ok(proxy_protocol::ProxyHeader::Local) => Some((peer, listener.local_addr)),
        Err(e) => {
            listener.stats.proxy_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(listener = %name, %peer, reason = e.reason(), "refused: bad PROXY header");
            None
        }
    }
}
