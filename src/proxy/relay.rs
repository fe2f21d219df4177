//! Relaying bytes between a client and a server socket, both ways, in one task.
//!
//! Why not `tokio::io::copy_bidirectional`: it has no idle timeout, does not say which side failed
//! (needed to pass a reset on to the other side), and reports byte counts only at the end. This
//! relay is the same two-buffer state machine with those three things added:
//!
//! * **Half-close.** When one side sends FIN, the relay finishes writing what it read, then shuts
//!   down the write half of the other side, and keeps relaying the other direction until it ends too
//!   (TCP half-close, RFC 9293 §3.6).
//! * **Idle timeout.** The deadline is not re-armed on every chunk (that would be a timer-wheel
//!   operation per read); progress only records the time, and when the timer fires the relay checks
//!   whether the connection was really idle for the whole period, re-arming if not. A direction
//!   whose receiver takes none of its waiting bytes for the same period also ends the relay, even
//!   while the other direction moves: a client that keeps sending but stopped reading (nginx's
//!   `send_timeout` case, HAProxy's `timeout client`) does not hold the server forever.
//! * **Resets.** A read or write error on one side ends the relay with [`RelayEnd::Reset`] naming
//!   the side; the caller then closes the other side with a RST (SO_LINGER 0) so the peer learns at
//!   once that the connection is gone, as it would have without the proxy.
//!
//! Byte counts go to the server's counters after each write, so counters move while long
//! connections live. Buffers start at 16 KiB and grow (a few times at most) while a direction moves bulk data,
//! up to `buffer_size`.
//!
//! **Idle connections hold no buffer.** A direction allocates its buffer only once its socket is
//! readable, and gives it back when everything read has been written and the socket has nothing
//! more (the read would block), as HAProxy allocates buffers on demand. An idle relayed
//! connection then costs its task and two socket registrations (a few hundred bytes), not 32 KiB;
//! a busy direction keeps its buffer across reads within one burst and reallocates at the size it
//! had grown to for the next one (one allocation per burst, not per read).

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::io::poll_read_buf;
use tokio_util::sync::CancellationToken;

use super::splice::Pipe;

/// Which end of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client, which connected to the listener.
    Client,
    /// The server ballast connected to.
    Server,
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both directions finished with FIN.
    Closed,
    /// Nothing moved in either direction for the idle timeout.
    IdleTimeout,
    /// One side reset the connection or failed with an I/O error (of this kind).
    Reset(Side, io::ErrorKind),
    /// Shutdown's grace period ran out.
    Aborted,
}

/// Bytes relayed and how the relay ended.
#[derive(Debug, Clone, Copy)]
pub struct RelayOutcome {
    /// Bytes copied from the client to the server.
    pub to_server: u64,
    /// Bytes copied from the server to the client.
    pub to_client: u64,
    /// Why it stopped.
    pub end: RelayEnd,
    /// Directions (0, 1 or 2) that moved to splice(2).
    pub spliced: u8,
}

/// First size of each direction's buffer; it doubles, up to the configured `buffer_size`, each
/// time one read fills it completely (a bulk transfer), so short exchanges stay small and bulk
/// flows get the large buffers that cut the number of syscalls per byte.
pub const INITIAL_BUFFER: usize = 16 * 1024;

/// A direction whose reads fill a buffer of this size moves to splice(2), when allowed.
pub const SPLICE_AFTER: usize = 64 * 1024;

/// A user-space buffer that grows while its direction carries bulk data.
struct Buffer {
    /// Bytes read and not yet all written; its capacity is `size`, or 0 while the direction is
    /// idle (no allocation). `BytesMut` because reading into its spare capacity needs no zeroing
    /// (tokio-util `poll_read_buf`).
    buf: BytesMut,
    /// The size the buffer is allocated at when data comes.
    size: usize,
    /// Largest `buf` may grow to.
    max: usize,
    /// The last read filled `buf`: grow it before the next read.
    grow: bool,
    /// Start of the unwritten bytes in `buf` (its end is `buf.len()`).
    pos: usize,
}

