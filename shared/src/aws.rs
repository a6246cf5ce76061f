//! Building AWS SDK configuration once per process, with an optional endpoint override so the
//! same adapters talk to moto or any other local AWS-compatible server.

use std::sync::Arc;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
#[cfg(feature = "test-util")]
use aws_config::Region;
use aws_config::{BehaviorVersion, SdkConfig};

use crate::admin::{AdminAuth, SignedCheck, TokenCheck, TokenError, TokenSource};
use crate::env::{AdminAuthSetting, TOKEN_REFETCH_INTERVAL};

/// Connect timeout of every AWS call.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One attempt of an AWS call (DynamoDB, SQS, Secrets Manager and SSM answer in milliseconds;
/// a stalled connection is cut here and retried by the SDK's standard retry policy).
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole AWS call, retries included: well under the functions' timeouts, so one stalled call
/// fails one record (which is retried) instead of timing out the whole invocation.
pub(crate) const OPERATION_TIMEOUT: Duration = Duration::from_secs(12);

/// The timeouts every AWS client of the functions gets.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// Loads the SDK configuration from the environment (credentials, region, and the endpoint when
/// `AWS_ENDPOINT_URL` names one), with [`timeouts`] on every operation.
pub async fn load_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts())
        .load()
        .await
}

/// The admin token in a Secrets Manager secret's `SecretString`.
pub(crate) struct SecretsManagerToken {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
}

#[async_trait::async_trait]
impl TokenSource for SecretsManagerToken {
    async fn fetch(&self) -> Result<String, TokenError> {
        let output = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|err| {
                TokenError(format!(
                    "{}: {}",
                    self.describe(),
                    aws_sdk_secretsmanager::error::DisplayErrorContext(err)
                ))
            })?;
        output
            .secret_string
            .ok_or_else(|| TokenError(format!("{} has no SecretString", self.describe())))
    }

    fn describe(&self) -> String {
        format!("secret {}", self.secret_id)
    }
}

/// The admin token in an SSM parameter (a SecureString, read decrypted).
pub(crate) struct SsmParameterToken {
    client: aws_sdk_ssm::Client,
    name: String,
}

#[async_trait::async_trait]
impl TokenSource for SsmParameterToken {
    async fn fetch(&self) -> Result<String, TokenError> {
        let output = self
            .client
            .get_parameter()
            .name(&self.name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|err| {
                TokenError(format!(
                    "{}: {}",
                    self.describe(),
                    aws_sdk_ssm::error::DisplayErrorContext(err)
                ))
            })?;
        output
            .parameter
            .and_then(|parameter| parameter.value)
            .ok_or_else(|| TokenError(format!("{} has no value", self.describe())))
    }

    fn describe(&self) -> String {
        format!("SSM parameter {}", self.name)
    }
}

/// The admin authentication of a deployed function: the token read at run time from its store
/// through a cache, or with IAM auth, `signed` (API Gateway's identity in the request context).
pub fn admin_auth(config: &SdkConfig, setting: AdminAuthSetting, signed: SignedCheck) -> AdminAuth {
    let (source, cache): (Arc<dyn TokenSource>, Duration) = match setting {
        AdminAuthSetting::Iam => return AdminAuth::Iam(signed),
        AdminAuthSetting::SecretsManager { secret_id, cache } => (
            Arc::new(SecretsManagerToken {
                client: aws_sdk_secretsmanager::Client::new(config),
                secret_id,
            }),
            cache,
        ),
        AdminAuthSetting::SsmParameter { name, cache } => (
            Arc::new(SsmParameterToken {
                client: aws_sdk_ssm::Client::new(config),
                name,
            }),
            cache,
        ),
    };
    AdminAuth::Token(Arc::new(TokenCheck::new(
        source,
        cache,
        TOKEN_REFETCH_INTERVAL,
    )))
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
pub(crate) async fn enable_ttl(
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
pub(crate) async fn read_item(
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
