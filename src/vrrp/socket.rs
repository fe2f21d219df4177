//! Raw VRRP sockets: IP protocol 112, one socket to receive and one to send, both tied to the
//! instance's interface (SO_BINDTODEVICE).
//!
//! * Receive, IPv4: a raw socket delivers the IP header with the payload, so source, destination
//!   and TTL are read from the header itself. IPv6 raw sockets never deliver the header, so the
//!   hop limit and destination come as control messages (IPV6_RECVHOPLIMIT, IPV6_RECVPKTINFO).
//!   The socket joins 224.0.0.18 / ff02::12 on the interface when adverts are multicast.
//! * Send: the kernel builds the IP header (no IP_HDRINCL); the socket is bound to the source
//!   address so the v3 pseudo-header checksum is computed over the address really used, with
//!   TTL / hop limit 255, TOS / traffic class 0xc0 (CS6, as Keepalived), and multicast loopback
//!   off so a node does not hear itself.
//!
//! Two sockets rather than one because binding a raw socket to an address also filters what it
//! receives to that destination, and adverts are sent to the group.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::Interest;

use super::packet::{self, Advert, DropReason, GROUP_V4, GROUP_V6, PROTO};

/// Where a received packet came from, as the IP layer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Source address.
    pub src: IpAddr,
    /// Destination address (the group, or this node for unicast).
    pub dst: IpAddr,
    /// TTL / hop limit.
    pub ttl: u8,
}

/// The sockets of one VRRP instance.
#[derive(Debug)]
pub struct VrrpSocket {
    /// The raw receive socket, registered with tokio as a `UdpSocket`: tokio only needs a
    /// datagram fd to wait on, and every read here is a plain recv(2)/recvmsg(2) on that fd.
    recv: tokio::net::UdpSocket,
    send: Socket,
    src: IpAddr,
    ifindex: u32,
    dests: Vec<IpAddr>,
}

impl VrrpSocket {
    /// Opens the sockets on `interface` (index `ifindex`), sending from `src` to the multicast
    /// group, or to `unicast_peers` when there are any.
    ///
    /// # Errors
    /// When a socket cannot be created or set up (raw sockets need CAP_NET_RAW).
    pub fn open(
        interface: &str,
        ifindex: u32,
        src: IpAddr,
        unicast_peers: &[IpAddr],
    ) -> io::Result<VrrpSocket> {
        let proto = Some(Protocol::from(i32::from(PROTO)));
        let multicast = unicast_peers.is_empty();
        let (recv, send) = match src {
            IpAddr::V4(src4) => {
                let recv = Socket::new(Domain::IPV4, Type::RAW, proto)?;
                recv.bind_device(Some(interface.as_bytes()))?;
                if multicast {
                    recv.join_multicast_v4_n(&GROUP_V4, &InterfaceIndexOrAddress::Index(ifindex))?;
                }
                let send = Socket::new(Domain::IPV4, Type::RAW, proto)?;
                send.bind_device(Some(interface.as_bytes()))?;
                send.bind(&SocketAddr::new(src, 0).into())?;
                send.set_multicast_if_v4(&src4)?;
                send.set_multicast_ttl_v4(u32::from(packet::TTL))?;
                send.set_ttl_v4(u32::from(packet::TTL))?;
                send.set_multicast_loop_v4(false)?;
                send.set_tos_v4(0xc0)?;
                (recv, send)
            }
            IpAddr::V6(src6) => {
                let recv = Socket::new(Domain::IPV6, Type::RAW, proto)?;
                recv.bind_device(Some(interface.as_bytes()))?;
                if multicast {
                    recv.join_multicast_v6(&GROUP_V6, ifindex)?;
                }
                use nix::sys::socket::{setsockopt, sockopt};
                setsockopt(&recv, sockopt::Ipv6RecvPacketInfo, &true).map_err(io::Error::from)?;
                setsockopt(&recv, sockopt::Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
                let send = Socket::new(Domain::IPV6, Type::RAW, proto)?;
                send.bind_device(Some(interface.as_bytes()))?;
                let scope = if src6.is_unicast_link_local() {
                    ifindex
                } else {
                    0
                };
                send.bind(&SocketAddrV6::new(src6, 0, 0, scope).into())?;
                send.set_multicast_if_v6(ifindex)?;
                send.set_multicast_hops_v6(u32::from(packet::TTL))?;
                send.set_unicast_hops_v6(u32::from(packet::TTL))?;
                send.set_multicast_loop_v6(false)?;
                send.set_tclass_v6(0xc0)?;
                (recv, send)
            }
        };
        recv.set_nonblocking(true)?;
        send.set_nonblocking(true)?;
        // The send socket is never read; keep what the kernel queues to it small.
        send.set_recv_buffer_size(0)?;
        let dests = if multicast {
            vec![match src {
                IpAddr::V4(_) => IpAddr::V4(GROUP_V4),
                IpAddr::V6(_) => IpAddr::V6(GROUP_V6),
            }]
        } else {
            unicast_peers.to_vec()
        };
        Ok(VrrpSocket {
            recv: tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(recv))?,
            send,
            src,
            ifindex,
            dests,
        })
    }

