//! Event files written by tusk, read by TensorBoard itself (`tests/read_tfevents.py` runs
//! TensorBoard's `EventAccumulator` in the TensorFlow venv), locally and through the
//! file-per-flush path used for storage without append (`memory://`, HDFS).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tusk_board::{EventWriter, Scalar, read_scalars, write_report};
use tusk_storage::{Location, Storage};

/// The Python that has TensorBoard, or `None` to skip (see `tusk_testkit::require`).
fn python_with_tensorboard() -> Option<PathBuf> {
    let py = tusk_testkit::python_with_tensorflow()?;
    let ok = Command::new(&py)
        .args([
            "-c",
            "import tensorboard.backend.event_processing.event_accumulator",
        ])
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    tusk_testkit::require(
        "TensorBoard (Python)",
        "TUSK_REQUIRE_TF",
        if ok {
            Ok(py.clone())
        } else {
            Err(format!(
                "{} cannot import tensorboard (pip install tensorboard)",
                py.display()
            ))
        },
    )
}

/// What TensorBoard reads from one directory.
struct TbRun {
    /// The format version as the accumulator parsed it (2.0 for `brain.Event:2`).
    file_version: f64,
    /// Each event file's first record's `file_version` string.
    first_records: BTreeMap<String, String>,
    /// tag → [(step, wall_time, value)].
    scalars: BTreeMap<String, Vec<(i64, f64, f64)>>,
}

fn tensorboard_read(py: &Path, dirs: &[&Path]) -> Vec<TbRun> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_tfevents.py");
    let out = Command::new(py)
        .arg(&script)
        .args(dirs)
        .env("TF_CPP_MIN_LOG_LEVEL", "3")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "read_tfevents.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    dirs.iter()
        .map(|d| {
            let run = &json[d.to_str().unwrap()];
            let file_version = run["file_version"].as_f64().unwrap_or(f64::NAN);
            let first_records = run["first_records"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let scalars = run["scalars"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(tag, events)| {
                    let events = events
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| (e[0].as_i64().unwrap(), float(&e[1]), float(&e[2])))
                        .collect();
                    (tag.clone(), events)
                })
                .collect();
            TbRun {
                file_version,
                first_records,
                scalars,
            }
        })
        .collect()
}

/// A float that Python printed with `repr` (exact; serde_json's own float parsing may be off by
/// one ulp).
fn float(v: &serde_json::Value) -> f64 {
    let s = v.as_str().expect("a float as a string");
    match s {
        "nan" => f64::NAN,
        "inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        _ => s.parse().unwrap_or_else(|e| panic!("bad float {s}: {e}")),
    }
}

/// A training-run-shaped log: per-step train scalars in one event, eval scalars now and then,
/// values that are not exact in f32, and a tag that needs escaping in HTML.
fn log_run(w: &mut EventWriter, steps: std::ops::Range<i64>) {
    for step in steps {
        let loss = 1.0 / (1.0 + step as f64).sqrt() + 1e-9;
        w.add_scalars(
            step,
            [
                ("train/loss", loss),
                ("train/learning_rate", 0.001 * 0.99f64.powi(step as i32)),
                ("train/samples_per_sec", 12_345.678 + step as f64),
            ],
        )
        .unwrap();
        if step % 10 == 9 {
            w.add_scalar("eval/auc", step, 0.5 + step as f64 / 1000.0)
                .unwrap();
            w.add_scalar("eval/hr@10", step, 0.1 * (step / 10) as f64)
                .unwrap();
            w.add_scalar("eval/<odd> & \"tag\"", step, -1.5e-7).unwrap();
        }
    }
}

