//! TensorBoard observability for tusk training runs, on any storage backend.
//!
//! - [`EventWriter`] writes scalar summaries into a TensorBoard event file
//!   (`events.out.tfevents.<unix_secs>.<hostname>`: TFRecord-framed `tensorflow.Event` protos,
//!   the first one carrying `file_version = "brain.Event:2"`) in a run directory, local or on
//!   HDFS; TensorBoard reads the directory as it is.
//! - [`read_scalars`] reads every scalar series of a run directory back, checking every CRC.
//! - [`write_report`] renders them as one self-contained HTML page: a table of last values and
//!   an inline SVG chart per tag, grouped by the tag prefix (`train/…`, `eval/…`).
//!
//! ```
//! let storage = tusk_storage::Storage::new()?;
//! let run = storage.open("memory://demo/runs/1")?;
//! let mut w = tusk_board::EventWriter::create(&run)?;
//! for step in 0..3 {
//!     w.add_scalar("train/loss", step, 1.0 / (step + 1) as f64)?;
//! }
//! w.flush()?;
//! let scalars = tusk_board::read_scalars(&run)?;
//! assert_eq!(scalars["train/loss"].len(), 3);
//! assert_eq!(scalars["train/loss"][2].value, (1.0f64 / 3.0) as f32 as f64);
//! let html = tusk_board::write_report(&run, "run 1")?;
//! assert!(html.contains("<svg"));
//! # Ok::<(), tusk_board::Error>(())
//! ```

mod error;
mod reader;
mod report;
mod writer;

/// Generated from `proto/event.proto` (wire-identical to TensorFlow's `Event` and `Summary`).
#[allow(missing_docs, clippy::all)]
pub(crate) mod pb {
    include!(concat!(env!("OUT_DIR"), "/tensorflow.rs"));
}

