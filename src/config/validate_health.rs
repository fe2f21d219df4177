//! Validation of the server-state keys: `[upstream.health_check]`, passive checks, slow start,
//! `inhibit_on_failure`, `sorry_server`, notify commands, and the per-server `check`, `check_port`
//! and `state`.
//!
//! A child of `validate.rs` (it shares the `Validator` and its value checkers), kept apart so each
//! file stays readable. Same rules: every problem is collected with its line, column and key path,
//! and a key that would do nothing where it is written is an error rather than silently ignored.

use std::time::Duration;

use ::toml::Spanned;

use super::super::toml::{HealthCheckToml, ServerToml, UpstreamToml};
use super::super::{
    defaults, AdminState, CheckKind, HealthCheckConfig, HttpCheckConfig, PassiveConfig,
    UpstreamHealthConfig,
};
use super::Validator;

impl Validator<'_, '_> {
    /// The server-state settings of an upstream.
    pub(super) fn upstream_health(&mut self, base: &str, u: &UpstreamToml) -> UpstreamHealthConfig {
        let key = |field: &str| format!("{base}.{field}");
        let check = u
            .health_check
            .as_ref()
            .map(|c| self.health_check(&key("health_check"), c.get_ref()));

        let max_fails = self.int(
            u.max_fails.as_ref(),
            &key("max_fails"),
            0,
            i64::from(defaults::CHECK_COUNT_MAX),
            0,
        );
        let fail_timeout = self
            .duration(
                u.fail_timeout.as_ref(),
                &key("fail_timeout"),
                Duration::from_millis(1),
                defaults::DURATION_MAX,
            )
            .unwrap_or(defaults::FAIL_TIMEOUT);
        if let (Some(ft), 0) = (&u.fail_timeout, max_fails) {
            self.error(
                ft.span().start,
                &key("fail_timeout"),
                "has no effect without max_fails (1 or more)",
            );
        }
        let passive = (max_fails > 0).then(|| PassiveConfig {
            max_fails: u32::try_from(max_fails).unwrap_or(1),
            fail_timeout,
        });

        let slow_start = self.duration(
            u.slow_start.as_ref(),
            &key("slow_start"),
            Duration::from_millis(1),
            defaults::DURATION_MAX,
        );
        let sorry_server = u.sorry_server.as_ref().and_then(|a| {
            let addr = self.address(a, &key("sorry_server"))?;
            self.server_address(a, addr, &key("sorry_server"))
        });
        let notify_up = self.command(u.notify_up.as_ref(), &key("notify_up"));
        let notify_down = self.command(u.notify_down.as_ref(), &key("notify_down"));
        let notify_timeout = self
            .duration(
                u.notify_timeout.as_ref(),
                &key("notify_timeout"),
                Duration::from_millis(1),
                defaults::DURATION_MAX,
            )
            .unwrap_or(defaults::NOTIFY_TIMEOUT);
        if let (Some(t), None, None) = (&u.notify_timeout, &u.notify_up, &u.notify_down) {
            self.error(
                t.span().start,
                &key("notify_timeout"),
                "has no effect without notify_up or notify_down",
            );
        }
        UpstreamHealthConfig {
            check,
            passive,
            slow_start,
            inhibit_on_failure: u.inhibit_on_failure.unwrap_or(false),
            sorry_server,
            notify_up,
            notify_down,
            notify_timeout,
        }
    }

