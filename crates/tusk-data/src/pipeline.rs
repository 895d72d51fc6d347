//! Batches for training and scoring: a background thread reads rows from storage, encodes
//! them, optionally adds sampled negatives, shuffles through a buffer and assembles batches,
//! handing them over a bounded channel (prefetch) so the model does not wait on I/O.
//!
//! Everything random comes from one seeded generator, so an epoch's batches are the same
//! every time for a seed — which is what lets a resumed run skip to where it stopped and
//! continue exactly as an uninterrupted run would.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::error::{Error, Result, config};
use crate::features::{Encoded, FeatureSpace, sparse_keys};
use crate::source::Source;

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x2545_f491_4f6c_dd1d)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// A batch of encoded rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Rows.
    pub size: usize,
    /// Embedding keys, row after row, field after field.
    pub keys: Vec<u64>,
    /// Keys per (row, field), `size × fields` of them.
    pub bag_lens: Vec<u32>,
    /// `size × dense_width` values.
    pub dense: Vec<f32>,
    /// Labels (0 when not read).
    pub labels: Vec<f32>,
    /// Loss weights.
    pub weights: Vec<f32>,
    /// Group key per row when grouping was asked for (ranking metrics).
    pub groups: Vec<u64>,
}

impl Batch {
    /// Append one encoded row (scoring rows that do not come from a [`Source`]).
    pub fn push_row(&mut self, e: &Encoded) {
        self.push(e, None);
    }

    fn push_held(&mut self, h: &Held) {
        match h {
            Held::Small {
                keys,
                n,
                label,
                weight,
                group,
            } => {
                let n = usize::from(*n);
                self.size += 1;
                self.keys.extend_from_slice(&keys[..n]);
                self.bag_lens.extend(std::iter::repeat_n(1, n));
                self.labels.push(*label);
                self.weights.push(*weight);
                if let Some(g) = group {
                    self.groups.push(*g);
                }
            }
            Held::Row(row) => self.push(&row.0, row.1),
        }
    }

    fn push(&mut self, e: &Encoded, group: Option<u64>) {
        self.size += 1;
        self.keys.extend_from_slice(&e.keys);
        self.bag_lens.extend_from_slice(&e.bag_lens);
        self.dense.extend_from_slice(&e.dense);
        self.labels.push(e.label);
        self.weights.push(e.weight);
        if let Some(g) = group {
            self.groups.push(g);
        }
    }

    /// True when every field of every row has exactly one key.
    pub fn single_keys(&self) -> bool {
        self.keys.len() == self.bag_lens.len()
    }
}

/// A row waiting in the shuffle buffer. The buffer is read at random, so every block a row
/// spans is a cache miss: a row of at most [`SMALL_KEYS`] single-key fields and no dense
/// values (the usual recommendation row) is held in one block, the others as they are.
#[derive(Debug)]
enum Held {
    Small {
        keys: [u64; SMALL_KEYS],
        n: u8,
        label: f32,
        weight: f32,
        group: Option<u64>,
    },
    Row(Box<(Encoded, Option<u64>)>),
}

/// Keys of a row held inline in the shuffle buffer.
const SMALL_KEYS: usize = 4;

impl Held {
    fn new(e: Encoded, group: Option<u64>) -> Held {
        let n = e.keys.len();
        if n <= SMALL_KEYS && e.dense.is_empty() && e.bag_lens.iter().all(|&l| l == 1) {
            let mut keys = [0; SMALL_KEYS];
            keys[..n].copy_from_slice(&e.keys);
            Held::Small {
                keys,
                n: n as u8,
                label: e.label,
                weight: e.weight,
                group,
            }
        } else {
            Held::Row(Box::new((e, group)))
        }
    }
}

/// Hashes a (user, item) pair of embedding keys (already well mixed) in one multiply.
#[derive(Debug, Default, Clone, Copy)]
struct PairHasher(u64);

