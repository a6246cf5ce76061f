//! The hook entity as stored and as served by the admin API ([`HookView`]) (spec §1).
//!
//! Values of these types have passed validation (see [`crate::validate`]); nothing else builds them
//! from user input. The JSON form is Kong's: `handler` and `config` side by side, defaults filled in.

mod view;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use view::HookView;

/// One event hook: which events it listens to and what it does with them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hook {
    pub id: Uuid,
    /// Unix seconds, set by the server.
    pub created_at: i64,
    /// Unix seconds, set by the server.
    pub updated_at: i64,
    pub source: String,
    /// `None` means every event of the source.
    pub event: Option<String>,
    #[serde(flatten)]
    pub handler: Handler,
    /// Seconds during which at most one event is delivered (spec §5).
    pub snooze: Option<u32>,
    /// Deliver only when the payload changed since the last delivery (spec §5).
    pub on_change: Option<bool>,
    /// A disabled hook is never dispatched.
    pub enabled: bool,
    /// Optional unique name.
    pub name: Option<String>,
    pub tags: Vec<String>,
    /// Why the dispatcher disabled the hook (a `410 Gone`, or failing every attempt for too
    /// long); `None` while enabled or when a person disabled it. Cleared when it is re-enabled.
    #[serde(default)]
    pub disabled_reason: Option<DisabledReason>,
    /// Unix seconds of the first failed attempt since the last successful one; `None` while
    /// deliveries succeed. Kept by the dispatcher, so a hook that fails every attempt for the
    /// deployment's pause time can be paused (see [`crate::dispatch::protection`]).
    #[serde(default)]
    pub failing_since: Option<i64>,
    /// Deliveries per second at most; `None` is unlimited. Deliveries above it wait.
    #[serde(default)]
    pub max_rate: Option<f64>,
    /// The hook's own retry schedule and timeouts (`retry`, `timeouts` on the wire); the
    /// deployment's defaults where `None`.
    #[serde(flatten, default)]
    pub delivery: DeliveryPolicy,
}

/// A hook's own delivery rules (spec §8, §12): each part `None` keeps the deployment's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryPolicy {
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    #[serde(default)]
    pub timeouts: Option<Timeouts>,
    /// Attempts of this hook in flight at once in one dispatcher (see
    /// `dispatch::lanes`); the deployment's default where `None`.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
}

/// `retry`: the delays between attempts and which failures are retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Seconds to wait after each failed attempt: its length is the number of retries. Used as
    /// given, without jitter; `None` keeps the deployment's schedule.
    #[serde(default)]
    pub delays: Option<Vec<u32>>,
    /// Which failures are retried.
    #[serde(default)]
    pub on: RetryOn,
}

/// Which failed attempts a [`RetryPolicy`] retries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetryOn {
    /// Spec §8: transport errors, timeouts, 408, 429 and 5xx.
    #[default]
    #[serde(rename = "default")]
    Default,
    /// Apigee Edge's rule: 5xx answers only; anything else fails at once.
    #[serde(rename = "5xx")]
    ServerErrors,
}

impl RetryOn {
    pub fn as_str(self) -> &'static str {
        match self {
            RetryOn::Default => "default",
            RetryOn::ServerErrors => "5xx",
        }
    }
}

/// `timeouts`: milliseconds allowed to connect (DNS, TCP, TLS) and to wait for each read of
/// the answer; `None` keeps the deployment's (its connect timeout; no read timeout but its
/// total one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Timeouts {
    #[serde(default)]
    pub connect_ms: Option<u32>,
    #[serde(default)]
    pub read_ms: Option<u32>,
}

/// Why the dispatcher disabled a hook: when, and what happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisabledReason {
    /// Unix seconds.
    pub at: i64,
    /// What happened, e.g. `target answered 410 Gone`.
    pub reason: String,
}

/// What every view of a hook outside the admin API shows in place of a secret (Kong's pings
/// have no such field; the marker says a secret is set without showing it).
pub const REDACTED: &str = "[redacted]";

impl Hook {
    /// The hook as it may leave the service anywhere but the admin API (crud and dao:crud
    /// events, pings, dead letters, logs): its [`HookView`] with its secrets redacted by
    /// [`redact_hook_value`].
    pub fn redacted(&self) -> serde_json::Value {
        let mut value = HookView::from(self).into_json();
        redact_hook_value(&mut value);
        value
    }
}

