//! A study on any storage, as create-only files (no database): several `tusk tune` processes,
//! on one machine or many, can share one; a killed one is resumed by running it again.
//!
//! ```text
//! STUDY/study.json                           what is searched, how, for which command (create-only)
//! STUDY/journal/NNNNNN/claim-A.json          attempt A of trial N: who runs it (create-only: one winner)
//! STUDY/journal/NNNNNN/params.json           its parameters (create-only: every attempt runs the same)
//! STUDY/journal/NNNNNN/report-A-SSSSSS.json  the metric at step (epoch) S of attempt A (create-only)
//! STUDY/journal/NNNNNN/heartbeat-A.json      rewritten every few seconds while attempt A runs
//! STUDY/journal/NNNNNN/result.json           complete, pruned or failed, and its value (create-only)
//! STUDY/models/NNNNNN                        the trial's model store (`tusk train` trials)
//! STUDY/best                                 the best trial's model version and params
//! ```
//!
//! A trial is taken by creating its next claim file: of two processes only one can. A trial
//! whose newest attempt has no result and whose owner is gone (a dead process on this machine,
//! or no heartbeat for [`STALE`] from another) is taken over by a new attempt with the same
//! parameters.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use tusk_storage::{Location, Storage};

use crate::sampler::{Observation, TrialState};
use crate::space::Params;

/// An attempt whose owner on another machine has not beaten its heart for this long is
/// abandoned.
pub const STALE: Duration = Duration::from_secs(60);

/// How often a running attempt's heartbeat is rewritten.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// Errors of a study: storage, or a study file that does not read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Storage.
    #[error(transparent)]
    Storage(#[from] tusk_storage::Error),
    /// A file of the study that is not what tusk wrote.
    #[error("{file}: {message}")]
    Corrupt {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The study exists with other settings.
    #[error("{0}")]
    Mismatch(String),
}

/// Results of study operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Whether a higher or lower metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Higher is better (HR@K, NDCG@K, AUC).
    Max,
    /// Lower is better (logloss).
    Min,
}

impl Mode {
    /// `value` as a loss (lower is better).
    pub fn loss(self, value: f64) -> f64 {
        match self {
            Mode::Max => -value,
            Mode::Min => value,
        }
    }

    /// Whether `a` is better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        self.loss(a) < self.loss(b)
    }
}

/// What a study searches and how (`study.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// The space, canonical ([`crate::space::Space::to_json`]).
    pub space: Json,
    /// The metric a trial reports.
    pub metric: String,
    /// Which way is better.
    pub mode: Mode,
    /// `random` or `tpe`.
    pub sampler: String,
    /// `none`, `asha` or `median`.
    pub pruner: String,
    /// The sampler's seed.
    pub seed: u64,
    /// The command each trial runs (before its `--set`s).
    pub command: Vec<String>,
}

/// Who runs an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Host name.
    pub host: String,
    /// The kernel's boot id (a process id means something only within one boot).
    pub boot: String,
    /// Process id.
    pub pid: u32,
    /// The process's start time (clock ticks after boot), so a reused pid is not mistaken
    /// for it.
    pub start: u64,
}

