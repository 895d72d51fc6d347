//! DataFusion over tusk storage: register logs on any backend as tables, run SQL, write the
//! result as sharded record datasets.
//!
//! Every storage URL works as a table location (a file, a directory read recursively, or a
//! glob): `hdfs://` and `webhdfs://` are served by the same `object_store` implementations as
//! the rest of tusk. Queries run on DataFusion's own runtime; results are pulled batch by batch
//! and handed to the dataset writer, whose round-robin shards each encode on their own thread.
//! The operators themselves (joins, sorts) hold what DataFusion holds unless a memory limit is
//! given (then sorts and aggregations spill); tables made with `CREATE TABLE … AS` stay in
//! memory outside that limit. The shipped pipeline's final ORDER BY keeps every sample in
//! memory (about 5 GB peak for 10M events; see docs/BENCHMARKS.md). Any DataFusion option can
//! be set from the environment (`DATAFUSION_EXECUTION_BATCH_SIZE=…`, see [`SqlSession::new`]).
//!
//! Skew: output shards are filled round-robin, so every shard is within one record of the
//! others whatever the key distribution. Inside the queries, DataFusion aggregates in two
//! phases (a partial aggregate per input partition, then a final one per key after the hash
//! repartition) — the map-side combine of MapReduce — so a user holding 40% of the events adds
//! only one partial row per input partition to the shuffle, not 40% of the rows. The shipped
//! pipeline joins the samples to its per-user and per-item feature tables by broadcasting those
//! (small, materialised) tables, so no sample is shuffled by user or item at all; its one
//! shuffled join (the sampler's exclusion list) is keyed on (split, user, item) triples, which
//! a single heavy user does not concentrate. We chose this over salting because it needs no
//! tuning and keeps the SQL plain.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema as ArrowSchema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::TableReference;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use tusk_records::dataset::{Format, Placement, ShardedWriter};
use tusk_records::parquet_io;
use tusk_storage::Storage;

use crate::{Error, Result};

/// The shipped clickstream feature pipeline (see `sql/clickstream.sql`).
pub const CLICKSTREAM_SQL: &str = include_str!("../sql/clickstream.sql");

/// Column layout of REES46-style e-commerce event logs.
pub const CLICKSTREAM_COLUMNS: [&str; 9] = [
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
];

/// Day number (days since 1970-01-01, UTC) of an event, as the shipped SQL computes it.
const LAST_DAY_EXPR: &str = "CAST(floor(date_part('epoch', CAST(substr(event_time, 1, 19) AS TIMESTAMP)) / 86400) AS BIGINT)";

/// The event types the pipeline understands; others are counted and skipped.
pub const EVENT_TYPES: [&str; 4] = ["view", "cart", "remove_from_cart", "purchase"];

fn clickstream_schema() -> ArrowSchema {
    let f = |n: &str, t: DataType| Field::new(n, t, true);
    ArrowSchema::new(vec![
        f("event_time", DataType::Utf8),
        f("event_type", DataType::Utf8),
        f("product_id", DataType::Int64),
        f("category_id", DataType::Int64),
        f("category_code", DataType::Utf8),
        f("brand", DataType::Utf8),
        f("price", DataType::Float64),
        f("user_id", DataType::Int64),
        f("user_session", DataType::Utf8),
    ])
}

/// A SQL session whose tables live in tusk storage.
pub struct SqlSession {
    storage: Storage,
    ctx: SessionContext,
    rt: tokio::runtime::Runtime,
    remote: Option<Remote>,
    /// Tables made by `CREATE TABLE … AS` on the cluster so far (names their directories).
    remote_tables: std::sync::atomic::AtomicUsize,
}

/// How a session whose queries run on a cluster (see [`SqlSession::remote`]) differs from
/// the embedded one.
#[derive(Debug, Clone)]
pub struct Remote {
    /// Where `CREATE TABLE … AS` results are written (as Parquet, by the executors) and read
    /// back from: a directory every executor and the scheduler can reach. Removed when the
    /// session ends.
    pub scratch: String,
    /// What to call the cluster in messages (`df://host:port`).
    pub name: String,
}

impl Drop for SqlSession {
    fn drop(&mut self) {
        if let Some(remote) = &self.remote
            && let Ok(dir) = self.storage.open(&remote.scratch)
        {
            // best effort: an unreachable scratch directory was already an error in the query
            let _ = dir.delete_all();
        }
    }
}

/// Kinds of table files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// CSV with a header line.
    Csv,
    /// Parquet.
    Parquet,
}

