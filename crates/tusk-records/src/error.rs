/// Everything that can go wrong reading or writing records. Each variant names the file and,
/// where it applies, the record index and byte offset.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Storage failed (missing file, unreachable NameNode, ...).
    #[error(transparent)]
    Storage(#[from] tusk_storage::Error),
    /// The file ends inside a record.
    #[error(
        "{file}: truncated record #{index} at byte offset {offset}: expected {expected} bytes of {what}, found {found}"
    )]
    Truncated {
        /// The file.
        file: String,
        /// Byte offset of the record's start (uncompressed stream).
        offset: u64,
        /// 0-based record index.
        index: u64,
        /// Which part of the record was cut short.
        what: &'static str,
        /// Bytes that part needs.
        expected: u64,
        /// Bytes that were there.
        found: u64,
    },
    /// A length or data CRC does not match: the file is corrupt.
    #[error(
        "{file}: corrupt record #{index} at byte offset {offset}: {what} CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
    )]
    Crc {
        /// The file.
        file: String,
        /// Byte offset of the record's start (uncompressed stream).
        offset: u64,
        /// 0-based record index.
        index: u64,
        /// `length` or `data`.
        what: &'static str,
        /// CRC stored in the file.
        stored: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
    /// A record's payload is not a `tf.train.Example`.
    #[error("{file}: record #{index} at byte offset {offset} is not a tf.train.Example: {reason}")]
    NotExample {
        /// The file.
        file: String,
        /// 0-based record index.
        index: u64,
        /// Byte offset of the record's start (uncompressed stream).
        offset: u64,
        /// What the decoder found.
        reason: String,
    },
    /// The compressed stream is damaged.
    #[error(
        "{file}: {compression} stream is damaged near uncompressed byte offset {offset}: {source}"
    )]
    Decompress {
        /// The file.
        file: String,
        /// `gzip` or `zlib`.
        compression: &'static str,
        /// Uncompressed offset reached before the damage.
        offset: u64,
        /// The decoder's complaint.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the byte stream failed.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// Parquet could not be read or written.
    #[error("{file}: parquet: {source}")]
    Parquet {
        /// The file.
        file: String,
        /// The failure.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Data that cannot be represented in the target format, or a schema conflict.
    #[error("{file}: {message}")]
    Schema {
        /// The file.
        file: String,
        /// What does not fit, naming the column/feature and record.
        message: String,
    },
    /// A dataset manifest is missing or malformed, or a dataset is incomplete.
    #[error("{file}: {message}")]
    Dataset {
        /// The manifest or dataset directory.
        file: String,
        /// What is wrong and what was expected.
        message: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
