//! Admin authentication (spec §10): with [`AdminAuth::Token`], every request must carry the admin
//! token in `Kong-Admin-Token`, compared in constant time.
//!
//! The token comes from a [`TokenSource`]: a fixed string (the local server's `--admin-token`), or
//! a secret store read at run time (Secrets Manager or SSM, adapters in `crate::aws`). A
//! [`TokenCheck`] caches it for `max_age` and, when a presented token does not match, reads it
//! again (at most once per `refetch_interval`), so a rotated token is accepted at once and the old
//! one refused within `max_age`, without a redeploy. When the token cannot be read and none is
//! cached, requests get 503: the API never opens because its secret store is unreachable.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{error::ApiError, AdminSettings};

/// The header Kong Enterprise's RBAC reads.
pub(crate) const TOKEN_HEADER: &str = "kong-admin-token";

/// The longest admin token accepted from a secret store; a longer value is a misconfiguration.
const MAX_TOKEN_BYTES: usize = 4096;

/// Why the admin token could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(pub String);

/// Where the admin token lives.
#[async_trait]
pub trait TokenSource: Send + Sync + 'static {
    /// The current token.
    async fn fetch(&self) -> Result<String, TokenError>;
    /// What it is, for logs (never the token).
    fn describe(&self) -> String;
}

/// A token fixed at start-up (the local server's `--admin-token`).
pub struct StaticToken(pub String);

#[async_trait]
impl TokenSource for StaticToken {
    async fn fetch(&self) -> Result<String, TokenError> {
        Ok(self.0.clone())
    }
    fn describe(&self) -> String {
        "a fixed token".to_owned()
    }
}

struct Cached {
    token: String,
    fetched_at: Instant,
}

/// A [`TokenSource`] read through a cache; see the module documentation.
pub struct TokenCheck {
    source: Arc<dyn TokenSource>,
    max_age: Duration,
    refetch_interval: Duration,
    cached: Mutex<Option<Cached>>,
    /// When a wrong token last caused a re-read.
    last_recheck: Mutex<Option<Instant>>,
    /// One fetch at a time; concurrent checks wait for it and use its result.
    fetching: tokio::sync::Mutex<()>,
}

impl fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCheck")
            .field("source", &self.source.describe())
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Refused,
}

