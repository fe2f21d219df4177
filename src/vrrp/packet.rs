//! The VRRP advertisement on the wire: encode and decode VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798),
//! checksums included, and the checks a receiver makes before the state machine sees a packet.
//!
//! Pure functions, no I/O. Every way a packet can be refused is a [`DropReason`], so the socket
//! task counts drops by reason and nothing that arrives from the network can panic.
//!
//! Layouts (after the IPv4 or IPv6 header):
//!
//! ```text
//! v2: |ver=2|type=1| VRID | priority | count | auth type | adver int (s)  | checksum |
//!     | count × IPv4 address | 8 bytes authentication data (the PASS password, NUL padded) |
//! v3: |ver=3|type=1| VRID | priority | count | rsvd(4) max adver int (12, cs) | checksum |
//!     | count × IPv4 or IPv6 address |
//! ```
//!
//! Checksums: v2 covers the VRRP message only. v3 adds a pseudo-header (RFC 5798 §5.2.8): for
//! IPv6 the RFC 2460 one (src, dst, 32-bit length, next header 112); for IPv4 Keepalived (and
//! ballast) send the RFC 768-style one (src, dst, 0, 112, length). Some routers send IPv4 v3
//! without a pseudo-header, so on receive either is accepted for IPv4.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of VRRP.
pub const PROTO: u8 = 112;
/// The IPv4 multicast group adverts go to.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 multicast group adverts go to.
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The only TTL / hop limit a receiver accepts (RFC 5798 §5.1.1.3), and the one ballast sends.
pub const TTL: u8 = 255;
/// Length of the v2 authentication data.
pub const AUTH_LEN: usize = 8;
/// Fixed header length of both versions.
const HEADER_LEN: usize = 8;

/// VRRP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// RFC 3768: IPv4 only, whole-second intervals, an 8-byte authentication field.
    V2,
    /// RFC 5798: IPv4 and IPv6, centisecond intervals.
    V3,
}

impl Version {
    /// The number in the version nibble.
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// The v2 authentication field. Its `Debug` does not show the password.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Auth type 0: the 8 bytes are zero.
    None,
    /// Auth type 1 (Keepalived `auth_type PASS`): a password of up to 8 bytes, NUL padded.
    Pass([u8; AUTH_LEN]),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Pass(_) => f.write_str("Pass(<redacted>)"),
        }
    }
}

impl Auth {
    /// A PASS password as Keepalived stores it: the first 8 bytes, NUL padded.
    pub fn pass(password: &str) -> Auth {
        let mut bytes = [0u8; AUTH_LEN];
        for (b, p) in bytes.iter_mut().zip(password.bytes()) {
            *b = p;
        }
        Auth::Pass(bytes)
    }

    fn type_byte(&self) -> u8 {
        match self {
            Auth::None => 0,
            Auth::Pass(_) => 1,
        }
    }
}

/// A decoded advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// Protocol version.
    pub version: Version,
    /// Virtual router id, 1..=255.
    pub vrid: u8,
    /// Sender's priority: 255 address owner, 0 master resigning.
    pub priority: u8,
    /// Advertisement interval in wire units: whole seconds (v2) or centiseconds (v3, 12 bits).
    pub interval: u16,
    /// The virtual addresses carried, all of one family.
    pub addrs: Vec<IpAddr>,
    /// v2 authentication; always [`Auth::None`] for v3.
    pub auth: Auth,
}

impl Advert {
    /// The advertisement interval in centiseconds, whatever the version.
    pub fn interval_cs(&self) -> u32 {
        match self.version {
            Version::V2 => u32::from(self.interval) * 100,
            Version::V3 => u32::from(self.interval),
        }
    }
}

