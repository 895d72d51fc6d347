//! The model store: every save is a new version under the model URL, and the committed
//! versions form one history.
//!
//! ```text
//! MODEL/versions/000007/MANIFEST.json          files with sizes and CRC32C, run, parent version
//!                      /model.safetensors       dense weights by name (PyTorch layout)
//!                      /embeddings.safetensors  hashed rows: keys, values, optimiser state
//!                      /optimizer.safetensors   dense Adam moments
//!                      /model.json              config, feature statistics, training state
//!                      /NEXT                    once a successor is committed: its number
//! MODEL/versions/ROOT                           the first version of the history
//! ```
//!
//! A save encodes everything in memory, claims the next free version directory by creating an
//! empty marker in it create-only, writes every file (each atomically: temp + rename; all at
//! once, since on HDFS each close can wait half a second for the NameNode), the manifest and
//! a link naming the new version among them, and then **commits** by renaming that link onto
//! the parent's `NEXT` (`ROOT` for the first version), a rename that fails if the name
//! exists. Only one save can ever take a given name, so one model URL holds one linear
//! history even when two runs write to it at once: the second to commit fails with
//! [`Error::Conflict`](crate::Error::Conflict), naming the run that got there first, and its
//! files are removed (its claim stays, so the number is never reused). A directory that is
//! not linked (a save that died, or lost that race) is never loaded, and later saves number
//! past it.
//!
//! Readers follow the links. The newest version is the highest-numbered one that its
//! parent's link names (numbers grow along the history): a listing of names and a couple of
//! small reads. The whole history is every version holding a `NEXT` (only history members
//! ever get one) plus the version the newest link names. Loading checks sizes and checksums.
//!
//! Encoding is deterministic: two runs that computed the same tensors write byte-identical
//! files except `MANIFEST.json`, which alone holds what differs between runs (who wrote the
//! version, when, and how fast each epoch trained).

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use safetensors::tensor::SafeTensors;
use serde::{Deserialize, Serialize};
use tusk_data::FeatureSpace;
use tusk_embedding::file::{Tensor, safetensors_file};
use tusk_embedding::{TableState, TableView};
use tusk_model::nn::ParamSpec;
use tusk_storage::{Location, Storage};

use crate::config::Config;
use crate::error::{Error, Result};

/// Name of the manifest of a version.
pub const MANIFEST: &str = "MANIFEST.json";
/// Name of the link a version gets when its successor is committed.
pub const NEXT: &str = "NEXT";
/// A version's entity feature tables, when it has them.
pub const ENTITIES: &str = "entities.tfrecord";

/// Name of the link to the first version of a model's history (in `versions/`).
pub const ROOT: &str = "ROOT";
/// The empty marker that claims a version directory for one writer.
const CLAIM: &str = ".claim";
/// A version's link, written with its files and renamed onto `NEXT`/`ROOT` to commit.
const LINK: &str = ".link";
/// Layout version written in manifests and `model.json`.
pub const FORMAT: u32 = 2;

/// What a finished epoch measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Metrics per dataset (`validation`, `test`): name → value.
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
    /// Seconds the epoch's training took (kept in the manifest, not in `model.json`, so that
    /// reruns write identical bytes).
    #[serde(skip)]
    pub seconds: f64,
    /// Training rows per second (kept in the manifest, like `seconds`).
    #[serde(skip)]
    pub samples_per_sec: f64,
}

/// Where training stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs fully done.
    pub epoch: usize,
    /// Steps done in the current (unfinished) epoch.
    pub step_in_epoch: u64,
    /// Steps done in total.
    pub global_step: u64,
    /// Training loss summed over the current epoch's steps, and rows.
    pub epoch_loss_sum: f64,
    /// Rows of the current epoch so far.
    pub epoch_rows: u64,
    /// Per finished epoch.
    pub history: Vec<EpochRecord>,
    /// Best monitored value and the epoch that reached it.
    pub best: Option<(f64, usize)>,
    /// Epochs since the best.
    pub bad_epochs: usize,
    /// Training is over (epochs done or stopped early); the weights are the chosen ones.
    pub finished: bool,
}

