/// Everything that can go wrong in a preprocessing job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] tusk_storage::Error),
    /// Reading or writing records failed.
    #[error(transparent)]
    Records(#[from] tusk_records::Error),
    /// A line of text input does not parse.
    #[error("{file}:{line}: {message}")]
    Parse {
        /// The input file.
        file: String,
        /// 1-based line number.
        line: u64,
        /// What is wrong and what was expected.
        message: String,
    },
    /// The input as a whole is unusable (empty, missing columns, ...).
    #[error("{input}: {message}")]
    Input {
        /// The input URL.
        input: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A job option is invalid.
    #[error("invalid option {option}: {message}")]
    Option {
        /// The option, e.g. `--negatives`.
        option: String,
        /// What is wrong.
        message: String,
    },
    /// The SQL engine failed (bad SQL, unparsable CSV values, ...).
    #[error("{context}: {source}")]
    Sql {
        /// What was running, e.g. the SQL file and statement number.
        context: String,
        /// DataFusion's error.
        #[source]
        source: datafusion::error::DataFusionError,
    },
    /// Reading a text input failed.
    #[error("{file}: {source}")]
    Io {
        /// The input file.
        file: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
