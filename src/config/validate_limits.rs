//! Validation of the connection-limit keys, `max_connections` and `resume_at`, in `[global]` and
//! in each `[[listener]]`. A child of `validate.rs`, sharing its `Validator`; same rules: every
//! problem collected with its line, column and key path.

use ::toml::Spanned;

use super::super::toml::{GlobalToml, ListenerToml};
use super::super::{defaults, ConnectionLimit};
use super::Validator;

impl Validator<'_, '_> {
    /// `[global] max_connections` and `resume_at`. `max` 0 (absent or written as 0) means
    /// "derive from the file-descriptor limit at start".
    pub(super) fn global_limit(&mut self, g: &GlobalToml) -> ConnectionLimit {
        self.connection_limit(
            "global",
            g.max_connections.as_ref(),
            g.resume_at.as_ref(),
            false,
        )
    }

    /// A listener's `max_connections` and `resume_at`; `max` 0 = no limit of its own.
    pub(super) fn listener_limit(&mut self, base: &str, l: &ListenerToml) -> ConnectionLimit {
        self.connection_limit(base, l.max_connections.as_ref(), l.resume_at.as_ref(), true)
    }

    fn connection_limit(
        &mut self,
        base: &str,
        max: Option<&Spanned<i64>>,
        resume_at: Option<&Spanned<i64>>,
        resume_needs_max: bool,
    ) -> ConnectionLimit {
        // The range is written as i64 for the validator; 10 million always fits.
        let ceiling = i64::try_from(defaults::MAX_CONNECTIONS_MAX).unwrap_or(i64::MAX);
        let n = self.int(max, &format!("{base}.max_connections"), 0, ceiling, 0);
        let percent = self.int(
            resume_at,
            &format!("{base}.resume_at"),
            1,
            100,
            i64::from(defaults::RESUME_AT),
        );
        if resume_needs_max && n == 0 {
            if let Some(r) = resume_at {
                self.error(
                    r.span().start,
                    &format!("{base}.resume_at"),
                    "has no effect without max_connections; add max_connections = 1000",
                );
            }
        }
        ConnectionLimit {
            max: u64::try_from(n).unwrap_or(0),
            resume_at: u8::try_from(percent).unwrap_or(defaults::RESUME_AT),
        }
    }
}
