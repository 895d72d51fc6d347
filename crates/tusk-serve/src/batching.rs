//! Dynamic batching (TF Serving's): concurrent predict requests for the same model version are
//! scored together, up to `max_batch` rows or until `timeout` after the first one arrived.
//!
//! One thread scores; handlers hand it their rows and await the answer. Each request's rows are
//! encoded on their own first, so a bad request gets its own error and never spoils a batch;
//! requests for different versions (a reload in between) are scored in separate batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tusk_data::Batch;
use tusk_train::Scorer;

use crate::rows::{self, ReqRow};

/// Batching settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    /// Rows at which a batch is scored without waiting longer.
    pub max_batch: usize,
    /// How long the first request of a batch waits for others.
    pub timeout: Duration,
}

struct Job {
    scorer: Arc<Scorer>,
    rows: Vec<ReqRow>,
    reply: oneshot::Sender<Result<Vec<f32>, String>>,
}

/// Counters of what batching did.
#[derive(Debug, Default)]
pub struct BatchStats {
    /// Batches scored.
    pub batches: AtomicU64,
    /// Requests in them.
    pub requests: AtomicU64,
    /// Rows in them.
    pub rows: AtomicU64,
}

/// The scoring thread and its queue; dropping it ends the thread.
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    /// What it did so far.
    pub stats: Arc<BatchStats>,
}

impl Batcher {
    /// Start the scoring thread.
    pub fn start(opts: BatchOptions) -> Batcher {
        let (tx, rx) = mpsc::channel::<Job>();
        let stats = Arc::new(BatchStats::default());
        let st = stats.clone();
        std::thread::Builder::new()
            .name("tusk-serve-batch".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let deadline = Instant::now() + opts.timeout;
                    let mut n = first.rows.len();
                    let mut jobs = vec![first];
                    while n < opts.max_batch {
                        let left = deadline.saturating_duration_since(Instant::now());
                        match rx.recv_timeout(left) {
                            Ok(j) => {
                                n += j.rows.len();
                                jobs.push(j);
                            }
                            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                                break;
                            }
                        }
                    }
                    run(jobs, &st);
                }
            })
            .expect("spawning the batching thread");
        Batcher { tx, stats }
    }

    /// Score `rows` with `scorer` in the next batch.
    pub async fn score(&self, scorer: Arc<Scorer>, rows: Vec<ReqRow>) -> Result<Vec<f32>, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                scorer,
                rows,
                reply,
            })
            .map_err(|_| "the batching thread has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the batching thread has stopped".to_string())?
    }
}

fn run(mut jobs: Vec<Job>, st: &BatchStats) {
    while !jobs.is_empty() {
        let scorer = jobs[0].scorer.clone();
        let (same, rest): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|j| Arc::ptr_eq(&j.scorer, &scorer));
        jobs = rest;
        let mut batch = Batch::default();
        let mut spans = Vec::with_capacity(same.len());
        for j in same {
            let start = batch.size;
            match rows::encode_into(&scorer, &j.rows, &mut batch) {
                Ok(()) => spans.push((j.reply, start, batch.size - start)),
                Err(e) => {
                    let _ = j.reply.send(Err(e));
                }
            }
        }
        st.batches.fetch_add(1, Ordering::Relaxed);
        st.requests.fetch_add(spans.len() as u64, Ordering::Relaxed);
        st.rows.fetch_add(batch.size as u64, Ordering::Relaxed);
        let p = rows::probabilities(&scorer, &batch);
        for (reply, start, len) in spans {
            // A client that went away no longer waits for its answer.
            let _ = reply.send(Ok(p[start..start + len].to_vec()));
        }
    }
}
