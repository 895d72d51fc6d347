//! The training config: one TOML file declares the data, the features, the model and the
//! training and evaluation settings. Unknown keys are errors (a typo never silently falls
//! back to a default); `--set key=value` overrides any key.
//!
//! ```toml
//! [data]
//! train = "out/train"            # tusk dataset, record file, glob, or CSV file
//! validation = "out/validation"  # optional: model selection and early stopping
//! test = "out/test"              # optional: reported, never used for selection
//!
//! [features]
//! sparse = ["user_id", "item_id"]
//! dense = []
//! label = "label"
//!
//! [model]
//! kind = "neumf"
//! user = ["user_id"]
//! item = ["item_id"]
//! gmf_dim = 16
//! mlp_dim = 16
//! layers = [32, 16, 8]
//!
//! [train]
//! epochs = 10
//!
//! [eval]
//! group = "user_id"
//! k = 10
//! monitor = "hr@10"
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tusk_data::FeatureConfig;
use tusk_embedding::{Init, Optimizer};
use tusk_model::{Architecture, Interaction};

use crate::error::{Error, Result, config};

/// A whole training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the data is.
    pub data: DataConfig,
    /// Which columns are what.
    pub features: FeatureConfig,
    /// The network.
    pub model: ModelConfig,
    /// Optimisation.
    #[serde(default)]
    pub train: TrainConfig,
    /// Evaluation, early stopping.
    #[serde(default)]
    pub eval: EvalConfig,
}

/// `[data]`: dataset URLs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Training rows.
    pub train: String,
    /// Rows for model selection (early stopping, best epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<String>,
    /// Rows reported on after every epoch, never used for selection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    /// Entity feature tables, key column → dataset URL (e.g. `user_id = ".../entities/user_id"`):
    /// kept with every version, so that scoring and serving fill the columns a row lacks from
    /// the rows of the ids it names (see `tusk_data::entities`). Training rows are not filled.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub entities: BTreeMap<String, String>,
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ModelConfig {
    /// NeuMF: user and item vectors (sums of their fields' embeddings), GMF + MLP towers.
    Neumf {
        /// Sparse columns on the user side.
        user: Vec<String>,
        /// Sparse columns on the item side.
        item: Vec<String>,
        /// GMF width.
        #[serde(default = "d16")]
        gmf_dim: usize,
        /// MLP embedding width (per side).
        #[serde(default = "d16")]
        mlp_dim: usize,
        /// MLP hidden widths.
        #[serde(default = "neumf_layers")]
        layers: Vec<usize>,
    },
    /// DLRM-style: embeddings per sparse column, bottom MLP for dense, interaction, top MLP.
    Dlrm {
        /// Embedding width.
        #[serde(default = "d16")]
        emb_dim: usize,
        /// Bottom MLP hidden widths.
        #[serde(default = "dlrm_bottom")]
        bottom: Vec<usize>,
        /// Top MLP hidden widths.
        #[serde(default = "dlrm_top")]
        top: Vec<usize>,
        /// `dot` or `cat`.
        #[serde(default = "dot")]
        interaction: Interaction,
    },
}

fn d16() -> usize {
    16
}
fn neumf_layers() -> Vec<usize> {
    vec![32, 16, 8]
}
fn dlrm_bottom() -> Vec<usize> {
    vec![32]
}
fn dlrm_top() -> Vec<usize> {
    vec![64, 32]
}
fn dot() -> Interaction {
    Interaction::Dot
}

