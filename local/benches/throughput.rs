//! End-to-end throughput of the local server (spec §9): `POST /events` from 32 concurrent clients,
//! ~300-byte events, one webhook hook, delivered to a loopback sink answering 200; next to a raw
//! reqwest client posting to the same sink at the same concurrency.
//!
//! Run: `cargo bench -p event-hooks-local --bench throughput` (`BENCH_EVENTS=n` to change the
//! count, default 20000; `BENCH_WORKERS=n` for the consumers per queue, default 16 as the
//! server). Reports requests/s for both, checks every event was delivered exactly
//! once, and prints `POST /events` latency percentiles (each 202 comes after the event is on disk).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use event_hooks::deliver::retry::RetrySchedule;
use event_hooks::lua::LuaPolicy;
use event_hooks_local::{LogFormat, Service, Settings};
use serde_json::json;
use tokio::sync::watch;

const CLIENTS: usize = 32;

#[derive(Default)]
struct Sink {
    received: AtomicU64,
    delivery_ids: Mutex<HashSet<String>>,
    duplicates: AtomicU64,
}

impl Sink {
    fn reset(&self) {
        self.received.store(0, Ordering::Relaxed);
        self.duplicates.store(0, Ordering::Relaxed);
        self.delivery_ids.lock().unwrap().clear();
    }
}

/// Waits until the sink has `count` requests (10 minutes at most).
async fn wait_for(sink: &Sink, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while sink.received.load(Ordering::Relaxed) < count as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn sink_handler(State(sink): State<Arc<Sink>>, headers: HeaderMap) -> &'static str {
    sink.received.fetch_add(1, Ordering::Relaxed);
    if let Some(id) = headers.get("x-event-hook-delivery") {
        let id = id.to_str().unwrap_or_default().to_string();
        if !sink.delivery_ids.lock().unwrap().insert(id) {
            sink.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }
    "ok"
}

async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    address
}

fn event_body(i: usize) -> serde_json::Value {
    // ~300 bytes once serialized.
    json!({"source":"crud","event":"consumers","data":{"operation":"create","entity":{
        "id": format!("3b1f0c2e-8d6a-4e0f-9a57-{i:012}"), "username": format!("user-{i}"),
        "custom_id": "c-1234", "created_at": 1795400000, "tags": ["gold", "eu", "beta"]},
        "old_entity": null, "schema": "consumers"}})
}

/// Runs `total` POSTs from `CLIENTS` tasks; returns (elapsed, sorted latencies).
async fn load(
    client: &reqwest::Client,
    url: &str,
    total: usize,
    expect: u16,
) -> (Duration, Vec<Duration>) {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, next) = (client.clone(), url.to_string(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= total {
                    break;
                }
                let sent = Instant::now();
                let response = client.post(&url).json(&event_body(i)).send().await.unwrap();
                assert_eq!(response.status().as_u16(), expect);
                let _ = response.bytes().await;
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    latencies.sort();
    (started.elapsed(), latencies)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

fn main() {
    let total: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(total));
}

async fn run(total: usize) {
    let sink = Arc::new(Sink::default());
    let sink_address = serve(
        axum::Router::new()
            .fallback(sink_handler)
            .with_state(sink.clone()),
    )
    .await;
    let sink_url = format!("http://{sink_address}/hook");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();

    // The raw client: the ceiling for this sink at this concurrency.
    let (raw_elapsed, _) = load(&client, &sink_url, total, 200).await;
    let raw_rate = total as f64 / raw_elapsed.as_secs_f64();
    sink.reset();

    let data_dir = std::env::temp_dir().join(format!("event-hooks-bench-{}", uuid::Uuid::new_v4()));
    let settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.clone(),
        admin_token: None,
        allowed_hosts: Vec::new(),
        untrusted_lua: LuaPolicy::default(),
        retry_schedule: RetrySchedule::default(),
        ssrf_guard: false,
        connect_timeout: 5.0,
        request_timeout: 10.0,
        workers: std::env::var("BENCH_WORKERS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(16),
        pause_after: 86400.0,
        log_format: LogFormat::Text,
    };
    let service = Service::open(&settings).await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let workers = service.start_workers(&stopped);
    let address = serve(service.router.clone()).await;
    let base = format!("http://{address}");
    let created = client
        .post(format!("{base}/event-hooks"))
        .json(
            &json!({"source":"crud","event":"consumers","handler":"webhook",
                      "config":{"url":sink_url,"secret":"hunter2"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    // A new webhook hook is pinged; let that pass before counting.
    wait_for(&sink, 1).await;
    sink.reset();

    let started = Instant::now();
    let (post_elapsed, latencies) = load(&client, &format!("{base}/events"), total, 202).await;
    wait_for(&sink, total).await;
    let delivered_elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = sink.received.load(Ordering::Relaxed);
    let duplicates = sink.duplicates.load(Ordering::Relaxed);
    let e2e_rate = delivered as f64 / delivered_elapsed.as_secs_f64();

    // Dispatch alone: the events already on the queue, the dispatcher started on them.
    let _ = stop.send(true);
    for worker in workers {
        let _ = worker.await;
    }
    sink.reset();
    load(&client, &format!("{base}/events"), total, 202).await;
    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let workers = service.start_workers(&stopped);
    wait_for(&sink, total).await;
    let dispatch_rate = total as f64 / started.elapsed().as_secs_f64();
    let dispatch_duplicates = sink.duplicates.load(Ordering::Relaxed);

    println!(
        "events: {total}, clients: {CLIENTS}, ~300-byte events, one webhook hook, loopback sink"
    );
    println!("raw reqwest client -> sink:            {raw_rate:>8.0} requests/s");
    println!(
        "POST /events accepted (202, fsynced):  {:>8.0} events/s   p50 {:?}  p99 {:?}",
        total as f64 / post_elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    println!("end to end, POST /events -> sink:      {e2e_rate:>8.0} deliveries/s");
    println!(
        "ratio end-to-end / raw:                {:>8.2}",
        e2e_rate / raw_rate
    );
    println!("dispatch alone (events queued first):  {dispatch_rate:>8.0} deliveries/s");
    println!(
        "ratio dispatch alone / raw:            {:>8.2}",
        dispatch_rate / raw_rate
    );
    println!(
        "delivered {delivered} of {total}, duplicates {duplicates} (dispatch alone: {dispatch_duplicates})"
    );
    let _ = stop.send(true);
    for worker in workers {
        let _ = worker.await;
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    assert_eq!(delivered, total as u64, "every event delivered");
    assert_eq!(duplicates, 0, "exactly once to a healthy sink");
    assert_eq!(dispatch_duplicates, 0, "exactly once to a healthy sink");
}
