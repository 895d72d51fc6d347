//! Errors of the input pipeline: each names the config key, or the file, row and column.

/// Why data could not be read or encoded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] tusk_storage::Error),
    /// A record file is damaged or not Examples.
    #[error(transparent)]
    Records(Box<tusk_records::Error>),
    /// The feature configuration does not fit the data.
    #[error("config key `{key}`: {message}")]
    Config {
        /// The config key, e.g. `features.dense`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value cannot be used.
    #[error("{file}: row {row}, column `{column}`: {message}")]
    Value {
        /// File URL.
        file: String,
        /// 0-based data row (CSV: not counting the header).
        row: u64,
        /// Column name.
        column: String,
        /// What is wrong.
        message: String,
    },
    /// A bug in tusk (say so, never blame the input).
    #[error("internal error (a bug in tusk, please report it): {0}")]
    Internal(String),
    /// A CSV file cannot be parsed.
    #[error("{file}: {message}")]
    Csv {
        /// File URL.
        file: String,
        /// What is wrong.
        message: String,
    },
}

impl From<tusk_records::Error> for Error {
    fn from(e: tusk_records::Error) -> Self {
        Error::Records(Box::new(e))
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A config error for `key`.
pub fn config(key: &str, message: impl Into<String>) -> Error {
    Error::Config {
        key: key.into(),
        message: message.into(),
    }
}
