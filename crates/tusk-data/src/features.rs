//! Turning rows into model inputs: sparse columns → hashed embedding keys, dense columns →
//! standardised floats (missing → 0 plus a 0/1 flag), the label → 0/1, optional weights.
//!
//! Statistics (mean, standard deviation, whether values go missing) come from one pass over
//! the training data ([`FeatureSpace::fit`]) and travel with the model, so scoring encodes
//! rows exactly as training did.

use serde::{Deserialize, Serialize};
use tusk_embedding::feature_key;

use crate::error::{Error, Result, config as config_error};
use crate::source::{Cell, Row, RowPos, Source};

/// The `[features]` table of a training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureConfig {
    /// Categorical columns (integer ids or strings; multi-valued ones are averaged bags).
    pub sparse: Vec<String>,
    /// Numeric columns, standardised with training statistics.
    #[serde(default)]
    pub dense: Vec<String>,
    /// The binary label column: 0/1 numbers, or any column with `positive` set.
    pub label: String,
    /// The label value that counts as positive (for string labels such as `"purchase"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive: Option<String>,
    /// Optional per-row loss weight column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<String>,
}

/// Training statistics of one dense column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseStat {
    /// Column.
    pub name: String,
    /// Mean over present values.
    pub mean: f64,
    /// Standard deviation over present values (1 when constant).
    pub std: f64,
    /// Whether a missing-value flag follows the standardised value.
    pub flag: bool,
}

/// Everything needed to encode rows as training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpace {
    /// The configuration.
    pub config: FeatureConfig,
    /// One entry per dense column, in order.
    pub dense: Vec<DenseStat>,
    /// Training rows seen by `fit`.
    pub rows: u64,
    /// Positive training rows.
    pub positives: u64,
    /// Sparse columns some training row held several values of (bags). A CSV field of one
    /// of these is read as whitespace-separated values, the way `tusk predict` writes a list
    /// to CSV, so the same row scores the same from a record file and from a CSV.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bags: Vec<String>,
}

/// One encoded row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encoded {
    /// Embedding keys of every sparse field, field after field.
    pub keys: Vec<u64>,
    /// How many of `keys` belong to each field (≥ 1: a missing value has its own key).
    pub bag_lens: Vec<u32>,
    /// Standardised dense values and flags ([`FeatureSpace::dense_width`] of them).
    pub dense: Vec<f32>,
    /// 0 or 1 (0 when not read).
    pub label: f32,
    /// Loss weight (1 when no weight column).
    pub weight: f32,
}

/// The key a missing sparse value maps to (it gets its own embedding row).
pub fn missing_key(feature: &str) -> u64 {
    feature_key(feature, i64::MIN)
}

/// Key of a string id: integers in text form key like the integer (so `"42"` in a CSV and
/// `42` in a TFRecord meet the same row); other strings hash their bytes.
pub fn text_key(feature: &str, text: &[u8]) -> u64 {
    if let Some(v) = std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok())
    {
        return feature_key(feature, v);
    }
    let h = fnv1a(FNV_OFFSET, text);
    // Never collide with the integer keys' input space in a structured way.
    feature_key(feature, (h ^ 0x7f4a_7c15_9e37_79b9) as i64)
}

/// FNV-1a's offset basis: the hash of nothing.
pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a: `h` continued over `bytes`.
pub(crate) fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn is_missing_text(t: &str) -> bool {
    let t = t.trim();
    t.is_empty()
        || t.eq_ignore_ascii_case("na")
        || t.eq_ignore_ascii_case("nan")
        || t.eq_ignore_ascii_case("null")
}

/// Push the keys of `column`'s cell; returns how many.
pub fn sparse_keys(
    column: &str,
    cell: Option<Cell<'_>>,
    pos: RowPos<'_>,
    out: &mut Vec<u64>,
) -> Result<u32> {
    keys_of(column, cell, false, pos, out)
}

