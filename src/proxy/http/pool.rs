//! Kept-alive HTTP/1.1 connections to servers, one small pool per server.
//!
//! A request takes an idle connection of the server the scheduler chose, or opens a new one; when
//! its response body has been read to the end, the connection goes back to that server's pool
//! (nginx `keepalive N` in an `upstream`). The pool is a short `Vec` behind a std mutex: the lock is
//! held for a push or a pop, never across an `.await`. Entries idle longer than the upstream's
//! `keepalive_timeout`, or closed by the server, are dropped when found.

use std::sync::Mutex;
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

/// The sending half of one kept-alive connection to a server.
pub type Sender = SendRequest<super::RequestBody>;

/// Idle connections of one server.
#[derive(Debug, Default)]
pub struct ServerPool {
    idle: Mutex<Vec<(Sender, Instant)>>,
}

impl ServerPool {
    /// An idle connection ready for a request, if one is kept and not too old. A connection is
    /// checked in the moment its response body ends, when hyper may not yet have marked it idle,
    /// so this waits (briefly) for it to become ready; one the server closed is dropped.
    pub async fn checkout(&self, max_idle: Duration) -> Option<Sender> {
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
                return Some(sender);
            }
        }
    }

    /// Keeps a connection whose exchange is complete, unless `max` are already kept.
    pub fn checkin(&self, sender: Sender, max: usize) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < max {
                idle.push((sender, Instant::now()));
            }
        }
    }

    /// How many connections are kept now.
    pub fn len(&self) -> usize {
        self.idle.lock().map_or(0, |i| i.len())
    }

    /// Whether none are kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
