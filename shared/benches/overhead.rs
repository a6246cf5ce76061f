//! Per-delivery overhead without network (spec §9): matching an event to its hooks, the
//! snooze/on_change decision, rendering and signing, and a warm lambda chain.
//!
//! Run: `cargo bench -p event-hooks --bench overhead`. Each case runs for about a second after a
//! warm-up; the figure is the median time per operation over ten batches.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_hooks::dispatch::handlers::{sign, webhook_data, webhook_request, CustomPlan};
use event_hooks::dispatch::EventName;
use event_hooks::events::Event;
use event_hooks::lua::LuaChain;
use event_hooks::lua::{Budget, Limits};
use event_hooks::model::{
    Handler, Hook, HttpMethod, LogConfig, PreviousSecret, SignatureScheme, WebhookConfig,
    WebhookCustomConfig,
};
use event_hooks::snapshot::Snapshot;
use event_hooks::sources::Catalogue;
use event_hooks::sqlite::Database;
use event_hooks::windows::sqlite::SqliteWindowStore;
use event_hooks::windows::{decide, event_key, WindowStore};
use serde_json::json;
use uuid::Uuid;

/// Median nanoseconds per call of `f`, over ten batches sized to take ~100 ms each.
fn measure(mut f: impl FnMut()) -> f64 {
    let warm = Instant::now();
    let mut calls = 0u64;
    while warm.elapsed() < Duration::from_millis(200) {
        f();
        calls += 1;
    }
    let per_batch = (calls / 2).max(1);
    let mut samples: Vec<f64> = (0..10)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            start.elapsed().as_nanos() as f64 / per_batch as f64
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[5]
}

fn report(name: &str, nanos: f64) {
    println!("{name:<58} {:>10.2} µs/op", nanos / 1000.0);
}

fn hook(source: &str, event: Option<&str>, handler: Handler) -> Hook {
    Hook {
        id: Uuid::new_v4(),
        created_at: 0,
        updated_at: 0,
        source: source.into(),
        event: event.map(str::to_string),
        handler,
        snooze: None,
        on_change: None,
        enabled: true,
        name: None,
        tags: vec![],
        delivery: Default::default(),
        disabled_reason: None,
        failing_since: None,
        max_rate: None,
    }
}

