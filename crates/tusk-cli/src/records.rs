//! `tusk records …`: cat, stats and convert.

use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tusk_records::dataset::{self, Format, Input, Output, SchemaInference};
use tusk_records::example;
use tusk_records::tfrecord::Compression;
use tusk_storage::Storage;

#[derive(Debug, Subcommand)]
pub enum RecordsCommand {
    /// Print every record as one JSON object per line, e.g.
    /// {"label":{"float":[1.0]},"user_id":{"int64":[42]}} (bytes values as base64).
    Cat(CatArgs),
    /// Read and parse every record (all CRCs checked); print the record count and, per
    /// feature, its type and value counts.
    Stats(StatsArgs),
    /// Convert between Parquet and TFRecord, or re-compress TFRecord. Format and compression
    /// come from the output's extension (.parquet, .tfrecord, .tfrecord.gz, .tfrecord.zz) or
    /// the flags; an output without an extension, or --shards, makes a sharded dataset
    /// directory with _manifest.json.
    Convert(ConvertArgs),
}

/// Compression of TFRecord files (TensorFlow's compression_type).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    /// No compression.
    None,
    /// GZIP (.gz).
    Gzip,
    /// ZLIB (.zz / .zlib).
    Zlib,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Compression {
        match c {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zlib => Compression::Zlib,
        }
    }
}

/// Output file format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// TFRecord of tf.train.Example.
    Tfrecord,
    /// Parquet.
    Parquet,
}

#[derive(Debug, Args)]
pub struct InputArgs {
    /// A file, a glob (quote it) or a dataset directory with _manifest.json.
    input: String,
    /// Compression of TFRecord input [default: from the file extension].
    #[arg(long, value_enum)]
    compression: Option<CompressionArg>,
}

impl InputArgs {
    fn open(&self, storage: &Storage) -> Result<Input> {
        Ok(Input::open(
            storage,
            &self.input,
            self.compression.map(Into::into),
        )?)
    }
}

#[derive(Debug, Args)]
pub struct CatArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Stop after this many records.
    #[arg(long)]
    limit: Option<u64>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Only check the framing and CRCs; do not parse the Examples.
    #[arg(long)]
    framing_only: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Threads parsing Examples while one reads [default: one per core].
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Input: a file, a quoted glob or a dataset directory.
    input: String,
    /// Output: a file (format from its extension) or a dataset directory.
    output: String,
    /// Write a sharded dataset of this many files, balanced by record count.
    #[arg(long)]
    shards: Option<usize>,
    /// Output format [default: from the output's extension; tfrecord for directories].
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Output TFRecord compression [default: from the output's extension; none for directories].
    #[arg(long, value_enum)]
    compression: Option<CompressionArg>,
    /// Compression of TFRecord input [default: from the file extension].
    #[arg(long, value_enum)]
    input_compression: Option<CompressionArg>,
}

pub fn run(cmd: RecordsCommand) -> Result<()> {
    let storage = Storage::new()?;
    match cmd {
        RecordsCommand::Cat(a) => cat(&storage, a),
        RecordsCommand::Stats(a) => stats(&storage, a),
        RecordsCommand::Convert(a) => convert(&storage, a),
    }
}

fn cat(storage: &Storage, a: CatArgs) -> Result<()> {
    let input = a.input.open(storage)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut line = String::new();
    let mut n = 0u64;
    let mut write_err: Option<std::io::Error> = None;
    input.for_each_example(|ex, _| {
        if a.limit.is_some_and(|l| n >= l) {
            return Ok(false);
        }
        line.clear();
        example::to_json(&ex, &mut line);
        line.push('\n');
        if let Err(e) = out.write_all(line.as_bytes()) {
            write_err = Some(e);
            return Ok(false);
        }
        n += 1;
        Ok(true)
    })?;
    if let Some(e) = write_err {
        return Err(e).context("writing to stdout");
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}

/// `writeln!` into a `String` (cannot fail).
macro_rules! outln {
    ($out:expr) => {
        $out.push('\n')
    };
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Write to stdout, returning (not panicking on) errors such as a closed pipe.
fn print_stdout(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to stdout")
}

pub(crate) fn progress_bar(what: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} {{human_pos}} records ({{per_sec}}) [{{elapsed_precise}}]"
        ))
        .expect("valid template"),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Counts records into a progress bar without touching it on every record.
pub(crate) struct Ticker {
    pb: ProgressBar,
    pending: u64,
}

impl Ticker {
    pub(crate) fn new(pb: ProgressBar) -> Self {
        Ticker { pb, pending: 0 }
    }
    #[inline]
    pub(crate) fn tick(&mut self) {
        self.pending += 1;
        if self.pending == 4096 {
            self.pb.inc(self.pending);
            self.pending = 0;
        }
    }
    /// Count `n` records at once.
    pub(crate) fn add(&mut self, n: u64) {
        self.pb.inc(n);
    }
    pub(crate) fn done(self) {
        self.pb.inc(self.pending);
        self.pb.finish_and_clear();
    }
}

