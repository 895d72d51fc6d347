//! End-to-end training tests on small synthetic tables with learnable structure.

use std::path::Path;

use tusk_storage::Storage;
mod common;

use common::{data_dir, dlrm_config, run_to, with};
use tusk_train::{Config, ModelStore, Quiet, Scorer, TrainOptions, train};

#[test]
fn dlrm_learns_a_generic_csv_from_config_alone() {
    let data = data_dir();
    let storage = Storage::new().unwrap();
    let model = data.path().join("model");
    let cfg = dlrm_config(data.path(), "");
    let s = train(
        &storage,
        Some(cfg),
        &TrainOptions {
            model_url: model.display().to_string(),
            ..Default::default()
        },
        &mut Quiet,
    )
    .unwrap();
    let last = s.history.last().unwrap();
    let auc = last.metrics["test"]["auc"];
    // 10% label noise caps the AUC near 0.9; a model that learned nothing scores 0.5.
    assert!(auc > 0.8, "test AUC {auc}");
    let scorer = Scorer::load(&storage, &model.display().to_string(), None).unwrap();
    let src = tusk_data::Source::open(
        &storage,
        &data.path().join("test.csv").display().to_string(),
    )
    .unwrap();
    let m = scorer.evaluate(&src).unwrap();
    assert!((m["auc"] - s.history[s.chosen_epoch - 1].metrics["test"]["auc"]).abs() < 1e-9);
}

#[test]
fn resume_gives_the_same_weights_as_an_uninterrupted_run() {
    // Lazy row-wise Adam with uniform rows (the default), dense Adam with normal rows, and
    // frequency admission (the counts of ids still waiting are part of every version).
    for extra in [
        "",
        "init = \"normal\"\nembedding_adam = \"dense\"",
        "min_count = 30",
        // Each batch's rows computed in two blocks on two threads.
        "threads = 3",
    ] {
        resume_matches(extra);
    }
}

/// Issue 31: a step's rows computed in blocks on several threads repeat bit for bit for a
/// given number of threads; another number changes only the rounding of the dense gradient.
#[test]
fn compute_threads_repeat_bit_for_bit_and_change_only_rounding() {
    let data = data_dir();
    let storage = Storage::new().unwrap();
    let base = dlrm_config(data.path(), "");
    let run = |threads: usize, dir: &str| {
        let cfg = with(
            &base,
            &["train.batch_size=128", &format!("train.threads={threads}")],
        );
        let url = data.path().join(dir);
        let s = run_to(&storage, &cfg, &url, false, None);
        let ck = ModelStore::open(&storage, &url.display().to_string())
            .unwrap()
            .load(None)
            .unwrap();
        (s, ck)
    };
    let (sa, a) = run(3, "a");
    let (sb, b) = run(3, "b");
    let (sc, c) = run(1, "c");
    assert_eq!(
        a.params, b.params,
        "dense weights differ between identical runs"
    );
    assert_eq!(
        a.table, b.table,
        "embedding tables differ between identical runs"
    );
    assert_eq!(sa.history.len(), sb.history.len());
    for (x, y) in sa.history.iter().zip(&sb.history) {
        assert_eq!(x.train_loss.to_bits(), y.train_loss.to_bits());
    }
    // One thread: the same training up to rounding.
    let far = a
        .params
        .iter()
        .zip(&c.params)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0f32, f32::max);
    assert!(far < 1e-3, "1 vs 3 threads: weights {far} apart");
    for (x, y) in sa.history.iter().zip(&sc.history) {
        assert!(
            (x.train_loss - y.train_loss).abs() < 1e-4 * y.train_loss.abs(),
            "1 vs 3 threads: loss {} vs {}",
            y.train_loss,
            x.train_loss
        );
    }
}

