//! `tusk tune` as a process: a search over an external objective (a small Python program that
//! prints `loss=VALUE` per step), ASHA pruning against the unpruned search, `kill -9` of the
//! tuner and resume, two tuners sharing one study, bad input, and the MovieLens example tuned
//! with `train` trials (needs MovieLens-100K: skipped without it, except in CI).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tusk_testkit::Proc;

fn tusk() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tusk"))
}

/// The objective: params from `--set KEY=VALUE`; per step s (1..=STEPS) it prints
/// `loss=q + 1/s` where q = (x - 0.3)² + (log10(lr) + 3)² + (n - 4)²/16; it appends
/// `x lr n` to RUNS once per start, and sleeps SLEEP seconds per step.
const OBJECTIVE: &str = r#"
import math, os, sys, time
args = sys.argv[1:]
p = {}
for i in range(0, len(args), 2):
    assert args[i] == "--set", args
    k, v = args[i + 1].split("=", 1)
    p[k] = v
x, lr, n = float(p["x"]), float(p["lr"]), int(p["n"])
with open(os.environ["RUNS"], "a") as f:
    f.write(f"{p['x']} {p['lr']} {p['n']}\n")
if os.environ.get("FAIL_WHEN_N") == str(n):
    sys.exit("objective refuses n=%d" % n)
q = (x - 0.3) ** 2 + (math.log10(lr) + 3) ** 2 + (n - 4) ** 2 / 16
for s in range(1, int(os.environ.get("STEPS", "1")) + 1):
    time.sleep(float(os.environ.get("SLEEP", "0")))
    print(f"loss={q + 1 / s}", flush=True)
"#;

const SPACE: &str = r#"
x = { uniform = [0.0, 1.0] }
lr = { loguniform = [1e-5, 1e-1] }
n = { int = [1, 8] }
"#;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("obj.py"), OBJECTIVE).unwrap();
        std::fs::write(dir.path().join("space.toml"), SPACE).unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `tusk tune` over the objective into study `name`.
    fn tune(&self, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = tusk();
        c.arg("tune")
            .arg(self.path("space.toml"))
            .arg("--study")
            .arg(self.path(name))
            .args(["--metric", "loss"])
            .args(extra)
            .arg("--")
            .arg(python())
            .arg(self.path("obj.py"))
            .env("RUNS", self.path(&format!("{name}.runs")))
            .envs(env.iter().copied());
        c
    }

    fn runs(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.path(&format!("{name}.runs")))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn python() -> PathBuf {
    std::env::var_os("TUSK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"))
}

fn ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    err
}

/// (trial, state, value) rows of `tusk tune status`.
fn status(study: &Path) -> Vec<(u64, String, Option<f64>)> {
    let o = tusk().args(["tune", "status"]).arg(study).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .skip(2)
        .map(|l| {
            let c: Vec<&str> = l.split('|').map(str::trim).collect();
            (c[1].parse().unwrap(), c[2].to_string(), c[3].parse().ok())
        })
        .collect()
}

#[test]
fn searches_an_external_objective_and_promotes_the_best() {
    let s = Setup::new();
    let err = ok(&mut s.tune(
        "tpe",
        &["--trials", "16", "--parallel", "2", "--seed", "3"],
        &[("STEPS", "2")],
    ));
    let st = status(&s.path("tpe"));
    assert_eq!(st.len(), 16, "{err}");
    assert!(st.iter().all(|t| t.1 == "complete"), "{st:?}");
    assert_eq!(s.runs("tpe").len(), 16);
    let best = st.iter().filter_map(|t| t.2).fold(f64::INFINITY, f64::min);
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("tpe/best/tune.json")).unwrap()).unwrap();
    assert!(
        (info["value"].as_f64().unwrap() - best).abs() < 1e-5,
        "{info}"
    );
    // each trial's best is its last step (loss falls with the step)
    assert!(best < 1.0, "{st:?}");
    // The study's report: best-so-far against trials, each parameter against the metric.
    ok(tusk().arg("report").arg(s.path("tpe")));
    let html = std::fs::read_to_string(s.path("tpe/report.html")).unwrap();
    for needle in [
        "best loss so far",
        "loss by lr",
        "loss by n",
        "loss by x",
        "<svg",
        "<td class=\"num\">15</td>",
    ] {
        assert!(html.contains(needle), "{needle} not in the report");
    }
    assert_eq!(html.matches("<svg").count(), 5);
    // Raising --trials extends the finished study; the finished trials are not run again.
    ok(&mut s.tune(
        "tpe",
        &["--trials", "18", "--parallel", "2", "--seed", "3"],
        &[("STEPS", "2")],
    ));
    assert_eq!(status(&s.path("tpe")).len(), 18);
    assert_eq!(s.runs("tpe").len(), 18);
    // Other settings on the same study are refused.
    let o = s
        .tune("tpe", &["--trials", "18", "--seed", "4"], &[])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("seed"), "{err}");
}

