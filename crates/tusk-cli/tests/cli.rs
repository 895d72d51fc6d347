//! The `tusk` binary as a user runs it: real processes, real files, real HDFS. Every bad input
//! gets one clear error line naming the file and position, a non-zero exit, and no panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tusk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tusk"))
        .args(args)
        .output()
        .expect("run tusk")
}

fn fixture(name: &str) -> String {
    tusk_testkit::repo_root()
        .join("crates/tusk-records/tests/fixtures/tf")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Assert a failed run: exit code 1, exactly one `error:` line holding every needle, no panic.
fn assert_fails(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(lines[0].contains(n), "missing '{n}' in: {err}");
    }
}

#[test]
fn cat_prints_tensorflow_records_as_json() {
    for f in ["plain.tfrecord", "gzip.tfrecord.gz", "zlib.tfrecord.zz"] {
        let o = tusk(&["records", "cat", &fixture(f), "--limit", "2"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            r#"{"label":{"float":[1.0]},"user_id":{"int64":[42]}}"#
        );
    }
    // The whole file matches TensorFlow's view value for value (compared as JSON values: the
    // float text of TF's dump is not canonical, so compare parsed f32s).
    let o = tusk(&["records", "cat", &fixture("zlib.tfrecord.zz")]);
    let ours: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let theirs: Vec<serde_json::Value> = std::fs::read_to_string(fixture("expected.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(normalise(a), normalise(b));
    }
}

fn normalise(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) if m.contains_key("float") => {
            let vals = m["float"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| match tusk_records::example::json_f32(x).unwrap() {
                    f if f.is_nan() => Value::from("NaN"),
                    f => Value::from(f.to_bits()),
                })
                .collect();
            serde_json::json!({ "float": Value::Array(vals) })
        }
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), normalise(v))).collect())
        }
        other => other.clone(),
    }
}

#[test]
fn compression_flag_overrides_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("data.bin");
    std::fs::copy(fixture("gzip.tfrecord.gz"), &odd).unwrap();
    let o = tusk(&[
        "records",
        "stats",
        odd.to_str().unwrap(),
        "--compression",
        "gzip",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("records    53"), "{}", stdout(&o));
    // Without the flag the gzip bytes are not TFRecord framing: a clear error, not garbage.
    let o = tusk(&["records", "stats", odd.to_str().unwrap()]);
    assert_fails(&o, &["data.bin", "record #0 at byte offset 0"]);
}

