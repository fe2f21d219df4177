//! What each fuzz target does with one input, shared by the libFuzzer targets in
//! `fuzz_targets/` and by `tests/fuzz_corpus.rs` (which replays the corpora and mutations of
//! them in the default test suite). Every function must return normally for any input: a panic
//! is the bug being looked for. Results are ignored; errors are expected for most inputs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ballast::config::Config;
use ballast::import::{import_str, Format};

#[path = "harness_admin.rs"]
mod admin;
#[path = "harness_http.rs"]
mod http_head;

/// The targets, in the order `fuzz/run.sh` runs them; each names its `fuzz/corpus/` directory.
#[allow(dead_code)] // used by tests/fuzz_corpus.rs only
pub(crate) const TARGETS: &[&str] = &[
    "config_toml",
    "keepalived",
    "nginx",
    "ipvsadm",
    "vrrp_packet",
    "proxy_protocol",
    "admin_body",
    "http_head",
];

/// Runs target `name` on `data`. Unknown names are a bug in the caller.
pub(crate) fn run(name: &str, data: &[u8]) {
    match name {
        "config_toml" => config_toml(data),
        "keepalived" => import(Format::Keepalived, data),
        "nginx" => import(Format::Nginx, data),
        "ipvsadm" => import(Format::Ipvsadm, data),
        "vrrp_packet" => vrrp_packet(data),
        "proxy_protocol" => proxy_protocol(data),
        "admin_body" => admin::body(data),
        "http_head" => http_head::head(data),
        other => panic!("no fuzz target named {other}"),
    }
}

/// `Config::from_str`: TOML parsing and validation.
fn config_toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_str(text, "fuzz.toml");
    }
}

/// An importer from text, then (when it produced TOML) ballast's own validation of that TOML.
fn import(format: Format, data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(imported) = import_str(format, text, "fuzz.conf") {
            let _ = imported.notes();
            let _ = imported.config("fuzz");
        }
    }
}

/// The VRRP receive path. Input starting with IP version 4 goes through the IPv4 header parser,
/// version 6 through a fixed 40-byte IPv6 header (what the raw socket hands over is the same
/// shape); anything else is decoded as a bare VRRP message from the addresses of the netlab
/// captures, over both families.
fn vrrp_packet(data: &[u8]) {
    use ballast::vrrp::packet::{decode, parse_ipv4};
    match data.first().map(|b| b >> 4) {
        Some(4) => {
            if let Ok(ip) = parse_ipv4(data) {
                let _ = decode(ip.payload, IpAddr::V4(ip.src), IpAddr::V4(ip.dst));
            }
        }
        Some(6) if data.len() >= 40 => {
            let addr = |at: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&data[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(b))
            };
            let _ = decode(&data[40..], addr(8), addr(24));
        }
        _ => {
            let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            let _ = decode(data, v4(10, 99, 0, 11), v4(224, 0, 0, 18));
            let _ = decode(
                data,
                IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0x0aff, 0xfe63, 0x000b)),
                IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12)),
            );
        }
    }
}

/// The PROXY protocol v1/v2 header parser; a complete header must not claim more bytes than it
/// was given.
fn proxy_protocol(data: &[u8]) {
    use ballast::proxy::proxy_protocol::parse;
    if let Ok(Some((_, consumed))) = parse(data) {
        assert!(
            consumed <= data.len(),
            "consumed {consumed} of {}",
            data.len()
        );
    }
}
