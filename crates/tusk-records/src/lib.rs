//! Record formats for tusk: TFRecord files byte-compatible with TensorFlow (masked CRC32C
//! framing, GZIP/ZLIB), `tf.train.Example`, Parquet, and sharded datasets (shard files plus a
//! `_manifest.json` written last).
//!
//! ```
//! use tusk_records::tfrecord::{Reader, Writer};
//! let mut bytes = Vec::new();
//! let mut w = Writer::new(&mut bytes);
//! w.write_record(b"hello").unwrap();
//! let mut r = Reader::new(&bytes[..], "in-memory");
//! assert_eq!(r.next_record().unwrap(), Some(&b"hello"[..]));
//! assert_eq!(r.next_record().unwrap(), None);
//! ```

pub mod dataset;
mod error;
pub mod example;
pub mod parquet_io;
pub mod tfrecord;

pub use error::{Error, Result};
