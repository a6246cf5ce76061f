//! Templates for the `payload`, `body` and `headers` of `webhook-custom` hooks (spec §6), with
//! lua-resty-template's syntax: `{{expr}}` HTML-escaped, `{*expr*}` raw, `{% code %}` Lua,
//! `{# comment #}` dropped, `{-raw-}…{-raw-}` verbatim, and a backslash before a tag (`\{{`) to
//! write the tag itself.
//!
//! A template is parsed when its hook is created, so a malformed one is a schema violation rather
//! than a failed delivery (spec §1). Most templates only name fields (`{{ entity.username }}`):
//! such plain dotted paths are looked up in the JSON data directly, without starting Lua. Any other
//! expression or a code block turns the whole template into one Lua chunk, built the way
//! lua-resty-template builds it (a function appending output pieces to a table), compiled at parse
//! time and run per render in a fresh sandbox ([`crate::lua::sandbox`]) where the data's keys are
//! variables that shadow the sandbox's globals, and `context` is the data itself. The sandbox's
//! guards hold there too: `pcall` cannot swallow a limit error, `__gc` finalizers and pattern
//! calls that could backtrack past any budget are refused.
//!
//! Where lua-resty-template is lax or leaks, this module is strict: an unclosed tag is an error
//! (lua-resty-template prints it as text); includes (`{(file)}`, `{[expr]}`) and layout blocks
//! (`{-name-}`) are refused, as they read files; a missing table along a dotted path renders
//! empty instead of raising; tables render as JSON rather than `table: 0x…`; everything `{{ }}`
//! writes is escaped; literal text is kept byte for byte. Numbers render as in LuaJIT, Kong's Lua:
//! `42`, `1.5`, and `42` for the float `42.0`.

use mlua::{ChunkMode, Lua, LuaSerdeExt, SerializeOptions, Table};
use serde_json::Value as Json;

use crate::lua::json::to_json;
use crate::lua::{sandbox, set_owner, syntax, with_deadline, Budget, Limits};

/// A parsed template, ready to render any number of times.
#[derive(Debug, Clone)]
pub struct Template {
    body: Body,
}

/// What can go wrong with a template: the first three when parsing, [`TemplateError::Runtime`]
/// when rendering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A tag is opened and never closed.
    #[error("unclosed '{tag}' at line {line}, column {column}")]
    Unclosed {
        tag: String,
        line: usize,
        column: usize,
    },
    /// A lua-resty-template feature that has no meaning here.
    #[error("{reason}: '{tag}' at line {line}, column {column}")]
    Unsupported {
        tag: String,
        reason: &'static str,
        line: usize,
        column: usize,
    },
    /// The Lua of an expression or a code block does not compile.
    #[error("Lua syntax error at line {line}: {message}")]
    Syntax { line: usize, message: String },
    /// Rendering failed: a Lua error (with the template line when known), the CPU-time budget or
    /// the memory limit.
    #[error("{0}")]
    Runtime(String),
}

impl Template {
    /// Parses (and, for parts with Lua code, compiles in the sandbox without running) a template.
    /// A malformed template is an error here, never at render time.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let parts = Parser::new(source).parts()?;
        let body = if parts.iter().all(Part::is_plain) {
            Body::Plain(parts.into_iter().filter_map(Part::into_piece).collect())
        } else {
            let chunk = LuaChunk::generate(&parts, line_count(source));
            chunk.check()?;
            Body::Lua(chunk)
        };
        Ok(Template { body })
    }

    /// True when rendering needs Lua (a code block or an expression that is not a plain dotted
    /// path); such templates are refused when the deployment's `untrusted_lua` is `off`.
    pub fn needs_lua(&self) -> bool {
        matches!(self.body, Body::Lua(_))
    }

    /// Renders with `data` (a JSON object) as the context, with a CPU budget of its own. Output
    /// that Lua code made invalid UTF-8 is repaired with replacement characters.
    pub fn render(&self, data: &Json, limits: &Limits) -> Result<String, TemplateError> {
        Renderer::new(data, Budget::starting_now(limits, None)).render(self)
    }
}

