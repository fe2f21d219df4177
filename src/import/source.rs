//! Files, positions and `include` globs shared by the Keepalived and nginx readers.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ImportError;

/// A place in an imported file: `FILE:LINE`, the file as it was named (relative paths stay
/// relative, so the `# from` comments read as the operator wrote them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    /// The file, as given on the command line or resolved from an `include`.
    pub file: Arc<str>,
    /// 1-based line number.
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

impl Default for Loc {
    fn default() -> Loc {
        Loc {
            file: Arc::from(""),
            line: 0,
        }
    }
}

/// Reads a whole file.
pub(super) fn read(path: &Path) -> Result<String, ImportError> {
    std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Deepest nesting of includes followed (a file that includes itself stops here).
const MAX_INCLUDE_DEPTH: usize = 16;

/// The files an `include PATTERN` met `depth` includes deep should follow, or the message for
/// the operator: none when the configuration was given as text (`in_memory`), none past
/// [`MAX_INCLUDE_DEPTH`], else [`glob`]'s answer. Shared by the Keepalived and nginx parsers.
pub(super) fn include(
    in_memory: bool,
    depth: usize,
    including: &Path,
    pattern: &str,
) -> Result<Vec<PathBuf>, String> {
    if in_memory {
        return Err("include: not followed when the configuration is given as text".into());
    }
    if depth >= MAX_INCLUDE_DEPTH {
        return Err("include: nested more than 16 deep (does a file include itself?)".into());
    }
    glob(including, pattern)
}

/// The files an `include PATTERN` names, sorted, as Keepalived (glob(3)) and nginx do. A
/// relative pattern is taken from the including file's directory. Wildcards (`*`, `?`, `[…]`)
/// may appear in the last path component only, which is what configurations use
/// (`include /etc/keepalived/conf.d/*.conf`). `Err` is the message for the operator.
pub(super) fn glob(including: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let base = including.parent().unwrap_or(Path::new("."));
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        base.join(pattern)
    };
    let Some(name) = full.file_name().and_then(|n| n.to_str()) else {
        return Err(format!("include {pattern:?}: not a file name"));
    };
    let dir = full.parent().unwrap_or(Path::new("."));
    if dir.to_string_lossy().contains(['*', '?', '[']) {
        return Err(format!(
            "include {pattern:?}: wildcards are supported in the file name only, not in directories"
        ));
    }
    if !name.contains(['*', '?', '[']) {
        return if full.is_file() {
            Ok(vec![full])
        } else {
            Err(format!(
                "include {pattern:?}: no such file {}",
                full.display()
            ))
        };
    }
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "include {pattern:?}: cannot read directory {}: {e}",
            dir.display()
        )
    })?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| !n.starts_with('.') && matches(name.as_bytes(), n.as_bytes()))
        })
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

/// Shell-style matching of one path component: `*`, `?`, `[abc]`, `[a-z]`, `[!a]`.
fn matches(pat: &[u8], name: &[u8]) -> bool {
    match pat.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| matches(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && matches(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some((&c, tail)) = name.split_first() else {
                return false;
            };
            let Some(end) = rest.iter().skip(1).position(|&b| b == b']').map(|i| i + 1) else {
                return c == b'[' && matches(rest, tail);
            };
            let (negate, class) = match rest[..end].split_first() {
                Some((b'!' | b'^', cls)) => (true, cls),
                _ => (false, &rest[..end]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && matches(&rest[end + 1..], tail)
        }
        Some((&p, rest)) => name.first() == Some(&p) && matches(rest, &name[1..]),
    }
}

/// The closest of `candidates` to `word`, when it is a plausible typo (edit distance ≤ 2).
pub(super) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, c)| *d > 0 && *d <= 2.min(c.len() / 2 + 1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_the_shell() {
        assert!(matches(b"*.conf", b"a.conf"));
        assert!(!matches(b"*.conf", b"a.conf.bak"));
        assert!(matches(b"vs-?.conf", b"vs-1.conf"));
        assert!(matches(b"vs-[0-9].conf", b"vs-7.conf"));
        assert!(!matches(b"vs-[!0-9].conf", b"vs-7.conf"));
    }

    #[test]
    fn suggestions_are_near_misses_only() {
        assert_eq!(
            suggest("lb_algoo", &["lb_algo", "lb_kind"]),
            Some("lb_algo")
        );
        assert_eq!(suggest("zzz", &["lb_algo"]), None);
    }
}
