//! The training loop: data → embedding lookup → model → gradients → collective → optimiser
//! steps, evaluation after every epoch, early stopping on a validation metric, and a model
//! version committed after every epoch (and every `train.checkpoint_every` steps).
//!
//! A run is deterministic for its seed, and resuming from any committed version replays the
//! same batches from where it stopped, so `--resume` ends with the same weights as an
//! uninterrupted run.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tusk_board::EventWriter;
use tusk_data::{Batch, BatchOptions, FeatureSpace, NegativeSampler, Source, StatsOrigin, batches};
use tusk_embedding::{EmbeddingStore, HashedTable, ROWS_PER_PART};
use tusk_model::metrics;
use tusk_model::models::sigmoid;
use tusk_model::{DenseAdam, Model};
use tusk_storage::Storage;

use crate::collective::{Communicator, ReduceOp, Single, config_fingerprint};
use crate::config::{Config, EvalConfig, Monitor};
use crate::error::{Error, Result};
use crate::store::{
    Checkpoint, CheckpointRef, Encoded, EpochRecord, Meta, ModelStore, RunInfo, TrainState,
    VersionWriter, encode,
};
use crate::timeline::{Activity, Timeline};

/// What the caller wants besides the config.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Where versions are committed.
    pub model_url: String,
    /// Continue from the newest committed version.
    pub resume: bool,
    /// Stop (as if killed, without finishing) after this many steps in this process: tests.
    pub stop_after_steps: Option<u64>,
    /// Write a Chrome/Perfetto trace of every rank's activities here (any storage URL) when
    /// training ends.
    pub timeline: Option<String>,
    /// Data-parallel: dense gradients of up to this many bytes received per step (size × (N−1))
    /// travel with the row gradients in one all-gather instead of a ring all-reduce of their
    /// own (default [`FUSE_BYTES`]; `TUSK_FUSION_THRESHOLD` in the CLI).
    pub fusion_threshold: Option<usize>,
    /// Data-parallel, ring path: dense gradients are all-reduced in buckets of about this many
    /// bytes while the backward pass still runs (default [`BUCKET_BYTES`];
    /// `TUSK_BUCKET_BYTES` in the CLI); 0 reduces them in one call after the backward pass.
    pub bucket_bytes: Option<usize>,
    /// Embedding servers, for `train.embedding = "sync"` or `"async"`.
    pub embedding_servers: Option<EmbeddingServers>,
}

/// How a worker reaches the embedding servers of its job.
#[derive(Clone, Default)]
pub struct EmbeddingServers {
    /// `host:port` of server `i` (shard `i`).
    pub addrs: Vec<String>,
    /// The job secret.
    pub secret: Vec<u8>,
    /// How long to keep trying to reach a server at the start.
    pub connect_timeout: Duration,
    /// How long a request waits for an answer.
    pub timeout: Duration,
}

impl fmt::Debug for EmbeddingServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddingServers")
            .field("addrs", &self.addrs)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Where a run's embedding rows live.
enum Table {
    /// In this process (one worker, or `train.embedding = "replicated"`).
    Local(HashedTable),
    /// On embedding servers (a lock only so that evaluation can read through a shared view).
    Remote(Mutex<tusk_ps::Client>),
}

impl Table {
    fn client(&mut self) -> Option<&mut tusk_ps::Client> {
        match self {
            Table::Local(_) => None,
            Table::Remote(c) => Some(c.get_mut().unwrap_or_else(|p| p.into_inner())),
        }
    }

    fn rows(&self) -> Rows<'_> {
        match self {
            Table::Local(t) => Rows::Local(t),
            Table::Remote(c) => Rows::Remote(c),
        }
    }
}

/// Embedding rows as scoring reads them (without creating rows).
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    /// A table in this process.
    Local(&'a HashedTable),
    /// Embedding servers.
    Remote(&'a Mutex<tusk_ps::Client>),
}

impl<'a> From<&'a HashedTable> for Rows<'a> {
    fn from(t: &'a HashedTable) -> Self {
        Rows::Local(t)
    }
}

impl Rows<'_> {
    /// The rows of `keys`; a missing one reads as its initial value.
    pub fn peek(&self, keys: &[u64], out: &mut [f32]) -> Result<()> {
        match self {
            Rows::Local(t) => {
                t.peek(keys, out);
                Ok(())
            }
            Rows::Remote(c) => Ok(c
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .peek(keys, out)?),
        }
    }
}

/// Progress callbacks (the CLI draws bars from them).
pub trait Observer {
    /// Something worth a line.
    fn message(&mut self, _text: &str) {}
    /// An epoch starts: expected steps when known.
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _steps: Option<u64>) {}
    /// A step finished: running mean loss of the epoch, rows per second.
    fn step(&mut self, _step_in_epoch: u64, _loss: f64, _samples_per_sec: f64) {}
    /// An epoch finished and was evaluated.
    fn epoch_end(&mut self, _record: &EpochRecord) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Quiet;
impl Observer for Quiet {}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The model URL.
    pub model_url: String,
    /// The version holding the chosen weights.
    pub version: u64,
    /// Epoch whose weights were kept (best on validation, else the last).
    pub chosen_epoch: usize,
    /// Everything measured.
    pub history: Vec<EpochRecord>,
    /// Training rows per second over this process's steps.
    pub samples_per_sec: f64,
    /// Steps run in this process.
    pub steps: u64,
    /// Stopped by `stop_after_steps` before finishing.
    pub interrupted: bool,
    /// Digest of this process's weights, optimiser moments and embedding rows when it
    /// stopped (before the best epoch is restored): equal on every rank of a job.
    pub replica_digest: u64,
    /// Data-parallel runs whose dense gradients took the ring all-reduce: how long it ran
    /// and how much of that the backward pass hid.
    pub allreduce: Option<AllReduceTime>,
}

/// Time this rank spent in the dense-gradient all-reduce.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AllReduceTime {
    /// Steps measured.
    pub steps: u64,
    /// Seconds inside all-reduce calls (waiting for slower peers included).
    pub seconds: f64,
    /// Of those, seconds after this rank's backward pass had ended: the part the step waited
    /// for. The rest ran while the backward pass computed lower layers.
    pub exposed_seconds: f64,
}

