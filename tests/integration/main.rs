//! All integration tests in one binary (one link, one process to start).

mod admin_api;
mod queue_contract;
mod store_contract;
