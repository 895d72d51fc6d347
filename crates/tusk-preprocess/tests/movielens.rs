//! The leave-one-out protocol, checked by hand on a tiny file and in full on MovieLens-100K.

use std::collections::{HashMap, HashSet};

use tusk_preprocess::movielens::{MovieLensConfig, preprocess};
use tusk_records::dataset::{Input, Manifest};
use tusk_records::example::Kind;
use tusk_storage::Storage;

/// (user, item, label) rows of a dataset, in order.
fn rows(storage: &Storage, url: &str) -> Vec<(i64, i64, f32)> {
    let mut out = Vec::new();
    Input::open(storage, url, None)
        .unwrap()
        .for_each_example(|ex, _| {
            let f = &ex.features.unwrap().feature;
            let int = |k: &str| match &f[k].kind {
                Some(Kind::Int64List(l)) => l.value[0],
                other => panic!("{k}: {other:?}"),
            };
            let label = match &f["label"].kind {
                Some(Kind::FloatList(l)) => l.value[0],
                other => panic!("label: {other:?}"),
            };
            out.push((int("user_id"), int("item_id"), label));
            Ok(true)
        })
        .unwrap();
    out
}

#[test]
fn leave_one_out_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    // user 1: latest is a tie at ts 50 between items 3 and 7 → 7 (the larger id) is the test
    // positive, 3 the validation positive. user 2: latest is item 2.
    let data =
        "1\t1\t5\t10\n1\t3\t4\t50\n1\t7\t3\t50\n1\t5\t2\t20\n2\t2\t5\t99\n2\t1\t1\t1\n2\t4\t3\t5\n";
    // user 3 rated two items only: a test positive, no validation one.
    let input = dir.path().join("u.data");
    std::fs::write(&input, format!("{data}3\t8\t1\t1\n3\t6\t1\t2\n")).unwrap();
    let storage = Storage::new().unwrap();
    let out = dir.path().join("out");
    let cfg = MovieLensConfig {
        negatives: 2,
        eval_negatives: 3,
        validation: true,
        shards: 2,
        ..Default::default()
    };
    let s = preprocess(
        &storage,
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        &cfg,
    )
    .unwrap();
    assert_eq!((s.ratings, s.users, s.items, s.test_users), (9, 3, 8, 3));
    let test = rows(&storage, out.join("test").to_str().unwrap());
    // per user: positive then 3 negatives never rated by that user
    let rated: HashMap<i64, HashSet<i64>> = [
        (1, HashSet::from([1, 3, 7, 5])),
        (2, HashSet::from([2, 1, 4])),
        (3, HashSet::from([8, 6])),
    ]
    .into();
    assert_eq!(test.len(), 12);
    assert_eq!(test[0], (1, 7, 1.0));
    assert_eq!(test[4], (2, 2, 1.0));
    assert_eq!(test[8], (3, 6, 1.0));
    for block in test.chunks(4) {
        let user = block[0].0;
        let negs: HashSet<i64> = block[1..].iter().map(|r| r.1).collect();
        assert_eq!(negs.len(), 3, "distinct negatives");
        for r in &block[1..] {
            assert_eq!((r.0, r.2), (user, 0.0));
            assert!(!rated[&user].contains(&r.1));
        }
    }
    let val = rows(&storage, out.join("validation").to_str().unwrap());
    assert_eq!(val[0], (1, 3, 1.0));
    assert_eq!(val[4], (2, 4, 1.0));
    assert_eq!(
        val.len(),
        8,
        "user 3 has only two ratings: no validation row"
    );
    let train = rows(&storage, out.join("train").to_str().unwrap());
    let positives: HashSet<(i64, i64)> = train
        .iter()
        .filter(|r| r.2 == 1.0)
        .map(|r| (r.0, r.1))
        .collect();
    assert_eq!(positives, HashSet::from([(1, 1), (1, 5), (2, 1), (3, 8)]));
    assert_eq!(train.len(), 4 * 3);
    for r in train.iter().filter(|r| r.2 == 0.0) {
        assert!(!rated[&r.0].contains(&r.1), "negative {r:?} was rated");
    }
    assert_eq!(s.train_positives, 4);
    let m = Manifest::load(&storage.open(out.join("train").to_str().unwrap()).unwrap()).unwrap();
    assert_eq!(
        m.shards.iter().map(|s| s.records).collect::<Vec<_>>(),
        vec![6, 6]
    );
}

#[test]
fn bad_lines_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::new().unwrap();
    for (data, needle) in [
        (
            "1\t2\t3\t4\n1\tx\t3\t4\n",
            "u.data:2: item id 'x' is not an integer",
        ),
        ("1\t2\t3\n", "u.data:1: missing timestamp"),
        ("", "no ratings"),
    ] {
        let input = dir.path().join("u.data");
        std::fs::write(&input, data).unwrap();
        let out = dir.path().join(format!("out{}", data.len()));
        let err = preprocess(
            &storage,
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            &MovieLensConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(needle), "{err}");
    }
}

/// The real data set: 943 test users, 99,057 training positives, no test positive in training.
#[test]
fn movielens_100k() {
    let path = tusk_testkit::repo_root().join("../shared/data/movielens-100k/u.data");
    let Some(path) = tusk_testkit::require(
        "MovieLens-100K (../shared/data/movielens-100k/u.data)",
        "TUSK_REQUIRE_DATA",
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{} not found", path.display()))
        },
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::new().unwrap();
    let out = dir.path().join("ml");
    let s = preprocess(
        &storage,
        path.to_str().unwrap(),
        out.to_str().unwrap(),
        &MovieLensConfig::default(),
    )
    .unwrap();
    assert_eq!(s.ratings, 100_000);
    assert_eq!(s.test_users, 943);
    assert_eq!(s.train_positives, 99_057);
    assert_eq!(s.train_rows, 99_057 * 5);
    assert_eq!(s.test_rows, 943 * 101);
    let test = rows(&storage, out.join("test").to_str().unwrap());
    let test_pos: HashSet<(i64, i64)> = test
        .iter()
        .filter(|r| r.2 == 1.0)
        .map(|r| (r.0, r.1))
        .collect();
    assert_eq!(test_pos.len(), 943);
    let train = rows(&storage, out.join("train").to_str().unwrap());
    assert_eq!(train.iter().filter(|r| r.2 == 1.0).count(), 99_057);
    assert!(
        train.iter().all(|r| !test_pos.contains(&(r.0, r.1))),
        "a test positive is in training"
    );
    // Deterministic for a seed.
    let out2 = dir.path().join("ml2");
    preprocess(
        &storage,
        path.to_str().unwrap(),
        out2.to_str().unwrap(),
        &MovieLensConfig::default(),
    )
    .unwrap();
    assert_eq!(rows(&storage, out2.join("train").to_str().unwrap()), train);
}