fn main() {
    // ~300-byte event, as in the throughput target.
    let event = Event {
        id: Uuid::new_v4(),
        source: "crud".into(),
        event: "consumers".into(),
        data: json!({"operation":"create","entity":{"id":"3b1f0c2e-8d6a-4e0f-9a57-2f4c6d8e1a90",
            "username":"bob","custom_id":"c-1234","created_at":1795400000,"tags":["gold","eu"]},
            "old_entity":null,"schema":"consumers"}),
        timestamp: 0,
    };
    let webhook = WebhookConfig {
        url: "https://example.com/hooks".into(),
        headers: BTreeMap::from([("x-team".into(), "platform".into())]),
        secret: Some("hunter2".into()),
        ssl_verify: false,
        signature: Default::default(),
        previous_secret: None,
    };
    // A realistic snapshot: 200 hooks over several sources, 3 of them on this event.
    let mut hooks = Vec::new();
    for i in 0..197 {
        let source = ["balancer", "rate-limiting-advanced", "dao:crud", "crud"][i % 4];
        let event = (source == "crud").then_some("routes");
        hooks.push(hook(source, event, Handler::Log(LogConfig {})));
    }
    hooks.push(hook(
        "crud",
        Some("consumers"),
        Handler::Webhook(webhook.clone()),
    ));
    hooks.push(hook(
        "crud",
        Some("consumers:create"),
        Handler::Log(LogConfig {}),
    ));
    hooks.push(hook("crud", None, Handler::Log(LogConfig {})));
    let snapshot = Snapshot::new(hooks, Catalogue::builtin());

    let match_ns = measure(|| {
        let name = EventName::of(black_box(&event));
        let matched = snapshot
            .hooks_of(&event.source)
            .iter()
            .filter(|h| h.enabled)
            .filter_map(|h| name.delivered_as(h))
            .count();
        black_box(matched);
    });
    report("match (200 hooks, 3 matching)", match_ns);

    let kong = Handler::Webhook(webhook.clone());
    let delivery_id = Uuid::new_v4().to_string();
    let webhook_ns = measure(|| {
        let data = webhook_data(black_box(&event.data), "consumers", "crud");
        let mut request = webhook_request(&webhook, &data);
        sign(
            &mut request,
            kong.signing().unwrap(),
            &delivery_id,
            1_795_400_000,
        );
        black_box(request);
    });
    report("webhook: body + HMAC-SHA1 signature (kong)", webhook_ns);

    let standard_config = WebhookConfig {
        secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        signature: SignatureScheme::Standard,
        ..webhook.clone()
    };
    let standard = Handler::Webhook(standard_config.clone());
    let standard_ns = measure(|| {
        let data = webhook_data(black_box(&event.data), "consumers", "crud");
        let mut request = webhook_request(&standard_config, &data);
        sign(
            &mut request,
            standard.signing().unwrap(),
            &delivery_id,
            1_795_400_000,
        );
        black_box(request);
    });
    report(
        "webhook: body + HMAC-SHA256 signature (standard)",
        standard_ns,
    );

    // While a rotation is in its grace period, two secrets sign.
    let rotating = Handler::Webhook(WebhookConfig {
        previous_secret: Some(PreviousSecret {
            secret: "whsec_c2Vjb25kIGtleSBvZiB0d2VudHktZm91ciBi".into(),
            expires_at: i64::MAX,
        }),
        ..standard_config.clone()
    });
    let rotating_ns = measure(|| {
        let data = webhook_data(black_box(&event.data), "consumers", "crud");
        let mut request = webhook_request(&standard_config, &data);
        sign(
            &mut request,
            rotating.signing().unwrap(),
            &delivery_id,
            1_795_400_000,
        );
        black_box(request);
    });
    report(
        "webhook: body + 2 signatures (standard, rotating)",
        rotating_ns,
    );

    let custom = WebhookCustomConfig {
        url: "https://example.com/custom".into(),
        method: HttpMethod::POST,
        payload: Some(BTreeMap::from([
            (
                "text".into(),
                "Consumer {{entity.username}} {{ operation }}d".into(),
            ),
            ("id".into(), "{*entity.id*}".into()),
        ])),
        payload_format: true,
        body: None,
        body_format: true,
        headers: BTreeMap::from([("content-type".into(), "application/json".into())]),
        headers_format: false,
        secret: Some("hunter2".into()),
        ssl_verify: false,
        signature: Default::default(),
        previous_secret: None,
    };
    let plan = CustomPlan::new(&custom).unwrap();
    let limits = Limits::default();
    let custom_handler = Handler::WebhookCustom(custom.clone());
    let custom_ns = measure(|| {
        let data = webhook_data(black_box(&event.data), "consumers", "crud");
        let mut request = plan
            .request(&custom, &data, Budget::starting_now(&limits, None))
            .unwrap();
        sign(
            &mut request,
            custom_handler.signing().unwrap(),
            &delivery_id,
            1_795_400_000,
        );
        black_box(request);
    });
    report(
        "webhook-custom: render 2 templates + JSON + sign",
        custom_ns,
    );

    let key_ns = measure(|| {
        black_box(event_key(black_box(&event.data), None));
    });
    report("event key (canonical form + SHA-256)", key_ns);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let windows: Arc<dyn WindowStore> = runtime.block_on(async {
        Arc::new(
            SqliteWindowStore::new(Database::in_memory().unwrap())
                .await
                .unwrap(),
        )
    });
    let hook_id = Uuid::new_v4();
    let mut n = 0u64;
    let decide_ns = measure(|| {
        n += 1;
        let claimant = n.to_string();
        runtime.block_on(async {
            black_box(
                decide(windows.as_ref(), hook_id, Some(60), None, "k", &claimant)
                    .await
                    .unwrap(),
            );
        });
    });
    report(
        "snooze decision (SQLite in memory, conditional write)",
        decide_ns,
    );

    report(
        "=> webhook delivery overhead (match + render + sign)",
        match_ns + webhook_ns,
    );
    report("=> same, standard signature", match_ns + standard_ns);
    report(
        "=> with snooze (match + decision + render + sign)",
        match_ns + key_ns + decide_ns + webhook_ns,
    );

    let chain = LuaChain::compile(
        &[
            "return function(data, event, source, pid) data.seen = true return data end".into(),
            "return function(data) return { user = data.entity.username, op = data.operation } end"
                .into(),
        ],
        &Limits::default(),
    )
    .unwrap();
    let lambda_ns = measure(|| {
        black_box(
            chain
                .run(black_box(&event.data), "consumers", "crud", 42)
                .unwrap(),
        );
    });
    report("lambda: 2-function chain, warm", lambda_ns);
    report(
        "=> lambda delivery overhead (match + chain)",
        match_ns + lambda_ns,
    );
}