impl std::hash::Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, k: u64) {
        self.0 = (self.0.rotate_left(29) ^ k).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type PairSet = HashSet<(u64, u64), std::hash::BuildHasherDefault<PairHasher>>;

/// Replaces the item side of positive rows to make extra negatives, fresh each epoch.
#[derive(Debug)]
pub struct NegativeSampler {
    per_positive: usize,
    user_field: usize,
    item_fields: Vec<usize>,
    /// Per catalogue item: the keys of every item field, and their bag lengths.
    items: Vec<(Vec<u64>, Vec<u32>)>,
    item_key: HashMap<u64, usize>,
    positives: PairSet,
}

impl NegativeSampler {
    /// Learn the item catalogue (every item seen in `source`, with its item-side fields) and
    /// every (user, item) positive, to draw `per_positive` negatives per positive row: the row
    /// keeps its user side and gets a uniformly drawn item the user has no positive with.
    pub fn build(
        source: &Source,
        space: &FeatureSpace,
        user_field: &str,
        item_fields: &[String],
        per_positive: usize,
    ) -> Result<NegativeSampler> {
        let idx = |c: &str, key: &str| {
            space.sparse_index(c).ok_or_else(|| {
                config(
                    key,
                    format!(
                        "`{c}` is not one of features.sparse ({})",
                        space.config.sparse.join(", ")
                    ),
                )
            })
        };
        let user = idx(user_field, "train.negatives_user")?;
        let items: Vec<usize> = item_fields
            .iter()
            .map(|c| idx(c, "train.negatives_item"))
            .collect::<Result<_>>()?;
        if items.is_empty() {
            return Err(config(
                "train.negatives_item",
                "name at least one item field",
            ));
        }
        if items.contains(&user) {
            return Err(config(
                "train.negatives_item",
                format!("`{user_field}` is the user field; it cannot also be resampled"),
            ));
        }
        let mut s = NegativeSampler {
            per_positive,
            user_field: user,
            item_fields: items,
            items: Vec::new(),
            item_key: HashMap::new(),
            positives: PairSet::default(),
        };
        let mut e = Encoded::default();
        source.for_each_row(|row, pos| {
            space.encode(row, pos, true, &mut e)?;
            let (u, i) = (
                s.first_key(&e, s.user_field),
                s.first_key(&e, s.item_fields[0]),
            );
            if !s.item_key.contains_key(&i) {
                let (keys, lens) = s.item_side(&e);
                s.item_key.insert(i, s.items.len());
                s.items.push((keys, lens));
            }
            if e.label == 1.0 {
                s.positives.insert((u, i));
            }
            Ok(true)
        })?;
        if s.items.len() < 2 {
            return Err(config(
                "train.negatives",
                "negative sampling needs at least two distinct items in the training data",
            ));
        }
        Ok(s)
    }

    /// Distinct items in the catalogue.
    pub fn items(&self) -> usize {
        self.items.len()
    }

    fn bag_start(e: &Encoded, field: usize) -> usize {
        e.bag_lens[..field].iter().map(|&n| n as usize).sum()
    }

    fn first_key(&self, e: &Encoded, field: usize) -> u64 {
        e.keys[Self::bag_start(e, field)]
    }

    fn item_side(&self, e: &Encoded) -> (Vec<u64>, Vec<u32>) {
        let mut keys = Vec::new();
        let mut lens = Vec::new();
        for &f in &self.item_fields {
            let s = Self::bag_start(e, f);
            let n = e.bag_lens[f] as usize;
            keys.extend_from_slice(&e.keys[s..s + n]);
            lens.push(n as u32);
        }
        (keys, lens)
    }