/// Where one direction holds bytes between reading and writing them.
enum Store {
    /// Copied through user space.
    Buffer(Buffer),
    /// Moved by splice(2) through a pipe.
    Pipe(Pipe),
}

/// One direction: read from one socket, write to the other, pass the FIN on.
struct Half<'a> {
    store: Store,
    /// Whether this direction may move to splice(2) once it proves bulk.
    may_splice: bool,
    /// The reader sent FIN.
    eof: bool,
    /// We shut down the writer's write half (FIN passed on): this direction is finished.
    done: bool,
    total: u64,
    /// Live counter to add written bytes to.
    counter: &'a AtomicU64,
    /// The last poll ended with bytes this direction could not write: its receiver is not
    /// taking them.
    write_blocked: bool,
}

/// Which side failed, and how.
struct HalfError(Side, io::Error);

impl<'a> Half<'a> {
    fn new(size: usize, may_splice: bool, counter: &'a AtomicU64) -> Half<'a> {
        Half {
            store: Store::Buffer(Buffer {
                buf: BytesMut::new(),
                size: size.min(INITIAL_BUFFER),
                max: size,
                grow: false,
                pos: 0,
            }),
            may_splice,
            eof: false,
            done: false,
            total: 0,
            counter,
            write_blocked: false,
        }
    }

    fn spliced(&self) -> bool {
        matches!(self.store, Store::Pipe(_))
    }

    /// Moves bytes from `reader` to `writer` until it would block or the direction is finished.
    /// Sets `*progress` when any byte moved.
    fn poll_relay(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut TcpStream,
        writer: &mut TcpStream,
        (rside, wside): (Side, Side),
        progress: &mut bool,
    ) -> Poll<Result<(), HalfError>> {
        loop {
            if self.done {
                return Poll::Ready(Ok(()));
            }
            // Write out what was read before reading more.
            loop {
                // Stays set if a write below returns Pending.
                self.write_blocked = true;
                let n = match &mut self.store {
                    Store::Buffer(b) if b.pos < b.buf.len() => {
                        let n = ready!(Pin::new(&mut *writer).poll_write(cx, &b.buf[b.pos..]))
                            .map_err(|e| HalfError(wside, e))?;
                        if n == 0 {
                            let e = io::Error::new(
                                io::ErrorKind::WriteZero,
                                "peer accepts no more bytes",
                            );
                            return Poll::Ready(Err(HalfError(wside, e)));
                        }
                        b.pos += n;
                        n
                    }
                    Store::Pipe(p) if p.len > 0 => {
                        ready!(p.poll_drain(cx, writer)).map_err(|e| HalfError(wside, e))?
                    }
                    _ => {
                        self.write_blocked = false;
                        break;
                    }
                };
                self.write_blocked = false;
                self.total += n as u64;
                self.counter.fetch_add(n as u64, Ordering::Relaxed);
                *progress = true;
            }
            if self.eof {
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))
                    .map_err(|e| HalfError(wside, e))?;
                self.done = true;
                continue;
            }
            self.resize();
            let n = match &mut self.store {
                Store::Buffer(b) => {
                    // All written: reuse the whole capacity (same allocation, no copy).
                    b.buf.clear();
                    b.pos = 0;
                    if b.buf.capacity() == 0 {
                        // Idle until now: allocate only once there is something to read.
                        ready!(reader.poll_read_ready(cx)).map_err(|e| HalfError(rside, e))?;
                        b.buf = BytesMut::with_capacity(b.size);
                    }
                    let n = match poll_read_buf(Pin::new(&mut *reader), cx, &mut b.buf) {
                        Poll::Ready(r) => r.map_err(|e| HalfError(rside, e))?,
                        Poll::Pending => {
                            // Drained and nothing more to read: an idle direction holds no buffer.
                            b.buf = BytesMut::new();
                            return Poll::Pending;
                        }
                    };
                    b.grow = n >= b.size && n < b.max;
                    n
                }
                Store::Pipe(p) => {
                    ready!(p.poll_fill(cx, reader)).map_err(|e| HalfError(rside, e))?
                }
            };
            if n == 0 {
                self.eof = true;
            } else {
                *progress = true;
            }
        }
    }

    /// Before a read, with nothing left unwritten: after a read that filled the buffer, double it,
    /// or move to a pipe once the buffer has reached [`SPLICE_AFTER`]. A direction that cannot get
    /// a pipe (EMFILE) keeps copying.
    fn resize(&mut self) {
        let Store::Buffer(b) = &mut self.store else {
            return;
        };
        if !b.grow {
            return;
        }
        b.grow = false;
        if self.may_splice && b.size >= SPLICE_AFTER {
            if let Ok(pipe) = Pipe::new(b.max) {
                self.store = Store::Pipe(pipe);
                return;
            }
        }
        b.size = (b.size * 2).min(b.max);
        // Allocated at the new size by the next read.
        b.buf = BytesMut::new();
    }
}

