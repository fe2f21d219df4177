//! Reading a UDP listener's datagrams in batches: one recvmmsg(2) takes up to [`BATCH`] queued
//! datagrams, where recvfrom(2) takes one.
//!
//! Through nix's safe wrapper; the buffers are [`MAX_DATAGRAM`] bytes each, so no datagram is
//! ever truncated, and only the pages a datagram is written to are ever touched.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

use super::MAX_DATAGRAM;

/// Most datagrams one call takes.
pub(super) const BATCH: usize = 32;

/// Buffers for one worker, reused for every call. The message headers are built per call (two
/// small allocations): nix's `MultiHeaders` holds raw pointers, so it is not `Send` and cannot
/// live in a worker's future across an `.await`.
pub(super) struct Batch {
    bufs: Vec<Vec<u8>>,
    /// Per datagram of the last call: its length and sender.
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl Batch {
    /// Buffers for [`BATCH`] datagrams.
    pub(super) fn new() -> Batch {
        Batch {
            bufs: (0..BATCH).map(|_| vec![0u8; MAX_DATAGRAM]).collect(),
            got: Vec::with_capacity(BATCH),
        }
    }

    /// Reads what is queued on `fd` (non-blocking), up to [`BATCH`] datagrams; returns how many.
    ///
    /// # Errors
    /// WouldBlock when nothing is queued; any other socket error.
    pub(super) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let Batch { bufs, got } = self;
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(b.as_mut_slice())])
            .collect();
        let results = recvmmsg(
            fd,
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        got.clear();
        for m in results {
            got.push((m.bytes, m.address.as_ref().and_then(to_std)));
        }
        Ok(got.len())
    }

    /// Datagram `i` of the last call and its sender (`None` if the kernel gave no address).
    pub(super) fn get(&self, i: usize) -> Option<(&[u8], Option<SocketAddr>)> {
        let (len, from) = *self.got.get(i)?;
        Some((self.bufs.get(i)?.get(..len)?, from))
    }
}

/// A socket address from the kernel as std's.
fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}
