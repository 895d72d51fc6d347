//! HBase as tusk's online store, through HBase's REST gateway (the HTTP service every HBase
//! distribution ships; see docs/DESIGN.md for why not Thrift or the native RPC):
//!
//! - [`client`]: schemas, gets, multi-gets, batch puts, scanners; protobuf cells, timeouts,
//!   retries with backoff, Kerberos (SPNEGO);
//! - [`export`]: a model version's entity rows and embeddings written as one version, the
//!   pointer row flipped last, resumable;
//! - [`online`]: live lookups of entity rows for serving and batch scoring, within a budget,
//!   with an optional TTL cache and metrics;
//! - [`value`]: what a cell holds (a `tf.train.Feature`, or text read as a CSV field).

pub mod client;
pub mod export;
pub mod online;
pub mod pb;
pub mod value;

pub use client::{Cell, Error, Family, HBase, Options, Result, Row};
