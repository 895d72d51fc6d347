//! The training input pipeline.
//!
//! - [`source`]: rows from tusk datasets (TFRecord/Parquet shards with a manifest), single
//!   record files, globs and CSV files with a header, on any storage URL.
//! - [`features`]: a `[features]` config (sparse, dense, label, positive value, weight) fitted
//!   on the training data, then used to encode any row the same way.
//! - [`loader`]: raw columnar batches (no encoding) split over ranks × loader workers, for
//!   frameworks (the Python package).
//! - [`pipeline`]: shuffled, prefetched batches on a background thread, with optional
//!   negatives sampled fresh every epoch.

pub mod entities;
pub mod error;
pub mod features;
pub mod loader;
pub mod pipeline;
pub mod source;

pub use entities::{Entities, Filled};
pub use error::{Error, Result};
pub use features::{DenseStat, Encoded, FeatureConfig, FeatureSpace, StatsOrigin};
pub use pipeline::{Batch, BatchOptions, Batches, NegativeSampler, Rng, batches};
pub use source::{Cell, Row, RowPos, Source};
