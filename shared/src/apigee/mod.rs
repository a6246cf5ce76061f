//! Apigee Edge monetization notifications (spec §12): notification conditions, the usage
//! thresholds they name, and the durable record of which thresholds a developer has reached.
//!
//! An Apigee webhook is a hook of this system (see [`webhook`]); a notification condition names a
//! rate plan, a list of usage percentages and the webhooks to call. When a `monetization`/`usage`
//! event arrives, each matching webhook is called once for every listed percentage the
//! developer's usage of that rate plan has reached in the current billing cycle
//! ([`Condition::reached`]): the dispatcher runs [`usage::UsageThresholds`] on every event, and
//! that stage picks out the usage events and their webhooks. A usage is matched only against the
//! conditions of its own organisation (its `orgName`, required: [`webhook::check_usage`]), since
//! rate plan ids of different organisations may be equal. Which percentages were already notified
//! is kept by the [`MonetizationStore`] port: [`MonetizationStore::claim`] is one conditional
//! write, so concurrent dispatchers agree on exactly one claimant per threshold. Two adapters
//! implement it: [`sqlite::SqliteMonetizationStore`] and [`dynamodb::DynamoMonetizationStore`],
//! which pass the same contract suite in `tests/`.

pub mod dynamodb;
pub mod sqlite;
pub(crate) mod usage;
pub mod webhook;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use crate::store::StoreError;

/// Most notification conditions per organisation.
pub(crate) const MAX_CONDITIONS_PER_ORG: usize = 1000;
/// Most percentages one `UsageTarget` may list (`%= 0 to 1000 by 1` is refused).
pub(crate) const MAX_TARGETS: usize = 100;
/// Highest percentage a `UsageTarget` may name.
pub(crate) const MAX_PERCENT: u32 = 1000;
/// Most actions (webhooks) per condition.
pub(crate) const MAX_ACTIONS: usize = 16;
/// Longest `RATEPLAN` value, in bytes.
pub(crate) const MAX_RATE_PLAN_BYTES: usize = 256;

/// A notification condition as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub id: Uuid,
    pub org: String,
    /// The `RATEPLAN` attribute: usage of this rate plan is watched.
    pub rate_plan: String,
    /// The `PUBLISHED` attribute, when given (always `TRUE`).
    pub published: bool,
    /// The `UsageTarget` attribute as given, e.g. `%= 80 to 120 by 10`.
    pub usage_target: String,
    /// The percentages it lists, ascending.
    pub targets: Vec<u32>,
    /// The webhooks (hook ids) of its `WEBHOOK` actions.
    pub webhooks: Vec<Uuid>,
    /// Unix ms.
    pub created: i64,
    /// Unix ms.
    pub updated: i64,
}

impl Condition {
    /// The condition in Edge's shape.
    pub fn shown(&self) -> Value {
        let mut attributes = vec![json!({"attribute": "RATEPLAN", "value": self.rate_plan})];
        if self.published {
            attributes.push(json!({"attribute": "PUBLISHED", "value": "TRUE"}));
        }
        attributes.push(json!({"attribute": "UsageTarget", "value": self.usage_target}));
        let actions: Vec<Value> = self
            .webhooks
            .iter()
            .map(|id| json!({"actionAttribute": "WEBHOOK", "value": id}))
            .collect();
        json!({
            "id": self.id,
            "orgId": self.org,
            "notificationCondition": attributes,
            "actions": actions,
            "created": self.created,
            "updated": self.updated,
        })
    }

    /// The listed percentages that `percent_used` has reached, ascending.
    pub fn reached(&self, percent_used: f64) -> impl Iterator<Item = u32> + '_ {
        self.targets
            .iter()
            .copied()
            .filter(move |t| percent_used >= f64::from(*t))
    }
}

/// What a notification condition request says, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConditionInput {
    pub rate_plan: String,
    pub published: bool,
    pub usage_target: String,
    pub targets: Vec<u32>,
    pub webhooks: Vec<Uuid>,
}

/// A `UsageTarget` value refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("UsageTarget {value:?}: {problem}")]
pub struct UsageTargetError {
    /// The value as given.
    pub value: String,
    pub(crate) problem: UsageTargetProblem,
}

/// What is wrong with a `UsageTarget` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UsageTargetProblem {
    #[error("expected `%= N` or `%= A to B by S`")]
    Shape,
    #[error("percentages go up to {}", MAX_PERCENT)]
    AboveMax,
    #[error("{0:?} is not a whole percentage")]
    NotWhole(String),
    #[error("the range must not end below its start")]
    Descending,
    #[error("the step must be at least 1")]
    ZeroStep,
    #[error("lists {0} percentages, at most {max} allowed", max = MAX_TARGETS)]
    TooMany(u32),
}

