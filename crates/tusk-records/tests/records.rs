//! Record formats against the real thing: files TensorFlow wrote (fixtures made by
//! `testing/tf/make_fixtures.py`), files tusk writes read back by TensorFlow itself, Parquet
//! written by Arrow, and sharded datasets.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Decimal128Array, DictionaryArray, Float64Array, Int32Array,
    ListArray, RecordBatch, StringArray, UInt8Array,
};
use arrow::datatypes::{Int32Type, Schema as ArrowSchema};
use tusk_records::Error;
use tusk_records::dataset::{self, Format, Input, Manifest, Output};
use tusk_records::example::{self, BytesList, Example, FloatList, Int64List, Kind};
use tusk_records::tfrecord::{self, Compression, FileWriter};
use tusk_storage::Storage;

fn fixtures() -> PathBuf {
    tusk_testkit::repo_root().join("crates/tusk-records/tests/fixtures/tf")
}

/// A comparable form of an Example: floats by bit pattern, all NaNs equal (TF's JSON cannot
/// carry NaN payloads).
fn canon(ex: &Example) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(f) = &ex.features {
        for (k, v) in &f.feature {
            let val = match &v.kind {
                None => "none".to_string(),
                Some(Kind::Int64List(l)) => format!("i{:?}", l.value),
                Some(Kind::FloatList(l)) => format!(
                    "f{:?}",
                    l.value
                        .iter()
                        .map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() })
                        .collect::<Vec<_>>()
                ),
                Some(Kind::BytesList(l)) => format!("b{:?}", l.value),
            };
            out.push((k.clone(), val));
        }
    }
    out
}

fn parse_jsonl(text: &str) -> Vec<Example> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| example::from_json(&serde_json::from_str(l).unwrap()).unwrap())
        .collect()
}

fn expected() -> Vec<Example> {
    parse_jsonl(&std::fs::read_to_string(fixtures().join("expected.jsonl")).unwrap())
}

fn read_all(storage: &Storage, url: &str) -> Vec<Example> {
    let input = Input::open(storage, url, None).unwrap();
    let mut out = Vec::new();
    input
        .for_each_example(|ex, _| {
            out.push(ex);
            Ok(true)
        })
        .unwrap();
    out
}

fn assert_same(a: &[Example], b: &[Example], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: record counts differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(canon(x), canon(y), "{what}: record #{i} differs");
    }
}

#[test]
fn files_written_by_tensorflow_read_identically() {
    let storage = Storage::new().unwrap();
    let want = expected();
    assert!(want.len() > 40);
    for name in ["plain.tfrecord", "gzip.tfrecord.gz", "zlib.tfrecord.zz"] {
        let url = fixtures().join(name);
        let got = read_all(&storage, url.to_str().unwrap());
        assert_same(&got, &want, name);
    }
}

#[test]
fn framing_is_byte_identical_to_tensorflow() {
    // Re-frame TF's own payloads: the file must equal TF's byte for byte.
    let storage = Storage::new().unwrap();
    let tf_file = fixtures().join("plain.tfrecord");
    let mut r = tfrecord::open(&storage.open(tf_file.to_str().unwrap()).unwrap(), None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.tfrecord");
    let mut w = FileWriter::create(&storage.open(out.to_str().unwrap()).unwrap(), None).unwrap();
    while let Some(rec) = r.next_record().unwrap() {
        w.write(rec).unwrap();
    }
    w.finish().unwrap();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&tf_file).unwrap()
    );
}

#[test]
fn files_written_by_tusk_read_identically_in_tensorflow() {
    let Some(python) = tusk_testkit::python_with_tensorflow() else {
        return;
    };
    let storage = Storage::new().unwrap();
    let want = expected();
    let dir = tempfile::tempdir().unwrap();
    for (name, flag) in [
        ("tusk.tfrecord", "NONE"),
        ("tusk.tfrecord.gz", "GZIP"),
        ("tusk.tfrecord.zz", "ZLIB"),
    ] {
        // Examples encoded by tusk (prost), framed and compressed by tusk.
        let path = dir.path().join(name);
        let mut w =
            FileWriter::create(&storage.open(path.to_str().unwrap()).unwrap(), None).unwrap();
        for ex in &want {
            w.write(&dataset::encode(ex)).unwrap();
        }
        w.finish().unwrap();
        let out = Command::new(&python)
            .arg(tusk_testkit::repo_root().join("testing/tf/read_with_tf.py"))
            .arg(&path)
            .args(["--compression", flag])
            .env("TF_CPP_MIN_LOG_LEVEL", "3")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "TensorFlow failed to read {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = parse_jsonl(&String::from_utf8(out.stdout).unwrap());
        assert_same(&got, &want, &format!("TensorFlow reading tusk's {name}"));
    }
}

