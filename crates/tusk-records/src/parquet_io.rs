//! Parquet ↔ `tf.train.Example`.
//!
//! | Parquet / Arrow column | Example feature |
//! |---|---|
//! | signed/unsigned integers, boolean (0/1), dates and timestamps (their integer value) | `int64_list` |
//! | float16/32/64 | `float_list` |
//! | string, binary | `bytes_list` |
//! | list / large list / fixed-size list of the above | multi-valued feature |
//!
//! A null cell means the feature is absent from that record. Written Parquet uses scalar columns
//! for features that have exactly one value in every record that has them, list columns
//! otherwise, and UTF-8 strings for bytes features whose every value is valid UTF-8.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Float32Builder, Int64Builder, ListBuilder,
    RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Float32Type, Int64Type, Schema as ArrowSchema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression as PqCompression;
use parquet::file::properties::WriterProperties;
use prost::Message as _;
use tusk_storage::{AtomicWriter, Location};

use crate::dataset::{Column, Schema};
use crate::example::{
    self, BytesList, Example, ExampleWriter, FeatureType, FloatList, Int64List, Kind,
};
use crate::{Error, Result};

const BATCH: usize = 8192;

fn pq_err(file: &str) -> impl Fn(parquet::errors::ParquetError) -> Error + '_ {
    move |source| Error::Parquet {
        file: file.to_string(),
        source,
    }
}

fn schema_err(file: &str, message: String) -> Error {
    Error::Schema {
        file: file.to_string(),
        message,
    }
}

/// Number of rows in a Parquet file (from its footer).
pub fn row_count(loc: &Location) -> Result<u64> {
    let builder = open_builder(loc)?;
    Ok(builder.metadata().file_metadata().num_rows().max(0) as u64)
}

enum Source {
    Local(std::fs::File),
    Remote(bytes::Bytes),
}

fn open_builder(loc: &Location) -> Result<ParquetRecordBatchReaderBuilder<SourceReader>> {
    let url = loc.url();
    let src = match loc.local_path() {
        Some(p) => Source::Local(std::fs::File::open(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Storage(tusk_storage::Error::NotFound { url: url.clone() })
            } else {
                Error::Io {
                    file: url.clone(),
                    source: e,
                }
            }
        })?),
        // Remote Parquet is fetched whole: the reader needs random access to its footer.
        None => Source::Remote(loc.read()?),
    };
    ParquetRecordBatchReaderBuilder::try_new(SourceReader(src)).map_err(pq_err(&url))
}

/// Rows `from..to` of a Parquet file as Arrow batches of at most `batch_size` rows, only the
/// named top-level `columns` when given (a name the file lacks is an error naming it).
pub fn read_rows(
    loc: &Location,
    from: u64,
    to: u64,
    columns: Option<&[String]>,
    batch_size: usize,
) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader> {
    let url = loc.url();
    let mut builder = open_builder(loc)?;
    if let Some(cols) = columns {
        let fields = builder.schema().fields().clone();
        let mut roots = Vec::with_capacity(cols.len());
        for c in cols {
            let i = fields
                .iter()
                .position(|f| f.name() == c)
                .ok_or_else(|| schema_err(&url, format!("no column '{c}' in this Parquet file")))?;
            roots.push(i);
        }
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), roots);
        builder = builder.with_projection(mask);
    }
    builder
        .with_batch_size(batch_size.max(1))
        .with_offset(from as usize)
        .with_limit(to.saturating_sub(from) as usize)
        .build()
        .map_err(pq_err(&url))
}

/// The columns of an Arrow batch cast to tusk's canonical types (as [`for_each_row`] maps
/// them): `(name, array, is_list)` where the array is Int64, Float32, Binary or a List of one.
pub fn canonical_columns(
    source: &str,
    batch: &RecordBatch,
) -> Result<Vec<(String, ArrayRef, bool)>> {
    let schema = batch.schema();
    schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(fld, col)| {
            let (c, list) = column_plan(source, fld)?;
            Ok((
                fld.name().clone(),
                cast_col(source, fld.name(), col, c, list)?,
                list,
            ))
        })
        .collect()
}

