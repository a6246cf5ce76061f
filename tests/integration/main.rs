//! All integration tests in one binary (one link, one process to start).

mod admin_api;
mod admin_lambda;
mod deliveries_contract;
mod delivery_http;
mod dispatch_lambda;
mod dispatch_local;
mod dispatcher;
mod hostile_lua;
mod limits;
mod openapi;
mod probe_lambda;
mod probe_local;
mod queue_contract;
mod standard_webhooks;
mod store_contract;
mod windows_contract;