#[test]
fn damaged_files_fail_with_index_offset_and_reason() {
    let storage = Storage::new().unwrap();
    for (name, kind, what) in [
        ("corrupt_data_crc.tfrecord", "crc", "data"),
        ("corrupt_data_crc_field.tfrecord", "crc", "data"),
        ("corrupt_length.tfrecord", "crc", "length"),
        ("corrupt_length_crc.tfrecord", "crc", "length"),
        (
            "truncated_crc.tfrecord",
            "truncated",
            "record data + data CRC",
        ),
        (
            "truncated_payload.tfrecord",
            "truncated",
            "record data + data CRC",
        ),
        (
            "truncated_header.tfrecord",
            "truncated",
            "record header (length + length CRC)",
        ),
        (
            "truncated_length_crc.tfrecord",
            "truncated",
            "record header (length + length CRC)",
        ),
    ] {
        let path = fixtures().join(name);
        let input = Input::open(&storage, path.to_str().unwrap(), None).unwrap();
        let mut good = 0;
        let err = input
            .for_each(|_, _| {
                good += 1;
                Ok(())
            })
            .unwrap_err();
        assert_eq!(good, 1, "{name}: the record before the damage is delivered");
        let text = err.to_string();
        assert!(text.contains(name), "{text}");
        match (&err, kind) {
            (
                Error::Crc {
                    index: 1,
                    offset: 55,
                    what: w,
                    ..
                },
                "crc",
            ) => assert_eq!(*w, what),
            (
                Error::Truncated {
                    index: 1,
                    offset: 55,
                    what: w,
                    ..
                },
                "truncated",
            ) => {
                assert_eq!(*w, what)
            }
            _ => panic!("{name}: unexpected error {err:?}"),
        }
        assert!(text.contains("record #1 at byte offset 55"), "{text}");
    }
}

