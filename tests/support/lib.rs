//! Helpers shared by the integration tests: the moto endpoint, the local server binary.

pub mod moto;
pub mod server;
