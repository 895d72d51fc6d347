//! `tusk train / eval / predict / report` as a user runs them: real processes, real files,
//! kill -9 in the middle of training.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

mod common;
use common::write_csv;

fn tusk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tusk"))
        .args(args)
        .output()
        .expect("run tusk")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn setup(dir: &Path, train_rows: usize) -> String {
    write_csv(&dir.join("train.csv"), train_rows, 1);
    write_csv(&dir.join("test.csv"), 600, 3);
    let cfg = format!(
        r#"[data]
train = "{d}/train.csv"
test = "{d}/test.csv"
[features]
sparse = ["user_id", "item_id"]
dense = ["price"]
label = "label"
[model]
kind = "neumf"
user = ["user_id"]
item = ["item_id"]
gmf_dim = 8
mlp_dim = 8
layers = [16, 8]
[train]
epochs = 2
batch_size = 16
learning_rate = 0.005
shuffle_buffer = 1000
checkpoint_every = 25
"#,
        d = dir.display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, cfg).unwrap();
    path.display().to_string()
}

#[test]
fn train_eval_predict_report() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 3000);
    let model = dir.path().join("model").display().to_string();
    let o = tusk(&["train", &cfg, "--model", &model, "--json", "--epochs", "10"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["history"].as_array().unwrap().len(), 10);
    // Training again onto the same model URL without --resume is refused (no data loss).
    let o = tusk(&["train", &cfg, "--model", &model]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));

    let test = dir.path().join("test.csv").display().to_string();
    let o = tusk(&["eval", "--model", &model, "--data", &test, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(m["auc"].as_f64().unwrap() > 0.75, "{m}");

    // Scoring a CSV of pairs: the same rows, in order, plus a score in (0, 1).
    let pairs = dir.path().join("pairs.csv");
    std::fs::write(&pairs, "user_id,item_id,price\n1,5,2.5\n1,6,0.5\n7,3,\n").unwrap();
    let out = dir.path().join("scores.csv");
    let o = tusk(&[
        "predict",
        "--model",
        &model,
        "--input",
        &pairs.display().to_string(),
        "--output",
        &out.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "user_id,item_id,price,score");
    assert_eq!(lines.len(), 4);
    for (l, prefix) in lines[1..].iter().zip(["1,5,2.5,", "1,6,0.5,", "7,3,,"]) {
        assert!(l.starts_with(prefix), "{l}");
        let s: f64 = l.rsplit(',').next().unwrap().parse().unwrap();
        assert!(s > 0.0 && s < 1.0);
    }
    // user 1 is in cluster 1: item 5 (cluster 1) should outscore item 6 (cluster 2)
    let score = |l: &str| l.rsplit(',').next().unwrap().parse::<f64>().unwrap();
    assert!(score(lines[1]) > score(lines[2]), "{text}");

    // The same scoring into Parquet: every input column plus `score`.
    let pq = dir.path().join("scores.parquet");
    let o = tusk(&[
        "predict",
        "--model",
        &model,
        "--input",
        &pairs.display().to_string(),
        "--output",
        &pq.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = tusk(&["records", "cat", &pq.display().to_string()]);
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["user_id"]["int64"][0], 1);
    let s = rows[0]["score"]["float"][0].as_f64().unwrap();
    assert!((s - score(lines[1])).abs() < 1e-6, "{s} vs {}", lines[1]);
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("scoring"))
            .count(),
        0
    );

    let o = tusk(&["report", &model]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(dir.path().join("model/report.html")).unwrap();
    assert!(html.contains("test/auc") && html.contains("<svg"));
}

#[test]
fn bad_configs_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 200);
    let base = std::fs::read_to_string(&cfg).unwrap();
    let model = dir.path().join("m").display().to_string();
    let case = |edit: &dyn Fn(&str) -> String, needles: &[&str]| {
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, edit(&base)).unwrap();
        let o = tusk(&["train", &p.display().to_string(), "--model", &model]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        for n in needles {
            assert!(err.contains(n), "missing {n:?} in {err}");
        }
    };
    // unknown column
    case(
        &|s| s.replace("dense = [\"price\"]", "dense = [\"prize\"]"),
        &["features.dense", "prize", "price"],
    );
    // wrong type: a string column as a dense (numeric) feature
    case(
        &|s| s.replace("dense = [\"price\"]", "dense = [\"city\"]"),
        &["city", "row 0", "not a number"],
    );
    // a string where a number belongs
    case(
        &|s| s.replace("epochs = 2", "epochs = \"two\""),
        &["epochs"],
    );
    // missing file
    case(&|s| s.replace("train.csv", "nope.csv"), &["nope.csv"]);
    // a label with three values
    case(
        &|s| s.replace("label = \"label\"", "label = \"rating\""),
        &["features.label", "rating", "0 or 1"],
    );
    // unknown key
    case(&|s| s.replace("[train]", "[train]\nepoch = 3"), &["epoch"]);
    // neither side
    case(
        &|s| s.replace("item = [\"item_id\"]", "item = []"),
        &["model"],
    );
    // nothing was committed by any of these
    assert!(!dir.path().join("m/versions").exists());
}

