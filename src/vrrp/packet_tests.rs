//! Codec tests: Keepalived 2.2.7 captures (shared/netlab/captures) decoded and re-encoded byte for
//! byte, then a corpus of malformed packets, each dropped with its reason.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

const LB1: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 11));
const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 50));
const GROUP: IpAddr = IpAddr::V4(GROUP_V4);

/// Whole Ethernet frames as captured (14-byte Ethernet header, then IPv4).
const V2_PASS_FRAME: &str = "01005e00001202000a63000b080045c0002800020000ff70d0230a63000be000001221336401010132e90a6300327365637265740000";
const V2_PRIO0_FRAME: &str = "01005e00001202000a63000b080045c0002800040000ff70d0210a63000be000001221330001010196e90a6300327365637265740000";
const V3_1S_FRAME: &str =
    "01005e00001202000a63000b080045c0002000020000ff70d02b0a63000be000001231336401006474d50a630032";
const V3_100MS_FRAME: &str =
    "01005e00001202000a63000b080045c0002000020000ff70d02b0a63000be000001231336401000a752f0a630032";
/// The IPv6 advert's VRRP message (from fe80::aff:fe63:b to ff02::12).
const V3_V6_MSG: &str = "31336401006464f1fd990000000000000000000000000050";

fn lb1_v6() -> IpAddr {
    IpAddr::V6("fe80::aff:fe63:b".parse().expect("addr"))
}

fn vip_v6() -> IpAddr {
    IpAddr::V6("fd99::50".parse().expect("addr"))
}

/// Decodes a captured IPv4 frame: Ethernet off, IP header checked, VRRP decoded.
fn decode_frame(frame: &str) -> (Ipv4Packet<'static>, Advert) {
    let bytes: &'static [u8] = Box::leak(hex(frame).into_boxed_slice());
    let ip = parse_ipv4(&bytes[14..]).expect("ip header");
    assert_eq!(ip.protocol, PROTO);
    assert_eq!(ip.ttl, TTL);
    let adv = decode(ip.payload, IpAddr::V4(ip.src), IpAddr::V4(ip.dst)).expect("decodes");
    (ip, adv)
}

fn expect_v2_pass() -> Expect {
    Expect {
        version: Version::V2,
        vrid: 51,
        auth: Auth::pass("secret"),
        addrs: vec![VIP],
        interval_v2: 1,
    }
}

#[test]
fn keepalived_v2_pass_advert_decodes_and_reencodes_byte_for_byte() {
    let (ip, adv) = decode_frame(V2_PASS_FRAME);
    assert_eq!(ip.src, Ipv4Addr::new(10, 99, 0, 11));
    assert_eq!(ip.dst, GROUP_V4);
    assert_eq!(
        adv,
        Advert {
            version: Version::V2,
            vrid: 51,
            priority: 100,
            interval: 1,
            addrs: vec![VIP],
            auth: Auth::pass("secret"),
        }
    );
    assert_eq!(adv.interval_cs(), 100);
    assert_eq!(check(&adv, &expect_v2_pass()), Ok(()));
    assert_eq!(encode(&adv, LB1, GROUP), ip.payload);
}

#[test]
fn keepalived_v2_priority_zero_decodes() {
    let (ip, adv) = decode_frame(V2_PRIO0_FRAME);
    assert_eq!(adv.priority, 0);
    assert_eq!(check(&adv, &expect_v2_pass()), Ok(()));
    assert_eq!(encode(&adv, LB1, GROUP), ip.payload);
}

#[test]
fn keepalived_v3_ipv4_adverts_decode_with_pseudo_header_checksum() {
    for (frame, cs) in [(V3_1S_FRAME, 100), (V3_100MS_FRAME, 10)] {
        let (ip, adv) = decode_frame(frame);
        assert_eq!(adv.version, Version::V3);
        assert_eq!(adv.interval, cs);
        assert_eq!(adv.interval_cs(), u32::from(cs));
        assert_eq!(adv.auth, Auth::None);
        assert_eq!(adv.addrs, vec![VIP]);
        // ballast's encoder makes exactly what Keepalived sent, pseudo-header checksum included.
        assert_eq!(encode(&adv, LB1, GROUP), ip.payload);
    }
}

