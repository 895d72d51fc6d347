//! Ask tusk's samplers for parameters over stdin/stdout, one JSON request a line, so that
//! benchmarks (`bench/tune_quality.py`) can drive them without the CLI.
//!
//! ```text
//! cargo run --release -p tusk-tune --example suggest
//! {"space": "x = { uniform = [0, 1] }", "sampler": "tpe", "seed": 7, "trial": 0, "history": []}
//! {"x":0.6168241815693468}
//! ```
//!
//! Each request line holds the space file's text, the sampler (`random` or `tpe`), the seed,
//! the trial number and the history so far (`[{"params": {…}, "state": "complete",
//! "value": 0.3}, …]`, `intermediate` optional) and optionally `"multivariate": true`; each answer line is the trial's parameters
//! as a JSON object, or `{"error": "…"}`. The process serves requests until stdin closes.

use std::io::{BufRead, Write};

use serde::Deserialize;
use tusk_tune::sampler::{Observation, Sampler, SamplerKind, TpeSettings};
use tusk_tune::space::Space;

#[derive(Deserialize)]
struct Request {
    space: String,
    sampler: String,
    seed: u64,
    trial: u64,
    #[serde(default)]
    history: Vec<Observation>,
    /// TPE over all parameters jointly (`TpeSettings::multivariate`).
    #[serde(default)]
    multivariate: bool,
}

fn answer(line: &str, cache: &mut Option<(String, Space)>) -> Result<serde_json::Value, String> {
    let req: Request = serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))?;
    let space = match cache {
        Some((text, space)) if *text == req.space => space.clone(),
        _ => {
            let space = Space::parse(&req.space, "space")?;
            *cache = Some((req.space.clone(), space.clone()));
            space
        }
    };
    let kind: SamplerKind = req.sampler.parse()?;
    let sampler = Sampler::new(kind, req.seed).with_tpe_settings(TpeSettings {
        multivariate: req.multivariate,
        ..TpeSettings::default()
    });
    let params = sampler.sample(&space, &req.history, req.trial);
    serde_json::to_value(&params).map_err(|e| e.to_string())
}

fn main() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut cache = None;
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let reply = answer(&line, &mut cache).unwrap_or_else(|e| serde_json::json!({ "error": e }));
        if writeln!(out, "{reply}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
}
