//! `normalize`: a directory or glob of images → a sharded TFRecord dataset.

use rayon::prelude::*;
use std::sync::{Mutex, PoisonError};
use tusk_records::dataset::{Column, MANIFEST, Manifest, Schema, Shard};

use tusk_records::example::{ExampleWriter, FeatureType};
use tusk_records::tfrecord::{Compression, FileWriter};
use tusk_storage::{Location, Storage};

use crate::{Error, NormalizeConfig, Result, Tensor, normalize_image_into};

/// File extensions (lower case) a directory listing takes as images.
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// What [`normalize`] reports while it works, for progress bars and logs.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// The input was resolved to this many files; work starts.
    Found {
        /// Files to process.
        images: usize,
    },
    /// An image was normalised and written.
    Written {
        /// Its URL.
        url: &'a str,
    },
    /// An image could not be decoded and was skipped (not sent with `strict`, which fails).
    Corrupt {
        /// Its URL.
        url: &'a str,
        /// What the decoder said.
        reason: &'a str,
    },
}

/// A skipped image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptImage {
    /// Its URL.
    pub url: String,
    /// What the decoder said.
    pub reason: String,
}

/// What [`normalize`] did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Images written (one record each).
    pub images: u64,
    /// Images skipped because they do not decode, in input order.
    pub corrupt: Vec<CorruptImage>,
    /// The output dataset directory.
    pub output: String,
    /// Its shard files.
    pub shards: usize,
}

/// Whether a file name looks like an image this crate decodes (`.png`, `.jpg`, `.jpeg`, any
/// case).
pub fn is_image_name(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| IMAGE_EXTENSIONS.iter().any(|e| ext.eq_ignore_ascii_case(e)))
}

/// The image files `url` names, sorted by URL:
/// - a glob (`imgs/*.jpg`, `train/**/*.JPEG`): every match whose name does not start with `_`
///   (so `_SUCCESS` markers are left out), whatever its extension;
/// - a file: that file;
/// - a directory: every `.png`/`.jpg`/`.jpeg` file below it, recursively (ImageNet-style
///   `class/xyz.jpeg` trees work), other files ignored.
pub fn list_images(storage: &Storage, url: &str) -> Result<Vec<Location>> {
    let mut found: Vec<Location> = if url.contains(['*', '?', '[', '{']) {
        storage
            .glob(url)?
            .into_iter()
            .filter(|l| !l.file_name().starts_with('_'))
            .collect()
    } else {
        let loc = storage.open(url)?;
        match loc.head() {
            Ok(_) => vec![loc],
            Err(tusk_storage::Error::NotFound { .. }) => loc
                .list()?
                .into_iter()
                .map(|e| e.location)
                .filter(|l| !l.file_name().starts_with('_') && is_image_name(l.file_name()))
                .collect(),
            Err(e) => return Err(e.into()),
        }
    };
    if found.is_empty() {
        return Err(Error::NoImages { url: url.into() });
    }
    found.sort_by_key(|l| l.url());
    Ok(found)
}

/// One file's outcome: a storage failure (fatal) outside, a decode failure (its reason) inside.
pub(crate) type Loaded<T> = Result<Result<T, String>>;

/// Read and normalise one file into a buffer from `buffers`. Storage failures are errors; an
/// undecodable file is `Ok(Err)`.
pub(crate) fn load(loc: &Location, cfg: &NormalizeConfig, buffers: &Buffers) -> Loaded<Tensor> {
    let bytes = loc.read()?;
    Ok(normalize_image_into(&bytes, cfg, buffers.take()))
}

/// Tensor allocations handed back after use, so that image after image reuses the same few
/// (a fresh 600 KB buffer per image costs more in page faults than the resize costs).
#[derive(Default)]
pub(crate) struct Buffers(Mutex<Vec<Vec<f32>>>);

impl Buffers {
    fn take(&self) -> Vec<f32> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default()
    }

    /// Keep `data`'s allocation for a later image (at most a few dozen are kept).
    pub(crate) fn put(&self, data: Vec<f32>) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() < 64 {
            kept.push(data);
        }
    }
}

/// Run `work` over batches of items on rayon's pool, one batch ahead of `consume`, which gets
/// each batch with its results, in order, on the calling thread: so writing the output
/// overlaps decoding the next images instead of leaving the cores idle. At most three batches
/// are alive at once (one consumed, one computed, one queued). `next_batch` returns `None` at
/// the end; the first error of `next_batch` or `consume` stops everything and is returned.
pub(crate) fn pipelined<I: Send + Sync, O: Send>(
    mut next_batch: impl FnMut() -> Result<Option<Vec<I>>>,
    work: impl Fn(&I) -> O + Sync,
    mut consume: impl FnMut(Vec<I>, Vec<O>) -> Result<()>,
) -> Result<()> {
    std::thread::scope(|s| {
        let (to_worker, batches) = std::sync::mpsc::sync_channel::<Vec<I>>(1);
        let (to_main, results) = std::sync::mpsc::sync_channel::<(Vec<I>, Vec<O>)>(1);
        let work = &work;
        s.spawn(move || {
            for batch in batches {
                let out = batch.par_iter().map(work).collect();
                if to_main.send((batch, out)).is_err() {
                    break;
                }
            }
        });
        let (mut in_flight, mut end) = (0usize, false);
        loop {
            while !end && in_flight < 2 {
                match next_batch()? {
                    Some(batch) if batch.is_empty() => {}
                    Some(batch) => {
                        // The worker only stops early by panicking, which the scope re-raises.
                        if to_worker.send(batch).is_err() {
                            return Ok(());
                        }
                        in_flight += 1;
                    }
                    None => end = true,
                }
            }
            if in_flight == 0 {
                return Ok(());
            }
            let Ok((batch, out)) = results.recv() else {
                return Ok(());
            };
            in_flight -= 1;
            consume(batch, out)?;
        }
    })
}

