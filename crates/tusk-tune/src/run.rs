//! Running a study: up to P trials at once as child processes, each reporting its metric on
//! stdout (`NAME=VALUE` lines, one per step), pruned at a step boundary when the pruner says
//! so, recorded in the study's journal as they go.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::pruner::Pruner;
use crate::sampler::{Observation, Sampler};
use crate::space::{Params, Space};
use crate::study::{self, HEARTBEAT, Mode, Outcome, Study};

/// How a trial's process is made.
pub trait Launcher {
    /// The command for attempt `attempt` of trial `n` with `params`; `resume` when an earlier
    /// attempt of it was abandoned (a `tusk train` trial continues from its model store).
    fn command(&self, n: u64, params: &Params, attempt: u32, resume: bool) -> Command;
}

/// How to run.
pub struct Options {
    /// Trials in the study (finished ones included).
    pub trials: u64,
    /// Trials at once in this process.
    pub parallel: usize,
    /// The space.
    pub space: Space,
    /// The sampler.
    pub sampler: Sampler,
    /// The pruner.
    pub pruner: Pruner,
    /// Set to stop: running trials are killed and left to be resumed.
    pub stop: Arc<AtomicBool>,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Trials this process finished, by state.
    pub finished: BTreeMap<String, u64>,
    /// Trials of other attempts this process took over.
    pub resumed: u64,
    /// Whether it stopped on a signal.
    pub stopped: bool,
}

enum Line {
    Out(String),
    Err(String),
}

struct Running {
    n: u64,
    attempt: u32,
    child: Child,
    lines: mpsc::Receiver<Line>,
    reports: Vec<(u32, f64)>,
    tail: Vec<String>,
    pruned: bool,
    beat: Instant,
}

/// Errors of a run: the study's storage, or a process that cannot start.
pub type Result<T> = std::result::Result<T, study::Error>;

/// The metric in an output line: `NAME=VALUE` (after a launcher's `[rank 0] ` prefix; other
/// ranks' lines are not the trial's).
pub fn metric_in(line: &str, metric: &str) -> Option<f64> {
    let line = line.trim();
    let line = match line.strip_prefix("[rank ") {
        Some(rest) => {
            let (rank, rest) = rest.split_once(']')?;
            if rank.trim() != "0" {
                return None;
            }
            rest.trim()
        }
        None => line,
    };
    let (name, value) = line.split_once('=')?;
    if name.trim() != metric {
        return None;
    }
    value.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

fn spawn(mut cmd: Command, n: u64) -> std::io::Result<(Child, mpsc::Receiver<Line>)> {
    use std::os::unix::process::CommandExt as _;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let t = tx.clone();
    std::thread::Builder::new()
        .name(format!("tune-out-{n}"))
        .spawn(move || {
            for l in BufReader::new(out)
                .lines()
                .map_while(std::result::Result::ok)
            {
                let _ = t.send(Line::Out(l));
            }
        })?;
    std::thread::Builder::new()
        .name(format!("tune-err-{n}"))
        .spawn(move || {
            for l in BufReader::new(err)
                .lines()
                .map_while(std::result::Result::ok)
            {
                let _ = tx.send(Line::Err(l));
            }
        })?;
    Ok((child, rx))
}

/// Signal a trial's process group.
fn signal(child: &Child, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, sig);
    }
}

fn observations(trials: &BTreeMap<u64, study::Trial>, mode: Mode) -> Vec<Observation> {
    trials
        .values()
        .filter_map(|t| t.observation(mode))
        .collect()
}

