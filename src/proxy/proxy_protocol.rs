//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2): a header a proxy puts in
//! front of a TCP stream to tell the next hop who the original client was.
//!
//! This module owns the codec and two async helpers, and nothing else:
//!
//! * [`encode`] / [`write_header`]: build a v1 text line or a v2 binary header for `source ->
//!   destination` (what ballast sends to a server that wants the client's address).
//! * [`parse`] / [`read_header`]: recognise one header at the start of a client stream (what
//!   ballast accepts from a load balancer in front of it). [`parse`] is pure and incremental: it
//!   says "complete", "need more bytes" or "can never be valid" for any prefix of a stream, and it
//!   refuses non-PROXY data as soon as a signature byte differs.
//! * [`TrustedSources`]: the CIDR list of peers whose headers are believed.
//!
//! It does not decide *whether* a listener expects a header, nor what to do with the addresses
//! (logging, `sh` scheduling, passing them on): that is wiring in [`super::tcp`] and the config.
//!
//! # The read path
//!
//! ```text
//! peek (536-byte stack buffer) ─▶ parse ─┬─ complete ─▶ read_exact(header length) ─▶ header
//!        ▲                               ├─ error ────▶ ProxyHeaderError (counted by reason())
//!        └── read_exact(what was peeked; all of it is header) ◀── need more ──┘
//! ```
//!
//! No byte after the header is ever consumed, so the relay that follows sees the client's data
//! unchanged. A v2 header longer than the stack buffer (TLVs, up to 16 + 65535 bytes) is the only
//! case that allocates, once, exactly the declared length. The whole read runs under one deadline.
//!
//! # Why hand-written
//!
//! The protocol is small (two fixed layouts and one text line) and crates.io has several codecs;
//! none fits the data path as it is:
//!
//! * `proxy-header` (v1 + v2, parse borrows the input, encode to `io::Write`) is the closest, but
//!   its error folds almost every refusal into one `Invalid` variant, and refusals are counted by
//!   reason here (STYLE 2.4, 2.7).
//! * `ppp` (v1 + v2, parse borrows the input, detailed errors) builds v2 headers with a `Builder`
//!   whose `build()` returns a new `Vec` per header.
//! * `proxy-protocol` (snafu 0.6, consumes from a `bytes` buffer) and `proxy-protocol-rs` (its
//!   header builder panics when the two addresses' families differ) fit less well still.
//!
//! Whichever codec is used, the peek / read-exactly-the-header loop below is ours, and that is most
//! of the subtle part. The codec itself is ~300 lines here, fuzzed in the tests, with no new
//! dependency.
//!
//! Not supported, by choice: AF_UNIX addresses in v2 (refused as
//! [`ProxyHeaderError::UnsupportedFamily`]; they cannot be expressed as a `SocketAddr`), and TLV
//! contents (skipped after checking that they fit; the CRC32C TLV is not verified).

use std::fmt;
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The v1 signature: `PROXY` and one space.
const V1_SIGNATURE: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included (spec §2.1: 107 bytes for `TCP6` with the longest
/// addresses and ports).
pub const V1_MAX_LEN: usize = 107;
/// The v2 signature (spec §2.2).
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\x00\r\nQUIT\n";
/// Signature, version/command, family/transport and the 2-byte length.
const V2_FIXED_LEN: usize = 16;
/// The longest v2 header: the fixed part and the largest length the 16-bit field can declare.
pub const V2_MAX_LEN: usize = V2_FIXED_LEN + u16::MAX as usize;
/// The stack buffer `read_header` peeks into first; HAProxy uses the same size (a v1 header always
/// fits, a v2 header fits unless it carries more than 520 bytes of addresses and TLVs).
const PEEK_BUF_LEN: usize = 536;
/// Address block of a v2 AF_INET header: two IPv4 addresses and two ports.
const V2_INET_LEN: usize = 12;
/// Address block of a v2 AF_INET6 header: two IPv6 addresses and two ports.
const V2_INET6_LEN: usize = 36;

/// What a PROXY header says about the original connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The connection was relayed on behalf of a client.
    Proxied {
        /// The original client's address.
        source: SocketAddr,
        /// The address the client connected to (on the proxy in front of us).
        destination: SocketAddr,
    },
    /// v2 `LOCAL` (e.g. the proxy's own health check), v2 `AF_UNSPEC`, or v1 `UNKNOWN`: the
    /// header carries no addresses to believe; use the real socket addresses.
    Local,
}