/// Why a received packet was dropped. Counted per reason; see [`DropReason::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than an IP header, or than the VRRP header, or than its own address count says.
    Truncated,
    /// The IPv4 header is malformed (version, header length, total length).
    IpHeader,
    /// The IP protocol is not 112.
    Protocol,
    /// TTL / hop limit is not 255: the packet may have been forwarded by a router.
    Ttl,
    /// The version nibble is not the instance's version.
    Version,
    /// The type nibble is not 1 (ADVERTISEMENT).
    Type,
    /// The VRRP length does not match the address count (plus the v2 authentication data).
    Length,
    /// The checksum is wrong.
    Checksum,
    /// A v2 packet over IPv6, or the addresses are of the other family.
    Family,
    /// No instance here has this virtual router id.
    Vrid,
    /// v2: the authentication type differs from the instance's.
    AuthType,
    /// v2: the PASS password differs.
    AuthPassword,
    /// The address count differs from the instance's `virtual_ipaddress` list.
    AddressCount,
    /// The address list differs from the instance's `virtual_ipaddress` list.
    AddressList,
    /// The advertisement interval is 0, or (v2) differs from the instance's `advert_int`.
    Interval,
    /// The packet came from one of this node's own addresses (a looped-back multicast).
    Own,
    /// With `unicast_peer`: the sender is not one of the configured peers.
    Peer,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 17] = [
        DropReason::Truncated,
        DropReason::IpHeader,
        DropReason::Protocol,
        DropReason::Ttl,
        DropReason::Version,
        DropReason::Type,
        DropReason::Length,
        DropReason::Checksum,
        DropReason::Family,
        DropReason::Vrid,
        DropReason::AuthType,
        DropReason::AuthPassword,
        DropReason::AddressCount,
        DropReason::AddressList,
        DropReason::Interval,
        DropReason::Own,
        DropReason::Peer,
    ];

    /// Position in [`DropReason::ALL`].
    pub fn index(self) -> usize {
        DropReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or_default()
    }

    /// A short name for logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::IpHeader => "ip_header",
            DropReason::Protocol => "protocol",
            DropReason::Ttl => "ttl",
            DropReason::Version => "version",
            DropReason::Type => "type",
            DropReason::Length => "length",
            DropReason::Checksum => "checksum",
            DropReason::Family => "family",
            DropReason::Vrid => "vrid",
            DropReason::AuthType => "auth_type",
            DropReason::AuthPassword => "auth_password",
            DropReason::AddressCount => "address_count",
            DropReason::AddressList => "address_list",
            DropReason::Interval => "interval",
            DropReason::Own => "own",
            DropReason::Peer => "peer",
        }
    }
}

// === encode ===

/// Encodes `advert` as sent from `src` to `dst` (the addresses only feed the v3 pseudo-header).
/// Addresses of the wrong family for `src` are skipped rather than sent malformed; v3 intervals
/// are masked to 12 bits.
pub fn encode(advert: &Advert, src: IpAddr, dst: IpAddr) -> Vec<u8> {
    let addrs: Vec<IpAddr> = advert
        .addrs
        .iter()
        .copied()
        .filter(|a| a.is_ipv4() == src.is_ipv4())
        .collect();
    let mut out = Vec::with_capacity(HEADER_LEN + addrs.len() * 16 + AUTH_LEN);
    out.push((advert.version.number() << 4) | 1);
    out.push(advert.vrid);
    out.push(advert.priority);
    out.push(u8::try_from(addrs.len()).unwrap_or(u8::MAX));
    match advert.version {
        Version::V2 => {
            out.push(advert.auth.type_byte());
            out.push(u8::try_from(advert.interval).unwrap_or(u8::MAX));
        }
        Version::V3 => out.extend_from_slice(&(advert.interval & 0x0fff).to_be_bytes()),
    }
    out.extend_from_slice(&[0, 0]);
    for a in addrs.iter().take(usize::from(u8::MAX)) {
        match a {
            IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
        }
    }
    if advert.version == Version::V2 {
        match advert.auth {
            Auth::None => out.extend_from_slice(&[0; AUTH_LEN]),
            Auth::Pass(p) => out.extend_from_slice(&p),
        }
    }
    let sum = match advert.version {
        Version::V2 => checksum(&[&out]),
        Version::V3 => checksum(&[&pseudo_header(src, dst, out.len()), &out]),
    };
    out[6..8].copy_from_slice(&sum.to_be_bytes());
    out
}

// === decode ===

/// Decodes the VRRP message `msg` that arrived from `src` to `dst` (the IP payload; the TTL is
/// checked by the caller, see [`Ipv4Packet`]).
///
/// # Errors
/// The first [`DropReason`] that applies, checked in the order a receiver must (RFC 5798 §7.1):
/// size, version, type, length, checksum, family, interval.
pub fn decode(msg: &[u8], src: IpAddr, dst: IpAddr) -> Result<Advert, DropReason> {
    if msg.len() < HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    let version = match msg[0] >> 4 {
        2 => Version::V2,
        3 => Version::V3,
        _ => return Err(DropReason::Version),
    };
    if msg[0] & 0x0f != 1 {
        return Err(DropReason::Type);
    }
    if version == Version::V2 && !src.is_ipv4() {
        return Err(DropReason::Family);
    }
    let count = usize::from(msg[3]);
    let addr_len = if src.is_ipv4() { 4 } else { 16 };
    let auth_len = if version == Version::V2 { AUTH_LEN } else { 0 };
    let want = HEADER_LEN + count * addr_len + auth_len;
    if msg.len() < want {
        return Err(DropReason::Truncated);
    }
    if msg.len() != want {
        return Err(DropReason::Length);
    }
    let valid = match (version, src) {
        (Version::V2, _) => checksum(&[msg]) == 0,
        (Version::V3, IpAddr::V4(_)) => {
            checksum(&[&pseudo_header(src, dst, msg.len()), msg]) == 0 || checksum(&[msg]) == 0
        }
        (Version::V3, IpAddr::V6(_)) => checksum(&[&pseudo_header(src, dst, msg.len()), msg]) == 0,
    };
    if !valid {
        return Err(DropReason::Checksum);
    }
    let interval = match version {
        Version::V2 => u16::from(msg[5]),
        // The top four bits are reserved: sent as 0, ignored on receipt.
        Version::V3 => u16::from_be_bytes([msg[4], msg[5]]) & 0x0fff,
    };
    if interval == 0 {
        return Err(DropReason::Interval);
    }
    let body = &msg[HEADER_LEN..HEADER_LEN + count * addr_len];
    let addrs = body
        .chunks_exact(addr_len)
        .map(|c| match <[u8; 4]>::try_from(c) {
            Ok(b) => IpAddr::V4(Ipv4Addr::from(b)),
            Err(_) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(c).unwrap_or([0; 16]))),
        })
        .collect();
    let auth = match version {
        Version::V3 => Auth::None,
        Version::V2 => {
            let mut data = [0u8; AUTH_LEN];
            data.copy_from_slice(&msg[want - AUTH_LEN..want]);
            match msg[4] {
                0 => Auth::None,
                1 => Auth::Pass(data),
                _ => return Err(DropReason::AuthType),
            }
        }
    };
    Ok(Advert {
        version,
        vrid: msg[1],
        priority: msg[2],
        interval,
        addrs,
        auth,
    })
}

