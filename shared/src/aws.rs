//! Building AWS SDK configuration once per process, with an optional endpoint override so the
//! same adapters talk to moto or any other local AWS-compatible server.

use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
#[cfg(feature = "test-util")]
use aws_config::Region;
use aws_config::{BehaviorVersion, SdkConfig};

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::admin::{AdminAuth, RelaySettings, SignedCheck, TokenCheck, TokenError, TokenSource};
use crate::env::{AdminAuthSetting, RelaySetting, TOKEN_REFETCH_INTERVAL};
use crate::store::StoreError;

/// Connect timeout of every AWS call.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One attempt of an AWS call (DynamoDB, SQS, Secrets Manager and SSM answer in milliseconds;
/// a stalled connection is cut here and retried by the SDK's standard retry policy).
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole AWS call, retries included: well under the functions' timeouts, so one stalled call
/// fails one record (which is retried) instead of timing out the whole invocation.
pub(crate) const OPERATION_TIMEOUT: Duration = Duration::from_secs(12);

/// Attempts of one AWS call (the first and its retries), in the SDK's standard retry mode.
pub(crate) const MAX_ATTEMPTS: u32 = 2;
/// The first backoff before a retry (jittered by the SDK).
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// The longest backoff between two attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(1);

// Every attempt at its timeout, and every backoff at its longest, fit in one operation: the SDK's
// retries never outlast OPERATION_TIMEOUT (which check-build-inputs.py keeps under the functions'
// timeouts), so a throttled call fails its record while the invocation still has time.
const _: () = assert!(
    ATTEMPT_TIMEOUT.as_millis() * MAX_ATTEMPTS as u128
        + MAX_BACKOFF.as_millis() * (MAX_ATTEMPTS as u128 - 1)
        <= OPERATION_TIMEOUT.as_millis()
);

/// The retry policy of every AWS client of the functions: standard mode (throttling, 5xx and
/// transient network errors are retried, with jittered exponential backoff), within the budget
/// above.
pub fn retries() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(INITIAL_BACKOFF)
        .with_max_backoff(MAX_BACKOFF)
}

/// The timeouts every AWS client of the functions gets.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// Loads the SDK configuration from the environment (credentials, region, and the endpoint when
/// `AWS_ENDPOINT_URL` names one), with [`timeouts`] and [`retries`] on every operation.
pub async fn load_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts())
        .retry_config(retries())
        .load()
        .await
}

/// Error codes that mean "too many requests now" or "failing on AWS's side now": the same call
/// may succeed later. Matched on the code's last dot-separated part, so the query protocol's
/// `AWS.SimpleQueueService.…` and `KMS.…` prefixes do not matter.
const TRANSIENT_CODES: &[&str] = &[
    // Throttling, per service.
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "LimitExceededException",
    "SlowDown",
    "KmsThrottled",
    "TransactionInProgressException",
    // Server side.
    "InternalServerError",
    "InternalFailure",
    "InternalError",
    "InternalServiceError",
    "InternalServerErrorException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Whether a failed AWS call is transient — throttling, a 5xx, a timeout, a connection that
/// failed or a response cut mid-body — so that the same call may succeed later; otherwise it is a
/// client error (a 4xx such as `ValidationException` or `ResourceNotFoundException`, or a request
/// that could not be built), a bug of ours or of the deployment that retrying will not fix.
pub(crate) fn is_transient<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(failure) => !failure.is_user(),
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            // Outside 3xx-4xx: a 5xx, or a success that is still an error because its body
            // could not be read (cut mid-way).
            !(300..500).contains(&status)
                || status == 429
                || err.code().is_some_and(|code| {
                    let name = code.rsplit(['.', '#']).next().unwrap_or(code);
                    TRANSIENT_CODES.contains(&name)
                })
        }
        _ => false,
    }
}