/// Parses a `UsageTarget` value: `%= N`, or `%= A to B by S` (`by S` may be left out: 10, as
/// Edge's UI does). Whole percentages from 0 to [`MAX_PERCENT`]; at most [`MAX_TARGETS`] of them.
pub fn parse_usage_target(value: &str) -> Result<Vec<u32>, UsageTargetError> {
    let bad = |problem: UsageTargetProblem| UsageTargetError {
        value: value.to_string(),
        problem,
    };
    let words: Vec<&str> = value.split_whitespace().collect();
    let (op, rest) = match words.split_first() {
        Some((first, rest)) if *first == "%=" => (first, rest.to_vec()),
        // `%=80` written without a space.
        Some((first, rest)) if first.starts_with("%=") && first.len() > 2 => {
            let mut all = vec![&first[2..]];
            all.extend_from_slice(rest);
            (&"%=", all)
        }
        _ => return Err(bad(UsageTargetProblem::Shape)),
    };
    debug_assert_eq!(*op, "%=");
    let number = |text: &str| -> Result<u32, UsageTargetError> {
        match text.parse::<u32>() {
            Ok(n) if n <= MAX_PERCENT => Ok(n),
            Ok(_) => Err(bad(UsageTargetProblem::AboveMax)),
            Err(_) => Err(bad(UsageTargetProblem::NotWhole(text.to_string()))),
        }
    };
    match rest.as_slice() {
        [n] => Ok(vec![number(n)?]),
        [from, "to", to] | [from, "to", to, "by", _] => {
            let (from, to) = (number(from)?, number(to)?);
            let step = match rest.get(4) {
                Some(step) => number(step)?,
                None => 10,
            };
            if from > to {
                return Err(bad(UsageTargetProblem::Descending));
            }
            if step == 0 {
                return Err(bad(UsageTargetProblem::ZeroStep));
            }
            let count = (to - from) / step + 1;
            if count as usize > MAX_TARGETS {
                return Err(bad(UsageTargetProblem::TooMany(count)));
            }
            Ok((0..count).map(|i| from + i * step).collect())
        }
        _ => Err(bad(UsageTargetProblem::Shape)),
    }
}

/// What is wrong with a notification condition request body; each message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConditionError {
    #[error("unknown field {0:?}")]
    UnknownField(String),
    #[error("notificationCondition must be an array")]
    AttributesNotArray,
    #[error("notificationCondition is required")]
    AttributesMissing,
    #[error("notificationCondition has too many attributes")]
    TooManyAttributes,
    #[error("each notificationCondition entry needs string `attribute` and `value`")]
    AttributeShape,
    #[error("notificationCondition entries have only `attribute` and `value`")]
    AttributeExtraKeys,
    #[error("unknown attribute {0:?}: expected RATEPLAN, PUBLISHED or UsageTarget")]
    UnknownAttribute(String),
    #[error("attribute {0} given twice")]
    RepeatedAttribute(String),
    #[error("the RATEPLAN attribute is required")]
    RatePlanMissing,
    #[error("RATEPLAN must be 1 to {} bytes long", MAX_RATE_PLAN_BYTES)]
    RatePlanLength,
    #[error("PUBLISHED must be TRUE, not {0:?}")]
    Published(String),
    #[error("the UsageTarget attribute is required")]
    UsageTargetMissing,
    #[error(transparent)]
    UsageTarget(#[from] UsageTargetError),
    #[error("actions must name at least one webhook")]
    NoActions,
    #[error("actions must be an array")]
    ActionsNotArray,
    #[error("actions is required")]
    ActionsMissing,
    #[error("actions: at most {} allowed", MAX_ACTIONS)]
    TooManyActions,
    #[error("action value {0:?} is not a webhook id")]
    NotAWebhookId(String),
    #[error("unknown actionAttribute {0:?}: expected WEBHOOK")]
    UnknownActionAttribute(String),
    #[error("each action needs string `actionAttribute` and `value`")]
    ActionShape,
}

