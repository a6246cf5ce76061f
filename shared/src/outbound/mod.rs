//! Outbound delivery over HTTP: signing the body ([`signing`]), sending it to the hook's target
//! behind the SSRF guard with timeouts and a capped response ([`http`]), and deciding from the
//! outcome whether the delivery is done, to be retried, or failed ([`retry`]).
//!
//! Nothing here knows about hooks, queues or AWS: the dispatcher renders a hook's request into an
//! [`OutboundRequest`], sends it, and acts on the [`Verdict`].

pub mod http;
pub mod retry;
pub mod signing;

pub use self::http::{
    is_global, BuildError, HttpSender, HttpSettings, OutboundRequest, Response, SendError,
};
pub use self::retry::{classify, InvalidSchedule, RetrySchedule, Verdict};
pub use self::signing::{signature, SIGNATURE_HEADER};
/// Re-exported so callers can build an [`OutboundRequest`] without depending on reqwest.
pub use reqwest::Method;