    /// The negatives for one positive row.
    fn sample(&self, e: &Encoded, rng: &mut Rng, out: &mut Vec<Encoded>) {
        let user = self.first_key(e, self.user_field);
        for _ in 0..self.per_positive {
            let mut pick = rng.below(self.items.len());
            for _ in 0..32 {
                let (keys, _) = &self.items[pick];
                if !self.positives.contains(&(user, keys[0])) {
                    break;
                }
                pick = rng.below(self.items.len());
            }
            let (ikeys, ilens) = &self.items[pick];
            let mut n = Encoded {
                keys: Vec::with_capacity(e.keys.len()),
                bag_lens: Vec::with_capacity(e.bag_lens.len()),
                dense: e.dense.clone(),
                label: 0.0,
                weight: 1.0,
            };
            let mut src = 0usize;
            for (f, &len) in e.bag_lens.iter().enumerate() {
                let len = len as usize;
                if let Some(j) = self.item_fields.iter().position(|&x| x == f) {
                    let il = ilens[j] as usize;
                    let start: usize = ilens[..j].iter().map(|&x| x as usize).sum();
                    n.keys.extend_from_slice(&ikeys[start..start + il]);
                    n.bag_lens.push(il as u32);
                } else {
                    n.keys.extend_from_slice(&e.keys[src..src + len]);
                    n.bag_lens.push(len as u32);
                }
                src += len;
            }
            out.push(n);
        }
    }
}

/// How to batch a source.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Rows per batch (the last batch may be smaller).
    pub batch_size: usize,
    /// Rows held for shuffling; 0 keeps source order (evaluation, scoring).
    pub shuffle_buffer: usize,
    /// Seed for file order, the shuffle buffer and negative sampling.
    pub seed: u64,
    /// Batches to drop from the start (resuming mid-epoch).
    pub skip_batches: u64,
    /// Read labels and weights.
    pub with_label: bool,
    /// Column whose value groups rows for ranking metrics.
    pub group: Option<String>,
    /// Sampled negatives added to every positive row.
    pub negatives: Option<Arc<NegativeSampler>>,
    /// Batches prepared ahead.
    pub prefetch: usize,
    /// `(rank, world)`: read only this rank's disjoint part of the epoch. With at least
    /// `world` files, rank `r` takes every `world`-th file of the epoch's (seeded) file order,
    /// starting at `r`; with fewer, every `world`-th row, so the union over ranks of each
    /// rank's k-th batch is the k-th batch of one process reading `world` times as much.
    pub shard: Option<(usize, usize)>,
    /// With `shard`: always take every `world`-th row, whatever the number of files, so that
    /// interleaving the ranks' rows restores the source order (evaluation split over ranks).
    pub shard_by_rows: bool,
    /// Entity tables filling the columns a row lacks ([`crate::Entities::fill`]).
    pub entities: Option<Arc<crate::Entities>>,
}

/// Batches arriving from the background thread.
pub struct Batches {
    rx: Receiver<Result<Batch>>,
    handle: Option<JoinHandle<()>>,
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        match self.rx.recv() {
            Ok(b) => Some(b),
            Err(_) => {
                if let Some(h) = self.handle.take() {
                    let _ = h.join();
                }
                None
            }
        }
    }
}

/// Start producing batches of `source` on a background thread.
pub fn batches(source: Source, space: Arc<FeatureSpace>, opts: BatchOptions) -> Batches {
    let (tx, rx) = sync_channel(opts.prefetch.max(1));
    let handle = std::thread::Builder::new()
        .name("tusk-batches".into())
        .spawn(move || {
            if let Err(e) = produce(&source, &space, &opts, &tx) {
                let _ = tx.send(Err(e));
            }
        })
        .ok();
    if handle.is_none() {
        let (tx2, rx2) = sync_channel(1);
        let _ = tx2.send(Err(Error::Csv {
            file: String::new(),
            message: "could not start the input thread".into(),
        }));
        return Batches {
            rx: rx2,
            handle: None,
        };
    }
    Batches { rx, handle }
}

struct Emitter<'a> {
    tx: &'a SyncSender<Result<Batch>>,
    batch: Batch,
    size: usize,
    skip: u64,
    closed: bool,
}

impl Emitter<'_> {
    fn push(&mut self, e: &Encoded, group: Option<u64>) {
        self.batch.push(e, group);
        if self.batch.size == self.size {
            self.flush();
        }
    }

    fn push_held(&mut self, h: &Held) {
        self.batch.push_held(h);
        if self.batch.size == self.size {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.batch.size == 0 {
            return;
        }
        let b = std::mem::take(&mut self.batch);
        if self.skip > 0 {
            self.skip -= 1;
            return;
        }
        if self.tx.send(Ok(b)).is_err() {
            self.closed = true;
        }
    }
}

