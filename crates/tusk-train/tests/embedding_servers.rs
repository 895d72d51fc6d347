//! Training with embedding servers: rows sharded across server processes' worth of state
//! (servers on threads here, reached over real TCP sockets; workers on threads with the
//! in-process collective). `sync` must give exactly the replicated run.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::{data_dir, dlrm_config, with};
use tusk_collective::{Communicator, threads};
use tusk_ps::{Server, ServerOptions};
use tusk_storage::Storage;
use tusk_train::trainer::train_with;
use tusk_train::{Checkpoint, Config, EmbeddingServers, ModelStore, Quiet, Summary, TrainOptions};

const SECRET: &[u8] = b"test-secret";

/// `shards` servers for `workers` workers on ephemeral ports, serving until the run finishes.
fn start_servers(shards: usize, workers: usize) -> Vec<String> {
    (0..shards)
        .map(|shard| {
            let s = Server::bind(
                "127.0.0.1:0",
                ServerOptions {
                    shard,
                    shards,
                    workers,
                    secret: SECRET.to_vec(),
                    timeout: Duration::from_secs(60),
                },
            )
            .unwrap();
            let addr = s.addr().unwrap().to_string();
            std::thread::spawn(move || s.run());
            addr
        })
        .collect()
}

/// Train `cfg` as `n` workers on threads, with embedding servers at `addrs` (if any).
fn run_workers(
    cfg: &Config,
    url: &Path,
    n: usize,
    addrs: &[String],
    resume: bool,
    stop: Option<u64>,
) -> Vec<Result<Summary, String>> {
    let comms = threads::group(n, Duration::from_secs(60));
    let hs: Vec<_> = comms
        .into_iter()
        .map(|c| {
            let cfg = cfg.clone();
            let url = url.display().to_string();
            let servers = (!addrs.is_empty()).then(|| EmbeddingServers {
                addrs: addrs.to_vec(),
                secret: SECRET.to_vec(),
                connect_timeout: Duration::from_secs(10),
                timeout: Duration::from_secs(60),
            });
            std::thread::spawn(move || {
                let storage = Storage::new().unwrap();
                let mut c = Some(c);
                train_with(
                    &storage,
                    Some(cfg),
                    &TrainOptions {
                        model_url: url,
                        resume,
                        stop_after_steps: stop,
                        embedding_servers: servers,
                        ..Default::default()
                    },
                    &mut Quiet,
                    &mut |_| Ok(Box::new(c.take().unwrap()) as Box<dyn Communicator>),
                )
                .map_err(|e| e.to_string())
            })
        })
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).collect()
}

fn newest(url: &Path) -> Checkpoint {
    let storage = Storage::new().unwrap();
    ModelStore::open(&storage, &url.display().to_string())
        .unwrap()
        .load(None)
        .unwrap()
}

/// Per key: values, optimiser state and step count, as bits.
fn rows_by_key(ck: &Checkpoint) -> HashMap<u64, (Vec<u32>, Vec<u32>, u32)> {
    let t = &ck.table;
    let d = t.dim;
    let w = if t.keys.is_empty() {
        0
    } else {
        t.state.len() / t.keys.len()
    };
    t.keys
        .iter()
        .enumerate()
        .map(|(r, &k)| {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
            (
                k,
                (
                    bits(&t.values[r * d..(r + 1) * d]),
                    bits(&t.state[r * w..(r + 1) * w]),
                    t.steps[r],
                ),
            )
        })
        .collect()
}

fn assert_same_model(a: &Checkpoint, b: &Checkpoint, what: &str) {
    assert_eq!(a.meta.state.global_step, b.meta.state.global_step, "{what}");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    assert!(
        bits(&a.params) == bits(&b.params),
        "{what}: dense weights differ"
    );
    assert!(
        bits(&a.adam_m) == bits(&b.adam_m),
        "{what}: dense moments differ"
    );
    let (ra, rb) = (rows_by_key(a), rows_by_key(b));
    assert_eq!(ra.len(), rb.len(), "{what}: rows");
    for (k, r) in &ra {
        assert!(rb.get(k) == Some(r), "{what}: row {k:#x} differs");
    }
}

/// Async runs are not deterministic (pushes apply in arrival order): long enough to converge
/// that quality can be compared.
fn converged_config(dir: &Path) -> Config {
    with(
        &dlrm_config(dir, ""),
        &["train.epochs=10", "eval.patience=3"],
    )
}

fn base_config(dir: &Path) -> Config {
    with(
        &dlrm_config(dir, "checkpoint_every = 25"),
        &["train.epochs=2", "eval.patience=5"],
    )
}

