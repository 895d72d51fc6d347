//! Datasets: what a URL given to tusk as input means, and how record sets are written.
//!
//! An input URL is one file, a glob (`logs/part-*.tfrecord.gz`), or a *sharded dataset*: a
//! directory of shard files plus `_manifest.json`, which lists each shard's path and record
//! count and the schema. The manifest is written last (create-only), so a dataset whose writer
//! died is never read as if complete.

use std::collections::BTreeMap;

use prost::Message as _;
use serde::{Deserialize, Serialize};
use tusk_storage::{Location, Storage};

use crate::example::{self, FeatureType};
use crate::parquet_io::{self, ParquetWriter};
use crate::tfrecord::{self, Compression, FileWriter};
use crate::{Error, Result};

/// File name of a dataset's manifest.
pub const MANIFEST: &str = "_manifest.json";

/// Sub-directory of a dataset holding what was computed from its rows (e.g. the feature
/// statistics of a training config), kept because a committed dataset never changes. Cleared
/// when a new dataset is written into the directory.
pub const DERIVED: &str = "_derived";

/// A record file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TFRecord of `tf.train.Example`, with its compression.
    TfRecord(Compression),
    /// Parquet, one row per record.
    Parquet,
}

impl Format {
    /// Guess from a file name: `.parquet`/`.pq` → Parquet, anything else → TFRecord with the
    /// compression its extension says.
    pub fn from_name(name: &str) -> Format {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".parquet") || lower.ends_with(".pq") {
            Format::Parquet
        } else {
            Format::TfRecord(Compression::from_name(&lower))
        }
    }

    /// Whether a file name has an extension tusk recognises as a record file.
    pub fn is_record_file_name(name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        let base = lower
            .trim_end_matches(".gz")
            .trim_end_matches(".zz")
            .trim_end_matches(".zlib");
        [".tfrecord", ".tfrecords", ".tfr", ".parquet", ".pq"]
            .iter()
            .any(|e| base.ends_with(e))
    }

    /// Shard file extension, e.g. `.tfrecord.gz` or `.parquet`.
    pub fn extension(self) -> String {
        match self {
            Format::Parquet => ".parquet".into(),
            Format::TfRecord(c) => format!(".tfrecord{}", c.suffix()),
        }
    }

    fn manifest_names(self) -> (&'static str, &'static str) {
        match self {
            Format::Parquet => ("parquet", "snappy"),
            Format::TfRecord(c) => ("tfrecord", c.as_str()),
        }
    }
}

/// One feature/column of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Feature name.
    pub name: String,
    /// Value type.
    #[serde(rename = "type")]
    pub dtype: FeatureType,
    /// Multi-valued (some record has other than exactly one value).
    pub list: bool,
    /// Absent from some records.
    pub nullable: bool,
    /// For bytes features: every value is valid UTF-8 (a string column in Parquet).
    #[serde(default)]
    pub utf8: bool,
    /// Records disagree on the type (`dtype` is the first one seen); TFRecord only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mixed: bool,
}

/// The features of a dataset, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Schema {
    /// Columns in name order.
    pub columns: Vec<Column>,
}

impl Schema {
    /// Position of a column.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.columns
            .binary_search_by(|c| c.name.as_str().cmp(name))
            .ok()
    }
}

/// One shard in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Path relative to the dataset directory.
    pub path: String,
    /// Records in the shard.
    pub records: u64,
}

/// `_manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `tfrecord` or `parquet`.
    pub format: String,
    /// `none`, `gzip`, `zlib` (TFRecord) or the Parquet codec.
    pub compression: String,
    /// Total records.
    pub records: u64,
    /// Shard files in order.
    pub shards: Vec<Shard>,
    /// Features.
    pub schema: Schema,
    /// Writer, e.g. `tusk 0.1.0`.
    pub created_by: String,
}

