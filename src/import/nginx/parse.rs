//! nginx's syntax: tokens, then a tree of directives with `FILE:LINE` on every node; `include`
//! is expanded while the tree is built.

use std::path::Path;
use std::sync::Arc;

use crate::import::source;
use crate::import::{ImportError, Loc, Problem};

/// One directive.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) name: String,
    pub(super) args: Vec<String>,
    pub(super) children: Option<Vec<Node>>,
    pub(super) at: Loc,
}

impl Node {
    pub(super) fn kids(&self) -> &[Node] {
        self.children.as_deref().unwrap_or(&[])
    }
    pub(super) fn arg(&self, i: usize) -> &str {
        self.args.get(i).map(String::as_str).unwrap_or_default()
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Semi,
    Open,
    Close,
}

fn lex(text: &str, file: &Arc<str>, problems: &mut Vec<Problem>) -> Vec<(Tok, usize)> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let mut word = String::new();
    let mut word_line = 1;
    macro_rules! flush {
        () => {
            if !word.is_empty() {
                out.push((Tok::Word(std::mem::take(&mut word)), word_line));
            }
        };
    }
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                flush!();
                line += 1;
            }
            '#' if word.is_empty() => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            ';' => {
                flush!();
                out.push((Tok::Semi, line));
            }
            '{' => {
                flush!();
                out.push((Tok::Open, line));
            }
            '}' => {
                flush!();
                out.push((Tok::Close, line));
            }
            '"' | '\'' if word.is_empty() => {
                let start = line;
                word_line = line;
                let mut closed = false;
                while let Some(ch) = chars.next() {
                    match ch {
                        _ if ch == c => {
                            closed = true;
                            break;
                        }
                        '\\' => {
                            if let Some(n) = chars.next() {
                                word.push(n);
                            }
                        }
                        '\n' => {
                            line += 1;
                            word.push(ch);
                        }
                        _ => word.push(ch),
                    }
                }
                if !closed {
                    problems.push(Problem {
                        at: Loc {
                            file: Arc::clone(file),
                            line: start,
                        },
                        message: format!("unterminated quoted string: a {c} is never closed"),
                    });
                }
                out.push((Tok::Word(std::mem::take(&mut word)), start));
            }
            c if c.is_whitespace() => flush!(),
            c => {
                if word.is_empty() {
                    word_line = line;
                }
                word.push(c);
            }
        }
    }
    flush!();
    out
}

struct Parser<'a> {
    main: &'a Path,
    problems: &'a mut Vec<Problem>,
    depth: usize,
    /// Text given in memory ([`parse_str`]): `include` is a problem, never a filesystem read.
    in_memory: bool,
}

impl Parser<'_> {
    fn file(&mut self, path: &Path) -> Result<Vec<Node>, ImportError> {
        let text = source::read(path)?;
        self.text(&text, path)
    }

    fn text(&mut self, text: &str, path: &Path) -> Result<Vec<Node>, ImportError> {
        let file: Arc<str> = Arc::from(path.display().to_string());
        let toks = lex(text, &file, self.problems);
        let mut i = 0;
        self.block(&toks, &mut i, &file, None)
    }

    fn block(
        &mut self,
        toks: &[(Tok, usize)],
        i: &mut usize,
        file: &Arc<str>,
        opened: Option<usize>,
    ) -> Result<Vec<Node>, ImportError> {
        let loc = |line| Loc {
            file: Arc::clone(file),
            line,
        };
        let mut nodes = Vec::new();
        let mut words: Vec<String> = Vec::new();
        let mut first = 0;
        loop {
            let Some((tok, line)) = toks.get(*i) else {
                if let Some(w) = words.first() {
                    self.problems.push(Problem {
                        at: loc(first),
                        message: format!("{w}: missing ; at the end of the directive"),
                    });
                }
                if let Some(open) = opened {
                    self.problems.push(Problem {
                        at: loc(open),
                        message: "unbalanced braces: this { is never closed".into(),
                    });
                }
                return Ok(nodes);
            };
            *i += 1;
            match tok {
                Tok::Word(w) => {
                    if words.is_empty() {
                        first = *line;
                    }
                    words.push(w.clone());
                }
                Tok::Semi | Tok::Open => {
                    if words.is_empty() {
                        self.problems.push(Problem {
                            at: loc(*line),
                            message: format!(
                                "unexpected {}",
                                if *tok == Tok::Semi { ";" } else { "{" }
                            ),
                        });
                        continue;
                    }
                    let name = words.remove(0);
                    let mut node = Node {
                        name,
                        args: std::mem::take(&mut words),
                        children: None,
                        at: loc(first),
                    };
                    if *tok == Tok::Open {
                        node.children = Some(self.block(toks, i, file, Some(*line))?);
                        nodes.push(node);
                    } else if node.name == "include" {
                        self.include(&node, &mut nodes)?;
                    } else {
                        nodes.push(node);
                    }
                }
                Tok::Close => {
                    if let Some(w) = words.first() {
                        self.problems.push(Problem {
                            at: loc(first),
                            message: format!("{w}: missing ; at the end of the directive"),
                        });
                        words.clear();
                    }
                    if opened.is_some() {
                        return Ok(nodes);
                    }
                    self.problems.push(Problem {
                        at: loc(*line),
                        message: "unbalanced braces: this } closes no block".into(),
                    });
                }
            }
        }
    }

    fn include(&mut self, node: &Node, into: &mut Vec<Node>) -> Result<(), ImportError> {
        match source::include(self.in_memory, self.depth, self.main, node.arg(0)) {
            Ok(files) => {
                for f in files {
                    self.depth += 1;
                    let nodes = self.file(&f);
                    self.depth -= 1;
                    into.extend(nodes?);
                }
            }
            Err(message) => self.problems.push(Problem {
                at: node.at.clone(),
                message,
            }),
        }
        Ok(())
    }
}

/// Reads `path` and every file it includes into one tree.
///
/// # Errors
/// [`ImportError::Read`] for an unreadable file, [`ImportError::Invalid`] for syntax errors.
pub(super) fn parse(path: &Path) -> Result<Vec<Node>, ImportError> {
    let mut problems = Vec::new();
    let nodes = Parser {
        main: path,
        problems: &mut problems,
        depth: 0,
        in_memory: false,
    }
    .file(path)?;
    if problems.is_empty() {
        Ok(nodes)
    } else {
        Err(ImportError::Invalid(problems))
    }
}

/// Parses `text` (named `name` in locations) without touching the filesystem: an `include` is
/// reported as a problem instead of being read.
///
/// # Errors
/// [`ImportError::Invalid`] for syntax errors and every `include`.
pub(super) fn parse_str(text: &str, name: &str) -> Result<Vec<Node>, ImportError> {
    let mut problems = Vec::new();
    let nodes = Parser {
        main: Path::new(name),
        problems: &mut problems,
        depth: 0,
        in_memory: true,
    }
    .text(text, Path::new(name))?;
    if problems.is_empty() {
        Ok(nodes)
    } else {
        Err(ImportError::Invalid(problems))
    }
}
