//! The problems validation finds, collected rather than stopping at the first, and rendered as
//! Kong's `schema violation` error: a sorted one-line message and the same errors as a nested
//! object mirroring the input.

use std::fmt;

use serde_json::{Map, Value};

/// One step of the path to a field: an object key or a 0-based array index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldError {
    pub path: Vec<PathSegment>,
    pub message: String,
}

impl FieldError {
    /// Kong's dotted form of the path; array positions are 1-based as in Lua.
    pub(crate) fn dotted_path(&self) -> String {
        let parts: Vec<String> = self
            .path
            .iter()
            .map(|seg| match seg {
                PathSegment::Key(k) => k.clone(),
                PathSegment::Index(i) => (i + 1).to_string(),
            })
            .collect();
        parts.join(".")
    }
}

/// Every problem found in one input; rendered as Kong's `schema violation` error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchemaViolation {
    errors: Vec<FieldError>,
}

impl SchemaViolation {
    /// A violation with a single field error, e.g. for checks made outside this module.
    pub fn single(path: &[&str], message: impl Into<String>) -> SchemaViolation {
        SchemaViolation {
            errors: vec![FieldError {
                path: path
                    .iter()
                    .map(|k| PathSegment::Key(k.to_string()))
                    .collect(),
                message: message.into(),
            }],
        }
    }

    /// A violation from top-level field problems, or `None` when there are none.
    pub(crate) fn from_fields(problems: Vec<(String, String)>) -> Option<SchemaViolation> {
        if problems.is_empty() {
            return None;
        }
        Some(SchemaViolation {
            errors: problems
                .into_iter()
                .map(|(key, message)| FieldError {
                    path: vec![PathSegment::Key(key)],
                    message,
                })
                .collect(),
        })
    }

    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }

    /// The same problems for an input found under `key` of a larger one (`config.url` →
    /// `hook.config.url`).
    pub fn under(mut self, key: &str) -> SchemaViolation {
        for error in &mut self.errors {
            error.path.insert(0, PathSegment::Key(key.to_owned()));
        }
        self
    }

    /// `schema violation (a: x)` or `N schema violations (a: x; b.c: y)`, sorted by path.
    pub fn message(&self) -> String {
        let mut parts: Vec<String> = self
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.dotted_path(), e.message))
            .collect();
        parts.sort();
        match parts.len() {
            1 => format!("schema violation ({})", parts[0]),
            n => format!("{n} schema violations ({})", parts.join("; ")),
        }
    }

    /// The errors as a nested object mirroring the input (`{"config":{"url":"…"}}`).
    pub fn fields(&self) -> Value {
        let mut root = Value::Object(Map::new());
        for error in &self.errors {
            insert_error(&mut root, &error.path, &error.message);
        }
        root
    }
}

impl fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for SchemaViolation {}

fn insert_error(node: &mut Value, path: &[PathSegment], message: &str) {
    let Some((first, rest)) = path.split_first() else {
        // A message on a node that also has nested errors keeps the nested ones.
        if !node.is_object() && !node.is_array() || node.as_object().is_some_and(Map::is_empty) {
            *node = Value::String(message.to_string());
        }
        return;
    };
    match first {
        PathSegment::Key(key) => {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            let child = node
                .as_object_mut()
                .expect("just made an object")
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            insert_error(child, rest, message);
        }
        PathSegment::Index(index) => {
            if !node.is_array() {
                *node = Value::Array(Vec::new());
            }
            let items = node.as_array_mut().expect("just made an array");
            if items.len() <= *index {
                items.resize(index + 1, Value::Null);
            }
            if items[*index].is_null() && !rest.is_empty() {
                items[*index] = Value::Object(Map::new());
            }
            insert_error(&mut items[*index], rest, message);
        }
    }
}

/// The problems found so far in one input, each at its path.
#[derive(Default)]
pub(super) struct Errors(Vec<FieldError>);

impl Errors {
    pub(super) fn add(&mut self, path: &[&str], message: impl Into<String>) {
        self.add_at(
            path.iter()
                .map(|k| PathSegment::Key(k.to_string()))
                .collect(),
            message,
        );
    }

    pub(super) fn add_at(&mut self, path: Vec<PathSegment>, message: impl Into<String>) {
        self.0.push(FieldError {
            path,
            message: message.into(),
        });
    }

    /// How many problems were found so far: a reader compares it before and after to learn
    /// whether its own fields were sound.
    pub(super) fn count(&self) -> usize {
        self.0.len()
    }

    /// Every problem found, or `None` when the input was sound.
    pub(super) fn into_violation(self) -> Option<SchemaViolation> {
        (!self.0.is_empty()).then_some(SchemaViolation { errors: self.0 })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::violation;
    use serde_json::json;

    #[test]
    fn several_errors_are_counted_and_sorted() {
        let v = violation(json!({"handler":"webhook","snooze":-1,"config":{"url":"nope"}}));
        assert_eq!(
            v.message(),
            "3 schema violations (config.url: missing scheme in url; snooze: value should be between 0 and 2147483647; source: required field missing)"
        );
    }
}