impl AllReduceTime {
    /// Share of the all-reduce time hidden behind the backward pass, 0–1.
    pub fn hidden(&self) -> f64 {
        if self.seconds > 0.0 {
            (1.0 - self.exposed_seconds / self.seconds).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// Named metric values, e.g. `auc`, `logloss`, `hr@10`, `ndcg@10`, `rows`.
pub type Metrics = BTreeMap<String, f64>;

/// A model ready to score: network, weights, embeddings and feature statistics.
pub struct Scorer {
    /// The network.
    pub model: Model,
    /// Dense weights.
    pub params: Vec<f32>,
    /// Embedding rows.
    pub table: HashedTable,
    /// How rows are encoded.
    pub space: Arc<FeatureSpace>,
    /// The config it was trained with.
    pub config: Config,
    /// The version loaded.
    pub version: u64,
    /// The entity tables kept with the version, if any.
    pub entities: Option<Arc<tusk_data::Entities>>,
    /// The item catalogue prepared for ranking, built when the server loads the version
    /// (else on first use by whoever ranks it: the server's `:recommend`); `None` inside when
    /// this version cannot use one.
    pub catalogue: std::sync::OnceLock<Option<Catalogue>>,
}

/// A version's item catalogue, prepared once for ranking many items for one user.
#[derive(Debug, Clone)]
pub struct Catalogue {
    /// The items' ids, in catalogue order.
    pub ids: Vec<String>,
    /// Each id's place in `ids`.
    pub index: std::collections::HashMap<String, usize>,
    /// NeuMF's item side of each (see [`Model::neumf_items`]).
    pub items: tusk_model::models::NeumfItems,
    /// Every column the item entity table holds (what it could fill into a row).
    pub item_columns: std::collections::BTreeSet<String>,
}

impl Scorer {
    /// Load a committed version (newest when `None`).
    pub fn load(storage: &Storage, model_url: &str, version: Option<u64>) -> Result<Scorer> {
        let store = ModelStore::open(storage, model_url)?;
        let (v, ck) = store.load_version(version)?;
        Self::from_checkpoint(ck, v)
    }

    fn from_checkpoint(ck: Checkpoint, version: u64) -> Result<Scorer> {
        let config = ck.config()?;
        let entities = match &ck.entities {
            Some(bytes) => Some(Arc::new(
                tusk_data::Entities::from_records(
                    bytes,
                    &format!("version {version:06}/{}", crate::store::ENTITIES),
                )
                .map_err(|e| Error::Store {
                    url: String::new(),
                    message: e.to_string(),
                })?,
            )),
            None => None,
        };
        let space = ck.meta.features.clone();
        let model = Model::new(&config.architecture()?, space.fields(), space.dense_width())
            .map_err(|e| Error::Store {
                url: String::new(),
                message: e.to_string(),
            })?;
        let table = HashedTable::restore(config.embedding_optimizer()?, ck.table)
            .map_err(|m| Error::Store {
                url: String::new(),
                message: m,
            })?
            .with_init(config.embedding_init()?);
        let want = model.layout().total();
        if ck.params.len() != want {
            return Err(Error::Store {
                url: String::new(),
                message: format!(
                    "version {version:06}: {} dense parameters stored, the configured model has {want}",
                    ck.params.len()
                ),
            });
        }
        Ok(Scorer {
            model,
            params: ck.params,
            table,
            space: Arc::new(space),
            config,
            version,
            entities,
            catalogue: std::sync::OnceLock::new(),
        })
    }

    /// Logits of a batch, reading embeddings without creating rows.
    pub fn logits(&self, b: &Batch) -> Vec<f32> {
        let d = self.model.emb_dim();
        let mut rows = vec![0.0; b.keys.len() * d];
        self.table.peek(&b.keys, &mut rows);
        forward_rows(&self.model, &self.params, rows, b)
    }

    /// The model's embedding input for a batch (`size × fields × emb_dim`, bags pooled), as
    /// [`Scorer::logits`] feeds it.
    pub fn embedding_input(&self, b: &Batch) -> Vec<f32> {
        let d = self.model.emb_dim();
        let mut rows = vec![0.0; b.keys.len() * d];
        self.table.peek(&b.keys, &mut rows);
        pool(rows, b, d)
    }

    /// Metrics of this model on `source` (see [`evaluate`]).
    pub fn evaluate(&self, source: &Source) -> Result<Metrics> {
        evaluate(&self.view(), source)
    }

    /// A borrowed view for scoring.
    pub fn view(&self) -> View<'_> {
        View {
            model: &self.model,
            params: &self.params,
            table: Rows::Local(&self.table),
            space: &self.space,
            eval: &self.config.eval,
        }
    }
}

/// What scoring needs, borrowed (from a [`Scorer`] or from a run in progress).
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// The network.
    pub model: &'a Model,
    /// Dense weights.
    pub params: &'a [f32],
    /// Embedding rows (read without creating rows).
    pub table: Rows<'a>,
    /// How rows are encoded.
    pub space: &'a Arc<FeatureSpace>,
    /// Grouping and K for ranking metrics, scoring batch size.
    pub eval: &'a EvalConfig,
}

impl View<'_> {
    /// Logits of a batch (fails only when embedding servers do).
    pub fn logits(&self, b: &Batch) -> Result<Vec<f32>> {
        let d = self.model.emb_dim();
        let mut rows = vec![0.0; b.keys.len() * d];
        self.table.peek(&b.keys, &mut rows)?;
        Ok(forward_rows(self.model, self.params, rows, b))
    }
}

/// The model's logits over a batch whose key rows are `rows`.
fn forward_rows(model: &Model, params: &[f32], rows: Vec<f32>, b: &Batch) -> Vec<f32> {
    let emb = pool(rows, b, model.emb_dim());
    model.forward(
        params,
        &tusk_model::Batch {
            size: b.size,
            emb: &emb,
            dense: &b.dense,
        },
    )
}

/// Mean-pool multi-key bags into one row per (row, field).
fn pool(rows: Vec<f32>, b: &Batch, d: usize) -> Vec<f32> {
    if b.single_keys() {
        return rows;
    }
    let mut out = vec![0.0; b.bag_lens.len() * d];
    let mut k = 0;
    for (slot, &n) in b.bag_lens.iter().enumerate() {
        let o = &mut out[slot * d..(slot + 1) * d];
        let scale = 1.0 / n as f32;
        for _ in 0..n {
            for (x, y) in o.iter_mut().zip(&rows[k * d..(k + 1) * d]) {
                *x += y * scale;
            }
            k += 1;
        }
    }
    out
}

/// Spread pooled gradients back onto every key of each bag.
fn unpool(de: Vec<f32>, b: &Batch, d: usize) -> Vec<f32> {
    if b.single_keys() {
        return de;
    }
    let mut out = Vec::with_capacity(b.keys.len() * d);
    for (slot, &n) in b.bag_lens.iter().enumerate() {
        let g = &de[slot * d..(slot + 1) * d];
        let scale = 1.0 / n as f32;
        for _ in 0..n {
            out.extend(g.iter().map(|x| x * scale));
        }
    }
    out
}

/// AUC and logloss over all rows, and HR@K / NDCG@K over groups (`eval.group`): each
/// positive is ranked against its group's negatives, ties counted against it.
pub fn evaluate(scorer: &View<'_>, source: &Source) -> Result<Metrics> {
    evaluate_on(scorer, source, &mut Single)
}

