//! Splitting a template's source into parts (text, `{{ }}`/`{* *}` output, `{% %}` code), the
//! way lua-resty-template's scanner reads it, with the strict errors this crate adds: unclosed
//! tags, includes and layout blocks are refused with their line and column.

use super::plain::Piece;
use super::TemplateError;

/// A part of a template as parsed; `line` is where its text or code starts, for error messages.
#[derive(Debug, Clone)]
pub(super) enum Part {
    Text {
        text: String,
        line: usize,
    },
    Output {
        escape: bool,
        code: String,
        line: usize,
        path: Option<Vec<String>>,
    },
    Code {
        code: String,
        line: usize,
    },
}

/// Lua's reserved words: `{{ true }}` or `{{ nil }}` look like paths but are not.
const LUA_KEYWORDS: &[&str] = &[
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
    "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
];

/// Names the sandbox (or the generated chunk) defines. A path starting with one of them may not
/// resolve to the data, so it is left to Lua, which resolves it as lua-resty-template would.
const LUA_NAMES: &[&str] = &[
    "_G",
    "_ENV",
    "_VERSION",
    "assert",
    "echo",
    "error",
    "getmetatable",
    "ipairs",
    "math",
    "next",
    "os",
    "pairs",
    "pcall",
    "print",
    "rawequal",
    "rawget",
    "rawlen",
    "rawset",
    "select",
    "setmetatable",
    "string",
    "table",
    "tonumber",
    "tostring",
    "type",
    "utf8",
    "warn",
    "xpcall",
];

impl Part {
    pub(super) fn is_plain(&self) -> bool {
        match self {
            Part::Text { .. } => true,
            Part::Output { path, .. } => path
                .as_ref()
                .is_some_and(|keys| !LUA_NAMES.contains(&keys[0].as_str())),
            Part::Code { .. } => false,
        }
    }

    pub(super) fn into_piece(self) -> Option<Piece> {
        match self {
            Part::Text { text, .. } => Some(Piece::Text(text)),
            Part::Output {
                escape,
                path: Some(keys),
                ..
            } => Some(Piece::Path { escape, keys }),
            _ => None,
        }
    }
}

/// `a.b.c` with optional surrounding spaces, each key an identifier and not a keyword.
fn dotted_path(expr: &str) -> Option<Vec<String>> {
    let keys: Vec<&str> = expr.trim().split('.').collect();
    let is_key = |key: &&str| {
        let mut chars = key.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !LUA_KEYWORDS.contains(key)
    };
    keys.iter()
        .all(is_key)
        .then(|| keys.iter().map(|k| k.to_string()).collect())
}

/// Splits a template into parts, following lua-resty-template's scanner: find a `{`, look at the
/// next character, find the matching closer.
pub(super) struct Parser<'a> {
    src: &'a str,
    newlines: Vec<usize>,
    parts: Vec<Part>,
    /// Start of the text not yet emitted.
    text_from: usize,
    /// Where to look for the next `{`.
    from: usize,
}

/// Where a tag is in the source: its `{` at `start`, the backslash before it to drop
/// (`backslash`, 0 or 1, see [`Parser::escaped`]), its code from `code_at` to its closer at `end`.
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    backslash: usize,
    code_at: usize,
    end: usize,
}

/// What a `{` followed by a tag character turned out to be.
enum Opening {
    /// Text after all (an incomplete include or block).
    Text,
    /// A tag; for a `{-raw-}` / `{-verbatim-}` block, where its closing tag is and how long.
    Tag { raw_close: Option<(usize, usize)> },
}

/// The closer of the tag opened by `{` and `kind`, if `kind` opens one.
fn closer(kind: u8) -> Option<&'static str> {
    Some(match kind {
        b'{' => "}}",
        b'*' => "*}",
        b'%' => "%}",
        b'#' => "#}",
        b'-' => "-}",
        b'(' => ")}",
        b'[' => "]}",
        _ => return None,
    })
}