#[test]
fn sync_servers_equal_the_replicated_run_bit_for_bit() {
    let data = data_dir();
    let cfg = base_config(data.path());
    let replicated = data.path().join("replicated");
    for r in run_workers(&cfg, &replicated, 2, &[], false, Some(100)) {
        r.unwrap();
    }
    let sync = with(&cfg, &["train.embedding=\"sync\""]);
    let url = data.path().join("sync");
    let addrs = start_servers(2, 2);
    for r in run_workers(&sync, &url, 2, &addrs, false, Some(100)) {
        r.unwrap();
    }
    assert_same_model(
        &newest(&url),
        &newest(&replicated),
        "N=2 S=2 sync vs replicated",
    );
    // Sync with async's bound of 0 is the same mode.
    let zero = with(&cfg, &["train.embedding=\"async\"", "train.staleness=0"]);
    let url0 = data.path().join("async0");
    let addrs = start_servers(3, 2);
    for r in run_workers(&zero, &url0, 2, &addrs, false, Some(100)) {
        r.unwrap();
    }
    assert_same_model(&newest(&url0), &newest(&replicated), "N=2 S=3 staleness 0");
}

#[test]
fn one_worker_with_servers_equals_one_process_through_the_whole_run() {
    let data = data_dir();
    let cfg = base_config(data.path());
    let local = data.path().join("local");
    let a = run_workers(&cfg, &local, 1, &[], false, None)
        .remove(0)
        .unwrap();
    let url = data.path().join("served");
    let addrs = start_servers(2, 1);
    let sync = with(&cfg, &["train.embedding=\"sync\""]);
    let b = run_workers(&sync, &url, 1, &addrs, false, None)
        .remove(0)
        .unwrap();
    // The same metrics every epoch (evaluation reads the servers' rows) and the same model.
    for (x, y) in a.history.iter().zip(&b.history) {
        assert_eq!(x.metrics, y.metrics, "epoch {}", x.epoch);
    }
    assert_eq!(a.chosen_epoch, b.chosen_epoch);
    assert_same_model(&newest(&url), &newest(&local), "N=1 S=2 vs one process");
}

#[test]
fn resume_with_more_servers_reshards_and_matches_the_undisturbed_run() {
    let data = data_dir();
    let cfg = with(&base_config(data.path()), &["train.embedding=\"sync\""]);
    let whole = data.path().join("whole");
    let addrs = start_servers(2, 2);
    for r in run_workers(&cfg, &whole, 2, &addrs, false, Some(100)) {
        r.unwrap();
    }
    let split = data.path().join("split");
    let addrs = start_servers(2, 2);
    for r in run_workers(&cfg, &split, 2, &addrs, false, Some(50)) {
        r.unwrap();
    }
    // The group comes back with 3 servers: the stored rows are split three ways.
    let addrs = start_servers(3, 2);
    for r in run_workers(&cfg, &split, 2, &addrs, true, Some(50)) {
        r.unwrap();
    }
    assert_same_model(&newest(&split), &newest(&whole), "S=2 → S=3 resume");
}

