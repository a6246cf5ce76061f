//! All integration tests in one binary (one link, one process to start).

mod admin_api;
mod admin_lambda;
mod apigee_dispatch;
mod apigee_lambda;
mod apigee_local;
mod deliveries_contract;
mod delivery_http;
mod dispatch_lambda;
mod dispatch_local;
mod dispatcher;
mod hostile_lua;
mod idempotency_contract;
mod idempotency_lambda;
mod idempotency_local;
mod limits;
mod monetization_contract;
mod openapi;
mod probe_lambda;
mod probe_local;
mod protection;
mod queue_contract;
mod replay;
mod standard_webhooks;
mod store_contract;
mod windows_contract;