impl Manifest {
    /// Read and validate the manifest of the dataset directory `dir`.
    pub fn load(dir: &Location) -> Result<Manifest> {
        let loc = dir.join(MANIFEST);
        let bytes = loc.read()?;
        let bad = |message: String| Error::Dataset {
            file: loc.url(),
            message,
        };
        let m: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("invalid manifest JSON: {e}")))?;
        if m.format != "tfrecord" && m.format != "parquet" {
            return Err(bad(format!(
                "unknown format '{}' (expected tfrecord or parquet)",
                m.format
            )));
        }
        if m.format == "tfrecord" && Compression::parse(&m.compression).is_none() {
            return Err(bad(format!(
                "unknown compression '{}' (expected none, gzip or zlib)",
                m.compression
            )));
        }
        let sum: u64 = m.shards.iter().map(|s| s.records).sum();
        if sum != m.records {
            return Err(bad(format!(
                "shard record counts add up to {sum}, but the manifest says {}",
                m.records
            )));
        }
        if let Some(s) = m
            .shards
            .iter()
            .find(|s| s.path.contains("..") || s.path.starts_with('/'))
        {
            return Err(bad(format!(
                "shard path '{}' leaves the dataset directory",
                s.path
            )));
        }
        Ok(m)
    }

    fn format(&self) -> Format {
        match self.format.as_str() {
            "parquet" => Format::Parquet,
            _ => Format::TfRecord(Compression::parse(&self.compression).unwrap_or_default()),
        }
    }
}

/// One file of an [`Input`].
#[derive(Debug, Clone)]
pub struct InputFile {
    /// Where it is.
    pub location: Location,
    /// How to read it.
    pub format: Format,
    /// Record count when known up front (from a manifest).
    pub records: Option<u64>,
}

/// Everything an input URL names, in read order.
#[derive(Debug, Clone)]
pub struct Input {
    /// The files.
    pub files: Vec<InputFile>,
    /// The manifest, when the input is a dataset directory.
    pub manifest: Option<Manifest>,
}

/// Where a record came from, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Pos<'a> {
    /// File URL.
    pub file: &'a str,
    /// 0-based record index in that file.
    pub index: u64,
    /// Byte offset in the (uncompressed) file; for Parquet, the row number.
    pub offset: u64,
}

impl Pos<'_> {
    /// The "not an Example" error for this record.
    pub fn not_example(&self, reason: String) -> Error {
        Error::NotExample {
            file: self.file.to_string(),
            index: self.index,
            offset: self.offset,
            reason,
        }
    }
}