#[test]
fn damaged_compressed_streams_are_reported() {
    let storage = Storage::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for name in ["gzip.tfrecord.gz", "zlib.tfrecord.zz"] {
        let mut bytes = std::fs::read(fixtures().join(name)).unwrap();
        // cut the stream in half
        bytes.truncate(bytes.len() / 2);
        let path = dir.path().join(format!("cut-{name}"));
        std::fs::write(&path, &bytes).unwrap();
        let input = Input::open(&storage, path.to_str().unwrap(), None).unwrap();
        let err = input.for_each(|_, _| Ok(())).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("cut-{name}")), "{text}");
        assert!(
            matches!(err, Error::Decompress { .. } | Error::Truncated { .. }),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn non_example_payload_is_named() {
    let storage = Storage::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.tfrecord");
    let loc = storage.open(path.to_str().unwrap()).unwrap();
    let mut w = FileWriter::create(&loc, None).unwrap();
    w.write(&dataset::encode(&expected()[0])).unwrap();
    w.write(b"{\"not\": \"an example\"}").unwrap();
    w.finish().unwrap();
    let input = Input::open(&storage, path.to_str().unwrap(), None).unwrap();
    let err = input.for_each_example(|_, _| Ok(true)).unwrap_err();
    assert!(matches!(err, Error::NotExample { index: 1, .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("junk.tfrecord: record #1 at byte offset"),
        "{text}"
    );
    assert!(text.contains("is not a tf.train.Example"), "{text}");
}

fn generated(n: usize) -> Vec<Example> {
    (0..n)
        .map(|i| {
            let mut f = vec![
                (
                    "user_id".to_string(),
                    Kind::Int64List(Int64List {
                        value: vec![i as i64 * 7 - 3],
                    }),
                ),
                (
                    "label".to_string(),
                    Kind::FloatList(FloatList {
                        value: vec![(i % 2) as f32],
                    }),
                ),
                (
                    "hist".to_string(),
                    Kind::Int64List(Int64List {
                        value: (0..(i % 4) as i64).collect(),
                    }),
                ),
                (
                    "tags".to_string(),
                    Kind::BytesList(BytesList {
                        value: vec![format!("t{i}").into_bytes(), b"x".to_vec()],
                    }),
                ),
                (
                    "dense".to_string(),
                    Kind::FloatList(FloatList {
                        value: vec![i as f32 / 3.0, -1.5],
                    }),
                ),
            ];
            if i % 3 != 0 {
                f.push((
                    "blob".to_string(),
                    Kind::BytesList(BytesList {
                        value: vec![vec![0xff, i as u8]],
                    }),
                ));
            }
            example::from_features(f)
        })
        .collect()
}

fn write_tfrecord(storage: &Storage, path: &Path, exs: &[Example]) {
    let mut w = FileWriter::create(&storage.open(path.to_str().unwrap()).unwrap(), None).unwrap();
    for ex in exs {
        w.write(&dataset::encode(ex)).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn tfrecord_parquet_roundtrip_keeps_every_value() {
    let storage = Storage::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exs = generated(1000);
    let src = dir.path().join("in.tfrecord");
    write_tfrecord(&storage, &src, &exs);
    let pq = dir.path().join("out.parquet");
    let input = Input::open(&storage, src.to_str().unwrap(), None).unwrap();
    let n = dataset::convert(
        &input,
        &Output::File(storage.open(pq.to_str().unwrap()).unwrap(), Format::Parquet),
        |_| {},
    )
    .unwrap();
    assert_eq!(n, 1000);
    // The Parquet schema is what the docs promise.
    let file = std::fs::File::open(&pq).unwrap();
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = reader.schema().clone();
    let ty = |n: &str| schema.field_with_name(n).unwrap().data_type().to_string();
    assert_eq!(ty("user_id"), "Int64");
    assert_eq!(ty("label"), "Float32");
    assert!(
        ty("hist").starts_with("List(") && ty("hist").contains("Int64"),
        "{}",
        ty("hist")
    );
    assert!(
        ty("tags").starts_with("List(") && ty("tags").contains("Utf8"),
        "{}",
        ty("tags")
    );
    assert_eq!(ty("blob"), "Binary");
    assert!(schema.field_with_name("blob").unwrap().is_nullable());
    // And back: identical Examples (absent features stay absent, empty lists stay empty).
    let back = dir.path().join("back.tfrecord.gz");
    let input = Input::open(&storage, pq.to_str().unwrap(), None).unwrap();
    dataset::convert(
        &input,
        &Output::File(
            storage.open(back.to_str().unwrap()).unwrap(),
            Format::TfRecord(Compression::Gzip),
        ),
        |_| {},
    )
    .unwrap();
    assert_same(
        &read_all(&storage, back.to_str().unwrap()),
        &exs,
        "tfrecord -> parquet -> tfrecord.gz",
    );
}

#[test]
fn parquet_written_by_arrow_maps_to_features() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("arrow.parquet");
    let cols: Vec<(&str, ArrayRef)> = vec![
        (
            "i32",
            Arc::new(Int32Array::from(vec![Some(1), None, Some(-3)])),
        ),
        ("u8", Arc::new(UInt8Array::from(vec![255, 0, 7]))),
        (
            "flag",
            Arc::new(BooleanArray::from(vec![true, false, true])),
        ),
        ("f64", Arc::new(Float64Array::from(vec![0.5, 1e300, -2.0]))),
        ("s", Arc::new(StringArray::from(vec!["a", "é", ""]))),
        (
            "ids",
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                Some(vec![Some(1), Some(2)]),
                Some(vec![]),
                None,
            ])),
        ),
        (
            "cat",
            Arc::new(DictionaryArray::<Int32Type>::from_iter(["x", "y", "x"])),
        ),
    ];
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let storage = Storage::new().unwrap();
    let got = read_all(&storage, path.to_str().unwrap());
    let mut json = Vec::new();
    for ex in &got {
        let mut s = String::new();
        example::to_json(ex, &mut s);
        json.push(s);
    }
    assert_eq!(
        json,
        vec![
            r#"{"cat":{"bytes":["eA=="]},"f64":{"float":[0.5]},"flag":{"int64":[1]},"i32":{"int64":[1]},"ids":{"int64":[1,2]},"s":{"bytes":["YQ=="]},"u8":{"int64":[255]}}"#,
            r#"{"cat":{"bytes":["eQ=="]},"f64":{"float":["Infinity"]},"flag":{"int64":[0]},"ids":{"int64":[]},"s":{"bytes":["w6k="]},"u8":{"int64":[0]}}"#,
            r#"{"cat":{"bytes":["eA=="]},"f64":{"float":[-2.0]},"flag":{"int64":[1]},"i32":{"int64":[-3]},"s":{"bytes":[""]},"u8":{"int64":[7]}}"#,
        ]
    );

    // A column with no Example equivalent is named in the error.
    let dec = Decimal128Array::from(vec![1i128, 2])
        .with_precision_and_scale(10, 2)
        .unwrap();
    let batch = RecordBatch::try_new(
        Arc::new(ArrowSchema::new(vec![arrow::datatypes::Field::new(
            "price",
            dec.data_type().clone(),
            false,
        )])),
        vec![Arc::new(dec)],
    )
    .unwrap();
    let bad = dir.path().join("decimal.parquet");
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&bad).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let input = Input::open(&storage, bad.to_str().unwrap(), None).unwrap();
    let err = input.for_each(|_, _| Ok(())).unwrap_err().to_string();
    assert!(
        err.contains("decimal.parquet") && err.contains("column 'price'"),
        "{err}"
    );
}

