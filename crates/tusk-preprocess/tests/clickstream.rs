//! The shipped clickstream SQL on inputs small enough to check by hand, skew, and bad input.

use std::path::Path;

use serde_json::{Value, json};
use tusk_preprocess::sql::{self, ClickstreamJob, OutputSpec};
use tusk_records::dataset::{Format, Input, Manifest};
use tusk_records::example;
use tusk_records::tfrecord::Compression;
use tusk_storage::Storage;

const HEADER: &str =
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session";

fn job(input: &Path, output: &Path, negatives: usize, shards: usize) -> ClickstreamJob {
    ClickstreamJob {
        input: input.to_string_lossy().into_owned(),
        output: OutputSpec {
            url: output.to_string_lossy().into_owned(),
            format: Format::TfRecord(Compression::None),
            shards,
        },
        negatives,
        seed: 7,
        sql: sql::CLICKSTREAM_SQL.to_string(),
        sql_name: "clickstream.sql".into(),
        partitions: 2,
        memory_limit: None,
    }
}

fn records(storage: &Storage, url: &str) -> Vec<Value> {
    let mut out = Vec::new();
    Input::open(storage, url, None)
        .unwrap()
        .for_each_example(|ex, _| {
            let mut s = String::new();
            example::to_json(&ex, &mut s);
            out.push(serde_json::from_str(&s).unwrap());
            Ok(true)
        })
        .unwrap();
    out
}