fn resume_matches(extra: &str) {
    let data = data_dir();
    let storage = Storage::new().unwrap();
    let cfg = dlrm_config(data.path(), &format!("checkpoint_every = 7\n{extra}"));
    let a = data.path().join("a");
    let b = data.path().join("b");
    let run =
        |url: &Path, resume: bool, stop: Option<u64>| run_to(&storage, &cfg, url, resume, stop);
    run(&a, false, None);
    // Interrupted twice (mid-epoch, between checkpoints), resumed each time.
    let s1 = run(&b, false, Some(60));
    assert!(s1.interrupted);
    let s2 = run(&b, true, Some(150));
    assert!(s2.interrupted);
    let s3 = run(&b, true, None);
    assert!(!s3.interrupted);
    let sa = ModelStore::open(&storage, &a.display().to_string()).unwrap();
    let sb = ModelStore::open(&storage, &b.display().to_string()).unwrap();
    let (ca, cb) = (sa.load(None).unwrap(), sb.load(None).unwrap());
    assert_eq!(ca.params, cb.params, "dense weights differ");
    assert_eq!(ca.table, cb.table, "embedding tables differ");
    assert_eq!(ca.meta.state.history.len(), cb.meta.state.history.len());
    for (x, y) in ca.meta.state.history.iter().zip(&cb.meta.state.history) {
        assert_eq!(x.metrics, y.metrics);
        assert!((x.train_loss - y.train_loss).abs() < 1e-12);
    }
}

#[test]
fn uncommitted_and_damaged_versions_are_never_loaded() {
    let data = data_dir();
    let storage = Storage::new().unwrap();
    let model = data.path().join("m");
    let url = model.display().to_string();
    let cfg = dlrm_config(data.path(), "");
    let cfg = Config::parse("t", &cfg.to_toml().replace("epochs = 3", "epochs = 1"), &[]).unwrap();
    train(
        &storage,
        Some(cfg),
        &TrainOptions {
            model_url: url.clone(),
            ..Default::default()
        },
        &mut Quiet,
    )
    .unwrap();
    let store = ModelStore::open(&storage, &url).unwrap();
    let v = store.latest().unwrap().unwrap();
    // A save that died after claiming its directory, mid-way through its files: ignored.
    let half = model.join(format!("versions/{:06}", v + 1));
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join(".claim"), b"").unwrap();
    std::fs::write(half.join("model.safetensors"), b"partial").unwrap();
    assert_eq!(store.latest().unwrap(), Some(v));
    store.load(None).unwrap();
    let err = store.load(Some(v + 1)).unwrap_err().to_string();
    assert!(err.contains("is not committed"), "{err}");
    // One that wrote everything but died before its link: ignored too.
    let ck = store.load(None).unwrap();
    let full = model.join(format!("versions/{:06}", v + 2));
    std::fs::create_dir_all(&full).unwrap();
    for f in std::fs::read_dir(model.join(format!("versions/{v:06}"))).unwrap() {
        let f = f.unwrap();
        if f.file_name() != "NEXT" {
            std::fs::copy(f.path(), full.join(f.file_name())).unwrap();
        }
    }
    std::fs::write(full.join(".claim"), b"").unwrap();
    assert_eq!(store.versions().unwrap().last(), Some(&v));
    // The next save skips past the dead directories.
    assert_eq!(store.save(&ck.as_ref()).unwrap(), v + 3);
    assert_eq!(store.latest().unwrap(), Some(v + 3));
    assert_eq!(store.manifest(v + 3).unwrap().parent, Some(v));
    // A damaged file is refused with its name.
    let f = model.join(format!("versions/{:06}/model.safetensors", v + 3));
    let mut bytes = std::fs::read(&f).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    std::fs::write(&f, bytes).unwrap();
    let err = store.load(None).unwrap_err().to_string();
    assert!(err.contains("model.safetensors is damaged"), "{err}");
    // Older versions still load.
    store.load(Some(v)).unwrap();
}

#[test]
fn dense_weights_are_named_tensors_in_pytorch_layout() {
    let data = data_dir();
    let storage = Storage::new().unwrap();
    let model = data.path().join("m");
    let cfg = Config::parse(
        "t",
        &dlrm_config(data.path(), "")
            .to_toml()
            .replace("epochs = 3", "epochs = 1"),
        &[],
    )
    .unwrap();
    train(
        &storage,
        Some(cfg),
        &TrainOptions {
            model_url: model.display().to_string(),
            ..Default::default()
        },
        &mut Quiet,
    )
    .unwrap();
    let store = ModelStore::open(&storage, &model.display().to_string()).unwrap();
    let v = store.latest().unwrap().unwrap();
    let bytes = std::fs::read(model.join(format!("versions/{v:06}/model.safetensors"))).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    // bottom: age + its missing flag (2) → 8 → 8 (emb_dim); top: 16 → 1
    assert!(names.contains(&"bottom.0.weight"));
    assert_eq!(st.tensor("bottom.0.weight").unwrap().shape(), &[8, 2]);
    assert_eq!(st.tensor("top.1.weight").unwrap().shape(), &[1, 16]);
}

