//! Lua 5.4 syntax that the sandbox refuses before compiling: to-be-closed variables
//! (`local x <close> = …`).
//!
//! Why: the CPU budget is an error raised from Lua's instruction hook, and mlua raises it by
//! resetting the stack of the function the hook interrupted. Lua closes that function's
//! to-be-closed variables right there, inside the hook, where hooks are off, so a `__close`
//! handler runs with no budget at all (measured: `while true do end` in one never returns).
//! Kong runs LuaJIT, which has no `<close>`, so refusing the attribute costs Kong's users nothing.
//! The check reads tokens the way Lua's lexer does (strings, long brackets and comments skipped),
//! so `"<close>"` in a string or a comment is not refused, and `< close >` with spaces or comments
//! in between is.

/// Why a source is refused, with the line of the offending token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: to-be-closed variables ('<close>') are not allowed in the sandbox")]
pub(crate) struct ClosingRefused {
    pub line: usize,
}

/// Refuses sources that declare a to-be-closed variable. Malformed sources pass: Lua's own
/// parser reports their errors with its own messages.
pub(crate) fn refuse_to_be_closed(source: &str) -> Result<(), ClosingRefused> {
    let mut lexer = Lexer {
        src: source.as_bytes(),
        at: 0,
        line: 1,
    };
    // The last two significant tokens: `<` then `close` then `>` is the attribute.
    let mut previous: [Token; 2] = [Token::Other, Token::Other];
    while let Some(token) = lexer.next_token() {
        if token == Token::Greater && previous == [Token::Less, Token::Close] {
            return Err(ClosingRefused { line: lexer.line });
        }
        previous = [previous[1], token];
    }
    Ok(())
}

/// The tokens that matter here; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Less,
    Close,
    Greater,
    Other,
}

struct Lexer<'a> {
    src: &'a [u8],
    at: usize,
    line: usize,
}

impl Lexer<'_> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.src.get(self.at + ahead).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek(0)?;
        self.at += 1;
        if c == b'\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn next_token(&mut self) -> Option<Token> {
        loop {
            let c = self.peek(0)?;
            match c {
                b' ' | b'\t' | b'\r' | b'\n' | b'\x0b' | b'\x0c' => {
                    self.bump();
                }
                b'-' if self.peek(1) == Some(b'-') => {
                    self.at += 2;
                    if !self.long_bracket() {
                        while !matches!(self.peek(0), None | Some(b'\n')) {
                            self.bump();
                        }
                    }
                }
                b'[' if matches!(self.peek(1), Some(b'[' | b'=')) => {
                    if !self.long_bracket() {
                        self.bump();
                        return Some(Token::Other);
                    }
                    return Some(Token::Other);
                }
                b'"' | b'\'' => {
                    self.short_string(c);
                    return Some(Token::Other);
                }
                b'<' => {
                    self.bump();
                    // `<=` and `<<` are other operators.
                    if matches!(self.peek(0), Some(b'=' | b'<')) {
                        self.bump();
                        return Some(Token::Other);
                    }
                    return Some(Token::Less);
                }
                b'>' => {
                    self.bump();
                    if matches!(self.peek(0), Some(b'=' | b'>')) {
                        self.bump();
                        return Some(Token::Other);
                    }
                    return Some(Token::Greater);
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let start = self.at;
                    while self
                        .peek(0)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
                    {
                        self.bump();
                    }
                    let word = &self.src[start..self.at];
                    return Some(if word == b"close" {
                        Token::Close
                    } else {
                        Token::Other
                    });
                }
                _ => {
                    self.bump();
                    return Some(Token::Other);
                }
            }
        }
    }

    /// Skips a long bracket (`[[…]]`, `[==[…]==]`) starting at the cursor; false, with the cursor
    /// unmoved, when there is none.
    fn long_bracket(&mut self) -> bool {
        if self.peek(0) != Some(b'[') {
            return false;
        }
        let mut level = 0;
        while self.peek(1 + level) == Some(b'=') {
            level += 1;
        }
        if self.peek(1 + level) != Some(b'[') {
            return false;
        }
        self.at += level + 2;
        loop {
            match self.bump() {
                None => return true,
                Some(b']') => {
                    let mut equals = 0;
                    while self.peek(equals) == Some(b'=') {
                        equals += 1;
                    }
                    if equals == level && self.peek(equals) == Some(b']') {
                        self.at += equals + 1;
                        return true;
                    }
                }
                Some(_) => {}
            }
        }
    }

    fn short_string(&mut self, quote: u8) {
        self.bump();
        while let Some(c) = self.bump() {
            match c {
                b'\\' => {
                    self.bump();
                }
                b'\n' => return,
                c if c == quote => return,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_the_close_attribute_however_spelled() {
        for (source, line) in [
            ("local x <close> = nil", 1),
            ("local x < close > = nil", 1),
            ("local a <const>, b <close> = 1, nil", 1),
            (
                "return function()\n  local x <--[[ hidden ]] close\n> = nil\nend",
                3,
            ),
            ("local s = '<close>'\nlocal x <close> = nil", 2),
        ] {
            assert_eq!(
                refuse_to_be_closed(source),
                Err(ClosingRefused { line }),
                "{source}"
            );
        }
    }

    #[test]
    fn accepts_close_in_strings_comments_names_and_comparisons() {
        for source in [
            "local x <const> = 1",
            "local s = '<close>' .. \"<close>\" .. [[<close>]] .. [==[ <close> ]==]",
            "-- local x <close> = nil",
            "--[[ local x <close> = nil ]] return 1",
            "local close = 1 return close",
            "return a < close",
            "return a <= close >= b",
            "return 1 << close >> 2",
            "local s = 'it\\'s <close>'",
        ] {
            assert_eq!(refuse_to_be_closed(source), Ok(()), "{source}");
        }
    }
}
