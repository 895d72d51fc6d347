//! `tusk._tusk`: the compiled half of the Python package (`python/tusk`).
//!
//! Thin on purpose (the library crates know nothing of Python): a [`Plan`] is
//! `tusk_data::loader::Plan` (what a URL holds, opened once), [`Batches`] one consumer's
//! batches of one epoch decoded on a Rust thread and handed over as numpy arrays that own the
//! decoded buffers (no copy), and `write_arrow` writes a tusk dataset from an Arrow IPC stream.
//! Every call that reads or decodes releases the GIL; waits poll for Ctrl-C; errors become
//! `tusk.Error` subclasses carrying the message the CLI prints.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use numpy::{IntoPyArray, PyArray1, PyArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use tusk_data::loader::{self, Columns, DType, Layout, Next, ReadOptions, Reader, Values};
use tusk_storage::Storage;

create_exception!(
    tusk,
    Error,
    PyException,
    "Base class of every error tusk raises."
);
create_exception!(
    tusk,
    DataError,
    Error,
    "The data is damaged or does not fit: a corrupt record, a wrong type, a missing column. The message names the file, record and column."
);
create_exception!(
    tusk,
    StorageError,
    Error,
    "Storage failed: unreachable NameNode, permission denied, I/O error."
);
create_exception!(
    tusk,
    NotFoundError,
    StorageError,
    "A file, directory or dataset does not exist."
);
create_exception!(
    tusk,
    ConfigError,
    Error,
    "An argument is invalid (batch size, rank, column list...)."
);

/// The whole error chain, as the CLI prints it.
fn message(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

fn storage_err(e: &tusk_storage::Error) -> PyErr {
    match e {
        tusk_storage::Error::NotFound { .. } => NotFoundError::new_err(message(e)),
        _ => StorageError::new_err(message(e)),
    }
}

fn records_err(e: &tusk_records::Error) -> PyErr {
    match e {
        tusk_records::Error::Storage(s) => storage_err(s),
        _ => DataError::new_err(message(e)),
    }
}

fn data_err(e: tusk_data::Error) -> PyErr {
    match &e {
        tusk_data::Error::Storage(s) => storage_err(s),
        tusk_data::Error::Records(r) => records_err(r),
        tusk_data::Error::Config { .. } => ConfigError::new_err(message(&e)),
        tusk_data::Error::Internal(_) => Error::new_err(message(&e)),
        _ => DataError::new_err(message(&e)),
    }
}

/// One storage layer per process. A child made by `fork` (PyTorch's DataLoader workers)
/// inherits the parent's without its I/O threads: it gets a new one, and the inherited one is
/// leaked, never dropped (dropping it would wait for threads that do not exist there).
static STORAGE: Mutex<Option<(u32, Storage)>> = Mutex::new(None);

/// hdfs-native keeps a process-wide cache of idle DataNode connections, each reused for up to
/// 3 s after a read. A forked child inherits the parent's entries — sockets registered with the
/// parent's I/O threads, which do not exist in the child, and shared with the parent — and a
/// read that picks one up hangs. The crate offers no way to clear the cache, so a child's first
/// use of storage waits until every entry it may have inherited has expired: readers of
/// `hdfs://` data open at the fork, or the last one closed less than 3 s before it.
static HDFS_READERS: AtomicUsize = AtomicUsize::new(0);
static HDFS_LAST_USE_MS: AtomicU64 = AtomicU64::new(0);
const HDFS_CACHE_EXPIRY_MS: u64 = 3_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn is_hdfs(url: &str) -> bool {
    url.get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("hdfs://"))
}

fn hdfs_used() {
    HDFS_LAST_USE_MS.store(now_ms(), Ordering::Relaxed);
}