#[test]
fn model_store_resume_and_scoring_on_hdfs() {
    let Some(dfs) = tusk_testkit::MiniDfs::start(1) else {
        return;
    };
    let data = data_dir();
    let storage = Storage::new().unwrap();
    // Training data on HDFS too.
    let base = format!("{}/tusk-train-test", dfs.hdfs_url());
    for f in ["train.csv", "valid.csv", "test.csv"] {
        let bytes = std::fs::read(data.path().join(f)).unwrap();
        storage
            .open(&format!("{base}/{f}"))
            .unwrap()
            .write(bytes)
            .unwrap();
    }
    let text = dlrm_config(data.path(), "checkpoint_every = 40")
        .to_toml()
        .replace(&data.path().display().to_string(), &base)
        .replace("epochs = 3", "epochs = 2");
    let cfg = Config::parse("hdfs.toml", &text, &[]).unwrap();
    let model = format!("{base}/model");
    let run = |resume: bool, stop: Option<u64>| {
        train(
            &storage,
            Some(cfg.clone()),
            &TrainOptions {
                model_url: model.clone(),
                resume,
                stop_after_steps: stop,
                timeline: None,
                fusion_threshold: None,
                bucket_bytes: None,
                embedding_servers: None,
            },
            &mut Quiet,
        )
        .unwrap()
    };
    assert!(run(false, Some(90)).interrupted);
    let s = run(true, None);
    assert!(!s.interrupted);
    // Same weights as the same run on local storage, uninterrupted.
    let local = data.path().join("local");
    let local_cfg = dlrm_config(data.path(), "checkpoint_every = 40");
    let local_cfg = Config::parse(
        "l",
        &local_cfg.to_toml().replace("epochs = 3", "epochs = 2"),
        &[],
    )
    .unwrap();
    train(
        &storage,
        Some(local_cfg),
        &TrainOptions {
            model_url: local.display().to_string(),
            ..Default::default()
        },
        &mut Quiet,
    )
    .unwrap();
    let a = ModelStore::open(&storage, &model)
        .unwrap()
        .load(None)
        .unwrap();
    let b = ModelStore::open(&storage, &local.display().to_string())
        .unwrap()
        .load(None)
        .unwrap();
    assert_eq!(a.params, b.params);
    assert_eq!(a.table, b.table);
    // Batch scoring from HDFS to HDFS.
    let scorer = Scorer::load(&storage, &model, None).unwrap();
    let out = format!("{base}/scores.csv");
    let n =
        tusk_train::predict::predict(&storage, &scorer, &format!("{base}/test.csv"), &out, |_| {})
            .unwrap();
    assert_eq!(n.rows, 800);
    let text = String::from_utf8(storage.open(&out).unwrap().read().unwrap().to_vec()).unwrap();
    assert_eq!(text.lines().count(), 801);
    assert!(text.starts_with("user_id,item_id,age,city,clicked,score\n"));
    // TensorBoard events were written there as well.
    let scalars =
        tusk_board::read_scalars(&storage.open(&format!("{model}/events")).unwrap()).unwrap();
    assert!(
        scalars.contains_key("validation/auc"),
        "{:?}",
        scalars.keys()
    );
    // Writers racing on one HDFS model: one history, the others told whose it is.
    let ck = ModelStore::open(&storage, &local.display().to_string())
        .unwrap()
        .load(None)
        .unwrap();
    for round in 0..2 {
        writers_race(&storage, &format!("{base}/race{round}"), &ck);
    }
}

