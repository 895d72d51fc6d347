//! `tusk train`, `tusk eval`, `tusk predict`, `tusk report`.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use clap::Args;
use std::io::Write as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::Duration;

use tusk_collective::{Communicator, Flags, World, tcp};
use tusk_storage::Storage;
use tusk_train::store::EpochRecord;
use tusk_train::{Config, Observer, Scorer, Summary, TrainOptions};

/// Train a model from a TOML config; every epoch commits a model version.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The TOML config (data, features, model, train, eval); optional with --resume.
    config: Option<String>,
    /// Model URL: versions are committed under MODEL/versions/NNNNNN/, TensorBoard events
    /// under MODEL/events/.
    #[arg(long)]
    model: String,
    /// Continue from the newest committed version (same result as an uninterrupted run).
    #[arg(long)]
    resume: bool,
    /// Override any config key, e.g. --set train.epochs=5 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Override train.epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Override train.batch_size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Override train.learning_rate.
    #[arg(long)]
    learning_rate: Option<f32>,
    /// Override train.seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Print one JSON object with the summary on stdout at the end.
    #[arg(long)]
    json: bool,
    /// Write a Chrome/Perfetto trace (open it in ui.perfetto.dev or chrome://tracing) of what
    /// every rank did when: reading batches, forward/backward, all-reduce, optimiser steps,
    /// checkpoints, evaluation. Any storage URL; written by rank 0 when training ends.
    #[arg(long, value_name = "FILE")]
    timeline: Option<String>,
    /// Data-parallel transport: `tcp` (rendezvous at rank 0, authenticated by
    /// TUSK_JOB_SECRET) or `mpi` (run under `mpirun`; needs a tusk built with `--features mpi`).
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "mpi"], help_heading = "Data-parallel")]
    collective: String,
    /// Data-parallel: this worker's rank. Without --rank/--world-size they come from the
    /// scheduler's environment (torchrun/`tusk launch`, OpenMPI, Horovod, Slurm, TF_CONFIG,
    /// Kubernetes indexed Jobs); every rank needs TUSK_JOB_SECRET.
    #[arg(long, help_heading = "Data-parallel")]
    rank: Option<usize>,
    /// Data-parallel: number of workers.
    #[arg(long, help_heading = "Data-parallel")]
    world_size: Option<usize>,
    /// Data-parallel: host of rank 0 (else MASTER_ADDR).
    #[arg(long, help_heading = "Data-parallel")]
    master_addr: Option<String>,
    /// Data-parallel: port rank 0 listens on (else MASTER_PORT, else 29500).
    #[arg(long, help_heading = "Data-parallel")]
    master_port: Option<u16>,
    /// Data-parallel: seconds to wait for every rank to arrive.
    #[arg(
        long,
        default_value_t = 300,
        value_name = "SECS",
        help_heading = "Data-parallel"
    )]
    rendezvous_timeout: u64,
    /// Embedding servers, `host:port` in shard order, comma-separated (default:
    /// TUSK_EMBEDDING_SERVERS, set by `tusk launch --servers`, or TF_CONFIG's `ps` tasks);
    /// used with `train.embedding = "sync"` or `"async"`.
    #[arg(long, value_name = "ADDRS", help_heading = "Data-parallel")]
    embedding_servers: Option<String>,
    /// Data-parallel: seconds a collective waits for a peer that sends nothing.
    #[arg(
        long,
        default_value_t = 60,
        value_name = "SECS",
        help_heading = "Data-parallel"
    )]
    collective_timeout: u64,
}

/// Metrics of a stored model on a dataset.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model URL (as given to `tusk train --model`).
    #[arg(long)]
    model: String,
    /// Rows to evaluate (dataset, file, glob or CSV) with the model's label column.
    #[arg(long)]
    data: String,
    /// Model version to load (default: the newest committed one).
    #[arg(long = "model-version", value_name = "N")]
    model_version: Option<u64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Score rows with a stored model: the same rows come back with a `score` column.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Model URL.
    #[arg(long)]
    model: String,
    /// Rows carrying the model's feature columns: CSV with a header, TFRecord, Parquet,
    /// a dataset directory or a glob.
    #[arg(long)]
    input: String,
    /// Output file: .csv, or .tfrecord (optionally .gz).
    #[arg(long)]
    output: String,
    /// Model version to load (default: the newest committed one).
    #[arg(long = "model-version", value_name = "N")]
    model_version: Option<u64>,
    /// Entity features from HBase (hbase://HOST:PORT/TABLE, HOST:PORT being the REST gateway):
    /// the rows of the entities the input names are read from that table (as `tusk export
    /// hbase` lays it out) over the version's own tables.
    #[arg(long, value_name = "hbase://HOST:PORT/TABLE")]
    features: Option<String>,
}

