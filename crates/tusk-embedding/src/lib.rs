//! Sparse embedding tables for recommendation models.
//!
//! Rows are keyed by a hash of (feature name, id) — no vocabulary pass: an unseen id gets a
//! row the first time a batch touches it, initialised from the key alone (so the same id gets
//! the same initial row whatever order the data comes in). Optimisers are row-wise: a step
//! touches only the rows the batch used (lazy Adam, as TensorFlow's LazyAdam and PyTorch's
//! SparseAdam; Adagrad). Memory grows with the rows touched, not with the id space.
//!
//! The training loop talks to tables through [`EmbeddingStore`], so a parameter server or
//! sharded tables can stand in for the in-process [`HashedTable`].
//!
//! ```
//! use tusk_embedding::{EmbeddingStore, HashedTable, Optimizer, feature_key};
//! let mut t = HashedTable::new(4, Optimizer::adagrad(0.1), 7);
//! let keys = [feature_key("user_id", 42), feature_key("user_id", 43)];
//! let mut rows = vec![0.0; 8];
//! t.lookup(&keys, &mut rows);
//! t.apply_gradients(&keys, &[1.0; 8]).unwrap();
//! assert_eq!(t.len(), 2);
//! ```

pub mod file;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Keys are already well-mixed 64-bit hashes ([`feature_key`]), so the index uses them as they
/// are instead of hashing them again with SipHash.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else in FNV-style for completeness.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, k: u64) {
        self.0 = k;
    }
}

/// A map keyed by embedding keys.
pub type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

/// Why an update was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EmbeddingError {
    /// Gradients do not hold `keys.len() * dim` values.
    #[error("{got} gradient values for {keys} keys of dimension {dim} (expected {expected})")]
    GradientShape {
        /// Values given.
        got: usize,
        /// Keys given.
        keys: usize,
        /// Row dimension.
        dim: usize,
        /// Values expected.
        expected: usize,
    },
    /// A gradient is NaN or infinite: refusing it keeps the table usable.
    #[error("non-finite gradient for key {0:#018x}")]
    NonFinite(u64),
}

/// `Result` with [`EmbeddingError`].
pub type Result<T, E = EmbeddingError> = std::result::Result<T, E>;

/// What a training loop needs from embedding storage, local or remote.
pub trait EmbeddingStore {
    /// Row width.
    fn dim(&self) -> usize;
    /// Copy the rows of `keys` into `out` (`keys.len() * dim` values), creating missing rows.
    fn lookup(&mut self, keys: &[u64], out: &mut [f32]);
    /// Apply one optimiser step from per-key row gradients (`keys.len() * dim` values).
    /// Repeated keys have their gradients summed first, as a dense gather's backward would.
    fn apply_gradients(&mut self, keys: &[u64], grads: &[f32]) -> Result<()>;
}

/// 64-bit key of (feature, id): FNV-1a over the name, then mixed with the id (SplitMix64
/// finaliser), so ids of different features never share rows.
pub fn feature_key(feature: &str, id: i64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in feature.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h ^ mix(id as u64))
}

/// The embedding server (`0..shards`) that owns `key`: SplitMix64's finaliser of the key,
/// modulo the number of servers. Keys are already hashes of (feature, id); mixing them once
/// more keeps the shard independent of the bits the in-process index uses.
pub fn shard_of(key: u64, shards: usize) -> usize {
    (mix(key ^ 0x5eed_5a4d_0000_0001) % shards.max(1) as u64) as usize
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Row-wise optimisers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// Plain SGD: `w -= lr * g`.
    Sgd {
        /// Learning rate.
        lr: f32,
    },
    /// Adagrad with per-element accumulators.
    Adagrad {
        /// Learning rate.
        lr: f32,
        /// Initial accumulator value.
        initial_accumulator: f32,
        /// Added to the root for stability.
        eps: f32,
    },
    /// Adam with moments and bias correction per row. Lazy (`dense: false`): a row's moments
    /// advance only in steps that touch it. Dense: every row's moments decay and every row
    /// moves by its momentum in every step, touched or not — what `torch.optim.Adam` does to a
    /// dense `nn.Embedding` — at a cost of O(rows) per step.
    Adam {
        /// Learning rate.
        lr: f32,
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Added to the root for stability.
        eps: f32,
        /// Update every row every step (see above).
        dense: bool,
    },
}

/// How a new row's values are drawn (from the table seed and the row's key alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Init {
    /// Uniform in ±scale.
    #[default]
    Uniform,
    /// Normal with standard deviation `scale` (Box–Muller), as `nn.init.normal_`.
    Normal,
}

impl Optimizer {
    /// Adagrad with TensorFlow's defaults (accumulator 0.1, eps 1e-7).
    pub fn adagrad(lr: f32) -> Optimizer {
        Optimizer::Adagrad {
            lr,
            initial_accumulator: 0.1,
            eps: 1e-7,
        }
    }

    /// Adam with the usual defaults (0.9, 0.999, 1e-8).
    pub fn adam(lr: f32) -> Optimizer {
        Optimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            dense: false,
        }
    }

    /// [`Optimizer::adam`] that moves every row every step (`dense: true`).
    pub fn adam_dense(lr: f32) -> Optimizer {
        Optimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            dense: true,
        }
    }

    /// Optimiser state values per row element (the Adam step count is kept per row).
    fn slots(&self) -> usize {
        match self {
            Optimizer::Sgd { .. } => 0,
            Optimizer::Adagrad { .. } => 1,
            Optimizer::Adam { .. } => 2,
        }
    }
}

/// A table's full contents, for checkpoints ([`HashedTable::export`] / [`HashedTable::restore`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TableState {
    /// Row width.
    pub dim: usize,
    /// Initialisation seed.
    pub seed: u64,
    /// Initialisation scale.
    pub init_scale: f32,
    /// Keys in creation order.
    pub keys: Vec<u64>,
    /// `dim` values per key.
    pub values: Vec<f32>,
    /// Optimiser state, `slots × dim` per key (Adagrad: accumulators; Adam: m then v).
    pub state: Vec<f32>,
    /// Adam steps per key.
    pub steps: Vec<u32>,
    /// Frequency admission: keys seen fewer than `min_count` times, without a row yet.
    pub pending_keys: Vec<u64>,
    /// How often each of `pending_keys` was seen.
    pub pending_counts: Vec<u32>,
}

