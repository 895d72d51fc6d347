//! Training, evaluation and batch scoring of recommendation models, and the versioned model
//! store.
//!
//! - [`config`]: the TOML config (data, features, model, train, eval), `--set` overrides.
//! - [`trainer`]: the loop (deterministic, resumable), evaluation, early stopping.
//! - [`store`]: versions with safetensors weights and a manifest written last.
//! - [`collective`]: data-parallel collectives (ring all-reduce over TCP, crate
//!   `tusk-collective`).
//! - [`predict`]: batch scoring of CSV/Parquet/TFRecord rows.
//! - [`timeline`]: `--timeline`, a Chrome/Perfetto trace of what every rank did when.

pub mod collective;
pub mod config;
pub mod error;
pub mod predict;
pub mod store;
pub mod timeline;
pub mod trainer;

pub use config::Config;
pub use error::{Error, Result};
pub use store::{Checkpoint, ModelStore};
pub use trainer::{
    AllReduceTime, BUCKET_BYTES, Catalogue, EmbeddingServers, FUSE_BYTES, Metrics, Observer, Quiet,
    Scorer, Summary, TrainOptions, evaluate, evaluate_on, train, train_with,
};