/// Run trials of `study` until it has `opts.trials` finished ones (or every remaining one is
/// being run by another live process). `say` gets one line per event.
pub fn run(
    study: &Study,
    opts: &Options,
    launcher: &dyn Launcher,
    mut say: impl FnMut(&str),
) -> Result<Summary> {
    let mode = study.spec.mode;
    let metric = study.spec.metric.clone();
    let mut running: Vec<Running> = Vec::new();
    let mut summary = Summary::default();
    let mut exhausted = false;
    loop {
        if opts.stop.load(Ordering::Relaxed) {
            for r in &running {
                signal(&r.child, rustix::process::Signal::TERM);
            }
            let t = Instant::now();
            for r in &mut running {
                while r.child.try_wait().ok().flatten().is_none() {
                    if t.elapsed() > Duration::from_secs(10) {
                        signal(&r.child, rustix::process::Signal::KILL);
                        let _ = r.child.wait();
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            summary.stopped = true;
            return Ok(summary);
        }
        // Fill free slots: abandoned trials first (same parameters), then new ones.
        while running.len() < opts.parallel.max(1) && !exhausted {
            let trials = study.trials()?;
            let mine: Vec<u64> = running.iter().map(|r| r.n).collect();
            let now = study::now();
            let abandoned = trials
                .values()
                .find(|t| t.number < opts.trials && !mine.contains(&t.number) && t.abandoned(now));
            let (n, attempt, resume) = match abandoned {
                Some(t) => (t.number, t.attempt() + 1, true),
                None => match (0..opts.trials).find(|n| !trials.contains_key(n)) {
                    Some(n) => (n, 1, false),
                    None => {
                        exhausted = true;
                        break;
                    }
                },
            };
            if !study.claim(n, attempt)? {
                continue; // another process was first: look again
            }
            let params = match trials.get(&n).and_then(|t| t.params.clone()) {
                Some(p) => p,
                None => {
                    let history = observations(&trials, mode);
                    let p = opts.sampler.sample(&opts.space, &history, n);
                    study.set_params(n, &p)?
                }
            };
            if resume {
                summary.resumed += 1;
            }
            let shown = crate::space::assignments(&params);
            say(&format!(
                "trial {n}{}: {}",
                if resume {
                    format!(" (attempt {attempt}, resumed)")
                } else {
                    String::new()
                },
                shown.join(" ")
            ));
            study.heartbeat(n, attempt)?;
            match spawn(launcher.command(n, &params, attempt, resume), n) {
                Ok((child, lines)) => running.push(Running {
                    n,
                    attempt,
                    child,
                    lines,
                    reports: trials.get(&n).map(|t| t.curve()).unwrap_or_default(),
                    tail: Vec::new(),
                    pruned: false,
                    beat: Instant::now(),
                }),
                Err(e) => {
                    let o = Outcome {
                        state: "failed".into(),
                        value: None,
                        step: None,
                        steps: 0,
                        attempt,
                        message: format!("cannot start the trial's command: {e}"),
                    };
                    study.finish(n, &o)?;
                    say(&format!("trial {n} failed: {}", o.message));
                    *summary.finished.entry("failed".into()).or_default() += 1;
                }
            }
        }
        if running.is_empty() {
            return Ok(summary);
        }
        // Output, reports and pruning.
        let mut idle = true;
        for r in &mut running {
            while let Ok(line) = r.lines.try_recv() {
                idle = false;
                match line {
                    Line::Err(l) => {
                        say(&format!("[trial {}] {l}", r.n));
                        r.tail.push(l);
                        if r.tail.len() > 5 {
                            r.tail.remove(0);
                        }
                    }
                    Line::Out(l) => {
                        let Some(v) = metric_in(&l, &metric) else {
                            say(&format!("[trial {}] {l}", r.n));
                            continue;
                        };
                        if r.pruned {
                            continue;
                        }
                        let step = r.reports.last().map_or(1, |(s, _)| s + 1);
                        r.reports.push((step, v));
                        study.report(r.n, r.attempt, step, v)?;
                        say(&format!("trial {} step {step}: {metric}={v}", r.n));
                        let history = observations(&study.trials()?, mode);
                        let mine: Vec<(u32, f64)> =
                            r.reports.iter().map(|(s, v)| (*s, mode.loss(*v))).collect();
                        if opts.pruner.should_prune(&mine, &history) {
                            r.pruned = true;
                            say(&format!("trial {} pruned at step {step}", r.n));
                            signal(&r.child, rustix::process::Signal::TERM);
                        }
                    }
                }
            }
            if r.beat.elapsed() >= HEARTBEAT {
                study.heartbeat(r.n, r.attempt)?;
                r.beat = Instant::now();
            }
        }
        // Finished processes.
        let mut i = 0;
        while i < running.len() {
            let done = running[i].child.try_wait().ok().flatten();
            let Some(status) = done else {
                i += 1;
                continue;
            };
            let mut r = running.remove(i);
            // the rest of its output
            while let Ok(line) = r.lines.recv_timeout(Duration::from_millis(200)) {
                if let Line::Out(l) = &line
                    && !r.pruned
                    && let Some(v) = metric_in(l, &metric)
                {
                    let step = r.reports.last().map_or(1, |(s, _)| s + 1);
                    r.reports.push((step, v));
                    study.report(r.n, r.attempt, step, v)?;
                }
            }
            let best = r
                .reports
                .iter()
                .copied()
                .reduce(|a, b| if mode.better(b.1, a.1) { b } else { a });
            let (state, message) = if r.pruned {
                ("pruned", String::new())
            } else if !status.success() {
                (
                    "failed",
                    format!("{status}: {}", r.tail.last().cloned().unwrap_or_default()),
                )
            } else if best.is_none() {
                (
                    "failed",
                    format!("it reported no `{metric}=VALUE` line on stdout"),
                )
            } else {
                ("complete", String::new())
            };
            let o = Outcome {
                state: state.into(),
                value: best.map(|b| b.1),
                step: best.map(|b| b.0),
                steps: r.reports.len() as u32,
                attempt: r.attempt,
                message,
            };
            study.finish(r.n, &o)?;
            say(&match (&o.value, state) {
                (_, "failed") => format!("trial {} failed: {}", r.n, o.message),
                (Some(v), _) => format!(
                    "trial {} {state}: best {metric}={v} at step {}",
                    r.n,
                    o.step.unwrap_or(0)
                ),
                (None, _) => format!("trial {} {state}", r.n),
            });
            *summary.finished.entry(state.into()).or_default() += 1;
        }
        if idle {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lines() {
        assert_eq!(metric_in("hr@10=0.5", "hr@10"), Some(0.5));
        assert_eq!(metric_in("  loss = 1e-3 ", "loss"), Some(1e-3));
        assert_eq!(metric_in("[rank 0] hr@10=0.25", "hr@10"), Some(0.25));
        assert_eq!(metric_in("[rank 1] hr@10=0.25", "hr@10"), None);
        assert_eq!(metric_in("auc=0.7", "hr@10"), None);
        assert_eq!(metric_in("hr@10=nan", "hr@10"), None);
        assert_eq!(metric_in("epoch 3 hr@10 0.5", "hr@10"), None);
    }
}