/// [`TableState`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TableView<'a> {
    /// Row width.
    pub dim: usize,
    /// Initialisation seed.
    pub seed: u64,
    /// Initialisation scale.
    pub init_scale: f32,
    /// Keys in creation order.
    pub keys: &'a [u64],
    /// `dim` values per key.
    pub values: &'a [f32],
    /// Optimiser state per key.
    pub state: &'a [f32],
    /// Adam steps per key.
    pub steps: &'a [u32],
    /// Keys waiting for admission.
    pub pending_keys: &'a [u64],
    /// Their counts.
    pub pending_counts: &'a [u32],
}

impl TableView<'_> {
    /// An owned copy of the rows whose key `keep` accepts, in this view's order.
    pub fn select(&self, keep: impl Fn(u64) -> bool) -> TableState {
        let d = self.dim;
        let w = if self.keys.is_empty() {
            0
        } else {
            self.state.len() / self.keys.len()
        };
        let mut out = TableState::empty(d, self.seed, self.init_scale);
        for (r, &k) in self.keys.iter().enumerate() {
            if keep(k) {
                out.keys.push(k);
                out.values
                    .extend_from_slice(&self.values[r * d..(r + 1) * d]);
                out.state.extend_from_slice(&self.state[r * w..(r + 1) * w]);
                out.steps.push(self.steps[r]);
            }
        }
        for (&k, &c) in self.pending_keys.iter().zip(self.pending_counts) {
            if keep(k) {
                out.pending_keys.push(k);
                out.pending_counts.push(c);
            }
        }
        out
    }

    /// An owned copy.
    pub fn to_state(&self) -> TableState {
        TableState {
            dim: self.dim,
            seed: self.seed,
            init_scale: self.init_scale,
            keys: self.keys.to_vec(),
            values: self.values.to_vec(),
            state: self.state.to_vec(),
            steps: self.steps.to_vec(),
            pending_keys: self.pending_keys.to_vec(),
            pending_counts: self.pending_counts.to_vec(),
        }
    }
}

impl TableState {
    /// No rows.
    pub fn empty(dim: usize, seed: u64, init_scale: f32) -> TableState {
        TableState {
            dim,
            seed,
            init_scale,
            keys: Vec::new(),
            values: Vec::new(),
            state: Vec::new(),
            steps: Vec::new(),
            pending_keys: Vec::new(),
            pending_counts: Vec::new(),
        }
    }

    /// The rows of shard `shard` of `shards` ([`shard_of`]), in this state's order.
    pub fn shard(&self, shard: usize, shards: usize) -> TableState {
        self.view().select(|k| shard_of(k, shards) == shard)
    }

    /// Concatenate the shards' rows into one state, sorted by key: the same rows give the
    /// same bytes however they were split or in which order they were created.
    pub fn merge(parts: Vec<TableState>) -> Result<TableState, String> {
        let Some(first) = parts.first() else {
            return Err("no table parts to merge".into());
        };
        let (dim, seed, init_scale) = (first.dim, first.seed, first.init_scale);
        let n: usize = parts.iter().map(|p| p.keys.len()).sum();
        let slots = if n == 0 {
            0
        } else {
            parts.iter().map(|p| p.state.len()).sum::<usize>() / (n * dim.max(1))
        };
        let mut rows: Vec<(u64, usize, usize)> = Vec::with_capacity(n);
        for (i, p) in parts.iter().enumerate() {
            if p.dim != dim || p.seed != seed || p.init_scale.to_bits() != init_scale.to_bits() {
                return Err(format!(
                    "table part {i} has dimension {}, seed {}, scale {} where part 0 has {dim}, {seed}, {init_scale}",
                    p.dim, p.seed, p.init_scale
                ));
            }
            if p.values.len() != p.keys.len() * dim
                || p.state.len() != p.keys.len() * dim * slots
                || p.steps.len() != p.keys.len()
            {
                return Err(format!(
                    "table part {i}: sizes disagree with its {} keys",
                    p.keys.len()
                ));
            }
            rows.extend(p.keys.iter().enumerate().map(|(r, &k)| (k, i, r)));
        }
        rows.sort_unstable_by_key(|r| r.0);
        if let Some(w) = rows.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(format!("key {:#018x} is in two table parts", w[0].0));
        }
        let mut out = TableState::empty(dim, seed, init_scale);
        out.keys.reserve(n);
        out.values.reserve(n * dim);
        out.state.reserve(n * dim * slots);
        out.steps.reserve(n);
        let mut pending: Vec<(u64, u32)> = parts
            .iter()
            .flat_map(|p| {
                p.pending_keys
                    .iter()
                    .copied()
                    .zip(p.pending_counts.iter().copied())
            })
            .collect();
        pending.sort_unstable();
        (out.pending_keys, out.pending_counts) = pending.into_iter().unzip();
        let w = dim * slots;
        for (k, i, r) in rows {
            let p = &parts[i];
            out.keys.push(k);
            out.values
                .extend_from_slice(&p.values[r * dim..(r + 1) * dim]);
            out.state.extend_from_slice(&p.state[r * w..(r + 1) * w]);
            out.steps.push(p.steps[r]);
        }
        Ok(out)
    }

    /// Borrow as a [`TableView`].
    pub fn view(&self) -> TableView<'_> {
        TableView {
            dim: self.dim,
            seed: self.seed,
            init_scale: self.init_scale,
            keys: &self.keys,
            values: &self.values,
            state: &self.state,
            steps: &self.steps,
            pending_keys: &self.pending_keys,
            pending_counts: &self.pending_counts,
        }
    }
}

/// An in-process hashed embedding table.
#[derive(Debug, Clone)]
pub struct HashedTable {
    dim: usize,
    optimizer: Optimizer,
    seed: u64,
    /// Initial values are uniform in ±`init_scale` (or normal with that deviation).
    init_scale: f32,
    init: Init,
    index: KeyMap<usize>,
    /// Row values, `dim` per row, in creation order.
    values: Vec<f32>,
    /// Optimiser state, `slots * dim` per row.
    state: Vec<f32>,
    /// Adam steps per row.
    steps: Vec<u32>,
    keys: Vec<u64>,
    /// Frequency admission: a key gets a row once its gradients arrived this many times
    /// (1: at once).
    min_count: u32,
    /// Keys seen fewer times, their counts, and where each is in the two lists.
    pending_keys: Vec<u64>,
    pending_counts: Vec<u32>,
    pending_index: KeyMap<usize>,
    /// Scratch, not state: per row, the last call of [`HashedTable::sum_repeats`] that saw it and
    /// the row's place in that call's list of distinct rows.
    marks: Vec<(u32, u32)>,
    mark_epoch: u32,
    /// Scratch, not state: Adam's bias corrections `(1 − β₁ᵗ, 1 − β₂ᵗ)` for steps 1, 2, …
    /// (up to [`CORRECTIONS_CACHED`]), the values `powi` gives, computed once.
    corrections: Vec<[f32; 2]>,
}