/// HTML page with the loss and metric curves of a training run.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The model URL of the run (its events/ directory is read), a directory of TensorBoard
    /// event files, or a `tusk tune` study (best-so-far against trials, each parameter
    /// against the metric).
    run_dir: String,
    /// Where to write the page (default: RUN_DIR/report.html).
    #[arg(long)]
    output: Option<String>,
}

struct Bars {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Observer for Bars {
    fn message(&mut self, text: &str) {
        if !self.quiet {
            match &self.bar {
                Some(b) => b.println(text),
                None => eprintln!("{text}"),
            }
        }
    }

    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: Option<u64>) {
        if self.quiet || !std::io::stderr().is_terminal() {
            return;
        }
        let pb = ProgressBar::with_draw_target(steps, ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(&format!(
                "epoch {epoch}/{epochs} {{bar:30}} {{pos}}/{{len}} steps {{msg}} [{{elapsed_precise}}<{{eta}}]"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        self.bar = Some(pb);
    }

    fn step(&mut self, step: u64, loss: f64, sps: f64) {
        if let Some(b) = &self.bar
            && step.is_multiple_of(20)
        {
            b.set_position(step);
            b.set_message(format!("loss {loss:.4} · {sps:.0} samples/s"));
        }
    }

    fn epoch_end(&mut self, r: &EpochRecord) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if std::env::var_os("TUSK_TUNE_REPORT").is_some_and(|v| v == "1") {
            // `tusk tune`'s protocol: the epoch's validation metrics as NAME=VALUE lines.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "train_loss={}", r.train_loss);
            if let Some(m) = r.metrics.get("validation") {
                for (k, v) in m.iter().filter(|(k, _)| *k != "rows" && *k != "groups") {
                    let _ = writeln!(out, "{k}={v}");
                }
            }
            let _ = out.flush();
        }
        if self.quiet {
            return;
        }
        eprintln!("{}", epoch_line(r));
    }
}

pub(crate) fn epoch_line(r: &EpochRecord) -> String {
    let mut line = format!(
        "epoch {:>3}  loss {:.4}  {:>8.0} samples/s  {:>6.1}s",
        r.epoch, r.train_loss, r.samples_per_sec, r.seconds
    );
    let mut sets: Vec<_> = r.metrics.iter().collect();
    sets.sort_by(|a, b| b.0.cmp(a.0));
    for (set, m) in sets {
        let mut keys: Vec<_> = m
            .iter()
            .filter(|(k, _)| *k != "rows" && *k != "groups")
            .collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        line.push_str(&format!("  | {set}"));
        for (k, v) in keys {
            line.push_str(&format!(" {k} {v:.4}"));
        }
    }
    line
}

/// Read and parse a config from any storage URL.
pub(crate) fn load_config(storage: &Storage, url: &str, set: &[String]) -> Result<Config> {
    let text = storage
        .open(url)?
        .read()
        .with_context(|| format!("reading config {url}"))?;
    let text = std::str::from_utf8(&text).with_context(|| format!("{url} is not UTF-8 text"))?;
    Ok(Config::parse(url, text, set)?)
}

pub(crate) fn run_training(
    storage: &Storage,
    config: Option<Config>,
    model: &str,
    resume: bool,
    quiet: bool,
) -> Result<Summary> {
    let mut obs = Bars { bar: None, quiet };
    let summary = tusk_train::train(
        storage,
        config,
        &TrainOptions {
            model_url: model.to_string(),
            resume,
            stop_after_steps: None,
            timeline: None,
            fusion_threshold: None,
            bucket_bytes: None,
            embedding_servers: None,
        },
        &mut obs,
    )?;
    Ok(summary)
}

/// The MPI rank as `mpirun` announces it (before MPI is initialised).
fn mpi_rank() -> usize {
    ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"]
        .iter()
        .find_map(|k| std::env::var(k).ok()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(feature = "mpi")]
fn train_mpi(storage: &Storage, config: Option<Config>, opts: &TrainOptions) -> Result<Summary> {
    let mut obs = Bars {
        bar: None,
        quiet: mpi_rank() != 0,
    };
    let mut connect = |fingerprint| -> tusk_train::Result<Box<dyn Communicator>> {
        let mut c = tusk_collective::mpi::init()?;
        tusk_collective::check_fingerprint(&mut c, &fingerprint)?;
        if c.rank() == 0 {
            eprintln!("rank 0 of {} (MPI)", c.world_size());
        }
        Ok(Box::new(c))
    };
    Ok(tusk_train::train_with(
        storage,
        config,
        opts,
        &mut obs,
        &mut connect,
    )?)
}

#[cfg(not(feature = "mpi"))]
fn train_mpi(_: &Storage, _: Option<Config>, _: &TrainOptions) -> Result<Summary> {
    anyhow::bail!(crate::collective::NO_MPI)
}

/// This process's place in a data-parallel job, if it is one (flags, then the environment).
fn resolve_world(a: &TrainArgs) -> Result<Option<World>> {
    let flags = Flags {
        rank: a.rank,
        world_size: a.world_size,
        master_addr: a.master_addr.clone(),
        master_port: a.master_port,
    };
    let world = tusk_collective::world::resolve(&flags, &|k| std::env::var(k).ok())?;
    Ok(world.filter(|w| w.world_size > 1))
}

pub fn run_train(a: TrainArgs) -> Result<()> {
    let storage = Storage::new()?;
    let mut set = a.set.clone();
    if let Some(e) = a.epochs {
        set.push(format!("train.epochs={e}"));
    }
    if let Some(b) = a.batch_size {
        set.push(format!("train.batch_size={b}"));
    }
    if let Some(l) = a.learning_rate {
        set.push(format!("train.learning_rate={l}"));
    }
    if let Some(s) = a.seed {
        set.push(format!("train.seed={s}"));
    }
    let config = match &a.config {
        Some(c) => Some(load_config(&storage, c, &set)?),
        None if a.resume => None,
        None => anyhow::bail!("a CONFIG file is needed (only --resume can do without one)"),
    };
    if a.resume && a.config.is_some() {
        eprintln!(
            "note: --resume continues with the config stored in the model; the CONFIG argument is used only when no version exists yet"
        );
    }
    let world = if a.collective == "mpi" {
        None
    } else {
        resolve_world(&a)?
    };
    let opts = TrainOptions {
        model_url: a.model.clone(),
        resume: a.resume,
        stop_after_steps: None,
        timeline: a.timeline.clone(),
        fusion_threshold: env_bytes("TUSK_FUSION_THRESHOLD")?,
        bucket_bytes: env_bytes("TUSK_BUCKET_BYTES")?,
        embedding_servers: {
            let addrs = crate::ps::server_addrs(a.embedding_servers.as_deref())?;
            (!addrs.is_empty()).then(|| tusk_train::EmbeddingServers {
                addrs,
                secret: std::env::var("TUSK_JOB_SECRET")
                    .unwrap_or_default()
                    .into_bytes(),
                connect_timeout: Duration::from_secs(a.rendezvous_timeout),
                timeout: Duration::from_secs(a.collective_timeout.max(1)),
            })
        },
    };
    let s = match &world {
        None if a.collective == "mpi" => train_mpi(&storage, config, &opts)?,
        None => {
            let mut obs = Bars {
                bar: None,
                quiet: false,
            };
            tusk_train::train_with(&storage, config, &opts, &mut obs, &mut |_| {
                Ok(Box::new(tusk_collective::Single))
            })?
        }
        Some(w) => {
            tusk_launch::exit_with_launcher();
            let tcp_opts = crate::collective::tcp_options(
                Duration::from_secs(a.rendezvous_timeout),
                Duration::from_secs(a.collective_timeout),
            )?;
            if w.rank == 0 {
                eprintln!(
                    "rank 0 of {} ({} from {}): listening on port {}",
                    w.world_size, w.master_addr, w.source, w.master_port
                );
            }
            let mut obs = Bars {
                bar: None,
                quiet: w.rank != 0,
            };
            let mut connect = |fingerprint| -> tusk_train::Result<Box<dyn Communicator>> {
                let mut o = tcp_opts.clone();
                o.fingerprint = fingerprint;
                Ok(Box::new(tcp::connect(w, &o)?))
            };
            tusk_train::train_with(&storage, config, &opts, &mut obs, &mut connect)?
        }
    };
    if world.as_ref().is_some_and(|w| w.rank != 0) || (a.collective == "mpi" && mpi_rank() != 0) {
        return Ok(());
    }
    if a.json {
        // Per-epoch timings are not part of the stored history (model.json stays identical
        // between runs that compute the same tensors), but belong in this report.
        let history: Vec<serde_json::Value> = s
            .history
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["seconds"] = r.seconds.into();
                v["samples_per_sec"] = r.samples_per_sec.into();
                v
            })
            .collect();
        let out = serde_json::json!({
            "model": s.model_url,
            "version": s.version,
            "chosen_epoch": s.chosen_epoch,
            "samples_per_sec": s.samples_per_sec,
            "steps": s.steps,
            "history": history,
            "allreduce": s.allreduce.map(|a| serde_json::json!({
                "steps": a.steps,
                "seconds": a.seconds,
                "exposed_seconds": a.exposed_seconds,
                "hidden": a.hidden(),
            })),
        });
        println!("{out}");
    } else {
        eprintln!(
            "model {} version {:06} (epoch {} kept) · {:.0} samples/s",
            s.model_url, s.version, s.chosen_epoch, s.samples_per_sec
        );
        if let Some(a) = s.allreduce {
            eprintln!(
                "dense all-reduce {:.2} ms/step, {:.0}% of it hidden behind the backward pass",
                a.seconds * 1e3 / a.steps.max(1) as f64,
                a.hidden() * 100.0
            );
        }
    }
    Ok(())
}

/// A byte count from the environment variable `name`, if set.
fn env_bytes(name: &str) -> Result<Option<usize>> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map(Some).map_err(|_| {
            anyhow::anyhow!("{name}={v:?}: expected a number of bytes (a non-negative integer)")
        }),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => anyhow::bail!("{name}: {e}"),
    }
}

