//! Validation of `[global] user` and `group`. A child of `validate.rs`, sharing its `Validator`;
//! same rules: every problem collected with its line, column and key path.
//!
//! The one place validation reads outside the file: names are looked up in the user and group
//! databases (`getpwnam`, `getgrnam`, through NSS), so that an unknown user is reported by
//! `ballast check` at its line rather than by the running process after it bound its sockets.
//! A number is taken as an id; a user id with no entry needs `group` (there is no primary group
//! to fall back on).

use ::toml::Spanned;
use nix::unistd::{Gid, Group, Uid, User};

use super::super::toml::{GlobalToml, IdToml, StrOrInt};
use super::super::RunAs;
use super::Validator;

/// A user or group as looked up: its id, the name to print, and (users) its primary group.
struct Found {
    id: u32,
    name: String,
    primary_gid: Option<u32>,
    /// The user's name in the database, for its supplementary groups.
    db_name: Option<String>,
}

impl Validator<'_, '_> {
    /// `user` and `group`; `None` when neither is given (or they are wrong: the error is
    /// recorded).
    pub(super) fn run_as(&mut self, raw: &GlobalToml) -> Option<RunAs> {
        let Some(user) = &raw.user else {
            if let Some(g) = &raw.group {
                self.error(
                    g.span().start,
                    "global.group",
                    "has no effect without user; add user = \"ballast\" (a user name or id) beside it",
                );
            }
            return None;
        };
        let u = self.lookup(user, "global.user", Kind::User)?;
        if u.id == 0 {
            self.error(
                user.span().start,
                "global.user",
                "is root, which drops nothing; name an unprivileged user such as \"nobody\", or remove user to stay as started",
            );
            return None;
        }
        let g = match &raw.group {
            Some(g) => self.lookup(g, "global.group", Kind::Group)?,
            None => {
                let Some(gid) = u.primary_gid else {
                    self.error(
                        user.span().start,
                        "global.user",
                        format!(
                            "user id {} has no entry in the user database, so no primary group; add group = \"nogroup\" (a group name or id)",
                            u.id
                        ),
                    );
                    return None;
                };
                Found {
                    id: gid,
                    name: Group::from_gid(Gid::from_raw(gid))
                        .ok()
                        .flatten()
                        .map_or_else(|| gid.to_string(), |g| g.name),
                    primary_gid: None,
                    db_name: None,
                }
            }
        };
        let groups = match &u.db_name {
            Some(name) => supplementary(name, g.id),
            None => vec![g.id],
        };
        Some(RunAs {
            user: u.name,
            uid: u.id,
            group: g.name,
            gid: g.id,
            groups,
        })
    }