/// Adam steps whose bias corrections a table keeps computed.
const CORRECTIONS_CACHED: usize = 1 << 16;

fn add_into(acc: &mut [f32], g: &[f32]) {
    for (a, b) in acc.iter_mut().zip(g) {
        *a += b;
    }
}

/// Fewest rows per task when a batch's row updates are split
/// ([`HashedTable::apply_gradients_parts`]).
pub const ROWS_PER_PART: usize = 64;

impl HashedTable {
    /// An empty table of `dim`-wide rows, initialised uniformly in ±1/sqrt(dim) from `seed`.
    pub fn new(dim: usize, optimizer: Optimizer, seed: u64) -> HashedTable {
        HashedTable {
            dim,
            optimizer,
            seed,
            init_scale: 1.0 / (dim.max(1) as f32).sqrt(),
            init: Init::Uniform,
            index: KeyMap::default(),
            values: Vec::new(),
            state: Vec::new(),
            steps: Vec::new(),
            keys: Vec::new(),
            min_count: 1,
            pending_keys: Vec::new(),
            pending_counts: Vec::new(),
            pending_index: KeyMap::default(),
            marks: Vec::new(),
            mark_epoch: 0,
            corrections: Vec::new(),
        }
    }

    /// Frequency admission (DeepRec's and Monolith's answer to long-tail ids): a key gets a
    /// row only once its gradients have arrived `n` times (occurrences in applied batches,
    /// every worker's); until then it reads as its initial value and its gradients only
    /// count. Not part of [`TableState`] (the counts are): set it after a restore too.
    pub fn with_min_count(mut self, n: u32) -> HashedTable {
        self.min_count = n.max(1);
        self
    }

    /// Keys seen but not (yet) given a row.
    pub fn pending_len(&self) -> usize {
        self.pending_keys.len()
    }

    /// Use another initial scale (values uniform in ±`scale`).
    pub fn with_init_scale(mut self, scale: f32) -> HashedTable {
        self.init_scale = scale;
        self
    }

    /// Draw new rows from `init` (the scale stays). Not part of [`TableState`]: rows created
    /// after a restore follow the distribution set here, so set the one training used.
    pub fn with_init(mut self, init: Init) -> HashedTable {
        self.init = init;
        self
    }

    /// Rows created so far.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no row exists yet.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The row of `key`, if it exists.
    pub fn get(&self, key: u64) -> Option<&[f32]> {
        self.index
            .get(&key)
            .map(|&r| &self.values[r * self.dim..(r + 1) * self.dim])
    }

    /// Every (key, row) in creation order, for checkpoints.
    pub fn rows(&self) -> impl Iterator<Item = (u64, &[f32])> {
        self.keys
            .iter()
            .zip(self.values.chunks_exact(self.dim.max(1)))
            .map(|(k, v)| (*k, v))
    }

    /// Bytes held by rows and optimiser state (grows with rows touched).
    pub fn memory_bytes(&self) -> usize {
        (self.values.len() + self.state.len()) * 4
            + self.steps.len() * 4
            + self.keys.len() * 8
            + self.index.capacity() * 16
            + self.pending_keys.len() * 12
            + self.pending_index.capacity() * 16
    }

    /// The optimiser rows are updated with.
    pub fn optimizer(&self) -> Optimizer {
        self.optimizer
    }

    /// Change the learning rate (schedules; checkpoints that resume with another rate).
    pub fn set_learning_rate(&mut self, new_lr: f32) {
        match &mut self.optimizer {
            Optimizer::Sgd { lr } | Optimizer::Adagrad { lr, .. } | Optimizer::Adam { lr, .. } => {
                *lr = new_lr
            }
        }
    }

    /// Everything needed to rebuild this table exactly: keys, values, optimiser state and
    /// per-row step counts, in creation order.
    pub fn export(&self) -> TableState {
        self.view().to_state()
    }