fn read_file(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Start time (field 22 of `/proc/PID/stat`) of process `pid`, if it exists.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

impl Owner {
    /// This process.
    pub fn me() -> Owner {
        let pid = std::process::id();
        Owner {
            host: read_file("/proc/sys/kernel/hostname"),
            boot: read_file("/proc/sys/kernel/random/boot_id"),
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// Whether this owner is known to be gone: on this machine (same boot), its process no
    /// longer exists (or the pid is someone else's now). `None` for another machine.
    pub fn gone_here(&self) -> Option<bool> {
        let me = Owner::me();
        if self.host != me.host || self.boot != me.boot {
            return None;
        }
        Some(start_time(self.pid) != Some(self.start))
    }
}

/// One step's report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// 1-based step (epoch).
    pub step: u32,
    /// The metric, as reported.
    pub value: f64,
}

/// How a trial ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// `complete`, `pruned` or `failed`.
    pub state: String,
    /// The best reported value (none for a failure before any report).
    pub value: Option<f64>,
    /// The step it was reported at.
    pub step: Option<u32>,
    /// Steps reported.
    pub steps: u32,
    /// The attempt that ended it.
    pub attempt: u32,
    /// Why it failed, for failures.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A trial as the journal tells it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trial {
    /// Its number (0-based).
    pub number: u64,
    /// Claims: attempt number → owner.
    pub claims: BTreeMap<u32, Owner>,
    /// Its parameters, once written.
    pub params: Option<Params>,
    /// Reports by step (a later attempt's report of a step replaces an earlier one's).
    pub reports: BTreeMap<u32, f64>,
    /// Heartbeats: attempt → seconds since the epoch.
    pub heartbeats: BTreeMap<u32, u64>,
    /// How it ended, if it has.
    pub outcome: Option<Outcome>,
}

impl Trial {
    /// The newest attempt (0 when never claimed).
    pub fn attempt(&self) -> u32 {
        self.claims.keys().next_back().copied().unwrap_or(0)
    }

    /// Whether it is claimed, unfinished and its owner is gone (it may be taken over).
    pub fn abandoned(&self, now: u64) -> bool {
        if self.outcome.is_some() {
            return false;
        }
        let Some((a, owner)) = self.claims.iter().next_back() else {
            return false;
        };
        match owner.gone_here() {
            Some(gone) => gone,
            None => {
                let beat = self.heartbeats.get(a).copied().unwrap_or(0);
                now.saturating_sub(beat) > STALE.as_secs()
            }
        }
    }

    /// The reports in step order.
    pub fn curve(&self) -> Vec<(u32, f64)> {
        self.reports.iter().map(|(s, v)| (*s, *v)).collect()
    }

    /// The trial for a sampler or pruner (values as losses).
    pub fn observation(&self, mode: Mode) -> Option<Observation> {
        let params = self.params.clone()?;
        let (state, value) = match &self.outcome {
            Some(o) => (
                match o.state.as_str() {
                    "complete" => TrialState::Complete,
                    "pruned" => TrialState::Pruned,
                    _ => TrialState::Failed,
                },
                o.value.map(|v| mode.loss(v)),
            ),
            None => (TrialState::Running, None),
        };
        Some(Observation {
            params,
            state,
            value,
            intermediate: self
                .reports
                .iter()
                .map(|(s, v)| (*s, mode.loss(*v)))
                .collect(),
        })
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A study at a URL.
pub struct Study {
    root: Location,
    /// Its settings.
    pub spec: Spec,
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).unwrap_or_default();
    b.push(b'\n');
    b
}

fn parse<T: for<'a> Deserialize<'a>>(loc: &Location, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        file: loc.url(),
        message: format!("not what tusk tune writes ({e})"),
    })
}