impl ProxyHeader {
    /// The client address to use: the header's source if it has one, `peer` (the socket's real
    /// peer) otherwise.
    pub fn source_or(self, peer: SocketAddr) -> SocketAddr {
        match self {
            Self::Proxied { source, .. } => source,
            Self::Local => peer,
        }
    }
}

/// Which version of the protocol to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text line, `PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n`; readable, up to 107 bytes.
    V1,
    /// The binary header: 16 fixed bytes and the address block (28 bytes for IPv4, 52 for IPv6).
    V2,
}

/// Why a PROXY header was refused, or could not be read.
///
/// `Copy` and allocation-free so the data path can count it; [`reason`](Self::reason) is the
/// counter label, `Display` the log message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The stream starts with neither signature (v1 `PROXY ` nor the 12-byte v2 one).
    #[error("the connection does not start with a PROXY protocol header (v1 `PROXY ` or the v2 signature)")]
    NotProxyProtocol,
    /// A v1 line with no CRLF within its first 107 bytes.
    #[error("PROXY v1 header has no CRLF within 107 bytes")]
    TooLong,
    /// A v1 line that does not follow the grammar, including a missing or broken CRLF.
    #[error("PROXY v1 header is not `PROXY TCP4|TCP6 <src> <dst> <src port> <dst port>\\r\\n` or `PROXY UNKNOWN...\\r\\n`")]
    BadV1Syntax,
    /// A v1 address that does not parse, or is of the wrong family for `TCP4`/`TCP6`.
    #[error("PROXY v1 header has an address that is not valid for its family (TCP4 takes IPv4, TCP6 takes IPv6)")]
    BadAddress,
    /// A v1 port that is not a decimal number from 0 to 65535.
    #[error("PROXY v1 header has a port that is not a decimal number from 0 to 65535")]
    BadPort,
    /// A v2 version nibble other than 2 (the nibble is given).
    #[error("PROXY v2 header has version {0}; only 2 exists")]
    UnsupportedVersion(u8),
    /// A v2 command other than LOCAL (0) or PROXY (1) (the command is given).
    #[error("PROXY v2 header has command {0}; allowed are 0 (LOCAL) and 1 (PROXY)")]
    UnknownCommand(u8),
    /// A v2 family/transport byte other than UNSPEC, TCP or UDP over IPv4 or IPv6 (the byte is
    /// given; AF_UNIX, 0x31 and 0x32, lands here too).
    #[error("PROXY v2 header has family/transport byte {0:#04x}; allowed are 0x00, 0x11, 0x12, 0x21 and 0x22")]
    UnsupportedFamily(u8),
    /// A v2 length shorter than its family's address block (12 bytes for IPv4, 36 for IPv6).
    #[error("PROXY v2 header length is shorter than its family's address block")]
    AddressBlockTooShort,
    /// A v2 TLV that runs past the header's declared length.
    #[error("PROXY v2 header has a TLV that runs past the declared length")]
    BadTlv,
    /// The peer closed the connection before a complete header arrived.
    #[error("the peer closed the connection before sending a complete PROXY header")]
    ClosedEarly,
    /// No complete header arrived before the deadline.
    #[error("no complete PROXY header arrived before the deadline")]
    Timeout,
    /// Reading the socket failed (e.g. a reset) with this kind of error.
    #[error("reading the PROXY header failed: {0}")]
    Io(io::ErrorKind),
}