impl TableFormat {
    fn extension(self) -> &'static str {
        match self {
            TableFormat::Csv => ".csv",
            TableFormat::Parquet => ".parquet",
        }
    }

    /// Guess from a file name or URL.
    pub fn from_name(name: &str) -> Option<TableFormat> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Some(TableFormat::Csv)
        } else if lower.ends_with(".parquet") || lower.ends_with(".pq") {
            Some(TableFormat::Parquet)
        } else {
            None
        }
    }
}

impl SqlSession {
    /// A session with `partitions` target partitions (0 = eight per core, two per core under a
    /// memory limit) and, optionally, a memory limit in bytes: sorts and aggregations then
    /// share it fairly and spill to the OS temp directory instead of growing, and a query that
    /// cannot fit fails with "Resources exhausted".
    /// Environment variables named after DataFusion options (`datafusion.execution.batch_size`
    /// → `DATAFUSION_EXECUTION_BATCH_SIZE`) override tusk's defaults; an invalid value is an
    /// error naming the variable.
    pub fn new(
        storage: &Storage,
        partitions: usize,
        memory_limit: Option<usize>,
    ) -> Result<SqlSession> {
        let (config, runtime) = Self::engine(partitions, memory_limit)?;
        Self::build(
            storage,
            SessionStateBuilder::new()
                .with_config(config)
                .with_runtime_env(runtime)
                .with_default_features()
                .build(),
            None,
        )
    }

    /// A session whose queries run on a cluster: `upgrade` turns the embedded engine's state
    /// (tusk's options, as [`SqlSession::new`] sets them) into one whose planner submits to
    /// the cluster. Statements then differ in three ways: `CREATE TABLE … AS` is written as
    /// Parquet under `remote.scratch` by the executors and read back from there (nothing is
    /// held by this process); table locations are not opened here unless this process can
    /// reach them (the executors read them where they live); and a directory's format must be
    /// given by its URL (`DIR/*.csv`) when this process cannot list it.
    pub fn remote(
        storage: &Storage,
        partitions: usize,
        remote: Remote,
        upgrade: impl FnOnce(SessionState) -> datafusion::error::Result<SessionState>,
    ) -> Result<SqlSession> {
        let (config, runtime) = Self::engine(partitions, None)?;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        let name = remote.name.clone();
        let state = upgrade(state).map_err(|source| Error::Sql {
            context: format!("connecting to {name}"),
            source,
        })?;
        Self::build(storage, state, Some(remote))
    }