/// tusk's and TensorBoard's readings of the same directory agree exactly (values are f32s
/// on both sides, wall times are the same f64).
fn assert_same(ours: &BTreeMap<String, Vec<Scalar>>, files: usize, tb: &TbRun) {
    assert_eq!(tb.file_version, 2.0);
    assert_eq!(tb.first_records.len(), files, "{:?}", tb.first_records);
    for (file, version) in &tb.first_records {
        assert_eq!(version, "brain.Event:2", "{file}");
    }
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        tb.scalars.keys().collect::<Vec<_>>()
    );
    for (tag, series) in ours {
        let want: Vec<_> = series
            .iter()
            .map(|s| (s.step, s.wall_time, s.value))
            .collect();
        assert_eq!(want, tb.scalars[tag], "{tag}");
    }
}

#[test]
fn tensorboard_reads_local_event_files_while_the_writer_is_open() {
    let Some(py) = python_with_tensorboard() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let storage = Storage::new().unwrap();
    let run = storage.open(tmp.path().to_str().unwrap()).unwrap();
    let mut w = EventWriter::create(&run).unwrap();
    w.set_flush_interval(None);
    log_run(&mut w, 0..50);
    w.flush().unwrap();
    // Still open: flush alone must make everything visible.
    let ours = read_scalars(&run).unwrap();
    assert_eq!(ours["train/loss"].len(), 50);
    assert_eq!(ours["eval/auc"].len(), 5);
    assert_eq!(ours["eval/hr@10"][4].value, 0.4f32 as f64);
    let tb = tensorboard_read(&py, &[tmp.path()]);
    assert_same(&ours, 1, &tb[0]);

    // More values after a flush are appended to the same file, and the report covers every tag.
    log_run(&mut w, 50..60);
    drop(w);
    let ours = read_scalars(&run).unwrap();
    assert_eq!(ours["train/loss"].len(), 60);
    let tb = tensorboard_read(&py, &[tmp.path()]);
    assert_same(&ours, 1, &tb[0]);
    let html = write_report(&run, "run").unwrap();
    assert_eq!(html.matches("<svg ").count(), ours.len());
    assert!(html.contains("eval/&lt;odd&gt; &amp; &quot;tag&quot;"));
}

/// Copy every file of `dir` (a `memory://` run) into a local directory for TensorBoard.
fn copy_out(dir: &Location, to: &Path) {
    for e in dir.list().unwrap() {
        std::fs::write(
            to.join(e.location.relative_to(dir)),
            e.location.read().unwrap(),
        )
        .unwrap();
    }
}

#[test]
fn file_per_flush_path_for_storage_without_append() {
    let Some(py) = python_with_tensorboard() else {
        return;
    };
    let storage = Storage::new().unwrap();
    let run = storage.open("memory://board/runs/42").unwrap();
    let mut w = EventWriter::create(&run).unwrap();
    assert!(
        w.location()
            .url()
            .starts_with("memory://board/runs/42/events.out.tfevents.")
    );
    w.set_flush_interval(None);
    // Several flushes, each publishing what it adds as the next file.
    log_run(&mut w, 0..20);
    w.flush().unwrap();
    log_run(&mut w, 20..40);
    w.flush().unwrap();
    let ours_open = read_scalars(&run).unwrap();
    assert_eq!(ours_open["train/loss"].len(), 40);
    log_run(&mut w, 40..45);
    drop(w);
    // A second writer in the same directory gets its own file, read after the first.
    let mut w2 = EventWriter::create(&run).unwrap();
    w2.add_scalar("train/loss", 45, 0.125).unwrap();
    drop(w2);
    let ours = read_scalars(&run).unwrap();
    assert_eq!(ours["train/loss"].len(), 46);
    assert_eq!(ours["train/loss"][45].value, 0.125);
    // w: the first file and three flushes; w2: its first file and one flush.
    assert_eq!(run.list().unwrap().len(), 6, "no temporaries left");

    let tmp = tempfile::tempdir().unwrap();
    copy_out(&run, tmp.path());
    let tb = tensorboard_read(&py, &[tmp.path()]);
    assert_same(&ours, 6, &tb[0]);
    let html = write_report(&run, "memory run").unwrap();
    assert_eq!(html.matches("<svg ").count(), ours.len());
}
