//! Validation of the UDP keys: a UDP listener's `udp_timeout`, `max_flows` and `responses`; the
//! TCP and HTTP keys that mean nothing on it; the `send`, `expect` and `query_name` of `udp` and
//! `dns` health checks; and `send_proxy` on an upstream a UDP listener uses.
//!
//! A child of `validate.rs` (it shares the `Validator` and its value checkers). Same rules: every
//! problem is collected with its line, column and key path, and a key that would do nothing
//! where it is written is an error rather than silently ignored.

use std::time::Duration;

use super::super::toml::{ConfigToml, HealthCheckToml, ListenerToml};
use super::super::{defaults, CheckKind, UdpCheckConfig, UdpListenerConfig};
use super::Validator;

impl Validator<'_, '_> {
    /// The UDP settings of `listener[…]` (`base`); `at` is where its table starts. On a UDP
    /// listener the TCP and HTTP keys are errors; on any other the UDP keys are.
    pub(super) fn listener_udp(
        &mut self,
        base: &str,
        at: usize,
        l: &ListenerToml,
        is_udp: bool,
    ) -> UdpListenerConfig {
        let key = |field: &str| format!("{base}.{field}");
        if !is_udp {
            let stray = [
                (
                    "udp_timeout",
                    l.udp_timeout.as_ref().map(|v| v.span().start),
                ),
                ("max_flows", l.max_flows.as_ref().map(|v| v.span().start)),
                ("responses", l.responses.as_ref().map(|v| v.span().start)),
            ];
            for (field, pos) in stray {
                if let Some(pos) = pos {
                    self.error(pos, &key(field), "needs protocol = \"udp\"");
                }
            }
            return UdpListenerConfig::default();
        }
        // Keys with a span point at their value; plain booleans carry none, so those point at
        // the listener's [[listener]] header.
        let stray = [
            ("backlog", l.backlog.as_ref().map(|v| v.span().start)),
            (
                "max_connections",
                l.max_connections.as_ref().map(|v| v.span().start),
            ),
            ("resume_at", l.resume_at.as_ref().map(|v| v.span().start)),
            ("tcp_nodelay", l.tcp_nodelay.map(|_| at)),
            (
                "tcp_keepalive",
                l.tcp_keepalive.as_ref().map(|v| v.span().start),
            ),
            (
                "buffer_size",
                l.buffer_size.as_ref().map(|v| v.span().start),
            ),
            ("splice", l.splice.map(|_| at)),
            (
                "accept_proxy",
                l.accept_proxy.as_ref().map(|v| v.span().start),
            ),
            (
                "header_timeout",
                l.header_timeout.as_ref().map(|v| v.span().start),
            ),
            ("forwarded", l.forwarded.map(|_| at)),
            ("via", l.via.map(|_| at)),
            (
                "body_timeout",
                l.body_timeout.as_ref().map(|v| v.span().start),
            ),
            (
                "send_timeout",
                l.send_timeout.as_ref().map(|v| v.span().start),
            ),
            (
                "max_header_size",
                l.max_header_size.as_ref().map(|v| v.span().start),
            ),
            (
                "max_headers",
                l.max_headers.as_ref().map(|v| v.span().start),
            ),
            (
                "max_body_size",
                l.max_body_size.as_ref().map(|v| v.span().start),
            ),
            (
                "request_id_header",
                l.request_id_header.as_ref().map(|v| v.span().start),
            ),
        ];
        for (field, pos) in stray {
            if let Some(pos) = pos {
                self.error(
                    pos,
                    &key(field),
                    "has no meaning on a udp listener (TCP and HTTP only); remove it",
                );
            }
        }
        if let Some(t) = &l.idle_timeout {
            self.error(
                t.span().start,
                &key("idle_timeout"),
                "a udp listener's flows end after udp_timeout; write udp_timeout instead",
            );
        }
        let timeout = self
            .duration(
                l.udp_timeout.as_ref(),
                &key("udp_timeout"),
                Duration::from_millis(1),
                defaults::DURATION_MAX,
            )
            .unwrap_or(defaults::UDP_TIMEOUT);
        let max_flows = self.int(
            l.max_flows.as_ref(),
            &key("max_flows"),
            1,
            defaults::MAX_FLOWS_MAX as i64,
            defaults::MAX_FLOWS as i64,
        );
        let responses = l.responses.as_ref().map(|r| {
            let n = self.int(
                Some(r),
                &key("responses"),
                1,
                i64::from(defaults::RESPONSES_MAX),
                1,
            );
            u32::try_from(n).unwrap_or(1)
        });
        UdpListenerConfig {
            timeout,
            max_flows: usize::try_from(max_flows).unwrap_or(defaults::MAX_FLOWS),
            responses,
        }
    }