/// A failed AWS call of a storage adapter as a [`StoreError`]: [`StoreError::Unavailable`] when
/// [`is_transient`], else [`StoreError::Backend`]; the full error chain is kept in the message.
pub(crate) fn store_error<E>(err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if is_transient(&err) {
        StoreError::Unavailable(DisplayErrorContext(err).to_string().into())
    } else {
        StoreError::Backend(DisplayErrorContext(err).to_string().into())
    }
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

/// The Kong relay's settings of a deployed function: its secrets read at run time from Secrets
/// Manager through the same cache as the admin token's, so a rotation needs no redeploy.
pub fn relay_settings(config: &SdkConfig, setting: RelaySetting) -> RelaySettings {
    let secrets = setting.secret_id.map(|secret_id| {
        let source = Arc::new(SecretsManagerToken {
            client: aws_sdk_secretsmanager::Client::new(config),
            secret_id,
        });
        Arc::new(TokenCheck::new(
            source,
            setting.cache,
            TOKEN_REFETCH_INTERVAL,
        ))
    });
    RelaySettings {
        secrets,
        allow_unsigned: setting.allow_unsigned,
    }
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
        .map_err(store_error)?;
    Ok(output.item)
}

#[cfg(test)]
mod tests {
    use aws_config::Region;
    use aws_sdk_dynamodb::config::Credentials;
    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::body::SdkBody;

    use super::*;

    /// An HTTP client that answers every request with one canned response (or a failure to
    /// connect), as AWS would send it.
    #[derive(Debug, Clone)]
    enum Canned {
        Response {
            status: u16,
            headers: &'static [(&'static str, &'static str)],
            body: &'static str,
        },
        ConnectionReset,
        Stalled,
    }

    impl HttpConnector for Canned {
        fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
            match self.clone() {
                Canned::Response {
                    status,
                    headers,
                    body,
                } => {
                    let mut response =
                        HttpResponse::new(status.try_into().unwrap(), SdkBody::from(body));
                    for (name, value) in headers {
                        response.headers_mut().insert(*name, *value);
                    }
                    HttpConnectorFuture::ready(Ok(response))
                }
                Canned::ConnectionReset => HttpConnectorFuture::ready(Err(ConnectorError::io(
                    "connection reset by peer".into(),
                ))),
                Canned::Stalled => HttpConnectorFuture::new(std::future::pending()),
            }
        }
    }

    impl HttpClient for Canned {
        fn http_connector(
            &self,
            _settings: &HttpConnectorSettings,
            _components: &RuntimeComponents,
        ) -> SharedHttpConnector {
            SharedHttpConnector::new(self.clone())
        }
    }

    /// A configuration whose clients get `canned`, with no retries and a short attempt timeout.
    fn config(canned: Canned) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url("http://aws.test")
            .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
                Credentials::new("testing", "testing", None, None, "test"),
            ))
            .http_client(canned)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_millis(50))
                    .build(),
            )
            .build()
    }

    fn response(status: u16, body: &'static str) -> Canned {
        Canned::Response {
            status,
            headers: &[],
            body,
        }
    }

    async fn dynamodb(canned: Canned) -> StoreError {
        let client = aws_sdk_dynamodb::Client::new(&config(canned));
        let err = client
            .get_item()
            .table_name("hooks")
            .send()
            .await
            .expect_err("the canned response is an error");
        store_error(err)
    }

    #[tokio::test]
    async fn dynamodb_throttling_and_server_errors_are_transient() {
        for canned in [
            response(
                400,
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded."}"#,
            ),
            response(
                400,
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#,
            ),
            response(
                400,
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#RequestLimitExceeded","message":"Throughput exceeds the current throughput limit for your account."}"#,
            ),
            response(
                500,
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Internal server error"}"#,
            ),
            response(503, ""),
            response(502, "<html>Bad Gateway</html>"),
            // A success cut mid-body.
            response(200, r#"{"Item":{"id":{"S":"#),
            Canned::ConnectionReset,
            Canned::Stalled,
        ] {
            let err = dynamodb(canned.clone()).await;
            assert!(
                matches!(err, StoreError::Unavailable(_)),
                "{canned:?} gave {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn dynamodb_client_errors_are_not_transient() {
        for canned in [
            response(
                400,
                r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"One or more parameter values were invalid"}"#,
            ),
            response(
                400,
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found"}"#,
            ),
            response(
                400,
                r#"{"__type":"com.amazon.coral.service#AccessDeniedException","message":"not authorized"}"#,
            ),
        ] {
            let err = dynamodb(canned.clone()).await;
            assert!(
                matches!(err, StoreError::Backend(_)),
                "{canned:?} gave {err:?}"
            );
        }
    }

    async fn sqs_transient(canned: Canned) -> bool {
        let client = aws_sdk_sqs::Client::new(&config(canned));
        let err = client
            .send_message()
            .queue_url("http://aws.test/000000000000/events")
            .message_body("{}")
            .send()
            .await
            .expect_err("the canned response is an error");
        is_transient(&err)
    }

    #[tokio::test]
    async fn sqs_throttling_in_both_shapes_is_transient_and_a_missing_queue_is_not() {
        // The JSON protocol, with the query protocol's code in x-amzn-query-error.
        assert!(
            sqs_transient(Canned::Response {
                status: 400,
                headers: &[("x-amzn-query-error", "ThrottlingException;Sender")],
                body: r#"{"__type":"com.amazonaws.sqs#ThrottlingException","message":"Rate exceeded"}"#,
            })
            .await
        );
        assert!(
            sqs_transient(Canned::Response {
                status: 400,
                headers: &[("x-amzn-query-error", "AWS.SimpleQueueService.RequestThrottled;Sender")],
                body: r#"{"__type":"com.amazonaws.sqs#RequestThrottled","message":"Request is throttled."}"#,
            })
            .await
        );
        assert!(
            sqs_transient(response(
                500,
                r#"{"__type":"com.amazonaws.sqs#InternalError"}"#
            ))
            .await
        );
        assert!(
            !sqs_transient(Canned::Response {
                status: 400,
                headers: &[("x-amzn-query-error", "AWS.SimpleQueueService.NonExistentQueue;Sender")],
                body: r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}"#,
            })
            .await
        );
    }

    #[tokio::test]
    async fn secrets_manager_throttling_is_transient_and_a_missing_secret_is_not() {
        let transient = |canned: Canned| async move {
            let client = aws_sdk_secretsmanager::Client::new(&config(canned));
            let err = client
                .get_secret_value()
                .secret_id("admin-token")
                .send()
                .await
                .expect_err("the canned response is an error");
            is_transient(&err)
        };
        assert!(
            transient(response(
                400,
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#
            ))
            .await
        );
        assert!(
            !transient(response(
                400,
                r#"{"__type":"ResourceNotFoundException","message":"Secrets Manager can't find the specified secret."}"#
            ))
            .await
        );
    }

    #[test]
    fn the_retry_budget_fits_the_operation_timeout() {
        let retries = retries();
        assert_eq!(retries.max_attempts(), MAX_ATTEMPTS);
        assert!(
            ATTEMPT_TIMEOUT * MAX_ATTEMPTS + MAX_BACKOFF * (MAX_ATTEMPTS - 1) <= OPERATION_TIMEOUT
        );
    }
}