/// [`sparse_keys`]; a text cell of a `bag` column holds whitespace-separated values.
fn keys_of(
    column: &str,
    cell: Option<Cell<'_>>,
    bag: bool,
    pos: RowPos<'_>,
    out: &mut Vec<u64>,
) -> Result<u32> {
    let start = out.len();
    match cell {
        None => {}
        Some(Cell::Ints(v)) => out.extend(v.iter().map(|&x| feature_key(column, x))),
        Some(Cell::Bytes(v)) => out.extend(v.iter().map(|b| text_key(column, b))),
        Some(Cell::Text(t)) if bag => out.extend(
            t.split_whitespace()
                .filter(|v| !is_missing_text(v))
                .map(|v| text_key(column, v.as_bytes())),
        ),
        Some(Cell::Text(t)) if !is_missing_text(t) => out.push(text_key(column, t.as_bytes())),
        Some(Cell::Text(_)) => {}
        Some(Cell::Floats(_)) => {
            return Err(Error::Value {
                file: pos.file.into(),
                row: pos.row,
                column: column.into(),
                message: "sparse features must be integer ids or strings, this one holds floats (list it under features.dense instead)".into(),
            });
        }
    }
    if out.len() == start {
        out.push(missing_key(column));
    }
    Ok((out.len() - start) as u32)
}

/// The one numeric value of `column`'s cell, `None` when missing.
pub fn dense_value(column: &str, cell: Option<Cell<'_>>, pos: RowPos<'_>) -> Result<Option<f64>> {
    let bad = |message: String| Error::Value {
        file: pos.file.into(),
        row: pos.row,
        column: column.into(),
        message,
    };
    let v = match cell {
        None => None,
        Some(Cell::Ints(v)) => match v {
            [] => None,
            [x] => Some(*x as f64),
            _ => {
                return Err(bad(format!(
                    "dense features hold one value, found {}",
                    v.len()
                )));
            }
        },
        Some(Cell::Floats(v)) => match v {
            [] => None,
            [x] => Some(f64::from(*x)),
            _ => {
                return Err(bad(format!(
                    "dense features hold one value, found {}",
                    v.len()
                )));
            }
        },
        Some(Cell::Text(t)) => {
            if is_missing_text(t) {
                None
            } else {
                Some(t.trim().parse::<f64>().map_err(|_| {
                    bad(format!(
                        "`{t}` is not a number (dense features are numeric)"
                    ))
                })?)
            }
        }
        Some(Cell::Bytes(_)) => {
            return Err(bad(
                "dense features must be numeric, this one holds bytes/strings (list it under features.sparse instead)".into(),
            ));
        }
    };
    match v {
        Some(x) if !x.is_finite() => Ok(None),
        v => Ok(v),
    }
}