    /// `send`, `expect` and `query_name` of a health check of kind `kind` (`base` is the
    /// `health_check` table's key path).
    pub(super) fn udp_check(
        &mut self,
        base: &str,
        c: &HealthCheckToml,
        kind: CheckKind,
    ) -> UdpCheckConfig {
        let key = |field: &str| format!("{base}.{field}");
        let mut out = UdpCheckConfig {
            query_name: defaults::CHECK_QUERY_NAME.to_owned(),
            ..UdpCheckConfig::default()
        };
        let owner = |field: &str| match field {
            "query_name" => CheckKind::Dns,
            _ => CheckKind::Udp,
        };
        for (field, value) in [
            ("send", &c.send),
            ("expect", &c.expect),
            ("query_name", &c.query_name),
        ] {
            let Some(value) = value else { continue };
            if owner(field) != kind {
                let message = format!("has no effect unless type = \"{}\"", owner(field).as_str());
                self.error(value.span().start, &key(field), message);
                continue;
            }
            match field {
                "send" | "expect" => match unescape(value.get_ref()) {
                    Ok(bytes) if field == "expect" && bytes.is_empty() => self.error(
                        value.span().start,
                        &key(field),
                        "an empty string matches every reply; remove the key to accept any reply",
                    ),
                    Ok(bytes) if field == "expect" => out.expect = Some(bytes),
                    Ok(bytes) => out.send = bytes,
                    Err(message) => self.error(value.span().start, &key(field), message),
                },
                _ => match crate::health::dns_name_ok(value.get_ref()) {
                    Ok(()) => out.query_name.clone_from(value.get_ref()),
                    Err(message) => self.error(value.span().start, &key(field), message),
                },
            }
        }
        out
    }

    /// Rules between UDP listeners and the upstreams they use: no `send_proxy` (the PROXY
    /// protocol header is a TCP stream prefix; there is nothing to put it in front of).
    pub(super) fn udp_cross_check(&mut self, raw: &ConfigToml) {
        for (i, l) in raw.listener.iter().enumerate() {
            let l = l.get_ref();
            if l.protocol.as_ref().is_none_or(|p| p.get_ref() != "udp") {
                continue;
            }
            let Some(name) = &l.upstream else { continue };
            for (u, up) in raw.upstream.iter().enumerate() {
                let up = up.get_ref();
                if up.name.as_ref().map(|n| n.get_ref()) != Some(name.get_ref()) {
                    continue;
                }
                if let Some(sp) = &up.send_proxy {
                    let message = format!(
                        "the udp listener[{i}] (line {}) uses this upstream, and PROXY headers \
                         are not sent over UDP; remove send_proxy or give the udp listener its own upstream",
                        self.line_of(Some(name))
                    );
                    self.error(
                        sp.span().start,
                        &format!("upstream[{u}].send_proxy"),
                        message,
                    );
                }
            }
        }
    }
}

