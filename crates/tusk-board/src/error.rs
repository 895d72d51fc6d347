/// Everything that can go wrong writing or reading TensorBoard event files. Each variant names
/// the file (or run directory) it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Storage failed (missing directory, unreachable NameNode, ...).
    #[error(transparent)]
    Storage(#[from] tusk_storage::Error),
    /// The TFRecord framing of an event file is damaged (CRC mismatch, truncated record); the
    /// message names the file, record index and byte offset.
    #[error(transparent)]
    Records(#[from] tusk_records::Error),
    /// Writing an event file on the local filesystem failed.
    #[error("{file}: {source}")]
    Io {
        /// The event file.
        file: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A record's framing is intact but its payload is not a `tensorflow.Event`.
    #[error("{file}: record #{index} at byte offset {offset} is not a tensorflow.Event: {reason}")]
    NotEvent {
        /// The event file.
        file: String,
        /// 0-based record index.
        index: u64,
        /// Byte offset of the record's start.
        offset: u64,
        /// What the decoder found.
        reason: String,
    },
    /// The run directory holds no event files at all.
    #[error("{dir}: no TensorBoard event files (events.out.tfevents.*) in this directory")]
    NoEventFiles {
        /// The run directory.
        dir: String,
    },
    /// No free event file name was found in the run directory (our bug or a very busy run).
    #[error("internal error: {dir}: cannot find a free event file name after {tries} tries")]
    NoFreeName {
        /// The run directory.
        dir: String,
        /// How many names were tried.
        tries: u32,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