fn stats(storage: &Storage, a: StatsArgs) -> Result<()> {
    let input = a.input.open(storage)?;
    let started = Instant::now();
    let mut ticker = Ticker::new(progress_bar("reading"));
    let mut inf = SchemaInference::default();
    let (records, bytes) = if a.framing_only {
        let (mut n, mut b) = (0u64, 0u64);
        input.for_each(|rec, _| {
            n += 1;
            b += rec.len() as u64;
            ticker.tick();
            Ok(())
        })?;
        (n, b)
    } else {
        let threads = a.threads.unwrap_or_else(dataset::default_threads);
        inf = input.scan(threads, |_| ticker.tick())?;
        (inf.records, inf.bytes)
    };
    ticker.done();
    let secs = started.elapsed().as_secs_f64();
    let mut out = String::new();
    if a.json {
        let features: serde_json::Map<String, serde_json::Value> = inf
            .features
            .iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    serde_json::json!({
                        "type": type_name(s),
                        "records": s.records,
                        "values": s.values,
                        "min_values": s.min_values,
                        "max_values": s.max_values,
                    }),
                )
            })
            .collect();
        let v = serde_json::json!({
            "files": input.files.len(),
            "records": records,
            "payload_bytes": bytes,
            "seconds": secs,
            "features": features,
        });
        return print_stdout(&format!("{v}\n"));
    }
    outln!(out, "files      {}", input.files.len());
    outln!(out, "records    {records}");
    outln!(out, "payload    {bytes} bytes");
    outln!(
        out,
        "read in    {secs:.3} s ({:.0} records/s, {:.1} MB/s)",
        records as f64 / secs.max(1e-9),
        bytes as f64 / 1e6 / secs.max(1e-9)
    );
    if a.framing_only {
        outln!(out, "(framing and CRCs checked; Examples not parsed)");
        return print_stdout(&out);
    }
    if inf.features.is_empty() {
        return print_stdout(&out);
    }
    let width = inf
        .features
        .keys()
        .map(|k| k.len())
        .max()
        .unwrap_or(7)
        .max(7);
    outln!(out);
    outln!(
        out,
        "{:<width$}  {:<5}  {:>12}  {:>14}  {:>5}  {:>5}  {:>8}",
        "feature",
        "type",
        "records",
        "values",
        "min",
        "max",
        "mean"
    );
    for (name, s) in &inf.features {
        outln!(
            out,
            "{:<width$}  {:<5}  {:>12}  {:>14}  {:>5}  {:>5}  {:>8.2}",
            name,
            type_name(s),
            s.records,
            s.values,
            s.min_values,
            s.max_values,
            s.values as f64 / s.records.max(1) as f64
        );
    }
    print_stdout(&out)
}

/// A feature's type, or `mixed` when records disagree.
fn type_name(s: &tusk_records::dataset::FeatureStats) -> &'static str {
    if s.conflict.is_some() {
        "mixed"
    } else {
        s.dtype.as_str()
    }
}

fn convert(storage: &Storage, a: ConvertArgs) -> Result<()> {
    let input = Input::open(storage, &a.input, a.input_compression.map(Into::into))?;
    let out = storage.open(&a.output)?;
    let name = out.file_name().to_string();
    let looks_like_file = Format::is_record_file_name(&name) && !a.output.ends_with('/');
    let named = looks_like_file.then(|| Format::from_name(&name));
    let format = match (a.format, a.compression, named) {
        (Some(FormatArg::Parquet), Some(_), _) | (None, Some(_), Some(Format::Parquet)) => {
            bail!(
                "--compression applies to TFRecord output, not Parquet ({})",
                a.output
            )
        }
        (Some(FormatArg::Parquet), None, _) => Format::Parquet,
        (Some(FormatArg::Tfrecord), c, named) => Format::TfRecord(match (c, named) {
            (Some(c), _) => c.into(),
            (None, Some(Format::TfRecord(c))) => c,
            _ => Compression::None,
        }),
        (None, Some(c), _) => Format::TfRecord(c.into()),
        (None, None, Some(f)) => f,
        (None, None, None) => Format::TfRecord(Compression::None),
    };
    let output = match a.shards {
        Some(0) => bail!("--shards must be at least 1"),
        Some(n) => Output::Dataset(out, format, n),
        None if looks_like_file => Output::File(out, format),
        None => Output::Dataset(out, format, 1),
    };
    let mut ticker = Ticker::new(progress_bar("converting"));
    let n = dataset::convert(&input, &output, |_| ticker.tick())?;
    ticker.done();
    let (where_, what) = match &output {
        Output::File(l, _) => (l.url(), "file".to_string()),
        Output::Dataset(l, _, s) => (l.url(), format!("dataset of {s} shard(s)")),
    };
    eprintln!("wrote {n} records to {where_} ({what})");
    Ok(())
}
