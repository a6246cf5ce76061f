//! Building AWS SDK configuration once per process, with an optional endpoint override so the
//! same adapters talk to moto or any other local AWS-compatible server.

#[cfg(feature = "test-util")]
use aws_config::Region;
use aws_config::{BehaviorVersion, SdkConfig};

/// Loads the SDK configuration from the environment (credentials, region, and the endpoint when
/// `AWS_ENDPOINT_URL` names one).
pub async fn load_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// Configuration for a local AWS-compatible server (moto): fixed test credentials and region.
#[cfg(feature = "test-util")]
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

/// How long [`create_table`] waits for a new table to become active.
#[cfg(feature = "test-util")]
const TABLE_ACTIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Creates an on-demand DynamoDB table with string keys — `hash`, and `range` when given — and
/// waits until it is active. For tests and tooling; deployments create tables from the template.
#[cfg(feature = "test-util")]
pub async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    hash: &str,
    range: Option<&str>,
) -> Result<(), crate::store::StoreError> {
    use crate::store::StoreError;
    use aws_sdk_dynamodb::client::Waiters as _;
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };

    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest);
    let keys = std::iter::once((hash, KeyType::Hash)).chain(range.map(|r| (r, KeyType::Range)));
    for (attribute, key_type) in keys {
        request = request
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attribute)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(StoreError::backend)?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(attribute)
                    .key_type(key_type)
                    .build()
                    .map_err(StoreError::backend)?,
            );
    }
    request.send().await.map_err(StoreError::backend)?;
    client
        .wait_until_table_exists()
        .table_name(name)
        .wait(TABLE_ACTIVE_TIMEOUT)
        .await
        .map_err(StoreError::backend)?;
    Ok(())
}

/// Turns on TTL for `table` on `attribute`. For tests and tooling, after [`create_table`].
#[cfg(feature = "test-util")]
pub async fn enable_ttl(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    attribute: &str,
) -> Result<(), crate::store::StoreError> {
    use crate::store::StoreError;
    let ttl = aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(attribute)
        .build()
        .map_err(StoreError::backend)?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(ttl)
        .send()
        .await
        .map_err(StoreError::backend)?;
    Ok(())
}

/// The item at `key` in `table`, read consistently (so a write just made is seen).
pub async fn read_item(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
) -> Result<
    Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>,
    crate::store::StoreError,
> {
    let output = client
        .get_item()
        .table_name(table)
        .set_key(Some(key))
        .consistent_read(true)
        .send()
        .await
        .map_err(crate::store::StoreError::backend)?;
    Ok(output.item)
}
