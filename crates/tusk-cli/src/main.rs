//! `tusk`: deep learning across a Hadoop-style data stack, in one binary.
//!
//! This crate is glue: it parses arguments, calls the library crates, draws progress bars and
//! turns errors into one line on stderr and a non-zero exit code.

mod collective;
mod datagen;
mod demo;
mod export;
mod fs;
mod images;
mod launch;
mod preprocess;
mod ps;
mod records;
mod serve;
mod train;
mod tune;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tusk: storage, record formats, preprocessing, training and serving of recommendation
/// models over HDFS, object stores or a local directory. Every path argument is a URL: a plain
/// path or file:///… (local), hdfs://namenode:port/…, webhdfs://namenode:port/…, s3://bucket/…,
/// az://container/… or abfs://container@account.dfs.core.windows.net/…, or memory://….
#[derive(Debug, Parser)]
#[command(name = "tusk", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Files on any storage URL: ls, cp (between any two backends), cat, rm.
    #[command(subcommand)]
    Fs(fs::FsCommand),
    /// Inspect and convert TFRecord / Parquet record files and datasets.
    #[command(subcommand)]
    Records(records::RecordsCommand),
    /// Synthetic datasets: e-commerce clickstream logs with learnable structure.
    #[command(subcommand)]
    Datagen(datagen::DatagenCommand),
    /// SQL feature pipelines and dataset preparation: raw logs become balanced training shards.
    #[command(subcommand)]
    Preprocess(preprocess::PreprocessCommand),
    /// Run any SQL over tables in storage (CSV with a header, or Parquet) and write the result
    /// as a sharded dataset.
    Sql(preprocess::SqlArgs),
    /// A Ballista scheduler for `tusk sql --cluster` / `tusk preprocess clickstream
    /// --cluster`: plans queries over tusk storage and hands their stages to executors.
    #[command(name = "sql-scheduler")]
    SqlScheduler(preprocess::SchedulerArgs),
    /// A Ballista executor: runs query stages, reading tables where they live (local paths,
    /// hdfs://, webhdfs://, s3://, az://, abfs://) and serving shuffle data and results over
    /// Arrow Flight.
    #[command(name = "sql-executor")]
    SqlExecutor(preprocess::ExecutorArgs),
    /// The image map job: PNG/JPEG → normalised float tensors in a sharded TFRecord dataset.
    #[command(subcommand)]
    Images(images::ImagesCommand),
    /// Hadoop Streaming mappers (stdin lines in, TAB-separated lines out).
    #[command(subcommand)]
    Mapper(images::MapperCommand),
    /// Train a recommendation model (NeuMF, DLRM-style) from a TOML config.
    Train(train::TrainArgs),
    /// Start and supervise the workers of a data-parallel job on this node (torchrun-style).
    Launch(launch::LaunchArgs),
    /// Becomes a worker program under `tusk launch` (not for direct use).
    #[command(name = "launch-exec", hide = true)]
    LaunchExec(launch::ExecArgs),
    /// YARN applications: status and kill (submit with `tusk launch --yarn`).
    #[command(subcommand)]
    Yarn(launch::YarnCommand),
    /// Runs inside a YARN container started by `tusk launch --yarn` (not for direct use).
    #[command(name = "yarn-container", hide = true)]
    YarnContainer(launch::ContainerArgs),
    /// An embedding server: holds one shard of a job's embedding rows and applies the
    /// workers' row gradients (`tusk launch --servers` starts these for you).
    #[command(name = "embedding-server")]
    EmbeddingServer(ps::ServerArgs),
    /// All-reduce time and bus bandwidth between the ranks of a job (run it under `tusk
    /// launch`, `mpirun` or a scheduler), to check a network before training on it.
    #[command(name = "allreduce-perf")]
    AllreducePerf(collective::PerfArgs),
    /// Metrics (AUC, logloss, HR@K, NDCG@K) of a stored model on a dataset.
    Eval(train::EvalArgs),
    /// Batch scoring: rows in, the same rows with a `score` column out.
    Predict(train::PredictArgs),
    /// HTML page with the loss and metric curves of a training run.
    Report(train::ReportArgs),
    /// Serve stored model versions over HTTP: TF Serving REST (/v1) and the Open Inference
    /// Protocol (/v2), reloading new versions as they are committed.
    Serve(serve::ServeArgs),
    /// Hyper-parameter search over `tusk train` or any program: random or TPE sampling, ASHA
    /// or median pruning, parallel trials, a resumable study on any storage, the best model
    /// promoted to STUDY/best.
    Tune(tune::TuneArgs),
    /// Copy a model version's entity rows and embeddings into an online store (HBase).
    #[command(subcommand)]
    Export(export::ExportCommand),
    /// The whole pipeline end to end: generate logs → SQL features → train → evaluate
    /// against popularity → store → batch-score, with a summary table.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Fs(cmd) => fs::run(cmd),
        Command::Records(cmd) => records::run(cmd),
        Command::Datagen(cmd) => datagen::run(cmd),
        Command::Preprocess(cmd) => preprocess::run(cmd),
        Command::Sql(args) => preprocess::run_sql(args),
        Command::SqlScheduler(a) => preprocess::run_scheduler(a),
        Command::SqlExecutor(a) => preprocess::run_executor(a),
        Command::Images(cmd) => images::run_images(cmd),
        Command::Mapper(cmd) => images::run_mapper(cmd),
        Command::Train(a) => train::run_train(a),
        Command::Launch(a) => launch::run(a),
        Command::LaunchExec(a) => launch::run_exec(a),
        Command::Yarn(c) => launch::run_yarn_command(c),
        Command::YarnContainer(a) => launch::run_container(a),
        Command::AllreducePerf(a) => collective::run(a),
        Command::EmbeddingServer(a) => ps::run(a),
        Command::Eval(a) => train::run_eval(a),
        Command::Predict(a) => train::run_predict(a),
        Command::Report(a) => train::run_report(a),
        Command::Serve(a) => serve::run(a),
        Command::Export(c) => export::run(c),
        Command::Tune(a) => tune::run(a),
        Command::Demo(a) => demo::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if is_broken_pipe(&err) {
                // `tusk records cat … | head` is a normal way to stop reading.
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// The names of tusk's subcommands (a `tusk launch` worker command starting with one runs
/// tusk itself).
pub(crate) fn subcommand_names() -> Vec<String> {
    use clap::CommandFactory as _;
    Cli::command()
        .get_subcommands()
        .flat_map(|c| {
            std::iter::once(c.get_name().to_string()).chain(c.get_all_aliases().map(str::to_string))
        })
        .collect()
}

/// The error and its causes on one line, skipping causes whose text the message already holds.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
