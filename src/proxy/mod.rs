//! The data path: what happens to a connection between accept and close.
//!
//! [`tcp`] picks a server, connects (retrying on another server when a connect fails) and hands the
//! two sockets to [`relay`], which copies bytes both ways with half-close, an idle timeout and
//! reset propagation. [`http`] is the L7 reverse proxy: it routes each request by host and path
//! and forwards it over kept-alive connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::listener::Listener;
use crate::upstream::Upstream;

pub mod http;
pub mod proxy_protocol;
pub mod relay;
mod splice;
pub mod tcp;

/// Where a listener's connections go: the listener (for its settings and counters), its default
/// upstream, and for HTTP listeners the routes.
#[derive(Debug)]
pub struct Route {
    /// The listener that accepted.
    pub listener: Arc<Listener>,
    /// The upstream that serves it (the default route of an HTTP listener).
    pub upstream: Arc<Upstream>,
    /// Routes and per-server connection pools, for HTTP listeners.
    pub http: Option<Arc<http::HttpRoutes>>,
}

/// Decrements the listener's active count when the connection ends, however it ends.
pub(crate) struct ActiveGuard<'a>(pub(crate) &'a AtomicU64);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