/// The one rule for a hook's secrets outside the admin API, on a hook's JSON form (also one
/// read back from a queue, which may not parse as today's [`Hook`]): a set `config.secret`
/// becomes [`REDACTED`], `config.previous_secret` goes, and so does the value of every header
/// that carries credentials ([`is_credential_header`]: where a URL's credentials must go).
/// Anything that is not a hook's shape is left alone.
pub fn redact_hook_value(value: &mut serde_json::Value) {
    let Some(config) = value.get_mut("config").and_then(|c| c.as_object_mut()) else {
        return;
    };
    config.remove("previous_secret");
    if let Some(secret) = config.get_mut("secret") {
        if !secret.is_null() {
            *secret = serde_json::Value::String(REDACTED.into());
        }
    }
    if let Some(headers) = config.get_mut("headers").and_then(|h| h.as_object_mut()) {
        for (name, header) in headers.iter_mut() {
            if is_credential_header(name) && !header.is_null() {
                *header = serde_json::Value::String(REDACTED.into());
            }
        }
    }
}

/// Words in a header's name that say its value is a credential (`Authorization`, `Cookie`,
/// `X-Api-Key`, `X-Auth-Token`, `X-Client-Secret`, …), compared without case.
const CREDENTIAL_HEADER_WORDS: [&str; 8] = [
    "authorization",
    "cookie",
    "token",
    "secret",
    "password",
    "apikey",
    "api-key",
    "auth",
];

/// Whether a header named `name` carries a credential, by [`CREDENTIAL_HEADER_WORDS`].
pub(crate) fn is_credential_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    CREDENTIAL_HEADER_WORDS
        .iter()
        .any(|word| name.contains(word))
}

/// The handler of a hook with its configuration; serialized as `"handler": …, "config": {…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "handler", content = "config", rename_all = "kebab-case")]
pub enum Handler {
    Webhook(WebhookConfig),
    WebhookCustom(WebhookCustomConfig),
    Log(LogConfig),
    Lambda(LambdaConfig),
}

impl Handler {
    /// The handler's name as it appears on the wire.
    pub fn kind(&self) -> HandlerKind {
        match self {
            Handler::Webhook(_) => HandlerKind::Webhook,
            Handler::WebhookCustom(_) => HandlerKind::WebhookCustom,
            Handler::Log(_) => HandlerKind::Log,
            Handler::Lambda(_) => HandlerKind::Lambda,
        }
    }
}

/// The four handler names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandlerKind {
    Webhook,
    WebhookCustom,
    Log,
    Lambda,
}

impl HandlerKind {
    pub(crate) const ALL: [HandlerKind; 4] = [
        HandlerKind::Webhook,
        HandlerKind::WebhookCustom,
        HandlerKind::Log,
        HandlerKind::Lambda,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandlerKind::Webhook => "webhook",
            HandlerKind::WebhookCustom => "webhook-custom",
            HandlerKind::Log => "log",
            HandlerKind::Lambda => "lambda",
        }
    }

    pub fn parse(name: &str) -> Option<HandlerKind> {
        HandlerKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// `webhook`: POST the event as JSON, signed when `secret` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookConfig {
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub secret: Option<String>,
    pub ssl_verify: bool,
    /// How deliveries are signed; `kong` for hooks stored before the field existed.
    #[serde(default)]
    pub signature: SignatureScheme,
    /// The secret a rotation replaced, still signing until it expires; never shown by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<PreviousSecret>,
}

/// `webhook-custom`: method, templated payload, body and headers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookCustomConfig {
    pub url: String,
    pub method: HttpMethod,
    pub payload: Option<BTreeMap<String, String>>,
    pub payload_format: bool,
    pub body: Option<String>,
    pub body_format: bool,
    pub headers: BTreeMap<String, String>,
    pub headers_format: bool,
    pub secret: Option<String>,
    pub ssl_verify: bool,
    /// How deliveries are signed; `kong` for hooks stored before the field existed.
    #[serde(default)]
    pub signature: SignatureScheme,
    /// The secret a rotation replaced, still signing until it expires; never shown by the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<PreviousSecret>,
}

/// How a webhook hook signs its deliveries (spec §6 and §8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureScheme {
    /// `X-Kong-Signature: sha1=…` when a secret is set, as Kong does.
    #[default]
    Kong,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    Standard,
}

