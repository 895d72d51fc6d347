//! Shared by the training tests: a small synthetic table with learnable structure, a DLRM
//! config over it, and a run helper.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::Path;

use tusk_storage::Storage;
use tusk_train::{Config, Quiet, TrainOptions, train};

/// Users and items fall in 4 clusters; a user likes items of its cluster. Rows:
/// `user_id,item_id,age,city,clicked` with `clicked` yes/no, some ages missing.
pub fn write_csv(path: &Path, rows: usize, seed: u64) {
    let mut next = tusk_testkit::splitmix(seed);
    let mut out = String::from("user_id,item_id,age,city,clicked\n");
    for _ in 0..rows {
        let u = next() % 120;
        let i = next() % 60;
        let liked = u % 4 == i % 4;
        let noise = next().is_multiple_of(10);
        let y = liked ^ noise;
        let age = if next().is_multiple_of(7) {
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

pub fn dlrm_config(dir: &Path, extra: &str) -> Config {
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

pub fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_csv(&dir.path().join("train.csv"), 4000, 1);
    write_csv(&dir.path().join("valid.csv"), 800, 2);
    write_csv(&dir.path().join("test.csv"), 800, 3);
    dir
}

/// `cfg` with `--set`-style overrides.
pub fn with(cfg: &Config, sets: &[&str]) -> Config {
    let sets: Vec<String> = sets.iter().map(|s| (*s).to_string()).collect();
    Config::parse("t", &cfg.to_toml(), &sets).unwrap()
}

pub fn run_to(
    storage: &Storage,
    cfg: &Config,
    url: &Path,
    resume: bool,
    stop: Option<u64>,
) -> tusk_train::Summary {
    train(
        storage,
        Some(cfg.clone()),
        &TrainOptions {
            model_url: url.display().to_string(),
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
}
