//! event-hooks: Kong Gateway's Event Hooks as a library.
//!
//! Domain modules know nothing of AWS: [`model`], [`validate`], [`form`], [`sources`],
//! [`events`], [`lua`] (the sandbox, templates, lambda chains), [`snapshot`], [`dispatch`],
//! [`outbound`], [`apigee`], [`metrics`], [`env`](mod@env), [`limits`], [`clock`]. The six ports
//! ([`store::HookStore`], [`queue::Queue`], [`windows::WindowStore`],
//! [`delivery_log::DeliveryLog`], [`idempotency::IdempotencyStore`],
//! [`apigee::MonetizationStore`]) each have an embedded SQLite adapter (on [`sqlite::Database`])
//! and an AWS adapter, which pass the same contract suites; [`aws`] builds the SDK configuration.
//! [`admin`] is the Kong-compatible HTTP API as axum routers, served by the Lambda functions and
//! by the local server alike.

// What other crates may use is `pub` and reachable from here; everything else is `pub(crate)`.
#![warn(unreachable_pub)]

pub mod admin;
pub mod apigee;
pub mod aws;
pub mod clock;
pub mod delivery_log;
pub mod dispatch;
pub mod env;
pub mod events;
pub mod form;
pub mod idempotency;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod limits;
pub mod lua;
pub mod metrics;
pub mod model;
pub mod outbound;
pub mod queue;
pub mod snapshot;
pub mod sources;
pub mod sqlite;
pub mod store;
pub mod validate;
pub mod windows;
