//! The bodies that cross the proxy: requests on their way to a server (with the `max_body_size`
//! cut-off) and responses on their way to a client (streamed from a server, returning the
//! connection to its pool when they end, or ballast's own short error text).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::pool::{Sender, ServerPool};
use crate::upstream::ServerGuard;

/// A response body from a server; when it ends, its connection goes back to the server's pool and
/// the server's active count drops (the guard).
pub struct Pooled {
    pub(super) body: Incoming,
    pub(super) sender: Option<Sender>,
    /// Where the connection goes back to: its server's shared pool, or the client connection's
    /// own when the server is sent PROXY headers.
    pub(super) pool: Arc<ServerPool>,
    /// Most idle connections that pool keeps (`keepalive_pool`).
    pub(super) max_idle: usize,
    pub(super) guard: ServerGuard,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // A body hyper never polled (empty: 204, 304, HEAD, Content-Length: 0) still leaves a
        // reusable connection; one dropped half way does not (hyper closes it).
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

impl Pooled {
    /// Returns the connection to its server's pool (once), unless the server has left its
    /// upstream meanwhile: then the connection is dropped, which closes it (a private pool does
    /// not know its server left; the server's own pool would refuse it anyway).
    fn release(&mut self) {
        let Some(sender) = self.sender.take() else {
            return;
        };
        if self.guard.server().pool.is_retired() {
            return;
        }
        self.pool.checkin(sender, self.max_idle);
    }
}

/// A request body on its way to a server, cut off (and flagged) past `max_body_size`, or when the
/// client stops sending it for `body_timeout`.
pub struct RequestBody {
    /// The client's body; `None` for the empty body of a retried request.
    pub(super) inner: Option<Incoming>,
    /// Bytes still allowed.
    pub(super) remaining: u64,
    /// Set when the body was cut off by the client's fault (a [`BodyFault`] as `u8`), so the
    /// answer becomes a 413 or 408 instead of a server error.
    pub(super) fault: Arc<AtomicU8>,
    /// Longest wait for the next piece of body (nginx `client_body_timeout`).
    pub(super) timeout: Duration,
    /// Armed while waiting for the client; created on the first wait only.
    pub(super) timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs for the current wait. The clock starts when the client is found to
    /// have nothing more, not when the last piece arrived: time hyper spends not asking (a slow
    /// server pushing back) is not the client's.
    pub(super) waiting: bool,
}

/// Why a request body was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[repr(u8)]
pub enum BodyFault {
    /// More than `max_body_size`.
    #[error("request body larger than max_body_size")]
    TooLarge = 1,
    /// Nothing for `body_timeout`.
    #[error("request body stalled longer than body_timeout")]
    TooSlow = 2,
    /// hyper could not read the body: bad chunked framing (a chunk size that is not hex or
    /// overflows), or the client closed before the announced length arrived.
    #[error("request body malformed or cut short by the client")]
    Malformed = 3,
}

impl BodyFault {
    /// The fault recorded in `flag`, if any.
    pub fn read(flag: &AtomicU8) -> Option<BodyFault> {
        match flag.load(Ordering::Relaxed) {
            1 => Some(BodyFault::TooLarge),
            2 => Some(BodyFault::TooSlow),
            3 => Some(BodyFault::Malformed),
            _ => None,
        }
    }
}

impl RequestBody {
    fn fail(&self, fault: BodyFault) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.fault.store(fault as u8, Ordering::Relaxed);
        Poll::Ready(Some(Err(Box::new(fault))))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            Poll::Ready(Some(Err(e))) => {
                // The client's fault, not the server's: without the flag the failed send would
                // be a 502 and a passive health failure of a server that did nothing wrong.
                tracing::debug!(error = %e, "request body unreadable");
                return self.fail(BodyFault::Malformed);
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {
                let deadline = Instant::now() + self.timeout;
                let starts = !self.waiting;
                self.waiting = true;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if starts {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return self.fail(BodyFault::TooSlow);
                }
                return Poll::Pending;
            }
        };
        self.waiting = false;
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                return self.fail(BodyFault::TooLarge);
            }
            self.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// The body of a response to a client: streamed from a server, or ballast's own short text.
pub enum ProxyBody {
    /// From a server.
    Upstream(Box<Pooled>),
    /// Written by ballast (error pages).
    Full(Option<Bytes>),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Upstream(p) => {
                let r = Pin::new(&mut p.body).poll_frame(cx);
                if let Poll::Ready(None) = r {
                    p.release();
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(data) => data.is_none(),
            ProxyBody::Upstream(p) => p.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream(p) => p.body.size_hint(),
        }
    }
}