/// [`evaluate`] split over the ranks of a job: each scores every N-th row, the scores are
/// gathered and put back in source order, and every rank computes the same metrics as one
/// process would. Memory: 16 bytes per evaluated row (score, label, group), not the records.
pub fn evaluate_on(
    scorer: &View<'_>,
    source: &Source,
    comm: &mut dyn Communicator,
) -> Result<Metrics> {
    let cfg = scorer.eval;
    let (rank, world) = (comm.rank(), comm.world_size());
    let it = batches(
        source.clone(),
        scorer.space.clone(),
        BatchOptions {
            batch_size: cfg.batch_size,
            shuffle_buffer: 0,
            seed: 0,
            skip_batches: 0,
            with_label: true,
            group: cfg.group.clone(),
            negatives: None,
            prefetch: 4,
            shard: (world > 1).then_some((rank, world)),
            shard_by_rows: true,
            entities: None,
        },
    );
    let mut scores = Vec::new();
    let mut labels = Vec::new();
    let mut groups: Vec<u64> = Vec::new();
    let mut failed = None;
    for b in it {
        match b {
            Ok(b) => {
                let logits = scorer.logits(&b)?;
                scores.extend(logits.into_iter().map(sigmoid));
                labels.extend_from_slice(&b.labels);
                groups.extend_from_slice(&b.groups);
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    if world > 1 {
        if let Some(e) = failed {
            let e = Error::from(e);
            comm.abort(&e.to_string());
            return Err(e);
        }
        (scores, labels, groups) = gather_rows(comm, &scores, &labels, &groups)?;
    } else if let Some(e) = failed {
        return Err(e.into());
    }
    let mut m = Metrics::new();
    m.insert("rows".into(), scores.len() as f64);
    if scores.is_empty() {
        return Err(Error::Training(format!(
            "{}: no rows to evaluate",
            source.url()
        )));
    }
    if let Ok(a) = metrics::auc(&scores, &labels) {
        m.insert("auc".into(), a);
    }
    let clipped: Vec<f32> = scores.iter().map(|p| p.clamp(1e-7, 1.0 - 1e-7)).collect();
    if let Ok(l) = metrics::logloss(&clipped, &labels) {
        m.insert("logloss".into(), l);
    }
    if cfg.group.is_some() {
        let mut index: HashMap<u64, usize> = HashMap::new();
        let mut members: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
        for ((s, y), g) in scores.iter().zip(&labels).zip(&groups) {
            let i = *index.entry(*g).or_insert_with(|| {
                members.push((Vec::new(), Vec::new()));
                members.len() - 1
            });
            if *y == 1.0 {
                members[i].0.push(*s);
            } else {
                members[i].1.push(*s);
            }
        }
        // Each positive against its group's negatives: the negatives are sorted once per
        // group and a positive's rank found by binary search (the same ranks as
        // metrics::rank_of_positive, without a list per positive).
        let (mut lists, mut hits, mut gain) = (0usize, 0usize, 0.0f64);
        for (pos, neg) in &members {
            let nans = neg.iter().filter(|s| s.is_nan()).count();
            let mut sorted: Vec<f32> = neg
                .iter()
                .map(|s| if s.is_nan() { f32::INFINITY } else { *s })
                .collect();
            sorted.sort_by(f32::total_cmp);
            for p in pos {
                let r = if p.is_nan() {
                    nans
                } else {
                    sorted.len() - sorted.partition_point(|s| s < p)
                };
                lists += 1;
                if r < cfg.k {
                    hits += 1;
                    gain += 1.0 / ((r + 2) as f64).log2();
                }
            }
        }
        if lists > 0 {
            m.insert(format!("hr@{}", cfg.k), hits as f64 / lists as f64);
            m.insert(format!("ndcg@{}", cfg.k), gain / lists as f64);
            m.insert("groups".into(), members.len() as f64);
        }
    }
    Ok(m)
}

/// Every rank's (score, label, group) rows, interleaved back into source order (rank `r`
/// scored rows `r, r + N, r + 2N, …`).
fn gather_rows(
    comm: &mut dyn Communicator,
    scores: &[f32],
    labels: &[f32],
    groups: &[u64],
) -> Result<(Vec<f32>, Vec<f32>, Vec<u64>)> {
    let mut mine = Vec::with_capacity(8 + scores.len() * 16);
    mine.extend_from_slice(&(scores.len() as u64).to_le_bytes());
    for x in scores.iter().chain(labels) {
        mine.extend_from_slice(&x.to_le_bytes());
    }
    let with_groups = groups.len() == scores.len();
    if with_groups {
        for g in groups {
            mine.extend_from_slice(&g.to_le_bytes());
        }
    }
    let all = comm.all_gather(&mine)?;
    let world = all.len();
    let mut parts = Vec::with_capacity(world);
    for (r, b) in all.iter().enumerate() {
        let bad = || {
            Error::Training(format!(
                "rank {r} sent {} bytes of evaluation rows",
                b.len()
            ))
        };
        let n =
            u64::from_le_bytes(b.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
        let want = 8 + n * 8 + if with_groups { n * 8 } else { 0 };
        if b.len() != want {
            return Err(bad());
        }
        let floats = |from: usize, count: usize| -> Vec<f32> {
            b[from..from + count * 4]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let gs: Vec<u64> = if with_groups {
            b[8 + n * 8..]
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect()
        } else {
            Vec::new()
        };
        parts.push((floats(8, n), floats(8 + n * 4, n), gs));
    }
    let total: usize = parts.iter().map(|p| p.0.len()).sum();
    let (mut s, mut l, mut gs) = (
        Vec::with_capacity(total),
        Vec::with_capacity(total),
        Vec::new(),
    );
    for i in 0..total {
        let (r, k) = (i % world, i / world);
        let (ps, pl, pg) = &parts[r];
        if k >= ps.len() {
            return Err(Error::Training(format!(
                "rank {r} scored {} rows of {total}: not its share of every {world}th row",
                ps.len()
            )));
        }
        s.push(ps[k]);
        l.push(pl[k]);
        if with_groups {
            gs.push(pg[k]);
        }
    }
    Ok((s, l, gs))
}

fn monitor_key(cfg: &Config) -> Result<(String, bool)> {
    let k = cfg.eval.k;
    Ok(match cfg.monitor()? {
        Monitor::Auc => ("auc".into(), true),
        Monitor::Logloss => ("logloss".into(), false),
        Monitor::Hr => (format!("hr@{k}"), true),
        Monitor::Ndcg => (format!("ndcg@{k}"), true),
    })
}

struct Run<'a> {
    cfg: Config,
    space: Arc<FeatureSpace>,
    model: Model,
    params: Vec<f32>,
    adam: DenseAdam,
    table: Table,
    state: TrainState,
    store: ModelStore,
    train: Source,
    validation: Option<Source>,
    test: Option<Source>,
    sampler: Option<Arc<NegativeSampler>>,
    events: Option<EventWriter>,
    /// Rank 0 alone writes versions.
    saver: Option<Saver>,
    collective: Box<dyn Communicator + 'a>,
    timeline: Timeline,
    fusion_threshold: usize,
    /// Dense-gradient buckets in backward order, each a list of parameter ranges; empty when
    /// the gradient is not reduced while the backward pass runs.
    buckets: Vec<Vec<Range<usize>>>,
    allreduce: AllReduceTime,
    /// Where rank 0 writes the trace.
    timeline_out: Option<tusk_storage::Location>,
    /// Dense gradient, then per rank its batch size, then per rank its loss: all summed in
    /// one all-reduce, so every rank learns every rank's rows and loss without another round.
    grads: Vec<f32>,
    /// Entity tables (`data.entities`) as kept with every version.
    entities: Option<Vec<u8>>,
    /// Rank 0 with embedding servers: the saver thread's connections to them.
    shard_writer: Option<Arc<Mutex<tusk_ps::Client>>>,
    /// Snapshots taken so far (ids for the servers).
    snapshots: u64,
    /// Async embedding servers: ask for the next step's rows while this one trains.
    prefetch: bool,
    /// The keys of the rows asked for ahead, and the rows once collected.
    prefetching: Option<Vec<u64>>,
    prefetched: Option<(Vec<u64>, Vec<f32>)>,
    /// Seconds spent waiting for rows from embedding servers, and steps.
    pull_wait: (f64, u64),
    /// Threads computing a step (`train.threads` resolved), and their pool when more than one.
    threads: usize,
    pool: Option<rayon::ThreadPool>,
}

/// One rank's part of a step for the backward thread: inputs, labels, optional weights.
type Work<'a> = (tusk_model::Batch<'a>, &'a [f32], Option<&'a [f32]>);

/// What one synchronous step did.
enum Step {
    /// Every rank trained on a batch: the global loss sum (Σ loss·rows) and rows.
    Trained { loss_sum: f64, rows: u64 },
    /// Some rank's part of the epoch is exhausted: the epoch ends on every rank.
    EpochEnd,
}

/// Connects a run to its peers once the run knows what it will train (on `--resume` the
/// config comes from the stored version): given the fingerprint every rank must agree on
/// (`section.key` → value), it returns the communicator.
pub type Connect<'a> =
    dyn FnMut(BTreeMap<String, String>) -> Result<Box<dyn Communicator + 'a>> + 'a;

/// Train `cfg` (or, with `--resume`, the config stored in the newest version) and commit
/// versions to `opts.model_url`.
pub fn train(
    storage: &Storage,
    cfg: Option<Config>,
    opts: &TrainOptions,
    obs: &mut dyn Observer,
) -> Result<Summary> {
    train_with(storage, cfg, opts, obs, &mut |_| Ok(Box::new(Single)))
}

/// [`train`] as one rank of data-parallel workers: `connect` joins the others.
///
/// Every rank trains on its disjoint part of each epoch (`train.batch_size` is the global
/// batch; each rank takes `batch_size / world` rows of it), sums dense gradients with a ring
/// all-reduce and exchanges embedding-row gradients with an all-gather, so every replica
/// applies the same update and stays bitwise equal to the others. Only rank 0 writes
/// versions and events; every rank evaluates (and so stops early) identically.
pub fn train_with<'a>(
    storage: &Storage,
    cfg: Option<Config>,
    opts: &TrainOptions,
    obs: &mut dyn Observer,
    connect: &mut Connect<'a>,
) -> Result<Summary> {
    let store = ModelStore::open(storage, &opts.model_url)?;
    let latest = store.latest()?;
    if latest.is_none() {
        store.check_no_legacy_versions()?;
    }
    let resumed = match (opts.resume, latest) {
        // With embedding servers the servers read the stored rows themselves.
        (true, Some(v))
            if opts
                .embedding_servers
                .as_ref()
                .is_some_and(|s| !s.addrs.is_empty()) =>
        {
            Some((v, store.load_without_table(v)?))
        }
        (true, Some(v)) => Some((v, store.load(Some(v))?)),
        (true, None) => {
            obs.message(&format!(
                "no committed version at {} yet: starting from scratch",
                store.url()
            ));
            None
        }
        (false, Some(v)) => {
            return Err(Error::Store {
                url: store.url(),
                message: format!(
                    "already holds model versions (newest {v:06}); pass --resume to continue that run, or choose another --model URL"
                ),
            });
        }
        (false, None) => None,
    };
    let cfg = match (&resumed, cfg) {
        (Some((_, ck)), _) => ck.config()?,
        (None, Some(c)) => c,
        (None, None) => {
            return Err(Error::Config {
                key: "CONFIG".into(),
                message: "a config file is needed to start a new run".into(),
            });
        }
    };
    let open = |url: &Option<String>| -> Result<Option<Source>> {
        url.as_deref()
            .map(|u| Source::open(storage, u))
            .transpose()
            .map_err(Error::from)
    };
    let train_src = Source::open(storage, &cfg.data.train)?;
    let validation = open(&cfg.data.validation)?;
    let test = open(&cfg.data.test)?;
    // Read once; every version keeps the same bytes.
    let entities = if cfg.data.entities.is_empty() {
        None
    } else {
        let e = tusk_data::Entities::load(storage, &cfg.data.entities)?;
        Some(e.to_records())
    };

    let parent = resumed.as_ref().map(|(v, _)| *v);
    let (space, model, params, adam, table, state) = match resumed {
        Some((v, ck)) => {
            obs.message(&format!(
                "resuming from version {v:06} (epoch {}, step {} of the next epoch)",
                ck.meta.state.epoch, ck.meta.state.step_in_epoch
            ));
            let mut adam = DenseAdam::new(0, cfg.train.learning_rate, cfg.train.weight_decay);
            adam.t = ck.meta.adam_t;
            let st = ck.meta.state.clone();
            let mut ck = ck;
            adam.m = std::mem::take(&mut ck.adam_m);
            adam.v = std::mem::take(&mut ck.adam_v);
            let scorer = Scorer::from_checkpoint(ck, v)?;
            if adam.m.len() != scorer.params.len() || adam.v.len() != scorer.params.len() {
                return Err(Error::Store {
                    url: store.url(),
                    message: format!(
                        "version {v:06}: optimizer.safetensors holds {}/{} moments for {} parameters",
                        adam.m.len(),
                        adam.v.len(),
                        scorer.params.len()
                    ),
                });
            }
            (
                scorer.space,
                scorer.model,
                scorer.params,
                adam,
                scorer.table.with_min_count(cfg.train.min_count),
                st,
            )
        }
        None => {
            let t = Instant::now();
            let (space, origin) = FeatureSpace::fit_kept(&train_src, cfg.features.clone(), |_| {})?;
            let secs = t.elapsed().as_secs_f64();
            obs.message(&match origin {
                StatsOrigin::Kept(f) => format!("feature statistics from {f} ({secs:.2} s)"),
                StatsOrigin::ComputedAndKept(f) => format!(
                    "feature statistics: one pass over {} ({secs:.1} s), kept in {f} for later runs",
                    cfg.data.train
                ),
                StatsOrigin::Computed(why) => format!(
                    "feature statistics: one pass over {} ({secs:.1} s){}",
                    cfg.data.train,
                    why.map_or(String::new(), |w| format!("; {w}"))
                ),
            });
            if cfg.train.negatives == 0 {
                space.check_both_classes()?;
            }
            let model = Model::new(&cfg.architecture()?, space.fields(), space.dense_width())
                .map_err(|e| Error::Config {
                    key: "model".into(),
                    message: e.0,
                })?;
            let params = model.init_params(cfg.train.seed);
            let adam = DenseAdam::new(
                params.len(),
                cfg.train.learning_rate,
                cfg.train.weight_decay,
            );
            let table =
                HashedTable::new(model.emb_dim(), cfg.embedding_optimizer()?, cfg.train.seed)
                    .with_init_scale(cfg.train.init_scale)
                    .with_init(cfg.embedding_init()?)
                    .with_min_count(cfg.train.min_count);
            (
                Arc::new(space),
                model,
                params,
                adam,
                table,
                TrainState::default(),
            )
        }
    };
    if state.finished {
        obs.message("this run already finished; nothing to resume");
        let v = latest.unwrap_or(0);
        return Ok(Summary {
            model_url: store.url(),
            version: v,
            chosen_epoch: state.best.map_or(state.epoch, |b| b.1),
            history: state.history,
            samples_per_sec: 0.0,
            steps: 0,
            interrupted: false,
            replica_digest: 0,
            allreduce: None,
        });
    }
    let sampler = if cfg.train.negatives > 0 {
        let (u, i) = cfg.negative_fields()?;
        obs.message(&format!(
            "sampling {} negatives per positive (user `{u}`, items {:?})",
            cfg.train.negatives, i
        ));
        Some(Arc::new(NegativeSampler::build(
            &train_src,
            &space,
            &u,
            &i,
            cfg.train.negatives,
        )?))
    } else {
        None
    };
    let mut fingerprint = config_fingerprint(&cfg);
    for (k, src) in [
        ("data.train", Some(&train_src)),
        ("data.validation", validation.as_ref()),
        ("data.test", test.as_ref()),
    ] {
        if let Some(src) = src {
            fingerprint.insert(format!("{k} (contents)"), src.fingerprint());
        }
    }
    fingerprint.insert(
        "resumed from version".into(),
        parent.map_or("none (a new run)".into(), |v| format!("{v:06}")),
    );
    fingerprint.insert("tusk version".into(), env!("CARGO_PKG_VERSION").into());
    fingerprint.insert(
        "--timeline".into(),
        if opts.timeline.is_some() {
            "set"
        } else {
            "not set"
        }
        .into(),
    );
    let fusion_threshold = opts.fusion_threshold.unwrap_or(FUSE_BYTES);
    fingerprint.insert("fusion threshold".into(), fusion_threshold.to_string());
    let bucket_bytes = opts.bucket_bytes.unwrap_or(BUCKET_BYTES);
    fingerprint.insert("bucket bytes".into(), bucket_bytes.to_string());
    let timeline_out = opts
        .timeline
        .as_deref()
        .map(|u| storage.open(u))
        .transpose()?;
    let mut collective = connect(fingerprint)?;
    let (rank, world) = (collective.rank(), collective.world_size());
    let prefetch = cfg.train.prefetch
        && matches!(cfg.embedding_mode()?, Some(tusk_ps::Mode::Async { staleness }) if staleness >= 1);
    let (table, shard_writer) = match cfg.embedding_mode()? {
        None if opts
            .embedding_servers
            .as_ref()
            .is_some_and(|s| !s.addrs.is_empty()) =>
        {
            let e = Error::Config {
                key: "train.embedding".into(),
                message: "is `replicated`, but embedding servers were given (--servers, --embedding-servers, TUSK_EMBEDDING_SERVERS or TF_CONFIG `ps` tasks): set it to \"sync\" or \"async\", or start no servers".into(),
            };
            collective.abort(&e.to_string());
            return Err(e);
        }
        None => (Table::Local(table), None),
        Some(mode) => match remote_table(
            &cfg,
            opts,
            &mut *collective,
            mode,
            table,
            parent.map(|v| store.table_files(v)).transpose()?,
        ) {
            Ok(t) => t,
            Err(e) => {
                collective.abort(&e.to_string());
                return Err(e);
            }
        },
    };
    if !cfg.train.batch_size.is_multiple_of(world) {
        let e = Error::Config {
            key: "train.batch_size".into(),
            message: format!(
                "the global batch of {} rows does not split evenly over {world} workers (each takes batch_size / workers rows): choose a multiple of {world}",
                cfg.train.batch_size
            ),
        };
        collective.abort(&e.to_string());
        return Err(e);
    }
    let events = if rank != 0 {
        None
    } else {
        match EventWriter::create(&store.location().join("events")) {
            Ok(w) => Some(w),
            Err(e) => {
                obs.message(&format!("TensorBoard events disabled: {e}"));
                None
            }
        }
    };
    let grads = vec![0.0; params.len() + 2 * world];
    let fused = world > 1 && params.len().saturating_mul(4 * (world - 1)) <= fusion_threshold;
    let buckets = if world > 1 && !fused && bucket_bytes > 0 {
        plan_buckets(&model.backward_order(), bucket_bytes)
    } else {
        Vec::new()
    };
    let threads = compute_threads(cfg.train.threads, model.multiply_adds_per_row());
    let pool = if threads > 1 {
        match rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("tusk-compute-{i}"))
            .build()
        {
            Ok(p) => Some(p),
            Err(e) => {
                let e = Error::Training(format!("cannot start {threads} compute threads: {e}"));
                collective.abort(&e.to_string());
                return Err(e);
            }
        }
    } else {
        None
    };
    let saver = if rank == 0 {
        Some(Saver::start(store.writer(RunInfo::new(), parent))?)
    } else {
        None
    };
    let mut run = Run {
        cfg,
        space,
        model,
        params,
        adam,
        table,
        state,
        store,
        train: train_src,
        validation,
        test,
        sampler,
        events,
        saver,
        collective,
        timeline: Timeline::new(timeline_out.is_some()),
        fusion_threshold,
        buckets,
        allreduce: AllReduceTime::default(),
        timeline_out,
        grads,
        entities,
        shard_writer,
        snapshots: 0,
        prefetch,
        prefetching: None,
        prefetched: None,
        pull_wait: (0.0, 0),
        threads,
        pool,
    };
    let res = run.go(opts, obs);
    if let Err(e) = &res
        && !matches!(e, Error::Collective(_))
    {
        // Tell the other ranks why, instead of letting them find a closed connection.
        run.collective.abort(&e.to_string());
    }
    res
}

/// Connect this worker to the embedding servers and open (rank 0) or join the run's session:
/// rank 0 hands each server its shard of `table` (the stored rows on resume, whatever the
/// number of servers that wrote them).
fn remote_table(
    cfg: &Config,
    opts: &TrainOptions,
    collective: &mut dyn Communicator,
    mode: tusk_ps::Mode,
    table: HashedTable,
    stored: Option<Vec<String>>,
) -> Result<(Table, Option<Arc<Mutex<tusk_ps::Client>>>)> {
    let (rank, world) = (collective.rank(), collective.world_size());
    let servers = opts
        .embedding_servers
        .as_ref()
        .filter(|s| !s.addrs.is_empty())
        .ok_or_else(|| Error::Config {
            key: "train.embedding".into(),
            message: format!(
                "`{}` keeps the rows on embedding servers, and none were given: start them with `tusk launch --servers S`, or pass --embedding-servers / TUSK_EMBEDDING_SERVERS",
                cfg.train.embedding
            ),
        })?;
    if servers.secret.is_empty() {
        return Err(Error::Config {
            key: "TUSK_JOB_SECRET".into(),
            message: "not set: workers and embedding servers authenticate with the job secret (`tusk launch` sets one)".into(),
        });
    }
    // A fresh session id from rank 0, so that servers never mix a restarted group's pushes
    // with its predecessor's.
    let mut session = if rank == 0 {
        format!("{}-{}", RunInfo::new().id, table.len()).into_bytes()
    } else {
        Vec::new()
    };
    collective.broadcast(&mut session, 0)?;
    let session = String::from_utf8_lossy(&session).into_owned();
    let mut client = tusk_ps::Client::connect(
        &servers.addrs,
        &servers.secret,
        rank,
        world,
        servers.connect_timeout,
        servers.timeout,
    )?;
    let tc = tusk_ps::TableConfig {
        dim: table.dim(),
        optimizer: table.optimizer().into(),
        seed: cfg.train.seed,
        init_scale: cfg.train.init_scale,
        normal_init: cfg.embedding_init()? == tusk_embedding::Init::Normal,
        mode,
        workers: world,
        min_count: cfg.train.min_count,
    };
    drop(table);
    // Rank 0 opens the session: each server reads the stored rows of its shard itself.
    let rows = match (&stored, rank) {
        (Some(files), 0) => tusk_ps::Rows::Files(files),
        _ => tusk_ps::Rows::Fresh,
    };
    client.init(&session, &tc, rows)?;
    // Rank 0's saver thread has connections of its own, to have the servers write their
    // shards of each version while training goes on.
    let writer = if rank == 0 {
        Some(Arc::new(Mutex::new(tusk_ps::Client::connect(
            &servers.addrs,
            &servers.secret,
            rank,
            world,
            servers.connect_timeout,
            servers.timeout,
        )?)))
    } else {
        None
    };
    Ok((Table::Remote(Mutex::new(client)), writer))
}

impl Run<'_> {
    /// Encode a version of where the run stands and hand it to the saver thread (training
    /// goes on while it is written; at most one save is in flight).
    fn checkpoint(&mut self) -> Result<()> {
        let meta = Meta {
            format: crate::store::FORMAT,
            config: self.cfg.to_toml(),
            features: (*self.space).clone(),
            params: self.model.layout().specs().to_vec(),
            emb_dim: self.model.emb_dim(),
            adam_t: self.adam.t,
            state: self.state.clone(),
        };
        if self.saver.is_none() {
            return Ok(());
        }
        // Embedding servers snapshot their rows once every worker's pushes so far are
        // applied (this same step boundary); the saver thread has them write the snapshots
        // into the version's directory, one shard file each, before the manifest.
        let mut snapshot = None;
        if let Some(c) = self.table.client() {
            self.snapshots += 1;
            c.snapshot(self.snapshots)?;
            snapshot = Some(self.snapshots);
        }
        let no_rows = tusk_embedding::TableState::empty(
            self.model.emb_dim(),
            self.cfg.train.seed,
            self.cfg.train.init_scale,
        );
        let table = match &self.table {
            Table::Local(t) => t.view(),
            Table::Remote(_) => no_rows.view(),
        };
        let ck = CheckpointRef {
            meta: &meta,
            params: &self.params,
            adam_m: &self.adam.m,
            adam_v: &self.adam.v,
            table,
            entities: self.entities.as_deref(),
        };
        let Some(saver) = &mut self.saver else {
            return Ok(());
        };
        let mut enc = encode(&ck)?;
        if let (Some(id), Some(writer)) = (snapshot, &self.shard_writer) {
            let writer = writer.clone();
            enc = enc.with_external_table(Box::new(move |dir| {
                let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
                Ok(w.write_snapshot(id, dir)?
                    .into_iter()
                    .map(|(name, bytes, crc32c)| crate::store::ManifestFile {
                        name,
                        bytes,
                        crc32c,
                    })
                    .collect())
            }));
        }
        saver.submit(enc)?;
        if let Some(ev) = &mut self.events {
            let _ = ev.flush_in_background();
        }
        Ok(())
    }

    /// One synchronous step: this rank's batch (`None` when its part of the epoch is
    /// exhausted) → local gradients → dense all-reduce → embedding-gradient all-gather →
    /// the same optimiser steps on every rank.
    fn step(&mut self, b: Option<&Batch>, next: Option<&Batch>) -> Result<Step> {
        let d = self.model.emb_dim();
        let (rank, world) = (self.collective.rank(), self.collective.world_size());
        let p = self.params.len();
        self.grads.iter_mut().for_each(|g| *g = 0.0);
        let mut kg = Vec::new();
        let t = Instant::now();
        if let Some(b) = b {
            let mut rows = vec![0.0; b.keys.len() * d];
            match &mut self.table {
                Table::Local(t) => EmbeddingStore::lookup(t, &b.keys, &mut rows),
                Table::Remote(c) => {
                    let c = c.get_mut().unwrap_or_else(|p| p.into_inner());
                    let t = Instant::now();
                    match self.prefetched.take() {
                        Some((keys, pre)) if keys == b.keys => rows = pre,
                        _ => c.pull(&b.keys, &mut rows)?,
                    }
                    if self.prefetch
                        && let Some(n) = next
                    {
                        c.start_pull(&n.keys)?;
                        self.prefetching = Some(n.keys.clone());
                    }
                    self.pull_wait.0 += t.elapsed().as_secs_f64();
                    self.pull_wait.1 += 1;
                }
            }
            let l2 = self.cfg.train.embedding_l2;
            let raw = if l2 > 0.0 { Some(rows.clone()) } else { None };
            let emb = pool(rows, b, d);
            let mut de = Vec::new();
            let weights = self
                .cfg
                .features
                .weight
                .as_ref()
                .map(|_| b.weights.as_slice());
            let input = tusk_model::Batch {
                size: b.size,
                emb: &emb,
                dense: &b.dense,
            };
            if self.buckets.is_empty() {
                let (model, params, grads) = (&self.model, &self.params, &mut self.grads[..p]);
                let labels = &b.labels;
                let threads = self.threads;
                let pool = self
                    .pool
                    .as_ref()
                    .filter(|_| b.size >= 2 * tusk_model::ROWS_PER_PART);
                let loss = in_pool(pool, || {
                    model.loss_and_grads_parts(
                        threads, params, &input, labels, weights, grads, &mut de,
                    )
                });
                self.grads[p + rank] = b.size as f32;
                self.grads[p + world + rank] = loss;
            } else {
                de = self.backward_reducing(Some((input, &b.labels, weights)), t)?;
            }
            kg = unpool(de, b, d);
            if world > 1 {
                // Each rank's gradient is of its mean loss over batch_size / world rows: the
                // global mean's gradient is their average.
                let scale = world as f32;
                kg.iter_mut().for_each(|g| *g /= scale);
            }
            if let Some(raw) = raw {
                for (g, w) in kg.iter_mut().zip(&raw) {
                    *g += l2 * w;
                }
            }
        } else if !self.buckets.is_empty() {
            // No rows here this step: take part in every bucket's all-reduce with zeros.
            self.backward_reducing(None, t)?;
        }
        if self.buckets.is_empty() {
            self.timeline.span(Activity::ForwardBackward, t);
        }
        let keys_here = b.map_or(&[][..], |b| b.keys.as_slice());
        // With embedding servers the row gradients go to them, not to the other workers.
        let remote = matches!(self.table, Table::Remote(_));
        let (gathered_keys, gathered_grads) = if remote {
            (&[][..], &[][..])
        } else {
            (keys_here, &kg[..])
        };
        // A small dense gradient travels with the row gradients in one all-gather (one ring
        // pass instead of three: step time is latency at this size) and every rank sums the
        // blocks in rank order; a large one takes the bandwidth-optimal ring all-reduce.
        let fused = world > 1 && p.saturating_mul(4 * (world - 1)) <= self.fusion_threshold;
        debug_assert!(!fused || self.buckets.is_empty());
        let mut gathered: Option<Vec<Vec<u8>>> = None;
        if fused {
            let mut mine = Vec::with_capacity((p + 2) * 4 + keys_here.len() * (8 + 4 * d) + 8);
            for g in &self.grads[..p] {
                mine.extend_from_slice(&g.to_le_bytes());
            }
            mine.extend_from_slice(&self.grads[p + rank].to_le_bytes());
            mine.extend_from_slice(&self.grads[p + world + rank].to_le_bytes());
            encode_row_grads(gathered_keys, gathered_grads, &mut mine);
            let t = Instant::now();
            let all = self.collective.all_gather(&mine)?;
            self.timeline.span(Activity::AllGather, t);
            for (r, block) in all.iter().enumerate() {
                if block.len() < (p + 2) * 4 {
                    return Err(Error::Training(format!(
                        "rank {r} sent {} bytes of gradients, fewer than its {p} dense values",
                        block.len()
                    )));
                }
                let vals = block[..(p + 2) * 4]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                for (i, v) in vals.enumerate() {
                    if i < p {
                        if r == 0 {
                            self.grads[i] = v;
                        } else {
                            self.grads[i] += v;
                        }
                    } else if i == p {
                        self.grads[p + r] = v;
                    } else {
                        self.grads[p + world + r] = v;
                    }
                }
            }
            gathered = Some(all);
        } else if world > 1 && self.buckets.is_empty() {
            let t = Instant::now();
            self.collective.all_reduce(&mut self.grads, ReduceOp::Sum)?;
            self.timeline.span(Activity::AllReduce, t);
            let secs = t.elapsed().as_secs_f64();
            self.allreduce.steps += 1;
            self.allreduce.seconds += secs;
            self.allreduce.exposed_seconds += secs;
        }
        let sizes: Vec<u64> = self.grads[p..p + world].iter().map(|&s| s as u64).collect();
        let losses = &self.grads[p + world..];
        if sizes.contains(&0) {
            if self.state.step_in_epoch == 0 && sizes.iter().any(|&s| s > 0) {
                let empty: Vec<String> = (0..world)
                    .filter(|r| sizes[*r] == 0)
                    .map(|r| r.to_string())
                    .collect();
                return Err(Error::Training(format!(
                    "rank(s) {} have no training rows in epoch {}: {} has too few rows for {world} workers; use fewer workers",
                    empty.join(", "),
                    self.state.epoch + 1,
                    self.train.url()
                )));
            }
            return Ok(Step::EpochEnd);
        }
        let mut loss_sum = 0.0f64;
        for (r, (&n, &l)) in sizes.iter().zip(losses).enumerate() {
            if !l.is_finite() {
                return Err(Error::Training(format!(
                    "the loss became {l}{} at step {} (epoch {}): lower train.learning_rate",
                    if world > 1 {
                        format!(" on rank {r}")
                    } else {
                        String::new()
                    },
                    self.state.global_step + 1,
                    self.state.epoch + 1
                )));
            }
            loss_sum += f64::from(l) * n as f64;
        }
        if world > 1 {
            let scale = world as f32;
            self.grads[..p].iter_mut().for_each(|g| *g /= scale);
        }
        let t = Instant::now();
        self.adam.step(&mut self.params, &self.grads[..p]);
        self.timeline.span(Activity::Optimizer, t);
        if let Some(c) = self.table.client() {
            let t = Instant::now();
            // The next step's rows were asked for before this push: collect them first (they
            // are usually in the sockets already).
            if let Some(keys) = self.prefetching.take()
                && c.prefetching()
            {
                let mut pre = vec![0.0; keys.len() * d];
                c.finish_pull(&mut pre)?;
                self.prefetched = Some((keys, pre));
                self.pull_wait.0 += t.elapsed().as_secs_f64();
            }
            let t = Instant::now();
            c.push(keys_here, &kg)?;
            self.timeline.span(Activity::Optimizer, t);
            return Ok(Step::Trained {
                loss_sum,
                rows: sizes.iter().sum(),
            });
        }
        let Table::Local(table) = &mut self.table else {
            return Err(Error::Training(
                "embedding rows are on servers, not in this process".into(),
            ));
        };
        let applied = if world > 1 {
            // Every rank's keys and row gradients, concatenated in rank order: every replica
            // sums the same values in the same order.
            let (all, skip) = match gathered {
                Some(all) => (all, (p + 2) * 4),
                None => {
                    let mut mine = Vec::with_capacity(keys_here.len() * (8 + 4 * d) + 8);
                    encode_row_grads(keys_here, &kg, &mut mine);
                    let t = Instant::now();
                    let all = self.collective.all_gather(&mine)?;
                    self.timeline.span(Activity::SparseAllGather, t);
                    (all, 0)
                }
            };
            let t = Instant::now();
            let (mut keys, mut grads) = (Vec::new(), Vec::new());
            for (r, block) in all.iter().enumerate() {
                decode_row_grads(&block[skip..], d, &mut keys, &mut grads).ok_or_else(|| {
                    Error::Training(format!(
                        "rank {r} sent {} bytes of embedding gradients, which do not decode",
                        block.len()
                    ))
                })?;
            }
            let r = apply_rows(table, self.pool.as_ref(), self.threads, &keys, &grads);
            self.timeline.span(Activity::Optimizer, t);
            r
        } else {
            let t = Instant::now();
            let keys = b.map_or(&[][..], |b| b.keys.as_slice());
            let r = apply_rows(table, self.pool.as_ref(), self.threads, keys, &kg);
            self.timeline.span(Activity::Optimizer, t);
            r
        };
        applied.map_err(|e| Error::Training(e.to_string()))?;
        Ok(Step::Trained {
            loss_sum,
            rows: sizes.iter().sum(),
        })
    }

    /// Forward and backward pass on a thread of its own while this thread all-reduces the
    /// dense gradient bucket by bucket as the backward pass finishes them (top layers first,
    /// as PyTorch DDP and Horovod do). Every rank reduces the same buckets in the same order;
    /// the last one carries the per-rank batch sizes and losses. A rank without a batch
    /// (`work = None`) reduces zeros. Leaves the summed gradient and sizes/losses in
    /// `self.grads`; returns d loss / d emb.
    fn backward_reducing(&mut self, work: Option<Work<'_>>, started: Instant) -> Result<Vec<f32>> {
        let (rank, world) = (self.collective.rank(), self.collective.world_size());
        let p = self.params.len();
        let buckets = &self.buckets;
        let lens: Vec<usize> = buckets
            .iter()
            .map(|b| b.iter().map(ExactSizeIterator::len).sum())
            .collect();
        let (model, params) = (&self.model, &self.params);
        let (grads, meta) = self.grads.split_at_mut(p);
        let collective = &mut self.collective;
        let timeline = &mut self.timeline;
        let (tx, rx) = mpsc::channel::<Vec<f32>>();
        let mut reduced: Vec<Vec<f32>> = Vec::with_capacity(buckets.len());
        let mut failed: Option<Error> = None;
        let mut busy = Duration::ZERO;
        let mut reduce = |mut buf: Vec<f32>, reduced: &mut Vec<Vec<f32>>| {
            if failed.is_none() {
                let t = Instant::now();
                match collective.all_reduce(&mut buf, ReduceOp::Sum) {
                    Ok(()) => {
                        busy += t.elapsed();
                        timeline.span(Activity::AllReduce, t);
                    }
                    Err(e) => failed = Some(e.into()),
                }
            }
            reduced.push(buf);
        };
        let (de, backward_end) = std::thread::scope(|s| {
            let worker = s.spawn(move || {
                let mut de = Vec::new();
                let mut buf = Vec::with_capacity(lens[0]);
                let (mut k, mut got) = (0, 0);
                let mut ready = |r: Range<usize>, g: &[f32]| {
                    debug_assert_eq!(r, buckets[k][got], "backward order");
                    buf.extend_from_slice(g);
                    got += 1;
                    if got == buckets[k].len() && k + 1 < buckets.len() {
                        // The receiver outlives this thread (scoped): a send cannot fail.
                        let _ =
                            tx.send(std::mem::replace(&mut buf, Vec::with_capacity(lens[k + 1])));
                        k += 1;
                        got = 0;
                    }
                };
                let (rows, loss) = match work {
                    Some((input, labels, weights)) => {
                        let loss = model.loss_and_grads_hooked(
                            params, &input, labels, weights, grads, &mut de, &mut ready,
                        );
                        (input.size, loss)
                    }
                    None => {
                        for range in buckets.iter().flatten() {
                            ready(range.clone(), &grads[range.clone()]);
                        }
                        (0, 0.0)
                    }
                };
                // The last bucket carries every rank's batch size and loss.
                meta.iter_mut().for_each(|m| *m = 0.0);
                meta[rank] = rows as f32;
                meta[world + rank] = loss;
                buf.extend_from_slice(meta);
                let _ = tx.send(buf);
                (de, Instant::now())
            });
            for buf in rx.iter() {
                reduce(buf, &mut reduced);
            }
            match worker.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        });
        self.timeline
            .span_until(Activity::ForwardBackward, started, backward_end);
        if let Some(e) = failed {
            return Err(e);
        }
        self.allreduce.steps += 1;
        self.allreduce.seconds += busy.as_secs_f64();
        self.allreduce.exposed_seconds += Instant::now()
            .saturating_duration_since(backward_end)
            .as_secs_f64();
        for (bucket, values) in self.buckets.iter().zip(&reduced) {
            let mut at = 0;
            for r in bucket {
                self.grads[r.clone()].copy_from_slice(&values[at..at + r.len()]);
                at += r.len();
            }
        }
        let tail = reduced
            .last()
            .map_or(&[][..], |v| &v[v.len() - 2 * world..]);
        self.grads[p..].copy_from_slice(tail);
        Ok(de)
    }

    fn go(&mut self, opts: &TrainOptions, obs: &mut dyn Observer) -> Result<Summary> {
        let epochs = self.cfg.train.epochs;
        let (monitor, higher) = monitor_key(&self.cfg)?;
        let mut steps_here = 0u64;
        let mut rows_here = 0u64;
        let mut train_secs = 0.0f64;
        let rows_per_epoch = self
            .train
            .known_rows()
            .map(|r| r * (1 + self.cfg.train.negatives as u64));
        while self.state.epoch < epochs {
            let epoch = self.state.epoch;
            let bs = self.cfg.train.batch_size as u64;
            obs.epoch_start(epoch + 1, epochs, rows_per_epoch.map(|r| r.div_ceil(bs)));
            let world = self.collective.world_size();
            let mut it = batches(
                self.train.clone(),
                self.space.clone(),
                BatchOptions {
                    batch_size: self.cfg.train.batch_size / world,
                    shuffle_buffer: self.cfg.train.shuffle_buffer,
                    seed: self
                        .cfg
                        .train
                        .seed
                        .wrapping_add((epoch as u64 + 1) * 0x9e37_79b9),
                    skip_batches: self.state.step_in_epoch,
                    with_label: true,
                    group: None,
                    negatives: self.sampler.clone(),
                    prefetch: 16,
                    shard: (world > 1).then(|| (self.collective.rank(), world)),
                    shard_by_rows: false,
                    entities: None,
                },
            )
            .peekable();
            let t0 = Instant::now();
            let mut epoch_rows_here = 0u64;
            loop {
                let t = Instant::now();
                let b = it.next().transpose()?;
                // The next batch, known now: its rows can be asked for while this one trains.
                let next = it.peek().and_then(|r| r.as_ref().ok());
                self.timeline.span(Activity::ReadBatch, t);
                let (loss_sum, rows) = match self.step(b.as_ref(), next)? {
                    Step::Trained { loss_sum, rows } => (loss_sum, rows),
                    Step::EpochEnd => break,
                };
                let loss = loss_sum / rows.max(1) as f64;
                self.state.step_in_epoch += 1;
                self.state.global_step += 1;
                self.state.epoch_loss_sum += loss_sum;
                self.state.epoch_rows += rows;
                steps_here += 1;
                rows_here += rows;
                epoch_rows_here += rows;
                let sps = epoch_rows_here as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                let mean = self.state.epoch_loss_sum / self.state.epoch_rows.max(1) as f64;
                obs.step(self.state.step_in_epoch, mean, sps);
                if self.state.global_step.is_multiple_of(100)
                    && let Some(ev) = &mut self.events
                {
                    let _ = ev.add_scalars(
                        self.state.global_step as i64,
                        [
                            ("train/loss", loss),
                            ("train/samples_per_sec", sps),
                            ("train/learning_rate", f64::from(self.adam.lr)),
                        ],
                    );
                }
                let every = self.cfg.train.checkpoint_every;
                if every > 0 && self.state.global_step.is_multiple_of(every) {
                    let t = Instant::now();
                    self.check_replicas()?;
                    self.checkpoint()?;
                    self.timeline.span(Activity::Checkpoint, t);
                }
                if opts.stop_after_steps.is_some_and(|n| steps_here >= n) {
                    train_secs += t0.elapsed().as_secs_f64();
                    self.write_timeline()?;
                    let version = match &mut self.saver {
                        Some(s) => s.finish()?,
                        None => None,
                    };
                    return Ok(Summary {
                        model_url: self.store.url(),
                        version: version.unwrap_or(0),
                        chosen_epoch: self.state.epoch,
                        history: self.state.history.clone(),
                        samples_per_sec: rows_here as f64 / train_secs.max(1e-9),
                        steps: steps_here,
                        interrupted: true,
                        replica_digest: self.digest(),
                        allreduce: self.allreduce_time(),
                    });
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            train_secs += secs;
            // Evaluate.
            let te = Instant::now();
            let scorer = View {
                model: &self.model,
                params: &self.params,
                table: self.table.rows(),
                space: &self.space,
                eval: &self.cfg.eval,
            };
            let mut metrics: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
            for (name, src) in [("validation", &self.validation), ("test", &self.test)] {
                if let Some(src) = src {
                    let m = evaluate_on(&scorer, src, &mut *self.collective)?;
                    metrics.insert(name.into(), m.into_iter().collect());
                }
            }
            self.timeline.span(Activity::Evaluate, te);
            let record = EpochRecord {
                epoch: epoch + 1,
                train_loss: self.state.epoch_loss_sum / self.state.epoch_rows.max(1) as f64,
                metrics,
                seconds: secs,
                samples_per_sec: epoch_rows_here as f64 / secs.max(1e-9),
            };
            if let Some(ev) = &mut self.events {
                let step = self.state.global_step as i64;
                let mut vals: Vec<(String, f64)> = vec![
                    ("epoch/train_loss".into(), record.train_loss),
                    ("epoch/samples_per_sec".into(), record.samples_per_sec),
                ];
                for (set, m) in &record.metrics {
                    for (k, v) in m {
                        if k != "rows" && k != "groups" {
                            vals.push((format!("{set}/{k}"), *v));
                        }
                    }
                }
                vals.sort_by(|a, b| a.0.cmp(&b.0));
                let _ = ev.add_scalars(step, vals.iter().map(|(k, v)| (k.as_str(), *v)));
            }
            obs.epoch_end(&record);
            // Early stopping on validation.
            let watched = record
                .metrics
                .get("validation")
                .and_then(|m| m.get(&monitor))
                .copied();
            if let Some(v) = watched {
                let improved = match self.state.best {
                    None => true,
                    Some((b, _)) => {
                        if higher {
                            v > b
                        } else {
                            v < b
                        }
                    }
                };
                if improved {
                    self.state.best = Some((v, epoch + 1));
                    self.state.bad_epochs = 0;
                } else {
                    self.state.bad_epochs += 1;
                }
            }
            self.state.history.push(record);
            self.state.epoch += 1;
            self.state.step_in_epoch = 0;
            self.state.epoch_loss_sum = 0.0;
            self.state.epoch_rows = 0;
            let patience_out = self
                .cfg
                .eval
                .patience
                .is_some_and(|p| self.state.bad_epochs >= p);
            let done = self.state.epoch >= epochs || patience_out;
            if patience_out {
                obs.message(&format!(
                    "early stop: validation {monitor} has not improved for {} epochs",
                    self.state.bad_epochs
                ));
            }
            if done {
                break;
            }
            let t = Instant::now();
            self.check_replicas()?;
            self.checkpoint()?;
            self.timeline.span(Activity::Checkpoint, t);
        }
        // Finish: keep the best validation epoch's weights when it was not the last.
        let last_epoch = self.state.epoch;
        let chosen = self.state.best.map_or(last_epoch, |b| b.1);
        let digest = self.digest();
        self.write_timeline()?;
        if self.pull_wait.1 > 0 {
            obs.message(&format!(
                "embedding servers: {:.3} ms per step waiting for rows{}",
                self.pull_wait.0 * 1e3 / self.pull_wait.1 as f64,
                if self.prefetch {
                    " (each step's rows asked for during the previous step)"
                } else {
                    ""
                }
            ));
        }
        // Rank 0 writes the final version; the other ranks are done.
        let Some(saver) = &mut self.saver else {
            return Ok(Summary {
                model_url: self.store.url(),
                version: 0,
                chosen_epoch: chosen,
                history: self.state.history.clone(),
                samples_per_sec: rows_here as f64 / train_secs.max(1e-9),
                steps: steps_here,
                interrupted: false,
                replica_digest: digest,
                allreduce: self.allreduce_time(),
            });
        };
        // The best epoch's version is found in the history (this process may have resumed
        // long after it was written).
        let tip = saver.finish()?;
        if chosen != last_epoch {
            let found = match tip {
                Some(tip) => self.store.find_epoch_end(tip, chosen)?,
                None => None,
            };
            let bv = found.ok_or_else(|| Error::Store {
                url: self.store.url(),
                message: format!(
                    "the history holds no end-of-epoch version of epoch {chosen}, the best on validation {monitor}"
                ),
            })?;
            obs.message(&format!(
                "keeping epoch {chosen} (best validation {monitor}, version {bv:06}) as the final model"
            ));
            let best = match self.table {
                Table::Remote(_) => self.store.load_without_table(bv)?,
                Table::Local(_) => self.store.load(Some(bv))?,
            };
            self.params = best.params;
            self.adam.m = best.adam_m;
            self.adam.v = best.adam_v;
            self.adam.t = best.meta.adam_t;
            match self.table.client() {
                // The other workers are done: nothing pushes while the servers reload.
                Some(c) => c.load(tusk_ps::Rows::Files(&self.store.table_files(bv)?))?,
                None => {
                    self.table = Table::Local(
                        HashedTable::restore(self.cfg.embedding_optimizer()?, best.table)
                            .map_err(|m| Error::Store {
                                url: self.store.url(),
                                message: m,
                            })?
                            .with_init(self.cfg.embedding_init()?)
                            .with_min_count(self.cfg.train.min_count),
                    );
                }
            }
        }
        self.state.finished = true;
        self.checkpoint()?;
        let v = match &mut self.saver {
            Some(s) => s.finish()?.unwrap_or(0),
            None => 0,
        };
        if let Some(c) = self.table.client() {
            if let Ok(stats) = c.stats() {
                let rows: Vec<String> = stats.iter().map(|s| s.rows.to_string()).collect();
                let mib: Vec<String> = stats
                    .iter()
                    .map(|s| format!("{:.1}", s.bytes as f64 / 1048576.0))
                    .collect();
                let lead = stats.iter().map(|s| s.max_lead).max().unwrap_or(0);
                obs.message(&format!(
                    "embedding servers hold {} rows ({} MiB); pulls ran at most {lead} step(s) ahead of the slowest worker",
                    rows.join(" + "),
                    mib.join(" + ")
                ));
            }
            // The run is committed: the servers may exit once the workers disconnect.
            c.finish()?;
        }
        if let Some(ev) = &mut self.events {
            ev.flush()?;
        }
        Ok(Summary {
            model_url: self.store.url(),
            version: v,
            chosen_epoch: chosen,
            history: self.state.history.clone(),
            samples_per_sec: rows_here as f64 / train_secs.max(1e-9),
            steps: steps_here,
            interrupted: false,
            replica_digest: digest,
            allreduce: self.allreduce_time(),
        })
    }

    fn allreduce_time(&self) -> Option<AllReduceTime> {
        (self.allreduce.steps > 0).then_some(self.allreduce)
    }

    /// Gather every rank's timeline; rank 0 writes the trace (a collective: all ranks call
    /// it at the same point, or none does).
    fn write_timeline(&mut self) -> Result<()> {
        if !self.timeline.enabled() {
            return Ok(());
        }
        let all = self.collective.all_gather(&self.timeline.encode())?;
        if let Some(out) = &self.timeline_out
            && self.collective.rank() == 0
        {
            out.write(crate::timeline::render(&all).into_bytes())?;
        }
        Ok(())
    }

    /// FNV-1a over the dense weights and moments, plus an order-free sum of per-row digests
    /// of the embedding table (replicas insert rows in different orders).
    fn digest(&self) -> u64 {
        let fnv = |h: &mut u64, v: &[f32]| {
            for x in v {
                for b in x.to_le_bytes() {
                    *h ^= u64::from(b);
                    *h = h.wrapping_mul(0x0100_0000_01b3);
                }
            }
        };
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        fnv(&mut h, &self.params);
        fnv(&mut h, &self.adam.m);
        fnv(&mut h, &self.adam.v);
        let mut rows: u64 = 0;
        // Embedding servers hold one copy of the rows: only replicas are compared.
        let local = match &self.table {
            Table::Local(t) => Some(t),
            Table::Remote(_) => None,
        };
        for (k, r) in local.iter().flat_map(|t| t.rows()) {
            let mut rh = 0xcbf2_9ce4_8422_2325 ^ k;
            fnv(&mut rh, r);
            rows = rows.wrapping_add(rh);
        }
        h ^ rows.rotate_left(17)
    }

    /// Data-parallel ranks compare digests at every checkpoint: replicas that drift apart
    /// (a bug, or a rank with other data or code) stop the run instead of training on.
    fn check_replicas(&mut self) -> Result<()> {
        if self.collective.world_size() == 1 {
            return Ok(());
        }
        let all = self.collective.all_gather(&self.digest().to_le_bytes())?;
        if let Some(r) = all.iter().position(|d| *d != all[0]) {
            return Err(Error::Training(format!(
                "the replicas diverged: rank {r}'s weights differ from rank 0's at step {}",
                self.state.global_step
            )));
        }
        Ok(())
    }
}

/// Dense gradients up to this many bytes received per step travel in the all-gather of the
/// row gradients instead of a ring all-reduce of their own.
pub const FUSE_BYTES: usize = 256 << 10;

/// Default size of a dense-gradient bucket all-reduced while the backward pass runs.
pub const BUCKET_BYTES: usize = 1 << 20;

/// Run `f` on `pool` (its rayon tasks then go over the pool's threads; this thread waits,
/// leaving its core to them), or here without one.
fn in_pool<R: Send>(pool: Option<&rayon::ThreadPool>, f: impl FnOnce() -> R + Send) -> R {
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}

/// A step's embedding-row updates, split over the compute pool when there are enough rows.
fn apply_rows(
    table: &mut HashedTable,
    pool: Option<&rayon::ThreadPool>,
    threads: usize,
    keys: &[u64],
    grads: &[f32],
) -> std::result::Result<(), tusk_embedding::EmbeddingError> {
    let pool = pool.filter(|_| keys.len() >= 2 * ROWS_PER_PART);
    in_pool(pool, || table.apply_gradients_parts(keys, grads, threads))
}

/// `train.threads`, with 0 resolved from this machine's cores per worker (the cores divided by
/// `LOCAL_WORLD_SIZE`, which `tusk launch` and torchrun set): one of them is left to the
/// worker's input pipeline (its reading, sampling and batching thread) when there are 3 or
/// more; with 2, both compute when a row's dense forward pass takes at least
/// [`HEAVY_ROW`] multiply-adds (the reader then needs little of its core), else one does.
fn compute_threads(configured: usize, multiply_adds_per_row: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let local = std::env::var("LOCAL_WORLD_SIZE")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1);
    match cores / local {
        0 | 1 => 1,
        2 if multiply_adds_per_row >= HEAVY_ROW => 2,
        2 => 1,
        n => n - 1,
    }
}

/// Multiply-adds per row from which a 2-core worker computes on both cores (measured on the
/// MovieLens NeuMF: 6.7k per row ran slower on two threads at batch 256, 107k per row 1.2–1.45×
/// faster).
const HEAVY_ROW: usize = 32_768;

/// Group `order` (layer ranges, in the order the backward pass finishes them) into buckets
/// of at least `bytes` (the last one may be smaller); never splits a layer.
fn plan_buckets(order: &[Range<usize>], bytes: usize) -> Vec<Vec<Range<usize>>> {
    let mut out: Vec<Vec<Range<usize>>> = vec![Vec::new()];
    let mut size = 0;
    for r in order {
        if size >= bytes {
            out.push(Vec::new());
            size = 0;
        }
        size += r.len() * 4;
        if let Some(last) = out.last_mut() {
            last.push(r.clone());
        }
    }
    out
}

/// One rank's row gradients as `[count u64][keys u64…][grads f32…]`, appended to `out`.
fn encode_row_grads(keys: &[u64], grads: &[f32], out: &mut Vec<u8>) {
    out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    for k in keys {
        out.extend_from_slice(&k.to_le_bytes());
    }
    for g in grads {
        out.extend_from_slice(&g.to_le_bytes());
    }
}

/// Append one rank's `[count u64][keys u64…][grads f32…]` block; `None` when malformed.
fn decode_row_grads(
    block: &[u8],
    d: usize,
    keys: &mut Vec<u64>,
    grads: &mut Vec<f32>,
) -> Option<()> {
    let n = u64::from_le_bytes(block.get(..8)?.try_into().ok()?) as usize;
    let kend = 8 + n.checked_mul(8)?;
    if block.len() != kend + n.checked_mul(4 * d)? {
        return None;
    }
    keys.extend(
        block[8..kend]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
    );
    grads.extend(
        block[kend..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
    Some(())
}

/// Writes versions on a thread of its own, in order, one at a time, so that training does not
/// wait for storage (on HDFS a version is several round trips per file). A failed save is
/// reported by the next [`Saver::submit`] or [`Saver::finish`].
struct Saver {
    /// Closed on drop, which ends the thread.
    jobs: Option<mpsc::SyncSender<Encoded>>,
    done: mpsc::Receiver<Result<u64>>,
    thread: Option<JoinHandle<()>>,
    in_flight: bool,
    last: Option<u64>,
}

impl Saver {
    fn start(mut writer: VersionWriter) -> Result<Saver> {
        let last = writer.parent();
        let (jobs, rx) = mpsc::sync_channel::<Encoded>(1);
        let (tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tusk-saver".into())
            .spawn(move || {
                for enc in rx {
                    if tx.send(writer.commit(enc)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Training(format!("starting the model store's writer: {e}")))?;
        Ok(Saver {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            in_flight: false,
            last,
        })
    }

    fn stopped() -> Error {
        Error::Training("the model store's writer thread stopped".into())
    }

    /// Wait for the save in flight, if any; the newest committed version.
    fn finish(&mut self) -> Result<Option<u64>> {
        if self.in_flight {
            self.in_flight = false;
            self.last = Some(self.done.recv().map_err(|_| Self::stopped())??);
        }
        Ok(self.last)
    }

    /// Queue `enc` behind the save in flight (waiting for that one first).
    fn submit(&mut self, enc: Encoded) -> Result<()> {
        self.finish()?;
        let sent = self.jobs.as_ref().is_some_and(|j| j.send(enc).is_ok());
        if !sent {
            return Err(Self::stopped());
        }
        self.in_flight = true;
        Ok(())
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        // Let a save in flight finish (never abandon it half-written mid-rename), then stop.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
