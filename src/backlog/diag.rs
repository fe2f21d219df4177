//! Listening TCP sockets from the kernel, through sock_diag netlink (sock_diag(7), inet_diag).
//!
//! One `SOCK_DIAG_BY_FAMILY` dump per address family (AF_INET, AF_INET6), asking only for sockets
//! in state LISTEN. For a listening socket the kernel fills `idiag_rqueue` with the current
//! accept-queue length (`sk_ack_backlog`) and `idiag_wqueue` with its maximum
//! (`sk_max_ack_backlog`, which listen(2) already capped at `net.core.somaxconn`). This is what
//! `ss -lnt` shows as Recv-Q and Send-Q; we ask the kernel directly instead of parsing `ss`.
//!
//! The messages are encoded and decoded by the `netlink-packet-sock-diag` crate and sent over a
//! `netlink-sys` socket. Unprivileged users may dump inet sockets; a sandbox (seccomp, a
//! container without netlink) may still refuse: [`DiagError`] says so, and [`super::collect`]
//! falls back to `/proc/net/tcp`.

use std::io;
use std::net::SocketAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{
    nlas::Nla, ExtensionFlags, InetRequest, SocketId, StateFlags,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

/// Receive buffer for one netlink datagram. The kernel sizes dump datagrams to at most 32 KiB.
const RECV_BUF: usize = 64 * 1024;

/// Why the listening sockets could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    /// The netlink socket could not be opened or used.
    #[error("cannot query the kernel's sock_diag netlink interface ({what}){hint}")]
    Io {
        /// The step that failed.
        what: &'static str,
        /// A hint for the operator, empty when there is none.
        hint: &'static str,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The kernel answered something this version cannot decode.
    #[error("cannot decode the kernel's sock_diag answer: {0}")]
    Decode(String),
}

/// One listening TCP socket as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenSocket {
    /// Local address and port.
    pub(crate) local: SocketAddr,
    /// Connections in the accept queue now (established, not yet accept(2)ed).
    pub(crate) queue: u32,
    /// The accept queue's maximum: min(listen(2) backlog, somaxconn at the time of listen);
    /// `None` when read from `/proc/net/tcp`, which does not show it.
    pub(crate) max: Option<u32>,
    /// Owner uid of the socket.
    pub(crate) uid: u32,
    /// Socket inode (matches `/proc/[pid]/fd/N -> socket:[inode]`).
    pub(crate) inode: u64,
    /// Connection attempts the kernel dropped at this socket since it was created (`sk_drops`:
    /// accept queue full, or no memory); the per-socket share of `ListenDrops`. `None` when not
    /// reported (from `/proc/net/tcp`, or an old kernel).
    pub(crate) drops: Option<u32>,
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> DiagError {
    move |source| DiagError::Io {
        what,
        hint: match source.kind() {
            io::ErrorKind::PermissionDenied => {
                ": not permitted here (a sandbox or seccomp policy?)"
            }
            io::ErrorKind::Unsupported => ": this kernel or namespace has no sock_diag",
            _ => "",
        },
        source,
    }
}

/// Every listening TCP socket, IPv4 and IPv6, in this network namespace.
///
/// # Errors
/// [`DiagError`] when netlink cannot be used or answers with an error or garbage.
pub(crate) fn listening_sockets() -> Result<Vec<ListenSocket>, DiagError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(io_err("socket"))?;
    socket.bind_auto().map_err(io_err("bind"))?;
    socket
        .connect(&netlink_sys::SocketAddr::new(0, 0))
        .map_err(io_err("connect"))?;
    let mut out = Vec::new();
    let mut seq = 0;
    for family in [AF_INET, AF_INET6] {
        seq += 1;
        dump(&socket, family, seq, &mut out)?;
    }
    Ok(out)
}

fn dump(
    socket: &Socket,
    family: u8,
    seq: u32,
    out: &mut Vec<ListenSocket>,
) -> Result<(), DiagError> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            // SKMEMINFO carries `sk_drops`, the socket's own count of dropped handshakes.
            extensions: ExtensionFlags::SKMEMINFO,
            states: StateFlags::LISTEN,
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0).map_err(io_err("send"))?;

    let mut buf: Vec<u8> = Vec::with_capacity(RECV_BUF);
    loop {
        buf.clear();
        let n = socket
            .recv(&mut buf, nix::libc::MSG_TRUNC)
            .map_err(io_err("receive"))?;
        if n > buf.len() {
            return Err(DiagError::Decode(format!(
                "a datagram of {n} bytes exceeds the {RECV_BUF}-byte buffer"
            )));
        }
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(rest)
                .map_err(|e| DiagError::Decode(e.to_string()))?;
            let len = usize::try_from(msg.header.length).unwrap_or(usize::MAX);
            if len == 0 || len > rest.len() {
                return Err(DiagError::Decode(format!(
                    "message length {len} with {} bytes left",
                    rest.len()
                )));
            }
            // Netlink messages are 4-byte aligned within a datagram.
            rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
            if msg.header.sequence_number != seq {
                continue;
            }
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(io_err("dump")(e.to_io()));
                }
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    let id = &r.header.socket_id;
                    out.push(ListenSocket {
                        local: SocketAddr::new(id.source_address, id.source_port),
                        queue: r.header.recv_queue,
                        max: Some(r.header.send_queue),
                        uid: r.header.uid,
                        inode: u64::from(r.header.inode),
                        drops: r.nlas.iter().find_map(|n| match n {
                            Nla::MemInfo(m) => Some(m.drops),
                            _ => None,
                        }),
                    });
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_that_does_not_accept_shows_its_queue_and_max() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        let found = listening_sockets().expect("sock_diag works here");
        let s = found.iter().find(|s| s.local == addr).expect("listed");
        assert_eq!(s.queue, 3);
        // std listens with backlog 128.
        let somaxconn = super::super::proc::sysctl("net/core/somaxconn").expect("somaxconn");
        assert_eq!(s.max.map(u64::from), Some(somaxconn.min(128)));
        drop(clients);
    }

    #[test]
    fn a_full_accept_queue_counts_its_drops_on_the_socket() {
        use socket2::{Domain, Socket, Type};
        let l = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        l.bind(&any.into()).expect("bind");
        // Backlog 1: the queue holds two; further handshakes are dropped.
        l.listen(1).expect("listen");
        let addr = l.local_addr().expect("addr");
        let clients: Vec<Socket> = (0..6)
            .map(|_| {
                let c = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
                c.set_nonblocking(true).expect("nonblocking");
                let _ = c.connect(&addr);
                c
            })
            .collect();
        let addr = addr.as_socket().expect("inet");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let found = listening_sockets().expect("sock_diag works here");
            let s = found.iter().find(|s| s.local == addr).expect("listed");
            if s.drops.unwrap_or(0) > 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no drops: {s:?}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(clients);
    }

    #[test]
    fn ipv6_listeners_are_listed_too() {
        let Ok(l) = std::net::TcpListener::bind("[::1]:0") else {
            eprintln!("SKIPPED: no IPv6 loopback here");
            return;
        };
        let addr = l.local_addr().expect("addr");
        let found = listening_sockets().expect("sock_diag works here");
        assert!(found.iter().any(|s| s.local == addr), "{addr} in {found:?}");
    }
}