fn storage() -> PyResult<Storage> {
    let mut g = STORAGE.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if let Some((p, s)) = g.as_ref()
        && *p == pid
    {
        return Ok(s.clone());
    }
    if let Some(old) = g.take() {
        // A forked child: the parent's storage is not ours to use or drop.
        std::mem::forget(old);
        let readers = HDFS_READERS.swap(0, Ordering::Relaxed);
        let last = if readers > 0 {
            now_ms()
        } else {
            HDFS_LAST_USE_MS.load(Ordering::Relaxed)
        };
        let until = last.saturating_add(HDFS_CACHE_EXPIRY_MS + 100);
        let now = now_ms();
        if last > 0 && until > now {
            std::thread::sleep(Duration::from_millis(until - now));
        }
    }
    let s = Storage::new().map_err(|e| storage_err(&e))?;
    *g = Some((pid, s.clone()));
    Ok(s)
}

/// What a URL holds: files, record counts, the columns of its batches.
#[pyclass(module = "tusk._tusk", frozen)]
struct Plan {
    inner: Arc<loader::Plan>,
    pid: u32,
}

impl Drop for Plan {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            // Inherited through fork: its storage handles belong to the parent's threads.
            std::mem::forget(self.inner.clone());
        }
    }
}

#[pymethods]
impl Plan {
    #[new]
    #[pyo3(signature = (url, columns=None, ragged=None))]
    fn new(
        py: Python<'_>,
        url: String,
        columns: Option<Vec<String>>,
        ragged: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let storage = storage()?;
        let ragged = ragged.unwrap_or_default();
        let plan = py.detach(|| loader::Plan::open(&storage, &url, columns.as_deref(), &ragged));
        if is_hdfs(&url) {
            hdfs_used();
        }
        let plan = plan.map_err(data_err)?;
        Ok(Plan {
            inner: Arc::new(plan),
            pid: std::process::id(),
        })
    }

    /// Records per epoch.
    #[getter]
    fn records(&self) -> u64 {
        self.inner.records()
    }

    /// `[(name, dtype, layout, shape)]`: dtype `int64`/`float32`/`bytes`, layout
    /// `scalar`/`ragged`/`fixed`, shape the per-record shape of a fixed column.
    #[getter]
    fn fields(&self) -> Vec<(String, &'static str, &'static str, Option<Vec<usize>>)> {
        self.inner
            .fields()
            .iter()
            .map(|f| {
                let (layout, shape) = match &f.layout {
                    Layout::Scalar => ("scalar", None),
                    Layout::Ragged => ("ragged", None),
                    Layout::Fixed(s) => ("fixed", Some(s.clone())),
                };
                (f.name.clone(), f.dtype.as_str(), layout, shape)
            })
            .collect()
    }

    /// `[(url, records)]` in stored order.
    #[getter]
    fn files(&self) -> Vec<(String, u64)> {
        self.inner
            .files()
            .iter()
            .map(|f| (f.url(), f.records))
            .collect()
    }

    /// The shuffle window used when none is given.
    #[getter]
    fn default_window(&self) -> usize {
        self.inner.default_window()
    }

    /// Records consumer `part` of `parts` reads per epoch.
    fn part_records(&self, part: usize, parts: usize) -> u64 {
        self.inner.part_records(part, parts)
    }

    /// Batches consumer `part` of `parts` yields per epoch.
    fn part_batches(&self, batch_size: usize, drop_last: bool, part: usize, parts: usize) -> u64 {
        loader::batches_per_epoch(&self.inner, batch_size, drop_last, part, parts)
    }