impl Study {
    /// Open the study at `url`, creating it with `spec` if it does not exist; an existing one
    /// must have been created with the same space, metric, mode, sampler, pruner, seed and
    /// command (else the error says which differs).
    pub fn open_or_create(storage: &Storage, url: &str, spec: Spec) -> Result<Study> {
        let root = storage.open(url)?;
        let file = root.join("study.json");
        match file.write_new(to_json(&spec)) {
            Ok(()) => {}
            Err(tusk_storage::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let stored: Spec = parse(&file, &file.read()?)?;
        let differs: Vec<&str> = [
            ("space", stored.space != spec.space),
            ("metric", stored.metric != spec.metric),
            ("mode", stored.mode != spec.mode),
            ("sampler", stored.sampler != spec.sampler),
            ("pruner", stored.pruner != spec.pruner),
            ("seed", stored.seed != spec.seed),
            ("command", stored.command != spec.command),
        ]
        .into_iter()
        .filter_map(|(k, d)| d.then_some(k))
        .collect();
        if !differs.is_empty() {
            return Err(Error::Mismatch(format!(
                "{} was created with another {} (see {}): resume it with the same settings, or \
                 use another --study",
                root.url(),
                differs.join(", "),
                file.url()
            )));
        }
        Ok(Study { root, spec })
    }

    /// Open an existing study (for `status`).
    pub fn open(storage: &Storage, url: &str) -> Result<Study> {
        let root = storage.open(url)?;
        let file = root.join("study.json");
        let spec = parse(&file, &file.read()?)?;
        Ok(Study { root, spec })
    }

    /// The study's URL.
    pub fn url(&self) -> String {
        self.root.url()
    }

    /// Where trial `n`'s model goes.
    pub fn model_url(&self, n: u64) -> String {
        self.root.join(&format!("models/{n:06}")).url()
    }

    /// Where the best trial is promoted to.
    pub fn best(&self) -> Location {
        self.root.join("best")
    }

    fn dir(&self, n: u64) -> Location {
        self.root.join(&format!("journal/{n:06}"))
    }

    /// Every trial the journal knows, by number.
    pub fn trials(&self) -> Result<BTreeMap<u64, Trial>> {
        let journal = self.root.join("journal");
        let mut out: BTreeMap<u64, Trial> = BTreeMap::new();
        for e in journal.list()? {
            let rel = e.location.relative_to(&journal);
            let Some((num, name)) = rel.split_once('/') else {
                continue;
            };
            let Ok(n) = num.parse::<u64>() else { continue };
            let t = out.entry(n).or_insert_with(|| Trial {
                number: n,
                ..Default::default()
            });
            let stem = name.strip_suffix(".json").unwrap_or(name);
            let read = || -> Result<Vec<u8>> { Ok(e.location.read()?.to_vec()) };
            if let Some(a) = stem.strip_prefix("claim-") {
                if let Ok(a) = a.parse() {
                    t.claims.insert(a, parse(&e.location, &read()?)?);
                }
            } else if stem == "params" {
                t.params = Some(parse(&e.location, &read()?)?);
            } else if stem.starts_with("report-") {
                // Listed in path order: a later attempt's report of a step replaces an
                // earlier one's.
                let r: Report = parse(&e.location, &read()?)?;
                t.reports.insert(r.step, r.value);
            } else if let Some(a) = stem.strip_prefix("heartbeat-") {
                if let Ok(a) = a.parse() {
                    let v: Json = parse(&e.location, &read()?)?;
                    t.heartbeats.insert(a, v["time"].as_u64().unwrap_or(0));
                }
            } else if stem == "result" {
                t.outcome = Some(parse(&e.location, &read()?)?);
            }
        }
        Ok(out)
    }

    /// Claim attempt `attempt` of trial `n` for this process: `false` if another process
    /// was first.
    pub fn claim(&self, n: u64, attempt: u32) -> Result<bool> {
        let me = Owner::me();
        let file = self.dir(n).join(&format!("claim-{attempt}.json"));
        match file.write_new(to_json(&me)) {
            Ok(()) => Ok(true),
            Err(tusk_storage::Error::AlreadyExists { .. }) => {
                // A commit whose answer was lost (a NameNode failing over) reads as existing:
                // it is ours if it names us.
                let owner: Owner = parse(&file, &file.read()?)?;
                Ok(owner == me)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Trial `n`'s parameters: `params` if none were written yet, else the ones written.
    pub fn set_params(&self, n: u64, params: &Params) -> Result<Params> {
        let file = self.dir(n).join("params.json");
        match file.write_new(to_json(params)) {
            Ok(()) => Ok(params.clone()),
            Err(tusk_storage::Error::AlreadyExists { .. }) => parse(&file, &file.read()?),
            Err(e) => Err(e.into()),
        }
    }

    /// Record the metric of `step` for attempt `attempt` of trial `n`.
    pub fn report(&self, n: u64, attempt: u32, step: u32, value: f64) -> Result<()> {
        let file = self
            .dir(n)
            .join(&format!("report-{attempt}-{step:06}.json"));
        match file.write_new(to_json(&Report { step, value })) {
            Ok(()) | Err(tusk_storage::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Rewrite attempt `attempt`'s heartbeat.
    pub fn heartbeat(&self, n: u64, attempt: u32) -> Result<()> {
        let file = self.dir(n).join(&format!("heartbeat-{attempt}.json"));
        file.write(to_json(&json!({ "time": now() })))?;
        Ok(())
    }

    /// Record how trial `n` ended (the first record stands).
    pub fn finish(&self, n: u64, outcome: &Outcome) -> Result<()> {
        let file = self.dir(n).join("result.json");
        match file.write_new(to_json(outcome)) {
            Ok(()) | Err(tusk_storage::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