impl SignatureScheme {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureScheme::Kong => "kong",
            SignatureScheme::Standard => "standard",
        }
    }
}

/// A secret replaced by `POST /event-hooks/{id}/secret/rotate`, still signing beside the new one
/// until `expires_at` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub secret: String,
    pub expires_at: i64,
}

/// What a signing handler signs with, borrowed from its config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signing<'a> {
    pub scheme: SignatureScheme,
    pub secret: Option<&'a str>,
    pub previous: Option<&'a PreviousSecret>,
}

impl Signing<'_> {
    /// The secrets that sign a delivery made at `now` (Unix s): the current one, then the
    /// previous one while it has not expired. Kong's header has room for one signature, so only
    /// the current secret signs `kong` hooks.
    pub(crate) fn secrets_at(&self, now: i64) -> Vec<&str> {
        let previous = match self.scheme {
            SignatureScheme::Standard => self
                .previous
                .filter(|p| p.expires_at > now)
                .map(|p| p.secret.as_str()),
            SignatureScheme::Kong => None,
        };
        self.secret.into_iter().chain(previous).collect()
    }
}

impl Handler {
    /// The signing settings of `webhook` and `webhook-custom` hooks; `None` for the others.
    pub fn signing(&self) -> Option<Signing<'_>> {
        let (scheme, secret, previous) = match self {
            Handler::Webhook(c) => (c.signature, &c.secret, &c.previous_secret),
            Handler::WebhookCustom(c) => (c.signature, &c.secret, &c.previous_secret),
            Handler::Log(_) | Handler::Lambda(_) => return None,
        };
        Some(Signing {
            scheme,
            secret: secret.as_deref(),
            previous: previous.as_ref(),
        })
    }

    /// Sets the secret and the rotated-out one of a signing handler; `false` for the others.
    pub(crate) fn set_secrets(&mut self, secret: String, previous: Option<PreviousSecret>) -> bool {
        let (slot, previous_slot) = match self {
            Handler::Webhook(c) => (&mut c.secret, &mut c.previous_secret),
            Handler::WebhookCustom(c) => (&mut c.secret, &mut c.previous_secret),
            Handler::Log(_) | Handler::Lambda(_) => return false,
        };
        *slot = Some(secret);
        *previous_slot = previous;
        true
    }

    /// Carries a rotation in progress over from the stored `old` handler into this freshly
    /// validated one, when the change keeps the secret and the scheme: editing a hook's other
    /// fields must not cut the grace period short, while setting a new secret by hand ends it.
    pub(crate) fn keep_rotation(&mut self, old: &Handler) {
        let (Some(new), Some(old_signing)) = (self.signing(), old.signing()) else {
            return;
        };
        let Some(previous) = old_signing.previous.cloned() else {
            return;
        };
        if new.scheme == old_signing.scheme && new.secret == old_signing.secret {
            if let Some(secret) = new.secret.map(str::to_string) {
                self.set_secrets(secret, Some(previous));
            }
        }
    }
}

/// The HTTP method of a `webhook-custom` hook: an upper-case token (Kong's `^%u+$`), checked once
/// when the hook is validated, so delivery sends exactly this method and never a fallback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpMethod(reqwest::Method);

/// A `config.method` that is not an upper-case token; the message is Kong's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value: {0}")]
pub struct InvalidMethod(pub String);

impl HttpMethod {
    /// `POST`, the method of `webhook` hooks.
    pub const POST: HttpMethod = HttpMethod(reqwest::Method::POST);

    /// Accepts upper-case ASCII letters only, as Kong's schema does (so `get` and `M-SEARCH` are
    /// refused); every such string is a valid HTTP token.
    pub fn parse(method: &str) -> Result<HttpMethod, InvalidMethod> {
        let invalid = || InvalidMethod(method.to_string());
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid());
        }
        reqwest::Method::from_bytes(method.as_bytes())
            .map(HttpMethod)
            .map_err(|_| invalid())
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The method to send.
    pub(crate) fn to_http(&self) -> reqwest::Method {
        self.0.clone()
    }
}

/// A checked method reads as the string it was given, e.g. for comparisons with `"GET"`.
impl std::ops::Deref for HttpMethod {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::str::FromStr for HttpMethod {
    type Err = InvalidMethod;

