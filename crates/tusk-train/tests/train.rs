//! End-to-end training tests on small synthetic tables with learnable structure.

use std::fmt::Write as _;
use std::path::Path;

use tusk_storage::Storage;
use tusk_train::{Config, ModelStore, Quiet, Scorer, TrainOptions, train};

/// Users and items fall in 4 clusters; a user likes items of its cluster. Rows:
/// `user_id,item_id,age,city,clicked` with `clicked` yes/no, some ages missing.
fn write_csv(path: &Path, rows: usize, seed: u64) {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut out = String::from("user_id,item_id,age,city,clicked\n");
    for _ in 0..rows {
        let u = next() % 120;
        let i = next() % 60;
        let liked = u % 4 == i % 4;
        let noise = next() % 10 == 0;
        let y = liked ^ noise;
        let age = if next() % 7 == 0 {
            String::new()
        } else {
            format!("{}", 20 + (u % 40))
        };
        let city = ["oslo", "lima", "pune"][(u % 3) as usize];
        writeln!(
            out,
            "u{u},{i},{age},{city},{}",
            if y { "yes" } else { "no" }
        )
        .unwrap();
    }
    std::fs::write(path, out).unwrap();
}

fn dlrm_config(dir: &Path, extra: &str) -> Config {
    let text = format!(
        r#"
[data]
train = "{d}/train.csv"
validation = "{d}/valid.csv"
test = "{d}/test.csv"
[features]
sparse = ["user_id", "item_id", "city"]
dense = ["age"]
label = "clicked"
positive = "yes"
[model]
kind = "dlrm"
emb_dim = 8
bottom = [8]
top = [16]
[train]
epochs = 3
batch_size = 32
learning_rate = 0.01
shuffle_buffer = 500
seed = 5
{extra}
[eval]
monitor = "auc"
patience = 2
"#,
        d = dir.display()
    );
    Config::parse("test.toml", &text, &[]).unwrap()
}

fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("train.csv"), 4000, 1);
    write_csv(&dir.path().join("valid.csv"), 800, 2);
    write_csv(&dir.path().join("test.csv"), 800, 3);
    dir
}

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
    let data = data_dir();
    let storage = Storage::new().unwrap();
    let cfg = dlrm_config(data.path(), "checkpoint_every = 7");
    let a = data.path().join("a");
    let b = data.path().join("b");
    let run = |url: &Path, resume: bool, stop: Option<u64>| {
        train(
            &storage,
            Some(cfg.clone()),
            &TrainOptions {
                model_url: url.display().to_string(),
                resume,
                stop_after_steps: stop,
            },
            &mut Quiet,
        )
        .unwrap()
    };
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
    // A save that died before its manifest: ignored.
    let half = model.join(format!("versions/{:06}", v + 1));
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("model.safetensors"), b"partial").unwrap();
    assert_eq!(store.latest().unwrap(), Some(v));
    store.load(None).unwrap();
    // The next save skips past the dead directory.
    let ck = store.load(None).unwrap();
    assert_eq!(store.save(&ck.as_ref()).unwrap(), v + 2);
    // A damaged file is refused with its name.
    let f = model.join(format!("versions/{:06}/model.safetensors", v + 2));
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
}
