//! The `IdempotencyStore` port behind `Idempotency-Key` on `POST /events` (spec §8, beyond Kong).
//!
//! A key is claimed before its event is queued, with a short lease, and completed (kept for
//! [`KEY_TTL`]) once the event is on the queue; a failed enqueue releases it. So an answer with a
//! stored event id always names an event that was queued, whatever the timing of retries: a
//! request that finds the key still pending is told to retry (409), and a claim whose request
//! died before completing lapses with its lease and can be claimed again. Every operation is one
//! conditional write, so concurrent requests with the same key agree on one winner. Keys are
//! scoped to the deployment (single tenant). Two adapters implement the port:
//! [`sqlite::SqliteIdempotencyStore`] (embedded) and [`dynamodb::DynamoIdempotencyStore`]
//! (deployed); both pass the contract suite in `tests/`.

pub mod dynamodb;
pub mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

pub use crate::store::StoreError;

/// How long a completed key answers with its event's id.
pub(crate) const KEY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a claimed key waits for its event to be queued before another request may claim it:
/// far longer than one request can take (the admin function times out after 10 s), so only a
/// request that died lets it lapse.
pub(crate) const CLAIM_LEASE: Duration = Duration::from_secs(60);

/// The longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// What a key already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The event the key was first used for.
    pub event_id: Uuid,
    /// The digest of the body that came with it.
    pub body_digest: String,
    /// Whether that event is on the queue; false while its request is still in flight.
    pub completed: bool,
    /// The time its events were stamped with (Unix ms) where they had no `timestamp` of their
    /// own: a later request queuing them again stamps them the same, so that their deliveries
    /// keep their ids (which carry that time). `None` for claims stored before it was kept.
    pub at: Option<i64>,
}

/// The outcome of [`IdempotencyStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The key was free (never used, or its completed use expired): it is now this request's.
    New,
    /// The key was claimed before by a request that did not complete it (its enqueue failed and
    /// released it, or it died and its lease lapsed): it is now this request's, and the earlier
    /// one's event may be on the queue all the same (a send whose reply was lost). Carries that
    /// earlier claim.
    Reclaimed(Claim),
    /// The key is held, by this claim.
    Existing(Claim),
}

/// Durable, deployment-wide idempotency keys.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Takes `key` for `event_id` (stamped `at`) for `lease` unless an unexpired claim holds it,
    /// in which case that claim is returned. Expired claims (lapsed leases, completed keys past
    /// their TTL) count as absent.
    async fn claim(
        &self,
        key: &str,
        event_id: Uuid,
        body_digest: &str,
        at: i64,
        lease: Duration,
    ) -> Result<Claimed, StoreError>;

    /// Marks `key`, claimed for `event_id`, as completed and keeps it for `ttl`. Does nothing if
    /// the key no longer belongs to `event_id`.
    async fn complete(&self, key: &str, event_id: Uuid, ttl: Duration) -> Result<(), StoreError>;

    /// Frees `key` if it is still claimed, and not completed, for `event_id`: its event could not
    /// be queued, so a retry must be able to claim it again ([`Claimed::Reclaimed`]).
    async fn release(&self, key: &str, event_id: Uuid) -> Result<(), StoreError>;
}

/// Why an `Idempotency-Key` header is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("Idempotency-Key must not be empty")]
    Empty,
    #[error("Idempotency-Key must be at most {MAX_KEY_BYTES} bytes")]
    TooLong,
    #[error("Idempotency-Key must be visible ASCII characters only")]
    NotVisibleAscii,
    #[error("Idempotency-Key must be sent once")]
    Repeated,
}

/// Checks a key: 1 to [`MAX_KEY_BYTES`] bytes of visible ASCII (`!` to `~`).
pub(crate) fn check_key(key: &[u8]) -> Result<&str, KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong);
    }
    if !key.iter().all(u8::is_ascii_graphic) {
        return Err(KeyError::NotVisibleAscii);
    }
    // Visible ASCII is valid UTF-8.
    std::str::from_utf8(key).map_err(|_| KeyError::NotVisibleAscii)
}

/// `now + duration` in milliseconds, saturating rather than wrapping for absurd durations.
fn expiry_millis(now: i64, duration: Duration) -> i64 {
    now.saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_255_bytes_of_visible_ascii() {
        assert_eq!(check_key(b"order-42:retry"), Ok("order-42:retry"));
        assert_eq!(check_key(&[b'k'; 255]).map(str::len), Ok(255));
        assert_eq!(check_key(&[b'k'; 256]), Err(KeyError::TooLong));
        assert_eq!(check_key(b""), Err(KeyError::Empty));
        assert_eq!(check_key(b"a b"), Err(KeyError::NotVisibleAscii));
        assert_eq!(check_key(b"tab\t"), Err(KeyError::NotVisibleAscii));
        assert_eq!(check_key("clé".as_bytes()), Err(KeyError::NotVisibleAscii));
    }
}