    fn from_str(method: &str) -> Result<HttpMethod, InvalidMethod> {
        HttpMethod::parse(method)
    }
}

impl TryFrom<String> for HttpMethod {
    type Error = InvalidMethod;

    fn try_from(method: String) -> Result<HttpMethod, InvalidMethod> {
        HttpMethod::parse(&method)
    }
}

impl From<HttpMethod> for String {
    fn from(method: HttpMethod) -> String {
        method.as_str().to_string()
    }
}

impl std::fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a payload travels, by method and content type (spec §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PayloadEncoding {
    Query,
    Json,
    Form,
    Multipart,
}

/// The encoding of a payload for `method` with `content_type`, or `None` when that content type
/// cannot carry one (refused at create time).
pub(crate) fn payload_encoding(
    method: &str,
    content_type: Option<&str>,
) -> Option<PayloadEncoding> {
    if !matches!(method, "POST" | "PUT" | "PATCH") {
        return Some(PayloadEncoding::Query);
    }
    let essence = content_type
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    match essence.as_str() {
        "application/json" => Some(PayloadEncoding::Json),
        "application/x-www-form-urlencoded" => Some(PayloadEncoding::Form),
        "multipart/form-data" | "" => Some(PayloadEncoding::Multipart),
        _ => None,
    }
}

/// `log`: one structured log line per event; no settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogConfig {}

/// `lambda`: a chain of user Lua functions, each given as source that returns a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LambdaConfig {
    pub functions: Vec<String>,
}

/// A hook together with the store's version counter, used for optimistic concurrency.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

/// A custom event registered through `PUT /event-hooks/sources/{source}/{event}` (spec §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomEvent {
    pub source: String,
    pub event: String,
    pub fields: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[cfg(test)]
impl Hook {
    /// An enabled `log` hook on every event of `source` with nothing else set, for unit tests to
    /// change what they need.
    pub(crate) fn log_on(source: &str) -> Hook {
        Hook {
            id: Uuid::new_v4(),
            created_at: 0,
            updated_at: 0,
            source: source.into(),
            event: None,
            handler: Handler::Log(LogConfig {}),
            snooze: None,
            on_change: None,
            enabled: true,
            name: None,
            tags: vec![],
            delivery: Default::default(),
            disabled_reason: None,
            failing_since: None,
            max_rate: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serializes_handler_and_config_side_by_side() {
        let hook = Hook {
            id: Uuid::nil(),
            created_at: 1,
            updated_at: 2,
            ..Hook::log_on("crud")
        };
        let value = serde_json::to_value(&hook).unwrap();
        assert_eq!(value["handler"], "log");
        assert_eq!(value["config"], json!({}));
        let back: Hook = serde_json::from_value(value).unwrap();
        assert_eq!(back, hook);
    }

    fn rotating_webhook(secret: &str) -> Handler {
        Handler::Webhook(WebhookConfig {
            url: "https://a.test".into(),
            headers: BTreeMap::new(),
            secret: Some(secret.into()),
            ssl_verify: false,
            signature: SignatureScheme::Standard,
            previous_secret: Some(PreviousSecret {
                secret: "whsec_old".into(),
                expires_at: 100,
            }),
        })
    }

    #[test]
    fn a_rotated_out_secret_is_never_shown_and_signs_until_it_expires() {
        let hook = Hook {
            id: Uuid::nil(),
            created_at: 1,
            updated_at: 2,
            source: "crud".into(),
            event: None,
            handler: rotating_webhook("whsec_new"),
            snooze: None,
            on_change: None,
            enabled: true,
            name: None,
            tags: vec![],
            delivery: Default::default(),
            disabled_reason: None,
            failing_since: None,
            max_rate: None,
        };
        let shown = HookView::from(&hook).into_json();
        assert_eq!(shown["config"]["secret"], "whsec_new");
        assert_eq!(shown["config"]["signature"], "standard");
        assert!(!shown.to_string().contains("whsec_old"), "{shown}");
        // Stored (serialized) whole, so that it keeps signing.
        let stored = serde_json::to_value(&hook).unwrap();
        assert_eq!(stored["config"]["previous_secret"]["secret"], "whsec_old");
        let signing = hook.handler.signing().unwrap();
        assert_eq!(signing.secrets_at(99), ["whsec_new", "whsec_old"]);
        assert_eq!(signing.secrets_at(100), ["whsec_new"]);

        // Outside the admin API neither secret is shown; the marker says one is set.
        let redacted = hook.redacted();
        assert_eq!(redacted["config"]["secret"], REDACTED);
        assert!(redacted["config"].get("previous_secret").is_none());
        let text = redacted.to_string();
        assert!(
            !text.contains("whsec_new") && !text.contains("whsec_old"),
            "{text}"
        );
        // The same rule on a hook's JSON as a queue carries it (previous secret included).
        let mut queued = stored.clone();
        redact_hook_value(&mut queued);
        assert_eq!(queued, redacted);
        // No secret stays `null`; anything that is not a hook is left alone.
        let mut unsigned = json!({"config": {"secret": null}});
        redact_hook_value(&mut unsigned);
        assert_eq!(unsigned, json!({"config": {"secret": null}}));
        let mut other = json!(["secret"]);
        redact_hook_value(&mut other);
        assert_eq!(other, json!(["secret"]));
    }

    #[test]
    fn credential_headers_are_redacted_and_others_kept() {
        let mut hook = json!({"config": {"headers": {
            "Authorization": "Bearer s3cret",
            "X-Api-Key": "k3y",
            "x-auth-token": "t0ken",
            "Cookie": "session=abc",
            "Content-Type": "application/json",
            "X-Tenant": "blue",
        }}});
        redact_hook_value(&mut hook);
        let headers = &hook["config"]["headers"];
        for name in ["Authorization", "X-Api-Key", "x-auth-token", "Cookie"] {
            assert_eq!(headers[name], REDACTED, "{name}");
        }
        assert_eq!(headers["Content-Type"], "application/json");
        assert_eq!(headers["X-Tenant"], "blue");
        let text = hook.to_string();
        for secret in ["s3cret", "k3y", "t0ken", "abc"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[test]
    fn a_rotation_survives_edits_that_keep_the_secret_and_scheme() {
        let old = rotating_webhook("whsec_new");
        let fresh = |secret: &str, signature| {
            Handler::Webhook(WebhookConfig {
                url: "https://b.test".into(),
                headers: BTreeMap::new(),
                secret: Some(secret.into()),
                ssl_verify: false,
                signature,
                previous_secret: None,
            })
        };
        let mut edited = fresh("whsec_new", SignatureScheme::Standard);
        edited.keep_rotation(&old);
        assert!(edited.signing().unwrap().previous.is_some());
        let mut new_secret = fresh("whsec_other", SignatureScheme::Standard);
        new_secret.keep_rotation(&old);
        assert!(new_secret.signing().unwrap().previous.is_none());
        let mut to_kong = fresh("whsec_new", SignatureScheme::Kong);
        to_kong.keep_rotation(&old);
        assert!(to_kong.signing().unwrap().previous.is_none());
    }

    #[test]
    fn methods_are_upper_case_tokens() {
        for good in ["GET", "POST", "PURGE", "PROPFIND"] {
            let method = HttpMethod::parse(good).unwrap();
            assert_eq!(method.as_str(), good);
            assert_eq!(method.to_http().as_str(), good);
        }
        for bad in ["", "get", "Post", "M-SEARCH", "GET ", "GÉT"] {
            assert_eq!(
                HttpMethod::parse(bad),
                Err(InvalidMethod(bad.to_string())),
                "{bad:?}"
            );
        }
        assert_eq!(
            InvalidMethod("post".into()).to_string(),
            "invalid value: post"
        );
    }

    #[test]
    fn a_stored_method_is_checked_when_read_back() {
        let method: HttpMethod = serde_json::from_value(json!("PATCH")).unwrap();
        assert_eq!(serde_json::to_value(&method).unwrap(), json!("PATCH"));
        assert!(serde_json::from_value::<HttpMethod>(json!("patch")).is_err());
    }

    #[test]
    fn encodings_by_method() {
        assert_eq!(
            payload_encoding("DELETE", Some("application/json")),
            Some(PayloadEncoding::Query)
        );
        assert_eq!(
            payload_encoding("PATCH", None),
            Some(PayloadEncoding::Multipart)
        );
        assert_eq!(payload_encoding("POST", Some("text/plain")), None);
    }
}
