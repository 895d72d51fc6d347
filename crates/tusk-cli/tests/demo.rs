//! `tusk demo` end to end, on a local directory, a real HDFS (MiniDFS), S3 (moto) and Azure
//! Blob (Azurite).

use std::process::Command;

mod common;

fn demo(storage: &str) -> String {
    demo_env(storage, &[])
}

/// The small demo at `storage`, with `env` added to tusk's environment; its summary.
fn demo_env(storage: &str, env: &[(String, String)]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_tusk"))
        .args([
            "demo",
            "--storage",
            storage,
            "--events",
            "40000",
            "--users",
            "800",
        ])
        .args(["--items", "300", "--epochs", "2"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for step in [
        "generate clickstream",
        "SQL features",
        "train DLRM",
        "evaluate",
        "batch scoring",
    ] {
        assert!(out.contains(step), "summary lacks {step}: {out}");
    }
    out
}

/// The model's and the popularity baseline's AUC from the summary line.
fn aucs(summary: &str) -> (f64, f64) {
    let line = summary.lines().find(|l| l.starts_with("evaluate")).unwrap();
    let nums: Vec<f64> = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|t| t.parse().ok())
        .collect();
    // "evaluate (test day) SECS AUC a vs popularity b; ..."
    (nums[1], nums[2])
}

#[test]
fn demo_runs_end_to_end_and_beats_popularity() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("demo").display().to_string();
    let out = demo(&base);
    let (model, pop) = aucs(&out);
    assert!(model > pop, "model AUC {model} vs popularity {pop}: {out}");
    let scores = std::fs::read_to_string(dir.path().join("demo/scores.csv")).unwrap();
    assert!(scores.lines().next().unwrap().ends_with(",score"));
    assert!(dir.path().join("demo/model/report.html").exists());

    // The version keeps the SQL's entity tables: the test day's (user, item) pairs alone score
    // exactly what the full sample rows (every feature column present) scored.
    let mut lines = scores.lines().map(|l| l.split(',').collect::<Vec<_>>());
    let h = lines.next().unwrap();
    let col = |n: &str| h.iter().position(|c| *c == n).unwrap();
    let (u, i, sc) = (col("user_id"), col("item_id"), col("score"));
    let full: Vec<[String; 3]> = lines
        .map(|r| [r[u].to_string(), r[i].to_string(), r[sc].to_string()])
        .collect();
    assert!(full.len() > 1000, "{} test rows", full.len());
    let mut text = String::from("user_id,item_id\n");
    for [u, i, _] in &full {
        text.push_str(&format!("{u},{i}\n"));
    }
    let pairs = dir.path().join("pairs.csv");
    std::fs::write(&pairs, text).unwrap();
    let pair_scores = dir.path().join("pair-scores.csv");
    let o = Command::new(env!("CARGO_BIN_EXE_tusk"))
        .args(["predict", "--model"])
        .arg(dir.path().join("demo/model"))
        .arg("--input")
        .arg(&pairs)
        .arg("--output")
        .arg(&pair_scores)
        .output()
        .unwrap();
    let note = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{note}");
    assert!(!note.contains("lacks the model's column"), "{note}");
    let got = common::score_column(&pair_scores);
    let want: Vec<String> = full.into_iter().map(|[_, _, s]| s).collect();
    assert_eq!(got, want, "pairs-only scores differ from the full rows'");
    // Running again replaces the earlier demo; a foreign non-empty directory is refused.
    demo(&base);
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("precious.txt"), "keep me").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_tusk"))
        .args(["demo", "--storage", &other.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));
    assert!(other.join("precious.txt").exists());
}

#[test]
fn demo_on_hdfs() {
    let Some(dfs) = tusk_testkit::MiniDfs::start(1) else {
        return;
    };
    let out = demo(&format!("{}/demo", dfs.hdfs_url()));
    let (model, pop) = aucs(&out);
    assert!(model > pop, "{out}");
}

/// The demo with everything on S3 (a real S3-compatible server, configured by the usual
/// `AWS_*` variables): the same pipeline, the model beats popularity.
#[test]
fn demo_on_s3() {
    let Some(s3) = tusk_testkit::S3Server::start() else {
        return;
    };
    s3.create_bucket("tusk-demo");
    let out = demo_env("s3://tusk-demo/run", &s3.env());
    let (model, pop) = aucs(&out);
    assert!(model > pop, "{out}");
    // Bad input: the bucket missing, one clear line.
    let o = Command::new(env!("CARGO_BIN_EXE_tusk"))
        .args([
            "demo",
            "--storage",
            "s3://no-such-bucket/run",
            "--events",
            "1000",
        ])
        .envs(s3.env())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("the bucket or container 'no-such-bucket' does not exist"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// The demo on Azure Blob (Azurite, shared-key auth, configured by `AZURE_*` variables),
/// through Hadoop's `abfs://container@account.dfs.core.windows.net` form.
#[test]
fn demo_on_azure() {
    let Some(az) = tusk_testkit::Azurite::start() else {
        return;
    };
    az.create_container("tusk-demo");
    let out = demo_env(
        "abfs://tusk-demo@devstoreaccount1.dfs.core.windows.net/run",
        &az.env(),
    );
    let (model, pop) = aucs(&out);
    assert!(model > pop, "{out}");
}

/// Issue 11: the demo's model trained by 2 workers against 2 embedding servers, sync and
/// async (staleness 4), on the demo's own features and config: async's test AUC is within
/// 0.005 of sync's.
#[test]
fn demo_model_on_async_servers_matches_sync() {
    let tusk = env!("CARGO_BIN_EXE_tusk");
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("demo");
    let o = Command::new(tusk)
        .args(["demo", "--storage", &base.display().to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let auc = |name: &str, sets: &[&str]| -> f64 {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let (m, _) = common::train_on_servers_and_eval(
            dir.path(),
            name,
            &base.join("config.toml"),
            &sets,
            &base.join("features/test"),
        );
        m["auc"].as_f64().unwrap()
    };
    let sync = auc("sync", &["train.embedding=\"sync\""]);
    let asynchronous = auc("async", &["train.embedding=\"async\"", "train.staleness=4"]);
    eprintln!(
        "demo test AUC, 2 workers + 2 servers: sync {sync:.4}, async (staleness 4) {asynchronous:.4}"
    );
    assert!(
        (asynchronous - sync).abs() <= 0.005,
        "async AUC {asynchronous}, sync {sync}"
    );
}
