//! `tusk preprocess …` and `tusk sql`.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use tusk_preprocess::movielens::{self, MovieLensConfig};
use tusk_preprocess::sql::{self, ClickstreamJob, OutputSpec, SqlSession};
use tusk_records::dataset::Format;
use tusk_records::tfrecord::Compression;
use tusk_storage::Storage;

use crate::records::{CompressionArg, FormatArg, Ticker, progress_bar};

#[derive(Debug, Subcommand)]
pub enum PreprocessCommand {
    /// E-commerce event logs (REES46 layout, CSV) → training samples with user and item
    /// features, K sampled negatives per positive, a time split (last day = test), written to
    /// OUTPUT/train and OUTPUT/test. Unknown event types are counted, reported and skipped.
    Clickstream(ClickstreamArgs),
    /// MovieLens u.data → leave-one-out datasets: OUTPUT/train (positives + K negatives each,
    /// fixed, shuffled), OUTPUT/test (per user: latest rating + 100 unrated items) and, with
    /// --validation, OUTPUT/validation (second-latest rating + 100).
    Movielens(MovieLensArgs),
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Record format of the output shards.
    #[arg(long, value_enum, default_value = "tfrecord")]
    format: FormatArg,
    /// Number of shards per output dataset (balanced by record count).
    #[arg(long, default_value_t = 4)]
    shards: usize,
    /// TFRecord compression of the shards.
    #[arg(long, value_enum, default_value = "none")]
    compression: CompressionArg,
}

impl OutputArgs {
    fn format(&self) -> Result<Format> {
        Ok(match self.format {
            FormatArg::Parquet => {
                if !matches!(self.compression, CompressionArg::None) {
                    bail!("--compression applies to TFRecord output, not Parquet");
                }
                Format::Parquet
            }
            FormatArg::Tfrecord => Format::TfRecord(Compression::from(self.compression)),
        })
    }
}

#[derive(Debug, Args)]
pub struct ClickstreamArgs {
    /// Event logs: a CSV file, a directory of date=YYYY-MM-DD/part-*.csv, or a quoted glob.
    #[arg(long)]
    input: String,
    /// Output directory: OUTPUT/train and OUTPUT/test datasets.
    #[arg(long)]
    output: String,
    /// Sampled negatives per positive.
    #[arg(long, default_value_t = 4)]
    negatives: usize,
    /// Seed of the negative sampler.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Use this SQL script instead of the shipped one (crates/tusk-preprocess/sql/clickstream.sql).
    #[arg(long)]
    sql: Option<String>,
    /// DataFusion partitions [default: eight per core; two per core with --memory-limit].
    #[arg(long, default_value_t = 0)]
    partitions: usize,
    /// Memory limit of the SQL engine, e.g. 2G or 512M: sorts and aggregations spill to the
    /// temp directory beyond it, shared fairly between them; hash-join build sides and the
    /// tables the SQL materialises (CREATE TABLE … AS) cannot spill and are not counted
    /// [default: unlimited].
    #[arg(long, value_parser = parse_size)]
    memory_limit: Option<usize>,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Run the SQL on an Apache Ballista cluster instead of in this process:
    /// df://HOST:PORT of a `tusk sql-scheduler` whose `tusk sql-executor`s read the tables
    /// where they live. Results still become a dataset written here.
    #[arg(long, value_name = "df://HOST:PORT")]
    cluster: Option<String>,
    /// With --cluster: where tables made by CREATE TABLE … AS are written (Parquet, by the
    /// executors), a directory every executor and the scheduler can reach; removed afterwards
    /// [default: a hidden directory beside the output].
    #[arg(long, requires = "cluster")]
    scratch: Option<String>,
}

impl ClusterArgs {
    /// A session on the cluster, or None for the embedded engine.
    fn session(
        &self,
        storage: &Storage,
        partitions: usize,
        output: &str,
    ) -> Result<Option<SqlSession>> {
        let Some(url) = &self.cluster else {
            return Ok(None);
        };
        let cluster = tusk_ballista::client::Cluster::parse(url)?;
        let scratch = match &self.scratch {
            Some(s) => s.clone(),
            None => {
                let out = storage.open(output)?;
                let name = format!(
                    ".{}.sql-scratch-{}-{}",
                    out.file_name(),
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis())
                );
                out.parent().join(&name).url()
            }
        };
        Ok(Some(tusk_ballista::client::session(
            storage, &cluster, partitions, &scratch,
        )?))
    }
}

