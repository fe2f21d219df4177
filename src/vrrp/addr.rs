//! The interface side of VRRP: adding and removing the virtual addresses through rtnetlink
//! (`RTM_NEWADDR`/`RTM_DELADDR`, messages from the `netlink-packet-route` crate over a
//! `netlink-sys` socket), reading the interface's own addresses and link state, and announcing
//! the addresses with gratuitous ARP (AF_PACKET) or unsolicited neighbour advertisements
//! (ICMPv6).
//!
//! Netlink calls here are blocking but short (one request, one acknowledgement from the kernel),
//! so the VRRP task makes them inline. Link state and MAC address come from
//! `/sys/class/net/IF/` (which `ip netns exec` remounts for the namespace).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket as NlSocket};
use nix::libc;
use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};

use crate::config::vrrp::VirtualAddress;

/// An address configured on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddr {
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// A secondary (IPv4) address.
    pub secondary: bool,
}

/// The interface index of `name`.
///
/// # Errors
/// When there is no such interface in this network namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "ifindex is not a number"))
}

/// Whether `name` exists, is administratively up and has its link (operstate not down).
pub fn link_up(name: &str) -> bool {
    let read = |f: &str| std::fs::read_to_string(format!("/sys/class/net/{name}/{f}"));
    let Ok(flags) = read("flags") else {
        return false;
    };
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
    let admin_up = flags & 0x1 != 0;
    let oper = read("operstate").unwrap_or_default();
    admin_up && !matches!(oper.trim(), "down" | "lowerlayerdown" | "notpresent")
}

/// The MAC address of `name`.
pub fn mac(name: &str) -> Option<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/address")).ok()?;
    let mut out = [0u8; 6];
    let mut parts = text.trim().split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// A route netlink socket.
#[derive(Debug)]
pub struct Netlink {
    socket: NlSocket,
    seq: u32,
}

impl Netlink {
    /// Opens a route netlink socket in this network namespace.
    ///
    /// # Errors
    /// When netlink cannot be used.
    pub fn open() -> io::Result<Netlink> {
        let mut socket = NlSocket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Adds `vip` to interface `ifindex`. Already present is success.
    ///
    /// # Errors
    /// What the kernel answered otherwise.
    pub fn add(&mut self, ifindex: u32, vip: &VirtualAddress) -> io::Result<()> {
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        match self.request(
            RouteNetlinkMessage::NewAddress(message(ifindex, vip)),
            flags,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    /// Removes `vip` from interface `ifindex`. Absent is success.
    ///
    /// # Errors
    /// What the kernel answered otherwise.
    pub fn remove(&mut self, ifindex: u32, vip: &VirtualAddress) -> io::Result<()> {
        let flags = NLM_F_REQUEST | NLM_F_ACK;
        match self.request(
            RouteNetlinkMessage::DelAddress(message(ifindex, vip)),
            flags,
        ) {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EADDRNOTAVAIL | libc::ENOENT | libc::ENODEV)
                ) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// The addresses on interface `ifindex`, in the kernel's order (primary first).
    ///
    /// # Errors
    /// When the dump fails.
    pub fn addresses(&mut self, ifindex: u32) -> io::Result<Vec<IfAddr>> {
        Ok(self
            .all_addresses()?
            .into_iter()
            .filter(|(i, _)| *i == ifindex)
            .map(|(_, a)| a)
            .collect())
    }

    /// Every address in this network namespace, with its interface index.
    ///
    /// # Errors
    /// When the dump fails.
    pub fn all_addresses(&mut self) -> io::Result<Vec<(u32, IfAddr)>> {
        let mut out = Vec::new();
        let replies = self.exchange(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        for msg in replies {
            let RouteNetlinkMessage::NewAddress(a) = msg else {
                continue;
            };
            // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS
            // otherwise (IPv6 has only IFA_ADDRESS).
            let local = a.attributes.iter().find_map(|at| match at {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = a.attributes.iter().find_map(|at| match at {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(addr) = local.or(address) {
                out.push((
                    a.header.index,
                    IfAddr {
                        addr,
                        prefix_len: a.header.prefix_len,
                        secondary: a.header.flags.contains(AddressHeaderFlags::Secondary),
                    },
                ));
            }
        }
        Ok(out)
    }

    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.exchange(msg, flags).map(drop)
    }

    /// Sends one request and collects the answers until the ACK or the end of the dump.
    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut req = NetlinkMessage::new(header, msg.into());
        req.finalize();
        let mut buf = vec![0; req.buffer_len()];
        req.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        loop {
            buf.clear();
            let n = self.socket.recv(&mut buf, 0)?;
            let mut rest = buf.get(..n).unwrap_or_default();
            while !rest.is_empty() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = usize::try_from(msg.header.length).unwrap_or(usize::MAX);
                if len == 0 || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "bad netlink length",
                    ));
                }
                rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            Some(_) => Err(e.to_io()),
                            None => Ok(out),
                        };
                    }
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
        }
    }
}

fn message(ifindex: u32, vip: &VirtualAddress) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = match vip.addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.prefix_len = vip.prefix_len;
    m.header.index = ifindex;
    if vip.addr.is_ipv4() {
        m.attributes.push(AddressAttribute::Local(vip.addr));
    }
    m.attributes.push(AddressAttribute::Address(vip.addr));
    m
}

// === announcements ===

/// EtherType of ARP.
const ETH_P_ARP: u16 = 0x0806;

