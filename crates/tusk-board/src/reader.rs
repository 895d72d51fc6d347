//! [`read_scalars`]: every scalar series of a run directory, back from its event files.

use std::collections::BTreeMap;

use prost::Message as _;
use tusk_records::tfrecord::{self, Compression};
use tusk_storage::Location;

use crate::pb::{self, event::What, summary};
use crate::{Error, Result};

/// One logged value of a scalar series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scalar {
    /// Training step.
    pub step: i64,
    /// Seconds since the Unix epoch when it was logged.
    pub wall_time: f64,
    /// The value (stored as a 32-bit float in the file).
    pub value: f64,
}

/// Whether `name` is an event file name, by TensorBoard's own rule (it contains `tfevents`).
pub fn is_event_file(name: &str) -> bool {
    name.contains("tfevents")
}

/// The event files directly in `run_dir` (not in subdirectories, which TensorBoard treats as
/// other runs), in name order.
pub fn event_files(run_dir: &Location) -> Result<Vec<Location>> {
    Ok(run_dir
        .list()?
        .into_iter()
        .map(|e| e.location)
        .filter(|loc| {
            let rel = loc.relative_to(run_dir);
            !rel.contains('/') && is_event_file(&rel)
        })
        .collect())
}

/// Every scalar series (`simple_value` summaries) in the event files of `run_dir`, by tag,
/// in the order written, reading the files in name order. Both CRCs of every record are
/// checked; a damaged file fails with an error naming the file, record and byte offset.
/// Fails with [`Error::NoEventFiles`] when the directory holds no event file.
pub fn read_scalars(run_dir: &Location) -> Result<BTreeMap<String, Vec<Scalar>>> {
    let files = event_files(run_dir)?;
    if files.is_empty() {
        return Err(Error::NoEventFiles { dir: run_dir.url() });
    }
    let mut out: BTreeMap<String, Vec<Scalar>> = BTreeMap::new();
    for file in &files {
        read_file(file, &mut out)?;
    }
    Ok(out)
}

/// Add the scalars of one event file to `out`.
pub(crate) fn read_file(file: &Location, out: &mut BTreeMap<String, Vec<Scalar>>) -> Result<()> {
    let mut records = tfrecord::open(file, Some(Compression::None))?;
    loop {
        let (index, offset) = (records.index(), records.offset());
        let Some(data) = records.next_record()? else {
            return Ok(());
        };
        let event = pb::Event::decode(data).map_err(|e| Error::NotEvent {
            file: file.url(),
            index,
            offset,
            reason: e.to_string(),
        })?;
        let Some(What::Summary(summary)) = event.what else {
            continue;
        };
        for v in summary.value {
            if let Some(summary::value::Value::SimpleValue(x)) = v.value {
                out.entry(v.tag).or_default().push(Scalar {
                    step: event.step,
                    wall_time: event.wall_time,
                    value: f64::from(x),
                });
            }
        }
    }
}