/// Encode the record for one image into `w`: `image` (CHW floats), `path` (URL), `shape`
/// (`[C, H, W]`), in name order as every Example writer of tusk.
fn record<'w>(w: &'w mut ExampleWriter, url: &str, t: &Tensor) -> &'w [u8] {
    w.float_list(b"image", &t.data);
    w.bytes_list(b"path", [url.as_bytes()]);
    w.int64_list(b"shape", &t.shape().map(|d| d as i64));
    w.finish()
}

fn schema() -> Schema {
    let col = |name: &str, dtype, list, utf8| Column {
        name: name.into(),
        dtype,
        list,
        nullable: false,
        utf8,
        mixed: false,
    };
    Schema {
        columns: vec![
            col("image", FeatureType::Float, true, false),
            col("path", FeatureType::Bytes, false, true),
            col("shape", FeatureType::Int64, true, false),
        ],
    }
}

/// Normalise every image `input_url` names (see [`list_images`]) into a sharded TFRecord
/// dataset at `output_url`: records in input URL order, the inputs split into
/// `cfg.shards` contiguous runs of equal size (so shard record counts differ by at most one
/// plus the corrupt images in them), `_manifest.json` written last, create-only (an existing
/// dataset is never overwritten).
///
/// Images are decoded on all cores (rayon's global pool; `RAYON_NUM_THREADS` limits it) a batch
/// at a time, and written in order, so the output does not depend on the thread count.
/// Corrupt images are reported through `progress` and counted, or fail the job with
/// `cfg.strict` (no manifest is written then).
pub fn normalize(
    storage: &Storage,
    input_url: &str,
    output_url: &str,
    cfg: &NormalizeConfig,
    mut progress: impl FnMut(Event<'_>),
) -> Result<Summary> {
    cfg.validate()?;
    let dir = storage.open(output_url)?;
    let manifest_loc = dir.join(MANIFEST);
    if manifest_loc.exists()? {
        return Err(Error::OutputExists { url: dir.url() });
    }
    let inputs = list_images(storage, input_url)?;
    progress(Event::Found {
        images: inputs.len(),
    });
    let shards = cfg.shards;
    let n = inputs.len();
    // Two images per thread in flight: enough to keep every core busy past stragglers, few
    // enough that full-size photos (no --size) do not pile up in memory.
    let batch = (rayon::current_num_threads() * 2).max(4);
    let mut corrupt = Vec::new();
    let mut written = 0u64;
    let mut entries = Vec::with_capacity(shards);
    let buffers = Buffers::default();
    let mut encoder = ExampleWriter::default();
    for i in 0..shards {
        let name = format!("part-{i:05}-of-{shards:05}.tfrecord");
        let mut w = FileWriter::create(&dir.join(&name), Some(Compression::None))?;
        let run = &inputs[i * n / shards..(i + 1) * n / shards];
        let mut chunks = run.chunks(batch);
        pipelined(
            || Ok(chunks.next().map(<[Location]>::to_vec)),
            |loc| load(loc, cfg, &buffers),
            |locs, tensors| {
                for (loc, tensor) in locs.iter().zip(tensors) {
                    let url = loc.url();
                    match tensor? {
                        Ok(t) => {
                            w.write(record(&mut encoder, &url, &t))?;
                            buffers.put(t.data);
                            written += 1;
                            progress(Event::Written { url: &url });
                        }
                        Err(reason) if cfg.strict => return Err(Error::Corrupt { url, reason }),
                        Err(reason) => {
                            progress(Event::Corrupt {
                                url: &url,
                                reason: &reason,
                            });
                            corrupt.push(CorruptImage { url, reason });
                        }
                    }
                }
                Ok(())
            },
        )?;
        entries.push(Shard {
            path: name,
            records: w.records(),
        });
        w.finish()?;
    }
    let manifest = Manifest {
        format: "tfrecord".into(),
        compression: Compression::None.as_str().into(),
        records: written,
        shards: entries,
        schema: schema(),
        created_by: format!("tusk {}", env!("CARGO_PKG_VERSION")),
    };
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    manifest_loc.write_new(json)?;
    Ok(Summary {
        images: written,
        corrupt,
        output: dir.url(),
        shards,
    })
}