/// A payload as written: text, with `\xHH` giving any byte and `\\` a backslash (write them in a
/// TOML literal string, `'\x00\x01'`, or doubled in a basic one, `"\\x00"`).
///
/// # Errors
/// A `\` followed by anything else, or `\x` without two hex digits, in words.
pub(crate) fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let hex = text
                    .get(i + 2..i + 4)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(byte) = hex else {
                    return Err(format!(
                        "bad escape at byte {i}: \\x needs two hex digits, such as \\x00 or \\xff"
                    ));
                };
                out.push(byte);
                i += 4;
            }
            _ => {
                return Err(format!(
                    "bad escape at byte {i}: allowed are \\xHH (any byte) and \\\\ (a backslash)"
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::unescape;
    use crate::config::{CheckKind, Config, Protocol};

    fn errors(text: &str) -> Vec<String> {
        match Config::from_str(text, "b.toml") {
            Ok(c) => panic!("expected errors, got {c:#?}"),
            Err(e) => e.diagnostics().iter().map(ToString::to_string).collect(),
        }
    }

    const UPSTREAM: &str =
        "[[upstream]]\nname = \"dns\"\n[[upstream.server]]\naddress = \"10.0.0.1:53\"\n";

    #[test]
    fn a_udp_listener_reads_its_keys_and_defaults() {
        let text = format!(
            "[[listener]]\nname = \"dns\"\nbind = \"0.0.0.0:53\"\nprotocol = \"udp\"\nupstream = \"dns\"\n\
             udp_timeout = \"30s\"\nmax_flows = 100\nresponses = 1\n\
             [[listener]]\nname = \"dns-tcp\"\nbind = \"0.0.0.0:53\"\nupstream = \"dns\"\n{UPSTREAM}\
             [upstream.health_check]\ntype = \"dns\"\nquery_name = \"example.com\"\n"
        );
        let c = Config::from_str(&text, "b.toml").expect("valid: tcp and udp may share :53");
        let l = &c.listeners[0];
        assert_eq!(l.protocol, Protocol::Udp);
        assert_eq!(l.udp.timeout, Duration::from_secs(30));
        assert_eq!((l.udp.max_flows, l.udp.responses), (100, Some(1)));
        assert_eq!(
            c.listeners[1].udp,
            crate::config::UdpListenerConfig::default()
        );
        let check = c.upstreams[0].health.check.as_ref().expect("check");
        assert_eq!(check.kind, CheckKind::Dns);
        assert_eq!(check.udp.query_name, "example.com");
    }

    #[test]
    fn tcp_keys_on_udp_listeners_and_udp_keys_elsewhere_are_errors() {
        let text = String::from(
            "[[listener]]\nname = \"dns\"\nbind = \"0.0.0.0:53\"\nprotocol = \"udp\"\nupstream = \"dns\"\n\
             backlog = 10\ntcp_nodelay = true\nidle_timeout = \"1s\"\nresponses = 0\n\
             [[listener]]\nname = \"t\"\nbind = \"0.0.0.0:54\"\nupstream = \"dns\"\nmax_flows = 5\n\
             [[upstream]]\nname = \"dns\"\nsend_proxy = \"v2\"\nserver = [{ address = \"10.0.0.1:53\" }]\n\
             [upstream.health_check]\ntype = \"udp\"\nsend = '\\x0'\nquery_name = \"a\"\n"
        );
        assert_eq!(
            errors(&text),
            [
                "b.toml:1:1: listener[0].tcp_nodelay: has no meaning on a udp listener (TCP and HTTP only); remove it",
                "b.toml:6:11: listener[0].backlog: has no meaning on a udp listener (TCP and HTTP only); remove it",
                "b.toml:8:16: listener[0].idle_timeout: a udp listener's flows end after udp_timeout; write udp_timeout instead",
                "b.toml:9:13: listener[0].responses: 0 is out of range; allowed: 1..=1000000",
                "b.toml:14:13: listener[1].max_flows: needs protocol = \"udp\"",
                "b.toml:17:14: upstream[0].send_proxy: the udp listener[0] (line 5) uses this upstream, and PROXY headers are not sent over UDP; remove send_proxy or give the udp listener its own upstream",
                "b.toml:21:8: upstream[0].health_check.send: bad escape at byte 0: \\x needs two hex digits, such as \\x00 or \\xff",
                "b.toml:22:14: upstream[0].health_check.query_name: has no effect unless type = \"dns\"",
            ]
        );
    }

    #[test]
    fn payload_escapes_give_any_byte() {
        assert_eq!(unescape("ping").as_deref(), Ok(&b"ping"[..]));
        assert_eq!(unescape(r"\x00\xffA\\").as_deref(), Ok(&b"\x00\xffA\\"[..]));
        assert!(unescape(r"\x0").is_err());
        assert!(unescape(r"\n").is_err());
        assert!(unescape(r"\xzz").is_err());
    }
}