/// Renders the templates of one delivery: one context, one sandbox (started at the first
/// template that needs Lua) and one budget for all of them, so a hook with many templates gets
/// no more CPU time or memory than a hook with one.
pub struct Renderer<'a> {
    data: &'a Json,
    budget: Budget,
    lua: Option<Session>,
}

/// The sandbox of a [`Renderer`], with the environment and helpers its templates run with.
struct Session {
    lua: Lua,
    env: Table,
    helpers: Table,
}

impl<'a> Renderer<'a> {
    pub fn new(data: &'a Json, budget: Budget) -> Renderer<'a> {
        Renderer {
            data,
            budget,
            lua: None,
        }
    }

    /// Renders one template of the delivery.
    pub fn render(&mut self, template: &Template) -> Result<String, TemplateError> {
        match &template.body {
            Body::Plain(pieces) => Ok(render_plain(pieces, self.data)),
            Body::Lua(chunk) => {
                if self.lua.is_none() {
                    self.lua = Some(Session::start(self.data, &self.budget, chunk)?);
                }
                let session = self.lua.as_ref().expect("started above");
                chunk.run(session, self.budget.deadline)
            }
        }
    }
}

impl Session {
    fn start(data: &Json, budget: &Budget, chunk: &LuaChunk) -> Result<Session, TemplateError> {
        let lua = sandbox(&budget.limits).map_err(|e| sandbox_failed(&e))?;
        if let Some(owner) = budget.owner {
            set_owner(&lua, owner);
        }
        let failed = |err: mlua::Error| TemplateError::Runtime(chunk.message(&err));
        // Tables render as JSON through the same capped walk as lambda results: a table nested
        // thousands deep or containing itself renders as nothing, not as a crash or an address.
        let max_bytes = budget.limits.memory;
        let json = lua
            .create_function(move |_, value: mlua::Value| {
                Ok(to_json(&value, max_bytes).ok().map(|json| json.to_string()))
            })
            .map_err(failed)?;
        // JSON null must be nil, so that `{% if x then %}` treats it as false.
        let options = SerializeOptions::new()
            .serialize_none_to_null(false)
            .serialize_unit_to_null(false);
        let context = with_deadline(&lua, budget.deadline, || lua.to_value_with(data, options))
            .map_err(failed)?;
        let (env, helpers): (Table, Table) = lua
            .load(HELPERS)
            .set_name("=helpers")
            .set_mode(ChunkMode::Text)
            .call((json, context))
            .map_err(failed)?;
        Ok(Session { lua, env, helpers })
    }
}

#[derive(Debug, Clone)]
enum Body {
    Plain(Vec<Piece>),
    Lua(LuaChunk),
}

/// A part of a template that renders without Lua.
#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Path { escape: bool, keys: Vec<String> },
}

/// A part of a template as parsed; `line` is where its text or code starts, for error messages.
#[derive(Debug, Clone)]
enum Part {
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
    fn is_plain(&self) -> bool {
        match self {
            Part::Text { .. } => true,
            Part::Output { path, .. } => path
                .as_ref()
                .is_some_and(|keys| !LUA_NAMES.contains(&keys[0].as_str())),
            Part::Code { .. } => false,
        }
    }

    fn into_piece(self) -> Option<Piece> {
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
struct Parser<'a> {
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
    fn new(src: &'a str) -> Parser<'a> {
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

    fn parts(mut self) -> Result<Vec<Part>, TemplateError> {
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

fn line_count(src: &str) -> usize {
    src.matches('\n').count() + 1
}

fn render_plain(pieces: &[Piece], data: &Json) -> String {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Path { escape, keys } => {
                let Some(value) = lookup(data, keys) else {
                    continue;
                };
                let text = json_text(value);
                if *escape {
                    escape_html(&text, &mut out);
                } else {
                    out.push_str(&text);
                }
            }
        }
    }
    out
}

/// The value at `keys`; `context` names the data itself, as in lua-resty-template.
fn lookup<'a>(data: &'a Json, keys: &[String]) -> Option<&'a Json> {
    let keys = match keys.split_first() {
        Some((first, rest)) if first == "context" => rest,
        _ => keys,
    };
    keys.iter()
        .try_fold(data, |value, key| value.as_object()?.get(key))
}

/// How a JSON value renders, the same as the Lua path's `__out` helper.
fn json_text(value: &Json) -> std::borrow::Cow<'_, str> {
    match value {
        Json::Null => "".into(),
        Json::Bool(b) => b.to_string().into(),
        Json::Number(n) => match n.as_i64() {
            Some(i) => i.to_string().into(),
            None => lua_number(n.as_f64().unwrap_or(f64::NAN)).into(),
        },
        Json::String(s) => s.as_str().into(),
        other => other.to_string().into(),
    }
}