pub fn run_eval(a: EvalArgs) -> Result<()> {
    let storage = Storage::new()?;
    let scorer = Scorer::load(&storage, &a.model, a.model_version)?;
    let source = tusk_data::Source::open(&storage, &a.data)?;
    let m = scorer.evaluate(&source)?;
    if a.json {
        println!("{}", serde_json::to_string(&m)?);
    } else {
        println!(
            "model {} version {:06} on {}",
            a.model, scorer.version, a.data
        );
        for (k, v) in &m {
            if k == "rows" || k == "groups" {
                println!("  {k:<10} {v:.0}");
            } else {
                println!("  {k:<10} {v:.4}");
            }
        }
    }
    Ok(())
}

pub fn run_predict(a: PredictArgs) -> Result<()> {
    let storage = Storage::new()?;
    let mut scorer = Scorer::load(&storage, &a.model, a.model_version)?;
    if let Some(url) = &a.features {
        crate::export::overlay_features(&storage, &mut scorer, &a.input, url)?;
    }
    let pb = crate::records::progress_bar("scoring");
    let n = tusk_train::predict::predict(&storage, &scorer, &a.input, &a.output, |r| {
        pb.set_position(r)
    })?;
    pb.finish_and_clear();
    if !n.missing_columns.is_empty() {
        eprintln!(
            "note: the input lacks the model's column(s) {}: scored as missing values",
            n.missing_columns.join(", ")
        );
    }
    if let (rows, Some((key, id))) = &n.unknown_entities {
        eprintln!(
            "note: {rows} row(s) name an id the model's entity tables do not know (first: \
             {key} {id}): its feature columns were scored as missing values"
        );
    }
    eprintln!("scored {} rows → {}", n.rows, a.output);
    Ok(())
}

pub fn run_report(a: ReportArgs) -> Result<()> {
    let storage = Storage::new()?;
    let root = storage.open(&a.run_dir)?;
    if root.join("study.json").head().is_ok() {
        let html = crate::tune::study_report(&storage, &a.run_dir)?;
        let out = match &a.output {
            Some(o) => storage.open(o)?,
            None => root.join("report.html"),
        };
        out.write(html.into_bytes())?;
        eprintln!("wrote {}", out.url());
        return Ok(());
    }
    let events = root.join("events");
    let dir = if events.list().map(|l| !l.is_empty()).unwrap_or(false) {
        events
    } else {
        root.clone()
    };
    let html = tusk_board::write_report(&dir, &a.run_dir)?;
    let out = match &a.output {
        Some(o) => storage.open(o)?,
        None => root.join("report.html"),
    };
    out.write(html.into_bytes())?;
    eprintln!("wrote {}", out.url());
    Ok(())
}