pub use error::{Error, Result};
pub use reader::{Scalar, event_files, is_event_file, read_scalars};
pub use report::{Panel, escape, group_of, render_panels, render_report, utc_time, write_report};
pub use writer::{DEFAULT_FLUSH_INTERVAL, EventWriter, FILE_VERSION};

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use tusk_storage::{Location, Storage};

    fn local_run() -> (tempfile::TempDir, Location) {
        let dir = tempfile::tempdir().unwrap();
        let run = Storage::new()
            .unwrap()
            .open(dir.path().join("run").to_str().unwrap())
            .unwrap();
        (dir, run)
    }

    fn write_some(run: &Location) -> Location {
        let mut w = EventWriter::create(run).unwrap();
        w.add_scalar("train/loss", 1, 0.75).unwrap();
        w.add_scalars(2, [("train/loss", 0.5), ("eval/auc", 0.625)])
            .unwrap();
        w.flush().unwrap();
        w.location().clone()
    }

    #[test]
    fn round_trip_local_and_memory() {
        let (_tmp, local) = local_run();
        let memory = Storage::new().unwrap().open("memory://t/run").unwrap();
        for run in [local, memory] {
            let file = write_some(&run);
            assert!(file.file_name().starts_with("events.out.tfevents."));
            let s = read_scalars(&run).unwrap();
            assert_eq!(s.keys().collect::<Vec<_>>(), ["eval/auc", "train/loss"]);
            let loss: Vec<_> = s["train/loss"].iter().map(|x| (x.step, x.value)).collect();
            assert_eq!(loss, [(1, 0.75), (2, 0.5)]);
            assert_eq!(s["eval/auc"][0].step, 2);
            assert_eq!(s["eval/auc"][0].value, 0.625);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            assert!((now - s["eval/auc"][0].wall_time).abs() < 60.0);
        }
    }

    #[test]
    fn first_record_is_the_file_version() {
        let (_tmp, run) = local_run();
        let file = write_some(&run);
        let mut r = tusk_records::tfrecord::open(&file, None).unwrap();
        let first = pb::Event::decode(r.next_record().unwrap().unwrap()).unwrap();
        assert_eq!(
            first.what,
            Some(pb::event::What::FileVersion("brain.Event:2".into()))
        );
        assert!(first.wall_time > 1e9);
    }

    #[test]
    fn values_are_buffered_until_flush_then_visible() {
        for (_tmp, run) in [
            local_run(),
            (
                tempfile::tempdir().unwrap(),
                Storage::new().unwrap().open("memory://b/run").unwrap(),
            ),
        ] {
            let mut w = EventWriter::create(&run).unwrap();
            w.set_flush_interval(None);
            // The file exists right away (only the version record).
            assert!(read_scalars(&run).unwrap().is_empty());
            w.add_scalar("a", 1, 1.0).unwrap();
            assert!(read_scalars(&run).unwrap().is_empty());
            w.flush().unwrap();
            assert_eq!(read_scalars(&run).unwrap()["a"].len(), 1);
            w.add_scalar("a", 2, 2.0).unwrap();
            w.add_scalar("a", 3, 3.0).unwrap();
            w.flush().unwrap();
            assert_eq!(read_scalars(&run).unwrap()["a"].len(), 3);
            // A zero interval flushes on every value.
            w.set_flush_interval(Some(std::time::Duration::ZERO));
            w.add_scalar("a", 4, 4.0).unwrap();
            assert_eq!(read_scalars(&run).unwrap()["a"].len(), 4);
            // Drop flushes what is left.
            w.set_flush_interval(None);
            w.add_scalar("a", 5, 5.0).unwrap();
            drop(w);
            let steps: Vec<_> = read_scalars(&run).unwrap()["a"]
                .iter()
                .map(|s| s.step)
                .collect();
            assert_eq!(steps, [1, 2, 3, 4, 5]);
        }
    }

    #[test]
    fn without_append_each_flush_is_a_new_file_of_what_it_adds() {
        let run = Storage::new().unwrap().open("memory://roll/run").unwrap();
        let mut w = EventWriter::create(&run).unwrap();
        w.set_flush_interval(None);
        let mut sizes = Vec::new();
        for step in 1..=30 {
            w.add_scalars(step, [("train/loss", 1.0 / step as f64), ("x", 2.0)])
                .unwrap();
            w.flush().unwrap();
            let files = event_files(&run).unwrap();
            assert_eq!(files.len(), step as usize + 1);
            sizes.push(files.last().unwrap().read().unwrap().len());
        }
        // A flush costs what it adds, not what came before.
        assert!(sizes.iter().all(|&n| n == sizes[0]), "{sizes:?}");
        // In the background: visible once the next flush has waited for it.
        w.add_scalar("train/loss", 31, 0.01).unwrap();
        w.flush_in_background().unwrap();
        w.flush().unwrap();
        assert_eq!(read_scalars(&run).unwrap()["train/loss"].len(), 31);
        // Nothing new: no file.
        w.flush().unwrap();
        assert_eq!(event_files(&run).unwrap().len(), 32);
        let files = event_files(&run).unwrap();
        assert_eq!(
            files[1].file_name(),
            format!("{}.000000001", files[0].file_name())
        );
        let steps: Vec<_> = read_scalars(&run).unwrap()["train/loss"]
            .iter()
            .map(|s| s.step)
            .collect();
        assert_eq!(steps, (1..=31).collect::<Vec<_>>());
        // Every file is a complete event file starting with its version record.
        let mut r = tusk_records::tfrecord::open(&files[7], None).unwrap();
        let first = pb::Event::decode(r.next_record().unwrap().unwrap()).unwrap();
        assert_eq!(
            first.what,
            Some(pb::event::What::FileVersion("brain.Event:2".into()))
        );
    }

    #[test]
    fn two_writers_get_two_files_read_in_name_order() {
        let (_tmp, run) = local_run();
        let mut a = EventWriter::create(&run).unwrap();
        let mut b = EventWriter::create(&run).unwrap();
        assert_ne!(a.location().url(), b.location().url());
        b.add_scalar("x", 2, 2.0).unwrap();
        a.add_scalar("x", 1, 1.0).unwrap();
        drop(b);
        drop(a);
        let files = event_files(&run).unwrap();
        assert_eq!(files.len(), 2);
        let names: Vec<_> = files.iter().map(|f| f.file_name().to_string()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let steps: Vec<_> = read_scalars(&run).unwrap()["x"]
            .iter()
            .map(|s| s.step)
            .collect();
        // `a` claimed the plain name, `b` the `.1` suffix, which sorts after it.
        assert_eq!(steps, [1, 2]);
    }

    #[test]
    fn other_files_and_subdirectories_are_ignored() {
        let (_tmp, run) = local_run();
        write_some(&run);
        run.join("notes.txt").write(&b"not events"[..]).unwrap();
        run.join("sub/events.out.tfevents.1.x")
            .write(&b"garbage"[..])
            .unwrap();
        assert_eq!(read_scalars(&run).unwrap().len(), 2);
    }

    #[test]
    fn empty_or_missing_directory_is_an_error() {
        let (_tmp, run) = local_run();
        let err = read_scalars(&run).unwrap_err();
        assert!(matches!(err, Error::NoEventFiles { .. }), "{err}");
        assert!(err.to_string().contains(&run.url()), "{err}");
        assert!(write_report(&run, "t").is_err());
    }

    /// The file, its bytes, and the offset of the third record (the second summary event).
    fn damaged_setup() -> (tempfile::TempDir, Location, Location, Vec<u8>, usize) {
        let (tmp, run) = local_run();
        let file = write_some(&run);
        let bytes = file.read().unwrap().to_vec();
        let mut r = tusk_records::tfrecord::Reader::new(&bytes[..], "x");
        r.next_record().unwrap();
        r.next_record().unwrap();
        let third = r.offset() as usize;
        (tmp, run, file, bytes, third)
    }

    #[test]
    fn damaged_data_names_file_record_and_offset() {
        let (_tmp, run, file, mut bytes, third) = damaged_setup();
        bytes[third + 14] ^= 0x40;
        std::fs::write(file.local_path().unwrap(), &bytes).unwrap();
        let msg = read_scalars(&run).unwrap_err().to_string();
        assert!(msg.contains(&file.url()), "{msg}");
        assert!(
            msg.contains(&format!("record #2 at byte offset {third}")),
            "{msg}"
        );
        assert!(msg.contains("data CRC mismatch"), "{msg}");
    }

    #[test]
    fn damaged_length_and_truncation_are_errors() {
        let (_tmp, run, file, bytes, third) = damaged_setup();
        let mut b = bytes.clone();
        b[third] ^= 1;
        std::fs::write(file.local_path().unwrap(), &b).unwrap();
        let msg = read_scalars(&run).unwrap_err().to_string();
        assert!(msg.contains("length CRC mismatch"), "{msg}");
        assert!(msg.contains(&format!("byte offset {third}")), "{msg}");

        std::fs::write(file.local_path().unwrap(), &bytes[..bytes.len() - 3]).unwrap();
        let msg = read_scalars(&run).unwrap_err().to_string();
        assert!(
            msg.contains(&file.url()) && msg.contains("truncated"),
            "{msg}"
        );
        assert!(msg.contains(&format!("byte offset {third}")), "{msg}");
    }

    #[test]
    fn intact_framing_around_a_non_event_payload() {
        let (_tmp, run) = local_run();
        let file = run.join("events.out.tfevents.0.bad");
        let mut bytes = Vec::new();
        let mut w = tusk_records::tfrecord::Writer::new(&mut bytes);
        w.write_record(&pb::Event::default().encode_to_vec())
            .unwrap();
        w.write_record(&[0xff, 0xff, 0xff]).unwrap();
        file.write(bytes).unwrap();
        let msg = read_scalars(&run).unwrap_err().to_string();
        assert!(msg.contains(&file.url()), "{msg}");
        assert!(
            msg.contains("record #1 at byte offset 16 is not a tensorflow.Event"),
            "{msg}"
        );
    }

    #[test]
    fn hostname_is_file_name_safe() {
        let (_tmp, run) = local_run();
        let file = write_some(&run);
        let name = file.file_name().to_string();
        let host = name.splitn(5, '.').nth(4).unwrap();
        assert!(!host.is_empty(), "{name}");
        assert!(
            host.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{name}"
        );
    }
}
