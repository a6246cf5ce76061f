//! Building AWS SDK configuration once per process, with an optional endpoint override so the
//! same adapters talk to moto or any other local AWS-compatible server.

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Loads the SDK configuration from the environment (credentials, region), pointing every client
/// at `endpoint_url` when it is given.
pub async fn load_config(endpoint_url: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// Configuration for a local AWS-compatible server (moto): fixed test credentials and region.
pub fn local_config(endpoint_url: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint_url)
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "local"),
        ))
        .build()
}