impl<'a> Parser<'a> {
    pub(super) fn new(src: &'a str) -> Parser<'a> {
        let newlines = src.match_indices('\n').map(|(at, _)| at).collect();
        Parser {
            src,
            newlines,
            parts: Vec::new(),
            text_from: 0,
            from: 0,
        }
    }

    fn line(&self, at: usize) -> usize {
        self.newlines.partition_point(|&nl| nl < at) + 1
    }

    fn column(&self, at: usize) -> usize {
        let start = self.src[..at].rfind('\n').map_or(0, |nl| nl + 1);
        self.src[start..at].chars().count() + 1
    }

    fn find(&self, needle: &str, from: usize) -> Option<usize> {
        self.src.get(from..)?.find(needle).map(|at| at + from)
    }

    /// Text from `from` to `to`, merged into the previous text part when there is one (a comment
    /// between two texts leaves one part).
    fn text(&mut self, from: usize, to: usize) {
        if from >= to {
            return;
        }
        let text = &self.src[from..to];
        if let Some(Part::Text { text: last, .. }) = self.parts.last_mut() {
            last.push_str(text);
        } else {
            let line = self.line(from);
            self.parts.push(Part::Text {
                text: text.to_string(),
                line,
            });
        }
    }

    /// The byte after a tag's end, skipping one newline: a code block, comment or raw block on
    /// its own line leaves no empty line behind (as in lua-resty-template).
    fn after_newline(&self, at: usize) -> usize {
        let rest = &self.src[at..];
        if rest.starts_with("\r\n") {
            at + 2
        } else if rest.starts_with('\n') {
            at + 1
        } else {
            at
        }
    }

    /// How a backslash before the tag at `s` acts: `\{{` makes the tag text (returns true), and
    /// `\\{{` writes one backslash before a real tag; either way one backslash is dropped.
    fn escaped(&self, s: usize) -> (bool, usize) {
        let bytes = self.src.as_bytes();
        match (s.checked_sub(1).map(|i| bytes[i]), s.checked_sub(2)) {
            (Some(b'\\'), Some(i)) if bytes[i] == b'\\' => (false, 1),
            (Some(b'\\'), _) => (true, 1),
            _ => (false, 0),
        }
    }

    fn unclosed(&self, s: usize, tag: &str) -> TemplateError {
        TemplateError::Unclosed {
            tag: tag.to_string(),
            line: self.line(s),
            column: self.column(s),
        }
    }

    fn unsupported(&self, s: usize, tag: &str, reason: &'static str) -> TemplateError {
        TemplateError::Unsupported {
            tag: tag.to_string(),
            reason,
            line: self.line(s),
            column: self.column(s),
        }
    }

    pub(super) fn parts(mut self) -> Result<Vec<Part>, TemplateError> {
        let src = self.src;
        while let Some(start) = self.find("{", self.from) {
            self.from = start + 1;
            let Some(kind) = src.as_bytes().get(start + 1).copied() else {
                continue;
            };
            let Some(closer) = closer(kind) else {
                continue;
            };
            let code_at = start + 2;
            let end = self.find(closer, code_at);
            let raw_close = match self.opening(kind, start, code_at, end)? {
                Opening::Text => continue,
                Opening::Tag { raw_close } => raw_close,
            };
            let (escaped, backslash) = self.escaped(start);
            if escaped {
                // The tag becomes the start of the next text, minus the backslash.
                self.text(self.text_from, start - backslash);
                self.text_from = start;
                continue;
            }
            let Some(end) = end else { continue };
            let span = Span {
                start,
                backslash,
                code_at,
                end,
            };
            self.tag(kind, span, raw_close)?;
        }
        self.text(self.text_from, src.len());
        Ok(self.parts)
    }

    /// Decides whether the `{` at `s` opens a tag. Includes and blocks are tags only when
    /// complete, as in lua-resty-template (so `{-1}` in a JSON body is text); the other tags must
    /// close, unless escaped.
    fn opening(
        &self,
        kind: u8,
        s: usize,
        code_at: usize,
        end: Option<usize>,
    ) -> Result<Opening, TemplateError> {
        let src = self.src;
        let raw_close = match (kind, end) {
            (b'(' | b'[', None) => return Ok(Opening::Text),
            (b'-', None) => return Ok(Opening::Text),
            (b'-', Some(e)) => {
                let tag = &src[s..e + 2];
                let name = src[code_at..e].trim();
                let close = self.find(tag, e + 2);
                let raw = name == "raw" || name == "verbatim";
                match close {
                    None if raw => return Err(self.unclosed(s, tag)),
                    None => return Ok(Opening::Text),
                    Some(_) if !raw && !self.escaped(s).0 => {
                        return Err(self.unsupported(
                            s,
                            tag,
                            "blocks other than {-raw-} and {-verbatim-} are not supported",
                        ))
                    }
                    Some(x) => Some((x, tag.len())),
                }
            }
            (_, None) if !self.escaped(s).0 => {
                return Err(self.unclosed(s, &src[s..s + 2]));
            }
            _ => None,
        };
        Ok(Opening::Tag { raw_close })
    }

    /// Emits the unescaped, closed tag of `kind` at `span` with the text before it, and moves the
    /// cursors past it.
    fn tag(
        &mut self,
        kind: u8,
        span: Span,
        raw_close: Option<(usize, usize)>,
    ) -> Result<(), TemplateError> {
        let src = self.src;
        let Span {
            start: s,
            backslash,
            code_at,
            end: e,
        } = span;
        match kind {
            b'{' | b'*' => {
                self.text(self.text_from, s - backslash);
                let code = &src[code_at..e];
                self.parts.push(Part::Output {
                    escape: kind == b'{',
                    code: code.to_string(),
                    line: self.line(code_at),
                    path: dotted_path(code),
                });
                (self.text_from, self.from) = (e + 2, e + 2);
            }
            b'%' => {
                // Indentation before a code block goes with it, as in lua-resty-template.
                let before = src[self.text_from..s - backslash]
                    .trim_end_matches([' ', '\t', '\x0b', '\0'])
                    .len();
                self.text(self.text_from, self.text_from + before);
                self.parts.push(Part::Code {
                    code: src[code_at..e].to_string(),
                    line: self.line(code_at),
                });
                self.text_from = self.after_newline(e + 2);
                self.from = self.text_from;
            }
            b'#' => {
                self.text(self.text_from, s - backslash);
                self.text_from = self.after_newline(e + 2);
                self.from = self.text_from;
            }
            b'-' => {
                let Some((close, tag_len)) = raw_close else {
                    return Ok(());
                };
                self.text(self.text_from, s - backslash);
                // lua-resty-template emits the content as a Lua long string, which drops a
                // newline right after the opening tag.
                let content_at = self.after_newline(e + 2).min(close);
                self.text(content_at, close);
                self.text_from = self.after_newline(close + tag_len);
                self.from = self.text_from;
            }
            _ => return Err(self.unsupported(s, &src[s..e + 2], "includes are not supported")),
        }
        Ok(())
    }
}

pub(super) fn line_count(src: &str) -> usize {
    src.matches('\n').count() + 1
}