/// Issue 9: a run interrupted after its best validation epoch and resumed must still end with
/// the best epoch's weights (it used to keep the last epoch's while saying otherwise).
#[test]
fn resume_after_the_best_epoch_keeps_the_best_weights() {
    let data = data_dir();
    let storage = Storage::new().unwrap();
    // A large step size over-fits the noisy labels: validation logloss turns after a few
    // epochs and patience stops the run.
    let cfg = with(
        &dlrm_config(data.path(), "checkpoint_every = 40"),
        &[
            "train.learning_rate=0.05",
            "train.epochs=12",
            "eval.monitor=logloss",
            "eval.patience=2",
        ],
    );
    let clean = data.path().join("clean");
    let s = run_to(&storage, &cfg, &clean, false, None);
    let epochs = s.history.len();
    assert!(
        s.chosen_epoch < epochs,
        "the test needs a best epoch before the last: chose {} of {epochs}",
        s.chosen_epoch
    );
    let per_epoch = s.steps / epochs as u64;
    let best_end = per_epoch * s.chosen_epoch as u64;
    // Stop after the best epoch, twice, then finish.
    let killed = data.path().join("killed");
    let s1 = run_to(&storage, &cfg, &killed, false, Some(best_end + 7));
    assert!(s1.interrupted);
    let s2 = run_to(&storage, &cfg, &killed, true, Some(per_epoch + 11));
    assert!(s2.interrupted);
    let s3 = run_to(&storage, &cfg, &killed, true, None);
    assert_eq!(s3.chosen_epoch, s.chosen_epoch);
    let a = ModelStore::open(&storage, &clean.display().to_string()).unwrap();
    let b = ModelStore::open(&storage, &killed.display().to_string()).unwrap();
    let (ca, cb) = (a.load(None).unwrap(), b.load(None).unwrap());
    assert!(cb.meta.state.finished);
    assert_eq!(ca.params, cb.params, "dense weights differ");
    assert_eq!(ca.table, cb.table, "embedding tables differ");
    assert_eq!((ca.adam_m, ca.adam_v), (cb.adam_m, cb.adam_v));
    // And they are the best epoch's own version.
    let tip = b.latest().unwrap().unwrap();
    let best = b.find_epoch_end(tip, s.chosen_epoch).unwrap().unwrap();
    assert_eq!(b.load(Some(best)).unwrap().params, cb.params);
}

/// Issue 9: the same tensors give the same bytes; only the manifest (who, when, how fast)
/// differs between reruns.
#[test]
fn identical_runs_write_identical_version_files() {
    let data = data_dir();
    let storage = Storage::new().unwrap();
    let cfg = with(
        &dlrm_config(data.path(), "checkpoint_every = 50"),
        &["train.epochs=2"],
    );
    let (a, b) = (data.path().join("a"), data.path().join("b"));
    run_to(&storage, &cfg, &a, false, None);
    run_to(&storage, &cfg, &b, false, None);
    let sa = ModelStore::open(&storage, &a.display().to_string()).unwrap();
    let sb = ModelStore::open(&storage, &b.display().to_string()).unwrap();
    let versions = sa.versions().unwrap();
    assert!(versions.len() >= 4, "{versions:?}");
    assert_eq!(versions, sb.versions().unwrap());
    for v in versions {
        let (ma, mb) = (sa.manifest(v).unwrap(), sb.manifest(v).unwrap());
        assert_eq!(ma.files, mb.files, "version {v}");
        assert_ne!(ma.run.id, mb.run.id);
        for f in &ma.files {
            let rel = format!("versions/{v:06}/{}", f.name);
            let (x, y) = (
                std::fs::read(a.join(&rel)).unwrap(),
                std::fs::read(b.join(&rel)).unwrap(),
            );
            assert!(x == y, "{rel} differs between identical runs");
        }
    }
}

/// A small committed checkpoint to race with.
fn tiny_checkpoint(storage: &Storage, dir: &Path) -> tusk_train::Checkpoint {
    let url = dir.join("seed-model");
    let cfg = with(
        &dlrm_config(dir, ""),
        &["train.epochs=1", "eval.patience=1"],
    );
    run_to(storage, &cfg, &url, false, None);
    ModelStore::open(storage, &url.display().to_string())
        .unwrap()
        .load(None)
        .unwrap()
}

