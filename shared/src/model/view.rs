//! What the admin API answers for a hook: the hook as stored, less what only signs.
//!
//! A rotated-out secret (`config.previous_secret`) keeps signing deliveries until it expires,
//! so it is stored with the hook, but no answer ever shows it (spec §8). [`HookView`] has no
//! such field at all, rather than deleting it from the stored form's JSON: what the API can
//! show is decided by a type. Its JSON is the stored form's otherwise, key for key and in the
//! same order; the constructors destructure every field, so a field added to [`Hook`] or to a
//! config does not compile until it is shown here or deliberately left out.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{
    DeliveryPolicy, DisabledReason, Handler, Hook, HttpMethod, LambdaConfig, LogConfig,
    SignatureScheme, WebhookConfig, WebhookCustomConfig,
};

/// A hook as the admin API shows it, to the admin only: the current secret as Kong shows it,
/// never a rotated-out one. Every other exit uses [`Hook::redacted`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HookView {
    id: Uuid,
    created_at: i64,
    updated_at: i64,
    source: String,
    event: Option<String>,
    #[serde(flatten)]
    handler: HandlerView,
    snooze: Option<u32>,
    on_change: Option<bool>,
    enabled: bool,
    name: Option<String>,
    tags: Vec<String>,
    disabled_reason: Option<DisabledReason>,
    failing_since: Option<i64>,
    max_rate: Option<f64>,
    #[serde(flatten)]
    delivery: DeliveryPolicy,
}

impl HookView {
    /// The view as a JSON value, for answers that add to it or merge into it.
    pub(crate) fn into_json(self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl From<&Hook> for HookView {
    fn from(hook: &Hook) -> HookView {
        let Hook {
            id,
            created_at,
            updated_at,
            source,
            event,
            handler,
            snooze,
            on_change,
            enabled,
            name,
            tags,
            disabled_reason,
            failing_since,
            max_rate,
            delivery,
        } = hook;
        HookView {
            id: *id,
            created_at: *created_at,
            updated_at: *updated_at,
            source: source.clone(),
            event: event.clone(),
            handler: HandlerView::from(handler),
            snooze: *snooze,
            on_change: *on_change,
            enabled: *enabled,
            name: name.clone(),
            tags: tags.clone(),
            disabled_reason: disabled_reason.clone(),
            failing_since: *failing_since,
            max_rate: *max_rate,
            delivery: delivery.clone(),
        }
    }
}

/// [`Handler`] as shown: `"handler": …, "config": {…}`, the webhook configs without their
/// rotated-out secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "handler", content = "config", rename_all = "kebab-case")]
enum HandlerView {
    Webhook(WebhookView),
    WebhookCustom(WebhookCustomView),
    Log(LogConfig),
    Lambda(LambdaConfig),
}

impl From<&Handler> for HandlerView {
    fn from(handler: &Handler) -> HandlerView {
        match handler {
            Handler::Webhook(config) => HandlerView::Webhook(WebhookView::from(config)),
            Handler::WebhookCustom(config) => {
                HandlerView::WebhookCustom(WebhookCustomView::from(config))
            }
            Handler::Log(config) => HandlerView::Log(config.clone()),
            Handler::Lambda(config) => HandlerView::Lambda(config.clone()),
        }
    }
}

/// [`WebhookConfig`] as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct WebhookView {
    url: String,
    headers: BTreeMap<String, String>,
    secret: Option<String>,
    ssl_verify: bool,
    signature: SignatureScheme,
}

impl From<&WebhookConfig> for WebhookView {
    fn from(config: &WebhookConfig) -> WebhookView {
        let WebhookConfig {
            url,
            headers,
            secret,
            ssl_verify,
            signature,
            previous_secret: _,
        } = config;
        WebhookView {
            url: url.clone(),
            headers: headers.clone(),
            secret: secret.clone(),
            ssl_verify: *ssl_verify,
            signature: *signature,
        }
    }
}

/// [`WebhookCustomConfig`] as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct WebhookCustomView {
    url: String,
    method: HttpMethod,
    payload: Option<BTreeMap<String, String>>,
    payload_format: bool,
    body: Option<String>,
    body_format: bool,
    headers: BTreeMap<String, String>,
    headers_format: bool,
    secret: Option<String>,
    ssl_verify: bool,
    signature: SignatureScheme,
}