    /// Start reading one consumer's batches of one epoch: a `Batches` iterator of dicts of
    /// numpy arrays, or with `arrow` an `ArrowStream` of the same batches.
    #[pyo3(signature = (batch_size, shuffle, seed, drop_last, window, prefetch, epoch, part, parts, skip, arrow=false))]
    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        py: Python<'_>,
        batch_size: usize,
        shuffle: bool,
        seed: u64,
        drop_last: bool,
        window: Option<usize>,
        prefetch: usize,
        epoch: u64,
        part: usize,
        parts: usize,
        skip: u64,
        arrow: bool,
    ) -> PyResult<Py<PyAny>> {
        if self.pid != std::process::id() {
            return Err(ConfigError::new_err(
                "this dataset was opened in another process (a fork): open it again here",
            ));
        }
        let opts = ReadOptions {
            batch_size,
            shuffle,
            seed,
            drop_last,
            window,
            prefetch,
        };
        let reader =
            Reader::start(self.inner.clone(), &opts, epoch, part, parts, skip).map_err(data_err)?;
        if arrow {
            let stream = ArrowStream {
                inner: Mutex::new(Some(ArrowBatches {
                    reader,
                    plan: self.inner.clone(),
                    schema: arrow_schema(&self.inner),
                })),
            };
            return Ok(Py::new(py, stream)?.into_any());
        }
        let hdfs = is_hdfs(self.inner.url());
        if hdfs {
            HDFS_READERS.fetch_add(1, Ordering::Relaxed);
        }
        let batches = Batches {
            reader: Mutex::new(Some(reader)),
            plan: self.inner.clone(),
            pid: std::process::id(),
            hdfs: AtomicBool::new(hdfs),
        };
        Ok(Py::new(py, batches)?.into_any())
    }
}

/// One consumer's batches of one epoch: an iterator of dicts of numpy arrays.
#[pyclass(module = "tusk._tusk")]
struct Batches {
    reader: Mutex<Option<Reader>>,
    plan: Arc<loader::Plan>,
    pid: u32,
    /// Counted in `HDFS_READERS` until its reader stops.
    hdfs: AtomicBool,
}

impl Batches {
    /// The reader is gone (finished, failed, closed): it no longer counts as an HDFS user.
    fn stopped(&self) {
        if self.hdfs.swap(false, Ordering::Relaxed) {
            hdfs_used();
            HDFS_READERS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        if self.pid != std::process::id()
            && let Some(r) = self
                .reader
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .take()
        {
            // Its thread lives in the parent: nothing to stop or join here.
            std::mem::forget(r);
            std::mem::forget(self.plan.clone());
            return;
        }
        if let Some(r) = self
            .reader
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            drop(r);
        }
        self.stopped();
    }
}

#[pymethods]
impl Batches {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyDict>>> {
        loop {
            let mut guard = self.reader.lock().unwrap_or_else(|e| e.into_inner());
            let Some(reader) = guard.as_mut() else {
                return Ok(None);
            };
            let next = py.detach(|| reader.next_timeout(Duration::from_millis(100)));
            match next {
                Ok(Next::Batch(b)) => {
                    drop(guard);
                    return to_dict(py, &self.plan, b).map(Some);
                }
                Ok(Next::Done) => {
                    *guard = None;
                    drop(guard);
                    self.stopped();
                    return Ok(None);
                }
                Ok(Next::Pending) => {
                    drop(guard);
                    // Ctrl-C (and other signal handlers) while waiting on a slow read.
                    if let Err(e) = py.check_signals() {
                        self.close(py);
                        return Err(e);
                    }
                }
                Err(e) => {
                    *guard = None;
                    drop(guard);
                    self.stopped();
                    return Err(data_err(e));
                }
            }
        }
    }

    /// Stop the reader thread now (also done when the iterator is dropped).
    fn close(&self, py: Python<'_>) {
        let r = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
        py.detach(move || drop(r));
        self.stopped();
    }
}

/// One consumer's batches of one epoch as an Arrow C stream (`__arrow_c_stream__`, the Arrow
/// PyCapsule interface): pyarrow, polars or DuckDB import it without a copy.
#[pyclass(module = "tusk._tusk")]
struct ArrowStream {
    inner: Mutex<Option<ArrowBatches>>,
}

#[pymethods]
impl ArrowStream {
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, pyo3::types::PyCapsule>> {
        // The schema is the dataset's; a consumer asking for another one casts afterwards.
        let _ = requested_schema;
        let batches = self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| ConfigError::new_err("this Arrow stream was already consumed"))?;
        let stream = arrow::ffi_stream::FFI_ArrowArrayStream::new(Box::new(batches));
        pyo3::types::PyCapsule::new_with_value(py, stream, c"arrow_array_stream")
    }
}

/// The batches of a [`Reader`] as Arrow record batches.
struct ArrowBatches {
    reader: Reader,
    plan: Arc<loader::Plan>,
    schema: arrow::datatypes::SchemaRef,
}