/// `512M`, `2G`, `1500K` or plain bytes.
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: usize = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix '{c}' (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size such as 512M or 2G"))?;
    if n.is_nan() || n <= 0.0 {
        return Err("must be positive".into());
    }
    Ok((n * mult as f64) as usize)
}

#[derive(Debug, Args)]
pub struct MovieLensArgs {
    /// MovieLens ratings file (u.data: user, item, rating, timestamp; tab-separated).
    #[arg(long)]
    input: String,
    /// Output directory.
    #[arg(long)]
    output: String,
    /// Sampled negatives per training positive.
    #[arg(long, default_value_t = 4)]
    negatives: usize,
    /// Also hold out each user's second-latest rating as OUTPUT/validation.
    #[arg(long)]
    validation: bool,
    /// Give every row a `history` feature: the user's N ratings before the row's positive,
    /// oldest first (only the past, also for test and validation rows). 0: no history.
    #[arg(long, default_value_t = 0)]
    history: usize,
    /// Seed for sampling and shuffling.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// A table: NAME=URL (a CSV file with a header, a Parquet file, a directory or a quoted
    /// glob of them). Repeat for more tables.
    #[arg(long = "table", value_name = "NAME=URL", required = true)]
    tables: Vec<String>,
    /// File with the SQL: statements separated by ';', the last one a query.
    #[arg(long)]
    query: String,
    /// Output dataset directory.
    #[arg(long)]
    output: String,
    /// Write OUTPUT/<value> per distinct value of this (text) column, dropping it.
    #[arg(long)]
    split_by: Option<String>,
    /// DataFusion partitions [default: eight per core].
    #[arg(long, default_value_t = 0)]
    partitions: usize,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(cmd: PreprocessCommand) -> Result<()> {
    let storage = Storage::new()?;
    match cmd {
        PreprocessCommand::Clickstream(a) => clickstream(&storage, a),
        PreprocessCommand::Movielens(a) => movielens(&storage, a),
    }
}

fn read_script(storage: &Storage, url: &str) -> Result<String> {
    let bytes = storage.open(url)?.read()?;
    String::from_utf8(bytes.to_vec()).with_context(|| format!("{url}: SQL file is not UTF-8"))
}

fn clickstream(storage: &Storage, a: ClickstreamArgs) -> Result<()> {
    let (sql, sql_name) = match &a.sql {
        Some(url) => (read_script(storage, url)?, url.clone()),
        None => (
            sql::CLICKSTREAM_SQL.to_string(),
            "clickstream.sql (shipped)".to_string(),
        ),
    };
    let job = ClickstreamJob {
        input: a.input.clone(),
        output: OutputSpec {
            url: a.output.clone(),
            format: a.out.format()?,
            shards: a.out.shards,
        },
        negatives: a.negatives,
        seed: a.seed,
        sql,
        sql_name,
        partitions: a.partitions,
        memory_limit: a.memory_limit,
    };
    if a.memory_limit.is_some() && a.cluster.cluster.is_some() {
        bail!(
            "--memory-limit applies to the embedded engine; a cluster's executors have their own"
        );
    }
    let remote = a.cluster.session(storage, a.partitions, &a.output)?;
    let mut ticker = Ticker::new(progress_bar("writing samples:"));
    let s = match &remote {
        Some(session) => sql::clickstream_on(session, storage, &job, |n| ticker.add(n))?,
        None => sql::clickstream(storage, &job, |n| ticker.add(n))?,
    };
    ticker.done();
    if s.files == 0 {
        eprintln!("read {} events (the cluster listed the files)", s.events);
    } else {
        eprintln!("read {} events from {} file(s)", s.events, s.files);
    }
    for (ty, n) in &s.unknown_event_types {
        eprintln!("skipped {n} event(s) of unknown type '{ty}'");
    }
    for (split, n) in &s.rows {
        eprintln!(
            "wrote {n} samples to {}/{split}",
            a.output.trim_end_matches('/')
        );
    }
    for (key, n) in &s.entities {
        eprintln!(
            "wrote {n} {key} entity rows to {}/entities/{key}",
            a.output.trim_end_matches('/')
        );
    }
    Ok(())
}

fn movielens(storage: &Storage, a: MovieLensArgs) -> Result<()> {
    let cfg = MovieLensConfig {
        negatives: a.negatives,
        validation: a.validation,
        seed: a.seed,
        format: a.out.format()?,
        shards: a.out.shards.max(1),
        history: a.history,
        ..Default::default()
    };
    let s = movielens::preprocess(storage, &a.input, &a.output, &cfg)?;
    let out = a.output.trim_end_matches('/');
    eprintln!(
        "{} ratings, {} users, {} items",
        s.ratings, s.users, s.items
    );
    eprintln!(
        "train: {} positives, {} rows -> {out}/train",
        s.train_positives, s.train_rows
    );
    eprintln!(
        "test: {} users, {} rows -> {out}/test",
        s.test_users, s.test_rows
    );
    if a.validation {
        eprintln!("validation: {} rows -> {out}/validation", s.validation_rows);
    }
    Ok(())
}

pub fn run_sql(a: SqlArgs) -> Result<()> {
    let storage = Storage::new()?;
    let session = match a.cluster.session(&storage, a.partitions, &a.output)? {
        Some(s) => s,
        None => SqlSession::new(&storage, a.partitions, None)?,
    };
    for t in &a.tables {
        let Some((name, url)) = t.split_once('=') else {
            bail!("--table '{t}': expected NAME=URL");
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("--table '{t}': the name must be letters, digits and '_'");
        }
        session.register(name, url, None)?;
    }
    let script = read_script(&storage, &a.query)?;
    let rows = session.query(&script, &a.query)?;
    let out = OutputSpec {
        url: a.output.clone(),
        format: a.out.format()?,
        shards: a.out.shards.max(1),
    };
    let mut ticker = Ticker::new(progress_bar("writing rows:"));
    let counts = sql::write_results(&storage, rows, &out, a.split_by.as_deref(), |n| {
        ticker.add(n)
    })?;
    ticker.done();
    for (key, n) in counts {
        let dir = if key.is_empty() {
            a.output.clone()
        } else {
            format!("{}/{key}", a.output.trim_end_matches('/'))
        };
        eprintln!("wrote {n} rows to {dir}");
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on (clients use df://ADDR; executors --scheduler ADDR).
    #[arg(long, default_value = "127.0.0.1:50050")]
    bind: std::net::SocketAddr,
    /// Host name executors and clients should use for this machine [default: the bind host].
    #[arg(long)]
    external_host: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler: HOST:PORT.
    #[arg(long)]
    scheduler: String,
    /// Address to serve Arrow Flight on (shuffle reads and results).
    #[arg(long, default_value = "127.0.0.1:50051")]
    bind: std::net::SocketAddr,
    /// Port the scheduler pushes tasks to [default: the Flight port + 1].
    #[arg(long)]
    grpc_port: Option<u16>,
    /// Host name others should use for this machine [default: the bind host].
    #[arg(long)]
    external_host: Option<String>,
    /// Tasks run at once [default: one per core].
    #[arg(long, default_value_t = 0)]
    concurrency: usize,
    /// Directory for shuffle files and spills [default: a temporary directory].
    #[arg(long)]
    work_dir: Option<String>,
}

pub fn run_scheduler(a: SchedulerArgs) -> Result<()> {
    tusk_ballista::init_logging();
    let storage = Storage::new()?;
    tusk_ballista::server::run_scheduler(
        &storage,
        &tusk_ballista::server::SchedulerOptions {
            bind: a.bind,
            external_host: a.external_host,
        },
    )?;
    Ok(())
}

pub fn run_executor(a: ExecutorArgs) -> Result<()> {
    let Some((host, port)) = a.scheduler.rsplit_once(':') else {
        bail!("--scheduler '{}': expected HOST:PORT", a.scheduler);
    };
    let scheduler_port: u16 = port
        .parse()
        .with_context(|| format!("--scheduler '{}': '{port}' is not a port", a.scheduler))?;
    let grpc_port = match a.grpc_port {
        Some(p) => p,
        None => a
            .bind
            .port()
            .checked_add(1)
            .context("--bind port 65535 leaves no --grpc-port; give one")?,
    };
    tusk_ballista::init_logging();
    let storage = Storage::new()?;
    tusk_ballista::server::run_executor(
        &storage,
        &tusk_ballista::server::ExecutorOptions {
            scheduler_host: host.to_string(),
            scheduler_port,
            bind_host: a.bind.ip().to_string(),
            port: a.bind.port(),
            grpc_port,
            external_host: a.external_host,
            concurrency: a.concurrency,
            work_dir: a.work_dir,
        },
    )?;
    Ok(())
}