    fn build(storage: &Storage, state: SessionState, remote: Option<Remote>) -> Result<SqlSession> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .thread_name("tusk-sql")
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                file: "(SQL runtime)".into(),
                source,
            })?;
        Ok(SqlSession {
            storage: storage.clone(),
            ctx: SessionContext::new_with_state(state),
            rt,
            remote,
            remote_tables: Default::default(),
        })
    }

    /// tusk's engine options and runtime (see [`SqlSession::new`]).
    fn engine(
        partitions: usize,
        memory_limit: Option<usize>,
    ) -> Result<(
        SessionConfig,
        Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    )> {
        let mut config = SessionConfig::new().with_information_schema(true);
        // Hash joins whose smaller side is below these sizes build one shared table from it
        // (a broadcast join) instead of hash-repartitioning both sides: feature tables joined
        // onto millions of samples are that case (Spark's autoBroadcastJoinThreshold is the
        // same idea).
        config
            .options_mut()
            .optimizer
            .hash_join_single_partition_threshold = 64 << 20;
        config
            .options_mut()
            .optimizer
            .hash_join_single_partition_threshold_rows = 4 << 20;
        // Default: 8 partitions per core. More, smaller partitions made the clickstream
        // pipeline faster and leaner on 2 cores (10M events, 8k batches: 2 partitions 39.5 s /
        // 5.2 GB, 4: 31.2 s, 8: 28.5 s, 16: 25.5 s / 4.4 GB, 32: 26.3 s): sorts and hash
        // tables per partition stay small, and a slow partition no longer holds up the whole
        // stage. Under a memory limit, 2 per core: every partition's sort and aggregation
        // gets an equal share of the pool, and 16 shares of 1 GB were too small for the
        // sorts' merges where 4 shares of 800 MB were enough.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let partitions = match (partitions, memory_limit) {
            (0, None) => 8 * cores,
            (0, Some(_)) => 2 * cores,
            (n, _) => n,
        };
        config = config.with_target_partitions(partitions);
        // Batches of 64k rows instead of DataFusion's 8k: the sorts then merge 8x fewer runs
        // and every operator pays its per-batch costs 8x less often (10M clickstream events:
        // 23.6 s -> 19.9 s, peak memory +0.4 GB). Under a memory limit, 8k: a sort merging
        // its spill files holds one batch per file, and at 64k rows those buffers alone
        // overran a 3 GB limit at 10M events.
        let batch_size = if memory_limit.is_some() {
            8192
        } else {
            64 * 1024
        };
        config = config.with_batch_size(batch_size);
        if let Some(limit) = memory_limit {
            // Every partition's sort reserves this much up front for merging its spills
            // (10 MB by default): with many partitions a small pool would go to reservations.
            config.options_mut().execution.sort_spill_reservation_bytes =
                (limit / (4 * partitions)).clamp(64 << 10, 10 << 20);
        }
        apply_env_options(&mut config)?;
        let mut runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new();
        if let Some(limit) = memory_limit {
            // A fair pool: every spillable operator (the sorts of all partitions, the
            // aggregations) gets an equal share and spills when it reaches it. With the
            // default greedy pool the first sorts took the whole limit and a later one could
            // not reserve even its merge buffers ("Resources exhausted" at 10M events in 3 GB).
            use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
            runtime = runtime.with_memory_pool(Arc::new(TrackConsumersPool::new(
                FairSpillPool::new(limit),
                std::num::NonZeroUsize::new(5).expect("5 is not zero"),
            )));
        }
        let runtime = runtime.build_arc().map_err(|source| Error::Sql {
            context: "starting the SQL engine".into(),
            source,
        })?;
        Ok((config, runtime))
    }

    /// The DataFusion context, for callers that need more.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Turn a tusk URL into one DataFusion understands, registering its object store.
    /// Directories get a trailing `/` (DataFusion lists them recursively).
    fn table_url(&self, url: &str) -> Result<String> {
        let has_glob = url.contains(['*', '?', '[', '{']);
        if has_glob {
            // the store is all that matters here; keep the caller's pattern on the resolved base
            let cut = url.find(['*', '?', '[', '{']).unwrap_or(url.len());
            let probe = &url[..url[..cut].rfind('/').map_or(cut, |i| i + 1)];
            let base = self.df_url(probe)?;
            return Ok(format!(
                "{}/{}",
                base.trim_end_matches('/'),
                &url[probe.len()..]
            ));
        }
        let loc = self.storage.open(url)?;
        let is_file = if self.remote.is_some() {
            // The executors read it and this process may not reach it: a URL naming a table
            // file by its extension is a file either way.
            loc.exists().unwrap_or(false) || TableFormat::from_name(url).is_some()
        } else {
            loc.exists()?
        };
        let mut out = self.df_url(url)?;
        if !is_file && !out.ends_with('/') {
            out.push('/');
        }
        Ok(out)
    }

    /// Register `url` (a file, directory or glob of CSV or Parquet files) as table `name`.
    /// CSV files need a header line; their column types are inferred.
    pub fn register(&self, name: &str, url: &str, format: Option<TableFormat>) -> Result<()> {
        let format = match format.or_else(|| TableFormat::from_name(url)) {
            Some(f) => f,
            None => self.guess_format(url)?,
        };
        let table_url = self.table_url(url)?;
        let ctx = &self.ctx;
        let res = self.rt.block_on(async {
            match format {
                TableFormat::Csv => {
                    ctx.register_csv(
                        name,
                        &table_url,
                        CsvReadOptions::new()
                            .has_header(true)
                            .file_extension(".csv"),
                    )
                    .await
                }
                TableFormat::Parquet => {
                    ctx.register_parquet(
                        name,
                        &table_url,
                        ParquetReadOptions::default().file_extension(".parquet"),
                    )
                    .await
                }
            }
        });
        res.map_err(|source| Error::Sql {
            context: format!("registering table '{name}' at {url}"),
            source,
        })
    }

    fn guess_format(&self, url: &str) -> Result<TableFormat> {
        let listed = self.storage.open(url)?.list();
        let files = match (listed, &self.remote) {
            (Ok(files), _) => files,
            (Err(e), Some(remote)) => {
                return Err(Error::Input {
                    input: url.into(),
                    message: format!(
                        "cannot list it from this machine to tell its format ({e}); with {} name the files in the URL (DIR/*.csv or DIR/*.parquet)",
                        remote.name
                    ),
                });
            }
            (Err(e), None) => return Err(e.into()),
        };
        files
            .iter()
            .find_map(|e| TableFormat::from_name(e.location.file_name()))
            .ok_or_else(|| Error::Input {
                input: url.into(),
                message:
                    "no .csv or .parquet files here (tables are CSV with a header, or Parquet)"
                        .into(),
            })
    }

    /// Register REES46-layout event logs as table `name`, after checking every file's header.
    /// Returns the files found.
    ///
    /// On a cluster ([`SqlSession::remote`]) the files are checked the same way when this
    /// process can list them; when it cannot (the logs are where only the executors reach
    /// them), nothing is checked here, 0 files are returned and the executors read them.
    pub fn register_clickstream(&self, name: &str, url: &str) -> Result<usize> {
        let found = || -> Result<Vec<tusk_storage::Location>> {
            Ok(if url.contains(['*', '?', '[', '{']) {
                self.storage.glob(url)?
            } else {
                let loc = self.storage.open(url)?;
                if loc.exists()? {
                    vec![loc]
                } else {
                    loc.list()?
                        .into_iter()
                        .map(|e| e.location)
                        .filter(|l| l.file_name().ends_with(".csv"))
                        .collect()
                }
            })
        };
        let files = match found() {
            Ok(files) => files,
            Err(_) if self.remote.is_some() => Vec::new(),
            Err(e) => return Err(e),
        };
        if files.is_empty() && self.remote.is_none() {
            return Err(Error::Input {
                input: url.into(),
                message: "no .csv event files found (expected REES46-layout CSV logs, e.g. URL/date=YYYY-MM-DD/part-00000.csv)".into(),
            });
        }
        for f in &files {
            check_header(f)?;
        }
        let table_url = self.table_url(url)?;
        let schema = clickstream_schema();
        let ctx = &self.ctx;
        self.rt
            .block_on(
                ctx.register_csv(
                    name,
                    &table_url,
                    CsvReadOptions::new()
                        .has_header(true)
                        .schema(&schema)
                        .file_extension(TableFormat::Csv.extension()),
                ),
            )
            .map_err(|source| Error::Sql {
                context: format!("registering event logs at {url}"),
                source,
            })?;
        Ok(files.len())
    }

    /// Run every statement of `script` (separated by `;`) but the last, which must be a query;
    /// return its schema and a pull-based batch iterator.
    pub fn query(&self, script: &str, source: &str) -> Result<QueryStream<'_>> {
        let statements = split_statements(script);
        let Some((last, before)) = statements.split_last() else {
            return Err(Error::Input {
                input: source.into(),
                message: "no SQL statements".into(),
            });
        };
        for (i, stmt) in before.iter().enumerate() {
            let ctx = &self.ctx;
            if let Some(remote) = &self.remote {
                self.rt
                    .block_on(self.remote_statement(remote, stmt))
                    .map_err(|e| sql_err(source, i + 1, e))?;
                continue;
            }
            self.rt
                .block_on(async {
                    let plan = ctx.state().create_logical_plan(stmt).await?;
                    let created = match &plan {
                        // (a table with constraints or defaults is left exactly as made)
                        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c))
                            if c.constraints.is_empty() && c.column_defaults.is_empty() =>
                        {
                            Some(c.name.clone())
                        }
                        _ => None,
                    };
                    ctx.execute_logical_plan(plan).await?.collect().await?;
                    if let Some(name) = created {
                        compact_table(ctx, name).await?;
                    }
                    Ok(())
                })
                .map_err(|e| sql_err(source, i + 1, e))?;
        }
        let n = statements.len();
        let ctx = &self.ctx;
        let stream = self
            .rt
            .block_on(async { ctx.sql(last).await?.execute_stream().await })
            .map_err(|e| sql_err(source, n, e))?;
        Ok(QueryStream {
            session: self,
            schema: stream.schema(),
            stream,
            source: format!("{source} (statement {n})"),
        })
    }

    /// One statement of a script on a cluster. `CREATE TABLE … AS` becomes Parquet files that
    /// the executors write under the scratch directory, registered under the table's name
    /// (reading them back gives the query's exact types); everything else runs as given.
    async fn remote_statement(&self, remote: &Remote, stmt: &str) -> datafusion::error::Result<()> {
        use datafusion::error::DataFusionError;
        let ctx = &self.ctx;
        let plan = ctx.state().create_logical_plan(stmt).await?;
        let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c)) = &plan else {
            ctx.execute_logical_plan(plan).await?.collect().await?;
            return Ok(());
        };
        if ctx.table_exist(c.name.clone())? {
            if c.if_not_exists {
                return Ok(());
            }
            if !c.or_replace {
                return Err(DataFusionError::Plan(format!(
                    "table '{}' already exists",
                    c.name
                )));
            }
        }
        if !c.constraints.is_empty() || !c.column_defaults.is_empty() {
            return Err(DataFusionError::Plan(format!(
                "CREATE TABLE {} with constraints or defaults cannot run on {} (its rows are written as Parquet by the executors)",
                c.name, remote.name
            )));
        }
        // one directory per table and statement: a replaced table's old files stay readable
        // by queries already planned, and are removed with the scratch directory
        let n = self
            .remote_tables
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let safe: String = c
            .name
            .to_string()
            .chars()
            .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
            .collect();
        let dir = format!("{}/{n:04}-{safe}/", remote.scratch.trim_end_matches('/'));
        let dir_url = self
            .df_url(&dir)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let schema = c.input.schema().as_arrow().clone();
        let df = datafusion::dataframe::DataFrame::new(ctx.state(), (*c.input).clone());
        df.write_parquet(
            &dir_url,
            datafusion::dataframe::DataFrameWriteOptions::new(),
            None,
        )
        .await
        .map_err(|e| e.context(format!("writing table {} to {dir}", c.name)))?;
        if ctx.table_exist(c.name.clone())? {
            ctx.deregister_table(c.name.clone())?;
        }
        ctx.register_parquet(
            c.name.clone(),
            &dir_url,
            ParquetReadOptions::default()
                .file_extension(".parquet")
                .schema(&schema),
        )
        .await
    }

    /// A tusk URL as DataFusion names it (`file:///…` or the store's own scheme), with its
    /// object store registered; the location is not opened.
    fn df_url(&self, url: &str) -> Result<String> {
        let loc = self.storage.open(url)?;
        let trailing = if url.ends_with('/') { "/" } else { "" };
        if let Some(p) = loc.local_path() {
            return Ok(format!(
                "file://{}{trailing}",
                p.to_string_lossy().trim_end_matches('/')
            ));
        }
        let full = loc.url();
        let path_start = full
            .find("://")
            .and_then(|i| full[i + 3..].find('/').map(|j| i + 3 + j))
            .unwrap_or(full.len());
        let base = url::Url::parse(&full[..path_start]).map_err(|e| Error::Input {
            input: url.into(),
            message: format!("cannot use as a table location: {e}"),
        })?;
        self.ctx.register_object_store(&base, loc.object_store().0);
        Ok(format!("{}{trailing}", full.trim_end_matches('/')))
    }

    /// Run a query and return all its rows (for small results: counts, checks, tests).
    pub fn collect(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let ctx = &self.ctx;
        self.rt
            .block_on(async { ctx.sql(sql).await?.collect().await })
            .map_err(|e| sql_err(sql, 1, e))
    }
}

