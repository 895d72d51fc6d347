//! Shared by the CLI tests: a CSV with learnable structure, a small NeuMF job over it, and
//! loading and comparing stored models.
#![allow(dead_code)]

pub mod yarn;

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

/// The small NeuMF job of [`write_csv`] data at `train` and `valid` (any URLs), `extra` lines
/// added to `[train]`.
pub fn neumf_config(train: &str, valid: &str, extra: &str) -> String {
    format!(
        r#"[data]
train = "{train}"
validation = "{valid}"
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
learning_rate = 0.005
batch_size = 32
{extra}
[eval]
monitor = "auc"
"#
    )
}

/// `tusk launch -n 2 --servers 2 -- train CONFIG --model DIR/NAME --set …` run to its end
/// (bounded, nothing left running), then `tusk eval --json` of the model on `test`.
pub fn train_on_servers_and_eval(
    dir: &Path,
    name: &str,
    config: &Path,
    sets: &[String],
    test: &Path,
) -> (serde_json::Value, String) {
    use std::process::Command;
    let tusk = env!("CARGO_BIN_EXE_tusk");
    let model = dir.join(name).display().to_string();
    let log = dir.join(format!("{name}.log"));
    let mut c = Command::new(tusk);
    c.env_remove("TUSK_JOB_SECRET")
        .env_remove("TUSK_EMBEDDING_SERVERS")
        .args(["launch", "-n", "2", "--servers", "2", "--", "train"])
        .arg(config)
        .args(["--model", &model]);
    for s in sets {
        c.args(["--set", s]);
    }
    c.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut p = tusk_testkit::Proc::spawn(&mut c, name);
    let launcher = p.id();
    let ok = p.wait(std::time::Duration::from_secs(1200)).success();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(ok, "{name}: {text}");
    assert!(
        tusk_testkit::group_members(launcher).is_empty(),
        "{name}: processes left"
    );
    let o = Command::new(tusk)
        .args(["eval", "--model", &model, "--data"])
        .arg(test)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (serde_json::from_slice(&o.stdout).unwrap(), text)
}

/// The newest version of the model at `model`.
pub fn load(model: &Path) -> Checkpoint {
    load_url(&model.display().to_string())
}

/// The newest version of the model at a URL.
pub fn load_url(model: &str) -> Checkpoint {
    let storage = Storage::new().unwrap();
    ModelStore::open(&storage, model)
        .unwrap()
        .load(None)
        .unwrap()
}

/// Every embedding row by key: its values, optimiser state and step count as bits (the same
/// rows whichever way a version was sharded).
pub fn rows_by_key(c: &Checkpoint) -> std::collections::BTreeMap<u64, (Vec<u32>, Vec<u32>, u32)> {
    let t = &c.table;
    let d = t.dim;
    let w = t.state.len() / t.keys.len().max(1);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    t.keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (
                *k,
                (
                    bits(&t.values[i * d..(i + 1) * d]),
                    bits(&t.state[i * w..(i + 1) * w]),
                    t.steps[i],
                ),
            )
        })
        .collect()
}

/// ‖a − b‖ / ‖b‖.
pub fn rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let n: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (d / n).sqrt()
}

/// The last column (`tusk predict`'s `score`) of every row of a CSV with a header.
pub fn score_column(csv: &Path) -> Vec<String> {
    std::fs::read_to_string(csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().to_string())
        .collect()
}

/// One HTTP/1.1 exchange with the server on 127.0.0.1:`port`: (status, response head, body);
/// `None` when the connection fails.
pub fn http_full(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.get(9..12)?.parse().ok()?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Some((code, head.to_string(), body.to_string()))
}

/// [`http_full`] without the head.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    http_full(port, method, path, body).map(|(c, _, b)| (c, b))
}

/// MovieLens-100K's u.data (`../shared/data/movielens-100k/`, not redistributable), or `None`
/// (a loud skip) outside CI.
pub fn movielens() -> Option<std::path::PathBuf> {
    let udata = tusk_testkit::repo_root().join("../shared/data/movielens-100k/u.data");
    let found = if udata.exists() {
        Ok(udata.clone())
    } else {
        Err(format!("{} not found", udata.display()))
    };
    tusk_testkit::require("MovieLens-100K", "TUSK_REQUIRE_MOVIELENS", found)
}
