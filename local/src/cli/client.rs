//! The admin API as the command line sees it: one HTTP client with the admin token, and the
//! errors it can meet, each rendered without the token or any secret.

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// What went wrong talking to the service or reading the user's input.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The service could not be reached or its answer read.
    #[error("{method} {path}: {source}")]
    Transport {
        method: Method,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    /// The service refused a request; `fields` are Kong's schema-violation fields, flattened.
    #[error("{what}: {status} {message}{}", render_fields(fields))]
    Refused {
        what: String,
        status: StatusCode,
        message: String,
        fields: Vec<(String, String)>,
    },
    /// The hooks file (or an event file) is not what it must be; each problem names the hook
    /// and the field.
    #[error("{file}:\n{}", problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { file: String, problems: Vec<String> },
    /// Anything else, said in a sentence.
    #[error("{0}")]
    Other(String),
}

fn render_fields(fields: &[(String, String)]) -> String {
    fields
        .iter()
        .map(|(path, message)| format!("\n  {path}: {message}"))
        .collect()
}

/// Kong's nested `fields` (`{"config":{"url":"missing host in url"}}`) as dotted paths.
pub(crate) fn flatten_fields(fields: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), fields)];
    while let Some((prefix, node)) = stack.pop() {
        match node {
            Value::Object(map) => {
                for (key, value) in map.iter().rev() {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    stack.push((path, value));
                }
            }
            Value::Array(items) => {
                for (i, value) in items.iter().enumerate().rev() {
                    stack.push((format!("{prefix}.{}", i + 1), value));
                }
            }
            Value::String(message) => out.push((prefix, message.clone())),
            other => out.push((prefix, other.to_string())),
        }
    }
    out
}

/// The admin API at `base`, with the admin token when there is one.
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub(crate) fn new(base: &str, token: Option<String>) -> Result<Client, CliError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|err| CliError::Other(format!("cannot build the HTTP client: {err}")))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Sends one request; answers the status and the JSON body (`null` when there is none).
    /// `what` names the request in errors (`hook "billing"`); statuses outside 2xx are errors.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        what: &str,
    ) -> Result<(StatusCode, Value), CliError> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Kong-Admin-Token", token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |source| CliError::Transport {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let text = response.text().await.map_err(transport)?;
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        };
        if status.is_success() {
            return Ok((status, json));
        }
        // Only the API's own message and fields: they name fields, never their values.
        let message = json["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("from {method} {path}"));
        Err(CliError::Refused {
            what: what.to_owned(),
            status,
            message,
            fields: json.get("fields").map(flatten_fields).unwrap_or_default(),
        })
    }

    /// `GET path`, its JSON body.
    pub(crate) async fn get(&self, path: &str, what: &str) -> Result<Value, CliError> {
        Ok(self.send(Method::GET, path, None, &[], what).await?.1)
    }

    /// Every hook, following `next` page by page.
    pub(crate) async fn all_hooks(&self) -> Result<Vec<Value>, CliError> {
        let mut hooks = Vec::new();
        let mut path = "/event-hooks?size=1000".to_owned();
        loop {
            let page = self.get(&path, "listing the hooks").await?;
            if let Some(items) = page["data"].as_array() {
                hooks.extend(items.iter().cloned());
            }
            match page["next"].as_str() {
                Some(next) if !next.is_empty() => path = next.to_owned(),
                _ => return Ok(hooks),
            }
        }
    }
}

/// The admin token: `EVENT_HOOKS_TOKEN`, else the Secrets Manager secret `arn` names (the
/// deployed stack's `AdminTokenSecretArn` output), else none.
pub(crate) async fn token(arn: Option<&str>) -> Result<Option<String>, CliError> {
    if let Some(arn) = arn {
        let config = event_hooks::aws::load_config().await;
        let client = aws_sdk_secretsmanager::Client::new(&config);
        let output = client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|err| {
                CliError::Other(format!(
                    "cannot read the admin token from {arn}: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(err)
                ))
            })?;
        let token = output
            .secret_string
            .ok_or_else(|| CliError::Other(format!("secret {arn} has no SecretString")))?;
        return Ok(Some(token.trim().to_owned()));
    }
    Ok(std::env::var("EVENT_HOOKS_TOKEN")
        .ok()
        .filter(|token| !token.is_empty()))
}