/// Everything in `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Format version of this layout.
    pub format: u32,
    /// The resolved config, as TOML.
    pub config: String,
    /// Feature statistics from the training data.
    pub features: FeatureSpace,
    /// Dense tensors in the parameter buffer.
    pub params: Vec<ParamSpec>,
    /// Embedding row width.
    pub emb_dim: usize,
    /// Dense Adam steps.
    pub adam_t: u64,
    /// Training state.
    pub state: TrainState,
}

/// One model version in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Metadata.
    pub meta: Meta,
    /// Dense parameters (flat, in `meta.params` layout).
    pub params: Vec<f32>,
    /// Dense Adam first moments.
    pub adam_m: Vec<f32>,
    /// Dense Adam second moments.
    pub adam_v: Vec<f32>,
    /// The embedding table.
    pub table: TableState,
    /// Entity feature tables kept with the version (`entities.tfrecord`), if it has them.
    pub entities: Option<Vec<u8>>,
}

/// A version to save, borrowed from a run in progress (no copy of the tables).
#[derive(Debug, Clone, Copy)]
pub struct CheckpointRef<'a> {
    /// Metadata.
    pub meta: &'a Meta,
    /// Dense parameters.
    pub params: &'a [f32],
    /// Dense Adam first moments.
    pub adam_m: &'a [f32],
    /// Dense Adam second moments.
    pub adam_v: &'a [f32],
    /// The embedding table.
    pub table: TableView<'a>,
    /// Entity feature tables ([`tusk_data::Entities::to_records`]) to keep with the version.
    pub entities: Option<&'a [u8]>,
}

impl Checkpoint {
    /// Borrow for [`encode`].
    pub fn as_ref(&self) -> CheckpointRef<'_> {
        CheckpointRef {
            meta: &self.meta,
            params: &self.params,
            adam_m: &self.adam_m,
            adam_v: &self.adam_v,
            table: self.table.view(),
            entities: self.entities.as_deref(),
        }
    }

    /// The config stored with this version.
    pub fn config(&self) -> Result<Config> {
        Config::parse("model.json config", &self.meta.config, &[])
    }
}

/// One process of one training run: what a version's manifest and links name as its writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Random id, fresh for every process (a resumed run gets a new one).
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// When the process started writing (Unix seconds).
    pub started_unix: u64,
}

impl RunInfo {
    /// This process, with a fresh random id.
    pub fn new() -> RunInfo {
        use std::hash::{BuildHasher, Hasher};
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // RandomState is seeded from the OS; mixing in time and pid keeps ids distinct even
        // where it is not.
        let mut h = std::hash::RandomState::new().build_hasher();
        h.write_u128(now.as_nanos());
        h.write_u32(std::process::id());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        RunInfo {
            id: format!("{:016x}", h.finish()),
            host,
            pid: std::process::id(),
            started_unix: now.as_secs(),
        }
    }
}

impl Default for RunInfo {
    fn default() -> Self {
        RunInfo::new()
    }
}

impl fmt::Display for RunInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "run {} (pid {} on {}, started {} UTC)",
            self.id,
            self.pid,
            self.host,
            tusk_board::utc_time(self.started_unix as f64)
        )
    }
}

/// One file of a version, as its manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// File name inside the version directory.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// CRC32C of the whole file.
    pub crc32c: u32,
}

/// Wall-clock facts of one finished epoch (they differ between reruns, so they live here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// 1-based epoch.
    pub epoch: usize,
    /// Seconds the epoch's training took.
    pub seconds: f64,
    /// Training rows per second.
    pub samples_per_sec: f64,
}

/// A version's `MANIFEST.json`: its files, its place in the history, who wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version ([`FORMAT`]).
    pub format: u32,
    /// This version's number.
    pub version: u64,
    /// The version it continues (`None` for the first of a history).
    pub parent: Option<u64>,
    /// The process that wrote it.
    pub run: RunInfo,
    /// When it was written (Unix seconds).
    pub created_unix: u64,
    /// Epochs fully done.
    pub epoch: usize,
    /// Steps done in the unfinished epoch (0 for an end-of-epoch save).
    pub step_in_epoch: u64,
    /// Steps done in total.
    pub global_step: u64,
    /// Training was over: the weights are the run's chosen ones.
    pub finished: bool,
    /// Per finished epoch.
    pub timings: Vec<Timing>,
    /// Every other file of the version.
    pub files: Vec<ManifestFile>,
}

