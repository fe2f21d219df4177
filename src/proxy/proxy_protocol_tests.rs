//! Tests of the PROXY protocol codec: vectors, every rejection, a bounded fuzz loop, and real
//! sockets on 127.0.0.1.

use super::*;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn encoded(version: Version, src: &str, dst: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode(version, sa(src), sa(dst), &mut out);
    out
}

fn proxied(src: &str, dst: &str) -> ProxyHeader {
    ProxyHeader::Proxied {
        source: sa(src),
        destination: sa(dst),
    }
}

/// A v2 header with the given bytes 12..14 and address block + TLVs.
fn v2(ver_cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[ver_cmd, family]);
    out.extend_from_slice(
        &u16::try_from(block.len())
            .expect("test block")
            .to_be_bytes(),
    );
    out.extend_from_slice(block);
    out
}

const V4_BLOCK: [u8; 12] = [127, 0, 0, 1, 127, 0, 0, 2, 0x04, 0xD2, 0x00, 0x50];

fn round_trip(version: Version, src: &str, dst: &str, expect_src: &str, expect_dst: &str) {
    let mut bytes = encoded(version, src, dst);
    let len = bytes.len();
    bytes.extend_from_slice(b"client data");
    let (header, consumed) = parse(&bytes).expect("valid").expect("complete");
    assert_eq!(header, proxied(expect_src, expect_dst));
    assert_eq!(consumed, len);
}

#[test]
fn round_trips_keep_ipv4_and_ipv6_addresses_in_both_versions() {
    for version in [Version::V1, Version::V2] {
        let (s4, d4) = ("192.0.2.1:56324", "198.51.100.7:443");
        round_trip(version, s4, d4, s4, d4);
        let (s6, d6) = (
            "[2001:db8::1]:1",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
        );
        round_trip(version, s6, d6, s6, d6);
        round_trip(
            version,
            "0.0.0.0:0",
            "[::]:0",
            "[::ffff:0.0.0.0]:0",
            "[::]:0",
        );
    }
}

#[test]
fn mixed_families_send_the_ipv4_side_as_v4_mapped_ipv6() {
    for version in [Version::V1, Version::V2] {
        round_trip(
            version,
            "10.1.2.3:4000",
            "[2001:db8::2]:80",
            "[::ffff:10.1.2.3]:4000",
            "[2001:db8::2]:80",
        );
        round_trip(
            version,
            "[2001:db8::1]:4000",
            "10.9.8.7:80",
            "[2001:db8::1]:4000",
            "[::ffff:10.9.8.7]:80",
        );
    }
    let line = encoded(Version::V1, "10.1.2.3:4000", "[2001:db8::2]:80");
    assert_eq!(line, b"PROXY TCP6 ::ffff:10.1.2.3 2001:db8::2 4000 80\r\n");
    let bin = encoded(Version::V2, "10.1.2.3:4000", "[2001:db8::2]:80");
    assert_eq!(bin.get(13..16), Some(&[0x21, 0x00, 36][..]));
}