/// `[train]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Rows per step.
    pub batch_size: usize,
    /// Learning rate (dense layers and embedding rows).
    pub learning_rate: f32,
    /// Embedding-row learning rate when different.
    pub embedding_learning_rate: Option<f32>,
    /// `adam`, `adagrad` or `sgd` (embedding rows get the row-wise version).
    pub optimizer: String,
    /// Decoupled weight decay on dense layers.
    pub weight_decay: f32,
    /// L2 penalty on the embedding rows a batch touches (added to their gradient).
    pub embedding_l2: f32,
    /// Initial embedding values are uniform in ±this (`init = "uniform"`) or normal with
    /// this standard deviation (`init = "normal"`).
    pub init_scale: f32,
    /// Distribution of initial embedding values: `uniform` or `normal`.
    pub init: String,
    /// With `optimizer = "adam"`: `lazy` moves an embedding row only in steps whose batch
    /// touches it; `dense` moves every row every step by its momentum, as PyTorch's Adam on a
    /// dense `nn.Embedding` (O(rows) per step: for tables that fit comfortably).
    pub embedding_adam: String,
    /// Where embedding rows live with several workers: `replicated` (every worker holds the
    /// whole table and applies every worker's row gradients), `sync` or `async` (embedding
    /// servers hold the rows sharded by key; `tusk launch --servers S`).
    pub embedding: String,
    /// With `embedding = "async"`: steps a worker may run ahead of the slowest one (0 is
    /// `sync`).
    pub staleness: u64,
    /// Frequency admission: an id gets an embedding row only once it has been trained on
    /// this many times (until then it reads as its initial value); 1 admits every id at once.
    pub min_count: u32,
    /// With `embedding = "async"` and `staleness` ≥ 1: ask the servers for the next step's
    /// rows while this step trains (they then lack this worker's own latest update).
    pub prefetch: bool,
    /// Seed for initialisation, shuffling and sampling.
    pub seed: u64,
    /// Threads that compute a step: each batch's rows are split into this many blocks whose
    /// forward and backward passes run at once (their dense gradients added in block order),
    /// and the embedding-row updates are split by rows. 0 (the default): from the machine's
    /// cores per worker (`LOCAL_WORLD_SIZE`): one less, for the input pipeline's thread, with 3
    /// or more; with 2, both when the model's dense layers take ≥ 32,768 multiply-adds per row,
    /// else one. Results are bit-reproducible for a given number; another number changes the
    /// dense gradient's rounding (the order of its sums), nothing else.
    pub threads: usize,
    /// Rows held for shuffling.
    pub shuffle_buffer: usize,
    /// Also commit a model version every this many steps (0: once per epoch).
    pub checkpoint_every: u64,
    /// Negatives sampled per positive row, fresh every epoch (0: none).
    pub negatives: usize,
    /// User column for sampled negatives (default: the model's first user column).
    pub negatives_user: Option<String>,
    /// Item columns replaced in sampled negatives (default: the model's item columns).
    pub negatives_item: Option<Vec<String>>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 256,
            learning_rate: 0.001,
            embedding_learning_rate: None,
            optimizer: "adam".into(),
            weight_decay: 0.0,
            embedding_l2: 0.0,
            init_scale: 0.05,
            init: "uniform".into(),
            embedding_adam: "lazy".into(),
            embedding: "replicated".into(),
            staleness: 1,
            prefetch: true,
            min_count: 1,
            seed: 42,
            threads: 0,
            shuffle_buffer: 100_000,
            checkpoint_every: 0,
            negatives: 0,
            negatives_user: None,
            negatives_item: None,
        }
    }
}

/// `[eval]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Column grouping rows for ranking metrics (HR@K, NDCG@K), e.g. `user_id`.
    pub group: Option<String>,
    /// K of HR@K and NDCG@K.
    pub k: usize,
    /// Metric watched on the validation data: `auc`, `logloss`, `hr@K` or `ndcg@K`.
    pub monitor: String,
    /// Stop after this many epochs without improvement (needs `data.validation`).
    pub patience: Option<usize>,
    /// Rows per scoring batch.
    pub batch_size: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            group: None,
            k: 10,
            monitor: "auc".into(),
            patience: None,
            batch_size: 4096,
        }
    }
}

/// Which metric to watch and in which direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Monitor {
    /// Area under the ROC curve (higher is better).
    Auc,
    /// Log loss (lower is better).
    Logloss,
    /// Hit rate at K (higher is better).
    Hr,
    /// NDCG at K (higher is better).
    Ndcg,
}

