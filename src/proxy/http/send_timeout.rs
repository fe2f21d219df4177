//! `send_timeout`: a client that stops taking the response is let go.
//!
//! hyper writes a response only as fast as the client reads it (it polls the body for more only
//! when its write buffer has room), so a client that stops reading costs no memory beyond the
//! socket buffers; but without a deadline it would hold its connection, the server's connection
//! and their slots forever. [`SendTimeout`] wraps the client's socket: when a write cannot proceed
//! it arms a timer, any write that makes progress disarms it, and when it fires the write fails
//! with `TimedOut`, which ends the connection (and drops the unfinished server connection with
//! it). This is nginx's `send_timeout`: "the timeout is set only between two successive write
//! operations, not for the transmission of the whole response". A client that reads slowly but
//! steadily is never cut off.
//!
//! The timer is only allocated while a write is blocked, so an idle connection pays for it
//! nothing but this wrapper's few words.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::listener::Listener;

/// A client stream whose writes fail once none has made progress for the timeout.
pub struct SendTimeout<S> {
    inner: S,
    /// `send_timeout` of the listener.
    timeout: Duration,
    /// Armed while a write is blocked; `None` while writes go through.
    stalled: Option<Pin<Box<Sleep>>>,
    /// Counts the timeout (`send_timeouts`).
    listener: Arc<Listener>,
}

impl<S> SendTimeout<S> {
    /// Wraps `inner` with the `send_timeout` of `listener`.
    pub fn new(inner: S, listener: Arc<Listener>) -> SendTimeout<S> {
        SendTimeout {
            inner,
            timeout: listener.config.http.send_timeout,
            stalled: None,
            listener,
        }
    }

    /// After a write returned `Pending`: arms the timer if needed; `Ready(Err)` once it fired.
    fn poll_stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.stalled = None;
        let stats = &self.listener.stats;
        stats.send_timeouts.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(listener = %self.listener.config.name, ?timeout,
            "client took no response bytes for send_timeout; closing");
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client took no bytes for {timeout:?} (send_timeout)"),
        )))
    }

    /// Passes a write's result on, disarming the timer when it completed and arming it on
    /// `Pending`.
    fn after<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_stalled(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    // A flush or shutdown that completes proves nothing about the client (a plain socket's flush
    // always does), so only one that blocks touches the timer.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.poll_stalled(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.poll_stalled(cx),
            ready => ready,
        }
    }
}