impl Iterator for ArrowBatches {
    type Item = Result<arrow::array::RecordBatch, arrow::error::ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.reader.next_timeout(Duration::from_millis(100)) {
                Ok(Next::Batch(b)) => {
                    return Some(
                        arrow_batch(&self.plan, &self.schema, b)
                            .map_err(|e| arrow::error::ArrowError::ExternalError(Box::new(e))),
                    );
                }
                Ok(Next::Done) => return None,
                Ok(Next::Pending) => {}
                Err(e) => return Some(Err(arrow::error::ArrowError::ExternalError(Box::new(e)))),
            }
        }
    }
}

impl arrow::record_batch::RecordBatchReader for ArrowBatches {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.schema.clone()
    }
}

/// The Arrow type of a field: int64/float32/large_binary; ragged → large_list; a fixed shape →
/// nested fixed_size_list.
fn arrow_field(f: &loader::Field) -> arrow::datatypes::Field {
    use arrow::datatypes::{DataType, Field};
    let base = match f.dtype {
        DType::Int64 => DataType::Int64,
        DType::Float32 => DataType::Float32,
        DType::Bytes => DataType::LargeBinary,
    };
    let dt = match &f.layout {
        Layout::Scalar => base,
        Layout::Ragged => DataType::LargeList(Arc::new(Field::new_list_field(base, false))),
        Layout::Fixed(shape) => shape.iter().rev().fold(base, |inner, d| {
            DataType::FixedSizeList(Arc::new(Field::new_list_field(inner, false)), *d as i32)
        }),
    };
    Field::new(&f.name, dt, false)
}

fn arrow_schema(plan: &loader::Plan) -> arrow::datatypes::SchemaRef {
    Arc::new(arrow::datatypes::Schema::new(
        plan.fields().iter().map(arrow_field).collect::<Vec<_>>(),
    ))
}

/// A batch as Arrow arrays that take over the decoded buffers (no copy).
fn arrow_batch(
    plan: &loader::Plan,
    schema: &arrow::datatypes::SchemaRef,
    b: Columns,
) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{
        ArrayRef, FixedSizeListArray, Float32Array, Int64Array, LargeBinaryArray, LargeListArray,
    };
    use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
    use arrow::datatypes::Field;
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(b.columns.len());
    for (f, c) in plan.fields().iter().zip(b.columns) {
        let values: ArrayRef = match c.values {
            Values::Int64(v) => Arc::new(Int64Array::new(ScalarBuffer::from(v), None)),
            Values::Float32(v) => Arc::new(Float32Array::new(ScalarBuffer::from(v), None)),
            Values::Bytes { data, offsets } => Arc::new(LargeBinaryArray::try_new(
                OffsetBuffer::new(ScalarBuffer::from(offsets)),
                Buffer::from_vec(data),
                None,
            )?),
        };
        let col: ArrayRef = match (&f.layout, c.offsets) {
            (_, Some(o)) => {
                let item = Arc::new(Field::new_list_field(values.data_type().clone(), false));
                Arc::new(LargeListArray::try_new(
                    item,
                    OffsetBuffer::new(ScalarBuffer::from(o)),
                    values,
                    None,
                )?)
            }
            (Layout::Fixed(shape), None) => {
                let mut arr = values;
                for d in shape.iter().rev() {
                    let item = Arc::new(Field::new_list_field(arr.data_type().clone(), false));
                    arr = Arc::new(FixedSizeListArray::try_new(item, *d as i32, arr, None)?);
                }
                arr
            }
            _ => values,
        };
        cols.push(col);
    }
    let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(b.rows));
    arrow::array::RecordBatch::try_new_with_options(schema.clone(), cols, &opts)
}

fn values_array<'py>(py: Python<'py>, v: Values) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Values::Int64(v) => v.into_pyarray(py).into_any(),
        Values::Float32(v) => v.into_pyarray(py).into_any(),
        Values::Bytes { data, offsets } => {
            let objs: Vec<Py<PyAny>> = offsets
                .windows(2)
                .map(|w| {
                    PyBytes::new(py, &data[w[0] as usize..w[1] as usize])
                        .into_any()
                        .unbind()
                })
                .collect();
            PyArray1::from_vec(py, objs).into_any()
        }
    })
}