    /// The same contents as [`HashedTable::export`], borrowed (checkpoints without a copy).
    pub fn view(&self) -> TableView<'_> {
        TableView {
            dim: self.dim,
            seed: self.seed,
            init_scale: self.init_scale,
            keys: &self.keys,
            values: &self.values,
            state: &self.state,
            steps: &self.steps,
            pending_keys: &self.pending_keys,
            pending_counts: &self.pending_counts,
        }
    }

    /// Rebuild a table from [`HashedTable::export`]; fails when the pieces disagree in size.
    pub fn restore(optimizer: Optimizer, s: TableState) -> Result<HashedTable, String> {
        let n = s.keys.len();
        let slots = optimizer.slots();
        if s.values.len() != n * s.dim || s.state.len() != n * s.dim * slots || s.steps.len() != n {
            return Err(format!(
                "table state sizes disagree: {n} keys of dimension {}, {} values, {} state values ({} expected for this optimiser), {} step counts",
                s.dim,
                s.values.len(),
                s.state.len(),
                n * s.dim * slots,
                s.steps.len()
            ));
        }
        let mut index = KeyMap::with_capacity_and_hasher(n, Default::default());
        for (r, k) in s.keys.iter().enumerate() {
            if index.insert(*k, r).is_some() {
                return Err(format!("key {k:#018x} appears twice"));
            }
        }
        if s.pending_keys.len() != s.pending_counts.len() {
            return Err(format!(
                "{} keys waiting for admission but {} counts",
                s.pending_keys.len(),
                s.pending_counts.len()
            ));
        }
        let mut pending_index =
            KeyMap::with_capacity_and_hasher(s.pending_keys.len(), Default::default());
        for (i, k) in s.pending_keys.iter().enumerate() {
            if index.contains_key(k) || pending_index.insert(*k, i).is_some() {
                return Err(format!("key {k:#018x} both has a row and waits for one"));
            }
        }
        Ok(HashedTable {
            dim: s.dim,
            optimizer,
            seed: s.seed,
            init_scale: s.init_scale,
            init: Init::Uniform,
            index,
            values: s.values,
            state: s.state,
            steps: s.steps,
            keys: s.keys,
            min_count: 1,
            pending_keys: s.pending_keys,
            pending_counts: s.pending_counts,
            pending_index,
            marks: Vec::new(),
            mark_epoch: 0,
            corrections: Vec::new(),
        })
    }

    /// Count `n` more occurrences of `key`, which has no row; true when that admits it (the
    /// count is then dropped and the caller creates the row).
    fn admit(&mut self, key: u64, n: u32) -> bool {
        let i = match self.pending_index.get(&key) {
            Some(&i) => i,
            None => {
                self.pending_index.insert(key, self.pending_keys.len());
                self.pending_keys.push(key);
                self.pending_counts.push(0);
                self.pending_keys.len() - 1
            }
        };
        self.pending_counts[i] = self.pending_counts[i].saturating_add(n);
        if self.pending_counts[i] < self.min_count {
            return false;
        }
        self.pending_index.remove(&key);
        self.pending_keys.swap_remove(i);
        self.pending_counts.swap_remove(i);
        if let Some(&moved) = self.pending_keys.get(i) {
            self.pending_index.insert(moved, i);
        }
        true
    }

    /// Copy the rows of `keys` into `out` without creating rows: a missing key reads as
    /// its deterministic initial value (what a training lookup would have created).
    pub fn peek(&self, keys: &[u64], out: &mut [f32]) {
        let d = self.dim;
        for (i, &k) in keys.iter().enumerate() {
            let o = &mut out[i * d..(i + 1) * d];
            match self.index.get(&k) {
                Some(&r) => o.copy_from_slice(&self.values[r * d..(r + 1) * d]),
                None => self.initial_row(k, o),
            }
        }
    }

    fn initial_row(&self, key: u64, out: &mut [f32]) {
        let mut s = mix(self.seed ^ key);
        let mut unit = || {
            s = mix(s);
            (s >> 40) as f32 / (1u64 << 24) as f32 // [0, 1)
        };
        match self.init {
            Init::Uniform => {
                for o in out.iter_mut() {
                    *o = (unit() * 2.0 - 1.0) * self.init_scale;
                }
            }
            Init::Normal => {
                for o in out.iter_mut() {
                    // Box–Muller; 1 − u is in (0, 1], so the logarithm is finite.
                    let (u1, u2) = (1.0 - unit(), unit());
                    let z = (-2.0 * f64::from(u1).ln()).sqrt()
                        * (std::f64::consts::TAU * f64::from(u2)).cos();
                    *o = z as f32 * self.init_scale;
                }
            }
        }
    }

    /// `None` when no row appears twice in `rows` (the usual case); else the distinct rows
    /// in first-occurrence order with their gradients (`grads`, one `dim`-wide gradient per
    /// entry of `rows`) summed in order. One pass over a per-row mark, no map.
    fn sum_repeats(&mut self, rows: &[usize], grads: &[f32]) -> Option<(Vec<usize>, Vec<f32>)> {
        let d = self.dim;
        self.mark_epoch = self.mark_epoch.wrapping_add(1);
        if self.mark_epoch == 0 {
            self.marks.iter_mut().for_each(|m| m.0 = 0);
            self.mark_epoch = 1;
        }
        let epoch = self.mark_epoch;
        self.marks.resize(self.keys.len(), (0, 0));
        let mut out: Option<(Vec<usize>, Vec<f32>)> = None;
        let mut distinct = 0u32;
        for (i, &r) in rows.iter().enumerate() {
            let g = &grads[i * d..(i + 1) * d];
            let (at, new) = match self.marks[r] {
                (e, j) if e == epoch => (j as usize, false),
                _ => {
                    self.marks[r] = (epoch, distinct);
                    distinct += 1;
                    (distinct as usize - 1, true)
                }
            };
            if !new && out.is_none() {
                // The first repeat: every entry before it was a row of its own.
                let mut summed = vec![0.0; i * d];
                add_into(&mut summed, &grads[..i * d]);
                out = Some((rows[..i].to_vec(), summed));
            }
            if let Some((distinct_rows, summed)) = &mut out {
                if new {
                    distinct_rows.push(r);
                    summed.resize(summed.len() + d, 0.0);
                }
                add_into(&mut summed[at * d..(at + 1) * d], g);
            }
        }
        out
    }

    /// Make sure Adam's bias corrections for steps up to `t` are computed.
    fn corrections_up_to(&mut self, t: u64) {
        let Optimizer::Adam { beta1, beta2, .. } = self.optimizer else {
            return;
        };
        let want = (t.min(CORRECTIONS_CACHED as u64)) as usize;
        while self.corrections.len() < want {
            let t = self.corrections.len() as i32 + 1;
            self.corrections
                .push([1.0 - beta1.powi(t), 1.0 - beta2.powi(t)]);
        }
    }

    /// One row's sparse optimiser step with gradient `g`.
    fn update_row(&mut self, r: usize, g: &[f32]) {
        let (d, slots) = (self.dim, self.optimizer.slots());
        self.corrections_up_to(u64::from(self.steps[r]) + 1);
        step_row(
            &self.optimizer,
            &self.corrections,
            &mut self.values[r * d..(r + 1) * d],
            &mut self.state[r * slots * d..(r + 1) * slots * d],
            &mut self.steps[r],
            g,
        );
    }

    /// Optimiser steps for distinct rows: `(row, i)` moves `row` by `src[i·dim..(i+1)·dim]`.
    /// Rows are independent, so with `parts` > 1 the list is split by row ranges into rayon
    /// tasks; the result is the same whatever the split.
    fn update_rows(&mut self, upd: &mut [(usize, usize)], src: &[f32], parts: usize) {
        let (d, slots) = (self.dim, self.optimizer.slots());
        let latest = upd.iter().map(|u| self.steps[u.0]).max().unwrap_or(0);
        self.corrections_up_to(u64::from(latest) + 1);
        let parts = parts.min(upd.len() / ROWS_PER_PART).max(1);
        let HashedTable {
            optimizer,
            corrections,
            values,
            state,
            steps,
            keys,
            ..
        } = self;
        let (opt, corr) = (&*optimizer, &corrections[..]);
        let run =
            |upd: &[(usize, usize)], base: usize, v: &mut [f32], s: &mut [f32], t: &mut [u32]| {
                for &(r, i) in upd {
                    let r = r - base;
                    step_row(
                        opt,
                        corr,
                        &mut v[r * d..(r + 1) * d],
                        &mut s[r * slots * d..(r + 1) * slots * d],
                        &mut t[r],
                        &src[i * d..(i + 1) * d],
                    );
                }
            };
        if parts == 1 {
            return run(upd, 0, values, state, steps);
        }
        upd.sort_unstable_by_key(|u| u.0);
        let groups: Vec<&[(usize, usize)]> = upd.chunks(upd.len().div_ceil(parts)).collect();
        let (mut v, mut s, mut t) = (&mut values[..], &mut state[..], &mut steps[..]);
        let mut base = 0;
        let mut jobs = Vec::with_capacity(groups.len());
        for (k, g) in groups.iter().enumerate() {
            // This part owns the rows from its first up to the next part's first.
            let end = groups.get(k + 1).map_or(keys.len(), |n| n[0].0);
            let (vh, vr) = std::mem::take(&mut v).split_at_mut((end - base) * d);
            let (sh, sr) = std::mem::take(&mut s).split_at_mut((end - base) * slots * d);
            let (th, tr) = std::mem::take(&mut t).split_at_mut(end - base);
            (v, s, t) = (vr, sr, tr);
            jobs.push((*g, base, vh, sh, th));
            base = end;
        }
        use rayon::prelude::*;
        jobs.into_par_iter()
            .with_max_len(1)
            .for_each(|(g, base, v, s, t)| run(g, base, v, s, t));
    }

    fn row(&mut self, key: u64) -> usize {
        if let Some(&r) = self.index.get(&key) {
            return r;
        }
        let r = self.keys.len();
        self.index.insert(key, r);
        self.keys.push(key);
        // Deterministic from (seed, key) alone.
        let start = self.values.len();
        self.values.resize(start + self.dim, 0.0);
        let mut row = std::mem::take(&mut self.values);
        self.initial_row(key, &mut row[start..]);
        self.values = row;
        let init = match self.optimizer {
            Optimizer::Adagrad {
                initial_accumulator,
                ..
            } => initial_accumulator,
            _ => 0.0,
        };
        self.state
            .extend(std::iter::repeat_n(init, self.optimizer.slots() * self.dim));
        self.steps.push(0);
        r
    }
}

