//! Which versions of which models are loaded, and the poller that keeps them current.
//!
//! Only committed versions exist for the server: it lists them through the model store, which
//! counts a version only once its manifest is written (the manifest is the commit), so a
//! half-copied version is never looked at. A new version is loaded beside the serving one and
//! swapped in under a write lock held for a map insert; a request holds an `Arc` of the
//! version it started on, so it finishes there. A version that fails to load is logged, marked,
//! and retried with exponential backoff while the previous version keeps answering.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tusk_storage::Storage;
use tusk_train::{ModelStore, Scorer};

/// Which committed versions are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The newest committed version (the previous one until the newest has loaded).
    Latest,
    /// Every committed version.
    All,
    /// These versions only.
    Specific(Vec<u64>),
}

impl std::str::FromStr for VersionPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "latest" => Ok(VersionPolicy::Latest),
            "all" => Ok(VersionPolicy::All),
            _ => {
                let list = s.strip_prefix("specific:").ok_or_else(|| {
                    format!("unknown version policy `{s}`: use latest, all or specific:3,5")
                })?;
                let vs = list
                    .split(',')
                    .map(|v| {
                        v.trim()
                            .parse::<u64>()
                            .map_err(|_| format!("`{v}` in `{s}` is not a version number"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if vs.is_empty() {
                    return Err(format!("`{s}` names no version"));
                }
                Ok(VersionPolicy::Specific(vs))
            }
        }
    }
}

/// A version's state, as TF Serving names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Being read from the store.
    Loading,
    /// Answering requests.
    Available,
    /// Unloaded, or failed to load (then with an error).
    End,
}

impl State {
    /// TF Serving's name.
    pub fn name(self) -> &'static str {
        match self {
            State::Loading => "LOADING",
            State::Available => "AVAILABLE",
            State::End => "END",
        }
    }
}

/// One version's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionStatus {
    /// State.
    pub state: State,
    /// Why loading failed, if it did.
    pub error: Option<String>,
}

struct Failure {
    attempts: u32,
    retry_at: Instant,
}

#[derive(Default)]
struct Inner {
    loaded: BTreeMap<u64, Arc<Scorer>>,
    status: BTreeMap<u64, VersionStatus>,
    failures: BTreeMap<u64, Failure>,
}

/// One served model.
pub struct Entry {
    /// Name in URLs.
    pub name: String,
    /// Model store URL.
    pub url: String,
    /// Label → version.
    pub labels: BTreeMap<String, u64>,
    inner: RwLock<Inner>,
}

/// How a request names the version it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// The newest loaded version.
    Newest,
    /// This version.
    Version(u64),
    /// The version this label points at.
    Label(String),
}

