//! Access to the moto server started by `scripts/with-moto.sh` (via `make test`).

use aws_config::SdkConfig;

/// SDK configuration for the moto server, or `None` when the tests run without one.
///
/// `make test` always provides one and sets `EVENT_HOOKS_REQUIRE_MOTO=1`, so a missing server is a
/// failure there rather than a silent skip.
pub fn config() -> Option<SdkConfig> {
    match std::env::var("MOTO_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => Some(event_hooks::aws::local_config(&endpoint)),
        _ => {
            assert!(
                std::env::var_os("EVENT_HOOKS_REQUIRE_MOTO").is_none(),
                "EVENT_HOOKS_REQUIRE_MOTO is set but MOTO_ENDPOINT is not: run through scripts/with-moto.sh"
            );
            eprintln!(
                "MOTO_ENDPOINT not set: skipping the moto half of this test (make test runs it)"
            );
            None
        }
    }
}

/// The environment of a function process on moto at `endpoint`: its region, test credentials and
/// endpoint, then the function's `own` settings.
pub fn process_env<'a>(endpoint: &'a str, own: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let aws = [
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_ENDPOINT_URL", endpoint),
    ];
    aws.into_iter().chain(own.iter().copied()).collect()
}

/// A name no other test uses, for tables and queues on the shared moto server.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Creates a Secrets Manager secret holding a fresh admin token on moto, as the template's
/// `AdminTokenSecret` does; returns its ARN and the token.
pub async fn create_admin_token(config: &SdkConfig) -> (String, String) {
    let token = uuid::Uuid::new_v4().simple().to_string();
    (create_secret(config, &token).await, token)
}

/// Creates a Secrets Manager secret holding `token` on moto; returns its ARN.
pub async fn create_secret(config: &SdkConfig, token: &str) -> String {
    let created = aws_sdk_secretsmanager::Client::new(config)
        .create_secret()
        .name(unique_name("admin-token"))
        .secret_string(token)
        .send()
        .await
        .expect("create the admin token secret");
    created.arn.expect("the secret's ARN")
}

/// Replaces the admin token in the secret `arn` (a rotation); returns the new token.
pub async fn rotate_admin_token(config: &SdkConfig, arn: &str) -> String {
    let token = uuid::Uuid::new_v4().simple().to_string();
    aws_sdk_secretsmanager::Client::new(config)
        .put_secret_value()
        .secret_id(arn)
        .secret_string(&token)
        .send()
        .await
        .expect("rotate the admin token");
    token
}
