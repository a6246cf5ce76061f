//! The `WindowStore` port and the snooze / on_change rules of spec §5, decided cluster-wide.
//!
//! Kong keeps its snooze windows and last-seen digests per node in memory; here they live in a
//! store that every dispatcher shares, and each decision is a single conditional write, so two
//! dispatchers racing on the same hook can never both deliver what only one may. [`decide`] maps a
//! hook's settings to at most one such write; [`event_key`] is the digest that identifies "the same
//! event". Two adapters implement the port: [`sqlite::SqliteWindowStore`] (embedded) and
//! [`dynamodb::DynamoWindowStore`] (deployed); both pass the contract suite in `tests/`.

pub mod dynamodb;
pub mod sqlite;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

pub use crate::store::StoreError;

/// How long an on_change digest is remembered. Long enough that "unchanged" survives any realistic
/// gap between events, short enough that hooks deleted long ago do not keep rows forever.
pub const CHANGE_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Durable, cluster-wide windows and digests. Every method is one conditional write, so concurrent
/// callers on the same key agree: exactly one of them gets `true` where only one may.
///
/// A claimant is a delivery id: a retry of the same delivery must get the same answer again, which
/// is why a key's current claimant always passes.
#[async_trait]
pub trait WindowStore: Send + Sync + 'static {
    /// Claims the window `key` for `ttl`: true when no unexpired claim exists or the existing one is
    /// this claimant's (a retry of the same delivery must pass again); false when another claimant
    /// holds it. A passing call (re)starts the window at now + `ttl`.
    async fn claim_window(
        &self,
        key: &str,
        claimant: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// on_change: true (and records `digest` for `key`, owned by `claimant`) when `digest` differs
    /// from the recorded one, or when the recorded one is this claimant's; false when it equals
    /// another claimant's recorded digest. Records expire after `ttl` (long, e.g. [`CHANGE_TTL`])
    /// so the table does not grow forever; an expired record counts as absent.
    async fn swap_digest(
        &self,
        key: &str,
        digest: &str,
        claimant: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;
}

/// What to do with one (event, hook) delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it.
    Deliver,
    /// Drop it (counted and logged, not retried), for this reason.
    Drop(Dropped),
}

/// Why [`decide`] dropped an event for a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Another event of the hook (or, with on_change too, of the same key) holds the window.
    Snoozed,
    /// on_change: the event's key equals the last one delivered to the hook.
    Unchanged,
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dropped::Snoozed => "snoozed",
            Dropped::Unchanged => "unchanged",
        })
    }
}

/// Applies spec §5 to one delivery of an event whose key is `event_key` to hook `hook_id`, with at
/// most one store write:
///
/// | settings | write |
/// |---|---|
/// | neither (or `snooze: 0`, `on_change: false`) | none: deliver |
/// | snooze only | claim `snooze:<hook_id>` for `snooze` s |
/// | on_change only | swap digest `change:<hook_id>` to `event_key` |
/// | both | claim `snooze:<hook_id>:<event_key>` for `snooze` s |
///
/// `delivery_id` is the claimant, so a retry of the same delivery is decided the same way.
pub async fn decide(
    store: &dyn WindowStore,
    hook_id: Uuid,
    snooze: Option<u32>,
    on_change: Option<bool>,
    event_key: &str,
    delivery_id: &str,
) -> Result<Decision, StoreError> {
    // Kong treats `snooze: 0` as "no snooze": a window of zero seconds would drop nothing anyway.
    let snooze = snooze.filter(|&seconds| seconds > 0);
    let on_change = on_change.unwrap_or(false);
    let hook = hook_id.hyphenated();
    match (snooze, on_change) {
        (None, false) => Ok(Decision::Deliver),
        (Some(seconds), false) => {
            let key = format!("snooze:{hook}");
            let ttl = Duration::from_secs(seconds.into());
            let passed = store.claim_window(&key, delivery_id, ttl).await?;
            Ok(if passed {
                Decision::Deliver
            } else {
                Decision::Drop(Dropped::Snoozed)
            })
        }
        (None, true) => {
            let key = format!("change:{hook}");
            let passed = store
                .swap_digest(&key, event_key, delivery_id, CHANGE_TTL)
                .await?;
            Ok(if passed {
                Decision::Deliver
            } else {
                Decision::Drop(Dropped::Unchanged)
            })
        }
        (Some(seconds), true) => {
            // The digest joins the window key: each distinct payload at most once per window.
            let key = format!("snooze:{hook}:{event_key}");
            let ttl = Duration::from_secs(seconds.into());
            let passed = store.claim_window(&key, delivery_id, ttl).await?;
            Ok(if passed {
                Decision::Deliver
            } else {
                Decision::Drop(Dropped::Snoozed)
            })
        }
    }
}

