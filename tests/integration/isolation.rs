//! Isolation between hooks (spec §8, README → Delivery): one hook's trouble never reaches another
//! hook, through the real local server. Each case puts two hooks on the same events: hook A's
//! receiver misbehaves (hangs, answers 410, is rate limited, fails until its hook is paused),
//! hook B's is healthy. Nothing here is timed: each case waits for a condition that the old
//! shared pool of attempt slots could not reach within its bound (B served while A hangs), or
//! counts what must not happen (requests to A after its 410, queue sends per throttled delivery).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use event_hooks_tests::receiver::{Receiver, Reply};
use event_hooks_tests::server::LocalServer;
use serde_json::{json, Value};

/// Bound of every wait for a condition.
const WAIT: Duration = Duration::from_secs(15);

/// Creates `hook`; answers its id.
async fn create(server: &LocalServer, hook: Value) -> String {
    server.create_hook(&hook).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A webhook on crud `consumers` events to `url`, with `extra` fields.
fn webhook(url: String, extra: Value) -> Value {
    let mut hook = json!({
        "source": "crud", "event": "consumers", "handler": "webhook",
        "config": {"url": url},
    });
    for (key, value) in extra.as_object().unwrap() {
        hook[key] = value.clone();
    }
    hook
}

/// Posts `count` consumer events, all at once.
async fn emit(server: &LocalServer, count: usize) {
    let client = reqwest::Client::new();
    let mut posts = tokio::task::JoinSet::new();
    for n in 0..count {
        let client = client.clone();
        let url = server.url("/events");
        posts.spawn(async move {
            let event = json!({"source":"crud","event":"consumers",
                "data":{"operation":"create","entity":{"username":format!("user-{n}")}}});
            let response = client.post(url).json(&event).send().await.unwrap();
            assert_eq!(response.status(), 202);
        });
    }
    while let Some(posted) = posts.join_next().await {
        posted.unwrap();
    }
}

async fn get(server: &LocalServer, path: &str) -> Value {
    reqwest::get(server.url(path))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The dispatcher's counters (`GET /status`).
async fn counts(server: &LocalServer) -> Value {
    get(server, "/status").await["dispatch"].clone()
}

/// Waits until `check` holds for the hook's stored state (panics after [`WAIT`]).
async fn hook_until(server: &LocalServer, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let hook = get(server, &format!("/event-hooks/{id}")).await;
        if check(&hook) {
            return hook;
        }
        assert!(Instant::now() < deadline, "hook never got there: {hook}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Requests per delivery id.
fn per_delivery(receiver: &Receiver) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for request in receiver.requests() {
        *counts
            .entry(request.headers["x-event-hook-delivery"].clone())
            .or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_holds_only_its_own_slots() {
    // A's requests may hang for 25 s: with one pool of slots for every hook, the first events'
    // attempts to A took them all and B waited those 25 s.
    let server = LocalServer::start(&["--request-timeout", "25"]);
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    a.hold();
    let a_id = create(&server, webhook(a.url("/a"), json!({}))).await;
    create(&server, webhook(b.url("/b"), json!({}))).await;

    emit(&server, 60).await;
    let served = b.wait_for("/b", 60, WAIT).await;

    let ids: std::collections::BTreeSet<_> = served
        .iter()
        .map(|r| r.headers["x-event-hook-delivery"].clone())
        .collect();
    assert_eq!(ids.len(), 60, "one delivery per event for B");
    // A holds at most its lane's default four slots, each delivery id once.
    assert!(
        a.most_at_once() <= 4,
        "A had {} requests at once",
        a.most_at_once()
    );
    assert_eq!(a.most_at_once_per_delivery(), 1);
    // A's first attempts, made inside the events' processing, were cut at the inline budget and
    // sent again from the deliveries queue as the next attempt; then A was known slow.
    let deadline = Instant::now() + WAIT;
    let cut = loop {
        let listed = get(&server, &format!("/event-hooks/{a_id}/deliveries?size=100")).await;
        let cut = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["attempts"][0]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("inside an event's processing"))
            })
            .count();
        if cut > 0 {
            break cut;
        }
        assert!(Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(cut <= 4, "{cut} attempts cut: more than the lane holds");
    assert_eq!(
        get(&server, &format!("/event-hooks/{a_id}")).await["lane"]["slow"],
        true
    );
    // The attempts that found A's lane full went back on the deliveries queue.
    let deadline = Instant::now() + WAIT;
    while counts(&server).await["deferred"].as_u64().unwrap() == 0 {
        assert!(Instant::now() < deadline, "{}", counts(&server).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.release();
    assert!(server.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hooks_own_max_in_flight_is_its_lane() {
    let server = LocalServer::start(&["--request-timeout", "25"]);
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    a.hold();
    let id = create(&server, webhook(a.url("/a"), json!({"max_in_flight": 1}))).await;
    create(&server, webhook(b.url("/b"), json!({}))).await;
    assert_eq!(
        get(&server, &format!("/event-hooks/{id}")).await["max_in_flight"],
        1
    );

    emit(&server, 20).await;
    b.wait_for("/b", 20, WAIT).await;
    a.wait_for("/a", 1, WAIT).await;
    assert_eq!(a.most_at_once(), 1);
    a.release();
    assert!(server.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_stops_every_attempt_not_yet_started() {
    let server = LocalServer::start(&[]);
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    a.script(std::iter::repeat_n(Reply::Status(410), 100));
    let id = create(&server, webhook(a.url("/a"), json!({}))).await;
    create(&server, webhook(b.url("/b"), json!({}))).await;

    emit(&server, 40).await;
    b.wait_for("/b", 40, WAIT).await;
    let hook = hook_until(&server, &id, |h| h["enabled"] == false).await;
    assert_eq!(
        hook["disabled_reason"]["reason"],
        "target answered 410 Gone"
    );
    // Only the attempts already running when the first 410 came: at most the lane's four. The
    // rest were dead-lettered unsent with the reason, or logged as not sent once the snapshot
    // showed the hook disabled.
    let settled = |counts: &Value| {
        counts["dead_lettered"].as_u64().unwrap() + counts["not_sent"].as_u64().unwrap()
    };
    let deadline = Instant::now() + WAIT;
    while settled(&counts(&server).await) + (a.requests().len() as u64) < 40 {
        assert!(Instant::now() < deadline, "{}", counts(&server).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        a.requests().len() <= 4,
        "{} requests reached A",
        a.requests().len()
    );
    assert!(server.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_delivery_goes_back_on_the_queue_once() {
    let server = LocalServer::start(&[]);
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    create(&server, webhook(a.url("/a"), json!({"max_rate": 5}))).await;
    create(&server, webhook(b.url("/b"), json!({}))).await;

    emit(&server, 20).await;
    b.wait_for("/b", 20, WAIT).await;
    a.wait_for("/a", 20, WAIT).await;

    let per_delivery = per_delivery(&a);
    assert_eq!(per_delivery.len(), 20);
    assert!(per_delivery.values().all(|n| *n == 1), "{per_delivery:?}");
    // Each delivery over the rate waited for its reserved slot on the queue, once (the hook's
    // creation ping took the first slot).
    let counts = counts(&server).await;
    let sent_back = counts["rate_limited"].as_u64().unwrap();
    assert!(sent_back <= 20, "{counts}");
    assert!(
        sent_back >= 10,
        "most deliveries were over the rate: {counts}"
    );
    assert!(server.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_hook_logs_what_it_did_not_send_and_a_replay_sends_it() {
    let server = LocalServer::start(&[
        "--pause-after",
        "1",
        "--retry-schedule",
        "300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms",
    ]);
    let a = Receiver::start().await;
    a.script(std::iter::repeat_n(Reply::Status(503), 100));
    let id = create(&server, webhook(a.url("/a"), json!({}))).await;
    emit(&server, 1).await;
    hook_until(&server, &id, |h| h["enabled"] == false).await;

    emit(&server, 3).await;
    let deliveries = format!("/event-hooks/{id}/deliveries?size=100");
    let deadline = Instant::now() + WAIT;
    let not_sent = loop {
        let listed = get(&server, &deliveries).await;
        let not_sent: Vec<Value> = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["status"] == "not_sent")
            .cloned()
            .collect();
        if not_sent.len() == 3 {
            break not_sent;
        }
        assert!(Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for delivery in &not_sent {
        let error = delivery["attempts"][0]["error"].as_str().unwrap();
        assert!(
            error.starts_with("not sent: the hook is paused (paused:"),
            "{error}"
        );
    }

    // Enabled again, the replay sends them, under their delivery ids.
    a.clear_script();
    let before = a.requests().len();
    let response = reqwest::Client::new()
        .patch(server.url(&format!("/event-hooks/{id}")))
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = reqwest::Client::new()
        .post(server.url(&format!("/event-hooks/{id}/deliveries/replay")))
        .json(&json!({"status": "failed"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let replayed = a.wait_for("/a", before + 3, WAIT).await;
    let sent: std::collections::BTreeSet<_> = replayed[before..]
        .iter()
        .map(|r| r.headers["x-event-hook-delivery"].clone())
        .collect();
    let logged: std::collections::BTreeSet<_> = not_sent
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(logged.is_subset(&sent), "{logged:?} not in {sent:?}");
    assert!(server.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_failures_open_the_hooks_circuit_and_get_shows_it() {
    let server = LocalServer::start(&["--retry-schedule", "100ms,100ms,100ms"]);
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    a.script(std::iter::repeat_n(Reply::Status(503), 1000));
    let id = create(&server, webhook(a.url("/a"), json!({}))).await;
    create(&server, webhook(b.url("/b"), json!({}))).await;

    emit(&server, 10).await;
    b.wait_for("/b", 10, WAIT).await;
    let hook = hook_until(&server, &id, |h| h["lane"]["circuit"] == "open").await;
    let lane = &hook["lane"];
    assert!(
        lane["consecutive_failures"].as_u64().unwrap() >= 5,
        "{lane}"
    );
    assert!(lane["open_until"].as_i64().unwrap() > 0, "{lane}");
    // While it is open, A's deliveries wait on the queue: no request reaches A.
    let seen = a.requests().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(a.requests().len(), seen);
    // B's lane is closed and was never touched by A's failures.
    let b_hooks = get(&server, "/event-hooks").await;
    let b_id = b_hooks["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] != id.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b_hook = get(&server, &format!("/event-hooks/{b_id}")).await;
    assert_eq!(b_hook["lane"]["circuit"], "closed");
    // A hook read with its lane can be written back as it is (the lane is ignored).
    let response = reqwest::Client::new()
        .put(server.url(&format!("/event-hooks/{b_id}")))
        .json(&b_hook)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let stored: Value = response.json().await.unwrap();
    assert!(stored.get("lane").is_none(), "{stored}");
    assert!(server.stop());
}
