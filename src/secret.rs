//! Secrets in the configuration: a type that never prints its value, and the check that files
//! holding secrets are not open to other users.
//!
//! The secrets ballast holds are the VRRP `auth_pass`, the admin API token (inline or from
//! `token_file`) and TLS private keys. None of them may reach a log line, an error message, the
//! admin API, `ballast check` output or a `{:?}` of the configuration:
//!
//! - `auth_pass` and the inline admin token are [`Secret`]s in the validated model, so a `Debug`
//!   of a [`crate::config::Config`] (or of anything holding one) prints `<redacted>`; the value
//!   is read only where it is used ([`Secret::expose`]: building adverts, comparing tokens).
//! - The admin token from `token_file` is read into a [`Secret`] too; errors about that file
//!   name the path and what the OS said, never its contents.
//! - TLS keys are parsed by rustls into types that do not print key material; errors about a
//!   key file name the file and what is wrong with it.
//! - Configuration diagnostics quote what was wrong with a value only for keys that are not
//!   secrets: a bad `auth_pass` is reported by its length, not its text.
//!
//! [`exposed_files`] lists each file that holds a secret (the configuration file itself when it
//! has `auth_pass` or an inline `token`; `token_file`; each `key_file`) and is readable or
//! writable by its group or by others, as a warning with the fix; `ballast check` prints them
//! and `ballast run` logs them at start. ssh refuses such key files; ballast warns and goes on,
//! because a shared configuration directory is a choice an operator may have made on purpose.

use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::config::{AdminToken, Config};

/// A secret from the configuration: compared and used, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One warning per file holding a secret that group or others may read or write: the path,
/// its mode, what secret it holds and the fix.
pub fn exposed_files(cfg: &Config) -> Vec<String> {
    let mut files: Vec<(&Path, &str)> = Vec::new();
    let inline_token = cfg
        .admin
        .as_ref()
        .is_some_and(|a| matches!(a.token, Some(AdminToken::Inline(_))));
    let auth_pass = cfg.vrrp.iter().any(|i| i.auth_pass.is_some());
    let origin = Path::new(&cfg.origin);
    if inline_token {
        files.push((origin, "the admin token (admin.token)"));
    } else if auth_pass {
        files.push((origin, "a VRRP password (auth_pass)"));
    }
    if let Some(AdminToken::File(path)) = cfg.admin.as_ref().and_then(|a| a.token.as_ref()) {
        files.push((path, "the admin token (admin.token_file)"));
    }
    for l in &cfg.listeners {
        for c in &l.certificates {
            if !files.iter().any(|(p, _)| *p == c.key_file.as_path()) {
                files.push((&c.key_file, "a TLS private key (key_file)"));
            }
        }
    }
    let owner_hint = cfg.global.run_as.as_ref().map(|r| r.user.as_str());
    files
        .into_iter()
        .filter_map(|(path, what)| exposed(path, what, owner_hint))
        .collect()
}

/// The warning for `path` when its mode lets group or others in; `None` when it does not, or
/// when it cannot be looked at (a missing file is reported elsewhere, where it is read).
fn exposed(path: &Path, what: &str, run_as: Option<&str>) -> Option<String> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return None;
    }
    let who = match (mode & 0o070 != 0, mode & 0o007 != 0) {
        (true, true) => "its group and other users",
        (true, false) => "its group",
        _ => "other users",
    };
    let path = path.display();
    let mut msg =
        format!("{path} holds {what} and is open to {who} (mode {mode:04o}); run chmod 600 {path}");
    if let Some(user) = run_as {
        msg.push_str(&format!(
            " (and chown {user} {path} if it must be read again after the switch to user {user}, as on reload)"
        ));
    }
    Some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(<redacted>)");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn debug_of_a_configuration_and_of_an_advert_shows_no_secret() {
        let cfg = Config::from_str(
            "[admin]\nbind = \"127.0.0.1:0\"\ntoken = \"tok-0123456789abcdef\"\n\
             [[vrrp.instance]]\nname = \"v\"\ninterface = \"eth0\"\nvirtual_router_id = 5\n\
             authentication = { auth_type = \"PASS\", auth_pass = \"pw-9x7z\" }\n\
             virtual_ipaddress = [\"10.0.0.5/24\"]\n",
            "t.toml",
        )
        .expect("valid");
        let text = format!("{cfg:?} {cfg:#?}");
        assert!(!text.contains("tok-0123456789abcdef"), "{text}");
        assert!(!text.contains("pw-9x7z"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
        let auth = crate::vrrp::packet::Auth::pass("pw-9x7z");
        assert_eq!(format!("{auth:?}"), "Pass(<redacted>)");
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_not_quoted_in_the_diagnostic() {
        for (text, key) in [
            ("[admin]\ntoken = 918273645546372819\n", "admin.token"),
            (
                "[[vrrp.instance]]\nauthentication = { auth_type = \"PASS\", auth_pass = 91827364 }\n",
                "auth_pass",
            ),
        ] {
            let err = Config::from_str(text, "t.toml").expect_err("wrong type");
            let msg = err.to_string();
            assert!(msg.contains(key), "{msg}");
            assert!(msg.contains("found an integer; expected"), "{msg}");
            assert!(!msg.contains("918273") && !msg.contains("91827364"), "{msg}");
        }
    }

    #[test]
    fn a_file_open_to_others_is_reported_with_its_mode_and_the_fix() {
        let dir = std::env::temp_dir().join(format!("ballast-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let f = dir.join("token");
        std::fs::write(&f, "x").expect("write");
        for (mode, who) in [
            (0o644, Some("its group and other users")),
            (0o640, Some("its group")),
            (0o604, Some("other users")),
            (0o600, None),
            (0o400, None),
        ] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let got = exposed(&f, "the admin token", None);
            match who {
                None => assert_eq!(got, None, "mode {mode:o}"),
                Some(who) => {
                    let got = got.expect("a warning");
                    assert!(got.contains(who), "{got}");
                    assert!(got.contains(&format!("(mode {mode:04o})")), "{got}");
                    assert!(got.contains(&format!("chmod 600 {}", f.display())), "{got}");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
