//! Prometheus metrics: request counts and latency per route, rendered in the
//! text exposition format at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

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