fn produce(
    source: &Source,
    space: &FeatureSpace,
    opts: &BatchOptions,
    tx: &SyncSender<Result<Batch>>,
) -> Result<()> {
    let mut rng = Rng::new(opts.seed);
    let mut order: Vec<usize> = (0..source.files()).collect();
    if opts.shuffle_buffer > 0 {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
    }
    let (rank, world) = opts.shard.unwrap_or((0, 1));
    let by_file = world > 1 && order.len() >= world && !opts.shard_by_rows;
    if by_file {
        order = order
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % world == rank)
            .map(|(_, f)| f)
            .collect();
    }
    let stride = if world > 1 && !by_file {
        world as u64
    } else {
        1
    };
    let mut row_no: u64 = 0;
    let mut em = Emitter {
        tx,
        batch: Batch::default(),
        size: opts.batch_size.max(1),
        skip: opts.skip_batches,
        closed: false,
    };
    let mut buffer: Vec<Held> = Vec::new();
    let mut extra: Vec<Encoded> = Vec::new();
    let mut group_keys = Vec::new();
    for &file in &order {
        let go_on = source.for_each_row_in(file, &mut |row, pos| {
            row_no += 1;
            if stride > 1 && (row_no - 1) % stride != rank as u64 {
                return Ok(true);
            }
            let mut e = Encoded::default();
            match &opts.entities {
                Some(ents) => space.encode(&ents.fill(row), pos, opts.with_label, &mut e)?,
                None => space.encode(row, pos, opts.with_label, &mut e)?,
            }
            let group = match &opts.group {
                Some(g) => {
                    group_keys.clear();
                    sparse_keys(g, row.get(g), pos, &mut group_keys)?;
                    Some(group_keys[0])
                }
                None => None,
            };
            extra.clear();
            if let Some(ns) = &opts.negatives
                && e.label == 1.0
            {
                ns.sample(&e, &mut rng, &mut extra);
            }
            for item in std::iter::once(e).chain(extra.drain(..)) {
                if opts.shuffle_buffer == 0 {
                    em.push(&item, group);
                } else if buffer.len() < opts.shuffle_buffer {
                    buffer.push(Held::new(item, group));
                } else {
                    let j = rng.below(buffer.len());
                    let out = std::mem::replace(&mut buffer[j], Held::new(item, group));
                    em.push_held(&out);
                }
            }
            Ok(!em.closed)
        })?;
        if !go_on {
            return Ok(());
        }
    }
    while !buffer.is_empty() {
        let j = rng.below(buffer.len());
        let h = buffer.swap_remove(j);
        em.push_held(&h);
        if em.closed {
            return Ok(());
        }
    }
    em.flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_held_in_the_shuffle_buffer_batch_as_the_rows_themselves() {
        let row = |keys: &[u64], bag_lens: &[u32], dense: &[f32]| Encoded {
            keys: keys.to_vec(),
            bag_lens: bag_lens.to_vec(),
            dense: dense.to_vec(),
            label: 1.0,
            weight: 0.5,
        };
        let rows = [
            (row(&[1, 2], &[1, 1], &[]), None),
            (row(&[3, 4, 5, 6], &[1, 1, 1, 1], &[]), Some(9)),
            // Too many keys, a bag of two, dense values: held as they are.
            (row(&[1, 2, 3, 4, 5], &[1, 1, 1, 1, 1], &[]), Some(7)),
            (row(&[1, 2, 3], &[2, 1], &[]), None),
            (row(&[1, 2], &[1, 1], &[0.25]), Some(3)),
            (row(&[], &[], &[]), None),
        ];
        let (mut direct, mut held) = (Batch::default(), Batch::default());
        for (e, g) in rows {
            direct.push(&e, g);
            let h = Held::new(e, g);
            held.push_held(&h);
        }
        assert_eq!(direct, held);
        assert!(matches!(
            Held::new(row(&[1, 2], &[1, 1], &[]), None),
            Held::Small { n: 2, .. }
        ));
        assert!(matches!(
            Held::new(row(&[1, 2], &[1, 1], &[0.5]), None),
            Held::Row(_)
        ));
    }
}
