//! Prometheus metrics: request counts and latency per route (and the
//! embedded relay's counters), rendered in the text exposition format at
//! `GET /metrics` on a listener of their own (`--prometheus-enable`,
//! `--prometheus-address`, default `127.0.0.1:2112`), never on the API's:
//! route names, request rates and relay load are no one else's business.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((method.to_owned(), route.to_owned(), status)).or_default() += 1;
        }
        if let Ok(mut m) = self.latency.lock() {
            let h = m.entry((method.to_owned(), route.to_owned())).or_default();
            let secs = elapsed.as_secs_f64();
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP coderd_api_requests_total HTTP requests by method, route and status.\n",
        );
        out.push_str("# TYPE coderd_api_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((method, route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "coderd_api_requests_total{{method=\"{method}\",route=\"{route}\",code=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP coderd_api_request_latency_seconds HTTP request latency.\n");
        out.push_str("# TYPE coderd_api_request_latency_seconds histogram\n");
        if let Ok(m) = self.latency.lock() {
            for ((method, route), h) in m.iter() {
                let labels = format!("method=\"{method}\",route=\"{route}\"");
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "coderd_api_request_latency_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "coderd_api_request_latency_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    h.count
                );
                let _ =
                    writeln!(out, "coderd_api_request_latency_seconds_sum{{{labels}}} {}", h.sum);
                let _ = writeln!(
                    out,
                    "coderd_api_request_latency_seconds_count{{{labels}}} {}",
                    h.count
                );
            }
        }
        out
    }
}

#[derive(Clone)]
struct Scrape {
    metrics: Arc<Metrics>,
    relay: Option<derp::Server>,
}

async fn scrape(State(s): State<Scrape>) -> impl IntoResponse {
    let mut body = s.metrics.render();
    if let Some(relay) = &s.relay {
        body.push_str(&relay.stats().to_prometheus());
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    relay: Option<derp::Server>,
) -> std::io::Result<()> {
    let app = Router::new().route("/metrics", get(scrape)).with_state(Scrape { metrics, relay });
    axum::serve(listener, app).await
}