/// Random-access source for the Parquet reader.
pub struct SourceReader(Source);

impl parquet::file::reader::Length for SourceReader {
    fn len(&self) -> u64 {
        match &self.0 {
            Source::Local(f) => f.len(),
            Source::Remote(b) => b.len() as u64,
        }
    }
}

impl parquet::file::reader::ChunkReader for SourceReader {
    type T = Box<dyn std::io::Read + Send>;
    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        match &self.0 {
            Source::Local(f) => Ok(Box::new(f.get_read(start)?)),
            Source::Remote(b) => Ok(Box::new(b.get_read(start)?)),
        }
    }
    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        match &self.0 {
            Source::Local(f) => f.get_bytes(start, length),
            Source::Remote(b) => b.get_bytes(start, length),
        }
    }
}

/// Canonical per-column reader: every supported Arrow type cast to Int64, Float32, Binary or a
/// list of those.
#[derive(Clone, Copy)]
enum Canon {
    Int64,
    Float,
    Bytes,
}

fn canon(t: &DataType) -> Option<Canon> {
    use DataType::*;
    match t {
        Boolean | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Date32
        | Date64 | Timestamp(..) | Time32(_) | Time64(_) | Duration(_) => Some(Canon::Int64),
        Float16 | Float32 | Float64 => Some(Canon::Float),
        Utf8 | LargeUtf8 | Utf8View | Binary | LargeBinary | BinaryView | FixedSizeBinary(_) => {
            Some(Canon::Bytes)
        }
        Dictionary(_, v) => canon(v),
        _ => None,
    }
}

fn canon_type(c: Canon) -> DataType {
    match c {
        Canon::Int64 => DataType::Int64,
        Canon::Float => DataType::Float32,
        Canon::Bytes => DataType::Binary,
    }
}

fn column_plan(file: &str, field: &Field) -> Result<(Canon, bool)> {
    let unsupported = || {
        schema_err(
            file,
            format!(
                "column '{}' has type {}, which has no tf.train.Example equivalent (expected integers, floats, strings/binary or lists of them)",
                field.name(),
                field.data_type()
            ),
        )
    };
    match field.data_type() {
        DataType::List(inner) | DataType::LargeList(inner) | DataType::FixedSizeList(inner, _) => {
            Ok((canon(inner.data_type()).ok_or_else(unsupported)?, true))
        }
        t => Ok((canon(t).ok_or_else(unsupported)?, false)),
    }
}

fn cast_col(file: &str, name: &str, col: &ArrayRef, c: Canon, list: bool) -> Result<ArrayRef> {
    let target = if list {
        DataType::List(Arc::new(Field::new_list_field(canon_type(c), true)))
    } else {
        canon_type(c)
    };
    // u64 values beyond i64::MAX cannot be int64: a checked cast makes them an error, not a wrap.
    let opts = arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow::compute::cast_with_options(col, &target, &opts).map_err(|e| {
        schema_err(
            file,
            format!("column '{name}': cannot convert to {target}: {e}"),
        )
    })
}

fn values_of(arr: &dyn Array, c: Canon, from: usize, to: usize) -> Kind {
    match c {
        Canon::Int64 => {
            let a = arr.as_primitive::<Int64Type>();
            Kind::Int64List(Int64List {
                value: (from..to)
                    .filter(|i| a.is_valid(*i))
                    .map(|i| a.value(i))
                    .collect(),
            })
        }
        Canon::Float => {
            let a = arr.as_primitive::<Float32Type>();
            Kind::FloatList(FloatList {
                value: (from..to)
                    .filter(|i| a.is_valid(*i))
                    .map(|i| a.value(i))
                    .collect(),
            })
        }
        Canon::Bytes => {
            let a = arr.as_binary::<i32>();
            Kind::BytesList(BytesList {
                value: (from..to)
                    .filter(|i| a.is_valid(*i))
                    .map(|i| a.value(i).to_vec())
                    .collect(),
            })
        }
    }
}