#[test]
fn v1_encoding_matches_the_spec_example() {
    let line = encoded(Version::V1, "192.168.0.1:56324", "192.168.0.11:443");
    assert_eq!(line, b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
}

#[test]
fn v1_longest_header_fits_in_107_bytes() {
    let max = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535";
    let line = encoded(Version::V1, max, max);
    assert_eq!(line.len(), 104);
    assert_eq!(parse(&line), Ok(Some((proxied(max, max), 104))));
}

#[test]
fn v2_encoding_matches_hand_written_bytes() {
    let bin = encoded(Version::V2, "127.0.0.1:1234", "127.0.0.2:80");
    let expected: [u8; 28] = [
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, // signature
        0x21, // version 2, PROXY
        0x11, // AF_INET, STREAM
        0x00, 0x0C, // 12 bytes follow
        0x7F, 0x00, 0x00, 0x01, // 127.0.0.1
        0x7F, 0x00, 0x00, 0x02, // 127.0.0.2
        0x04, 0xD2, // 1234
        0x00, 0x50, // 80
    ];
    assert_eq!(bin, expected);
    let six = encoded(Version::V2, "[::1]:1", "[::2]:2");
    assert_eq!(six.len(), 52);
}

fn valid_headers() -> Vec<Vec<u8>> {
    let mut with_tlvs = v2(0x21, 0x11, &V4_BLOCK);
    with_tlvs.extend_from_slice(&[0x04, 0x00, 0x03, b'a', b'b', b'c', 0x03, 0x00, 0x00]);
    let len = u16::try_from(with_tlvs.len() - 16).expect("short");
    with_tlvs.splice(14..16, len.to_be_bytes());
    vec![
        encoded(Version::V1, "192.168.0.1:56324", "192.168.0.11:443"),
        encoded(Version::V1, "[2001:db8::1]:1", "[2001:db8::2]:65535"),
        b"PROXY UNKNOWN\r\n".to_vec(),
        encoded(Version::V2, "127.0.0.1:1234", "127.0.0.2:80"),
        encoded(Version::V2, "[2001:db8::1]:1", "[2001:db8::2]:65535"),
        v2(0x20, 0x00, &[]),
        v2(0x21, 0x12, &V4_BLOCK),
        with_tlvs,
    ]
}

#[test]
fn every_prefix_of_a_valid_header_needs_more_bytes() {
    for header in valid_headers() {
        for end in 0..header.len() {
            let prefix = header.get(..end).expect("in range");
            assert_eq!(parse(prefix), Ok(None), "{header:?} cut at {end}");
        }
        let (_, consumed) = parse(&header).expect("valid").expect("complete");
        assert_eq!(consumed, header.len());
    }
}

#[test]
fn garbage_and_plain_http_are_refused_within_the_signature_length() {
    let cases: [&[u8]; 6] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /x HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"PROXY",
        b"\r\n\r\n\x00\r\nQUIX\n",
        b"proxy TCP4 ",
    ];
    for case in cases {
        let refused_at =
            (1..=case.len()).find(|&end| parse(case.get(..end).expect("in range")).is_err());
        if case == b"PROXY" {
            assert_eq!(
                refused_at, None,
                "a prefix of the signature may still be valid"
            );
            continue;
        }
        let refused_at = refused_at.expect("refused");
        assert!(refused_at <= 12, "{case:?} refused only at {refused_at}");
        assert_eq!(parse(case), Err(ProxyHeaderError::NotProxyProtocol));
    }
}

#[test]
fn v2_tlvs_are_skipped_and_counted_in_consumed() {
    let mut block = V4_BLOCK.to_vec();
    block.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']); // ALPN
    block.extend_from_slice(&[0x04, 0x00, 0x00]); // NOOP, empty
    block.extend_from_slice(&[0xE0, 0x01, 0x00]); // custom, 256 bytes
    block.extend_from_slice(&[0x55; 256]);
    let mut bytes = v2(0x21, 0x11, &block);
    let len = bytes.len();
    bytes.extend_from_slice(b"data");
    let header = proxied("127.0.0.1:1234", "127.0.0.2:80");
    assert_eq!(parse(&bytes), Ok(Some((header, len))));
}

#[test]
fn v2_local_and_unspec_mean_use_the_real_addresses() {
    // LOCAL with an address block (ignored, whatever the family byte says).
    assert_eq!(
        parse(&v2(0x20, 0x11, &V4_BLOCK)),
        Ok(Some((ProxyHeader::Local, 28)))
    );
    assert_eq!(
        parse(&v2(0x20, 0x00, &[])),
        Ok(Some((ProxyHeader::Local, 16)))
    );
    assert_eq!(
        parse(&v2(0x20, 0x31, &[])),
        Ok(Some((ProxyHeader::Local, 16)))
    );
    // PROXY with AF_UNSPEC.
    assert_eq!(
        parse(&v2(0x21, 0x00, &[1, 2])),
        Ok(Some((ProxyHeader::Local, 18)))
    );
}

