//! `tusk preprocess …` and `tusk sql` as a user runs them, on local files and a real HDFS.

use std::process::{Command, Output};

fn tusk(args: &[&str]) -> Output {
    tusk_env(&[], args)
}

fn tusk_env(vars: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tusk"))
        .envs(vars.iter().copied())
        .args(args)
        .output()
        .expect("run tusk")
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    err
}

fn stats(url: &str) -> serde_json::Value {
    let o = tusk(&["records", "stats", url, "--json"]);
    ok(&o);
    serde_json::from_slice(&o.stdout).unwrap()
}

const HEADER: &str =
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session";

fn logs() -> Vec<(String, String)> {
    (1..=3)
        .map(|day| {
            let mut rows = format!("{HEADER}\n");
            for e in 0..200 {
                let ty = ["view", "view", "cart", "purchase", "bogus"][e % 5];
                rows.push_str(&format!(
                    "2019-10-0{day} 10:{:02}:00 UTC,{ty},{},{},a.b,x,9.99,{},s\n",
                    e % 60,
                    100 + (e * 7 + day) % 50,
                    e % 3,
                    e % 20
                ));
            }
            (format!("date=2019-10-0{day}/part-00000.csv"), rows)
        })
        .collect()
}

#[test]
fn sql_and_movielens_on_local_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    std::fs::write(
        dir.path().join("t.csv"),
        "k,v,grp\n1,0.5,a\n2,1.5,b\n3,2.5,a\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("q.sql"),
        "CREATE VIEW x AS SELECT * FROM t WHERE k > 1;\nSELECT k, v * 2 AS v2, grp FROM x",
    )
    .unwrap();
    let (table, query) = (format!("t={}", d("t.csv")), d("q.sql"));
    let sql = |out: &str, vars: &[(&str, &str)], more: &[&str]| {
        let out = d(out);
        let mut args = vec![
            "sql", "--table", &table, "--query", &query, "--output", &out,
        ];
        args.extend_from_slice(more);
        tusk_env(vars, &args)
    };
    let err = ok(&sql("out", &[], &["--split-by", "grp", "--shards", "1"]));
    assert!(err.contains("wrote 1 rows"), "{err}");
    let o = tusk(&["records", "cat", &d("out/a")]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        r#"{"k":{"int64":[3]},"v2":{"float":[5.0]}}"#
    );

    // bad table spec and bad SQL: one clear line each
    let o = tusk(&[
        "sql",
        "--table",
        "nonsense",
        "--query",
        &d("q.sql"),
        "--output",
        &d("o2"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected NAME=URL"));
    std::fs::write(dir.path().join("bad.sql"), "SELECT nope FROM t").unwrap();
    let o = tusk(&[
        "sql",
        "--table",
        &format!("t={}", d("t.csv")),
        "--query",
        &d("bad.sql"),
        "--output",
        &d("o3"),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("bad.sql: statement 1") && err.contains("nope"),
        "{err}"
    );

    // DataFusion options from the environment: a valid one changes nothing in the result (one
    // row per batch here), an invalid one is refused naming the variable
    ok(&sql("o4", &[("DATAFUSION_EXECUTION_BATCH_SIZE", "1")], &[]));
    let o = tusk(&["records", "cat", &d("o4")]);
    let rows = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(rows.lines().count(), 2, "{rows}");
    assert!(rows.contains(r#""k":{"int64":[3]}"#), "{rows}");
    let o = sql("o5", &[("DATAFUSION_EXECUTION_BATCH_SIZE", "lots")], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("DATAFUSION_EXECUTION_BATCH_SIZE=lots"),
        "{err}"
    );

    // MovieLens from the command line
    std::fs::write(
        dir.path().join("u.data"),
        "1\t1\t5\t1\n1\t2\t5\t2\n1\t3\t5\t3\n2\t1\t5\t1\n2\t4\t5\t9\n",
    )
    .unwrap();
    let err = ok(&tusk(&[
        "preprocess",
        "movielens",
        "--input",
        &d("u.data"),
        "--output",
        &d("ml"),
        "--negatives",
        "1",
    ]));
    assert!(err.contains("test: 2 users"), "{err}");
    // 4 items: user 1 left only item 4 unrated, user 2 items 2 and 3 → 2 + 3 test rows
    assert_eq!(stats(&d("ml/test"))["records"], 5);
}

#[test]
fn clickstream_from_and_to_hdfs() {
    let Some(dfs) = tusk_testkit::MiniDfs::start(1) else {
        return;
    };
    let storage = tusk_storage::Storage::new().unwrap();
    let base = format!("{}/logs", dfs.hdfs_url());
    for (path, rows) in logs() {
        storage
            .open(&format!("{base}/{path}"))
            .unwrap()
            .write(rows.into_bytes())
            .unwrap();
    }
    let out = format!("{}/samples", dfs.hdfs_url());
    let err = ok(&tusk(&[
        "preprocess",
        "clickstream",
        "--input",
        &base,
        "--output",
        &out,
        "--negatives",
        "2",
        "--shards",
        "3",
        "--compression",
        "gzip",
    ]));
    assert!(err.contains("read 600 events from 3 file(s)"), "{err}");
    assert!(
        err.contains("skipped 120 event(s) of unknown type 'bogus'"),
        "{err}"
    );
    let train = stats(&format!("{out}/train"));
    assert_eq!(train["files"], 3);
    assert!(train["records"].as_u64().unwrap() > 0);
    assert_eq!(train["features"]["label"]["type"], "float");
    // the same logs over WebHDFS give the same samples
    let web_in = format!("{}/logs", dfs.webhdfs_url());
    let local = tempfile::tempdir().unwrap();
    let out2 = local.path().join("s").to_string_lossy().into_owned();
    ok(&tusk(&[
        "preprocess",
        "clickstream",
        "--input",
        &web_in,
        "--output",
        &out2,
        "--negatives",
        "2",
        "--shards",
        "3",
        "--format",
        "parquet",
    ]));
    let pq = stats(&format!("{out2}/train"));
    assert_eq!(pq["records"], train["records"]);
    assert_eq!(
        pq["features"], train["features"],
        "Parquet and TFRecord carry the same features"
    );
}

#[test]
fn memory_limit_flag_is_parsed_and_checked() {
    let o = tusk(&[
        "preprocess",
        "clickstream",
        "--input",
        "x",
        "--output",
        "y",
        "--memory-limit",
        "1.5.2G",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a size such as 512M"));
    let dir = tempfile::tempdir().unwrap();
    for (path, rows) in logs() {
        let p = dir.path().join("logs").join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, rows).unwrap();
    }
    let d = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let err = ok(&tusk(&[
        "preprocess",
        "clickstream",
        "--input",
        &d("logs"),
        "--output",
        &d("out"),
        "--memory-limit",
        "64M",
    ]));
    assert!(err.contains("read 600 events"), "{err}");
}

/// Generated logs go through the SQL pipeline unchanged (the generator writes the REES46 layout).
#[test]
fn datagen_output_feeds_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let err = ok(&tusk(&[
        "datagen",
        "clickstream",
        "--out",
        &d("logs"),
        "--users",
        "50",
        "--items",
        "30",
        "--events",
        "3000",
        "--days",
        "3",
        "--seed",
        "5",
    ]));
    assert!(
        err.contains("3,000 events") || err.contains("3000 events"),
        "{err}"
    );
    let err = ok(&tusk(&[
        "preprocess",
        "clickstream",
        "--input",
        &d("logs"),
        "--output",
        &d("s"),
        "--shards",
        "2",
    ]));
    assert!(err.contains("read 3000 events from 3 file(s)"), "{err}");
    let train = stats(&d("s/train"));
    assert!(train["records"].as_u64().unwrap() > 0);
    assert_eq!(train["features"]["user_id"]["type"], "int64");
    // a second run into the same place refuses instead of mixing datasets
    let o = tusk(&[
        "preprocess",
        "clickstream",
        "--input",
        &d("logs"),
        "--output",
        &d("s"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("a dataset already exists here"));
}
