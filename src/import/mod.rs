//! Configurations operators already have: Keepalived, nginx and `ipvsadm-save` output, turned
//! into ballast TOML.
//!
//! This module owns reading those formats and mapping each directive to ballast keys. It does
//! not own validation: every importer produces ballast TOML *text*, which then goes through
//! [`Config::from_str`] like any hand-written file, so `ballast run --keepalived FILE` is exactly
//! `ballast import keepalived FILE` followed by `ballast run`. The flow:
//!
//! ```text
//! keepalived.conf --keepalived::parse--> tree of blocks (file:line on every node)
//!                 --keepalived::map----> Plan (listeners, upstreams, notes)
//! nginx.conf      --nginx::parse/map---> Plan
//! ipvsadm-save    --ipvsadm::map-------> Plan
//! Plan            --emit::render-------> TOML text, each key with `# from FILE:LINE`
//!                 --Config::from_str---> Config
//! ```
//!
//! The parsers are written by hand: no crate reads Keepalived's format, and nginx's
//! (words, quotes, `;`, `{}`, `include`) is small enough that a dependency would bring more
//! than it saves. What ballast cannot do the same way is said, never hidden: a directive it does
//! not know is an error naming `file:line`; one that does not matter to a balancer (nginx `gzip`,
//! Keepalived `notification_email`) is listed once as ignored; an approximation (Keepalived
//! `lb_kind DR`, the `lblc` scheduler) is a warning naming the line and what differs.

use std::fmt;
use std::path::Path;

use crate::config::{Config, ConfigError};

mod emit;
pub mod ipvsadm;
pub mod keepalived;
pub mod nginx;
mod source;

pub use emit::Plan;
pub use source::Loc;

/// The formats ballast imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `keepalived.conf`: `virtual_server`, `real_server`, checkers, `vrrp_instance`.
    Keepalived,
    /// `nginx.conf`: `http` and `stream` `upstream`s and `server`s.
    Nginx,
    /// `ipvsadm-save -n` / `ipvsadm -Sn` output.
    Ipvsadm,
}

impl Format {
    /// The name used on the command line and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Keepalived => "keepalived",
            Format::Nginx => "nginx",
            Format::Ipvsadm => "ipvsadm",
        }
    }
}

/// One problem in an imported file: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file and line of the directive.
    pub at: Loc,
    /// What is wrong and, where there is one, what to write instead.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// Why a configuration could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file (or an included one) could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The path that was tried.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Directives ballast cannot run; every one found is listed, in file order.
    #[error("{}", list(.0))]
    Invalid(Vec<Problem>),
    /// The imported configuration does not pass ballast's own validation; each problem names the
    /// imported line it came from where known.
    #[error("the imported configuration is not valid:\n{}", .0.join("\n"))]
    Config(Vec<String>),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// An imported configuration: the TOML text and what the operator must know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// ballast TOML, each key followed by `# from FILE:LINE`; warnings and ignored directives are
    /// repeated as comments at its top.
    pub toml: String,
    /// Approximations and differences, each naming the line (also at the top of `toml`).
    pub warnings: Vec<String>,
    /// Directives that do not matter to a balancer, each listed once with where it first appears.
    pub ignored: Vec<String>,
    /// For each line of `toml` (0-based), the imported line it came from.
    lines: Vec<Option<Loc>>,
}

impl Import {
    /// Warnings and ignored directives as the lines printed on stderr.
    pub fn notes(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .warnings
            .iter()
            .map(|w| format!("warning: {w}"))
            .collect();
        if !self.ignored.is_empty() {
            out.push(format!(
                "ignored (they do not matter to a balancer): {}",
                self.ignored.join(", ")
            ));
        }
        out
    }

    /// Validates the TOML as `ballast run -c` would.
    ///
    /// # Errors
    /// [`ImportError::Config`] with every diagnostic, each prefixed by the imported line its key
    /// came from.
    pub fn config(&self, origin: &str) -> Result<Config, ImportError> {
        Config::from_str(&self.toml, origin).map_err(|e| match e {
            ConfigError::Invalid(diags) => ImportError::Config(
                diags
                    .iter()
                    .map(|d| match self.source_of(d.line) {
                        Some(at) => format!("{at}: {}: {}", d.key, self.relines(&d.message)),
                        None => d.to_string(),
                    })
                    .collect(),
            ),
            ConfigError::Read { path, source } => ImportError::Read { path, source },
        })
    }
}

impl Import {
    /// The imported line that TOML line `line` (1-based) came from.
    fn source_of(&self, line: usize) -> Option<&Loc> {
        line.checked_sub(1)
            .and_then(|i| self.lines.get(i))
            .and_then(Option::as_ref)
    }

    /// Rewrites "at line N" (a TOML line, in validation messages) as the imported `FILE:LINE`.
    fn relines(&self, message: &str) -> String {
        let Some((head, tail)) = message.split_once("at line ") else {
            return message.to_string();
        };
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        match digits.parse().ok().and_then(|n| self.source_of(n)) {
            Some(at) => format!("{head}at {at}{}", &tail[digits.len()..]),
            None => message.to_string(),
        }
    }
}

/// Imports the file at `path` (for [`Format::Ipvsadm`], `-` reads standard input).
///
/// # Errors
/// [`ImportError::Read`] when a file cannot be read, [`ImportError::Invalid`] with every
/// directive that cannot be imported.
pub fn import_file(format: Format, path: &Path) -> Result<Import, ImportError> {
    let plan = match format {
        Format::Keepalived => keepalived::import(path)?,
        Format::Nginx => nginx::import(path)?,
        Format::Ipvsadm => {
            let (text, origin) = if path == Path::new("-") {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(
                    |source| ImportError::Read {
                        path: "<stdin>".into(),
                        source,
                    },
                )?;
                (text, "<stdin>".to_string())
            } else {
                (source::read(path)?, path.display().to_string())
            };
            ipvsadm::map(&text, &origin)?
        }
    };
    Ok(plan.render(format, &path.display().to_string()))
}

/// Imports `text` as if it were the file `name`, without touching the filesystem: Keepalived
/// and nginx `include`s are reported as problems rather than read. Used by tests and fuzzing.
///
/// # Errors
/// [`ImportError::Invalid`] with every directive that cannot be imported (and every `include`).
pub fn import_str(format: Format, text: &str, name: &str) -> Result<Import, ImportError> {
    let plan = match format {
        Format::Keepalived => keepalived::import_str(text, name)?,
        Format::Nginx => nginx::import_str(text, name)?,
        Format::Ipvsadm => ipvsadm::map(text, name)?,
    };
    Ok(plan.render(format, name))
}

/// Imports and validates: what `ballast run --keepalived FILE` and `ballast check` do.
///
/// # Errors
/// As [`import_file`], then [`ImportError::Config`].
pub fn load(format: Format, path: &Path) -> Result<(Config, Import), ImportError> {
    let import = import_file(format, path)?;
    let origin = format!("{} (imported from {})", path.display(), format.as_str());
    let config = import.config(&origin)?;
    Ok((config, import))
}
