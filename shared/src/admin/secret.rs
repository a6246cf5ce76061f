//! Hook secrets in the admin API (spec §8): `POST /event-hooks/{id}/secret/rotate` and the secret
//! a `standard` hook gets when created without one. The rotated-out secret stays out of every
//! response because [`crate::model::HookView`], what the API answers for a hook, has no field
//! for it.
//!
//! A rotation stores the new secret and, for `standard` hooks, keeps the replaced one signing
//! beside it for [`ROTATION_GRACE_SECONDS`] (two signatures in `webhook-signature`, as the
//! Standard Webhooks spec allows), so receivers can switch without losing a delivery. Kong's
//! `X-Kong-Signature` holds exactly one `sha1=` value that Kong's receivers compare whole, so a
//! `kong` hook's rotation replaces its secret at once.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Map, Value};

use super::body::Input;
use super::error::ApiError;
use super::hooks::parse_id;
use super::AdminState;
use crate::events::{now_seconds, Operation};
use crate::model::{Hook, PreviousSecret, SignatureScheme, Versioned};
use crate::outbound::signing::{generate_standard_secret, standard_key, ROTATION_GRACE_SECONDS};
use crate::store::{Precondition, StoreError};
use crate::validate::SchemaViolation;

/// How often a rotation that lost a race with another writer is redone on fresh data.
const WRITE_ATTEMPTS: usize = 5;

/// Gives a `standard` hook without a secret a fresh one; other hooks are left alone.
pub(super) fn fill_in_secret(hook: &mut Hook) -> Result<(), ApiError> {
    let needs_one = hook
        .handler
        .signing()
        .is_some_and(|s| s.scheme == SignatureScheme::Standard && s.secret.is_none());
    if needs_one {
        let secret = generate_standard_secret().map_err(ApiError::internal)?;
        hook.handler.set_secrets(secret, None);
    }
    Ok(())
}

/// The new secret of a rotation: the body's `secret` (checked for the hook's scheme), or a
/// fresh `whsec_` secret.
fn new_secret(body: &Map<String, Value>, scheme: SignatureScheme) -> Result<String, ApiError> {
    let unknown: Vec<(String, String)> = body
        .keys()
        .filter(|key| key.as_str() != "secret")
        .map(|key| (key.clone(), "unknown field".to_string()))
        .collect();
    if let Some(violation) = SchemaViolation::from_fields(unknown) {
        return Err(violation.into());
    }
    let invalid = |message: String| ApiError::from(SchemaViolation::single(&["secret"], message));
    match body.get("secret") {
        None | Some(Value::Null) => generate_standard_secret().map_err(ApiError::internal),
        Some(Value::String(secret)) if secret.is_empty() => {
            Err(invalid("length must be at least 1".into()))
        }
        Some(Value::String(secret)) => {
            if scheme == SignatureScheme::Standard {
                standard_key(secret).map_err(|err| invalid(err.to_string()))?;
            }
            Ok(secret.clone())
        }
        Some(_) => Err(invalid("expected a string".into())),
    }
}

/// `POST /event-hooks/{id}/secret/rotate` with an optional `{"secret": …}`: stores the new
/// secret, answers it once, and emits the change like any other update.
pub(super) async fn rotate(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    input: Input,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    for _ in 0..WRITE_ATTEMPTS {
        let Versioned {
            value: old,
            version,
        } = state.store.get(id).await?.ok_or(ApiError::NotFound)?;
        let Some(signing) = old.handler.signing() else {
            return Err(ApiError::BadRequest(format!(
                "only webhook and webhook-custom hooks sign their deliveries; this hook's handler is '{}'",
                old.handler.kind().as_str()
            )));
        };
        let secret = new_secret(&input.fields, signing.scheme)?;
        if signing.secret == Some(secret.as_str()) {
            return Err(SchemaViolation::single(
                &["secret"],
                "the new secret must differ from the current one",
            )
            .into());
        }
        let now = now_seconds();
        let previous = match (signing.scheme, signing.secret) {
            (SignatureScheme::Standard, Some(current)) => Some(PreviousSecret {
                secret: current.to_string(),
                expires_at: now + ROTATION_GRACE_SECONDS,
            }),
            _ => None,
        };
        let expires_at = previous.as_ref().map(|p| p.expires_at);
        let mut hook = old.clone();
        hook.handler.set_secrets(secret.clone(), previous);
        hook.updated_at = now;
        match state.store.put(&hook, Precondition::Version(version)).await {
            Ok(_) => {
                state
                    .emit_change(Operation::Update, &hook, Some(&old))
                    .await?;
                return Ok(Json(json!({
                    "id": hook.id,
                    "signature": signing.scheme.as_str(),
                    "secret": secret,
                    "previous_secret_expires_at": expires_at,
                })));
            }
            Err(StoreError::Conflict) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(ApiError::internal("hook kept changing during the rotation"))
}