fn to_dict(py: Python<'_>, plan: &loader::Plan, b: Columns) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    let rows = b.rows;
    for (f, c) in plan.fields().iter().zip(b.columns) {
        let values = values_array(py, c.values)?;
        let item = match (&f.layout, c.offsets) {
            (_, Some(o)) => PyTuple::new(py, [values, o.into_pyarray(py).into_any()])?.into_any(),
            (Layout::Fixed(shape), None) => {
                let mut dims = vec![rows];
                dims.extend(shape);
                match f.dtype {
                    DType::Float32 => values
                        .cast_into::<PyArray1<f32>>()?
                        .reshape(dims)?
                        .into_any(),
                    DType::Int64 => values
                        .cast_into::<PyArray1<i64>>()?
                        .reshape(dims)?
                        .into_any(),
                    DType::Bytes => values,
                }
            }
            _ => values,
        };
        d.set_item(&f.name, item)?;
    }
    Ok(d.unbind())
}

/// Write a tusk dataset at `url` from an Arrow IPC stream (what `pyarrow` writes): `format`
/// `parquet` or `tfrecord` (`tfrecord.gz`, `tfrecord.zlib`), `shards` files written on their
/// own threads, rows dealt round-robin; the manifest is written last, create-only.
#[pyfunction]
#[pyo3(signature = (url, ipc, format="parquet", shards=1))]
fn write_arrow(
    py: Python<'_>,
    url: String,
    ipc: &[u8],
    format: &str,
    shards: usize,
) -> PyResult<u64> {
    use tusk_records::dataset::{Format, Placement, ShardedWriter};
    use tusk_records::tfrecord::Compression;
    let fmt = match format {
        "parquet" => Format::Parquet,
        "tfrecord" => Format::TfRecord(Compression::None),
        "tfrecord.gz" | "tfrecord.gzip" => Format::TfRecord(Compression::Gzip),
        "tfrecord.zlib" => Format::TfRecord(Compression::Zlib),
        other => {
            return Err(ConfigError::new_err(format!(
                "unknown format '{other}' (expected parquet, tfrecord, tfrecord.gz or tfrecord.zlib)"
            )));
        }
    };
    if shards == 0 {
        return Err(ConfigError::new_err("shards must be at least 1"));
    }
    let storage = storage()?;
    let ipc = ipc.to_vec();
    py.detach(move || -> PyResult<u64> {
        let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
            .map_err(|e| ConfigError::new_err(format!("not an Arrow IPC stream: {e}")))?;
        let schema = tusk_records::parquet_io::schema_of(&url, &reader.schema())
            .map_err(|e| records_err(&e))?;
        let dir = storage.open(&url).map_err(|e| storage_err(&e))?;
        let mut w = ShardedWriter::create(&dir, fmt, shards, schema, Placement::RoundRobin)
            .map_err(|e| records_err(&e))?;
        for batch in reader {
            let batch = batch.map_err(|e| DataError::new_err(format!("{url}: {e}")))?;
            w.write_batch(&url, &batch).map_err(|e| records_err(&e))?;
        }
        let m = w.finish().map_err(|e| records_err(&e))?;
        if is_hdfs(&url) {
            hdfs_used();
        }
        Ok(m.records)
    })
}

fn train_err(e: tusk_train::Error) -> PyErr {
    match &e {
        tusk_train::Error::Storage(s) => storage_err(s),
        tusk_train::Error::Records(r) => records_err(r),
        tusk_train::Error::Data(d) => match d.as_ref() {
            tusk_data::Error::Storage(s) => storage_err(s),
            _ => DataError::new_err(message(&e)),
        },
        tusk_train::Error::Config { .. } | tusk_train::Error::ConfigFile { .. } => {
            ConfigError::new_err(message(&e))
        }
        _ => DataError::new_err(message(&e)),
    }
}