#[test]
fn v1_unknown_means_use_the_real_addresses() {
    assert_eq!(
        parse(b"PROXY UNKNOWN\r\nGET"),
        Ok(Some((ProxyHeader::Local, 15)))
    );
    let long = b"PROXY UNKNOWN ffff:: ffff:: 65535 65535\r\n";
    assert_eq!(parse(long), Ok(Some((ProxyHeader::Local, long.len()))));
}

#[test]
fn each_bad_header_is_refused_with_its_reason() {
    use ProxyHeaderError::*;
    let too_long = {
        let mut l = b"PROXY UNKNOWN ".to_vec();
        l.resize(105, b'a');
        l.extend_from_slice(b"\r\n"); // 107 bytes: fine
        let mut over = l.clone();
        over.insert(10, b'a'); // 108 bytes
        assert_eq!(parse(&l), Ok(Some((ProxyHeader::Local, 107))));
        over
    };
    let short_v6 = v2(0x21, 0x21, &[0; 35]);
    let mut bad_tlv_block = V4_BLOCK.to_vec();
    bad_tlv_block.extend_from_slice(&[0x01, 0x00, 0x05, b'h', b'2']);
    let mut stub_tlv_block = V4_BLOCK.to_vec();
    stub_tlv_block.extend_from_slice(&[0x01, 0x00]);
    let cases: Vec<(Vec<u8>, ProxyHeaderError)> = vec![
        (too_long, TooLong),
        ([b"PROXY ".as_slice(), &[b'1'; 120]].concat(), TooLong),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(), BadV1Syntax),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX".to_vec(), BadV1Syntax),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2GET / HTTP/1.1".to_vec(),
            BadV1Syntax,
        ),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(), BadV1Syntax),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".to_vec(), BadV1Syntax),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n".to_vec(),
            BadV1Syntax,
        ),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n".to_vec(), BadV1Syntax),
        (b"PROXY \r\n".to_vec(), BadV1Syntax),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n".to_vec(), BadAddress),
        (b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n".to_vec(), BadAddress),
        (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n".to_vec(), BadAddress),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n".to_vec(), BadPort),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 000001\r\n".to_vec(), BadPort),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 8o\r\n".to_vec(), BadPort),
        (v2(0x11, 0x11, &V4_BLOCK), UnsupportedVersion(1)),
        (v2(0x31, 0x11, &V4_BLOCK), UnsupportedVersion(3)),
        (v2(0x22, 0x11, &V4_BLOCK), UnknownCommand(2)),
        (v2(0x2F, 0x11, &V4_BLOCK), UnknownCommand(15)),
        (v2(0x21, 0x31, &[0; 216]), UnsupportedFamily(0x31)),
        (v2(0x21, 0x13, &V4_BLOCK), UnsupportedFamily(0x13)),
        (v2(0x21, 0x10, &V4_BLOCK), UnsupportedFamily(0x10)),
        (v2(0x21, 0x11, &[0; 11]), AddressBlockTooShort),
        (short_v6, AddressBlockTooShort),
        (v2(0x21, 0x11, &bad_tlv_block), BadTlv),
        (v2(0x21, 0x11, &stub_tlv_block), BadTlv),
    ];
    for (bytes, expected) in cases {
        assert_eq!(
            parse(&bytes),
            Err(expected),
            "{:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

#[test]
fn v2_header_errors_come_before_the_rest_of_the_header() {
    // Only 16 bytes of a header that declares 12 bytes of addresses: still refused at once.
    let bad = v2(0x11, 0x11, &V4_BLOCK);
    assert_eq!(
        parse(bad.get(..13).expect("13")),
        Err(ProxyHeaderError::UnsupportedVersion(1))
    );
    let bad = v2(0x21, 0x11, &[0; 4]);
    assert_eq!(parse(&bad), Err(ProxyHeaderError::AddressBlockTooShort));
}

#[test]
fn reasons_are_distinct_snake_case_labels() {
    use ProxyHeaderError::*;
    let all = [
        NotProxyProtocol,
        TooLong,
        BadV1Syntax,
        BadAddress,
        BadPort,
        UnsupportedVersion(0),
        UnknownCommand(0),
        UnsupportedFamily(0),
        AddressBlockTooShort,
        BadTlv,
        ClosedEarly,
        Timeout,
        Io(io::ErrorKind::ConnectionReset),
    ];
    let mut seen: Vec<&str> = all.iter().map(ProxyHeaderError::reason).collect();
    assert!(seen.iter().all(|r| r
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')));
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), all.len());
    assert_eq!(
        UnsupportedFamily(0x31).to_string(),
        "PROXY v2 header has family/transport byte 0x31; allowed are 0x00, 0x11, 0x12, 0x21 and 0x22"
    );
}

/// Checks the invariants for one input: no panic, `consumed` within the buffer, and a complete
/// header is complete at exactly `consumed` bytes and not before. Returns what `parse` said.
fn check_parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    let result = parse(buf);
    if let Ok(Some((header, consumed))) = result {
        assert!(
            consumed <= buf.len(),
            "consumed {consumed} of {}",
            buf.len()
        );
        let exact = buf.get(..consumed).expect("in range");
        assert_eq!(parse(exact), Ok(Some((header, consumed))));
        let shorter = buf.get(..consumed - 1).expect("in range");
        assert_eq!(parse(shorter), Ok(None));
    }
    result
}

#[test]
fn parse_survives_random_and_mutated_input() {
    let mut rng = fastrand::Rng::with_seed(0x5EED_BA11);
    let valid = valid_headers();
    let mut buf = Vec::with_capacity(1024);
    let (mut complete, mut reasons) = (0, Vec::new());
    for i in 0..20_000 {
        buf.clear();
        if i % 2 == 0 {
            // Random bytes, half of them behind a real signature so the parsers get exercised.
            match rng.u8(0..3) {
                0 => buf.extend_from_slice(V1_SIGNATURE),
                1 => buf.extend_from_slice(V2_SIGNATURE),
                _ => {}
            }
            let len = rng.usize(0..300);
            buf.extend((0..len).map(|_| {
                if rng.bool() {
                    rng.u8(..)
                } else {
                    *b"0123456789abcdef.: TCP46UNKNOWN\r\n"
                        .get(rng.usize(0..33))
                        .unwrap_or(&b' ')
                }
            }));
        } else {
            buf.extend_from_slice(valid.get(rng.usize(0..valid.len())).expect("in range"));
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(0..buf.len());
                match rng.u8(0..4) {
                    0 => {
                        if let Some(b) = buf.get_mut(at) {
                            *b = rng.u8(..);
                        }
                    }
                    1 => buf.truncate(at),
                    2 => buf.insert(at, rng.u8(..)),
                    _ => buf.extend((0..rng.usize(0..64)).map(|_| rng.u8(..))),
                }
                if buf.is_empty() {
                    break;
                }
            }
        }
        match check_parse(&buf) {
            Ok(Some(_)) => complete += 1,
            Ok(None) => {}
            Err(e) if !reasons.contains(&e.reason()) => reasons.push(e.reason()),
            Err(_) => {}
        }
    }
    // The inputs reach deep into both parsers, not just the signature check.
    assert!(complete > 500, "only {complete} complete headers");
    assert!(reasons.len() >= 7, "only {reasons:?}");
}

