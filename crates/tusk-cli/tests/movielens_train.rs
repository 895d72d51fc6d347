//! The MovieLens example end to end: `examples/movielens/run.sh OUT` from the raw u.data to a
//! model that must reach HR@10 ≥ 0.63 and NDCG@10 ≥ 0.36 on the leave-one-out test split
//! (epochs chosen on validation), then batch scoring of a `user_id,item_id` CSV.
//! Needs ../shared/data/movielens-100k/u.data: skipped without it, except in CI.

use std::process::Command;

mod common;

#[test]
fn neumf_on_movielens_reaches_the_target() {
    let Some(udata) = common::movielens() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ml");
    let tusk = env!("CARGO_BIN_EXE_tusk");
    let o = Command::new("bash")
        .arg(tusk_testkit::repo_root().join("examples/movielens/run.sh"))
        .arg(&out)
        .arg(&udata)
        .env("TUSK", tusk)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let model = out.join("model").display().to_string();
    let test = out.join("data/test").display().to_string();
    let o = Command::new(tusk)
        .args(["eval", "--model", &model, "--data", &test, "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (hr, ndcg) = (m["hr@10"].as_f64().unwrap(), m["ndcg@10"].as_f64().unwrap());
    eprintln!("MovieLens-100K test: HR@10 {hr:.4}, NDCG@10 {ndcg:.4}");
    assert!(hr >= 0.63, "HR@10 {hr}");
    assert!(ndcg >= 0.36, "NDCG@10 {ndcg}");
    assert_eq!(m["groups"].as_f64(), Some(943.0));

    // The same example trained by 2 data-parallel workers reaches the same quality.
    let model2 = out.join("model-2-workers").display().to_string();
    let data = out.join("data").display().to_string();
    let log = dir.path().join("launch.log");
    let mut c = Command::new(tusk);
    c.args(["launch", "-n", "2", "--", "train"])
        .arg(tusk_testkit::repo_root().join("examples/movielens/config.toml"))
        .args(["--model", &model2])
        .args(["--set", &format!("data.train={data}/train")])
        .args(["--set", &format!("data.validation={data}/validation")])
        .args(["--set", &format!("data.test={data}/test")])
        .args([
            "--set",
            &format!("data.entities.user_id={data}/entities/user_id"),
        ])
        .args([
            "--set",
            &format!("data.entities.item_id={data}/entities/item_id"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let ok = tusk_testkit::Proc::spawn(&mut c, "tusk launch -n 2")
        .wait(std::time::Duration::from_secs(900))
        .success();
    assert!(ok, "{}", std::fs::read_to_string(&log).unwrap());
    let o = Command::new(tusk)
        .args(["eval", "--model", &model2, "--data", &test, "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m2: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let hr2 = m2["hr@10"].as_f64().unwrap();
    eprintln!("MovieLens-100K test, 2 workers: HR@10 {hr2:.4} (1 process: {hr:.4})");
    assert!(
        (hr2 - hr).abs() <= 0.01,
        "2 workers HR@10 {hr2}, 1 process {hr}"
    );

    let pairs = dir.path().join("pairs.csv");
    std::fs::write(&pairs, "user_id,item_id\n1,1\n1,50\n943,1682\n").unwrap();
    let scores = dir.path().join("scores.csv");
    let o = Command::new(tusk)
        .args(["predict", "--model", &model, "--input"])
        .arg(&pairs)
        .arg("--output")
        .arg(&scores)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&scores).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "user_id,item_id,score");
    assert_eq!(lines.len(), 4);
    assert!(lines[3].starts_with("943,1682,"));

    // Pairs only: the version's entity tables supply each user's history, so every test row
    // scores exactly as it does with its history in the row.
    let predict = |input: &std::path::Path, output: &std::path::Path| {
        let o = Command::new(tusk)
            .args(["predict", "--model", &model, "--input"])
            .arg(input)
            .arg("--output")
            .arg(output)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let with_history = dir.path().join("test-scores.csv");
    predict(std::path::Path::new(&test), &with_history);
    // No field holds a comma (history is space-separated ids).
    let text = std::fs::read_to_string(&with_history).unwrap();
    let mut lines = text.lines().map(|l| l.split(',').collect::<Vec<_>>());
    let h = lines.next().unwrap();
    let col = |n: &str| h.iter().position(|c| *c == n).unwrap();
    let (u, i, s) = (col("user_id"), col("item_id"), col("score"));
    let full: Vec<(String, String, String)> = lines
        .map(|rec| (rec[u].to_string(), rec[i].to_string(), rec[s].to_string()))
        .collect();
    assert_eq!(full.len(), 943 * 101);
    let pairs = dir.path().join("test-pairs.csv");
    let mut text = String::from("user_id,item_id\n");
    for (u, i, _) in &full {
        text.push_str(&format!("{u},{i}\n"));
    }
    std::fs::write(&pairs, text).unwrap();
    let pair_scores = dir.path().join("test-pair-scores.csv");
    let note = predict(&pairs, &pair_scores);
    assert!(!note.contains("lacks the model's column"), "{note}");
    let got = common::score_column(&pair_scores);
    let want: Vec<String> = full.into_iter().map(|(_, _, s)| s).collect();
    assert_eq!(
        got, want,
        "pairs-only scores differ from scores with history"
    );
}

/// `tusk preprocess movielens` of `udata` into `dir/data`; returns the data directory and the
/// `--set`s pointing the example's config at it.
fn prepare(udata: &std::path::Path, dir: &std::path::Path) -> (std::path::PathBuf, Vec<String>) {
    let data = dir.join("data");
    let o = Command::new(env!("CARGO_BIN_EXE_tusk"))
        .args(["preprocess", "movielens", "--input"])
        .arg(udata)
        .arg("--output")
        .arg(&data)
        .args(["--negatives", "0", "--validation", "--history", "5"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sets = ["train", "validation", "test"]
        .iter()
        .map(|s| format!("data.{s}={}", data.join(s).display()))
        .chain(["user_id", "item_id"].map(|k| {
            format!(
                "data.entities.{k}={}",
                data.join("entities").join(k).display()
            )
        }))
        .collect();
    (data, sets)
}

/// Issue 9: the MovieLens example (early stopping on HR@10) killed with SIGKILL at random
/// moments across the whole run — before and after its best epoch — and resumed each time,
/// ends with exactly the tensors of a run that was never killed: locally and with the model on
/// a real HDFS.
#[test]
fn movielens_killed_anywhere_resumes_to_the_uninterrupted_model() {
    use std::time::{Duration, Instant};
    use tusk_testkit::Proc;
    let Some(udata) = common::movielens() else {
        return;
    };
    let tusk = env!("CARGO_BIN_EXE_tusk");
    let dir = tempfile::tempdir().unwrap();
    let (_, mut sets) = prepare(&udata, dir.path());
    sets.push("train.checkpoint_every=150".to_string());
    let config = tusk_testkit::repo_root().join("examples/movielens/config.toml");
    let train = |model: &str, log: &std::path::Path| {
        let mut c = Command::new(tusk);
        c.arg("train")
            .arg(&config)
            .args(["--model", model, "--resume"]);
        for s in &sets {
            c.args(["--set", s]);
        }
        c.stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        c
    };
    let storage = tusk_storage::Storage::new().unwrap();

    // The uninterrupted run.
    let clean = dir.path().join("clean").display().to_string();
    let t0 = Instant::now();
    let mut p = Proc::spawn(
        &mut train(&clean, &dir.path().join("clean.log")),
        "clean run",
    );
    assert!(p.wait(Duration::from_secs(900)).success());
    let full = t0.elapsed();
    let clean_store = tusk_train::ModelStore::open(&storage, &clean).unwrap();
    let reference = clean_store.load(None).unwrap();
    let state = &reference.meta.state;
    let best = state.best.expect("validation was monitored").1;
    assert!(
        best < state.epoch,
        "early stopping kept epoch {best} of {}",
        state.epoch
    );
    eprintln!(
        "uninterrupted: {} epochs in {full:.1?}, best epoch {best}",
        state.epoch
    );

    let mut dfs = None;
    let mut models = vec![dir.path().join("killed").display().to_string()];
    if let Some(d) = tusk_testkit::MiniDfs::start(1) {
        models.push(format!("{}/movielens/model", d.hdfs_url()));
        dfs = Some(d);
    }
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for model in &models {
        let store = tusk_train::ModelStore::open(&storage, model).unwrap();
        // Where the newest committed version stands: (epoch, global step), zeros when none.
        let committed = || {
            store.latest().unwrap().map_or((0, 0), |v| {
                let m = store.manifest(v).unwrap();
                (m.epoch, m.global_step)
            })
        };
        let log = dir.path().join("killed.log");
        let (mut kills, mut kills_after_best, mut scale) = (0, 0, 1.0f64);
        loop {
            assert!(
                kills < 80,
                "{model}: still not finished after {kills} kills"
            );
            let before = committed().1;
            let mut p = Proc::spawn(&mut train(model, &log), "killed run");
            // Kill at a random moment within 3–18% of the uninterrupted run (longer after a
            // kill that let nothing commit: remote storage is slower), until two kills have
            // landed after the best epoch; then let it finish.
            if kills_after_best < 2 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let frac = 0.03 + (rng % 1000) as f64 / 1000.0 * 0.15;
                let wait = full.mul_f64(frac * scale).max(Duration::from_millis(300));
                if p.wait_for(wait).is_none() {
                    p.kill();
                    kills += 1;
                    let (epoch, step) = committed();
                    if epoch >= best {
                        kills_after_best += 1;
                    }
                    if step == before {
                        scale *= 1.5;
                    }
                    continue;
                }
            }
            let status = p.wait(Duration::from_secs(900));
            let err = std::fs::read_to_string(&log).unwrap();
            assert!(status.success(), "{model}: {err}");
            // The process that finished the run restored the best epoch itself (unless the
            // last kill came after the final commit).
            assert!(
                err.contains(&format!("keeping epoch {best} ")) || err.contains("already finished"),
                "{model}: {err}"
            );
            break;
        }
        eprintln!("{model}: {kills} kills, {kills_after_best} after the best epoch");
        let got = store.load(None).unwrap();
        assert!(got.meta.state.finished);
        assert_eq!(got.meta.state.best, reference.meta.state.best, "{model}");
        assert!(
            got.params == reference.params,
            "{model}: dense weights differ"
        );
        assert!(
            got.table == reference.table,
            "{model}: embedding tables differ"
        );
        assert!(got.adam_m == reference.adam_m && got.adam_v == reference.adam_v);
        let histories = got.meta.state.history.iter().zip(&state.history);
        for (a, b) in histories {
            assert_eq!(a.metrics, b.metrics, "{model}: epoch {}", a.epoch);
        }
    }
    drop(dfs);
}

/// Issue 11: the MovieLens example trained by 2 workers against 2 embedding servers, in
/// `sync` mode and in `async` mode with staleness 4: async's test HR@10 is at most 0.01 below
/// sync's, and no pull ever ran more than 4 steps ahead of the slowest worker (each server
/// records the furthest lead it allowed; the run reports the maximum).
#[test]
fn movielens_async_servers_reach_the_sync_quality() {
    let Some(udata) = common::movielens() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (data, sets) = prepare(&udata, dir.path());
    let config = tusk_testkit::repo_root().join("examples/movielens/config.toml");
    let run = |name: &str, mode: &[&str]| -> (f64, String) {
        let mut all = sets.clone();
        all.extend(mode.iter().map(|s| s.to_string()));
        let (m, log) =
            common::train_on_servers_and_eval(dir.path(), name, &config, &all, &data.join("test"));
        (m["hr@10"].as_f64().unwrap(), log)
    };
    let (sync_hr, _) = run("sync", &["train.embedding=\"sync\""]);
    let (async_hr, log) = run("async", &["train.embedding=\"async\"", "train.staleness=4"]);
    let leads: Vec<u64> = log
        .lines()
        .filter_map(|l| {
            l.split("pulls ran at most ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(!leads.is_empty(), "no staleness report in the log:\n{log}");
    assert!(
        leads.iter().all(|&l| l <= 4),
        "a pull ran more than 4 steps ahead: {leads:?}"
    );
    eprintln!(
        "MovieLens-100K test, 2 workers + 2 servers: HR@10 sync {sync_hr:.4}, async (staleness 4) {async_hr:.4}; max lead {leads:?}"
    );
    // One-sided: stale reads must not cost more than 0.01 of HR@10. Async runs are not
    // deterministic and land on either side of sync by about the seed-to-seed spread (a release
    // run of bench/ps_bench.py gave async 0.0117 *above* sync); above is not a failure.
    assert!(
        async_hr >= sync_hr - 0.01,
        "async HR@10 {async_hr} is more than 0.01 below sync {sync_hr}"
    );
}
