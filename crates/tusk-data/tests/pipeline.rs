//! The input pipeline on real files: encoding, statistics, shuffling, resuming, negatives.

use std::collections::HashSet;
use std::sync::Arc;

use tusk_data::features::{missing_key, text_key};
use tusk_data::{BatchOptions, FeatureConfig, FeatureSpace, NegativeSampler, Source, batches};
use tusk_embedding::feature_key;
use tusk_storage::Storage;

fn csv(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn cfg(sparse: &[&str], dense: &[&str], label: &str) -> FeatureConfig {
    FeatureConfig {
        sparse: sparse.iter().map(|s| s.to_string()).collect(),
        dense: dense.iter().map(|s| s.to_string()).collect(),
        label: label.into(),
        positive: None,
        weight: None,
    }
}

fn opts(batch: usize, shuffle: usize, seed: u64, skip: u64) -> BatchOptions {
    BatchOptions {
        batch_size: batch,
        shuffle_buffer: shuffle,
        seed,
        skip_batches: skip,
        with_label: true,
        group: None,
        negatives: None,
        prefetch: 2,
        shard: None,
        shard_by_rows: false,
        entities: None,
    }
}

#[test]
fn statistics_standardise_and_flag_missing_values() {
    let dir = tempfile::tempdir().unwrap();
    let f = csv(dir.path(), "t.csv", "u,x,y\n42,1,1\nab,3,0\n,,1\n");
    let storage = Storage::new().unwrap();
    let src = Source::open(&storage, &f).unwrap();
    let space = FeatureSpace::fit(&src, cfg(&["u"], &["x"], "y"), |_| {}).unwrap();
    // x: values 1 and 3 → mean 2, sample std √2; one missing → flagged
    assert_eq!(space.dense[0].mean, 2.0);
    assert!((space.dense[0].std - 2f64.sqrt()).abs() < 1e-12);
    assert!(space.dense[0].flag);
    assert_eq!(space.dense_width(), 2);
    assert_eq!((space.rows, space.positives), (3, 2));
    let b: Vec<_> = batches(src, Arc::new(space), opts(8, 0, 0, 0))
        .map(Result::unwrap)
        .collect();
    assert_eq!(b.len(), 1);
    let b = &b[0];
    // "42" keys like the integer 42; a missing id has its own key
    assert_eq!(
        b.keys,
        vec![feature_key("u", 42), text_key("u", b"ab"), missing_key("u")]
    );
    let s = 2f32.sqrt();
    assert_eq!(b.dense, vec![-1.0 / s, 0.0, 1.0 / s, 0.0, 0.0, 1.0]);
    assert_eq!(b.labels, vec![1.0, 0.0, 1.0]);
}

#[test]
fn bad_labels_and_columns_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::new().unwrap();
    let f = csv(dir.path(), "t.csv", "u,r,s\n1,1,a\n2,3,b\n");
    let src = Source::open(&storage, &f).unwrap();
    let e = FeatureSpace::fit(&src, cfg(&["u"], &[], "r"), |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("features.label") && e.contains("3") && e.contains("0 or 1"),
        "{e}"
    );
    let e = FeatureSpace::fit(&src, cfg(&["u"], &[], "s"), |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("features.positive"), "{e}");
    let mut c = cfg(&["u"], &[], "s");
    c.positive = Some("a".into());
    FeatureSpace::fit(&src, c, |_| {}).unwrap();
    let e = FeatureSpace::fit(&src, cfg(&["v"], &[], "r"), |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("features.sparse") && e.contains("`v`") && e.contains("u, r, s"),
        "{e}"
    );
    let e = FeatureSpace::fit(&src, cfg(&["u"], &["s"], "r"), |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("column `s`") && e.contains("row 0"), "{e}");
}

#[test]
fn shuffling_is_seeded_and_skipping_resumes_the_same_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("u,y\n");
    for i in 0..1000 {
        text.push_str(&format!("{i},{}\n", i % 2));
    }
    let f = csv(dir.path(), "t.csv", &text);
    let storage = Storage::new().unwrap();
    let src = Source::open(&storage, &f).unwrap();
    let space = Arc::new(FeatureSpace::fit(&src, cfg(&["u"], &[], "y"), |_| {}).unwrap());
    let run = |seed, skip| -> Vec<Vec<u64>> {
        batches(src.clone(), space.clone(), opts(64, 100, seed, skip))
            .map(|b| b.unwrap().keys)
            .collect()
    };
    let a = run(1, 0);
    assert_eq!(a, run(1, 0));
    assert_ne!(a, run(2, 0));
    assert_eq!(a[5..], run(1, 5)[..]);
    let all: HashSet<u64> = a.iter().flatten().copied().collect();
    assert_eq!(all.len(), 1000, "every row exactly once");
    let in_order: Vec<u64> = (0..64).map(|i| feature_key("u", i)).collect();
    assert_ne!(a[0], in_order);
}