// === real sockets ===

/// A connected pair on 127.0.0.1: (client, accepted server side).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.expect("connect"), accepted.expect("accept").0)
}

const PATIENCE: Duration = Duration::from_secs(5);

async fn header_then_hello(header: Vec<u8>) -> (Result<ProxyHeader, ProxyHeaderError>, Vec<u8>) {
    let (mut client, mut server) = pair().await;
    let mut bytes = header;
    bytes.extend_from_slice(b"hello");
    client.write_all(&bytes).await.expect("write");
    client.shutdown().await.expect("shutdown");
    let header = read_header(&mut server, PATIENCE).await;
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).await.expect("read rest");
    (header, rest)
}

#[tokio::test]
async fn read_header_leaves_the_bytes_after_a_v2_header() {
    let bin = encoded(Version::V2, "192.0.2.1:5000", "198.51.100.2:443");
    let (header, rest) = header_then_hello(bin).await;
    assert_eq!(header, Ok(proxied("192.0.2.1:5000", "198.51.100.2:443")));
    assert_eq!(rest, b"hello");
}

#[tokio::test]
async fn read_header_leaves_the_bytes_after_a_v1_header() {
    let line = encoded(Version::V1, "[2001:db8::1]:5000", "[2001:db8::2]:443");
    let (header, rest) = header_then_hello(line).await;
    assert_eq!(
        header,
        Ok(proxied("[2001:db8::1]:5000", "[2001:db8::2]:443"))
    );
    assert_eq!(rest, b"hello");
}

