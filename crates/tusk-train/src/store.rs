//! The model store: every save is a new version under the model URL.
//!
//! ```text
//! MODEL/versions/000007/model.safetensors       dense weights by name (PyTorch layout)
//!                      /embeddings.safetensors  hashed rows: keys, values, optimiser state
//!                      /optimizer.safetensors   dense Adam moments
//!                      /model.json              config, feature statistics, training state
//!                      /MANIFEST.json           written last, create-only: the commit
//! MODEL/LATEST                                  newest committed version (a hint)
//! ```
//!
//! Each file is written atomically (temp + rename) and the manifest, which lists every file
//! with its size and CRC32C, is written last with a create-only put. A version without a
//! manifest is an interrupted save and is never loaded; loading checks sizes and checksums.
//! The newest version is found by listing `versions/` (LATEST only saves readers a listing
//! and is never trusted over it), so a crash between the manifest and the pointer is harmless.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use tusk_data::FeatureSpace;
use tusk_embedding::{TableState, TableView};
use tusk_model::nn::ParamSpec;
use tusk_storage::{Location, Storage};

use crate::config::Config;
use crate::error::{Error, Result};

/// Name of the commit file of a version.
pub const MANIFEST: &str = "MANIFEST.json";

/// What a finished epoch measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Metrics per dataset (`validation`, `test`): name → value.
    pub metrics: HashMap<String, HashMap<String, f64>>,
    /// Seconds the epoch's training took.
    pub seconds: f64,
    /// Training rows per second.
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
}

