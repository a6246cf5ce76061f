//! The catalogue of sources and their events (spec §3): Kong 3.10's built-in sources plus the
//! custom events registered through the admin API.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::CustomEvent;

/// What one event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventSpec {
    pub fields: Vec<String>,
    /// Fields whose values make an event unique for snooze/on_change; absent when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Every known source with its events, in name order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(transparent)]
pub struct Catalogue {
    sources: BTreeMap<String, BTreeMap<String, EventSpec>>,
}

/// The entities Kong emits `crud` events for.
pub(crate) const KONG_ENTITIES: &[&str] = &[
    "workspaces",
    "consumers",
    "certificates",
    "services",
    "routes",
    "snis",
    "upstreams",
    "targets",
    "custom_plugins",
    "plugins",
    "tags",
    "ca_certificates",
    "clustering_data_planes",
    "parameters",
    "vaults",
    "key_sets",
    "keys",
    "filter_chains",
    "files",
    "legacy_files",
    "workspace_entity_counters",
    "consumer_reset_secrets",
    "credentials",
    "audit_requests",
    "audit_objects",
    "rbac_users",
    "rbac_roles",
    "rbac_user_roles",
    "rbac_role_entities",
    "rbac_role_endpoints",
    "admins",
    "developers",
    "document_objects",
    "applications",
    "application_instances",
    "groups",
    "group_rbac_roles",
    "login_attempts",
    "keyring_meta",
    "keyring_keys",
    "event_hooks",
    "licenses",
    "consumer_groups",
    "consumer_group_plugins",
    "consumer_group_consumers",
    "rbac_user_groups",
    "acls",
    "acme_storage",
    "basicauth_credentials",
    "hmacauth_credentials",
    "jwt_secrets",
    "keyauth_credentials",
    "keyauth_enc_credentials",
    "oauth2_credentials",
    "oauth2_authorization_codes",
    "oauth2_tokens",
    "ratelimiting_metrics",
    "sessions",
    "degraphql_routes",
    "graphql_ratelimiting_advanced_cost_decoration",
    "jwt_signer_jwks",
    "oic_issuers",
    "oic_jwks",
    "mtls_auth_credentials",
    "header_cert_auth_credentials",
    "konnect_applications",
    "vault_auth_vaults",
];

const CRUD_FIELDS: &[&str] = &["operation", "entity", "old_entity", "schema"];
const OPERATIONS: &[&str] = &["create", "update", "delete"];
const RATE_LIMIT_DESCRIPTION: &str = "Run an event when a rate limit has been exceeded";

/// The names of the built-in sources, which cannot be changed through the API.
pub(crate) const BUILTIN_SOURCES: &[&str] = &[
    "dao:crud",
    "crud",
    "balancer",
    "rate-limiting-advanced",
    "service-protection",
    "ai-rate-limiting-advanced",
    "oas-validation",
    crate::apigee::webhook::SOURCE,
];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn spec(fields: &[&str], unique: Option<&[&str]>, description: Option<&str>) -> EventSpec {
    EventSpec {
        fields: strings(fields),
        unique: unique.map(strings),
        description: description.map(str::to_string),
    }
}