#[test]
fn sharded_datasets_are_balanced_committed_last_and_read_in_order() {
    let storage = Storage::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exs = generated(1003);
    let src = dir.path().join("in.tfrecord");
    write_tfrecord(&storage, &src, &exs);
    let out_dir = dir.path().join("ds");
    let out = storage.open(out_dir.to_str().unwrap()).unwrap();
    let input = Input::open(&storage, src.to_str().unwrap(), None).unwrap();
    dataset::convert(
        &input,
        &Output::Dataset(out.clone(), Format::TfRecord(Compression::Zlib), 4),
        |_| {},
    )
    .unwrap();
    let m = Manifest::load(&out).unwrap();
    assert_eq!(m.records, 1003);
    assert_eq!(m.compression, "zlib");
    assert_eq!(
        m.shards.iter().map(|s| s.records).collect::<Vec<_>>(),
        vec![250, 251, 251, 251]
    );
    assert_eq!(m.shards[0].path, "part-00000-of-00004.tfrecord.zz");
    assert_eq!(
        m.schema
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["blob", "dense", "hist", "label", "tags", "user_id"]
    );
    // Each shard holds exactly what the manifest says.
    for s in &m.shards {
        let n = read_all(&storage, out_dir.join(&s.path).to_str().unwrap()).len() as u64;
        assert_eq!(n, s.records, "{}", s.path);
    }
    // Reading the directory gives every record in the original order.
    assert_same(
        &read_all(&storage, out_dir.to_str().unwrap()),
        &exs,
        "dataset",
    );
    // Shards into Parquet too.
    let pq_dir = dir.path().join("pq");
    dataset::convert(
        &Input::open(&storage, out_dir.to_str().unwrap(), None).unwrap(),
        &Output::Dataset(
            storage.open(pq_dir.to_str().unwrap()).unwrap(),
            Format::Parquet,
            3,
        ),
        |_| {},
    )
    .unwrap();
    assert_same(
        &read_all(&storage, pq_dir.to_str().unwrap()),
        &exs,
        "parquet dataset",
    );
    // An existing dataset is never overwritten.
    let err = dataset::convert(
        &input,
        &Output::Dataset(out, Format::TfRecord(Compression::None), 2),
        |_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("a dataset already exists here"),
        "{err}"
    );
    // Without its manifest, a directory is not a dataset (a writer died before committing)...
    std::fs::remove_file(out_dir.join(dataset::MANIFEST)).unwrap();
    let err = Input::open(&storage, out_dir.to_str().unwrap(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no _manifest.json"), "{err}");
    // ...but its files can still be read explicitly with a glob.
    let glob = format!("{}/part-*.tfrecord.zz", out_dir.display());
    assert_same(&read_all(&storage, &glob), &exs, "glob over shards");
}

#[test]
fn more_shards_than_records_gives_empty_shards() {
    let storage = Storage::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.tfrecord");
    write_tfrecord(&storage, &src, &generated(2));
    let out = storage
        .open(dir.path().join("ds").to_str().unwrap())
        .unwrap();
    let input = Input::open(&storage, src.to_str().unwrap(), None).unwrap();
    dataset::convert(
        &input,
        &Output::Dataset(out.clone(), Format::TfRecord(Compression::None), 5),
        |_| {},
    )
    .unwrap();
    let m = Manifest::load(&out).unwrap();
    assert_eq!(
        m.shards.iter().map(|s| s.records).collect::<Vec<_>>(),
        vec![0, 0, 1, 0, 1]
    );
    assert_eq!(read_all(&storage, &out.url()).len(), 2);
}

#[test]
fn bad_manifests_are_explained() {
    let storage = Storage::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (body, needle) in [
        ("{", "invalid manifest JSON"),
        (
            r#"{"format":"csv","compression":"none","records":0,"schema":[],"shards":[],"created_by":"x"}"#,
            "unknown format 'csv'",
        ),
        (
            r#"{"format":"tfrecord","compression":"none","records":5,"schema":[],"shards":[{"path":"a","records":4}],"created_by":"x"}"#,
            "add up to 4",
        ),
        (
            r#"{"format":"tfrecord","compression":"none","records":1,"schema":[],"shards":[{"path":"../a","records":1}],"created_by":"x"}"#,
            "leaves the dataset directory",
        ),
    ] {
        std::fs::write(dir.path().join("_manifest.json"), body).unwrap();
        let err = Input::open(&storage, dir.path().to_str().unwrap(), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(needle) && err.contains("_manifest.json"),
            "{err}"
        );
    }
}

#[test]
fn conflicting_feature_types_cannot_become_one_parquet_column() {
    let storage = Storage::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pq = dir.path().join("x.parquet");
    let src = fixtures().join("plain.tfrecord");
    let input = Input::open(&storage, src.to_str().unwrap(), None).unwrap();
    let err = dataset::convert(
        &input,
        &Output::File(storage.open(pq.to_str().unwrap()).unwrap(), Format::Parquet),
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("one column cannot hold both"), "{err}");
    assert!(!pq.exists(), "nothing is published on failure");
}

#[test]
fn parallel_scan_equals_sequential_and_reports_the_earliest_error() {
    let storage = Storage::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // ~3 MB of records: several 1 MiB batches for the parsing threads.
    let exs = generated(30_000);
    let src = dir.path().join("many.tfrecord");
    write_tfrecord(&storage, &src, &exs);
    let input = Input::open(&storage, src.to_str().unwrap(), None).unwrap();
    let one = input.scan(1, |_| {}).unwrap();
    let four = input.scan(4, |_| {}).unwrap();
    assert_eq!(one.records, 30_000);
    assert_eq!((one.records, one.bytes), (four.records, four.bytes));
    let summary = |inf: &dataset::SchemaInference| {
        inf.features
            .iter()
            .map(|(k, s)| {
                (
                    k.clone(),
                    s.dtype,
                    s.records,
                    s.values,
                    s.min_values,
                    s.max_values,
                    s.utf8,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(summary(&one), summary(&four));
    assert_eq!(
        one.features["hist"].values,
        (0..30_000u64).map(|i| i % 4).sum::<u64>()
    );
    // Two bad records, far apart: whatever the threads do, the first one is reported.
    let bad = dir.path().join("bad.tfrecord");
    let mut w = FileWriter::create(&storage.open(bad.to_str().unwrap()).unwrap(), None).unwrap();
    for (i, ex) in exs.iter().enumerate() {
        if i == 12_345 || i == 25_000 {
            w.write(b"\xff\xff not an example").unwrap();
        } else {
            w.write(&dataset::encode(ex)).unwrap();
        }
    }
    w.finish().unwrap();
    let input = Input::open(&storage, bad.to_str().unwrap(), None).unwrap();
    for threads in [1, 2, 4] {
        match input.scan(threads, |_| {}).unwrap_err() {
            Error::NotExample { index, .. } => assert_eq!(index, 12_345, "threads={threads}"),
            e => panic!("{e:?}"),
        }
    }
}

#[test]
fn mixed_types_convert_between_tfrecord_files_and_are_marked() {
    let storage = Storage::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("plain.tfrecord");
    let input = Input::open(&storage, src.to_str().unwrap(), None).unwrap();
    let out = storage
        .open(dir.path().join("ds").to_str().unwrap())
        .unwrap();
    dataset::convert(
        &input,
        &Output::Dataset(out.clone(), Format::TfRecord(Compression::Gzip), 2),
        |_| {},
    )
    .unwrap();
    let m = Manifest::load(&out).unwrap();
    let poly = &m.schema.columns[m.schema.index("poly").unwrap()];
    assert!(poly.mixed);
    assert_same(
        &read_all(&storage, &out.url()),
        &expected(),
        "mixed dataset",
    );
    // ...but such a dataset cannot become Parquet.
    let pq = storage
        .open(dir.path().join("pq").to_str().unwrap())
        .unwrap();
    let err = dataset::convert(
        &Input::open(&storage, &out.url(), None).unwrap(),
        &Output::Dataset(pq, Format::Parquet, 1),
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("more than one type"), "{err}");
}

#[test]
fn direct_row_encoding_equals_prost_encoding() {
    let cols: Vec<(&str, ArrayRef)> = vec![
        (
            "user_id",
            Arc::new(Int32Array::from(vec![Some(1), None, Some(-300_000)])),
        ),
        (
            "flag",
            Arc::new(BooleanArray::from(vec![true, false, true])),
        ),
        (
            "price",
            Arc::new(Float64Array::from(vec![0.5, f64::NAN, -2.0])),
        ),
        (
            "brand",
            Arc::new(StringArray::from(vec![Some("acme"), Some(""), None])),
        ),
        (
            "ids",
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                Some(vec![Some(1), Some(2)]),
                Some(vec![]),
                None,
            ])),
        ),
        (
            "cat",
            Arc::new(DictionaryArray::<Int32Type>::from_iter(["x", "y", "x"])),
        ),
    ];
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let mut via_prost = Vec::new();
    tusk_records::parquet_io::for_each_row("t", &batch, |ex| {
        via_prost.push(dataset::encode(&ex));
        Ok(true)
    })
    .unwrap();
    let mut direct = Vec::new();
    tusk_records::parquet_io::for_each_encoded_row("t", &batch, |rec| {
        direct.push(rec.to_vec());
        Ok(true)
    })
    .unwrap();
    assert_eq!(direct, via_prost);
}

/// Round-robin shards are encoded on their own threads: rows still land in shard `k mod n` in
/// order, whatever mix of batch sizes and single Examples the caller writes, in every format;
/// an error inside a shard's thread comes back to the caller and nothing is committed.
#[test]
fn round_robin_shards_keep_row_order_across_threads() {
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field};
    use tusk_records::dataset::{Placement, ShardedWriter};

    let storage = Storage::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let arrow_schema = Arc::new(ArrowSchema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let schema = tusk_records::parquet_io::schema_of("test", &arrow_schema).unwrap();
    let batch = |from: i64, n: i64| {
        let ids: Vec<i64> = (from..from + n).collect();
        let names: Vec<Option<String>> = ids
            .iter()
            .map(|i| (i % 5 != 0).then(|| format!("row {i}")))
            .collect();
        RecordBatch::try_new(
            arrow_schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)) as ArrayRef,
                Arc::new(StringArray::from(names)) as ArrayRef,
            ],
        )
        .unwrap()
    };
    let single = |i: i64| {
        let mut ex = Example::default();
        let f = ex.features.get_or_insert_with(Default::default);
        f.feature.insert(
            "id".into(),
            example::Feature {
                kind: Some(Kind::Int64List(Int64List { value: vec![i] })),
            },
        );
        ex
    };
    for (name, format) in [
        ("pq", Format::Parquet),
        ("tf", Format::TfRecord(Compression::None)),
        ("gz", Format::TfRecord(Compression::Gzip)),
    ] {
        let out_dir = dir.path().join(name);
        let out = storage.open(out_dir.to_str().unwrap()).unwrap();
        let mut w =
            ShardedWriter::create(&out, format, 3, schema.clone(), Placement::RoundRobin).unwrap();
        let mut next = 0i64;
        for n in [7, 1, 0, 10, 2] {
            w.write_batch("test", &batch(next, n)).unwrap();
            next += n;
            w.write_example(&single(next)).unwrap();
            next += 1;
        }
        for n in [4096, 5000] {
            w.write_batch("test", &batch(next, n)).unwrap();
            next += n;
        }
        let m = w.finish().unwrap();
        assert_eq!(m.records, next as u64, "{name}");
        let ids = |url: &str| -> Vec<i64> {
            read_all(&storage, url)
                .iter()
                .map(
                    |ex| match &ex.features.as_ref().unwrap().feature["id"].kind {
                        Some(Kind::Int64List(l)) => l.value[0],
                        other => panic!("{other:?}"),
                    },
                )
                .collect()
        };
        for (k, s) in m.shards.iter().enumerate() {
            let want: Vec<i64> = (0..next).filter(|i| i % 3 == k as i64).collect();
            let got = ids(out_dir.join(&s.path).to_str().unwrap());
            assert_eq!(got, want, "{name}: shard {k}");
            assert_eq!(s.records, want.len() as u64, "{name}: shard {k} count");
        }
        // row 10 (a multiple of 5) has no name; row 11 has its own
        let all = read_all(&storage, out_dir.to_str().unwrap());
        let name_of = |ex: &Example| ex.features.as_ref().unwrap().feature.get("name").cloned();
        let ten = all.iter().find(|ex| {
            matches!(&ex.features.as_ref().unwrap().feature["id"].kind,
                Some(Kind::Int64List(l)) if l.value == [10])
        });
        assert!(name_of(ten.unwrap()).is_none(), "{name}");
    }

    // A value a shard cannot take fails inside its thread; the error reaches the caller (at a
    // later write or at finish) naming the shard, and no manifest is written.
    let bad_schema = Arc::new(ArrowSchema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let bad = RecordBatch::try_new(
        bad_schema,
        vec![
            Arc::new(StringArray::from(vec!["1", "x", "3", "4"])) as ArrayRef,
            Arc::new(StringArray::from(vec![Some("a"); 4])) as ArrayRef,
        ],
    )
    .unwrap();
    let out_dir = dir.path().join("bad");
    let out = storage.open(out_dir.to_str().unwrap()).unwrap();
    let mut w =
        ShardedWriter::create(&out, Format::Parquet, 2, schema, Placement::RoundRobin).unwrap();
    let mut failed = None;
    for _ in 0..4 {
        if let Err(e) = w.write_batch("test", &bad) {
            failed = Some(e);
            break;
        }
    }
    let err = match failed {
        Some(e) => e,
        None => w
            .finish()
            .expect_err("an id that is not a number must fail"),
    };
    let msg = err.to_string();
    assert!(
        msg.contains("part-00001-of-00002.parquet") && msg.contains("id"),
        "{msg}"
    );
    assert!(!out_dir.join(dataset::MANIFEST).exists());
}

/// The same rows make the same Parquet bytes however they reach the writer: as Examples one
/// by one, as one Arrow batch, or as batches of any sizes (a cluster's partitions arrive in
/// other batches than one process's).
#[test]
fn parquet_bytes_do_not_depend_on_how_rows_arrive() {
    use tusk_records::dataset::{Pos, SchemaInference};
    use tusk_records::parquet_io::ParquetWriter;
    let storage = Storage::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exs = generated(30_000);
    let mut inf = SchemaInference::default();
    for (i, ex) in exs.iter().enumerate() {
        let pos = Pos {
            file: "rows",
            index: i as u64,
            offset: 0,
        };
        inf.add(&dataset::encode(ex), &pos).unwrap();
    }
    let (schema, _) = inf.finish(false).unwrap();
    let loc = |name: &str| {
        storage
            .open(dir.path().join(name).to_str().unwrap())
            .unwrap()
    };
    let mut w = ParquetWriter::create(&loc("rows.parquet"), &schema).unwrap();
    for ex in &exs {
        w.write(ex).unwrap();
    }
    w.finish().unwrap();
    let want = std::fs::read(dir.path().join("rows.parquet")).unwrap();
    // the same rows as Arrow batches
    let file = std::fs::File::open(dir.path().join("rows.parquet")).unwrap();
    let batches: Vec<RecordBatch> =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let all = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    for (name, sizes) in [
        ("one.parquet", vec![30_000]),
        ("odd.parquet", vec![1, 7, 5000, 8191, 3, 16_798]),
        ("small.parquet", vec![1000; 30]),
    ] {
        let mut w = ParquetWriter::create(&loc(name), &schema).unwrap();
        let mut at = 0;
        for n in sizes {
            w.write_batch(&all.slice(at, n)).unwrap();
            at += n;
        }
        assert_eq!(at, 30_000);
        w.finish().unwrap();
        assert!(
            std::fs::read(dir.path().join(name)).unwrap() == want,
            "{name} differs from the rows written one by one"
        );
    }
}
