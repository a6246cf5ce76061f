//! Per-hook `max_rate` on the local server (spec §8 "Beyond"): a receiver throttled at the hook's
//! `max_rate` gets its deliveries at that rate, none dropped.
//!
//! Run: `cargo bench -p event-hooks-local --bench max_rate` (`BENCH_RATE` deliveries/s, default
//! 20; `BENCH_EVENTS`, default 400). All events are posted at once by 8 clients; the sink
//! records when each delivery arrives. Reports the achieved rate (deliveries after the first,
//! over the time from the first to the last) and its deviation from the setting, and fails when
//! an event is missing or the deviation is over 10%.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use event_hooks_local::{Service, Settings};
use serde_json::json;
use tokio::sync::watch;

const CLIENTS: usize = 8;

#[derive(Default)]
struct Sink {
    arrivals: Mutex<Vec<Instant>>,
}

async fn sink_handler(State(sink): State<Arc<Sink>>) -> &'static str {
    sink.arrivals.lock().unwrap().push(Instant::now());
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

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Waits until the sink has `count` arrivals or `timeout` passed; returns how many it has.
async fn wait_for(sink: &Sink, count: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let got = sink.arrivals.lock().unwrap().len();
        if got >= count || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn main() {
    let rate: f64 = env_or("BENCH_RATE", 20.0);
    let total: usize = env_or("BENCH_EVENTS", 400);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(rate, total));
}

async fn run(rate: f64, total: usize) {
    let sink = Arc::new(Sink::default());
    let sink_address = serve(
        axum::Router::new()
            .fallback(sink_handler)
            .with_state(sink.clone()),
    )
    .await;
    let data_dir =
        std::env::temp_dir().join(format!("event-hooks-max-rate-{}", uuid::Uuid::new_v4()));
    let settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.clone(),
        ..Settings::defaults()
    };
    let service = Service::open(&settings).await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let workers = service.start_workers(&stopped);
    let base = format!("http://{}", serve(service.router.clone()).await);
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{base}/event-hooks"))
        .json(
            &json!({"source":"crud","event":"consumers","handler":"webhook",
                      "max_rate": rate,
                      "config":{"url": format!("http://{sink_address}/hook")}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    // A new webhook hook is pinged (at its rate too); let that pass before counting.
    wait_for(&sink, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs_f64(1.0 / rate)).await;
    sink.arrivals.lock().unwrap().clear();

    let posted = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, next) = (client.clone(), format!("{base}/events"), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= total {
                    break;
                }
                let event = json!({"source":"crud","event":"consumers",
                                   "data":{"operation":"create","entity":{"id": i}}});
                let response = client.post(&url).json(&event).send().await.unwrap();
                assert_eq!(response.status().as_u16(), 202);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let accepted = posted.elapsed();
    let budget = Duration::from_secs_f64(total as f64 / rate * 2.0 + 30.0);
    let delivered = wait_for(&sink, total, budget).await;
    let arrivals = sink.arrivals.lock().unwrap().clone();
    let _ = stop.send(true);
    for worker in workers {
        let _ = worker.await;
    }
    let _ = std::fs::remove_dir_all(&data_dir);

    let span = (arrivals[arrivals.len() - 1] - arrivals[0]).as_secs_f64();
    let achieved = (arrivals.len() - 1) as f64 / span;
    let deviation = (achieved - rate) / rate;
    let fastest_second = arrivals
        .iter()
        .enumerate()
        .map(|(i, start)| {
            arrivals[i..]
                .iter()
                .take_while(|t| **t - *start < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    println!("max_rate {rate}/s, {total} events posted by {CLIENTS} clients in {accepted:.2?}");
    println!("delivered {delivered} of {total} in {span:.2} s (first to last)");
    println!(
        "achieved {achieved:.2} deliveries/s ({:+.1}% of the setting); busiest 1-s window: {fastest_second}",
        deviation * 100.0
    );
    assert_eq!(delivered, total, "every event delivered, none dropped");
    assert!(
        deviation.abs() <= 0.10,
        "achieved rate off by more than 10%"
    );
}