#[test]
fn asha_prunes_and_keeps_the_unpruned_best() {
    let s = Setup::new();
    let args = [
        "--trials",
        "12",
        "--parallel",
        "1",
        "--sampler",
        "random",
        "--seed",
        "5",
    ];
    let env = [("STEPS", "9")];
    ok(&mut s.tune("plain", &args, &env));
    let mut with = args.to_vec();
    with.extend(["--pruner", "asha"]);
    ok(&mut s.tune("asha", &with, &env));
    let plain = status(&s.path("plain"));
    let asha = status(&s.path("asha"));
    let pruned = asha.iter().filter(|t| t.1 == "pruned").count();
    assert!(pruned >= 4, "{asha:?}");
    let best = |st: &[(u64, String, Option<f64>)]| {
        st.iter()
            .filter(|t| t.1 == "complete")
            .filter_map(|t| t.2)
            .fold(f64::INFINITY, f64::min)
    };
    assert_eq!(best(&plain), best(&asha));
}

#[test]
fn killed_tuner_resumes_and_two_tuners_share_a_study() {
    let s = Setup::new();
    let args = ["--trials", "8", "--parallel", "1", "--sampler", "random"];
    let env = [("STEPS", "3"), ("SLEEP", "0.2")];
    let mut c = s.tune("k", &args, &env);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut p = Proc::spawn(&mut c, "tusk tune");
    let t = Instant::now();
    while status_count(&s.path("k"), "complete") < 3 {
        assert!(t.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    p.kill();
    let before = s.runs("k").len();
    ok(&mut s.tune("k", &args, &env));
    let st = status(&s.path("k"));
    assert_eq!(st.len(), 8);
    assert!(st.iter().all(|t| t.1 == "complete"), "{st:?}");
    // finished trials ran once; at most the one in flight ran twice
    let runs = s.runs("k");
    assert!(
        runs.len() <= 9 && runs.len() >= 8,
        "{before} then {}",
        runs.len()
    );
    let mut uniq = runs.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 8);

    // Two tuners on one study: every trial runs exactly once.
    let mut a = s.tune("shared", &args, &env);
    let mut b = s.tune("shared", &args, &env);
    a.stdout(Stdio::null()).stderr(Stdio::null());
    b.stdout(Stdio::null()).stderr(Stdio::null());
    let mut pa = Proc::spawn(&mut a, "tusk tune a");
    let mut pb = Proc::spawn(&mut b, "tusk tune b");
    assert!(pa.wait(Duration::from_secs(180)).success());
    assert!(pb.wait(Duration::from_secs(180)).success());
    let st = status(&s.path("shared"));
    assert_eq!(st.len(), 8);
    assert!(st.iter().all(|t| t.1 == "complete"), "{st:?}");
    assert_eq!(s.runs("shared").len(), 8);
}

fn status_count(study: &Path, state: &str) -> usize {
    if !study.join("study.json").exists() {
        return 0;
    }
    status(study).iter().filter(|t| t.1 == state).count()
}

#[test]
fn bad_input_is_one_clear_error_and_failing_trials_are_recorded() {
    let s = Setup::new();
    for (space, needle) in [
        ("x = { gaussian = [0, 1] }", "gaussian"),
        ("x = { uniform = [1.0, 1.0] }", "x"),
        ("x = { loguniform = [0.0, 1.0] }", "x"),
        ("x = { choice = [] }", "x"),
    ] {
        std::fs::write(s.path("bad.toml"), space).unwrap();
        let o = tusk()
            .arg("tune")
            .arg(s.path("bad.toml"))
            .arg("--study")
            .arg(s.path("bad"))
            .args(["--metric", "loss", "--", "true"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{space}");
        assert!(err.contains(needle), "{space}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{space}: {err}");
    }
    // A trial whose command fails is recorded as failed; the others go on.
    let err = ok(&mut s.tune(
        "f",
        &["--trials", "8", "--parallel", "2", "--sampler", "random"],
        &[("FAIL_WHEN_N", "4"), ("STEPS", "1")],
    ));
    let st = status(&s.path("f"));
    let runs = s.runs("f");
    let fours = runs.iter().filter(|r| r.ends_with(" 4")).count();
    assert_eq!(
        st.iter().filter(|t| t.1 == "failed").count(),
        fours,
        "{err}"
    );
    assert_eq!(
        st.iter().filter(|t| t.1 == "complete").count(),
        8 - fours,
        "{st:?}"
    );
    // A command that does not exist: every trial fails, the run says so.
    let o = tusk()
        .arg("tune")
        .arg(s.path("space.toml"))
        .arg("--study")
        .arg(s.path("none"))
        .args([
            "--metric",
            "loss",
            "--trials",
            "2",
            "--",
            "no-such-program-here",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("no-such-program-here"), "{err}");
}

/// The MovieLens example (3 epochs) tuned over learning rate, embedding sizes, MLP widths and
/// negatives with `train` trials, 2 at once, ASHA: it finishes, prunes, promotes its best to
/// STUDY/best (a model store `tusk eval` reads), and the best beats the example's own config
/// trained the same 3 epochs, on validation HR@10.
#[test]
fn tunes_the_movielens_example_with_train_trials() {
    let Some(udata) = common::movielens() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(tusk()
        .args(["preprocess", "movielens", "--input"])
        .arg(&udata)
        .arg("--output")
        .arg(&data)
        .args(["--negatives", "0", "--validation", "--history", "5"]));
    let d = data.display();
    let config = tusk_testkit::repo_root().join("examples/movielens/config.toml");
    let sets: Vec<String> = [
        format!("data.train={d}/train"),
        format!("data.validation={d}/validation"),
        format!("data.test={d}/test"),
        format!("data.entities.user_id={d}/entities/user_id"),
        format!("data.entities.item_id={d}/entities/item_id"),
        "train.epochs=3".into(),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_string(), s])
    .collect();
    // The example's own config, 3 epochs.
    let o = tusk()
        .arg("train")
        .arg(&config)
        .arg("--model")
        .arg(dir.path().join("default"))
        .args(&sets)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let default_hr = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["metrics"]["validation"]["hr@10"].as_f64().unwrap())
        .fold(0.0, f64::max);

    std::fs::write(
        dir.path().join("space.toml"),
        r#"
"train.learning_rate" = { loguniform = [1e-3, 1e-2] }
"model.gmf_dim" = { choice = [16, 32] }
"model.layers" = { choice = [[32, 16, 8], [64, 32, 16]] }
"train.negatives" = { int = [2, 6] }
"#,
    )
    .unwrap();
    let study = dir.path().join("study");
    let err = ok(tusk()
        .arg("tune")
        .arg(dir.path().join("space.toml"))
        .arg("--study")
        .arg(&study)
        .args([
            "--trials",
            "6",
            "--parallel",
            "2",
            "--pruner",
            "asha",
            "--seed",
            "1",
        ])
        .arg("--")
        .arg("train")
        .arg(&config)
        .args(&sets));
    let st = status(&study);
    assert_eq!(st.len(), 6, "{err}");
    assert!(
        st.iter().all(|t| t.1 == "complete" || t.1 == "pruned"),
        "{st:?}"
    );
    assert!(st.iter().any(|t| t.1 == "pruned"), "{st:?}\n{err}");
    let best = st
        .iter()
        .filter(|t| t.1 == "complete")
        .filter_map(|t| t.2)
        .fold(0.0, f64::max);
    eprintln!("validation HR@10: default config {default_hr:.4}, tuned best {best:.4}");
    assert!(
        best > default_hr,
        "tuned {best} vs default {default_hr}\n{st:?}"
    );
    let o = tusk()
        .args(["eval", "--model"])
        .arg(study.join("best"))
        .arg("--data")
        .arg(data.join("validation"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