/// Apply DataFusion options given as environment variables, after tusk's defaults, so any of
/// them can be tuned without a rebuild: `datafusion.execution.batch_size` is read from
/// `DATAFUSION_EXECUTION_BATCH_SIZE` (the option's name upper-cased, dots as underscores).
fn apply_env_options(config: &mut SessionConfig) -> Result<()> {
    let keys: Vec<String> = config
        .options()
        .entries()
        .into_iter()
        .map(|e| e.key)
        .collect();
    for key in keys {
        let var = key.to_ascii_uppercase().replace('.', "_");
        if let Ok(value) = std::env::var(&var) {
            config
                .options_mut()
                .set(&key, &value)
                .map_err(|source| Error::Sql {
                    context: format!("environment variable {var}={value}"),
                    source,
                })?;
        }
    }
    Ok(())
}

/// Give a table made by `CREATE TABLE … AS` buffers no larger than its rows. Operators build
/// output batches with room for a whole batch (64k rows) and may emit far fewer rows, so a
/// small table could report ten times its size: the optimiser, which broadcasts a join side
/// only below a size, then hashed millions of rows instead (the clickstream user features:
/// 92k rows reported as 75 MB). Shrinking reallocates in place; nothing is copied.
async fn compact_table(
    ctx: &SessionContext,
    name: TableReference,
) -> datafusion::error::Result<()> {
    use datafusion::arrow::array::Array;
    let df = ctx.table(name.clone()).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let mut partitions = df.collect_partitioned().await?;
    if partitions.is_empty() {
        partitions.push(Vec::new());
    }
    // the table's own references go first, so each array is uniquely held and can shrink
    ctx.deregister_table(name.clone())?;
    let partitions = partitions
        .into_iter()
        .map(|batches| {
            batches
                .into_iter()
                .map(|batch| {
                    let (_, mut columns, rows) = batch.into_parts();
                    for c in &mut columns {
                        c.shrink_to_fit();
                    }
                    RecordBatch::try_new_with_options(
                        schema.clone(),
                        columns,
                        &datafusion::arrow::record_batch::RecordBatchOptions::new()
                            .with_row_count(Some(rows)),
                    )
                    .map_err(Into::into)
                })
                .collect::<datafusion::error::Result<Vec<_>>>()
        })
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let table = datafusion::datasource::MemTable::try_new(schema, partitions)?;
    ctx.register_table(name, Arc::new(table))?;
    Ok(())
}

