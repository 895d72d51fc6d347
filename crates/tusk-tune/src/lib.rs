//! Hyper-parameter search, as a pure library: search spaces, samplers and pruners.
//!
//! - [`space`]: the search space from a TOML file (`uniform`, `loguniform`, `int`, `choice`),
//!   sampled values and how they render as `--set KEY=VALUE` literals.
//! - [`sampler`]: random search and a Tree-structured Parzen Estimator, deterministic in
//!   (seed, trial, history).
//! - [`pruner`]: ASHA and the median stopping rule over intermediate values.
//! - [`study`] and [`run`]: a study's stored trials and the loop that runs them.
//!
//! Losses everywhere: lower is better; a caller maximising a metric negates it.
//!
//! ```
//! use tusk_tune::sampler::{Observation, Sampler, SamplerKind, TrialState};
//! use tusk_tune::space::Space;
//!
//! let space = Space::parse(
//!     r#""train.learning_rate" = { loguniform = [1e-4, 1e-2] }
//!        "model.embedding_dim" = { choice = [16, 32, 64] }"#,
//!     "space.toml",
//! )
//! .unwrap();
//! let sampler = Sampler::new(SamplerKind::Tpe, 7);
//! let mut history = Vec::new();
//! for trial in 0..20 {
//!     let params = sampler.sample(&space, &history, trial);
//!     let lr = params["train.learning_rate"].as_f64().unwrap();
//!     let loss = (lr.log10() + 3.0).powi(2); // best at 1e-3
//!     history.push(Observation {
//!         params,
//!         state: TrialState::Complete,
//!         value: Some(loss),
//!         intermediate: vec![],
//!     });
//! }
//! let set = format!("train.learning_rate={}", history[0].params["train.learning_rate"].render());
//! assert!(set.starts_with("train.learning_rate=0."));
//! ```

pub mod pruner;
pub mod run;
pub mod sampler;
pub mod space;
pub mod study;