    /// `[upstream.health_check]`.
    fn health_check(&mut self, base: &str, c: &HealthCheckToml) -> HealthCheckConfig {
        let key = |field: &str| format!("{base}.{field}");
        let kind = self.choice(
            c.kind.as_ref(),
            &key("type"),
            "a check type",
            &[
                ("tcp", CheckKind::Tcp),
                ("http", CheckKind::Http),
                ("tls", CheckKind::Tls),
                ("udp", CheckKind::Udp),
                ("dns", CheckKind::Dns),
            ],
            "",
            defaults::CHECK_KIND,
        );
        let (min, max) = (defaults::CHECK_INTERVAL_MIN, defaults::CHECK_INTERVAL_MAX);
        let interval = self
            .duration(c.interval.as_ref(), &key("interval"), min, max)
            .unwrap_or(defaults::CHECK_INTERVAL);
        let fast_interval = self
            .duration(c.fast_interval.as_ref(), &key("fast_interval"), min, max)
            .unwrap_or(interval);
        let timeout = self
            .duration(c.timeout.as_ref(), &key("timeout"), min, max)
            .unwrap_or(interval);
        let count_max = i64::from(defaults::CHECK_COUNT_MAX);
        let rise = self.int(
            c.rise.as_ref(),
            &key("rise"),
            1,
            count_max,
            i64::from(defaults::CHECK_RISE),
        );
        let fall = self.int(
            c.fall.as_ref(),
            &key("fall"),
            1,
            count_max,
            i64::from(defaults::CHECK_FALL),
        );
        let port = self.port(c.port.as_ref(), &key("port"));

        // The HTTP keys mean nothing to a tcp or tls check: say so rather than ignore them.
        if kind != CheckKind::Http {
            let stray = [
                (c.path.as_ref().map(|v| v.span().start), "path"),
                (c.host.as_ref().map(|v| v.span().start), "host"),
                (
                    c.expect_status.as_ref().map(|v| v.span().start),
                    "expect_status",
                ),
                (
                    c.expect_body.as_ref().map(|v| v.span().start),
                    "expect_body",
                ),
            ];
            for (at, field) in stray {
                if let Some(at) = at {
                    self.error(at, &key(field), "has no effect unless type = \"http\"");
                }
            }
        }
        let path = c
            .path
            .as_ref()
            .and_then(|p| self.path(p, &key("path")))
            .unwrap_or_else(|| defaults::CHECK_PATH.to_owned());
        let host = c.host.as_ref().and_then(|h| {
            let text = h.get_ref();
            let ok = !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                let message = format!(
                    "{text:?} is not a Host header value; allowed: a host name or address, optionally with :port, no spaces"
                );
                self.error(h.span().start, &key("host"), message);
                return None;
            }
            Some(text.clone())
        });
        let mut expect_status = Vec::new();
        if let Some(list) = &c.expect_status {
            if list.get_ref().is_empty() {
                self.error(
                    list.span().start,
                    &key("expect_status"),
                    "an empty list accepts nothing; list the statuses that mean healthy, such as [200]",
                );
            }
            for (i, s) in list.get_ref().iter().enumerate() {
                let n = self.int(Some(s), &key(&format!("expect_status[{i}]")), 100, 599, 200);
                expect_status.push(u16::try_from(n).unwrap_or(200));
            }
        }
        let expect_body = c.expect_body.as_ref().and_then(|b| {
            if b.get_ref().is_empty() {
                self.error(
                    b.span().start,
                    &key("expect_body"),
                    "an empty string matches every body; remove the key or give the text to look for",
                );
                return None;
            }
            Some(b.get_ref().clone())
        });

        HealthCheckConfig {
            kind,
            interval,
            fast_interval,
            timeout,
            rise: u32::try_from(rise).unwrap_or(defaults::CHECK_RISE),
            fall: u32::try_from(fall).unwrap_or(defaults::CHECK_FALL),
            port,
            http: HttpCheckConfig {
                path,
                host,
                expect_status,
                expect_body,
            },
            udp: self.udp_check(base, c, kind),
        }
    }

    /// `check`, `check_port` and `state` of one server; `checked` says whether its upstream has
    /// a `[upstream.health_check]`.
    pub(super) fn server_health(
        &mut self,
        base: &str,
        s: &ServerToml,
        checked: bool,
    ) -> (bool, Option<u16>, AdminState) {
        let key = |field: &str| format!("{base}.{field}");
        if !checked {
            let stray = [
                (s.check.as_ref().map(|v| v.span().start), "check"),
                (s.check_port.as_ref().map(|v| v.span().start), "check_port"),
            ];
            for (at, field) in stray {
                if let Some(at) = at {
                    self.error(
                        at,
                        &key(field),
                        "has no effect without an [upstream.health_check] table in this upstream",
                    );
                }
            }
        }
        let check = s.check.as_ref().is_none_or(|c| *c.get_ref());
        let check_port = self.port(s.check_port.as_ref(), &key("check_port"));
        let state = self.choice(
            s.state.as_ref(),
            &key("state"),
            "a server state",
            &[
                ("active", AdminState::Active),
                ("draining", AdminState::Draining),
                ("disabled", AdminState::Disabled),
            ],
            "",
            AdminState::Active,
        );
        (check, check_port, state)
    }

    /// A TCP port, 1..=65535; `None` when absent or invalid.
    fn port(&mut self, value: Option<&Spanned<i64>>, key: &str) -> Option<u16> {
        let value = value?;
        let n = self.int(Some(value), key, 1, 65535, 0);
        u16::try_from(n).ok().filter(|p| *p != 0)
    }

    /// A shell command: any non-empty text.
    fn command(&mut self, value: Option<&Spanned<String>>, key: &str) -> Option<String> {
        let value = value?;
        if value.get_ref().trim().is_empty() {
            self.error(
                value.span().start,
                key,
                "an empty command; give a shell command such as \"/etc/ballast/notify.sh\", or remove the key",
            );
            return None;
        }
        Some(value.get_ref().clone())
    }
}
