//! `tusk tune`: hyper-parameter search over `tusk train` or any program (see `tusk_tune`).

use std::ffi::OsString;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use tusk_storage::Storage;
use tusk_train::ModelStore;
use tusk_tune::pruner::{Pruner, PrunerKind};
use tusk_tune::run::{self, Launcher};
use tusk_tune::sampler::{Sampler, SamplerKind};
use tusk_tune::space::{Params, Space, assignments};
use tusk_tune::study::{Mode, Spec, Study};

/// Arguments of `tusk tune`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TuneArgs {
    #[command(subcommand)]
    sub: Option<TuneCommand>,
    /// The search space: a TOML file, one config key a line, e.g.
    /// `"train.learning_rate" = { loguniform = [1e-4, 1e-2] }`; distributions `uniform`,
    /// `loguniform`, `int` (inclusive) and `choice` (any TOML values).
    #[arg(required = true)]
    space: Option<String>,
    /// Where the study lives (any storage URL): its journal, the trials' models, the best one.
    #[arg(long, required = true)]
    study: Option<String>,
    /// Trials in the study (finished ones included: raise it to extend a finished study).
    #[arg(long, default_value_t = 20)]
    trials: u64,
    /// Trials at once in this process [default: cores / 2 per `tusk train` worker, cores for
    /// other programs, at least 1].
    #[arg(long)]
    parallel: Option<usize>,
    /// random or tpe.
    #[arg(long, default_value = "tpe")]
    sampler: String,
    /// none, asha (successive halving: rungs at steps 1, 3, 9, …, a third go on) or median
    /// (stop a trial worse than the median of the others at the same step).
    #[arg(long, default_value = "none")]
    pruner: String,
    /// The metric a trial reports [default for `train`: the config's eval.monitor].
    #[arg(long)]
    metric: Option<String>,
    /// max or min [default: min for names with loss or error in them, else max].
    #[arg(long)]
    mode: Option<String>,
    /// The sampler's seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run each `train` trial as a data-parallel `tusk launch` job with these options (e.g.
    /// "-n 2").
    #[arg(long, value_name = "OPTIONS", allow_hyphen_values = true)]
    launch: Option<String>,
    /// Run each trial as a YARN application of `tusk launch --yarn RM` (with the --launch
    /// options, e.g. "-n 2 --staging hdfs://…"); its rank 0's output is followed for the
    /// metric, and a pruned trial's application is killed. The study, and so each trial's
    /// model, must be on storage the NodeManagers reach (HDFS). --parallel defaults to 1 here:
    /// tune does not see the queue's free capacity.
    #[arg(long, value_name = "RM")]
    yarn: Option<String>,
    /// The trial command: `train CONFIG [--set …]` (tusk's own; each trial gets its own
    /// `--model STUDY/models/N`) or any program, which gets `--set KEY=VALUE` arguments and
    /// prints `METRIC=VALUE` lines on stdout, one per step.
    #[arg(last = true)]
    command: Vec<OsString>,
}

/// `tusk tune` subcommands.
#[derive(Debug, Subcommand)]
pub enum TuneCommand {
    /// A study's trials: number, state, best metric, steps, parameters.
    Status {
        /// The study URL.
        study: String,
    },
}

struct TuneLauncher {
    exe: std::path::PathBuf,
    command: Vec<OsString>,
    train: bool,
    launch: Vec<String>,
    yarn: Option<String>,
    study: Arc<Study>,
    storage: Storage,
}