#[test]
fn sampled_negatives_keep_the_user_and_avoid_its_positives() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("user,item,y\n");
    for u in 0..20 {
        for i in 0..5 {
            text.push_str(&format!("{u},{},1\n", (u + i) % 30));
        }
    }
    let f = csv(dir.path(), "t.csv", &text);
    let storage = Storage::new().unwrap();
    let src = Source::open(&storage, &f).unwrap();
    let space = FeatureSpace::fit(&src, cfg(&["user", "item"], &[], "y"), |_| {}).unwrap();
    let ns = NegativeSampler::build(&src, &space, "user", &["item".into()], 3).unwrap();
    assert_eq!(ns.items(), 24);
    let mut o = opts(1000, 0, 9, 0);
    o.negatives = Some(Arc::new(ns));
    let b: Vec<_> = batches(src, Arc::new(space), o)
        .map(Result::unwrap)
        .collect();
    let b = &b[0];
    assert_eq!(b.size, 400);
    let positives: HashSet<(u64, u64)> = b
        .keys
        .chunks(2)
        .zip(&b.labels)
        .filter(|(_, y)| **y == 1.0)
        .map(|(k, _)| (k[0], k[1]))
        .collect();
    for (row, k) in b.keys.chunks(2).enumerate() {
        if b.labels[row] == 0.0 {
            assert!(
                !positives.contains(&(k[0], k[1])),
                "negative {row} is a positive"
            );
        }
    }
    // each positive is followed by its 3 negatives, same user
    for g in b.keys.chunks(8) {
        assert!(g.chunks(2).all(|k| k[0] == g[0]));
    }
}

/// Files are read in parallel and their statistics merged in file order: the same statistics
/// as one file holding every row (to rounding), and the first bad row in file order is the
/// one reported.
#[test]
fn statistics_over_many_files_match_one_file_and_report_the_first_error() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::new().unwrap();
    let mut all = String::from("u,x,y\n");
    for f in 0..5 {
        let mut part = String::from("u,x,y\n");
        for r in 0..(200 + f * 37) {
            let x = if r % 11 == 0 {
                String::new()
            } else {
                format!("{}", (r * 7 + f * 1000) % 313)
            };
            let line = format!("{r},{x},{}\n", (r + f) % 2);
            part.push_str(&line);
            all.push_str(&line);
        }
        csv(dir.path(), &format!("part-{f}.csv"), &part);
    }
    let one = csv(dir.path(), "all.csv", &all);
    let c = cfg(&["u"], &["x"], "y");
    let glob = format!("{}/part-*.csv", dir.path().display());
    let many =
        FeatureSpace::fit(&Source::open(&storage, &glob).unwrap(), c.clone(), |_| {}).unwrap();
    let single =
        FeatureSpace::fit(&Source::open(&storage, &one).unwrap(), c.clone(), |_| {}).unwrap();
    assert_eq!((many.rows, many.positives), (single.rows, single.positives));
    let (a, b) = (&many.dense[0], &single.dense[0]);
    assert!(
        (a.mean - b.mean).abs() < 1e-12 * b.mean.abs(),
        "{} vs {}",
        a.mean,
        b.mean
    );
    assert!(
        (a.std - b.std).abs() < 1e-12 * b.std,
        "{} vs {}",
        a.std,
        b.std
    );
    assert_eq!(a.flag, b.flag);
    // Bad labels in parts 3 and 1: part 1 is named, whichever thread reads it.
    for f in [3, 1] {
        csv(
            dir.path(),
            &format!("part-{f}.csv"),
            "u,x,y\n1,2,1\n2,3,7\n",
        );
    }
    let e = FeatureSpace::fit(&Source::open(&storage, &glob).unwrap(), c, |_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("part-1.csv") && !e.contains("part-3.csv"), "{e}");
}

