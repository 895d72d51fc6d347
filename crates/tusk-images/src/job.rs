//! `normalize`: a directory or glob of images → a sharded TFRecord dataset.

use rayon::prelude::*;
use tusk_records::dataset::{self, Column, MANIFEST, Manifest, Schema, Shard};
use tusk_records::example::{self, BytesList, FeatureType, FloatList, Int64List, Kind};
use tusk_records::tfrecord::{Compression, FileWriter};
use tusk_storage::{Location, Storage};

use crate::{Error, NormalizeConfig, Result, Tensor, normalize_image};

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

/// Read and normalise one file. Storage failures are errors; an undecodable file is `Ok(Err)`.
pub(crate) fn load(loc: &Location, cfg: &NormalizeConfig) -> Loaded<Tensor> {
    let bytes = loc.read()?;
    Ok(normalize_image(&bytes, cfg))
}

/// The record for one image: `image` (CHW floats), `shape` (`[C, H, W]`), `path` (URL).
fn record(url: &str, t: Tensor) -> Vec<u8> {
    let shape = t.shape().iter().map(|&d| d as i64).collect();
    let ex = example::from_features([
        (
            "image".to_string(),
            Kind::FloatList(FloatList { value: t.data }),
        ),
        (
            "shape".to_string(),
            Kind::Int64List(Int64List { value: shape }),
        ),
        (
            "path".to_string(),
            Kind::BytesList(BytesList {
                value: vec![url.as_bytes().to_vec()],
            }),
        ),
    ]);
    dataset::encode(&ex)
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
    for i in 0..shards {
        let name = format!("part-{i:05}-of-{shards:05}.tfrecord");
        let mut w = FileWriter::create(&dir.join(&name), Some(Compression::None))?;
        let run = &inputs[i * n / shards..(i + 1) * n / shards];
        for chunk in run.chunks(batch) {
            let done: Vec<(String, Loaded<Vec<u8>>)> = chunk
                .par_iter()
                .map(|loc| {
                    let url = loc.url();
                    let rec = load(loc, cfg).map(|r| r.map(|t| record(&url, t)));
                    (url, rec)
                })
                .collect();
            for (url, rec) in done {
                match rec? {
                    Ok(bytes) => {
                        w.write(&bytes)?;
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
        }
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
