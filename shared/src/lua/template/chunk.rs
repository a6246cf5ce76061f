//! Templates with Lua: the parts compiled into one chunk the way lua-resty-template builds it
//! (a function appending output pieces to a table), checked at parse time, and run per delivery
//! in a [`Session`], one sandbox whose environment lets the data's keys shadow the globals.
//! Lua's error messages are mapped back to template lines.

use mlua::{ChunkMode, Lua, LuaSerdeExt, SerializeOptions, Table};
use serde_json::Value as Json;

use super::parse::Part;
use super::TemplateError;
use crate::lua::json::to_json;
use crate::lua::{sandbox, set_owner, syntax, with_deadline, Budget, Limits};

/// The sandbox of a [`Renderer`](super::Renderer), with the environment and helpers its
/// templates run with.
pub(super) struct Session {
    lua: Lua,
    env: Table,
    helpers: Table,
}

impl Session {
    pub(super) fn start(
        data: &Json,
        budget: &Budget,
        chunk: &LuaChunk,
    ) -> Result<Session, TemplateError> {
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

/// Trusted Lua run in each render's sandbox before any template code: it captures the library
/// functions the template's helpers use (so the data or the template cannot swap them) and builds
/// the environment where data keys shadow globals.
const HELPERS: &str = include_str!("helpers.lua");

/// First lines of every generated chunk: the helpers arrive as the chunk's argument and become
/// locals, out of reach of data keys; `echo` appends to the output as in lua-resty-template.
const CHUNK_PRELUDE: &str = "local __h = ...\n\
    local __esc, __out, __walk, __echo, __concat = __h.esc, __h.out, __h.walk, __h.echo, __h.concat\n\
    local ___ = {}\n\
    local function echo(...) return __echo(___, ...) end\n";

/// A template compiled to Lua source, with the map from generated lines to template lines.
#[derive(Debug, Clone)]
pub(super) struct LuaChunk {
    source: String,
    /// (first generated line, template line, template lines spanned) of each part, in order.
    lines: Vec<(usize, usize, usize)>,
}

impl LuaChunk {
    /// The chunk of a template's parts; `last_line` is the template's last line.
    pub(super) fn generate(parts: &[Part], last_line: usize) -> LuaChunk {
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
    pub(super) fn check(&self) -> Result<(), TemplateError> {
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

    /// Runs the chunk in `session` until `deadline`; its output is the rendered text.
    pub(super) fn run(
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