/// The key of an event (spec §5): the hex SHA-256 of a canonical form of its `unique` fields when
/// its source declares some, otherwise of all of `data`.
///
/// The canonical form is one line per leaf, sorted by path, `<path>=<value>\n`, where
/// - a path is its segments joined by `.`: object keys as JSON strings (`"a"."b"`), array indices as
///   bare numbers (`"a".1`), so `{"a.b":1}`, `{"a":{"b":1}}`, `{"a":{"1":x}}` and `{"a":[_,x]}` all
///   differ (keys are quoted and escaped, so no key can forge a separator);
/// - a value is its JSON text, so `1`, `"1"`, `true`, `"true"` and `null` all differ. A float
///   with an integral value is written as the integer (`1.0` → `1`), so producers that disagree
///   on number formatting still agree on the key;
/// - an empty object or array is a leaf (`{}` / `[]`), so `{"a":{}}` differs from `{}`.
///
/// Key order never matters. With `unique`, the key is exactly the key of the event's data reduced
/// to those (top-level) fields: other fields can change without changing the key. A unique field
/// that is **missing** is left out, while one that is present with `null` is written as `null`;
/// the two give different keys, as they do without `unique`, because a producer that sends an
/// explicit `null` is saying something different from one that says nothing. An empty `unique`
/// list counts as none declared (validation rejects it anyway).
pub fn event_key(data: &Value, unique: Option<&[String]>) -> String {
    let mut lines = Vec::new();
    match unique.filter(|fields| !fields.is_empty()) {
        Some(fields) => {
            // A BTreeMap de-duplicates repeated field names and sorts them.
            let projected: BTreeMap<&str, &Value> = fields
                .iter()
                .filter_map(|field| Some((field.as_str(), data.as_object()?.get(field)?)))
                .collect();
            for (field, value) in projected {
                flatten(&mut quoted(field), value, &mut lines);
            }
        }
        None => flatten(&mut String::new(), data, &mut lines),
    }
    // Paths are unique within one document, so sorting whole lines sorts by path.
    lines.sort_unstable();
    let mut hasher = Sha256::new();
    for line in &lines {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

/// Appends one `<path>=<value>` line per leaf of `value`, whose path so far is `path`.
fn flatten(path: &mut String, value: &Value, lines: &mut Vec<String>) {
    let prefix_len = path.len();
    let mut child = |path: &mut String, segment: &str, value: &Value| {
        if prefix_len > 0 {
            path.push('.');
        }
        path.push_str(segment);
        flatten(path, value, lines);
        path.truncate(prefix_len);
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                child(path, &quoted(key), value);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (index, value) in items.iter().enumerate() {
                child(path, &index.to_string(), value);
            }
        }
        leaf => {
            let mut line = String::with_capacity(path.len() + 16);
            line.push_str(path);
            line.push('=');
            write_leaf(&mut line, leaf);
            lines.push(line);
        }
    }
}

/// `key` as a JSON string: quoted, with `"`, `\` and control characters escaped.
fn quoted(key: &str) -> String {
    Value::from(key).to_string()
}

fn write_leaf(out: &mut String, leaf: &Value) {
    if let Value::Number(number) = leaf {
        if let Some(float) = number.as_f64().filter(|_| number.is_f64()) {
            // Within ±2^53 every integer is exact in an f64, so this loses nothing.
            const EXACT: f64 = 9_007_199_254_740_992.0;
            if float.fract() == 0.0 && float.abs() <= EXACT {
                // Truncation is exact here (checked just above); `as` keeps -0.0 → 0.
                let _ = write!(out, "{}", float as i64);
                return;
            }
        }
    }
    // Writing to a String cannot fail.
    let _ = write!(out, "{leaf}");
}

/// `now + ttl` in milliseconds, saturating rather than wrapping for absurd TTLs.
pub(crate) fn expiry_millis(now: i64, ttl: Duration) -> i64 {
    now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    fn unique(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|f| (*f).to_owned()).collect()
    }

    #[test]
    fn event_key_is_hex_sha256() {
        let key = event_key(&json!({"a": 1}), None);
        assert_eq!(key.len(), 64);
        assert!(key
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn event_key_matches_a_vector_computed_outside() {
        // python3: hashlib.sha256(b'"a"."c"=null\n"b".0=1\n"b".1="x"\n"d"=true\n').hexdigest()
        let data = json!({"d": true, "b": [1.0, "x"], "a": {"c": null}});
        assert_eq!(
            event_key(&data, None),
            "d177f991970c34205c1f25b96070462b63f2f2702651d64c77b70c7a0da80f07"
        );
    }

    #[test]
    fn key_order_does_not_matter() {
        let a = json!({"x": 1, "y": {"p": true, "q": [1, 2]}, "z": "s"});
        let b = json!({"z": "s", "y": {"q": [1, 2], "p": true}, "x": 1});
        assert_eq!(event_key(&a, None), event_key(&b, None));
    }

    #[test]
    fn array_order_matters() {
        assert_ne!(
            event_key(&json!({"a": [1, 2]}), None),
            event_key(&json!({"a": [2, 1]}), None)
        );
    }

    #[test]
    fn nested_and_flat_differ() {
        let nested = event_key(&json!({"a": {"b": 1}}), None);
        let dotted = event_key(&json!({"a.b": 1}), None);
        assert_ne!(nested, dotted);
        // An array index is not the same as an object key that looks like one.
        assert_ne!(
            event_key(&json!({"a": ["x", "y"]}), None),
            event_key(&json!({"a": {"0": "x", "1": "y"}}), None)
        );
        // Keys cannot forge separators.
        assert_ne!(
            event_key(&json!({"a": {"b": 1}}), None),
            event_key(&json!({"a\".\"b": 1}), None)
        );
        assert_ne!(
            event_key(&json!({"a": "1", "b": 2}), None),
            event_key(&json!({"a": "1\n\"b\"=2"}), None)
        );
    }

    #[test]
    fn nested_values_change_the_key() {
        assert_ne!(
            event_key(&json!({"a": {"b": 1}}), None),
            event_key(&json!({"a": {"b": 2}}), None)
        );
        assert_ne!(
            event_key(&json!({"a": [1, 2]}), None),
            event_key(&json!({"a": [1, 2, 3]}), None)
        );
    }

    #[test]
    fn types_are_distinguished() {
        let keys = [
            json!({"a": 1}),
            json!({"a": "1"}),
            json!({"a": true}),
            json!({"a": "true"}),
            json!({"a": null}),
            json!({"a": "null"}),
            json!({"a": 1.5}),
            json!({"a": {}}),
            json!({"a": []}),
            json!({}),
        ]
        .map(|data| event_key(&data, None));
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn integral_floats_equal_integers() {
        assert_eq!(
            event_key(&json!({"a": 1.0}), None),
            event_key(&json!({"a": 1}), None)
        );
        assert_eq!(
            event_key(&json!({"a": -0.0}), None),
            event_key(&json!({"a": 0}), None)
        );
    }

    #[test]
    fn only_unique_fields_count() {
        let fields = unique(&["consumer", "ip", "service"]);
        let a = json!({"consumer": "c", "ip": "1.2.3.4", "service": "s", "rate": 10, "window": 60});
        let b = json!({"service": "s", "ip": "1.2.3.4", "consumer": "c", "rate": 99});
        assert_eq!(event_key(&a, Some(&fields)), event_key(&b, Some(&fields)));
        // ...while all the data counts without them.
        assert_ne!(event_key(&a, None), event_key(&b, None));
        // A unique field changing changes the key.
        let c = json!({"consumer": "d", "ip": "1.2.3.4", "service": "s", "rate": 10});
        assert_ne!(event_key(&a, Some(&fields)), event_key(&c, Some(&fields)));
    }

    #[test]
    fn unique_key_is_the_key_of_the_projection() {
        let fields = unique(&["b", "a", "a"]);
        let data = json!({"a": {"x": [1]}, "b": "two", "c": 3});
        assert_eq!(
            event_key(&data, Some(&fields)),
            event_key(&json!({"a": {"x": [1]}, "b": "two"}), None)
        );
    }

    #[test]
    fn missing_unique_field_differs_from_null() {
        let fields = unique(&["consumer", "service"]);
        let missing = json!({"service": "s"});
        let null = json!({"consumer": null, "service": "s"});
        assert_ne!(
            event_key(&missing, Some(&fields)),
            event_key(&null, Some(&fields))
        );
    }

    #[test]
    fn empty_unique_list_means_all_data() {
        let data = json!({"a": 1});
        assert_eq!(event_key(&data, Some(&[])), event_key(&data, None));
    }

    /// Records every call and answers `true` (or what `answer` says).
    struct Recorder {
        calls: Mutex<Vec<String>>,
        answer: bool,
    }

    impl Recorder {
        fn new(answer: bool) -> Recorder {
            Recorder {
                calls: Mutex::new(Vec::new()),
                answer,
            }
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl WindowStore for Recorder {
        async fn claim_window(
            &self,
            key: &str,
            claimant: &str,
            ttl: Duration,
        ) -> Result<bool, StoreError> {
            let call = format!("claim {key} {claimant} {}", ttl.as_secs());
            self.calls.lock().unwrap().push(call);
            Ok(self.answer)
        }

        async fn swap_digest(
            &self,
            key: &str,
            digest: &str,
            claimant: &str,
            ttl: Duration,
        ) -> Result<bool, StoreError> {
            let call = format!("swap {key} {digest} {claimant} {}", ttl.as_secs());
            self.calls.lock().unwrap().push(call);
            Ok(self.answer)
        }
    }

    const HOOK: Uuid = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    const HOOK_TEXT: &str = "01234567-89ab-cdef-0123-456789abcdef";

    #[tokio::test]
    async fn neither_setting_delivers_without_touching_the_store() {
        for (snooze, on_change) in [(None, None), (Some(0), None), (None, Some(false))] {
            let store = Recorder::new(false);
            let decision = decide(&store, HOOK, snooze, on_change, "k", "d1")
                .await
                .unwrap();
            assert_eq!(decision, Decision::Deliver);
            assert!(store.calls().is_empty(), "{snooze:?} {on_change:?}");
        }
    }

    #[tokio::test]
    async fn snooze_only_claims_the_hook_window() {
        let store = Recorder::new(true);
        let decision = decide(&store, HOOK, Some(60), None, "k", "d1")
            .await
            .unwrap();
        assert_eq!(decision, Decision::Deliver);
        assert_eq!(store.calls(), [format!("claim snooze:{HOOK_TEXT} d1 60")]);

        let store = Recorder::new(false);
        let decision = decide(&store, HOOK, Some(60), Some(false), "k", "d1")
            .await
            .unwrap();
        assert_eq!(decision, Decision::Drop(Dropped::Snoozed));
        assert_eq!(store.calls().len(), 1);
    }

    #[tokio::test]
    async fn on_change_only_swaps_the_hook_digest() {
        let store = Recorder::new(true);
        let decision = decide(&store, HOOK, None, Some(true), "k", "d1")
            .await
            .unwrap();
        assert_eq!(decision, Decision::Deliver);
        let ttl = CHANGE_TTL.as_secs();
        assert_eq!(
            store.calls(),
            [format!("swap change:{HOOK_TEXT} k d1 {ttl}")]
        );

        let store = Recorder::new(false);
        let decision = decide(&store, HOOK, Some(0), Some(true), "k", "d1")
            .await
            .unwrap();
        assert_eq!(decision, Decision::Drop(Dropped::Unchanged));
        assert_eq!(store.calls().len(), 1);
    }

    #[tokio::test]
    async fn both_claim_a_window_per_payload() {
        let store = Recorder::new(true);
        let decision = decide(&store, HOOK, Some(5), Some(true), "k", "d1")
            .await
            .unwrap();
        assert_eq!(decision, Decision::Deliver);
        assert_eq!(store.calls(), [format!("claim snooze:{HOOK_TEXT}:k d1 5")]);

        let store = Recorder::new(false);
        let decision = decide(&store, HOOK, Some(5), Some(true), "k", "d1")
            .await
            .unwrap();
        assert_eq!(decision, Decision::Drop(Dropped::Snoozed));
        assert_eq!(store.calls().len(), 1);
    }
}