#[test]
fn keepalived_v3_ipv6_advert_decodes_and_reencodes() {
    let msg = hex(V3_V6_MSG);
    let group = IpAddr::V6(GROUP_V6);
    let adv = decode(&msg, lb1_v6(), group).expect("decodes");
    assert_eq!(adv.vrid, 51);
    assert_eq!(adv.priority, 100);
    assert_eq!(adv.interval, 100);
    assert_eq!(adv.addrs, vec![vip_v6()]);
    assert_eq!(encode(&adv, lb1_v6(), group), msg);
    // The pseudo-header is part of the sum: another source address breaks it.
    let other = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
    assert_eq!(decode(&msg, other, group), Err(DropReason::Checksum));
}

#[test]
fn v3_ipv4_without_pseudo_header_is_accepted_on_receive() {
    let (ip, _) = decode_frame(V3_1S_FRAME);
    let mut msg = ip.payload.to_vec();
    msg[6] = 0;
    msg[7] = 0;
    let sum = checksum(&[&msg]);
    msg[6..8].copy_from_slice(&sum.to_be_bytes());
    assert!(decode(&msg, LB1, GROUP).is_ok());
}

#[test]
fn v3_reserved_bits_are_ignored() {
    let adv = Advert {
        version: Version::V3,
        vrid: 7,
        priority: 200,
        interval: 10,
        addrs: vec![VIP],
        auth: Auth::None,
    };
    let mut msg = encode(&adv, LB1, GROUP);
    msg[4] |= 0xf0;
    // Fix the checksum after touching the reserved bits.
    msg[6] = 0;
    msg[7] = 0;
    let sum = checksum(&[&pseudo_header(LB1, GROUP, msg.len()), &msg]);
    msg[6..8].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(decode(&msg, LB1, GROUP).map(|a| a.interval), Ok(10));
}

#[test]
fn a_long_password_is_cut_to_eight_bytes_like_keepalived() {
    assert_eq!(Auth::pass("0123456789"), Auth::Pass(*b"01234567"));
    assert_eq!(Auth::pass("ab"), Auth::Pass(*b"ab\0\0\0\0\0\0"));
}

/// Re-checksums a v2 message after a test changed it, so only the intended fault remains.
fn resum_v2(mut msg: Vec<u8>) -> Vec<u8> {
    msg[6] = 0;
    msg[7] = 0;
    let sum = checksum(&[&msg]);
    msg[6..8].copy_from_slice(&sum.to_be_bytes());
    msg
}

fn v2_msg() -> Vec<u8> {
    let (ip, _) = decode_frame(V2_PASS_FRAME);
    ip.payload.to_vec()
}

#[test]
fn malformed_packets_are_dropped_with_their_reason() {
    let good = v2_msg();
    let mut cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        ("empty", vec![], DropReason::Truncated),
        ("seven bytes", good[..7].to_vec(), DropReason::Truncated),
        (
            "cut inside the addresses",
            good[..10].to_vec(),
            DropReason::Truncated,
        ),
        (
            "cut inside the password",
            good[..16].to_vec(),
            DropReason::Truncated,
        ),
        (
            "trailing byte",
            [good.clone(), vec![0]].concat(),
            DropReason::Length,
        ),
    ];
    let mut bad_version = good.clone();
    bad_version[0] = 0x41;
    cases.push(("version 4", resum_v2(bad_version), DropReason::Version));
    let mut v1 = good.clone();
    v1[0] = 0x11;
    cases.push(("version 1", resum_v2(v1), DropReason::Version));
    let mut bad_type = good.clone();
    bad_type[0] = 0x22;
    cases.push(("type 2", resum_v2(bad_type), DropReason::Type));
    let mut flipped = good.clone();
    flipped[9] ^= 0x01;
    cases.push(("one bit flipped", flipped, DropReason::Checksum));
    let mut zero_interval = good.clone();
    zero_interval[5] = 0;
    cases.push(("interval 0", resum_v2(zero_interval), DropReason::Interval));
    let mut auth_ah = good.clone();
    auth_ah[4] = 2;
    cases.push(("auth type AH", resum_v2(auth_ah), DropReason::AuthType));
    let mut count_more = good.clone();
    count_more[3] = 2;
    cases.push((
        "count says 2, one address",
        resum_v2(count_more),
        DropReason::Truncated,
    ));
    let mut count_zero = good.clone();
    count_zero[3] = 0;
    cases.push((
        "count says 0, one address",
        resum_v2(count_zero),
        DropReason::Length,
    ));
    let mut count_max = good;
    count_max[3] = 255;
    cases.push(("count 255", resum_v2(count_max), DropReason::Truncated));
    for (what, msg, reason) in cases {
        assert_eq!(decode(&msg, LB1, GROUP), Err(reason), "{what}");
    }
    // v2 over IPv6 does not exist.
    assert_eq!(
        decode(&v2_msg(), lb1_v6(), IpAddr::V6(GROUP_V6)),
        Err(DropReason::Family)
    );
}

