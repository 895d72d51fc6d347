//! Recommendation models and their metrics. So far: the metrics, each checked against
//! hand-computed cases (models land with the training issue).
//!
//! ```
//! use tusk_model::metrics::{auc, hit_rate_at_k};
//! assert_eq!(auc(&[0.9, 0.1], &[1.0, 0.0]).unwrap(), 1.0);
//! // the positive (index 0) ranks 2nd of 3: a hit at K=2, a miss at K=1
//! assert_eq!(hit_rate_at_k(&[&[0.5, 0.9, 0.1][..]], 2), 1.0);
//! ```

pub mod metrics;