impl From<&WebhookCustomConfig> for WebhookCustomView {
    fn from(config: &WebhookCustomConfig) -> WebhookCustomView {
        let WebhookCustomConfig {
            url,
            method,
            payload,
            payload_format,
            body,
            body_format,
            headers,
            headers_format,
            secret,
            ssl_verify,
            signature,
            previous_secret: _,
        } = config;
        WebhookCustomView {
            url: url.clone(),
            method: method.clone(),
            payload: payload.clone(),
            payload_format: *payload_format,
            body: body.clone(),
            body_format: *body_format,
            headers: headers.clone(),
            headers_format: *headers_format,
            secret: secret.clone(),
            ssl_verify: *ssl_verify,
            signature: *signature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PreviousSecret, RetryOn, RetryPolicy, Timeouts};

    fn rotated() -> Option<PreviousSecret> {
        Some(PreviousSecret {
            secret: "whsec_old".into(),
            expires_at: 100,
        })
    }

    /// One hook per handler, every optional field set, so that keys, order and values all show.
    fn every_kind() -> Vec<Hook> {
        let headers = BTreeMap::from([("x-a".to_string(), "1".to_string())]);
        let handlers = [
            Handler::Webhook(WebhookConfig {
                url: "https://a.test".into(),
                headers: headers.clone(),
                secret: Some("whsec_new".into()),
                ssl_verify: true,
                signature: SignatureScheme::Standard,
                previous_secret: rotated(),
            }),
            Handler::WebhookCustom(WebhookCustomConfig {
                url: "https://a.test".into(),
                method: HttpMethod::POST,
                payload: Some(headers.clone()),
                payload_format: false,
                body: Some("b".into()),
                body_format: false,
                headers,
                headers_format: true,
                secret: Some("whsec_new".into()),
                ssl_verify: true,
                signature: SignatureScheme::Standard,
                previous_secret: rotated(),
            }),
            Handler::Log(LogConfig {}),
            Handler::Lambda(LambdaConfig {
                functions: vec!["return function() end".into()],
            }),
        ];
        handlers
            .into_iter()
            .map(|handler| Hook {
                id: Uuid::nil(),
                created_at: 1,
                updated_at: 2,
                source: "crud".into(),
                event: Some("consumers".into()),
                handler,
                snooze: Some(3),
                on_change: Some(true),
                enabled: false,
                name: Some("n".into()),
                tags: vec!["t".into()],
                disabled_reason: Some(DisabledReason {
                    at: 4,
                    reason: "target answered 410 Gone".into(),
                }),
                failing_since: Some(5),
                max_rate: Some(0.5),
                delivery: DeliveryPolicy {
                    retry: Some(RetryPolicy {
                        delays: Some(vec![6]),
                        on: RetryOn::ServerErrors,
                    }),
                    timeouts: Some(Timeouts {
                        connect_ms: Some(7),
                        read_ms: None,
                    }),
                    max_in_flight: Some(8),
                },
            })
            .collect()
    }

    #[test]
    fn the_view_is_the_stored_form_without_the_rotated_out_secret() {
        for hook in every_kind() {
            let mut stored = hook.clone();
            let kind = stored.handler.kind();
            if let Some(signing) = stored.handler.signing() {
                let secret = signing.secret.unwrap().to_string();
                stored.handler.set_secrets(secret, None);
            }
            // Compared as text: the same keys, in the same order, with the same nulls.
            assert_eq!(
                serde_json::to_string(&HookView::from(&hook)).unwrap(),
                serde_json::to_string(&stored).unwrap(),
                "{kind:?}"
            );
            let shown = HookView::from(&hook).into_json().to_string();
            assert!(!shown.contains("whsec_old"), "{shown}");
        }
        // A hook without optional fields shows its nulls too.
        let plain = Hook::log_on("crud");
        assert_eq!(
            serde_json::to_string(&HookView::from(&plain)).unwrap(),
            serde_json::to_string(&plain).unwrap()
        );
    }
}