impl ProxyHeaderError {
    /// A short snake_case label for counters, one per variant.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotProxyProtocol => "not_proxy_protocol",
            Self::TooLong => "too_long",
            Self::BadV1Syntax => "bad_v1_syntax",
            Self::BadAddress => "bad_address",
            Self::BadPort => "bad_port",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::UnknownCommand(_) => "unknown_command",
            Self::UnsupportedFamily(_) => "unsupported_family",
            Self::AddressBlockTooShort => "address_block_too_short",
            Self::BadTlv => "bad_tlv",
            Self::ClosedEarly => "closed_early",
            Self::Timeout => "timeout",
            Self::Io(_) => "io_error",
        }
    }
}

// === encoding ===

/// An encoded header in a stack buffer (the longest, v1 `TCP6`, is 104 bytes).
struct Encoded {
    buf: [u8; V1_MAX_LEN],
    len: usize,
}

impl Encoded {
    fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// `ip` as IPv6, mapping IPv4 to `::ffff:a.b.c.d`.
fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// Encodes a header into a stack buffer; [`encode`] and [`write_header`] copy or send it.
fn encode_fixed(version: Version, source: SocketAddr, destination: SocketAddr) -> Encoded {
    let mut out = Encoded {
        buf: [0; V1_MAX_LEN],
        len: 0,
    };
    let v4 = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some((s, d)),
        _ => None,
    };
    let mut w: &mut [u8] = &mut out.buf;
    // Writes into a slice fail only when it is full; 107 bytes hold the longest header of either
    // version, so the results are checked in debug builds only.
    match version {
        Version::V1 => {
            let r = match v4 {
                Some((s, d)) => write!(w, "PROXY TCP4 {s} {d} "),
                None => write!(
                    w,
                    "PROXY TCP6 {} {} ",
                    to_v6(source.ip()),
                    to_v6(destination.ip())
                ),
            }
            .and_then(|()| write!(w, "{} {}\r\n", source.port(), destination.port()));
            debug_assert!(r.is_ok(), "a v1 header fits in 107 bytes");
        }
        Version::V2 => {
            let r = w.write_all(V2_SIGNATURE).and_then(|()| match v4 {
                Some((s, d)) => {
                    w.write_all(&[0x21, 0x11])?;
                    w.write_all(&(V2_INET_LEN as u16).to_be_bytes())?;
                    w.write_all(&s.octets())?;
                    w.write_all(&d.octets())
                }
                None => {
                    w.write_all(&[0x21, 0x21])?;
                    w.write_all(&(V2_INET6_LEN as u16).to_be_bytes())?;
                    w.write_all(&to_v6(source.ip()).octets())?;
                    w.write_all(&to_v6(destination.ip()).octets())
                }
            });
            let r = r
                .and_then(|()| w.write_all(&source.port().to_be_bytes()))
                .and_then(|()| w.write_all(&destination.port().to_be_bytes()));
            debug_assert!(r.is_ok(), "a v2 header fits in 107 bytes");
        }
    }
    out.len = V1_MAX_LEN - w.len();
    out
}

/// Appends a header for `source -> destination` to `out`: a v1 text line or a v2 binary header
/// with the PROXY command over TCP.
///
/// When both addresses are IPv4 the header is `TCP4` / `AF_INET`; otherwise both are sent as IPv6,
/// an IPv4 one as its v4-mapped form `::ffff:a.b.c.d` (v1 `TCP6`, v2 `AF_INET6`). Addresses are
/// sent as given: a pair of v4-mapped IPv6 addresses (from a dual-stack socket) stays IPv6.
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(encode_fixed(version, source, destination).as_bytes());
}

/// Writes a header for `source -> destination` to `stream` (see [`encode`]); nothing is allocated.
///
/// # Errors
///
/// The stream's write error.
pub async fn write_header(
    stream: &mut TcpStream,
    version: Version,
    source: SocketAddr,
    destination: SocketAddr,
) -> io::Result<()> {
    let header = encode_fixed(version, source, destination);
    stream.write_all(header.as_bytes()).await
}

