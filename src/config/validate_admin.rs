//! Validation of the `[admin]` section. A child of `validate.rs`, sharing its `Validator`; same
//! rules: every problem collected with its line, column and key path.
//!
//! The one rule that matters for safety: an admin server reachable from other hosts (a bind
//! address that is not loopback) must ask for a token, so it is refused without one, naming the
//! line of `bind`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ::toml::Spanned;

use super::super::admin::{
    AccessLogConfig, AccessLogFormat, AccessLogTarget, AdminBind, AdminConfig, AdminToken,
};
use super::super::defaults;
use super::super::toml::{AdminToml, GlobalToml};
use super::Validator;

impl Validator<'_, '_> {
    /// The admin settings; `None` when there is no `[admin]` section.
    pub(super) fn admin(&mut self, raw: Option<&Spanned<AdminToml>>) -> Option<AdminConfig> {
        let raw = raw?;
        let at = raw.span().start;
        let a = raw.get_ref();
        let bind = match &a.bind {
            None => AdminBind::Tcp(defaults::ADMIN_BIND),
            Some(b) => self.admin_bind(b),
        };
        let token = match (&a.token, &a.token_file) {
            (Some(t), Some(f)) => {
                self.error(
                    f.span().start,
                    "admin.token_file",
                    "token and token_file both given; keep one",
                );
                let _ = t;
                None
            }
            (Some(t), None) => {
                let value = t.get_ref().trim();
                if value.len() < 16 {
                    self.error(
                        t.span().start,
                        "admin.token",
                        "is too short to be a secret; use at least 16 characters (e.g. `openssl rand -hex 16`)",
                    );
                }
                Some(AdminToken::Inline(crate::secret::Secret::new(value)))
            }
            (None, Some(f)) => {
                if f.get_ref().is_empty() {
                    self.error(
                        f.span().start,
                        "admin.token_file",
                        "is empty; expected a path",
                    );
                }
                Some(AdminToken::File(self.admin_path(f.get_ref())))
            }
            (None, None) => None,
        };
        if token.is_none() && !bind.is_local() {
            let pos = a.bind.as_ref().map_or(at, |b| b.span().start);
            self.error(
                pos,
                "admin.bind",
                format!(
                    "{bind} is reachable from other hosts, so the admin API needs a token; add token_file = \"/etc/ballast/admin.token\" (or token), or bind to 127.0.0.1 or a unix socket"
                ),
            );
        }
        Some(AdminConfig { bind, token })
    }

    /// `[global] access_log` and `access_log_format`; `None` when `access_log` is absent (a
    /// format alone is an error: it would do nothing).
    pub(super) fn access_log(&mut self, raw: &GlobalToml) -> Option<AccessLogConfig> {
        let format = self.choice(
            raw.access_log_format.as_ref(),
            "global.access_log_format",
            "an access log format",
            &[
                ("text", AccessLogFormat::Text),
                ("json", AccessLogFormat::Json),
            ],
            "",
            AccessLogFormat::Text,
        );
        let Some(target) = &raw.access_log else {
            if let Some(f) = &raw.access_log_format {
                self.error(
                    f.span().start,
                    "global.access_log_format",
                    "has no effect without access_log; add access_log = \"stdout\" or a file path",
                );
            }
            return None;
        };
        let target = match target.get_ref().as_str() {
            "stdout" | "-" => AccessLogTarget::Stdout,
            "" => {
                self.error(
                    target.span().start,
                    "global.access_log",
                    "is empty; expected \"stdout\" or a file path",
                );
                AccessLogTarget::Stdout
            }
            path => AccessLogTarget::File(self.admin_path(path)),
        };
        Some(AccessLogConfig { target, format })
    }

    fn admin_bind(&mut self, b: &Spanned<String>) -> AdminBind {
        let text = b.get_ref();
        let path = text
            .strip_prefix("unix:")
            .or_else(|| text.starts_with('/').then_some(text.as_str()));
        if let Some(path) = path {
            if path.is_empty() {
                self.error(
                    b.span().start,
                    "admin.bind",
                    "unix: without a path; expected unix:/run/ballast.sock",
                );
            }
            return AdminBind::Unix(self.admin_path(path));
        }
        match self.address(b, "admin.bind") {
            Some(a) => AdminBind::Tcp(a),
            None => AdminBind::Tcp(SocketAddr::from(([127, 0, 0, 1], 0))),
        }
    }

    /// A path from the file, relative to the configuration file's directory unless absolute.
    fn admin_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        Path::new(self.src.origin)
            .parent()
            .map_or_else(|| p.to_path_buf(), |dir| dir.join(p))
    }
}