/// A history link (`ROOT`, `NEXT`): the version it commits and who committed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Link {
    version: u64,
    run: RunInfo,
}

/// Files of a version that other processes write into its directory once it is claimed
/// (embedding servers, one shard each); returns their manifest entries.
pub type ExternalFiles = Box<dyn FnOnce(&Location) -> Result<Vec<ManifestFile>> + Send>;

/// A version encoded in memory, ready for [`VersionWriter::commit`] (on any thread).
pub struct Encoded {
    files: Vec<(&'static str, Vec<u8>)>,
    /// Written by others before this process writes its files and the manifest.
    external: Option<ExternalFiles>,
    epoch: usize,
    step_in_epoch: u64,
    global_step: u64,
    finished: bool,
    timings: Vec<Timing>,
}

impl fmt::Debug for Encoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoded")
            .field(
                "files",
                &self
                    .files
                    .iter()
                    .map(|(n, b)| (n, b.len()))
                    .collect::<Vec<_>>(),
            )
            .field("external", &self.external.is_some())
            .field("global_step", &self.global_step)
            .finish_non_exhaustive()
    }
}

impl Encoded {
    /// The embedding rows are written by the embedding servers (`write` puts each server's
    /// shard into the claimed directory) instead of in `embeddings.safetensors`.
    pub fn with_external_table(mut self, write: ExternalFiles) -> Encoded {
        self.files.retain(|(n, _)| *n != "embeddings.safetensors");
        self.external = Some(write);
        self
    }
}

// safetensors data is little-endian, which is what these casts give on the targets we build.
#[cfg(not(target_endian = "little"))]
compile_error!(
    "the model store writes little-endian tensors by casting; big-endian targets are not supported"
);

fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