    fn lookup(&mut self, value: &Spanned<IdToml>, key: &str, kind: Kind) -> Option<Found> {
        let at = value.span().start;
        let text = match &value.get_ref().0 {
            StrOrInt::Int(n) => n.to_string(),
            StrOrInt::Str(s) => s.clone(),
        };
        let what = kind.what();
        if text.is_empty() {
            self.error(
                at,
                key,
                format!("is empty; expected a {what} name or a numeric id"),
            );
            return None;
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            let Ok(id) = text.parse::<u32>() else {
                self.error(
                    at,
                    key,
                    format!("{text} is out of range; allowed: a {what} id in 0..=4294967294"),
                );
                return None;
            };
            if id == u32::MAX {
                self.error(
                    at,
                    key,
                    format!("{text} is out of range; allowed: a {what} id in 0..=4294967294"),
                );
                return None;
            }
            return Some(match kind {
                Kind::User => {
                    let entry = User::from_uid(Uid::from_raw(id)).ok().flatten();
                    Found {
                        id,
                        name: text,
                        primary_gid: entry.as_ref().map(|u| u.gid.as_raw()),
                        db_name: entry.map(|u| u.name),
                    }
                }
                Kind::Group => Found {
                    id,
                    name: text,
                    primary_gid: None,
                    db_name: None,
                },
            });
        }
        let found = match kind {
            Kind::User => User::from_name(&text).map(|u| {
                u.map(|u| Found {
                    id: u.uid.as_raw(),
                    name: text.clone(),
                    primary_gid: Some(u.gid.as_raw()),
                    db_name: Some(u.name),
                })
            }),
            Kind::Group => Group::from_name(&text).map(|g| {
                g.map(|g| Found {
                    id: g.gid.as_raw(),
                    name: text.clone(),
                    primary_gid: None,
                    db_name: None,
                })
            }),
        };
        match found {
            Ok(Some(f)) => Some(f),
            Ok(None) => {
                let (example, db) = match kind {
                    Kind::User => ("\"nobody\"", "getent passwd"),
                    Kind::Group => ("\"nogroup\"", "getent group"),
                };
                self.error(
                    at,
                    key,
                    format!(
                        "no {what} named {text:?} on this host; allowed: a {what} name that `{db}` lists (such as {example}) or a numeric id"
                    ),
                );
                None
            }
            Err(e) => {
                self.error(at, key, format!("cannot look up {what} {text:?}: {e}"));
                None
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    User,
    Group,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Group => "group",
        }
    }
}

/// The groups of user `name` in the group database, with `gid` (initgroups(3)'s list); just
/// `gid` when they cannot be listed.
fn supplementary(name: &str, gid: u32) -> Vec<u32> {
    let Ok(cname) = std::ffi::CString::new(name) else {
        return vec![gid];
    };
    match nix::unistd::getgrouplist(&cname, Gid::from_raw(gid)) {
        Ok(list) => {
            let mut ids: Vec<u32> = list.iter().map(|g| g.as_raw()).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        }
        Err(_) => vec![gid],
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const TAIL: &str = "[[listener]]\nname = \"a\"\nbind = \"127.0.0.1:0\"\nupstream = \"u\"\n\
                        [[upstream]]\nname = \"u\"\nserver = [{ address = \"127.0.0.1:1\" }]\n";

    /// `global` (a `[global]` table) followed by a listener and an upstream.
    fn load(global: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_str(&format!("{global}{TAIL}"), "t.toml")
    }

    fn errors(text: &str) -> Vec<String> {
        match load(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.diagnostics().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn an_unknown_user_or_group_names_the_line_the_key_and_what_is_allowed() {
        assert_eq!(
            errors("[global]\nuser = \"no-such-user-b4\"\n"),
            ["t.toml:2:8: global.user: no user named \"no-such-user-b4\" on this host; allowed: a user name that `getent passwd` lists (such as \"nobody\") or a numeric id"]
        );
        assert_eq!(
            errors("[global]\nuser = 65534\ngroup = \"no-such-group-b4\"\n"),
            ["t.toml:3:9: global.group: no group named \"no-such-group-b4\" on this host; allowed: a group name that `getent group` lists (such as \"nogroup\") or a numeric id"]
        );
    }

    #[test]
    fn group_alone_root_and_an_id_without_entry_or_group_are_refused() {
        assert_eq!(
            errors("[global]\ngroup = \"nogroup\"\n"),
            ["t.toml:2:9: global.group: has no effect without user; add user = \"ballast\" (a user name or id) beside it"]
        );
        let root = errors("[global]\nuser = 0\n");
        assert!(
            root[0].starts_with("t.toml:2:8: global.user: is root"),
            "{root:?}"
        );
        let free = (60_000..65_000)
            .find(|id| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*id))
                    .ok()
                    .flatten()
                    .is_none()
            })
            .expect("a free uid");
        let no_group = errors(&format!("[global]\nuser = {free}\n"));
        assert!(
            no_group[0].contains("has no entry in the user database")
                && no_group[0].contains("add group"),
            "{no_group:?}"
        );
        let cfg = load(&format!("[global]\nuser = \"{free}\"\ngroup = 4242\n"))
            .expect("an id with a group is fine");
        let r = cfg.global.run_as.expect("run_as");
        assert_eq!((r.uid, r.gid, r.groups), (free, 4242, vec![4242]));
        assert_eq!(errors("[global]\nuser = -1\n").len(), 1);
        assert_eq!(errors("[global]\nuser = \"\"\n").len(), 1);
    }

    #[test]
    fn a_named_user_gets_its_ids_and_groups_from_the_databases() {
        let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
            eprintln!("no user nobody on this host; nothing to compare");
            return;
        };
        let cfg = load("[global]\nuser = \"nobody\"\n").expect("valid");
        let r = cfg.global.run_as.expect("run_as");
        assert_eq!(r.user, "nobody");
        assert_eq!(r.uid, nobody.uid.as_raw());
        assert_eq!(r.gid, nobody.gid.as_raw());
        assert!(r.groups.contains(&r.gid), "{:?}", r.groups);
        assert_eq!(load("[global]\n").expect("valid").global.run_as, None);
    }
}