/// A gratuitous ARP request for `vip` from `mac`, as Keepalived sends it: opcode 1 (request),
/// sender and target IP both the VIP, target MAC ff:ff:ff:ff:ff:ff. Without the Ethernet header
/// (the AF_PACKET datagram socket adds it).
pub fn garp(mac: [u8; 6], vip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&1u16.to_be_bytes()); // request
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&vip.octets());
    p[18..24].copy_from_slice(&[0xff; 6]);
    p[24..28].copy_from_slice(&vip.octets());
    p
}

/// An unsolicited neighbour advertisement for `target` (RFC 4861 §7.2.6): ICMPv6 type 136,
/// Override set, Solicited clear, with the target link-layer address option. The kernel fills the
/// ICMPv6 checksum.
pub fn unsolicited_na(mac: [u8; 6], target: Ipv6Addr) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = 136;
    p[4] = 0x20; // O flag
    p[8..24].copy_from_slice(&target.octets());
    p[24] = 2; // target link-layer address
    p[25] = 1; // length in units of 8 bytes
    p[26..32].copy_from_slice(&mac);
    p
}

/// Sends gratuitous ARPs and unsolicited NAs out of one interface.
#[derive(Debug)]
pub struct Announcer {
    ifindex: u32,
    mac: [u8; 6],
    arp: Option<Socket>,
    icmp6: Option<Socket>,
}

impl Announcer {
    /// Opens the sockets needed for `vips` on `interface`.
    ///
    /// # Errors
    /// When a socket cannot be opened (needs CAP_NET_RAW) or the interface has no MAC.
    pub fn open(interface: &str, ifindex: u32, vips: &[VirtualAddress]) -> io::Result<Announcer> {
        let mac = mac(interface).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "interface has no MAC address")
        })?;
        let arp = if vips.iter().any(|v| v.addr.is_ipv4()) {
            // Protocol 0: a send-only packet socket (it is given no frames to queue); the
            // EtherType of each frame comes from the destination address.
            let s = Socket::new(Domain::PACKET, Type::DGRAM, Some(Protocol::from(0)))?;
            s.set_nonblocking(true)?;
            Some(s)
        } else {
            None
        };
        let icmp6 = if vips.iter().any(|v| v.addr.is_ipv6()) {
            let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
            s.set_multicast_hops_v6(255)?;
            s.set_unicast_hops_v6(255)?;
            s.set_multicast_if_v6(ifindex)?;
            s.bind_device(Some(interface.as_bytes()))?;
            // Send-only: the smallest receive buffer, as nothing ever reads the ICMPv6 traffic
            // queued to a raw socket.
            s.set_recv_buffer_size(0)?;
            s.set_nonblocking(true)?;
            Some(s)
        } else {
            None
        };
        Ok(Announcer {
            ifindex,
            mac,
            arp,
            icmp6,
        })
    }

    /// One announcement per address.
    ///
    /// # Errors
    /// The first send that failed (the others are still tried).
    pub fn announce(&self, vips: &[VirtualAddress]) -> io::Result<()> {
        let mut result = Ok(());
        for v in vips {
            let r = match v.addr {
                IpAddr::V4(a) => match &self.arp {
                    Some(s) => {
                        let to = packet_addr(self.ifindex, ETH_P_ARP, [0xff; 6]);
                        s.send_to(&garp(self.mac, a), &to).map(drop)
                    }
                    None => Ok(()),
                },
                IpAddr::V6(a) => match &self.icmp6 {
                    Some(s) => {
                        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
                        let to = std::net::SocketAddrV6::new(all_nodes, 0, 0, self.ifindex);
                        s.send_to(&unsolicited_na(self.mac, a), &to.into())
                            .map(drop)
                    }
                    None => Ok(()),
                },
            };
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// A `sockaddr_ll` for sending to `dst` on interface `ifindex` with EtherType `protocol`.
/// socket2 has no safe constructor for link-layer addresses, so this builds one in the storage.
#[allow(unsafe_code)]
fn packet_addr(ifindex: u32, protocol: u16, dst: [u8; 6]) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `SockAddrStorage` is a `sockaddr_storage`, which is larger than and at least as
    // aligned as `sockaddr_ll`, and all-zero bytes are a valid `sockaddr_ll`.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as u16;
    ll.sll_protocol = protocol.to_be();
    ll.sll_ifindex = i32::try_from(ifindex).unwrap_or(0);
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&dst);
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the storage holds an initialised `sockaddr_ll` of family AF_PACKET, and `len` is
    // its size.
    unsafe { SockAddr::new(storage, len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_matches_keepalived_capture() {
        // captures/vrrpv2-garp: the ARP part of the frame.
        let want = "000108000604000102000a63000b0a630032ffffffffffff0a630032";
        let got: String = garp([2, 0, 0x0a, 0x63, 0, 0x0b], Ipv4Addr::new(10, 99, 0, 50))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn na_has_override_and_target_option() {
        let na = unsolicited_na([2, 0, 0, 0, 0, 1], "fd99::50".parse().expect("addr"));
        assert_eq!(na[0], 136);
        assert_eq!(na[4], 0x20);
        assert_eq!(&na[26..32], &[2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn loopback_is_up_and_unknown_interfaces_are_not() {
        assert!(ifindex("lo").is_ok());
        assert!(link_up("lo"));
        assert!(!link_up("no-such-if0"));
        assert!(ifindex("no-such-if0").is_err());
    }
}