// === parsing ===

/// Parses a header at the start of `buf`.
///
/// Returns `Ok(Some((header, consumed)))` when `buf` starts with a complete, valid header of
/// `consumed` bytes (what follows is the client's data), `Ok(None)` when `buf` is a valid prefix
/// of a header and more bytes are needed, and an error as soon as the bytes seen can never start
/// a valid header. Data that is not PROXY protocol at all is refused by its first byte that
/// differs from both signatures, so at most 12 bytes are ever needed to tell.
///
/// # Errors
///
/// Every variant of [`ProxyHeaderError`] except `ClosedEarly`, `Timeout` and `Io`.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    type Rest = fn(&[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError>;
    let (signature, parse_rest): (&[u8], Rest) = match buf.first() {
        None => return Ok(None),
        Some(b'P') => (V1_SIGNATURE, parse_v1),
        Some(b'\r') => (V2_SIGNATURE, parse_v2),
        Some(_) => return Err(ProxyHeaderError::NotProxyProtocol),
    };
    if !buf.iter().zip(signature).all(|(a, b)| a == b) {
        return Err(ProxyHeaderError::NotProxyProtocol);
    }
    if buf.len() < signature.len() {
        return Ok(None);
    }
    parse_rest(buf)
}

/// Bytes a v1 line may hold before its CRLF: protocol names, decimal and hex digits, `.`, `:` and
/// the separating spaces. Anything else (a lone LF, a `/` of a request line) is refused at once.
fn is_v1_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b':' || b == b' '
}

/// Parses a v1 line; `buf` starts with the full v1 signature.
fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    let window = buf.get(..V1_MAX_LEN).unwrap_or(buf);
    let start = V1_SIGNATURE.len();
    for (i, &b) in window.iter().enumerate().skip(start) {
        if b == b'\r' {
            return match window.get(i + 1) {
                Some(b'\n') => {
                    let line = window.get(start..i).unwrap_or_default();
                    parse_v1_line(line).map(|header| Some((header, i + 2)))
                }
                Some(_) => Err(ProxyHeaderError::BadV1Syntax),
                // The LF would be byte 108.
                None if window.len() >= V1_MAX_LEN => Err(ProxyHeaderError::TooLong),
                None => Ok(None),
            };
        }
        if !is_v1_char(b) {
            return Err(ProxyHeaderError::BadV1Syntax);
        }
    }
    if window.len() >= V1_MAX_LEN {
        Err(ProxyHeaderError::TooLong)
    } else {
        Ok(None)
    }
}

/// Parses what lies between `PROXY ` and CRLF.
fn parse_v1_line(line: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    let line = std::str::from_utf8(line).map_err(|_| ProxyHeaderError::BadV1Syntax)?;
    let mut fields = line.split(' ');
    let ipv4 = match fields.next() {
        // Spec §2.1: after UNKNOWN the receiver ignores everything up to CRLF.
        Some("UNKNOWN") => return Ok(ProxyHeader::Local),
        Some("TCP4") => true,
        Some("TCP6") => false,
        _ => return Err(ProxyHeaderError::BadV1Syntax),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyHeaderError::BadV1Syntax);
    };
    if [src, dst, sport, dport].iter().any(|f| f.is_empty()) {
        return Err(ProxyHeaderError::BadV1Syntax);
    }
    let ip = |s: &str| -> Result<IpAddr, ProxyHeaderError> {
        let ip = if ipv4 {
            Ipv4Addr::from_str(s).map(IpAddr::V4)
        } else {
            Ipv6Addr::from_str(s).map(IpAddr::V6)
        };
        ip.map_err(|_| ProxyHeaderError::BadAddress)
    };
    Ok(ProxyHeader::Proxied {
        source: SocketAddr::new(ip(src)?, parse_port(sport)?),
        destination: SocketAddr::new(ip(dst)?, parse_port(dport)?),
    })
}