impl EmbeddingStore for HashedTable {
    fn dim(&self) -> usize {
        self.dim
    }

    fn lookup(&mut self, keys: &[u64], out: &mut [f32]) {
        let d = self.dim;
        if self.min_count > 1 {
            // Rows are created on admission, when gradients arrive, not on reading.
            self.peek(keys, out);
            return;
        }
        for (i, &k) in keys.iter().enumerate() {
            let r = self.row(k);
            out[i * d..(i + 1) * d].copy_from_slice(&self.values[r * d..(r + 1) * d]);
        }
    }

    fn apply_gradients(&mut self, keys: &[u64], grads: &[f32]) -> Result<()> {
        self.apply_gradients_parts(keys, grads, 1)
    }
}

impl HashedTable {
    /// [`EmbeddingStore::apply_gradients`], with the row updates of a large batch split into
    /// up to `parts` rayon tasks (over the threads of the pool it runs in; a task no other
    /// thread has taken runs on the calling one). Rows are independent, so the result is the
    /// same bit for bit whatever `parts` is.
    pub fn apply_gradients_parts(
        &mut self,
        keys: &[u64],
        grads: &[f32],
        parts: usize,
    ) -> Result<()> {
        let d = self.dim;
        if grads.len() != keys.len() * d {
            return Err(EmbeddingError::GradientShape {
                got: grads.len(),
                keys: keys.len(),
                dim: d,
                expected: keys.len() * d,
            });
        }
        let dense_adam = matches!(self.optimizer, Optimizer::Adam { dense: true, .. });
        if self.min_count == 1 && !dense_adam {
            // The usual case. Rows are created in key order, as the general path below creates
            // them (first occurrences); repeated keys have their gradients summed in order
            // through a per-row mark instead of a map of the batch's keys, and distinct keys
            // (the commonest batch) send each gradient to its row with no copy.
            if let Some(i) = grads
                .chunks_exact(d.max(1))
                .position(|g| g.iter().any(|x| !x.is_finite()))
            {
                return Err(EmbeddingError::NonFinite(keys[i]));
            }
            let rows: Vec<usize> = keys.iter().map(|&k| self.row(k)).collect();
            let (rows, summed) = match self.sum_repeats(&rows, grads) {
                Some((distinct, summed)) => (distinct, Some(summed)),
                None => (rows, None),
            };
            let mut upd: Vec<(usize, usize)> = rows.into_iter().zip(0..).collect();
            self.update_rows(&mut upd, summed.as_deref().unwrap_or(grads), parts);
            return Ok(());
        }
        // Sum the gradients of repeated keys (first-occurrence order, for determinism).
        let mut slot: KeyMap<usize> =
            KeyMap::with_capacity_and_hasher(keys.len(), Default::default());
        let mut order: Vec<u64> = Vec::with_capacity(keys.len());
        let mut summed: Vec<f32> = Vec::with_capacity(grads.len());
        let mut seen: Vec<u32> = Vec::with_capacity(keys.len());
        for (i, &k) in keys.iter().enumerate() {
            let g = &grads[i * d..(i + 1) * d];
            if g.iter().any(|x| !x.is_finite()) {
                return Err(EmbeddingError::NonFinite(k));
            }
            let j = *slot.entry(k).or_insert_with(|| {
                order.push(k);
                seen.push(0);
                summed.resize(summed.len() + d, 0.0);
                order.len() - 1
            });
            seen[j] += 1;
            for (a, b) in summed[j * d..(j + 1) * d].iter_mut().zip(g) {
                *a += b;
            }
        }
        // Frequency admission: keys without a row count their occurrences; those that reach
        // `min_count` get a row now and this step's gradient, the others nothing yet.
        let admitted: Vec<bool> = if self.min_count > 1 {
            order
                .iter()
                .zip(&seen)
                .map(|(&k, &n)| self.index.contains_key(&k) || self.admit(k, n))
                .collect()
        } else {
            vec![true; order.len()]
        };
        if dense_adam {
            // Every row moves: touched rows with their gradient, the others with zero.
            let mut grad_of = vec![u32::MAX; self.keys.len()];
            for (j, k) in order.iter().enumerate() {
                if !admitted[j] {
                    continue;
                }
                let r = self.row(*k);
                if r >= grad_of.len() {
                    grad_of.resize(r + 1, u32::MAX);
                }
                grad_of[r] = j as u32;
            }
            let zero = vec![0.0; d];
            for (r, &j) in grad_of.iter().enumerate() {
                let g = if j == u32::MAX {
                    &zero[..]
                } else {
                    &summed[j as usize * d..(j as usize + 1) * d]
                };
                self.update_row(r, g);
            }
            return Ok(());
        }
        for (j, k) in order.into_iter().enumerate() {
            if !admitted[j] {
                continue;
            }
            let r = self.row(k);
            self.update_row(r, &summed[j * d..(j + 1) * d]);
        }
        Ok(())
    }
}