/// Stream the rows of a Parquet file as serialized Examples: `f(bytes, row_index)`;
/// `Ok(false)` stops early.
pub fn for_each_example(
    loc: &Location,
    mut f: impl FnMut(&[u8], u64) -> Result<bool>,
) -> Result<()> {
    let url = loc.url();
    let builder = open_builder(loc)?;
    let reader = builder
        .with_batch_size(BATCH)
        .build()
        .map_err(pq_err(&url))?;
    let mut row = 0u64;
    let mut buf = Vec::new();
    for batch in reader {
        let batch =
            batch.map_err(|e| schema_err(&url, format!("reading rows after row {row}: {e}")))?;
        let go_on = for_each_row(&url, &batch, |ex| {
            buf.clear();
            ex.encode(&mut buf).expect("Vec has room");
            let go_on = f(&buf, row)?;
            row += 1;
            Ok(go_on)
        })?;
        if !go_on {
            return Ok(());
        }
    }
    Ok(())
}

/// The rows of an Arrow batch as Examples (same mapping as Parquet files); `source` names the
/// data in errors. Returns `Ok(false)` if `f` asked to stop.
pub fn for_each_row(
    source: &str,
    batch: &RecordBatch,
    mut f: impl FnMut(Example) -> Result<bool>,
) -> Result<bool> {
    let schema = batch.schema();
    let plans: Vec<(String, Canon, bool)> = schema
        .fields()
        .iter()
        .map(|fld| column_plan(source, fld).map(|(c, l)| (fld.name().clone(), c, l)))
        .collect::<Result<_>>()?;
    let cols: Vec<ArrayRef> = plans
        .iter()
        .zip(batch.columns())
        .map(|((name, c, l), col)| cast_col(source, name, col, *c, *l))
        .collect::<Result<_>>()?;
    for r in 0..batch.num_rows() {
        let mut feats = Vec::with_capacity(cols.len());
        for ((name, c, list), col) in plans.iter().zip(&cols) {
            if col.is_null(r) {
                continue;
            }
            let kind = if *list {
                let l = col.as_list::<i32>();
                let offs = l.value_offsets();
                values_of(
                    l.values().as_ref(),
                    *c,
                    offs[r] as usize,
                    offs[r + 1] as usize,
                )
            } else {
                values_of(col.as_ref(), *c, r, r + 1)
            };
            feats.push((name.clone(), kind));
        }
        if !f(example::from_features(feats))? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The rows of an Arrow batch as serialized Examples, encoded straight from the columns (no
/// per-row structs): the fast path for writing query results as TFRecord. Features are in
/// name order, as prost writes them. Returns `Ok(false)` if `f` asked to stop.
pub fn for_each_encoded_row(
    source: &str,
    batch: &RecordBatch,
    mut f: impl FnMut(&[u8]) -> Result<bool>,
) -> Result<bool> {
    let schema = batch.schema();
    let mut cols: Vec<(Vec<u8>, Canon, bool, ArrayRef)> = Vec::new();
    for (fld, col) in schema.fields().iter().zip(batch.columns()) {
        let (c, list) = column_plan(source, fld)?;
        let cast = cast_col(source, fld.name(), col, c, list)?;
        cols.push((fld.name().as_bytes().to_vec(), c, list, cast));
    }
    cols.sort_by(|a, b| a.0.cmp(&b.0));
    let mut w = ExampleWriter::default();
    let (mut ints, mut floats, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..batch.num_rows() {
        for (key, c, list, col) in &cols {
            if col.is_null(r) {
                continue;
            }
            let (arr, from, to): (&dyn Array, usize, usize) = if *list {
                let l = col.as_list::<i32>();
                let offs = l.value_offsets();
                (l.values().as_ref(), offs[r] as usize, offs[r + 1] as usize)
            } else {
                (col.as_ref(), r, r + 1)
            };
            let valid = (from..to).filter(|i| arr.is_valid(*i));
            match c {
                Canon::Int64 => {
                    let a = arr.as_primitive::<Int64Type>();
                    ints.clear();
                    ints.extend(valid.map(|i| a.value(i)));
                    w.int64_list(key, &ints);
                }
                Canon::Float => {
                    let a = arr.as_primitive::<Float32Type>();
                    floats.clear();
                    floats.extend(valid.map(|i| a.value(i)));
                    w.float_list(key, &floats);
                }
                Canon::Bytes => {
                    let a = arr.as_binary::<i32>();
                    bytes.clear();
                    bytes.extend(valid.map(|i| a.value(i)));
                    w.bytes_list(key, bytes.iter().copied());
                }
            }
        }
        if !f(w.finish())? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The tusk [`Schema`] of Arrow data (as [`for_each_row`] maps it), for dataset manifests.
pub fn schema_of(source: &str, arrow: &ArrowSchema) -> Result<Schema> {
    let mut columns: Vec<Column> = arrow
        .fields()
        .iter()
        .map(|fld| {
            let (c, list) = column_plan(source, fld)?;
            let inner = match fld.data_type() {
                DataType::List(i) | DataType::LargeList(i) | DataType::FixedSizeList(i, _) => {
                    i.data_type().clone()
                }
                t => t.clone(),
            };
            Ok(Column {
                name: fld.name().clone(),
                dtype: match c {
                    Canon::Int64 => FeatureType::Int64,
                    Canon::Float => FeatureType::Float,
                    Canon::Bytes => FeatureType::Bytes,
                },
                list,
                nullable: fld.is_nullable(),
                utf8: matches!(
                    inner,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) || matches!(&inner, DataType::Dictionary(_, v) if matches!(**v, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)),
                mixed: false,
            })
        })
        .collect::<Result<_>>()?;
    columns.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Schema { columns })
}

enum ColBuilder {
    Int(Int64Builder),
    IntList(ListBuilder<Int64Builder>),
    Float(Float32Builder),
    FloatList(ListBuilder<Float32Builder>),
    Str(StringBuilder),
    StrList(ListBuilder<StringBuilder>),
    Bin(BinaryBuilder),
    BinList(ListBuilder<BinaryBuilder>),
}

impl ColBuilder {
    fn new(c: &Column) -> ColBuilder {
        use FeatureType::*;
        match (c.dtype, c.list, c.utf8) {
            (Int64, false, _) => ColBuilder::Int(Int64Builder::new()),
            (Int64, true, _) => ColBuilder::IntList(ListBuilder::new(Int64Builder::new())),
            (Float, false, _) => ColBuilder::Float(Float32Builder::new()),
            (Float, true, _) => ColBuilder::FloatList(ListBuilder::new(Float32Builder::new())),
            (Bytes, false, true) => ColBuilder::Str(StringBuilder::new()),
            (Bytes, true, true) => ColBuilder::StrList(ListBuilder::new(StringBuilder::new())),
            (Bytes, false, false) => ColBuilder::Bin(BinaryBuilder::new()),
            (Bytes, true, false) => ColBuilder::BinList(ListBuilder::new(BinaryBuilder::new())),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColBuilder::Int(b) => Arc::new(b.finish()),
            ColBuilder::IntList(b) => Arc::new(b.finish()),
            ColBuilder::Float(b) => Arc::new(b.finish()),
            ColBuilder::FloatList(b) => Arc::new(b.finish()),
            ColBuilder::Str(b) => Arc::new(b.finish()),
            ColBuilder::StrList(b) => Arc::new(b.finish()),
            ColBuilder::Bin(b) => Arc::new(b.finish()),
            ColBuilder::BinList(b) => Arc::new(b.finish()),
        }
    }

    fn append_null(&mut self) {
        match self {
            ColBuilder::Int(b) => b.append_null(),
            ColBuilder::IntList(b) => b.append_null(),
            ColBuilder::Float(b) => b.append_null(),
            ColBuilder::FloatList(b) => b.append_null(),
            ColBuilder::Str(b) => b.append_null(),
            ColBuilder::StrList(b) => b.append_null(),
            ColBuilder::Bin(b) => b.append_null(),
            ColBuilder::BinList(b) => b.append_null(),
        }
    }

    /// Append one record's values; `Err` is a human reason (wrong type or arity).
    fn append(&mut self, kind: &Kind) -> Result<(), String> {
        let single = |n: usize| {
            if n == 1 {
                Ok(())
            } else {
                Err(format!("has {n} values where the schema says exactly one"))
            }
        };
        match (self, kind) {
            (ColBuilder::Int(b), Kind::Int64List(l)) => {
                single(l.value.len())?;
                b.append_value(l.value[0]);
            }
            (ColBuilder::IntList(b), Kind::Int64List(l)) => {
                b.values().append_slice(&l.value);
                b.append(true);
            }
            (ColBuilder::Float(b), Kind::FloatList(l)) => {
                single(l.value.len())?;
                b.append_value(l.value[0]);
            }
            (ColBuilder::FloatList(b), Kind::FloatList(l)) => {
                b.values().append_slice(&l.value);
                b.append(true);
            }
            (ColBuilder::Str(b), Kind::BytesList(l)) => {
                single(l.value.len())?;
                b.append_value(std::str::from_utf8(&l.value[0]).map_err(|_| "is not valid UTF-8")?);
            }
            (ColBuilder::StrList(b), Kind::BytesList(l)) => {
                for v in &l.value {
                    b.values()
                        .append_value(std::str::from_utf8(v).map_err(|_| "is not valid UTF-8")?);
                }
                b.append(true);
            }
            (ColBuilder::Bin(b), Kind::BytesList(l)) => {
                single(l.value.len())?;
                b.append_value(&l.value[0]);
            }
            (ColBuilder::BinList(b), Kind::BytesList(l)) => {
                for v in &l.value {
                    b.values().append_value(v);
                }
                b.append(true);
            }
            _ => return Err("has a different type than the schema".into()),
        }
        Ok(())
    }
}

/// Arrow schema for a tusk [`Schema`].
pub fn arrow_schema(schema: &Schema) -> ArrowSchema {
    ArrowSchema::new(
        schema
            .columns
            .iter()
            .map(|c| {
                let base = match (c.dtype, c.utf8) {
                    (FeatureType::Int64, _) => DataType::Int64,
                    (FeatureType::Float, _) => DataType::Float32,
                    (FeatureType::Bytes, true) => DataType::Utf8,
                    (FeatureType::Bytes, false) => DataType::Binary,
                };
                let t = if c.list {
                    DataType::List(Arc::new(Field::new_list_field(base, true)))
                } else {
                    base
                };
                Field::new(&c.name, t, true)
            })
            .collect::<Vec<_>>(),
    )
}

/// Writes serialized Examples as rows of a Parquet file, atomically published on finish.
pub struct ParquetWriter {
    url: String,
    schema: Schema,
    arrow: Arc<ArrowSchema>,
    builders: Vec<ColBuilder>,
    rows_in_batch: usize,
    rows: u64,
    /// Rows not yet given to `writer`, fewer than [`BATCH`]: the writer is always given
    /// whole [`BATCH`]-row batches (the last one aside), because its page boundaries and
    /// encoding choices follow the batches it is given. So the same rows make the same bytes
    /// however they arrived (one process or a cluster, large batches or small).
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    writer: ArrowWriter<AtomicWriter>,
}

impl ParquetWriter {
    /// Start writing `loc` with the given schema (snappy-compressed, 128k-row row groups).
    pub fn create(loc: &Location, schema: &Schema) -> Result<ParquetWriter> {
        let url = loc.url();
        let arrow = Arc::new(arrow_schema(schema));
        let props = WriterProperties::builder()
            .set_compression(PqCompression::SNAPPY)
            .set_max_row_group_row_count(Some(128 * 1024))
            .build();
        let writer = ArrowWriter::try_new(loc.writer()?, arrow.clone(), Some(props))
            .map_err(pq_err(&url))?;
        Ok(ParquetWriter {
            builders: schema.columns.iter().map(ColBuilder::new).collect(),
            schema: schema.clone(),
            arrow,
            rows_in_batch: 0,
            rows: 0,
            pending: Vec::new(),
            pending_rows: 0,
            url,
            writer,
        })
    }

    /// Append Arrow rows directly (no per-row Examples): every column of the writer's schema
    /// must be in `batch` (by name) and convertible to its type; extra columns are an error.
    pub fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        self.flush_batch()?;
        if batch.num_columns() != self.arrow.fields().len() {
            return Err(schema_err(
                &self.url,
                format!(
                    "batch has {} columns, the schema {}",
                    batch.num_columns(),
                    self.arrow.fields().len()
                ),
            ));
        }
        let cols: Vec<ArrayRef> = self
            .arrow
            .fields()
            .iter()
            .map(|f| {
                let col = batch.column_by_name(f.name()).ok_or_else(|| {
                    schema_err(&self.url, format!("column '{}' is missing", f.name()))
                })?;
                let opts = arrow::compute::CastOptions {
                    safe: false,
                    ..Default::default()
                };
                arrow::compute::cast_with_options(col, f.data_type(), &opts)
                    .map_err(|e| schema_err(&self.url, format!("column '{}': {e}", f.name())))
            })
            .collect::<Result<_>>()?;
        let out = RecordBatch::try_new(self.arrow.clone(), cols)
            .map_err(|e| schema_err(&self.url, format!("internal error building a batch: {e}")))?;
        self.rows += batch.num_rows() as u64;
        self.emit(out)
    }

    /// Queue `batch` for the writer, which gets the queued rows in whole [`BATCH`]-row
    /// batches.
    fn emit(&mut self, mut batch: RecordBatch) -> Result<()> {
        loop {
            let need = BATCH - self.pending_rows;
            if batch.num_rows() < need {
                if batch.num_rows() > 0 {
                    self.pending_rows += batch.num_rows();
                    self.pending.push(batch);
                }
                return Ok(());
            }
            let head = batch.slice(0, need);
            batch = batch.slice(need, batch.num_rows() - need);
            let whole = if self.pending.is_empty() {
                head
            } else {
                self.pending.push(head);
                let parts = std::mem::take(&mut self.pending);
                arrow::compute::concat_batches(&self.arrow, &parts).map_err(|e| {
                    schema_err(&self.url, format!("internal error joining batches: {e}"))
                })?
            };
            self.pending_rows = 0;
            self.writer.write(&whole).map_err(pq_err(&self.url))?;
        }
    }

    /// Append one Example as a row; features outside the schema are an error.
    pub fn write(&mut self, ex: &Example) -> Result<()> {
        let feats = ex.features.as_ref().map(|f| &f.feature);
        if let Some(feats) = feats {
            for name in feats.keys() {
                if self.schema.index(name).is_none() {
                    return Err(schema_err(
                        &self.url,
                        format!("row {}: feature '{name}' is not in the schema", self.rows),
                    ));
                }
            }
        }
        for (col, b) in self.schema.columns.iter().zip(&mut self.builders) {
            match feats
                .and_then(|f| f.get(&col.name))
                .and_then(|f| f.kind.as_ref())
            {
                None => b.append_null(),
                Some(kind) => b.append(kind).map_err(|why| {
                    schema_err(
                        &self.url,
                        format!("row {}: feature '{}' {why}", self.rows, col.name),
                    )
                })?,
            }
        }
        self.rows += 1;
        self.rows_in_batch += 1;
        if self.rows_in_batch >= BATCH {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<()> {
        if self.rows_in_batch == 0 {
            return Ok(());
        }
        let cols: Vec<ArrayRef> = self.builders.iter_mut().map(ColBuilder::finish).collect();
        let batch = RecordBatch::try_new(self.arrow.clone(), cols)
            .map_err(|e| schema_err(&self.url, format!("internal error building a batch: {e}")))?;
        self.rows_in_batch = 0;
        self.emit(batch)
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Write the footer and publish the file.
    pub fn finish(mut self) -> Result<()> {
        self.flush_batch()?;
        if !self.pending.is_empty() {
            let rest = arrow::compute::concat_batches(&self.arrow, &self.pending).map_err(|e| {
                schema_err(&self.url, format!("internal error joining batches: {e}"))
            })?;
            self.writer.write(&rest).map_err(pq_err(&self.url))?;
        }
        let w = self.writer.into_inner().map_err(pq_err(&self.url))?;
        w.finish()?;
        Ok(())
    }
}
