//! Helpers shared by the integration tests: the moto endpoint, the local server binary.

pub mod binaries;
pub mod curl;
pub mod gateway;
pub mod lambda_runtime;
pub mod moto;
pub mod receiver;
pub mod samples;
pub mod server;