/// A committed model version, loaded whole: weights, embedding rows, and the scorer that
/// `tusk predict` uses.
#[pyclass(module = "tusk._tusk", frozen)]
struct Model {
    scorer: Arc<tusk_train::trainer::Scorer>,
    url: String,
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (url, version=None))]
    fn new(py: Python<'_>, url: String, version: Option<u64>) -> PyResult<Self> {
        let storage = storage()?;
        let s = py.detach(|| tusk_train::trainer::Scorer::load(&storage, &url, version));
        if is_hdfs(&url) {
            hdfs_used();
        }
        Ok(Model {
            scorer: Arc::new(s.map_err(train_err)?),
            url,
        })
    }

    /// The version number.
    #[getter]
    fn version(&self) -> u64 {
        self.scorer.version
    }

    /// The model URL.
    #[getter]
    fn url(&self) -> String {
        self.url.clone()
    }

    /// The training config it was trained with, as JSON (every key resolved).
    #[getter]
    fn config_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.scorer.config).map_err(|e| DataError::new_err(e.to_string()))
    }

    /// The feature space fitted on the training data (columns, hashing, dense statistics), as
    /// JSON.
    #[getter]
    fn features_json(&self) -> PyResult<String> {
        serde_json::to_string(&*self.scorer.space).map_err(|e| DataError::new_err(e.to_string()))
    }

    /// Dense tensors by name (PyTorch names and shapes), copies of the version's weights.
    fn weights(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let d = PyDict::new(py);
        for spec in self.scorer.model.layout().specs() {
            let n: usize = spec.shape.iter().product();
            let v = self.scorer.params[spec.offset..spec.offset + n].to_vec();
            d.set_item(&spec.name, v.into_pyarray(py).reshape(spec.shape.clone())?)?;
        }
        Ok(d.unbind())
    }

    /// `(keys, rows)`: the embedding table's hashed keys (uint64, ascending) and their rows
    /// (float32 `[n, dim]`).
    fn embeddings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let table = &self.scorer.table;
        let dim = self.scorer.model.emb_dim();
        let (keys, rows) = py.detach(|| {
            let mut all: Vec<(u64, &[f32])> = table.rows().collect();
            all.sort_unstable_by_key(|(k, _)| *k);
            let keys: Vec<u64> = all.iter().map(|(k, _)| *k).collect();
            let mut rows = Vec::with_capacity(all.len() * dim);
            for (_, r) in &all {
                rows.extend_from_slice(r);
            }
            (keys, rows)
        });
        let n = keys.len();
        PyTuple::new(
            py,
            [
                keys.into_pyarray(py).into_any(),
                rows.into_pyarray(py).reshape([n, dim])?.into_any(),
            ],
        )
    }

    /// Scores (probabilities) of the rows of an Arrow IPC stream, exactly as `tusk predict`
    /// scores a file of them: the same batch pipeline, the version's entity tables filling
    /// the columns a row lacks.
    fn predict_ipc<'py>(&self, py: Python<'py>, ipc: &[u8]) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let storage = storage()?;
        let scorer = self.scorer.clone();
        let ipc = ipc.to_vec();
        let scores = py.detach(move || score_ipc(&storage, &scorer, ipc))?;
        Ok(scores.into_pyarray(py))
    }
}

static SCRATCH: AtomicU64 = AtomicU64::new(0);