fn version_name(v: u64) -> String {
    format!("{v:06}")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Encode a version: the safetensors files and `model.json`, byte-for-byte the same for the
/// same tensors and state.
pub fn encode(ck: &CheckpointRef<'_>) -> Result<Encoded> {
    let model = safetensors_file(
        ck.meta.params.iter().map(|s| Tensor {
            name: &s.name,
            dtype: "F32",
            shape: s.shape.clone(),
            data: f32_bytes(&ck.params[s.offset..s.offset + s.len()]),
        }),
        &[("format", "pt".into())],
    );
    let optim = safetensors_file(
        [("adam.m", ck.adam_m), ("adam.v", ck.adam_v)].map(|(name, v)| Tensor {
            name,
            dtype: "F32",
            shape: vec![v.len()],
            data: f32_bytes(v),
        }),
        &[],
    );
    let emb = tusk_embedding::file::encode_table(&ck.table);
    let meta = serde_json::to_vec_pretty(ck.meta).map_err(|e| Error::Store {
        url: "model.json".into(),
        message: format!("encoding: {e}"),
    })?;
    let st = &ck.meta.state;
    let mut files = vec![
        ("model.safetensors", model),
        ("embeddings.safetensors", emb),
        ("optimizer.safetensors", optim),
    ];
    if let Some(e) = ck.entities {
        files.push((ENTITIES, e.to_vec()));
    }
    files.push(("model.json", meta));
    Ok(Encoded {
        files,
        external: None,
        epoch: st.epoch,
        step_in_epoch: st.step_in_epoch,
        global_step: st.global_step,
        finished: st.finished,
        timings: st
            .history
            .iter()
            .map(|r| Timing {
                epoch: r.epoch,
                seconds: r.seconds,
                samples_per_sec: r.samples_per_sec,
            })
            .collect(),
    })
}

/// A model URL.
#[derive(Debug, Clone)]
pub struct ModelStore {
    root: Location,
}

/// What one listing of `versions/` shows.
#[derive(Debug, Default)]
struct Listing {
    /// Per version directory: has a manifest, has a `NEXT` link.
    dirs: BTreeMap<u64, (bool, bool)>,
    root: bool,
}

impl ModelStore {
    /// The store at `url` (nothing is created until the first save).
    pub fn open(storage: &Storage, url: &str) -> Result<ModelStore> {
        Ok(ModelStore {
            root: storage.open(url)?,
        })
    }

    /// The model URL.
    pub fn url(&self) -> String {
        self.root.url()
    }

    /// The model directory.
    pub fn location(&self) -> &Location {
        &self.root
    }

    fn version_dir(&self, v: u64) -> Location {
        self.root.join(&format!("versions/{}", version_name(v)))
    }

    /// The link that commits the successor of `parent` (`ROOT` for the first version).
    fn link_of(&self, parent: Option<u64>) -> Location {
        match parent {
            Some(p) => self.version_dir(p).join(NEXT),
            None => self.root.join(&format!("versions/{ROOT}")),
        }
    }

    fn listing(&self) -> Result<Listing> {
        let dir = self.root.join("versions");
        let entries = match dir.list() {
            Ok(e) => e,
            Err(tusk_storage::Error::NotFound { .. }) => return Ok(Listing::default()),
            Err(e) => return Err(e.into()),
        };
        let mut l = Listing::default();
        for e in entries {
            let rel = e.location.relative_to(&dir);
            if rel == ROOT {
                l.root = true;
                continue;
            }
            let mut parts = rel.split('/');
            let Some(v) = parts.next().and_then(|p| p.parse::<u64>().ok()) else {
                continue;
            };
            let d = l.dirs.entry(v).or_default();
            match parts.next() {
                Some(MANIFEST) => d.0 = true,
                Some(NEXT) => d.1 = true,
                _ => {}
            }
        }
        Ok(l)
    }

    fn read_link(&self, parent: Option<u64>) -> Result<Option<Link>> {
        let loc = self.link_of(parent);
        match loc.read() {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::Store {
                    url: loc.url(),
                    message: format!("history link does not parse: {e}"),
                }),
            Err(tusk_storage::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Committed versions (the model's history), ascending: every version holding a `NEXT`
    /// (only history members ever get one) plus the version the newest link names.
    pub fn versions(&self) -> Result<Vec<u64>> {
        let l = self.listing()?;
        let mut chain: Vec<u64> = l
            .dirs
            .iter()
            .filter(|(_, d)| d.1)
            .map(|(v, _)| *v)
            .collect();
        let newest = match chain.last() {
            Some(&v) => Some(v),
            None if l.root => None,
            None => return Ok(Vec::new()),
        };
        if let Some(link) = self.read_link(newest)? {
            chain.push(link.version);
        }
        Ok(chain)
    }

    /// The newest committed version: one listing of `versions/` (names only) and, from the
    /// highest number down, the first version its parent's link names (numbers grow along
    /// the history, so that is its end) — a couple of small reads, however long the history.
    pub fn latest(&self) -> Result<Option<u64>> {
        let names = self.root.join("versions").list_names()?;
        if !names.iter().any(|n| n == ROOT) {
            return Ok(None);
        }
        let mut numbers: Vec<u64> = names.iter().filter_map(|n| n.parse().ok()).collect();
        numbers.sort_unstable_by(|a, b| b.cmp(a));
        for v in numbers {
            if self.is_committed(v)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Whether version `v` is in the history: its parent's link (or `ROOT`) names it.
    pub fn is_committed(&self, v: u64) -> Result<bool> {
        let manifest = match self.version_dir(v).join(MANIFEST).read() {
            Ok(b) => b,
            // Claimed, not (yet) written: not committed.
            Err(tusk_storage::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        #[derive(Deserialize)]
        struct Parent {
            parent: Option<u64>,
        }
        let Ok(Parent { parent }) = serde_json::from_slice::<Parent>(&manifest) else {
            return Ok(false);
        };
        Ok(self.read_link(parent)?.is_some_and(|l| l.version == v))
    }

    /// Fail if this model URL holds versions written by a tusk from before history links
    /// (manifests but no `ROOT`): a new run would number its versions over them.
    pub fn check_no_legacy_versions(&self) -> Result<()> {
        if self.has_legacy_versions()? {
            return Err(Error::Store {
                url: self.url(),
                message: "holds model versions written by an older tusk (no history links); \
                          train into another --model URL"
                    .into(),
            });
        }
        Ok(())
    }

    /// Whether there is no `ROOT` but a version written before history links existed: its
    /// manifest has no `format`. A manifest that has one, with no `ROOT`, is a first save that
    /// died (or is still running) before its commit: never loaded, and numbered past.
    fn has_legacy_versions(&self) -> Result<bool> {
        let l = self.listing()?;
        if l.root {
            return Ok(false);
        }
        #[derive(Deserialize)]
        struct Format {
            format: Option<u32>,
        }
        for (v, (has_manifest, _)) in &l.dirs {
            if !has_manifest {
                continue;
            }
            let bytes = match self.version_dir(*v).join(MANIFEST).read() {
                Ok(b) => b,
                Err(tusk_storage::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            if let Ok(Format { format: None }) = serde_json::from_slice::<Format>(&bytes) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// URLs of the embedding-row files of version `v`: `embeddings.safetensors`, or the
    /// shards its embedding servers wrote.
    pub fn table_files(&self, v: u64) -> Result<Vec<String>> {
        let dir = self.version_dir(v);
        Ok(self
            .manifest(v)?
            .files
            .iter()
            .filter(|f| {
                f.name == "embeddings.safetensors"
                    || tusk_embedding::file::parse_shard_file_name(&f.name).is_some()
            })
            .map(|f| dir.join(&f.name).url())
            .collect())
    }

    /// The manifest of a committed version (who wrote it, its parent, where training stood).
    pub fn manifest(&self, v: u64) -> Result<Manifest> {
        let dir = self.version_dir(v);
        let path = dir.join(MANIFEST);
        let bytes = match path.read() {
            Ok(b) => b,
            Err(tusk_storage::Error::NotFound { .. }) => {
                return Err(Error::Store {
                    url: dir.url(),
                    message: format!("version {v:06} does not exist (no {MANIFEST})"),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Store {
            url: path.url(),
            message: format!("does not parse (written by another tusk version?): {e}"),
        })?;
        if m.format != FORMAT || m.version != v {
            return Err(Error::Store {
                url: path.url(),
                message: format!(
                    "format {} version {}, expected format {FORMAT} version {v}",
                    m.format, m.version
                ),
            });
        }
        Ok(m)
    }

    /// The end-of-`epoch` version among `from` and its ancestors (the version holding that
    /// epoch's weights as evaluated), if the history has one.
    pub fn find_epoch_end(&self, from: u64, epoch: usize) -> Result<Option<u64>> {
        let mut v = Some(from);
        while let Some(cur) = v {
            let m = self.manifest(cur)?;
            if m.epoch < epoch {
                return Ok(None);
            }
            if m.epoch == epoch && m.step_in_epoch == 0 && !m.finished {
                return Ok(Some(cur));
            }
            v = m.parent;
        }
        Ok(None)
    }

    /// A writer that continues the history from `parent` (the version `run` resumed from or
    /// last committed; `None` on an empty model).
    pub fn writer(&self, run: RunInfo, parent: Option<u64>) -> VersionWriter {
        VersionWriter {
            store: self.clone(),
            run,
            parent,
        }
    }

    /// Commit `ck` as the successor of the newest version, as a one-off writer; returns its
    /// number.
    pub fn save(&self, ck: &CheckpointRef<'_>) -> Result<u64> {
        let parent = self.latest()?;
        self.writer(RunInfo::new(), parent).commit(encode(ck)?)
    }

    /// Load a committed version (the newest when `None`).
    pub fn load(&self, version: Option<u64>) -> Result<Checkpoint> {
        self.load_version(version).map(|(_, ck)| ck)
    }

    /// [`ModelStore::load`], also saying which version it loaded.
    pub fn load_version(&self, version: Option<u64>) -> Result<(u64, Checkpoint)> {
        let v = match version {
            Some(v) if self.is_committed(v)? => v,
            Some(v) => {
                return Err(Error::Store {
                    url: self.version_dir(v).url(),
                    message: format!(
                        "version {v:06} is not committed (committed: {})",
                        describe(&self.versions()?)
                    ),
                });
            }
            None => match self.latest()? {
                Some(v) => v,
                None => {
                    let hint = if self.has_legacy_versions()? {
                        " (versions without history links were written by an older tusk: train again)"
                    } else {
                        " (is this the model URL given to `tusk train --model`?)"
                    };
                    return Err(Error::Store {
                        url: self.url(),
                        message: format!("no committed model version here{hint}"),
                    });
                }
            },
        };
        self.load_exact(v, true).map(|ck| (v, ck))
    }

    /// A committed version without its embedding rows (`table` empty): what a worker needs
    /// when embedding servers read the rows themselves.
    pub fn load_without_table(&self, v: u64) -> Result<Checkpoint> {
        if !self.is_committed(v)? {
            return Err(Error::Store {
                url: self.version_dir(v).url(),
                message: format!("version {v:06} is not committed"),
            });
        }
        self.load_exact(v, false)
    }

    fn load_exact(&self, v: u64, with_table: bool) -> Result<Checkpoint> {
        let dir = self.version_dir(v);
        let manifest = self.manifest(v)?;
        let bad = |what: String| Error::Store {
            url: dir.url(),
            message: what,
        };
        let mut files: HashMap<String, bytes::Bytes> = HashMap::new();
        let is_table = |n: &str| {
            n == "embeddings.safetensors"
                || tusk_embedding::file::parse_shard_file_name(n).is_some()
        };
        for f in &manifest.files {
            if !with_table && is_table(&f.name) {
                continue;
            }
            let data = dir.join(&f.name).read()?;
            if data.len() as u64 != f.bytes || crc32c::crc32c(&data) != f.crc32c {
                return Err(bad(format!(
                    "{} is damaged: {} bytes with CRC32C {:#010x}, the manifest says {} bytes with {:#010x}",
                    f.name,
                    data.len(),
                    crc32c::crc32c(&data),
                    f.bytes,
                    f.crc32c
                )));
            }
            files.insert(f.name.clone(), data);
        }
        let get = |name: &str| {
            files
                .get(name)
                .ok_or_else(|| bad(format!("{MANIFEST} does not list {name}")))
        };
        let mut meta: Meta = serde_json::from_slice(get("model.json")?)
            .map_err(|e| bad(format!("model.json does not parse: {e}")))?;
        for r in &mut meta.state.history {
            if let Some(t) = manifest.timings.iter().find(|t| t.epoch == r.epoch) {
                r.seconds = t.seconds;
                r.samples_per_sec = t.samples_per_sec;
            }
        }
        let st = |name: &str| -> Result<SafeTensors<'_>> {
            SafeTensors::deserialize(get(name)?).map_err(|e| bad(format!("{name}: {e}")))
        };
        let model = st("model.safetensors")?;
        let total: usize = meta
            .params
            .iter()
            .map(|s| s.offset + s.len())
            .max()
            .unwrap_or(0);
        let mut params = vec![0.0f32; total];
        for s in &meta.params {
            let t = model
                .tensor(&s.name)
                .map_err(|e| bad(format!("model.safetensors: {}: {e}", s.name)))?;
            if t.shape() != s.shape.as_slice() {
                return Err(bad(format!(
                    "model.safetensors: {} has shape {:?}, expected {:?}",
                    s.name,
                    t.shape(),
                    s.shape
                )));
            }
            read_f32(t.data(), &mut params[s.offset..s.offset + s.len()]);
        }
        let optim = st("optimizer.safetensors")?;
        let vec_of = |st: &SafeTensors<'_>, file: &str, name: &str| -> Result<Vec<f32>> {
            let t = st
                .tensor(name)
                .map_err(|e| bad(format!("{file}: {name}: {e}")))?;
            let mut out = vec![0.0; t.data().len() / 4];
            read_f32(t.data(), &mut out);
            Ok(out)
        };
        let adam_m = vec_of(&optim, "optimizer.safetensors", "adam.m")?;
        let adam_v = vec_of(&optim, "optimizer.safetensors", "adam.v")?;
        let table = if with_table {
            read_table(&manifest, &files, meta.emb_dim).map_err(bad)?
        } else {
            TableState::empty(meta.emb_dim, 0, 0.0)
        };
        Ok(Checkpoint {
            meta,
            params,
            adam_m,
            adam_v,
            table,
            entities: files.get(ENTITIES).map(|b| b.to_vec()),
        })
    }
}

/// The embedding rows of a version: `embeddings.safetensors`, or the shards its embedding
/// servers wrote (every `embeddings-i-of-N` for `i` in `0..N`), merged.
fn read_table(
    manifest: &Manifest,
    files: &HashMap<String, bytes::Bytes>,
    dim: usize,
) -> std::result::Result<TableState, String> {
    use tusk_embedding::file::{decode_table, parse_shard_file_name};
    const ONE: &str = "embeddings.safetensors";
    if let Some(b) = files.get(ONE) {
        return decode_table(b, dim).map_err(|m| format!("{ONE}: {m}"));
    }
    let shards: Vec<(usize, usize, &str)> = manifest
        .files
        .iter()
        .filter_map(|f| parse_shard_file_name(&f.name).map(|(i, n)| (i, n, f.name.as_str())))
        .collect();
    let Some(&(_, n, _)) = shards.first() else {
        return Err(format!("{MANIFEST} lists no embeddings file"));
    };
    let mut seen = vec![false; n];
    for &(i, m, name) in &shards {
        if m != n || i >= n || std::mem::replace(&mut seen[i], true) {
            return Err(format!(
                "{name} does not fit the other embedding shards (of {n})"
            ));
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(format!("{MANIFEST} lacks embedding shard {missing} of {n}"));
    }
    let parts = shards
        .iter()
        .map(|&(_, _, name)| {
            let b = files
                .get(name)
                .ok_or_else(|| format!("{name} was not read"))?;
            decode_table(b, dim).map_err(|m| format!("{name}: {m}"))
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    TableState::merge(parts)
}

/// `000001–000004` style summary of version numbers.
fn describe(vs: &[u64]) -> String {
    match vs {
        [] => "none".into(),
        [v] => version_name(*v),
        [a, .., b] => format!("{}–{}", version_name(*a), version_name(*b)),
    }
}

/// Commits versions for one run, each the successor of the last (see the module docs).
#[derive(Debug, Clone)]
pub struct VersionWriter {
    store: ModelStore,
    run: RunInfo,
    parent: Option<u64>,
}

/// How many times a save looks for a free version directory when others claim them first.
const CLAIM_TRIES: u32 = 32;

impl VersionWriter {
    /// The version the next commit continues.
    pub fn parent(&self) -> Option<u64> {
        self.parent
    }

    fn conflict(&self, link: &Link) -> Error {
        let after = match self.parent {
            Some(p) => format!("follows version {p:06}, which this run was about to extend"),
            None => "started this model's history first".into(),
        };
        Error::Conflict {
            url: self.store.url(),
            message: format!(
                "another run committed to this model: version {:06} by {} {after}; this process \
                 is {}. One model URL holds one history: choose another --model URL, or stop \
                 the other run and --resume",
                link.version, link.run, self.run
            ),
        }
    }

    /// Commit `enc` as the successor of [`VersionWriter::parent`]; returns its number. Fails
    /// with [`Error::Conflict`] when another run already committed that successor.
    pub fn commit(&mut self, mut enc: Encoded) -> Result<u64> {
        let store = &self.store;
        let link = store.link_of(self.parent);
        // Cheap early check; the create-only link below is what decides.
        if let Some(other) = store.read_link(self.parent)? {
            return Err(self.conflict(&other));
        }
        let mut files: Vec<ManifestFile> = enc
            .files
            .iter()
            .map(|(name, bytes)| ManifestFile {
                name: (*name).into(),
                bytes: bytes.len() as u64,
                crc32c: crc32c::crc32c(bytes),
            })
            .collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let mut manifest = Manifest {
            format: FORMAT,
            version: 0,
            parent: self.parent,
            run: self.run.clone(),
            created_unix: unix_now(),
            epoch: enc.epoch,
            step_in_epoch: enc.step_in_epoch,
            global_step: enc.global_step,
            finished: enc.finished,
            timings: enc.timings,
            files,
        };
        // Claim a fresh directory by creating an empty marker in it (exclusive, and on HDFS
        // an empty file closes without waiting for a block): no other save ever writes there.
        // The parent's successor number is almost always free; past a few taken ones (saves
        // that died, other writers), one listing jumps past those it can see.
        let mut claimed = None;
        let mut v = self.parent.map_or(1, |p| p + 1);
        for attempt in 0..CLAIM_TRIES {
            if attempt >= 2 {
                let newest = store.listing()?.dirs.keys().last().copied().unwrap_or(0);
                v = v.max(newest + 1);
            }
            match store.version_dir(v).join(CLAIM).write_new(Vec::new()) {
                Ok(()) => {
                    claimed = Some(v);
                    break;
                }
                Err(tusk_storage::Error::AlreadyExists { .. }) => v += 1,
                Err(e) => return Err(e.into()),
            }
        }
        let Some(v) = claimed else {
            return Err(Error::Store {
                url: store.url(),
                message: format!(
                    "could not claim a new version directory in {CLAIM_TRIES} tries (other writers keep taking them)"
                ),
            });
        };
        manifest.version = v;
        let dir = store.version_dir(v);
        if let Some(write) = enc.external.take() {
            // Others' files first (in parallel among themselves); ours and the manifest
            // listing them after. On failure the directory is never linked, so never read.
            manifest.files.extend(write(&dir)?);
            manifest.files.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let encoding = |what: &str, e: serde_json::Error| Error::Store {
            url: dir.join(what).url(),
            message: format!("encoding: {e}"),
        };
        let mut files = enc.files;
        files.push((
            MANIFEST,
            serde_json::to_vec_pretty(&manifest).map_err(|e| encoding(MANIFEST, e))?,
        ));
        let link_text = serde_json::to_vec(&Link {
            version: v,
            run: self.run.clone(),
        })
        .map_err(|e| encoding(LINK, e))?;
        files.push((LINK, link_text));
        let names: Vec<&'static str> = files.iter().map(|(n, _)| *n).collect();
        let written = (|| -> Result<()> {
            // All files at once: on HDFS closing a file waits for the NameNode to learn of
            // its last block (often a 0.5 s client back-off), so one at a time costs that per
            // file.
            std::thread::scope(|s| {
                let writes: Vec<_> = files
                    .into_iter()
                    .map(|(name, bytes)| {
                        let loc = dir.join(name);
                        s.spawn(move || loc.write(bytes))
                    })
                    .collect();
                writes.into_iter().try_for_each(|h| match h.join() {
                    Ok(r) => r.map_err(Error::from),
                    Err(_) => Err(Error::Store {
                        url: dir.url(),
                        message: "a version file's writer thread panicked".into(),
                    }),
                })
            })?;
            // The commit: the link, written above, renamed onto the parent's successor name.
            match dir.join(LINK).rename_new(&link) {
                Ok(()) => Ok(()),
                Err(tusk_storage::Error::AlreadyExists { .. }) => {
                    let other = store.read_link(self.parent)?.ok_or_else(|| Error::Store {
                        url: link.url(),
                        message: "exists but cannot be read".into(),
                    })?;
                    Err(self.conflict(&other))
                }
                Err(e) => Err(e.into()),
            }
        })();
        if let Err(e) = written {
            // Never linked, so never read: tidy up (best effort). The claim stays, so that the
            // number stays taken and no other save ever writes into this directory, not even
            // while this cleanup runs.
            for name in names {
                let _ = dir.join(name).delete();
            }
            return Err(e);
        }
        self.parent = Some(v);
        Ok(v)
    }
}

fn read_f32(data: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(data.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_files_are_deterministic_and_readable() {
        let a = [1.0f32, 2.0, 3.0];
        let k = [7u64, 9];
        let s = [4u32];
        let make = || {
            safetensors_file(
                [
                    Tensor {
                        name: "steps",
                        dtype: "U32",
                        shape: vec![1],
                        data: bytemuck::cast_slice(&s),
                    },
                    Tensor {
                        name: "w",
                        dtype: "F32",
                        shape: vec![3],
                        data: f32_bytes(&a),
                    },
                    Tensor {
                        name: "keys",
                        dtype: "U64",
                        shape: vec![2],
                        data: bytemuck::cast_slice(&k),
                    },
                ],
                &[("seed", "3".into()), ("a\"b", "x\\y".into())],
            )
        };
        let bytes = make();
        assert_eq!(bytes, make());
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("w").unwrap().data(), f32_bytes(&a));
        assert_eq!(st.tensor("keys").unwrap().shape(), &[2]);
        assert_eq!(st.tensor("steps").unwrap().data(), &4u32.to_le_bytes());
        let (n, info) = SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(n % 8, 0);
        let md = info.metadata().clone().unwrap();
        assert_eq!(md["a\"b"], "x\\y");
        assert_eq!(md["seed"], "3");
    }
}
