//! Preprocessing for tusk, in Spark SQL's role: raw logs in storage become balanced training
//! shards.
//!
//! - [`movielens`]: the leave-one-out protocol on MovieLens `u.data`.
//! - [`sql`]: DataFusion over tusk storage (local, HDFS, WebHDFS): any SQL over registered
//!   logs, and the shipped clickstream feature pipeline (`sql/*.sql`).

mod error;
pub mod movielens;
pub mod sql;

pub use error::{Error, Result};
