//! Documented curl commands, run as written by a shell.

use std::process::Command;

use serde_json::Value;

/// Runs a shell command line that prints an HTTP response with its head (curl's `-i`), and
/// returns the status and the JSON body (`Value::Null` when the body is empty).
pub fn run(command: &str) -> (u16, Value) {
    let output = Command::new("bash")
        .arg("-c")
        .arg(format!("{command} --silent --show-error"))
        .output()
        .expect("run curl");
    assert!(output.status.success(), "curl failed: {output:?}");
    let text = String::from_utf8(output.stdout).expect("utf-8 response");
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let json = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"))
    };
    (status, json)
}
