//! The `event-hooks` command line, the real binary against a local server: `apply` creates and
//! then finds nothing to do, converges from hand-made changes, leaves hooks without a name
//! alone, never prints a secret, names the hook and the field in its errors; `dump` then `apply`
//! changes nothing; `emit` and `tail` show a delivery. And the hooks file's JSON Schema: served,
//! in step with the OpenAPI document, and passed by the example file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use event_hooks_tests::receiver::Receiver;
use event_hooks_tests::server::LocalServer;
use serde_json::{json, Value};

const SECRET: &str = "kong-s3cret-value";
const NEW_SECRET: &str = "kong-n3w-s3cret";
const TOKEN: &str = "Bearer t0ken-of-billing";

/// What one run of the binary printed, and how it ended.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `event-hooks args` against `server` with `env` set (and nothing else of ours).
fn run(server: &LocalServer, args: &[&str], env: &[(&str, &str)]) -> Run {
    let binary = event_hooks_tests::binaries::path("event-hooks");
    let mut command = Command::new(binary);
    command
        .args(args)
        .env("EVENT_HOOKS_URL", &server.base)
        .env_remove("EVENT_HOOKS_TOKEN")
        .env_remove("EVENT_HOOKS_TOKEN_SECRET_ARN");
    for (name, value) in env {
        command.env(name, value);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("run event-hooks");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Writes `text` to a file of its own; its path.
fn write_file(name: &str, text: &str) -> PathBuf {
    let dir = event_hooks_tests::server::temp_data_dir();
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the file");
    path
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

const FILE: &str = r#"
_format_version: "1"
hooks:
  - name: billing
    source: billing
    event: paid
    handler: webhook
    config:
      url: https://billing.example.com/hook
      secret: ${{ env "HOOK_SECRET" }}
      headers:
        Authorization: ${{ env "BILLING_AUTH" }}
        x-team: payments
    tags: [payments]
  - name: audit
    source: crud
    handler: log
  - name: crm
    source: crud
    event: consumers
    handler: webhook
    config: { url: "https://crm.example.com/h", signature: standard }
    snooze: 5
custom_events:
  billing:
    paid:
      fields: [invoice, amount]
      unique: [invoice]
      description: An invoice was paid
"#;

fn secrets() -> Vec<(&'static str, &'static str)> {
    vec![("HOOK_SECRET", SECRET), ("BILLING_AUTH", TOKEN)]
}

/// The named hooks the server holds, by name.
async fn named_hooks(server: &LocalServer) -> std::collections::BTreeMap<String, Value> {
    server.get_json("/event-hooks").await["data"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|hook| Some((hook["name"].as_str()?.to_owned(), hook.clone())))
        .collect()
}

fn assert_no_secret(run: &Run, what: &str) {
    let all = run.all();
    for secret in [SECRET, NEW_SECRET, TOKEN, "t0ken-of-billing"] {
        assert!(!all.contains(secret), "{what} printed a secret:\n{all}");
    }
}

async fn send(server: &LocalServer, method: reqwest::Method, path: &str, body: Value) -> u16 {
    reqwest::Client::new()
        .request(method, server.url(path))
        .json(&body)
        .send()
        .await
        .expect("a request")
        .status()
        .as_u16()
}

#[tokio::test]
async fn apply_creates_then_finds_nothing_to_do_and_never_prints_a_secret() {
    let server = LocalServer::in_process(&[]);
    let file = write_file("hooks.yaml", FILE);
    let file = path_str(&file);

    let diff = run(&server, &["diff", "-f", file], &secrets());
    assert_eq!(diff.code, 2, "{}", diff.all());
    assert!(
        diff.stdout.contains("+ hook \"billing\""),
        "{}",
        diff.stdout
    );
    assert!(
        diff.stdout.contains("+ custom event billing/paid"),
        "{}",
        diff.stdout
    );
    assert_no_secret(&diff, "diff");

    let apply = run(&server, &["apply", "-f", file], &secrets());
    assert_eq!(apply.code, 0, "{}", apply.all());
    assert!(
        apply.stdout.contains("3 to add") || apply.stdout.contains("4 to add"),
        "{}",
        apply.stdout
    );
    assert_no_secret(&apply, "apply");
    let hooks = named_hooks(&server).await;
    assert_eq!(
        hooks.keys().collect::<Vec<_>>(),
        ["audit", "billing", "crm"]
    );
    assert_eq!(hooks["billing"]["config"]["secret"], SECRET);
    assert_eq!(
        hooks["billing"]["config"]["headers"]["Authorization"],
        TOKEN
    );
    assert_eq!(hooks["crm"]["snooze"], 5);
    let generated = hooks["crm"]["config"]["secret"].clone();
    assert!(generated.as_str().is_some_and(|s| s.starts_with("whsec_")));
    let event = server.get_json("/event-hooks/sources/billing/paid").await;
    assert_eq!(event["data"]["unique"], json!(["invoice"]));

    // A second apply changes nothing, and diff says so with 0.
    let again = run(&server, &["apply", "-f", file], &secrets());
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(again.stdout.contains("No changes"), "{}", again.stdout);
    let diff = run(&server, &["diff", "-f", file], &secrets());
    assert_eq!(diff.code, 0, "{}", diff.all());
    assert!(diff.stdout.contains("No changes"), "{}", diff.stdout);
    assert_eq!(named_hooks(&server).await, hooks, "nothing was rewritten");

    // A new secret in the environment is a change, shown without either value, and rotated in.
    let rotated = [("HOOK_SECRET", NEW_SECRET), ("BILLING_AUTH", TOKEN)];
    let diff = run(&server, &["diff", "-f", file], &rotated);
    assert_eq!(diff.code, 2, "{}", diff.all());
    assert!(
        diff.stdout
            .contains("~ config.secret: changed (value hidden)"),
        "{}",
        diff.stdout
    );
    assert_no_secret(&diff, "diff of a new secret");
    let apply = run(&server, &["apply", "-f", file], &rotated);
    assert_eq!(apply.code, 0, "{}", apply.all());
    assert_no_secret(&apply, "apply of a new secret");
    let hooks = named_hooks(&server).await;
    assert_eq!(hooks["billing"]["config"]["secret"], NEW_SECRET);
    assert_eq!(
        hooks["crm"]["config"]["secret"], generated,
        "kept: the file sets none"
    );
    assert_eq!(run(&server, &["diff", "-f", file], &rotated).code, 0);

    // dump writes references, never values; applying the dump changes nothing.
    let dump = run(&server, &["dump"], &[]);
    assert_eq!(dump.code, 0, "{}", dump.all());
    assert_no_secret(&dump, "dump");
    assert!(
        dump.stdout
            .contains("secret: ${{ env \"EVENT_HOOKS_SECRET_BILLING\" }}"),
        "{}",
        dump.stdout
    );
    assert!(!dump.stdout.contains("whsec_"), "{}", dump.stdout);
    let dumped = write_file("dump.yaml", &dump.stdout);
    let env = [
        ("EVENT_HOOKS_SECRET_BILLING", NEW_SECRET),
        ("EVENT_HOOKS_HEADER_BILLING_AUTHORIZATION", TOKEN),
    ];
    let diff = run(&server, &["diff", "-f", path_str(&dumped)], &env);
    assert_eq!(
        diff.code,
        0,
        "the dump differs from the service:\n{}",
        diff.all()
    );
    let apply = run(&server, &["apply", "-f", path_str(&dumped)], &env);
    assert_eq!(apply.code, 0, "{}", apply.all());
    assert!(apply.stdout.contains("No changes"), "{}", apply.stdout);
    assert_no_secret(&apply, "apply of the dump");
}

#[tokio::test]
async fn apply_converges_from_changes_made_by_hand_and_leaves_unnamed_hooks_alone() {
    let server = LocalServer::in_process(&[]);
    let file = write_file("hooks.yaml", FILE);
    let file = path_str(&file);
    assert_eq!(run(&server, &["apply", "-f", file], &secrets()).code, 0);
    let wanted = named_hooks(&server).await;

    // By hand: one hook changed, one renamed, one deleted, one added, one without a name, a
    // custom event changed and another registered.
    let billing = wanted["billing"]["id"].as_str().unwrap().to_owned();
    let audit = wanted["audit"]["id"].as_str().unwrap().to_owned();
    let crm = wanted["crm"]["id"].as_str().unwrap().to_owned();
    let patch = reqwest::Method::PATCH;
    let body = json!({"config": {"url": "https://elsewhere.example.com/"}, "enabled": false});
    assert_eq!(
        send(
            &server,
            patch.clone(),
            &format!("/event-hooks/{billing}"),
            body
        )
        .await,
        200
    );
    let rename = json!({"name": "audit-renamed"});
    assert_eq!(
        send(&server, patch, &format!("/event-hooks/{audit}"), rename).await,
        200
    );
    let delete = reqwest::Method::DELETE;
    assert_eq!(
        send(&server, delete, &format!("/event-hooks/{crm}"), json!({})).await,
        204
    );
    server
        .create_hook(&json!({"name": "extra", "source": "crud", "handler": "log"}))
        .await;
    let unnamed = server
        .create_hook(&json!({"source": "balancer", "handler": "log"}))
        .await;
    let put = reqwest::Method::PUT;
    let changed = json!({"fields": ["invoice"]});
    assert_eq!(
        send(
            &server,
            put.clone(),
            "/event-hooks/sources/billing/paid",
            changed
        )
        .await,
        200
    );
    let other = json!({"fields": ["id"]});
    assert_eq!(
        send(&server, put, "/event-hooks/sources/shop/ordered", other).await,
        201
    );

    let diff = run(&server, &["diff", "-f", file], &secrets());
    assert_eq!(diff.code, 2, "{}", diff.all());
    let out = &diff.stdout;
    for expected in [
        "~ hook \"billing\"",
        "~ config.url: \"https://elsewhere.example.com/\" -> \"https://billing.example.com/hook\"",
        "~ enabled: false -> true",
        "+ hook \"audit\"",
        "- hook \"audit-renamed\"",
        "+ hook \"crm\"",
        "- hook \"extra\"",
        "~ custom event billing/paid",
        "- custom event shop/ordered",
        "= hook without a name, left alone: ",
        "2 to add, 2 to change, 3 to delete.",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    assert!(out.contains(unnamed["id"].as_str().unwrap()), "{out}");
    assert_no_secret(&diff, "diff");

    let apply = run(&server, &["apply", "-f", file], &secrets());
    assert_eq!(apply.code, 0, "{}", apply.all());
    assert_no_secret(&apply, "apply");
    let after = named_hooks(&server).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        ["audit", "billing", "crm"]
    );
    let fields = |hook: &Value| {
        let mut hook = hook.clone();
        for field in ["id", "created_at", "updated_at"] {
            hook.as_object_mut().unwrap().remove(field);
        }
        if hook["config"]["signature"] == "standard" {
            hook["config"]["secret"] = Value::Null;
        }
        hook
    };
    for (name, hook) in &wanted {
        assert_eq!(fields(&after[name]), fields(hook), "hook {name}");
    }
    let still = server
        .get_json(&format!("/event-hooks/{}", unnamed["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        still["source"], "balancer",
        "the unnamed hook is left alone"
    );
    let event = server.get_json("/event-hooks/sources/billing/paid").await;
    assert_eq!(event["data"]["fields"], json!(["invoice", "amount"]));
    let gone = server.get_json("/event-hooks/sources/shop").await;
    assert_eq!(gone, json!({"message": "Not found"}));
    let diff = run(&server, &["diff", "-f", file], &secrets());
    assert_eq!(diff.code, 0, "{}", diff.all());
}

#[tokio::test]
async fn errors_name_the_hook_and_the_field_and_change_nothing() {
    // The server refuses lambda hooks; the file's own checks cannot know that.
    let server = LocalServer::in_process(&["--untrusted-lua", "off"]);
    let broken = write_file(
        "broken.yaml",
        r#"
hooks:
  - name: broken
    source: crud
    handler: webhook
    config: { url: "https://", secret: '${{ env "HOOK_SECRET" }}' }
  - name: unset
    source: crud
    handler: webhook
    config: { url: "https://a.example.com", secret: '${{ env "NOT_SET_ANYWHERE" }}' }
  - source: crud
    handler: log
"#,
    );
    let diff = run(&server, &["diff", "-f", path_str(&broken)], &secrets());
    assert_eq!(diff.code, 1, "{}", diff.all());
    for expected in [
        "hook \"broken\": config.url: missing host in url",
        "hook \"unset\": config.secret: environment variable NOT_SET_ANYWHERE is not set",
        "hooks[3]: name: required",
    ] {
        assert!(
            diff.stderr.contains(expected),
            "missing `{expected}`:\n{}",
            diff.stderr
        );
    }
    assert_no_secret(&diff, "diff of a broken file");

    let refused = write_file(
        "lambda.yaml",
        r#"
hooks:
  - name: ok
    source: crud
    handler: log
  - name: scripted
    source: crud
    handler: lambda
    config: { functions: ["return function() end"] }
"#,
    );
    let apply = run(&server, &["apply", "-f", path_str(&refused)], &[]);
    assert_eq!(apply.code, 1, "{}", apply.all());
    assert!(
        apply.stderr.contains("hook \"scripted\": 400"),
        "{}",
        apply.stderr
    );
    assert!(
        apply.stderr.contains("config.functions: "),
        "{}",
        apply.stderr
    );
    let names: Vec<String> = named_hooks(&server).await.into_keys().collect();
    assert!(!names.contains(&"scripted".to_owned()), "{names:?}");
}

// Multi-threaded: the receiver answers while this thread waits on the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_and_tail_show_a_delivery() {
    let receiver = Receiver::start().await;
    let server = LocalServer::in_process(&[]);
    let file = write_file(
        "hooks.yaml",
        &format!(
            r#"
hooks:
  - name: to-receiver
    source: billing
    event: paid
    handler: webhook
    config: {{ url: "{}" }}
custom_events:
  billing:
    paid: {{ fields: [invoice] }}
"#,
            receiver.url("/paid")
        ),
    );
    assert_eq!(run(&server, &["apply", "-f", path_str(&file)], &[]).code, 0);

    let keyed = [
        "emit",
        "--source",
        "billing",
        "--event",
        "paid",
        "--data",
        r#"{"invoice":"inv-1"}"#,
        "--idempotency-key",
        "key-1",
    ];
    let emit = run(&server, &keyed, &[]);
    assert_eq!(emit.code, 0, "{}", emit.all());
    let id = emit.stdout.trim().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{}", emit.stdout);
    // The same key sends the event once: the same id.
    let again = run(&server, &keyed, &[]);
    assert_eq!(again.stdout.trim(), id, "{}", again.all());
    // From a file (stdin the same way): another event, another fresh key.
    let event = write_file(
        "event.json",
        r#"{"source":"billing","event":"paid","data":{"invoice":"inv-2"}}"#,
    );
    let from_file = run(&server, &["emit", "-f", path_str(&event)], &[]);
    assert_eq!(from_file.code, 0, "{}", from_file.all());
    assert_ne!(from_file.stdout.trim(), id);
    assert!(
        from_file.stderr.contains("idempotency-key: "),
        "{}",
        from_file.stderr
    );
    let received = receiver.wait_for("/paid", 2, Duration::from_secs(10)).await;
    let mut invoices: Vec<Value> = received
        .iter()
        .map(|r| r.json()["invoice"].clone())
        .collect();
    invoices.sort_by_key(|invoice| invoice.to_string());
    assert_eq!(invoices, [json!("inv-1"), json!("inv-2")]);
    server.wait_until_settled().await;

    let tail = run(&server, &["tail", "--hook", "to-receiver", "--once"], &[]);
    assert_eq!(tail.code, 0, "{}", tail.all());
    // The hook's ping on creation is a delivery too; the event's is the one after it.
    let lines: Vec<&str> = tail
        .stdout
        .lines()
        .filter(|line| line.contains(" billing/paid "))
        .collect();
    assert_eq!(lines.len(), 2, "{}", tail.stdout);
    for line in lines {
        assert!(
            line.contains("billing/paid attempt 1 delivered HTTP 200"),
            "{line}"
        );
    }

    let unknown = run(&server, &["tail", "--hook", "nobody", "--once"], &[]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("hook \"nobody\""),
        "{}",
        unknown.stderr
    );
}

/// The properties a file's hook may have, per handler: `oneOf` variants by title.
fn hook_properties(variants: &Value) -> Vec<(String, Vec<String>)> {
    variants
        .as_array()
        .expect("oneOf")
        .iter()
        .map(|variant| {
            let mut names: Vec<String> = variant["properties"]
                .as_object()
                .expect("properties")
                .keys()
                .cloned()
                .collect();
            names.sort();
            (variant["title"].as_str().unwrap_or("?").to_owned(), names)
        })
        .collect()
}

#[tokio::test]
async fn the_hooks_file_schema_is_served_in_step_with_the_api_and_passed_by_the_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let checked_in: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("shared/hooks-file.schema.json")).unwrap(),
    )
    .unwrap();
    let server = LocalServer::in_process(&[]);
    let response = reqwest::get(server.url("/hooks-file.schema.json"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/schema+json"
    );
    let served: Value = response.json().await.unwrap();
    assert!(
        served == checked_in,
        "GET /hooks-file.schema.json is not shared/hooks-file.schema.json"
    );

    // The file's hooks are the API's input hooks, without the fields the server sets.
    let openapi: Value = server.get_json("/openapi.json").await;
    let server_set = [
        "id",
        "created_at",
        "updated_at",
        "disabled_reason",
        "failing_since",
        "lane",
    ];
    let api: Vec<(String, Vec<String>)> =
        hook_properties(&openapi["components"]["schemas"]["HookInput"]["oneOf"])
            .into_iter()
            .map(|(title, names)| {
                let kept = names
                    .into_iter()
                    .filter(|name| !server_set.contains(&name.as_str()))
                    .collect();
                (title, kept)
            })
            .collect();
    assert_eq!(
        hook_properties(&checked_in["properties"]["hooks"]["items"]["oneOf"]),
        api
    );

    // The examples pass it, by the reference implementation; a file that says `id` does not.
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: `make venv` installs it with jsonschema",
        python.display()
    );
    const SCRIPT: &str = r#"
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
for path in sys.argv[2:]:
    errors = list(validator.iter_errors(yaml.safe_load(open(path))))
    print("%s %s" % (path, "ok" if not errors else "invalid: " + errors[0].message[:200]))
"#;
    let example = root.join("docs/hooks.yaml");
    let test_file = write_file("hooks.yaml", FILE);
    let with_id = write_file(
        "with-id.yaml",
        "hooks:\n  - {name: a, id: x, source: crud, handler: log}\n",
    );
    let output = Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(root.join("shared/hooks-file.schema.json"))
        .args([&example, &test_file, &with_id])
        .output()
        .expect("run python");
    let verdicts = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{verdicts}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = verdicts.lines().collect();
    assert!(lines[0].ends_with(" ok"), "{verdicts}");
    assert!(lines[1].ends_with(" ok"), "{verdicts}");
    assert!(lines[2].contains(" invalid: "), "{verdicts}");

    // And the example passes the service's own checks: only changes pending, no error.
    let env = [("BILLING_SECRET", "x"), ("BILLING_TOKEN", "Bearer y")];
    let diff = run(&server, &["diff", "-f", path_str(&example)], &env);
    assert_eq!(diff.code, 2, "{}", diff.all());
}

#[tokio::test]
async fn the_admin_token_comes_from_the_environment_or_from_secrets_manager() {
    let server = LocalServer::in_process(&["--admin-token", "local-admin-t0ken"]);

    let without = run(&server, &["dump"], &[]);
    assert_eq!(without.code, 1, "{}", without.all());
    assert!(
        without.stderr.contains("401") && without.stderr.contains("Token or User credentials"),
        "{}",
        without.stderr
    );
    let with = run(
        &server,
        &["dump"],
        &[("EVENT_HOOKS_TOKEN", "local-admin-t0ken")],
    );
    assert_eq!(with.code, 0, "{}", with.all());
    assert!(!with.all().contains("local-admin-t0ken"));

    // The deployed stack's way: the token's secret by ARN, read with the AWS SDK (on moto).
    let Some(config) = event_hooks_tests::moto::config() else {
        return;
    };
    let arn = event_hooks_tests::moto::create_secret(&config, "local-admin-t0ken").await;
    let endpoint = std::env::var("MOTO_ENDPOINT").expect("moto's endpoint");
    let aws = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    let by_arn = run(&server, &["dump", "--token-secret-arn", &arn], &aws);
    assert_eq!(by_arn.code, 0, "{}", by_arn.all());
    let missing = format!("{arn}-missing");
    let wrong = run(&server, &["dump", "--token-secret-arn", &missing], &aws);
    assert_eq!(wrong.code, 1, "{}", wrong.all());
    assert!(
        wrong.stderr.contains("cannot read the admin token"),
        "{}",
        wrong.stderr
    );
}

// Multi-threaded: the receiver answers while this thread waits on the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_follows_new_attempts_until_interrupted() {
    let receiver = Receiver::start().await;
    let server = LocalServer::in_process(&[]);
    let file = write_file(
        "hooks.yaml",
        &format!(
            "hooks:\n  - {{name: followed, source: crud, handler: webhook, config: {{url: \"{}\"}}}}\n",
            receiver.url("/followed")
        ),
    );
    assert_eq!(run(&server, &["apply", "-f", path_str(&file)], &[]).code, 0);
    server.wait_until_settled().await;

    let mut tail = Command::new(event_hooks_tests::binaries::path("event-hooks"))
        .args(["tail", "--hook", "followed", "--interval", "0.2"])
        .env("EVENT_HOOKS_URL", &server.base)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start event-hooks tail");
    let stdout = tail.stdout.take().expect("its stdout");
    let (lines, seen) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    // Started before the event: the line can only come from following.
    std::thread::sleep(Duration::from_millis(500));
    server
        .emit(&json!({"source": "crud", "event": "consumers", "data": {"id": "c-1"}}))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let line = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match seen.recv_timeout(left) {
            // An attempt cut short on a busy machine shows too; the delivery follows it.
            Ok(line) if line.contains(" crud/consumers ") && line.contains(" delivered ") => {
                break line
            }
            Ok(_) => continue,
            Err(_) => panic!("tail printed no delivered attempt of the event"),
        }
    };
    assert!(line.contains("delivered HTTP 200"), "{line}");

    // Ctrl-C ends it cleanly.
    let interrupted = Command::new("kill")
        .args(["-INT", &tail.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(interrupted.success());
    let status = tail.wait().expect("tail ends");
    assert!(status.success(), "tail after Ctrl-C: {status}");
}

/// Kills the `serve` child when the test ends, however it ends.
struct Served(std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_is_the_local_server_with_its_flags() {
    // Given `event-hooks serve` with the local server's flags: an address, a data directory and
    // an admin token
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let data_dir = event_hooks_tests::server::temp_data_dir();
    let _served = Served(
        Command::new(event_hooks_tests::binaries::path("event-hooks"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(&data_dir)
            .args(["--admin-token", "t0k3n"])
            .env_remove("EVENT_HOOKS_ADMIN_TOKEN")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start event-hooks serve"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let list = |token: Option<&'static str>| {
        let request = http.get(format!("{base}/event-hooks"));
        match token {
            Some(token) => request.header("Kong-Admin-Token", token),
            None => request,
        }
        .send()
    };

    // When it is up
    let started = std::time::Instant::now();
    let status = loop {
        match list(Some("t0k3n")).await {
            Ok(response) => break response.status(),
            Err(_) if started.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(err) => panic!("event-hooks serve never answered: {err}"),
        }
    };

    // Then it serves the admin API behind the token, and keeps its data in the directory given
    assert_eq!(status, 200);
    assert_eq!(list(None).await.unwrap().status(), 401);
    assert!(
        std::fs::read_dir(&data_dir).unwrap().next().is_some(),
        "nothing written to {data_dir:?}"
    );
}
