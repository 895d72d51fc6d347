//! Columnar batches for frameworks: every record of a URL, decoded column by column into flat
//! typed buffers (`i64`, `f32`, bytes with offsets), split over any number of consumers
//! (ranks × loader workers) by record count, shuffled per epoch, resumable at any batch.
//!
//! This is what the Python package hands to PyTorch and TensorFlow. Unlike [`crate::pipeline`]
//! nothing is encoded: values come out as stored.
//!
//! **Epoch order.** The files are put in a seeded order (`seed`, `epoch`) when shuffling, and
//! their records, one after another, form the epoch's stream of `N` records. Consumer `k` of
//! `K` reads records `⌊kN/K⌋ .. ⌊(k+1)N/K⌋` of that stream — every record exactly once per
//! epoch, the consumers' shares within one record of each other. A consumer cuts its share
//! into windows of `window` records and emits each window in a seeded random order (a window is
//! decoded whole, so it is a shuffle buffer that is drained completely); batches run across
//! window boundaries. The same (seed, epoch, K, k, window) gives the same batches.
//!
//! **Layouts.** A column is *scalar* (one value per record: a `[B]` array), *ragged* (`values`
//! plus `B + 1` row offsets) or *fixed-shape* (every record holds the same number of values and
//! a `shape` is known, e.g. images written by `tusk images normalize`: `[B, C, H, W]`). The
//! layout comes from the dataset's schema — a tusk manifest, a Parquet footer, or a pass over
//! raw TFRecord/CSV files — so it is the same for every batch and every file format.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatchReader};
use arrow::datatypes::{Float32Type, Int64Type};
use tusk_records::dataset::{Format, Input, InputFile, Schema};
use tusk_records::example::{self, FeatureType};
use tusk_records::{parquet_io, tfrecord};
use tusk_storage::{Location, Storage};

use crate::error::{Error, Result};
use crate::pipeline::Rng;

/// Value type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 64-bit integers (Example `int64_list`; Parquet integers, booleans, dates, timestamps).
    Int64,
    /// 32-bit floats.
    Float32,
    /// Byte strings.
    Bytes,
}

impl DType {
    /// `int64`, `float32` or `bytes`.
    pub fn as_str(self) -> &'static str {
        match self {
            DType::Int64 => "int64",
            DType::Float32 => "float32",
            DType::Bytes => "bytes",
        }
    }

    fn of(t: FeatureType) -> DType {
        match t {
            FeatureType::Int64 => DType::Int64,
            FeatureType::Float => DType::Float32,
            FeatureType::Bytes => DType::Bytes,
        }
    }
}

/// How a column's values are laid out in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Exactly one value per record: `[B]`.
    Scalar,
    /// Any number of values per record: `values` and `B + 1` row offsets.
    Ragged,
    /// The same number of values in every record, reshaped to `[B, *shape]`.
    Fixed(Vec<usize>),
}

/// One column of the batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Feature / column name.
    pub name: String,
    /// Value type.
    pub dtype: DType,
    /// Layout in a batch.
    pub layout: Layout,
}

/// A column's values, flat.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// int64 values.
    Int64(Vec<i64>),
    /// float32 values.
    Float32(Vec<f32>),
    /// Byte strings: all bytes back to back, and `n + 1` offsets (starting at 0).
    Bytes {
        /// The bytes.
        data: Vec<u8>,
        /// Value `i` is `data[offsets[i]..offsets[i + 1]]`.
        offsets: Vec<i64>,
    },
}

impl Values {
    fn new(d: DType) -> Values {
        match d {
            DType::Int64 => Values::Int64(Vec::new()),
            DType::Float32 => Values::Float32(Vec::new()),
            DType::Bytes => Values::Bytes {
                data: Vec::new(),
                offsets: vec![0],
            },
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::Int64(v) => v.len(),
            Values::Float32(v) => v.len(),
            Values::Bytes { offsets, .. } => offsets.len() - 1,
        }
    }

    /// No values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append values `from..to` of `other` (same type).
    fn extend_from(&mut self, other: &Values, from: usize, to: usize) {
        match (self, other) {
            (Values::Int64(a), Values::Int64(b)) => a.extend_from_slice(&b[from..to]),
            (Values::Float32(a), Values::Float32(b)) => a.extend_from_slice(&b[from..to]),
            (
                Values::Bytes { data, offsets },
                Values::Bytes {
                    data: bd,
                    offsets: bo,
                },
            ) => {
                let (s, e) = (bo[from] as usize, bo[to] as usize);
                let base = data.len() as i64 - s as i64;
                data.extend_from_slice(&bd[s..e]);
                offsets.extend(bo[from + 1..=to].iter().map(|o| o + base));
            }
            _ => unreachable!("columns of one plan have one type"),
        }
    }

    fn reserve(&mut self, n: usize) {
        match self {
            Values::Int64(v) => v.reserve(n),
            Values::Float32(v) => v.reserve(n),
            Values::Bytes { offsets, .. } => offsets.reserve(n),
        }
    }
}

/// One column of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The values.
    pub values: Values,
    /// For ragged columns, `rows + 1` offsets into `values`; `None` when every row has one
    /// value (scalar) or the same count (fixed shape).
    pub offsets: Option<Vec<i64>>,
}

impl Column {
    fn new(f: &Field) -> Column {
        Column {
            values: Values::new(f.dtype),
            offsets: matches!(f.layout, Layout::Ragged).then(|| vec![0]),
        }
    }

    /// Close a row whose values were appended (ragged columns record where it ends).
    fn end_row(&mut self) {
        if let Some(o) = &mut self.offsets {
            o.push(self.values.len() as i64);
        }
    }
}

/// A batch: `rows` records, one [`Column`] per [`Plan::fields`] entry, in that order.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    /// Records in the batch.
    pub rows: usize,
    /// The columns.
    pub columns: Vec<Column>,
}

impl Columns {
    fn new(fields: &[Field]) -> Columns {
        Columns {
            rows: 0,
            columns: fields.iter().map(Column::new).collect(),
        }
    }