fn sql_err(source: &str, n: usize, e: datafusion::error::DataFusionError) -> Error {
    Error::Sql {
        context: format!("{source}: statement {n}"),
        source: e,
    }
}

/// Split a script on `;` outside quotes and `--` comments; empty statements are dropped.
pub fn split_statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = script.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                cur.push(c);
            }
            (None, '-') if chars.peek() == Some(&'-') => {
                // comment to end of line
                for c in chars.by_ref() {
                    if c == '\n' {
                        cur.push('\n');
                        break;
                    }
                }
            }
            (None, ';') => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
            }
            (None, c) => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// Check that a CSV file's header has the clickstream columns (in any order? no: DataFusion
/// reads by position, so exactly in order).
fn check_header(loc: &tusk_storage::Location) -> Result<()> {
    let size = loc.head()?.size;
    let head = if size == 0 {
        Default::default()
    } else {
        loc.read_range(0..size.min(64 * 1024))?
    };
    let first = head.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(first);
    let cols: Vec<&str> = line
        .trim_end_matches('\r')
        .split(',')
        .map(str::trim)
        .collect();
    if cols == CLICKSTREAM_COLUMNS {
        return Ok(());
    }
    let missing: Vec<&str> = CLICKSTREAM_COLUMNS
        .iter()
        .filter(|c| !cols.contains(c))
        .copied()
        .collect();
    let message = if size == 0 {
        "empty file: expected a CSV header line".to_string()
    } else if missing.is_empty() {
        format!(
            "columns are in another order ({}); expected exactly: {}",
            cols.join(","),
            CLICKSTREAM_COLUMNS.join(",")
        )
    } else {
        format!(
            "missing column(s) {} in the header; expected: {}",
            missing.join(", "),
            CLICKSTREAM_COLUMNS.join(",")
        )
    };
    Err(Error::Input {
        input: loc.url(),
        message,
    })
}