#[test]
fn mismatches_with_the_instance_are_dropped_with_their_reason() {
    let adv = decode(&v2_msg(), LB1, GROUP).expect("decodes");
    let base = expect_v2_pass();
    let cases = [
        (
            "wrong password",
            Expect {
                auth: Auth::pass("secreT"),
                ..base.clone()
            },
            DropReason::AuthPassword,
        ),
        (
            "instance has no auth",
            Expect {
                auth: Auth::None,
                ..base.clone()
            },
            DropReason::AuthType,
        ),
        (
            "other vrid",
            Expect {
                vrid: 52,
                ..base.clone()
            },
            DropReason::Vrid,
        ),
        (
            "v2 interval mismatch",
            Expect {
                interval_v2: 2,
                ..base.clone()
            },
            DropReason::Interval,
        ),
        (
            "two VIPs expected",
            Expect {
                addrs: vec![VIP, LB1],
                ..base.clone()
            },
            DropReason::AddressCount,
        ),
        (
            "another VIP expected",
            Expect {
                addrs: vec![LB1],
                ..base.clone()
            },
            DropReason::AddressList,
        ),
        (
            "instance is v3",
            Expect {
                version: Version::V3,
                ..base
            },
            DropReason::Version,
        ),
    ];
    for (what, expect, reason) in cases {
        assert_eq!(check(&adv, &expect), Err(reason), "{what}");
    }
}

#[test]
fn ip_headers_that_lie_are_refused() {
    let frame = hex(V2_PASS_FRAME);
    let ip = &frame[14..];
    assert!(parse_ipv4(ip).is_ok());
    assert_eq!(parse_ipv4(&ip[..19]), Err(DropReason::Truncated));
    let mut v6 = ip.to_vec();
    v6[0] = 0x65;
    assert_eq!(parse_ipv4(&v6), Err(DropReason::IpHeader));
    let mut short_ihl = ip.to_vec();
    short_ihl[0] = 0x44;
    assert_eq!(parse_ipv4(&short_ihl), Err(DropReason::IpHeader));
    let mut long_total = ip.to_vec();
    long_total[3] = 0xff;
    assert_eq!(parse_ipv4(&long_total), Err(DropReason::Truncated));
    // Padding after the total length is cut off.
    let padded = [ip.to_vec(), vec![0; 6]].concat();
    assert_eq!(
        parse_ipv4(&padded).map(|p| p.payload.len()),
        Ok(ip.len() - 20)
    );
}

/// Every prefix and every single-byte corruption of every capture: never a panic, and nothing
/// corrupted passes both the checksum and the instance check unnoticed.
#[test]
fn no_input_panics_the_decoder() {
    let mut inputs: Vec<(Vec<u8>, IpAddr, IpAddr)> = Vec::new();
    for frame in [V2_PASS_FRAME, V2_PRIO0_FRAME, V3_1S_FRAME, V3_100MS_FRAME] {
        let f = hex(frame);
        inputs.push((f[14 + 20..].to_vec(), LB1, GROUP));
    }
    inputs.push((hex(V3_V6_MSG), lb1_v6(), IpAddr::V6(GROUP_V6)));
    for (msg, src, dst) in inputs {
        for cut in 0..=msg.len() {
            let _ = decode(&msg[..cut], src, dst);
            let _ = parse_ipv4(&msg[..cut]);
        }
        for at in 0..msg.len() {
            for bit in 0..8 {
                let mut m = msg.clone();
                m[at] ^= 1 << bit;
                // A single flipped bit always breaks the one's-complement sum.
                assert!(decode(&m, src, dst).is_err(), "byte {at} bit {bit}");
            }
        }
    }
    // Random garbage, seeded so a failure replays.
    let mut rng = fastrand::Rng::with_seed(5798);
    for _ in 0..20_000 {
        let len = rng.usize(0..80);
        let buf: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        let _ = decode(&buf, LB1, GROUP);
        let _ = decode(&buf, lb1_v6(), IpAddr::V6(GROUP_V6));
        let _ = parse_ipv4(&buf);
    }
}

#[test]
fn drop_reason_indexes_are_dense() {
    for (i, r) in DropReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
        assert!(!r.as_str().is_empty());
    }
}