/// Each rank's part of an epoch: disjoint, together every row once. With fewer files than
/// ranks (or `shard_by_rows`) rank r takes rows r, r+N, …, so the union of the ranks' k-th
/// batches is one process's k-th batch of N times the size; with enough files, whole files.
#[test]
fn ranks_read_disjoint_parts_that_cover_the_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::new().unwrap();
    let mut one = String::from("u,y\n");
    for f in 0..4 {
        let mut part = String::from("u,y\n");
        for r in 0..(30 + f) {
            let line = format!("{},{}\n", f * 1000 + r, r % 2);
            part.push_str(&line);
            one.push_str(&line);
        }
        csv(dir.path(), &format!("p-{f}.csv"), &part);
    }
    let single = csv(dir.path(), "one.csv", &one);
    let glob = format!("{}/p-*.csv", dir.path().display());
    let space = Arc::new(
        FeatureSpace::fit(
            &Source::open(&storage, &single).unwrap(),
            cfg(&["u"], &[], "y"),
            |_| {},
        )
        .unwrap(),
    );
    let keys = |url: &str, shard: Option<(usize, usize)>, by_rows: bool, batch: usize| {
        let mut o = opts(batch, 0, 3, 0);
        o.shard = shard;
        o.shard_by_rows = by_rows;
        batches(Source::open(&storage, url).unwrap(), space.clone(), o)
            .map(|b| b.unwrap().keys)
            .collect::<Vec<Vec<u64>>>()
    };
    let all: Vec<u64> = keys(&single, None, false, 8).concat();
    assert_eq!(all.len(), 126);
    for (url, by_rows) in [(&single, false), (&glob, true), (&glob, false)] {
        for n in [2, 3, 4] {
            let parts: Vec<Vec<Vec<u64>>> = (0..n)
                .map(|r| keys(url, Some((r, n)), by_rows, 8 / n.min(4)))
                .collect();
            let mut seen: Vec<u64> = parts.iter().flatten().flatten().copied().collect();
            seen.sort_unstable();
            let mut want = all.clone();
            want.sort_unstable();
            assert_eq!(
                seen, want,
                "{url} N={n} by_rows={by_rows}: not every row exactly once"
            );
            if url == &single && n == 2 {
                // rows r, r+2, …: interleaving the ranks' streams gives the source order
                let (a, b) = (parts[0].concat(), parts[1].concat());
                let merged: Vec<u64> = (0..all.len())
                    .map(|i| if i % 2 == 0 { a[i / 2] } else { b[i / 2] })
                    .collect();
                assert_eq!(merged, all);
            }
        }
    }
}

/// A tusk dataset (TFRecord shards + manifest) of `n` rows: u (int), x (float), y (0/1).
fn dataset(storage: &Storage, dir: &std::path::Path, n: i64) -> String {
    use tusk_records::example::{FloatList, Int64List, Kind, from_features};
    let rows: Vec<_> = (0..n)
        .map(|i| {
            from_features([
                (
                    "u".to_string(),
                    Kind::Int64List(Int64List { value: vec![i % 7] }),
                ),
                (
                    "x".to_string(),
                    Kind::FloatList(FloatList {
                        value: vec![(i as f32).sin() * 3.0],
                    }),
                ),
                (
                    "y".to_string(),
                    Kind::Int64List(Int64List {
                        value: vec![i % 3 / 2],
                    }),
                ),
            ])
        })
        .collect();
    write_dataset(storage, dir, &rows)
}

/// A tusk dataset (3 TFRecord shards + manifest) of these Examples.
fn write_dataset(
    storage: &Storage,
    dir: &std::path::Path,
    rows: &[tusk_records::example::Example],
) -> String {
    use tusk_records::dataset::{Format, Placement, Pos, SchemaInference, ShardedWriter, encode};
    use tusk_records::tfrecord::Compression;
    let mut inf = SchemaInference::default();
    for (i, ex) in rows.iter().enumerate() {
        let pos = Pos {
            file: "rows",
            index: i as u64,
            offset: 0,
        };
        inf.add(&encode(ex), &pos).unwrap();
    }
    let (schema, _) = inf.finish(false).unwrap();
    let out = storage.open(dir.to_str().unwrap()).unwrap();
    let mut w = ShardedWriter::create(
        &out,
        Format::TfRecord(Compression::None),
        3,
        schema,
        Placement::RoundRobin,
    )
    .unwrap();
    for ex in rows {
        w.write_example(ex).unwrap();
    }
    w.finish().unwrap();
    dir.display().to_string()
}