/// Writers racing on one model from threads: exactly one history survives, and every other
/// writer is told which run owns it.
fn writers_race(storage: &Storage, url: &str, ck: &tusk_train::Checkpoint) {
    use tusk_train::store::{RunInfo, encode};
    let store = ModelStore::open(storage, url).unwrap();
    let results: Vec<(RunInfo, Result<Vec<u64>, String>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                s.spawn(move || {
                    let run = RunInfo::new();
                    let mut w = store.writer(run.clone(), None);
                    let mut mine = Vec::new();
                    for _ in 0..5 {
                        match w.commit(encode(&ck.as_ref()).unwrap()) {
                            Ok(v) => mine.push(v),
                            Err(e) => return (run, Err(e.to_string())),
                        }
                    }
                    (run, Ok(mine))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<_> = results.iter().filter(|r| r.1.is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let (winner, mine) = (&winners[0].0, winners[0].1.as_ref().unwrap());
    assert_eq!(&store.versions().unwrap(), mine);
    for v in mine {
        assert_eq!(&store.manifest(*v).unwrap().run, winner);
    }
    for (run, r) in &results {
        if let Err(e) = r {
            assert!(e.contains(&winner.id), "{e}");
            assert!(e.contains(&run.id), "{e}");
            assert!(e.contains("another run committed to this model"), "{e}");
        }
    }
    store.load(None).unwrap();
}

#[test]
fn racing_writers_leave_one_history() {
    let data = data_dir();
    let storage = Storage::new().unwrap();
    let ck = tiny_checkpoint(&storage, data.path());
    for round in 0..20 {
        let url = data.path().join(format!("race{round}"));
        writers_race(&storage, &url.display().to_string(), &ck);
        writers_race(&storage, &format!("memory://race/{round}"), &ck);
    }
}

/// The same race on S3 (a real S3-compatible server): commits there are conditional puts and
/// multipart copies completed with If-None-Match, and exactly one history survives as well.
#[test]
fn racing_writers_on_s3_leave_one_history() {
    let Some(s3) = tusk_testkit::S3Server::start() else {
        return;
    };
    s3.create_bucket("tusk-race");
    let data = data_dir();
    let local = Storage::new().unwrap();
    let ck = tiny_checkpoint(&local, data.path());
    let storage = Storage::with_options(s3.env()).unwrap();
    for round in 0..3 {
        writers_race(&storage, &format!("s3://tusk-race/model{round}"), &ck);
    }
}

/// A first save killed after writing its files (manifest included) but before creating
/// `ROOT`: the model holds no version, and `--resume` starts from scratch past that
/// directory — it is not mistaken for versions of an older tusk (found by the MovieLens
/// kill -9 test).
#[test]
fn a_first_save_killed_before_its_commit_is_skipped_on_resume() {
    let data = data_dir();
    let storage = Storage::new().unwrap();
    let done = data.path().join("done");
    let cfg = with(
        &dlrm_config(data.path(), ""),
        &["train.epochs=1", "eval.patience=1"],
    );
    run_to(&storage, &cfg, &done, false, None);
    // The killed run's directory: every file of a version, as the save wrote them, no link.
    let model = data.path().join("killed");
    let dead = model.join("versions/000001");
    std::fs::create_dir_all(&dead).unwrap();
    for e in std::fs::read_dir(done.join("versions/000001")).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "NEXT" {
            std::fs::copy(e.path(), dead.join(e.file_name())).unwrap();
        }
    }
    std::fs::write(dead.join(".claim"), b"").unwrap();
    let url = model.display().to_string();
    let store = ModelStore::open(&storage, &url).unwrap();
    assert_eq!(store.latest().unwrap(), None);
    let err = store.load(None).unwrap_err().to_string();
    assert!(err.contains("no committed model version"), "{err}");
    assert!(!err.contains("older tusk"), "{err}");
    train(
        &storage,
        Some(cfg),
        &TrainOptions {
            model_url: url,
            resume: true,
            ..Default::default()
        },
        &mut Quiet,
    )
    .unwrap();
    let versions = store.versions().unwrap();
    assert_eq!(versions.first(), Some(&2), "{versions:?}");
    store.load(None).unwrap();
}

/// A model URL holding versions from before history links is refused, not written over.
#[test]
fn versions_without_history_links_are_refused() {
    let data = data_dir();
    let storage = Storage::new().unwrap();
    let model = data.path().join("old");
    let v1 = model.join("versions/000001");
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::write(v1.join("MANIFEST.json"), b"{\"version\": 1}").unwrap();
    std::fs::write(v1.join("model.safetensors"), b"old weights").unwrap();
    let cfg = with(&dlrm_config(data.path(), ""), &["train.epochs=1"]);
    let err = train(
        &storage,
        Some(cfg),
        &TrainOptions {
            model_url: model.display().to_string(),
            ..Default::default()
        },
        &mut Quiet,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("written by an older tusk"), "{err}");
    assert_eq!(
        std::fs::read(v1.join("model.safetensors")).unwrap(),
        b"old weights"
    );
    let store = ModelStore::open(&storage, &model.display().to_string()).unwrap();
    let err = store.load(None).unwrap_err().to_string();
    assert!(err.contains("older tusk"), "{err}");
}
