//! Shared by the CLI tests: a CSV with learnable structure, a small NeuMF job over it, and
//! loading and comparing stored models.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::Path;

use tusk_storage::Storage;
use tusk_train::{Checkpoint, ModelStore};

/// 4 clusters of users and items; a user clicks items of its cluster (10% noise).
pub fn write_csv(path: &Path, rows: usize, seed: u64) {
    let mut next = tusk_testkit::splitmix(seed);
    let mut out = String::from("user_id,item_id,price,label,rating,city\n");
    for _ in 0..rows {
        let u = next() % 150;
        let i = next() % 80;
        let y = (u % 4 == i % 4) ^ (next().is_multiple_of(10));
        let rating = next() % 3;
        let city = ["oslo", "lima", "pune"][(u % 3) as usize];
        writeln!(out, "{u},{i},{}.5,{},{rating},{city}", i % 9, u8::from(y)).unwrap();
    }
    std::fs::write(path, out).unwrap();
}

/// A small NeuMF job on `rows` rows of [`write_csv`] in `dir` (2 epochs, batch 32, a version
/// every 50 steps); returns the config's path.
pub fn small_job(dir: &Path, rows: usize) -> String {
    write_csv(&dir.join("train.csv"), rows, 7);
    let cfg = format!(
        r#"[data]
train = "{d}/train.csv"
[features]
sparse = ["user_id", "item_id"]
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
batch_size = 32
learning_rate = 0.005
checkpoint_every = 50
"#,
        d = dir.display()
    );
    let p = dir.join("c.toml");
    std::fs::write(&p, cfg).unwrap();
    p.display().to_string()
}

/// The newest version of the model at `model`.
pub fn load(model: &Path) -> Checkpoint {
    let storage = Storage::new().unwrap();
    ModelStore::open(&storage, &model.display().to_string())
        .unwrap()
        .load(None)
        .unwrap()
}

/// ‖a − b‖ / ‖b‖.
pub fn rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let n: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (d / n).sqrt()
}