impl Launcher for TuneLauncher {
    fn command(&self, n: u64, params: &Params, _attempt: u32, resume: bool) -> Command {
        let mut c = Command::new(&self.exe);
        c.env(tusk_launch::PARENT_VAR, std::process::id().to_string());
        let sets = assignments(params)
            .into_iter()
            .flat_map(|a| ["--set".to_string(), a]);
        // Every trial starts through `tusk launch-exec` (the kernel stops it if tune dies);
        // as a `tusk launch` job when asked: on YARN in the foreground, following rank 0's
        // output, with the pruner's SIGTERM killing the application.
        c.args(["launch-exec", "--"]);
        if let Some(rm) = &self.yarn {
            c.arg(&self.exe).arg("launch");
            c.args(["--yarn", rm, "--follow", "rank-0"]);
            c.args(["--env", "TUSK_TUNE_REPORT=1"]);
            c.args(&self.launch).arg("--");
        } else if self.train && !self.launch.is_empty() {
            c.arg(&self.exe).arg("launch");
            c.args(&self.launch).arg("--");
        } else if self.train {
            c.arg(&self.exe);
        }
        c.args(&self.command).args(sets);
        if self.train {
            let model = self.study.model_url(n);
            c.args(["--model", &model]);
            let has_versions = ModelStore::open(&self.storage, &model)
                .and_then(|s| s.versions())
                .is_ok_and(|v| !v.is_empty());
            if resume && has_versions {
                c.arg("--resume");
            }
            c.env("TUSK_TUNE_REPORT", "1");
        }
        c
    }
}

