//! Building the ballast TOML text: tables of keys, each key with the imported line it came from.
//!
//! Values are rendered by the `toml` crate (strings are escaped as TOML requires); the layout
//! (table order, one key per line, `# from FILE:LINE` after each) is ours, so the text reads like
//! a file an operator would write and diffs well against a golden copy.

use super::{Format, Import, Loc};

/// A value for a key.
pub(super) type Value = toml::Value;

/// One `key = value`, with the line it came from.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    key: String,
    value: Value,
    at: Loc,
}

/// One TOML table: keys in the order they were set, and sub-tables written after them.
#[derive(Debug, Clone)]
pub(super) struct Table {
    /// Where the thing this table stands for was defined.
    pub(super) at: Loc,
    entries: Vec<Entry>,
    /// `(header, table)`: `[upstream.health_check]`, `[[upstream.server]]`, `[[listener.route]]`.
    children: Vec<(&'static str, Table)>,
}

impl Table {
    pub(super) fn new(at: &Loc) -> Table {
        Table {
            at: at.clone(),
            entries: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Sets `key` (replacing an earlier value, which keeps its position).
    pub(super) fn set(&mut self, key: &str, value: impl Into<Value>, at: &Loc) {
        let value = value.into();
        if let Some(e) = self.entries.iter_mut().find(|e| e.key == key) {
            e.value = value;
            e.at = at.clone();
        } else {
            self.entries.push(Entry {
                key: key.to_string(),
                value,
                at: at.clone(),
            });
        }
    }

    /// The value of `key`, if set.
    pub(super) fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.value)
    }

    /// Adds a sub-table under `header` and returns it.
    pub(super) fn child(&mut self, header: &'static str, at: &Loc) -> &mut Table {
        self.children.push((header, Table::new(at)));
        let last = self.children.len() - 1;
        &mut self.children[last].1
    }

    /// Sub-tables under `header`, to change.
    pub(super) fn children_mut<'a>(
        &'a mut self,
        header: &'a str,
    ) -> impl Iterator<Item = &'a mut Table> {
        self.children
            .iter_mut()
            .filter(move |(h, _)| *h == header)
            .map(|(_, t)| t)
    }

    /// Moves the sub-tables under `header` before the others (TOML needs `[a.b]` written before
    /// `[[a.c]]` only for readability; the golden files expect the check first).
    pub(super) fn hoist(&mut self, header: &str) {
        self.children.sort_by_key(|(h, _)| *h != header);
    }

    /// Sub-tables under `header`.
    pub(super) fn children<'a>(&'a self, header: &'a str) -> impl Iterator<Item = &'a Table> {
        self.children
            .iter()
            .filter(move |(h, _)| *h == header)
            .map(|(_, t)| t)
    }
}

/// What an importer found: ballast tables plus what the operator must be told.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    pub(super) listeners: Vec<Table>,
    pub(super) upstreams: Vec<Table>,
    pub(super) warnings: Vec<String>,
    /// Ignored directives: name and first place seen.
    pub(super) ignored: Vec<(String, Loc)>,
    /// Lines appended as comments at the end.
    pub(super) trailer: Vec<String>,
    /// TOML lines written as they are after the tables (the `[vrrp]` section), each with the
    /// place it came from.
    pub(super) tail: Vec<(String, Loc)>,
}

impl Plan {
    /// Adds a warning naming `at`.
    pub(super) fn warn(&mut self, at: &Loc, message: impl AsRef<str>) {
        let w = format!("{at}: {}", message.as_ref());
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    /// Records an ignored directive (listed once, with the first place it appears).
    pub(super) fn ignore(&mut self, name: &str, at: &Loc) {
        if !self.ignored.iter().any(|(n, _)| n == name) {
            self.ignored.push((name.to_string(), at.clone()));
        }
    }

    /// The TOML text, with a header that says where it came from.
    pub(super) fn render(self, format: Format, origin: &str) -> Import {
        let mut w = Writer::default();
        w.comment(&format!(
            "ballast configuration imported from the {} configuration {origin}.",
            format.as_str()
        ));
        w.comment("Each key names the line it came from (# from FILE:LINE).");
        for warning in &self.warnings {
            w.comment(&format!("warning: {warning}"));
        }
        let ignored: Vec<String> = self
            .ignored
            .iter()
            .map(|(n, at)| format!("{n} ({at})"))
            .collect();
        if !ignored.is_empty() {
            w.comment(&format!(
                "ignored (they do not matter to a balancer): {}",
                ignored.join(", ")
            ));
        }
        for l in &self.listeners {
            w.table("[[listener]]", l, "listener");
        }
        for u in &self.upstreams {
            w.table("[[upstream]]", u, "upstream");
        }
        if !self.tail.is_empty() {
            w.blank();
            for (text, at) in &self.tail {
                w.line(text, Some(at));
            }
        }
        if !self.trailer.is_empty() {
            w.blank();
            for line in &self.trailer {
                w.comment(line);
            }
        }
        Import {
            toml: w.text,
            warnings: self.warnings,
            ignored,
            lines: w.lines,
        }
    }
}

#[derive(Default)]
struct Writer {
    text: String,
    lines: Vec<Option<Loc>>,
}

impl Writer {
    fn line(&mut self, s: &str, at: Option<&Loc>) {
        self.text.push_str(s);
        self.text.push('\n');
        self.lines.push(at.cloned());
    }

    fn blank(&mut self) {
        self.line("", None);
    }

    fn comment(&mut self, s: &str) {
        if s.is_empty() {
            self.line("#", None);
        } else {
            self.line(&format!("# {s}"), None);
        }
    }

    fn table(&mut self, header: &str, t: &Table, prefix: &str) {
        self.blank();
        self.line(&format!("{header}  # from {}", t.at), Some(&t.at));
        for e in &t.entries {
            self.line(
                &format!("{} = {}  # from {}", e.key, e.value, e.at),
                Some(&e.at),
            );
        }
        for (h, c) in &t.children {
            let nested = if h.starts_with("[[") {
                format!("[[{prefix}.{}]]", h.trim_matches(['[', ']']))
            } else {
                format!("[{prefix}.{}]", h.trim_matches(['[', ']']))
            };
            self.table(&nested, c, prefix);
        }
    }
}

/// A ballast name (`[A-Za-z0-9._-]`, at most 64) made from free text: other characters become `-`.
pub(super) fn name(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(64);
    s
}

/// A UDP virtual service (LVS `-u`, Keepalived `protocol UDP`, nginx `listen … udp`): a
/// `protocol = "udp"` listener. Kept as the one place that decides it, returning a message when
/// a service cannot be run as UDP.
pub(super) fn udp_listener(listener: &mut Table, at: &Loc) -> Result<(), String> {
    listener.set("protocol", "udp", at);
    Ok(())
}
