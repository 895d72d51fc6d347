//! Recommendation models and their metrics.
//!
//! - [`nn`]: dense layers with hand-written backward passes over one flat parameter buffer.
//! - [`models`]: NeuMF and DLRM-style networks over gathered embedding rows, binary
//!   cross-entropy, and dense Adam. Gradients are checked against finite differences in tests.
//! - [`metrics`]: AUC, logloss, HR@K, NDCG@K, each checked against hand-computed cases.
//!
//! ```
//! use tusk_model::metrics::{auc, hit_rate_at_k};
//! assert_eq!(auc(&[0.9, 0.1], &[1.0, 0.0]).unwrap(), 1.0);
//! // the positive (index 0) ranks 2nd of 3: a hit at K=2, a miss at K=1
//! assert_eq!(hit_rate_at_k(&[&[0.5, 0.9, 0.1][..]], 2), 1.0);
//! ```

pub mod metrics;
pub mod models;
pub mod nn;

pub use models::{
    Architecture, Batch, DenseAdam, Interaction, Model, ModelError, NeumfItems, RANK_BLOCK,
    ROWS_PER_PART,
};