pub fn run(a: TuneArgs) -> Result<()> {
    if let Some(TuneCommand::Status { study }) = a.sub {
        return status(&study);
    }
    let (Some(space_file), Some(study_url)) = (a.space, a.study) else {
        bail!("give SPACE.toml and --study URL");
    };
    let text = std::fs::read_to_string(&space_file).with_context(|| space_file.clone())?;
    let space = Space::parse(&text, &space_file).map_err(anyhow::Error::msg)?;
    if a.command.is_empty() {
        bail!("give the trial command after `--`: `-- train CONFIG …` or `-- PROGRAM ARGS…`");
    }
    let train = a.command[0] == "train";
    if !train {
        let program = a.command[0].to_string_lossy();
        if tusk_launch::find_program(&program).is_none() {
            bail!("{program}: no such program (not a path to an executable, nor found on PATH)");
        }
    }
    let words: Vec<String> = a
        .command
        .iter()
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    let mut metric = a.metric.clone();
    if train {
        if words
            .iter()
            .any(|w| w == "--model" || w.starts_with("--model="))
        {
            bail!("tusk tune gives each trial its own --model (STUDY/models/N): leave it out");
        }
        let Some(config) = words.get(1) else {
            bail!("`-- train CONFIG`: the training config is missing");
        };
        // Every key of the space must be a key of the config: check with a sample now, not
        // in every trial.
        let mut sets: Vec<String> = Vec::new();
        let mut it = words[2..].iter();
        while let Some(w) = it.next() {
            if w == "--set" {
                if let Some(v) = it.next() {
                    sets.push(v.clone());
                }
            } else if let Some(v) = w.strip_prefix("--set=") {
                sets.push(v.to_string());
            }
        }
        let probe = Sampler::new(SamplerKind::Random, a.seed).sample(&space, &[], 0);
        sets.extend(assignments(&probe));
        let text = std::fs::read_to_string(config).with_context(|| format!("reading {config}"))?;
        let cfg = tusk_train::config::Config::parse(config, &text, &sets)
            .map_err(|e| anyhow::anyhow!("the space does not fit {config}: {e}"))?;
        if metric.is_none() {
            metric = Some(cfg.eval.monitor.clone());
        }
    }
    let Some(metric) = metric else {
        bail!("--metric NAME: which `NAME=VALUE` line of the trials' output to optimise");
    };
    let mode = match a.mode.as_deref() {
        Some("max") => Mode::Max,
        Some("min") => Mode::Min,
        Some(m) => bail!("--mode {m}: expected max or min"),
        None if metric.contains("loss") || metric.contains("error") => Mode::Min,
        None => Mode::Max,
    };
    let sampler_kind: SamplerKind = a
        .sampler
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--sampler {e}"))?;
    let pruner_kind: PrunerKind = a
        .pruner
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--pruner {e}"))?;
    let launch: Vec<String> = a
        .launch
        .as_deref()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if !launch.is_empty() && !train && a.yarn.is_none() {
        bail!(
            "--launch runs `train` trials as tusk launch jobs (or, with --yarn, any trial); other programs run as they are"
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = launch_workers(&launch);
    let parallel = a.parallel.unwrap_or(if a.yarn.is_some() {
        1
    } else if train {
        (cores / (2 * workers)).max(1)
    } else {
        cores
    });
    if parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    let storage = Storage::new()?;
    let spec = Spec {
        space: space.to_json(),
        metric: metric.clone(),
        mode,
        sampler: a.sampler.clone(),
        pruner: a.pruner.clone(),
        seed: a.seed,
        command: words.clone(),
    };
    let study = Arc::new(Study::open_or_create(&storage, &study_url, spec)?);
    eprintln!(
        "study {}: {} trials, {parallel} at once, {} sampler, {} pruner, {} {metric}",
        study.url(),
        a.trials,
        a.sampler,
        a.pruner,
        match mode {
            Mode::Max => "maximising",
            Mode::Min => "minimising",
        }
    );
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let launcher = TuneLauncher {
        exe: std::env::current_exe().context("finding the tusk binary")?,
        command: a.command.clone(),
        train,
        launch,
        yarn: a.yarn.clone(),
        study: study.clone(),
        storage: storage.clone(),
    };
    let opts = run::Options {
        trials: a.trials,
        parallel,
        space,
        sampler: Sampler::new(sampler_kind, a.seed),
        pruner: Pruner::new(pruner_kind),
        stop,
    };
    let summary = run::run(&study, &opts, &launcher, |l| eprintln!("{l}"))?;
    if summary.stopped {
        bail!("stopped: the unfinished trials will be resumed by running the same command again");
    }
    print_status(&study)?;
    let trials = study.trials()?;
    if !trials
        .values()
        .any(|t| t.outcome.as_ref().is_some_and(|o| o.state == "complete"))
    {
        let first = trials
            .values()
            .find_map(|t| t.outcome.as_ref().filter(|o| o.state == "failed"))
            .map(|o| o.message.clone())
            .unwrap_or_default();
        bail!("no trial completed (the first failure: {first})");
    }
    let finished = trials
        .values()
        .filter(|t| t.number < a.trials && t.outcome.is_some())
        .count() as u64;
    if finished < a.trials {
        eprintln!(
            "{} trial(s) still running in other processes",
            a.trials - finished
        );
        return Ok(());
    }
    promote(&storage, &study, train)
}

/// Workers per trial of a `--launch` option list (`-n N`).
fn launch_workers(launch: &[String]) -> usize {
    let mut it = launch.iter();
    while let Some(w) = it.next() {
        if w == "-n" || w == "--nproc" {
            if let Some(n) = it.next().and_then(|n| n.parse().ok()) {
                return n;
            }
        } else if let Some(n) = w.strip_prefix("-n").and_then(|n| n.parse().ok()) {
            return n;
        }
    }
    1
}

/// The best complete trial's model version into `STUDY/best` (a model store), with its
/// params in `STUDY/best/tune.json`; nothing when it is already there.
fn promote(storage: &Storage, study: &Study, train: bool) -> Result<()> {
    let mode = study.spec.mode;
    let trials = study.trials()?;
    let best = trials
        .values()
        .filter(|t| t.outcome.as_ref().is_some_and(|o| o.state == "complete"))
        .filter_map(|t| t.outcome.as_ref()?.value.map(|v| (t, v)))
        .reduce(|a, b| if mode.better(b.1, a.1) { b } else { a });
    let Some((t, v)) = best else {
        eprintln!("no trial completed: nothing to promote");
        return Ok(());
    };
    let info = serde_json::json!({
        "trial": t.number,
        "metric": study.spec.metric,
        "value": v,
        "params": t.params,
    });
    let file = study.best().join("tune.json");
    let same = file
        .read()
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|old| old == info);
    if same {
        eprintln!(
            "best: trial {} ({}={v}), already in {}",
            t.number,
            study.spec.metric,
            study.best().url()
        );
        return Ok(());
    }
    if train {
        let ck = ModelStore::open(storage, &study.model_url(t.number))?.load(None)?;
        let version = ModelStore::open(storage, &study.best().url())?.save(&ck.as_ref())?;
        eprintln!(
            "best: trial {} ({}={v}) → {} version {version}",
            t.number,
            study.spec.metric,
            study.best().url()
        );
    } else {
        eprintln!("best: trial {} ({}={v})", t.number, study.spec.metric);
    }
    file.write(serde_json::to_vec_pretty(&info)?)?;
    Ok(())
}

fn status(url: &str) -> Result<()> {
    let storage = Storage::new()?;
    let study = Study::open(&storage, url)?;
    print_status(&study)
}

fn print_status(study: &Study) -> Result<()> {
    let trials = study.trials()?;
    let metric = &study.spec.metric;
    println!("| trial | state | best {metric} | at step | steps | params |");
    println!("|---:|---|---:|---:|---:|---|");
    let now = tusk_tune::study::now();
    for t in trials.values() {
        let (state, value, step) = match &t.outcome {
            Some(o) => (
                o.state.clone(),
                o.value.map_or("-".into(), |v| format!("{v:.6}")),
                o.step.map_or("-".into(), |s| s.to_string()),
            ),
            None if t.abandoned(now) => ("abandoned".into(), "-".into(), "-".into()),
            None => ("running".into(), "-".into(), "-".into()),
        };
        let params = t
            .params
            .as_ref()
            .map(|p| assignments(p).join(" "))
            .unwrap_or_default();
        println!(
            "| {} | {state} | {value} | {step} | {} | {params} |",
            t.number,
            t.reports.len()
        );
    }
    Ok(())
}

/// `tusk report STUDY`: best-so-far against trials and each parameter against the metric, as
/// one self-contained HTML page.
pub fn study_report(storage: &Storage, url: &str) -> Result<String> {
    use tusk_board::Panel;
    let study = Study::open(storage, url)?;
    let mode = study.spec.mode;
    let metric = study.spec.metric.clone();
    let trials = study.trials()?;
    let done: Vec<(&tusk_tune::study::Trial, f64)> = trials
        .values()
        .filter_map(|t| {
            let o = t.outcome.as_ref()?;
            (o.state == "complete").then_some(())?;
            Some((t, o.value?))
        })
        .collect();
    let mut best: Option<f64> = None;
    let mut curve = Vec::new();
    for (t, v) in &done {
        best = Some(match best {
            Some(b) if !mode.better(*v, b) => b,
            _ => *v,
        });
        curve.push((t.number as f64, best.unwrap_or(*v)));
    }
    let mut panels = vec![
        Panel {
            title: format!("best {metric} so far"),
            x_label: "trial".into(),
            points: curve,
            line: true,
            ..Default::default()
        },
        Panel {
            title: format!("{metric} of each complete trial"),
            x_label: "trial".into(),
            points: done.iter().map(|(t, v)| (t.number as f64, *v)).collect(),
            ..Default::default()
        },
    ];
    let space = study.spec.space.as_object().cloned().unwrap_or_default();
    for (key, dist) in &space {
        let kind = dist
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .unwrap_or_default();
        let values: Vec<(tusk_tune::space::Value, f64)> = done
            .iter()
            .filter_map(|(t, v)| Some((t.params.as_ref()?.get(key)?.clone(), *v)))
            .collect();
        let mut panel = Panel {
            title: format!("{metric} by {key}"),
            x_label: key.clone(),
            log_x: kind == "loguniform",
            ..Default::default()
        };
        if kind == "choice" {
            let mut cats: Vec<String> = values.iter().map(|(p, _)| p.render()).collect();
            cats.sort();
            cats.dedup();
            panel.points = values
                .iter()
                .map(|(p, v)| {
                    let r = p.render();
                    (cats.iter().position(|c| *c == r).unwrap_or(0) as f64, *v)
                })
                .collect();
            panel.categories = cats;
        } else {
            panel.points = values
                .iter()
                .filter_map(|(p, v)| Some((p.as_f64()?, *v)))
                .collect();
        }
        panels.push(panel);
    }
    let mut rows = vec![vec![
        "trial".to_string(),
        "state".into(),
        format!("best {metric}"),
        "steps".into(),
        "params".into(),
    ]];
    for t in trials.values() {
        let o = t.outcome.as_ref();
        rows.push(vec![
            t.number.to_string(),
            o.map_or("running".into(), |o| o.state.clone()),
            o.and_then(|o| o.value)
                .map_or("-".into(), |v| format!("{v:.6}")),
            t.reports.len().to_string(),
            t.params
                .as_ref()
                .map(|p| assignments(p).join(" "))
                .unwrap_or_default(),
        ]);
    }
    Ok(tusk_board::render_panels(
        &format!("tusk tune study: {metric}"),
        &study.url(),
        &rows,
        &panels,
    ))
}
