//! The `HookStore` port: where hooks and custom events live.
//!
//! Two adapters implement it: [`sqlite::SqliteHookStore`] (embedded, local server) and
//! [`dynamodb::DynamoHookStore`] (deployed). Both pass the same contract suite in `tests/`.
//! Adapters keep `name` unique atomically and reject a write whose [`Precondition`] does not hold,
//! so concurrent writers never lose an update.

pub mod dynamodb;
pub mod sqlite;

use async_trait::async_trait;
use base64::Engine as _;
use uuid::Uuid;

use crate::model::{CustomEvent, Hook, Versioned};

/// What must be true of the stored hook for a write to go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// No hook with this id exists yet.
    Absent,
    /// The stored hook is at exactly this version.
    Version(u64),
}

/// Filters of `GET /event-hooks` (all must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookFilter {
    pub source: Option<String>,
    pub event: Option<String>,
    pub tags: Option<TagFilter>,
}

/// Kong's `?tags=` filter: `a,b` needs every tag, `a/b` needs any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagFilter {
    All(Vec<String>),
    Any(Vec<String>),
}

impl TagFilter {
    pub fn matches(&self, tags: &[String]) -> bool {
        match self {
            TagFilter::All(wanted) => wanted.iter().all(|t| tags.contains(t)),
            TagFilter::Any(wanted) => wanted.iter().any(|t| tags.contains(t)),
        }
    }
}

impl HookFilter {
    pub fn matches(&self, hook: &Hook) -> bool {
        self.source.as_ref().is_none_or(|s| *s == hook.source)
            && self
                .event
                .as_ref()
                .is_none_or(|e| hook.event.as_deref() == Some(e.as_str()))
            && self.tags.as_ref().is_none_or(|t| t.matches(&hook.tags))
    }
}

/// One page of a listing: hooks in id order, and the token of the next page if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<PageToken>,
}

/// An opaque position in the id-ordered listing: the last id of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken(pub Uuid);

impl PageToken {
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.0.as_bytes())
    }

    /// Parses a token made by [`PageToken::encode`]; anything else is an error message.
    pub fn decode(token: &str) -> Result<PageToken, &'static str> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| "bad base64 encoding")?;
        let id = Uuid::from_slice(&bytes).map_err(|_| "malformed token")?;
        Ok(PageToken(id))
    }
}

/// Errors of a [`HookStore`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The [`Precondition`] of a write did not hold.
    #[error("the hook changed or already exists")]
    Conflict,
    /// Another hook already has this name.
    #[error("name {0:?} is taken")]
    NameTaken(String),
    /// The storage back end failed.
    #[error("storage failure: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The storage back end is throttling or unavailable for now (a transient failure: the same
    /// call may succeed later), as opposed to [`StoreError::Backend`], a failure that retrying
    /// will not fix.
    #[error("storage unavailable for now: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub fn backend(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
        StoreError::Backend(err.into())
    }

    /// Whether the same call may succeed later (throttling, a 5xx, a timeout).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Storage of hooks and custom events.
#[async_trait]
pub trait HookStore: Send + Sync + 'static {
    /// The hook with this id, with its version.
    async fn get(&self, id: Uuid) -> Result<Option<Versioned<Hook>>, StoreError>;

    /// Up to `size` hooks matching `filter`, in id order, after `after` when given.
    async fn list(
        &self,
        filter: &HookFilter,
        size: usize,
        after: Option<PageToken>,
    ) -> Result<Page<Hook>, StoreError>;

    /// Writes `hook` if `precondition` holds and its name is free; returns the new version.
    async fn put(&self, hook: &Hook, precondition: Precondition) -> Result<u64, StoreError>;

    /// Removes the hook and frees its name; returns what was removed.
    async fn delete(&self, id: Uuid) -> Result<Option<Hook>, StoreError>;

    /// Registers or replaces a custom event; returns true when it was new.
    async fn put_custom_event(&self, event: &CustomEvent) -> Result<bool, StoreError>;

    /// Removes a custom event; returns true when it existed.
    async fn delete_custom_event(&self, source: &str, event: &str) -> Result<bool, StoreError>;

    /// Every custom event, sorted by source then event.
    async fn list_custom_events(&self) -> Result<Vec<CustomEvent>, StoreError>;

    /// The change counter: a number that differs, once a write has returned, from what it was
    /// before the write (hooks and custom events alike). Readers that cache the hooks compare it
    /// to the value read before their load, so a change applies to everything after its 2xx
    /// (spec §10, read-your-writes) for the price of one small read.
    async fn version(&self) -> Result<u64, StoreError>;
}