impl Catalogue {
    /// The sources Kong 3.10 publishes.
    pub fn builtin() -> Catalogue {
        let mut catalogue = Catalogue::default();
        for op in OPERATIONS {
            catalogue.insert("dao:crud", op, spec(CRUD_FIELDS, None, None));
        }
        for entity in KONG_ENTITIES {
            catalogue.insert("crud", entity, spec(CRUD_FIELDS, None, None));
            for op in OPERATIONS {
                catalogue.insert(
                    "crud",
                    &format!("{entity}:{op}"),
                    spec(CRUD_FIELDS, None, None),
                );
            }
        }
        catalogue.insert(
            "balancer",
            "health",
            spec(
                &["upstream_id", "ip", "port", "hostname", "health"],
                None,
                None,
            ),
        );
        let rate_fields = ["consumer", "ip", "service", "rate", "limit", "window"];
        let rate_unique = ["consumer", "ip", "service"];
        for source in ["rate-limiting-advanced", "ai-rate-limiting-advanced"] {
            catalogue.insert(
                source,
                "rate-limit-exceeded",
                spec(
                    &rate_fields,
                    Some(&rate_unique),
                    Some(RATE_LIMIT_DESCRIPTION),
                ),
            );
        }
        catalogue.insert(
            "service-protection",
            "rate-limit-exceeded",
            spec(
                &["service", "rate", "limit", "window"],
                Some(&["service"]),
                Some(RATE_LIMIT_DESCRIPTION),
            ),
        );
        catalogue.insert(
            "oas-validation",
            "validation-failed",
            spec(
                &["consumer", "ip", "service", "err"],
                Some(&rate_unique),
                Some("Run an event when oas validation fails"),
            ),
        );
        catalogue.insert(
            crate::apigee::webhook::SOURCE,
            crate::apigee::webhook::EVENT,
            spec(
                &crate::apigee::webhook::CALLBACK_FIELDS,
                None,
                Some(
                    "A developer's usage of a rate plan (Apigee Edge monetization); Apigee \
                     webhooks are notified of the usage targets it reaches",
                ),
            ),
        );
        catalogue
    }

    /// The built-in catalogue plus `custom` events.
    pub(crate) fn with_custom(custom: &[CustomEvent]) -> Catalogue {
        let mut catalogue = Catalogue::builtin();
        for event in custom {
            catalogue.insert(
                &event.source,
                &event.event,
                EventSpec {
                    fields: event.fields.clone(),
                    unique: event.unique.clone(),
                    description: event.description.clone(),
                },
            );
        }
        catalogue
    }

    fn insert(&mut self, source: &str, event: &str, spec: EventSpec) {
        self.sources
            .entry(source.to_string())
            .or_default()
            .insert(event.to_string(), spec);
    }

    /// Whether `source` is built in (read-only); every other source holds custom events.
    pub fn is_builtin_source(source: &str) -> bool {
        BUILTIN_SOURCES.contains(&source)
    }

    /// The events of one source.
    pub fn source(&self, source: &str) -> Option<&BTreeMap<String, EventSpec>> {
        self.sources.get(source)
    }

    /// One event of one source.
    pub fn event(&self, source: &str, event: &str) -> Option<&EventSpec> {
        self.sources.get(source)?.get(event)
    }
}

/// Checks the body of a custom event registration; returns the problems by field.
pub(crate) fn check_custom_event(event: &CustomEvent) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if event.fields.iter().any(String::is_empty) {
        problems.push(("fields", "field names must not be empty".to_string()));
    }
    if let Some(unique) = &event.unique {
        for name in unique {
            if !event.fields.contains(name) {
                problems.push(("unique", format!("'{name}' is not one of the fields")));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtin_matches_kong() {
        let catalogue = serde_json::to_value(Catalogue::builtin()).unwrap();
        assert_eq!(
            catalogue["crud"]["consumers:create"],
            json!({"fields":["operation","entity","old_entity","schema"]})
        );
        assert_eq!(
            catalogue["service-protection"]["rate-limit-exceeded"],
            json!({"fields":["service","rate","limit","window"],"unique":["service"],
                   "description":"Run an event when a rate limit has been exceeded"})
        );
        assert_eq!(
            catalogue["dao:crud"].as_object().unwrap().len(),
            3,
            "create, update, delete"
        );
        assert_eq!(
            catalogue["crud"].as_object().unwrap().len(),
            KONG_ENTITIES.len() * 4
        );
    }

    #[test]
    fn custom_events_join_the_catalogue() {
        let catalogue = Catalogue::with_custom(&[CustomEvent {
            source: "billing".into(),
            event: "invoice-paid".into(),
            fields: vec!["invoice".into()],
            unique: None,
            description: None,
        }]);
        assert_eq!(
            catalogue.event("billing", "invoice-paid").unwrap().fields,
            ["invoice"]
        );
        assert!(catalogue.event("billing", "nope").is_none());
    }
}
