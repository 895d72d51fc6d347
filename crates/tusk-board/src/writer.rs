//! [`EventWriter`]: scalar summaries into a TensorBoard event file on any storage backend.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message as _;
use tusk_records::tfrecord;
use tusk_storage::Location;

use crate::pb::{self, event::What, summary};
use crate::{Error, Result};

/// The `file_version` of the first record of every event file, as TensorFlow writes it.
pub const FILE_VERSION: &str = "brain.Event:2";

/// How often [`EventWriter`] flushes by itself unless told otherwise (TensorFlow's default).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(120);

/// How many file names [`EventWriter::create`] tries before giving up.
const NAME_TRIES: u32 = 1000;

/// Writes scalar summaries into a new TensorBoard event file
/// (`events.out.tfevents.<unix_secs>.<hostname>`) in a run directory.
///
/// Values are buffered; [`EventWriter::flush`] makes everything added so far visible to
/// readers, and happens by itself every [`DEFAULT_FLUSH_INTERVAL`] (see
/// [`EventWriter::set_flush_interval`]) and on drop. On a local directory the file is appended
/// to. Other backends (HDFS, WebHDFS, memory) have no append: there every flush publishes what
/// it adds as a new, complete file named after the first one plus a sequence number
/// (`events.out.tfevents.<unix_secs>.<hostname>.000000001`, …), created atomically, so a flush
/// costs what it writes however long the run is, and TensorBoard, which reads a directory's
/// event files in name order, sees one continuous log.
pub struct EventWriter {
    file: Location,
    sink: Sink,
    /// Framed records not yet visible to readers.
    pending: Vec<u8>,
    flush_interval: Option<Duration>,
    last_flush: Instant,
}

enum Sink {
    /// A local file opened for appending, and its length after the last successful flush.
    Local { file: File, len: u64 },
    /// Each flush creates the next file of the sequence (`next`), perhaps on a thread of
    /// its own (`writing`, see [`EventWriter::flush_in_background`]).
    Roll { next: u64, writing: Option<RollJob> },
}

impl EventWriter {
    /// Create a new event file in `run_dir` (created if missing) holding the `file_version`
    /// record. If the name is taken (two writers in the same second), `.1`, `.2`, ... is
    /// appended; names are claimed create-only, so two writers never share a file.
    pub fn create(run_dir: &Location) -> Result<EventWriter> {
        let base = format!(
            "events.out.tfevents.{}.{}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            hostname()
        );
        let first = frame(&pb::Event {
            wall_time: now(),
            step: 0,
            what: Some(What::FileVersion(FILE_VERSION.to_string())),
        });
        if let Some(dir) = run_dir.local_path() {
            std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
                file: run_dir.url(),
                source,
            })?;
        }
        for i in 0..NAME_TRIES {
            let name = if i == 0 {
                base.clone()
            } else {
                format!("{base}.{i}")
            };
            let loc = run_dir.join(&name);
            let sink = if let Some(path) = loc.local_path() {
                let mut file = match OpenOptions::new().append(true).create_new(true).open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(source) => {
                        return Err(Error::Io {
                            file: loc.url(),
                            source,
                        });
                    }
                };
                file.write_all(&first)
                    .and_then(|()| file.flush())
                    .map_err(|source| Error::Io {
                        file: loc.url(),
                        source,
                    })?;
                Sink::Local {
                    file,
                    len: first.len() as u64,
                }
            } else {
                // Claim the name with an empty file (on HDFS an empty file closes at once,
                // one with data can wait half a second for its block report), then fill in
                // the version record in the background: readers see an empty event file or
                // the complete one, and the first flush waits for it.
                match loc.write_new(Bytes::new()) {
                    Ok(()) => {}
                    Err(tusk_storage::Error::AlreadyExists { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
                let (file, first) = (loc.clone(), Bytes::from(first.clone()));
                let fill = std::thread::spawn(move || match file.write(first) {
                    Ok(()) => Ok(1),
                    Err(e) => Err(Box::new(RollFailure {
                        error: e.into(),
                        records: Vec::new(),
                        next: 1,
                    })),
                });
                Sink::Roll {
                    next: 1,
                    writing: Some(fill),
                }
            };
            return Ok(EventWriter {
                file: loc,
                sink,
                pending: Vec::new(),
                flush_interval: Some(DEFAULT_FLUSH_INTERVAL),
                last_flush: Instant::now(),
            });
        }
        Err(Error::NoFreeName {
            dir: run_dir.url(),
            tries: NAME_TRIES,
        })
    }

    /// The event file being written.
    pub fn location(&self) -> &Location {
        &self.file
    }

    /// Flush by itself when this much time has passed since the last flush (checked when a
    /// value is added); `None` flushes only on [`EventWriter::flush`] and on drop.
    pub fn set_flush_interval(&mut self, interval: Option<Duration>) {
        self.flush_interval = interval;
    }

    /// Record `value` for series `tag` (e.g. `train/loss`) at `step`, with the current wall
    /// time. TensorBoard stores scalars as 32-bit floats, so `value` is rounded to `f32`.
    /// Fails only when this triggers a timed flush that fails; the value is kept either way.
    pub fn add_scalar(&mut self, tag: &str, step: i64, value: f64) -> Result<()> {
        self.add_scalars(step, [(tag, value)])
    }

    /// Record several series at one `step` in a single event (one record in the file).
    pub fn add_scalars<'a>(
        &mut self,
        step: i64,
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Result<()> {
        let value = values
            .into_iter()
            .map(|(tag, v)| summary::Value {
                tag: tag.to_string(),
                value: Some(summary::value::Value::SimpleValue(v as f32)),
            })
            .collect::<Vec<_>>();
        if value.is_empty() {
            return Ok(());
        }
        let event = pb::Event {
            wall_time: now(),
            step,
            what: Some(What::Summary(pb::Summary { value })),
        };
        self.pending.extend_from_slice(&frame(&event));
        match self.flush_interval {
            Some(every) if self.last_flush.elapsed() >= every => self.flush(),
            _ => Ok(()),
        }
    }

    /// Make everything added so far visible to readers. On failure nothing new is visible and
    /// the values stay buffered, so a later flush can retry.
    pub fn flush(&mut self) -> Result<()> {
        self.settle()?;
        self.last_flush = Instant::now();
        if self.pending.is_empty() {
            return Ok(());
        }
        match &mut self.sink {
            Sink::Local { file, len } => {
                if let Err(source) = file.write_all(&self.pending).and_then(|()| file.flush()) {
                    // Cut off a partial write so that a retry does not leave half a record.
                    let _ = file.set_len(*len);
                    return Err(Error::Io {
                        file: self.file.url(),
                        source,
                    });
                }
                *len += self.pending.len() as u64;
                self.pending.clear();
            }
            Sink::Roll { next, .. } => {
                let records = std::mem::take(&mut self.pending);
                match write_roll(&self.file, *next, records) {
                    Ok(n) => *next = n,
                    Err(f) => {
                        *next = f.next;
                        self.pending = f.records;
                        return Err(f.error);
                    }
                }
            }
        }
        Ok(())
    }

    /// [`EventWriter::flush`] without waiting for remote storage: on backends without append
    /// the new file is written on a thread of its own (one at a time), so a training loop does
    /// not stall on a round trip to HDFS. Its failure is returned by the next flush, with the
    /// values buffered again. On a local directory this is [`EventWriter::flush`].
    pub fn flush_in_background(&mut self) -> Result<()> {
        self.settle()?;
        let Sink::Roll { next, writing } = &mut self.sink else {
            return self.flush();
        };
        self.last_flush = Instant::now();
        if self.pending.is_empty() {
            return Ok(());
        }
        let (file, n, records) = (self.file.clone(), *next, std::mem::take(&mut self.pending));
        *writing = Some(std::thread::spawn(move || write_roll(&file, n, records)));
        Ok(())
    }

    /// Wait for a background flush; if it failed, its values go back in front of the buffer.
    fn settle(&mut self) -> Result<()> {
        let Sink::Roll { next, writing } = &mut self.sink else {
            return Ok(());
        };
        let Some(job) = writing.take() else {
            return Ok(());
        };
        match job.join() {
            Ok(Ok(n)) => *next = n,
            Ok(Err(f)) => {
                let RollFailure {
                    error,
                    mut records,
                    next: n,
                } = *f;
                *next = n;
                records.extend_from_slice(&self.pending);
                self.pending = records;
                return Err(error);
            }
            Err(_) => {
                return Err(Error::Io {
                    file: self.file.url(),
                    source: std::io::Error::other("the event file's writer thread panicked"),
                });
            }
        }
        Ok(())
    }
}

