//! Lua values to JSON, as spec §6 maps them, for everything that leaves the sandbox: a lambda
//! chain's result, a `return nil, err` value, a table a template renders. The walk is depth-capped
//! and size-budgeted, and finds cycles, so no Lua value, however nested or self-referencing, can
//! overflow the stack or the memory of the process that reads it.

use std::ffi::c_void;

use mlua::{Table, Value};
use serde_json::Value as Json;

use super::type_name;

/// How deep the result may nest: deeper than any sensible payload, far below stack trouble.
pub(crate) const MAX_DEPTH: usize = 64;

/// What one JSON node is charged against the size budget, beside its strings' bytes: about what
/// a `serde_json::Value` costs, so the budget bounds the memory the result takes in Rust.
const NODE_COST: usize = 32;

/// Why a Lua value has no JSON form.
#[derive(Debug, PartialEq)]
pub(crate) enum ToJsonError {
    /// Bigger than the budget: a table referenced many times expands on each reference.
    TooLarge,
    /// A value JSON cannot carry; the message says where.
    Unsupported(String),
}

/// Maps a Lua value to JSON as spec §6 says: strings, numbers (integers stay integers) and
/// booleans as themselves; nil → null; a table whose keys are exactly `1..n` → array; any other
/// table (an empty one too) → object with its keys sorted, numeric keys written as strings.
/// Metatables are ignored (no user code runs). Functions, userdata, threads, non-finite numbers,
/// cycles, nesting deeper than [`MAX_DEPTH`] and keys that are neither strings nor numbers are
/// errors rather than nulls, so a mistake is not delivered as missing data. Strings that are not
/// UTF-8 are converted lossily (JSON has no bytes). `max_bytes` bounds the size of the result.
pub(crate) fn to_json(value: &Value, max_bytes: usize) -> Result<Json, ToJsonError> {
    let mut walker = Walker {
        budget: max_bytes,
        tables: Vec::new(),
    };
    walker
        .walk(value, 0)
        .map_err(|failure| match failure.problem {
            Problem::TooLarge => ToJsonError::TooLarge,
            Problem::Unsupported(what) => {
                let mut place = String::from("result");
                for segment in failure.path.iter().rev() {
                    match segment {
                        Segment::Index(i) => place.push_str(&format!("[{i}]")),
                        Segment::Key(k) if is_identifier(k) => place.push_str(&format!(".{k}")),
                        Segment::Key(k) => place.push_str(&format!("[{k:?}]")),
                    }
                }
                ToJsonError::Unsupported(format!("{place} {what}"))
            }
        })
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A failed walk; the path is collected while unwinding, innermost segment first, so that a
/// successful walk pays nothing for it.
struct Failure {
    problem: Problem,
    path: Vec<Segment>,
}

enum Problem {
    TooLarge,
    Unsupported(String),
}

enum Segment {
    /// A position in an array, counted from 1 as Lua does.
    Index(usize),
    Key(String),
}

impl Failure {
    fn unsupported(what: String) -> Failure {
        Failure {
            problem: Problem::Unsupported(what),
            path: Vec::new(),
        }
    }

    fn at(mut self, segment: Segment) -> Failure {
        self.path.push(segment);
        self
    }
}

struct Walker {
    budget: usize,
    /// The tables being walked, outermost first: meeting one again is a cycle.
    tables: Vec<*const c_void>,
}

impl Walker {
    fn spend(&mut self, bytes: usize) -> Result<(), Failure> {
        self.budget = self.budget.checked_sub(bytes).ok_or(Failure {
            problem: Problem::TooLarge,
            path: Vec::new(),
        })?;
        Ok(())
    }

    fn walk(&mut self, value: &Value, depth: usize) -> Result<Json, Failure> {
        self.spend(NODE_COST)?;
        match value {
            Value::Nil => Ok(Json::Null),
            Value::Boolean(b) => Ok(Json::Bool(*b)),
            Value::Integer(i) => Ok(Json::from(*i)),
            Value::Number(n) => serde_json::Number::from_f64(*n)
                .map(Json::Number)
                .ok_or_else(|| {
                    Failure::unsupported(format!("is {n}, which JSON cannot represent"))
                }),
            Value::String(s) => {
                let s = s.to_string_lossy();
                self.spend(s.len())?;
                Ok(Json::String(s))
            }
            // mlua's stand-in for JSON null; sandboxed code cannot make other light userdata.
            Value::LightUserData(p) if p.0.is_null() => Ok(Json::Null),
            Value::Table(table) => self.table(table, depth),
            other => Err(Failure::unsupported(format!(
                "is a {}, which has no JSON form",
                type_name(other)
            ))),
        }
    }

    fn table(&mut self, table: &Table, depth: usize) -> Result<Json, Failure> {
        if depth >= MAX_DEPTH {
            return Err(Failure::unsupported(format!(
                "is nested more than {MAX_DEPTH} levels deep"
            )));
        }
        let pointer = table.to_pointer();
        if self.tables.contains(&pointer) {
            return Err(Failure::unsupported("contains itself".into()));
        }
        // Collected first so that no Lua iteration is open while the walk recurses.
        let mut entries = Vec::new();
        table
            .for_each(|k: Value, v: Value| {
                entries.push((k, v));
                Ok(())
            })
            .map_err(|e| Failure::unsupported(format!("could not be read: {e}")))?;
        self.tables.push(pointer);
        let result = self.entries(entries, depth);
        self.tables.pop();
        result
    }

    fn entries(&mut self, entries: Vec<(Value, Value)>, depth: usize) -> Result<Json, Failure> {
        let n = entries.len();
        let mut positions: Vec<(usize, &Value)> = entries
            .iter()
            .filter_map(|(k, v)| match k {
                Value::Integer(i) => usize::try_from(*i)
                    .ok()
                    .filter(|i| (1..=n).contains(i))
                    .map(|i| (i, v)),
                _ => None,
            })
            .collect();
        // Keys are distinct, so n of them within 1..=n are exactly 1..=n. Empty is an object.
        if n > 0 && positions.len() == n {
            positions.sort_unstable_by_key(|(i, _)| *i);
            let mut items = Vec::with_capacity(n);
            for (i, v) in positions {
                items.push(
                    self.walk(v, depth + 1)
                        .map_err(|f| f.at(Segment::Index(i)))?,
                );
            }
            return Ok(Json::Array(items));
        }

        let mut members = Vec::with_capacity(n);
        for (k, v) in &entries {
            let key = match k {
                Value::String(s) => s.to_string_lossy(),
                Value::Integer(i) => i.to_string(),
                Value::Number(f) => f.to_string(),
                other => {
                    return Err(Failure::unsupported(format!(
                        "has a {} key, which a JSON object cannot have",
                        type_name(other)
                    )))
                }
            };
            self.spend(key.len())?;
            let value = self
                .walk(v, depth + 1)
                .map_err(|f| f.at(Segment::Key(key.clone())))?;
            members.push((key, value));
        }
        // Lua tables have no order; sorted keys make the same table give the same JSON.
        members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(pair) = members.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(Failure::unsupported(format!(
                "has the key {:?} twice, as a number and as a string",
                pair[0].0
            )));
        }
        Ok(Json::Object(members.into_iter().collect()))
    }
}