/// Rows from Arrow IPC → a Parquet file in this process's `memory://` store → `tusk predict`'s
/// batch pipeline → probabilities.
fn score_ipc(
    storage: &Storage,
    scorer: &Arc<tusk_train::trainer::Scorer>,
    ipc: Vec<u8>,
) -> PyResult<Vec<f32>> {
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
        .map_err(|e| ConfigError::new_err(format!("not an Arrow IPC stream: {e}")))?;
    let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
    let url = format!(
        "memory://tusk-python/score-{}-{n}.parquet",
        std::process::id()
    );
    let schema = tusk_records::parquet_io::schema_of("rows", &reader.schema())
        .map_err(|e| records_err(&e))?;
    let loc = storage.open(&url).map_err(|e| storage_err(&e))?;
    let result = (|| -> PyResult<Vec<f32>> {
        let mut w = tusk_records::parquet_io::ParquetWriter::create(&loc, &schema)
            .map_err(|e| records_err(&e))?;
        for b in reader {
            let b = b.map_err(|e| DataError::new_err(format!("rows: {e}")))?;
            w.write_batch(&b).map_err(|e| records_err(&e))?;
        }
        w.finish().map_err(|e| records_err(&e))?;
        let source = tusk_data::Source::open(storage, &url).map_err(data_err)?;
        let mut out = Vec::new();
        for logits in tusk_train::predict::logits(source, scorer) {
            let logits = logits.map_err(data_err)?;
            out.extend(logits.into_iter().map(tusk_model::models::sigmoid));
        }
        Ok(out)
    })();
    let _ = loc.delete();
    result
}

/// The compiled module.
fn location(url: &str) -> PyResult<tusk_storage::Location> {
    if is_hdfs(url) {
        hdfs_used();
    }
    storage()?.open(url).map_err(|e| storage_err(&e))
}

/// The whole file at `url`.
#[pyfunction]
fn read_bytes<'py>(py: Python<'py>, url: String) -> PyResult<Bound<'py, PyBytes>> {
    let loc = location(&url)?;
    let b = py.detach(|| loc.read()).map_err(|e| storage_err(&e))?;
    Ok(PyBytes::new(py, &b))
}

/// Writes `data` to `url` atomically (temporary name, then rename), replacing any file
/// there; with `exclusive`, fails with FileExistsError if one is there (exactly one of
/// several racing writers succeeds).
#[pyfunction]
#[pyo3(signature = (url, data, exclusive=false))]
fn write_bytes(py: Python<'_>, url: String, data: Vec<u8>, exclusive: bool) -> PyResult<()> {
    let loc = location(&url)?;
    let r = py.detach(|| {
        if exclusive {
            loc.write_new(data)
        } else {
            loc.write(data)
        }
    });
    match r {
        Err(tusk_storage::Error::AlreadyExists { .. }) => Err(
            pyo3::exceptions::PyFileExistsError::new_err(format!("{url} exists")),
        ),
        r => r.map_err(|e| storage_err(&e)),
    }
}

/// Whether a file or directory exists at `url`.
#[pyfunction]
fn exists(py: Python<'_>, url: String) -> PyResult<bool> {
    let loc = location(&url)?;
    py.detach(|| loc.exists()).map_err(|e| storage_err(&e))
}

/// The names directly in the directory `url`, sorted (hidden names skipped; a missing
/// directory lists as empty).
#[pyfunction]
fn list_dir(py: Python<'_>, url: String) -> PyResult<Vec<String>> {
    let loc = location(&url)?;
    py.detach(|| loc.list_names()).map_err(|e| storage_err(&e))
}

/// Deletes `url` and everything under it; returns how many files went.
#[pyfunction]
fn delete(py: Python<'_>, url: String) -> PyResult<usize> {
    let loc = location(&url)?;
    py.detach(|| match loc.delete_all()? {
        0 => match loc.delete() {
            Ok(()) => Ok(1),
            Err(tusk_storage::Error::NotFound { .. }) => Ok(0),
            Err(e) => Err(e),
        },
        n => Ok(n),
    })
    .map_err(|e| storage_err(&e))
}

#[pymodule]
fn _tusk(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Plan>()?;
    m.add_class::<Batches>()?;
    m.add_class::<Model>()?;
    m.add_class::<ArrowStream>()?;
    m.add_function(wrap_pyfunction!(write_arrow, m)?)?;
    for f in [
        wrap_pyfunction!(read_bytes, m)?,
        wrap_pyfunction!(write_bytes, m)?,
        wrap_pyfunction!(exists, m)?,
        wrap_pyfunction!(list_dir, m)?,
        wrap_pyfunction!(delete, m)?,
    ] {
        m.add_function(f)?;
    }
    m.add("Error", py.get_type::<Error>())?;
    m.add("DataError", py.get_type::<DataError>())?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