/// Checks a notification condition request body (strictly: unknown keys and attributes,
/// repeated attributes, missing ones and malformed values are errors naming the problem).
pub(crate) fn parse_condition(body: &Map<String, Value>) -> Result<ConditionInput, ConditionError> {
    for key in body.keys() {
        if !matches!(
            key.as_str(),
            "notificationCondition" | "actions" | "id" | "orgId"
        ) {
            return Err(ConditionError::UnknownField(key.clone()));
        }
    }
    let attributes = match body.get("notificationCondition") {
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ConditionError::AttributesNotArray),
        None => return Err(ConditionError::AttributesMissing),
    };
    if attributes.len() > 8 {
        return Err(ConditionError::TooManyAttributes);
    }
    let (mut rate_plan, mut published, mut usage) = (None, None, None);
    for item in attributes {
        let (Some(name), Some(value)) = (
            item.get("attribute").and_then(Value::as_str),
            item.get("value").and_then(Value::as_str),
        ) else {
            return Err(ConditionError::AttributeShape);
        };
        if item.as_object().is_some_and(|o| o.len() != 2) {
            return Err(ConditionError::AttributeExtraKeys);
        }
        let slot = match name {
            "RATEPLAN" => &mut rate_plan,
            "PUBLISHED" => &mut published,
            "UsageTarget" => &mut usage,
            other => return Err(ConditionError::UnknownAttribute(other.to_string())),
        };
        if slot.replace(value.to_string()).is_some() {
            return Err(ConditionError::RepeatedAttribute(name.to_string()));
        }
    }
    let rate_plan = rate_plan.ok_or(ConditionError::RatePlanMissing)?;
    if rate_plan.is_empty() || rate_plan.len() > MAX_RATE_PLAN_BYTES {
        return Err(ConditionError::RatePlanLength);
    }
    let published = match published.as_deref() {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) => return Err(ConditionError::Published(v.to_string())),
    };
    let usage_target = usage.ok_or(ConditionError::UsageTargetMissing)?;
    let targets = parse_usage_target(&usage_target)?;

    let actions = match body.get("actions") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => return Err(ConditionError::NoActions),
        Some(_) => return Err(ConditionError::ActionsNotArray),
        None => return Err(ConditionError::ActionsMissing),
    };
    if actions.len() > MAX_ACTIONS {
        return Err(ConditionError::TooManyActions);
    }
    let mut webhooks = Vec::new();
    for action in actions {
        match (
            action.get("actionAttribute").and_then(Value::as_str),
            action.get("value").and_then(Value::as_str),
        ) {
            (Some("WEBHOOK"), Some(id)) => match Uuid::parse_str(id) {
                Ok(id) if !webhooks.contains(&id) => webhooks.push(id),
                Ok(_) => {}
                Err(_) => return Err(ConditionError::NotAWebhookId(id.to_string())),
            },
            (Some(other), _) if other != "WEBHOOK" => {
                return Err(ConditionError::UnknownActionAttribute(other.to_string()))
            }
            _ => return Err(ConditionError::ActionShape),
        }
    }
    Ok(ConditionInput {
        rate_plan,
        published,
        usage_target,
        targets,
        webhooks,
    })
}

/// One threshold of one webhook for one developer, rate plan and billing cycle: notified once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Threshold {
    pub webhook: Uuid,
    pub developer: String,
    pub rate_plan: String,
    /// The usage's `nextBillingCycleStartDate`, as sent: a new value is a new cycle.
    pub cycle: String,
    pub percent: u32,
}

impl Threshold {
    /// A fixed-size key (SHA-256 of the parts, unambiguous as JSON), whatever their lengths.
    pub fn key(&self) -> String {
        let parts = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(parts))
    }
}