/// A v1 port: 1 to 5 decimal digits, at most 65535 (no sign, unlike `u16::from_str`).
fn parse_port(s: &str) -> Result<u16, ProxyHeaderError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyHeaderError::BadPort);
    }
    s.parse::<u16>().map_err(|_| ProxyHeaderError::BadPort)
}

/// Parses a v2 header; `buf` starts with the full v2 signature.
fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    // Each byte is checked as soon as it is there, so a bad header is refused without waiting for
    // the rest of it.
    let Some(&ver_cmd) = buf.get(12) else {
        return Ok(None);
    };
    if ver_cmd >> 4 != 2 {
        return Err(ProxyHeaderError::UnsupportedVersion(ver_cmd >> 4));
    }
    let local = match ver_cmd & 0x0F {
        0 => true,
        1 => false,
        command => return Err(ProxyHeaderError::UnknownCommand(command)),
    };
    let Some(&family) = buf.get(13) else {
        return Ok(None);
    };
    // Spec §2.2: with LOCAL "the receiver must ... discard the protocol block including the
    // family", so the family byte is only checked for PROXY.
    let address_len = match (local, family) {
        (true, _) | (false, 0x00) => 0,
        (false, 0x11 | 0x12) => V2_INET_LEN,
        (false, 0x21 | 0x22) => V2_INET6_LEN,
        (false, other) => return Err(ProxyHeaderError::UnsupportedFamily(other)),
    };
    let (Some(&hi), Some(&lo)) = (buf.get(14), buf.get(15)) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len < address_len {
        return Err(ProxyHeaderError::AddressBlockTooShort);
    }
    let total = V2_FIXED_LEN + len;
    let Some(block) = buf.get(V2_FIXED_LEN..total) else {
        return Ok(None);
    };
    if address_len == 0 {
        // LOCAL, or PROXY with AF_UNSPEC: "the receiver is free to accept the connection anyway
        // and use the real endpoint addresses"; the block is ignored whole.
        return Ok(Some((ProxyHeader::Local, total)));
    }
    let (addresses, tlvs) = block
        .split_at_checked(address_len)
        .ok_or(ProxyHeaderError::AddressBlockTooShort)?;
    let header = decode_addresses(addresses).ok_or(ProxyHeaderError::AddressBlockTooShort)?;
    skip_tlvs(tlvs)?;
    Ok(Some((header, total)))
}

/// `N` bytes of `bytes` from `at`, if there are that many.
fn array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Decodes a 12-byte (IPv4) or 36-byte (IPv6) address block: source, destination, source port,
/// destination port, all in network byte order.
fn decode_addresses(block: &[u8]) -> Option<ProxyHeader> {
    let (source, destination, ports_at) = if block.len() == V2_INET_LEN {
        let s: [u8; 4] = array(block, 0)?;
        let d: [u8; 4] = array(block, 4)?;
        (IpAddr::from(s), IpAddr::from(d), 8)
    } else {
        let s: [u8; 16] = array(block, 0)?;
        let d: [u8; 16] = array(block, 16)?;
        (IpAddr::from(s), IpAddr::from(d), 32)
    };
    let sport = u16::from_be_bytes(array(block, ports_at)?);
    let dport = u16::from_be_bytes(array(block, ports_at + 2)?);
    Some(ProxyHeader::Proxied {
        source: SocketAddr::new(source, sport),
        destination: SocketAddr::new(destination, dport),
    })
}

/// Walks the TLVs (1-byte type, 2-byte big-endian length, value) after the addresses, checking
/// that each fits; their contents are not used.
fn skip_tlvs(mut rest: &[u8]) -> Result<(), ProxyHeaderError> {
    while !rest.is_empty() {
        let [_kind, hi, lo]: [u8; 3] = array(rest, 0).ok_or(ProxyHeaderError::BadTlv)?;
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        rest = rest.get(3 + len..).ok_or(ProxyHeaderError::BadTlv)?;
    }
    Ok(())
}

// === reading from a stream ===

