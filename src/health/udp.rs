//! The UDP probes: a `udp` check (a datagram out, a reply that contains `expect` back) and a
//! `dns` check (a query for `query_name`, a well-formed answer with the same id back).
//!
//! Each check uses a fresh socket `connect()`ed to the server, so an ICMP port unreachable (no
//! process bound there) comes back as ECONNREFUSED and fails the check at once, with that reason,
//! instead of after `timeout`. The caller ([`super::check::Probe::run`]) bounds the whole check by
//! the check's `timeout`.
//!
//! The DNS query is built by hand (RFC 1035 §4.1: a 12-byte header, one question): it is forty
//! lines, and a resolver crate would bring its own sockets, retries and timeouts that would hide
//! exactly what the check is for.

use std::io;
use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Most bytes read of a reply.
const REPLY_LIMIT: usize = 64 * 1024;

/// Sends `payload` to `addr` and waits for one reply; it must contain `expect` when given.
pub(crate) async fn udp_probe(
    addr: SocketAddr,
    payload: &[u8],
    expect: Option<&[u8]>,
) -> Result<(), String> {
    let reply = exchange(addr, payload).await?;
    match expect {
        Some(needle) if !contains(&reply, needle) => Err(format!(
            "reply does not contain {:?}",
            String::from_utf8_lossy(needle)
        )),
        _ => Ok(()),
    }
}

/// Asks `addr` for `name` (type A, class IN) and checks the answer.
pub(crate) async fn dns_probe(addr: SocketAddr, name: &str) -> Result<(), String> {
    let id = fastrand::u16(..);
    let query = dns_query(id, name).map_err(|e| format!("cannot build the query: {e}"))?;
    let reply = exchange(addr, &query).await?;
    dns_reply_ok(id, &reply)
}

/// One datagram out, one back, on a fresh connected socket.
async fn exchange(addr: SocketAddr, payload: &[u8]) -> Result<Vec<u8>, String> {
    let local: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("cannot open a socket: {e}"))?;
    socket.connect(addr).await.map_err(|e| io_error(&e))?;
    socket.send(payload).await.map_err(|e| io_error(&e))?;
    let mut buf = vec![0u8; REPLY_LIMIT];
    let n = recv(&socket, &mut buf).await.map_err(|e| io_error(&e))?;
    buf.truncate(n);
    Ok(buf)
}

/// `recv`, which also returns a pending socket error (an ICMP port unreachable sets only
/// EPOLLERR, which a plain `recv` would not wake for until the check timed out).
async fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        tokio::select! {
            r = socket.recv(buf) => return r,
            r = socket.ready(Interest::ERROR) => {
                r?;
                if let Some(e) = socket2::SockRef::from(socket).take_error()? {
                    return Err(e);
                }
                let _ = socket.try_io(Interest::ERROR, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
            }
        }
    }
}

/// A socket error in the words an operator uses.
fn io_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "port unreachable (ICMP)".to_owned(),
        _ => format!("UDP exchange failed: {e}"),
    }
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether `name` can be asked for: dot-separated labels of 1 to 63 bytes, at most 253 in all,
/// without spaces; `.` is the root.
///
/// # Errors
/// What is wrong, in words.
pub fn dns_name_ok(name: &str) -> Result<(), String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return if name == "." {
            Ok(())
        } else {
            Err("an empty name; write \".\" for the root or a name such as \"example.com\"".into())
        };
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_graphic() && b != b'.')
    };
    if trimmed.len() > 253 || !trimmed.split('.').all(label_ok) {
        return Err(format!(
            "{name:?} is not a DNS name; allowed: labels of 1 to 63 characters separated by dots, such as \"example.com\""
        ));
    }
    Ok(())
}

/// A standard query (RD set) for `name`, type A, class IN (RFC 1035 §4.1).
///
/// # Errors
/// When `name` is not a DNS name.
pub(crate) fn dns_query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    dns_name_ok(name)?;
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; QDCOUNT 1
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        // dns_name_ok bounds labels to 63 bytes.
        q.push(u8::try_from(label.len()).unwrap_or(63));
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]); // QTYPE A, QCLASS IN
    Ok(q)
}

/// Whether `reply` answers query `id`: a full header, the same id, the response bit, and an
/// RCODE other than SERVFAIL (2) or REFUSED (5) — a server that says it cannot serve is not up.
/// NXDOMAIN counts as an answer: the server works, the name just does not exist.
///
/// # Errors
/// What is wrong with the reply, in words.
pub(crate) fn dns_reply_ok(id: u16, reply: &[u8]) -> Result<(), String> {
    let Some(header) = reply.get(..12) else {
        return Err(format!("DNS reply too short ({} bytes)", reply.len()));
    };
    let got = u16::from_be_bytes([header[0], header[1]]);
    if got != id {
        return Err(format!(
            "DNS reply id {got} does not match the query's {id}"
        ));
    }
    if header[2] & 0x80 == 0 {
        return Err("DNS reply is not a response (QR bit clear)".to_owned());
    }
    match header[3] & 0x0f {
        2 => Err("DNS server answered SERVFAIL".to_owned()),
        5 => Err("DNS server answered REFUSED".to_owned()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::{dns_name_ok, dns_query, dns_reply_ok};

    #[test]
    fn a_query_is_a_header_and_one_question() {
        let q = dns_query(0x1234, "example.com").expect("valid");
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q[12..], b"\x07example\x03com\x00\x00\x01\x00\x01");
        let root = dns_query(1, ".").expect("valid");
        assert_eq!(&root[12..], b"\x00\x00\x01\x00\x01");
    }

    #[test]
    fn replies_must_match_the_id_and_not_refuse() {
        let mut r = dns_query(7, "a.b").expect("valid");
        assert!(dns_reply_ok(7, &r).is_err(), "a query is not a reply");
        r[2] |= 0x80;
        assert!(dns_reply_ok(7, &r).is_ok());
        assert!(dns_reply_ok(8, &r).is_err());
        r[3] = 3; // NXDOMAIN
        assert!(dns_reply_ok(7, &r).is_ok());
        r[3] = 2;
        assert!(dns_reply_ok(7, &r).is_err());
        assert!(dns_reply_ok(7, &r[..5]).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(dns_name_ok(".").is_ok());
        assert!(dns_name_ok("example.com.").is_ok());
        assert!(dns_name_ok("").is_err());
        assert!(dns_name_ok("a..b").is_err());
        assert!(dns_name_ok("has space.com").is_err());
        assert!(dns_name_ok(&"x".repeat(64)).is_err());
    }
}
