//! event-hooks: Kong Gateway's Event Hooks as a library.
//!
//! Domain modules ([`model`], [`validate`], [`form`], [`sources`], [`events`], [`lua`]) know
//! nothing of AWS; the ports ([`store::HookStore`], [`queue::Queue`]) have an embedded SQLite
//! adapter and an AWS adapter each. [`admin`] is the Kong-compatible admin API as an axum router,
//! served by the Lambda function and by the local server alike.

pub mod admin;
pub mod aws;
pub mod deliver;
pub mod deliveries;
pub mod dispatch;
pub mod env;
pub mod events;
pub mod form;
pub mod lambda;
pub mod lua;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod snapshot;
pub mod sources;
pub mod sqlite;
pub mod store;
pub mod template;
pub mod validate;
pub mod windows;