impl FeatureConfig {
    /// Check the lists themselves (duplicates, empty).
    pub fn validate(&self) -> Result<()> {
        if self.sparse.is_empty() && self.dense.is_empty() {
            return Err(config_error(
                "features",
                "no features: list columns under features.sparse and/or features.dense",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (key, c) in self
            .sparse
            .iter()
            .map(|c| ("features.sparse", c))
            .chain(self.dense.iter().map(|c| ("features.dense", c)))
        {
            if !seen.insert(c) {
                return Err(config_error(key, format!("column `{c}` is listed twice")));
            }
            if *c == self.label {
                return Err(config_error(
                    key,
                    format!("column `{c}` is the label; a model must not see its label"),
                ));
            }
        }
        Ok(())
    }

    /// The 0/1 label of a row.
    pub fn label_of(&self, row: &dyn Row, pos: RowPos<'_>) -> Result<f32> {
        let column = &self.label;
        let bad = |message: String| Error::Value {
            file: pos.file.into(),
            row: pos.row,
            column: column.clone(),
            message,
        };
        let cell = row
            .get(column)
            .ok_or_else(|| bad("the label is missing from this row".into()))?;
        if let Some(p) = &self.positive {
            let hit = match cell {
                Cell::Text(t) => t.trim() == p,
                Cell::Bytes([b]) => b.as_slice() == p.as_bytes(),
                Cell::Ints([x]) => p.trim().parse::<i64>().ok() == Some(*x),
                Cell::Floats([x]) => p.trim().parse::<f32>().ok() == Some(*x),
                _ => return Err(bad("the label must hold exactly one value".into())),
            };
            return Ok(if hit { 1.0 } else { 0.0 });
        }
        let v = match cell {
            Cell::Ints([x]) => *x as f64,
            Cell::Floats([x]) => f64::from(*x),
            Cell::Text(t) => match t.trim().parse::<f64>() {
                Ok(v) => v,
                Err(_) => {
                    return Err(Error::Config {
                        key: "features.label".into(),
                        message: format!(
                            "column `{column}` holds strings (`{t}` at {} row {}); set features.positive to the value that counts as positive",
                            pos.file, pos.row
                        ),
                    });
                }
            },
            Cell::Bytes([b]) => {
                return Err(Error::Config {
                    key: "features.label".into(),
                    message: format!(
                        "column `{column}` holds strings (`{}` at {} row {}); set features.positive to the value that counts as positive",
                        String::from_utf8_lossy(b),
                        pos.file,
                        pos.row
                    ),
                });
            }
            _ => return Err(bad("the label must hold exactly one value".into())),
        };
        if v == 0.0 || v == 1.0 {
            Ok(v as f32)
        } else {
            Err(Error::Config {
                key: "features.label".into(),
                message: format!(
                    "column `{column}` has the value {v} at {} row {}: a binary label must be 0 or 1 (set features.positive to the value that counts as positive to binarise it)",
                    pos.file, pos.row
                ),
            })
        }
    }

    fn weight_of(&self, row: &dyn Row, pos: RowPos<'_>) -> Result<f32> {
        let Some(w) = &self.weight else {
            return Ok(1.0);
        };
        match dense_value(w, row.get(w), pos)? {
            Some(x) if x >= 0.0 => Ok(x as f32),
            Some(x) => Err(Error::Value {
                file: pos.file.into(),
                row: pos.row,
                column: w.clone(),
                message: format!("weights must not be negative, found {x}"),
            }),
            None => Ok(1.0),
        }
    }
}

#[derive(Default, Clone)]
struct Welford {
    n: u64,
    mean: f64,
    m2: f64,
    missing: u64,
}

impl Welford {
    fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Combine with the statistics of other rows (Chan et al.'s pairwise update).
    fn merge(&mut self, o: &Welford) {
        self.missing += o.missing;
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            let missing = self.missing;
            *self = o.clone();
            self.missing = missing;
            return;
        }
        let n = self.n + o.n;
        let d = o.mean - self.mean;
        self.mean += d * o.n as f64 / n as f64;
        self.m2 += o.m2 + d * d * (self.n as f64 * o.n as f64) / n as f64;
        self.n = n;
    }
}

/// What the statistics pass learns from some rows; parts of a source merge in file order.
#[derive(Default)]
struct Partial {
    stats: Vec<Welford>,
    seen: Vec<bool>,
    /// Per sparse column: some row held several values.
    multi: Vec<bool>,
    label_seen: bool,
    first_missing_label: Option<(String, u64)>,
    rows: u64,
    positives: u64,
    some_columns: Vec<String>,
    keys: Vec<u64>,
}

impl Partial {
    fn new(config: &FeatureConfig) -> Partial {
        Partial {
            stats: vec![Welford::default(); config.dense.len()],
            seen: vec![false; config.sparse.len() + config.dense.len()],
            multi: vec![false; config.sparse.len()],
            ..Partial::default()
        }
    }

    fn scan(&mut self, config: &FeatureConfig, row: &dyn Row, pos: RowPos<'_>) -> Result<()> {
        if self.rows == 0 {
            self.some_columns = row.columns();
            // A CSV header names every column up front: report a missing one now.
            if row.as_csv().is_some() {
                let named = config
                    .sparse
                    .iter()
                    .map(|c| ("features.sparse", c))
                    .chain(config.dense.iter().map(|c| ("features.dense", c)))
                    .chain(std::iter::once(("features.label", &config.label)))
                    .chain(config.weight.iter().map(|c| ("features.weight", c)));
                for (key, c) in named {
                    if !self.some_columns.contains(c) {
                        return Err(config_error(
                            key,
                            format!(
                                "column `{c}` is not in {} (its columns: {})",
                                pos.file,
                                self.some_columns.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        for (i, c) in config.sparse.iter().enumerate() {
            let cell = row.get(c);
            self.seen[i] |= cell.is_some();
            self.keys.clear();
            // a CSV field is one value here: only record files say what is a list
            self.multi[i] |= sparse_keys(c, cell, pos, &mut self.keys)? > 1
                && !matches!(cell, Some(Cell::Text(_)));
        }
        for (i, c) in config.dense.iter().enumerate() {
            let cell = row.get(c);
            self.seen[config.sparse.len() + i] |= cell.is_some();
            match dense_value(c, cell, pos)? {
                Some(x) => self.stats[i].push(x),
                None => self.stats[i].missing += 1,
            }
        }
        self.rows += 1;
        if row.get(&config.label).is_none() {
            // Reported after the pass: as a config error when no row has it.
            if self.first_missing_label.is_none() {
                self.first_missing_label = Some((pos.file.to_string(), pos.row));
            }
            return Ok(());
        }
        self.label_seen = true;
        let y = config.label_of(row, pos)?;
        self.positives += y as u64;
        config.weight_of(row, pos)?;
        Ok(())
    }

    /// Append the rows of a later part of the source.
    fn merge(&mut self, o: Partial) {
        for (a, b) in self.stats.iter_mut().zip(&o.stats) {
            a.merge(b);
        }
        for (a, b) in self.seen.iter_mut().zip(&o.seen) {
            *a |= b;
        }
        for (a, b) in self.multi.iter_mut().zip(&o.multi) {
            *a |= b;
        }
        self.label_seen |= o.label_seen;
        if self.first_missing_label.is_none() {
            self.first_missing_label = o.first_missing_label;
        }
        if self.some_columns.is_empty() {
            self.some_columns = o.some_columns;
        }
        self.rows += o.rows;
        self.positives += o.positives;
    }
}

/// Where [`FeatureSpace::fit_kept`]'s statistics came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsOrigin {
    /// Read from this file beside the dataset: no pass over the rows.
    Kept(String),
    /// Computed; kept beside the dataset in this file for later runs.
    ComputedAndKept(String),
    /// Computed; not kept (the source is not a tusk dataset, or this says why not).
    Computed(Option<String>),
}

/// The file [`FeatureSpace::fit_kept`] keeps beside a dataset.
#[derive(Serialize, Deserialize)]
struct Kept {
    /// The dataset these statistics describe (compared on load).
    manifest: tusk_records::dataset::Manifest,
    space: FeatureSpace,
}

impl FeatureSpace {
    /// [`FeatureSpace::fit`], kept with the dataset: when `source` is a tusk dataset (a
    /// directory with a manifest, which never changes once written), the statistics for
    /// `config` are stored in its `_derived/` directory after the first pass and read from
    /// there by later runs — of any number of workers, on any machine that reads the data.
    /// The stored file names the manifest and config it was computed from; one that does not
    /// match, or does not parse, is recomputed (and reported). A dataset that cannot be
    /// written to (read-only storage) costs the pass each time, nothing more.
    pub fn fit_kept(
        source: &Source,
        config: FeatureConfig,
        progress: impl FnMut(u64),
    ) -> Result<(FeatureSpace, StatsOrigin)> {
        let Some((dir, manifest)) = source.dataset() else {
            return Ok((
                Self::fit(source, config, progress)?,
                StatsOrigin::Computed(None),
            ));
        };
        let key = serde_json::to_vec(&config).expect("a feature config serializes");
        // the salt names what the statistics hold: files from before `bags` are recomputed
        let h = fnv1a(fnv1a(FNV_OFFSET, b"bags"), &key);
        let loc = dir
            .join(tusk_records::dataset::DERIVED)
            .join(&format!("feature-stats-{h:016x}.json"));
        let mut problem = None;
        match loc.read() {
            Ok(bytes) => match serde_json::from_slice::<Kept>(&bytes) {
                Ok(k) if &k.manifest == manifest && k.space.config == config => {
                    return Ok((k.space, StatsOrigin::Kept(loc.url())));
                }
                Ok(_) => {
                    problem = Some(format!(
                        "{} describes another dataset or config; recomputed (delete it)",
                        loc.url()
                    ))
                }
                Err(e) => {
                    problem = Some(format!(
                        "{} does not parse ({e}); recomputed (delete it)",
                        loc.url()
                    ))
                }
            },
            Err(tusk_storage::Error::NotFound { .. }) => {}
            Err(e) => problem = Some(format!("reading {}: {e}", loc.url())),
        }
        let space = Self::fit(source, config, progress)?;
        if let Some(p) = problem {
            return Ok((space, StatsOrigin::Computed(Some(p))));
        }
        let kept = Kept {
            manifest: manifest.clone(),
            space,
        };
        let json = serde_json::to_vec_pretty(&kept).expect("statistics serialize");
        let Kept { space, .. } = kept;
        // Create-only: ranks of one job that all computed it race here, and all wrote the
        // same bytes.
        let origin = match loc.write_new(json) {
            Ok(()) | Err(tusk_storage::Error::AlreadyExists { .. }) => {
                StatsOrigin::ComputedAndKept(loc.url())
            }
            Err(e) => StatsOrigin::Computed(Some(format!("not kept with the dataset: {e}"))),
        };
        Ok((space, origin))
    }

    /// One pass over the training `source`: check every configured column exists and has a
    /// usable type, check the label is binary, and learn dense statistics. Files are read in
    /// parallel (one thread per core, each file's statistics merged in file order, so the
    /// result does not depend on the number of threads); the first error in file order is
    /// reported. `progress(rows)` is called now and then.
    pub fn fit(
        source: &Source,
        config: FeatureConfig,
        mut progress: impl FnMut(u64),
    ) -> Result<FeatureSpace> {
        config.validate()?;
        let files = source.files();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(files)
            .clamp(1, 8);
        let done = std::sync::atomic::AtomicU64::new(0);
        let scan_file = |i: usize| -> Result<Partial> {
            let mut part = Partial::new(&config);
            source.for_each_row_in(i, &mut |row, pos| {
                part.scan(&config, row, pos)?;
                if part.rows.is_multiple_of(65_536) {
                    done.fetch_add(65_536, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(true)
            })?;
            Ok(part)
        };
        let mut parts: Vec<Option<Result<Partial>>> = (0..files).map(|_| None).collect();
        if threads <= 1 {
            for (i, slot) in parts.iter_mut().enumerate() {
                let r = scan_file(i);
                let failed = r.is_err();
                *slot = Some(r);
                progress(done.load(std::sync::atomic::Ordering::Relaxed));
                if failed {
                    break;
                }
            }
        } else {
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads)
                    .map(|t| {
                        let scan_file = &scan_file;
                        s.spawn(move || {
                            let mut out = Vec::new();
                            for i in (t..files).step_by(threads) {
                                let r = scan_file(i);
                                let failed = r.is_err();
                                out.push((i, r));
                                if failed {
                                    break;
                                }
                            }
                            out
                        })
                    })
                    .collect();
                while hs.iter().any(|h| !h.is_finished()) {
                    progress(done.load(std::sync::atomic::Ordering::Relaxed));
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                for h in hs {
                    if let Ok(out) = h.join() {
                        for (i, r) in out {
                            parts[i] = Some(r);
                        }
                    }
                }
            });
        }
        let mut total = Partial::new(&config);
        for (i, p) in parts.into_iter().enumerate() {
            match p {
                Some(Ok(p)) => total.merge(p),
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(Error::Csv {
                        file: source.url().to_string(),
                        message: format!("file {i} was not read (a reader thread stopped)"),
                    });
                }
            }
        }
        let Partial {
            stats,
            seen,
            multi,
            label_seen,
            first_missing_label,
            rows,
            positives,
            some_columns,
            ..
        } = total;
        progress(rows);
        if rows == 0 {
            return Err(config_err_empty(source));
        }
        let listed = if some_columns.is_empty() {
            String::new()
        } else {
            format!(" (its columns: {})", some_columns.join(", "))
        };
        for (i, c) in config.sparse.iter().chain(&config.dense).enumerate() {
            if !seen[i] {
                let key = if i < config.sparse.len() {
                    "features.sparse"
                } else {
                    "features.dense"
                };
                return Err(config_error(
                    key,
                    format!("column `{c}` is not in {}{listed}", source.url()),
                ));
            }
        }
        if !label_seen {
            return Err(config_error(
                "features.label",
                format!(
                    "column `{}` is not in {}{listed}",
                    config.label,
                    source.url()
                ),
            ));
        }
        if let Some((file, row)) = first_missing_label {
            return Err(Error::Value {
                file,
                row,
                column: config.label.clone(),
                message: "the label is missing from this row".into(),
            });
        }
        let dense = config
            .dense
            .iter()
            .zip(stats)
            .map(|(name, s)| {
                let var = if s.n > 1 {
                    s.m2 / (s.n - 1) as f64
                } else {
                    0.0
                };
                let std = var.sqrt();
                DenseStat {
                    name: name.clone(),
                    mean: s.mean,
                    std: if std > 1e-12 { std } else { 1.0 },
                    flag: s.missing > 0,
                }
            })
            .collect();
        let bags = config
            .sparse
            .iter()
            .zip(&multi)
            .filter(|(_, m)| **m)
            .map(|(c, _)| c.clone())
            .collect();
        Ok(FeatureSpace {
            config,
            dense,
            rows,
            positives,
            bags,
        })
    }

    /// Fails unless the training rows hold both classes (without sampled negatives a
    /// binary classifier cannot learn from one class).
    pub fn check_both_classes(&self) -> Result<()> {
        let (rows, positives, config) = (self.rows, self.positives, &self.config);
        if positives == 0 || positives == rows {
            return Err(config_error(
                "features.label",
                format!(
                    "every one of the {rows} training rows is {}: a binary classifier needs both classes{}",
                    if positives == 0 {
                        "negative"
                    } else {
                        "positive"
                    },
                    if config.positive.is_some() {
                        " (check features.positive)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Ok(())
    }

    /// Sparse fields per row.
    pub fn fields(&self) -> usize {
        self.config.sparse.len()
    }

    /// Dense values per row (standardised values plus missing flags).
    pub fn dense_width(&self) -> usize {
        self.dense.len() + self.dense.iter().filter(|d| d.flag).count()
    }

    /// Index of a sparse column.
    pub fn sparse_index(&self, column: &str) -> Option<usize> {
        self.config.sparse.iter().position(|c| c == column)
    }

    /// Encode `row` into `out`; the label is read when `with_label`.
    pub fn encode(
        &self,
        row: &dyn Row,
        pos: RowPos<'_>,
        with_label: bool,
        out: &mut Encoded,
    ) -> Result<()> {
        out.keys.clear();
        out.bag_lens.clear();
        out.dense.clear();
        for c in &self.config.sparse {
            let n = keys_of(c, row.get(c), self.bags.contains(c), pos, &mut out.keys)?;
            out.bag_lens.push(n);
        }
        for d in &self.dense {
            match dense_value(&d.name, row.get(&d.name), pos)? {
                Some(x) => {
                    out.dense.push(((x - d.mean) / d.std) as f32);
                    if d.flag {
                        out.dense.push(0.0);
                    }
                }
                None => {
                    out.dense.push(0.0);
                    if d.flag {
                        out.dense.push(1.0);
                    }
                }
            }
        }
        if with_label {
            out.label = self.config.label_of(row, pos)?;
            out.weight = self.config.weight_of(row, pos)?;
        } else {
            out.label = 0.0;
            out.weight = 1.0;
        }
        Ok(())
    }
}

fn config_err_empty(source: &Source) -> Error {
    config_error(
        "data.train",
        format!("{} holds no rows to train on", source.url()),
    )
}