/// Statistics of a tusk dataset are computed once and kept in its `_derived/` directory: a
/// later run reads exactly what the pass computed; another config gets its own file; a file
/// that does not parse is recomputed and reported; a new dataset in the directory clears them;
/// a CSV (no manifest, may change) is computed every time.
#[test]
fn statistics_are_kept_with_a_dataset() {
    use tusk_data::StatsOrigin;
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::new().unwrap();
    let url = dataset(&storage, &dir.path().join("d"), 1000);
    let src = Source::open(&storage, &url).unwrap();
    let c = cfg(&["u"], &["x"], "y");
    let fitted = FeatureSpace::fit(&src, c.clone(), |_| {}).unwrap();
    let (first, o1) = FeatureSpace::fit_kept(&src, c.clone(), |_| {}).unwrap();
    let StatsOrigin::ComputedAndKept(file) = o1 else {
        panic!("{o1:?}")
    };
    assert!(file.contains("/d/_derived/feature-stats-"), "{file}");
    assert_eq!(first, fitted);
    // Read back, bit for bit (f64 through JSON round-trips exactly).
    let src = Source::open(&storage, &url).unwrap();
    let (second, o2) = FeatureSpace::fit_kept(&src, c.clone(), |_| {}).unwrap();
    assert_eq!(o2, StatsOrigin::Kept(file.clone()));
    assert_eq!(second, fitted);
    assert_eq!(
        second.dense[0].mean.to_bits(),
        fitted.dense[0].mean.to_bits()
    );
    // Another config: its own file.
    let (_, o3) = FeatureSpace::fit_kept(&src, cfg(&["u"], &[], "y"), |_| {}).unwrap();
    assert!(
        matches!(&o3, StatsOrigin::ComputedAndKept(f) if f != &file),
        "{o3:?}"
    );
    // A damaged file: recomputed, reported, never trusted.
    std::fs::write(&file, b"{not json").unwrap();
    let (third, o4) = FeatureSpace::fit_kept(&src, c.clone(), |_| {}).unwrap();
    assert_eq!(third, fitted);
    assert!(
        matches!(&o4, StatsOrigin::Computed(Some(w)) if w.contains("does not parse") && w.contains(&file)),
        "{o4:?}"
    );
    // A new dataset written where the old one was (manifest deleted) clears what was kept.
    std::fs::remove_file(dir.path().join("d/_manifest.json")).unwrap();
    dataset(&storage, &dir.path().join("d"), 500);
    let left = std::fs::read_dir(dir.path().join("d/_derived"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "files left in _derived");
    let src = Source::open(&storage, &url).unwrap();
    let (fourth, o5) = FeatureSpace::fit_kept(&src, c.clone(), |_| {}).unwrap();
    assert!(matches!(o5, StatsOrigin::ComputedAndKept(_)), "{o5:?}");
    assert_eq!(fourth.rows, 500);
    // CSV: computed each time, nothing written.
    let f = csv(dir.path(), "t.csv", "u,x,y\n1,2,1\n2,3,0\n");
    let src = Source::open(&storage, &f).unwrap();
    let (_, o6) = FeatureSpace::fit_kept(&src, c, |_| {}).unwrap();
    assert_eq!(o6, StatsOrigin::Computed(None));
}

/// A column that holds lists in the training records is a bag: the same column in a CSV
/// (as `tusk predict` writes it: values separated by spaces) encodes to the same keys, while
/// a single-valued text column keeps its spaces.
#[test]
fn a_bag_reads_the_same_from_records_and_from_csv() {
    use tusk_records::example::{BytesList, Int64List, Kind, from_features};
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::new().unwrap();
    let rows: Vec<_> = (0..6i64)
        .map(|i| {
            from_features([
                (
                    "h".to_string(),
                    Kind::Int64List(Int64List {
                        value: (0..i % 3).map(|k| 10 + k + i).collect(),
                    }),
                ),
                (
                    "city".to_string(),
                    Kind::BytesList(BytesList {
                        value: vec![b"new york".to_vec()],
                    }),
                ),
                (
                    "y".to_string(),
                    Kind::Int64List(Int64List { value: vec![i % 2] }),
                ),
            ])
        })
        .collect();
    let train = write_dataset(&storage, &dir.path().join("train"), &rows);
    let src = Source::open(&storage, &train).unwrap();
    let space = FeatureSpace::fit(&src, cfg(&["h", "city"], &[], "y"), |_| {}).unwrap();
    assert_eq!(space.bags, vec!["h".to_string()]);
    let f = csv(
        dir.path(),
        "p.csv",
        "h,city,y\n3 17,new york,1\n 4 ,,0\n,rome,1\n",
    );
    let b: Vec<_> = batches(
        Source::open(&storage, &f).unwrap(),
        Arc::new(space.clone()),
        opts(8, 0, 0, 0),
    )
    .map(Result::unwrap)
    .collect();
    assert_eq!(
        b[0].keys,
        vec![
            feature_key("h", 3),
            feature_key("h", 17),
            text_key("city", b"new york"),
            feature_key("h", 4),
            missing_key("city"),
            missing_key("h"),
            text_key("city", b"rome"),
        ]
    );
    // the statistics kept with the dataset carry the bags too
    let (kept, _) = FeatureSpace::fit_kept(&src, space.config.clone(), |_| {}).unwrap();
    let (again, origin) = FeatureSpace::fit_kept(&src, space.config.clone(), |_| {}).unwrap();
    assert!(
        matches!(origin, tusk_data::StatsOrigin::Kept(_)),
        "{origin:?}"
    );
    assert_eq!(
        (kept.bags.clone(), again.bags),
        (space.bags.clone(), space.bags)
    );
}