/// Batches of a running query, pulled one at a time.
pub struct QueryStream<'a> {
    session: &'a SqlSession,
    schema: Arc<ArrowSchema>,
    stream: datafusion::physical_plan::SendableRecordBatchStream,
    source: String,
}

impl QueryStream<'_> {
    /// The result's schema.
    pub fn schema(&self) -> &Arc<ArrowSchema> {
        &self.schema
    }
}

impl Iterator for QueryStream<'_> {
    type Item = Result<RecordBatch>;
    fn next(&mut self) -> Option<Self::Item> {
        let next = self.session.rt.block_on(self.stream.next())?;
        Some(next.map_err(|source| Error::Sql {
            context: self.source.clone(),
            source,
        }))
    }
}

/// Where query results go.
#[derive(Debug, Clone)]
pub struct OutputSpec {
    /// Dataset directory URL.
    pub url: String,
    /// Record format of the shards.
    pub format: Format,
    /// Number of shards.
    pub shards: usize,
}

/// Write every row of `rows` to a sharded dataset (round-robin: balanced whatever the keys).
/// When `split_column` is given, rows go to `OUTPUT/<value>` per distinct value of that
/// (string) column, which is dropped from the records. Returns rows written per output;
/// `progress` gets the number of rows of each batch written.
pub fn write_results(
    storage: &Storage,
    rows: QueryStream<'_>,
    out: &OutputSpec,
    split_column: Option<&str>,
    mut progress: impl FnMut(u64),
) -> Result<Vec<(String, u64)>> {
    let full_schema = rows.schema().clone();
    let (schema, split_idx) = match split_column {
        None => (full_schema.clone(), None),
        Some(col) => {
            let idx = full_schema.index_of(col).map_err(|_| Error::Input {
                input: rows.source.clone(),
                message: format!("the query has no '{col}' column to split the output by"),
            })?;
            let mut fields: Vec<_> = full_schema.fields().iter().cloned().collect();
            fields.remove(idx);
            (Arc::new(ArrowSchema::new(fields)), Some(idx))
        }
    };
    let tusk_schema = parquet_io::schema_of(&rows.source, &schema)?;
    let base = storage.open(&out.url)?;
    let mut writers: Vec<(String, ShardedWriter)> = Vec::new();
    let source = rows.source.clone();
    for batch in rows {
        let batch = batch?;
        let groups: Vec<(String, RecordBatch)> = match split_idx {
            None => vec![(String::new(), batch)],
            Some(idx) => split_batch(&batch, idx, &source)?,
        };
        for (key, part) in groups {
            let pos = match writers.iter().position(|(k, _)| *k == key) {
                Some(p) => p,
                None => {
                    let dir = if key.is_empty() {
                        base.clone()
                    } else {
                        base.join(&key)
                    };
                    let w = ShardedWriter::create(
                        &dir,
                        out.format,
                        out.shards,
                        tusk_schema.clone(),
                        Placement::RoundRobin,
                    )?;
                    writers.push((key.clone(), w));
                    writers.len() - 1
                }
            };
            writers[pos].1.write_batch(&source, &part)?;
            progress(part.num_rows() as u64);
        }
    }
    if writers.is_empty() && split_idx.is_none() {
        // An empty result is still a (committed, empty) dataset.
        writers.push((
            String::new(),
            ShardedWriter::create(
                &base,
                out.format,
                out.shards,
                tusk_schema,
                Placement::RoundRobin,
            )?,
        ));
    }
    let mut counts = Vec::new();
    for (key, w) in writers {
        counts.push((key, w.finish()?.records));
    }
    counts.sort();
    Ok(counts)
}