    /// Append rows `idx` (in that order) of `src`, which has the same fields.
    fn gather(&mut self, src: &Columns, idx: &[u32], fields: &[Field]) {
        for ((dst, s), f) in self.columns.iter_mut().zip(&src.columns).zip(fields) {
            let per = match &f.layout {
                Layout::Scalar => Some(1),
                Layout::Fixed(shape) => Some(shape.iter().product::<usize>()),
                Layout::Ragged => None,
            };
            match per {
                Some(per) => {
                    dst.values.reserve(idx.len() * per);
                    // Runs of consecutive rows are copied in one go (the unshuffled case).
                    let mut i = 0;
                    while i < idx.len() {
                        let start = idx[i] as usize;
                        let mut j = i + 1;
                        while j < idx.len() && idx[j] as usize == start + (j - i) {
                            j += 1;
                        }
                        dst.values
                            .extend_from(&s.values, start * per, (start + j - i) * per);
                        i = j;
                    }
                }
                None => {
                    let so = s.offsets.as_ref().expect("ragged columns have offsets");
                    for &r in idx {
                        let r = r as usize;
                        dst.values
                            .extend_from(&s.values, so[r] as usize, so[r + 1] as usize);
                        dst.end_row();
                    }
                }
            }
        }
        self.rows += idx.len();
    }
}

/// How a file is read.
#[derive(Debug, Clone)]
enum FileKind {
    Records(Format),
    Csv(CsvTypes),
}

/// Column types inferred for CSV files: (name, dtype, list) by header position.
#[derive(Debug, Clone, Default)]
struct CsvTypes {
    columns: Vec<(String, DType, bool)>,
    delimiter: u8,
}

/// One file of a plan, with its record count.
#[derive(Debug, Clone)]
pub struct PlanFile {
    location: Location,
    kind: FileKind,
    /// Records in the file.
    pub records: u64,
}

impl PlanFile {
    /// The file's URL.
    pub fn url(&self) -> String {
        self.location.url()
    }
}

/// A run of records `from..to` of file `file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Index into [`Plan::files`].
    pub file: usize,
    /// First record.
    pub from: u64,
    /// One past the last record.
    pub to: u64,
}

/// What a URL holds, resolved once: files with record counts, and the batch columns.
#[derive(Debug, Clone)]
pub struct Plan {
    url: String,
    files: Vec<PlanFile>,
    fields: Vec<Field>,
    records: u64,
    /// Decoded bytes of an average record (from a sample), for the default window.
    record_bytes: usize,
}

/// Default decoded size of a shuffle window.
const WINDOW_BYTES: usize = 64 << 20;

impl Plan {
    /// Resolve `url` (a tusk dataset directory, a TFRecord/Parquet/CSV file, or a glob) and the
    /// columns to read: `columns` (all when `None`); those named in `ragged` are read as ragged
    /// whatever the schema says (records that lack them give empty rows).
    pub fn open(
        storage: &Storage,
        url: &str,
        columns: Option<&[String]>,
        ragged: &[String],
    ) -> Result<Plan> {
        let csv = crate::source::csv_files(storage, url)?;
        let (files, schema_fields) = match csv {
            Some(files) => open_csv(files)?,
            None => open_records(Input::open(storage, url, None)?)?,
        };
        let records = files.iter().map(|f| f.records).sum();
        // `image` without `shape`: the shape is still read for the sample that decides the
        // image's layout, then dropped from the batches.
        let named = |n: &str| columns.is_some_and(|c| c.iter().any(|x| x == n));
        let shape_for_image =
            named("image") && !named("shape") && schema_fields.iter().any(|f| f.name == "shape");
        let mut wanted = columns.map(<[String]>::to_vec);
        if shape_for_image && let Some(w) = wanted.as_mut() {
            w.push("shape".to_string());
        }
        let fields = select(url, schema_fields, wanted.as_deref(), ragged)?;
        let mut plan = Plan {
            url: url.to_string(),
            files,
            fields,
            records,
            record_bytes: 0,
        };
        // A sample of the first records: the decoded size per record and fixed shapes.
        let sample = plan.read_sample(64)?;
        plan.record_bytes = sample_bytes(&sample)
            .checked_div(sample.rows)
            .unwrap_or(1)
            .max(1);
        image_shape(&mut plan.fields, &sample);
        if shape_for_image {
            plan.fields.pop();
        }
        Ok(plan)
    }

    /// The URL the plan was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The batch columns, in batch order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The files, in stored order.
    pub fn files(&self) -> &[PlanFile] {
        &self.files
    }

    /// Records in one epoch.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The default shuffle window: about 64 MiB of decoded records, between 1,024 and
    /// 65,536 records (a property of the data, so every consumer agrees on it).
    pub fn default_window(&self) -> usize {
        (WINDOW_BYTES / self.record_bytes).clamp(1024, 65_536)
    }

    /// Records consumer `part` of `parts` reads each epoch.
    pub fn part_records(&self, part: usize, parts: usize) -> u64 {
        let (a, b) = share(self.records, part, parts);
        b - a
    }

    /// The runs of records consumer `part` of `parts` reads in `epoch`, in order.
    pub fn segments(
        &self,
        epoch: u64,
        seed: u64,
        shuffle: bool,
        part: usize,
        parts: usize,
    ) -> Vec<Segment> {
        let mut order: Vec<usize> = (0..self.files.len()).collect();
        if shuffle {
            let mut rng = Rng::new(mix(&[seed, epoch, 0x66_696c_6573]));
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
        }
        let (lo, hi) = share(self.records, part, parts);
        let mut out = Vec::new();
        let mut start = 0u64;
        for f in order {
            let n = self.files[f].records;
            let (a, b) = (start.max(lo), (start + n).min(hi));
            if a < b {
                out.push(Segment {
                    file: f,
                    from: a - start,
                    to: b - start,
                });
            }
            start += n;
        }
        out
    }

    /// Read the first `n` records of the first files (unshuffled), for samples.
    fn read_sample(&self, n: u64) -> Result<Columns> {
        let mut out = Columns::new(&self.fields);
        let mut left = n;
        for (i, f) in self.files.iter().enumerate() {
            if left == 0 {
                break;
            }
            let take = left.min(f.records);
            let seg = Segment {
                file: i,
                from: 0,
                to: take,
            };
            self.read_segment(seg, &mut out, &AtomicBool::new(false))?;
            left -= take;
        }
        Ok(out)
    }