fn escape_html(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '/' => out.push_str("&#47;"),
            c => out.push(c),
        }
    }
}

/// A float as C's `%.14g` writes it, which is LuaJIT's `tostring` (no `.0` on whole numbers).
fn lua_number(x: f64) -> String {
    if x.is_nan() {
        return if x.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.into();
    }
    fn trim(s: &str) -> &str {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            s
        }
    }
    let scientific = format!("{x:.13e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..14).contains(&exponent) {
        let decimals = usize::try_from(13 - exponent).unwrap_or(0);
        trim(&format!("{x:.decimals$}")).to_string()
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exponent.abs())
    }
}

/// Trusted Lua run in each render's sandbox before any template code: it captures the library
/// functions the template's helpers use (so the data or the template cannot swap them) and builds
/// the environment where data keys shadow globals.
const HELPERS: &str = r##"
local json, ctx = ...
local G, type, tostring, setmetatable, select =
  _ENV, type, tostring, setmetatable, select
local gsub, format, mtype, concat = string.gsub, string.format, math.type, table.concat
local HTML = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
  ["'"] = "&#39;", ["/"] = "&#47;" }
local CODE = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
  ["'"] = "&#39;", ["/"] = "&#47;", ["{"] = "&#123;", ["}"] = "&#125;" }
local function str(v)
  if mtype(v) == "float" then return format("%.14g", v) end
  return tostring(v)
end
local function out(v)
  if v == nil then return "" end
  local t = type(v)
  if t == "string" then return v end
  if t == "function" then return out(v()) end
  if t == "table" then return json(v) or "" end
  if t == "userdata" or t == "thread" then return "" end
  return str(v)
end
local function esc(v, code)
  if code then return (gsub(out(v), "[}{\">/<'&]", CODE)) end
  return (gsub(out(v), "[\">/<'&]", HTML))
end
local function walk(v, ...)
  for i = 1, select("#", ...) do
    if type(v) ~= "table" then return nil end
    v = v[(select(i, ...))]
  end
  return v