impl Checkpoint {
    /// Borrow for [`ModelStore::save`].
    pub fn as_ref(&self) -> CheckpointRef<'_> {
        CheckpointRef {
            meta: &self.meta,
            params: &self.params,
            adam_m: &self.adam_m,
            adam_v: &self.adam_v,
            table: self.table.view(),
        }
    }

    /// The config stored with this version.
    pub fn config(&self) -> Result<Config> {
        Config::parse("model.json config", &self.meta.config, &[])
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ManifestFile {
    name: String,
    bytes: u64,
    crc32c: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    version: u64,
    created_unix: u64,
    epoch: usize,
    global_step: u64,
    files: Vec<ManifestFile>,
}

/// A model URL.
#[derive(Debug, Clone)]
pub struct ModelStore {
    root: Location,
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

    /// Every version directory (committed or not), ascending.
    fn all_versions(&self) -> Result<Vec<(u64, bool)>> {
        let dir = self.root.join("versions");
        let entries = match dir.list() {
            Ok(e) => e,
            Err(tusk_storage::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut seen: HashMap<u64, bool> = HashMap::new();
        for e in entries {
            let rel = e.location.relative_to(&dir);
            let mut parts = rel.split('/');
            let Some(v) = parts.next().and_then(|p| p.parse::<u64>().ok()) else {
                continue;
            };
            let committed = parts.next() == Some(MANIFEST);
            *seen.entry(v).or_default() |= committed;
        }
        let mut v: Vec<(u64, bool)> = seen.into_iter().collect();
        v.sort();
        Ok(v)
    }

    /// Committed versions, ascending.
    pub fn versions(&self) -> Result<Vec<u64>> {
        Ok(self
            .all_versions()?
            .into_iter()
            .filter(|(_, c)| *c)
            .map(|(v, _)| v)
            .collect())
    }

    /// The newest committed version.
    pub fn latest(&self) -> Result<Option<u64>> {
        Ok(self.versions()?.last().copied())
    }

    /// Commit `ck` as a new version; returns its number.
    pub fn save(&self, ck: &CheckpointRef<'_>) -> Result<u64> {
        let v = self.all_versions()?.last().map_or(1, |(v, _)| v + 1);
        let dir = self.version_dir(v);
        let st_err = |e: safetensors::SafeTensorError| Error::Store {
            url: dir.url(),
            message: format!("encoding tensors: {e}"),
        };
        // Dense weights, one tensor per name, loadable by safetensors.torch.load_file.
        let pbytes: Vec<(String, Vec<usize>, &[u8])> = ck
            .meta
            .params
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.shape.clone(),
                    f32_bytes(&ck.params[s.offset..s.offset + s.len()]),
                )
            })
            .collect();
        let model = serialize(
            pbytes
                .iter()
                .map(|(n, s, b)| (n.as_str(), Dtype::F32, s.clone(), *b)),
            Some(HashMap::from([("format".into(), "pt".into())])),
        )
        .map_err(st_err)?;
        let optim = serialize(
            [
                (
                    "adam.m",
                    Dtype::F32,
                    vec![ck.adam_m.len()],
                    f32_bytes(ck.adam_m),
                ),
                (
                    "adam.v",
                    Dtype::F32,
                    vec![ck.adam_v.len()],
                    f32_bytes(ck.adam_v),
                ),
            ],
            None,
        )
        .map_err(st_err)?;
        let t = &ck.table;
        let n = t.keys.len();
        let slots = if n == 0 || t.dim == 0 {
            0
        } else {
            t.state.len() / (n * t.dim)
        };
        let emb = serialize(
            [
                ("keys", Dtype::U64, vec![n], bytemuck::cast_slice(t.keys)),
                ("values", Dtype::F32, vec![n, t.dim], f32_bytes(t.values)),
                (
                    "state",
                    Dtype::F32,
                    vec![n, slots * t.dim],
                    f32_bytes(t.state),
                ),
                ("steps", Dtype::U32, vec![n], bytemuck::cast_slice(t.steps)),
            ],
            Some(HashMap::from([
                ("seed".into(), t.seed.to_string()),
                ("init_scale".into(), t.init_scale.to_string()),
            ])),
        )
        .map_err(st_err)?;
        let meta = serde_json::to_vec_pretty(ck.meta).map_err(|e| Error::Store {
            url: dir.url(),
            message: e.to_string(),
        })?;
        let mut files = Vec::new();
        for (name, bytes) in [
            ("model.safetensors", model),
            ("embeddings.safetensors", emb),
            ("optimizer.safetensors", optim),
            ("model.json", meta),
        ] {
            files.push(ManifestFile {
                name: name.into(),
                bytes: bytes.len() as u64,
                crc32c: crc32c::crc32c(&bytes),
            });
            dir.join(name).write(bytes)?;
        }
        let manifest = Manifest {
            version: v,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            epoch: ck.meta.state.epoch,
            global_step: ck.meta.state.global_step,
            files,
        };
        let text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        dir.join(MANIFEST).write_new(text)?;
        // The pointer is a convenience; the listing decides.
        self.root
            .join("LATEST")
            .write(format!("{}\n", version_name(v)))?;
        Ok(v)
    }

    /// Load a committed version (the newest when `None`).
    pub fn load(&self, version: Option<u64>) -> Result<Checkpoint> {
        self.load_version(version).map(|(_, ck)| ck)
    }

    /// [`ModelStore::load`], also saying which version it loaded.
    pub fn load_version(&self, version: Option<u64>) -> Result<(u64, Checkpoint)> {
        let v = match version {
            Some(v) => v,
            None => self.latest()?.ok_or_else(|| Error::Store {
                url: self.url(),
                message: "no committed model version here (is this the model URL given to `tusk train --model`?)".into(),
            })?,
        };
        self.load_exact(v).map(|ck| (v, ck))
    }

    fn load_exact(&self, v: u64) -> Result<Checkpoint> {
        let dir = self.version_dir(v);
        let mpath = dir.join(MANIFEST);
        let mbytes = match mpath.read() {
            Ok(b) => b,
            Err(tusk_storage::Error::NotFound { .. }) => {
                return Err(Error::Store {
                    url: dir.url(),
                    message: format!("version {v} is not committed (no {MANIFEST})"),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let bad = |what: String| Error::Store {
            url: dir.url(),
            message: what,
        };
        let manifest: Manifest = serde_json::from_slice(&mbytes)
            .map_err(|e| bad(format!("{MANIFEST} does not parse: {e}")))?;
        let mut files: HashMap<String, bytes::Bytes> = HashMap::new();
        for f in &manifest.files {
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
        let meta: Meta = serde_json::from_slice(get("model.json")?)
            .map_err(|e| bad(format!("model.json does not parse: {e}")))?;
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
        let emb = st("embeddings.safetensors")?;
        let (_, info) = SafeTensors::read_metadata(get("embeddings.safetensors")?)
            .map_err(|e| bad(format!("embeddings.safetensors: {e}")))?;
        let md = info.metadata().clone().unwrap_or_default();
        let keys_t = emb
            .tensor("keys")
            .map_err(|e| bad(format!("embeddings.safetensors: keys: {e}")))?;
        let keys: Vec<u64> = keys_t
            .data()
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let steps_t = emb
            .tensor("steps")
            .map_err(|e| bad(format!("embeddings.safetensors: steps: {e}")))?;
        let steps: Vec<u32> = steps_t
            .data()
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
            .collect();
        let table = TableState {
            dim: meta.emb_dim,
            seed: md.get("seed").and_then(|s| s.parse().ok()).unwrap_or(0),
            init_scale: md
                .get("init_scale")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0.05),
            keys,
            values: vec_of(&emb, "embeddings.safetensors", "values")?,
            state: vec_of(&emb, "embeddings.safetensors", "state")?,
            steps,
        };
        Ok(Checkpoint {
            meta,
            params,
            adam_m,
            adam_v,
            table,
        })
    }
}

fn read_f32(data: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(data.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

fn serialize<'a>(
    tensors: impl IntoIterator<Item = (&'a str, Dtype, Vec<usize>, &'a [u8])>,
    info: Option<HashMap<String, String>>,
) -> Result<Vec<u8>, safetensors::SafeTensorError> {
    let views = tensors
        .into_iter()
        .map(|(n, d, s, b)| TensorView::new(d, s, b).map(|v| (n.to_string(), v)))
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, info)
}