/// Live byte counters a relay adds to.
#[derive(Debug, Clone, Copy)]
pub struct Counters<'a> {
    /// Bytes client → server.
    pub to_server: &'a AtomicU64,
    /// Bytes server → client.
    pub to_client: &'a AtomicU64,
}

/// Relays between `client` and `server` until both directions are closed, one side fails, nothing
/// moves for `idle`, or `abort` is cancelled.
pub async fn relay(
    client: &mut TcpStream,
    server: &mut TcpStream,
    buffer_size: usize,
    splice: bool,
    idle: Duration,
    counters: Counters<'_>,
    abort: &CancellationToken,
) -> RelayOutcome {
    let mut up = Half::new(buffer_size, splice, counters.to_server);
    let mut down = Half::new(buffer_size, splice, counters.to_client);
    let mut last_progress = Instant::now();
    // Since when each direction (up, down) has had bytes its receiver would not take.
    let mut stalled: [Option<Instant>; 2] = [None, None];
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    let aborted = abort.cancelled();
    tokio::pin!(aborted);

    let end = poll_fn(|cx| {
        let mut progress = false;
        let up_state = up.poll_relay(
            cx,
            client,
            server,
            (Side::Client, Side::Server),
            &mut progress,
        );
        let down_state = down.poll_relay(
            cx,
            server,
            client,
            (Side::Server, Side::Client),
            &mut progress,
        );
        match (up_state, down_state) {
            (Poll::Ready(Err(HalfError(side, e))), _)
            | (_, Poll::Ready(Err(HalfError(side, e)))) => {
                return Poll::Ready(RelayEnd::Reset(side, e.kind()));
            }
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => return Poll::Ready(RelayEnd::Closed),
            _ => {}
        }
        if aborted.as_mut().poll(cx).is_ready() {
            return Poll::Ready(RelayEnd::Aborted);
        }
        if progress {
            last_progress = Instant::now();
        }
        for (since, half) in stalled.iter_mut().zip([&up, &down]) {
            match (half.write_blocked, *since) {
                (true, None) => *since = Some(Instant::now()),
                (false, Some(_)) => *since = None,
                _ => {}
            }
        }
        // Fire only after a full idle period without progress, or once a direction has been
        // unable to deliver for as long (its receiver stopped reading while the other direction
        // may still move); re-arm otherwise.
        while timer.as_mut().poll(cx).is_ready() {
            let deadline = stalled
                .iter()
                .flatten()
                .fold(last_progress + idle, |d, &s| d.min(s + idle));
            if Instant::now() >= deadline {
                return Poll::Ready(RelayEnd::IdleTimeout);
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await;

    RelayOutcome {
        to_server: up.total,
        to_client: down.total,
        end,
        spliced: u8::from(up.spliced()) + u8::from(down.spliced()),
    }
}
