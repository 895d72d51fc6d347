//! HBase as the online store, on a real HBase (HBase's mini cluster with its REST gateway,
//! `testing/minihbase`): a MovieLens version exported row for row, served with its entity
//! columns from HBase with exactly the scores of serving without it, a live `history` written
//! by "another system" used by the next `:recommend` (and equal to `tusk predict --features`),
//! an export killed mid-way and re-run, HBase's gateway stopped under a running server, and bad
//! input. One cluster for the whole binary, so one test. Needs MovieLens-100K (skipped without
//! it, except in CI).

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tusk_hbase::online::{POINTER_ROW, PROGRESS_ROW};
use tusk_hbase::{Cell, HBase, Options, Row};
use tusk_testkit::{MiniHBase, Proc};

use common::{http, http_full};

fn tusk() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tusk"));
    c.env_remove("TUSK_SERVE_TOKEN");
    c
}

fn run(c: &mut Command) -> (bool, String) {
    let o = c.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Every row of `table` (all versions of every cell).
fn scan(h: &HBase, table: &str) -> BTreeMap<Vec<u8>, Vec<Cell>> {
    let mut out = BTreeMap::new();
    block(h.scan(table, b"", b"", 10, |rows| {
        for r in rows {
            out.entry(r.key).or_insert_with(Vec::new).extend(r.cells);
        }
        Ok(())
    }))
    .unwrap();
    out
}

/// The cells of entity rows (not tusk's own `_tusk:…` rows), without the timestamps of live
/// writes.
fn entity_cells(all: &BTreeMap<Vec<u8>, Vec<Cell>>) -> BTreeMap<Vec<u8>, Vec<Cell>> {
    all.iter()
        .filter(|(k, _)| !k.starts_with(b"_tusk:"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

struct Server {
    port: u16,
    _p: Proc,
}

fn serve(model: &str, features: Option<&str>) -> Server {
    let port = tusk_testkit::free_port();
    let mut c = tusk();
    c.args([
        "serve",
        "--model",
        &format!("ml={model}"),
        "--addr",
        &format!("127.0.0.1:{port}"),
    ]);
    if let Some(f) = features {
        c.args(["--features", f, "--features-budget", "1500"]);
    }
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut p = Proc::spawn(&mut c, "tusk serve");
    let t = Instant::now();
    while !matches!(http(port, "GET", "/v2/health/ready", ""), Some((200, _))) {
        assert!(t.elapsed() < Duration::from_secs(120), "never ready");
        assert!(p.try_status().is_none(), "tusk serve exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { port, _p: p }
}

/// POST `body` to `path`: (status, x-tusk-features header, JSON body).
fn post(s: &Server, path: &str, body: &Value) -> (u16, String, Value) {
    let (code, head, text) = http_full(s.port, "POST", path, &body.to_string()).unwrap();
    let source = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-tusk-features:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (code, source, v)
}

fn recommend(s: &Server, user: u64) -> (String, Value) {
    let (code, src, v) = post(
        s,
        "/v1/models/ml:recommend",
        &json!({"user_id": user, "k": 10, "exclude_seen": true}),
    );
    assert_eq!(code, 200, "{v}");
    (src, v["items"].clone())
}

#[test]
fn hbase_online_store_end_to_end() {
    let Some(udata) = common::movielens() else {
        return;
    };
    let Some(mut hb) = MiniHBase::start() else {
        return;
    };
    let rest = hb.rest_url();
    let h = HBase::new(&rest, Options::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // A MovieLens version with entity tables (users with their last 5 items, items).
    let data = dir.path().join("data");
    let (ok, err) = run(tusk()
        .args(["preprocess", "movielens", "--input"])
        .arg(&udata)
        .arg("--output")
        .arg(&data)
        .args(["--negatives", "0", "--validation", "--history", "5"]));
    assert!(ok, "{err}");
    let model = dir.path().join("model").display().to_string();
    let d = data.display();
    let (ok, err) = run(tusk()
        .arg("train")
        .arg(tusk_testkit::repo_root().join("examples/movielens/config.toml"))
        .args(["--model", &model])
        .args(["--set", &format!("data.train={d}/train")])
        .args(["--set", &format!("data.validation={d}/validation")])
        .args(["--set", &format!("data.test={d}/test")])
        .args([
            "--set",
            &format!("data.entities.user_id={d}/entities/user_id"),
        ])
        .args([
            "--set",
            &format!("data.entities.item_id={d}/entities/item_id"),
        ])
        .args(["--set", "train.epochs=1"]));
    assert!(ok, "{err}");

    // Export: every row in HBase equals the version's tables.
    let (ok, err) = run(tusk().args([
        "export", "hbase", "--model", &model, "--table", "ml", "--rest", &rest,
    ]));
    assert!(ok, "{err}");
    assert!(err.contains("created HBase table ml"), "{err}");
    let storage = tusk_storage::Storage::new().unwrap();
    let scorer = tusk_train::Scorer::load(&storage, &model, None).unwrap();
    let ents = scorer.entities.clone().unwrap();
    let all = scan(&h, "ml");
    let cells = entity_cells(&all);
    let mut want_rows = 0;
    for key in ents.keys() {
        for id in ents.ids(key).unwrap() {
            want_rows += 1;
            let row_key = format!("{key}:{id}");
            let got = cells
                .get(row_key.as_bytes())
                .unwrap_or_else(|| panic!("{row_key} missing"));
            let ex = ents.get(key, id).unwrap();
            let feats = &ex.features.as_ref().unwrap().feature;
            let f_cells: Vec<&Cell> = got.iter().filter(|c| c.column.starts_with(b"f:")).collect();
            assert_eq!(f_cells.len(), feats.len(), "{row_key}");
            for (col, f) in feats {
                let c = f_cells
                    .iter()
                    .find(|c| c.column == format!("f:{col}").as_bytes())
                    .unwrap_or_else(|| panic!("{row_key} f:{col} missing"));
                assert_eq!(
                    tusk_hbase::value::decode(&c.value).unwrap(),
                    f.kind.clone().unwrap(),
                    "{row_key} f:{col}"
                );
                assert_eq!(c.timestamp, Some(scorer.version as i64));
            }
            let emb = got
                .iter()
                .find(|c| c.column == format!("e:{key}").as_bytes());
            let want = scorer
                .table
                .get(tusk_data::features::text_key(key, id.as_bytes()));
            assert_eq!(
                emb.map(|c| tusk_hbase::value::from_f32s(&c.value).unwrap()),
                want.map(<[f32]>::to_vec),
                "{row_key} embedding"
            );
        }
    }
    assert_eq!(cells.len(), want_rows);
    let pointer = &all[POINTER_ROW];
    assert_eq!(pointer.len(), 1, "{pointer:?}");
    assert_eq!(pointer[0].value, scorer.version.to_string().as_bytes());

    // Serving with --features gives exactly the scores of serving without it.
    let features = format!("hbase://{}/ml", rest.trim_start_matches("http://"));
    let plain = serve(&model, None);
    let live = serve(&model, Some(&features));
    let rows: Vec<Value> = (1..=40)
        .map(|i| json!({"user_id": i, "item_id": (i * 37) % 1682 + 1}))
        .collect();
    let body = json!({ "instances": rows });
    let (c1, _, a) = post(&plain, "/v1/models/ml:predict", &body);
    let (c2, src, b) = post(&live, "/v1/models/ml:predict", &body);
    assert_eq!((c1, c2), (200, 200), "{a} {b}");
    assert_eq!(src, "hbase");
    assert_eq!(a["predictions"], b["predictions"]);
    for u in [1, 7, 500] {
        let (src, items) = recommend(&live, u);
        assert_eq!(src, "hbase");
        assert_eq!(items, recommend(&plain, u).1, "user {u}");
    }

    // Another system appends to user 7's history (a live cell, the server's clock): the next
    // :recommend uses it, with no reload; `tusk predict --features` scores the same.
    let u = 7u64;
    let (_, before) = recommend(&live, u);
    let old = ents
        .get("user_id", "7")
        .unwrap()
        .features
        .as_ref()
        .unwrap()
        .feature["history"]
        .clone();
    let Some(tusk_records::example::Kind::Int64List(l)) = old.kind else {
        panic!("history is not an int list: {old:?}")
    };
    let mut history: Vec<i64> = l.value.clone();
    history.extend([50, 181, 258]);
    let text = history
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    block(h.put(
        "ml",
        &[Row {
            key: b"user_id:7".to_vec(),
            cells: vec![Cell {
                column: b"f:history".to_vec(),
                timestamp: None,
                value: text.clone().into_bytes(),
            }],
        }],
    ))
    .unwrap();
    let (src, after) = recommend(&live, u);
    assert_eq!(src, "hbase");
    assert_ne!(after, before, "the new history changed nothing");
    assert_eq!(recommend(&plain, u).1, before, "the plain server moved");
    let csv = dir.path().join("pairs.csv");
    let items: Vec<i64> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item_id"].as_i64().unwrap())
        .collect();
    let mut text_csv = "user_id,item_id\n".to_string();
    for i in &items {
        text_csv.push_str(&format!("{u},{i}\n"));
    }
    std::fs::write(&csv, text_csv).unwrap();
    let out = dir.path().join("scored.csv");
    let (ok, err) = run(tusk()
        .args(["predict", "--model", &model, "--input"])
        .arg(&csv)
        .arg("--output")
        .arg(&out)
        .args(["--features", &features]));
    assert!(ok, "{err}");
    let scored: Vec<f32> = common::score_column(&out)
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let served: Vec<f32> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["score"].as_f64().unwrap() as f32)
        .collect();
    assert_eq!(
        scored, served,
        "tusk predict --features differs from :recommend"
    );

    // An export killed mid-way and re-run: the table equals a clean export, the pointer row
    // moved once.
    let mut c = tusk();
    c.args([
        "export",
        "hbase",
        "--model",
        &model,
        "--table",
        "ml2",
        "--rest",
        &rest,
        "--batch-rows",
        "40",
        "--in-flight",
        "1",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut p = Proc::spawn(&mut c, "tusk export hbase");
    let t = Instant::now();
    let progress_col = format!("m:v{}", scorer.version);
    loop {
        let done = block(h.get("ml2", PROGRESS_ROW, 1))
            .ok()
            .flatten()
            .and_then(|r| {
                r.cells
                    .iter()
                    .find(|c| c.column == progress_col.as_bytes())
                    .map(|c| String::from_utf8_lossy(&c.value).parse::<u64>().unwrap())
            })
            .unwrap_or(0);
        if done >= 100 {
            break;
        }
        assert!(
            p.try_status().is_none(),
            "the export ended before it was killed"
        );
        assert!(t.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    p.kill();
    assert!(
        block(h.get("ml2", POINTER_ROW, 1)).unwrap().is_none(),
        "the pointer moved before the export finished"
    );
    let (ok, err) = run(tusk().args([
        "export", "hbase", "--model", &model, "--table", "ml2", "--rest", &rest,
    ]));
    assert!(ok, "{err}");
    assert!(err.contains("resumed after"), "{err}");
    let (ok, err) = run(tusk().args([
        "export", "hbase", "--model", &model, "--table", "ml2", "--rest", &rest,
    ]));
    assert!(ok && err.contains("already holds"), "{err}");
    let all2 = scan(&h, "ml2");
    let mut clean = entity_cells(&all);
    // ml has user 7's live history on top of the export
    clean
        .get_mut(b"user_id:7".as_slice())
        .unwrap()
        .retain(|c| c.timestamp.is_some_and(|t| t == scorer.version as i64));
    assert_eq!(entity_cells(&all2), clean);
    assert_eq!(
        all2[POINTER_ROW].len(),
        1,
        "the pointer moved more than once"
    );

    // The REST gateway stops under the server: answers within the budget from the version's
    // tables, counted in /metrics; back to HBase once it returns.
    hb.command("stop-rest");
    let t = Instant::now();
    let (code, src, v) = post(&live, "/v1/models/ml:predict", &body);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!((code, src.as_str()), (200, "fallback"), "{v}");
    assert_eq!(v["predictions"], a["predictions"]);
    let (_, m) = http(live.port, "GET", "/metrics", "").unwrap();
    let errors = m
        .lines()
        .find_map(|l| l.strip_prefix("tusk_features_errors_total "))
        .unwrap();
    assert_ne!(errors, "0", "{m}");
    hb.command("start-rest");
    let t = Instant::now();
    loop {
        let (code, src, _) = post(&live, "/v1/models/ml:predict", &body);
        if code == 200 && src == "hbase" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "never back on HBase");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Bad input: one clear error each.
    let nosuch = format!("hbase://{}/nosuch", rest.trim_start_matches("http://"));
    let (ok, err) = run(tusk()
        .args(["predict", "--model", &model, "--input"])
        .arg(&csv)
        .arg("--output")
        .arg(dir.path().join("x.csv"))
        .args(["--features", &nosuch]));
    assert!(!ok && err.contains("`nosuch` does not exist"), "{err}");
    block(h.create_table(
        "wrong",
        &[tusk_hbase::Family {
            name: "x".into(),
            versions: 1,
        }],
    ))
    .unwrap();
    let (ok, err) = run(tusk().args([
        "export", "hbase", "--model", &model, "--table", "wrong", "--rest", &rest,
    ]));
    assert!(!ok && err.contains("no column family `f`"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    block(h.put(
        "ml",
        &[Row {
            key: b"user_id:9".to_vec(),
            cells: vec![Cell {
                column: b"f:history".to_vec(),
                timestamp: None,
                value: vec![0xff, 0xfe, 0x00],
            }],
        }],
    ))
    .unwrap();
    std::fs::write(&csv, "user_id,item_id\n9,1\n").unwrap();
    let (ok, err) = run(tusk()
        .args(["predict", "--model", &model, "--input"])
        .arg(&csv)
        .arg("--output")
        .arg(dir.path().join("x.csv"))
        .args(["--features", &features]));
    assert!(
        !ok && err.contains("user_id:9") && err.contains("f:history"),
        "{err}"
    );
    let (code, _, v) = post(
        &live,
        "/v1/models/ml:predict",
        &json!({"instances": [{"user_id": 9, "item_id": 1}]}),
    );
    assert_eq!(code, 502, "{v}");
    let msg = v.to_string();
    assert!(
        msg.contains("user_id:9") && msg.contains("f:history"),
        "{msg}"
    );
}
