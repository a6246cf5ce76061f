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
//!
//! The work is split by concern: `parse` splits the source into text, output tags and code
//! blocks; `plain` renders templates that only name fields; `chunk` compiles the others to one
//! Lua chunk and runs it in the delivery's sandbox, with the trusted helpers of `helpers.lua`.

mod chunk;
mod parse;
mod plain;

use serde_json::Value as Json;

use self::chunk::{LuaChunk, Session};
use self::parse::{line_count, Parser, Part};
use self::plain::{render_plain, Piece};
use crate::lua::Budget;
#[cfg(test)]
use crate::lua::Limits;

/// A parsed template, ready to render any number of times.
#[derive(Debug, Clone)]
pub(crate) struct Template {
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
    pub(crate) fn parse(source: &str) -> Result<Template, TemplateError> {
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
    pub(crate) fn needs_lua(&self) -> bool {
        matches!(self.body, Body::Lua(_))
    }

    #[cfg(test)]
    /// Renders with `data` (a JSON object) as the context, with a CPU budget of its own. Output
    /// that Lua code made invalid UTF-8 is repaired with replacement characters.
    pub(crate) fn render(&self, data: &Json, limits: &Limits) -> Result<String, TemplateError> {
        Renderer::new(data, Budget::starting_now(limits, None)).render(self)
    }
}

/// Renders the templates of one delivery: one context, one sandbox (started at the first
/// template that needs Lua) and one budget for all of them, so a hook with many templates gets
/// no more CPU time or memory than a hook with one.
pub(crate) struct Renderer<'a> {
    data: &'a Json,
    budget: Budget,
    lua: Option<Session>,
}

impl<'a> Renderer<'a> {
    /// A renderer of one delivery's templates with `data` as their context, within `budget`.
    pub(crate) fn new(data: &'a Json, budget: Budget) -> Renderer<'a> {
        Renderer {
            data,
            budget,
            lua: None,
        }
    }

    /// Renders one template of the delivery.
    pub(crate) fn render(&mut self, template: &Template) -> Result<String, TemplateError> {
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

/// How a template renders: straight from the JSON, or through its compiled Lua chunk.
#[derive(Debug, Clone)]
enum Body {
    Plain(Vec<Piece>),
    Lua(LuaChunk),
}

#[cfg(test)]
mod tests;
