//! The L4 TCP proxy: one accepted client connection, from server choice to close.
//!
//! ```text
//! accept ─▶ select server ─▶ connect (connect_timeout) ─▶ relay both ways ─▶ close
//!               ▲                  │ refused / timed out
//!               └── retry on a server not yet tried (at most `retries` more) ──┘
//! ```
//!
//! When every usable server is at its `max_connections`, the connection waits in the upstream's
//! queue for a slot (`max_queue`, `queue_timeout`; see [`crate::upstream::Queue`]).
//!
//! When ballast itself is short of descriptors, memory or source ports for the server connection
//! (EMFILE, ENFILE, ENOBUFS, EADDRNOTAVAIL), the client is reset at once and counted under the
//! refusal reason `resources`; the server is not blamed and no other server is tried.
//!
//! When every attempt fails, or no server can take the connection at all, the client is closed at
//! once with a RST (it learns immediately instead of waiting on a half-open socket) and the
//! listener's and upstream's `no_server` counters go up.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::listener::socket::tune_stream;
use crate::proxy::relay::{self, Counters, RelayEnd, Side};
use crate::scheduler::{PickContext, SchedulerKind};
use crate::upstream::{Refusal, Tried};

use super::proxy_protocol::write_header;
use super::{client_addresses, ActiveGuard, Route};
use crate::access_log;

/// Serves one accepted client connection to its end.
pub async fn serve(
    mut client: TcpStream,
    peer: SocketAddr,
    route: Arc<Route>,
    abort: CancellationToken,
) {
    let started = std::time::Instant::now();
    let listener = &route.listener;
    let upstream = &route.upstream;
    listener.stats.active.fetch_add(1, Ordering::Relaxed);
    let _active = ActiveGuard(&listener.stats.active);
    let lcfg = &listener.config;
    let Some((peer, destination)) = client_addresses(&mut client, peer, listener).await else {
        return;
    };
    // The address the client connected to matters only to `dh`, and differs from the listener's
    // only when it is bound to a wildcard; skip the getsockname(2) otherwise.
    let bound = listener.local_addr.ip();
    let local =
        if bound.is_unspecified() && upstream.config.scheduler == SchedulerKind::DestinationHash {
            client.local_addr().map_or(bound, |a| a.ip())
        } else {
            bound
        };
    let ctx = PickContext {
        client: peer.ip(),
        local,
    };
    let mut tried = Tried::new();
    let ucfg = &upstream.config;

    for _attempt in 0..=ucfg.retries {
        let guard = match upstream.select_queued(&ctx, &tried).await {
            Ok(guard) => guard,
            Err(Refusal::NoServer) => break,
            Err(refusal) => {
                // The client learns at once.
                super::refused_by_queue(listener, upstream, refusal);
                reset_on_close(&client);
                return;
            }
        };
        tried.insert(guard.index());
        let server = guard.server();
        let addr = server.address();
        let mut stream = match connect(addr, ucfg.connect_timeout).await {
            Ok(s) => s,
            Err(e) if super::is_local_shortage(&e) => {
                // Not the server's fault, and every other server would fail the same way.
                super::refused_for_resources(listener, upstream, &e);
                reset_on_close(&client);
                access_log::tcp(&route, peer, Some(addr), "resources", (0, 0), started);
                return;
            }
            Err(e) => {
                server.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                server.passive_failure();
                if let Some(failures) = server.stats.connect_log.tick() {
                    tracing::warn!(listener = %lcfg.name, upstream = %ucfg.name, server = %addr,
                        %peer, error = %e, failures,
                        "connect to server failed; trying another ({failures} such failures since \
                         the last line, at most one line a second per server)");
                }
                continue;
            }
        };
        server.stats.connections.fetch_add(1, Ordering::Relaxed);
        server.passive_success();
        if let Err(e) = tune_stream(&stream, lcfg.tcp_nodelay, ucfg.tcp_keepalive) {
            tracing::debug!(server = %addr, error = %e, "cannot set server socket options");
        }
        if let Some(version) = ucfg.send_proxy {
            if let Err(e) = write_header(&mut stream, version, peer, destination).await {
                server.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(server = %addr, error = %e, "cannot send the PROXY header");
                reset_on_close(&client);
                access_log::tcp(&route, peer, Some(addr), "proxy_error", (0, 0), started);
                return;
            }
        }
        tracing::debug!(listener = %lcfg.name, %peer, server = %addr, "proxying");
        let counters = Counters {
            to_server: &server.stats.bytes_to_server,
            to_client: &server.stats.bytes_from_server,
        };
        let outcome = relay::relay(
            &mut client,
            &mut stream,
            lcfg.buffer_size,
            lcfg.splice,
            lcfg.idle_timeout,
            counters,
            &abort,
        )
        .await;
        if outcome.spliced > 0 {
            listener
                .stats
                .spliced
                .fetch_add(u64::from(outcome.spliced), Ordering::Relaxed);
        }
        let ended = match outcome.end {
            RelayEnd::Closed => "closed",
            RelayEnd::Aborted => "aborted",
            RelayEnd::IdleTimeout => "idle_timeout",
            RelayEnd::Reset(Side::Client, _) => "client_reset",
            RelayEnd::Reset(Side::Server, _) => "server_reset",
        };
        let bytes = (outcome.to_server, outcome.to_client);
        access_log::tcp(&route, peer, Some(addr), ended, bytes, started);
        match outcome.end {
            RelayEnd::Closed | RelayEnd::Aborted => {}
            RelayEnd::IdleTimeout => {
                listener.stats.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(listener = %lcfg.name, %peer, server = %addr, "idle timeout");
            }
            RelayEnd::Reset(side, kind) => {
                // Pass the reset on, so the other peer does not mistake it for a clean close.
                let other = match side {
                    Side::Client => &stream,
                    Side::Server => {
                        server.stats.errors.fetch_add(1, Ordering::Relaxed);
                        &client
                    }
                };
                reset_on_close(other);
                tracing::debug!(listener = %lcfg.name, %peer, server = %addr, ?side, ?kind, "connection reset");
            }
        }
        tracing::trace!(
            to_server = outcome.to_server,
            to_client = outcome.to_client,
            "closed"
        );
        return;
    }

    super::refused_no_server(listener, upstream, tried.len());
    tracing::debug!(listener = %lcfg.name, upstream = %ucfg.name, %peer, tried = tried.len(),
        "no server available; closing client connection");
    reset_on_close(&client);
    access_log::tcp(&route, peer, None, "no_server", (0, 0), started);
}

/// Connects to `addr` within `timeout`.
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        )),
    }
}

/// Makes the coming close send a RST instead of a FIN (SO_LINGER with a zero timeout). With a zero
/// timeout close(2) does not block, so this is safe on the async runtime.
fn reset_on_close(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
