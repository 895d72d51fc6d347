//! Data-parallel training on the in-process backend (ranks are threads; the same ring code
//! as the socket backend): N workers with global batch B follow the one-process run with
//! batch B, and every replica holds the same bytes.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{data_dir, dlrm_config, run_to, with};
use tusk_collective::{Communicator, threads};
use tusk_storage::Storage;
use tusk_train::trainer::train_with;
use tusk_train::{Config, ModelStore, Quiet, Summary, TrainOptions};

/// Train `cfg` as `n` ranks on threads; each rank's outcome (errors as text).
fn run_ranks(
    cfg: &Config,
    url: &Path,
    n: usize,
    stop: Option<u64>,
    (fusion, bucket): (Option<usize>, Option<usize>),
) -> Vec<Result<Summary, String>> {
    let comms = threads::group(n, Duration::from_secs(60));
    let hs: Vec<_> = comms
        .into_iter()
        .map(|c| {
            let cfg = cfg.clone();
            let url = url.display().to_string();
            std::thread::spawn(move || {
                let storage = Storage::new().unwrap();
                let mut c = Some(c);
                train_with(
                    &storage,
                    Some(cfg),
                    &TrainOptions {
                        model_url: url,
                        resume: false,
                        stop_after_steps: stop,
                        timeline: None,
                        fusion_threshold: fusion,
                        bucket_bytes: bucket,
                        embedding_servers: None,
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

/// ‖a − b‖ / ‖b‖.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let n: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (d / n).sqrt()
}

#[test]
fn n_workers_follow_one_worker_with_the_same_global_batch() {
    let data = data_dir();
    let storage = Storage::new().unwrap();
    // Source order (no shuffle), so the global batches are the same rows for every N.
    let cfg = with(
        &dlrm_config(data.path(), "checkpoint_every = 50"),
        &["train.shuffle_buffer=0", "train.epochs=1"],
    );
    let one = data.path().join("one");
    run_to(&storage, &cfg, &one, false, Some(100));
    let base = ModelStore::open(&storage, &one.display().to_string())
        .unwrap()
        .load(None)
        .unwrap();
    assert_eq!(base.meta.state.global_step, 100);
    // Every exchange: the dense gradient fused into the all-gather of the row gradients (the
    // default at this size), or in its own ring all-reduce (fusion threshold 0) — after the
    // backward pass (bucket 0), in one bucket during it (the default), or one bucket per layer.
    let exchanges = [
        (None, None),
        (Some(0), Some(0)),
        (Some(0), None),
        (Some(0), Some(1)),
    ];
    for (n, ex) in [2, 4].into_iter().flat_map(|n| exchanges.map(|e| (n, e))) {
        let (fusion, bucket) = ex;
        let url = data.path().join(format!("n{n}-{fusion:?}-{bucket:?}"));
        let sums: Vec<Summary> = run_ranks(&cfg, &url, n, Some(100), ex)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let ring = fusion == Some(0);
        assert!(
            sums.iter().all(|s| s.allreduce.is_some() == ring),
            "N={n} {ex:?}: all-reduce time reported {:?}",
            sums[0].allreduce
        );
        if bucket == Some(0) {
            // Reduced after the backward pass: nothing hidden.
            assert!(
                sums.iter()
                    .all(|s| s.allreduce.is_none_or(|a| a.hidden() == 0.0))
            );
        }
        assert!(
            sums.iter()
                .all(|s| s.replica_digest == sums[0].replica_digest),
            "N={n}: replicas differ"
        );
        let ck = ModelStore::open(&storage, &url.display().to_string())
            .unwrap()
            .load(None)
            .unwrap();
        assert_eq!(ck.meta.state.global_step, 100);
        let r = rel(&ck.params, &base.params);
        eprintln!("N={n} {ex:?}: dense weights {r:e} relative to N=1");
        assert!(r < 1e-5, "N={n}: dense weights differ by {r:e} (relative)");
        assert_eq!(ck.table.keys.len(), base.table.keys.len(), "N={n}: rows");
        let d = base.table.dim;
        let mut ours = std::collections::HashMap::new();
        for (i, k) in ck.table.keys.iter().enumerate() {
            ours.insert(*k, &ck.table.values[i * d..(i + 1) * d]);
        }
        let mut theirs = Vec::new();
        let mut mine = Vec::new();
        for (i, k) in base.table.keys.iter().enumerate() {
            theirs.extend_from_slice(&base.table.values[i * d..(i + 1) * d]);
            mine.extend_from_slice(ours[k]);
        }
        let r = rel(&mine, &theirs);
        eprintln!("N={n} {ex:?}: embedding rows {r:e} relative to N=1");
        assert!(r < 1e-5, "N={n}: embedding rows differ by {r:e} (relative)");
        let loss = |c: &tusk_train::Checkpoint| {
            c.meta.state.epoch_loss_sum / c.meta.state.epoch_rows as f64
        };
        assert!(
            (loss(&ck) - loss(&base)).abs() < 1e-5,
            "N={n}: running loss"
        );
    }
}

/// 4000 rows strided over 3 ranks, one row each per step: at step 1334 only rank 0 has a row,
/// so the others take part in every bucket's all-reduce with zeros and the epoch ends
/// everywhere at once.
#[test]
fn ranks_without_rows_take_part_in_every_bucket() {
    let data = data_dir();
    let cfg = with(
        &dlrm_config(data.path(), ""),
        &[
            "train.batch_size=3",
            "train.shuffle_buffer=0",
            "train.epochs=2",
        ],
    );
    let sums: Vec<Summary> = run_ranks(&cfg, &data.path().join("m"), 3, None, (Some(0), Some(1)))
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for s in &sums {
        assert_eq!(s.replica_digest, sums[0].replica_digest, "replicas differ");
        assert_eq!(s.history.len(), 2);
        // 1333 steps of 3 rows, then one where only rank 0 has a row: the epoch ends.
        assert_eq!(s.steps, 2 * 1333);
        assert_eq!(s.allreduce.unwrap().steps, 2 * 1334);
    }
}

#[test]
fn a_global_batch_that_does_not_split_is_refused() {
    let data = data_dir();
    let cfg = with(&dlrm_config(data.path(), ""), &["train.batch_size=30"]);
    for r in run_ranks(&cfg, &data.path().join("m"), 4, None, (None, None)) {
        let e = r.map(|_| ()).unwrap_err();
        assert!(
            e.contains("train.batch_size") && e.contains("does not split evenly over 4 workers"),
            "{e}"
        );
    }
}

/// Evaluation split over 3 ranks gives exactly one process's metrics, and HR@K / NDCG@K equal
/// an independent computation from per-positive lists (`metrics::hit_rate_at_k`).
#[test]
fn evaluation_split_over_ranks_equals_one_process() {
    let data = data_dir();
    let storage = Storage::new().unwrap();
    let cfg = with(
        &dlrm_config(data.path(), ""),
        &["train.epochs=1", "eval.group=\"user_id\"", "eval.k=5"],
    );
    let url = data.path().join("m");
    run_to(&storage, &cfg, &url, false, None);
    let scorer = tusk_train::Scorer::load(&storage, &url.display().to_string(), None).unwrap();
    let test = data.path().join("test.csv").display().to_string();
    let src = tusk_data::Source::open(&storage, &test).unwrap();
    let one = tusk_train::evaluate(&scorer.view(), &src).unwrap();
    let comms = threads::group(3, Duration::from_secs(60));
    let split: Vec<tusk_train::Metrics> = std::thread::scope(|s| {
        let hs: Vec<_> = comms
            .into_iter()
            .map(|mut c| {
                let (scorer, src) = (&scorer, &src);
                s.spawn(move || tusk_train::evaluate_on(&scorer.view(), src, &mut c).unwrap())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for m in &split {
        assert_eq!(m, &one, "a rank's metrics differ from one process's");
    }
    // Independent HR@5 / NDCG@5: one list per positive, [positive, group's negatives…].
    let it = tusk_data::batches(
        src.clone(),
        scorer.space.clone(),
        tusk_data::BatchOptions {
            batch_size: 64,
            shuffle_buffer: 0,
            seed: 0,
            skip_batches: 0,
            with_label: true,
            group: Some("user_id".into()),
            negatives: None,
            prefetch: 2,
            shard: None,
            shard_by_rows: false,
            entities: None,
        },
    );
    let mut by_group: std::collections::BTreeMap<u64, (Vec<f32>, Vec<f32>)> = Default::default();
    for b in it {
        let b = b.unwrap();
        let z = scorer.logits(&b);
        for ((z, y), g) in z.iter().zip(&b.labels).zip(&b.groups) {
            let p = tusk_model::models::sigmoid(*z);
            let e = by_group.entry(*g).or_default();
            if *y == 1.0 { e.0.push(p) } else { e.1.push(p) }
        }
    }
    let mut lists = Vec::new();
    for (pos, neg) in by_group.values() {
        for p in pos {
            let mut l = vec![*p];
            l.extend_from_slice(neg);
            lists.push(l);
        }
    }
    let refs: Vec<&[f32]> = lists.iter().map(Vec::as_slice).collect();
    let hr = tusk_model::metrics::hit_rate_at_k(&refs, 5);
    let ndcg = tusk_model::metrics::ndcg_at_k(&refs, 5);
    assert_eq!(one["hr@5"], hr);
    assert!(
        (one["ndcg@5"] - ndcg).abs() < 1e-12,
        "{} vs {ndcg}",
        one["ndcg@5"]
    );
    assert!(hr > 0.0 && hr < 1.0);
}