/// A roll file being written on its own thread: the next sequence number, or the error with
/// the records to buffer again.
type RollJob = std::thread::JoinHandle<RollResult>;
type RollResult = std::result::Result<u64, Box<RollFailure>>;

/// A roll file that could not be written.
struct RollFailure {
    error: Error,
    /// The records it held, to buffer again.
    records: Vec<u8>,
    /// The sequence number to try next.
    next: u64,
}

/// Publish `records` as the next file after `first` (`<first>.<seq>`, seq from `next`),
/// create-only: a name taken by someone else is skipped, never overwritten.
fn write_roll(first: &Location, mut next: u64, records: Vec<u8>) -> RollResult {
    // Each file starts with its own version record, as a file TensorFlow writes.
    let mut data = frame(&pb::Event {
        wall_time: now(),
        step: 0,
        what: Some(What::FileVersion(FILE_VERSION.to_string())),
    });
    data.extend_from_slice(&records);
    let data = Bytes::from(data);
    loop {
        let name = format!("{}.{:09}", first.file_name(), next);
        match first.parent().join(&name).write_new(data.clone()) {
            Ok(()) => return Ok(next + 1),
            Err(tusk_storage::Error::AlreadyExists { .. }) if next < u64::MAX => next += 1,
            Err(e) => {
                return Err(Box::new(RollFailure {
                    error: e.into(),
                    records,
                    next,
                }));
            }
        }
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        // Best effort: a failure here has nowhere to go; call `flush` to see it.
        let _ = self.flush();
    }
}

impl std::fmt::Debug for EventWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventWriter")
            .field("file", &self.file.url())
            .field("pending_bytes", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// One event as a framed TFRecord.
fn frame(event: &pb::Event) -> Vec<u8> {
    let data = event.encode_to_vec();
    let mut out = Vec::with_capacity(data.len() + 16);
    tfrecord::Writer::new(&mut out)
        .write_record(&data)
        .expect("writing to a Vec cannot fail");
    out
}

/// Seconds since the Unix epoch, as TensorFlow's `wall_time`.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// This machine's name, reduced to characters safe in a file name on every backend.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "localhost".to_string()
    } else {
        clean
    }
}