/// Split a batch by the string value of column `idx`, dropping that column.
fn split_batch(
    batch: &RecordBatch,
    idx: usize,
    source: &str,
) -> Result<Vec<(String, RecordBatch)>> {
    use datafusion::arrow::array::{Array, AsArray, BooleanArray};
    use datafusion::arrow::compute::{cast, filter_record_batch};
    let col = cast(batch.column(idx), &DataType::Utf8).map_err(|e| Error::Input {
        input: source.into(),
        message: format!("split column is not text: {e}"),
    })?;
    let col = col.as_string::<i32>();
    let mut keys: Vec<String> = Vec::new();
    for i in 0..col.len() {
        if col.is_valid(i) && !keys.iter().any(|k| k == col.value(i)) {
            keys.push(col.value(i).to_string());
        }
    }
    let mut projected = batch.clone();
    projected.remove_column(idx);
    let mut out = Vec::new();
    for key in keys {
        if key.is_empty() || key.contains('/') || key.starts_with('.') {
            return Err(Error::Input {
                input: source.into(),
                message: format!("split value '{key}' cannot name an output directory"),
            });
        }
        let mask: BooleanArray = (0..col.len())
            .map(|i| Some(col.is_valid(i) && col.value(i) == key))
            .collect();
        let part = filter_record_batch(&projected, &mask).map_err(|e| Error::Input {
            input: source.into(),
            message: format!("internal error splitting rows: {e}"),
        })?;
        out.push((key, part));
    }
    Ok(out)
}

/// Options of the clickstream pipeline.
#[derive(Debug, Clone)]
pub struct ClickstreamJob {
    /// Event logs URL (file, directory of `date=…/part-*.csv`, or glob).
    pub input: String,
    /// Output: `OUTPUT/train` and `OUTPUT/test` datasets.
    pub output: OutputSpec,
    /// Sampled negatives per positive.
    pub negatives: usize,
    /// Seed of the negative sampler.
    pub seed: u64,
    /// The SQL script (default: [`CLICKSTREAM_SQL`]).
    pub sql: String,
    /// Name of the script, for errors.
    pub sql_name: String,
    /// DataFusion target partitions (0 = eight per core; two under a memory limit).
    pub partitions: usize,
    /// Memory limit for the SQL engine in bytes (None: unlimited); see [`SqlSession::new`].
    pub memory_limit: Option<usize>,
}

/// What the clickstream pipeline did.
#[derive(Debug, Clone, Default)]
pub struct ClickstreamSummary {
    /// Input files.
    pub files: usize,
    /// Events read.
    pub events: u64,
    /// Events with an unknown `event_type`, skipped: (type, count).
    pub unknown_event_types: Vec<(String, u64)>,
    /// Rows written per split.
    pub rows: Vec<(String, u64)>,
    /// Rows written per entity table (`OUTPUT/entities/KEY`), by key.
    pub entities: Vec<(String, u64)>,
}

/// Run the clickstream feature pipeline: events → samples → `OUTPUT/{train,test}`, and the
/// script's entity tables → `OUTPUT/entities/KEY` (see [`write_entity_tables`]).
pub fn clickstream(
    storage: &Storage,
    job: &ClickstreamJob,
    progress: impl FnMut(u64),
) -> Result<ClickstreamSummary> {
    check_shards(job)?;
    let session = SqlSession::new(storage, job.partitions, job.memory_limit)?;
    clickstream_on(&session, storage, job, progress)
}

fn check_shards(job: &ClickstreamJob) -> Result<()> {
    if job.output.shards == 0 {
        return Err(Error::Option {
            option: "--shards".into(),
            message: "must be at least 1".into(),
        });
    }
    Ok(())
}