fn write_logs(dir: &Path, days: &[(&str, &str)]) {
    for (day, rows) in days {
        let d = dir.join(format!("date={day}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("part-00000.csv"), format!("{HEADER}\n{rows}")).unwrap();
    }
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Golden test: every feature of every sample, worked out by hand from the nine events.
#[test]
fn golden_samples_checked_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    write_logs(
        &logs,
        &[
            (
                "2019-10-01",
                "2019-10-01 10:00:00 UTC,view,100,10,electronics.phone,acme,100.00,1,s1\n\
                 2019-10-01 10:01:00 UTC,cart,100,10,electronics.phone,acme,100.00,1,s1\n\
                 2019-10-01 10:02:00 UTC,purchase,100,10,electronics.phone,acme,100.00,1,s1\n\
                 2019-10-01 11:00:00 UTC,view,200,20,,bolt,50.00,1,s2\n\
                 2019-10-01 12:00:00 UTC,view,200,20,,bolt,50.00,2,s3\n\
                 2019-10-01 12:05:00 UTC,remove_from_cart,200,20,,bolt,50.00,2,s3\n",
            ),
            (
                "2019-10-02",
                "2019-10-02 09:00:00 UTC,view,300,10,electronics.phone,,10.00,1,s4\n\
                 2019-10-02 09:30:00 UTC,purchase,200,20,,bolt,50.00,2,s5\n\
                 2019-10-02 09:40:00 UTC,click,200,20,,bolt,50.00,2,s5\n",
            ),
        ],
    );
    let storage = Storage::new().unwrap();
    let out = dir.path().join("samples");
    let s = sql::clickstream(&storage, &job(&logs, &out, 0, 2), |_| {}).unwrap();
    assert_eq!(s.files, 2);
    assert_eq!(s.events, 9);
    assert_eq!(s.unknown_event_types, vec![("click".to_string(), 1)]);
    assert_eq!(
        s.rows,
        vec![("test".to_string(), 2), ("train".to_string(), 3)]
    );

    // user 1 (train day): 4 events (2 views, 1 cart, 1 purchase), avg price (3*100+50)/4,
    // favourite category 10 (strength 1+2+3 vs 1), last active the day before the test day.
    let user1 = json!({
        "u_events": {"int64": [4]}, "u_views": {"int64": [2]}, "u_carts": {"int64": [1]},
        "u_purchases": {"int64": [1]}, "u_active_days": {"int64": [1]},
        "u_recency_days": {"int64": [1]}, "u_avg_price": {"float": [87.5]},
        "u_top_category": {"int64": [10]}
    });
    // user 2: a view and a removal of item 200.
    let user2 = json!({
        "u_events": {"int64": [2]}, "u_views": {"int64": [1]}, "u_carts": {"int64": [0]},
        "u_purchases": {"int64": [0]}, "u_active_days": {"int64": [1]},
        "u_recency_days": {"int64": [1]}, "u_avg_price": {"float": [50.0]},
        "u_top_category": {"int64": [20]}
    });
    let item100 = json!({
        "i_users": {"int64": [1]}, "i_views": {"int64": [1]}, "i_purchases": {"int64": [1]},
        "i_price": {"float": [100.0]}, "i_category_id": {"int64": [10]},
        "i_category_code": {"bytes": [b64("electronics.phone")]}, "i_brand": {"bytes": [b64("acme")]}
    });
    let item200 = json!({
        "i_users": {"int64": [2]}, "i_views": {"int64": [2]}, "i_purchases": {"int64": [0]},
        "i_price": {"float": [50.0]}, "i_category_id": {"int64": [20]},
        "i_category_code": {"bytes": [""]}, "i_brand": {"bytes": [b64("bolt")]}
    });
    let sample = |user: i64, item: i64, weight: f32, parts: &[&Value]| {
        let mut m = json!({
            "user_id": {"int64": [user]}, "item_id": {"int64": [item]},
            "label": {"float": [1.0]}, "weight": {"float": [weight]}
        });
        for p in parts {
            for (k, v) in p.as_object().unwrap() {
                m[k] = v.clone();
            }
        }
        m
    };
    // Round-robin shards interleave rows: compare in (user, item) order.
    let sorted = |mut v: Vec<Value>| {
        v.sort_by_key(|r| {
            (
                r["user_id"]["int64"][0].as_i64(),
                r["item_id"]["int64"][0].as_i64(),
            )
        });
        v
    };
    let train = sorted(records(&storage, out.join("train").to_str().unwrap()));
    assert_eq!(
        train,
        vec![
            sample(1, 100, 3.0, &[&user1, &item100]), // purchased: strongest signal
            sample(1, 200, 1.0, &[&user1, &item200]), // viewed
            sample(2, 200, 1.0, &[&user2, &item200]), // viewed (the removal adds nothing)
        ]
    );
    let test = sorted(records(&storage, out.join("test").to_str().unwrap()));
    // item 300 was never seen in training: its features are absent, not zero.
    assert_eq!(
        test,
        vec![
            sample(1, 300, 1.0, &[&user1]),
            sample(2, 200, 3.0, &[&user2, &item200])
        ]
    );
    let m = Manifest::load(&storage.open(out.join("train").to_str().unwrap()).unwrap()).unwrap();
    assert_eq!(
        m.shards.iter().map(|s| s.records).collect::<Vec<_>>(),
        vec![2, 1]
    );

    // Entity tables: the very feature values of the samples, by id, plus each user's training
    // positives (`seen`); the catalogue is the items with training events (not 300).
    assert_eq!(
        s.entities,
        vec![("item_id".to_string(), 2), ("user_id".to_string(), 2)]
    );
    let entity = |key: &str, id: i64, parts: &[&Value]| {
        let mut m = json!({ key: {"int64": [id]} });
        for p in parts {
            for (k, v) in p.as_object().unwrap() {
                m[k] = v.clone();
            }
        }
        m
    };
    let seen = |items: &[i64]| json!({"seen": {"int64": items}});
    let entities = out.join("entities");
    assert_eq!(
        records(&storage, entities.join("user_id").to_str().unwrap()),
        vec![
            entity("user_id", 1, &[&user1, &seen(&[100, 200])]),
            entity("user_id", 2, &[&user2, &seen(&[200])]),
        ]
    );
    assert_eq!(
        records(&storage, entities.join("item_id").to_str().unwrap()),
        vec![
            entity("item_id", 100, &[&item100]),
            entity("item_id", 200, &[&item200]),
        ]
    );
}

fn synthetic(dir: &Path, users: i64, items: i64, events: i64, heavy_share: f64) {
    let mut days = Vec::new();
    for day in 1..=3 {
        let mut rows = String::new();
        for e in 0..events / 3 {
            let k = e * 7 + day * 13;
            let user = if (e as f64 / (events / 3) as f64) < heavy_share {
                1
            } else {
                2 + k % users
            };
            let item = 1000 + (k * 31) % items;
            let ty = match k % 10 {
                0 => "purchase",
                1 | 2 => "cart",
                _ => "view",
            };
            rows.push_str(&format!(
                "2019-10-0{day} 10:{:02}:00 UTC,{ty},{item},{},cat.x,brand,{}.50,{user},s{e}\n",
                e % 60,
                item % 5,
                item % 97
            ));
        }
        days.push((format!("2019-10-0{day}"), rows));
    }
    let days: Vec<(&str, &str)> = days.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    write_logs(dir, &days);
}

/// One user holds 40% of the events: shards stay within ±2% of the mean, negatives are never
/// items the user touched, and the run is deterministic.
#[test]
fn skewed_input_gives_balanced_shards() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    synthetic(&logs, 300, 400, 30_000, 0.4);
    let storage = Storage::new().unwrap();
    let out = dir.path().join("samples");
    let s = sql::clickstream(&storage, &job(&logs, &out, 3, 7), |_| {}).unwrap();
    assert_eq!(s.events, 30_000);
    for split in ["train", "test"] {
        let m = Manifest::load(&storage.open(out.join(split).to_str().unwrap()).unwrap()).unwrap();
        let mean = m.records as f64 / m.shards.len() as f64;
        assert!(m.records > 1000, "{split}: {} rows", m.records);
        for sh in &m.shards {
            let dev = (sh.records as f64 - mean).abs() / mean;
            assert!(
                dev <= 0.02,
                "{split}/{}: {} rows vs mean {mean}",
                sh.path,
                sh.records
            );
        }
    }
    // negatives exclude everything the user touched in that split
    let train = records(&storage, out.join("train").to_str().unwrap());
    let touched: std::collections::HashSet<(i64, i64)> = train
        .iter()
        .filter(|r| r["label"]["float"][0] == 1.0)
        .map(|r| {
            (
                r["user_id"]["int64"][0].as_i64().unwrap(),
                r["item_id"]["int64"][0].as_i64().unwrap(),
            )
        })
        .collect();
    let negatives: Vec<_> = train
        .iter()
        .filter(|r| r["label"]["float"][0] == 0.0)
        .collect();
    assert!(
        negatives.len() > touched.len() * 2,
        "about 3 negatives per positive"
    );
    for r in negatives {
        let key = (
            r["user_id"]["int64"][0].as_i64().unwrap(),
            r["item_id"]["int64"][0].as_i64().unwrap(),
        );
        assert!(!touched.contains(&key), "negative {key:?} is a positive");
    }
    // same input, same seed: same files
    let out2 = dir.path().join("samples2");
    sql::clickstream(&storage, &job(&logs, &out2, 3, 7), |_| {}).unwrap();
    assert_eq!(
        std::fs::read(out.join("train/part-00003-of-00007.tfrecord")).unwrap(),
        std::fs::read(out2.join("train/part-00003-of-00007.tfrecord")).unwrap()
    );
}

#[test]
fn bad_input_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::new().unwrap();
    let run = |name: &str, header: &str, rows: &str| {
        let logs = dir.path().join(name);
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("part-0.csv"), format!("{header}{rows}")).unwrap();
        sql::clickstream(
            &storage,
            &job(&logs, &dir.path().join(format!("{name}-out")), 1, 1),
            |_| {},
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    let e = run(
        "missing",
        "event_time,event_type,product_id,price,user_id\n",
        "",
    );
    assert!(
        e.contains("part-0.csv")
            && e.contains("missing column(s) category_id, category_code, brand, user_session"),
        "{e}"
    );
    let e = run("empty", &format!("{HEADER}\n"), "");
    assert!(e.contains("no events"), "{e}");
    let e = run("nofiles", "", "");
    assert!(e.contains("empty file"), "{e}");
    let e = run(
        "garbage",
        &format!("{HEADER}\n"),
        "2019-10-01 10:00:00 UTC,view,notanumber,1,,,1.0,1,s\n",
    );
    assert!(
        e.to_lowercase().contains("notanumber") || e.contains("parse"),
        "{e}"
    );
    let e = sql::clickstream(
        &storage,
        &job(&dir.path().join("nowhere"), &dir.path().join("o"), 1, 1),
        |_| {},
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(e.contains("no .csv event files found"), "{e}");

    // A script's entity table must carry the key its name promises.
    let logs = dir.path().join("good");
    write_logs(
        &logs,
        &[(
            "2019-10-01",
            "2019-10-01 10:00:00 UTC,view,100,10,,acme,1.00,1,s1\n",
        )],
    );
    let mut j = job(&logs, &dir.path().join("keyless-out"), 1, 1);
    j.sql = sql::CLICKSTREAM_SQL.replace(
        "CREATE VIEW entities_item_id AS",
        "CREATE VIEW entities_item AS",
    );
    let e = sql::clickstream(&storage, &j, |_| {})
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("entities_item") && e.contains("key column 'item'"),
        "{e}"
    );
}