#[tokio::test]
async fn read_header_reads_a_v2_header_longer_than_the_peek_buffer() {
    let mut block = V4_BLOCK.to_vec();
    block.extend_from_slice(&[0xE0, 0x03, 0xE8]);
    block.extend_from_slice(&[0xAB; 1000]);
    let (header, rest) = header_then_hello(v2(0x21, 0x11, &block)).await;
    assert_eq!(header, Ok(proxied("127.0.0.1:1234", "127.0.0.2:80")));
    assert_eq!(rest, b"hello");
}

#[tokio::test]
async fn read_header_waits_for_a_header_sent_in_pieces() {
    let (mut client, mut server) = pair().await;
    let line = encoded(Version::V1, "10.0.0.1:1", "10.0.0.2:2");
    let (first, second) = line.split_at(20);
    let second = [second, b"hello"].concat();
    let writer = async {
        client.write_all(first).await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(&second).await.expect("write");
        client.shutdown().await.expect("shutdown");
    };
    let (header, ()) = tokio::join!(read_header(&mut server, PATIENCE), writer);
    assert_eq!(header, Ok(proxied("10.0.0.1:1", "10.0.0.2:2")));
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).await.expect("read rest");
    assert_eq!(rest, b"hello");
}

#[tokio::test]
async fn write_header_is_read_back_by_read_header() {
    for version in [Version::V1, Version::V2] {
        let (mut client, mut server) = pair().await;
        let (src, dst) = (sa("[2001:db8::7]:40000"), sa("203.0.113.9:8443"));
        write_header(&mut client, version, src, dst)
            .await
            .expect("write");
        let header = read_header(&mut server, PATIENCE).await;
        let mapped = sa("[::ffff:203.0.113.9]:8443");
        assert_eq!(
            header,
            Ok(ProxyHeader::Proxied {
                source: src,
                destination: mapped
            })
        );
    }
}

#[tokio::test]
async fn read_header_times_out_on_half_a_header() {
    let (mut client, mut server) = pair().await;
    let bin = encoded(Version::V2, "127.0.0.1:1234", "127.0.0.2:80");
    client
        .write_all(bin.get(..10).expect("10"))
        .await
        .expect("write");
    let started = tokio::time::Instant::now();
    let header = read_header(&mut server, Duration::from_millis(200)).await;
    assert_eq!(header, Err(ProxyHeaderError::Timeout));
    assert!(started.elapsed() >= Duration::from_millis(200));
    drop(client);
}

#[tokio::test]
async fn read_header_reports_a_peer_that_closes_early() {
    for len in [0, 5, 20] {
        let (mut client, mut server) = pair().await;
        let line = encoded(Version::V1, "10.0.0.1:1", "10.0.0.2:2");
        client
            .write_all(line.get(..len).expect("in range"))
            .await
            .expect("write");
        drop(client);
        let header = read_header(&mut server, PATIENCE).await;
        assert_eq!(
            header,
            Err(ProxyHeaderError::ClosedEarly),
            "after {len} bytes"
        );
    }
}