/// Conditions and reached thresholds, durable and deployment-wide.
#[async_trait]
pub trait MonetizationStore: Send + Sync + 'static {
    /// Creates or replaces a condition.
    async fn put_condition(&self, condition: &Condition) -> Result<(), StoreError>;

    async fn get_condition(&self, org: &str, id: Uuid) -> Result<Option<Condition>, StoreError>;

    /// The conditions of `org`, by id; at most [`MAX_CONDITIONS_PER_ORG`].
    async fn list_conditions(&self, org: &str) -> Result<Vec<Condition>, StoreError>;

    /// The conditions of `org` on rate plan `rate_plan`, by id. Only `org`'s: rate plan ids are
    /// not unique across organisations, and a usage is matched within its own (issue 19).
    async fn conditions_on_rate_plan(
        &self,
        org: &str,
        rate_plan: &str,
    ) -> Result<Vec<Condition>, StoreError>;

    /// Removes a condition; true when it existed.
    async fn delete_condition(&self, org: &str, id: Uuid) -> Result<bool, StoreError>;

    /// Marks `threshold` as reached by `claimant` (the usage event that reached it) unless it is
    /// reached already. True when it is `claimant`'s: the first claim, or a claim by the same
    /// claimant again (a redelivered event notifies again; receivers de-duplicate by delivery
    /// id). Concurrent claimants: exactly one gets true.
    async fn claim(&self, threshold: &Threshold, claimant: Uuid) -> Result<bool, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_targets_parse_strictly() {
        assert_eq!(parse_usage_target("%= 90"), Ok(vec![90]));
        assert_eq!(parse_usage_target("%=90"), Ok(vec![90]));
        assert_eq!(
            parse_usage_target("%= 80 to 120 by 10"),
            Ok(vec![80, 90, 100, 110, 120])
        );
        assert_eq!(parse_usage_target(" %=  80 to 100 "), Ok(vec![80, 90, 100]));
        assert_eq!(parse_usage_target("%= 80 to 95 by 10"), Ok(vec![80, 90]));
        for bad in [
            "",
            "90",
            "%=",
            "% = 90",
            "%= -5",
            "%= 1.5",
            "%= 1001",
            "%= 80 to",
            "%= 80 by 10",
            "%= 120 to 80",
            "%= 80 to 120 by 0",
            "%= 0 to 1000 by 1",
            "%= 80 to 120 step 10",
        ] {
            assert!(parse_usage_target(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_usage_target("%= 0 to 990 by 10").map(|t| t.len()),
            Ok(100)
        );
        // The messages the Edge routes answer with, word for word.
        let message = |value: &str| parse_usage_target(value).unwrap_err().to_string();
        assert_eq!(
            message("%= 1001"),
            r#"UsageTarget "%= 1001": percentages go up to 1000"#
        );
        assert_eq!(
            message("%= 1.5"),
            r#"UsageTarget "%= 1.5": "1.5" is not a whole percentage"#
        );
        assert_eq!(
            message("%= 0 to 1000 by 1"),
            r#"UsageTarget "%= 0 to 1000 by 1": lists 1001 percentages, at most 100 allowed"#
        );
        assert_eq!(
            message("90"),
            r#"UsageTarget "90": expected `%= N` or `%= A to B by S`"#
        );
    }

    #[test]
    fn condition_bodies_are_refused_with_a_message_naming_the_problem() {
        let refused = |body: Value| {
            parse_condition(body.as_object().unwrap())
                .unwrap_err()
                .to_string()
        };
        let condition = |attributes: Value, actions: Value| json!({"notificationCondition": attributes, "actions": actions});
        let webhook = json!([{"actionAttribute": "WEBHOOK", "value": Uuid::nil()}]);
        let plan = json!({"attribute": "RATEPLAN", "value": "p"});
        let target = json!({"attribute": "UsageTarget", "value": "%= 90"});
        assert_eq!(refused(json!({"x": 1})), r#"unknown field "x""#);
        assert_eq!(
            refused(condition(json!([plan, plan]), webhook.clone())),
            "attribute RATEPLAN given twice"
        );
        assert_eq!(
            refused(condition(json!([target]), webhook.clone())),
            "the RATEPLAN attribute is required"
        );
        assert_eq!(
            refused(condition(
                json!([plan, {"attribute": "UsageTarget", "value": "%= 2000"}]),
                webhook.clone()
            )),
            r#"UsageTarget "%= 2000": percentages go up to 1000"#
        );
        assert_eq!(
            refused(condition(json!([plan, target]), json!([]))),
            "actions must name at least one webhook"
        );
        assert_eq!(
            refused(condition(
                json!([plan, target]),
                json!([{"actionAttribute": "EMAIL", "value": "x"}])
            )),
            r#"unknown actionAttribute "EMAIL": expected WEBHOOK"#
        );
        assert_eq!(
            refused(condition(
                json!([plan, {"attribute": "PUBLISHED", "value": "no"}, target]),
                webhook.clone()
            )),
            r#"PUBLISHED must be TRUE, not "no""#
        );
        assert!(parse_condition(
            condition(json!([plan, target]), webhook)
                .as_object()
                .unwrap()
        )
        .is_ok());
    }

    #[test]
    fn a_usage_reaches_the_targets_at_or_below_it_in_order() {
        let condition = Condition {
            id: Uuid::nil(),
            org: "o".into(),
            rate_plan: "p".into(),
            published: true,
            usage_target: "%= 80 to 120 by 10".into(),
            targets: parse_usage_target("%= 80 to 120 by 10").unwrap(),
            webhooks: vec![],
            created: 0,
            updated: 0,
        };
        let reached = |p: f64| condition.reached(p).collect::<Vec<_>>();
        assert_eq!(reached(79.9), Vec::<u32>::new());
        assert_eq!(reached(80.0), [80]);
        assert_eq!(reached(130.0), [80, 90, 100, 110, 120]);
    }
}