/// [`clickstream`] on a given session (a cluster's, see [`SqlSession::remote`]); the job's
/// `partitions` and `memory_limit` are the session's business then.
pub fn clickstream_on(
    session: &SqlSession,
    storage: &Storage,
    job: &ClickstreamJob,
    progress: impl FnMut(u64),
) -> Result<ClickstreamSummary> {
    check_shards(job)?;
    let files = session.register_clickstream("events", &job.input)?;
    // Counts first: an empty input and unknown event types are reported, not silently eaten.
    // One pass for the counts and the last day (as the SQL computes days), so the pipeline
    // tags the split with a literal instead of joining every event to an aggregate.
    let counts = session.collect(&format!(
        "SELECT event_type, count(*) AS n, max({LAST_DAY_EXPR}) AS last_day FROM events GROUP BY event_type"
    ))?;
    let mut last_day: Option<i64> = None;
    let mut events = 0u64;
    let mut unknown = Vec::new();
    for b in &counts {
        use datafusion::arrow::array::{Array, AsArray};
        use datafusion::arrow::datatypes::Int64Type;
        let t = datafusion::arrow::compute::cast(b.column(0), &DataType::Utf8).map_err(|e| {
            Error::Input {
                input: job.input.clone(),
                message: format!("reading event types: {e}"),
            }
        })?;
        let t = t.as_string::<i32>();
        let n = b.column(1).as_primitive::<Int64Type>();
        let day = b.column(2).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let count = n.value(i) as u64;
            events += count;
            let ty = if t.is_valid(i) { t.value(i) } else { "" };
            if !EVENT_TYPES.contains(&ty) {
                unknown.push((ty.to_string(), count));
            } else if day.is_valid(i) {
                last_day = Some(last_day.map_or(day.value(i), |d| d.max(day.value(i))));
            }
        }
    }
    if events == 0 {
        return Err(Error::Input {
            input: job.input.clone(),
            message: "no events (the files hold only headers)".into(),
        });
    }
    unknown.sort();
    let Some(last_day) = last_day else {
        return Err(Error::Input {
            input: job.input.clone(),
            message: format!(
                "no events of a known type (expected event_type in {})",
                EVENT_TYPES.join(", ")
            ),
        });
    };
    let script = job
        .sql
        .replace("${negatives}", &job.negatives.to_string())
        .replace("${seed}", &job.seed.to_string())
        .replace("${last_day}", &last_day.to_string());
    let rows = session.query(&script, &job.sql_name)?;
    let rows = write_results(storage, rows, &job.output, Some("split"), progress)?;
    let entities = write_entity_tables(session, storage, &job.output, &job.sql_name)?;
    Ok(ClickstreamSummary {
        files,
        events,
        unknown_event_types: unknown,
        rows,
        entities,
    })
}

/// The prefix of the tables and views a script defines for `OUTPUT/entities/KEY`.
pub const ENTITY_TABLE_PREFIX: &str = "entities_";

/// Write every table or view of the session named `entities_KEY` to `OUTPUT/entities/KEY`
/// (one shard, sorted by its column `KEY`, which it must have): the entity tables a model
/// version keeps (`data.entities`). Returns (key, rows) in key order.
pub fn write_entity_tables(
    session: &SqlSession,
    storage: &Storage,
    output: &OutputSpec,
    source: &str,
) -> Result<Vec<(String, u64)>> {
    let ctx = session.context();
    let opts = ctx.state().config_options().catalog.clone();
    let mut names: Vec<String> = ctx
        .catalog(&opts.default_catalog)
        .and_then(|c| c.schema(&opts.default_schema))
        .map(|s| s.table_names())
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.len() > ENTITY_TABLE_PREFIX.len() && n.starts_with(ENTITY_TABLE_PREFIX))
        .collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let key = &name[ENTITY_TABLE_PREFIX.len()..];
        let table = format!("{source}: table {name}");
        let has_key = session
            .rt
            .block_on(ctx.table(name.as_str()))
            .map_err(|e| Error::Input {
                input: table.clone(),
                message: e.to_string(),
            })?
            .schema()
            .field_with_unqualified_name(key)
            .is_ok();
        if !has_key {
            return Err(Error::Input {
                input: table,
                message: format!(
                    "an entity table needs its key column '{key}' (the name after '{ENTITY_TABLE_PREFIX}')"
                ),
            });
        }
        let rows = session.query(
            &format!("SELECT * FROM \"{name}\" ORDER BY \"{key}\""),
            &table,
        )?;
        let spec = OutputSpec {
            url: format!("{}/entities/{key}", output.url.trim_end_matches('/')),
            format: output.format,
            shards: 1,
        };
        let written = write_results(storage, rows, &spec, None, |_| {})?;
        out.push((key.to_string(), written.iter().map(|(_, n)| n).sum()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        let s = split_statements("-- a; comment\nSELECT ';' AS x; SELECT 2 -- trailing;\n;");
        assert_eq!(s, vec!["SELECT ';' AS x", "SELECT 2"]);
    }
}