    /// Decode the records of `seg` into `out` (appending rows).
    fn read_segment(&self, seg: Segment, out: &mut Columns, stop: &AtomicBool) -> Result<()> {
        let mut c = Cursor::open(self, seg)?;
        c.read(seg.to - seg.from, out, stop)
    }
}

/// An open file positioned inside a segment: windows take records from it one after another,
/// so a file is opened (and a remote Parquet file fetched) once per segment, not per window.
struct Cursor<'p> {
    plan: &'p Plan,
    file: usize,
    url: String,
    /// Next record index in the file.
    at: u64,
    open: Open,
}

enum Open {
    Tf(tfrecord::FileReader),
    Pq {
        reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
        /// The batch being consumed and the rows of it already taken.
        batch: Option<(arrow::array::RecordBatch, usize)>,
    },
    Csv {
        reader: csv::Reader<tusk_storage::ObjectReader>,
        at: Vec<usize>,
    },
}

impl<'p> Cursor<'p> {
    fn open(plan: &'p Plan, seg: Segment) -> Result<Cursor<'p>> {
        let file = &plan.files[seg.file];
        let url = file.location.url();
        let open = match &file.kind {
            FileKind::Records(Format::TfRecord(c)) => {
                let mut r = tfrecord::open(&file.location, Some(*c))?;
                while r.index() < seg.from {
                    if r.next_record()?.is_none() {
                        break;
                    }
                }
                Open::Tf(r)
            }
            FileKind::Records(Format::Parquet) => {
                let names: Vec<String> = plan.fields.iter().map(|f| f.name.clone()).collect();
                let reader =
                    parquet_io::read_rows(&file.location, seg.from, seg.to, Some(&names), 8192)?;
                Open::Pq {
                    reader,
                    batch: None,
                }
            }
            FileKind::Csv(types) => {
                let mut reader = csv_reader(&file.location, types.delimiter)?;
                let at = plan
                    .fields
                    .iter()
                    .map(|f| {
                        types
                            .columns
                            .iter()
                            .position(|c| c.0 == f.name)
                            .expect("fields come from the header")
                    })
                    .collect();
                let mut rec = csv::StringRecord::new();
                for _ in 0..seg.from {
                    if !reader.read_record(&mut rec).map_err(|e| csv_err(&url, e))? {
                        break;
                    }
                }
                Open::Csv { reader, at }
            }
        };
        Ok(Cursor {
            plan,
            file: seg.file,
            url,
            at: seg.from,
            open,
        })
    }

    /// Append the next `n` records to `out`; fewer only when `stop` is raised.
    fn read(&mut self, n: u64, out: &mut Columns, stop: &AtomicBool) -> Result<()> {
        let fields = &self.plan.fields;
        let url = &self.url;
        let end = self.at + n;
        match &mut self.open {
            Open::Tf(r) => {
                // Framing and CRCs here, in order; the Examples are then decoded on
                // DECODE_THREADS threads, each a contiguous part, appended in order.
                while self.at < end {
                    let take = (end - self.at).min(ARENA_RECORDS);
                    let mut arena = Arena::default();
                    for _ in 0..take {
                        let offset = r.offset();
                        let Some(rec) = r.next_record()? else { break };
                        arena.push(rec, offset);
                    }
                    let got = arena.len() as u64;
                    decode_parallel(&arena, fields, url, self.at, out)?;
                    self.at += got;
                    if got < take || stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
            Open::Pq { reader, batch } => {
                while self.at < end {
                    if batch.as_ref().is_none_or(|(b, used)| *used == b.num_rows()) {
                        match reader.next() {
                            Some(b) => {
                                let b = b.map_err(|e| Error::Csv {
                                    file: url.clone(),
                                    message: format!(
                                        "parquet: reading rows after row {}: {e}",
                                        self.at
                                    ),
                                })?;
                                *batch = Some((b, 0));
                            }
                            None => break,
                        }
                    }
                    let (b, used) = batch.as_mut().expect("just filled");
                    let take = ((end - self.at) as usize).min(b.num_rows() - *used);
                    let part = b.slice(*used, take);
                    let cols = parquet_io::canonical_columns(url, &part)?;
                    append_arrow(url, self.at, fields, &cols, take, out)?;
                    *used += take;
                    self.at += take as u64;
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                }
            }
            Open::Csv { reader, at } => {
                let mut rec = csv::StringRecord::new();
                while self.at < end && reader.read_record(&mut rec).map_err(|e| csv_err(url, e))? {
                    csv_row(url, self.at, &rec, at, fields, out)?;
                    self.at += 1;
                    if self.at.is_multiple_of(4096) && stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                }
            }
        }
        if self.at < end && !stop.load(Ordering::Relaxed) {
            return Err(Error::Csv {
                file: url.clone(),
                message: format!(
                    "expected {} records but the file ends after record {} (it changed since the dataset was listed, or its manifest's count is wrong)",
                    self.plan.files[self.file].records, self.at
                ),
            });
        }
        Ok(())
    }
}

/// Records framed at a time before their Examples are decoded in parallel.
const ARENA_RECORDS: u64 = 16_384;
/// Threads decoding Examples (the reader thread is one of them).
const DECODE_THREADS: usize = 2;

/// Serialized records back to back, with their byte offsets in the file.
#[derive(Default)]
struct Arena {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    offsets: Vec<u64>,
}

impl Arena {
    fn push(&mut self, rec: &[u8], offset: u64) {
        self.bytes.extend_from_slice(rec);
        self.ends.push(self.bytes.len());
        self.offsets.push(offset);
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn record(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// Decode the arena's records (record `first_row` of `url` first) and append them to `out`
/// in order. Small arenas are decoded on this thread.
fn decode_parallel(
    arena: &Arena,
    fields: &[Field],
    url: &str,
    first_row: u64,
    out: &mut Columns,
) -> Result<()> {
    let decode = |from: usize, to: usize, out: &mut Columns| -> Result<()> {
        let mut dec = ExampleDecoder::new(fields);
        for i in from..to {
            dec.decode(arena.record(i), out).map_err(|m| Error::Value {
                file: url.to_string(),
                row: first_row + i as u64,
                column: m.0,
                message: format!("{} (record at byte offset {})", m.1, arena.offsets[i]),
            })?;
        }
        Ok(())
    };
    let n = arena.len();
    if n < 2048 || DECODE_THREADS < 2 {
        return decode(0, n, out);
    }
    let per = n.div_ceil(DECODE_THREADS);
    let mut parts: Vec<Columns> = (1..DECODE_THREADS).map(|_| Columns::new(fields)).collect();
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .iter_mut()
            .enumerate()
            .map(|(k, part)| {
                let (from, to) = ((k + 1) * per, ((k + 2) * per).min(n));
                scope.spawn(move || decode(from, to, part))
            })
            .collect();
        let mut results = vec![decode(0, per.min(n), out)];
        for h in handles {
            results.push(h.join().unwrap_or_else(|_| {
                Err(Error::Internal(
                    "an Example decoding thread panicked".into(),
                ))
            }));
        }
        results
    });
    // The earliest record's error, as a sequential pass would report it.
    for r in results {
        r?;
    }
    for part in &parts {
        let all: Vec<u32> = (0..part.rows as u32).collect();
        out.gather(part, &all, fields);
    }
    Ok(())
}

/// Records `⌊kN/K⌋ .. ⌊(k+1)N/K⌋`.
fn share(n: u64, k: usize, parts: usize) -> (u64, u64) {
    let parts = parts.max(1) as u128;
    let at = |i: u128| ((n as u128 * i) / parts) as u64;
    (at(k as u128), at(k as u128 + 1))
}

/// A seed from several words (SplitMix64 steps).
fn mix(words: &[u64]) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    for &w in words {
        h = Rng::new(h ^ w).next_u64();
    }
    h
}

fn sample_bytes(c: &Columns) -> usize {
    c.columns
        .iter()
        .map(|col| {
            let v = match &col.values {
                Values::Int64(v) => v.len() * 8,
                Values::Float32(v) => v.len() * 4,
                Values::Bytes { data, offsets } => data.len() + offsets.len() * 8,
            };
            v + col.offsets.as_ref().map_or(0, |o| o.len() * 8)
        })
        .sum()
}

/// `image` + `shape` (as `tusk images normalize` writes them): when every sampled record has
/// the same 1–3 dimensional shape whose product is its number of image values, the image
/// column gets that fixed shape (checked again on every record read).
fn image_shape(fields: &mut [Field], sample: &Columns) {
    let sampled = &*fields;
    let pos = |n: &str| sampled.iter().position(|f| f.name == n);
    let (Some(i), Some(s)) = (pos("image"), pos("shape")) else {
        return;
    };
    if sample.rows == 0
        || sampled[i].dtype != DType::Float32
        || sampled[i].layout != Layout::Ragged
        || sampled[s].dtype != DType::Int64
    {
        return;
    }
    let (img, shp) = (&sample.columns[i], &sample.columns[s]);
    let (Values::Int64(sv), Some(io)) = (&shp.values, &img.offsets) else {
        return;
    };
    let per_row = match &shp.offsets {
        Some(o) => {
            let n = (o[1] - o[0]) as usize;
            if o.windows(2).any(|w| (w[1] - w[0]) as usize != n) {
                return;
            }
            n
        }
        None => 1,
    };
    if !(1..=3).contains(&per_row) {
        return;
    }
    let first: Vec<i64> = sv[..per_row].to_vec();
    if first.iter().any(|d| *d <= 0) || sv.chunks(per_row).any(|c| c != first.as_slice()) {
        return;
    }
    let n: usize = first.iter().map(|d| *d as usize).product();
    if io.windows(2).any(|w| (w[1] - w[0]) as usize != n) {
        return;
    }
    fields[i].layout = Layout::Fixed(first.iter().map(|d| *d as usize).collect());
}

/// The schema's fields, restricted to `columns` (in the order given) and with `ragged` forced.
fn select(
    url: &str,
    all: Vec<Field>,
    columns: Option<&[String]>,
    ragged: &[String],
) -> Result<Vec<Field>> {
    let mut out = match columns {
        None => all.clone(),
        Some(names) => {
            let mut out = Vec::with_capacity(names.len());
            for n in names {
                let f = all
                    .iter()
                    .find(|f| &f.name == n)
                    .ok_or_else(|| Error::Csv {
                        file: url.to_string(),
                        message: format!(
                            "no column '{n}' (columns: {})",
                            all.iter()
                                .map(|f| f.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    })?;
                if out.iter().any(|o: &Field| &o.name == n) {
                    return Err(Error::Csv {
                        file: url.to_string(),
                        message: format!("column '{n}' is asked for twice"),
                    });
                }
                out.push(f.clone());
            }
            out
        }
    };
    for r in ragged {
        let f = out
            .iter_mut()
            .find(|f| &f.name == r)
            .ok_or_else(|| Error::Csv {
                file: url.to_string(),
                message: format!("ragged column '{r}' is not among the columns read"),
            })?;
        f.layout = Layout::Ragged;
    }
    Ok(out)
}

fn fields_of(schema: &Schema) -> Vec<Field> {
    schema
        .columns
        .iter()
        .map(|c| Field {
            name: c.name.clone(),
            dtype: DType::of(c.dtype),
            layout: if c.list {
                Layout::Ragged
            } else {
                Layout::Scalar
            },
        })
        .collect()
}

/// Files and schema of TFRecord/Parquet inputs: a manifest gives both; Parquet footers give
/// counts and schema; raw TFRecord files are scanned once (every record CRC-checked).
fn open_records(input: Input) -> Result<(Vec<PlanFile>, Vec<Field>)> {
    if let Some(m) = &input.manifest {
        let files = input
            .files
            .iter()
            .map(|f| PlanFile {
                location: f.location.clone(),
                kind: FileKind::Records(f.format),
                records: f.records.unwrap_or(0),
            })
            .collect();
        return Ok((files, fields_of(&m.schema)));
    }
    let mut files = Vec::with_capacity(input.files.len());
    let mut merged: Option<Schema> = None;
    for f in &input.files {
        let (schema, records) = match f.format {
            Format::Parquet => {
                let reader = parquet_io::read_rows(&f.location, 0, 0, None, 1)?;
                let schema = parquet_io::schema_of(&f.location.url(), &reader.schema())?;
                (schema, parquet_io::row_count(&f.location)?)
            }
            Format::TfRecord(_) => {
                let one = Input {
                    files: vec![InputFile {
                        location: f.location.clone(),
                        format: f.format,
                        records: None,
                    }],
                    manifest: None,
                };
                one.scan(1, |_| {})?.finish(false)?
            }
        };
        merged = Some(match merged {
            None => schema,
            Some(m) => merge_schema(&f.location.url(), m, schema)?,
        });
        files.push(PlanFile {
            location: f.location.clone(),
            kind: FileKind::Records(f.format),
            records,
        });
    }
    Ok((files, fields_of(&merged.unwrap_or_default())))
}

/// Union of two files' schemas: a column in one file only, or multi-valued in one, is ragged.
fn merge_schema(url: &str, a: Schema, b: Schema) -> Result<Schema> {
    let mut cols = a.columns;
    let a_names: Vec<String> = cols.iter().map(|c| c.name.clone()).collect();
    for c in &mut cols {
        if !b.columns.iter().any(|x| x.name == c.name) {
            c.list = true;
        }
    }
    for c in b.columns {
        match cols.iter_mut().find(|x| x.name == c.name) {
            Some(x) => {
                if x.dtype != c.dtype {
                    return Err(Error::Csv {
                        file: url.to_string(),
                        message: format!(
                            "column '{}' is {} here but {} in earlier files",
                            c.name,
                            c.dtype.as_str(),
                            x.dtype.as_str()
                        ),
                    });
                }
                x.list |= c.list;
            }
            None => {
                let mut c = c;
                if !a_names.is_empty() {
                    c.list = true;
                }
                cols.push(c);
            }
        }
    }
    cols.sort_by(|x, y| x.name.cmp(&y.name));
    Ok(Schema { columns: cols })
}

/// Decodes serialized Examples into the plan's columns.
struct ExampleDecoder<'a> {
    fields: &'a [Field],
    index: HashMap<&'a [u8], usize>,
    /// (name, field index) in name order, and where the next feature is expected: writers
    /// (TensorFlow's and tusk's) put features in name order, so a lookup is one comparison.
    sorted: Vec<(&'a [u8], usize)>,
    /// Values per record of each field (`None`: ragged).
    want: Vec<Option<usize>>,
    seen: Vec<bool>,
}

impl<'a> ExampleDecoder<'a> {
    fn new(fields: &'a [Field]) -> Self {
        let mut sorted: Vec<(&[u8], usize)> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.as_bytes(), i))
            .collect();
        sorted.sort();
        ExampleDecoder {
            fields,
            index: fields
                .iter()
                .enumerate()
                .map(|(i, f)| (f.name.as_bytes(), i))
                .collect(),
            sorted,
            want: fields
                .iter()
                .map(|f| match &f.layout {
                    Layout::Scalar => Some(1),
                    Layout::Fixed(s) => Some(s.iter().product()),
                    Layout::Ragged => None,
                })
                .collect(),
            seen: vec![false; fields.len()],
        }
    }

    /// Append one record; on error `(column, message)`.
    fn decode(&mut self, rec: &[u8], out: &mut Columns) -> Result<(), (String, String)> {
        self.seen.iter_mut().for_each(|s| *s = false);
        let fields = self.fields;
        let index = &self.index;
        let sorted = &self.sorted;
        let wants = &self.want;
        let seen = &mut self.seen;
        let mut next = 0usize;
        let mut bad: Option<(String, String)> = None;
        let res = example::walk_raw(rec, |key, values, count| {
            let i = match sorted.get(next) {
                Some((name, i)) if *name == key => {
                    next += 1;
                    *i
                }
                _ => {
                    let Some(&i) = index.get(key) else {
                        return Ok(());
                    };
                    next = sorted.partition_point(|(n, _)| *n <= key);
                    i
                }
            };
            let f = &fields[i];
            if seen[i] {
                bad = Some((f.name.clone(), "the feature appears twice".into()));
                return Err(String::new());
            }
            seen[i] = true;
            let col = &mut out.columns[i];
            let want = wants[i];
            if let Some(w) = want
                && count != w
            {
                bad = Some((
                    f.name.clone(),
                    if matches!(f.layout, Layout::Scalar) {
                        format!(
                            "{count} values where the column has exactly one per record (read it with ragged=['{}'])",
                            f.name
                        )
                    } else {
                        format!(
                            "{count} values where every record has {w} (shape {:?})",
                            want
                        )
                    },
                ));
                return Err(String::new());
            }
            let r = match &mut col.values {
                Values::Int64(v) => values.append_i64(v),
                Values::Float32(v) => values.append_f32(v),
                Values::Bytes { data, offsets } => values.append_bytes(data, offsets),
            };
            if let Err(m) = r {
                bad = Some((
                    f.name.clone(),
                    format!("{m} (column is {})", f.dtype.as_str()),
                ));
                return Err(String::new());
            }
            Ok(())
        });
        if let Some(b) = bad {
            return Err(b);
        }
        res.map_err(|m| (String::new(), format!("not a tf.train.Example: {m}")))?;
        for (i, f) in fields.iter().enumerate() {
            if !seen[i] && !matches!(f.layout, Layout::Ragged) {
                return Err((
                    f.name.clone(),
                    format!(
                        "missing from this record (read it with ragged=['{}'] to get empty rows)",
                        f.name
                    ),
                ));
            }
            out.columns[i].end_row();
        }
        out.rows += 1;
        Ok(())
    }
}

/// Append `rows` rows of canonical Arrow columns (Int64/Float32/Binary or lists of them).
fn append_arrow(
    url: &str,
    first_row: u64,
    fields: &[Field],
    cols: &[(String, arrow::array::ArrayRef, bool)],
    rows: usize,
    out: &mut Columns,
) -> Result<()> {
    for (i, f) in fields.iter().enumerate() {
        let (_, arr, list) =
            cols.iter()
                .find(|(n, _, _)| n == &f.name)
                .ok_or_else(|| Error::Csv {
                    file: url.to_string(),
                    message: format!("no column '{}' in this Parquet file", f.name),
                })?;
        let col = &mut out.columns[i];
        let null_err = |r: usize, what: &str| Error::Value {
            file: url.to_string(),
            row: first_row + r as u64,
            column: f.name.clone(),
            message: what.to_string(),
        };
        let want = match &f.layout {
            Layout::Scalar => Some(1),
            Layout::Fixed(s) => Some(s.iter().product::<usize>()),
            Layout::Ragged => None,
        };
        // Fast path, no nulls anywhere: values copied in one go per column.
        if arr.null_count() == 0 {
            if !*list && want == Some(1) {
                extend_range(&mut col.values, arr.as_ref(), 0, rows);
                continue;
            }
            if *list {
                let l = arr.as_list::<i32>();
                let o = l.value_offsets();
                let lens_ok =
                    want.is_none_or(|w| o.windows(2).all(|x| (x[1] - x[0]) as usize == w));
                if l.values().null_count() == 0 && lens_ok {
                    let (a, b) = (o[0] as usize, o[rows] as usize);
                    let base = col.values.len() as i64 - a as i64;
                    extend_range(&mut col.values, l.values().as_ref(), a, b);
                    if let Some(ro) = &mut col.offsets {
                        ro.extend(o[1..=rows].iter().map(|x| *x as i64 + base));
                    }
                    continue;
                }
            }
        }
        // Values and per-row bounds of the column.
        let (vals, bounds): (&dyn Array, Vec<(usize, usize)>) = if *list {
            let l = arr.as_list::<i32>();
            let o = l.value_offsets();
            (
                l.values().as_ref(),
                (0..rows)
                    .map(|r| {
                        if l.is_null(r) {
                            (0, 0)
                        } else {
                            (o[r] as usize, o[r + 1] as usize)
                        }
                    })
                    .collect(),
            )
        } else {
            (
                arr.as_ref(),
                (0..rows)
                    .map(|r| if arr.is_null(r) { (0, 0) } else { (r, r + 1) })
                    .collect(),
            )
        };
        for (r, (a, b)) in bounds.iter().enumerate() {
            if let Some(w) = want
                && b - a != w
            {
                return Err(null_err(
                    r,
                    &if b == a {
                        format!(
                            "missing (null) in a column with one value per record (read it with ragged=['{}'] to get empty rows)",
                            f.name
                        )
                    } else {
                        format!("{} values where every record has {w}", b - a)
                    },
                ));
            }
            if vals.null_count() > 0 && (*a..*b).any(|k| vals.is_null(k)) {
                return Err(null_err(r, "a list holds a null value"));
            }
            extend_range(&mut col.values, vals, *a, *b);
            col.end_row();
        }
    }
    out.rows += rows;
    Ok(())
}

/// Append values `a..b` of a canonical Arrow array (Int64, Float32 or Binary, the column's type).
fn extend_range(dst: &mut Values, vals: &dyn Array, a: usize, b: usize) {
    match dst {
        Values::Int64(v) => v.extend_from_slice(&vals.as_primitive::<Int64Type>().values()[a..b]),
        Values::Float32(v) => {
            v.extend_from_slice(&vals.as_primitive::<Float32Type>().values()[a..b])
        }
        Values::Bytes { data, offsets } => {
            let bin = vals.as_binary::<i32>();
            let o = bin.value_offsets();
            let (s, e) = (o[a] as usize, o[b] as usize);
            let base = data.len() as i64 - s as i64;
            data.extend_from_slice(&bin.value_data()[s..e]);
            offsets.extend(o[a + 1..=b].iter().map(|x| *x as i64 + base));
        }
    }
}

/// CSV files: each counted, the column types inferred from the first 1,000 rows of the first:
/// all integers → int64, all numbers → float32, else bytes; a field of several
/// space-separated numbers makes a multi-valued (ragged) column, an empty field a missing one.
fn open_csv(files: Vec<Location>) -> Result<(Vec<PlanFile>, Vec<Field>)> {
    let mut out = Vec::with_capacity(files.len());
    let mut types: Option<CsvTypes> = None;
    for loc in files {
        let url = loc.url();
        let delimiter = if url.to_ascii_lowercase().ends_with(".tsv") {
            b'\t'
        } else {
            b','
        };
        let mut rdr = csv_reader(&loc, delimiter)?;
        let names: Vec<String> = rdr
            .headers()
            .map_err(|e| csv_err(&url, e))?
            .iter()
            .map(|s| s.trim().to_string())
            .collect();
        if names.iter().all(String::is_empty) {
            return Err(Error::Csv {
                file: url,
                message: "empty file: a header line naming the columns is required".into(),
            });
        }
        let mut rec = csv::StringRecord::new();
        let mut n = 0u64;
        // (could be int, could be float, list, missing)
        let mut kinds = vec![(true, true, false, false); names.len()];
        while rdr.read_record(&mut rec).map_err(|e| csv_err(&url, e))? {
            if types.is_none() && n < 1000 {
                for (k, field) in rec.iter().enumerate().take(names.len()) {
                    let field = field.trim();
                    let kind = &mut kinds[k];
                    if field.is_empty() {
                        kind.3 = true;
                        continue;
                    }
                    let mut parts = 0;
                    for p in field.split_ascii_whitespace() {
                        parts += 1;
                        kind.0 &= p.parse::<i64>().is_ok();
                        kind.1 &= p.parse::<f32>().is_ok();
                    }
                    if parts > 1 {
                        kind.2 = true;
                    }
                }
            }
            n += 1;
        }
        let t = match &types {
            Some(t) => {
                let first: Vec<&str> = t.columns.iter().map(|c| c.0.as_str()).collect();
                if first != names.iter().map(String::as_str).collect::<Vec<_>>() {
                    return Err(Error::Csv {
                        file: url,
                        message: format!(
                            "header differs from the first file's ({})",
                            first.join(",")
                        ),
                    });
                }
                t.clone()
            }
            None => {
                let columns = names
                    .iter()
                    .zip(&kinds)
                    .map(|(name, &(int, float, list, missing))| {
                        let numeric = int || float;
                        let dtype = if int {
                            DType::Int64
                        } else if float {
                            DType::Float32
                        } else {
                            DType::Bytes
                        };
                        (name.clone(), dtype, (list && numeric) || missing)
                    })
                    .collect();
                let t = CsvTypes { columns, delimiter };
                types = Some(t.clone());
                t
            }
        };
        out.push(PlanFile {
            location: loc,
            kind: FileKind::Csv(t),
            records: n,
        });
    }
    let fields = types
        .map(|t| {
            let mut f: Vec<Field> = t
                .columns
                .iter()
                .map(|(name, dtype, list)| Field {
                    name: name.clone(),
                    dtype: *dtype,
                    layout: if *list {
                        Layout::Ragged
                    } else {
                        Layout::Scalar
                    },
                })
                .collect();
            f.sort_by(|a, b| a.name.cmp(&b.name));
            f
        })
        .unwrap_or_default();
    Ok((out, fields))
}

fn csv_err(url: &str, e: csv::Error) -> Error {
    Error::Csv {
        file: url.to_string(),
        message: e.to_string(),
    }
}

fn csv_reader(loc: &Location, delimiter: u8) -> Result<csv::Reader<tusk_storage::ObjectReader>> {
    Ok(csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .from_reader(loc.reader()?))
}

/// Append one CSV record (typed as the plan says).
fn csv_row(
    url: &str,
    row: u64,
    rec: &csv::StringRecord,
    at: &[usize],
    fields: &[Field],
    out: &mut Columns,
) -> Result<()> {
    for ((f, &k), col) in fields.iter().zip(at).zip(out.columns.iter_mut()) {
        let text = rec.get(k).unwrap_or("").trim();
        let bad = |message: String| Error::Value {
            file: url.to_string(),
            row,
            column: f.name.clone(),
            message,
        };
        let before = col.values.len();
        match &mut col.values {
            Values::Bytes { data, offsets } => {
                if !text.is_empty() {
                    data.extend_from_slice(text.as_bytes());
                    offsets.push(data.len() as i64);
                }
            }
            Values::Int64(v) => {
                for p in text.split_ascii_whitespace() {
                    v.push(p.parse().map_err(|_| {
                        bad(format!("'{p}' is not an integer (the column is int64)"))
                    })?);
                }
            }
            Values::Float32(v) => {
                for p in text.split_ascii_whitespace() {
                    v.push(p.parse().map_err(|_| {
                        bad(format!("'{p}' is not a number (the column is float32)"))
                    })?);
                }
            }
        }
        let n = col.values.len() - before;
        if !matches!(f.layout, Layout::Ragged) && n != 1 {
            return Err(bad(format!(
                "{n} values where the column has exactly one per record (read it with ragged=['{}'])",
                f.name
            )));
        }
        col.end_row();
    }
    out.rows += 1;
    Ok(())
}

/// Batch options of a [`Reader`].
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Records per batch.
    pub batch_size: usize,
    /// Shuffle files and records within windows.
    pub shuffle: bool,
    /// Seed of the order.
    pub seed: u64,
    /// Drop the last, smaller batch of a consumer's share.
    pub drop_last: bool,
    /// Records per shuffle window (`None`: [`Plan::default_window`]).
    pub window: Option<usize>,
    /// Batches decoded ahead.
    pub prefetch: usize,
}

/// What [`Reader::next_timeout`] found.
#[derive(Debug)]
pub enum Next {
    /// A batch.
    Batch(Columns),
    /// The share is read.
    Done,
    /// Nothing yet: ask again.
    Pending,
}

/// One consumer's batches of one epoch, decoded on a background thread.
#[derive(Debug)]
pub struct Reader {
    rx: Option<Receiver<Result<Columns>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reader {
    /// Start reading consumer `part` of `parts`'s share of `epoch`, skipping its first
    /// `skip_batches` batches (resume).
    pub fn start(
        plan: Arc<Plan>,
        opts: &ReadOptions,
        epoch: u64,
        part: usize,
        parts: usize,
        skip_batches: u64,
    ) -> Result<Reader> {
        if opts.batch_size == 0 {
            return Err(Error::Config {
                key: "batch_size".into(),
                message: "must be at least 1".into(),
            });
        }
        if parts == 0 || part >= parts {
            return Err(Error::Config {
                key: "rank".into(),
                message: format!("consumer {part} of {parts} does not exist"),
            });
        }
        let (tx, rx) = sync_channel(opts.prefetch.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let opts = opts.clone();
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tusk-reader".into())
            .spawn(move || {
                let r = produce(&plan, &opts, epoch, part, parts, skip_batches, &tx, &stop2);
                if let Err(e) = r {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| Error::Csv {
                file: String::new(),
                message: format!("cannot start a reader thread: {e}"),
            })?;
        Ok(Reader {
            rx: Some(rx),
            stop,
            thread: Some(thread),
        })
    }

    /// The next batch, waiting at most `wait`.
    pub fn next_timeout(&mut self, wait: Duration) -> Result<Next> {
        let Some(rx) = &self.rx else {
            return Ok(Next::Done);
        };
        match rx.recv_timeout(wait) {
            Ok(Ok(b)) => Ok(Next::Batch(b)),
            Ok(Err(e)) => {
                self.rx = None;
                Err(e)
            }
            Err(RecvTimeoutError::Timeout) => Ok(Next::Pending),
            Err(RecvTimeoutError::Disconnected) => {
                self.rx = None;
                // The thread has ended (it held the sender): a panic must not pass for the end
                // of the data.
                match self.thread.take().map(|t| t.join()) {
                    Some(Err(panic)) => {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        Err(Error::Internal(format!(
                            "the reader thread panicked: {what}"
                        )))
                    }
                    _ => Ok(Next::Done),
                }
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblocks a producer waiting to send; one inside a read stops at its next check. A
        // read that blocks (a stalled NameNode) is not waited for: the thread is left to end
        // on its own, so closing (or Ctrl-C) always returns at once.
        self.rx = None;
        if let Some(t) = self.thread.take()
            && t.is_finished()
        {
            let _ = t.join();
        }
    }
}

/// Batches of windows of the consumer's share: decode a window, permute it, gather batches.
#[allow(clippy::too_many_arguments)]
fn produce(
    plan: &Plan,
    opts: &ReadOptions,
    epoch: u64,
    part: usize,
    parts: usize,
    skip_batches: u64,
    tx: &SyncSender<Result<Columns>>,
    stop: &AtomicBool,
) -> Result<()> {
    let fields = plan.fields();
    // Unshuffled, the order does not depend on the window: a small one keeps memory low.
    let window = match (opts.window, opts.shuffle) {
        (Some(w), _) => w,
        (None, true) => plan.default_window(),
        (None, false) => opts.batch_size.max(8192),
    }
    .max(1);
    let segments = plan.segments(epoch, opts.seed, opts.shuffle, part, parts);
    let total = plan.part_records(part, parts);
    let bs = opts.batch_size;
    let mut emitted: u64 = 0;
    // Records of the permuted stream to pass over before the first batch to send.
    let skip_records = skip_batches.saturating_mul(bs as u64).min(total);
    let mut seg_iter = segments.into_iter();
    // The segment being read, how far, and its open file (opened when first decoded from).
    let mut cur: Option<(Segment, u64, Option<Cursor<'_>>)> = None;
    let mut pos: u64 = 0; // records of the share read so far
    let mut batch = Columns::new(fields);
    let mut window_no = 0u64;
    while pos < total {
        let want = (window as u64).min(total - pos);
        // Windows wholly before the resume point need no decoding.
        let skip_window = pos + want <= skip_records;
        let mut chunk = Columns::new(fields);
        let mut left = want;
        while left > 0 {
            let (seg, done, mut cursor) = match cur.take() {
                Some(c) => c,
                None => (seg_iter.next().expect("segments cover the share"), 0, None),
            };
            let take = left.min(seg.to - seg.from - done);
            if !skip_window {
                if cursor.is_none() {
                    let from = Segment {
                        file: seg.file,
                        from: seg.from + done,
                        to: seg.to,
                    };
                    cursor = Some(Cursor::open(plan, from)?);
                }
                cursor
                    .as_mut()
                    .expect("opened")
                    .read(take, &mut chunk, stop)?;
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if done + take < seg.to - seg.from {
                cur = Some((seg, done + take, cursor));
            }
            left -= take;
        }
        let mut idx: Vec<u32> = (0..want as u32).collect();
        if opts.shuffle {
            let mut rng = Rng::new(mix(&[
                opts.seed,
                epoch,
                parts as u64,
                part as u64,
                window_no,
            ]));
            for i in (1..idx.len()).rev() {
                idx.swap(i, rng.below(i + 1));
            }
        }
        let mut i = 0usize;
        while i < idx.len() {
            let room = bs - batch.rows;
            let j = (i + room).min(idx.len());
            let start = pos + i as u64;
            // Stream positions start..start+(j-i); skipped ones are counted, not gathered.
            if start + (j - i) as u64 <= skip_records {
                batch.rows += j - i;
            } else {
                batch.gather(&chunk, &idx[i..j], fields);
            }
            i = j;
            if batch.rows == bs {
                let full = std::mem::replace(&mut batch, Columns::new(fields));
                if emitted >= skip_batches && tx.send(Ok(full)).is_err() {
                    return Ok(());
                }
                emitted += 1;
            }
        }
        pos += want;
        window_no += 1;
    }
    if batch.rows > 0 && !opts.drop_last && emitted >= skip_batches {
        let _ = tx.send(Ok(batch));
    }
    Ok(())
}

/// Batches consumer `part` of `parts` yields per epoch.
pub fn batches_per_epoch(
    plan: &Plan,
    batch_size: usize,
    drop_last: bool,
    part: usize,
    parts: usize,
) -> u64 {
    let n = plan.part_records(part, parts);
    let b = batch_size.max(1) as u64;
    if drop_last { n / b } else { n.div_ceil(b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_dataset(dir: &std::path::Path, sizes: &[u64]) -> String {
        let mut id = 0;
        for (i, n) in sizes.iter().enumerate() {
            let mut text = String::from("id,tags\n");
            for _ in 0..*n {
                text.push_str(&format!("{id},{} {}\n", id % 3, id % 5));
                id += 1;
            }
            std::fs::write(dir.join(format!("part-{i}.csv")), text).unwrap();
        }
        format!("{}/part-*.csv", dir.display())
    }

    fn ids(r: &mut Reader) -> Vec<Vec<i64>> {
        let mut out = Vec::new();
        loop {
            match r.next_timeout(Duration::from_secs(10)).unwrap() {
                Next::Batch(b) => match &b.columns[0].values {
                    Values::Int64(v) => out.push(v.clone()),
                    other => panic!("{other:?}"),
                },
                Next::Done => return out,
                Next::Pending => {}
            }
        }
    }

    #[test]
    fn every_record_once_per_epoch_and_resume_gives_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let url = csv_dataset(dir.path(), &[5, 170, 1, 0, 64, 33]);
        let storage = Storage::new().unwrap();
        let plan =
            Arc::new(Plan::open(&storage, &url, Some(&["id".into(), "tags".into()]), &[]).unwrap());
        assert_eq!(plan.records(), 273);
        assert_eq!(plan.fields()[1].layout, Layout::Ragged);
        for window in [Some(7), None] {
            let opts = ReadOptions {
                batch_size: 8,
                shuffle: true,
                seed: 3,
                drop_last: false,
                window,
                prefetch: 2,
            };
            for parts in [1, 2, 3, 7] {
                let mut all: Vec<i64> = Vec::new();
                for part in 0..parts {
                    let mut r = Reader::start(plan.clone(), &opts, 1, part, parts, 0).unwrap();
                    let got = ids(&mut r);
                    assert_eq!(
                        got.len() as u64,
                        batches_per_epoch(&plan, 8, false, part, parts)
                    );
                    // Resuming after k batches gives the rest exactly.
                    for k in [0, 1, got.len() / 2, got.len()] {
                        let mut r =
                            Reader::start(plan.clone(), &opts, 1, part, parts, k as u64).unwrap();
                        assert_eq!(
                            ids(&mut r),
                            got[k..].to_vec(),
                            "parts {parts} part {part} k {k}"
                        );
                    }
                    all.extend(got.into_iter().flatten());
                }
                let mut sorted = all.clone();
                sorted.sort();
                assert_eq!(sorted, (0..273).collect::<Vec<_>>());
                assert_ne!(all, sorted, "shuffled");
            }
        }
    }

    #[test]
    fn shares_cover_every_record_once_and_are_balanced() {
        for n in [0u64, 1, 7, 100, 1001] {
            for parts in 1..9 {
                let mut next = 0;
                for k in 0..parts {
                    let (a, b) = share(n, k, parts);
                    assert_eq!(a, next);
                    assert!(b - a <= n / parts as u64 + 1);
                    next = b;
                }
                assert_eq!(next, n);
            }
        }
    }
}