/// Reads one header (v1 or v2) from `stream`, consuming exactly its bytes, within `timeout`.
///
/// The bytes are peeked first and only the header is read, so the next read on `stream` returns
/// the client's first byte of data. While the header is incomplete, the bytes peeked so far are
/// all header bytes, so they are read out of the socket (otherwise the next peek would return at
/// once with the same bytes and the loop would spin). Nothing is allocated unless a v2 header is
/// longer than 536 bytes.
///
/// # Errors
///
/// A [`ProxyHeaderError`] from [`parse`]; `ClosedEarly` when the peer closes first, `Timeout` when
/// the deadline passes first, `Io` for a socket error. The caller should close the connection.
pub async fn read_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<ProxyHeader, ProxyHeaderError> {
    match tokio::time::timeout(timeout, read_header_inner(stream)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(ProxyHeaderError::Timeout),
    }
}

async fn read_header_inner(stream: &mut TcpStream) -> Result<ProxyHeader, ProxyHeaderError> {
    let io_error = |e: io::Error| ProxyHeaderError::Io(e.kind());
    let mut stack = [0u8; PEEK_BUF_LEN];
    // Only for a v2 header longer than `stack`: exactly its declared length.
    let mut heap: Vec<u8> = Vec::new();
    // Header bytes already read out of the socket, at the start of the buffer.
    let mut have = 0usize;
    loop {
        let buf: &mut [u8] = if heap.is_empty() {
            &mut stack
        } else {
            &mut heap
        };
        let free = buf.get_mut(have..).unwrap_or_default();
        let n = stream.peek(free).await.map_err(io_error)?;
        if n == 0 {
            return Err(ProxyHeaderError::ClosedEarly);
        }
        let seen = have + n;
        match parse(buf.get(..seen).unwrap_or_default())? {
            Some((header, consumed)) => {
                debug_assert!(have < consumed && consumed <= seen);
                let rest = buf.get_mut(have..consumed).unwrap_or_default();
                stream.read_exact(rest).await.map_err(io_error)?;
                return Ok(header);
            }
            None => {
                let peeked = buf.get_mut(have..seen).unwrap_or_default();
                stream.read_exact(peeked).await.map_err(io_error)?;
                have = seen;
                if have == buf.len() {
                    // Only a v2 header can be incomplete at 536 bytes (a v1 one fails at 107),
                    // and one that still is after the heap buffer is a bug; refuse either way.
                    let total = v2_declared_len(buf.get(..have).unwrap_or_default())
                        .filter(|&total| total > have && heap.is_empty())
                        .ok_or(ProxyHeaderError::TooLong)?;
                    heap = vec![0; total];
                    if let (Some(dst), Some(src)) = (heap.get_mut(..have), stack.get(..have)) {
                        dst.copy_from_slice(src);
                    }
                }
            }
        }
    }
}

/// The total length a v2 header at the start of `buf` declares, once its fixed part is there.
fn v2_declared_len(buf: &[u8]) -> Option<usize> {
    let fixed: [u8; V2_FIXED_LEN] = array(buf, 0)?;
    let [.., hi, lo] = fixed;
    buf.starts_with(V2_SIGNATURE)
        .then(|| V2_FIXED_LEN + usize::from(u16::from_be_bytes([hi, lo])))
}

// === trusted sources ===

/// One network whose connections may carry a PROXY header: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address, with every bit after the prefix zero.
    network: IpAddr,
    /// The prefix length, 0..=32 for IPv4 and 0..=128 for IPv6.
    prefix: u8,
}

