//! Helpers shared by the integration tests: the moto endpoint, the local server (the binary, or
//! served in process), the Lambda binaries under a fake runtime and their API Gateway responses,
//! draining queues, a loopback receiver, the sample events.

pub mod api_gateway;
pub mod binaries;
pub mod contract;
pub mod curl;
pub mod gateway;
pub mod lambda_runtime;
pub mod moto;
pub mod queues;
pub mod receiver;
pub mod samples;
pub mod server;
