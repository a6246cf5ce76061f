//! `emit` (an event to `POST /events`, with an idempotency key) and `tail` (a hook's delivery
//! attempts, as they happen).

use std::collections::BTreeSet;
use std::io::Read as _;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use super::client::{CliError, Client};
use super::plan::encode;

/// Where the event comes from: flags, a file, or stdin.
pub(crate) struct EventInput {
    pub(crate) source: Option<String>,
    pub(crate) event: Option<String>,
    pub(crate) data: Option<String>,
    pub(crate) file: Option<String>,
}

/// The event to send, as `{"source","event","data"}`.
pub(crate) fn event_body(input: &EventInput) -> Result<Value, CliError> {
    if let (Some(source), Some(event)) = (&input.source, &input.event) {
        let data = match &input.data {
            Some(text) => serde_json::from_str(text)
                .map_err(|err| CliError::Other(format!("--data is not JSON: {err}")))?,
            None => json!({}),
        };
        return Ok(json!({ "source": source, "event": event, "data": data }));
    }
    if input.source.is_some() || input.event.is_some() || input.data.is_some() {
        return Err(CliError::Other(
            "give --source and --event together (with --data), or an event with -f".into(),
        ));
    }
    let (name, text) = match input.file.as_deref() {
        Some(path) if path != "-" => (
            path.to_owned(),
            std::fs::read_to_string(path)
                .map_err(|err| CliError::Other(format!("cannot read {path}: {err}")))?,
        ),
        _ => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|err| CliError::Other(format!("cannot read stdin: {err}")))?;
            ("stdin".to_owned(), text)
        }
    };
    let event: Value = serde_yaml::from_str(&text)
        .map_err(|err| CliError::Other(format!("{name}: not a JSON or YAML event: {err}")))?;
    if !event.is_object() {
        return Err(CliError::Other(format!(
            "{name}: expected an event {{\"source\", \"event\", \"data\"}}"
        )));
    }
    Ok(event)
}

/// Sends `event` with `key` (a fresh one when none is given); answers the key and the event's id.
pub(crate) async fn emit(
    client: &Client,
    event: &Value,
    key: Option<String>,
) -> Result<(String, String), CliError> {
    let key = key.unwrap_or_else(|| Uuid::new_v4().to_string());
    let (_, answer) = client
        .send(
            Method::POST,
            "/events",
            Some(event),
            &[("Idempotency-Key", &key)],
            "the event",
        )
        .await?;
    let id = answer["id"]
        .as_str()
        .ok_or_else(|| CliError::Other("POST /events answered no event id".into()))?
        .to_owned();
    Ok((key, id))
}

/// The hook's id: `hook` itself when it is one, else the id of the hook named so.
pub(crate) async fn hook_id(client: &Client, hook: &str) -> Result<String, CliError> {
    if Uuid::parse_str(hook).is_ok() {
        return Ok(hook.to_owned());
    }
    client
        .all_hooks()
        .await?
        .iter()
        .find(|h| h["name"] == hook)
        .and_then(|h| h["id"].as_str().map(str::to_owned))
        .ok_or_else(|| CliError::Other(format!("hook \"{hook}\": no hook has this name or id")))
}

/// One line per attempt of a delivery record.
fn lines(record: &Value) -> Vec<((String, u64), i64, String)> {
    let id = record["id"].as_str().unwrap_or("?");
    let event = &record["event"];
    let what = format!(
        "{}/{}",
        event["source"].as_str().unwrap_or("?"),
        event["event"].as_str().unwrap_or("?")
    );
    let mut out = Vec::new();
    for attempt in record["attempts"].as_array().into_iter().flatten() {
        let number = attempt["number"].as_u64().unwrap_or(0);
        let at = attempt["at"].as_i64().unwrap_or(0);
        let outcome = match (attempt["status"].as_u64(), attempt["error"].as_str()) {
            (Some(status), None) => format!("HTTP {status}"),
            (Some(status), Some(error)) => format!("HTTP {status}: {error}"),
            (None, Some(error)) => error.to_owned(),
            (None, None) => "no answer".to_owned(),
        };
        let line = format!(
            "{} delivery {id} {what} attempt {number} {} {} {}ms",
            httpdate::fmt_http_date(
                std::time::UNIX_EPOCH + Duration::from_millis(at.max(0) as u64)
            ),
            record["status"].as_str().unwrap_or("?"),
            outcome,
            attempt["latency_ms"].as_u64().unwrap_or(0),
        );
        out.push(((id.to_owned(), number), at, line));
    }
    out
}

/// Prints the attempts of the newest page not printed yet, oldest first.
async fn print_new(
    client: &Client,
    id: &str,
    seen: &mut BTreeSet<(String, u64)>,
) -> Result<(), CliError> {
    let page = client
        .get(
            &format!("/event-hooks/{}/deliveries", encode(id)),
            &format!("hook {id}"),
        )
        .await?;
    let mut new: Vec<(i64, String)> = Vec::new();
    for record in page["data"].as_array().into_iter().flatten() {
        for (key, at, line) in lines(record) {
            if seen.insert(key) {
                new.push((at, line));
            }
        }
    }
    // The page is newest first; people read a log oldest first.
    new.sort_by_key(|(at, _)| *at);
    for (_, line) in new {
        println!("{line}");
    }
    Ok(())
}

/// Follows a hook's deliveries until Ctrl-C, or prints the current page with `once`.
pub(crate) async fn tail(
    client: &Client,
    hook: &str,
    once: bool,
    interval: Duration,
) -> Result<(), CliError> {
    let id = hook_id(client, hook).await?;
    let mut seen = BTreeSet::new();
    print_new(client, &id, &mut seen).await?;
    if once {
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(interval) => print_new(client, &id, &mut seen).await?,
        }
    }
}