impl TokenCheck {
    /// Caches the token of `source` for `max_age`; a mismatch re-reads it at most once per
    /// `refetch_interval`.
    pub fn new(
        source: Arc<dyn TokenSource>,
        max_age: Duration,
        refetch_interval: Duration,
    ) -> TokenCheck {
        TokenCheck {
            source,
            max_age,
            refetch_interval,
            cached: Mutex::new(None),
            last_recheck: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// A fixed token, never re-read.
    pub fn fixed(token: impl Into<String>) -> TokenCheck {
        TokenCheck::new(
            Arc::new(StaticToken(token.into())),
            Duration::MAX,
            Duration::MAX,
        )
    }

    /// The cached token when it was fetched less than `within` ago.
    fn cached_within(&self, within: Duration) -> Option<String> {
        let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        cached
            .as_ref()
            .filter(|c| c.fetched_at.elapsed() < within)
            .map(|c| c.token.clone())
    }

    /// Reads the token from its source, unless another caller did so less than `fresh` ago. A
    /// failed read falls back to the cached token, however old (logged); with none, it fails.
    async fn refresh(&self, fresh: Duration) -> Result<String, TokenError> {
        let _one = self.fetching.lock().await;
        if let Some(token) = self.cached_within(fresh) {
            return Ok(token);
        }
        match self.source.fetch().await {
            Ok(token) if token.is_empty() || token.len() > MAX_TOKEN_BYTES => {
                Err(TokenError(format!(
                    "{} holds {} bytes; a token must have 1 to {MAX_TOKEN_BYTES}",
                    self.source.describe(),
                    token.len()
                )))
            }
            Ok(token) => {
                *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(Cached {
                    token: token.clone(),
                    fetched_at: Instant::now(),
                });
                Ok(token)
            }
            Err(err) => {
                let stale = self.cached_within(Duration::MAX);
                tracing::error!(source = %self.source.describe(), error = %err, using_cached = stale.is_some(), "could not read the admin token");
                stale.ok_or(err)
            }
        }
    }

    /// Whether `given` is the admin token.
    pub async fn check(&self, given: &[u8]) -> Result<Verdict, TokenError> {
        self.check_with(|token| bool::from(given.ct_eq(token.as_bytes())))
            .await
    }

    /// Whether `accepts` takes the stored value, with the same cache and re-read on a refusal
    /// as [`TokenCheck::check`]: the Kong relay's secrets (one a line) are checked this way.
    pub(crate) async fn check_with(
        &self,
        accepts: impl Fn(&str) -> bool,
    ) -> Result<Verdict, TokenError> {
        let token = match self.cached_within(self.max_age) {
            Some(token) => token,
            None => self.refresh(self.max_age).await?,
        };
        if accepts(&token) {
            return Ok(Verdict::Accepted);
        }
        // Perhaps the token was rotated since it was read: read it again, but not more often
        // than `refetch_interval`, so wrong guesses cannot flood the secret store.
        {
            let mut last = self.last_recheck.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < self.refetch_interval) {
                return Ok(Verdict::Refused);
            }
            *last = Some(Instant::now());
        }
        let again = self.refresh(Duration::ZERO).await?;
        if accepts(&again) {
            Ok(Verdict::Accepted)
        } else {
            Ok(Verdict::Refused)
        }
    }
}

/// Whether the host vouches that the request was authenticated before it got here (the Lambda
/// functions: API Gateway's IAM authorizer left its identity in the request context).
pub type SignedCheck = Arc<dyn Fn(&axum::http::Extensions) -> bool + Send + Sync>;

/// Who may call the admin API.
#[derive(Clone, Default)]
pub enum AdminAuth {
    /// No check: the local server on loopback.
    #[default]
    Open,
    /// The admin token in `Kong-Admin-Token`.
    Token(Arc<TokenCheck>),
    /// API Gateway's IAM (SigV4) authorization; requests without its identity are refused, so
    /// an API deployed without the authorizer stays closed.
    Iam(SignedCheck),
}

impl fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminAuth::Open => f.write_str("Open"),
            AdminAuth::Token(check) => f.debug_tuple("Token").field(check).finish(),
            AdminAuth::Iam(_) => f.write_str("Iam"),
        }
    }
}

impl AdminAuth {
    /// A fixed token (the local server's `--admin-token`).
    pub fn fixed(token: impl Into<String>) -> AdminAuth {
        AdminAuth::Token(Arc::new(TokenCheck::fixed(token)))
    }
}

pub async fn require_admin_token(
    State(settings): State<Arc<AdminSettings>>,
    request: Request,
    next: Next,
) -> Response {
    let edge = super::apigee::is_edge_path(request.uri().path());
    match &settings.auth {
        AdminAuth::Open => {}
        AdminAuth::Token(check) => {
            // Kong's header; on the Apigee Edge paths also Edge's `-u email:password`, whose
            // password is the admin token (spec §12).
            let basic = edge
                .then(|| super::apigee::basic_credentials(request.headers()))
                .flatten();
            let given = request
                .headers()
                .get(TOKEN_HEADER)
                .map(|v| v.as_bytes())
                .or(basic.as_ref().map(|(_, password)| password.as_bytes()));
            let verdict = match given {
                None => None,
                Some(given) => match check.check(given).await {
                    Ok(verdict) => Some(verdict),
                    Err(err) => return ApiError::CredentialsUnavailable(err.0).into_response(),
                },
            };
            match (verdict, edge) {
                (Some(Verdict::Accepted), _) => {}
                (None, false) => return ApiError::MissingCredentials.into_response(),
                (Some(Verdict::Refused), false) => {
                    return ApiError::WrongCredentials.into_response()
                }
                (None, true) => {
                    return edge_denied(
                        "Authentication required: use HTTP Basic with the admin token as password",
                    )
                }
                (Some(Verdict::Refused), true) => return edge_denied("Invalid credentials"),
            }
        }
        AdminAuth::Iam(signed) => {
            if !signed(request.extensions()) {
                return if edge {
                    edge_denied("Authentication required: sign the request (AWS SigV4)")
                } else {
                    ApiError::MissingCredentials.into_response()
                };
            }
        }
    }
    next.run(request).await
}