end
local function echo(buffer, ...)
  for i = 1, select("#", ...) do buffer[#buffer + 1] = str((select(i, ...))) end
end
local env = setmetatable({ context = ctx }, { __index = function(_, k)
  if type(ctx) == "table" then
    local v = ctx[k]
    if v ~= nil then return v end
  end
  return G[k]
end })
return env, { esc = esc, out = out, walk = walk, echo = echo, concat = concat }
"##;

/// First lines of every generated chunk: the helpers arrive as the chunk's argument and become
/// locals, out of reach of data keys; `echo` appends to the output as in lua-resty-template.
const CHUNK_PRELUDE: &str = "local __h = ...\n\
    local __esc, __out, __walk, __echo, __concat = __h.esc, __h.out, __h.walk, __h.echo, __h.concat\n\
    local ___ = {}\n\
    local function echo(...) return __echo(___, ...) end\n";

/// A template compiled to Lua source, with the map from generated lines to template lines.
#[derive(Debug, Clone)]
struct LuaChunk {
    source: String,
    /// (first generated line, template line, template lines spanned) of each part, in order.
    lines: Vec<(usize, usize, usize)>,
}

impl LuaChunk {
    fn generate(parts: &[Part], last_line: usize) -> LuaChunk {
        let mut chunk = LuaChunk {
            source: String::new(),
            lines: Vec::new(),
        };
        chunk.push(CHUNK_PRELUDE);
        for part in parts {
            match part {
                Part::Text { text, line } => {
                    chunk.mark(*line, "");
                    chunk.push(&format!("___[#___+1]={}\n", lua_quote(text)));
                }
                Part::Output {
                    escape,
                    code,
                    line,
                    path,
                } => {
                    chunk.mark(*line, code);
                    let helper = if *escape { "__esc" } else { "__out" };
                    // A dotted path goes through `__walk` so a missing table renders empty, as it
                    // does without Lua; anything else is the user's expression as written.
                    let expr = match path {
                        Some(keys) if keys.len() > 1 => {
                            let rest: Vec<String> =
                                keys[1..].iter().map(|k| format!("\"{k}\"")).collect();
                            format!("__walk({},{})", keys[0], rest.join(","))
                        }
                        // The newline ends a trailing `-- comment` before the closing parenthesis.
                        _ => format!("{code}\n"),
                    };
                    chunk.push(&format!("___[#___+1]={helper}({expr})\n"));
                }
                Part::Code { code, line } => {
                    chunk.mark(*line, code);
                    chunk.push(code);
                    chunk.push("\n");
                }
            }
        }
        chunk.mark(last_line, "");
        chunk.push("return __concat(___)\n");
        chunk
    }

    fn next_line(&self) -> usize {
        self.source.matches('\n').count() + 1
    }

    /// Records that the next generated line starts a part at `template_line`, whose code spans
    /// the newlines of `code`.
    fn mark(&mut self, template_line: usize, code: &str) {
        let line = self.next_line();
        let span = code.matches('\n').count();
        self.lines.push((line, template_line, span));
    }

    fn push(&mut self, text: &str) {
        self.source.push_str(text);
    }

    /// The template line of a generated line.
    fn template_line(&self, generated: usize) -> usize {
        self.lines
            .iter()
            .rev()
            .find(|(first, _, _)| *first <= generated)
            .map_or(1, |(first, line, span)| {
                line + (generated - first).min(*span)
            })
    }

    /// The Lua function of this chunk in `lua`, with `env` as its globals when given.
    fn load(&self, lua: &Lua, env: Option<Table>) -> mlua::Result<mlua::Function> {
        let chunk = lua
            .load(&self.source)
            .set_name("=template")
            .set_mode(ChunkMode::Text);
        match env {
            Some(env) => chunk.set_environment(env),
            None => chunk,
        }
        .into_function()
    }

    /// Compiles without running, so syntax errors surface at parse time.
    fn check(&self) -> Result<(), TemplateError> {
        syntax::refuse_to_be_closed(&self.source).map_err(|refused| TemplateError::Syntax {
            line: self.template_line(refused.line),
            message: "to-be-closed variables ('<close>') are not allowed in the sandbox".into(),
        })?;
        let lua = sandbox(&Limits::default()).map_err(|e| sandbox_failed(&e))?;
        self.load(&lua, None).map(drop).map_err(|err| {
            let message = self.message(&err);
            match message.split_once(": ") {
                Some((at, rest)) if at.starts_with("line ") => TemplateError::Syntax {
                    line: at[5..].parse().unwrap_or(1),
                    message: rest.to_string(),
                },
                _ => TemplateError::Syntax { line: 1, message },
            }
        })
    }

    fn run(
        &self,
        session: &Session,
        deadline: std::time::Instant,
    ) -> Result<String, TemplateError> {
        let failed = |err: mlua::Error| TemplateError::Runtime(self.message(&err));
        let function = self
            .load(&session.lua, Some(session.env.clone()))
            .map_err(failed)?;
        let output: mlua::String = with_deadline(&session.lua, deadline, || {
            function.call(session.helpers.clone())
        })
        .map_err(failed)?;
        let bytes = output.as_bytes();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The first line of a Lua error, its generated line numbers turned into template lines,
    /// without addresses.
    fn message(&self, err: &mlua::Error) -> String {
        crate::lua::scrub_addresses(&self.raw_message(err))
    }

    fn raw_message(&self, err: &mlua::Error) -> String {
        let text = match err {
            mlua::Error::SyntaxError { message, .. } => message.clone(),
            mlua::Error::CallbackError { cause, .. } => return self.raw_message(cause),
            mlua::Error::WithContext { cause, .. } => return self.raw_message(cause),
            mlua::Error::MemoryError(_) => return "not enough memory".into(),
            other => other.to_string(),
        };
        let first = text.lines().next().unwrap_or_default();
        let first = first.strip_prefix("runtime error: ").unwrap_or(first);
        let first = first.strip_prefix("syntax error: ").unwrap_or(first);
        let mapped = self.map_lines(first, "at line ", "at line ");
        match mapped.strip_prefix("template:") {
            Some(rest) => {
                let digits = rest.chars().take_while(char::is_ascii_digit).count();
                match (rest[..digits].parse(), rest[digits..].strip_prefix(": ")) {
                    (Ok(line), Some(message)) => {
                        format!("line {}: {message}", self.template_line(line))
                    }
                    _ => mapped,
                }
            }
            None => mapped,
        }
    }

    /// Rewrites `<prefix><generated line>` as `<replacement><template line>` throughout `text`.
    fn map_lines(&self, text: &str, prefix: &str, replacement: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            out.push_str(&rest[..at]);
            let after = &rest[at + prefix.len()..];
            let digits = after.chars().take_while(char::is_ascii_digit).count();
            match after[..digits].parse() {
                Ok(line) => {
                    out.push_str(replacement);
                    out.push_str(&self.template_line(line).to_string());
                }
                Err(_) => out.push_str(prefix),
            }
            rest = &after[digits..];
        }
        out.push_str(rest);
        out
    }
}

fn sandbox_failed(err: &mlua::Error) -> TemplateError {
    TemplateError::Runtime(format!("could not start the Lua sandbox: {err}"))
}

/// `text` as a Lua string literal, byte for byte (a long bracket would turn `\r\n` into `\n`).
fn lua_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => out.push_str(&format!("\\{:03}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn limits() -> Limits {
        Limits {
            memory: 4 * 1024 * 1024,
            cpu_time: Duration::from_millis(100),
        }
    }

    fn render(source: &str, data: Json) -> Result<String, TemplateError> {
        Template::parse(source)?.render(&data, &limits())
    }

    fn ok(source: &str, data: Json) -> String {
        render(source, data).unwrap_or_else(|e| panic!("{source}: {e}"))
    }

    #[test]
    fn renders_kongs_documented_example() {
        // given Kong's webhook-custom example and a crud event's data
        let source = "Admin account `{{ entity.username }}` {{ operation}}d; \
                      email address set to `{{ entity.email }}`";
        let data = json!({"entity": {"username": "bob", "email": "b@x.io"}, "operation": "create"});
        // when it renders
        let template = Template::parse(source).unwrap();
        // then the fields are filled in, without Lua
        assert!(!template.needs_lua());
        assert_eq!(
            template.render(&data, &limits()).unwrap(),
            "Admin account `bob` created; email address set to `b@x.io`"
        );
    }

    #[test]
    fn plain_paths_do_not_need_lua() {
        for source in [
            "",
            "text",
            "{{a}}",
            "{{ a.b.c }}",
            "{*a_1.B*}",
            "{# c #}x{-raw-}{%x%}{-raw-}",
            "{{context.a}}",
        ] {
            assert!(!Template::parse(source).unwrap().needs_lua(), "{source}");
        }
        for source in [
            "{{a[1]}}",
            "{{ a .. b }}",
            "{{nil}}",
            "{{ string.upper(a) }}",
            "{{math.pi}}",
            "{% x = 1 %}",
            "{{}}",
        ] {
            assert!(Template::parse(source).unwrap().needs_lua(), "{source}");
        }
    }

    #[test]
    fn escapes_exactly_six_characters_in_both_paths() {
        let data = json!({"s": "a&b<c>d\"e'f/g\\h{i}"});
        let escaped = "a&amp;b&lt;c&gt;d&quot;e&#39;f&#47;g\\h{i}";
        assert_eq!(ok("{{s}}", data.clone()), escaped);
        assert_eq!(ok("{{ s .. '' }}", data.clone()), escaped);
        assert_eq!(ok("{*s*}", data.clone()), "a&b<c>d\"e'f/g\\h{i}");
        assert_eq!(ok("{* s .. '' *}", data.clone()), "a&b<c>d\"e'f/g\\h{i}");
        // lua-resty-template's second argument to escape also encodes braces
        assert_eq!(
            ok("{{ s, true }}", data),
            "a&amp;b&lt;c&gt;d&quot;e&#39;f&#47;g\\h&#123;i&#125;"
        );
    }

    #[test]
    fn renders_scalars_like_luajit() {
        let data =
            json!({"i": 42, "f": 1.5, "w": 42.0, "t": true, "n": null, "big": 1e20, "neg": -7});
        for source in [
            "{{i}} {{f}} {{w}} {{t}} [{{n}}] {{big}} {{neg}}",
            "{{i+0}} {{f+0}} {{w+0}} {{t and true}} [{{n or nil}}] {{big+0}} {{neg+0}}",
        ] {
            assert_eq!(
                ok(source, data.clone()),
                "42 1.5 42 true [] 1e+20 -7",
                "{source}"
            );
        }
        assert_eq!(
            ok("{{ 10 / 4 }} {{ 1/3 }} {{ 2^53 }}", json!({})),
            "2.5 0.33333333333333 9.007199254741e+15"
        );
        assert_eq!(lua_number(0.0001), "0.0001");
        assert_eq!(lua_number(0.00001), "1e-05");
        assert_eq!(lua_number(123456789012345.0), "1.2345678901234e+14");
    }

    #[test]
    fn walks_nested_paths_and_renders_missing_ones_empty() {
        let data = json!({"a": {"b": {"c": "deep"}, "s": "str"}, "list": [1, 2]});
        assert_eq!(
            ok(
                "{{a.b.c}}|{{a.x.y}}|{{nope}}|{{a.s.len}}|{{list}}",
                data.clone()
            ),
            "deep|||| [1,2]".replace(' ', "")
        );
        // the same through Lua, which a code block switches on
        assert_eq!(
            ok(
                "{% %}{{a.b.c}}|{{a.x.y}}|{{nope}}|{{a.s.len}}|{{list}}",
                data.clone()
            ),
            "deep||||[1,2]"
        );
        assert_eq!(ok("{*a.b*}", data.clone()), r#"{"c":"deep"}"#);
        assert_eq!(ok("{{ context.a.b.c }}", data), "deep");
    }

    #[test]
    fn loops_and_conditionals_span_text() {
        let data = json!({"items": ["a", "<b>"], "flag": null, "yes": true});
        assert_eq!(
            ok(
                "{% for _, v in ipairs(items) do %}{{v}},{% end %}",
                data.clone()
            ),
            "a,&lt;b&gt;,"
        );
        assert_eq!(
            ok(
                "{% if flag then %}on{% else %}off{% end %}{% if yes then %}!{% end %}",
                data.clone()
            ),
            "off!"
        );
        // a block on its own line leaves no blank line or indentation behind
        assert_eq!(
            ok(
                "<ul>\n  {% for i = 1, 2 do %}\n  <li>{{i}}</li>\n  {% end %}\n</ul>",
                data
            ),
            "<ul>\n  <li>1</li>\n  <li>2</li>\n</ul>"
        );
        assert_eq!(ok("{% echo('a', 1, 2.5) %}", json!({})), "a12.5");
    }

    #[test]
    fn data_keys_shadow_globals_but_sandbox_globals_remain() {
        assert_eq!(ok("{{ string }}", json!({"string": "mine"})), "mine");
        assert_eq!(ok("{{ string.upper(x) }}", json!({"x": "up"})), "UP");
        assert_eq!(ok("{{ type(x) }}", json!({"x": 1})), "number");
    }

    #[test]
    fn drops_comments_and_keeps_raw_blocks_verbatim() {
        assert_eq!(ok("a{# {{ nope }} #}b", json!({})), "ab");
        assert_eq!(ok("a\n{# note #}\nb", json!({})), "a\nb");
        assert_eq!(
            ok("{-raw-}{{x}}{% y %}{-raw-}!", json!({"x": 1})),
            "{{x}}{% y %}!"
        );
        assert_eq!(
            ok("{-raw-}\n<h1>{{title}}</h1>\n{-raw-}\n", json!({})),
            "<h1>{{title}}</h1>\n"
        );
    }

    #[test]
    fn a_backslash_writes_the_tag_itself() {
        assert_eq!(ok(r"\{{x}} {{x}}", json!({"x": 1})), "{{x}} 1");
        assert_eq!(
            ok(r"\{*x*}\{%x%}\{#x#}", json!({"x": 1})),
            "{*x*}{%x%}{#x#}"
        );
        assert_eq!(ok(r"\\{{x}}", json!({"x": 1})), r"\1");
        assert_eq!(ok(r"a\{{ never closed", json!({})), "a{{ never closed");
    }

    #[test]
    fn keeps_literal_text_byte_for_byte() {
        let source = "\"quoted\" \\ ]] ]=] \r\n\t\u{1}é{{x}}";
        assert_eq!(
            ok(source, json!({"x": 1})),
            "\"quoted\" \\ ]] ]=] \r\n\t\u{1}é1"
        );
        assert_eq!(
            ok(&format!("{source}{{% %}}"), json!({"x": 1})),
            "\"quoted\" \\ ]] ]=] \r\n\t\u{1}é1"
        );
        // braces that open no tag are text, as in JSON bodies
        assert_eq!(
            ok(r#"{"a": {"b": "{{x}}"}, "c": {-1}}"#, json!({"x": 2})),
            r#"{"a": {"b": "2"}, "c": {-1}}"#
        );
    }

    #[test]
    fn rejects_unclosed_tags_at_parse_time() {
        for (source, tag, column) in [
            ("ab {{ x", "{{", 4),
            ("{* x", "{*", 1),
            ("x\n {% if", "{%", 2),
            ("{# c", "{#", 1),
            ("{-raw-} x", "{-raw-}", 1),
        ] {
            match Template::parse(source) {
                Err(TemplateError::Unclosed {
                    tag: t, column: c, ..
                }) => assert_eq!((t.as_str(), c), (tag, column), "{source}"),
                other => panic!("{source}: {other:?}"),
            }
        }
        let err = Template::parse("x\n {% if").unwrap_err();
        assert_eq!(err.to_string(), "unclosed '{%' at line 2, column 2");
    }

    #[test]
    fn rejects_bad_lua_at_parse_time_with_the_template_line() {
        let err = Template::parse("line 1\n{{ a + }}").unwrap_err();
        assert!(
            matches!(err, TemplateError::Syntax { line: 2, .. }),
            "{err:?}"
        );
        let err = Template::parse("a\n{% for i = 1, 2 do %}\n{{i}}").unwrap_err();
        assert!(matches!(err, TemplateError::Syntax { .. }), "{err:?}");
        assert!(err.to_string().contains("at line 2"), "{err}");
        assert!(Template::parse("{% if x then %}").is_err());
        assert!(Template::parse("{{ and }}").is_err());
    }

    #[test]
    fn rejects_includes_and_layout_blocks() {
        for source in ["{(file.html)}", "{[ 'file' ]}", "{-main-}x{-main-}"] {
            assert!(
                matches!(
                    Template::parse(source),
                    Err(TemplateError::Unsupported { .. })
                ),
                "{source}"
            );
        }
    }

    #[test]
    fn runtime_errors_carry_the_template_line() {
        let err = render("ok\n{% error('boom') %}", json!({})).unwrap_err();
        assert_eq!(err, TemplateError::Runtime("line 2: boom".into()));
        let err = render("a\n\n{{ x.y() }}", json!({})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 3: attempt to index a nil value (global 'x')"
        );
    }

    #[test]
    fn tables_render_as_json_or_nothing_never_an_address() {
        // A table nested 5,000 deep crashed the process (issue 8); a cyclic one showed an address.
        assert_eq!(
            ok(
                "[{% t = {} for i = 1, 5000 do t = {t} end %}{{ t }}]",
                json!({})
            ),
            "[]"
        );
        assert_eq!(ok("[{% t = {} t.t = t %}{* t *}]", json!({})), "[]");
        assert_eq!(ok("{* {a = {1, 2}} *}", json!({})), r#"{"a":[1,2]}"#);
        assert_eq!(
            ok("{* tostring({}) *} {* tostring(print) *}", json!({})),
            "table function"
        );
    }

    #[test]
    fn to_be_closed_variables_are_refused_at_parse_time() {
        let err = Template::parse("text\n{% local x <close> = nil %}").unwrap_err();
        assert_eq!(
            err,
            TemplateError::Syntax {
                line: 2,
                message: "to-be-closed variables ('<close>') are not allowed in the sandbox".into()
            }
        );
    }

    #[test]
    fn the_templates_of_one_delivery_share_one_budget() {
        // Given a delivery whose first template used the whole budget
        let busy = Template::parse("{% for i = 1, 1e5 do end %}x").unwrap();
        let data = json!({});
        let mut renderer = Renderer::new(&data, Budget::starting_now(&limits(), None));
        assert_eq!(renderer.render(&busy).as_deref(), Ok("x"));
        std::thread::sleep(Duration::from_millis(150));
        // When it renders another template, then that one is stopped, where alone it renders
        assert_eq!(busy.render(&data, &limits()).as_deref(), Ok("x"));
        assert_eq!(
            renderer.render(&busy),
            Err(TemplateError::Runtime("CPU time limit exceeded".into()))
        );
    }

    #[test]
    fn stops_runaway_code() {
        let err = render("{% while true do end %}", json!({})).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Runtime("CPU time limit exceeded".into())
        );
    }

    #[test]
    fn stops_runaway_code_that_catches_errors() {
        let source = "{% while true do pcall(function() while true do end end) end %}";
        let err = render(source, json!({})).unwrap_err();
        assert_eq!(
            err,
            TemplateError::Runtime("CPU time limit exceeded".into())
        );
    }

    #[test]
    fn refuses_pattern_bombs() {
        let source = "{{ ('a'):rep(40):find(('a*'):rep(40) .. 'b') }}";
        let err = render(source, json!({})).unwrap_err();
        assert!(err.to_string().contains("pattern too complex"), "{err}");
    }

    #[test]
    fn stops_greedy_code() {
        let source = "{% local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1024) end %}";
        // A generous CPU budget: the memory limit must be what stops it, even on a busy machine.
        let limits = Limits {
            cpu_time: Duration::from_secs(10),
            ..limits()
        };
        let err = Template::parse(source)
            .unwrap()
            .render(&json!({}), &limits)
            .unwrap_err();
        assert!(err.to_string().contains("memory"), "{err}");
    }

    #[test]
    fn refuses_finalizers_which_no_budget_could_stop() {
        let source = "{% setmetatable({}, {__gc = function() while true do end end}) %}done";
        let err = render(source, json!({})).unwrap_err();
        assert!(err.to_string().contains("__gc"), "{err}");
        // metatables without finalizers still work
        let source = "{% local t = setmetatable({}, {__index = function() return 7 end}) %}{{t.x}}";
        assert_eq!(ok(source, json!({})), "7");
    }

    #[test]
    fn cannot_reach_beyond_the_sandbox() {
        for source in [
            "{{ os.execute('x') }}",
            "{% io.open('x') %}",
            "{{ require('os') }}",
            "{% load('return 1')() %}",
        ] {
            let err = render(source, json!({})).unwrap_err();
            assert!(
                matches!(err, TemplateError::Runtime(_)),
                "{source}: {err:?}"
            );
        }
    }
}