impl Config {
    /// Parse TOML text, apply `key=value` overrides, and check it.
    pub fn parse(file: &str, text: &str, overrides: &[String]) -> Result<Config> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| Error::ConfigFile {
            file: file.into(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        for o in overrides {
            set(&mut table, o)?;
        }
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| Error::ConfigFile {
                file: file.into(),
                message: e.to_string().trim().replace('\n', " "),
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as TOML (stored with every model version).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Check values the types cannot.
    pub fn validate(&self) -> Result<()> {
        self.features.validate()?;
        let t = &self.train;
        if t.epochs == 0 {
            return Err(config("train.epochs", "must be at least 1"));
        }
        if t.batch_size == 0 {
            return Err(config("train.batch_size", "must be at least 1"));
        }
        if t.threads > 1024 {
            return Err(config(
                "train.threads",
                "must be at most 1024 (0: the cores per worker)",
            ));
        }
        if !(t.learning_rate > 0.0 && t.learning_rate.is_finite()) {
            return Err(config("train.learning_rate", "must be a positive number"));
        }
        self.embedding_optimizer()?;
        self.embedding_init()?;
        self.embedding_mode()?;
        let sparse = &self.features.sparse;
        let check_cols = |key: &str, cols: &[String]| -> Result<()> {
            for c in cols {
                if !sparse.contains(c) {
                    return Err(config(
                        key,
                        format!(
                            "`{c}` is not one of features.sparse ({})",
                            sparse.join(", ")
                        ),
                    ));
                }
            }
            Ok(())
        };
        if let ModelConfig::Neumf { user, item, .. } = &self.model {
            check_cols("model.user", user)?;
            check_cols("model.item", item)?;
            for c in sparse {
                if !user.contains(c) && !item.contains(c) {
                    return Err(config(
                        "model.user",
                        format!(
                            "sparse column `{c}` is on neither side: list it in model.user or model.item"
                        ),
                    ));
                }
            }
            if let Some(c) = user.iter().find(|c| item.contains(c)) {
                return Err(config("model.item", format!("`{c}` is on both sides")));
            }
        }
        if t.negatives > 0 {
            let (u, i) = self.negative_fields()?;
            check_cols("train.negatives_user", std::slice::from_ref(&u))?;
            check_cols("train.negatives_item", &i)?;
        }
        self.monitor()?;
        if self.eval.k == 0 {
            return Err(config("eval.k", "must be at least 1"));
        }
        if self.eval.patience.is_some() && self.data.validation.is_none() {
            return Err(config(
                "eval.patience",
                "early stopping watches data.validation, which is not set (the test set is never used to choose a model)",
            ));
        }
        Ok(())
    }

    /// The user column and item columns for sampled negatives.
    pub fn negative_fields(&self) -> Result<(String, Vec<String>)> {
        let (du, di) = match &self.model {
            ModelConfig::Neumf { user, item, .. } => (user.first().cloned(), Some(item.clone())),
            ModelConfig::Dlrm { .. } => (None, None),
        };
        let u = self.train.negatives_user.clone().or(du).ok_or_else(|| {
            config(
                "train.negatives_user",
                "name the user column for sampled negatives",
            )
        })?;
        let i = self.train.negatives_item.clone().or(di).ok_or_else(|| {
            config(
                "train.negatives_item",
                "name the item columns for sampled negatives",
            )
        })?;
        Ok((u, i))
    }

    /// The watched metric.
    pub fn monitor(&self) -> Result<Monitor> {
        let m = self.eval.monitor.to_ascii_lowercase();
        let ranked = |name: &str| -> Result<()> {
            if self.eval.group.is_none() {
                return Err(config(
                    "eval.monitor",
                    format!("{name} needs eval.group (the column whose rows are ranked together)"),
                ));
            }
            Ok(())
        };
        let k_of = |s: &str| -> Result<()> {
            match s.parse::<usize>() {
                Ok(k) if k == self.eval.k => Ok(()),
                _ => Err(config(
                    "eval.monitor",
                    format!("`{m}`: K must be eval.k ({})", self.eval.k),
                )),
            }
        };
        match m.as_str() {
            "auc" => Ok(Monitor::Auc),
            "logloss" => Ok(Monitor::Logloss),
            _ if m.starts_with("hr@") => {
                ranked("hr@K")?;
                k_of(&m[3..])?;
                Ok(Monitor::Hr)
            }
            _ if m.starts_with("ndcg@") => {
                ranked("ndcg@K")?;
                k_of(&m[5..])?;
                Ok(Monitor::Ndcg)
            }
            _ => Err(config(
                "eval.monitor",
                format!("unknown metric `{m}`: use auc, logloss, hr@K or ndcg@K"),
            )),
        }
    }

    /// The row-wise optimiser for embedding tables.
    pub fn embedding_optimizer(&self) -> Result<Optimizer> {
        let lr = self
            .train
            .embedding_learning_rate
            .unwrap_or(self.train.learning_rate);
        let dense = match self.train.embedding_adam.as_str() {
            "lazy" => false,
            "dense" if self.train.optimizer == "adam" => true,
            "dense" => {
                return Err(config(
                    "train.embedding_adam",
                    format!(
                        "`dense` applies to optimizer = \"adam\", not `{}` (its rows do not move without a gradient)",
                        self.train.optimizer
                    ),
                ));
            }
            o => {
                return Err(config(
                    "train.embedding_adam",
                    format!("unknown mode `{o}`: use lazy or dense"),
                ));
            }
        };
        match self.train.optimizer.as_str() {
            "adam" if dense => Ok(Optimizer::adam_dense(lr)),
            "adam" => Ok(Optimizer::adam(lr)),
            "adagrad" => Ok(Optimizer::adagrad(lr)),
            "sgd" => Ok(Optimizer::Sgd { lr }),
            o => Err(config(
                "train.optimizer",
                format!("unknown optimiser `{o}`: use adam, adagrad or sgd"),
            )),
        }
    }

    /// Where embedding rows live (`train.embedding`): `None` replicated in every worker,
    /// else on embedding servers in this mode.
    pub fn embedding_mode(&self) -> Result<Option<tusk_ps::Mode>> {
        match self.train.embedding.as_str() {
            "replicated" => Ok(None),
            "sync" => Ok(Some(tusk_ps::Mode::Sync)),
            "async" if self.train.staleness == 0 => Ok(Some(tusk_ps::Mode::Sync)),
            "async" => Ok(Some(tusk_ps::Mode::Async {
                staleness: self.train.staleness,
            })),
            o => Err(config(
                "train.embedding",
                format!("unknown mode `{o}`: use replicated, sync or async"),
            )),
        }
    }

    /// How new embedding rows are drawn (`train.init`).
    pub fn embedding_init(&self) -> Result<Init> {
        match self.train.init.as_str() {
            "uniform" => Ok(Init::Uniform),
            "normal" => Ok(Init::Normal),
            o => Err(config(
                "train.init",
                format!("unknown distribution `{o}`: use uniform or normal"),
            )),
        }
    }

    /// The model architecture with column names turned into field indices.
    pub fn architecture(&self) -> Result<Architecture> {
        let idx = |key: &str, cols: &[String]| -> Result<Vec<usize>> {
            cols.iter()
                .map(|c| {
                    self.features
                        .sparse
                        .iter()
                        .position(|s| s == c)
                        .ok_or_else(|| config(key, format!("`{c}` is not one of features.sparse")))
                })
                .collect()
        };
        Ok(match &self.model {
            ModelConfig::Neumf {
                user,
                item,
                gmf_dim,
                mlp_dim,
                layers,
            } => Architecture::Neumf {
                user: idx("model.user", user)?,
                item: idx("model.item", item)?,
                gmf_dim: *gmf_dim,
                mlp_dim: *mlp_dim,
                layers: layers.clone(),
            },
            ModelConfig::Dlrm {
                emb_dim,
                bottom,
                top,
                interaction,
            } => Architecture::Dlrm {
                emb_dim: *emb_dim,
                bottom: bottom.clone(),
                top: top.clone(),
                interaction: *interaction,
            },
        })
    }
}

/// Apply one `a.b.c=value` override; the value is read as TOML (number, bool, array, quoted
/// string) or else taken as a bare string.
fn set(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let Some((key, value)) = assignment.split_once('=') else {
        return Err(config(
            assignment,
            "an override is key=value, e.g. train.epochs=5",
        ));
    };
    let key = key.trim();
    let value = value.trim();
    let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| config(key, format!("`{p}` is not a table")))?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[data]
train = "t"
validation = "v"
[features]
sparse = ["user_id", "item_id"]
label = "label"
[model]
kind = "neumf"
user = ["user_id"]
item = ["item_id"]
[eval]
group = "user_id"
monitor = "hr@10"
"#;

    #[test]
    fn parses_with_defaults_and_overrides() {
        let c = Config::parse(
            "c.toml",
            BASE,
            &["train.epochs=3".into(), "data.test=x/y".into()],
        )
        .unwrap();
        assert_eq!(c.train.epochs, 3);
        assert_eq!(c.train.batch_size, 256);
        assert_eq!(c.data.test.as_deref(), Some("x/y"));
        assert_eq!(c.monitor().unwrap(), Monitor::Hr);
        let back = Config::parse("again", &c.to_toml(), &[]).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn bad_configs_name_the_key() {
        let err = |over: &[&str]| {
            let o: Vec<String> = over.iter().map(|s| s.to_string()).collect();
            Config::parse("c.toml", BASE, &o).unwrap_err().to_string()
        };
        assert!(err(&["train.epochz=3"]).contains("epochz"));
        assert!(err(&["train.epochs=\"many\""]).contains("epochs"));
        assert!(err(&["model.user=[\"age\"]"]).contains("model.user"));
        assert!(err(&["eval.monitor=\"hr@5\""]).contains("eval.monitor"));
        assert!(err(&["train.optimizer=\"lion\""]).contains("train.optimizer"));
        assert!(err(&["train.init=\"gauss\""]).contains("train.init"));
        assert!(err(&["train.embedding_adam=\"eager\""]).contains("train.embedding_adam"));
        let e = err(&["train.optimizer=\"sgd\"", "train.embedding_adam=\"dense\""]);
        assert!(
            e.contains("train.embedding_adam") && e.contains("not `sgd`"),
            "{e}"
        );
        assert!(err(&["features.dense=[\"label\"]"]).contains("features.dense"));
        let no_val = BASE.replace("validation = \"v\"\n", "");
        let e = Config::parse("c.toml", &no_val, &["eval.patience=2".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("eval.patience"), "{e}");
        let e = Config::parse("c.toml", "[data]\ntrain = 3", &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml: ") && e.contains("train"), "{e}");
    }
}