/// Edge's 401 on the Apigee paths.
fn edge_denied(message: &str) -> Response {
    ApiError::edge(
        axum::http::StatusCode::UNAUTHORIZED,
        "security.authentication.failed",
        message,
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A token store whose value the test changes, counting reads; `None` fails the read.
    struct Rotating {
        value: Mutex<Option<String>>,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl TokenSource for Rotating {
        async fn fetch(&self) -> Result<String, TokenError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.value
                .lock()
                .unwrap()
                .clone()
                .ok_or_else(|| TokenError("unreachable".into()))
        }
        fn describe(&self) -> String {
            "a test store".into()
        }
    }

    fn rotating(value: Option<&str>) -> Arc<Rotating> {
        Arc::new(Rotating {
            value: Mutex::new(value.map(str::to_owned)),
            reads: AtomicUsize::new(0),
        })
    }

    #[tokio::test]
    async fn a_rotated_token_is_accepted_at_once_and_reads_are_cached() {
        let store = rotating(Some("old"));
        let check = TokenCheck::new(store.clone(), Duration::MAX, Duration::ZERO);
        assert_eq!(check.check(b"old").await.unwrap(), Verdict::Accepted);
        assert_eq!(check.check(b"old").await.unwrap(), Verdict::Accepted);
        assert_eq!(store.reads.load(Ordering::SeqCst), 1, "cached");

        *store.value.lock().unwrap() = Some("new".into());
        assert_eq!(check.check(b"new").await.unwrap(), Verdict::Accepted);
        assert_eq!(store.reads.load(Ordering::SeqCst), 2, "re-read on mismatch");
        assert_eq!(check.check(b"old").await.unwrap(), Verdict::Refused);
        assert_eq!(check.check(b"").await.unwrap(), Verdict::Refused);
    }

    #[tokio::test]
    async fn wrong_guesses_do_not_re_read_within_the_interval() {
        let store = rotating(Some("right"));
        let check = TokenCheck::new(store.clone(), Duration::MAX, Duration::from_secs(3600));
        for _ in 0..5 {
            assert_eq!(check.check(b"guess").await.unwrap(), Verdict::Refused);
        }
        // The first read, and one re-read for the first wrong token.
        assert_eq!(store.reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unreadable_store_fails_closed_or_keeps_the_cached_token() {
        let store = rotating(None);
        let check = TokenCheck::new(store.clone(), Duration::ZERO, Duration::ZERO);
        assert!(
            check.check(b"anything").await.is_err(),
            "no token, no entry"
        );

        *store.value.lock().unwrap() = Some("t".into());
        assert_eq!(check.check(b"t").await.unwrap(), Verdict::Accepted);
        *store.value.lock().unwrap() = None;
        // max_age zero: every check re-reads, fails, and falls back to the cached token.
        assert_eq!(check.check(b"t").await.unwrap(), Verdict::Accepted);
        assert_eq!(check.check(b"x").await.unwrap(), Verdict::Refused);
    }

    #[tokio::test]
    async fn an_empty_stored_token_never_matches() {
        let check = TokenCheck::new(rotating(Some("")), Duration::MAX, Duration::ZERO);
        assert!(check.check(b"").await.is_err());
    }
}