impl Entry {
    /// The version a request asked for, if loaded; otherwise an error for a 404.
    pub fn get(&self, want: &Want) -> Result<Arc<Scorer>, String> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let v = match want {
            Want::Newest => {
                return inner
                    .loaded
                    .values()
                    .next_back()
                    .cloned()
                    .ok_or_else(|| format!("model `{}` has no version loaded yet", self.name));
            }
            Want::Version(v) => *v,
            Want::Label(l) => *self.labels.get(l).ok_or_else(|| {
                format!(
                    "model `{}` has no label `{l}` (labels: {})",
                    self.name,
                    self.labels.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?,
        };
        inner.loaded.get(&v).cloned().ok_or_else(|| {
            format!(
                "version {v} of model `{}` is not loaded (loaded: {})",
                self.name,
                inner
                    .loaded
                    .keys()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    /// Every known version's status, oldest first.
    pub fn statuses(&self) -> Vec<(u64, VersionStatus)> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.status.iter().map(|(v, s)| (*v, s.clone())).collect()
    }

    /// The newest loaded version number.
    pub fn newest(&self) -> Option<u64> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.loaded.keys().next_back().copied()
    }

    fn set(&self, v: u64, state: State, error: Option<String>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.status.insert(v, VersionStatus { state, error });
    }
}

/// Where load, unload and failure lines go.
type Log = Box<dyn FnMut(&str) + Send>;

/// Every served model, and the poller's settings.
pub struct Registry {
    storage: Storage,
    /// By name.
    pub models: BTreeMap<String, Arc<Entry>>,
    policy: VersionPolicy,
    log: Mutex<Log>,
}

/// A model to serve: name, store URL, labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Name in URLs.
    pub name: String,
    /// Model store URL (any storage).
    pub url: String,
    /// Label → version.
    pub labels: BTreeMap<String, u64>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(300);

impl Registry {
    /// A registry of `models` (nothing loaded until [`Registry::poll`]); `log` hears every
    /// load, unload and failure.
    pub fn new(
        storage: Storage,
        models: Vec<ModelSpec>,
        policy: VersionPolicy,
        log: impl FnMut(&str) + Send + 'static,
    ) -> Registry {
        let models = models
            .into_iter()
            .map(|m| {
                (
                    m.name.clone(),
                    Arc::new(Entry {
                        name: m.name,
                        url: m.url,
                        labels: m.labels,
                        inner: RwLock::new(Inner::default()),
                    }),
                )
            })
            .collect();
        Registry {
            storage,
            models,
            policy,
            log: Mutex::new(Box::new(log)),
        }
    }

    fn log(&self, line: &str) {
        let mut l = self.log.lock().unwrap_or_else(|p| p.into_inner());
        l(line);
    }

    /// True when every model has a version loaded.
    pub fn ready(&self) -> bool {
        self.models.values().all(|e| e.newest().is_some())
    }

    /// One pass: list every model's committed versions, load what the policy wants and is not
    /// loaded (unless backing off after a failure), unload what it no longer wants.
    pub fn poll(&self, base_backoff: Duration) {
        for e in self.models.values() {
            self.poll_model(e, base_backoff);
        }
    }

    fn poll_model(&self, e: &Entry, base_backoff: Duration) {
        let committed = match ModelStore::open(&self.storage, &e.url).and_then(|s| s.versions()) {
            Ok(v) => v,
            Err(err) => {
                self.log(&format!(
                    "model {}: listing {} failed: {err}; serving what is loaded",
                    e.name, e.url
                ));
                return;
            }
        };
        let want: Vec<u64> = match &self.policy {
            VersionPolicy::Latest => committed.last().copied().into_iter().collect(),
            VersionPolicy::All => committed.clone(),
            VersionPolicy::Specific(vs) => vs
                .iter()
                .copied()
                .filter(|v| committed.contains(v))
                .collect(),
        };
        for &v in &want {
            let (loaded, backing_off) = {
                let inner = e.inner.read().unwrap_or_else(|p| p.into_inner());
                (
                    inner.loaded.contains_key(&v),
                    inner
                        .failures
                        .get(&v)
                        .is_some_and(|f| Instant::now() < f.retry_at),
                )
            };
            if loaded || backing_off {
                continue;
            }
            e.set(v, State::Loading, None);
            let t = Instant::now();
            match Scorer::load(&self.storage, &e.url, Some(v)) {
                Ok(s) => {
                    crate::recommend::prepare(&s);
                    let mut inner = e.inner.write().unwrap_or_else(|p| p.into_inner());
                    inner.loaded.insert(v, Arc::new(s));
                    inner.failures.remove(&v);
                    inner.status.insert(
                        v,
                        VersionStatus {
                            state: State::Available,
                            error: None,
                        },
                    );
                    drop(inner);
                    self.log(&format!(
                        "model {}: version {v} loaded in {:.2} s",
                        e.name,
                        t.elapsed().as_secs_f64()
                    ));
                }
                Err(err) => {
                    let mut inner = e.inner.write().unwrap_or_else(|p| p.into_inner());
                    let attempts = inner.failures.get(&v).map_or(0, |f| f.attempts) + 1;
                    let wait = base_backoff
                        .saturating_mul(1 << attempts.min(16))
                        .min(MAX_BACKOFF);
                    inner.failures.insert(
                        v,
                        Failure {
                            attempts,
                            retry_at: Instant::now() + wait,
                        },
                    );
                    inner.status.insert(
                        v,
                        VersionStatus {
                            state: State::End,
                            error: Some(err.to_string()),
                        },
                    );
                    drop(inner);
                    self.log(&format!(
                        "model {}: version {v} failed to load (attempt {attempts}, next in {} s): {err}",
                        e.name,
                        wait.as_secs()
                    ));
                }
            }
        }
        // Unload what the policy no longer wants — for `latest`, only once the newest loaded,
        // so a version that fails to load never leaves the model without one.
        let mut inner = e.inner.write().unwrap_or_else(|p| p.into_inner());
        let keep_all_until_newest = matches!(self.policy, VersionPolicy::Latest)
            && want.iter().any(|v| !inner.loaded.contains_key(v));
        if keep_all_until_newest {
            return;
        }
        let drop_these: Vec<u64> = inner
            .loaded
            .keys()
            .copied()
            .filter(|v| !want.contains(v))
            .collect();
        for v in &drop_these {
            inner.loaded.remove(v);
            inner.status.insert(
                *v,
                VersionStatus {
                    state: State::End,
                    error: None,
                },
            );
        }
        drop(inner);
        for v in drop_these {
            self.log(&format!("model {}: version {v} unloaded", e.name));
        }
    }

    /// Poll now, then every `interval` on a thread of its own until `stop` is set.
    pub fn watch(
        self: &Arc<Self>,
        interval: Duration,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<()> {
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("tusk-serve-poll".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    me.poll(interval);
                    let until = Instant::now() + interval;
                    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(20).min(interval));
                    }
                }
            })
            .expect("spawning the poller thread")
    }
}