/// One row's sparse optimiser step: `w` its values, `st` its optimiser state, `step` its Adam
/// step count, `g` its gradient; `corr` holds Adam's bias corrections by step (computed
/// here past its end). The loops run over zipped slices so that they vectorise.
#[multiversion::multiversion(targets("x86_64+avx2", "x86_64+avx"))]
fn step_row(
    opt: &Optimizer,
    corr: &[[f32; 2]],
    w: &mut [f32],
    st: &mut [f32],
    step: &mut u32,
    g: &[f32],
) {
    match *opt {
        Optimizer::Sgd { lr } => {
            for (w, g) in w.iter_mut().zip(g) {
                *w -= lr * g;
            }
        }
        Optimizer::Adagrad { lr, eps, .. } => {
            for ((w, g), a) in w.iter_mut().zip(g).zip(st.iter_mut()) {
                *a += g * g;
                *w -= lr * g / (a.sqrt() + eps);
            }
        }
        Optimizer::Adam {
            lr,
            beta1,
            beta2,
            eps,
            ..
        } => {
            *step += 1;
            let t = *step as i32;
            let [c1, c2] = match corr.get((t as usize).wrapping_sub(1)) {
                Some(&c) if t > 0 => c,
                _ => [1.0 - beta1.powi(t), 1.0 - beta2.powi(t)],
            };
            let (m, v) = st.split_at_mut(w.len());
            for (((w, m), v), g) in w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
                *m = beta1 * *m + (1.0 - beta1) * g;
                *v = beta2 * *v + (1.0 - beta2) * g * g;
                let mh = *m / c1;
                let vh = *v / c2;
                *w -= lr * mh / (vh.sqrt() + eps);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `step_row` (compiled also for AVX2 and chosen at run time) gives, on this CPU, the bits
    /// of the optimisers' formulas written out element by element here (compiled for the
    /// baseline): the wider build changes the vectors, not the arithmetic. Rows of 37 values
    /// (vector tails), 20 steps each.
    #[test]
    fn row_steps_give_the_formulas_bits_on_every_build() {
        let d = 37;
        let mut seed = 9u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let opts = [
            Optimizer::Sgd { lr: 0.05 },
            Optimizer::Adagrad {
                lr: 0.1,
                initial_accumulator: 0.1,
                eps: 1e-10,
            },
            Optimizer::Adam {
                lr: 0.01,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                dense: false,
            },
        ];
        for opt in opts {
            let slots = opt.slots();
            let mut w: Vec<f32> = (0..d).map(|_| next()).collect();
            let mut st: Vec<f32> = (0..slots * d).map(|_| next().abs()).collect();
            let (mut want_w, mut want_st) = (w.clone(), st.clone());
            let (mut step, mut t) = (0u32, 0i32);
            for _ in 0..20 {
                let g: Vec<f32> = (0..d).map(|_| next()).collect();
                step_row(&opt, &[], &mut w, &mut st, &mut step, &g);
                match opt {
                    Optimizer::Sgd { lr } => {
                        for k in 0..d {
                            want_w[k] -= lr * g[k];
                        }
                    }
                    Optimizer::Adagrad { lr, eps, .. } => {
                        for k in 0..d {
                            want_st[k] += g[k] * g[k];
                            want_w[k] -= lr * g[k] / (want_st[k].sqrt() + eps);
                        }
                    }
                    Optimizer::Adam {
                        lr,
                        beta1,
                        beta2,
                        eps,
                        ..
                    } => {
                        t += 1;
                        let (c1, c2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
                        for k in 0..d {
                            let (m, v) = (want_st[k], want_st[d + k]);
                            let m = beta1 * m + (1.0 - beta1) * g[k];
                            let v = beta2 * v + (1.0 - beta2) * g[k] * g[k];
                            (want_st[k], want_st[d + k]) = (m, v);
                            want_w[k] -= lr * (m / c1) / ((v / c2).sqrt() + eps);
                        }
                    }
                }
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&w), bits(&want_w), "{opt:?}");
            assert_eq!(bits(&st), bits(&want_st), "{opt:?}");
        }
    }

    #[test]
    fn min_count_admits_a_key_on_its_nth_occurrence_by_hand() {
        let (a, b) = (feature_key("id", 1), feature_key("id", 2));
        let mut t = HashedTable::new(2, Optimizer::Sgd { lr: 0.5 }, 3).with_min_count(3);
        let mut init = vec![0.0; 4];
        t.peek(&[a, b], &mut init);
        let mut out = vec![9.0; 4];
        t.lookup(&[a, b], &mut out);
        assert_eq!(
            out, init,
            "reading creates nothing and gives the initial values"
        );
        assert!(t.is_empty());
        // a twice, b once: counted, not trained.
        t.apply_gradients(&[a, a, b], &[1.0; 6]).unwrap();
        assert!(t.is_empty());
        assert_eq!(t.pending_len(), 2);
        // The third a admits it: a row from its initial value with this step's gradient.
        t.apply_gradients(&[a], &[1.0, 2.0]).unwrap();
        assert_eq!(t.get(a).unwrap(), &[init[0] - 0.5, init[1] - 1.0]);
        assert_eq!(t.get(b), None);
        assert_eq!(t.pending_len(), 1);
        // The counts survive export and restore; b's third occurrence admits it there.
        let st = t.export();
        assert_eq!(
            (st.pending_keys.clone(), st.pending_counts.clone()),
            (vec![b], vec![1])
        );
        let mut back = HashedTable::restore(Optimizer::Sgd { lr: 0.5 }, st)
            .unwrap()
            .with_min_count(3);
        back.apply_gradients(&[b, b], &[1.0; 4]).unwrap();
        assert_eq!(back.get(b).unwrap(), &[init[2] - 1.0, init[3] - 1.0]);
        assert_eq!(back.pending_len(), 0);
        // Shards split and merge the waiting keys too.
        t.apply_gradients(&[feature_key("id", 3)], &[1.0; 2])
            .unwrap();
        let all = t.export();
        let merged = TableState::merge((0..3).map(|s| all.shard(s, 3)).collect()).unwrap();
        let mut want: Vec<(u64, u32)> = all
            .pending_keys
            .iter()
            .copied()
            .zip(all.pending_counts.iter().copied())
            .collect();
        want.sort_unstable();
        let got: Vec<(u64, u32)> = merged
            .pending_keys
            .iter()
            .copied()
            .zip(merged.pending_counts.iter().copied())
            .collect();
        assert_eq!(got, want);
        // And the table file carries them.
        let f = file::encode_table(&merged.view());
        assert_eq!(file::decode_table(&f, 2).unwrap(), merged);
        // A table without admission writes no extra tensors.
        let plain = HashedTable::new(2, Optimizer::Sgd { lr: 0.5 }, 3).export();
        let f = file::encode_table(&plain.view());
        assert!(!String::from_utf8_lossy(&f).contains("pending"));
    }

    #[test]
    fn shards_split_and_merge_back_sorted() {
        let mut t = HashedTable::new(3, Optimizer::adam(0.1), 7);
        let keys: Vec<u64> = (0..200).map(|i| feature_key("f", i)).collect();
        let mut out = vec![0.0; keys.len() * 3];
        t.lookup(&keys, &mut out);
        t.apply_gradients(&keys[..50], &vec![0.5; 150]).unwrap();
        let all = t.export();
        let parts: Vec<TableState> = (0..3).map(|s| all.shard(s, 3)).collect();
        assert!(parts.iter().all(|p| p.keys.len() > 40), "balanced enough");
        for (s, p) in parts.iter().enumerate() {
            assert!(p.keys.iter().all(|&k| shard_of(k, 3) == s));
        }
        let merged = TableState::merge(parts).unwrap();
        let mut sorted = all.keys.clone();
        sorted.sort_unstable();
        assert_eq!(merged.keys, sorted);
        let back = HashedTable::restore(Optimizer::adam(0.1), merged).unwrap();
        for &k in &keys {
            assert_eq!(back.get(k), t.get(k));
        }
        // Split in two, merged: the same bytes as split in three.
        let two = TableState::merge((0..2).map(|s| all.shard(s, 2)).collect()).unwrap();
        assert_eq!(two, back.export());
        let dup = TableState::merge(vec![all.clone(), all.shard(0, 2)]).unwrap_err();
        assert!(dup.contains("two table parts"), "{dup}");
    }

    #[test]
    fn keys_separate_features_and_ids() {
        assert_ne!(feature_key("user_id", 1), feature_key("item_id", 1));
        assert_ne!(feature_key("user_id", 1), feature_key("user_id", 2));
        assert_eq!(feature_key("user_id", 1), feature_key("user_id", 1));
    }

    #[test]
    fn initial_rows_depend_only_on_seed_and_key() {
        let (a, b) = (feature_key("u", 1), feature_key("u", 2));
        let mut t1 = HashedTable::new(8, Optimizer::Sgd { lr: 0.1 }, 3);
        let mut t2 = HashedTable::new(8, Optimizer::Sgd { lr: 0.1 }, 3);
        let mut x = vec![0.0; 16];
        let mut y = vec![0.0; 16];
        t1.lookup(&[a, b], &mut x);
        t2.lookup(&[b, a], &mut y);
        assert_eq!(&x[..8], &y[8..]);
        assert_eq!(&x[8..], &y[..8]);
        let bound = 1.0 / 8f32.sqrt();
        assert!(x.iter().all(|v| v.abs() <= bound));
        assert!(x.iter().any(|v| *v != 0.0));
    }

    #[test]
    fn sgd_sums_repeated_keys() {
        let k = feature_key("u", 1);
        let mut t = HashedTable::new(2, Optimizer::Sgd { lr: 0.5 }, 0);
        let mut w0 = vec![0.0; 2];
        t.lookup(&[k], &mut w0);
        t.apply_gradients(&[k, k], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        let w1 = t.get(k).unwrap();
        assert_eq!(w1, &[w0[0] - 0.5 * 4.0, w0[1] - 0.5 * 6.0]);
    }

    #[test]
    fn adagrad_step_by_hand() {
        let k = 9;
        let mut t = HashedTable::new(1, Optimizer::adagrad(0.1), 0);
        let mut w = [0.0];
        t.lookup(&[k], &mut w);
        t.apply_gradients(&[k], &[2.0]).unwrap();
        // acc = 0.1 + 4 = 4.1; w -= 0.1 * 2 / (sqrt(4.1) + 1e-7)
        let want = w[0] - 0.1 * 2.0 / (4.1f32.sqrt() + 1e-7);
        assert!((t.get(k).unwrap()[0] - want).abs() < 1e-7);
    }

    #[test]
    fn dense_adam_moves_untouched_rows_by_their_momentum() {
        let (a, b) = (1, 2);
        let mut t = HashedTable::new(1, Optimizer::adam_dense(0.01), 0);
        let mut w = [0.0; 2];
        t.lookup(&[a, b], &mut w);
        let (b1, b2, lr, eps) = (0.9f64, 0.999f64, 0.01f64, 1e-8f64);
        // Step 1, gradient on a only: a moves by lr·sign(g); b (zero moments) stays.
        t.apply_gradients(&[a], &[0.5]).unwrap();
        let (mut m, mut v) = ((1.0 - b1) * 0.5, (1.0 - b2) * 0.25);
        let mut wa = f64::from(w[0]) - lr * (m / (1.0 - b1)) / ((v / (1.0 - b2)).sqrt() + eps);
        assert!((f64::from(t.get(a).unwrap()[0]) - wa).abs() < 1e-6);
        assert_eq!(t.get(b).unwrap()[0], w[1]);
        // Step 2, gradient on b only: a still moves, by its decayed momentum (lazy would not).
        t.apply_gradients(&[b], &[-2.0]).unwrap();
        m *= b1;
        v *= b2;
        wa -= lr * (m / (1.0 - b1 * b1)) / ((v / (1.0 - b2 * b2)).sqrt() + eps);
        assert!((f64::from(t.get(a).unwrap()[0]) - wa).abs() < 1e-6);
        assert!((f64::from(t.get(a).unwrap()[0]) - f64::from(w[0])).abs() > 0.0105);
        // b's first gradient (its step 2: bias correction counts the steps it has existed).
        let (mb, vb) = ((1.0 - b1) * -2.0, (1.0 - b2) * 4.0);
        let wb =
            f64::from(w[1]) - lr * (mb / (1.0 - b1 * b1)) / ((vb / (1.0 - b2 * b2)).sqrt() + eps);
        assert!((f64::from(t.get(b).unwrap()[0]) - wb).abs() < 1e-6);
    }

    #[test]
    fn normal_init_has_the_asked_deviation_and_depends_only_on_seed_and_key() {
        let mut t = HashedTable::new(100, Optimizer::Sgd { lr: 0.1 }, 9)
            .with_init_scale(0.01)
            .with_init(Init::Normal);
        let keys: Vec<u64> = (0..100).collect();
        let mut x = vec![0.0; 100 * 100];
        t.lookup(&keys, &mut x);
        let n = x.len() as f64;
        let mean = x.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
        let sd = (x
            .iter()
            .map(|v| (f64::from(*v) - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        assert!(mean.abs() < 0.0005, "mean {mean}");
        assert!((sd / 0.01 - 1.0).abs() < 0.03, "sd {sd}");
        // Beyond ±3σ about 0.27% of the time, as a normal distribution does.
        let tails = x.iter().filter(|v| v.abs() > 0.03).count() as f64 / n;
        assert!(tails > 0.001 && tails < 0.006, "tails {tails}");
        let mut y = vec![0.0; 100];
        HashedTable::new(100, Optimizer::Sgd { lr: 0.1 }, 9)
            .with_init_scale(0.01)
            .with_init(Init::Normal)
            .peek(&[7], &mut y);
        assert_eq!(&y[..], &x[700..800]);
    }

    #[test]
    fn row_updates_split_over_threads_equal_one_thread_bit_for_bit() {
        let opts = [
            Optimizer::adam(0.01),
            Optimizer::adagrad(0.05),
            Optimizer::Sgd { lr: 0.1 },
        ];
        let pools: Vec<rayon::ThreadPool> = [1, 3]
            .iter()
            .map(|&n| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .unwrap()
            })
            .collect();
        for opt in opts {
            let mut one = HashedTable::new(8, opt, 3);
            let mut split: Vec<HashedTable> = pools.iter().map(|_| one.clone()).collect();
            let mut s = 17u64;
            for step in 0..30 {
                // 600 keys from 500 ids: repeats in most steps, a distinct batch every 5th.
                let keys: Vec<u64> = if step % 5 == 0 {
                    (0..600).map(|i| i * 7 + step).collect()
                } else {
                    (0..600)
                        .map(|_| {
                            s = mix(s);
                            s % 500
                        })
                        .collect()
                };
                let grads: Vec<f32> = (0..keys.len() * 8)
                    .map(|_| {
                        s = mix(s);
                        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                    })
                    .collect();
                one.apply_gradients(&keys, &grads).unwrap();
                for (t, pool) in split.iter_mut().zip(&pools) {
                    let parts = pool.current_num_threads() + 1;
                    pool.install(|| t.apply_gradients_parts(&keys, &grads, parts))
                        .unwrap();
                }
            }
            for t in &split {
                let (a, b) = (one.export(), t.export());
                assert_eq!(a.keys, b.keys);
                assert_eq!(a.steps, b.steps);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a.values), bits(&b.values), "{opt:?}");
                assert_eq!(bits(&a.state), bits(&b.state), "{opt:?}");
            }
        }
    }

    #[test]
    fn repeated_keys_take_their_summed_gradient_in_one_adam_step() {
        let mut t = HashedTable::new(2, Optimizer::adam(0.01), 0);
        let mut lone = t.clone();
        t.apply_gradients(&[5, 9, 5, 5], &[0.5, 1.0, 7.0, 7.0, 0.25, -1.0, 0.125, 0.5])
            .unwrap();
        // The same as one step of the sums, with 9 in between.
        lone.apply_gradients(&[5, 9], &[0.875, 0.5, 7.0, 7.0])
            .unwrap();
        assert_eq!(t.export(), lone.export());
        assert_eq!(t.export().steps, vec![1, 1]);
    }

    #[test]
    fn lazy_adam_by_hand() {
        let (a, b) = (1, 2);
        let mut t = HashedTable::new(1, Optimizer::adam(0.01), 0);
        let mut w = [0.0; 2];
        t.lookup(&[a, b], &mut w);
        // step 1 on a: m = 0.1 g, v = 0.001 g², bias-corrected to g and g² → w -= lr * sign(g)
        t.apply_gradients(&[a], &[0.5]).unwrap();
        assert!((t.get(a).unwrap()[0] - (w[0] - 0.01 * 0.5 / (0.5 + 1e-8))).abs() < 1e-6);
        // b untouched: no lazy decay, value unchanged
        assert_eq!(t.get(b).unwrap()[0], w[1]);
        // b's first step is its own step 1 (per-row bias correction)
        t.apply_gradients(&[b], &[-2.0]).unwrap();
        assert!((t.get(b).unwrap()[0] - (w[1] + 0.01)).abs() < 1e-6);
    }

    #[test]
    fn memory_grows_with_rows_touched_and_bad_gradients_are_refused() {
        let mut t = HashedTable::new(16, Optimizer::adam(0.01), 0);
        let mut out = vec![0.0; 16];
        for id in 0..100 {
            t.lookup(&[feature_key("u", id)], &mut out);
        }
        assert_eq!(t.len(), 100);
        let m100 = t.memory_bytes();
        assert!(m100 < 100 * (16 * 3 * 4 + 64) + 4096, "{m100}");
        assert!(matches!(
            t.apply_gradients(&[1], &[0.0; 3]),
            Err(EmbeddingError::GradientShape { .. })
        ));
        assert_eq!(
            t.apply_gradients(&[1], &[f32::NAN; 16]),
            Err(EmbeddingError::NonFinite(1))
        );
    }
}
