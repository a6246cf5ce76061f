//! The Kong relay's secrets in the local server (spec §13): `--relay-secret` (repeatable) and
//! `--relay-secrets-file` (one a line). The file is read again within seconds of a change, so a
//! rotation needs no restart: add the new secret, switch Kong's hooks, remove the old one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use event_hooks::admin::{RelaySettings, TokenCheck, TokenError, TokenSource};

use crate::Settings;

/// How long the secrets read from the file are used before it is read again.
const FILE_MAX_AGE: Duration = Duration::from_secs(5);
/// The least time between two reads caused by a signature no known secret makes.
const FILE_REFETCH_INTERVAL: Duration = Duration::from_secs(1);

/// The secrets of the flags and, when given, of the file, one a line.
struct LocalSecrets {
    flags: Vec<String>,
    file: Option<PathBuf>,
}

#[async_trait]
impl TokenSource for LocalSecrets {
    async fn fetch(&self) -> Result<String, TokenError> {
        let mut lines = self.flags.clone();
        if let Some(file) = &self.file {
            let text = tokio::fs::read_to_string(file)
                .await
                .map_err(|err| TokenError(format!("{}: {err}", self.describe())))?;
            lines.push(text);
        }
        Ok(lines.join("\n"))
    }

    fn describe(&self) -> String {
        match &self.file {
            Some(file) => format!("the relay secrets file {}", file.display()),
            None => "the --relay-secret flags".to_owned(),
        }
    }
}

/// The relay settings of `settings`; fails, naming the flag, when the file cannot be read or
/// the flags and the file hold no secret at all.
pub async fn settings(settings: &Settings) -> anyhow::Result<RelaySettings> {
    let allow_unsigned = settings.relay_unsigned;
    if settings.relay_secrets.is_empty() && settings.relay_secrets_file.is_none() {
        return Ok(RelaySettings {
            secrets: None,
            allow_unsigned,
        });
    }
    let source = LocalSecrets {
        flags: settings.relay_secrets.clone(),
        file: settings.relay_secrets_file.clone(),
    };
    let first = source.fetch().await.map_err(|err| anyhow::anyhow!(err.0))?;
    anyhow::ensure!(
        event_hooks::admin::relay_secret_lines(&first)
            .next()
            .is_some(),
        "{} holds no relay secret",
        source.describe()
    );
    let check = TokenCheck::new(Arc::new(source), FILE_MAX_AGE, FILE_REFETCH_INTERVAL);
    Ok(RelaySettings {
        secrets: Some(Arc::new(check)),
        allow_unsigned,
    })
}