#[test]
fn stats_counts_records_and_values() {
    let o = tusk(&["records", "stats", &fixture("plain.tfrecord"), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["records"], 53);
    assert_eq!(v["features"]["user_id"]["type"], "int64");
    assert_eq!(v["features"]["user_id"]["records"], 13);
    assert_eq!(v["features"]["many_ids"]["values"], 2000);
    assert_eq!(v["features"]["poly"]["type"], "mixed");
    let o = tusk(&[
        "records",
        "stats",
        &fixture("plain.tfrecord"),
        "--framing-only",
    ]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("records    53"));
    // No progress bar garbage when stderr is not a terminal.
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

#[test]
fn bad_inputs_give_one_clear_error_line() {
    let dir = tempfile::tempdir().unwrap();
    // truncated file
    let o = tusk(&["records", "cat", &fixture("truncated_payload.tfrecord")]);
    assert_fails(
        &o,
        &[
            "truncated_payload.tfrecord",
            "truncated record #1 at byte offset 55",
            "expected 103 bytes",
        ],
    );
    assert_eq!(
        stdout(&o).lines().count(),
        1,
        "records before the damage are still printed"
    );
    // flipped byte
    let o = tusk(&["records", "stats", &fixture("corrupt_data_crc.tfrecord")]);
    assert_fails(
        &o,
        &[
            "corrupt_data_crc.tfrecord",
            "corrupt record #1 at byte offset 55",
            "data CRC mismatch",
        ],
    );
    let o = tusk(&["records", "stats", &fixture("corrupt_length.tfrecord")]);
    assert_fails(&o, &["record #1 at byte offset 55", "length CRC mismatch"]);
    // a flipped byte inside a gzip stream
    let mut gz = std::fs::read(fixture("gzip.tfrecord.gz")).unwrap();
    let mid = gz.len() / 2;
    gz[mid] ^= 0x55;
    let bad_gz = dir.path().join("flipped.tfrecord.gz");
    std::fs::write(&bad_gz, gz).unwrap();
    let o = tusk(&["records", "stats", bad_gz.to_str().unwrap()]);
    assert_fails(&o, &["flipped.tfrecord.gz"]);
    // non-Example payload: frame a JSON document as a record
    let junk = dir.path().join("junk.tfrecord");
    let payload = b"{\"user\": 1}";
    let mut bytes = Vec::new();
    let len = (payload.len() as u64).to_le_bytes();
    bytes.extend_from_slice(&len);
    bytes.extend_from_slice(&tusk_records::tfrecord::masked_crc(&len).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes.extend_from_slice(&tusk_records::tfrecord::masked_crc(payload).to_le_bytes());
    std::fs::write(&junk, bytes).unwrap();
    let o = tusk(&["records", "cat", junk.to_str().unwrap()]);
    assert_fails(
        &o,
        &[
            "junk.tfrecord",
            "record #0 at byte offset 0 is not a tf.train.Example",
            "invalid wire type",
        ],
    );
    // missing file
    let missing = dir.path().join("nope.tfrecord");
    let o = tusk(&["records", "stats", missing.to_str().unwrap()]);
    assert_fails(&o, &["nope.tfrecord", "no such file"]);
    // unreachable namenode, over both protocols
    let o = tusk(&["records", "stats", "hdfs://127.0.0.1:1/data/x.tfrecord"]);
    assert_fails(
        &o,
        &[
            "cannot reach HDFS NameNode 127.0.0.1:1",
            "hdfs://127.0.0.1:1/data/x.tfrecord",
        ],
    );
    let o = tusk(&["records", "cat", "webhdfs://127.0.0.1:1/data/x.tfrecord"]);
    assert_fails(&o, &["cannot reach WebHDFS at 127.0.0.1:1"]);
    // unsupported URL scheme
    let o = tusk(&["records", "cat", "ftp://host/x.tfrecord"]);
    assert_fails(&o, &["unsupported scheme 'ftp'"]);
    let o = tusk(&["records", "cat", "gs://bucket/x.tfrecord"]);
    assert_fails(&o, &["gs:// is not supported"]);
    // S3 with no credentials anywhere (no AWS_* variables, no instance role here)
    let mut c = Command::new(env!("CARGO_BIN_EXE_tusk"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
        c.env_remove(k);
    }
    let o = c
        .args(["records", "cat", "s3://some-bucket/x.tfrecord"])
        .output()
        .unwrap();
    assert_fails(&o, &["s3://some-bucket/x.tfrecord", "no AWS credentials"]);
    // glob matching nothing
    let pattern = format!("{}/*.tfrecord", dir.path().join("empty").display());
    let o = tusk(&["records", "cat", &pattern]);
    assert_fails(&o, &["no files match"]);
}

#[test]
fn usage_errors_exit_2_and_every_subcommand_has_help() {
    let o = tusk(&["records", "convert", "only-one-arg"]);
    assert_eq!(o.status.code(), Some(2));
    let o = tusk(&["records", "cat", "x", "--compression", "lz4"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("gzip"));
    for sub in [
        &["--help"][..],
        &["records", "--help"],
        &["records", "cat", "--help"],
        &["records", "stats", "--help"],
        &["records", "convert", "--help"],
    ] {
        let o = tusk(sub);
        assert!(o.status.success(), "{sub:?}");
        assert!(stdout(&o).contains("Usage:"), "{sub:?}");
    }
}

fn cat_all(url: &str) -> String {
    let o = tusk(&["records", "cat", url]);
    assert!(o.status.success(), "cat {url}: {}", stderr(&o));
    stdout(&o)
}

/// A dataset of records every type of which Parquet can hold (the TF fixture mixes types).
fn uniform_source(dir: &Path) -> PathBuf {
    let storage = tusk_storage::Storage::new().unwrap();
    let path = dir.join("uniform.tfrecord");
    let loc = storage.open(path.to_str().unwrap()).unwrap();
    let mut w = tusk_records::tfrecord::FileWriter::create(&loc, None).unwrap();
    for i in 0..500i64 {
        let line = format!(
            r#"{{"user_id":{{"int64":[{i}]}},"label":{{"float":[{}]}},"items":{{"int64":[{}]}},"country":{{"bytes":["{}"]}}}}"#,
            i % 2,
            (0..i % 3)
                .map(|x| (x * 10).to_string())
                .collect::<Vec<_>>()
                .join(","),
            if i % 2 == 0 { "VVM=" } else { "RlI=" }
        );
        let ex = tusk_records::example::from_json(&serde_json::from_str(&line).unwrap()).unwrap();
        w.write(&prost::Message::encode_to_vec(&ex)).unwrap();
    }
    w.finish().unwrap();
    path
}

#[test]
fn convert_roundtrips_through_every_format_and_compression() {
    let dir = tempfile::tempdir().unwrap();
    let src = uniform_source(dir.path());
    let src = src.to_str().unwrap();
    let want = cat_all(src);
    let d = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    for (out, extra) in [
        (d("a.parquet"), vec![]),
        (d("b.tfrecord.gz"), vec![]),
        (d("c.tfrecord.zz"), vec![]),
        (d("ds-tf"), vec!["--shards", "4", "--compression", "gzip"]),
        (d("ds-pq"), vec!["--shards", "3", "--format", "parquet"]),
    ] {
        let mut args = vec!["records", "convert", src, &out];
        args.extend(extra.iter().copied());
        let o = tusk(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("wrote 500 records"), "{}", stderr(&o));
        assert_eq!(cat_all(&out), want, "{out}");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("ds-tf/_manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["records"], 500);
    assert_eq!(manifest["compression"], "gzip");
    let counts: Vec<u64> = manifest["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["records"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, vec![125, 125, 125, 125]);
    // Parquet back to TFRecord
    let back = d("back.tfrecord");
    assert!(
        tusk(&["records", "convert", &d("ds-pq"), &back])
            .status
            .success()
    );
    assert_eq!(cat_all(&back), want);
    // Converting onto an existing dataset refuses rather than losing data.
    let o = tusk(&["records", "convert", src, &d("ds-tf"), "--shards", "2"]);
    assert_fails(&o, &["ds-tf", "a dataset already exists here"]);
    let o = tusk(&[
        "records",
        "convert",
        src,
        &d("x.parquet"),
        "--compression",
        "gzip",
    ]);
    assert_eq!(o.status.code(), Some(1));
}

/// Every command accepts HDFS URLs: convert a local file into a sharded dataset on a real
/// MiniDFS over native RPC, read it back over WebHDFS.
#[test]
fn records_on_hdfs() {
    let Some(dfs) = tusk_testkit::MiniDfs::start(1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = uniform_source(dir.path());
    let src = src.to_str().unwrap();
    let hdfs_ds = format!("{}/user/tusk/ds", dfs.hdfs_url());
    let o = tusk(&[
        "records",
        "convert",
        src,
        &hdfs_ds,
        "--shards",
        "3",
        "--compression",
        "zlib",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = cat_all(src);
    assert_eq!(cat_all(&hdfs_ds), want);
    assert_eq!(
        cat_all(&format!("{}/user/tusk/ds", dfs.webhdfs_url())),
        want
    );
    assert_eq!(
        cat_all(&format!(
            "{}/user/tusk/ds/part-*.tfrecord.zz",
            dfs.webhdfs_url()
        )),
        want
    );
    let o = tusk(&["records", "stats", &hdfs_ds, "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["records"], 500);
    assert_eq!(v["files"], 3);
    // and a Parquet file written to HDFS over WebHDFS
    let web_pq = format!("{}/user/tusk/u.parquet", dfs.webhdfs_url());
    assert!(tusk(&["records", "convert", src, &web_pq]).status.success());
    assert_eq!(
        cat_all(&format!("{}/user/tusk/u.parquet", dfs.hdfs_url())),
        want
    );
    // a missing HDFS file is a clear error
    let o = tusk(&[
        "records",
        "cat",
        &format!("{}/user/tusk/missing.tfrecord", dfs.hdfs_url()),
    ]);
    assert_fails(&o, &["missing.tfrecord", "no such file"]);
}

/// `tusk … | head` closes the pipe early: that is a normal way to stop, not a crash.
#[test]
fn closed_stdout_is_not_a_crash() {
    for args in [
        &["records", "cat", &fixture("plain.tfrecord")][..],
        &["records", "stats", &fixture("plain.tfrecord")],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tusk"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}
