//! Prometheus text exposition of request latency, request counts and served versions.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histogram's buckets.
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Labels of one request: model, version, API (`v1_predict`, `v2_infer`, …).
pub type Key = (String, String, &'static str);

/// Counters and histograms, behind one lock (a request takes it once).
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    latency: BTreeMap<Key, Histogram>,
    requests: BTreeMap<(String, String, u16), u64>,
}

impl Metrics {
    /// Record one request.
    pub fn observe(&self, key: Key, code: u16, seconds: f64) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *m.requests
            .entry((key.0.clone(), key.1.clone(), code))
            .or_default() += 1;
        let h = m.latency.entry(key).or_default();
        h.count += 1;
        h.sum += seconds;
        for (c, le) in h.counts.iter_mut().zip(BUCKETS) {
            if seconds <= le {
                *c += 1;
            }
        }
    }

    /// The exposition text; `versions` is (model, newest loaded version).
    pub fn render(&self, versions: &[(String, Option<u64>)]) -> String {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        out.push_str("# HELP tusk_request_duration_seconds Time from request to response.\n");
        out.push_str("# TYPE tusk_request_duration_seconds histogram\n");
        for ((model, version, api), h) in &m.latency {
            let l = format!(
                "model=\"{}\",version=\"{}\",api=\"{api}\"",
                escape(model),
                escape(version)
            );
            for (c, le) in h.counts.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "tusk_request_duration_seconds_bucket{{{l},le=\"{le}\"}} {c}"
                );
            }
            let _ = writeln!(
                out,
                "tusk_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "tusk_request_duration_seconds_sum{{{l}}} {}", h.sum);
            let _ = writeln!(
                out,
                "tusk_request_duration_seconds_count{{{l}}} {}",
                h.count
            );
        }
        out.push_str("# HELP tusk_requests_total Requests answered, by status code.\n");
        out.push_str("# TYPE tusk_requests_total counter\n");
        for ((model, version, code), n) in &m.requests {
            let _ = writeln!(
                out,
                "tusk_requests_total{{model=\"{}\",version=\"{}\",code=\"{code}\"}} {n}",
                escape(model),
                escape(version)
            );
        }
        out.push_str(
            "# HELP tusk_model_version The newest loaded version of each model (-1: none).\n",
        );
        out.push_str("# TYPE tusk_model_version gauge\n");
        for (model, v) in versions {
            let v = v.map_or(-1, |v| v as i64);
            let _ = writeln!(out, "tusk_model_version{{model=\"{}\"}} {v}", escape(model));
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