#[test]
fn async_servers_train_and_report_progress() {
    let data = data_dir();
    let cfg = with(
        &converged_config(data.path()),
        &["train.embedding=\"async\"", "train.staleness=2"],
    );
    let url = data.path().join("async");
    let addrs = start_servers(2, 2);
    let sums: Vec<Summary> = run_workers(&cfg, &url, 2, &addrs, false, None)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let replicated = run_workers(
        &converged_config(data.path()),
        &data.path().join("replicated"),
        2,
        &[],
        false,
        None,
    )
    .remove(0)
    .unwrap();
    let auc = |s: &Summary| s.history[s.chosen_epoch - 1].metrics["test"]["auc"];
    let (a, r) = (auc(&sums[0]), auc(&replicated));
    eprintln!("test AUC: async {a:.4}, replicated {r:.4}");
    // Stale rows cost a little quality at most; a model that learned nothing scores 0.5.
    assert!(
        a > r - 0.03 && a > 0.7,
        "async test AUC {a}, replicated {r}"
    );
    // Every worker evaluated the same rows.
    let metrics = |s: &Summary| {
        s.history
            .iter()
            .map(|h| h.metrics.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(metrics(&sums[0]), metrics(&sums[1]));
    let ck = newest(&url);
    assert!(ck.meta.state.finished);
}

#[test]
fn sync_mode_without_servers_is_a_clear_error() {
    let data = data_dir();
    let cfg = with(&base_config(data.path()), &["train.embedding=\"sync\""]);
    let e = run_workers(&cfg, &data.path().join("m"), 1, &[], false, None)
        .remove(0)
        .unwrap_err();
    assert!(
        e.contains("train.embedding") && e.contains("--servers"),
        "{e}"
    );
    let bad = Config::parse(
        "t",
        &cfg.to_toml(),
        &["train.embedding=\"sharded\"".to_string()],
    )
    .unwrap_err()
    .to_string();
    assert!(
        bad.contains("train.embedding") && bad.contains("sync"),
        "{bad}"
    );
}

#[test]
fn servers_write_their_shards_and_the_manifest_lists_them() {
    let data = data_dir();
    let cfg = with(&base_config(data.path()), &["train.embedding=\"sync\""]);
    let url = data.path().join("sharded");
    let addrs = start_servers(3, 2);
    for r in run_workers(&cfg, &url, 2, &addrs, false, Some(60)) {
        r.unwrap();
    }
    let storage = Storage::new().unwrap();
    let store = ModelStore::open(&storage, &url.display().to_string()).unwrap();
    let v = store.latest().unwrap().unwrap();
    let dir = url.join(format!("versions/{v:06}"));
    let names: Vec<String> = store
        .manifest(v)
        .unwrap()
        .files
        .iter()
        .map(|f| f.name.clone())
        .collect();
    for i in 0..3 {
        let n = format!("embeddings-{i:05}-of-00003.safetensors");
        assert!(names.contains(&n), "{names:?}");
        assert!(dir.join(&n).exists());
    }
    assert!(
        !names.iter().any(|n| n == "embeddings.safetensors"),
        "{names:?}"
    );
    // Each shard holds exactly its keys; together the version's rows.
    let ck = store.load(Some(v)).unwrap();
    let mut total = 0;
    for i in 0..3 {
        let b = std::fs::read(dir.join(format!("embeddings-{i:05}-of-00003.safetensors"))).unwrap();
        let t = tusk_embedding::file::decode_table(&b, ck.table.dim).unwrap();
        assert!(t.keys.iter().all(|&k| tusk_embedding::shard_of(k, 3) == i));
        assert!(t.keys.windows(2).all(|w| w[0] < w[1]), "sorted by key");
        total += t.keys.len();
    }
    assert_eq!(total, ck.table.keys.len());
    // A damaged shard is refused, naming it.
    let victim = dir.join("embeddings-00001-of-00003.safetensors");
    let mut b = std::fs::read(&victim).unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    std::fs::write(&victim, b).unwrap();
    let e = store.load(Some(v)).unwrap_err().to_string();
    assert!(
        e.contains("embeddings-00001-of-00003.safetensors is damaged"),
        "{e}"
    );
    // A shard missing from the manifest (a hand-edited version): the load names it.
    let manifest = dir.join("MANIFEST.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&text).unwrap();
    m["files"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "embeddings-00001-of-00003.safetensors");
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let e = store.load(Some(v)).unwrap_err().to_string();
    assert!(e.contains("lacks embedding shard 1 of 3"), "{e}");
    // And a shard file gone from storage.
    std::fs::write(&manifest, text).unwrap();
    std::fs::remove_file(&victim).unwrap();
    let e = store.load(Some(v)).unwrap_err().to_string();
    assert!(e.contains("embeddings-00001-of-00003.safetensors"), "{e}");
}

/// Prefetching the next step's rows (async, staleness ≥ 1) trains as well as pulling them
/// when needed, and every worker still evaluates the same rows.
#[test]
fn async_prefetch_trains_as_well_as_pulling_on_demand() {
    let data = data_dir();
    let auc = |prefetch: &str, name: &str| {
        let cfg = with(
            &converged_config(data.path()),
            &[
                "train.embedding=\"async\"",
                "train.staleness=1",
                &format!("train.prefetch={prefetch}"),
            ],
        );
        let addrs = start_servers(2, 2);
        let sums: Vec<Summary> = run_workers(&cfg, &data.path().join(name), 2, &addrs, false, None)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(sums[0].history.len(), sums[1].history.len());
        for (a, b) in sums[0].history.iter().zip(&sums[1].history) {
            assert_eq!(a.metrics, b.metrics, "workers evaluated different rows");
        }
        let s = &sums[0];
        s.history[s.chosen_epoch - 1].metrics["test"]["auc"]
    };
    let (on, off) = (auc("true", "prefetch"), auc("false", "on-demand"));
    eprintln!("test AUC: prefetch {on:.4}, on demand {off:.4}");
    assert!(
        (on - off).abs() < 0.03 && on > 0.7,
        "prefetch {on}, on demand {off}"
    );
}

/// Frequency admission gives the same rows, counts included, replicated and on servers, and
/// holds fewer rows than admitting every id.
#[test]
fn min_count_on_servers_equals_replicated_and_saves_rows() {
    let data = data_dir();
    let cfg = with(&base_config(data.path()), &["train.min_count=40"]);
    let replicated = data.path().join("replicated");
    for r in run_workers(&cfg, &replicated, 2, &[], false, Some(100)) {
        r.unwrap();
    }
    let sync = with(&cfg, &["train.embedding=\"sync\""]);
    let url = data.path().join("sync");
    let addrs = start_servers(2, 2);
    for r in run_workers(&sync, &url, 2, &addrs, false, Some(100)) {
        r.unwrap();
    }
    let (a, b) = (newest(&url), newest(&replicated));
    assert_same_model(&a, &b, "min_count: sync vs replicated");
    let pending = |c: &Checkpoint| {
        let mut p: Vec<(u64, u32)> = c
            .table
            .pending_keys
            .iter()
            .copied()
            .zip(c.table.pending_counts.iter().copied())
            .collect();
        p.sort_unstable();
        p
    };
    assert_eq!(pending(&a), pending(&b));
    assert!(!pending(&a).is_empty(), "some ids wait for admission");
    let all = data.path().join("all");
    for r in run_workers(&base_config(data.path()), &all, 2, &[], false, Some(100)) {
        r.unwrap();
    }
    let everyone = newest(&all).table.keys.len();
    assert!(
        a.table.keys.len() < everyone,
        "{} rows with admission, {everyone} without",
        a.table.keys.len()
    );
}
