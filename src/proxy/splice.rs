//! Zero-copy relaying with splice(2), for directions that carry bulk data.
//!
//! splice(2) moves bytes from a socket into a pipe and from the pipe into the other socket without
//! copying them through user space; on a bulk transfer this roughly halves the CPU a byte costs.
//! It needs a pipe (two file descriptors) per direction and two syscalls per chunk, which short
//! request/response exchanges do not win back, so the relay starts every connection with ordinary
//! buffers and moves a direction to a pipe only once it has shown itself to be bulk (HAProxy's
//! `option splice-auto` makes the same bet). If a pipe cannot be had (EMFILE), copying goes on.
//!
//! Readiness comes from tokio: `poll_*_ready` waits, `try_io` runs the splice and clears the
//! readiness on EAGAIN, so a direction waits on exactly the socket that would block. The pipe
//! itself never blocks the relay: we only splice into an empty pipe and only out of a full one.

use std::io;
use std::os::fd::OwnedFd;
use std::task::{ready, Context, Poll};

use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// A pipe used as the buffer of one direction.
#[derive(Debug)]
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe not yet passed on.
    pub(crate) len: usize,
    /// How much one splice may move into the pipe.
    size: usize,
}

const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_MOVE.union(SpliceFFlags::SPLICE_F_NONBLOCK);

impl Pipe {
    /// A non-blocking pipe, resized towards `size` bytes (the kernel may refuse above
    /// `/proc/sys/fs/pipe-max-size`; the default 64 KiB then stays).
    pub(crate) fn new(size: usize) -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let want = i32::try_from(size).unwrap_or(i32::MAX);
        let size = match fcntl(&write, FcntlArg::F_SETPIPE_SZ(want)) {
            Ok(got) => usize::try_from(got).unwrap_or(64 * 1024),
            Err(_) => 64 * 1024,
        };
        Ok(Pipe {
            read,
            write,
            len: 0,
            size,
        })
    }

    /// Moves what is in the pipe to `writer`; returns the bytes moved by this call (> 0), or an
    /// error. Pending while `writer` cannot take more.
    pub(crate) fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        writer: &TcpStream,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(writer.poll_write_ready(cx))?;
            match writer.try_io(Interest::WRITABLE, || {
                splice(&self.read, None, writer, None, self.len, FLAGS).map_err(io::Error::from)
            }) {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "peer accepts no more bytes",
                    )))
                }
                Ok(n) => {
                    self.len -= n;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Moves what `reader` has into the (empty) pipe; returns the bytes moved, 0 at end of stream.
    pub(crate) fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        reader: &TcpStream,
    ) -> Poll<io::Result<usize>> {
        debug_assert_eq!(self.len, 0, "fill only an empty pipe");
        loop {
            ready!(reader.poll_read_ready(cx))?;
            match reader.try_io(Interest::READABLE, || {
                splice(reader, None, &self.write, None, self.size, FLAGS).map_err(io::Error::from)
            }) {
                Ok(n) => {
                    self.len = n;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}