/// Why a trusted-source entry was refused; `Display` says what is allowed. Copy, no allocation:
/// the caller adds which entry it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The part before `/` is not an IP address.
    #[error("not an IP address or network: expected an address such as `10.0.0.1` or `::1`, or a network such as `10.0.0.0/8` or `fd00::/8`")]
    BadAddress,
    /// The part after `/` is not a number.
    #[error("the prefix length after `/` must be a whole number from 0 to {max}")]
    BadPrefix {
        /// The longest prefix the address's family allows.
        max: u8,
    },
    /// The prefix is longer than the family allows.
    #[error("prefix /{prefix} is too long for an {family} network: allowed are /0 to /{max}")]
    PrefixTooLong {
        /// The prefix given.
        prefix: u16,
        /// The longest prefix the family allows (32 or 128).
        max: u8,
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
    /// The address has bits set after the prefix (`10.1.0.0/8`), which usually hides a typo.
    #[error("the address has bits set after the /{prefix} prefix: write the network address, `{network}/{prefix}`, or a longer prefix")]
    HostBitsSet {
        /// The network address the prefix gives.
        network: IpAddr,
        /// The prefix given.
        prefix: u8,
    },
}

fn mask_v4(ip: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    Ipv4Addr::from(u32::from(ip) & mask)
}

fn mask_v6(ip: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0);
    Ipv6Addr::from(u128::from(ip) & mask)
}

impl Cidr {
    /// Parses one entry: `10.0.0.0/8`, `::1/128`, or a bare address (`127.0.0.1`, meaning /32;
    /// `::1`, meaning /128). Surrounding whitespace is ignored.
    ///
    /// # Errors
    ///
    /// [`CidrError`]: not an address, a prefix that is not a number or too long for the family,
    /// or an address with bits set after the prefix.
    pub fn parse(entry: &str) -> Result<Self, CidrError> {
        let entry = entry.trim();
        let (address, prefix) = match entry.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (entry, None),
        };
        let address = IpAddr::from_str(address).map_err(|_| CidrError::BadAddress)?;
        let (max, family) = match address {
            IpAddr::V4(_) => (32u8, "IPv4"),
            IpAddr::V6(_) => (128u8, "IPv6"),
        };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(CidrError::BadPrefix { max });
                }
                let p = p.parse::<u16>().map_err(|_| CidrError::BadPrefix { max })?;
                u8::try_from(p)
                    .ok()
                    .filter(|&p| p <= max)
                    .ok_or(CidrError::PrefixTooLong {
                        prefix: p,
                        max,
                        family,
                    })?
            }
        };
        let network = match address {
            IpAddr::V4(a) => IpAddr::V4(mask_v4(a, prefix)),
            IpAddr::V6(a) => IpAddr::V6(mask_v6(a, prefix)),
        };
        if network != address {
            return Err(CidrError::HostBitsSet { network, prefix });
        }
        Ok(Self { network, prefix })
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network. An IPv4 network also matches the v4-mapped IPv6 form of
    /// its addresses (`::ffff:10.1.2.3`, as a dual-stack socket reports IPv4 peers); an IPv6
    /// network sees an IPv4 address as its v4-mapped form.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match self.network {
            IpAddr::V4(network) => match ip.to_canonical() {
                IpAddr::V4(a) => mask_v4(a, self.prefix) == network,
                IpAddr::V6(_) => false,
            },
            IpAddr::V6(network) => mask_v6(to_v6(ip), self.prefix) == network,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The peers allowed to send a PROXY header: a list of networks, checked in order.
///
/// A listener that expects headers should refuse a connection from anywhere else before reading,
/// or any client could claim any address. Built once from config; [`contains`](Self::contains)
/// allocates nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedSources {
    /// The networks, in config order.
    networks: Box<[Cidr]>,
}

impl TrustedSources {
    /// A list of the given networks. Parse each entry with [`Cidr::parse`] so that every bad
    /// entry can be reported with its position.
    pub fn new(networks: impl IntoIterator<Item = Cidr>) -> Self {
        Self {
            networks: networks.into_iter().collect(),
        }
    }

    /// Whether `ip` is in any of the networks (see [`Cidr::contains`] for v4-mapped addresses).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// The networks, in the order given.
    pub fn networks(&self) -> &[Cidr] {
        &self.networks
    }

    /// Whether the list is empty (then nobody is trusted).
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }
}

#[cfg(test)]
#[path = "proxy_protocol_tests.rs"]
mod tests;
