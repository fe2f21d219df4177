//! Kept-alive connections to servers, one small pool per server.
//!
//! HTTP/1.1 (the default): a request takes an idle connection of the server the scheduler chose,
//! or opens a new one; when its response body has been read to the end, the connection goes back
//! to that server's pool (nginx `keepalive N` in an `upstream`). Entries idle longer than the
//! upstream's `keepalive_timeout`, or closed by the server, are dropped when found.
//!
//! HTTP/2 (`http2 = true`): one connection per server carries every request, multiplexed; the pool
//! keeps it shared and hands out clones of its sender.
//!
//! The pool is a short `Vec` (and one slot) behind a std mutex: the lock is held for a push, a pop
//! or a clone, never across an `.await`.
//!
//! A server's shared pool lives in its [`Server`](crate::upstream::Server), so it follows the
//! server, not its place in the upstream's list: a snapshot with servers added or removed keeps
//! the pools of the servers that stay, and a new server starts with an empty one. When a server
//! leaves its upstream (`ipvsadm -d`, a reload), its pool is [retired](ServerPool::retire): the
//! connections kept idle close at once, and those its in-flight requests give back later are
//! closed instead of kept (HAProxy `del server` after its connections are gone).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use tokio::time::Instant;

use super::RequestBody;

/// The sending half of a connection to a server.
#[derive(Debug)]
pub enum Sender {
    /// An HTTP/1.1 connection: one request at a time.
    Http1(http1::SendRequest<RequestBody>),
    /// An HTTP/2 connection: shared, many requests at once.
    Http2(http2::SendRequest<RequestBody>),
}

impl Sender {
    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }

    /// Waits until the connection can take a request.
    pub async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::Http1(s) => s.ready().await,
            Sender::Http2(s) => s.ready().await,
        }
    }

    /// Sends a request; resolves to the response head.
    pub async fn send_request(
        &mut self,
        req: Request<RequestBody>,
    ) -> hyper::Result<Response<Incoming>> {
        match self {
            Sender::Http1(s) => s.send_request(req).await,
            Sender::Http2(s) => s.send_request(req).await,
        }
    }

    /// Whether this is an HTTP/2 connection.
    pub fn is_http2(&self) -> bool {
        matches!(self, Sender::Http2(_))
    }
}

/// Connections of one server.
#[derive(Debug, Default)]
pub struct ServerPool {
    idle: Mutex<Vec<(http1::SendRequest<RequestBody>, Instant)>>,
    shared: Mutex<Option<http2::SendRequest<RequestBody>>>,
    /// Set once the server has left its upstream: nothing is kept any more. Written before the
    /// kept connections are taken under the locks and read under them, so a check-in racing
    /// [`ServerPool::retire`] either sees it or is taken by it.
    retired: AtomicBool,
}

impl ServerPool {
    /// A connection ready for a request, if one is kept: the shared HTTP/2 connection, or an idle
    /// HTTP/1.1 one not older than `max_idle`. An HTTP/1.1 connection is checked in the moment
    /// its response body ends, when hyper may not yet have marked it idle, so this waits (briefly)
    /// for it to become ready; one the server closed is dropped.
    pub async fn checkout(&self, max_idle: Duration) -> Option<Sender> {
        if self.is_retired() {
            return None;
        }
        if let Ok(mut shared) = self.shared.lock() {
            match shared.as_ref() {
                Some(s) if !s.is_closed() => return Some(Sender::Http2(s.clone())),
                Some(_) => *shared = None,
                None => {}
            }
        }
        loop {
            let (mut sender, since) = {
                let Ok(mut idle) = self.idle.lock() else {
                    return None;
                };
                idle.pop()?
            };
            if since.elapsed() > max_idle || sender.is_closed() {
                continue;
            }
            if sender.ready().await.is_ok() {
                return Some(Sender::Http1(sender));
            }
        }
    }

    /// Keeps a connection: an HTTP/1.1 one whose exchange is complete, unless `max` are already
    /// kept; an HTTP/2 one as the shared connection, unless one is already shared. Nothing is
    /// kept once the pool is retired: the connection is dropped, which closes it.
    pub fn checkin(&self, sender: Sender, max: usize) {
        if sender.is_closed() {
            return;
        }
        match sender {
            Sender::Http1(s) => {
                if let Ok(mut idle) = self.idle.lock() {
                    if idle.len() < max && !self.retired.load(Ordering::Acquire) {
                        idle.push((s, Instant::now()));
                    }
                }
            }
            Sender::Http2(s) => {
                if let Ok(mut shared) = self.shared.lock() {
                    let free = shared.as_ref().is_none_or(|cur| cur.is_closed());
                    if free && !self.retired.load(Ordering::Acquire) {
                        *shared = Some(s);
                    }
                }
            }
        }
    }

    /// The server has left its upstream: closes every connection kept now (HTTP/1.1 idle ones,
    /// and the shared HTTP/2 one once its streams in flight end, as hyper drives it until its last
    /// sender is gone) and keeps none from now on. Requests in flight finish on their
    /// connections, which close when they are given back.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        let idle = self.idle.lock().map(|mut i| std::mem::take(&mut *i));
        let shared = self.shared.lock().map(|mut s| s.take());
        // Dropped outside the locks: each drop ends the connection's task, which closes it.
        drop((idle, shared));
    }

    /// Whether [`ServerPool::retire`] was called.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// How many HTTP/1.1 connections are kept idle now.
    pub fn len(&self) -> usize {
        self.idle.lock().map_or(0, |i| i.len())
    }

    /// Whether none are kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