#[tokio::test]
async fn read_header_refuses_a_plain_http_request() {
    let (header, rest) = header_then_hello(b"GET / HTTP/1.1\r\n".to_vec()).await;
    assert_eq!(header, Err(ProxyHeaderError::NotProxyProtocol));
    assert_eq!(rest, b"GET / HTTP/1.1\r\nhello", "nothing was consumed");
}

// === trusted sources ===

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test ip")
}

#[test]
fn trusted_sources_match_v4_and_v6_networks_and_bare_addresses() {
    let sources = TrustedSources::new(
        [
            "10.0.0.0/8",
            "127.0.0.1",
            "fd00::/8",
            "::1",
            "192.168.1.128/25",
        ]
        .map(|e| Cidr::parse(e).expect("valid")),
    );
    for yes in [
        "10.0.0.0",
        "10.255.255.255",
        "127.0.0.1",
        "fd12::1",
        "::1",
        "192.168.1.200",
    ] {
        assert!(sources.contains(ip(yes)), "{yes}");
    }
    for no in [
        "11.0.0.1",
        "127.0.0.2",
        "fe80::1",
        "::2",
        "192.168.1.127",
        "0.0.0.0",
    ] {
        assert!(!sources.contains(ip(no)), "{no}");
    }
    assert!(!TrustedSources::default().contains(ip("127.0.0.1")));
    assert_eq!(
        sources.networks().first().map(ToString::to_string),
        Some("10.0.0.0/8".to_string())
    );
    assert_eq!(Cidr::parse("::1").map(|c| c.prefix()), Ok(128));
}

#[test]
fn trusted_ipv4_networks_match_v4_mapped_ipv6_peers() {
    let v4 = Cidr::parse("10.0.0.0/8").expect("valid");
    assert!(v4.contains(ip("::ffff:10.1.2.3")));
    assert!(!v4.contains(ip("::ffff:11.1.2.3")));
    assert!(
        !v4.contains(ip("::a01:203")),
        "IPv4-compatible is not v4-mapped"
    );
    let mapped = Cidr::parse("::ffff:10.0.0.0/104").expect("valid");
    assert!(mapped.contains(ip("10.1.2.3")));
    assert!(Cidr::parse("0.0.0.0/0")
        .expect("valid")
        .contains(ip("::ffff:1.2.3.4")));
    assert!(!Cidr::parse("0.0.0.0/0")
        .expect("valid")
        .contains(ip("2001:db8::1")));
}

#[test]
fn bad_trusted_source_entries_say_what_is_allowed() {
    let cases = [
        (
            "10.0.0.0/33",
            "prefix /33 is too long for an IPv4 network: allowed are /0 to /32",
        ),
        (
            "::/129",
            "prefix /129 is too long for an IPv6 network: allowed are /0 to /128",
        ),
        (
            "nonsense",
            "not an IP address or network: expected an address such as `10.0.0.1` or `::1`, or a network such as `10.0.0.0/8` or `fd00::/8`",
        ),
        ("10.0.0.0/", "the prefix length after `/` must be a whole number from 0 to 32"),
        ("10.0.0.0/+8", "the prefix length after `/` must be a whole number from 0 to 32"),
        ("::/1000", "the prefix length after `/` must be a whole number from 0 to 128"),
        (
            "10.1.0.0/8",
            "the address has bits set after the /8 prefix: write the network address, `10.0.0.0/8`, or a longer prefix",
        ),
    ];
    for (entry, message) in cases {
        let error = Cidr::parse(entry).expect_err(entry);
        assert_eq!(error.to_string(), message, "{entry}");
    }
    assert_eq!(" 10.0.0.0/8 ".parse::<Cidr>().map(|c| c.prefix()), Ok(8));
}