    /// The source address adverts are sent from.
    pub fn src(&self) -> IpAddr {
        self.src
    }

    /// Sends `advert` to every destination (the group, or each unicast peer).
    ///
    /// # Errors
    /// The last send that failed (the others are still tried).
    pub fn send(&self, advert: &Advert) -> io::Result<()> {
        let mut result = Ok(());
        for dst in &self.dests {
            let bytes = packet::encode(advert, self.src, *dst);
            let to: SocketAddr = match dst {
                IpAddr::V4(d) => SocketAddr::new(IpAddr::V4(*d), 0),
                IpAddr::V6(d) => {
                    let scope = if d.is_multicast() || d.is_unicast_link_local() {
                        self.ifindex
                    } else {
                        0
                    };
                    SocketAddr::V6(SocketAddrV6::new(*d, 0, 0, scope))
                }
            };
            if let Err(e) = self.send.send_to(&bytes, &to.into()) {
                result = Err(e);
            }
        }
        result
    }

    /// Receives the next packet into `buf`: where it came from and the VRRP message, or why
    /// the IP layer part of it is unusable.
    ///
    /// # Errors
    /// Socket errors; a bad packet is `Ok(Err(reason))`.
    pub async fn recv<'b>(
        &self,
        buf: &'b mut [u8],
    ) -> io::Result<Result<(Received, &'b [u8]), DropReason>> {
        let (n, meta) = match self.src {
            IpAddr::V4(_) => (self.recv.recv(buf).await?, None),
            IpAddr::V6(_) => {
                let fd = self.recv.as_raw_fd();
                let (n, r) = self
                    .recv
                    .async_io(Interest::READABLE, || recv_v6(fd, buf))
                    .await?;
                (n, Some(r))
            }
        };
        let buf: &'b [u8] = buf;
        let data = buf.get(..n).unwrap_or_default();
        Ok(match meta {
            Some(Some(r)) => Ok((r, data)),
            Some(None) => Err(DropReason::IpHeader),
            None => match packet::parse_ipv4(data) {
                Err(reason) => Err(reason),
                Ok(ip) if ip.protocol != PROTO => Err(DropReason::Protocol),
                Ok(ip) => Ok((
                    Received {
                        src: IpAddr::V4(ip.src),
                        dst: IpAddr::V4(ip.dst),
                        ttl: ip.ttl,
                    },
                    ip.payload,
                )),
            },
        })
    }
}

/// recvmsg on an IPv6 raw socket: the payload, and (when the kernel gave both control messages)
/// source, destination and hop limit.
fn recv_v6(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<Received>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrIn6};
    let mut cmsg = nix::cmsg_space!(nix::libc::c_int, nix::libc::in6_pktinfo);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn6>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let mut hop = None;
    let mut dst = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv6HopLimit(h) => hop = u8::try_from(h).ok(),
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    dst = Some(std::net::Ipv6Addr::from(info.ipi6_addr.s6_addr));
                }
                _ => {}
            }
        }
    }
    let n = msg.bytes;
    let src = msg.address.map(|a| a.ip());
    let meta = match (src, dst, hop) {
        (Some(src), Some(dst), Some(ttl)) => Some(Received {
            src: IpAddr::V6(src),
            dst: IpAddr::V6(dst),
            ttl,
        }),
        _ => None,
    };
    Ok((n, meta))
}
