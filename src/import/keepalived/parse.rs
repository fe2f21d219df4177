//! Keepalived's syntax: tokens, then a tree of directives with `FILE:LINE` on every node;
//! `include` is expanded while the tree is built.

use std::path::Path;
use std::sync::Arc;

use crate::import::source;
use crate::import::{ImportError, Loc, Problem};

// === the tree ===

/// One directive: its words, its block (if it has one) and where it is.
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
    pub(super) fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Newline,
}

/// Splits one file into tokens with their line numbers.
fn lex(text: &str, file: &Arc<str>, problems: &mut Vec<Problem>) -> Vec<(Tok, usize)> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<(Tok, usize)>, line: usize| {
        if !word.is_empty() {
            out.push((Tok::Word(std::mem::take(word)), line));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                flush(&mut word, &mut out, line);
                out.push((Tok::Newline, line));
                line += 1;
            }
            '#' | '!' if word.is_empty() => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '{' => {
                flush(&mut word, &mut out, line);
                out.push((Tok::Open, line));
            }
            '}' => {
                flush(&mut word, &mut out, line);
                out.push((Tok::Close, line));
            }
            '"' => {
                let start = line;
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' if chars.peek() == Some(&'"') => {
                            word.push('"');
                            chars.next();
                        }
                        '\n' => {
                            line += 1;
                            word.push(c);
                        }
                        _ => word.push(c),
                    }
                }
                if !closed {
                    problems.push(Problem {
                        at: Loc {
                            file: Arc::clone(file),
                            line: start,
                        },
                        message: "unterminated quoted string: a \" is never closed".into(),
                    });
                }
                // A quoted empty string is still a word.
                if word.is_empty() {
                    out.push((Tok::Word(String::new()), line));
                }
            }
            c if c.is_whitespace() => flush(&mut word, &mut out, line),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out, line);
    out.push((Tok::Newline, line));
    out
}

struct Parser<'a> {
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
        self.block(&toks, &mut i, &file, path, None)
    }

    /// Statements until `}` (when `opened` says where the block began) or the end of the file.
    fn block(
        &mut self,
        toks: &[(Tok, usize)],
        i: &mut usize,
        file: &Arc<str>,
        path: &Path,
        opened: Option<usize>,
    ) -> Result<Vec<Node>, ImportError> {
        let loc = |line| Loc {
            file: Arc::clone(file),
            line,
        };
        let mut nodes: Vec<Node> = Vec::new();
        let mut words: Vec<String> = Vec::new();
        let mut first_line = 0;
        loop {
            let Some((tok, line)) = toks.get(*i) else {
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
                        first_line = *line;
                    }
                    words.push(w.clone());
                }
                Tok::Newline | Tok::Open | Tok::Close => {
                    if !words.is_empty() {
                        let name = words.remove(0);
                        let node = Node {
                            name,
                            args: std::mem::take(&mut words),
                            children: None,
                            at: loc(first_line),
                        };
                        if node.name == "include" && *tok != Tok::Open {
                            self.include(&node, path, &mut nodes)?;
                        } else {
                            nodes.push(node);
                        }
                    }
                    match tok {
                        Tok::Open => {
                            let children = self.block(toks, i, file, path, Some(*line))?;
                            match nodes.last_mut() {
                                Some(n) if n.children.is_none() => n.children = Some(children),
                                _ => self.problems.push(Problem {
                                    at: loc(*line),
                                    message: "a { that opens no directive's block".into(),
                                }),
                            }
                        }
                        Tok::Close => {
                            if opened.is_some() {
                                return Ok(nodes);
                            }
                            self.problems.push(Problem {
                                at: loc(*line),
                                message: "unbalanced braces: this } closes no block".into(),
                            });
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn include(
        &mut self,
        node: &Node,
        path: &Path,
        into: &mut Vec<Node>,
    ) -> Result<(), ImportError> {
        let Some(pattern) = node.arg(0) else {
            self.problems.push(Problem {
                at: node.at.clone(),
                message: "include: a file or pattern is required".into(),
            });
            return Ok(());
        };
        match source::include(self.in_memory, self.depth, path, pattern) {
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
/// [`ImportError::Read`] for an unreadable file, [`ImportError::Invalid`] for syntax problems
/// (unbalanced braces, unterminated quotes, includes that match nothing).
pub(super) fn parse(path: &Path) -> Result<Vec<Node>, ImportError> {
    let mut problems = Vec::new();
    let nodes = Parser {
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
/// [`ImportError::Invalid`] for syntax problems and every `include`.
pub(super) fn parse_str(text: &str, name: &str) -> Result<Vec<Node>, ImportError> {
    let mut problems = Vec::new();
    let nodes = Parser {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lexer_keeps_quoted_words_and_drops_both_comment_kinds() {
        let file: Arc<str> = Arc::from("t.conf");
        let mut problems = Vec::new();
        let toks = lex("a \"b c\" # x\n! y\nd{e}", &file, &mut problems);
        let words: Vec<&Tok> = toks.iter().map(|(t, _)| t).collect();
        assert_eq!(
            words,
            [
                &Tok::Word("a".into()),
                &Tok::Word("b c".into()),
                &Tok::Newline,
                &Tok::Newline,
                &Tok::Word("d".into()),
                &Tok::Open,
                &Tok::Word("e".into()),
                &Tok::Close,
                &Tok::Newline,
            ]
        );
        assert!(problems.is_empty());
    }
}