#[test]
fn kill_9_during_training_never_leaves_a_broken_model() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 6000);
    let model = dir.path().join("killed").display().to_string();
    let test = dir.path().join("test.csv").display().to_string();
    let mut rng = 12345u64;
    let mut loads = 0;
    for round in 0..10 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tusk"))
            .args([
                "train", &cfg, "--model", &model, "--resume", "--epochs", "6",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait = 150 + (rng >> 33) % 900;
        std::thread::sleep(Duration::from_millis(wait));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        // Whatever was committed must load and evaluate.
        let o = tusk(&["eval", "--model", &model, "--data", &test, "--json"]);
        if o.status.success() {
            loads += 1;
        } else {
            let err = stderr(&o);
            assert!(
                err.contains("no committed model version"),
                "round {round} (killed after {wait} ms, {status}): {err}"
            );
        }
    }
    assert!(
        loads >= 5,
        "only {loads} of 10 kills had committed a version"
    );
    let o = tusk(&["train", &cfg, "--model", &model, "--resume", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(resumed["history"].as_array().map(Vec::len), Some(6));
    // The same weights as a run that was never killed.
    let clean = dir.path().join("clean").display().to_string();
    let o = tusk(&["train", &cfg, "--model", &clean, "--epochs", "6"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let storage = tusk_storage::Storage::new().unwrap();
    let a = tusk_train::ModelStore::open(&storage, &model)
        .unwrap()
        .load(None)
        .unwrap();
    let b = tusk_train::ModelStore::open(&storage, &clean)
        .unwrap()
        .load(None)
        .unwrap();
    assert_eq!(a.params, b.params);
    assert_eq!(a.table, b.table);
}

#[test]
fn training_events_read_in_tensorboard() {
    let found = tusk_testkit::python_with_tensorflow()
        .ok_or_else(|| "no Python with TensorFlow/TensorBoard".to_string());
    let Some(py) = tusk_testkit::require("TensorBoard", "TUSK_REQUIRE_TF", found) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), 2000);
    let model = dir.path().join("model");
    let o = tusk(&[
        "train",
        &cfg,
        "--model",
        &model.display().to_string(),
        "--epochs",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = tusk_testkit::repo_root().join("crates/tusk-board/tests/read_tfevents.py");
    let events = model.join("events");
    let o = Command::new(py).arg(script).arg(&events).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let scalars = &v[events.display().to_string()]["scalars"];
    for tag in [
        "train/loss",
        "train/samples_per_sec",
        "train/learning_rate",
        "epoch/train_loss",
        "test/auc",
        "test/logloss",
    ] {
        assert!(scalars.get(tag).is_some(), "TensorBoard lacks {tag}: {v}");
    }
    // one point per epoch for the evaluation series, at increasing steps
    let auc = scalars["test/auc"].as_array().unwrap();
    assert_eq!(auc.len(), 2);
    assert!(auc[0][0].as_i64() < auc[1][0].as_i64());
}

/// Two `tusk train` processes started together on one empty model (on `model`, a local path
/// or an HDFS URL): exactly one succeeds, the other fails naming it, and the model's history
/// is the winner's alone.
fn two_runs_race(dir: &Path, model: &str) {
    use tusk_testkit::Proc;
    let cfg = setup(dir, 6000);
    let mut procs: Vec<(Proc, std::path::PathBuf)> = (0..2u64)
        .map(|i| {
            let log = dir.join(format!("race-{i}.log"));
            let p = Proc::spawn(
                Command::new(env!("CARGO_BIN_EXE_tusk"))
                    .args(["train", &cfg, "--model", model, "--epochs", "2"])
                    .args(["--seed", &(i + 1).to_string()])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::fs::File::create(&log).unwrap()),
                &format!("tusk train #{i}"),
            );
            (p, log)
        })
        .collect();
    let outcomes: Vec<(bool, String)> = procs
        .iter_mut()
        .map(|(p, log)| {
            let ok = p.wait(Duration::from_secs(300)).success();
            (ok, std::fs::read_to_string(log).unwrap())
        })
        .collect();
    let storage = tusk_storage::Storage::new().unwrap();
    let store = tusk_train::ModelStore::open(&storage, model).unwrap();
    let versions = store.versions().unwrap();
    assert!(versions.len() >= 3, "{versions:?}");
    let winner = store.manifest(versions[0]).unwrap().run;
    for v in &versions {
        assert_eq!(store.manifest(*v).unwrap().run, winner, "version {v}");
    }
    assert_eq!(
        outcomes.iter().filter(|o| o.0).count(),
        1,
        "exactly one run must succeed: {outcomes:?}"
    );
    let (_, err) = outcomes.iter().find(|o| !o.0).unwrap();
    if err.contains("already holds model versions") {
        // The loser (slower to start on a loaded machine) found the winner's first version
        // before its own first commit: refused at the start, which is as safe.
        assert!(err.contains("pass --resume"), "{err}");
    } else {
        assert!(err.contains("another run committed to this model"), "{err}");
        assert!(err.contains(&format!("run {}", winner.id)), "{err}");
        assert!(err.contains(&format!("pid {}", winner.pid)), "{err}");
    }
    // The winner's model loads and continues.
    let o = tusk(&["train", "--model", model, "--resume", "--epochs", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn two_runs_on_one_model_cannot_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("shared-model").display().to_string();
    two_runs_race(dir.path(), &model);
}

#[test]
fn two_runs_on_one_hdfs_model_cannot_interleave() {
    let Some(dfs) = tusk_testkit::MiniDfs::start(1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    two_runs_race(dir.path(), &format!("{}/race/model", dfs.hdfs_url()));
}