impl Input {
    /// Resolve `url`: a glob, a file, or a dataset directory with a manifest.
    /// `compression` overrides what file names say (TFRecord inputs only).
    pub fn open(storage: &Storage, url: &str, compression: Option<Compression>) -> Result<Input> {
        let file = |location: Location, records| {
            let mut format = Format::from_name(location.file_name());
            if let (Format::TfRecord(_), Some(c)) = (format, compression) {
                format = Format::TfRecord(c);
            }
            InputFile {
                location,
                format,
                records,
            }
        };
        if url.contains(['*', '?', '[', '{']) {
            let files: Vec<_> = storage
                .glob(url)?
                .into_iter()
                .filter(|l| !l.file_name().starts_with('_'))
                .map(|l| file(l, None))
                .collect();
            if files.is_empty() {
                return Err(Error::Dataset {
                    file: url.into(),
                    message: "no files match this pattern".into(),
                });
            }
            return Ok(Input {
                files,
                manifest: None,
            });
        }
        let loc = storage.open(url)?;
        match loc.head() {
            Ok(_) => {
                return Ok(Input {
                    files: vec![file(loc, None)],
                    manifest: None,
                });
            }
            Err(tusk_storage::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let manifest_loc = loc.join(MANIFEST);
        if manifest_loc.exists()? {
            let m = Manifest::load(&loc)?;
            let format = m.format();
            let files = m
                .shards
                .iter()
                .map(|s| InputFile {
                    location: loc.join(&s.path),
                    format,
                    records: Some(s.records),
                })
                .collect();
            return Ok(Input {
                files,
                manifest: Some(m),
            });
        }
        let listed = loc.list()?;
        if listed.is_empty() {
            return Err(tusk_storage::Error::NotFound { url: loc.url() }.into());
        }
        Err(Error::Dataset {
            file: loc.url(),
            message: format!(
                "directory has no {MANIFEST}: not a complete tusk dataset (its writer may have died before committing); to read its files anyway pass a glob such as '{}/*.tfrecord'",
                loc.url()
            ),
        })
    }

    /// Records in the input when known without reading it (manifests, Parquet footers).
    pub fn known_records(&self) -> Option<u64> {
        let mut total = 0;
        for f in &self.files {
            total += match (f.records, f.format) {
                (Some(n), _) => n,
                (None, Format::Parquet) => parquet_io::row_count(&f.location).ok()?,
                (None, Format::TfRecord(_)) => return None,
            };
        }
        Some(total)
    }

    /// Call `f(example_bytes, pos)` for every record of every file, in order. TFRecord CRCs are
    /// always verified; Parquet rows arrive as encoded Examples.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], Pos<'_>) -> Result<()>) -> Result<()> {
        self.for_each_while(|rec, pos| f(rec, pos).map(|()| true))
    }

    /// Like [`Input::for_each`], stopping early when `f` returns `Ok(false)`.
    pub fn for_each_while(&self, mut f: impl FnMut(&[u8], Pos<'_>) -> Result<bool>) -> Result<()> {
        for file in &self.files {
            let url = file.location.url();
            match file.format {
                Format::TfRecord(c) => {
                    let mut r = tfrecord::open(&file.location, Some(c))?;
                    loop {
                        let (index, offset) = (r.index(), r.offset());
                        let Some(rec) = r.next_record()? else { break };
                        let pos = Pos {
                            file: &url,
                            index,
                            offset,
                        };
                        if !f(rec, pos)? {
                            return Ok(());
                        }
                    }
                }
                Format::Parquet => {
                    let mut go_on = true;
                    parquet_io::for_each_example(&file.location, |rec, row| {
                        go_on = f(
                            rec,
                            Pos {
                                file: &url,
                                index: row,
                                offset: row,
                            },
                        )?;
                        Ok(go_on)
                    })?;
                    if !go_on {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Decode every record into an Example: `f(example, pos)`; `Ok(false)` stops early.
    pub fn for_each_example(
        &self,
        mut f: impl FnMut(example::Example, Pos<'_>) -> Result<bool>,
    ) -> Result<()> {
        self.for_each_while(|rec, pos| {
            let ex = example::decode(rec).map_err(|r| pos.not_example(r))?;
            f(ex, pos)
        })
    }

    /// One pass over the input to learn its schema and record count (see
    /// [`SchemaInference::finish`] for `allow_mixed`).
    pub fn infer_schema(
        &self,
        allow_mixed: bool,
        progress: impl FnMut(u64),
    ) -> Result<(Schema, u64)> {
        self.scan(default_threads(), progress)?.finish(allow_mixed)
    }

    /// Walk every record (CRCs checked, every Example validated) and gather per-feature stats.
    /// This thread reads and frames; `threads` workers parse batches of records in parallel.
    /// On bad input the error reported is the one at the earliest position, as a sequential
    /// pass would report it. `progress` is called with each record's payload size.
    pub fn scan(&self, threads: usize, mut progress: impl FnMut(u64)) -> Result<SchemaInference> {
        if threads <= 1 {
            let mut inf = SchemaInference::default();
            self.for_each(|rec, pos| {
                progress(rec.len() as u64);
                inf.add(rec, &pos)
            })?;
            inf.settle();
            return Ok(inf);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(threads * 2);
        let rx = std::sync::Mutex::new(rx);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let rx = &rx;
                    scope.spawn(move || {
                        let mut inf = SchemaInference::default();
                        let mut first_err: Option<(u64, Error)> = None;
                        loop {
                            let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            let Ok(batch) = next else { break };
                            // After an error, keep draining so the reader never blocks.
                            if first_err.is_some() {
                                continue;
                            }
                            if let Err(e) = batch.add_to(&mut inf) {
                                first_err = Some((batch.seq, e));
                            }
                        }
                        inf.settle();
                        (inf, first_err)
                    })
                })
                .collect();
            let mut batch = Batch::new(0, "");
            let read = self.for_each(|rec, pos| {
                if batch.file.as_str() != pos.file || batch.data.len() >= 1 << 20 {
                    let next = Batch::new(batch.seq + 1, pos.file);
                    let full = std::mem::replace(&mut batch, next);
                    if !full.recs.is_empty() {
                        // Workers only stop when the channel closes, so this cannot fail.
                        let _ = tx.send(full);
                    }
                }
                batch.push(rec, &pos);
                progress(rec.len() as u64);
                Ok(())
            });
            let last_seq = batch.seq;
            let _ = tx.send(batch);
            drop(tx);
            let mut errors: Vec<(u64, Error)> = Vec::new();
            if let Err(e) = read {
                // The reader fails after every record it delivered: order it last.
                errors.push((last_seq + 1, e));
            }
            let mut total = SchemaInference::default();
            for w in workers {
                let (inf, err) = w.join().map_err(|_| Error::Dataset {
                    file: String::new(),
                    message: "internal error: a parsing thread panicked".into(),
                })?;
                total.merge(inf);
                errors.extend(err);
            }
            match errors.into_iter().min_by_key(|(seq, _)| *seq) {
                Some((_, e)) => Err(e),
                None => Ok(total),
            }
        })
    }
}

/// Parsing threads to use by default: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Records handed from the reading thread to a parsing thread.
struct Batch {
    seq: u64,
    file: String,
    data: Vec<u8>,
    /// (end offset in `data`, record index, byte offset) per record.
    recs: Vec<(usize, u64, u64)>,
}

impl Batch {
    fn new(seq: u64, file: &str) -> Batch {
        Batch {
            seq,
            file: file.to_string(),
            data: Vec::with_capacity(1 << 20),
            recs: Vec::new(),
        }
    }

    fn push(&mut self, rec: &[u8], pos: &Pos<'_>) {
        self.data.extend_from_slice(rec);
        self.recs.push((self.data.len(), pos.index, pos.offset));
    }

    fn add_to(&self, inf: &mut SchemaInference) -> Result<()> {
        let mut start = 0;
        for &(end, index, offset) in &self.recs {
            let pos = Pos {
                file: &self.file,
                index,
                offset,
            };
            inf.add(&self.data[start..end], &pos)?;
            start = end;
        }
        Ok(())
    }
}

/// Per-feature facts gathered over a pass, for schemas and `records stats`.
#[derive(Debug, Clone)]
pub struct FeatureStats {
    /// Value type.
    pub dtype: FeatureType,
    /// Records that have the feature.
    pub records: u64,
    /// Values over all records.
    pub values: u64,
    /// Fewest values in a record that has it.
    pub min_values: u64,
    /// Most values in a record that has it.
    pub max_values: u64,
    /// Every bytes value is UTF-8.
    pub utf8: bool,
    /// Another type this feature has in some record (file, record index), if any.
    pub conflict: Option<(FeatureType, String, u64)>,
    first_seen: (String, u64),
}

/// Builds a [`Schema`] and [`FeatureStats`] from serialized Examples, without decoding them.
#[derive(Debug, Default)]
pub struct SchemaInference {
    /// Stats per feature name.
    pub features: BTreeMap<String, FeatureStats>,
    /// Records seen.
    pub records: u64,
    /// Bytes of record payload seen.
    pub bytes: u64,
    /// Hot path: stats in first-seen order, found by name or by the previous record's layout.
    slots: Vec<(String, FeatureStats)>,
    by_name: std::collections::HashMap<String, usize>,
    /// Slot of the feature at each position of the previous record (records of one dataset
    /// nearly always list their features in the same order, so this skips the hash lookup).
    last_layout: Vec<usize>,
}

impl SchemaInference {
    /// Account for one serialized Example.
    pub fn add(&mut self, rec: &[u8], pos: &Pos<'_>) -> Result<()> {
        let Self {
            slots,
            by_name,
            last_layout,
            ..
        } = self;
        let mut position = 0usize;
        example::walk_raw(rec, |raw_name, values, n| {
            let Some(dtype) = values.feature_type() else {
                return Ok(());
            };
            let n = n as u64;
            // Same bytes as a known (valid UTF-8) name: no need to validate again.
            let cached = last_layout
                .get(position)
                .copied()
                .filter(|&i| same_bytes(slots[i].0.as_bytes(), raw_name));
            let slot = match cached {
                Some(i) => i,
                None => {
                    let name = std::str::from_utf8(raw_name)
                        .map_err(|_| "feature name is not valid UTF-8".to_string())?;
                    match by_name.get(name).copied() {
                        Some(i) => i,
                        None => {
                            slots.push((
                                name.to_string(),
                                FeatureStats {
                                    dtype,
                                    records: 0,
                                    values: 0,
                                    min_values: u64::MAX,
                                    max_values: 0,
                                    utf8: true,
                                    conflict: None,
                                    first_seen: (pos.file.to_string(), pos.index),
                                },
                            ));
                            by_name.insert(name.to_string(), slots.len() - 1);
                            slots.len() - 1
                        }
                    }
                }
            };
            if position < last_layout.len() {
                last_layout[position] = slot;
            } else {
                last_layout.push(slot);
            }
            position += 1;
            let s = &mut slots[slot].1;
            if s.dtype != dtype && s.conflict.is_none() {
                s.conflict = Some((dtype, pos.file.to_string(), pos.index));
            }
            s.records += 1;
            s.values += n;
            s.min_values = s.min_values.min(n);
            s.max_values = s.max_values.max(n);
            if s.utf8 && dtype == FeatureType::Bytes {
                s.utf8 = values.all_utf8();
            }
            Ok(())
        })
        .map_err(|r| pos.not_example(r))?;
        self.records += 1;
        self.bytes += rec.len() as u64;
        Ok(())
    }

    /// Move the hot-path stats into [`SchemaInference::features`] (sorted by name). Call
    /// after the last [`SchemaInference::add`]; [`SchemaInference::finish`] does it itself.
    pub fn settle(&mut self) {
        for (name, s) in self.slots.drain(..) {
            self.features.insert(name, s);
        }
        self.by_name.clear();
        self.last_layout.clear();
    }

    /// Fold another (settled) inference into this (settled) one.
    pub fn merge(&mut self, other: SchemaInference) {
        self.records += other.records;
        self.bytes += other.bytes;
        for (name, o) in other.features {
            match self.features.get_mut(&name) {
                None => {
                    self.features.insert(name, o);
                }
                Some(s) => {
                    if s.conflict.is_none() {
                        s.conflict = o.conflict.clone().or_else(|| {
                            (o.dtype != s.dtype)
                                .then(|| (o.dtype, o.first_seen.0.clone(), o.first_seen.1))
                        });
                    }
                    s.records += o.records;
                    s.values += o.values;
                    s.min_values = s.min_values.min(o.min_values);
                    s.max_values = s.max_values.max(o.max_values);
                    s.utf8 &= o.utf8;
                }
            }
        }
    }

    /// The schema and the record count. A feature with two types is an error unless
    /// `allow_mixed` (TFRecord can carry it; a Parquet column cannot), where its column is
    /// marked `mixed`.
    pub fn finish(mut self, allow_mixed: bool) -> Result<(Schema, u64)> {
        self.settle();
        if !allow_mixed
            && let Some((name, s)) = self.features.iter().find(|(_, s)| s.conflict.is_some())
        {
            let (other, file, index) = s.conflict.clone().expect("checked");
            return Err(Error::Schema {
                file,
                message: format!(
                    "feature '{name}' is {} in record #{index} but {} in {} record #{}: one column cannot hold both",
                    other.as_str(),
                    s.dtype.as_str(),
                    s.first_seen.0,
                    s.first_seen.1
                ),
            });
        }
        let records = self.records;
        let columns = self
            .features
            .into_iter()
            .map(|(name, s)| Column {
                name,
                dtype: s.dtype,
                list: !(s.min_values == 1 && s.max_values == 1),
                nullable: s.records < records,
                utf8: s.dtype == FeatureType::Bytes && s.utf8,
                mixed: s.conflict.is_some(),
            })
            .collect();
        Ok((Schema { columns }, records))
    }
}

/// Byte equality for short names, without a call into `memcmp`.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Where converted records go.
#[derive(Debug, Clone)]
pub enum Output {
    /// One file.
    File(Location, Format),
    /// A sharded dataset directory with `shards` files.
    Dataset(Location, Format, usize),
}

enum Sink {
    Tf(Box<FileWriter>),
    Pq(Box<ParquetWriter>),
    /// A shard encoded and written on its own thread (round-robin placement).
    Thread(Box<ShardThread>),
}

impl Sink {
    fn create(loc: &Location, format: Format, schema: &Schema) -> Result<Sink> {
        Ok(match format {
            Format::TfRecord(c) => Sink::Tf(Box::new(FileWriter::create(loc, Some(c))?)),
            Format::Parquet => Sink::Pq(Box::new(ParquetWriter::create(loc, schema)?)),
        })
    }

    fn write(&mut self, rec: &[u8], pos: &Pos<'_>) -> Result<()> {
        match self {
            Sink::Tf(w) => {
                // Validate before writing: never pass on a payload that is not an Example.
                example::walk(rec, |_, _, _| Ok(())).map_err(|r| pos.not_example(r))?;
                w.write(rec)
            }
            Sink::Pq(w) => w.write(&example::decode(rec).map_err(|r| pos.not_example(r))?),
            Sink::Thread(t) => t.send(ShardMsg::Record {
                rec: rec.to_vec(),
                file: pos.file.into(),
                index: pos.index,
            }),
        }
    }

    /// Write Arrow rows: Parquet takes the columns, TFRecord one encoded Example per row.
    /// `index` is the dataset-wide index of the batch's first row, for errors.
    fn write_rows(
        &mut self,
        source: &str,
        batch: &arrow::array::RecordBatch,
        index: u64,
    ) -> Result<()> {
        match self {
            Sink::Pq(w) => w.write_batch(batch),
            _ => {
                let mut index = index;
                parquet_io::for_each_encoded_row(source, batch, |rec| {
                    let pos = Pos {
                        file: source,
                        index,
                        offset: 0,
                    };
                    self.write(rec, &pos)?;
                    index += 1;
                    Ok(true)
                })?;
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            Sink::Tf(w) => w.finish(),
            Sink::Pq(w) => w.finish(),
            Sink::Thread(t) => t.finish(),
        }
    }
}

/// What the writer thread of a shard is told.
enum ShardMsg {
    /// Rows `first`, `first + step`, ... of `batch`; its row 0 has dataset-wide `index`.
    Rows {
        source: std::sync::Arc<str>,
        batch: arrow::array::RecordBatch,
        first: usize,
        step: usize,
        index: u64,
    },
    /// One serialized Example, validated by the thread.
    Record {
        rec: Vec<u8>,
        file: std::sync::Arc<str>,
        index: u64,
    },
    /// Close and publish the shard (a thread whose channel closes without this abandons it).
    Finish,
}

/// A shard whose encoding (Parquet columns, or Examples) and writing run on its own thread, so
/// the shards of a round-robin dataset are encoded in parallel while the caller produces rows.
struct ShardThread {
    tx: std::sync::mpsc::SyncSender<ShardMsg>,
    handle: Option<std::thread::JoinHandle<Result<()>>>,
    url: String,
}

impl ShardThread {
    fn spawn(mut sink: Sink, url: String, shard: usize) -> Result<ShardThread> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<ShardMsg>(2);
        let handle =
            std::thread::Builder::new()
                .name(format!("tusk-shard-{shard}"))
                .spawn(move || -> Result<()> {
                    for msg in rx {
                        match msg {
                            ShardMsg::Rows {
                                source,
                                batch,
                                first,
                                step,
                                index,
                            } => {
                                let idx: arrow::array::UInt32Array = (first..batch.num_rows())
                                    .step_by(step)
                                    .map(|i| i as u32)
                                    .collect();
                                let part = arrow::compute::take_record_batch(&batch, &idx)
                                    .map_err(|e| Error::Schema {
                                        file: source.to_string(),
                                        message: format!("internal error sharding rows: {e}"),
                                    })?;
                                sink.write_rows(&source, &part, index + first as u64)?;
                            }
                            ShardMsg::Record { rec, file, index } => {
                                let pos = Pos {
                                    file: &file,
                                    index,
                                    offset: 0,
                                };
                                sink.write(&rec, &pos)?;
                            }
                            ShardMsg::Finish => return sink.finish(),
                        }
                    }
                    // The writer was dropped without finishing: the shard is abandoned unpublished.
                    Ok(())
                })
                .map_err(|e| Error::Dataset {
                    file: url.clone(),
                    message: format!("cannot start a writer thread: {e}"),
                })?;
        Ok(ShardThread {
            tx,
            handle: Some(handle),
            url,
        })
    }

    fn send(&mut self, msg: ShardMsg) -> Result<()> {
        if self.tx.send(msg).is_ok() {
            return Ok(());
        }
        // The thread stopped early: that only happens on an error, which it returns.
        self.join()?;
        Err(Error::Dataset {
            file: self.url.clone(),
            message: "internal error: the shard's writer thread stopped".into(),
        })
    }

    fn join(&mut self) -> Result<()> {
        match self.handle.take() {
            None => Ok(()),
            Some(h) => h.join().unwrap_or_else(|_| {
                Err(Error::Dataset {
                    file: self.url.clone(),
                    message: "the shard's writer thread panicked".into(),
                })
            }),
        }
    }

    fn finish(mut self) -> Result<()> {
        self.send(ShardMsg::Finish)?;
        self.join()
    }
}

/// Copy every record of `input` to `output`. Sharded outputs are balanced by record count
/// (shard sizes differ by at most one record) and keep the input order; the manifest is
/// written last, create-only, so an existing dataset is never overwritten. Returns the
/// record count. `progress` is called with each record's payload size.
pub fn convert(input: &Input, output: &Output, mut progress: impl FnMut(u64)) -> Result<u64> {
    // Pass 1: schema (needed for Parquet and the manifest) and count (needed to balance).
    let to_parquet = matches!(
        output,
        Output::File(_, Format::Parquet) | Output::Dataset(_, Format::Parquet, _)
    );
    let (schema, total) = match &input.manifest {
        Some(m) => (m.schema.clone(), m.records),
        None => input.infer_schema(!to_parquet, |_| {})?,
    };
    if let Some(c) = schema.columns.iter().find(|c| c.mixed && to_parquet) {
        return Err(Error::Schema {
            file: input
                .files
                .first()
                .map(|f| f.location.url())
                .unwrap_or_default(),
            message: format!(
                "feature '{}' has more than one type across records: one Parquet column cannot hold both",
                c.name
            ),
        });
    }
    match output {
        Output::File(loc, format) => {
            let mut sink = Sink::create(loc, *format, &schema)?;
            let mut n = 0;
            input.for_each(|rec, pos| {
                sink.write(rec, &pos)?;
                n += 1;
                progress(rec.len() as u64);
                Ok(())
            })?;
            sink.finish()?;
            Ok(n)
        }
        Output::Dataset(dir, format, shards) => {
            let mut w =
                ShardedWriter::create(dir, *format, *shards, schema, Placement::Contiguous(total))?;
            input.for_each(|rec, pos| {
                w.write(rec, &pos)?;
                progress(rec.len() as u64);
                Ok(())
            })?;
            let m = w.finish()?;
            Ok(m.records)
        }
    }
}

/// How a [`ShardedWriter`] spreads records over its shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// `total` records in input order, shard `i` holding records `i*total/n .. (i+1)*total/n`.
    /// Writing a different number of records is an error.
    Contiguous(u64),
    /// Record `k` goes to shard `k mod n`: balanced to one record whatever the keys, and
    /// streaming (the total need not be known).
    RoundRobin,
}

/// Writes a sharded dataset: shard files balanced by record count, then `_manifest.json`
/// (create-only) as the commit. Refuses a directory that already holds a dataset.
pub struct ShardedWriter {
    dir: Location,
    format: Format,
    schema: Schema,
    placement: Placement,
    names: Vec<String>,
    /// Open shards: one at a time for contiguous placement, all for round-robin.
    sinks: Vec<Option<Sink>>,
    counts: Vec<u64>,
    written: u64,
    /// The open shard, for contiguous placement.
    current: usize,
}

impl ShardedWriter {
    /// Start a dataset of `shards` files of `format` under `dir`.
    pub fn create(
        dir: &Location,
        format: Format,
        shards: usize,
        schema: Schema,
        placement: Placement,
    ) -> Result<ShardedWriter> {
        if dir.join(MANIFEST).exists()? {
            return Err(Error::Dataset {
                file: dir.url(),
                message: format!(
                    "a dataset already exists here ({MANIFEST} present); write to a new directory or delete it first"
                ),
            });
        }
        // Left by a dataset that lived here before (its manifest deleted): not ours.
        match dir.join(DERIVED).delete_all() {
            Ok(_) | Err(tusk_storage::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let shards = shards.max(1);
        let names: Vec<String> = (0..shards)
            .map(|i| format!("part-{i:05}-of-{shards:05}{}", format.extension()))
            .collect();
        let mut w = ShardedWriter {
            dir: dir.clone(),
            format,
            schema,
            placement,
            names,
            sinks: (0..shards).map(|_| None).collect(),
            counts: vec![0; shards],
            written: 0,
            current: 0,
        };
        let open_now = match placement {
            Placement::Contiguous(_) => 1,
            Placement::RoundRobin => shards,
        };
        for i in 0..open_now {
            w.open(i)?;
        }
        Ok(w)
    }

    fn open(&mut self, i: usize) -> Result<()> {
        let loc = self.dir.join(&self.names[i]);
        let mut sink = Sink::create(&loc, self.format, &self.schema)?;
        if self.placement == Placement::RoundRobin && self.names.len() > 1 {
            // All shards are open at once: each encodes on its own thread.
            sink = Sink::Thread(Box::new(ShardThread::spawn(sink, loc.url(), i)?));
        }
        self.sinks[i] = Some(sink);
        Ok(())
    }

    fn shard_for_next(&mut self) -> Result<usize> {
        let n = self.names.len() as u64;
        match self.placement {
            Placement::RoundRobin => Ok((self.written % n) as usize),
            Placement::Contiguous(total) => {
                if self.written >= total {
                    return Err(Error::Dataset {
                        file: self.dir.url(),
                        message: format!(
                            "input changed while writing: expected {total} records, got more"
                        ),
                    });
                }
                let bound = |k: u64| k * total / n;
                // Move on (closing full shards, empty ones included) until this record fits.
                while self.written >= bound(self.current as u64 + 1) {
                    if let Some(s) = self.sinks[self.current].take() {
                        s.finish()?;
                    }
                    self.current += 1;
                    self.open(self.current)?;
                }
                Ok(self.current)
            }
        }
    }

    /// Append one serialized Example (validated; `pos` names it in errors).
    pub fn write(&mut self, rec: &[u8], pos: &Pos<'_>) -> Result<()> {
        let i = self.shard_for_next()?;
        self.sinks[i]
            .as_mut()
            .expect("shard is open")
            .write(rec, pos)?;
        self.counts[i] += 1;
        self.written += 1;
        Ok(())
    }

    /// Append Arrow rows. Parquet shards take them as columns (no per-row conversion);
    /// TFRecord shards get one Example per row. Placement is per row, as for [`Self::write`].
    pub fn write_batch(&mut self, source: &str, batch: &arrow::array::RecordBatch) -> Result<()> {
        let rows = batch.num_rows() as u64;
        if self.placement != Placement::RoundRobin {
            // One shard open at a time: cut the batch where the shard boundaries fall.
            let mut done = 0u64;
            while done < rows {
                let i = self.shard_for_next()?;
                let room = match self.placement {
                    Placement::Contiguous(total) => {
                        let n = self.names.len() as u64;
                        ((i as u64 + 1) * total / n).saturating_sub(self.written)
                    }
                    Placement::RoundRobin => rows - done,
                };
                let take = room.min(rows - done);
                let part = batch.slice(done as usize, take as usize);
                let sink = self.sinks[i].as_mut().expect("shard is open");
                sink.write_rows(source, &part, self.written)?;
                self.counts[i] += take;
                self.written += take;
                done += take;
            }
            return Ok(());
        }
        let n = self.names.len() as u64;
        let source: std::sync::Arc<str> = source.into();
        for k in 0..n {
            // rows whose dataset-wide index is k mod n
            let first = (k + n - self.written % n) % n;
            if first >= rows {
                continue;
            }
            let count = (rows - first).div_ceil(n);
            let sink = self.sinks[k as usize].as_mut().expect("shard is open");
            match sink {
                Sink::Thread(t) => t.send(ShardMsg::Rows {
                    source: source.clone(),
                    batch: batch.clone(),
                    first: first as usize,
                    step: n as usize,
                    index: self.written,
                })?,
                // a single shard: every row, in place
                _ => sink.write_rows(&source, batch, self.written)?,
            }
            self.counts[k as usize] += count;
        }
        self.written += rows;
        Ok(())
    }

    /// Append one Example.
    pub fn write_example(&mut self, ex: &example::Example) -> Result<()> {
        let bytes = ex.encode_to_vec();
        let file = self.dir.url();
        let pos = Pos {
            file: &file,
            index: self.written,
            offset: 0,
        };
        self.write(&bytes, &pos)
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.written
    }

    /// Close every shard, then commit the manifest. Returns it.
    pub fn finish(mut self) -> Result<Manifest> {
        if let Placement::Contiguous(total) = self.placement
            && self.written != total
        {
            return Err(Error::Dataset {
                file: self.dir.url(),
                message: format!(
                    "input changed while writing: expected {total} records, got {}",
                    self.written
                ),
            });
        }
        for i in 0..self.names.len() {
            match self.sinks[i].take() {
                Some(s) => s.finish()?,
                // Shards the input never reached are written empty.
                None if i > self.current => {
                    Sink::create(&self.dir.join(&self.names[i]), self.format, &self.schema)?
                        .finish()?
                }
                None => {}
            }
        }
        let (fmt, compression) = self.format.manifest_names();
        let manifest = Manifest {
            format: fmt.into(),
            compression: compression.into(),
            records: self.written,
            shards: self
                .names
                .iter()
                .zip(&self.counts)
                .map(|(path, n)| Shard {
                    path: path.clone(),
                    records: *n,
                })
                .collect(),
            schema: self.schema,
            created_by: format!("tusk {}", env!("CARGO_PKG_VERSION")),
        };
        let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
        self.dir.join(MANIFEST).write_new(json)?;
        Ok(manifest)
    }
}

/// Encode an Example (helper for writers of generated data).
pub fn encode(ex: &example::Example) -> Vec<u8> {
    ex.encode_to_vec()
}