/// What an instance expects of every advert for its VRID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// The instance's version.
    pub version: Version,
    /// The instance's VRID.
    pub vrid: u8,
    /// v2 authentication (type and password must match); ignored for v3.
    pub auth: Auth,
    /// The instance's virtual addresses of the advert's family, in any order.
    pub addrs: Vec<IpAddr>,
    /// v2: the instance's interval in seconds; adverts with another are dropped (as RFC 3768
    /// §7.1 and Keepalived do). v3 adopts the master's interval instead, so it is not checked.
    pub interval_v2: u16,
}

/// Checks a decoded advert against the instance it is for.
///
/// # Errors
/// The [`DropReason`] for the first mismatch.
pub fn check(advert: &Advert, expect: &Expect) -> Result<(), DropReason> {
    if advert.version != expect.version {
        return Err(DropReason::Version);
    }
    if advert.vrid != expect.vrid {
        return Err(DropReason::Vrid);
    }
    if advert.version == Version::V2 {
        match (&advert.auth, &expect.auth) {
            (Auth::None, Auth::None) => {}
            (Auth::Pass(got), Auth::Pass(want)) => {
                if !constant_time_eq(got, want) {
                    return Err(DropReason::AuthPassword);
                }
            }
            _ => return Err(DropReason::AuthType),
        }
        if advert.interval != expect.interval_v2 {
            return Err(DropReason::Interval);
        }
    }
    if advert.addrs.len() != expect.addrs.len() {
        return Err(DropReason::AddressCount);
    }
    if !advert.addrs.iter().all(|a| expect.addrs.contains(a)) {
        return Err(DropReason::AddressList);
    }
    Ok(())
}

/// Compares passwords without an early exit, as Keepalived does (`memcmp_constant_time`).
fn constant_time_eq(a: &[u8; AUTH_LEN], b: &[u8; AUTH_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// === IPv4 header ===

/// The parts of a received IPv4 packet a VRRP receiver needs (a raw IPv4 socket delivers the
/// header with the payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<'a> {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Time to live.
    pub ttl: u8,
    /// Protocol number.
    pub protocol: u8,
    /// The payload, cut to the header's total length (frames may be padded).
    pub payload: &'a [u8],
}

/// Parses an IPv4 header and returns the payload it frames.
///
/// # Errors
/// [`DropReason::Truncated`] or [`DropReason::IpHeader`] when the header is unusable.
pub fn parse_ipv4(buf: &[u8]) -> Result<Ipv4Packet<'_>, DropReason> {
    if buf.len() < 20 {
        return Err(DropReason::Truncated);
    }
    if buf[0] >> 4 != 4 {
        return Err(DropReason::IpHeader);
    }
    let ihl = usize::from(buf[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if ihl < 20 || total < ihl {
        return Err(DropReason::IpHeader);
    }
    if buf.len() < total {
        return Err(DropReason::Truncated);
    }
    let octets = |at: usize| [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    Ok(Ipv4Packet {
        src: Ipv4Addr::from(octets(12)),
        dst: Ipv4Addr::from(octets(16)),
        ttl: buf[8],
        protocol: buf[9],
        payload: &buf[ihl..total],
    })
}

// === checksums ===

/// The v3 pseudo-header for `len` bytes of VRRP from `src` to `dst`. Mixed families (which a
/// caller never passes) give an empty pseudo-header.
fn pseudo_header(src: IpAddr, dst: IpAddr, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.push(0);
            p.push(PROTO);
            p.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, PROTO]);
        }
        _ => {}
    }
    p
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`: the one's complement of
/// the one's-complement sum of 16-bit words. Over data that already holds a correct checksum it
/// is 0. Parts other than the last must have even length (the pseudo-headers do).
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
